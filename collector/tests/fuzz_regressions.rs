//! The inputs that once crashed a fuzz target (`fixtures/fuzz-regressions/<target>/`),
//! replayed through the same entry points the targets use
//! ([`lake_collector::fuzzing`]), so plain `cargo test` checks them on stable; and every
//! line of the parser fixtures through them too (the seeds of the fuzz corpora).

use std::path::{Path, PathBuf};

use lake_collector::fuzzing::{self, TARGETS};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn fuzz_regressions_stay_fixed() {
    let n = lake_format::fuzz_regressions::replay(TARGETS);
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn the_fixture_lines_pass_the_entry_points() {
    let lines = |p: &str| std::fs::read(fixtures().join(p)).expect("fixture");
    for line in lines("caddy/access.log").split(|b| *b == b'\n') {
        fuzzing::caddy(line);
    }
    for line in lines("ufw/kernel.log").split(|b| *b == b'\n') {
        fuzzing::ufw(line);
    }
    for line in lines("fail2ban/fail2ban.log").split(|b| *b == b'\n') {
        fuzzing::fail2ban(line);
    }
    // Each [syslog] capture as a stream (cut at every 7th byte) and each datagram alone.
    for name in ["received/logger.tcp", "received/rsyslog-octet-counted-rfc5424.tcp", "hostile.tcp"] {
        let stream = lines(&format!("syslog/{name}"));
        for cut in (0..stream.len().min(255)).step_by(7) {
            let mut data = vec![0u8, cut as u8];
            data.extend_from_slice(&stream);
            fuzzing::syslog(&data);
        }
    }
    for name in ["received/logger.udp", "devices.udp"] {
        for line in lines(&format!("syslog/{name}")).split(|b| *b == b'\n') {
            fuzzing::syslog(&[&[1u8][..], line].concat());
        }
    }
    let mut status = vec![0u8];
    status.extend(lines("tailscale/status.json"));
    fuzzing::tailscale(&status);
    fuzzing::config(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/collector.toml")).expect("example"),
    );
}
