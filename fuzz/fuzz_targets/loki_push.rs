//! Loki push bodies (first byte: 0 protobuf, 1 snappy block, 2 JSON, 3 gzipped JSON,
//! 4 a selector string).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake::fuzzing::loki_push(data));
