//! The wire decoder of POST /v1/ingest/{table} (first byte picks the table).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::fuzzing::wire(data));
