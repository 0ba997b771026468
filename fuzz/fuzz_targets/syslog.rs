//! Syslog over the network (collector `[syslog]` source): TCP framing and RFC 5424 / 3164 parsing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lake_collector::fuzzing::syslog(data));
