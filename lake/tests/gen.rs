//! `lake-gen` end to end: a tiny generated lake answers every default named query (and
//! the Grafana panels' tables) through `lake_query::engine::Engine`, its files are in
//! the lake's layout and sorted by each table's sort columns, and a seed always gives the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use lake_query::engine::{Engine, Limits, NoFreshRows};
use lake_query::grafana::macros::{expand, MacroContext};

/// 2026-11-22T10:00:00Z.
const END_MS: i64 = 1_795_341_600_000;
const DAY_MS: i64 = 86_400_000;

fn gen(data: &Path, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_lake-gen"))
        .args(["--days", "2", "--hosts", "3", "--http-rows", "10000", "--metric-samples", "20000"])
        .args(["--seed", "7", "--end", "2026-11-22T10:00:00Z", "--data-dir"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lake-gen failed: {stderr}");
    assert!(stderr.contains("lake-gen:"), "no progress on stderr: {stderr}");
}

fn files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for table in std::fs::read_dir(data.join("tables")).unwrap() {
        for part in std::fs::read_dir(table.unwrap().path()).unwrap() {
            for f in std::fs::read_dir(part.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn count(e: &Engine, sql: &str) -> i64 {
    let r = e.query_blocking(sql).unwrap_or_else(|err| panic!("{sql}: {err}"));
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn a_generated_lake_answers_every_default_named_query() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    gen(&data, &[]);

    // The layout: one file per table and day, named like committed files.
    let all = files(&data);
    assert!(all.iter().all(|f| f.file_name().unwrap() == "g-000000000000.parquet"), "{all:?}");
    assert!(all.iter().any(|f| f.ends_with("tables/http/date=2026-11-20/g-000000000000.parquet")));
    assert!(all.iter().any(|f| f.ends_with("tables/metrics/date=2026-11-22/g-000000000000.parquet")));

    let e = Engine::open(&data, Arc::new(NoFreshRows), Limits::default()).unwrap();
    let http = count(&e, "select count(*) from http");
    assert!((9_900..=10_100).contains(&http), "{http} http rows");
    let metrics = count(&e, "select count(*) from metrics");
    assert!((19_000..=21_000).contains(&metrics), "{metrics} samples");
    assert_eq!(
        count(&e, "select count(*) from http where ts < '2026-11-20 10:00:00Z' or ts >= '2026-11-22 10:00:00Z'"),
        0
    );
    for table in [
        "firewall",
        "bans",
        "probes",
        "logs",
        "alerts",
        "hosts",
        "packages",
        "units",
        "listeners",
        "containers",
        "spans",
    ] {
        assert!(count(&e, &format!("select count(*) from {table}")) > 0, "{table} is empty");
    }
    // Realistic enough to be worth querying: several vhosts, some 5xx, the host source's names.
    assert!(count(&e, "select count(distinct vhost) from http") >= 5);
    assert!(count(&e, "select count(*) from http where status >= 500") > 0);
    assert!(count(&e, "select count(*) from probes where not ok") > 0);
    assert_eq!(
        count(&e, "select count(distinct name) from metrics where name in ('cpu_usage_percent', 'load1', 'memory_used_bytes', 'filesystem_used_ratio', 'disk_read_bytes_per_second', 'net_rx_bytes_per_second', 'uptime_seconds')"),
        7
    );
    // Docker (issue 20's contract): a crash loop (die 1, start), an OOM kill (oom, die 137),
    // health changes, and the container_* samples whose restart count follows the events.
    assert!(count(&e, "select count(*) from containers where action = 'die' and exit_code = 1") > 100);
    assert!(count(&e, "select count(*) from containers where action = 'oom'") > 0);
    assert!(count(&e, "select count(*) from containers where action = 'die' and exit_code = 137") > 0);
    assert!(count(&e, "select count(*) from containers where health = 'unhealthy'") > 0);
    assert_eq!(
        count(&e, "select count(*) from containers where container_id is null or length(container_id) <> 64"),
        0
    );
    assert_eq!(count(&e, "select count(distinct name) from metrics where name like 'container_%'"), 8);
    assert_eq!(
        count(
            &e,
            "select count(*) from (select m.host from (select host, labels['container'] as c, arg_max(value, ts) as r, max(ts) as last \
             from metrics where name = 'container_restart_count' group by 1, 2) m join containers e on e.host = m.host and e.container = m.c \
             group by m.host, m.c, m.r having m.r <> count(*) filter (where e.action = 'start' and e.ts <= m.last) - 1)"
        ),
        0,
        "container_restart_count disagrees with the start events"
    );

    // Every file is sorted by its table's sort columns: (host, ts), metrics (name, host, labels, ts).
    for f in &all {
        let table: lake_format::Table =
            f.parent().unwrap().parent().unwrap().file_name().unwrap().to_str().unwrap().parse().unwrap();
        let keys = table.sort_columns();
        // Some row is greater than the next: (k0 > next k0) or (k0 = next k0 and (k1 > …)).
        let mut descent = String::from("false");
        for k in keys.iter().rev() {
            descent = format!("(p_{k} > {k} or (p_{k} = {k} and {descent}))");
        }
        let lags: Vec<String> = keys.iter().map(|k| format!("{k}, lag({k}) over w as p_{k}")).collect();
        let unsorted = count(
            &e,
            &format!(
                "select count(*) from (select {} from read_parquet('{}', file_row_number = true) \
                 window w as (order by file_row_number)) where {descent}",
                lags.join(", "),
                f.canonicalize().unwrap().display()
            ),
        );
        assert_eq!(unsorted, 0, "{} is not sorted by {keys:?}", f.display());
    }

    // Every default named query has rows over the generated range (but anomalies, below).
    let ctx =
        MacroContext { from_ms: END_MS - 2 * DAY_MS, to_ms: END_MS, interval_ms: 3_600_000, vars: Default::default() };
    for q in lake_query::named::defaults() {
        // Two days hold no earlier week to compare with: `tests/anomalies.rs` runs it on 29.
        if q.name == lake_query::named::ANOMALIES {
            continue;
        }
        let mut ctx = ctx.clone();
        q.fill_vars(&mut ctx.vars);
        let x = expand(&q.sql, &ctx).unwrap();
        let r = e.query_params_blocking(&x.sql, x.params).unwrap_or_else(|err| panic!("{}: {err}", q.name));
        assert!(r.num_rows() > 0, "named query {} returned no rows", q.name);
    }
}

#[test]
fn the_same_seed_gives_the_same_files_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    gen(&a, &["--threads", "2"]);
    gen(&b, &["--threads", "1"]);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), fb.len());
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.strip_prefix(&a).unwrap(), y.strip_prefix(&b).unwrap());
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap(), "{} differs", x.display());
    }
    // A non-empty lake is not overwritten.
    let out =
        Command::new(env!("CARGO_BIN_EXE_lake-gen")).args(["--days", "1", "--data-dir"]).arg(&a).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}
