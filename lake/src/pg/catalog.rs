//! Answers to the catalog queries PostgreSQL clients send about the schema.
//!
//! psql's `\dt` and `\d <table>` and Grafana's data source (its version probe, and the
//! query builder's schema, table and column lists) ask `pg_catalog` and
//! `information_schema`. The lake has no PostgreSQL catalog and its sandbox refuses
//! DuckDB's partial emulation of one, so these statements are recognised here — by the
//! shapes those clients send, recorded in `fixtures/psql15/` and
//! `fixtures/grafana-postgres/` — and answered from the lake's own tables: the catalog
//! tables of `lake_format::catalog` and the custom tables, all in schema `public`, with
//! the PostgreSQL types their values are sent as ([`super::encode`]).
//!
//! Catalog tables the lake has no counterpart for (policies, publications, inheritance,
//! extended statistics, extensions) are answered empty, which is what they hold here. Any
//! other statement naming `pg_catalog` or `information_schema` is refused with `0A000`,
//! naming what the lake does answer; statements that name neither go to the engine.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lake_format::catalog::ColumnType;
use lake_format::Table;
use lake_query::engine::QueryResult;
use regex::Regex;

/// The schema every lake table is listed in.
pub const SCHEMA: &str = "public";
/// The owner `\dt` shows.
const OWNER: &str = "lake";
/// The first table OID handed out (PostgreSQL's first user OID).
const FIRST_OID: i64 = 16384;
/// `server_version_num` the lake announces (psql and Grafana pick their catalog queries by it).
pub const SERVER_VERSION_NUM: i64 = 150000;

/// A table as the catalog lists it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its SQL name.
    pub name: String,
    /// Columns with their logical type and documentation ("" when none).
    pub columns: Vec<(String, ColumnType, String)>,
}

/// Every table a query may read: the catalog's, then the custom ones, sorted by name.
pub fn tables(data_dir: &Path) -> Vec<TableInfo> {
    let mut out: Vec<TableInfo> = Table::ALL
        .iter()
        .map(|t| TableInfo {
            name: t.name().to_string(),
            columns: t.columns().map(|c| (c.name.to_string(), c.ty, c.doc.to_string())).collect(),
        })
        .collect();
    let (custom, _damaged) = lake_format::custom::load_all(data_dir);
    for s in custom {
        out.push(TableInfo {
            name: s.name.clone(),
            columns: s.all_columns().into_iter().map(|(n, t)| (n, t, String::new())).collect(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The PostgreSQL type a column of this logical type is sent as (`format_type`'s and
/// `information_schema.columns.data_type`'s spelling).
pub fn pg_type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Timestamp => "timestamp with time zone",
        ColumnType::Text => "text",
        ColumnType::Float => "double precision",
        ColumnType::Int => "bigint",
        ColumnType::Bool => "boolean",
        ColumnType::TextMap | ColumnType::TextList => "json",
    }
}

/// What [`answer`] made of a statement.
#[derive(Debug)]
pub enum Answer {
    /// Not a catalog query: the engine runs it.
    NotCatalog,
    /// The catalog's answer.
    Rows(QueryResult),
    /// A catalog query the lake does not answer; the message says so.
    Unsupported(String),
}

/// Catalog tables with no counterpart in the lake: empty, whatever is asked of them.
const EMPTY_CATALOGS: &[&str] = &[
    "pg_catalog.pg_policy",
    "pg_catalog.pg_statistic_ext",
    "pg_catalog.pg_publication",
    "pg_catalog.pg_inherits",
    "pg_catalog.pg_trigger",
    "pg_catalog.pg_constraint",
    "pg_catalog.pg_index",
    "pg_catalog.pg_rewrite",
    "pg_extension",
];

/// A result built column by column.
struct Builder {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl Builder {
    fn new() -> Builder {
        Builder { fields: Vec::new(), columns: Vec::new() }
    }
    fn text<S: AsRef<str>>(mut self, name: &str, values: Vec<Option<S>>) -> Builder {
        self.fields.push(Field::new(name, DataType::Utf8, true));
        self.columns.push(Arc::new(StringArray::from_iter(values.iter().map(|v| v.as_ref().map(|s| s.as_ref())))));
        self
    }
    fn int8(mut self, name: &str, values: Vec<i64>) -> Builder {
        self.fields.push(Field::new(name, DataType::Int64, true));
        self.columns.push(Arc::new(Int64Array::from(values)));
        self
    }
    fn int4(mut self, name: &str, values: Vec<Option<i32>>) -> Builder {
        self.fields.push(Field::new(name, DataType::Int32, true));
        self.columns.push(Arc::new(Int32Array::from(values)));
        self
    }
    fn bool(mut self, name: &str, values: Vec<bool>) -> Builder {
        self.fields.push(Field::new(name, DataType::Boolean, true));
        self.columns.push(Arc::new(BooleanArray::from(values)));
        self
    }
    fn build(self) -> Answer {
        let schema = Arc::new(Schema::new(self.fields));
        match RecordBatch::try_new(Arc::clone(&schema), self.columns) {
            Ok(b) => Answer::Rows(QueryResult { schema, batches: vec![b], truncated: false }),
            Err(e) => Answer::Unsupported(format!("building the catalog answer failed: {e}")),
        }
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid literal pattern")
}

/// The string literal after `prefix` (case-insensitive), `''` unescaped.
fn literal_after(sql: &str, prefix: &str) -> Option<String> {
    let r = re(&format!(r"(?is){}\s*'((?:[^']|'')*)'", regex::escape(prefix)));
    r.captures(sql).map(|c| c[1].replace("''", "'"))
}

/// psql's name pattern (`c.relname OPERATOR(pg_catalog.~) '^(http)$'`) as a filter.
fn name_filter(sql: &str) -> Result<Option<Regex>, String> {
    match literal_after(sql, "c.relname OPERATOR(pg_catalog.~)") {
        Some(p) => Regex::new(&p).map(Some).map_err(|e| format!("name pattern {p:?}: {e}")),
        None => Ok(None),
    }
}

/// The OID psql asks about (`WHERE c.oid = '16385'`, `a.attrelid = '16385'`).
fn oid_after(sql: &str, prefix: &str) -> Option<i64> {
    literal_after(sql, prefix).and_then(|s| s.parse().ok())
}

fn oid_of(i: usize) -> i64 {
    FIRST_OID + i as i64
}

fn by_oid(tables: &[TableInfo], oid: Option<i64>) -> Option<&TableInfo> {
    let i = usize::try_from(oid? - FIRST_OID).ok()?;
    tables.get(i)
}

/// Whether `sql` asks PostgreSQL's catalog (then [`answer`] decides), without reading
/// the lake's tables: ordinary statements skip the catalog entirely.
pub fn is_catalog(sql: &str) -> bool {
    let lower = sql.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
    lower.contains("pg_catalog.")
        || lower.contains("information_schema.")
        || lower.contains("from pg_extension")
        || lower.contains("current_setting(")
}

/// Whether `sql` is a catalog query, and its answer over `tables`.
pub fn answer(sql: &str, tables: &[TableInfo]) -> Answer {
    if !is_catalog(sql) {
        return Answer::NotCatalog;
    }
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = flat.to_ascii_lowercase();
    match answer_known(&flat, &lower, tables) {
        Ok(Some(a)) => a,
        Ok(None) => Answer::Unsupported(
            "this catalog query is not answered by the lake: it answers psql's \\dt, \\d and \\d <table>, \
             information_schema.schemata/tables/columns and the version probes of Grafana's PostgreSQL data source; \
             list tables with `SELECT * FROM information_schema.tables` or `lake tables`"
                .to_string(),
        ),
        Err(e) => Answer::Unsupported(e),
    }
}

fn answer_known(flat: &str, lower: &str, tables: &[TableInfo]) -> Result<Option<Answer>, String> {
    // Grafana's version probe: `SELECT current_setting('server_version_num')::int/100 as version`.
    if lower.contains("current_setting('server_version_num')") {
        let scaled = lower.contains("/100");
        let v = if scaled { SERVER_VERSION_NUM / 100 } else { SERVER_VERSION_NUM };
        let name = if lower.contains(" as version") { "version" } else { "current_setting" };
        return Ok(Some(if scaled {
            Builder::new().int4(name, vec![i32::try_from(v).ok()]).build()
        } else {
            Builder::new().text(name, vec![Some(v.to_string())]).build()
        }));
    }
    if lower.contains("current_setting('search_path')") && !lower.contains("information_schema.") {
        return Ok(Some(Builder::new().text("current_setting", vec![Some(SCHEMA)]).build()));
    }
    if lower.contains("from pg_extension") {
        return Ok(Some(Builder::new().text("extversion", Vec::<Option<&str>>::new()).build()));
    }
    // Grafana: the schema list.
    if lower.contains("from information_schema.schemata") {
        return Ok(Some(Builder::new().text("name", vec![Some(SCHEMA)]).build()));
    }
    // Grafana: the column list of a table (`parse_ident('http')`, or 'public.http').
    if lower.contains("from information_schema.columns") {
        let wanted = literal_after(flat, "parse_ident(")
            .or_else(|| literal_after(flat, "quote_ident(table_name) ="))
            .or_else(|| literal_after(flat, "table_name ="))
            .ok_or("information_schema.columns: name the table (table_name = '...')")?;
        let name = wanted.strip_prefix("public.").unwrap_or(&wanted).trim_matches('"').to_string();
        let t = tables.iter().find(|t| t.name == name);
        let cols: Vec<&(String, ColumnType, String)> = t.map(|t| t.columns.iter().collect()).unwrap_or_default();
        return Ok(Some(
            Builder::new()
                .text("column", cols.iter().map(|c| Some(c.0.as_str())).collect())
                .text("type", cols.iter().map(|c| Some(pg_type_name(c.1))).collect())
                .build(),
        ));
    }
    // Grafana: the table list (with or without a schema; only `public` has tables).
    if lower.contains("from information_schema.tables") {
        let schema =
            literal_after(flat, "quote_ident(table_schema) =").or_else(|| literal_after(flat, "table_schema ="));
        let names: Vec<Option<&str>> = match schema.as_deref() {
            Some(s) if s != SCHEMA => Vec::new(),
            _ => tables.iter().map(|t| Some(t.name.as_str())).collect(),
        };
        return Ok(Some(Builder::new().text("table", names).build()));
    }
    // psql \d, \dt, \dt <pattern>: the relation list.
    if lower.contains("as \"schema\"") && lower.contains("from pg_catalog.pg_class c") {
        let filter = name_filter(flat)?;
        let kinds = literal_list_after(lower, "c.relkind in (");
        let listed: Vec<&TableInfo> = if kinds.iter().any(|k| k == "r") {
            tables.iter().filter(|t| filter.as_ref().is_none_or(|f| f.is_match(&t.name))).collect()
        } else {
            Vec::new()
        };
        return Ok(Some(
            Builder::new()
                .text("Schema", listed.iter().map(|_| Some(SCHEMA)).collect())
                .text("Name", listed.iter().map(|t| Some(t.name.as_str())).collect())
                .text("Type", listed.iter().map(|_| Some("table")).collect())
                .text("Owner", listed.iter().map(|_| Some(OWNER)).collect())
                .build(),
        ));
    }
    // psql \d <pattern>: which relations match.
    if lower.starts_with("select c.oid, n.nspname, c.relname from pg_catalog.pg_class c") {
        let filter = name_filter(flat)?;
        let hits: Vec<(i64, &TableInfo)> = tables
            .iter()
            .enumerate()
            .filter(|(_, t)| filter.as_ref().is_none_or(|f| f.is_match(&t.name)))
            .map(|(i, t)| (oid_of(i), t))
            .collect();
        return Ok(Some(
            Builder::new()
                .int8("oid", hits.iter().map(|h| h.0).collect())
                .text("nspname", hits.iter().map(|_| Some(SCHEMA)).collect())
                .text("relname", hits.iter().map(|h| Some(h.1.name.as_str())).collect())
                .build(),
        ));
    }
    // psql \d <table>: the table's properties (no checks, indexes, rules, triggers, RLS).
    if lower.starts_with("select c.relchecks, c.relkind") {
        let found = by_oid(tables, oid_after(flat, "WHERE c.oid =")).is_some();
        let n = usize::from(found);
        let mut b = Builder::new()
            .int4("relchecks", vec![Some(0); n])
            .text("relkind", vec![Some("r"); n])
            .bool("relhasindex", vec![false; n])
            .bool("relhasrules", vec![false; n])
            .bool("relhastriggers", vec![false; n])
            .bool("relrowsecurity", vec![false; n])
            .bool("relforcerowsecurity", vec![false; n])
            .bool("relhasoids", vec![false; n])
            .bool("relispartition", vec![false; n])
            .text("reloptions", vec![Some(""); n])
            .int8("reltablespace", vec![0; n])
            .text("reloftype", vec![Some(""); n])
            .text("relpersistence", vec![Some("p"); n])
            .text("relreplident", vec![Some("d"); n]);
        if lower.contains("am.amname") {
            b = b.text("amname", vec![Some("heap"); n]);
        }
        return Ok(Some(b.build()));
    }
    // psql \d <table>: its columns (\d+ asks for storage, compression, statistics target
    // and description too, in the order the query names them).
    if lower.contains("from pg_catalog.pg_attribute a") && lower.contains("a.attrelid =") {
        let t = by_oid(tables, oid_after(flat, "a.attrelid ="));
        let cols: Vec<&(String, ColumnType, String)> = t.map(|t| t.columns.iter().collect()).unwrap_or_default();
        let n = cols.len();
        let mut b = Builder::new()
            .text("attname", cols.iter().map(|c| Some(c.0.as_str())).collect())
            .text("format_type", cols.iter().map(|c| Some(pg_type_name(c.1))).collect())
            .text("attrdef", vec![None::<&str>; n])
            .bool("attnotnull", vec![false; n])
            .text("attcollation", vec![None::<&str>; n])
            .text("attidentity", vec![Some(""); n])
            .text("attgenerated", vec![Some(""); n]);
        let mut extra: Vec<(usize, &str)> =
            ["a.attstorage", "a.attcompression", "a.attstattarget", "pg_catalog.col_description("]
                .iter()
                .filter_map(|m| lower.find(m).map(|at| (at, *m)))
                .collect();
        extra.sort();
        for (_, m) in extra {
            b = match m {
                "a.attstorage" => b.text("attstorage", vec![Some("x"); n]),
                "a.attcompression" => b.text("attcompression", vec![Some(""); n]),
                "a.attstattarget" => b.int4("attstattarget", vec![None; n]),
                _ => {
                    b.text("col_description", cols.iter().map(|c| (!c.2.is_empty()).then_some(c.2.as_str())).collect())
                }
            };
        }
        return Ok(Some(b.build()));
    }
    if EMPTY_CATALOGS.iter().any(|c| lower.contains(c)) {
        return Ok(Some(Builder::new().text("?column?", Vec::<Option<&str>>::new()).build()));
    }
    Ok(None)
}

/// The quoted items of a list after `prefix` (`c.relkind in ('r','p','')`).
fn literal_list_after(lower: &str, prefix: &str) -> Vec<String> {
    let Some(at) = lower.find(prefix) else { return Vec::new() };
    let rest = &lower[at + prefix.len()..];
    let end = rest.find(')').unwrap_or(rest.len());
    rest[..end].split(',').map(|s| s.trim().trim_matches('\'').to_string()).collect()
}
