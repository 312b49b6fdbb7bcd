//! `mta_fuzz::dmarc_report` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| mta_fuzz::dmarc_report(input));
