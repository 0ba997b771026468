//! Fixtures for the unit tests: Parquet files in the lake layout and in-memory fresh rows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use lake_format::layout::{file_name, partition_dir, Date};
use lake_format::rows::{text_map_builder, MetricsBuilder};
use lake_format::Table;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::engine::{Engine, FreshRows, Limits};

/// 2026-11-22T10:00:00Z in microseconds.
pub const TS: i64 = 1_795_341_600_000_000;

/// Fresh rows held in memory, settable per table; with a generation once
/// [`MemFresh::bump`] is called (no generation before: views are made anew every query).
#[derive(Debug, Default)]
pub struct MemFresh(Mutex<HashMap<Table, Vec<RecordBatch>>>, Mutex<Option<u64>>);

impl MemFresh {
    pub fn set(&self, table: Table, batches: Vec<RecordBatch>) {
        self.0.lock().unwrap().insert(table, batches);
    }

    /// The committed files changed: a new generation, as the lake's flush or swap makes.
    pub fn bump(&self) {
        let mut g = self.1.lock().unwrap();
        *g = Some(g.map_or(1, |n| n + 1));
    }
}

impl FreshRows for MemFresh {
    fn snapshot(&self, table: Table) -> Vec<RecordBatch> {
        self.0.lock().unwrap().get(&table).cloned().unwrap_or_default()
    }

    fn generation(&self) -> Option<u64> {
        *self.1.lock().unwrap()
    }
}

/// A metrics batch: `(ts offset in seconds, host, name, value, cpu label)`.
pub fn metrics(rows: &[(i64, &str, &str, f64, Option<&str>)]) -> RecordBatch {
    let mut b = MetricsBuilder::new();
    for &(secs, host, name, value, cpu) in rows {
        let labels: Vec<(&str, &str)> = cpu.map(|c| ("cpu", c)).into_iter().collect();
        b.push(TS + secs * 1_000_000, host, name, value, &labels);
    }
    b.finish()
}

/// One alerts row with a label and two channels: exercises Map and List columns.
pub fn alert(rule: &str, channels: &[&str]) -> RecordBatch {
    let mut labels = text_map_builder();
    labels.keys().append_value("instance");
    labels.values().append_value("n1");
    labels.append(true).unwrap();
    let mut list = ListBuilder::new(StringBuilder::new());
    for c in channels {
        list.values().append_value(c);
    }
    list.append(true);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![TS]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec!["n1"])),
        Arc::new(StringArray::from(vec![rule])),
        Arc::new(StringArray::from(vec!["firing"])),
        Arc::new(Float64Array::from(vec![Some(97.5)])),
        Arc::new(labels.finish()),
        Arc::new(StringArray::from(vec![Some("critical")])),
        Arc::new(StringArray::from(vec![Some("disk full")])),
        Arc::new(list.finish()),
    ];
    RecordBatch::try_new(Table::Alerts.schema(), cols).unwrap()
}

/// Writes `batch` as a committed zstd Parquet file of `table` on 2026-11-22.
pub fn write_parquet(data: &Path, table: Table, seq: u64, batch: &RecordBatch) {
    let dir = partition_dir(data, table.name(), Date::parse("2026-11-22").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join(file_name("t", seq))).unwrap();
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// An engine over `data` with the given fresh rows and default limits.
pub fn engine(data: &Path, fresh: Arc<MemFresh>) -> Arc<Engine> {
    engine_with(data, fresh, Limits::default())
}

pub fn engine_with(data: &Path, fresh: Arc<MemFresh>, limits: Limits) -> Arc<Engine> {
    Arc::new(Engine::open(data, fresh, limits).unwrap())
}

/// The notification tests' alert: `target` is down (firing) or back up (resolved).
pub fn notified_alert(target: &str, status: crate::alerts::state::Status) -> crate::alerts::state::NotifiedAlert {
    use crate::alerts::state::Status;
    use crate::alerts::Labels;
    const T0: i64 = 1_795_374_070_000_000;
    crate::alerts::state::NotifiedAlert {
        status,
        fingerprint: format!("{:016x}", target.len()),
        labels: Labels::from([("kind".into(), "http".into()), ("target".into(), target.into())]),
        details: Labels::from([("error".into(), "connection refused".into()), ("down_from".into(), "node-a".into())]),
        value: Some(2.0),
        message: format!("{target} is down"),
        starts_at: T0,
        ends_at: (status == Status::Resolved).then_some(T0 + 300_000_000),
        reminder: false,
    }
}

/// The notification tests' `uptime_down` notification of `alerts`: firing if any is.
pub fn uptime_notification(alerts: Vec<crate::alerts::state::NotifiedAlert>) -> crate::alerts::state::Notification {
    use crate::alerts::state::Status;
    let status = if alerts.iter().any(|a| a.status == Status::Firing) { Status::Firing } else { Status::Resolved };
    crate::alerts::state::Notification {
        rule: "uptime_down".into(),
        description: "an uptime target is down".into(),
        severity: crate::alerts::rules::Severity::Critical,
        status,
        alerts,
        created_at: 1_795_374_070_000_000 + 200_000_000,
        dashboard: "http://lake.example:7470/".into(),
        external_url: "http://lake.example:7470".into(),
    }
}
