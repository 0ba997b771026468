//! Custom-table NDJSON / CSV ingest: parse, infer, evolve, build.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::fuzzing::custom(data));
