//! The docker source against a real Docker daemon (`dockerd` of Debian's `docker.io`,
//! started by the test with vfs and no network, see `lake_test_support::docker`): the
//! rows of containers that print to stdout and stderr, exit non-zero, restart in a loop,
//! are OOM-killed, carry compose labels, run with a TTY — all started after the
//! collector — and a `kill -9` of the real collector in the middle of a log stream,
//! after which every line is spooled exactly once. Where no daemon can start (not root,
//! no `dockerd`), each test prints `SKIPPED: <why>` and returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lake_collector::config::Config;
use lake_collector::sources::docker::DockerSource;
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use lake_test_support::docker::{Dockerd, IMAGE};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const OPTS: SpoolOptions = SpoolOptions { max_size: 1 << 30, segment_size: 8 << 20 };

fn daemon() -> Option<Dockerd> {
    match Dockerd::start() {
        Ok(d) => Some(d),
        Err(why) => {
            eprintln!("SKIPPED: no Docker daemon can start here: {why}");
            None
        }
    }
}

fn config_text(data: &Path, socket: &Path, extra: &str) -> String {
    format!(
        "node = \"test-node\"\ndata_dir = {:?}\n[lake]\ntoken = \"t\"\nurl = \"http://127.0.0.1:9\"\n[host]\nenabled = false\ninterval = \"1h\"\n\
         [docker]\nenabled = true\nsocket = {:?}\nbatch_wait = \"100ms\"\n{extra}",
        data.display().to_string(),
        socket.display().to_string()
    )
}

/// Every row of the docker source's tables in the spool, with its table.
async fn rows(spool_dir: &Path) -> Vec<Value> {
    let keep = |t: &str| ["containers", "logs", "metrics"].contains(&t);
    let records = lake_test_support::spool::spooled_tables(spool_dir, keep).await;
    records.into_iter().flat_map(|(_, _, rows)| rows).collect()
}

fn of<'a>(rows: &'a [Value], table: &str, container: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["table"] == table)
        .filter(|r| match table {
            "containers" => r["container"] == container,
            "logs" => r["attrs"]["container"] == container,
            _ => r["labels"]["container"] == container,
        })
        .collect()
}

fn actions(rows: &[Value], container: &str) -> Vec<String> {
    of(rows, "containers", container).iter().map(|r| r["action"].as_str().unwrap().to_string()).collect()
}

/// (stream, priority, message) of a container's log rows, in time order.
fn lines(rows: &[Value], container: &str) -> Vec<(String, i64, String)> {
    let mut l: Vec<&Value> = of(rows, "logs", container);
    l.sort_by_key(|r| r["ts"].as_i64().unwrap());
    l.iter()
        .map(|r| {
            (
                r["attrs"]["stream"].as_str().unwrap().to_string(),
                r["priority"].as_i64().unwrap(),
                r["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn l(stream: &str, prio: i64, msg: &str) -> (String, i64, String) {
    (stream.to_string(), prio, msg.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_logs_and_stats_of_real_containers() {
    let Some(d) = daemon() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = config_text(&data, d.socket(), "stats_interval = \"1s\"\nmax_line_bytes = \"1KiB\"\n");
    let cfg = Config::from_toml(&text, None).unwrap();
    let stats = Arc::new(Stats::default());
    let spool = SpoolHandle::open(data.join("spool"), OPTS, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool, stats: Arc::clone(&stats) };
    let cancel = CancellationToken::new();
    // Created before the source starts, started after: its first lines are printed before
    // the `start` event reaches a follower (the demo lost them when followers began "now").
    d.ok(&["create", "--network", "none", "--name", "early", IMAGE, "sh", "-c", "echo early 1; echo early 2"]);
    let task = tokio::spawn(DockerSource::new(cfg.docker.clone(), ctx).run(cancel.clone()));

    let run = |args: &[&str]| {
        let mut a = vec!["run", "--network", "none"];
        a.extend_from_slice(args);
        d.ok(&a)
    };
    // A long-running compose-labelled container, for stats and the compose columns.
    run(&[
        "-d",
        "--name",
        "shop-web-1",
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=web",
        "--label",
        "tier=front",
        IMAGE,
        "sh",
        "-c",
        "echo web up; sleep 60",
    ]);
    // A restart loop: each run prints, lives 2 s (so stats see it), fails.
    run(&["-d", "--name", "loop", "--restart", "on-failure:3", IMAGE, "sh", "-c", "echo crash; sleep 2; exit 1"]);
    run(&["--name", "printer", IMAGE, "sh", "-c", "echo out1; echo err1 >&2; echo out2"]);
    run(&["--name", "bad", IMAGE, "sh", "-c", "echo dying; exit 3"]);
    d.run_oom_killed("oom");
    // Hostile output: bytes that are not UTF-8, a line over max_line_bytes (1 KiB here).
    run(&["--name", "hostile", IMAGE, "sh", "-c", "printf 'bad \\377 byte\\n'; printf '%05000d\\n' 7; echo after"]);
    run(&["-d", "-t", "--name", "tty", IMAGE, "sh", "-c", "printf 'tty line\\n'; echo second"]);
    d.ok(&["start", "-a", "early"]);
    assert_eq!(d.inspect("oom", "{{.State.OOMKilled}} {{.State.ExitCode}}"), "true 137");
    d.wait_inspect("loop", "{{.RestartCount}} {{.State.Status}}", "3 exited");
    d.wait_inspect("tty", "{{.State.Status}}", "exited");
    // A health check that always fails: Docker reports the container unhealthy.
    run(&[
        "-d",
        "--name",
        "sick",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        IMAGE,
        "sh",
        "-c",
        "sleep 60",
    ]);
    d.wait_inspect("sick", "{{.State.Health.Status}}", "unhealthy");

    // Events and lines are spooled within a batch_wait (100 ms) of being read; a few
    // stats rounds (1 s each) sample the compose container.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = stats.source("docker").rows.load(Ordering::Relaxed);
    cancel.cancel();
    task.await.unwrap().unwrap();
    let rows = rows(&data.join("spool")).await;
    assert!(seen > 0);

    // stdout and stderr lines, exactly, with their priority. Docker stamps each stream as
    // it reads it, so only the order within a stream is the program's.
    let printed = lines(&rows, "printer");
    let stream = |s: &str| printed.iter().filter(|(o, _, _)| o == s).cloned().collect::<Vec<_>>();
    assert_eq!(stream("stdout"), vec![l("stdout", 6, "out1"), l("stdout", 6, "out2")]);
    assert_eq!(stream("stderr"), vec![l("stderr", 3, "err1")]);
    assert_eq!(printed.len(), 3);
    let p = of(&rows, "logs", "printer")[0];
    assert_eq!((p["source"].as_str(), p["unit"].as_str()), (Some("docker"), Some("printer")));
    assert_eq!(p["attrs"]["container_id"].as_str().unwrap().len(), 64);
    assert_eq!(p["attrs"]["image"], IMAGE);
    assert_eq!(actions(&rows, "printer"), ["create", "start", "die"]);

    // Non-zero exit: die with its exit code.
    let die: Vec<&Value> = of(&rows, "containers", "bad").into_iter().filter(|r| r["action"] == "die").collect();
    assert_eq!(die.len(), 1);
    assert_eq!(die[0]["exit_code"], 3);
    assert_eq!(lines(&rows, "bad"), vec![l("stdout", 6, "dying")]);

    // The restart loop: four runs, each one's line once, the restart count in stats.
    let a = actions(&rows, "loop");
    assert_eq!(a.iter().filter(|a| *a == "start").count(), 4, "{a:?}");
    let dies: Vec<i64> = of(&rows, "containers", "loop")
        .iter()
        .filter(|r| r["action"] == "die")
        .map(|r| r["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(dies, [1, 1, 1, 1]);
    assert_eq!(lines(&rows, "loop"), vec![l("stdout", 6, "crash"); 4]);
    let restarts: Vec<f64> = of(&rows, "metrics", "loop")
        .iter()
        .filter(|r| r["name"] == "container_restart_count")
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert!(restarts.iter().any(|v| *v >= 1.0), "restart count sampled while it looped: {restarts:?}");

    // OOM: the oom event, then die 137.
    let a = actions(&rows, "oom");
    let oom_at = a.iter().position(|a| a == "oom").expect("an oom event");
    let die_at = a.iter().position(|a| a == "die").unwrap();
    assert!(oom_at < die_at, "{a:?}");
    let die = of(&rows, "containers", "oom").into_iter().find(|r| r["action"] == "die").unwrap();
    assert_eq!(die["exit_code"], 137);

    // Compose labels: columns, logs unit and attrs, stats labels; other labels in attrs.
    let start = of(&rows, "containers", "shop-web-1").into_iter().find(|r| r["action"] == "start").unwrap();
    assert_eq!((start["compose_project"].as_str(), start["compose_service"].as_str()), (Some("shop"), Some("web")));
    assert_eq!(start["attrs"]["tier"], "front");
    assert!(start["attrs"].get("com.docker.compose.project").is_none());
    let web = of(&rows, "logs", "shop-web-1");
    assert_eq!(web.len(), 1);
    assert_eq!((web[0]["unit"].as_str(), web[0]["attrs"]["compose_project"].as_str()), (Some("web"), Some("shop")));
    let metrics: BTreeMap<String, f64> = of(&rows, "metrics", "shop-web-1")
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["value"].as_f64().unwrap()))
        .collect();
    for name in [
        "container_cpu_percent",
        "container_memory_usage_bytes",
        "container_memory_limit_bytes",
        "container_restart_count",
        "container_blkio_read_bytes_total",
        "container_blkio_write_bytes_total",
    ] {
        assert!(metrics.contains_key(name), "{name} in {metrics:?}");
    }
    assert!(metrics["container_memory_usage_bytes"] > 0.0);
    let m = of(&rows, "metrics", "shop-web-1")[0];
    assert_eq!(
        (m["labels"]["compose_project"].as_str(), m["labels"]["compose_service"].as_str()),
        (Some("shop"), Some("web"))
    );

    // A TTY: raw stream, no `\r`.
    assert_eq!(lines(&rows, "tty"), vec![l("stdout", 6, "tty line"), l("stdout", 6, "second")]);
    assert_eq!(lines(&rows, "early"), vec![l("stdout", 6, "early 1"), l("stdout", 6, "early 2")]);
    let health: Vec<&str> = of(&rows, "containers", "sick")
        .iter()
        .filter(|r| r["action"] == "health_status")
        .filter_map(|r| r["health"].as_str())
        .collect();
    assert!(health.contains(&"unhealthy"), "health_status rows of sick: {health:?}");
    println!("sick health: {health:?}");

    // Not UTF-8: Docker's json-file driver stores lines as JSON strings, which already
    // replaced the byte by U+FFFD (the source's raw_hex is for drivers that keep bytes, e.g.
    // `local`; unit-tested). Too long: cut, marked, the next line whole.
    let h = of(&rows, "logs", "hostile");
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[0]["message"], "bad \u{fffd} byte");
    assert!(h[0]["attrs"].get("raw_hex").is_none(), "{:?}", h[0]);
    let long = h[1]["message"].as_str().unwrap();
    assert!(long.starts_with("0000") && long.len() < 1024 && long.len() > 900, "{}", long.len());
    assert_eq!(h[1]["attrs"]["truncated"], "true");
    assert_eq!((h[2]["message"].as_str(), h[2]["attrs"].get("truncated")), (Some("after"), None));

    for (name, got) in [("printer", lines(&rows, "printer")), ("loop", lines(&rows, "loop"))] {
        eprintln!("{name} logs: {got:?}");
    }
    eprintln!("loop events: {:?}", actions(&rows, "loop"));
    eprintln!("oom events: {:?}", actions(&rows, "oom"));
    eprintln!("shop-web-1 metrics: {metrics:?}");
}

/// `kill -9` of the real collector while a container prints, then a restart: every line
/// once, and the events once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_log_stream_loses_and_repeats_nothing() {
    let Some(d) = daemon() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg_path = dir.path().join("collector.toml");
    std::fs::write(&cfg_path, config_text(&data, d.socket(), "stats_interval = \"0s\"\n")).unwrap();
    let start = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lake-collector"))
            .arg("--config")
            .arg(&cfg_path)
            .env("LOG_FILTER", "error")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = start();
    // The first start saves its cursor at once; the container is created after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.ok(&[
        "run", "-d", "--network", "none", "--name", "counter", IMAGE, "sh", "-c",
        "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; [ $((i % 2)) = 0 ] && echo \"err $i\" >&2; i=$((i+1)); sleep 0.01; done",
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().await.unwrap();
    // Lines keep coming while the collector is down.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut child = start();
    d.wait_inspect("counter", "{{.State.Status}}", "exited");
    // Once more in the quiet after the container ended: nothing is read twice.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    child.kill().await.unwrap();
    let mut child = start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = std::process::Command::new("kill").arg(child.id().unwrap().to_string()).status();
    child.wait().await.unwrap();

    let rows = rows(&data.join("spool")).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in of(&rows, "logs", "counter") {
        *seen.entry(r["message"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..300)
        .map(|i| (format!("line {i}"), 1))
        .chain((0..300).step_by(2).map(|i| (format!("err {i}"), 1)))
        .collect();
    let wrong: Vec<(&String, usize, usize)> = want
        .keys()
        .chain(seen.keys())
        .map(|k| (k, seen.get(k).copied().unwrap_or(0), want.get(k).copied().unwrap_or(0)))
        .filter(|(_, got, want)| got != want)
        .collect();
    assert!(wrong.is_empty(), "(line, spooled, wanted): {wrong:?}");
    assert_eq!(actions(&rows, "counter"), ["create", "start", "die"], "events once each across the kills");
    eprintln!("counter: {} lines spooled exactly once across two kill -9", seen.len());
}
