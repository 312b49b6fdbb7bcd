//! `mta_fuzz::mta_sts_policy` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| mta_fuzz::mta_sts_policy(input));
