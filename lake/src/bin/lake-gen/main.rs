//! `lake-gen`: a realistic lake written straight to committed Parquet, for benchmarks,
//! demos and tests of the query surface.
//!
//! A binary of its own, beside `lake`: the generator is not part of the server, so its
//! code is not compiled into the `lake` binary. It uses the lake library only for the
//! writer's Parquet properties and sort order.
//!
//! Out: `<data>/tables/<table>/date=YYYY-MM-DD/g-000000000000.parquet`, one file per
//! table and day (as compaction leaves a finished day), each sorted by the table's sort
//! columns (host, ts; metrics name, host, labels, ts) and written with the lake writer's own Parquet properties
//! ([`lake::ingest::writer::parquet_properties`]), so the files are indistinguishable from
//! committed ones. Nothing else (WAL, state) is written: a `lake serve` started on the
//! directory afterwards simply finds committed files.
//!
//! What is in it (see [`world`] for the shapes):
//! - `http`: `--http-rows` requests over several vhosts, each living on one host, with a
//!   daily traffic curve, Zipf-distributed paths and client addresses, human, crawler, AI,
//!   bot and scanner clients, a status mix with a little 5xx (and an incident of tens of
//!   minutes on most days per vhost, where 5xx and latency rise), log-normal latencies
//!   and sizes;
//! - `metrics`: `--metric-samples` samples with the names and labels of the collector's
//!   host source (cpu, load, memory, filesystems, disks, network, processes, uptime) and
//!   its own health, every host on a common cadence (about 7 s for the defaults);
//! - smaller `firewall` (ufw blocks by scanners), `bans` (fail2ban found/ban/unban
//!   episodes), `probes` (a Tailscale mesh and uptime checks that fail during incidents),
//!   `logs` (journald), `alerts` (pending/firing/resolved around incidents) and the host
//!   inventory tables, so every default named query and dashboard panel has data;
//! - `containers` (Docker events) and `container_*` metrics of a compose project per host,
//!   with a crash-looping, an OOM-killed and an intermittently unhealthy container
//!   ([`containers`]);
//! - `spans`: the traces of the LLM chat app on the `librechat` hosts, three spans a
//!   request, a few failing with a rate limit ([`spans`]);
//! - with `--incident`, hours unlike the same hours of other weeks (a 5xx storm on a
//!   vhost, an error burst of a unit), for `lake anomalies` to find ([`world::Injected`]).
//!
//! Deterministic: the same arguments (with `--end`) give byte-identical files, whatever
//! the thread count, because every (table, day, host) draws from its own seeded stream.
//! Days are generated in parallel, one file per job, on `--threads` threads.

mod containers;
mod events;
mod http;
mod metrics;
mod spans;
mod world;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{bail, Context};
use arrow_array::RecordBatch;
use clap::Parser;
use lake_format::custom::TableRef;
use lake_format::layout::{self, Date};
use lake_format::Table;
use parquet::arrow::ArrowWriter;

use world::World;

/// lake-gen: write a realistic generated lake (http, metrics, firewall, …) as committed Parquet.
#[derive(Debug, Parser)]
#[command(version)]
struct GenArgs {
    /// Data directory to fill (its `tables/` must be empty or absent).
    #[arg(long)]
    data_dir: PathBuf,
    /// Days of data, ending at `--end`.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
    days: u32,
    /// Number of hosts (nodes).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=200))]
    hosts: u32,
    /// `http` rows in total; firewall and log volumes follow from it.
    #[arg(long, default_value_t = 50_000_000)]
    http_rows: u64,
    /// `metrics` samples in total; the sampling cadence follows from it.
    #[arg(long, default_value_t = 100_000_000)]
    metric_samples: u64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// End of the range, RFC 3339 (e.g. 2026-11-22T10:00:00Z); default now.
    #[arg(long, value_parser = parse_end)]
    end: Option<i64>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// An hour unlike the same hour of other weeks, for `lake anomalies` to find (repeat
    /// for several): `5xx:<vhost>@<time>` (nine requests in ten of the vhost fail) or
    /// `log-errors:<host>/<unit>@<time>` (the unit logs ten error lines a minute).
    #[arg(long, value_name = "KIND:TARGET@TIME")]
    incident: Vec<String>,
}

fn parse_end(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("{s:?}: {e} (use e.g. 2026-11-22T10:00:00Z)"))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{s:?} is before 1970"))?;
    i64::try_from(d.as_micros()).map_err(|_| format!("{s:?} is too far in the future"))
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One file to write: a table's rows of one day.
#[derive(Debug, Clone, Copy)]
struct Job {
    table: Table,
    date: Date,
    /// The part of the generated range inside this day, µs: `[from, to)`.
    from: i64,
    to: i64,
    /// Rows expected, to schedule the big jobs first.
    weight: u64,
}

/// What one job wrote.
#[derive(Debug)]
struct Written {
    job: Job,
    rows: usize,
    bytes: u64,
    secs: f64,
}

fn main() -> std::process::ExitCode {
    let args = GenArgs::parse();
    // Warnings only: progress goes to stderr with eprintln, per file.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LOG_FILTER").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lake-gen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs `lake-gen`.
fn run(args: GenArgs) -> anyhow::Result<()> {
    let end = args.end.unwrap_or_else(|| lake_format::rows::now_micros() / 1_000_000 * 1_000_000);
    let start = end - i64::from(args.days) * MICROS_PER_DAY;
    let mut world = World::new(args.seed, args.hosts as usize, start, end, args.http_rows, args.metric_samples);
    for spec in &args.incident {
        world.inject(spec).map_err(anyhow::Error::msg)?;
    }
    let world = Arc::new(world);
    let tables = layout::table_dir(&args.data_dir, "x");
    let tables = tables.parent().expect("tables dir");
    if std::fs::read_dir(tables).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty: lake-gen only fills a new lake (remove it first)", tables.display());
    }
    std::fs::create_dir_all(tables).with_context(|| format!("creating {}", tables.display()))?;

    let jobs = plan(&world);
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(1, 64);
    eprintln!(
        "lake-gen: {} days × {} hosts into {} ({} files, {} threads; metrics every {:.1} s)",
        args.days,
        args.hosts,
        args.data_dir.display(),
        jobs.len(),
        threads,
        world.metric_interval as f64 / 1e6
    );
    let started = Instant::now();
    let written = run_jobs(&world, &args.data_dir, jobs, threads)?;
    let secs = started.elapsed().as_secs_f64();
    let mut per_table: Vec<(Table, usize, u64)> = Vec::new();
    for w in &written {
        match per_table.iter_mut().find(|(t, _, _)| *t == w.job.table) {
            Some(e) => {
                e.1 += w.rows;
                e.2 += w.bytes;
            }
            None => per_table.push((w.job.table, w.rows, w.bytes)),
        }
    }
    per_table.sort_by_key(|(t, _, _)| *t);
    let (mut rows, mut bytes) = (0usize, 0u64);
    for (table, r, b) in &per_table {
        eprintln!("  {:<10} {:>13} rows {:>9.1} MiB", table.name(), thousands(*r as u64), *b as f64 / 1048576.0);
        rows += r;
        bytes += b;
    }
    eprintln!(
        "lake-gen: {} rows, {:.1} MiB in {secs:.1} s ({:.0} krows/s)",
        thousands(rows as u64),
        bytes as f64 / 1048576.0,
        rows as f64 / secs / 1e3
    );
    Ok(())
}

/// Every (table, day) of the range, biggest first.
fn plan(world: &World) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut day = world.start.div_euclid(MICROS_PER_DAY);
    while day * MICROS_PER_DAY < world.end {
        let (from, to) = ((day * MICROS_PER_DAY).max(world.start), ((day + 1) * MICROS_PER_DAY).min(world.end));
        for table in Table::ALL {
            let weight = world.expected_rows(table, from, to);
            if weight > 0 {
                jobs.push(Job { table, date: Date::from_days(day), from, to, weight });
            }
        }
        day += 1;
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.weight));
    jobs
}

/// Writes every job's file on `threads` threads, printing a line per file on stderr.
fn run_jobs(world: &Arc<World>, data: &Path, jobs: Vec<Job>, threads: usize) -> anyhow::Result<Vec<Written>> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<anyhow::Result<Written>>();
    let mut workers = Vec::new();
    for n in 0..threads.min(jobs.len()).max(1) {
        let (world, jobs, next, stop, tx) =
            (Arc::clone(world), Arc::clone(&jobs), Arc::clone(&next), Arc::clone(&stop), tx.clone());
        let data = data.to_path_buf();
        workers.push(
            std::thread::Builder::new()
                .name(format!("lake-gen-{n}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i).copied() else { break };
                        let result = write_job(&world, &data, job);
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send(result).is_err() {
                            break;
                        }
                    }
                })
                .context("starting a generator thread")?,
        );
    }
    drop(tx);
    let total = jobs.len();
    let started = Instant::now();
    let mut written = Vec::with_capacity(total);
    let mut first_error = None;
    for result in rx {
        match result {
            Ok(w) if w.rows == 0 => written.push(w),
            Ok(w) => {
                eprintln!(
                    "[{:>4}/{total}] {:>6.1} s  {:<10} {}  {:>11} rows {:>8.1} MiB  {:.1} s",
                    written.len() + 1,
                    started.elapsed().as_secs_f64(),
                    w.job.table.name(),
                    w.job.date,
                    thousands(w.rows as u64),
                    w.bytes as f64 / 1048576.0,
                    w.secs
                );
                written.push(w);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// Generates one job's rows and writes them as one Parquet file (temp name, then rename).
fn write_job(world: &World, data: &Path, job: Job) -> anyhow::Result<Written> {
    let started = Instant::now();
    let dir = layout::partition_dir(data, job.table.name(), job.date);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = layout::file_name("g", 0);
    let (tmp, fin) = (dir.join(format!(".{name}.tmp")), dir.join(&name));
    let schema = job.table.schema();
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let table = TableRef::Builtin(job.table);
    let props = lake::ingest::writer::parquet_properties(&table, &schema);
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))?;
    let mut rows = 0usize;
    // Hosts in name order, each host's rows in time order: sorted by (host, ts) as they
    // come. A table sorted otherwise (metrics: name first) is gathered and sorted.
    let presorted = table.sort_columns() == ["host", "ts"];
    let mut gathered: Vec<RecordBatch> = Vec::new();
    let mut sink = |batch: RecordBatch| -> anyhow::Result<()> {
        rows += batch.num_rows();
        if presorted {
            writer.write(&batch).with_context(|| format!("encoding {} {}", job.table, job.date))
        } else {
            gathered.push(batch);
            Ok(())
        }
    };
    for host in 0..world.hosts.len() {
        match job.table {
            Table::Http => http::generate(world, host, job.from, job.to, &mut sink)?,
            Table::Metrics => metrics::generate(world, host, job.from, job.to, &mut sink)?,
            table => events::generate(world, table, host, job.from, job.to, &mut sink)?,
        }
    }
    if !gathered.is_empty() {
        let all = arrow_select::concat::concat_batches(&schema, &gathered)?;
        drop(gathered);
        let indices = lake::ingest::writer::sort_indices(&table, &all)?;
        let sorted = arrow_select::take::take_record_batch(&all, &indices)?;
        drop(all);
        writer.write(&sorted).with_context(|| format!("encoding {} {}", job.table, job.date))?;
    }
    writer.close()?;
    if rows == 0 {
        // Nothing happened in this table that day (inventory without changes): no file.
        std::fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        let _ = std::fs::remove_dir(&dir);
        return Ok(Written { job, rows, bytes: 0, secs: started.elapsed().as_secs_f64() });
    }
    std::fs::rename(&tmp, &fin).with_context(|| format!("renaming {}", tmp.display()))?;
    let bytes = std::fs::metadata(&fin).map(|m| m.len()).unwrap_or(0);
    Ok(Written { job, rows, bytes, secs: started.elapsed().as_secs_f64() })
}

/// `12345678` as `12,345,678`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(50_000_000), "50,000,000");
    }

    #[test]
    fn the_plan_covers_every_day_of_the_range_once() {
        let end = 1_795_341_600_000_000; // 2026-11-22T10:00:00Z
        let w = World::new(1, 2, end - 2 * MICROS_PER_DAY, end, 10_000, 20_000);
        let jobs = plan(&w);
        let http: Vec<String> = {
            let mut d: Vec<String> =
                jobs.iter().filter(|j| j.table == Table::Http).map(|j| j.date.to_string()).collect();
            d.sort();
            d
        };
        assert_eq!(http, ["2026-11-20", "2026-11-21", "2026-11-22"]);
        for j in &jobs {
            assert!(j.from < j.to && j.from >= w.start && j.to <= w.end, "{j:?}");
        }
        assert!(jobs.windows(2).all(|p| p[0].weight >= p[1].weight));
    }

    #[test]
    fn end_parses_rfc3339() {
        assert_eq!(parse_end("2026-11-22T10:00:00Z"), Ok(1_795_341_600_000_000));
        assert!(parse_end("yesterday").is_err());
    }
}
