//! Installed packages from dpkg: `dpkg-query -W -f=…` output parsed into a snapshot, two
//! snapshots compared into `packages` changes, and Debian's version ordering to tell an
//! upgrade from a downgrade.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The `-f` format given to `dpkg-query -W` (dpkg expands `\t` and `\n` itself).
pub const DPKG_FORMAT: &str = r"${Package}\t${Architecture}\t${Version}\t${db:Status-Abbrev}\n";

/// Installed packages: `name:arch` → version.
pub type Packages = BTreeMap<String, String>;

/// Parses [`DPKG_FORMAT`] output. Packages whose status is "not installed" or
/// "config-files" (removed, configuration kept) are left out; every other state
/// (installed, unpacked, half-configured, triggers pending, …) counts as installed.
/// Malformed lines are returned as errors, not dropped silently.
pub fn parse_dpkg(text: &str) -> (Packages, Vec<String>) {
    let mut out = Packages::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(name), Some(arch), Some(version), Some(status)) = (f.first(), f.get(1), f.get(2), f.get(3)) else {
            bad.push(line.to_string());
            continue;
        };
        if name.is_empty() || f.len() != 4 {
            bad.push(line.to_string());
            continue;
        }
        // db:Status-Abbrev is want, status, error flags: "ii ", "rc ", "iU ", …
        match status.as_bytes().get(1) {
            Some(b'n') | Some(b'c') => continue,
            Some(_) => {}
            None => {
                bad.push(line.to_string());
                continue;
            }
        }
        out.insert(format!("{name}:{arch}"), (*version).to_string());
    }
    (out, bad)
}

/// `name:arch` split back.
pub fn split_key(key: &str) -> (&str, &str) {
    key.rsplit_once(':').unwrap_or((key, ""))
}

/// One row of `packages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageChange {
    /// Package name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// Version now (the removed version for `removed`).
    pub version: String,
    /// Version before, for upgrades and downgrades.
    pub previous_version: Option<String>,
    /// present, installed, removed, upgraded, downgraded.
    pub change: &'static str,
}

/// Changes from `old` to `new`; every package `present` when there is no `old`.
pub fn diff(old: Option<&Packages>, new: &Packages) -> Vec<PackageChange> {
    let row = |key: &str, version: &str, previous: Option<&str>, change| {
        let (name, arch) = split_key(key);
        PackageChange {
            name: name.to_string(),
            arch: arch.to_string(),
            version: version.to_string(),
            previous_version: previous.map(str::to_string),
            change,
        }
    };
    let Some(old) = old else {
        return new.iter().map(|(k, v)| row(k, v, None, "present")).collect();
    };
    let mut out = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => out.push(row(k, v, None, "installed")),
            Some(was) if was != v => {
                let change = match compare_versions(v, was) {
                    Ordering::Less => "downgraded",
                    _ => "upgraded",
                };
                out.push(row(k, v, Some(was), change));
            }
            Some(_) => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(row(k, v, None, "removed"));
        }
    }
    out
}

/// Debian version ordering (`dpkg --compare-versions`): epoch, then upstream version,
/// then revision, each compared with dpkg's `verrevcmp` (`~` sorts before everything,
/// even the end; digit runs compare as numbers; letters before other characters).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb).then_with(|| verrevcmp(ua, ub)).then_with(|| verrevcmp(ra, rb))
}

fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), rest),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefixes, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // Digit runs, as numbers.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (si, sj) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let c = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_output_is_parsed_and_removed_packages_left_out() {
        let text = "adduser\tall\t3.134\tii \nlibc6\tamd64\t2.36-9+deb12u9\tii \nlibc6\ti386\t2.36-9+deb12u9\tii \nold\tamd64\t1.0\trc \nhalf\tamd64\t2\tiU \nbroken line\n";
        let (p, bad) = parse_dpkg(text);
        assert_eq!(p.len(), 4);
        assert_eq!(p["libc6:i386"], "2.36-9+deb12u9");
        assert!(p.contains_key("half:amd64") && !p.contains_key("old:amd64"));
        assert_eq!(bad, ["broken line"]);
        assert_eq!(split_key("libc6:amd64"), ("libc6", "amd64"));
    }

    #[test]
    fn versions_order_like_dpkg() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1:0.1", "2.0", Greater),
            ("2.36-9+deb12u9", "2.36-9+deb12u10", Less),
            ("2.36-9+deb12u9", "2.36-9", Greater),
            ("1.0a", "1.0-1", Greater),
            ("1.0", "1.0-0", Equal),
            ("007", "7", Equal),
            ("1.2.3", "1.2.3+b1", Less),
            ("a", "+", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn diffs_name_every_kind_of_change() {
        let old: Packages = [("a:amd64", "1.0"), ("b:all", "2.0"), ("c:amd64", "3.0"), ("d:amd64", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let new: Packages = [("a:amd64", "1.1"), ("b:all", "1:0.5"), ("c:amd64", "2.9"), ("e:amd64", "5")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = diff(Some(&old), &new);
        let got: Vec<(&str, &str, Option<&str>)> =
            d.iter().map(|c| (c.name.as_str(), c.change, c.previous_version.as_deref())).collect();
        assert_eq!(
            got,
            [
                ("a", "upgraded", Some("1.0")),
                ("b", "upgraded", Some("2.0")),
                ("c", "downgraded", Some("3.0")),
                ("e", "installed", None),
                ("d", "removed", None)
            ]
        );
        assert!(diff(Some(&new), &new).is_empty());
        assert!(diff(None, &new).iter().all(|c| c.change == "present"));
    }
}
