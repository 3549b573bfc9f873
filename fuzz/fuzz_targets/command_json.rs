#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| access_fuzz::service::command_json(data));
