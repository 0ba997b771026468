//! `exec` against real commands: one printing NDJSON, one printing Prometheus text, one
//! that hangs (killed at its timeout while another keeps running), one printing garbage.

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::*;
use crate::config::Config;
use crate::sources::test_support::{context, drain_until, Spooled};

fn exec_configs(toml: &str) -> anyhow::Result<Vec<ExecConfig>> {
    Config::from_toml(toml, Some("t")).map(|c| c.exec)
}

fn one(toml: &str) -> ExecConfig {
    exec_configs(toml).unwrap().remove(0)
}

fn metric(records: &[Spooled], name: &str) -> Vec<Value> {
    records.iter().filter(|r| r.table == "metrics").flat_map(|r| r.rows()).filter(|r| r["name"] == name).collect()
}

fn logs(records: &[Spooled]) -> Vec<Value> {
    records.iter().filter(|r| r.table == "logs").flat_map(|r| r.rows()).collect()
}

#[test]
fn config_forms_and_errors_name_the_field() {
    let c = one("[[exec]]\nname = \"ups\"\ncommand = [\"upsc\", \"ups@localhost\"]\nformat = \"prometheus\"\nlabels = { site = \"home\" }\n");
    assert_eq!(c.spec.program, PathBuf::from("upsc"));
    assert_eq!(c.spec.args, ["ups@localhost"]);
    assert_eq!(c.source, "exec/ups");
    assert_eq!(c.interval, Duration::from_secs(60));
    assert_eq!(c.spec.timeout, Duration::from_secs(10));
    assert_eq!(c.labels, [("site".to_string(), "home".to_string()), ("job".into(), "ups".into())]);
    let c = one("[[exec]]\nname = \"w\"\ncommand = \"curl -s https://x | jq -c .\"\nshell = true\nformat = \"ndjson\"\ntable = \"weather\"\n");
    assert_eq!(c.spec.program, PathBuf::from("/bin/sh"));
    assert_eq!(c.spec.args, ["-c", "curl -s https://x | jq -c ."]);
    assert_eq!(c.table.as_deref(), Some("weather"));
    for (bad, mentions) in [
        ("[[exec]]\nname = \"a\"\ncommand = \"ls -l\"\nformat = \"ndjson\"\ntable = \"t\"\n", "shell = true"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"ndjson\"\n", "needs a table"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"ndjson\"\ntable = \"http\"\n", "built-in"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"prometheus\"\ntable = \"t\"\n", "remove table"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"csv\"\n", "format"),
        ("[[exec]]\nname = \"a\"\ncommand = []\nformat = \"prometheus\"\n", "program"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"prometheus\"\ntimeout = \"2m\"\n", "must not exceed"),
        ("[[exec]]\nname = \"A b\"\ncommand = [\"x\"]\nformat = \"prometheus\"\n", "name"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"prometheus\"\n[[exec]]\nname = \"a\"\ncommand = [\"y\"]\nformat = \"prometheus\"\n", "used by two"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"prometheus\"\ntimout = \"1s\"\n", "timout"),
        ("[[exec]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"prometheus\"\nlabels = { \"__x\" = \"y\" }\n", "label"),
    ] {
        let err = format!("{:#}", exec_configs(bad).unwrap_err());
        assert!(err.contains(mentions), "{bad}\n{err}");
    }
}

fn outcome(stdout: &str, ended: Ended) -> Outcome {
    Outcome {
        ended,
        stdout: stdout.as_bytes().to_vec(),
        stdout_discarded: 0,
        stderr_tail: "boom".into(),
        leftovers_killed: false,
        elapsed: Duration::from_millis(250),
    }
}

#[test]
fn ndjson_rows_of_a_run_with_bad_lines_and_a_failure() {
    let c = one("[[exec]]\nname = \"biz\"\ncommand = [\"x\"]\nformat = \"ndjson\"\ntable = \"signups\"\n");
    let started = 1_795_342_501_123_456;
    let o = outcome("{\"n\":1,\"ts\":\"2026-01-01T00:00:00Z\"}\n{\"n\":2}\nnot json\n\n[1]\n", Ended::Exited(2));
    let r = rows_of_run(&c, "node", started, &o).unwrap();
    assert_eq!((r.lines, r.bad_lines), (4, 2));
    let tables: Vec<(&str, u64)> = r.records.iter().map(|e| (e.table.as_str(), e.rows)).collect();
    assert_eq!(tables, [("json/signups", 2), ("metrics", 2), ("logs", 3)]);
    let body = String::from_utf8(r.records[0].body.clone()).unwrap();
    assert_eq!(body, "{\"n\":1,\"ts\":\"2026-01-01T00:00:00Z\"}\n{\"ts\":\"2026-11-22T10:15:01.123456Z\",\"n\":2}\n");
    let recs: Vec<Spooled> =
        r.records.iter().map(|e| Spooled { table: e.table.clone(), body: e.body.clone() }).collect();
    let l = logs(&recs);
    assert_eq!(l[0]["source"], "exec-unparsed");
    assert_eq!(l[0]["message"], "not json");
    assert_eq!(l[0]["attrs"]["exec"], "biz");
    assert_eq!(l[0]["attrs"]["line"], "3");
    assert_eq!(l[1]["attrs"]["error"], "JSON, but not an object");
    assert_eq!(l[2]["source"], "exec");
    assert_eq!(l[2]["ident"], "biz");
    assert_eq!(l[2]["priority"], 3);
    assert_eq!(l[2]["message"], "exec biz: exited with code 2");
    assert_eq!(l[2]["attrs"]["stderr"], "boom");
    assert_eq!(metric(&recs, "exec_up")[0]["value"], 0.0);
    assert_eq!(metric(&recs, "exec_duration_seconds")[0]["value"], 0.25);
}

#[tokio::test]
async fn real_commands_ndjson_prometheus_garbage_and_a_hang_that_stops_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;
    let script = dir.path().join("metrics.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo '# HELP ups_battery_charge Battery charge, percent.'\n\
         echo '# TYPE ups_battery_charge gauge'\n\
         echo 'ups_battery_charge{ups=\"main\"} 97.5'\n\
         echo 'ups_load_ratio NaN'\n\
         echo 'ups_input_volts{phase=\"1\"} +Inf 1795342501000'\n\
         echo 'request_seconds_bucket{le=\"0.1\"} 3'\n\
         echo 'request_seconds_bucket{le=\"+Inf\"} 5'\n\
         echo 'request_seconds_sum 0.9'\n\
         echo 'request_seconds_count 5'\n",
    )
    .unwrap();
    let toml = format!(
        "[[exec]]\nname = \"signups\"\ncommand = [\"printf\", '{{\"user\":\"a\",\"plan\":\"pro\"}}\\n{{\"user\":\"b\",\"ts\":\"2026-11-22T10:00:00Z\"}}\\n']\nformat = \"ndjson\"\ntable = \"signups\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[exec]]\nname = \"ups\"\ncommand = [\"/bin/sh\", {:?}]\nformat = \"prometheus\"\nlabels = {{ site = \"home\" }}\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[exec]]\nname = \"hang\"\ncommand = \"echo 'partial {{'; echo 'about to hang' >&2; sleep 600\"\nshell = true\nformat = \"ndjson\"\ntable = \"hung\"\ninterval = \"2s\"\ntimeout = \"700ms\"\n\
         [[exec]]\nname = \"junk\"\ncommand = [\"printf\", 'garbage line\\n\\377\\376 bytes\\nmetric{{broken 1\\n']\nformat = \"prometheus\"\ninterval = \"1s\"\ntimeout = \"1s\"\n",
        script.display().to_string()
    );
    let configs = exec_configs(&toml).unwrap();
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for c in configs.clone() {
        tasks.push(tokio::spawn(ExecSource::new(c, ctx.clone()).run(cancel.clone())));
    }
    // Wait for the hung command's note, and for the others to have run twice meanwhile.
    let all = drain_until(&ctx, 20, |all| {
        let ups_runs = metric(all, "exec_up").iter().filter(|r| r["labels"]["exec"] == "ups").count();
        logs(all).iter().any(|r| r["ident"] == "hang") && ups_runs >= 2
    })
    .await;
    cancel.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    // NDJSON: both lines, the second keeps its own ts, the first gets the run's.
    let signups: Vec<Value> = all.iter().filter(|r| r.table == "json/signups").flat_map(|r| r.lines()).collect();
    assert!(signups.len() >= 2, "{signups:?}");
    assert_eq!(signups[0]["user"], "a");
    assert!(signups[0]["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(signups[1]["ts"], "2026-11-22T10:00:00Z");

    // Prometheus text into metrics, with job/site labels; NaN, +Inf and timestamps kept.
    let charge = metric(&all, "ups_battery_charge");
    assert_eq!(charge[0]["value"], 97.5);
    assert_eq!(charge[0]["labels"]["ups"], "main");
    assert_eq!(charge[0]["labels"]["job"], "ups");
    assert_eq!(charge[0]["labels"]["site"], "home");
    assert_eq!(charge[0]["host"], "test-node");
    assert_eq!(metric(&all, "ups_load_ratio")[0]["value"], "NaN");
    let volts = &metric(&all, "ups_input_volts")[0];
    assert_eq!((volts["value"].as_str(), volts["ts"].as_i64()), (Some("inf"), Some(1_795_342_501_000_000)));
    assert_eq!(metric(&all, "request_seconds_bucket").len() % 2, 0);
    assert!(!metric(&all, "request_seconds_count").is_empty());

    // The hung command: killed at 700ms, its stderr tail in the note, exec_up 0; its
    // partial output line kept raw.
    let note = logs(&all).into_iter().find(|r| r["ident"] == "hang").unwrap();
    assert_eq!(note["source"], "exec");
    assert!(note["message"].as_str().unwrap().contains("timed out after 700ms"), "{note}");
    assert_eq!(note["attrs"]["stderr"], "about to hang");
    assert!(metric(&all, "exec_up").iter().any(|r| r["labels"]["exec"] == "hang" && r["value"] == 0.0));
    assert!(logs(&all).iter().any(|r| r["source"] == "exec-unparsed" && r["message"] == "partial {"));
    let hang_stats = ctx.stats.source("exec/hang");
    assert!(hang_stats.errors.load(Ordering::Relaxed) >= 1);

    // Garbage: every line kept raw in logs (bytes hex-encoded when not UTF-8), counted.
    let junk: Vec<Value> = logs(&all).into_iter().filter(|r| r["attrs"]["exec"] == "junk").collect();
    let messages: Vec<&str> = junk.iter().take(3).map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["garbage line", "\u{fffd}\u{fffd} bytes", "metric{broken 1"]);
    assert_eq!(junk[1]["attrs"]["raw_hex"], "fffe206279746573");
    let junk_stats = ctx.stats.source("exec/junk");
    assert!(junk_stats.parse_errors.load(Ordering::Relaxed) >= 3);
    assert_eq!(junk_stats.errors.load(Ordering::Relaxed), 0, "a command printing garbage did not fail");
    assert!(metric(&all, "exec_up").iter().any(|r| r["labels"]["exec"] == "junk" && r["value"] == 1.0));
}

#[test]
fn the_commented_examples_in_the_example_config_parse() {
    // Each `# [[section]]` block of collector.toml, uncommented, is a valid entry.
    let example = include_str!("../../../examples/collector.toml");
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in example.lines() {
        match (&mut cur, line.strip_prefix("# ")) {
            (_, Some(l)) if ["[[exec]]", "[[prometheus_scrape]]", "[[json_file]]"].contains(&l.trim_end()) => {
                if let Some(b) = cur.take() {
                    blocks.push(b);
                }
                cur = Some(format!("{l}\n"));
            }
            (Some(b), Some(l)) if l.contains(" = ") => {
                b.push_str(l);
                b.push('\n');
            }
            (Some(_), _) => blocks.extend(cur.take()),
            (None, _) => {}
        }
    }
    blocks.extend(cur);
    assert_eq!(blocks.len(), 5, "{blocks:#?}");
    let all: String = blocks.concat();
    let c = Config::from_toml(&all, Some("t")).unwrap();
    assert_eq!((c.exec.len(), c.prometheus_scrape.len(), c.json_file.len()), (2, 2, 1));
    assert_eq!(c.exec[1].spec.args[1], "psql -XAt -c \"select row_to_json(s) from signups_today s\" shop");
}
