//! Entry points of the fuzz targets (`fuzz/` at the repository root) and of the tests
//! that replay `fixtures/fuzz-regressions/`: not an API.
//!
//! Everything a Grafana endpoint does with a request before DuckDB sees it — parsing the
//! body, the payload, the range and the variables, expanding the macros, wrapping the
//! ad-hoc filters — without an engine. Bad input must be a 400, never a panic.

use serde_json::Value as Json;

use super::request::{
    parse, payload_object, range_ms, AnnotationRequest, PayloadOptionsRequest, QueryRequest, SearchRequest,
    TagValuesRequest, VariableRequest,
};
use super::{adhoc, annotations, looks_like_sql, macros, time_condition};

/// A fixed "now" (2024-03-09T16:00:00Z), so a crash replays the same way on any day.
const NOW_MS: i64 = 1_710_000_000_000;

/// SQL a target carries as a [`super::Grafana::resolve`] would find it (named queries
/// aside: their SQL is the operator's, not the request's).
fn target_sql<'a>(target: Option<&'a str>, payload: &'a serde_json::Map<String, Json>) -> Option<&'a str> {
    if let Some(sql) = payload.get("sql").and_then(Json::as_str).filter(|s| !s.trim().is_empty()) {
        return Some(sql);
    }
    target.map(str::trim).filter(|t| looks_like_sql(t))
}

/// One request body, as every endpoint that takes a body would read it.
pub fn request(body: &[u8]) {
    if let Ok(req) = parse::<QueryRequest>(body) {
        for target in &req.targets {
            let Ok(payload) = payload_object(target.payload.as_ref()) else {
                continue;
            };
            let Ok(ctx) = req.context(&payload, NOW_MS) else {
                continue;
            };
            let Some(sql) = target_sql(target.target.as_deref(), &payload) else {
                continue;
            };
            if let Ok(expanded) = macros::expand(sql, &ctx) {
                // As if the target returned every column a filter names.
                let columns: Vec<String> = req.adhoc_filters.iter().map(|f| f.key.clone()).collect();
                let _ = adhoc::wrap(&expanded.sql, &expanded.params, &req.adhoc_filters, &columns);
            }
        }
    }
    if let Ok(req) = parse::<VariableRequest>(body) {
        if let Ok(payload) = payload_object(req.payload.as_ref()) {
            let text = payload.get("target").and_then(Json::as_str).or(req.target.as_deref()).unwrap_or("");
            if let Ok((from_ms, to_ms)) = range_ms(req.range.as_ref(), NOW_MS) {
                let ctx = macros::MacroContext {
                    from_ms,
                    to_ms,
                    interval_ms: macros::auto_interval_ms(to_ms - from_ms, 1000),
                    vars: Default::default(),
                };
                let _ = macros::expand(text, &ctx);
            }
        }
    }
    if let Ok(req) = parse::<TagValuesRequest>(body) {
        let condition = req.range.as_ref().map(|r| time_condition(Some(r)));
        if let Some(Ok(c)) = &condition {
            let _ = adhoc::values_sql(&req.key, Some(c));
        }
    }
    let _ = parse::<SearchRequest>(body);
    let _ = parse::<PayloadOptionsRequest>(body);
    if let Ok(req) = parse::<AnnotationRequest>(body) {
        if let Ok(sources) = annotations::sources(req.annotation.get("query").and_then(Json::as_str)) {
            if let Ok((from_ms, to_ms)) = range_ms(req.range.as_ref(), NOW_MS) {
                let ctx = macros::MacroContext { from_ms, to_ms, interval_ms: 1000, vars: Default::default() };
                if let (Ok(from), Ok(to)) = (macros::expand("$__timeFrom()", &ctx), macros::expand("$__timeTo()", &ctx))
                {
                    for s in sources {
                        let _ = s.sql(&from.sql, &to.sql);
                    }
                }
            }
        }
    }
}

/// SQL text through [`macros::expand`] with a range, an interval and a few variables
/// (`host` with one value, `hosts` with two, `none` with none). Every bound value has
/// its `?` placeholder in the output.
pub fn macros(sql: &[u8]) {
    let Ok(sql) = std::str::from_utf8(sql) else {
        return;
    };
    let ctx = macros::MacroContext {
        from_ms: NOW_MS - 6 * 3_600_000,
        to_ms: NOW_MS,
        interval_ms: 30_000,
        vars: [
            ("host".to_string(), vec!["web-1".to_string()]),
            ("hosts".to_string(), vec!["web-1".to_string(), "db'1".to_string()]),
            ("none".to_string(), Vec::new()),
        ]
        .into(),
    };
    if let Ok(expanded) = macros::expand(sql, &ctx) {
        assert!(expanded.params.len() <= expanded.sql.matches('?').count(), "a bound value without its placeholder");
    }
}

/// Every entry point by the name of its fuzz target (and of its directory under
/// `fixtures/fuzz-regressions/`).
pub const TARGETS: &[lake_format::fuzz_regressions::Target] =
    &[("grafana_request", request), ("grafana_macros", macros)];
