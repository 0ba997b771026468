//! The shipper against a real HTTP server in-process: retries with Retry-After, headers,
//! body decoding, order, permanent rejections; and the whole collector end to end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use lake_collector::config::Config;
use lake_collector::shipper::Shipper;
use lake_collector::spool::{OnFull, SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use lake_format::rows::MetricsBuilder;
use lake_format::{wire, BatchId, Table};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token";
const NODE: &str = "test-node";

#[derive(Debug, Clone)]
struct Received {
    table: String,
    batch: BatchId,
    status: StatusCode,
}

#[derive(Debug, Clone)]
struct ReceivedJson {
    table: String,
    batch: BatchId,
    body: String,
}

#[derive(Default)]
struct Lake {
    /// NDJSON bodies of custom tables, in order.
    json: Mutex<Vec<ReceivedJson>>,
    /// Custom tables that get a 400.
    reject_tables: Vec<String>,
    /// Answers to give, in order; 200 once they run out.
    script: Mutex<Vec<StatusCode>>,
    /// Seqs that get a 400.
    reject_seqs: Vec<u64>,
    received: Mutex<Vec<Received>>,
}

async fn ingest(State(lake): State<Arc<Lake>>, Path(table): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(headers["content-type"], wire::CONTENT_TYPE);
    let batch: BatchId = headers[wire::BATCH_HEADER].to_str().unwrap().parse().unwrap();
    assert_eq!(batch.node, NODE);
    let t: Table = table.parse().unwrap();
    let (schema, batches) = wire::decode(&body).unwrap();
    assert!(!batches.is_empty());
    for b in &batches {
        wire::conform(t, &Table::Metrics.schema(), b).unwrap();
    }
    assert_eq!(schema.fields().len(), 5);

    let scripted = {
        let mut s = lake.script.lock().unwrap();
        if s.is_empty() {
            None
        } else {
            Some(s.remove(0))
        }
    };
    let status = if lake.reject_seqs.contains(&batch.seq) {
        StatusCode::BAD_REQUEST
    } else {
        scripted.unwrap_or(StatusCode::OK)
    };
    lake.received.lock().unwrap().push(Received { table, batch, status });
    match status {
        StatusCode::SERVICE_UNAVAILABLE => (status, [("retry-after", "1")], "overloaded").into_response(),
        StatusCode::BAD_REQUEST => (status, "column \"value\" of table metrics must be Float64").into_response(),
        s => (s, "").into_response(),
    }
}

/// `POST /v1/ingest/json/{table}`: the custom-table side of the contract.
async fn ingest_json(
    State(lake): State<Arc<Lake>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let batch: BatchId = headers[wire::BATCH_HEADER].to_str().unwrap().parse().unwrap();
    assert_eq!(batch.node, NODE);
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.ends_with('\n'));
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.is_object(), "{line}");
    }
    if lake.reject_tables.contains(&table) {
        return (StatusCode::BAD_REQUEST, "field \"n\" (line 1): int64 then string").into_response();
    }
    lake.json.lock().unwrap().push(ReceivedJson { table, batch, body });
    (StatusCode::OK, "").into_response()
}

async fn start_lake(lake: Arc<Lake>) -> String {
    let app = Router::new()
        .route("/v1/ingest/json/{table}", post(ingest_json))
        .route("/v1/ingest/{table}", post(ingest))
        .with_state(lake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(url: &str, data_dir: &std::path::Path) -> Config {
    let toml = format!(
        "node = \"{NODE}\"\ndata_dir = {:?}\n[lake]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\
         [host]\ninterval = \"1s\"\n[shipper]\nbackoff_min = \"10ms\"\nbackoff_max = \"100ms\"\n\
         [inventory]\nenabled = false\n",
        data_dir.display().to_string()
    );
    Config::from_toml(&toml, None).unwrap()
}

fn metrics_body(i: u64) -> Vec<u8> {
    let mut b = MetricsBuilder::new();
    b.push(1_795_374_070_000_000 + i as i64, NODE, "load1", i as f64, &[]);
    b.push(1_795_374_070_000_000 + i as i64, NODE, "cpu_usage_percent", 1.0, &[("cpu", "total")]);
    let batch = b.finish();
    wire::encode(&batch.schema(), &[batch]).unwrap()
}

async fn spool_with(cfg: &Config, n: u64, stats: &Arc<Stats>) -> SpoolHandle {
    let opts = SpoolOptions { max_size: cfg.spool.max_size, segment_size: cfg.spool.segment_size };
    let spool = SpoolHandle::open(cfg.data_dir.join("spool"), opts, Arc::clone(stats)).await.unwrap();
    for i in 1..=n {
        assert_eq!(spool.append("metrics".into(), metrics_body(i), OnFull::DropOldest).await.unwrap(), i);
    }
    spool
}

async fn wait_until_empty(spool: &SpoolHandle) {
    for _ in 0..10_000 {
        if spool.pending().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("spool never emptied");
}

#[tokio::test(start_paused = true)]
async fn retries_503_with_retry_after_then_ships_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake {
        script: Mutex::new(vec![StatusCode::SERVICE_UNAVAILABLE, StatusCode::SERVICE_UNAVAILABLE]),
        ..Lake::default()
    });
    let url = start_lake(Arc::clone(&lake)).await;
    let cfg = config(&url, dir.path());
    let stats = Arc::new(Stats::default());
    let spool = spool_with(&cfg, 5, &stats).await;

    let started = tokio::time::Instant::now();
    let cancel = CancellationToken::new();
    let shipper = Shipper::new(&cfg, spool.clone(), Arc::clone(&stats)).unwrap();
    let task = tokio::spawn(shipper.run(cancel.clone()));
    wait_until_empty(&spool).await;
    // Two Retry-After: 1 were honoured although backoff_max is 100ms.
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());

    // New records wake the shipper.
    spool.append("metrics".into(), metrics_body(6), OnFull::DropOldest).await.unwrap();
    wait_until_empty(&spool).await;
    cancel.cancel();
    task.await.unwrap().unwrap();

    let received = lake.received.lock().unwrap().clone();
    let statuses: Vec<u16> = received.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, vec![503, 503, 200, 200, 200, 200, 200, 200]);
    let seqs: Vec<u64> = received.iter().filter(|r| r.status == StatusCode::OK).map(|r| r.batch.seq).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "in seq order, no gap");
    assert!(received.iter().all(|r| r.table == "metrics" && r.batch.epoch == spool.epoch()));
    assert_eq!(received[0].batch.seq, 1, "the same record is retried");
    assert_eq!(received[1].batch.seq, 1);
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&stats.shipped_batches), 6);
    assert_eq!(get(&stats.ship_errors), 2);
    assert_eq!(get(&stats.spool_records), 0);

    // Acks survived: a reopened spool has nothing to send and continues the seqs.
    drop(spool);
    let reopened = spool_with(&cfg, 0, &Arc::new(Stats::default())).await;
    assert_eq!(reopened.peek().await.unwrap(), None);
    assert_eq!(reopened.append("metrics".into(), metrics_body(7), OnFull::DropOldest).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_400_moves_the_record_to_rejected_and_the_queue_continues() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake { reject_seqs: vec![2], ..Lake::default() });
    let url = start_lake(Arc::clone(&lake)).await;
    let cfg = config(&url, dir.path());
    let stats = Arc::new(Stats::default());
    let spool = spool_with(&cfg, 3, &stats).await;

    let cancel = CancellationToken::new();
    let task = tokio::spawn(Shipper::new(&cfg, spool.clone(), Arc::clone(&stats)).unwrap().run(cancel.clone()));
    wait_until_empty(&spool).await;
    cancel.cancel();
    task.await.unwrap().unwrap();

    let received = lake.received.lock().unwrap().clone();
    let seen: Vec<(u64, u16)> = received.iter().map(|r| (r.batch.seq, r.status.as_u16())).collect();
    assert_eq!(seen, vec![(1, 200), (2, 400), (3, 200)], "a 4xx is never retried");

    let stem = format!("{NODE}_{}_2", spool.epoch());
    let rejected = dir.path().join("rejected");
    let body = std::fs::read(rejected.join(format!("{stem}.arrow"))).unwrap();
    assert_eq!(body, metrics_body(2), "the record is kept as sent");
    let note = std::fs::read_to_string(rejected.join(format!("{stem}.txt"))).unwrap();
    assert!(note.contains("400") && note.contains("must be Float64"), "{note}");
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&stats.rejected_batches), 1);
    assert_eq!(get(&stats.shipped_batches), 2);
}

#[tokio::test(start_paused = true)]
async fn the_collector_samples_ships_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::default());
    let url = start_lake(Arc::clone(&lake)).await;
    let cfg = config(&url, dir.path());

    let cancel = CancellationToken::new();
    let run = tokio::spawn(lake_collector::run(cfg, cancel.clone()));
    for _ in 0..10_000 {
        if lake.received.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    run.await.unwrap().unwrap();
    let received = lake.received.lock().unwrap().clone();
    assert!(received.len() >= 3);
    let seqs: Vec<u64> = received.iter().map(|r| r.batch.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn custom_table_records_go_to_the_json_endpoint_as_ndjson_and_a_400_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake { reject_tables: vec!["bad".to_string()], ..Lake::default() });
    let url = start_lake(Arc::clone(&lake)).await;
    let cfg = config(&url, dir.path());
    let stats = Arc::new(Stats::default());
    let spool = spool_with(&cfg, 1, &stats).await;
    let app = "{\"user\":\"a\",\"ts\":\"2026-11-22T10:00:00Z\"}\n{\"user\":\"b\",\"ts\":\"2026-11-22T10:00:01Z\"}\n";
    spool.append("json/signups".into(), app.as_bytes().to_vec(), OnFull::Reject).await.unwrap();
    spool.append("json/bad".into(), b"{\"n\":\"x\"}\n".to_vec(), OnFull::Reject).await.unwrap();
    spool.append("metrics".into(), metrics_body(4), OnFull::DropOldest).await.unwrap();

    let cancel = CancellationToken::new();
    let task = tokio::spawn(Shipper::new(&cfg, spool.clone(), Arc::clone(&stats)).unwrap().run(cancel.clone()));
    wait_until_empty(&spool).await;
    cancel.cancel();
    task.await.unwrap().unwrap();

    let json = lake.json.lock().unwrap().clone();
    assert_eq!(json.len(), 1);
    assert_eq!((json[0].table.as_str(), json[0].batch.seq, json[0].body.as_str()), ("signups", 2, app));
    let arrow: Vec<u64> = lake.received.lock().unwrap().iter().map(|r| r.batch.seq).collect();
    assert_eq!(arrow, [1, 4], "Arrow records around them are unaffected");
    let stem = format!("{NODE}_{}_3", spool.epoch());
    let kept = std::fs::read(dir.path().join("rejected").join(format!("{stem}.ndjson"))).unwrap();
    assert_eq!(kept, b"{\"n\":\"x\"}\n");
    let note = std::fs::read_to_string(dir.path().join("rejected").join(format!("{stem}.txt"))).unwrap();
    assert!(note.contains("json/bad") && note.contains("int64 then string"), "{note}");
    assert_eq!(stats.rejected_batches.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_collector_runs_exec_and_json_file_sources_into_custom_tables() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::default());
    let url = start_lake(Arc::clone(&lake)).await;
    let log = dir.path().join("app.log");
    std::fs::write(&log, "{\"level\":\"info\",\"msg\":\"started\"}\n").unwrap();
    let toml = format!(
        "node = \"{NODE}\"\ndata_dir = {:?}\n[lake]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\
         [host]\nenabled = false\ninterval = \"1h\"\n[inventory]\nenabled = false\n\
         [shipper]\nbackoff_min = \"10ms\"\nbackoff_max = \"100ms\"\n\
         [[exec]]\nname = \"solar\"\ncommand = [\"printf\", '{{\"watts\":812}}\\n']\nformat = \"ndjson\"\ntable = \"solar\"\ninterval = \"1h\"\n\
         [[json_file]]\ntable = \"app\"\npaths = [{:?}]\npoll_interval = \"50ms\"\nbatch_wait = \"50ms\"\n",
        dir.path().join("data").display().to_string(),
        log.display().to_string()
    );
    let cfg = Config::from_toml(&toml, None).unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(lake_collector::run(cfg, cancel.clone()));
    for _ in 0..400 {
        let tables: Vec<String> = lake.json.lock().unwrap().iter().map(|j| j.table.clone()).collect();
        if tables.contains(&"solar".to_string()) && tables.contains(&"app".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    run.await.unwrap().unwrap();
    let json = lake.json.lock().unwrap().clone();
    let solar = json.iter().find(|j| j.table == "solar").expect("solar shipped");
    assert!(solar.body.starts_with("{\"ts\":\"") && solar.body.ends_with(",\"watts\":812}\n"), "{}", solar.body);
    let app = json.iter().find(|j| j.table == "app").expect("app shipped");
    assert!(app.body.contains("\"msg\":\"started\""), "{}", app.body);
}
