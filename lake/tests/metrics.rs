//! The lake's own `/metrics`, against a real `lake serve`: every metric it exported when
//! the list was kept by hand keeps its name, help and type byte for byte (dashboards and
//! alert rules match them), each is exported once, and what each owner declares now
//! (the OTLP endpoints' counters) is there too.

mod common;

use common::*;

/// Every metric of the hand-kept list, one a line: name, type, help.
const BEFORE: &str = "\
lake_ingest_batches_total counter batches stored\n\
lake_ingest_rows_total counter rows stored\n\
lake_ingest_bytes_total counter ingest body bytes stored\n\
lake_ingest_duplicates_total counter batches acknowledged again without storing\n\
lake_ingest_unauthorized_total counter requests with a missing or wrong token\n\
lake_ingest_rejected_total counter malformed requests refused\n\
lake_ingest_overloaded_total counter requests answered 503\n\
lake_wal_appends_total counter records appended to the WAL\n\
lake_wal_fsyncs_total counter WAL fsyncs\n\
lake_wal_truncated_bytes_total counter bytes cut from torn WAL tails at start\n\
lake_wal_corrupt_bytes_total counter damaged WAL bytes skipped at start, the records after them salvaged\n\
lake_wal_errors_total counter WAL appends whose write or fsync failed\n\
lake_flushes_total counter flushes committed\n\
lake_flush_errors_total counter flushes failed (rows kept, retried)\n\
lake_rows_written_total counter rows written to Parquet\n\
lake_files_written_total counter Parquet files committed\n\
lake_wal_bytes gauge bytes in WAL segments\n\
lake_ingest_lenient_values_total counter values of lenient custom tables kept in _extra\n\
lake_ingest_case_collisions_total counter values of custom tables kept in _extra because their name differed only in case from a column's\n\
lake_compaction_passes_total counter compaction passes run\n\
lake_compaction_files_written_total counter merged files written by compaction\n\
lake_compaction_files_merged_total counter small files merged away\n\
lake_compaction_failures_total counter compaction bins that failed (their files kept)\n\
lake_archive_files_uploaded_total counter files uploaded to the archive and verified\n\
lake_archive_bytes_uploaded_total counter bytes uploaded to the archive and verified\n\
lake_archive_files_restored_total counter files restored from the archive\n\
lake_archive_failures_total counter archive, restore and retention jobs that failed\n\
lake_auth_reloads_total counter tokens file reloads installed\n\
lake_auth_reload_errors_total counter tokens file reloads refused as invalid (tokens in force kept)\n\
lake_engine_queries_total counter queries started (SQL API, Grafana, web UI, alert rules)\n\
lake_engine_timeouts_total counter queries interrupted at the time limit\n\
lake_engine_cancelled_total counter streamed queries interrupted because their client went away\n\
lake_engine_running gauge queries running now\n\
lake_engine_refused_total counter statements refused by the read check (403)\n\
lake_engine_probe_failures_total counter health probes (SELECT 1 after a query) that failed\n\
lake_engine_rebuilds_total counter query engine databases replaced after a failed health probe\n\
lake_heartbeat_pings_total counter heartbeat success pings the monitor accepted\n\
lake_heartbeat_fail_pings_total counter heartbeat failure pings the monitor accepted\n\
lake_heartbeat_errors_total counter heartbeat pings that failed (no answer, time-out, not 2xx)\n\
lake_heartbeat_skipped_total counter rounds whose heartbeat ping was skipped, the previous one still out\n\
lake_flush_failures_in_a_row gauge flushes failed since the last one that succeeded\n\
lake_ingest_decode_budget_refused_total counter ingest requests refused for the decode memory budget (503, or 413 when one needs more than all of it)\n\
lake_ingest_decode_memory_bytes gauge memory held by ingest requests receiving and decoding bodies\n\
lake_ingest_decode_memory_limit_bytes gauge ingest.decode_memory\n\
lake_http_connections_accepted_total counter connections accepted\n\
lake_http_connections_evicted_total counter idle connections closed to make room under http.max_connections\n\
lake_http_connections gauge open connections (at most http.max_connections)\n\
lake_buffered_rows gauge rows waiting for Parquet\n\
lake_buffered_bytes gauge memory of rows waiting for Parquet\n\
lake_buffered_held_bytes gauge memory of rows waiting for Parquet or being written to it (ingest answers 503 past 4 × ingest.flush_size)\n\
";

/// Declared since each owner declares its own: name, type, help.
const ADDED: &str = "\
lake_otlp_requests_total counter OTLP requests answered 200\n\
lake_otlp_log_records_total counter OTLP log records stored\n\
lake_otlp_data_points_total counter OTLP data points stored\n\
lake_otlp_spans_total counter OTLP spans stored\n\
lake_otlp_skipped_total counter OTLP log records, data points and spans skipped (reported in partial_success)\n\
lake_otlp_rejected_total counter OTLP requests refused as undecodable, unsupported or too large\n\
lake_remote_write_requests_total counter remote_write requests stored (answered 204)\n\
lake_remote_write_samples_total counter remote_write samples stored\n\
lake_remote_write_stale_markers_total counter remote_write stale markers dropped (Prometheus marks a series gone with them)\n\
lake_remote_write_unsupported_dropped_total counter remote_write exemplars and native histogram samples dropped (not stored)\n\
lake_remote_write_rejected_total counter remote_write requests refused with a 4xx other than 401\n\
lake_loki_requests_total counter Loki push requests stored (answered 204)\n\
lake_loki_lines_total counter Loki log lines stored\n\
lake_loki_rejected_total counter Loki push requests refused with a 4xx other than 401\n\
lake_hooks_stored_total counter webhook requests stored\n\
lake_hooks_duplicates_total counter webhook retries answered 200 without storing (event id seen before)\n\
lake_hooks_unauthorized_total counter webhook requests refused 401 (signature, password or URL secret)\n\
lake_hooks_rejected_total counter webhook requests refused with another 4xx (unknown hook, too large, not a JSON object)\n\
lake_jobs_events_total counter job events stored (start, success, fail)\n\
lake_jobs_duplicates_total counter job events acknowledged again without storing (a retried run_id)\n\
lake_jobs_rejected_total counter job events refused with a 4xx other than 401\n\
lake_jobs_late_total counter late runs found (due runs that did not come within their grace)\n\
lake_mcp_tool_calls_total counter MCP tool calls answered with a result\n\
lake_mcp_tool_errors_total counter MCP tool calls answered with isError (bad arguments, SQL errors, sandbox refusals, time limit)\n\
lake_mcp_rejected_total counter MCP requests refused (token, origin, session, malformed message) or answered with a JSON-RPC error\n\
lake_mcp_sessions_opened_total counter MCP sessions opened\n\
lake_mcp_sessions gauge MCP sessions open now\n\
lake_pg_connections_total counter PostgreSQL protocol connections accepted\n\
lake_pg_connections gauge PostgreSQL protocol sessions open now\n\
lake_pg_connections_refused_total counter PostgreSQL protocol connections refused over pg.max_connections (53300)\n\
lake_pg_queries_total counter PostgreSQL protocol statements answered (queries and catalog queries)\n\
lake_pg_errors_total counter PostgreSQL protocol statements answered with an error\n\
lake_pg_auth_failures_total counter PostgreSQL protocol logins refused for a wrong or missing read token (28P01)\n\
lake_pg_dropped_total counter PostgreSQL protocol sessions closed for the auth or idle timeout or an oversized message\n\
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_keeps_its_name_help_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1h"), port);
    let c = reqwest::Client::new();
    let (s, m) = post(&c, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/1"), encode(&metrics_batch(1, 10))).await;
    assert_eq!(s, 200, "{m}");
    let r = c.get(format!("{}/metrics", lake.url)).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4");
    let text = r.text().await.unwrap();
    let expected: Vec<Vec<&str>> = BEFORE.lines().chain(ADDED.lines()).map(|l| l.splitn(3, ' ').collect()).collect();
    for e in &expected {
        let (name, kind, help) = (e[0], e[1], e[2]);
        let block = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} ");
        assert!(text.contains(&block), "{name} changed or missing:\n{text}");
    }
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let values = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(values, names.len(), "one value a metric:\n{text}");
    // The alerter's counters, named at run time, come on top once it has run a round.
    let declared: Vec<&str> = names.iter().copied().filter(|n| !n.starts_with("lake_alerts_")).collect();
    assert_eq!(declared.len(), expected.len(), "{declared:?}");
    let unique: std::collections::HashSet<&str> = declared.iter().copied().collect();
    assert_eq!(unique.len(), declared.len(), "a metric exported twice: {declared:?}");
    // Values are live: the batch above, and a gauge read at scrape time.
    assert!(text.contains("\nlake_ingest_batches_total 1\n") && text.contains("\nlake_buffered_rows 10\n"), "{text}");
}
