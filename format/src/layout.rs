//! The on-disk layout of the lake, shared by the writer, the query engine and the archive.
//!
//! ```text
//! <data>/tables/<table>/date=YYYY-MM-DD/<file>.parquet   committed, visible to queries
//! <data>/staging/                                        files being written, never queried
//! <data>/wal/                                            write-ahead log segments
//! <data>/state/                                          small state files (batch ids, ...)
//! ```
//! Partitions are Hive style so any engine can read the tree (or its copy on R2) directly.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::catalog::Table;

/// Directory holding every table.
pub const TABLES_DIR: &str = "tables";
/// Directory for files being written.
pub const STAGING_DIR: &str = "staging";
/// Directory of the write-ahead log.
pub const WAL_DIR: &str = "wal";
/// Directory of small state files.
pub const STATE_DIR: &str = "state";
/// Extension of committed data files.
pub const PARQUET_EXT: &str = "parquet";

/// A calendar date (UTC), the partition key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    /// Year.
    pub year: i32,
    /// Month 1..=12.
    pub month: u32,
    /// Day 1..=31.
    pub day: u32,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Date {
    /// The UTC date of a timestamp in microseconds since the epoch.
    pub fn from_micros(ts: i64) -> Date {
        Date::from_days(ts.div_euclid(MICROS_PER_DAY))
    }

    /// The date `days` days after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (`days_from_civil`).
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.splitn(3, '-');
        let year = it.next()?.parse().ok()?;
        let month = it.next()?.parse().ok()?;
        let day = it.next()?.parse().ok()?;
        let d = Date { year, month, day };
        (Date::from_days(d.to_days()) == d && s.len() == 10).then_some(d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// `<data>/tables/<table>`.
pub fn table_dir(data: &Path, table: &str) -> PathBuf {
    data.join(TABLES_DIR).join(table)
}

/// `<data>/tables/<table>/date=YYYY-MM-DD`.
pub fn partition_dir(data: &Path, table: &str, date: Date) -> PathBuf {
    table_dir(data, table).join(format!("date={date}"))
}

/// Name of a data file: `<prefix>-<seq>.parquet`, zero padded so names sort by age.
pub fn file_name(prefix: &str, seq: u64) -> String {
    format!("{prefix}-{seq:012}.{PARQUET_EXT}")
}

/// The `seq` of a name [`file_name`] made with `prefix`; `None` for any other name.
pub fn file_seq(prefix: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_prefix('-')?.strip_suffix(PARQUET_EXT)?.strip_suffix('.')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Longest data file name accepted (most file systems' limit).
pub const MAX_FILE_NAME: usize = 255;

/// Checks a data file name that comes from outside the data directory (an archive
/// manifest, a bucket listing) before it is joined to a path: one path component of
/// `[A-Za-z0-9._-]`, not starting with `.`, ending in `.parquet`, at most
/// [`MAX_FILE_NAME`] bytes. So `../../tokens.toml`, `/etc/passwd`, `a/b.parquet` or
/// `.hidden.parquet` never reach the file system.
pub fn check_file_name(name: &str) -> Result<(), String> {
    let ext = format!(".{PARQUET_EXT}");
    if name.is_empty() || name.len() > MAX_FILE_NAME {
        return Err(format!("must be 1 to {MAX_FILE_NAME} bytes"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{c:?} is not allowed (only A-Z, a-z, 0-9, '.', '_' and '-': one file name, no path)"));
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if name.len() <= ext.len() || !name.ends_with(&ext) {
        return Err(format!("must end in {ext}"));
    }
    Ok(())
}

/// The glob matching every committed file of a table, for DuckDB's `read_parquet`.
pub fn table_glob(data: &Path, table: Table) -> PathBuf {
    table_dir(data, table.name()).join("date=*").join(format!("*.{PARQUET_EXT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_seq_reads_back_what_file_name_wrote() {
        for seq in [0, 7, 999_999_999_999, 1_000_000_000_000, u64::MAX] {
            assert_eq!(file_seq("f", &file_name("f", seq)), Some(seq));
        }
        for other in
            ["c-000000000001.parquet", "f-.parquet", "f-12.parquet.tmp", "f-1a.parquet", "f-+1.parquet", "f1.parquet"]
        {
            assert_eq!(file_seq("f", other), None, "{other}");
        }
    }

    #[test]
    fn file_names_from_outside_are_one_plain_component() {
        for ok in ["f-000000000001.parquet", "c-1795374070000000.parquet", "metrics.2026-11-25.parquet"] {
            assert_eq!(check_file_name(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("../../tokens.toml", "'/'"),
            ("..", "'.'"),
            ("../x.parquet", "'/'"),
            ("/etc/x.parquet", "'/'"),
            ("a/b.parquet", "'/'"),
            ("a\\b.parquet", "'\\\\'"),
            (".hidden.parquet", "start with '.'"),
            ("x.parquet.tmp", "end in .parquet"),
            (".parquet", "start with '.'"),
            ("", "1 to 255"),
            ("caf\u{e9}.parquet", "not allowed"),
            ("a\0.parquet", "not allowed"),
        ] {
            let e = check_file_name(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(check_file_name(&format!("{}.parquet", "a".repeat(250))).is_err());
    }

    #[test]
    fn dates_from_timestamps() {
        assert_eq!(Date::from_micros(0).to_string(), "1970-01-01");
        assert_eq!(Date::from_micros(1_795_374_070_653_498).to_string(), "2026-11-22");
        assert_eq!(Date::from_micros(-1).to_string(), "1969-12-31");
        assert_eq!(Date::from_days(11_016).to_string(), "2000-02-29");
    }

    #[test]
    fn paths() {
        let d = Date::parse("2026-11-22").unwrap();
        let p = partition_dir(Path::new("/data"), "metrics", d).join(file_name("f", 7));
        assert_eq!(p, Path::new("/data/tables/metrics/date=2026-11-22/f-000000000007.parquet"));
        assert!(Date::parse("2026-02-30").is_none());
        assert!(Date::parse("2026-1-2").is_none());
    }

    proptest::proptest! {
        #[test]
        fn days_round_trip(days in -1_000_000i64..1_000_000) {
            let d = Date::from_days(days);
            proptest::prop_assert_eq!(d.to_days(), days);
            proptest::prop_assert_eq!(Date::parse(&d.to_string()).filter(|_| d.year >= 1000 && d.year <= 9999), (d.year >= 1000 && d.year <= 9999).then_some(d));
        }
    }
}
