//! The `lake-collector` binary: parses arguments, loads the config, initialises logging,
//! and runs the collector on a single-threaded runtime until SIGTERM or Ctrl-C — or runs
//! one of its commands (`replay-rejected`, `run-job`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lake_collector::config::Config;
use lake_collector::rejected::{self, Outcome};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Gathers host metrics on this node, spools them on disk and ships them to the lake.
///
/// Every source is a section of the config file; each option, with its default, is in
/// collector/examples/collector.toml. Besides host metrics, logs (journald, Caddy, ufw,
/// fail2ban, [[log_file]], syslog, Docker), a UPS through NUT ([[ups]]) and custom data
/// ([[exec]], [[json_file]], [[prometheus_scrape]]), [[uptime.checks]] probe targets into
/// `probes`: kind "http" (any method, headers, body, keyword, expect_json = { pointer,
/// value }), "tcp", "tls" (days left), "icmp" (ping over IPv4/IPv6: an unprivileged ICMP
/// socket when net.ipv4.ping_group_range allows it, else a raw one with CAP_NET_RAW;
/// loss and round trips) and "dns" (one query to a given server, the rcode and answer
/// checked); `outside = true` marks a site's uplink targets for the lake's site_offline
/// rule. [[pull]] fetches APIs on a schedule (presets cloudflare, open_meteo, or any
/// JSON/CSV URL mapped with JSON pointers). --check prints what a config enables.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (collector.toml). Without it, every default applies.
    #[arg(long, short = 'c', env = "LAKE_COLLECTOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    check: bool,
    /// Log filter in EnvFilter syntax, e.g. "info,lake_collector=debug".
    #[arg(long, env = "LOG_FILTER", global = true)]
    log_filter: Option<String>,
    /// More logging: -v debug, -vv trace (ignored when --log-filter is given).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Without a command, the collector runs until SIGTERM or Ctrl-C.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send every batch in <data_dir>/rejected/ to the lake again, oldest first.
    ///
    /// Each batch goes through the lake's normal ingest under a new batch id (a random
    /// epoch per run, so it can never be taken for a batch stored before). A batch the
    /// lake stores is deleted; one it refuses stays, and the answer is printed. Run it
    /// after fixing what the lake refused (a table's schema, a limit); it is safe while
    /// the collector runs. One line per batch on stdout: `stored` or `kept`, the file,
    /// the table, the new batch id and the lake's answer. Exit status: 0 when every batch
    /// was stored (or there was none), 1 when the lake refused some (they stay), 2 on an
    /// error (configuration, files, the lake unreachable or refusing this node's token).
    ReplayRejected,
    /// Run a command as one run of a job the lake watches ([[jobs]] in lake.toml).
    ///
    /// Reports start to the lake (/v1/jobs/NAME/start, with this node's token from
    /// collector.toml), runs the command with its output passed through, then reports
    /// success or fail with its exit code, duration and the last 4 KiB of its output, and
    /// exits with the command's exit code. The command runs even when the lake is
    /// unreachable or refuses the report (said on stderr): e.g. in a crontab,
    /// `lake-collector run-job pg_dump -- /usr/local/bin/backup.sh`.
    RunJob {
        /// The job's name, as declared by [[jobs]] name in lake.toml.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    init_logging(&cli);
    if let Some(Command::RunJob { name, command }) = &cli.command {
        return run_job(&cli, name, command);
    }
    let replay = matches!(cli.command, Some(Command::ReplayRejected));
    let result = if replay { replay_rejected(&cli) } else { run(cli).map(|()| ExitCode::SUCCESS) };
    match result {
        Ok(code) => code,
        Err(e) => {
            // stderr is the journal under systemd; one readable line beats a log record
            // with an escaped multi-line TOML error in it.
            eprintln!("lake-collector: {e:#}");
            // replay-rejected exits 2 on an error, 1 being "some batches refused" (STYLE §8).
            ExitCode::from(if replay { 2 } else { 1 })
        }
    }
}

/// `lake-collector run-job`: the command's exit code, whatever the lake says.
fn run_job(cli: &Cli, name: &str, command: &[String]) -> ExitCode {
    let config = Config::load(cli.config.as_deref()).map_err(|e| format!("{e:#}"));
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lake-collector run-job: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(lake_collector::run_job::run(config, name, command));
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// `lake-collector replay-rejected`.
fn replay_rejected(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let dir = config.data_dir.join(rejected::DIR);
    let summary = rt.block_on(rejected::replay(&config, |kept, table, id, outcome| {
        let file = kept.body.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        match outcome {
            Outcome::Stored => println!("stored  {file}  {table}  {id}"),
            Outcome::Refused(e) => println!("kept    {file}  {table}  {id}  {e}"),
            Outcome::Unreadable(why) => println!("kept    {file}  {table}  -  unreadable: {why}"),
        }
    }))?;
    eprintln!("replay-rejected: {} stored, {} left in {}", summary.stored, summary.kept, dir.display());
    if let Some(why) = summary.stopped {
        eprintln!("replay-rejected: stopped: {why}");
        return Ok(ExitCode::from(2));
    }
    Ok(if summary.kept > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Bounds what glibc's malloc keeps (the collector's anonymous memory was mostly free
/// heap it held on to):
/// - one arena: glibc gives every thread that allocates an arena of its own, kept for the
///   life of the process, and each blocking-pool thread (file reads, spool fsyncs) held a
///   few hundred KiB of it; one arena is plenty for a handful of mostly idle threads;
/// - a fixed mmap threshold of 128 KiB (glibc's initial one): by default it rises to the
///   size of the largest block freed, so the ~0.8 MiB zstd workspace of each batch encode
///   came from the heap afterwards and its touched pages stayed resident between encodes.
///   Fixed, every block that large is mapped for its use and unmapped when freed (a
///   few page faults per batch).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it runs before any other thread
    // exists, and glibc validates the values.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

fn init_logging(cli: &Cli) {
    let filter = match (&cli.log_filter, cli.verbose) {
        (Some(f), _) => EnvFilter::new(f),
        (None, 0) => EnvFilter::new("info"),
        (None, 1) => EnvFilter::new("info,lake_collector=debug"),
        (None, _) => EnvFilter::new("trace"),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    if cli.check {
        print_summary(&config);
        return Ok(());
    }
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
        let result = lake_collector::run(config, cancel).await;
        signals.abort();
        result.map_err(anyhow::Error::from)
    })
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: shutting down"),
    }
    cancel.cancel();
}

fn print_summary(c: &Config) {
    println!("config OK");
    println!("node          {}", c.node);
    println!("data_dir      {}", c.data_dir.display());
    println!("lake.url      {}", c.lake.url);
    println!("lake.token    from {:?}", c.lake.token_source);
    println!("lake.timeout  {:?}", c.lake.timeout);
    println!("host          enabled={} interval={:?}", c.host.enabled, c.host.interval);
    println!("spool         max_size={}B segment_size={}B", c.spool.max_size, c.spool.segment_size);
    println!(
        "shipper       backoff {:?}..{:?}, after a refused token/node/clock {:?}..{:?}",
        c.shipper.backoff_min, c.shipper.backoff_max, c.shipper.config_backoff_min, c.shipper.config_backoff_max
    );
    println!("rejected      max_batches={} max_size={}B", c.rejected.max_batches, c.rejected.max_size);
    match &c.heartbeat.ping {
        Some(p) => {
            println!("heartbeat     {:?} {} every {:?}, grace {:?}", p.method, p.url.redacted(), p.interval, p.grace)
        }
        None => println!("heartbeat     off"),
    }
    if let Some(d) = &c.heartbeat.lake_down {
        println!("lake_down     {} after {:?}", d.url.redacted(), d.after);
    }
    println!(
        "inventory     enabled={} interval={:?} listeners={:?} units={:?}",
        c.inventory.enabled, c.inventory.interval, c.inventory.listeners_interval, c.inventory.units_interval
    );
    if c.docker.enabled {
        let stats = c.docker.stats_interval.map_or("off".to_string(), |d| format!("{d:?}"));
        println!("docker        {} logs={} stats every {stats}", c.docker.socket.display(), c.docker.logs);
    }
    if c.syslog.enabled() {
        println!("syslog        {}", lake_collector::sources::syslog::describe(&c.syslog));
    }
    for e in &c.exec {
        println!("exec          {}", lake_collector::sources::exec::describe(e));
    }
    for s in &c.prometheus_scrape {
        println!("scrape        {} {} every {:?}", s.name, s.url, s.interval);
    }
    for j in &c.json_file {
        println!("json_file     {} {:?} → json/{}", j.source, j.tail.patterns, j.table);
    }
    for l in &c.log_file {
        println!("log_file      {}", lake_collector::sources::log_file::describe(l));
    }
    for u in &c.ups {
        println!("ups           {}", lake_collector::sources::ups::describe(u));
    }
    for check in &c.uptime.checks {
        println!("uptime        {}", lake_collector::sources::uptime::describe(check));
    }
    for p in &c.pull {
        println!("pull          {}", lake_collector::sources::pull::describe(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let cli =
            Cli::try_parse_from(["lake-collector", "--config", "/etc/lake/collector.toml", "--check", "-vv"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("/etc/lake/collector.toml")));
        assert!(cli.check);
        assert_eq!(cli.verbose, 2);
        assert!(Cli::try_parse_from(["lake-collector", "serve"]).is_err());
        let cli =
            Cli::try_parse_from(["lake-collector", "replay-rejected", "--config", "/etc/lake/collector.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::ReplayRejected)));
        assert_eq!(cli.config, Some(PathBuf::from("/etc/lake/collector.toml")));
        let cli =
            Cli::try_parse_from(["lake-collector", "run-job", "-c", "/c.toml", "pg_dump", "--", "sh", "-c", "x -v"])
                .unwrap();
        match cli.command {
            Some(Command::RunJob { name, command }) => {
                assert_eq!((name.as_str(), command), ("pg_dump", vec!["sh".to_string(), "-c".into(), "x -v".into()]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.config, Some(PathBuf::from("/c.toml")));
        assert!(Cli::try_parse_from(["lake-collector", "run-job", "pg_dump"]).is_err(), "a command is required");
    }
}
