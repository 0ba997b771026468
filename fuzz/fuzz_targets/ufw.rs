//! ufw kernel / syslog lines (collector ufw source).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::ufw(data));
