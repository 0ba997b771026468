//! Grafana datasource request bodies, up to the SQL handed to DuckDB.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::http::grafana::fuzzing::request(data));
