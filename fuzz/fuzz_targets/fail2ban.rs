//! fail2ban.log lines (collector fail2ban source).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::fail2ban(data));
