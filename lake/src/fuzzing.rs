//! Entry points of the fuzz targets (`fuzz/` at the repository root) and of the tests
//! that replay `fixtures/fuzz-regressions/`: not an API.
//!
//! Each function feeds arbitrary bytes through a decoder the way its endpoint does, and
//! panics only when an invariant breaks: bad input must be refused with a clear 4xx
//! error, never a panic, a 5xx or a batch outside the table's schema.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use lake_format::Table;

use crate::custom::{build, parse, EvolveError, Registry, TablesConfig};
use crate::http::bounds::{self, Window};
use crate::http::{ingest, loki, otlp};

/// A fixed "now" (2024-03-09T16:00:00Z), so a crash replays the same way on any day.
const NOW_MICROS: i64 = 1_710_000_000_000_000;

/// The smallest inflation limit a lake uses (`Ingest::max_decoded` with a small body limit).
const MAX_DECODED: usize = 64 << 20;

/// `POST /v1/ingest/{table}`: the first byte picks the table, the rest is the body (a
/// zstd Arrow IPC stream), decoded, conformed to the table and checked against the bounds.
pub fn wire(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let table = Table::ALL[usize::from(selector) % Table::ALL.len()];
    if let Ok(batches) = ingest::decode_bounded(table, body, MAX_DECODED) {
        let schema = table.schema();
        for b in &batches {
            assert_eq!(b.schema().fields(), schema.fields(), "a decoded batch has the table's schema");
        }
        let _ = bounds::check(&batches, Window::at(NOW_MICROS));
    }
}

fn otlp(json: bool, data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // Bit 2 (traces) was added after bits 0 and 1: older corpus entries keep their meaning
    // unless they happen to set it.
    let signal = if selector & 4 == 4 {
        2
    } else if selector & 1 == 1 {
        0
    } else {
        1
    };
    let gzip = selector & 2 == 2;
    if let Err((status, message)) = otlp::fuzzing::prepare_body(signal, json, gzip, body) {
        assert!(status.is_client_error(), "an OTLP body is refused with a 4xx, not {status}: {message}");
    }
}

/// `POST /v1/logs`, `/v1/metrics` and `/v1/traces` with `application/x-protobuf`: in the
/// first byte, bit 2 picks traces, else bit 0 logs (metrics without it); bit 1 gzip; the
/// rest is the body.
pub fn otlp_protobuf(data: &[u8]) {
    otlp(false, data)
}

/// [`otlp_protobuf`] with `application/json` (OTLP/JSON).
pub fn otlp_json(data: &[u8]) {
    otlp(true, data)
}

/// `POST /loki/api/v1/push`: the first byte picks what the rest is — 0: a protobuf
/// `PushRequest` (snappy-compressed here, as a shipper would), 1: the snappy block as
/// sent, 2: a JSON push, 3: a gzipped JSON push, 4: a stream's selector string.
pub fn loki_push(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (encoding, compress) = match selector % 5 {
        0 => (loki::Encoding::Protobuf, true),
        1 => (loki::Encoding::Protobuf, false),
        2 => (loki::Encoding::Json { gzip: false }, false),
        3 => (loki::Encoding::Json { gzip: true }, false),
        _ => {
            if let Ok(labels) = loki::push::parse_labels(&String::from_utf8_lossy(body)) {
                assert!(labels.iter().all(|(n, _)| loki::push::is_label_name(n)), "a parsed label has a bad name");
            }
            return;
        }
    };
    if let Err((status, message)) = loki::fuzzing::prepare_body(encoding, compress, body) {
        assert!(status.is_client_error(), "a Loki push is refused with a 4xx, not {status}: {message}");
    }
}

/// A lake config file; every `*_env` variable is set (each to its own value).
pub fn config(data: &[u8]) {
    let Ok(toml) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::Config::parse(toml, |name| Some(format!("fuzz-secret-{name}-0123456789abcdef")));
}

/// `POST /v1/ingest/{custom table}`: the body as NDJSON (or a JSON array) and as CSV,
/// each built into a batch of a new table (schema inference and evolution included).
pub fn custom(data: &[u8]) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    // The registry stores schemas: a fresh directory per input, in memory where possible.
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("lake-fuzz-custom-{}-{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed)));
    let registry = Registry::open(&dir, TablesConfig::default());
    let max_fields = registry.options("fuzz").max_columns + 8;
    for rows in [parse::json(data, max_fields), parse::csv(data, max_fields)] {
        let Ok(rows) = rows else { continue };
        match build::build(&registry, "fuzz", "fuzz-node", rows, NOW_MICROS) {
            Ok(built) => {
                assert_eq!(
                    built.batch.num_columns(),
                    built.schema.columns.len() + 2,
                    "ts, host and the table's columns"
                );
                // The ingest path logs the batch in the WAL as an IPC stream: a failure is a 500.
                lake_format::wire::encode(&built.batch.schema(), std::slice::from_ref(&built.batch))
                    .expect("a built batch encodes");
            }
            Err(EvolveError::Refused(_)) => {}
            Err(EvolveError::Store(e)) => panic!("storing a schema failed: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every entry point by the name of its fuzz target (and of its directory under
/// `fixtures/fuzz-regressions/`).
pub const TARGETS: &[lake_format::fuzz_regressions::Target] = &[
    ("wire", wire),
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("lake_config", config),
    ("custom_ingest", custom),
];
