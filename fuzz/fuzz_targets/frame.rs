//! Fuzz target `frame`: the invariants live in `quicsand::fuzzing::check_frames`, which proptest runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quicsand::fuzzing::check_frames(data);
});
