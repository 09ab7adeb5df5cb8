//! Fuzz target `conn_datagrams`: the invariants live in `quicsand::fuzzing::check_conn_datagrams`, which proptest runs too (with
//! real crypto; here the null cipher of `cfg(fuzzing)` lets the input reach established connections).
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use quicsand::fuzzing::Setup;

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    // The fuzz target is the I/O edge: it reads the clock once, for the origin of the virtual clock.
    SETUP.get_or_init(|| Setup::new(Instant::now()))
}

fuzz_target!(|data: &[u8]| {
    quicsand::fuzzing::check_conn_datagrams(setup(), data);
});
