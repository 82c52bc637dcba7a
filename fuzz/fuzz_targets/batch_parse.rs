//! cargo-fuzz target `batch_parse`: see `corelog_fuzz::batch_parse` (fuzz/src/lib.rs) for
//! what it calls and the invariants it asserts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = corelog_fuzz::batch_parse(data);
});
