//! `[custom]` of `lake.toml`: defaults for every custom table and per-table overrides.
//!
//! ```toml
//! [custom]
//! max_columns = 200      # columns a table may grow to (ts and host not counted)
//! ts_field = "ts"        # field holding the row's time; absent → time of receipt
//!
//! [custom.tables.signups]
//! ts_field = "created_at"
//! lenient = true         # a value of the wrong type goes to `_extra` instead of a 400
//! ```

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Deserialize;

const fn default_max_columns() -> usize {
    200
}
fn default_ts_field() -> String {
    "ts".into()
}

/// What governs one custom table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    /// Field whose value becomes `ts`.
    pub ts_field: String,
    /// Keep rows with a conflicting value (in `_extra`) instead of refusing the batch.
    pub lenient: bool,
    /// Data columns the table may have at most.
    pub max_columns: usize,
}

/// The validated `[custom]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablesConfig {
    defaults: TableOptions,
    tables: BTreeMap<String, TableOptions>,
}

impl Default for TablesConfig {
    fn default() -> Self {
        TablesConfig {
            defaults: TableOptions { ts_field: default_ts_field(), lenient: false, max_columns: default_max_columns() },
            tables: BTreeMap::new(),
        }
    }
}

impl TablesConfig {
    /// The options of `name`.
    pub fn options(&self, name: &str) -> &TableOptions {
        self.tables.get(name).unwrap_or(&self.defaults)
    }
}

/// `[custom]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFile {
    max_columns: Option<usize>,
    ts_field: Option<String>,
    lenient: Option<bool>,
    #[serde(default)]
    tables: BTreeMap<String, TableFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    max_columns: Option<usize>,
    ts_field: Option<String>,
    lenient: Option<bool>,
}

/// Largest column limit accepted: DuckDB and Parquet cope, a runaway producer does not.
const MAX_COLUMNS_CEILING: usize = 2000;

impl CustomFile {
    /// Checks the section; errors name the key.
    pub fn validate(self) -> anyhow::Result<TablesConfig> {
        let check = |key: &str, n: usize| {
            if n == 0 || n > MAX_COLUMNS_CEILING {
                bail!("{key} = {n}: must be between 1 and {MAX_COLUMNS_CEILING}");
            }
            Ok(())
        };
        let mut defaults = TablesConfig::default().defaults;
        if let Some(n) = self.max_columns {
            check("custom.max_columns", n)?;
            defaults.max_columns = n;
        }
        if let Some(f) = self.ts_field {
            lake_format::custom::validate_column_name(&f).map_err(|e| anyhow::anyhow!("custom.ts_field: {e}"))?;
            defaults.ts_field = f;
        }
        defaults.lenient = self.lenient.unwrap_or(false);
        let mut tables = BTreeMap::new();
        for (name, t) in self.tables {
            lake_format::custom::validate_table_name(&name)
                .map_err(|e| anyhow::anyhow!("custom.tables.{name}: {e}"))?;
            let mut o = defaults.clone();
            if let Some(n) = t.max_columns {
                check(&format!("custom.tables.{name}.max_columns"), n)?;
                o.max_columns = n;
            }
            if let Some(f) = t.ts_field {
                lake_format::custom::validate_column_name(&f)
                    .map_err(|e| anyhow::anyhow!("custom.tables.{name}.ts_field: {e}"))?;
                o.ts_field = f;
            }
            if let Some(l) = t.lenient {
                o.lenient = l;
            }
            tables.insert(name, o);
        }
        Ok(TablesConfig { defaults, tables })
    }
}
