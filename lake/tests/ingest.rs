//! The ingest endpoint of a real `lake serve` process: auth, malformed input, schema
//! checks, idempotency, and rows queryable right after their acknowledgement.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use common::*;
use lake_format::{wire, Table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_each_problem_clearly_and_stores_each_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1h");
    let lake = Lake::start(&config, port);
    let url = lake.url.clone();
    let c = reqwest::Client::new();
    let good = encode(&metrics_batch(1, 10));

    let (s, body) = post(&c, &url, "metrics", "wrong-token-xxxxxxxxxxxx", "node-a/1/1", good.clone()).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("token"), "{body}");

    let (s, body) = post(&c, &url, "metrics", TOKEN, "node-a/1/1", b"this is not arrow".to_vec()).await;
    assert_eq!(s, 400);
    assert!(body.contains("not an Arrow IPC stream"), "{body}");

    // A logs-shaped column sent to metrics: the message names the column.
    let bad = RecordBatch::try_from_iter(vec![
        ("ts", metrics_batch(1, 2).column(0).clone()),
        ("host", Arc::new(StringArray::from(vec![NODE, NODE])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ("value", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
    ])
    .unwrap();
    let body_bad = wire::encode(&bad.schema(), &[bad]).unwrap();
    let (s, body) = post(&c, &url, "metrics", TOKEN, "node-a/1/1", body_bad).await;
    assert_eq!(s, 400);
    assert!(body.contains(r#"column \"value\""#) && body.contains("Float64"), "{body}");

    let (s, body) = post(&c, &url, "nope", TOKEN, "node-a/1/1", good.clone()).await;
    assert_eq!(s, 404);
    assert!(body.contains("unknown table"), "{body}");

    let (s, body) = post(&c, &url, "metrics", TOKEN, "node-b/1/1", good.clone()).await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = post(&c, &url, "metrics", TOKEN, "../../etc/1/1", good.clone()).await;
    assert_eq!(s, 400, "{body}");
    let (s, _) = post(&c, &url, "metrics", TOKEN, "node-a/1/x", good.clone()).await;
    assert_eq!(s, 400);

    // The same batch three times: acknowledged each time, stored once.
    for _ in 0..3 {
        let (s, body) = post(&c, &url, "metrics", TOKEN, "node-a/1/1", good.clone()).await;
        assert_eq!(s, 200, "{body}");
    }
    let (s, _) = post(&c, &url, "metrics", TOKEN, "node-a/1/2", encode(&metrics_batch(2, 5))).await;
    assert_eq!(s, 200);
    // Not flushed yet (flush_interval = 1h): served from the buffer.
    assert_eq!(count(&c, &url, "select count(*) from metrics").await, 15);
    assert_eq!(count(&c, &url, "select count(*) from logs").await, 0);
    assert_eq!(count(&c, &url, "select count(*) from metrics where labels['batch'] = '2'").await, 5);
    // Every catalog table is queryable while empty.
    for t in Table::ALL {
        count(&c, &url, &format!("select count(*) from {t}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_flushes_and_restart_keeps_ids() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1h");
    let mut lake = Lake::start(&config, port);
    let c = reqwest::Client::new();
    for seq in 1..=3 {
        let (s, _) =
            post(&c, &lake.url, "metrics", TOKEN, &format!("node-a/7/{seq}"), encode(&metrics_batch(seq, 100))).await;
        assert_eq!(s, 200);
    }
    lake.term();
    let files = std::fs::read_dir(dir.path().join("data/tables/metrics")).unwrap().count();
    assert_eq!(files, 1, "SIGTERM flushes the buffer to one partition");
    let lake = Lake::start(&config, port);
    // Re-sent after the restart: recognised from the committed state.
    let (s, body) = post(&c, &lake.url, "metrics", TOKEN, "node-a/7/3", encode(&metrics_batch(3, 100))).await;
    assert_eq!(s, 200);
    assert!(body.contains("duplicate"), "{body}");
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 300);
}
