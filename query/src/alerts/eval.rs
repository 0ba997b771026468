//! A rule's query result → alert instances.
//!
//! The SQL returns one row per instance. The column `value` (any numeric type) is the
//! instance's value; every other column is a label identifying the instance (`host`,
//! `vhost`, …), except columns whose name starts with `_`, which are details: shown in
//! messages (`{{ details.error }}`) but not part of the identity, so an error text that
//! changes does not make a new alert. A row whose `value` is NULL is skipped (counted).

use std::sync::Arc;

use arrow_array::{Array, Float64Array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Schema};

use super::builtin::LAKE_STARTED;
use super::Labels;
use crate::engine::QueryResult;

/// One row of a rule's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Identity labels.
    pub labels: Labels,
    /// `_`-prefixed columns, without the `_`.
    pub details: Labels,
    /// The value.
    pub value: f64,
}

/// The instances of a result, and how many rows were skipped for a NULL value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// One per row with a value.
    pub rows: Vec<Observation>,
    /// Rows without a value.
    pub skipped: usize,
}

/// Why a result cannot be read as alert instances.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// No `value` column, or not a numeric one.
    #[error("{0}")]
    Shape(String),
    /// Two rows with the same labels.
    #[error("two rows have the same labels {0}: add the column that tells them apart, or aggregate")]
    Duplicate(String),
}

/// Checks that a result schema has a numeric `value` column.
pub fn check_schema(schema: &Schema) -> Result<(), EvalError> {
    match schema.field_with_name("value") {
        Ok(f) if is_numeric(f.data_type()) => Ok(()),
        Ok(f) => Err(EvalError::Shape(format!("the value column is {}, not a number", f.data_type()))),
        Err(_) => {
            let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(EvalError::Shape(format!(
                "the query returns no column named value (it returns: {}); name the number `AS value`",
                cols.join(", ")
            )))
        }
    }
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Null | DataType::Boolean)
}

/// Reads a result as instances.
pub fn observations(result: &QueryResult) -> Result<Observed, EvalError> {
    check_schema(&result.schema)?;
    let mut out = Observed::default();
    let opts = FormatOptions::default().with_timestamp_format(Some("%Y-%m-%d %H:%M:%S UTC"));
    for batch in &result.batches {
        let schema = batch.schema();
        let value_idx = schema.index_of("value").map_err(|e| EvalError::Shape(e.to_string()))?;
        let values = arrow_cast::cast(batch.column(value_idx), &DataType::Float64)
            .map_err(|e| EvalError::Shape(format!("value cannot be read as a number: {e}")))?;
        let values = values
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| EvalError::Shape("value cast did not give Float64".into()))?
            .clone();
        let mut cols = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if i == value_idx {
                continue;
            }
            let arr = zoneless(Arc::clone(batch.column(i)));
            cols.push((f.name().clone(), arr));
        }
        let formatters: Vec<(String, &dyn Array, ArrayFormatter<'_>)> = cols
            .iter()
            .map(|(name, arr)| {
                ArrayFormatter::try_new(arr.as_ref(), &opts)
                    .map(|fmt| (name.clone(), arr.as_ref(), fmt))
                    .map_err(|e| EvalError::Shape(format!("column {name}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            if values.is_null(row) || values.value(row).is_nan() {
                out.skipped += 1;
                continue;
            }
            let mut labels = Labels::new();
            let mut details = Labels::new();
            for (name, arr, fmt) in &formatters {
                if arr.is_null(row) {
                    continue;
                }
                let text = fmt.value(row).to_string();
                match name.strip_prefix('_') {
                    Some(d) => details.insert(d.to_string(), text),
                    None => labels.insert(name.clone(), text),
                };
            }
            out.rows.push(Observation { labels, details, value: values.value(row) });
        }
    }
    let mut keys: Vec<&Labels> = out.rows.iter().map(|o| &o.labels).collect();
    keys.sort();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(EvalError::Duplicate(fmt_labels(w[0])));
    }
    Ok(out)
}

/// `k=v k2=v2`, or `(no labels)`.
pub fn fmt_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return "(no labels)".into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// The SQL to run: [`LAKE_STARTED`] replaced by the lake's start time, a trailing `;` cut.
pub fn expand_sql(sql: &str, started_micros: i64) -> String {
    let started =
        format!("to_timestamp({}.{:06})", started_micros.div_euclid(1_000_000), started_micros.rem_euclid(1_000_000));
    sql.replace(LAKE_STARTED, &started).trim().trim_end_matches(';').to_string()
}

/// The SQL `lake check-config` runs to check a rule's query without reading data.
pub fn probe_sql(sql: &str, started_micros: i64) -> String {
    format!("SELECT * FROM ({}\n) AS rule_query LIMIT 0", expand_sql(sql, started_micros))
}

/// A UTC timestamp column relabelled as zone-less (the same instants): arrow-cast cannot
/// format the "UTC" label without its chrono-tz feature, and rules often return times.
fn zoneless(arr: arrow_array::ArrayRef) -> arrow_array::ArrayRef {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    match arr.data_type() {
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some(_)) => {
            Arc::new(arr.as_primitive::<TimestampMicrosecondType>().clone().with_timezone_opt(None::<Arc<str>>))
        }
        _ => arr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Limits, NoFreshRows};

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), Arc::new(NoFreshRows), Limits::default()).unwrap();
        (dir, e)
    }

    #[test]
    fn labels_details_and_values_from_sql() {
        let (_d, e) = engine();
        let r = e
            .query_blocking(
                "SELECT * FROM (VALUES ('a', 1::INTEGER, 'x', 3), ('b', NULL, 'y', 4), ('c', 2, NULL, NULL)) t(host, value, _why, n)",
            )
            .unwrap();
        let o = observations(&r).unwrap();
        assert_eq!(o.skipped, 1);
        assert_eq!(o.rows.len(), 2);
        assert_eq!(o.rows[0].labels, Labels::from([("host".into(), "a".into()), ("n".into(), "3".into())]));
        assert_eq!(o.rows[0].details, Labels::from([("why".into(), "x".into())]));
        assert_eq!(o.rows[0].value, 1.0);
        assert_eq!(o.rows[1].labels, Labels::from([("host".into(), "c".into())]));
    }

    #[test]
    fn shape_errors_are_explained() {
        let (_d, e) = engine();
        let r = e.query_blocking("SELECT 'a' AS host, 1 AS v").unwrap();
        assert!(observations(&r).unwrap_err().to_string().contains("no column named value (it returns: host, v)"));
        let r = e.query_blocking("SELECT 'a' AS value").unwrap();
        assert!(observations(&r).unwrap_err().to_string().contains("not a number"));
        let r = e.query_blocking("SELECT * FROM (VALUES ('a', 1), ('a', 2)) t(host, value)").unwrap();
        assert!(observations(&r).unwrap_err().to_string().contains("same labels host=a"));
    }

    #[test]
    fn every_builtin_query_runs_on_an_empty_lake() {
        let (_d, e) = engine();
        for b in super::super::builtin::defaults(&["n1".into(), "o'k".into()], 2) {
            if b.kind != super::super::rules::RuleKind::Sql {
                continue;
            }
            let r = e
                .query_blocking(&expand_sql(&b.sql, 1_795_374_070_000_000))
                .unwrap_or_else(|err| panic!("{}: {err}", b.name));
            check_schema(&r.schema).unwrap_or_else(|err| panic!("{}: {err}", b.name));
            let o = observations(&r).unwrap();
            if b.name == super::super::builtin::NODE_SILENT {
                // Never-reported nodes are silent since the lake started.
                assert_eq!(o.rows.len(), 2);
                assert!(o.rows[0].value > 100.0, "{o:?}");
                assert_eq!(o.rows[0].details["last_seen"], "none in 7 days");
            } else {
                assert!(o.rows.is_empty(), "{}: {o:?}", b.name);
            }
            e.query_blocking(&probe_sql(&b.sql, 0)).unwrap();
        }
    }
}
