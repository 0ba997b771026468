//! Uptime probes: configured HTTP, TCP, TLS, ICMP and DNS checks, each on its own
//! interval, into `probes` (kinds `http`, `tcp`, `tls`, `icmp`, `dns`).
//!
//! Data in: `[[uptime.checks]]` from the config. Data out: one row per check run with
//! the configured `target`, `ok`, `latency_ms` (total response time for http, connect
//! time for tcp, handshake time for tls, average round trip for icmp, query time for
//! dns), `status` (http), `cert_days_left` (tls, and https checks) and `error`; `attrs`
//! carry the check's `name`, the address reached, the certificate's subject, issuer and
//! notAfter, icmp's sent/received/loss/rtt, dns's rcode and answers, and
//! `outside = "true"` for targets beyond the site's uplink (the lake's `site_offline`
//! rule reads those together). Every node running the same checks is
//! just every collector having the same `[[uptime.checks]]`: the `host` column is the
//! vantage point, so the lake tells "down everywhere" from "down from one node".
//!
//! `ok` follows Uptime Kuma and Gatus: http is up when the status is in `expect_status`
//! AND the keyword (if any) is in the body; tls is up when the handshake succeeds AND
//! the certificate has not expired; tcp is up when the connection is accepted.
//!
//! Stages: [`config`] (serde `UptimeFile` → typed [`UptimeConfig`]), [`http`] (reqwest,
//! one client per distinct option set), [`tcp`], [`tls`] (tokio-rustls and x509-parser,
//! which report days left even when the certificate is not trusted), [`icmp`] (an
//! unprivileged ICMP socket, else a raw one), [`dns`] (a minimal client of our own). Each check runs in
//! its own task, started staggered over its interval so checks do not fire together;
//! results go through a bounded channel to one emitter that batches whatever is ready
//! ([`SourceContext::emit_droppable`]: a probe result cannot be read again). A full
//! channel makes checks wait (nothing is lost; it only happens if the spool stalls).

mod config;
mod dns;
mod http;
mod icmp;
mod tcp;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lake_format::rows::now_micros;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub(crate) use config::UptimeFile;
pub use config::{
    CheckConfig, CheckKind, DnsCheck, ExpectJson, HttpCheck, IcmpCheck, PingSocket, RecordType, TlsCheck, UptimeConfig,
};

use super::probe::{self, ProbeRow};
use super::{SourceContext, SourceError};
use crate::stats::Stats;

const SOURCE: &str = "uptime";
/// Most rows put in one batch.
const MAX_BATCH: usize = 512;

/// What a prober hands back; the runner adds time, kind, target and name.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    pub(crate) latency: Option<Duration>,
    pub(crate) status: Option<u16>,
    pub(crate) cert: Option<tls::CertInfo>,
    pub(crate) error: Option<String>,
    pub(crate) attrs: Vec<(&'static str, String)>,
}

impl Outcome {
    fn failed(error: impl Into<String>) -> Outcome {
        Outcome { error: Some(error.into()), ..Outcome::default() }
    }
}

/// Shared, built once: HTTP clients per option set and the TLS trust roots.
#[derive(Debug, Clone)]
pub(crate) struct Probers {
    http: Arc<HashMap<(bool, bool), reqwest::Client>>,
    tls: tls::TlsProber,
}

impl Probers {
    fn new(checks: &[CheckConfig]) -> Result<Probers, String> {
        let mut clients = HashMap::new();
        for c in checks {
            if let CheckKind::Http(h) = &c.kind {
                let key = (h.verify_tls, h.follow_redirects);
                if let std::collections::hash_map::Entry::Vacant(e) = clients.entry(key) {
                    e.insert(http::client(h.verify_tls, h.follow_redirects)?);
                }
            }
        }
        Ok(Probers { http: Arc::new(clients), tls: tls::TlsProber::new() })
    }

    /// Runs one check; never takes (much) longer than its timeout.
    pub(crate) async fn probe(&self, check: &CheckConfig) -> Outcome {
        let work = async {
            match &check.kind {
                CheckKind::Http(h) => match self.http.get(&(h.verify_tls, h.follow_redirects)) {
                    Some(client) => http::probe(client, h, check.timeout).await,
                    None => Outcome::failed("no HTTP client for this check (a bug)"),
                },
                CheckKind::Tcp { host, port } => tcp::probe(host, *port, check.timeout).await,
                CheckKind::Tls(t) => self.tls.probe(t, check.timeout).await,
                CheckKind::Icmp(i) => icmp::probe(i, check.timeout).await,
                CheckKind::Dns(d) => dns::probe(d, check.timeout).await,
            }
        };
        // The probers bound their own steps; this is the backstop for the whole check.
        match tokio::time::timeout(check.timeout + Duration::from_millis(500), work).await {
            Ok(o) => o,
            Err(_) => Outcome::failed(format!("timeout after {}", lake_format::units::Dur(check.timeout))),
        }
    }
}

/// One line about a check for `lake-collector --check`.
pub fn describe(check: &CheckConfig) -> String {
    let what = match &check.kind {
        CheckKind::Http(h) => format!("{} {}", h.method, h.url),
        CheckKind::Tcp { host, port } => format!("{host}:{port}"),
        CheckKind::Tls(t) => format!("{}:{} ({})", t.host, t.port, t.server_name),
        CheckKind::Icmp(i) => {
            let socket = i.socket.map_or("dgram, else raw", PingSocket::name);
            format!("{} x{} (max_lost {}, {socket} socket)", i.host, i.count, i.max_lost)
        }
        CheckKind::Dns(d) => format!("{} {} @{}", check.target, d.record.name(), d.server),
    };
    let outside = if check.outside { ", outside" } else { "" };
    format!(
        "{} {} {what} every {}, timeout {}{outside}",
        check.name,
        check.kind.name(),
        lake_format::units::Dur(check.interval),
        lake_format::units::Dur(check.timeout)
    )
}

/// The row of one check run.
pub(crate) fn check_row(ts: i64, check: &CheckConfig, o: Outcome) -> ProbeRow {
    let mut row = ProbeRow::new(ts, check.kind.name(), &check.target, o.ok);
    row.latency_ms = o.latency.map(|d| d.as_secs_f64() * 1e3);
    row.status = o.status.map(i64::from);
    row.error = o.error;
    row.attr("name", check.name.as_str());
    if check.outside {
        row.attr("outside", "true");
    }
    if let Some(cert) = o.cert {
        row.cert_days_left = Some(cert.days_left);
        row.attr("cert_subject", cert.subject);
        row.attr("cert_issuer", cert.issuer);
        row.attr("cert_not_after", cert.not_after);
    }
    for (k, v) in o.attrs {
        row.attr(k, v);
    }
    row
}

/// The uptime prober.
#[derive(Debug)]
pub struct UptimeSource {
    config: UptimeConfig,
    ctx: SourceContext,
}

impl UptimeSource {
    /// A source that emits through `ctx`.
    pub fn new(config: UptimeConfig, ctx: SourceContext) -> Self {
        UptimeSource { config, ctx }
    }

    /// Runs every check on its interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let probers =
            Probers::new(&self.config.checks).map_err(|reason| SourceError::Start { source_name: SOURCE, reason })?;
        let n = self.config.checks.len();
        info!(checks = n, "uptime probes started");
        let (tx, mut rx) = mpsc::channel::<ProbeRow>(n.max(1) * 2);
        let mut tasks = JoinSet::new();
        for (i, check) in self.config.checks.iter().cloned().enumerate() {
            // Spread first runs over the interval so checks do not all fire at once.
            let offset = check.interval.mul_f64(i as f64 / n as f64);
            let (tx, probers, cancel) = (tx.clone(), probers.clone(), cancel.clone());
            let stats = self.ctx.source_stats(SOURCE);
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, check.interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    let ts = now_micros();
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => return,
                        o = probers.probe(&check) => o,
                    };
                    Stats::add(&stats.read, 1);
                    if tx.send(check_row(ts, &check, outcome)).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                got = rx.recv() => match got {
                    Some(row) => batch.push(row),
                    None => break,
                },
            }
            // Whatever else is ready goes in the same batch.
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(row) => batch.push(row),
                    Err(_) => break,
                }
            }
            self.emit(&batch).await?;
            batch.clear();
        }
        tasks.shutdown().await;
        Ok(())
    }

    async fn emit(&self, rows: &[ProbeRow]) -> Result<(), SourceError> {
        probe::emit(&self.ctx, SOURCE, rows).await?;
        for r in rows.iter().filter(|r| !r.ok) {
            // Down checks are data, not collector failures: debug-level only.
            debug!(check_target = %r.target, error = ?r.error, "uptime check failed");
        }
        Ok(())
    }
}
