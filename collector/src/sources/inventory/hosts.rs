//! The machine description of the `hosts` table: OS release (`/etc/os-release`), kernel
//! (`/proc/sys/kernel/osrelease`, like `uname -r`), CPU architecture (`uname -m`), CPU
//! count, memory, machine and boot ids, and whether a reboot is required
//! (`/var/run/reboot-required`, written by Debian's and Ubuntu's package scripts, with the
//! packages asking for it in `reboot-required.pkgs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One row of `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    /// `PRETTY_NAME` of os-release (else `NAME VERSION`).
    pub os: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// CPU architecture.
    pub arch: Option<String>,
    /// Logical CPUs.
    pub cpus: Option<i64>,
    /// Total memory, bytes.
    pub memory_bytes: Option<i64>,
    /// This collector's version.
    pub collector_version: String,
    /// Whether a reboot is required.
    pub reboot_required: bool,
    /// Other facts.
    pub attrs: BTreeMap<String, String>,
}

/// Where the facts are read from (tests point these at a temporary tree).
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// `/etc/os-release` (falls back to `/usr/lib/os-release` when missing).
    pub os_release: PathBuf,
    /// `/proc`.
    pub proc_root: PathBuf,
    /// `/var/run/reboot-required`.
    pub reboot_required: PathBuf,
    /// `/etc/machine-id`.
    pub machine_id: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            os_release: PathBuf::from("/etc/os-release"),
            proc_root: PathBuf::from("/proc"),
            reboot_required: PathBuf::from("/var/run/reboot-required"),
            machine_id: PathBuf::from("/etc/machine-id"),
        }
    }
}

/// `KEY=value` lines of os-release, values unquoted (double or single quotes, `\` escapes).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            let mut s = String::with_capacity(inner.len());
            let mut esc = false;
            for c in inner.chars() {
                if esc {
                    s.push(c);
                    esc = false;
                } else if c == '\\' && v.starts_with('"') {
                    esc = true;
                } else {
                    s.push(c);
                }
            }
            s
        } else {
            v.to_string()
        };
        out.insert(k.trim().to_string(), v);
    }
    out
}

/// `MemTotal` of `/proc/meminfo` text, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Logical CPUs in `/proc/cpuinfo` text (`processor` lines).
pub fn parse_cpu_count(cpuinfo: &str) -> Option<i64> {
    let n = cpuinfo.lines().filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor")).count();
    (n > 0).then_some(n as i64)
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `uname -m`.
fn machine() -> Option<String> {
    // SAFETY: `utsname` is plain old data; uname(2) fills it and NUL-terminates each field.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u.machine.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Reads the facts now. Blocking (small files).
pub fn read(paths: &HostPaths) -> HostFacts {
    let os_text = std::fs::read_to_string(&paths.os_release)
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let os = parse_os_release(&os_text);
    let mut attrs = BTreeMap::new();
    for (key, attr) in [("ID", "os_id"), ("VERSION_ID", "os_version_id"), ("VERSION_CODENAME", "os_codename")] {
        if let Some(v) = os.get(key).filter(|v| !v.is_empty()) {
            attrs.insert(attr.to_string(), v.clone());
        }
    }
    let proc = &paths.proc_root;
    for (file, attr) in [
        (proc.join("sys/kernel/random/boot_id"), "boot_id"),
        (proc.join("sys/kernel/version"), "kernel_build"),
        (paths.machine_id.clone(), "machine_id"),
    ] {
        if let Some(v) = read_trim(&file) {
            attrs.insert(attr.to_string(), v);
        }
    }
    let reboot_required = paths.reboot_required.exists();
    if reboot_required {
        let mut pkgs = paths.reboot_required.clone().into_os_string();
        pkgs.push(".pkgs");
        if let Some(list) = read_trim(Path::new(&pkgs)) {
            let mut names: Vec<&str> = list.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            names.sort_unstable();
            names.dedup();
            attrs.insert("reboot_required_pkgs".to_string(), names.join(","));
        }
    }
    let pretty = os.get("PRETTY_NAME").cloned().or_else(|| match (os.get("NAME"), os.get("VERSION")) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (Some(n), None) => Some(n.clone()),
        _ => None,
    });
    HostFacts {
        os: pretty,
        kernel: read_trim(&proc.join("sys/kernel/osrelease")),
        arch: machine(),
        cpus: std::fs::read_to_string(proc.join("cpuinfo"))
            .ok()
            .and_then(|t| parse_cpu_count(&t))
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get() as i64)),
        memory_bytes: std::fs::read_to_string(proc.join("meminfo")).ok().and_then(|t| parse_mem_total(&t)),
        collector_version: env!("CARGO_PKG_VERSION").to_string(),
        reboot_required,
        attrs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        let t = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian'\nID=debian\n# comment\nVERSION_ID=\"12\"\nX=\"a \\\"q\\\" b\"\nbad line\n";
        let m = parse_os_release(t);
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(m["NAME"], "Debian");
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["X"], "a \"q\" b");
        assert_eq!(parse_mem_total("MemTotal:       24563896 kB\nMemFree: 1 kB\n"), Some(24_563_896 * 1024));
        assert_eq!(parse_cpu_count("processor\t: 0\nx\t: y\nprocessor\t: 1\n"), Some(2));
    }

    #[test]
    fn facts_of_a_fake_tree_and_of_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("proc/sys/kernel/random")).unwrap();
        std::fs::write(d.join("os-release"), "NAME=Test\nVERSION=\"1 (one)\"\nID=test\n").unwrap();
        std::fs::write(d.join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        std::fs::write(d.join("proc/meminfo"), "MemTotal: 1024 kB\n").unwrap();
        std::fs::write(d.join("reboot-required"), "*** System restart required ***\n").unwrap();
        std::fs::write(d.join("reboot-required.pkgs"), "linux-base\nlibc6\nlinux-base\n").unwrap();
        let paths = HostPaths {
            os_release: d.join("os-release"),
            proc_root: d.join("proc"),
            reboot_required: d.join("reboot-required"),
            machine_id: d.join("machine-id"),
        };
        let f = read(&paths);
        assert_eq!(f.os.as_deref(), Some("Test 1 (one)"));
        assert_eq!(f.kernel.as_deref(), Some("6.1.0-test"));
        assert_eq!(f.memory_bytes, Some(1024 * 1024));
        assert!(f.reboot_required);
        assert_eq!(f.attrs["reboot_required_pkgs"], "libc6,linux-base");
        assert_eq!(f.attrs["os_id"], "test");

        let here = read(&HostPaths::default());
        assert!(here.os.is_some() && here.kernel.is_some() && here.arch.is_some(), "{here:?}");
        assert!(here.cpus.unwrap() >= 1 && here.memory_bytes.unwrap() > 0);
        assert_eq!(here.reboot_required, Path::new("/var/run/reboot-required").exists());
        assert!(here.attrs.contains_key("boot_id"));
    }
}
