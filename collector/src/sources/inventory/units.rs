//! systemd units from `systemctl list-units --all`: the pure parsers of its JSON output
//! (`--output=json`, systemd 246+) and of its plain table (`--plain --no-legend`, any
//! systemd), whether systemd runs at all, and the diff of two snapshots into `units`
//! changes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Arguments given to `systemctl`. `--plain` drops the status glyph column, `--full` keeps
/// long names whole; JSON output lists the same columns as fields.
pub const SYSTEMCTL_ARGS: &[&str] =
    &["list-units", "--all", "--plain", "--no-legend", "--no-pager", "--full", "--output=json"];

/// The state of one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    /// LOAD: loaded, not-found, masked, …
    pub load: String,
    /// ACTIVE: active, inactive, failed, activating, …
    pub active: String,
    /// SUB: running, exited, dead, …
    pub sub: String,
    /// DESCRIPTION.
    #[serde(default)]
    pub description: String,
}

/// Units by name.
pub type Units = BTreeMap<String, UnitState>;

#[derive(Deserialize)]
struct JsonUnit {
    unit: String,
    load: String,
    active: String,
    sub: String,
    #[serde(default)]
    description: Option<String>,
}

/// Parses what `systemctl` printed: a JSON array (systemd ≥ 246 with `--output=json`), or
/// the plain table otherwise. Lines of the table that do not parse are returned.
pub fn parse(text: &str) -> Result<(Units, Vec<String>), String> {
    let t = text.trim_start();
    if t.starts_with('[') {
        let units: Vec<JsonUnit> = serde_json::from_str(t).map_err(|e| format!("systemctl JSON output: {e}"))?;
        let out = units
            .into_iter()
            .filter(|u| !u.unit.is_empty())
            .map(|u| {
                (
                    u.unit,
                    UnitState {
                        load: u.load,
                        active: u.active,
                        sub: u.sub,
                        description: u.description.unwrap_or_default(),
                    },
                )
            })
            .collect();
        return Ok((out, Vec::new()));
    }
    Ok(parse_plain(text))
}

/// `UNIT LOAD ACTIVE SUB [JOB] DESCRIPTION` rows of `--plain --no-legend` output. A leading
/// `●`/`*` glyph (output without `--plain`) is skipped. A header or legend line, if any, is
/// skipped. JOB is a column only while some unit has a job; it is told apart by its values.
pub fn parse_plain(text: &str) -> (Units, Vec<String>) {
    const JOBS: &[&str] =
        &["start", "stop", "reload", "restart", "try-restart", "reload-or-start", "verify-active", "nop"];
    let mut out = Units::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let l = line.trim_start_matches(['●', '*', ' ', '\u{25cb}']).trim_end();
        if l.is_empty()
            || l.starts_with("UNIT ")
            || l.starts_with("LOAD ")
            || l.starts_with("ACTIVE ")
            || l.starts_with("SUB ")
        {
            continue;
        }
        if l.ends_with("loaded units listed.")
            || l.starts_with("To show all installed unit files")
            || l.starts_with("Pass --all")
        {
            continue;
        }
        let mut words = l.split_whitespace();
        let (Some(unit), Some(load), Some(active), Some(sub)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bad.push(line.to_string());
            continue;
        };
        // The description is the rest of the line after SUB (and JOB).
        let mut rest = after_words(l, 4);
        if let Some((job, after)) = rest.split_once(char::is_whitespace) {
            if JOBS.contains(&job) {
                rest = after.trim_start();
            }
        }
        out.insert(
            unit.to_string(),
            UnitState {
                load: load.to_string(),
                active: active.to_string(),
                sub: sub.to_string(),
                description: rest.to_string(),
            },
        );
    }
    (out, bad)
}

/// What follows the first `n` whitespace-separated words of `s`.
fn after_words(s: &str, n: usize) -> &str {
    let mut rest = s;
    for _ in 0..n {
        rest = rest.trim_start();
        rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
    }
    rest.trim_start()
}

/// Whether units can be listed here: `Err` with one clear sentence when not. systemd
/// runs as the init system when `<run_dir>/system` exists (`sd_booted()`'s test,
/// `run_dir` is `/run/systemd`); the command must exist.
pub fn availability(systemctl: &Path, run_dir: &Path) -> Result<(), String> {
    if !run_dir.join("system").is_dir() {
        return Err(format!(
            "systemd is not the init system here ({} does not exist): units are not inventoried",
            run_dir.join("system").display()
        ));
    }
    if systemctl.components().count() > 1 && !systemctl.exists() {
        return Err(format!("{} not found: units are not inventoried", systemctl.display()));
    }
    Ok(())
}

/// One row of `units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitChange {
    /// Unit name.
    pub unit: String,
    /// Its state now (as last seen for `removed`).
    pub state: UnitState,
    /// present, added, removed, started, stopped, failed or changed.
    pub change: &'static str,
}

/// Changes from `old` to `new`; everything `present` when there is no `old`. A change of
/// description alone is no row.
pub fn diff(old: Option<&Units>, new: &Units) -> Vec<UnitChange> {
    let row =
        |unit: &str, state: &UnitState, change| UnitChange { unit: unit.to_string(), state: state.clone(), change };
    let Some(old) = old else {
        return new.iter().map(|(u, s)| row(u, s, "present")).collect();
    };
    let mut out = Vec::new();
    for (u, s) in new {
        let change = match old.get(u) {
            None if s.active == "failed" => "failed",
            None => "added",
            Some(was) if was.active != s.active => match s.active.as_str() {
                "failed" => "failed",
                "active" => "started",
                "inactive" => "stopped",
                _ => "changed",
            },
            Some(was) if was.sub != s.sub || was.load != s.load => "changed",
            Some(_) => continue,
        };
        out.push(row(u, s, change));
    }
    for (u, s) in old {
        if !new.contains_key(u) {
            out.push(row(u, s, "removed"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(rows: &[(&str, &str, &str)]) -> Units {
        rows.iter()
            .map(|(u, a, s)| {
                (
                    u.to_string(),
                    UnitState {
                        load: "loaded".into(),
                        active: a.to_string(),
                        sub: s.to_string(),
                        description: String::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn transitions_are_named() {
        let old = units(&[
            ("a.service", "active", "running"),
            ("b.service", "active", "running"),
            ("c.service", "inactive", "dead"),
            ("d.service", "active", "exited"),
            ("gone.mount", "active", "mounted"),
            ("e.service", "active", "running"),
        ]);
        let new = units(&[
            ("a.service", "failed", "failed"),
            ("b.service", "inactive", "dead"),
            ("c.service", "active", "running"),
            ("d.service", "active", "running"),
            ("new.service", "failed", "failed"),
            ("e.service", "active", "running"),
            ("f.timer", "active", "waiting"),
        ]);
        let got: Vec<(String, &str)> = diff(Some(&old), &new).into_iter().map(|c| (c.unit, c.change)).collect();
        let want = [
            ("a.service", "failed"),
            ("b.service", "stopped"),
            ("c.service", "started"),
            ("d.service", "changed"),
            ("f.timer", "added"),
            ("new.service", "failed"),
            ("gone.mount", "removed"),
        ];
        assert_eq!(got, want.map(|(u, c)| (u.to_string(), c)));
    }

    #[test]
    fn plain_rows_with_glyphs_jobs_and_legends() {
        let text = "● smartd.service loaded failed failed Self Monitoring and Reporting Technology (SMART) Daemon\n  \
                    ssh.service loaded active running OpenBSD Secure Shell server\n\
                    apt-daily.service loaded activating start start Daily apt download activities\n\
                    \n\
                    LOAD   = Reflects whether the unit definition was properly loaded.\n\
                    3 loaded units listed.\n\
                    broken\n";
        let (u, bad) = parse_plain(text);
        assert_eq!(bad, ["broken"]);
        assert_eq!(u["smartd.service"].active, "failed");
        assert_eq!(u["ssh.service"].description, "OpenBSD Secure Shell server");
        assert_eq!(u["apt-daily.service"].sub, "start");
        assert_eq!(u["apt-daily.service"].description, "Daily apt download activities");
    }

    #[test]
    fn availability_says_why_once_in_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let err = availability(Path::new("systemctl"), dir.path()).unwrap_err();
        assert!(err.contains("not the init system"), "{err}");
        std::fs::create_dir(dir.path().join("system")).unwrap();
        assert!(availability(Path::new("systemctl"), dir.path()).is_ok());
        let err = availability(Path::new("/nonexistent/systemctl"), dir.path()).unwrap_err();
        assert!(err.contains("/nonexistent/systemctl not found"), "{err}");
    }
}
