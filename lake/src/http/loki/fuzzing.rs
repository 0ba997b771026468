//! The Loki push decoder without the HTTP layer, for [`crate::fuzzing`]: not an API.

use axum::http::StatusCode;

use super::{prepare, Encoding, MAX_BODY};

/// Decodes, maps and checks one push body as `POST /loki/api/v1/push` would, with the
/// 32 MiB limit; `snappy` says whether `body` still needs compressing (a protobuf message
/// from the fuzzer) or is already the block on the wire. `Ok` carries the lines stored;
/// `Err` the status and message of the refusal.
pub(crate) fn prepare_body(encoding: Encoding, compress: bool, body: &[u8]) -> Result<u64, (StatusCode, String)> {
    let compressed;
    let body = if compress {
        compressed =
            snap::raw::Encoder::new().compress_vec(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        &compressed[..]
    } else {
        body
    };
    let sender = crate::http::policy::IngestPolicy::open().sender("fuzz".into());
    let mut reservation = crate::http::budget::MemoryBudget::new(usize::MAX).reservation();
    let (days, now) = (crate::http::bounds::Days::unlimited(), lake_format::rows::now_micros());
    prepare(encoding, body, MAX_BODY, &sender, days, now, &mut reservation)
        .map(|(_, lines)| lines)
        .map_err(|e| (e.status(), e.message().to_string()))
}
