//! OTLP/HTTP protobuf bodies (first byte: bit 0 logs, bit 1 gzip).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::fuzzing::otlp_protobuf(data));
