//! `mta_fuzz::milter_reply` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| mta_fuzz::milter_reply(input));
