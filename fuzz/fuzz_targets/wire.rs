//! The wire decoder of POST /v1/ingest/{table} (first byte picks the table).
//!
//! The decoder contains arrow-ipc's panics on inconsistent batches (`catch_unwind`, turned
//! into a decode error), so the default panic hook replaces libFuzzer's aborting one: a
//! contained panic is the designed outcome, and a panic escaping `wire` still aborts
//! (libfuzzer-sys aborts on any panic reaching it).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| lake::fuzzing::wire(data)
);
