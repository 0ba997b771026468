//! Bounds every ingested row must respect, whichever way it came (Arrow IPC, custom
//! NDJSON/CSV, OTLP). They are checked at the edge, before the WAL, so that nothing the
//! lake stores can break a partition path, retention or a query. A batch with a row out of
//! bounds is refused whole (400) with a message naming the row; nothing is quarantined.
//!
//! - **Time window.** `ts` lies between [`EARLIEST`] (1900-01-01T00:00:00Z) and
//!   [`MAX_AHEAD`] (one day) past the lake's clock. A row from the far future would sit in
//!   a partition that retention never reaches and on top of every "latest value" query; a
//!   year before 1000 or after 9999 cannot even be written as a `date=YYYY-MM-DD`
//!   partition. The collector keeps a refused batch in its `rejected/` directory with the
//!   lake's answer, so a node with a wrong clock loses nothing that cannot be re-sent.
//! - **Map and list sizes.** A `labels`/`attrs` map (or a list) holds at most
//!   [`MAX_MAP_ENTRIES`] entries in one row. OpenTelemetry SDKs cap attributes at 128 by
//!   default; ten thousand labels on one sample is a bug upstream, not telemetry.
//! - **Non-UTC timestamps** never get here: an Arrow `ts` must be `Timestamp(µs, "UTC")`
//!   ([`lake_format::wire::conform`] names the column otherwise); a custom row's RFC 3339
//!   time must carry an offset (`Z`, `+02:00`) and is stored as the UTC instant it names.

use std::fmt;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};

/// Earliest `ts` accepted: 1900-01-01T00:00:00Z, in µs since the epoch.
pub const EARLIEST: i64 = -2_208_988_800_000_000;
/// How far past the lake's clock a `ts` may be: one day, in µs.
pub const MAX_AHEAD: i64 = 86_400_000_000;
/// Most entries of one map (`labels`, `attrs`) or list value in one row.
pub const MAX_MAP_ENTRIES: usize = 1000;

/// The accepted range of `ts` at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    now: i64,
}

impl Window {
    /// The window when the lake's clock reads `now` (µs since the epoch).
    pub fn at(now: i64) -> Window {
        Window { now }
    }

    /// Why `ts` is outside the window, if it is.
    pub fn check(&self, ts: i64) -> Result<(), String> {
        if ts < EARLIEST {
            Err(format!("{} is before 1900-01-01T00:00:00Z, the earliest time the lake stores", show(ts)))
        } else if ts > self.now.saturating_add(MAX_AHEAD) {
            Err(format!(
                "{} is more than a day ahead of the lake's clock ({}); is the sender's clock or time zone wrong?",
                show(ts),
                show(self.now)
            ))
        } else {
            Ok(())
        }
    }
}

/// A timestamp in µs as RFC 3339 UTC, or as the raw number when out of any calendar.
pub fn show(ts: i64) -> String {
    jiff::Timestamp::from_microsecond(ts).map(|t| t.to_string()).unwrap_or_else(|_| format!("{ts} µs since 1970"))
}

/// A row of a batch that breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the row, counting from 0 across the batches of one body.
    pub row: usize,
    /// The column.
    pub column: String,
    /// What is wrong.
    pub message: String,
    /// Set when the row's `ts` is ahead of the lake's clock by more than [`MAX_AHEAD`]:
    /// the one refusal a sender's clock (or the lake's) explains, answered with a
    /// machine-readable `"code": "clock_skew"` (see [`super::error::ApiError::rows_refused`]).
    pub skew: Option<Skew>,
}

/// A `ts` too far ahead of the lake's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// The row's `ts`, µs since 1970.
    pub ts: i64,
    /// The lake's clock when it checked, µs since 1970.
    pub now: i64,
}

impl Skew {
    /// The skew of `ts` when the lake's clock reads `now`, if it is past [`MAX_AHEAD`].
    pub fn ahead(ts: i64, now: i64) -> Option<Skew> {
        (ts > now.saturating_add(MAX_AHEAD)).then_some(Skew { ts, now })
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {} (counting from 0), column {:?}: {}", self.row, self.column, self.message)
    }
}

/// Checks every row of `batches`: `ts` within `window`, maps and lists within
/// [`MAX_MAP_ENTRIES`]. The first row that breaks a bound is the error.
pub fn check(batches: &[RecordBatch], window: Window) -> Result<(), Violation> {
    let mut base = 0;
    for batch in batches {
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let violation = |i: usize, message: String| Violation { row: base + i, column: field.name().clone(), message, skew: None };
            match field.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, _) if field.name() == "ts" => {
                    let ts = column.as_primitive::<TimestampMicrosecondType>();
                    for (i, t) in ts.iter().enumerate() {
                        if let Some(t) = t {
                            window.check(t).map_err(|m| Violation {
                                skew: Skew::ahead(t, window.now),
                                ..violation(i, m)
                            })?;
                        }
                    }
                }
                DataType::Map(..) => {
                    let offsets = column.as_map().offsets();
                    entries_within(offsets.windows(2).map(|w| (w[1] - w[0]) as usize), "map").map_err(|(i, m)| violation(i, m))?;
                }
                DataType::List(_) => {
                    let offsets = column.as_list::<i32>().offsets();
                    entries_within(offsets.windows(2).map(|w| (w[1] - w[0]) as usize), "list").map_err(|(i, m)| violation(i, m))?;
                }
                _ => {}
            }
        }
        base += batch.num_rows();
    }
    Ok(())
}

fn entries_within(sizes: impl Iterator<Item = usize>, what: &str) -> Result<(), (usize, String)> {
    for (i, n) in sizes.enumerate() {
        if n > MAX_MAP_ENTRIES {
            return Err((i, format!("{n} {what} entries in one row; at most {MAX_MAP_ENTRIES} are accepted")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_format::rows::MetricsBuilder;

    const NOW: i64 = 1_795_374_070_000_000; // 2026-11-22

    #[test]
    fn the_window_names_what_is_wrong() {
        let w = Window::at(NOW);
        assert!(w.check(NOW).is_ok());
        assert!(w.check(EARLIEST).is_ok());
        assert!(w.check(NOW + MAX_AHEAD).is_ok());
        let e = w.check(NOW + MAX_AHEAD + 1).unwrap_err();
        assert!(e.contains("2026-11-23") && e.contains("ahead"), "{e}");
        let e = w.check(EARLIEST - 1).unwrap_err();
        assert!(e.contains("1899-12-31T23:59:59.999999Z") && e.contains("1900"), "{e}");
        assert!(w.check(i64::MAX).unwrap_err().contains("µs since 1970"));
        assert!(w.check(i64::MIN).unwrap_err().contains("µs since 1970"));
    }

    #[test]
    fn check_names_the_row_and_column() {
        let mut b = MetricsBuilder::new();
        b.push(NOW, "a", "m", 1.0, &[("k", "v")]);
        let labels: Vec<(String, String)> = (0..=MAX_MAP_ENTRIES).map(|i| (format!("k{i}"), "v".into())).collect();
        let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.push(NOW, "a", "m", 2.0, &pairs);
        let wide = b.finish();
        let v = check(&[wide], Window::at(NOW)).unwrap_err();
        assert_eq!((v.row, v.column.as_str()), (1, "labels"));
        assert!(v.message.contains("1001 map entries"), "{v}");

        let mut ok = MetricsBuilder::new();
        ok.push(NOW, "a", "m", 1.0, &pairs[..MAX_MAP_ENTRIES]);
        let mut late = MetricsBuilder::new();
        late.push(NOW, "a", "m", 1.0, &[]);
        late.push(NOW + 2 * MAX_AHEAD, "a", "m", 1.0, &[]);
        let v = check(&[ok.finish(), late.finish()], Window::at(NOW)).unwrap_err();
        assert_eq!((v.row, v.column.as_str()), (2, "ts"));
        assert!(v.to_string().starts_with("row 2 (counting from 0), column \"ts\": 2026-11-24"), "{v}");
        assert_eq!(v.skew, Some(Skew { ts: NOW + 2 * MAX_AHEAD, now: NOW }), "a clock refusal says so");
        let mut early = MetricsBuilder::new();
        early.push(EARLIEST - 1, "a", "m", 1.0, &[]);
        assert_eq!(check(&[early.finish()], Window::at(NOW)).unwrap_err().skew, None, "1899 is no clock skew");
    }
}
