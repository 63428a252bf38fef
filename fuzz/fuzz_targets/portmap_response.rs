#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pd_proto::fuzz::portmap_response(data));
