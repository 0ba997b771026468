//! The sandbox every query connection runs in.
//!
//! Settings (checked against DuckDB 1.5.6 by the tests in `engine::tests`):
//! - they are *database-wide*, not per connection: once locked, no connection can set
//!   them again. So they are applied once per database, when it is opened (by
//!   [`Engine::open`](super::Engine::open), and again for the database that replaces a
//!   broken one), and every query connection cloned afterwards inherits them (`TimeZone` is set
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
//! `INSERT`, dropping our TEMP views), nor a SELECT that changes the engine through a
//! function (`enable_logging`, `checkpoint`, …): [`check_read_only`] accepts a single read
//! statement that calls only what [`allow`] allows. It asks DuckDB's own parser through
//! `json_serialize_sql`, which serialises only SELECT statements — and DuckDB parses
//! `WITH`, `VALUES`, FROM-first, `DESCRIBE`, `SHOW` and `SUMMARIZE` into SELECT nodes — and
//! walks the tree it returns. A regex would misjudge comments, strings and new syntax; the
//! parser cannot. `EXPLAIN` (and `EXPLAIN ANALYZE`) is not serialisable, so it is peeled
//! off here and the statement it wraps is checked instead.
//!
//! Refusals are [`EngineError::Forbidden`] (a 403) with a message naming what is not
//! allowed: a statement that is not a read (its leading keyword, found by a small lexer
//! that skips strings and comments, picks the message), a function or table not on the
//! allow-list (named: `function enable_logging is not allowed: …`), or, from DuckDB's
//! "Permission Error" at bind time, a file or URL outside the lake ([`FILES_FORBIDDEN`]).
//! Syntax errors, more than one read statement, and names DuckDB does not know at all
//! stay [`EngineError::Sql`] (a 400).
//!
//! Every statement of a request goes through the check, whoever wrote it: `/v1/sql`, the
//! Grafana API (targets, variables, annotations, tag values, and the ad-hoc filters'
//! wrapper), the web UI (which uses both), `lake query`/`correlate`/`top` (remote or
//! `--data-dir`), named queries, alert rules from `lake.toml` (so `lake check-config`
//! reports a rule calling a refused function) and `lake tables`. Only the engine's own
//! DDL — the per-query views and fresh-row tables, and this module's settings — runs
//! unchecked, on the connection directly.

use std::path::Path;

use duckdb::Connection;

use super::allow::{self, AllowList};
use super::tree::{Node, Tree};
use super::{EngineError, Limits, Result};

/// Applies every setting to the database, then locks them.
pub(super) fn apply(conn: &Connection, data_dir: &Path, limits: &Limits) -> Result<()> {
    let tables = format!("{}/", data_dir.join(lake_format::layout::TABLES_DIR).display());
    let sql = format!(
        "SET threads = {threads};
         SET memory_limit = {memory};
         SET autoload_known_extensions = false;
         SET autoinstall_known_extensions = false;
         SET allow_community_extensions = false;
         SET GLOBAL TimeZone = 'UTC';
         SET parquet_metadata_cache = true;
         SET allowed_directories = [{tables}];
         SET enable_external_access = false;
         SET lock_configuration = true;",
        threads = limits.threads.max(1),
        memory = quote(&limits.memory_limit),
        tables = quote(&tables),
    );
    conn.execute_batch(&sql).map_err(|e| EngineError::Internal(format!("sandbox settings: {e}")))
}

const READ_ONLY: &str = "only a single read statement is allowed \
     (SELECT, WITH, VALUES, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)";

/// The prefix of the 403 for a file or URL the sandbox refused.
pub(super) const FILES_FORBIDDEN: &str = "not allowed: queries may only read the lake's own tables \
     (no files outside <data>/tables/, no URLs)";

/// Leading keywords of the statements that read.
const READ_KEYWORDS: [&str; 11] =
    ["SELECT", "WITH", "VALUES", "FROM", "DESCRIBE", "SHOW", "SUMMARIZE", "EXPLAIN", "TABLE", "PIVOT", "UNPIVOT"];

/// What is not allowed about a statement with this leading keyword.
fn refusal(keyword: &str) -> String {
    let what = match keyword {
        "SET" | "RESET" | "PRAGMA" => format!("{keyword} is not allowed: the configuration is locked"),
        "COPY" | "EXPORT" | "IMPORT" => format!("{keyword} is not allowed: queries cannot read or write files"),
        "ATTACH" | "DETACH" | "USE" => format!("{keyword} is not allowed: queries cannot attach or switch databases"),
        "INSTALL" | "LOAD" | "FORCE" => format!("{keyword} is not allowed: extensions cannot be installed or loaded"),
        "" => "this statement is not allowed".to_string(),
        _ => format!("{keyword} statements are not allowed: the SQL API is read-only"),
    };
    format!("{what}; {READ_ONLY}")
}

/// Accepts exactly one read statement that calls only what [`allow`] allows, judged on
/// the syntax tree DuckDB's own parser makes of it; `lake` says whether a table name
/// (lower-case) is one of the lake's.
pub(super) fn check_read_only(
    conn: &Connection,
    sql: &str,
    allow: &AllowList,
    lake: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let body = explain_body(sql).unwrap_or(sql);
    // A literal rather than a parameter: the function needs its argument's type at bind
    // time, and `quote` makes any text a well-formed literal.
    let json: String = conn
        .query_row(&format!("SELECT json_serialize_sql({})", quote(body)), [], |row| row.get(0))
        .map_err(|e| EngineError::Internal(format!("parsing the statement: {e}")))?;
    let tree = Tree::parse(&json).map_err(|e| EngineError::Internal(format!("json_serialize_sql answer: {e}")))?;
    if tree.bool(0, "error") != Some(false) {
        return Err(if tree.str(0, "error_type") == Some("parser") {
            EngineError::Sql(format!("Parser Error: {}", tree.str(0, "error_message").unwrap_or_default()))
        } else {
            // Name the first statement that is not a read.
            let keyword =
                leading_keywords(body).into_iter().find(|k| !READ_KEYWORDS.contains(&k.as_str())).unwrap_or_default();
            EngineError::Forbidden(refusal(&keyword))
        });
    }
    let statements = match tree.get(0, "statements").map(|s| tree.node(s)) {
        Some(Node::Array(s)) => s,
        _ => return Err(EngineError::Internal("json_serialize_sql answer without statements".into())),
    };
    match statements.as_slice() {
        [one] => allow::check(&tree, *one, allow, lake),
        [] => Err(EngineError::Sql("empty query".to_string())),
        many => Err(EngineError::Sql(format!("{READ_ONLY}; got {} statements", many.len()))),
    }
}

/// The upper-cased first word of every statement of `sql` (split at `;` outside strings,
/// quoted identifiers and comments): enough to name what a refused statement is.
fn leading_keywords(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut at_start = true;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                at_start = false;
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b';' => {
                at_start = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            c if at_start && (c.is_ascii_alphabetic() || c == b'(') => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                // `(SELECT …)`: a parenthesised read.
                let word = if start == i { "SELECT".to_string() } else { sql[start..i].to_ascii_uppercase() };
                out.push(word);
                at_start = false;
                i = i.max(start + 1);
            }
            _ => {
                at_start = false;
                i += 1;
            }
        }
    }
    out
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
        assert_eq!(explain_body("  explain analyze\nselect 1"), Some("\nselect 1"));
        assert_eq!(explain_body("explainselect 1"), None);
        assert_eq!(explain_body("select 1"), None);
        assert_eq!(explain_body("é"), None);
    }

    #[test]
    fn leading_keywords_skip_strings_and_comments() {
        assert_eq!(leading_keywords("select ';drop' ; -- x;\n /* ; */ DROP view v"), ["SELECT", "DROP"]);
        assert_eq!(leading_keywords("  copy (select 1) to 'x'"), ["COPY"]);
        assert_eq!(leading_keywords("(select 1)"), ["SELECT"]);
        assert_eq!(leading_keywords(""), Vec::<String>::new());
        assert!(refusal("SET").contains("configuration is locked"));
        assert!(refusal("LOAD").contains("extensions"));
        assert!(refusal("UPDATE").contains("read-only"));
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("it's"), "'it''s'");
    }
}
