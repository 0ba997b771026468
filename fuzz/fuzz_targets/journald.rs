//! journalctl -o json lines (collector journald source, with ufw/fail2ban routing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::journald(data));
