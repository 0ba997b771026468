//! The sandbox every query connection runs in.
//!
//! Settings (checked against DuckDB 1.5.6 by the tests in `engine::tests`):
//! - they are *database-wide*, not per connection: once locked, no connection can set
//!   them again. So they are applied once, in [`Engine::open`](super::Engine::open),
//!   and every query connection cloned afterwards inherits them (`TimeZone` is set
//!   `GLOBAL` for the same reason). `threads` and `memory_limit` therefore bound the whole
//!   engine, shared by concurrent queries;
//! - `allowed_directories` must be set *before* `enable_external_access = false`: once
//!   external access is off, the list can no longer be changed;
//! - with external access off, DuckDB refuses every file outside the allowed directories
//!   (`COPY … TO`, `ATTACH`, `read_csv('/etc/passwd')`, `INSTALL`, `LOAD`) with a
//!   "Permission Error";
//! - `lock_configuration = true` comes last and makes every later `SET`/`PRAGMA`/`RESET`
//!   fail. TEMP views and tables are catalog objects, not configuration, so query
//!   connections can still create theirs.
//!
//! What the settings do not stop is DDL and DML on the in-memory catalog (`CREATE TABLE`,
//! `INSERT`, dropping our TEMP views): [`check_read_only`] rejects any SQL that is not a
//! single read statement. It asks DuckDB's own parser through `json_serialize_sql`, which
//! serialises only SELECT statements — and DuckDB parses `WITH`, `VALUES`, FROM-first,
//! `DESCRIBE`, `SHOW` and `SUMMARIZE` into SELECT nodes, so exactly the read forms pass.
//! A regex would misjudge comments, strings and new syntax; the parser cannot. `EXPLAIN`
//! (and `EXPLAIN ANALYZE`) is not serialisable, so it is peeled off here and the statement
//! it wraps is checked instead.

use std::path::Path;

use duckdb::Connection;
use serde::Deserialize;

use super::{EngineError, Limits, Result};

/// Applies every setting to the database, then locks them.
pub(super) fn apply(conn: &Connection, data_dir: &Path, limits: &Limits) -> Result<()> {
    let tables = format!(
        "{}/",
        data_dir.join(lake_format::layout::TABLES_DIR).display()
    );
    let sql = format!(
        "SET threads = {threads};
         SET memory_limit = {memory};
         SET autoload_known_extensions = false;
         SET autoinstall_known_extensions = false;
         SET allow_community_extensions = false;
         SET GLOBAL TimeZone = 'UTC';
         SET allowed_directories = [{tables}];
         SET enable_external_access = false;
         SET lock_configuration = true;",
        threads = limits.threads.max(1),
        memory = quote(&limits.memory_limit),
        tables = quote(&tables),
    );
    conn.execute_batch(&sql)
        .map_err(|e| EngineError::Internal(format!("sandbox settings: {e}")))
}

/// `json_serialize_sql`'s answer.
#[derive(Debug, Deserialize)]
struct Serialized {
    error: bool,
    #[serde(default)]
    error_type: String,
    #[serde(default)]
    error_message: String,
    #[serde(default)]
    statements: Vec<serde_json::Value>,
}

const READ_ONLY: &str = "only a single read statement is allowed \
     (SELECT, WITH, VALUES, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)";

/// Accepts exactly one read statement, judged by DuckDB's parser.
pub(super) fn check_read_only(conn: &Connection, sql: &str) -> Result<()> {
    let body = explain_body(sql).unwrap_or(sql);
    // A literal rather than a parameter: the function needs its argument's type at bind
    // time, and `quote` makes any text a well-formed literal.
    let json: String = conn
        .query_row(
            &format!("SELECT json_serialize_sql({})", quote(body)),
            [],
            |row| row.get(0),
        )
        .map_err(|e| EngineError::Internal(format!("parsing the statement: {e}")))?;
    let parsed: Serialized = serde_json::from_str(&json)
        .map_err(|e| EngineError::Internal(format!("json_serialize_sql answer: {e}")))?;
    if parsed.error {
        return Err(if parsed.error_type == "parser" {
            EngineError::Sql(format!("Parser Error: {}", parsed.error_message))
        } else {
            EngineError::Sql(READ_ONLY.to_string())
        });
    }
    match parsed.statements.len() {
        1 => Ok(()),
        0 => Err(EngineError::Sql("empty query".to_string())),
        n => Err(EngineError::Sql(format!("{READ_ONLY}; got {n} statements"))),
    }
}

/// The statement under a leading `EXPLAIN` or `EXPLAIN ANALYZE`, if any.
fn explain_body(sql: &str) -> Option<&str> {
    let rest = strip_keyword(sql, "explain")?;
    Some(strip_keyword(rest, "analyze").unwrap_or(rest))
}

/// `sql` after a leading keyword followed by whitespace, case-insensitively.
fn strip_keyword<'a>(sql: &'a str, keyword: &str) -> Option<&'a str> {
    let sql = sql.trim_start();
    let head = sql.get(..keyword.len())?;
    let rest = &sql[keyword.len()..];
    (head.eq_ignore_ascii_case(keyword) && rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// A SQL string literal.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_is_peeled() {
        assert_eq!(explain_body("EXPLAIN select 1"), Some(" select 1"));
        assert_eq!(
            explain_body("  explain analyze\nselect 1"),
            Some("\nselect 1")
        );
        assert_eq!(explain_body("explainselect 1"), None);
        assert_eq!(explain_body("select 1"), None);
        assert_eq!(explain_body("é"), None);
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("it's"), "'it''s'");
    }
}
