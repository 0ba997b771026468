//! Self-describing configuration values: durations (`"30s"`, `"2m"`) and byte sizes
//! (`"64MiB"`, `"1GiB"`, or a plain integer of bytes).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the humantime way (`"10s"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(Dur)
            .map_err(|e| format!("invalid duration {s:?}: {e} (examples: \"10s\", \"2m\", \"1h\")"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes; accepts `"512KiB"`, `"64MiB"`, `"1GiB"`, `"10MB"` or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?} (examples: \"64MiB\", \"1GiB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            "TB" => 1_000_000_000_000,
            "TiB" => 1 << 40,
            other => return Err(format!("invalid size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().to_string(), "1GiB");
        assert_eq!("10 MB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000));
        assert!("10 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999999TiB".parse::<ByteSize>().is_err());
        #[derive(Deserialize)]
        struct C {
            a: ByteSize,
            b: Dur,
        }
        let c: C = toml::from_str("a = 4096\nb = \"1m 30s\"").unwrap();
        assert_eq!((c.a, c.b), (ByteSize(4096), Dur(Duration::from_secs(90))));
        assert!(toml::from_str::<C>("a = 1\nb = \"soon\"").is_err());
    }
}
