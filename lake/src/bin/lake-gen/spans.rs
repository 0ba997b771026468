//! Generated traces: the LLM chat app of the `librechat` hosts (role 0, as in
//! [`super::containers`]) exports OpenTelemetry spans as `POST /v1/traces` would store them.
//! Each request is a trace of three spans: the API's server span, a retrieval from the RAG
//! service and the model call (a client span with the `gen_ai.*` attributes); a few calls
//! fail with a rate limit and record the exception, so `slow_spans` and the README's trace
//! queries have something to show.

use lake_format::rows::TableBuilder;

use super::world::{diurnal_times, Rng, World};
use super::MICROS_PER_DAY;

/// Requests (traces) per day on a host that runs the chat app.
const TRACES_PER_DAY: f64 = 1_500.0;
/// Spans per trace.
const SPANS_PER_TRACE: f64 = 3.0;
/// Share of model calls refused with a rate limit.
const ERROR_CHANCE: f64 = 0.03;
const MODELS: [&str; 3] = ["gpt-4o-mini", "llama3.1:8b", "claude-3-5-haiku"];

/// Whether `host` runs the chat app (the `librechat` compose project).
fn runs_app(host: usize) -> bool {
    host.is_multiple_of(super::containers::PROJECTS.len())
}

/// Rows a host writes over a day.
pub(super) fn rows_per_day(host: usize) -> f64 {
    if runs_app(host) {
        TRACES_PER_DAY * SPANS_PER_TRACE
    } else {
        0.0
    }
}

struct Row {
    ts: i64,
    trace: String,
    span: String,
    parent: Option<String>,
    name: String,
    kind: &'static str,
    service: &'static str,
    duration_us: i64,
    error: bool,
    attrs: Vec<(&'static str, String)>,
    events: Vec<String>,
}

fn id(rng: &mut Rng, bytes: usize) -> String {
    (0..bytes / 8).map(|_| format!("{:016x}", rng.u64() | 1)).collect()
}

/// Appends `host`'s spans of `[from, to)` to `b`, in time order.
pub(super) fn generate(world: &World, host: usize, from: i64, to: i64, b: &mut TableBuilder) {
    if !runs_app(host) {
        return;
    }
    let day = from.div_euclid(MICROS_PER_DAY);
    let mut rng = Rng::new(&[world.seed, 0x5BA4, host as u64, day as u64]);
    let n = (TRACES_PER_DAY * (to - from) as f64 / MICROS_PER_DAY as f64).round() as usize;
    let mut rows = Vec::with_capacity(n * 3);
    for start in diurnal_times(&mut rng, from, to, n) {
        let trace = id(&mut rng, 16);
        let root = id(&mut rng, 8);
        let retrieve_us = rng.lognormal(40_000.0, 0.5) as i64;
        let model = MODELS[rng.below(MODELS.len() as u64) as usize];
        let error = rng.chance(ERROR_CHANCE);
        let chat_us = if error { rng.lognormal(300_000.0, 0.3) } else { rng.lognormal(1_800_000.0, 0.6) } as i64;
        let (input, output) = (200 + rng.below(3_000), if error { 0 } else { 50 + rng.below(800) });
        let mut chat_attrs = vec![
            ("gen_ai.operation.name", "chat".to_string()),
            ("gen_ai.request.model", model.to_string()),
            ("gen_ai.usage.input_tokens", input.to_string()),
        ];
        let mut events = Vec::new();
        if error {
            chat_attrs.push(("error.type", "RateLimitError".to_string()));
            events.push(
                serde_json::json!({
                    "time": event_time(start + retrieve_us + chat_us),
                    "name": "exception",
                    "attrs": {"exception.type": "RateLimitError", "exception.message": "429 Too Many Requests"},
                })
                .to_string(),
            );
        } else {
            chat_attrs.push(("gen_ai.usage.output_tokens", output.to_string()));
        }
        let total_us = retrieve_us + chat_us + rng.below(5_000) as i64 + 1_000;
        rows.push(Row {
            ts: start,
            trace: trace.clone(),
            span: root.clone(),
            parent: None,
            name: "POST /api/ask".into(),
            kind: "server",
            service: "librechat-api",
            duration_us: total_us,
            error,
            attrs: vec![("http.request.method", "POST".into()), ("http.route", "/api/ask".into())],
            events: Vec::new(),
        });
        rows.push(Row {
            ts: start + 200,
            trace: trace.clone(),
            span: id(&mut rng, 8),
            parent: Some(root.clone()),
            name: "retrieve".into(),
            kind: "internal",
            service: "rag-api",
            duration_us: retrieve_us,
            error: false,
            attrs: vec![("db.system", "pgvector".into())],
            events: Vec::new(),
        });
        rows.push(Row {
            ts: start + 300 + retrieve_us,
            trace,
            span: id(&mut rng, 8),
            parent: Some(root),
            name: format!("chat {model}"),
            kind: "client",
            service: "librechat-api",
            duration_us: chat_us,
            error,
            attrs: chat_attrs,
            events,
        });
    }
    // Child spans start after their root: sorted, as a committed file is.
    rows.sort_by_key(|r| r.ts);
    let col = |n: &str| b.column(n).unwrap_or_else(|| panic!("spans has no column {n}"));
    let (ts, hc, trace_id, span_id, parent, name, kind) =
        (col("ts"), col("host"), col("trace_id"), col("span_id"), col("parent_span_id"), col("name"), col("kind"));
    let (duration, status, message, service, scope, attrs, resource, events) = (
        col("duration_ns"),
        col("status_code"),
        col("status_message"),
        col("service"),
        col("scope_name"),
        col("attrs"),
        col("resource_attrs"),
        col("events"),
    );
    let host_name = &world.hosts[host].name;
    for r in rows.into_iter().filter(|r| r.ts < to) {
        b.ts(ts, r.ts);
        b.text(hc, Some(host_name));
        b.text(trace_id, Some(&r.trace));
        b.text(span_id, Some(&r.span));
        b.text(parent, r.parent.as_deref());
        b.text(name, Some(&r.name));
        b.text(kind, Some(r.kind));
        b.int(duration, Some(r.duration_us * 1_000));
        b.text(status, Some(if r.error { "error" } else { "unset" }));
        b.text(message, r.error.then_some("rate limited"));
        b.text(service, Some(r.service));
        b.text(scope, Some("opentelemetry.instrumentation.openai"));
        b.map(attrs, r.attrs.iter().map(|(k, v)| (*k, v.as_str())).chain([("lake.node", host_name.as_str())]));
        b.map(
            resource,
            [("service.name", r.service), ("host.name", host_name.as_str()), ("telemetry.sdk.language", "python")],
        );
        b.list(events, r.events.iter().map(String::as_str));
        b.end_row();
    }
}

/// An event time as the lake writes it (RFC 3339 UTC with µs).
fn event_time(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()).unwrap_or_default()
}
