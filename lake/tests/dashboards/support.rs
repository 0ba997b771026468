//! Shared by `dashboards.rs` and `browser.rs`: a real `lake serve` over a lake written by
//! `lake-gen`, the dashboards as files, and what Grafana's JSON datasource plugin
//! (simpod-json-datasource) does to a panel's target before it reaches the lake.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::common::{free_port, write_config, Lake, READ_TOKEN};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("lake/ has a parent").to_path_buf()
}

pub fn dashboards_dir() -> PathBuf {
    repo_root().join("dashboards/grafana/dashboards")
}

/// `(file stem, parsed JSON)` of every dashboard, sorted by name.
pub fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("dashboards dir") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        out.push((path.file_stem().unwrap().to_string_lossy().into_owned(), value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A running lake over generated data, removed on drop.
pub struct GeneratedLake {
    pub lake: Lake,
    pub dir: tempfile::TempDir,
}

impl GeneratedLake {
    /// `lake-gen` (4 hosts, 15 days ending now — two earlier weeks for the Anomalies
    /// panel — metrics every ~2.5 min), then `lake serve` with a read token.
    pub fn start() -> GeneratedLake {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lake-gen"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--days",
                "15",
                "--hosts",
                "4",
                "--http-rows",
                "300000",
                "--metric-samples",
                "2400000",
                "--seed",
                "8",
            ])
            .output()
            .expect("running lake-gen");
        assert!(out.status.success(), "lake-gen failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let config = write_config(dir.path(), port, "1s");
        let lake = Lake::start(&config, port);
        GeneratedLake { lake, dir }
    }

    pub fn url(&self) -> &str {
        &self.lake.url
    }
}

/// The last `hours` ending now, as Grafana sends it.
pub fn range_last(hours: i64) -> Value {
    let now = jiff::Timestamp::now();
    let from = now - jiff::SignedDuration::from_hours(hours);
    json!({ "from": from.to_string(), "to": now.to_string(), "raw": { "from": format!("now-{hours}h"), "to": "now" } })
}

/// POSTs JSON with the read token: `(status, body)`.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(url)
        .bearer_auth(READ_TOKEN)
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// What Grafana's template service does to a JSON-datasource payload in code mode: every
/// `$name`, `${name}`, `${name:fmt}` and `[[name]]` naming a known variable becomes the
/// variable's JSON text (the plugin's `cleanMatch`: a single string loses its quotes, a
/// multi-value variable becomes an array); unknown names (the lake's macros, `$hosts`)
/// are left as they are. Returns the text, which must then parse as JSON.
pub fn interpolate(text: &str, vars: &Map<String, Value>) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let replacement = |name: &str| -> Option<String> {
        let v = vars.get(name)?;
        Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(inner) = tail.strip_prefix("${") {
            match inner.find('}') {
                Some(close) => {
                    let name = inner[..close].split([':', '.']).next().unwrap_or("");
                    (name, close + 3)
                }
                None => ("", 1),
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(close) => (inner[..close].split(':').next().unwrap_or(""), close + 4),
                None => ("", 1),
            }
        } else if let Some(after) = tail.strip_prefix('$') {
            let n = after.find(|c: char| !word(c)).unwrap_or(after.len());
            (&after[..n], n + 1)
        } else {
            ("", 1)
        };
        match (!name.is_empty() && name.chars().all(word)).then(|| replacement(name)).flatten() {
            Some(r) => out.push_str(&r),
            None => out.push_str(&tail[..len.max(1)]),
        }
        rest = &tail[len.max(1)..];
    }
    out.push_str(rest);
    out
}

/// The template variables of a dashboard: `(name, SQL)`.
pub fn variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or("").to_string(),
                        v["query"]["query"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every target of a dashboard: `(label, panel type or "annotation", target)`.
pub fn targets(dashboard: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let label = format!("panel {} {:?}", p["id"], p["title"].as_str().unwrap_or(""));
            out.push((label, p["type"].as_str().unwrap_or("").to_string(), t.clone()));
        }
    }
    for a in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if a.get("target").is_some() {
            out.push((
                format!("annotation {:?}", a["name"].as_str().unwrap_or("")),
                "annotation".into(),
                a["target"].clone(),
            ));
        }
    }
    out
}

/// A `/grafana/query` body for one target as the plugin sends it: payload interpolated
/// and parsed, `scopedVars` with every dashboard variable.
pub fn query_body(target: &Value, vars: &Map<String, Value>, range: &Value, interval_ms: u64) -> Value {
    let mut all = vars.clone();
    all.insert("__interval".into(), Value::String(interval_text(interval_ms)));
    all.insert("__interval_ms".into(), json!(interval_ms));
    let text = interpolate(target["payload"].as_str().expect("payload is a string"), &all);
    let payload: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("payload after interpolation is not JSON ({e}): {text}"));
    let scoped: Map<String, Value> = vars.iter().map(|(k, v)| (k.clone(), json!({ "text": k, "value": v }))).collect();
    json!({
        "range": range,
        "intervalMs": interval_ms,
        "maxDataPoints": 1000,
        "targets": [{ "refId": target["refId"], "target": target["target"], "payload": payload, "datasource": target["datasource"] }],
        "scopedVars": scoped,
        "adhocFilters": [],
    })
}

/// How Grafana writes `$__interval`.
pub fn interval_text(ms: u64) -> String {
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_follows_the_plugin() {
        let vars: Map<String, Value> = serde_json::from_value(json!({
            "host": ["a", "b\"c"], "one": "x", "__interval": "2m", "__interval_ms": 120000
        }))
        .unwrap();
        let text = r#"{"sql": "SELECT $__timeGroup(ts, $__interval), $__interval_ms FROM t WHERE host IN ($hosts) AND $__timeFilter(ts) AND y = '${one}' [[one]] $$", "hosts": $host}"#;
        let got = interpolate(text, &vars);
        assert_eq!(
            got,
            r#"{"sql": "SELECT $__timeGroup(ts, 2m), 120000 FROM t WHERE host IN ($hosts) AND $__timeFilter(ts) AND y = 'x' x $$", "hosts": ["a","b\"c"]}"#
        );
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["hosts"], json!(["a", "b\"c"]));
    }
}
