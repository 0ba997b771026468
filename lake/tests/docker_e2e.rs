//! The docker source end to end: a real Docker daemon (started by the test, see
//! `lake_test_support::docker`), the real collector following it, a real `lake serve` —
//! a container in a restart loop and one killed for memory arrive as `containers`,
//! `logs` and `metrics` rows, and the built-in `container_restarting` alert fires (its
//! `every` shortened to 1 s, nothing else changed). Where no daemon can start it prints
//! `SKIPPED: <why>` and returns.

mod common;

use std::time::Duration;

use common::*;
use lake_test_support::docker::{Dockerd, IMAGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loop_and_an_oom_kill_reach_the_lake_and_the_restart_alert_fires() {
    let d = match Dockerd::start() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: no Docker daemon can start here: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = lake_toml(dir.path(), port)
        .flush("1s")
        .section("[[rules]]\nname = \"container_restarting\"\nevery = \"1s\"")
        .write();
    let lake = Lake::start(&config, port);
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [host]\nenabled = false\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
             [docker]\nenabled = true\nsocket = \"{}\"\nstats_interval = \"1s\"\nbatch_wait = \"100ms\"\n",
            dir.path().join("collector").display(),
            lake.url,
            d.socket().display()
        ),
    )
    .unwrap();
    let mut collector = start_collector(&collector_toml);
    // The collector's first start saves "now" as its events cursor; containers come after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "loop",
        "--restart",
        "on-failure:5",
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=worker",
        IMAGE,
        "sh",
        "-c",
        "echo crash; sleep 1; exit 1",
    ]);
    d.run_oom_killed("oom");
    d.wait_inspect("loop", "{{.RestartCount}} {{.State.Status}}", "5 exited");

    let c = reqwest::Client::new();
    let starts = "select count(*) from containers where container = 'loop' and action = 'start'";
    assert_eq!(wait_for(&c, &lake.url, starts, 6).await, 6, "the first run and five restarts");
    let firing = "select count(*) from alerts where rule = 'container_restarting' and state = 'firing'";
    assert_eq!(wait_for(&c, &lake.url, firing, 1).await, 1, "the restart loop fires container_restarting");
    let crashes = "select count(*) from logs where source = 'docker' and unit = 'worker' and message = 'crash'";
    assert_eq!(wait_for(&c, &lake.url, crashes, 6).await, 6, "each run's line, once");
    let oom = "select count(*) from containers where container = 'oom' and (action = 'oom' or (action = 'die' and exit_code = 137))";
    assert_eq!(wait_for(&c, &lake.url, oom, 2).await, 2, "the oom event and die 137");

    let show = |q: &'static str| {
        let (c, url) = (c.clone(), lake.url.clone());
        async move {
            let r = sql(&c, &url, q).await;
            eprintln!("{q}");
            for row in r.as_array().unwrap() {
                eprintln!("  {row}");
            }
            r
        }
    };
    show("select strftime(ts, '%H:%M:%S.%f') as t, container, action, exit_code, compose_project, compose_service from containers where container in ('loop', 'oom') and action in ('start', 'die', 'oom') order by ts").await;
    show("select strftime(ts, '%H:%M:%S.%f') as t, unit, priority, message, attrs['stream'] as stream, attrs['compose_project'] as project from logs where source = 'docker' order by ts").await;
    let metrics = show(
        "select name, max(value) as max from metrics where labels['container'] = 'loop' group by name order by name",
    )
    .await;
    let names: Vec<&str> = metrics.as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    assert!(names.contains(&"container_restart_count") && names.contains(&"container_memory_usage_bytes"), "{names:?}");
    let alert = show("select state, labels['container'] as container, value, message from alerts where rule = 'container_restarting' order by ts").await;
    assert_eq!(alert[0][1], "loop");
    assert!(alert[0][2].as_f64().unwrap() > 3.0, "{alert}");

    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    assert!(collector.wait().unwrap().success());
}
