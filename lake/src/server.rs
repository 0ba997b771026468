//! `lake serve`: recovery, WAL replay ([`crate::ingest::replay`]), the flusher
//! ([`crate::ingest::flusher`]) and the HTTP server, with ordered shutdown (stop
//! accepting, finish requests, final flush, stop the WAL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use lake_format::{layout, Table};
use lake_query::engine::{Engine, FreshRows};

use crate::config::{Config, HttpTimeouts};
use crate::http::{self, ingest::Ingest, Status};
use crate::ingest::flusher::Flusher;
use crate::ingest::replay::replay;
use crate::ingest::state::Batches;
use crate::ingest::wal::Wal;
use crate::ingest::writer::{self, Buffers, WriterStats};

impl FreshRows for Buffers {
    fn snapshot(&self, table: Table) -> Vec<arrow_array::RecordBatch> {
        Buffers::snapshot(self, table)
    }

    fn consistent(&self, f: &mut dyn FnMut()) {
        Buffers::consistent(self, f)
    }

    fn is_retired(&self, path: &std::path::Path) -> bool {
        Buffers::is_retired(self, path)
    }

    fn generation(&self) -> Option<u64> {
        Some(Buffers::generation(self))
    }

    fn snapshot_custom(&self, name: &str, schema: &arrow_schema::SchemaRef) -> Vec<arrow_array::RecordBatch> {
        let rows = Buffers::snapshot(self, lake_format::custom::TableRef::Custom(name.into()));
        // Batches built before the table gained columns get them as NULL.
        rows.iter()
            .filter_map(|b| {
                crate::custom::conform_to(schema, b)
                    .map_err(|e| tracing::error!(table = name, %e, "fresh rows do not fit their table's schema; left out of this query"))
                    .ok()
            })
            .collect()
    }
}

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the lake until `cancel` fires.
pub async fn run(config: Config, listener: TcpListener, cancel: CancellationToken) -> anyhow::Result<()> {
    let data = config.data_dir.clone();
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // Tokens: lake.toml's and the tokens file's (an invalid file stops the start here),
    // kept in step with the file while the lake runs.
    let reloader = crate::auth::Reloader::start(config.keys.clone(), &config.tokens_file)?;
    let auth = reloader.verifier();
    let auth_stats = reloader.stats();
    {
        let set = auth.current();
        let with_keys = set.nodes();
        for n in config.nodes.iter().filter(|n| !with_keys.contains(&n.as_str())) {
            tracing::warn!(node = %n, "no ingest token for this [[nodes]] entry: add one with `lake token add --role ingest --node {n}`");
        }
    }
    let reload_task = tokio::spawn(reloader.run(cancel.child_token()));
    // The data directory's owner lock: `lake archive`/`lake restore` see it and ask this
    // lake's admin API instead of touching its files. Released when `run` returns.
    let _data_lock = crate::lock::DataLock::acquire(&data)?;
    std::fs::create_dir_all(data.join(layout::TABLES_DIR)).with_context(|| format!("creating {}", data.display()))?;
    let d = data.clone();
    let state = tokio::task::spawn_blocking(move || writer::recover(&d)).await??;
    let (wal, found) = Wal::open(&data.join(layout::WAL_DIR))?;
    let buffers = Arc::new(Buffers::default());
    let batches = Arc::new(Batches::new(state.clone()));
    // Custom tables stored before column names were unique ignoring case: fixed before the
    // registry reads their schemas and the WAL is replayed into them.
    let d = data.clone();
    tokio::task::spawn_blocking(move || crate::custom::repair::run(&d)).await??;
    let registry = Arc::new(crate::custom::Registry::open(&data, config.custom.clone()));
    let (replayed, skipped) = replay(found.records, &state, &buffers, &batches, &registry);
    tracing::info!(
        replayed,
        skipped,
        truncated_bytes = found.truncated_bytes,
        salvaged = found.salvaged.len(),
        "wal replayed"
    );

    let engine = Arc::new(Engine::open(&data, Arc::clone(&buffers) as Arc<dyn FreshRows>, config.limits.clone())?);
    // Archive, retention and restore: the admin API and the nightly schedule. Their commits
    // go through a swapper sharing the buffers' visibility lock and retired set; retired
    // files outlive the longest query (twice the query time limit).
    let swapper = Arc::new(crate::maintenance::swap::Swapper::with_buffers(
        &data,
        config.limits.timeout * 2,
        Arc::clone(&buffers),
    )?);
    let jobs = Arc::new(tokio::sync::Mutex::new(()));
    let compactor = Arc::new(crate::maintenance::compact::Compactor::new(
        &data,
        Arc::clone(&swapper),
        Arc::clone(&buffers),
        config.compaction.clone(),
        Arc::clone(&jobs),
    ));
    let compact_task = tokio::spawn(Arc::clone(&compactor).run(cancel.child_token()));
    let maintenance = Arc::new(
        crate::maintenance::archive::Maintenance::new(
            &data,
            config.archive.clone(),
            config.retention.clone(),
            Arc::clone(&swapper),
            Arc::clone(&buffers),
        )?
        .with_compaction(config.compaction.clone())
        .sharing_jobs(jobs),
    );
    // An unreachable archive must not keep the lake from taking data: say so, and let the
    // nightly run retry.
    let archive_config = config.archive.clone();
    tokio::spawn(async move {
        if let Err(e) = probe_archive(&archive_config).await {
            tracing::error!("{e:#} (archiving will be retried at its next run)");
        }
    });
    let gate = Arc::new(RwLock::new(()));
    let writer_stats = Arc::new(WriterStats::default());
    // What `/health` checks and the heartbeat reports: engine, WAL, flusher, alert loop.
    let health = Arc::new(crate::health::Health::new(
        wal.shared_stats(),
        Arc::clone(&writer_stats),
        Arc::clone(&buffers),
        config.flush_interval,
        Arc::clone(&engine),
    ));
    let heartbeat =
        config.heartbeat.clone().map(|h| crate::heartbeat::Heartbeat::new(h, Arc::clone(&health))).transpose()?;
    let ingest = Arc::new(Ingest {
        wal: wal.clone(),
        buffers: Arc::clone(&buffers),
        batches: Arc::clone(&batches),
        gate: Arc::clone(&gate),
        auth: Arc::clone(&auth),
        max_body: config.max_body,
        max_buffered: config.flush_size.saturating_mul(4),
        custom: Arc::clone(&registry),
        policy: http::policy::IngestPolicy::of(&config),
        budget: http::budget::MemoryBudget::new(config.decode_memory),
        stats: Default::default(),
        remote_write: Default::default(),
        loki: Default::default(),
        jobs: Default::default(),
    });
    // `[[jobs]]`: reports, late runs, and the nightly archive recording itself as a job.
    let jobs = Arc::new(crate::jobs::Jobs::new(Arc::clone(&config.jobs), Arc::clone(&ingest), Arc::clone(&engine)));
    let watch_task =
        tokio::spawn(crate::jobs::watch::run(Arc::clone(&jobs), lake_format::rows::now_micros(), cancel.child_token()));
    let archive_task = tokio::spawn(crate::maintenance::archive::run_schedule(
        Arc::clone(&maintenance),
        Arc::default(),
        Some(Arc::clone(&jobs)),
        cancel.child_token(),
    ));
    let connections = http::conns::Connections::new(config.max_connections);
    // `[[webhooks]]`: after WAL replay (their batch ids' epoch is above every one used);
    // each hook's stored event ids are read now.
    let hook_stats = Arc::new(http::hooks::HookStats::default());
    let hooks = Arc::new(
        http::hooks::Hooks::new(Arc::clone(&ingest), config.webhooks.clone(), &data, Arc::clone(&hook_stats))
            .context("reading the webhooks' event ids")?,
    );
    // `[pg]`: bound now, so a taken port or a bad certificate stops the start.
    let pg_stats = Arc::new(crate::pg::PgStats::default());
    let pg = match config.pg.clone() {
        Some(c) => Some(
            crate::pg::Server::bind(c, Arc::clone(&engine), Arc::clone(&auth), Arc::clone(&pg_stats), data.clone())
                .await?,
        ),
        None => None,
    };
    let status = Arc::new(Status {
        ingest: Arc::clone(&ingest),
        writer: Arc::clone(&writer_stats),
        buffers: Arc::clone(&buffers),
        started: Instant::now(),
        compaction: Arc::clone(&compactor),
        archive: Arc::clone(&maintenance),
        alerts: std::sync::OnceLock::new(),
        auth: auth_stats,
        engine: Arc::clone(&engine),
        health: Arc::clone(&health),
        connections: Arc::clone(&connections),
        otlp: Arc::default(),
        mcp: Arc::default(),
        pg: pg_stats,
        hooks: Arc::clone(&hook_stats),
    });
    // Alert rules, notifications and `alerts` rows; awaited before the last flush.
    let alerts = crate::alerts::Alerts::spawn(
        Arc::clone(&config.alerts),
        &data,
        Arc::clone(&engine),
        Arc::clone(&ingest),
        Arc::new(lake_query::alerts::SystemClock),
        crate::alerts::Watch { health, heartbeat },
        cancel.child_token(),
    )?;
    let _ = status.alerts.set(alerts.snapshots());
    let app = http::router(http::Surface {
        ingest,
        status,
        engine,
        auth: Arc::clone(&auth),
        queries: config.queries.clone(),
        alerts: alerts.routes(Arc::clone(&auth)),
        maintenance: Arc::clone(&maintenance),
        cancel: cancel.child_token(),
        request_timeout: config.http.request,
        mcp: config.mcp.clone(),
        hooks,
        jobs,
    });

    let flusher = Flusher {
        data: data.clone(),
        wal,
        buffers,
        batches,
        gate,
        stats: writer_stats,
        next_flush: state.next_flush,
        interval: config.flush_interval,
        size: config.flush_size,
        failures: 0,
        retry_at: None,
    };
    let flush_cancel = CancellationToken::new();
    let flush_task = tokio::spawn(flusher.run(flush_cancel.clone()));

    tracing::info!(addr = %listener.local_addr()?, data = %data.display(), "lake serving");
    if let Some(pg) = pg {
        tokio::spawn(pg.run(cancel.child_token()));
    }
    // Trailing slashes are trimmed before routing: Grafana calls `<datasource url>/`, i.e.
    // `/grafana/`, for its health check.
    let app = tower::Layer::layer(&tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash(), app);
    serve_http(listener, app, config.http, connections, cancel.clone()).await;
    // Alerting saves its state and appends its last rows, which the last flush then takes.
    alerts.stopped().await;
    // Requests are done: the last flush sees every acknowledged row.
    flush_cancel.cancel();
    flush_task.await?;
    // A merge in progress finishes (its output is committed or discarded whole).
    if tokio::time::timeout(SHUTDOWN_GRACE, compact_task).await.is_err() {
        tracing::warn!(
            "compaction still running after the shutdown grace period; its staging is discarded at the next start"
        );
    }
    // An archive job stops at its next file boundary; the next run resumes it.
    if tokio::time::timeout(SHUTDOWN_GRACE, archive_task).await.is_err() {
        tracing::warn!("archive job still running after the shutdown grace period; stopping anyway");
    }
    let _ = reload_task.await;
    let _ = watch_task.await;
    tracing::info!("lake stopped");
    Ok(())
}

/// Serves HTTP/1 on `listener` until `cancel`, then gives requests in flight
/// [`SHUTDOWN_GRACE`] to finish.
///
/// hyper directly rather than `axum::serve`, which sets no timer: without one hyper's
/// header-read timeout never fires, and a client sending its headers a byte a second holds
/// a connection (and a task) for ever. Here a request's headers must arrive within
/// `http.header_timeout` (idle keep-alive connections close after it too) and its body
/// within `http.body_timeout`; what a handler leaves unread is drained before its answer
/// goes out ([`http::body`]); `http.request_timeout` bounds the answer ([`http::router`]).
/// At most `http.max_connections` connections are open: past it the oldest idle one is
/// closed for a new one ([`http::conns`]). Every 401 and 403 is logged with the peer's
/// address ([`http::refused`]).
async fn serve_http<S>(
    listener: TcpListener,
    app: S,
    timeouts: HttpTimeouts,
    conns: Arc<http::conns::Connections>,
    cancel: CancellationToken,
) where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeouts.header);
    // Connections finish their request and close once `shutdown` fires.
    let shutdown = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A slot under the cap: at once, by closing the oldest idle connection, or (every
        // connection busy) once one is free; new connections wait in the backlog meanwhile.
        let Some(slot) = conns.admit(&cancel).await else { break };
        let slot = Arc::new(slot);
        let (app, body_timeout, svc_slot) = (app.clone(), timeouts.body, Arc::clone(&slot));
        let svc = tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let busy = svc_slot.busy();
            let (parts, incoming) = req.into_parts();
            let body = http::body::DeadlineBody::wrap(axum::body::Body::new(incoming), body_timeout);
            let (body, unread) = http::body::Unread::share(body);
            let mut req = axum::extract::Request::from_parts(parts, body);
            // The peer address: the admin API answers only loopback clients when it has no
            // tokens, and refused tokens are logged with it.
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let expects_continue = req.headers().get(axum::http::header::EXPECT).is_some();
            let had_token = req.headers().contains_key(axum::http::header::AUTHORIZATION);
            let path: String = req.uri().path().chars().take(http::refused::MAX_PATH).collect();
            let answer = tower::ServiceExt::oneshot(app.clone(), req);
            async move {
                let resp = answer.await?;
                http::refused::log(peer.ip(), &path, had_token, resp.status());
                // A client waiting for `100 Continue` sends nothing more: no drain needed.
                if !expects_continue {
                    let drained = unread.drain().await;
                    if drained > 0 {
                        tracing::debug!(%peer, drained, status = %resp.status(), "discarded the unread rest of a request body");
                    }
                }
                // The connection stays busy (not to be evicted) until the answer is written.
                Ok::<_, std::convert::Infallible>(
                    resp.map(|b| axum::body::Body::new(http::conns::BusyBody::new(b, busy))),
                )
            }
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        let conn = builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(svc));
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = slot.evicted.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    loop {
                        match tokio::time::timeout(http::conns::EVICT_GRACE, conn.as_mut()).await {
                            Ok(r) => break r,
                            // Still no request on it (headers trickling in): dropped.
                            Err(_) if slot.idle() => break Ok(()),
                            // A request began just as it was chosen: it is answered first.
                            Err(_) => {}
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%e, %peer, "connection closed with an error");
            }
        });
    }
    drop(listener);
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
    }
}

/// How long [`probe_archive`] waits for the store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks that an S3/R2 archive answers: one listing under the prefix, within
/// [`PROBE_TIMEOUT`]. The error names the keys to look at. A local archive is not probed
/// (it is a directory, created when the lake starts).
pub async fn probe_archive(cfg: &crate::maintenance::archive::config::ArchiveConfig) -> anyhow::Result<()> {
    use crate::maintenance::archive::config::StoreConfig;
    let StoreConfig::S3 { bucket, endpoint, .. } = &cfg.store else {
        return Ok(());
    };
    let (key, value) = match endpoint {
        Some(e) => ("archive.endpoint", e.clone()),
        None => ("archive.bucket", bucket.clone()),
    };
    let hint = "check the URL (R2: \"https://<account_id>.r2.cloudflarestorage.com\"), archive.bucket, the credentials and the network";
    let store =
        crate::maintenance::archive::store::Store::open(cfg).map_err(|e| anyhow::anyhow!("{key} = {value:?}: {e}"))?;
    let prefix = (!cfg.prefix.is_empty()).then(|| object_store::path::Path::from(cfg.prefix.as_str()));
    match tokio::time::timeout(PROBE_TIMEOUT, store.inner().list_with_delimiter(prefix.as_ref())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => anyhow::bail!("{key} = {value:?}: listing bucket {bucket:?} failed: {e}; {hint}"),
        Err(_) => anyhow::bail!(
            "{key} = {value:?}: the archive store did not answer within {}s; {hint}",
            PROBE_TIMEOUT.as_secs()
        ),
    }
}

/// Binds the configured address.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}
