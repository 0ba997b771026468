use std::sync::Arc;

use super::*;

fn config(text: &str) -> anyhow::Result<McpConfig> {
    toml::from_str::<McpFile>(text).map_err(anyhow::Error::from).and_then(McpFile::validate)
}

fn server(max_sessions: usize, dir: &std::path::Path) -> Arc<Mcp> {
    let engine = Engine::open(dir, Arc::new(lake_query::NoFreshRows), lake_query::Limits::default()).unwrap();
    let config = config(&format!("enabled = true\nmax_sessions = {max_sessions}")).unwrap();
    Mcp::new(Arc::new(engine), Arc::new(Verifier::with_read_tokens(&[])), Vec::new(), config, Arc::default())
}

#[test]
fn the_section_is_off_by_default_and_checked() {
    let c = config("").unwrap();
    assert!(!c.enabled);
    assert_eq!((c.max_sessions, c.max_rows, c.session_idle), (64, 200, Duration::from_secs(3600)));
    let c = config("enabled = true\nallowed_origins = [\"HTTP://Localhost:6274\"]").unwrap();
    assert_eq!(c.allowed_origins, ["http://localhost:6274"]);
    for (bad, why) in [
        ("max_sessions = 0", "mcp.max_sessions"),
        ("max_rows = 0", "mcp.max_rows"),
        ("session_idle = \"1s\"", "mcp.session_idle"),
        ("allowed_origins = [\"localhost:6274\"]", "allowed_origins[0]"),
        ("allowed_origins = [\"https://a.example/path\"]", "no path"),
    ] {
        let e = format!("{:#}", config(bad).unwrap_err());
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert!(config("enable = true").is_err(), "a misspelt key is refused");
}

#[test]
fn messages_are_classified_as_the_spec_says() {
    let req = classify(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}));
    assert!(matches!(req, Message::Request { ref method, .. } if method == "ping"));
    assert!(matches!(classify(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})), Message::Ignored));
    assert!(matches!(classify(json!({"jsonrpc": "2.0", "id": 1, "result": {}})), Message::Ignored));
    for bad in [
        json!([1]),
        json!({"id": 1, "method": "ping"}),
        json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
        json!({"jsonrpc": "2.0", "id": 1}),
    ] {
        assert!(matches!(classify(bad.clone()), Message::Invalid { .. }), "{bad}");
    }
}

#[test]
fn sessions_are_bounded_and_the_least_recently_used_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let mcp = server(3, dir.path());
    let a = mcp.open_session(LATEST_VERSION);
    let b = mcp.open_session(LATEST_VERSION);
    let c = mcp.open_session("2025-03-26");
    assert_eq!(mcp.touch_session(&a), Some(LATEST_VERSION)); // a is now the most recent
    let d = mcp.open_session(LATEST_VERSION);
    assert_eq!(mcp.touch_session(&b), None, "b, the least recently used, made room");
    assert_eq!(mcp.touch_session(&c), Some("2025-03-26"));
    assert!(mcp.touch_session(&a).is_some() && mcp.touch_session(&d).is_some());
    assert_eq!(mcp.stats.sessions.get(), 3);
    assert_eq!(mcp.stats.sessions_opened.get(), 4);
    assert!(mcp.end_session(&a) && !mcp.end_session(&a));
    assert_eq!(mcp.stats.sessions.get(), 2);
    assert_ne!(new_session_id(), new_session_id());
    assert_eq!(new_session_id().len(), 32);
}

#[test]
fn log_summaries_are_cut() {
    assert_eq!(summarize("short", 10), "short");
    assert_eq!(summarize("ééééé", 3), "ééé…");
}
