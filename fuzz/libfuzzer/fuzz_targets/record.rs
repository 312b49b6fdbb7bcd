//! `mta_fuzz::record` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| mta_fuzz::record(input));
