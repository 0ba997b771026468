//! The Grafana dashboards of `dashboards/grafana/`:
//!
//! - every dashboard's JSON is checked for what Grafana and the lake need: unique uids
//!   and panel ids, grid positions inside the 24 columns and not overlapping, the lake
//!   datasource (`simpod-json-datasource`, uid `lake`, as provisioned) on every panel,
//!   variable and annotation, and well-formed targets (code-mode payload that is JSON
//!   once Grafana has interpolated it, with time-bounded SQL, a known format, and every
//!   variable the SQL uses bound in the payload; or a built-in named query as the target,
//!   whose variables the payload binds or the query's defaults give); the provisioning
//!   files point at the
//!   lake's `/grafana` with the read token header;
//! - then every panel's query (and every variable and annotation query) runs against a
//!   real `lake serve` over a lake written by `lake-gen`, through the Grafana API, as the
//!   plugin would send it, and must answer 200 with non-empty, well-formed data: time
//!   series with points, tables with rows of the right width, stats with a number.

mod common;
#[path = "dashboards/support.rs"]
mod support;

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Map, Value};
use support::*;

const DATASOURCE_TYPE: &str = "simpod-json-datasource";
const DATASOURCE_UID: &str = "lake";
/// What the web UI draws (`logs` on its Logs page, from the `logs` dashboard).
const PANEL_TYPES: [&str; 5] = ["timeseries", "stat", "table", "bargauge", "logs"];

fn datasource_ok(v: &Value) -> bool {
    v["type"] == DATASOURCE_TYPE && v["uid"] == DATASOURCE_UID
}

/// Names after `$` in SQL that are not the lake's macros (`$__…`).
fn sql_variables(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        let tail = &rest[i + 1..];
        let tail = tail.strip_prefix('{').unwrap_or(tail);
        let n = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..n];
        if !name.is_empty() && !name.starts_with("__") && !name.as_bytes()[0].is_ascii_digit() {
            out.insert(name.to_string());
        }
        rest = &rest[i + 1..];
    }
    out
}

/// Test values for every variable: what "All" would send.
fn sample_vars(dashboard: &Value) -> Map<String, Value> {
    variables(dashboard).into_iter().map(|(name, _)| (name, json!(["a", "b"]))).collect()
}

fn check_target(where_: &str, target: &Value, kind: &str, vars: &Map<String, Value>, problems: &mut Vec<String>) {
    let mut bad = |m: String| problems.push(format!("{where_}: {m}"));
    if !datasource_ok(&target["datasource"]) {
        bad(format!("target datasource {} is not the lake's", target["datasource"]));
    }
    if target["refId"].as_str().is_none_or(str::is_empty) {
        bad("target without refId".into());
    }
    // The plugin drops targets whose `target` is undefined; ours all carry SQL in the payload.
    if target["target"].as_str().is_none_or(str::is_empty) {
        bad("target field empty (the plugin would skip it)".into());
    }
    if target["editorMode"] != "code" {
        bad(format!("editorMode {} (code mode interpolates the payload as JSON text)", target["editorMode"]));
    }
    let Some(text) = target["payload"].as_str() else {
        bad("payload is not a string".into());
        return;
    };
    let mut all = vars.clone();
    all.insert("__interval".into(), json!("1m"));
    all.insert("__interval_ms".into(), json!(60000));
    let payload: Value = match serde_json::from_str(&interpolate(text, &all)) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => return bad(format!("payload is not an object: {other}")),
        Err(e) => return bad(format!("payload is not JSON after interpolation: {e}: {text}")),
    };
    // A built-in named query as the target: its SQL, and its variables' defaults.
    let named = lake_query::named::defaults().into_iter().find(|q| target["target"] == q.name.as_str());
    let sql = match (payload["sql"].as_str(), &named) {
        (Some(sql), _) if !sql.trim().is_empty() => sql.to_string(),
        (_, Some(q)) => q.sql.clone(),
        _ => return bad("payload has no sql and the target is no built-in named query".into()),
    };
    let sql = sql.as_str();
    let format = payload["format"].as_str().unwrap_or("");
    let want = if kind == "timeseries" { "timeseries" } else { "table" };
    if format != want {
        bad(format!("a {kind} target must use format {want:?}, has {format:?}"));
    }
    if !(sql.contains("$__timeFilter(") || sql.contains("$__timeTo()")) {
        bad("the SQL is not bounded by the dashboard's time range ($__timeFilter or $__timeTo)".into());
    }
    if kind == "timeseries" && !sql.contains("$__timeGroup(") {
        bad("a time series without $__timeGroup: its points would not follow the panel's interval".into());
    }
    let used = sql_variables(sql);
    let bound: BTreeSet<String> =
        payload.as_object().unwrap().keys().filter(|k| *k != "sql" && *k != "format").cloned().collect();
    let defaults: BTreeSet<String> = named.iter().flat_map(|q| q.vars.keys().cloned()).collect();
    let given: BTreeSet<String> = bound.union(&defaults).cloned().collect();
    if !bound.is_subset(&used) || !used.is_subset(&given) {
        bad(format!("the SQL uses variables {used:?} but the payload binds {bound:?} (defaults {defaults:?})"));
    }
    for key in &bound {
        if !payload[key].is_array() {
            bad(format!("payload {key} is {} after interpolation, not the variable's values", payload[key]));
        }
    }
}

#[test]
fn every_dashboard_is_well_formed() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let mut ui: Vec<&str> = lake::http::ui::DASHBOARDS.to_vec();
    ui.sort_unstable();
    assert_eq!(names, ui, "the dashboard files and the web UI's list differ");

    let mut problems = Vec::new();
    let mut uids = HashSet::new();
    let mut summary = Vec::new();
    for (name, d) in &all {
        let mut bad = |m: String| problems.push(format!("{name}: {m}"));
        let uid = d["uid"].as_str().unwrap_or("");
        if !uid.starts_with("lake-") || !uids.insert(uid.to_string()) {
            bad(format!("uid {uid:?} missing, not lake-…, or not unique"));
        }
        if d["title"].as_str().is_none_or(str::is_empty) {
            bad("no title".into());
        }
        if d["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
            bad(format!("schemaVersion {}", d["schemaVersion"]));
        }
        if d["time"]["from"].as_str().is_none() || d["time"]["to"].as_str().is_none() {
            bad("no default time range".into());
        }
        if !d["tags"].as_array().is_some_and(|t| t.contains(&json!("lake"))) {
            bad("not tagged lake (the dashboard links list dashboards by tag)".into());
        }
        // Variables.
        let mut var_names = HashSet::new();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let vname = v["name"].as_str().unwrap_or("");
            if !var_names.insert(vname.to_string()) || vname.is_empty() {
                bad(format!("variable {vname:?} empty or repeated"));
            }
            if v["type"] != "query" || !datasource_ok(&v["datasource"]) {
                bad(format!("variable {vname}: not a query of the lake datasource"));
            }
            if v["query"]["query"].as_str().is_none_or(|q| !q.contains("$__timeFilter(")) {
                bad(format!("variable {vname}: query missing or not time-bounded"));
            }
            if v["multi"] != true || v["includeAll"] != true {
                bad(format!("variable {vname}: must be multi-value with All (payloads bind it as an array)"));
            }
        }
        // Panels.
        let panels = d["panels"].as_array().cloned().unwrap_or_default();
        if panels.is_empty() {
            bad("no panels".into());
        }
        let mut ids = HashSet::new();
        let mut rects: Vec<(i64, i64, i64, i64, String)> = Vec::new();
        let vars = sample_vars(d);
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("");
            let where_ = format!("{name} panel {} {title:?}", p["id"]);
            let kind = p["type"].as_str().unwrap_or("");
            if title.is_empty() {
                problems.push(format!("{where_}: no title"));
            }
            match p["id"].as_i64() {
                Some(id) if id > 0 && ids.insert(id) => {}
                _ => problems.push(format!("{where_}: id missing, not positive or repeated")),
            }
            if !PANEL_TYPES.contains(&kind) {
                problems
                    .push(format!("{where_}: type {kind:?} is not one of {PANEL_TYPES:?} (the web UI draws those)"));
            }
            if !datasource_ok(&p["datasource"]) {
                problems.push(format!("{where_}: panel datasource is not the lake's"));
            }
            let g = &p["gridPos"];
            match (g["x"].as_i64(), g["y"].as_i64(), g["w"].as_i64(), g["h"].as_i64()) {
                (Some(x), Some(y), Some(w), Some(h)) if x >= 0 && y >= 0 && w >= 1 && h >= 2 && x + w <= 24 => {
                    for (ox, oy, ow, oh, other) in &rects {
                        if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                            problems.push(format!("{where_}: overlaps {other}"));
                        }
                    }
                    rects.push((x, y, w, h, title.to_string()));
                }
                _ => problems.push(format!("{where_}: gridPos {g} is not inside the 24-column grid")),
            }
            for t in p["transformations"].as_array().into_iter().flatten() {
                if t["id"] != "groupingToMatrix" {
                    problems.push(format!("{where_}: transformation {} is not one the web UI applies", t["id"]));
                }
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{where_}: no targets"));
            }
            let mut refs = HashSet::new();
            for t in &targets {
                if !refs.insert(t["refId"].as_str().unwrap_or("").to_string()) {
                    problems.push(format!("{where_}: refId {} repeated", t["refId"]));
                }
                check_target(&where_, t, kind, &vars, &mut problems);
            }
        }
        let mut annotations = 0;
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if a.get("builtIn").is_some() {
                continue;
            }
            annotations += 1;
            let where_ = format!("{name} annotation {:?}", a["name"]);
            if !datasource_ok(&a["datasource"]) {
                problems.push(format!("{where_}: datasource is not the lake's"));
            }
            check_target(&where_, &a["target"], "annotation", &vars, &mut problems);
        }
        summary.push(format!(
            "{name:<9} uid {uid:<14} {:>2} panels, {} variables, {annotations} annotation(s)",
            panels.len(),
            var_names.len()
        ));
    }

    // Provisioning: the datasource the panels name, pointing at the lake's Grafana API.
    let prov = repo_root().join("dashboards/grafana/provisioning");
    let ds = std::fs::read_to_string(prov.join("datasources/lake.yaml")).expect("datasources/lake.yaml");
    for needle in [
        "apiVersion: 1",
        &format!("type: {DATASOURCE_TYPE}"),
        &format!("uid: {DATASOURCE_UID}"),
        "/grafana",
        "httpHeaderName1: Authorization",
        "httpHeaderValue1: Bearer ${LAKE_READ_TOKEN}",
    ] {
        if !ds.contains(needle) {
            problems.push(format!("provisioning/datasources/lake.yaml lacks {needle:?}"));
        }
    }
    let providers = std::fs::read_to_string(prov.join("dashboards/lake.yaml")).expect("dashboards/lake.yaml");
    for needle in ["apiVersion: 1", "type: file", "path:"] {
        if !providers.contains(needle) {
            problems.push(format!("provisioning/dashboards/lake.yaml lacks {needle:?}"));
        }
    }
    for line in &summary {
        println!("{line}");
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    println!("{} dashboards well formed; provisioning ok", all.len());
}

/// Checks an answer of `/grafana/query` and describes it.
fn check_answer(kind: &str, format: &str, answer: &Value, require_data: bool) -> Result<String, String> {
    let list = answer.as_array().ok_or("answer is not a JSON array")?;
    if list.is_empty() {
        return if require_data { Err("empty answer".into()) } else { Ok("no data".into()) };
    }
    if format == "timeseries" {
        let mut points = 0;
        for s in list {
            if s["target"].as_str().is_none() {
                return Err(format!("series without a target name: {s}"));
            }
            let dps = s["datapoints"].as_array().ok_or("series without datapoints")?;
            for p in dps {
                let ok =
                    p.as_array().is_some_and(|a| a.len() == 2 && (a[0].is_number() || a[0].is_null()) && a[1].is_i64());
                if !ok {
                    return Err(format!("bad datapoint {p}"));
                }
            }
            points += dps.iter().filter(|p| p[0].is_number()).count();
        }
        if require_data && points == 0 {
            return Err("series have no values".into());
        }
        return Ok(format!("{} series, {points} points", list.len()));
    }
    let t = &list[0];
    if list.len() != 1 || t["type"] != "table" {
        return Err(format!("expected one table, got {}", list.len()));
    }
    let columns = t["columns"].as_array().ok_or("table without columns")?;
    let rows = t["rows"].as_array().ok_or("table without rows")?;
    for c in columns {
        let ok = c["text"].as_str().is_some_and(|s| !s.is_empty())
            && ["time", "number", "string"].contains(&c["type"].as_str().unwrap_or(""));
        if !ok {
            return Err(format!("bad column {c}"));
        }
    }
    if let Some(r) = rows.iter().find(|r| r.as_array().is_none_or(|a| a.len() != columns.len())) {
        return Err(format!("row {r} does not match the {} columns", columns.len()));
    }
    if require_data && rows.is_empty() {
        return Err("table has no rows".into());
    }
    let numeric: Vec<usize> = (0..columns.len()).filter(|&i| columns[i]["type"] == "number").collect();
    match kind {
        "stat" if require_data && !numeric.iter().any(|&i| rows[0][i].is_number()) => {
            return Err("stat: first row has no number".into())
        }
        "bargauge" if numeric.is_empty() => return Err("bar gauge: no numeric column".into()),
        "annotation" => {
            let has = |n: &str| columns.iter().any(|c| c["text"] == n);
            if !(has("time") && has("title")) {
                return Err("annotation: needs time and title columns".into());
            }
        }
        _ => {}
    }
    Ok(format!("table {} cols × {} rows", columns.len(), rows.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_answers_with_data() {
    let lake = GeneratedLake::start();
    let client = reqwest::Client::new();
    let base = format!("{}/grafana", lake.url());
    let range = range_last(24);
    let interval_ms = 120_000;
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, d) in dashboards() {
        // Variables: their values, as the plugin's variable query fetches them.
        let mut all_values = Map::new();
        for (var, sql) in variables(&d) {
            let (status, answer) =
                post(&client, &format!("{base}/variable"), &json!({ "payload": { "target": sql }, "range": range }))
                    .await;
            let values: Vec<Value> =
                answer.as_array().map(|a| a.iter().map(|o| o["__value"].clone()).collect()).unwrap_or_default();
            total += 1;
            if status != 200 || values.is_empty() || values.iter().any(|v| !v.is_string()) {
                failures.push(format!("{name} variable {var}: {status} {answer}"));
            } else {
                println!(
                    "{name:<9} variable {var:<6} {} values: {}",
                    values.len(),
                    values.iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>().join(", ")
                );
            }
            all_values.insert(var, Value::Array(values));
        }
        for (label, kind, target) in targets(&d) {
            total += 1;
            let body = query_body(&target, &all_values, &range, interval_ms);
            let format = body["targets"][0]["payload"]["format"].as_str().unwrap_or("").to_string();
            let (status, answer) = post(&client, &format!("{base}/query"), &body).await;
            let verdict = if status == 200 {
                check_answer(&kind, &format, &answer, true)
            } else {
                Err(format!("{status} {answer}"))
            };
            match verdict {
                Ok(what) => println!("{name:<9} {kind:<10} {label}: {what}"),
                Err(e) => failures.push(format!("{name} {label}: {e}")),
            }
            // One value of each variable: binding works and the answer stays well formed.
            if all_values.values().any(|v| v.as_array().is_some_and(|a| a.len() > 1)) {
                let one: Map<String, Value> = all_values
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::Array(v.as_array().unwrap().iter().take(1).cloned().collect())))
                    .collect();
                let body = query_body(&target, &one, &range, interval_ms);
                let (status, answer) = post(&client, &format!("{base}/query"), &body).await;
                if status != 200 {
                    failures.push(format!("{name} {label} with one value per variable: {status} {answer}"));
                } else if let Err(e) = check_answer(&kind, &format, &answer, false) {
                    failures.push(format!("{name} {label} with one value per variable: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {total} queries failed:\n{}", failures.len(), failures.join("\n"));
    println!("{total} variable, panel and annotation queries answered with data");
}
