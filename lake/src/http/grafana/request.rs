//! The request bodies the Grafana JSON datasource plugins send, parsed leniently (Grafana
//! adds fields between versions, so unknown ones are ignored), and the typed values
//! taken from them: the time range, the bucket width and the template variables.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

use super::macros::{auto_interval_ms, MacroContext};
use crate::http::error::ApiError;

/// Range used when a request carries none: Grafana's own default, the last 6 hours.
const DEFAULT_SPAN_MS: i64 = 6 * 3_600_000;

/// `range` of a request: ISO 8601 instants (`raw` is ignored: it may be relative text).
#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    pub(crate) from: String,
    pub(crate) to: String,
}

/// `POST /query`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct QueryRequest {
    pub(crate) range: Option<Range>,
    pub(crate) interval_ms: Option<serde_json::Number>,
    pub(crate) max_data_points: Option<u64>,
    pub(crate) targets: Vec<Target>,
    pub(crate) adhoc_filters: Vec<AdhocFilter>,
    pub(crate) scoped_vars: BTreeMap<String, Json>,
}

/// One panel query.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Target {
    pub(crate) ref_id: Option<String>,
    pub(crate) target: Option<String>,
    /// An object, or (older plugin versions) a JSON text of one.
    pub(crate) payload: Option<Json>,
    pub(crate) hide: bool,
    /// simple-json's `"timeserie"` or `"table"`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
}

/// `{key, operator, value}` of the dashboard's ad-hoc filter bar.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AdhocFilter {
    pub(crate) key: String,
    pub(crate) operator: String,
    #[serde(deserialize_with = "any_text")]
    pub(crate) value: String,
}

/// `POST /variable`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct VariableRequest {
    pub(crate) payload: Option<Json>,
    pub(crate) target: Option<String>,
    pub(crate) range: Option<Range>,
}

/// `POST /tag-values`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TagValuesRequest {
    pub(crate) key: String,
    pub(crate) range: Option<Range>,
}

/// `POST /search`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SearchRequest {
    pub(crate) target: Option<String>,
}

/// `POST /metric-payload-options`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PayloadOptionsRequest {
    pub(crate) name: Option<String>,
}

/// `POST /annotations`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AnnotationRequest {
    pub(crate) range: Option<Range>,
    /// Echoed back in every event, as simple-json requires.
    pub(crate) annotation: Json,
}

/// A number or a string as text (Grafana sends ad-hoc values either way).
fn any_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Json::deserialize(d)? {
        Json::String(s) => s,
        Json::Null => String::new(),
        other => other.to_string(),
    })
}

/// Parses a JSON body, answering 400 with serde's message.
pub(crate) fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    // Some clients POST with no body at all (e.g. `/metrics` from older plugins).
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The payload as an object (parsing the text form of older plugin versions).
pub(crate) fn payload_object(payload: Option<&Json>) -> Result<serde_json::Map<String, Json>, ApiError> {
    match payload {
        None | Some(Json::Null) => Ok(serde_json::Map::new()),
        Some(Json::Object(m)) => Ok(m.clone()),
        Some(Json::String(s)) if s.trim().is_empty() => Ok(serde_json::Map::new()),
        Some(Json::String(s)) => match serde_json::from_str(s) {
            Ok(Json::Object(m)) => Ok(m),
            _ => Err(ApiError::bad_request("payload must be a JSON object")),
        },
        Some(_) => Err(ApiError::bad_request("payload must be a JSON object")),
    }
}

/// `(from_ms, to_ms)` of a range; the last 6 hours without one.
pub(crate) fn range_ms(range: Option<&Range>, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let Some(r) = range else {
        return Ok((now_ms - DEFAULT_SPAN_MS, now_ms));
    };
    let from = instant_ms(&r.from, "range.from")?;
    let to = instant_ms(&r.to, "range.to")?;
    if to < from {
        return Err(ApiError::bad_request("range.to is before range.from"));
    }
    Ok((from, to))
}

/// An RFC 3339 instant parsed into epoch milliseconds: from here on it is a number, so
/// nothing of the request's text reaches the SQL.
fn instant_ms(text: &str, field: &str) -> Result<i64, ApiError> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| ApiError::bad_request(format!("{field} {text:?} is not an RFC 3339 time: {e}")))
}

/// Now, in epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Payload keys with a meaning of their own: every other key is a template variable.
pub(crate) const RESERVED_PAYLOAD_KEYS: [&str; 2] = ["sql", "format"];

impl QueryRequest {
    /// The macro context shared by the targets; `payload` adds the target's variables.
    pub(crate) fn context(
        &self,
        payload: &serde_json::Map<String, Json>,
        now_ms: i64,
    ) -> Result<MacroContext, ApiError> {
        let (from_ms, to_ms) = range_ms(self.range.as_ref(), now_ms)?;
        let interval_ms = match &self.interval_ms {
            Some(n) => n
                .as_u64()
                .filter(|&v| v > 0)
                .ok_or_else(|| ApiError::bad_request(format!("intervalMs must be a positive integer, got {n}")))?,
            None => auto_interval_ms(to_ms - from_ms, self.max_data_points.unwrap_or(1000)),
        };
        let mut vars = BTreeMap::new();
        for (name, v) in &self.scoped_vars {
            // `__interval` and friends are macros here, computed from typed fields.
            if name.starts_with("__") {
                continue;
            }
            let value = match v {
                Json::Object(o) => o.get("value").unwrap_or(&Json::Null),
                other => other,
            };
            if let Some(values) = variable_values(value) {
                vars.insert(name.clone(), values);
            }
        }
        for (name, v) in payload {
            if RESERVED_PAYLOAD_KEYS.contains(&name.as_str()) {
                continue;
            }
            if let Some(values) = variable_values(v) {
                vars.insert(name.clone(), values);
            }
        }
        Ok(MacroContext { from_ms, to_ms, interval_ms, vars })
    }
}

/// A variable's values: a string or number is one, an array is several.
fn variable_values(v: &Json) -> Option<Vec<String>> {
    let one = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Json::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|s| vec![s]),
    }
}
