//! OTLP/HTTP protobuf bodies (first byte: bit 2 traces, else bit 0 logs, else metrics; bit 1 gzip).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::fuzzing::otlp_protobuf(data));
