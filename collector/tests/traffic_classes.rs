//! Traffic classes on `fixtures/traffic/user-agents.jsonl`: real User-Agent strings of
//! bots, crawlers, monitors, scanners, tools and browsers, each with the class and name
//! it must get; through the classifier alone and through the Caddy row builder.

use std::path::Path;

use lake_collector::sources::caddy::classify::{Classifier, ClientClass};
use lake_collector::sources::caddy::CaddyRows;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/traffic/user-agents.jsonl");
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_fixture_user_agent_gets_its_class_and_name() {
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut c = Classifier::new();
    let mut wrong = Vec::new();
    // Twice: the second pass answers from the cache and must agree.
    for pass in 0..2 {
        for case in &cases {
            let ua = case["user_agent"].as_str().unwrap();
            let (class, name) =
                c.classify(Some(ua).filter(|u| !u.is_empty()), case["path"].as_str(), case["status"].as_i64());
            let want = (case["class"].as_str().unwrap(), case["name"].as_str());
            if (class.as_str(), name.as_deref()) != want {
                wrong.push(format!(
                    "pass {pass}: {ua:?} {} → {:?} {:?}, want {want:?}",
                    case["path"],
                    class.as_str(),
                    name
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let classes: std::collections::HashSet<&str> = cases.iter().map(|c| c["class"].as_str().unwrap()).collect();
    for cl in [
        ClientClass::Human,
        ClientClass::SearchBot,
        ClientClass::AiCrawler,
        ClientClass::Monitor,
        ClientClass::Scanner,
        ClientClass::OtherBot,
    ] {
        assert!(classes.contains(cl.as_str()), "no fixture of class {}", cl.as_str());
    }
}

#[test]
fn caddy_rows_carry_the_class_and_name() {
    let mut rows = CaddyRows::new();
    for (i, case) in cases().iter().enumerate() {
        let line = serde_json::json!({
            "level": "info", "ts": 1_795_648_600.5 + i as f64, "logger": "http.log.access.log0", "msg": "handled request",
            "request": {"remote_ip": "203.0.113.7", "remote_port": "1234", "proto": "HTTP/1.1", "method": "GET",
                        "host": "example.com", "uri": case["path"], "headers": {"User-Agent": [case["user_agent"]]}},
            "duration": 0.001, "size": 5, "status": case["status"]
        });
        assert!(rows.push("n", line.to_string().as_bytes(), "access.log", false, 0));
    }
    let (http, logs) = rows.finish().unwrap();
    assert!(logs.is_none());
    let http = http.unwrap();
    let col =
        |n: &str| http.column_by_name(n).unwrap().as_any().downcast_ref::<arrow_array::StringArray>().unwrap().clone();
    let (class, name) = (col("client_class"), col("client_name"));
    for (i, case) in cases().iter().enumerate() {
        assert_eq!(class.value(i), case["class"].as_str().unwrap(), "{case}");
        let got = (!arrow_array::Array::is_null(&name, i)).then(|| name.value(i));
        assert_eq!(got, case["name"].as_str(), "{case}");
    }
}
