//! cargo-fuzz target `response_decode`: see `corelog_fuzz::response_decode` (fuzz/src/lib.rs) for
//! what it calls and the invariants it asserts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = corelog_fuzz::response_decode(data);
});
