//! Time zones for inputs that write local civil time (fail2ban's log, classic syslog
//! lines): the `timezone` config value parsed once into a [`jiff::tz::TimeZone`], and the
//! civil → UTC microseconds conversion the parsers share.
//!
//! Accepted values: `"local"` (this machine's zone, from `/etc/localtime` or `TZ`),
//! `"UTC"`, a fixed offset (`"+02:00"`, `"-0530"`, `"+01"`) or an IANA name read from
//! `/usr/share/zoneinfo` (`"Europe/Paris"`). A civil time that falls in a DST gap or
//! overlap resolves the "compatible" way (RFC 5545): later offset in a gap, earlier in a
//! fold — the same as most log readers, and at worst one hour off for one hour a year.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// Parses a `timezone` config value.
pub fn parse_zone(value: &str) -> Result<TimeZone, String> {
    let v = value.trim();
    match v {
        "local" => TimeZone::try_system()
            .map_err(|e| format!("timezone = \"local\": this machine's zone cannot be read ({e}); name it instead")),
        "UTC" | "utc" | "Z" => Ok(TimeZone::UTC),
        _ if v.starts_with('+') || v.starts_with('-') => parse_offset(v)
            .map(TimeZone::fixed)
            .ok_or_else(|| format!("timezone = {value:?}: a fixed offset is written like \"+02:00\" or \"-0530\"")),
        _ => TimeZone::get(v).map_err(|e| {
            format!("timezone = {value:?}: {e} (use \"local\", \"UTC\", an offset like \"+02:00\" or an IANA name like \"Europe/Paris\")")
        }),
    }
}

fn parse_offset(v: &str) -> Option<Offset> {
    let sign: i32 = if v.starts_with('-') { -1 } else { 1 };
    let digits: String = v[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (digits[..2].parse::<i32>().ok()?, digits[2..].parse::<i32>().ok()?),
        _ => return None,
    };
    if h > 25 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// A civil time in `tz` as microseconds since the epoch; `None` for an impossible date.
#[allow(clippy::too_many_arguments)]
pub fn civil_micros(
    tz: &TimeZone,
    year: i16,
    month: i8,
    day: i8,
    hour: i8,
    minute: i8,
    second: i8,
    micros: i32,
) -> Option<i64> {
    let dt = DateTime::new(year, month, day, hour, minute, second, micros.checked_mul(1000)?).ok()?;
    let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    Some(ts.as_microsecond())
}

/// The civil year "now" in `tz` (for syslog timestamps that carry none).
pub fn year_at(tz: &TimeZone, micros: i64) -> Option<i16> {
    let ts = jiff::Timestamp::from_microsecond(micros).ok()?;
    Some(tz.to_datetime(ts).year())
}

/// An RFC 3339 timestamp as microseconds since the epoch.
pub fn rfc3339_micros(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse_and_convert() {
        let utc = parse_zone("UTC").unwrap();
        assert_eq!(civil_micros(&utc, 1970, 1, 1, 0, 0, 1, 5), Some(1_000_005));
        let plus2 = parse_zone("+02:00").unwrap();
        assert_eq!(civil_micros(&plus2, 1970, 1, 1, 2, 0, 0, 0), Some(0));
        let minus = parse_zone("-0530").unwrap();
        assert_eq!(civil_micros(&minus, 1970, 1, 1, 0, 0, 0, 0), Some(19_800_000_000));
        let paris = parse_zone("Europe/Paris").unwrap();
        // 2026-07-01 12:00 CEST = 10:00 UTC.
        let want = rfc3339_micros("2026-07-01T10:00:00Z").unwrap();
        assert_eq!(civil_micros(&paris, 2026, 7, 1, 12, 0, 0, 0), Some(want));
        parse_zone("local").unwrap();
        assert!(parse_zone("Mars/Olympus").is_err());
        assert!(parse_zone("+2x").is_err());
        assert_eq!(civil_micros(&utc, 2026, 2, 30, 0, 0, 0, 0), None);
    }
}
