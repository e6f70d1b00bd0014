#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| scaph_agent::fuzzing::mountinfo(data));
