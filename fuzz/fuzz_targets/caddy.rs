//! Caddy JSON access-log lines (collector caddy source).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::caddy(data));
