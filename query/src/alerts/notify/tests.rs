use super::webhook::{alertmanager, request};
use super::*;
use crate::test_support::{notified_alert as alert, uptime_notification as notification};

#[test]
fn the_text_says_what_where_since_value_and_links() {
    let n = notification(vec![alert("https://shop.example/", Status::Firing)]);
    assert_eq!(subject(&n), "[FIRING] uptime_down: https://shop.example/ is down");
    let t = text(&n);
    for want in [
        "[FIRING] uptime_down: https://shop.example/ is down\n\n",
        "What:  uptime_down (critical)\n",
        "Where: kind=http target=https://shop.example/\n",
        "Since: 2026-11-22 19:01:10 UTC (3m 20s ago)\n",
        "Value: 2\n",
        "Error: connection refused\n",
        "Down from: node-a\n",
        "Dashboard: http://lake.example:7470/\n",
        "Silence: lake silence add --rule uptime_down --label kind=http --label target=https://shop.example/ --for 2h\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert!(t.lines().all(|l| l.chars().count() <= 110), "phone-width lines:\n{t}");

    let n =
        notification(vec![alert("https://a.example/", Status::Firing), alert("https://b.example/", Status::Resolved)]);
    assert_eq!(subject(&n), "[FIRING:1, RESOLVED:1] uptime_down (critical): 2 alerts");
    let t = text(&n);
    assert!(t.contains("1 firing:\n\n1. https://a.example/ is down\n"), "{t}");
    assert!(t.contains("1 resolved:\n\n1. https://b.example/ is down\n"), "{t}");
    assert!(t.contains("(resolved 2026-11-22 19:06:10 UTC, after 5m)"), "{t}");
    let n = notification(vec![alert("x", Status::Resolved), alert("y", Status::Resolved)]);
    assert!(subject(&n).starts_with("[RESOLVED:2] "));
    let mut a = alert("x", Status::Firing);
    a.reminder = true;
    assert!(subject(&notification(vec![a])).starts_with("[FIRING] (still firing) "));
}

#[test]
fn alertmanager_payload_has_the_documented_fields() {
    let n =
        notification(vec![alert("https://a.example/", Status::Firing), alert("https://bb.example/", Status::Resolved)]);
    let v = alertmanager("am", &n);
    for k in [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "am");
    assert_eq!(v["groupKey"], "{}:{alertname=\"uptime_down\"}");
    assert_eq!(v["groupLabels"], serde_json::json!({"alertname": "uptime_down"}));
    assert_eq!(
        v["commonLabels"],
        serde_json::json!({"alertname": "uptime_down", "severity": "critical", "kind": "http"})
    );
    assert_eq!(v["commonAnnotations"]["description"], "an uptime target is down");
    assert_eq!(v["externalURL"], "http://lake.example:7470");
    let a = &v["alerts"][0];
    for k in ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"] {
        assert!(a.get(k).is_some(), "alert misses {k}: {a}");
    }
    assert_eq!(a["labels"]["target"], "https://a.example/");
    assert_eq!(a["annotations"]["summary"], "https://a.example/ is down");
    assert_eq!(a["annotations"]["value"], "2");
    assert_eq!(a["startsAt"], "2026-11-22T19:01:10Z");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(v["alerts"][1]["status"], "resolved");
    assert_eq!(v["alerts"][1]["endsAt"], "2026-11-22T19:06:10Z");
}

#[test]
fn each_webhook_format_has_its_shape() {
    let n = notification(vec![alert("https://a.example/", Status::Firing)]);
    let body = |f| serde_json::from_slice::<serde_json::Value>(&request(f, "h", &n).body).unwrap();
    let g = body(WebhookFormat::Json);
    assert_eq!(
        (g["rule"].as_str(), g["status"].as_str(), g["version"].as_str()),
        (Some("uptime_down"), Some("firing"), Some("1"))
    );
    assert_eq!(g["alerts"][0]["details"]["error"], "connection refused");
    assert!(g["alerts"][0]["ends_at"].is_null());
    assert!(body(WebhookFormat::Slack)["text"].as_str().unwrap().starts_with("[FIRING] uptime_down"));
    assert!(body(WebhookFormat::Discord)["content"].as_str().unwrap().starts_with("[FIRING] uptime_down"));
    let many = notification((0..100).map(|i| alert(&format!("https://{i}.example/"), Status::Firing)).collect());
    let d: serde_json::Value = serde_json::from_slice(&request(WebhookFormat::Discord, "h", &many).body).unwrap();
    assert!(d["content"].as_str().unwrap().chars().count() <= 2000);

    let ntfy = request(WebhookFormat::Ntfy, "h", &n);
    assert!(ntfy.content_type.starts_with("text/plain"));
    let h: std::collections::HashMap<_, _> = ntfy.headers.iter().cloned().collect();
    assert_eq!(h["Title"], "[FIRING] uptime_down: https://a.example/ is down");
    assert_eq!(h["Priority"], "5");
    assert_eq!(h["Tags"], "rotating_light,uptime_down,critical");
    assert_eq!(h["Click"], "http://lake.example:7470/");
    assert!(String::from_utf8(ntfy.body).unwrap().contains("Where: kind=http"));
}
