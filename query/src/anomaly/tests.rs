use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::RecordBatch;
use lake_format::rows::{MetricsBuilder, TableBuilder};
use lake_format::Table;

use super::*;
use crate::correlate::TableColumns;
use crate::test_support::{engine, MemFresh};

/// Monday 2026-11-23T00:00:00Z: the window is that day, the history the four Mondays before.
const DAY: i64 = 1_795_392_000_000_000;
const HOUR: i64 = 3_600_000_000;
const WEEK: i64 = 7 * 24 * HOUR;
const FROM: &str = "TIMESTAMPTZ '2026-11-23 00:00:00+00'";
const TO: &str = "TIMESTAMPTZ '2026-11-24 00:00:00+00'";

/// `n` rows spread over the hour starting at `at`.
fn spread(at: i64, n: usize) -> impl Iterator<Item = i64> {
    (0..n).map(move |i| at + (i as i64) * (HOUR / (n as i64 + 1)) + 1)
}

/// Four weeks of history and the window day: every hour `a.example` and `b.example` serve
/// 20 requests each (plus a varying few), 5xx now and then; logs of nginx at err, 1 or 2
/// an hour. In the window: a 5xx storm on a.example at 14:00, an error burst of nginx at
/// 09:00, b.example silent at 20:00 (a.example still served: the hour is covered), and
/// no http row at all at 03:00 (the collector was down: not an anomaly).
fn world() -> (tempfile::TempDir, Arc<crate::Engine>) {
    let mut http = TableBuilder::new(Table::Http);
    let c = |n: &str| http.column(n).unwrap();
    let (ts, host, vhost, status) = (c("ts"), c("host"), c("vhost"), c("status"));
    let mut logs = TableBuilder::new(Table::Logs);
    let l = |n: &str| logs.column(n).unwrap();
    let (lts, lhost, source, unit, prio, msg) =
        (l("ts"), l("host"), l("source"), l("unit"), l("priority"), l("message"));
    let mut metrics = MetricsBuilder::new();
    for week in 0..=4 {
        for h in 0..24 {
            let at = DAY - week * WEEK + h * HOUR;
            let window = week == 0;
            if window && h == 3 {
                continue;
            }
            for (v, name) in ["a.example", "b.example"].iter().enumerate() {
                if window && h == 20 && v == 1 {
                    continue;
                }
                let n = 20 + ((week + h + v as i64) % 3) as usize;
                let storm = if window && h == 14 && v == 0 { 200 } else { 0 };
                let fives = usize::from((week + h) % 4 == 0);
                for (i, t) in spread(at, n + storm + fives).enumerate() {
                    http.ts(ts, t);
                    http.text(host, Some("web"));
                    http.text(vhost, Some(name));
                    http.int(status, Some(if i < n { 200 } else { 503 }));
                    http.end_row();
                }
            }
            let errors = if window && h == 9 { 90 } else { 1 + ((week + h) % 2) as usize };
            for t in spread(at, errors) {
                logs.ts(lts, t);
                logs.text(lhost, Some("web"));
                logs.text(source, Some("journald"));
                logs.text(unit, Some("nginx.service"));
                logs.int(prio, Some(3));
                logs.text(msg, Some("upstream timed out"));
                logs.end_row();
            }
            // cpu: 30 % give or take; a counter growing 1000 an hour, 5000 at 11:00 today.
            let cpu = 30.0 + ((week * 7 + h) % 5) as f64 * 0.3;
            let grow = if window && h == 11 { 5000.0 } else { 1000.0 };
            for (i, t) in spread(at, 4).enumerate() {
                metrics.push(t, "web", "cpu_usage_percent", cpu, &[("cpu", "total")]);
                let base = (DAY - week * WEEK + h * HOUR) as f64 / HOUR as f64 * 1000.0;
                metrics.push(t, "web", "net_rx_bytes_total", base + grow * i as f64 / 3.0, &[("iface", "eth0")]);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.set(Table::Http, vec![http.finish().unwrap()]);
    fresh.set(Table::Logs, vec![logs.finish().unwrap()]);
    fresh.set(Table::Metrics, vec![metrics.finish()]);
    let e = engine(dir.path(), fresh);
    (dir, e)
}

/// The rows as (source, series, hour (µs), observed, expected, z, direction, hours).
type Row = (String, String, i64, f64, f64, f64, String, i64);

fn rows(e: &crate::Engine, p: &Params) -> Vec<Row> {
    let sql = anomalies_sql(p, FROM, TO);
    let r = e.query_blocking(&sql).unwrap_or_else(|err| panic!("{err}\n{sql}"));
    let mut out = Vec::new();
    for b in &r.batches {
        let b: &RecordBatch = b;
        let text = |i: usize, row: usize| arrow_cast::display::array_value_to_string(b.column(i), row).unwrap();
        for row in 0..b.num_rows() {
            let hour = arrow_cast::cast(b.column(2), &arrow_schema::DataType::Int64).unwrap();
            out.push((
                text(0, row),
                text(1, row),
                hour.as_primitive::<Int64Type>().value(row),
                b.column(3).as_primitive::<Float64Type>().value(row),
                b.column(4).as_primitive::<Float64Type>().value(row),
                b.column(5).as_primitive::<Float64Type>().value(row),
                text(6, row),
                b.column(7).as_primitive::<Int64Type>().value(row),
            ));
        }
    }
    out
}

#[test]
fn the_incidents_rank_first_with_their_size() {
    let (_d, e) = world();
    let got = rows(&e, &Params::default());
    let head: Vec<(&str, &str, i64, &str)> =
        got.iter().take(4).map(|r| (r.0.as_str(), r.1.as_str(), (r.2 - DAY) / HOUR, r.6.as_str())).collect();
    assert_eq!(
        head,
        [
            ("http", "vhost=a.example status=5xx", 14, "up"),
            ("logs", "host=web unit=nginx.service priority=err", 9, "up"),
            ("metrics", "net_rx_bytes_total{iface=eth0} @ web", 11, "up"),
            ("http", "vhost=b.example status=2xx", 20, "down"),
        ],
        "{got:#?}"
    );
    let storm = &got[0];
    assert_eq!(storm.3, 200.0, "{storm:?}");
    assert!(storm.4 <= 1.0 && storm.5 > 100.0 && storm.7 == 1, "{storm:?}");
    let burst = &got[1];
    assert_eq!((burst.3, burst.7), (90.0, 1), "{burst:?}");
    // The counter is its increase in the hour: 1000 usually, 5000 then.
    assert_eq!((got[2].3, got[2].4), (5000.0, 1000.0), "{:?}", got[2]);
    // Silence: 0 served where 20 to 22 are usual.
    assert_eq!(got[3].3, 0.0);
    // The hour without any http row is nobody's anomaly; the steady cpu is none.
    assert!(got.iter().all(|r| (r.2 - DAY) / HOUR != 3), "{got:#?}");
    assert!(got.iter().all(|r| !r.1.starts_with("cpu_usage_percent")), "{got:#?}");
}

#[test]
fn direction_limit_threshold_and_a_chosen_series() {
    let (_d, e) = world();
    let up = rows(&e, &Params { direction: Direction::Up, limit: 2, ..Params::default() });
    assert_eq!(up.len(), 2);
    assert!(up.iter().all(|r| r.6 == "up"));
    let down = rows(&e, &Params { direction: Direction::Down, ..Params::default() });
    assert!(!down.is_empty() && down.iter().all(|r| r.6 == "down"), "{down:?}");
    assert!(rows(&e, &Params { min_z: 1000.0, ..Params::default() }).is_empty());

    let http = TableColumns::builtin(Table::Http);
    let by_vhost = Series::counts(&http, &["vhost".to_string()]).unwrap();
    let got = rows(&e, &Params { series: by_vhost, ..Params::default() });
    assert_eq!(got[0].1, "vhost=a.example", "{got:#?}");
    assert_eq!((got[0].2 - DAY) / HOUR, 14);
    let whole = Series::counts(&TableColumns::builtin(Table::Logs), &[]).unwrap();
    let got = rows(&e, &Params { series: whole, ..Params::default() });
    assert_eq!((got[0].0.as_str(), got[0].1.as_str(), (got[0].2 - DAY) / HOUR), ("logs", "all", 9));
    let cpu = rows(&e, &Params { series: Series::metric("net_rx_bytes_total").unwrap(), ..Params::default() });
    assert_eq!(cpu.len(), 1, "{cpu:?}");
}

#[test]
fn names_are_checked_and_quoted() {
    let http = TableColumns::builtin(Table::Http);
    assert!(Series::counts(&http, &["nope".into()]).unwrap_err().0.contains("has no column"));
    assert!(Series::counts(&http, &["attrs".into()]).unwrap_err().0.contains("cannot be grouped by"));
    assert!(Series::counts(&http, &["ts".into()]).is_err());
    let five: Vec<String> = ["vhost", "status", "method", "path", "host"].iter().map(|s| s.to_string()).collect();
    assert!(Series::counts(&http, &five).unwrap_err().0.contains("at most 4"));
    assert!(Series::metric("x' OR 1=1 --").is_err());
    // A custom table whose columns are not known yet: a quote in a name stays data.
    let custom = TableColumns::parse("stripe").unwrap();
    let s = Series::counts(&custom, &["it's".into()]).unwrap();
    let sql = anomalies_sql(&Params { series: s, ..Params::default() }, FROM, TO);
    assert!(sql.contains("'it''s=' || coalesce(\"it's\"::VARCHAR, '-')") && sql.contains("FROM \"stripe\""), "{sql}");
    assert!(Series::counts(&custom, &["a\"b".into()]).is_err());

    assert!(last_hours(0).is_err() && last_hours(169).is_err() && last_hours(168).is_ok());
    let bad = |p: Params| p.check().unwrap_err().0;
    assert!(bad(Params { weeks: 0, ..Params::default() }).contains("weeks"));
    assert!(bad(Params { weeks: 13, ..Params::default() }).contains("weeks"));
    assert!(bad(Params { min_z: f64::NAN, ..Params::default() }).contains("threshold"));
    assert!(bad(Params { min_z: -1.0, ..Params::default() }).contains("threshold"));
    assert!(bad(Params { limit: 0, ..Params::default() }).contains("limit"));
    assert_eq!("down".parse::<Direction>(), Ok(Direction::Down));
    assert!("sideways".parse::<Direction>().is_err());
}

#[test]
fn an_empty_lake_has_no_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(MemFresh::default()));
    assert!(rows(&e, &Params::default()).is_empty());
    let (from, to) = last_hours(24).unwrap();
    e.query_blocking(&anomalies_sql(&Params::default(), &from, &to)).unwrap();
}

#[test]
fn a_column_of_many_values_keeps_the_busiest_keys_only() {
    // 1500 addresses, each in the window and two weeks before: one series each, uncapped.
    let mut http = TableBuilder::new(Table::Http);
    let c = |n: &str| http.column(n).unwrap();
    let (ts, host, ip) = (c("ts"), c("host"), c("remote_ip"));
    for week in 0..=2 {
        for i in 0..1500i64 {
            // The first 100 addresses are busier, so they are the keys kept first.
            for _ in 0..if i < 100 { 3 } else { 1 } {
                http.ts(ts, DAY - week * WEEK + 10 * HOUR + i);
                http.text(host, Some("web"));
                http.text(ip, Some(&format!("192.0.2.{}:{i}", i % 250)));
                http.end_row();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.set(Table::Http, vec![http.finish().unwrap()]);
    let e = engine(dir.path(), fresh);
    let series = Series::counts(&TableColumns::builtin(Table::Http), &["remote_ip".to_string()]).unwrap();
    let got = rows(&e, &Params { series, min_z: 0.0, limit: 100_000, ..Params::default() });
    assert_eq!(got.len(), MAX_COUNT_SERIES as usize);
    assert!(got.iter().any(|r| r.1 == "remote_ip=192.0.2.0:0"), "a busy key was dropped");
}

#[test]
fn a_range_longer_than_a_week_is_cut_to_its_last_week() {
    let (_d, e) = world();
    let sql = anomalies_sql(&Params::default(), "TIMESTAMPTZ '2026-10-01 00:00:00+00'", TO);
    let r = e.query_blocking(&sql).unwrap();
    let hours = arrow_cast::cast(r.batches[0].column(2), &arrow_schema::DataType::Int64).unwrap();
    let hours = hours.as_primitive::<Int64Type>();
    assert!(r.num_rows() >= 4);
    let to = DAY + 24 * HOUR;
    assert!(hours.values().iter().all(|&h| h >= to - 7 * 24 * HOUR && h < to), "{hours:?}");
}
