#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ndshm_fuzz::header::check(data));
