//! Jobs that must run, end to end against a real `lake serve`:
//!
//! - a job that never reports is found late, and a job whose run fails is reported
//!   failed: each alert arrives as an email at a real SMTP server (aiosmtpd,
//!   `tests/alerts/smtpd.py`, as `alerts.rs` uses);
//! - `lake-collector run-job` wraps a real command (`sh -c 'echo hi; exit 3'`): it exits
//!   3, and the lake stores the run's start and its fail with exit code 3 and the output;
//! - the lake's own archive run records itself as `lake_archive`;
//! - hostile reports: a wrong token, an undeclared job, a bad name, an oversize body,
//!   another host's job, a success without a start, a retried success, a huge output.
//!
//! Needs python3 with aiosmtpd (`scripts/setup peers`); fails, never skips, without it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TOKEN_B: &str = "ingest-token-node-b-0123456789";

fn config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    lake_toml(dir, port)
        .node("node-b", TOKEN_B)
        .flush("1h")
        .section(
            "[alerts]\nexternal_url = \"http://lake.test:7470\"\n\n\
             [[rules]]\nname = \"job_late\"\nevery = \"1s\"\n\n\
             [[rules]]\nname = \"job_failed\"\nevery = \"1s\"\n\n\
             [[jobs]]\nname = \"backup\"\nschedule = \"0 0 3 * * *\"\ngrace = \"1h\"\n\n\
             [[jobs]]\nname = \"hi\"\nschedule = \"0 0 3 * * *\"\ntimezone = \"Europe/Paris\"\n\n\
             [[jobs]]\nname = \"on_b\"\nschedule = \"0 0 3 * * *\"\nhost = \"node-b\"\n",
        )
        .section(extra)
        .write()
}

/// Reports `event` of `job` with `token` and a JSON body; (status, answer).
async fn report(c: &reqwest::Client, url: &str, token: &str, job: &str, event: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{url}/v1/jobs/{job}/{event}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn rows(c: &reqwest::Client, url: &str, q: &str) -> Vec<Value> {
    sql(c, url, q).await.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_job_and_a_failed_job_each_send_an_email_and_run_job_records_a_real_command() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtpd::start(dir.path(), "smtp", "plain", None);
    let extra = format!(
        "[[notify.email]]\nname = \"mail\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"lake <alerts@lake.test>\"\nto = [\"ops@example.com\"]\ntimeout = \"10s\"\n\n\
         [[jobs]]\nname = \"nightly\"\nschedule = \"*/2 * * * * *\"\ngrace = \"1s\"\n\n\
         [[jobs]]\nname = \"lake_archive\"\nschedule = \"*/2 * * * * *\"\ngrace = \"5s\"\n\n\
         [archive]\nschedule = \"*/2 * * * * *\"\n",
        smtp.port
    );
    let port = free_port();
    let lake = Lake::start(&config(dir.path(), port, &extra), port);
    let c = reqwest::Client::new();

    // A failing run of `backup`: start, then fail with its exit code and output.
    let (status, start) = report(&c, &lake.url, TOKEN, "backup", "start", json!({})).await;
    assert_eq!(status, 200, "{start}");
    let run_id = start["run_id"].as_str().unwrap().to_string();
    let body =
        json!({"run_id": run_id, "exit_code": 2, "output": "dumping shop\npg_dump: error: connection refused\n"});
    let (status, end) = report(&c, &lake.url, TOKEN, "backup", "fail", body).await;
    assert_eq!(status, 200, "{end}");
    assert_eq!((end["event"].as_str(), end["duplicate"].as_bool()), (Some("fail"), Some(false)));
    assert!(end["duration_ms"].as_f64().unwrap() >= 0.0, "the duration is known from the start: {end}");

    // run-job around a real command, with the collector's config.
    let collector = dir.path().join("collector.toml");
    std::fs::write(
        &collector,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            dir.path().join("collector").display(),
            lake.url
        ),
    )
    .unwrap();
    let out = Command::new(collector_bin())
        .args(["run-job", "--config"])
        .arg(&collector)
        .args(["hi", "--", "sh", "-c", "echo hi; exit 3"])
        .output()
        .unwrap();
    println!(
        "run-job: exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "run-job exits with the command's code");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "the command's output is passed through");
    assert!(out.stderr.is_empty(), "nothing to say when the lake took both reports");
    let hi = rows(
        &c,
        &lake.url,
        "SELECT event, host, exit_code, output, source, duration_ms IS NOT NULL, run_id FROM jobs WHERE job = 'hi' ORDER BY ts",
    )
    .await;
    println!("jobs rows of hi: {hi:?}");
    assert_eq!(hi.len(), 2, "{hi:?}");
    assert_eq!(
        hi[0].as_array().unwrap()[..5],
        [json!("start"), json!(NODE), Value::Null, Value::Null, json!("run-job")]
    );
    assert_eq!(
        hi[1].as_array().unwrap()[..6],
        [json!("fail"), json!(NODE), json!(3), json!("hi\n"), json!("run-job"), json!(true)]
    );
    assert_eq!(hi[0][6], hi[1][6], "start and end share the run id");

    // The lake unreachable: the command still runs, run-job says so and keeps its code.
    let gone = dir.path().join("gone.toml");
    std::fs::write(
        &gone,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n",
            dir.path().join("collector").display(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(collector_bin())
        .args(["run-job", "--config"])
        .arg(&gone)
        .args(["hi", "--", "sh", "-c", "echo still ran; exit 5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("run-job, lake down: exit {:?}, stderr {stderr:?}", out.status.code());
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still ran\n");
    assert!(stderr.contains("could not report start") && stderr.contains("could not report fail"), "{stderr}");

    // A job the lake does not know: the command still runs, run-job says why.
    let out = Command::new(collector_bin())
        .args(["run-job", "--config"])
        .arg(&collector)
        .args(["undeclared", "--", "sh", "-c", "exit 0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("run-job, undeclared job: exit {:?}, stderr {stderr:?}", out.status.code());
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr.contains("404 Not Found): job \"undeclared\" is not declared"), "{stderr}");

    // `nightly` never reports: late within ~3 s; `backup` failed: both emails arrive. Alerts
    // of one rule that fire together come as one email (`[FIRING:2] job_failed …`, with
    // `hi` above), so each is looked for in the emails' subjects and bodies.
    let texts = || -> Vec<String> {
        smtp.messages()
            .iter()
            .map(|(v, _)| format!("{}\n{}", v["subject"].as_str().unwrap_or(""), v["body"].as_str().unwrap_or("")))
            .collect()
    };
    let late_mail =
        |t: &String| t.starts_with("[FIRING") && t.contains("job_late") && t.contains("job nightly is late");
    let failed_mail = |t: &String| {
        t.starts_with("[FIRING")
            && t.contains("job_failed")
            && t.contains("job backup failed at")
            && t.contains("(exit code 2): pg_dump: error: connection refused")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = texts();
        if t.iter().any(late_mail) && t.iter().any(failed_mail) {
            break;
        }
        if Instant::now() > deadline {
            let jobs = rows(&c, &lake.url, "SELECT ts, job, event FROM jobs ORDER BY ts").await;
            let alerts = rows(&c, &lake.url, "SELECT ts, rule, state, message FROM alerts ORDER BY ts").await;
            panic!("no job_late and job_failed emails: {t:?}\njobs: {jobs:?}\nalerts: {alerts:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (m, _) in smtp.messages() {
        let body = m["body"].as_str().unwrap_or("").replace("\r\n", "\n");
        let first = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        println!("email: {}\n  first line: {first}", m["subject"].as_str().unwrap_or(""));
        for l in body.lines().skip(1).filter(|l| l.contains(" failed at ") || l.contains(" is late: ")) {
            println!("  also: {l}");
        }
    }
    let late = rows(
        &c,
        &lake.url,
        "SELECT host, source, scheduled IS NOT NULL FROM jobs WHERE job = 'nightly' AND event = 'late' LIMIT 1",
    )
    .await;
    assert_eq!(late[0], json!(["lake", "lake", true]), "late rows are the lake's, with their due time");

    // The archive run (every 2 s here) recorded itself.
    let archive = wait_for(
        &c,
        &lake.url,
        "SELECT count(*) FROM jobs WHERE job = 'lake_archive' AND event = 'success' AND host = 'lake' AND source = 'lake'",
        1,
    )
    .await;
    assert!(archive >= 1, "lake_archive recorded its runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_reports_are_refused_with_their_reason_and_retries_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&config(dir.path(), port, ""), port);
    let c = reqwest::Client::new();
    let url = &lake.url;
    let error = |v: &Value| v["error"].as_str().unwrap_or("").to_string();

    // Wrong token, no token: 401.
    let (status, v) = report(&c, url, "wrong-token-0123456789", "backup", "start", json!({})).await;
    assert_eq!(status, 401, "{v}");
    let r = c.get(format!("{url}/v1/jobs/backup/start")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A job not in [[jobs]]: 404 naming it and the fix.
    let (status, v) = report(&c, url, TOKEN, "nope", "start", json!({})).await;
    assert_eq!(status, 404);
    assert!(
        error(&v).contains("job \"nope\" is not declared") && error(&v).contains("[[jobs]] name = \"nope\""),
        "{v}"
    );
    // An event that is not one: 404.
    let (status, v) = report(&c, url, TOKEN, "backup", "finish", json!({})).await;
    assert_eq!(status, 404);
    assert!(error(&v).contains("start, /success or /fail"), "{v}");
    // A name no job can have: 400.
    for bad in ["bad$name", "a%20b", &"x".repeat(65)] {
        let (status, v) = report(&c, url, TOKEN, bad, "start", json!({})).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(error(&v).contains("job name") || error(&v).contains("is not allowed"), "{v}");
    }
    // A bad run_id, a bad field: 400.
    let (status, v) = report(&c, url, TOKEN, "backup", "start", json!({"run_id": "a b"})).await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("run_id"), "{v}");
    let (status, v) = report(&c, url, TOKEN, "backup", "start", json!({"exit": 1})).await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("unknown field `exit`"), "{v}");
    // Too large: 413.
    let r = c
        .post(format!("{url}/v1/jobs/backup/fail"))
        .bearer_auth(TOKEN)
        .body(vec![b'x'; 100 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Node A reporting a job declared for node B: 403; node B may.
    let (status, v) = report(&c, url, TOKEN, "on_b", "start", json!({})).await;
    assert_eq!(status, 403, "{v}");
    assert!(error(&v).contains("runs on host \"node-b\""), "{v}");
    let (status, v) = report(&c, url, TOKEN_B, "on_b", "success", json!({})).await;
    assert_eq!((status, v["host"].as_str()), (200, Some("node-b")), "{v}");

    // A success with no start: stored, a run id assigned, no duration.
    let (status, v) = report(&c, url, TOKEN, "backup", "success", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["run_id"].as_str().is_some_and(|r| r.len() == 16) && v["duration_ms"].is_null(), "{v}");

    // The same success twice (a retry): stored once, the retry says duplicate.
    let (_, s) = report(&c, url, TOKEN, "backup", "start", json!({"run_id": "run-42"})).await;
    assert_eq!(s["run_id"], "run-42");
    let (_, again) = report(&c, url, TOKEN, "backup", "start", json!({"run_id": "run-42"})).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let (status, first) =
        report(&c, url, TOKEN, "backup", "success", json!({"run_id": "run-42", "duration_ms": 1500})).await;
    assert_eq!((status, first["duplicate"].as_bool()), (200, Some(false)), "{first}");
    let (status, retry) = report(&c, url, TOKEN, "backup", "success", json!({"run_id": "run-42"})).await;
    assert_eq!((status, retry["duplicate"].as_bool(), retry["duration_ms"].as_f64()), (200, Some(true), Some(1500.0)));
    let n = count(&c, url, "SELECT count(*) FROM jobs WHERE run_id = 'run-42'").await;
    assert_eq!(n, 2, "one start, one success");

    // An end without run_id pairs with the latest open start.
    let (_, s) = report(&c, url, TOKEN, "backup", "start", json!({})).await;
    let (_, e) = report(&c, url, TOKEN, "backup", "success", json!({})).await;
    assert_eq!(s["run_id"], e["run_id"], "paired: {s} {e}");

    // A huge output (plain text, within the body limit) keeps its last 4 KiB.
    let mut text = "é".repeat(20_000);
    text.push_str("THE END\n");
    let r = c.post(format!("{url}/v1/jobs/backup/fail")).bearer_auth(TOKEN).body(text).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out =
        rows(&c, url, "SELECT octet_length(encode(output)), output FROM jobs WHERE event = 'fail' AND job = 'backup'")
            .await;
    let stored = out[0][1].as_str().unwrap();
    assert!(out[0][0].as_i64().unwrap() <= 4096 && stored.ends_with("éTHE END\n"), "{:?}", out[0][0]);

    // GET with basic auth (curl -fsS https://node:<token>@lake/v1/jobs/…) and query parameters.
    let r = c.get(format!("{url}/v1/jobs/hi/fail?exit_code=7")).basic_auth(NODE, Some(TOKEN)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let n = count(&c, url, "SELECT count(*) FROM jobs WHERE job = 'hi' AND exit_code = 7 AND source = 'http'").await;
    assert_eq!(n, 1);

    // Nodes cannot write the table directly: it is the lake's record.
    let (status, text) = post(&c, url, "jobs", TOKEN, &format!("{NODE}/1/1"), Vec::new()).await;
    assert_eq!(status, 403, "{text}");
}
