//! Fuzz target: one Chatwoot delivery (control byte, header lines, raw body; see
//! `hookrelay::invariants::decode`) through verify → normalize → envelope, checking
//! every invariant in `hookrelay::invariants`. A broken invariant is a crash.
#![no_main]

use hookrelay_vendors::Vendor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hookrelay::invariants::run_fuzz_input(Vendor::Chatwoot, data) {
        panic!("invariant broken: {broken}");
    }
});
