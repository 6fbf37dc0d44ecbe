//! libFuzzer entry for [`skein_fuzz_checks::jaeger_query`]: the checks live in that crate so CI replays every saved crash
//! through the same code (`fuzz/checks/tests/regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = skein_fuzz_checks::jaeger_query(data);
});
