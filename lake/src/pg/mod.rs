//! `[pg]`: the lake over the PostgreSQL frontend/backend protocol, so psql, Grafana's
//! built-in PostgreSQL data source (backend: alerting and Explore) and drivers such as
//! psycopg read the lake with no plugin.
//!
//! Off unless `[pg] listen` is set. Every statement runs through the same
//! [`Engine`] as `POST /v1/sql`: the same read-only sandbox, row limit, time limit and
//! fresh (not yet flushed) rows; nothing here parses or rewrites user SQL beyond
//! recognising the catalog queries clients send about the schema ([`catalog`]).
//!
//! - **Authentication**: cleartext password, the password being a read token (the user
//!   name is free), checked by the same [`Verifier`] as `/v1/sql`, so tokens added to the
//!   tokens file work without a restart. While no read token exists reads are open, as on
//!   HTTP, and no password is asked. A wrong or missing password is `28P01`.
//! - **TLS**: with `tls_cert`/`tls_key` (PEM) an `SSLRequest` is answered `S` and the
//!   connection continues under rustls (`sslmode=require`); without them it is answered `N`.
//! - **Queries**: the simple and the extended protocol (Parse/Bind/Describe/Execute/Sync);
//!   `$1` parameters are bound as the engine's parameters, never spliced into the SQL
//!   ([`handler`]). Results in text or binary per the client's request ([`encode`]).
//! - **Limits** ([`conn`]): at most `max_connections` sessions (beyond: `53300`), a startup
//!   and authentication deadline, an idle timeout, a maximum message size (`54000`); each
//!   session is its own task, so a slow or broken client holds only itself.
//! - **Cancel**: a CancelRequest with a session's process id and secret key (psql's
//!   Ctrl-C) interrupts that session's running statement (`57014`); the session goes on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use lake_format::units::{ByteSize, Dur};
use lake_query::engine::Engine;

pub mod catalog;
mod conn;
mod encode;
mod handler;

/// `[pg]` as written in lake.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgFile {
    /// Address to listen on, e.g. "127.0.0.1:5433" (required in the section).
    listen: String,
    /// PEM certificate chain; with `tls_key`, clients may (and with sslmode=require must)
    /// use TLS. Default: none, an SSLRequest is answered "N".
    tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    tls_key: Option<PathBuf>,
    /// Sessions at once; more are refused with 53300. Default 64.
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// From connect to logged in, e.g. "10s" (the default).
    #[serde(default = "default_auth_timeout")]
    auth_timeout: Dur,
    /// A session silent this long, or not reading its answer, is closed. Default "10m".
    #[serde(default = "default_idle_timeout")]
    idle_timeout: Dur,
    /// Largest frontend message (a statement and its parameters). Default "2MiB".
    #[serde(default = "default_max_message")]
    max_message: ByteSize,
}

const fn default_max_connections() -> usize {
    64
}
const fn default_auth_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
const fn default_max_message() -> ByteSize {
    // The same bound as a /v1/sql body: a statement, not a data upload.
    ByteSize(2 << 20)
}

/// `[pg]`, validated.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Where the PostgreSQL protocol is served.
    pub listen: SocketAddr,
    /// Certificate and key (PEM) for TLS, when configured.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Sessions open at once at most; more are refused with `53300`.
    pub max_connections: usize,
    /// Time from connect to authenticated.
    pub auth_timeout: Duration,
    /// Time a session may wait for its next message, and a statement's answer may take
    /// to be read by its client.
    pub idle_timeout: Duration,
    /// Largest frontend message accepted (a statement with its parameters).
    pub max_message: usize,
}

impl PgConfig {
    /// `[pg]` with only `listen` set: the defaults of every limit, no TLS (`lake demo`).
    pub fn listening(listen: SocketAddr) -> PgConfig {
        PgConfig {
            listen,
            tls: None,
            max_connections: default_max_connections(),
            auth_timeout: default_auth_timeout().0,
            idle_timeout: default_idle_timeout().0,
            max_message: usize::try_from(default_max_message().0).unwrap_or(usize::MAX),
        }
    }
}

impl PgFile {
    /// Checks the section: the address parses, the TLS pair is whole, limits are positive.
    pub fn validate(self) -> anyhow::Result<PgConfig> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            anyhow::anyhow!("pg.listen = {:?} is not an IP address and port: e.g. \"127.0.0.1:5433\"", self.listen)
        })?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("pg: give both tls_cert and tls_key (PEM files) for TLS, or neither"),
        };
        if self.max_connections == 0 {
            anyhow::bail!("pg.max_connections must be at least 1");
        }
        for (key, d) in [("pg.auth_timeout", self.auth_timeout.0), ("pg.idle_timeout", self.idle_timeout.0)] {
            if d.is_zero() {
                anyhow::bail!("{key} must be longer than 0s");
            }
        }
        if self.max_message.0 < 1024 {
            anyhow::bail!("pg.max_message must be at least 1KiB (a statement has to fit)");
        }
        Ok(PgConfig {
            listen,
            tls,
            max_connections: self.max_connections,
            auth_timeout: self.auth_timeout.0,
            idle_timeout: self.idle_timeout.0,
            max_message: usize::try_from(self.max_message.0).unwrap_or(usize::MAX),
        })
    }
}

lake_format::metrics! {
    /// Counters of the PostgreSQL protocol, on `/metrics` (each doc line is its help there).
    pub struct PgStats {
        /// PostgreSQL protocol connections accepted
        pub connections: Counter("lake_pg_connections_total"),
        /// PostgreSQL protocol sessions open now
        pub open: Gauge("lake_pg_connections"),
        /// PostgreSQL protocol connections refused over pg.max_connections (53300)
        pub refused: Counter("lake_pg_connections_refused_total"),
        /// PostgreSQL protocol statements answered (queries and catalog queries)
        pub queries: Counter("lake_pg_queries_total"),
        /// PostgreSQL protocol statements answered with an error
        pub errors: Counter("lake_pg_errors_total"),
        /// PostgreSQL protocol logins refused for a wrong or missing read token (28P01)
        pub auth_failures: Counter("lake_pg_auth_failures_total"),
        /// PostgreSQL protocol sessions closed for the auth or idle timeout or an oversized message
        pub dropped: Counter("lake_pg_dropped_total"),
    }
}

/// What every session shares.
pub(crate) struct Shared {
    pub(crate) engine: Arc<Engine>,
    pub(crate) auth: Arc<Verifier>,
    pub(crate) stats: Arc<PgStats>,
    pub(crate) config: PgConfig,
    pub(crate) data_dir: PathBuf,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Sessions holding a slot.
    open: AtomicUsize,
    /// Connections being told they are over the cap (bounded too, so a flood costs nothing).
    refusing: AtomicUsize,
    /// Each logged-in session's process id → its secret key and the signal that cancels
    /// its running statement (a CancelRequest, psql's Ctrl-C).
    pub(crate) cancels: std::sync::Mutex<std::collections::HashMap<i32, (i32, Arc<tokio::sync::Notify>)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// A session's place under `max_connections`, given back on drop.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.stats.open.set(self.0.open.load(Ordering::SeqCst) as u64);
    }
}

/// A refused connection's place while it is told so.
struct Refusing(Arc<Shared>);

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The bound listener and everything its sessions need; [`Server::run`] serves it.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `config.listen` and loads the TLS pair, so a bad `[pg]` stops the start.
    pub async fn bind(
        config: PgConfig,
        engine: Arc<Engine>,
        auth: Arc<Verifier>,
        stats: Arc<PgStats>,
        data_dir: PathBuf,
    ) -> anyhow::Result<Server> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("pg.listen = {}: cannot listen there", config.listen))?;
        let shared = Arc::new(Shared {
            engine,
            auth,
            stats,
            config,
            data_dir,
            tls,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            cancels: Default::default(),
        });
        Ok(Server { listener, shared })
    }

    /// The bound address (the port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts sessions until `cancel`; sessions in progress end with the process.
    pub async fn run(self, cancel: CancellationToken) {
        let Server { listener, shared } = self;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = shared.tls.is_some(), "PostgreSQL protocol serving");
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(%e, "pg: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            shared.stats.connections.add(1);
            let max = shared.config.max_connections;
            if shared.open.fetch_add(1, Ordering::SeqCst) < max {
                shared.stats.open.set(shared.open.load(Ordering::SeqCst) as u64);
                let slot = Slot(Arc::clone(&shared));
                let session = cancel.child_token();
                tokio::spawn(async move {
                    conn::serve(stream, peer, Arc::clone(&slot.0), false, session).await;
                    drop(slot);
                });
                continue;
            }
            shared.open.fetch_sub(1, Ordering::SeqCst);
            shared.stats.refused.add(1);
            tracing::warn!(%peer, max_connections = max, "pg: connection refused, pg.max_connections reached");
            // Told why (53300) when few are waiting for that; beyond, just closed.
            if shared.refusing.fetch_add(1, Ordering::SeqCst) < max {
                let refusing = Refusing(Arc::clone(&shared));
                let session = cancel.child_token();
                tokio::spawn(async move {
                    conn::serve(stream, peer, Arc::clone(&refusing.0), true, session).await;
                    drop(refusing);
                });
            } else {
                shared.refusing.fetch_sub(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    }
}

/// rustls (ring, the workspace's provider) over the PEM pair; `lake check-config` loads
/// it too, so a bad pair is found before the start.
pub(crate) fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("pg.tls_cert = {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("pg.tls_cert = {}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("pg.tls_cert = {}: no certificate in the file", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("pg.tls_key = {}: not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("pg.tls_cert and pg.tls_key do not make a usable TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests;
