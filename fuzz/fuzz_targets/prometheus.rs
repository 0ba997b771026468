//! Prometheus text exposition (collector prometheus scrape and textfile).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::prometheus(data));
