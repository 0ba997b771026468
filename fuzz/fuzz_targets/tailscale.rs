//! tailscale status --json and tailscale ping output (first byte picks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::tailscale(data));
