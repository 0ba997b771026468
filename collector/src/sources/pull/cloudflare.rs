//! The `cloudflare` preset: Cloudflare's GraphQL Analytics API, one POST per zone and
//! window asking for `httpRequestsAdaptiveGroups` (per minute, host, status, country,
//! cache status and method) and `firewallEventsAdaptive` (every security event).
//!
//! **Windows that close.** Cloudflare keeps adding requests to the last minutes' groups
//! for a while (adaptive sampling, late logs), so a window that ends now would be reported
//! again, larger, by the next pull. A pull asks only for `[since, until)` where `until` is
//! at most `now - settle` (default 5 minutes), floored to the minute: a minute is fetched
//! once, after it settled. `since` is the previous window's `until` — the zone's cursor,
//! saved with the rows in one spool group — so a restart resumes at the first minute not
//! shipped, without repeating one. The first window starts `backfill` (default 1 hour)
//! back; a window spans at most `max_window` (default 1 hour), so a long outage is caught
//! up one window per interval.

use serde_json::{json, Value};

use super::map::{kind, BadRecord, Column, ColumnType, MapError, Mapping, RowsPath, TsFormat, TsSpec};
use crate::sources::ufw::{FirewallEvent, FirewallRows};

/// The GraphQL endpoint.
pub const DEFAULT_URL: &str = "https://api.cloudflare.com/client/v4/graphql";
/// Default custom table of the HTTP groups.
pub const DEFAULT_TABLE: &str = "cloudflare_http";
/// Most groups or events asked for per window (the API's own maximum), written in the query.
pub const LIMIT: usize = 10_000;

/// The query: both datasets of one zone over `[since, until)`.
const QUERY: &str = "query ($zoneTag: string, $since: Time, $until: Time) { viewer { zones(filter: {zoneTag: $zoneTag}) { \
httpRequestsAdaptiveGroups(limit: LIMIT_N, filter: {datetime_geq: $since, datetime_lt: $until}, orderBy: [datetimeMinute_ASC]) { \
count sum { edgeResponseBytes visits } dimensions { datetimeMinute clientRequestHTTPHost edgeResponseStatus clientCountryName cacheStatus clientRequestHTTPMethodName } } \
FIREWALL } } }";

const FIREWALL_PART: &str = "firewallEventsAdaptive(limit: LIMIT_N, filter: {datetime_geq: $since, datetime_lt: $until}, orderBy: [datetime_ASC]) { \
datetime action source clientIP clientCountryName clientRequestHTTPHost clientRequestHTTPMethodName clientRequestPath ruleId rayName userAgent }";

/// The request body for one zone and window (µs bounds).
pub fn body(zone: &str, since: i64, until: i64, firewall: bool) -> String {
    let query =
        QUERY.replace("FIREWALL", if firewall { FIREWALL_PART } else { "" }).replace("LIMIT_N", &LIMIT.to_string());
    json!({
        "query": query,
        "variables": {
            "zoneTag": zone,
            "since": rfc3339_seconds(since),
            "until": rfc3339_seconds(until),
        }
    })
    .to_string()
}

fn rfc3339_seconds(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map(|t| format!("{:.0}", t))
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// The next window of a zone: `[since, until)`, `until` the last settled minute; `None`
/// when no minute settled since `since`.
pub fn window(
    cursor: Option<i64>,
    now: i64,
    settle: std::time::Duration,
    backfill: std::time::Duration,
    max_window: std::time::Duration,
) -> Option<(i64, i64)> {
    const MINUTE: i64 = 60_000_000;
    let settled = (now - settle.as_micros() as i64).div_euclid(MINUTE) * MINUTE;
    let since = cursor.unwrap_or_else(|| (settled - backfill.as_micros() as i64).div_euclid(MINUTE) * MINUTE);
    let until = settled.min(since + (max_window.as_micros() as i64).max(MINUTE));
    (until > since).then_some((since, until))
}

/// The mapping of the HTTP groups into the custom table: one row per group.
pub fn http_mapping(zone: &str) -> Mapping {
    let c = |name: &str, pointer: &str, ty| Column { name: name.into(), pointer: pointer.into(), ty };
    Mapping {
        rows: RowsPath::parse("/data/viewer/zones/[]/httpRequestsAdaptiveGroups").expect("valid path"),
        columns: vec![
            c("vhost", "/dimensions/clientRequestHTTPHost", ColumnType::String),
            c("status", "/dimensions/edgeResponseStatus", ColumnType::Int),
            c("country", "/dimensions/clientCountryName", ColumnType::String),
            c("cache_status", "/dimensions/cacheStatus", ColumnType::String),
            c("method", "/dimensions/clientRequestHTTPMethodName", ColumnType::String),
            c("requests", "/count", ColumnType::Int),
            c("bytes", "/sum/edgeResponseBytes", ColumnType::Int),
            c("visits", "/sum/visits", ColumnType::Int),
        ],
        ts: Some(TsSpec { pointer: "/dimensions/datetimeMinute".into(), format: TsFormat::Rfc3339 }),
        set: vec![("zone".into(), Value::String(zone.into()))],
    }
}

/// GraphQL reports failures in `errors` (often with `data: null`): their messages.
pub fn graphql_errors(doc: &Value) -> Result<(), MapError> {
    match doc.get("errors") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(Value::Array(a)) => {
            let msgs: Vec<String> = a
                .iter()
                .map(|e| e.get("message").and_then(Value::as_str).map_or_else(|| e.to_string(), str::to_string))
                .collect();
            Err(MapError::Api(msgs.join("; ")))
        }
        Some(other) => Err(MapError::Api(other.to_string())),
    }
}

/// The `firewall` action of a Cloudflare action: `block` (and closing the connection)
/// BLOCK, `log` AUDIT, every challenge CHALLENGE, the rest (`allow`, `skip`, `bypass`, a
/// solved challenge) ALLOW. The raw action stays in `attrs['cf_action']`.
pub fn firewall_action(a: &str) -> &'static str {
    match a {
        "block" | "drop" | "connection_close" | "connectionClose" => "BLOCK",
        "log" => "AUDIT",
        _ if a.contains("challenge") && !a.ends_with("solved") && !a.ends_with("bypassed") => "CHALLENGE",
        _ => "ALLOW",
    }
}

/// Adds the zone's firewall events to `rows` (host: the collector's node, which the lake
/// requires; `source` = `cloudflare`; the zone and request in `attrs`). Returns
/// the events kept and the ones that did not map.
pub fn firewall_rows(
    doc: &Value,
    zone: &str,
    node: &str,
    rows: &mut FirewallRows,
) -> Result<(usize, Vec<BadRecord>), MapError> {
    let path = RowsPath::parse("/data/viewer/zones/[]/firewallEventsAdaptive").expect("valid path");
    let mut bad = Vec::new();
    let mut n = 0;
    for ev in path.records(doc)? {
        match firewall_event(ev, zone) {
            Ok((ts, e)) => {
                rows.push(node, ts, &e);
                n += 1;
            }
            Err(error) => bad.push(BadRecord { raw: ev.to_string(), error }),
        }
    }
    Ok((n, bad))
}

fn firewall_event(ev: &Value, zone: &str) -> Result<(i64, FirewallEvent), MapError> {
    let at = |p: &str| format!("/data/viewer/zones/[]/firewallEventsAdaptive/…/{p}");
    let s = |k: &str| ev.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let dt = ev.get("datetime").ok_or_else(|| MapError::Missing(at("datetime")))?;
    let ts = TsFormat::Rfc3339.parse(dt).map_err(|reason| MapError::BadValue { pointer: at("datetime"), reason })?;
    let action = match ev.get("action") {
        Some(Value::String(a)) => a.clone(),
        Some(other) => return Err(MapError::WrongType { pointer: at("action"), want: "a string", got: kind(other) }),
        None => return Err(MapError::Missing(at("action"))),
    };
    let mut e = FirewallEvent {
        action: firewall_action(&action).to_string(),
        source: Some("cloudflare"),
        src: s("clientIP"),
        ..Default::default()
    };
    e.attrs.insert("zone".into(), zone.into());
    e.attrs.insert("cf_action".into(), action);
    for (k, name) in [
        ("source", "cf_source"),
        ("clientCountryName", "country"),
        ("clientRequestHTTPHost", "vhost"),
        ("clientRequestHTTPMethodName", "method"),
        ("clientRequestPath", "path"),
        ("ruleId", "rule_id"),
        ("rayName", "ray"),
        ("userAgent", "user_agent"),
    ] {
        if let Some(v) = s(k) {
            e.attrs.insert(name.into(), v);
        }
    }
    Ok((ts, e))
}
