//! Plain-text log files of every `[[log_file]]` format, multi-line records included
//! (collector log_file source); the first byte picks the format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::log_file(data));
