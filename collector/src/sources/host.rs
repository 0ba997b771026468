//! Host metrics: CPU, load, memory, swap, filesystems, disk and network I/O, process
//! count and uptime, plus the collector's own counters, into the `metrics` table.
//!
//! Each tick takes a [`Snapshot`] (sysinfo for CPU, memory, load, filesystems and
//! network; `/proc` for disk I/O, process count and RSS) on the blocking pool, then a pure
//! function, [`samples`], turns the previous and current snapshots into rows. Counters
//! become per-second rates over the real time between the two snapshots, next to their
//! raw `_total` values; the first snapshot yields totals only (and no CPU usage, which
//! sysinfo measures between two refreshes). All rows of a tick share one `ts`.
//!
//! Choices:
//! - Disk I/O comes from `/proc/diskstats` (sectors × 512), for whole disks only
//!   (devices listed in `/sys/block`, so partitions are not counted twice), skipping
//!   `loop`, `ram` and `zram` devices. Device-mapper devices (LVM, LUKS) are kept: they
//!   are what an operator sees in `lsblk`.
//! - Filesystem "used" is `total - available` (what an unprivileged writer can still use,
//!   so root-reserved blocks count as used), like `df`'s "Use%" is about.
//! - Pseudo filesystems (tmpfs, proc, sysfs, cgroup, squashfs snaps, ...) are skipped;
//!   overlay is kept (container roots).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::{wire, Table};
use sysinfo::{Disks, Networks, System};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::SourceError;
use crate::spool::{OnFull, SpoolError, SpoolHandle};
use crate::stats::Stats;

const SOURCE: &str = "host";

/// Filesystem types that describe no storage an operator cares about.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "nfsd",
    "iso9660",
];

/// Disk device name prefixes that are not real storage.
const SKIPPED_DISKS: &[&str] = &["loop", "ram", "zram"];

/// One filesystem's capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Filesystem {
    /// Mount point.
    pub mount: String,
    /// Device (e.g. `/dev/vda1`).
    pub device: String,
    /// Filesystem type (e.g. `ext4`).
    pub fstype: String,
    /// Size in bytes.
    pub total: u64,
    /// Bytes an unprivileged writer can still use.
    pub available: u64,
}

/// Cumulative I/O of one disk since boot.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskIo {
    /// Device name (e.g. `vda`).
    pub device: String,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub written_bytes: u64,
}

/// Cumulative traffic of one network interface since boot.
#[derive(Debug, Clone, PartialEq)]
pub struct NetIo {
    /// Interface name.
    pub iface: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// Everything read from the system at one tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Monotonic time of the reading, from any fixed origin.
    pub mono: Duration,
    /// Overall CPU usage in percent, and per CPU.
    pub cpu_total: f64,
    /// Usage of each CPU in percent, in CPU order.
    pub cpus: Vec<f64>,
    /// Load averages over 1, 5 and 15 minutes, when available.
    pub load: Option<[f64; 3]>,
    /// Memory in bytes.
    pub memory_total: u64,
    /// Memory in use in bytes.
    pub memory_used: u64,
    /// Memory available for new work in bytes.
    pub memory_available: u64,
    /// Swap size in bytes.
    pub swap_total: u64,
    /// Swap in use in bytes.
    pub swap_used: u64,
    /// Real filesystems.
    pub filesystems: Vec<Filesystem>,
    /// Whole disks.
    pub disks: Vec<DiskIo>,
    /// Network interfaces other than loopback.
    pub nets: Vec<NetIo>,
    /// Number of processes, when readable.
    pub process_count: Option<u64>,
    /// Seconds since boot, when readable.
    pub uptime: Option<u64>,
}

/// One row of `metrics` before the shared `ts` and `host` are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, unit included.
    pub name: &'static str,
    /// Value.
    pub value: f64,
    /// Labels.
    pub labels: Vec<(&'static str, String)>,
}

impl Sample {
    fn new(name: &'static str, value: f64) -> Sample {
        Sample { name, value, labels: Vec::new() }
    }

    fn with(name: &'static str, value: f64, labels: &[(&'static str, &str)]) -> Sample {
        Sample { name, value, labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect() }
    }
}

/// Rows for `cur`, with rates against `prev` when there is one.
pub fn samples(prev: Option<&Snapshot>, cur: &Snapshot) -> Vec<Sample> {
    let mut out = Vec::with_capacity(64);
    let elapsed = prev.map(|p| cur.mono.saturating_sub(p.mono).as_secs_f64()).filter(|e| *e > 0.0);

    if prev.is_some() {
        out.push(Sample::with("cpu_usage_percent", cur.cpu_total, &[("cpu", "total")]));
        for (i, usage) in cur.cpus.iter().enumerate() {
            out.push(Sample::with("cpu_usage_percent", *usage, &[("cpu", &i.to_string())]));
        }
    }
    if let Some([l1, l5, l15]) = cur.load {
        out.push(Sample::new("load1", l1));
        out.push(Sample::new("load5", l5));
        out.push(Sample::new("load15", l15));
    }
    for (name, v) in [
        ("memory_total_bytes", cur.memory_total),
        ("memory_used_bytes", cur.memory_used),
        ("memory_available_bytes", cur.memory_available),
        ("swap_total_bytes", cur.swap_total),
        ("swap_used_bytes", cur.swap_used),
    ] {
        out.push(Sample::new(name, v as f64));
    }

    for fs in &cur.filesystems {
        let labels = [("mount", fs.mount.as_str()), ("device", fs.device.as_str()), ("fstype", fs.fstype.as_str())];
        let used = fs.total.saturating_sub(fs.available);
        out.push(Sample::with("filesystem_total_bytes", fs.total as f64, &labels));
        out.push(Sample::with("filesystem_used_bytes", used as f64, &labels));
        if fs.total > 0 {
            out.push(Sample::with("filesystem_used_ratio", used as f64 / fs.total as f64, &labels));
        }
    }

    let prev_disks: BTreeMap<&str, &DiskIo> =
        prev.map(|p| p.disks.iter().map(|d| (d.device.as_str(), d)).collect()).unwrap_or_default();
    for d in &cur.disks {
        let labels = [("device", d.device.as_str())];
        out.push(Sample::with("disk_read_bytes_total", d.read_bytes as f64, &labels));
        out.push(Sample::with("disk_written_bytes_total", d.written_bytes as f64, &labels));
        if let (Some(p), Some(secs)) = (prev_disks.get(d.device.as_str()), elapsed) {
            rate(&mut out, "disk_read_bytes_per_second", p.read_bytes, d.read_bytes, secs, &labels);
            rate(&mut out, "disk_written_bytes_per_second", p.written_bytes, d.written_bytes, secs, &labels);
        }
    }

    let prev_nets: BTreeMap<&str, &NetIo> =
        prev.map(|p| p.nets.iter().map(|n| (n.iface.as_str(), n)).collect()).unwrap_or_default();
    for n in &cur.nets {
        let labels = [("iface", n.iface.as_str())];
        out.push(Sample::with("net_rx_bytes_total", n.rx_bytes as f64, &labels));
        out.push(Sample::with("net_tx_bytes_total", n.tx_bytes as f64, &labels));
        out.push(Sample::with("net_rx_packets_total", n.rx_packets as f64, &labels));
        out.push(Sample::with("net_tx_packets_total", n.tx_packets as f64, &labels));
        if let (Some(p), Some(secs)) = (prev_nets.get(n.iface.as_str()), elapsed) {
            rate(&mut out, "net_rx_bytes_per_second", p.rx_bytes, n.rx_bytes, secs, &labels);
            rate(&mut out, "net_tx_bytes_per_second", p.tx_bytes, n.tx_bytes, secs, &labels);
            rate(&mut out, "net_rx_packets_per_second", p.rx_packets, n.rx_packets, secs, &labels);
            rate(&mut out, "net_tx_packets_per_second", p.tx_packets, n.tx_packets, secs, &labels);
        }
    }

    if let Some(n) = cur.process_count {
        out.push(Sample::new("process_count", n as f64));
    }
    if let Some(s) = cur.uptime {
        out.push(Sample::new("uptime_seconds", s as f64));
    }
    out
}

/// A counter that went backwards (a reset: device re-added, wrap) gives no rate this tick.
fn rate(out: &mut Vec<Sample>, name: &'static str, prev: u64, cur: u64, secs: f64, labels: &[(&'static str, &str)]) {
    if cur >= prev {
        out.push(Sample::with(name, (cur - prev) as f64 / secs, labels));
    }
}

/// Whole disks from `/proc/diskstats` text; `is_whole_disk` tells disks from partitions.
pub fn parse_diskstats(text: &str, is_whole_disk: impl Fn(&str) -> bool) -> Vec<DiskIo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name = *f.get(2)?;
            if SKIPPED_DISKS.iter().any(|p| name.starts_with(p)) || !is_whole_disk(name) {
                return None;
            }
            let sectors_read: u64 = f.get(5)?.parse().ok()?;
            let sectors_written: u64 = f.get(9)?.parse().ok()?;
            Some(DiskIo {
                device: name.to_string(),
                read_bytes: sectors_read.saturating_mul(512),
                written_bytes: sectors_written.saturating_mul(512),
            })
        })
        .collect()
}

/// The `VmRSS` of `/proc/self/status` text, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn is_whole_disk(name: &str) -> bool {
    let sys_block = Path::new("/sys/block");
    // Without sysfs there is no way to tell; keep everything rather than nothing.
    !sys_block.is_dir() || sys_block.join(name.replace('/', "!")).exists()
}

fn process_count() -> Option<u64> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
            .count() as u64,
    )
}

/// Holds sysinfo's state between ticks (CPU usage needs the previous reading).
#[derive(Debug)]
pub struct Sampler {
    system: Option<SystemState>,
    start: Instant,
    prev: Option<Snapshot>,
}

#[derive(Debug)]
struct SystemState {
    sys: System,
    disks: Disks,
    networks: Networks,
}

impl Sampler {
    /// A sampler of host metrics; with `host_metrics` false, only the collector's own.
    pub fn new(host_metrics: bool) -> Result<Sampler, SourceError> {
        let start_err = |e: sysinfo::Error| SourceError::Start { source_name: SOURCE, reason: e.to_string() };
        let system = if host_metrics {
            Some(SystemState {
                sys: System::new().map_err(start_err)?,
                disks: Disks::new().map_err(start_err)?,
                networks: Networks::new().map_err(start_err)?,
            })
        } else {
            None
        };
        Ok(Sampler { system, start: Instant::now(), prev: None })
    }

    /// Reads the system now. Blocking: call it off the async runtime.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        let st = self.system.as_mut()?;
        st.sys.refresh_cpu_usage();
        st.sys.refresh_memory();
        st.disks.refresh(true);
        st.networks.refresh(true);

        let mut seen = HashSet::new();
        let filesystems = st
            .disks
            .iter()
            .filter(|d| {
                let fstype = d.file_system().to_string_lossy();
                !PSEUDO_FS.contains(&fstype.as_ref()) && d.total_space() > 0
            })
            .filter(|d| seen.insert(d.mount_point().to_path_buf()))
            .map(|d| Filesystem {
                mount: d.mount_point().to_string_lossy().into_owned(),
                device: d.name().to_string_lossy().into_owned(),
                fstype: d.file_system().to_string_lossy().into_owned(),
                total: d.total_space(),
                available: d.available_space(),
            })
            .collect();
        let mut nets: Vec<NetIo> = st
            .networks
            .iter()
            .filter(|(name, _)| name.to_str() != Some("lo"))
            .map(|(name, n)| NetIo {
                iface: name.to_string_lossy().into_owned(),
                rx_bytes: n.total_received(),
                tx_bytes: n.total_transmitted(),
                rx_packets: n.total_packets_received(),
                tx_packets: n.total_packets_transmitted(),
            })
            .collect();
        nets.sort_by(|a, b| a.iface.cmp(&b.iface));
        let disks =
            std::fs::read_to_string("/proc/diskstats").map(|t| parse_diskstats(&t, is_whole_disk)).unwrap_or_default();

        Some(Snapshot {
            mono: self.start.elapsed(),
            cpu_total: f64::from(st.sys.global_cpu_usage()),
            cpus: st.sys.cpus().iter().map(|c| f64::from(c.usage())).collect(),
            load: System::load_average().ok().map(|l| [l.one, l.five, l.fifteen]),
            memory_total: st.sys.total_memory(),
            memory_used: st.sys.used_memory(),
            memory_available: st.sys.available_memory(),
            swap_total: st.sys.total_swap(),
            swap_used: st.sys.used_swap(),
            filesystems,
            disks,
            nets,
            process_count: process_count(),
            uptime: System::uptime().ok(),
        })
    }

    /// This tick's host rows (none when host metrics are off).
    pub fn sample(&mut self) -> Vec<Sample> {
        let Some(cur) = self.snapshot() else {
            return Vec::new();
        };
        let rows = samples(self.prev.as_ref(), &cur);
        self.prev = Some(cur);
        rows
    }

    /// One tick as an encoded `metrics` batch: host rows and the collector's own, one `ts`.
    pub fn sample_batch(&mut self, node: &str, stats: &Stats) -> Result<Vec<u8>, wire::WireError> {
        let ts = now_micros();
        let mut b = MetricsBuilder::new();
        for s in self.sample() {
            let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.push(ts, node, s.name, s.value, &labels);
        }
        for (name, source, v) in stats.snapshot() {
            match source {
                Some(src) => b.push(ts, node, name, v as f64, &[("source", src)]),
                None => b.push(ts, node, name, v as f64, &[]),
            }
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(parse_rss) {
            b.push(ts, node, "lake_collector_rss_bytes", rss as f64, &[]);
        }
        let batch = b.finish();
        wire::encode(&batch.schema(), &[batch])
    }
}

/// The host metrics source: samples every `interval` and appends to the spool.
#[derive(Debug)]
pub struct HostSource {
    /// Node name written in `host`.
    pub node: String,
    /// Time between samples.
    pub interval: Duration,
    /// Whether to read host metrics, or only the collector's own counters.
    pub host_metrics: bool,
    /// Where batches go.
    pub spool: SpoolHandle,
    /// Shared counters.
    pub stats: Arc<Stats>,
}

impl HostSource {
    /// Samples until `cancel`; a failed sample or append is logged, counted and skipped.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let mut sampler = Sampler::new(self.host_metrics)?;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let node: Arc<str> = Arc::from(self.node.as_str());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let (node2, stats) = (Arc::clone(&node), Arc::clone(&self.stats));
            let (back, encoded) = tokio::task::spawn_blocking(move || {
                let r = sampler.sample_batch(&node2, &stats);
                (sampler, r)
            })
            .await
            .map_err(|error| SourceError::Task { source_name: SOURCE, error })?;
            sampler = back;
            let body = match encoded {
                Ok(b) => b,
                Err(error) => {
                    Stats::add(&self.stats.sample_errors, 1);
                    warn!(%error, "host sample not encoded");
                    continue;
                }
            };
            // Metrics cannot be read again later, so a full spool drops old ones rather
            // than pausing.
            match self.spool.append(Table::Metrics.name().to_string(), body, OnFull::DropOldest).await {
                Ok(seq) => debug!(seq, "host sample spooled"),
                // Counted and logged (rate-limited) by the spool.
                Err(SpoolError::Dropped { .. }) => {}
                Err(error) => {
                    Stats::add(&self.stats.dropped_batches, 1);
                    warn!(%error, "host sample not spooled");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snap(mono_secs: u64, rx: u64, read: u64) -> Snapshot {
        Snapshot {
            mono: Duration::from_secs(mono_secs),
            cpu_total: 12.5,
            cpus: vec![10.0, 15.0],
            load: Some([0.5, 0.25, 0.125]),
            memory_total: 1000,
            memory_used: 400,
            memory_available: 600,
            filesystems: vec![Filesystem {
                mount: "/".into(),
                device: "/dev/vda1".into(),
                fstype: "ext4".into(),
                total: 100,
                available: 25,
            }],
            disks: vec![DiskIo { device: "vda".into(), read_bytes: read, written_bytes: 0 }],
            nets: vec![NetIo { iface: "eth0".into(), rx_bytes: rx, tx_bytes: 0, rx_packets: 0, tx_packets: 0 }],
            process_count: Some(42),
            uptime: Some(3600),
            ..Snapshot::default()
        }
    }

    fn find<'a>(rows: &'a [Sample], name: &str) -> Vec<&'a Sample> {
        rows.iter().filter(|s| s.name == name).collect()
    }

    #[test]
    fn first_sample_has_totals_only_then_rates_over_real_elapsed_time() {
        let a = snap(100, 1_000, 4096);
        let first = samples(None, &a);
        assert!(find(&first, "cpu_usage_percent").is_empty());
        assert!(find(&first, "net_rx_bytes_per_second").is_empty());
        assert_eq!(find(&first, "net_rx_bytes_total")[0].value, 1_000.0);
        assert_eq!(find(&first, "filesystem_used_bytes")[0].value, 75.0);
        assert_eq!(find(&first, "filesystem_used_ratio")[0].value, 0.75);
        assert_eq!(
            find(&first, "filesystem_total_bytes")[0].labels,
            vec![("mount", "/".into()), ("device", "/dev/vda1".into()), ("fstype", "ext4".into())]
        );
        assert_eq!(find(&first, "load15")[0].value, 0.125);

        let b = snap(104, 3_000, 4096 + 8192);
        let second = samples(Some(&a), &b);
        let cpu = find(&second, "cpu_usage_percent");
        assert_eq!(cpu.len(), 3);
        assert_eq!(cpu[0].labels, vec![("cpu", "total".into())]);
        assert_eq!(cpu[2].labels, vec![("cpu", "1".into())]);
        assert_eq!(find(&second, "net_rx_bytes_per_second")[0].value, 500.0);
        assert_eq!(find(&second, "disk_read_bytes_per_second")[0].value, 2048.0);

        // A counter reset yields no rate rather than a huge or negative one.
        let c = snap(108, 10, 0);
        let third = samples(Some(&b), &c);
        assert!(find(&third, "net_rx_bytes_per_second").is_empty());
        assert!(find(&third, "disk_read_bytes_per_second").is_empty());
        assert_eq!(find(&third, "net_rx_bytes_total")[0].value, 10.0);
    }

    #[test]
    fn diskstats_keeps_whole_disks_in_bytes() {
        let text = "   7       0 loop0 5 0 10 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
                    254       0 vda 19458 5214 3929618 41153 3309 26893 2758440 6353 0 4216 47828\n\
                    254       1 vda1 100 0 200 0 10 0 20 0 0 0 0\n\
                    253       0 zram0 0 0 0 0 0 0 0 0 0 0 0\n\
                    garbage\n";
        let disks = parse_diskstats(text, |n| !n.ends_with('1'));
        assert_eq!(
            disks,
            vec![DiskIo { device: "vda".into(), read_bytes: 3_929_618 * 512, written_bytes: 2_758_440 * 512 }]
        );
    }

    #[test]
    fn rss_from_proc_status() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t    5120 kB\n"), Some(5120 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn sampling_this_machine_twice() {
        let mut s = Sampler::new(true).unwrap();
        let first = s.sample();
        assert!(!find(&first, "load1").is_empty());
        assert!(!find(&first, "memory_used_bytes").is_empty());
        // sysinfo measures CPU usage between two refreshes at least 200ms apart: real time.
        std::thread::sleep(Duration::from_millis(300));
        let second = s.sample();
        for name in [
            "cpu_usage_percent",
            "load1",
            "memory_used_bytes",
            "filesystem_total_bytes",
            "uptime_seconds",
            "process_count",
        ] {
            assert!(!find(&second, name).is_empty(), "{name} missing in {second:#?}");
        }
        assert!(find(&second, "cpu_usage_percent").iter().any(|c| c.labels == vec![("cpu", "total".to_string())]));
        assert!(!find(&second, "net_rx_bytes_per_second").is_empty(), "net rates on the 2nd sample");
        assert!(second.iter().all(|r| r.labels.iter().all(|(_, v)| v != "lo")));
        for fs in find(&second, "filesystem_total_bytes") {
            let fstype = &fs.labels[2].1;
            assert!(!PSEUDO_FS.contains(&fstype.as_str()), "{fstype}");
        }

        let stats = Stats::default();
        let body = s.sample_batch("n1", &stats).unwrap();
        let (schema, batches) = wire::decode(&body).unwrap();
        assert_eq!(batches.len(), 1);
        let batch = wire::conform(Table::Metrics, &Table::Metrics.schema(), &batches[0]).unwrap();
        assert_eq!(schema.fields().len(), Table::Metrics.schema().fields().len());
        let ts = batch.column(0).as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>().unwrap();
        assert!(ts.iter().all(|t| t == ts.iter().next().flatten()), "one ts per tick");
        let names = batch.column(2).as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
        let names: Vec<&str> = names.iter().flatten().collect();
        for n in [
            "lake_collector_spool_bytes",
            "lake_collector_dropped_batches_total",
            "lake_collector_rss_bytes",
            "cpu_usage_percent",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
    }
}
