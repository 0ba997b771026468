//! The `lake` command line: `serve`, `query`, `logs`, `correlate`, `top`, `anomalies`, `demo`, `token`, `check-config`.
//!
//! Data goes to stdout, diagnostics to stderr. Exit codes: 0 success, 1 a negative
//! answer, 2 an error. A closed stdout (`lake query … | head`) is success.

mod alerts;
mod archive;
mod correlate;
mod demo;
mod logs;
mod query;
mod remote;
mod tables;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// lake: a telemetry lake for a handful of servers — Parquet files, DuckDB queries.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    logging: LoggingArgs,
    #[command(subcommand)]
    command: Command,
}

/// Shared logging flags.
#[derive(Debug, Args)]
struct LoggingArgs {
    /// Log filter, e.g. `info` or `lake=debug,tower_http=info`.
    #[arg(long, env = "LOG_FILTER", global = true)]
    log_filter: Option<String>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the lake: ingest, storage, SQL API (and, with `[mcp] enabled = true`, the MCP
    /// server for AI agents at /mcp; with `[[webhooks]]` entries, third parties' webhooks —
    /// Stripe, Postmark, GitHub, listmonk, any JSON — at /v1/hooks/<name>).
    Serve {
        /// Configuration file (defaults apply without one).
        #[arg(long, short, env = "LAKE_CONFIG")]
        config: Option<PathBuf>,
        /// Override the listen address of the config.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve the read APIs (SQL, Grafana, alerts, web UI, MCP) without a token on an address
        /// other than loopback. Without this flag `lake serve` refuses to start when
        /// `listen` is not 127.0.0.0/8 or ::1 and there is no read token (neither
        /// `[query] read_tokens*` nor a read token in the tokens file).
        #[arg(long)]
        insecure_open: bool,
    },
    /// Run SQL against a lake and print the result.
    Query(query::QueryArgs),
    /// Log lines of the whole fleet, like journalctl: `lake logs -u nginx -p err --since 1h -f`.
    Logs(logs::LogsArgs),
    /// Cross-source questions: everything an IP did, or how two series move together.
    Correlate(correlate::CorrelateArgs),
    /// The most frequent values of a column, e.g. `--table http --by remote_ip`.
    Top(correlate::TopArgs),
    /// Series whose recent hours are far from the same hours of earlier weeks (robust
    /// z-score): every metric, http by vhost and status class, logs by unit and priority.
    Anomalies(correlate::AnomaliesArgs),
    /// Archive finished partitions now (`--now`: upload, verify, retention), or show what
    /// is where (`status`). Asks the running lake when `lake serve` owns the data directory.
    Archive(archive::ArchiveArgs),
    /// Merge the small files of partitions now (the lake also does it every 10 minutes).
    Compact(archive::CompactArgs),
    /// Bring archived partitions of a table back so queries cover them again.
    Restore(archive::RestoreArgs),
    /// Firing, pending and recently resolved alerts, with delivery status (`--watch` refreshes).
    Alerts(alerts::AlertsArgs),
    /// Hold notifications for a while: `lake silence add --rule R --label host=x --for 2h`, `list`, `remove ID`.
    Silence(alerts::SilenceArgs),
    /// Every table (catalog and custom) with its columns, rows, bytes and time span.
    Tables(tables::TablesArgs),
    /// Send an NDJSON, JSON, CSV or Parquet file into a custom table of a running lake.
    Ingest(tables::IngestArgs),
    /// Start a lake and a collector on this machine with generated settings.
    Demo(demo::DemoArgs),
    /// Bearer tokens: `lake token add --role ingest --node N` (or `--role read|admin`),
    /// `list`, `revoke ID`. A running lake picks changes up within seconds.
    Token(token::TokenArgs),
    /// Validate a configuration file and print what it means.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, env = "LAKE_CONFIG")]
        config: PathBuf,
    },
}

fn init_logging(args: &LoggingArgs, default: &str) {
    let filter = match (&args.log_filter, args.verbose) {
        (Some(f), _) => f.clone(),
        (None, 0) => default.to_string(),
        (None, 1) => "debug".to_string(),
        (None, _) => "trace".to_string(),
    };
    // Refused tokens are always logged (fail2ban reads them) unless the filter names their
    // target itself.
    let filter = if filter.contains(crate::http::refused::TARGET) {
        filter
    } else {
        format!("{filter},{}=warn", crate::http::refused::TARGET)
    };
    // Colour codes only for a terminal: journald and log files get plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels the token on SIGINT or SIGTERM.
pub(crate) fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, shutting down"),
            _ = term.recv() => tracing::info!("terminated, shutting down"),
        }
        cancel.cancel();
    });
}

fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config, listen, insecure_open } => {
            init_logging(&cli.logging, "info");
            serve(config, listen, insecure_open)
        }
        Command::Query(args) => {
            init_logging(&cli.logging, "warn");
            return query::run(args);
        }
        Command::Logs(args) => {
            init_logging(&cli.logging, "warn");
            return logs::run(args);
        }
        Command::Correlate(args) => {
            init_logging(&cli.logging, "warn");
            return correlate::correlate(args);
        }
        Command::Top(args) => {
            init_logging(&cli.logging, "warn");
            return correlate::top(args);
        }
        Command::Anomalies(args) => {
            init_logging(&cli.logging, "warn");
            return correlate::anomalies(args);
        }
        Command::Archive(args) => {
            init_logging(&cli.logging, "warn");
            return archive::archive(args);
        }
        Command::Compact(args) => {
            init_logging(&cli.logging, "warn");
            return archive::compact(args);
        }
        Command::Restore(args) => {
            init_logging(&cli.logging, "warn");
            return archive::restore(args);
        }
        Command::Alerts(args) => {
            init_logging(&cli.logging, "warn");
            return alerts::alerts(args);
        }
        Command::Silence(args) => {
            init_logging(&cli.logging, "warn");
            return alerts::silence(args);
        }
        Command::Tables(args) => {
            init_logging(&cli.logging, "warn");
            return tables::tables(args);
        }
        Command::Ingest(args) => {
            init_logging(&cli.logging, "warn");
            return tables::ingest(args);
        }
        Command::Token(args) => {
            init_logging(&cli.logging, "warn");
            return token::run(args);
        }
        Command::Demo(args) => {
            init_logging(&cli.logging, "info,lake=info");
            demo::run(args)
        }
        Command::CheckConfig { config } => {
            init_logging(&cli.logging, "warn");
            check_config(&config)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lake: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: Option<PathBuf>, listen: Option<std::net::SocketAddr>, insecure_open: bool) -> anyhow::Result<()> {
    let mut config = Config::load(config.as_deref())?;
    if let Some(l) = listen {
        config.listen = l;
    }
    refuse_open_reads(&config, insecure_open)?;
    crate::malloc::tune();
    runtime(true)?.block_on(async {
        let cancel = CancellationToken::new();
        cancel_on_signals(cancel.clone());
        let listener = crate::server::bind(config.listen).await?;
        crate::server::run(config, listener, cancel).await
    })
}

/// Refuses to serve the read APIs without a token beyond this machine: a `listen` address
/// outside 127.0.0.0/8 and ::1 needs a read token (lake.toml or the tokens file), or
/// `--insecure-open`, which starts anyway with a warning.
fn refuse_open_reads(config: &Config, insecure_open: bool) -> anyhow::Result<()> {
    if config.listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    let file_keys = crate::auth::load_keys(&config.tokens_file)?;
    let reads = config.keys.iter().chain(&file_keys).any(|k| k.role == crate::auth::Role::Read);
    if reads {
        return Ok(());
    }
    if insecure_open {
        tracing::warn!(
            listen = %config.listen,
            "--insecure-open: the SQL API, Grafana, alerts and the web UI answer anyone who reaches this address, without a token"
        );
        return Ok(());
    }
    anyhow::bail!(
        "listen = \"{}\" is not a loopback address and there is no read token: the SQL API, Grafana, alerts and the web UI \
         would answer anyone who reaches it. Add one (`lake token add --role read`, or [query] read_tokens_sha256 in lake.toml), \
         or listen on 127.0.0.1; --insecure-open serves them open anyway",
        config.listen
    )
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let c = Config::load(Some(path))?;
    // Every rule's SQL runs once against an empty lake: unknown columns, syntax, no `value`.
    let rule_errors = crate::alerts::check_rules(&c.alerts, &c.limits, &c.data_dir)?;
    if !rule_errors.is_empty() {
        anyhow::bail!("in {}: {}", path.display(), rule_errors.join("\n  "));
    }
    // An S3/R2 archive must answer now, not at 02:00.
    runtime(false)?
        .block_on(crate::server::probe_archive(&c.archive))
        .with_context(|| format!("in {}", path.display()))?;
    // [pg]'s certificate and key load now, not at the start.
    if let Some((cert, key)) = c.pg.as_ref().and_then(|pg| pg.tls.as_ref()) {
        crate::pg::tls_acceptor(cert, key).with_context(|| format!("in {}", path.display()))?;
    }
    println!("{}: ok", path.display());
    println!("  data_dir        {}", c.data_dir.display());
    println!("  listen          {}", c.listen);
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
    // The tokens file must be valid too: the lake would not start with a bad one.
    let set = crate::auth::combine(&c.keys, crate::auth::load_keys(&c.tokens_file)?)?;
    let count = |r: crate::auth::Role| set.keys().iter().filter(|k| k.role == r).count();
    let nodes = set.nodes();
    println!("  tokens file     {}", c.tokens_file.display());
    println!(
        "  ingest nodes    {}",
        if nodes.is_empty() { "(none: ingest refuses every request)".into() } else { nodes.join(", ") }
    );
    for n in c.nodes.iter().filter(|n| !nodes.contains(&n.as_str())) {
        println!("                  {n}: no token yet (`lake token add --role ingest --node {n}`)");
    }
    let reads = count(crate::auth::Role::Read);
    println!(
        "  read tokens     {}",
        if reads == 0 { "none (SQL API open: keep listen on loopback)".into() } else { reads.to_string() }
    );
    let alerts = count(crate::auth::Role::Alerts);
    println!(
        "  alerts tokens   {}",
        if alerts == 0 {
            "none (silences: admin tokens, or open on a lake without tokens)".into()
        } else {
            alerts.to_string()
        }
    );
    let admins = count(crate::auth::Role::Admin);
    println!(
        "  admin tokens    {}",
        if admins == 0 { "none (admin API: loopback clients only)".into() } else { admins.to_string() }
    );
    for (node, hosts) in &c.hosts {
        println!("  relays          {node} may also write rows of {}", hosts.join(", "));
    }
    println!(
        "  ingest limits   {} days per batch, {} MiB decode memory, {} connections",
        c.max_days_per_batch,
        c.decode_memory >> 20,
        c.max_connections
    );
    println!("  flush           every {:?} or at {} bytes", c.flush_interval, c.flush_size);
    println!("  query limits    {} rows, {:?}, memory {}", c.limits.max_rows, c.limits.timeout, c.limits.memory_limit);
    if c.mcp.enabled {
        let origins = if c.mcp.allowed_origins.is_empty() { "none".into() } else { c.mcp.allowed_origins.join(", ") };
        println!(
            "  mcp             /mcp on (read tokens): {} rows shown, {} sessions idle {:?}, browser origins {origins}",
            c.mcp.max_rows, c.mcp.max_sessions, c.mcp.session_idle
        );
    } else {
        println!("  mcp             off ([mcp] enabled = true serves /mcp)");
    }
    match &c.pg {
        Some(pg) => println!(
            "  postgresql      {} ({}), at most {} sessions, login within {:?}, idle {:?}, messages up to {} bytes",
            pg.listen,
            if pg.tls.is_some() { "TLS offered" } else { "no TLS: sslmode=disable or prefer" },
            pg.max_connections,
            pg.auth_timeout,
            pg.idle_timeout,
            pg.max_message
        ),
        None => println!("  postgresql      off (no [pg] section)"),
    }
    if c.webhooks.is_empty() {
        println!("  webhooks        none ([[webhooks]] takes Stripe, Postmark, GitHub, listmonk or any JSON at /v1/hooks/<name>)");
    }
    for h in &c.webhooks {
        let secret = if matches!(h.auth, crate::http::hooks::HookAuth::UrlSecret(_)) { "/<secret>" } else { "" };
        println!(
            "  webhook         POST /v1/hooks/{}{secret} ({} preset, {} auth, up to {} KiB) → table {}, host {}",
            h.name,
            h.preset.name(),
            h.auth.kind(),
            h.max_body >> 10,
            h.table,
            h.host
        );
    }
    print!("{}", alerts::describe_config(&c.alerts));
    match &c.heartbeat {
        Some(h) => println!(
            "  heartbeat       {} every {}s round: {}://{}/… ({}s timeout)",
            match h.style {
                crate::heartbeat::Style::Healthchecks => "healthchecks",
                crate::heartbeat::Style::UptimeKuma => "uptime_kuma",
            },
            crate::alerts::round_interval(&c.alerts).as_secs(),
            h.url.scheme(),
            h.url.host_str().unwrap_or("?"),
            h.timeout.as_secs()
        ),
        None => println!("  heartbeat       none (nothing outside the lake hears if it stops: see [heartbeat])"),
    }
    Ok(())
}
