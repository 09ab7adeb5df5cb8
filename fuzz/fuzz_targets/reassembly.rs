//! Fuzz target `reassembly`: the invariants live in `quicsand::fuzzing::check_reassembly`, which proptest runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quicsand::fuzzing::check_reassembly(data);
});
