//! Grafana SQL macro and template-variable expansion.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::http::grafana::fuzzing::macros(data));
