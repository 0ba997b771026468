//! The OTLP decoder without the HTTP layer, for [`crate::fuzzing`]: not an API.

use axum::http::StatusCode;

use super::{prepare, Format, Signal};

/// Gunzips (when `gzip`), decodes and maps one OTLP body as `POST /v1/logs`,
/// `/v1/metrics` or `/v1/traces` would (`signal`: 0, 1 or 2), with the 20 MiB limit. `Ok` carries the items accepted and
/// rejected; `Err` the status and message of the refusal.
pub(crate) fn prepare_body(
    signal: u8,
    json: bool,
    gzip: bool,
    body: &[u8],
) -> Result<(u64, u64), (StatusCode, String)> {
    let signal = match signal {
        0 => Signal::Logs,
        1 => Signal::Metrics,
        _ => Signal::Traces,
    };
    let format = if json { Format::Json } else { Format::Protobuf };
    let sender = crate::http::policy::IngestPolicy::open().sender("fuzz".into());
    let mut reservation = crate::http::budget::MemoryBudget::new(usize::MAX).reservation();
    let (days, now) = (crate::http::bounds::Days::unlimited(), lake_format::rows::now_micros());
    prepare(signal, format, gzip, body, super::MAX_DECODED, &sender, days, now, &mut reservation)
        .map(|p| (p.accepted, p.rejected))
        .map_err(|e| (e.status, e.message))
}
