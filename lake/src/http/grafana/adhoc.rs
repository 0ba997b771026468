//! Ad-hoc filters (the dashboard's filter bar) and the keys and values offered for them.
//!
//! A filter is applied by wrapping the target's SQL:
//! `SELECT * FROM (<target>) AS __lake_target WHERE "<key>" <op> ?`, the value bound as
//! a parameter. The key is checked against the columns the target actually returns and
//! then quoted as an identifier; a filter whose key the target does not return is skipped
//! (Grafana applies the bar to every panel of the dashboard, and a panel without that
//! column is simply not concerned). The operator comes from a fixed list. So neither the
//! key, the operator nor the value is ever pasted into SQL as text.

use duckdb::types::Value;

use super::request::AdhocFilter;
use crate::http::error::ApiError;

/// Keys offered by `/tag-keys`, and the table and column `/tag-values` reads each from.
/// Static text only: this is the whole set of SQL fragments the tag endpoints render.
pub(crate) const TAG_KEYS: &[(&str, &str, &str)] = &[
    ("host", "metrics", "host"),
    ("name", "metrics", "name"),
    ("vhost", "http", "vhost"),
    ("status", "http", "status"),
    ("method", "http", "method"),
    ("remote_ip", "http", "remote_ip"),
    ("client_ip", "http", "client_ip"),
    ("client_class", "http", "client_class"),
    ("src", "firewall", "src"),
    ("jail", "bans", "jail"),
    ("ip", "bans", "ip"),
    ("unit", "logs", "unit"),
    ("kind", "probes", "kind"),
    ("target", "probes", "target"),
    ("rule", "alerts", "rule"),
    ("severity", "alerts", "severity"),
];

/// Distinct values offered per key at most.
pub(crate) const MAX_TAG_VALUES: usize = 1000;

/// The comparison an operator stands for, with `{c}` the quoted column; `?` the value.
fn condition(operator: &str, column: &str) -> Option<String> {
    Some(match operator {
        "=" => format!("{column} = ?"),
        "!=" => format!("{column} IS DISTINCT FROM ?"),
        "<" => format!("{column} < ?"),
        ">" => format!("{column} > ?"),
        "<=" => format!("{column} <= ?"),
        ">=" => format!("{column} >= ?"),
        "=~" => format!("regexp_matches(CAST({column} AS VARCHAR), ?)"),
        "!~" => format!("NOT coalesce(regexp_matches(CAST({column} AS VARCHAR), ?), false)"),
        _ => return None,
    })
}

/// `name` as a quoted identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Wraps `sql` so that `filters` apply to its result, whose columns are `columns`.
/// Returns `None` when no filter concerns this result (run `sql` as it is).
pub(crate) fn wrap(
    sql: &str,
    params: &[Value],
    filters: &[AdhocFilter],
    columns: &[String],
) -> Result<Option<(String, Vec<Value>)>, ApiError> {
    let mut conditions = Vec::new();
    let mut bound = params.to_vec();
    for f in filters {
        let Some(column) = columns.iter().find(|c| **c == f.key) else {
            continue;
        };
        let cond = condition(&f.operator, &quote_identifier(column)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "ad-hoc filter operator {:?} is not supported (use =, !=, <, >, <=, >=, =~, !~)",
                f.operator
            ))
        })?;
        conditions.push(cond);
        bound.push(Value::Text(f.value.clone()));
    }
    if conditions.is_empty() {
        return Ok(None);
    }
    // Newlines, so a trailing `-- comment` in the target cannot swallow the `)`.
    let sql =
        format!("SELECT * FROM (\n{}\n) AS __lake_target WHERE {}", strip_semicolons(sql), conditions.join(" AND "));
    Ok(Some((sql, bound)))
}

/// `sql` without trailing `;` (a subquery may not end in one).
pub(crate) fn strip_semicolons(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// The SQL listing the values of a tag key: fixed text from [`TAG_KEYS`], plus a time
/// condition rendered by the caller from typed values.
pub(crate) fn values_sql(key: &str, time_condition: Option<&str>) -> Option<String> {
    let &(_, table, column) = TAG_KEYS.iter().find(|(k, _, _)| *k == key)?;
    let when = time_condition.map_or(String::new(), |c| format!(" AND {c}"));
    Some(format!(
        "SELECT DISTINCT CAST({column} AS VARCHAR) AS v FROM {table} \
         WHERE {column} IS NOT NULL{when} ORDER BY 1 LIMIT {MAX_TAG_VALUES}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(key: &str, operator: &str, value: &str) -> AdhocFilter {
        AdhocFilter { key: key.into(), operator: operator.into(), value: value.into() }
    }

    #[test]
    fn filters_wrap_with_parameters() {
        let columns = vec!["host".to_string(), "value".to_string()];
        let (sql, params) = wrap(
            "select host, value from metrics; ",
            &[Value::Text("p".into())],
            &[
                filter("host", "=", "x' OR 1=1 --"),
                filter("vhost", "=", "ignored: not a column"),
                filter("value", "!~", "^1"),
            ],
            &columns,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM (\nselect host, value from metrics\n) AS __lake_target WHERE \
             \"host\" = ? AND NOT coalesce(regexp_matches(CAST(\"value\" AS VARCHAR), ?), false)"
        );
        assert_eq!(params, vec![Value::Text("p".into()), Value::Text("x' OR 1=1 --".into()), Value::Text("^1".into())]);
    }

    #[test]
    fn unknown_operators_and_absent_keys() {
        let columns = vec!["host".to_string()];
        assert!(wrap("select 1", &[], &[filter("host", "; drop", "x")], &columns).is_err());
        assert!(wrap("select 1", &[], &[filter("nope", "=", "x")], &columns).unwrap().is_none());
    }

    #[test]
    fn tag_values_only_for_known_keys() {
        assert_eq!(
            values_sql("jail", None).unwrap(),
            "SELECT DISTINCT CAST(jail AS VARCHAR) AS v FROM bans WHERE jail IS NOT NULL \
             ORDER BY 1 LIMIT 1000"
        );
        assert!(values_sql("jail; drop", None).is_none());
    }
}
