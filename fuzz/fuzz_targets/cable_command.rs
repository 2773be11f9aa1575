#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tasksync_fuzz::cable_command(data));
