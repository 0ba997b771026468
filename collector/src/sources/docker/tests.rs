use super::*;

fn parse(toml_text: &str) -> anyhow::Result<DockerConfig> {
    let f: DockerFile = toml::from_str(toml_text)?;
    f.validate()
}

fn bad(toml_text: &str, want: &str) {
    let err = format!("{:#}", parse(toml_text).unwrap_err());
    assert!(err.contains(want), "{toml_text:?}: {err}");
}

#[test]
fn defaults_and_a_full_section() {
    let c = parse("enabled = true").unwrap();
    assert_eq!(c.socket, PathBuf::from("/var/run/docker.sock"));
    assert_eq!(c.stats_interval, Some(Duration::from_secs(30)));
    assert!(c.logs && c.skip_actions.contains(&"exec_start".to_string()));
    let c = parse(
        r#"enabled = true
socket = "/run/podman/podman.sock"
stats_interval = "0s"
include = ["web-*", "db"]
exclude = ["*-debug"]
labels = ["lake.collect", "tier=front"]
compose_projects = ["shop"]
skip_actions = []
max_line_bytes = "64KiB"
batch_lines = 10
batch_wait = "200ms"
"#,
    )
    .unwrap();
    assert_eq!(c.stats_interval, None);
    assert_eq!(c.selection.labels, vec![("lake.collect".into(), None), ("tier".into(), Some("front".into()))]);
    assert_eq!((c.max_line_bytes, c.batch_lines), (64 << 10, 10));
}

#[test]
fn bad_sections_name_what_is_wrong() {
    bad("socket = \"docker.sock\"", "docker.socket = \"docker.sock\": must be an absolute path");
    bad("stats_interval = \"500ms\"", "docker.stats_interval = 500ms: must be at least 1s");
    bad("include = [\"\"]", "docker.include[0] is empty");
    bad("exclude = [\"a\", \" \"]", "docker.exclude[1] is empty");
    bad("labels = [\"=x\"]", "docker.labels[0] = \"=x\": write \"key\" or \"key=value\"");
    bad("compose_projects = [\"\"]", "docker.compose_projects[0] is empty");
    bad("max_line_bytes = \"10\"", "docker.max_line_bytes = 10B: must be between 1KiB and 64MiB");
    bad("batch_lines = 0", "docker.batch_lines = 0");
    bad("batch_wait = \"0s\"", "docker.batch_wait must be more than zero");
    bad("sokcet = \"/x\"", "unknown field `sokcet`");
}

#[test]
fn selection_by_name_label_and_project() {
    let labels =
        |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    let all = Selection::default();
    assert!(all.selects("anything", &Labels::new()));
    let s = Selection {
        include: vec!["web-*".into()],
        exclude: vec!["*-debug".into()],
        labels: vec![("tier".into(), Some("front".into())), ("lake".into(), None)],
        compose_projects: vec!["shop".into()],
    };
    let good = labels(&[("tier", "front"), ("lake", ""), (COMPOSE_PROJECT, "shop")]);
    assert!(s.selects("web-1", &good));
    assert!(!s.selects("db-1", &good), "not included");
    assert!(!s.selects("web-1-debug", &good), "excluded");
    assert!(!s.selects("web-1", &labels(&[("tier", "back"), ("lake", ""), (COMPOSE_PROJECT, "shop")])));
    assert!(!s.selects("web-1", &labels(&[("tier", "front"), (COMPOSE_PROJECT, "shop")])), "label missing");
    assert!(!s.selects("web-1", &labels(&[("tier", "front"), ("lake", ""), (COMPOSE_PROJECT, "blog")])));
}

#[test]
fn the_events_cursor_dedupes_the_boundary_nanosecond() {
    let ev = |t: i64, id: &str, action: &str| Event {
        time_nano: t,
        id: id.into(),
        name: id.into(),
        image: None,
        action: action.into(),
        arg: None,
        attrs: Labels::new(),
    };
    let mut c = EventsCursor { since: 100, at: Vec::new() };
    assert!(!c.advance(&ev(99, "a", "start")), "older than the cursor");
    assert!(c.advance(&ev(100, "a", "start")));
    assert!(c.advance(&ev(100, "b", "start")), "another event of the same nanosecond");
    assert!(!c.advance(&ev(100, "a", "start")), "sent again after a reconnect");
    assert!(c.advance(&ev(101, "a", "die")));
    assert_eq!(c, EventsCursor { since: 101, at: vec!["a/die/".into()] });
    // The state round-trips through the spool's JSON.
    let s = DockerState { events: c, logs: BTreeMap::from([("a".into(), LogPos { ts: 5, at: 2 })]) };
    let back: DockerState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn inspect_answers_of_docker_and_podman() {
    let docker = r#"{"Id":"abc","Name":"/web-1","Created":"2026-12-07T04:57:37.739969621Z","RestartCount":3,
        "State":{"Running":true,"Status":"running"},"Config":{"Tty":true,"Image":"bb:1","Labels":{"a":"b"}}}"#;
    let c: Container = serde_json::from_str::<InspectJson>(docker).unwrap().into();
    assert_eq!((c.name.as_str(), c.tty, c.running, c.restart_count), ("web-1", true, true, 3));
    assert_eq!(c.created_nanos, 1_796_619_457_739_969_621);
    let podman = r#"{"Id":"abc","Name":"web","Created":"2026-12-07T04:57:37.7+01:00","State":{"Running":false},"Config":{"Labels":null}}"#;
    let c: Container = serde_json::from_str::<InspectJson>(podman).unwrap().into();
    assert!(c.labels.is_empty() && !c.tty && c.image.is_empty());
}
