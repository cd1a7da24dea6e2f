//! Fuzz target: one delivery to a source of any vendor of the registry (the vendor's
//! name and a newline, then a control byte, header lines and the raw body; see
//! `hookrelay_test_support::run_fuzz_bytes`) through verify → normalize → envelope,
//! checking every invariant in `hookrelay_test_support`. A broken invariant is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hookrelay_test_support::run_fuzz_bytes(data) {
        panic!("invariant broken: {broken}");
    }
});
