//! `cargo bench`: every workload of `examples/bench` with short settings, quicsand against quinn-proto.
//! For the figures in `docs/performance.md`, run the example with its defaults instead.

#![allow(unreachable_pub, dead_code)]

#[path = "../examples/bench/aead.rs"]
mod aead;
#[path = "../examples/bench/alloc.rs"]
mod alloc;
#[path = "../examples/bench/measure.rs"]
mod measure;
#[path = "../examples/bench/plot.rs"]
mod plot;
#[path = "../examples/bench/qp.rs"]
mod qp;
#[path = "../examples/bench/qs.rs"]
mod qs;
#[path = "../examples/bench/run.rs"]
mod run;
#[path = "../examples/bench/setup.rs"]
mod setup;
#[path = "../examples/bench/tls_floor.rs"]
mod tls_floor;
#[cfg(feature = "udp")]
#[path = "../examples/bench/udp.rs"]
mod udp;

fn main() {
    // `cargo bench` passes `--bench`; anything else is ignored here.
    let short = [
        "all",
        "--bytes",
        "32M",
        "--reps",
        "3",
        "--handshakes",
        "200",
        "--conns",
        "1000",
        "--exchanges",
        "2000",
    ];
    let args = run::parse(short.iter().map(|s| s.to_string()))
        .expect("valid arguments")
        .expect("not --help");
    let rows = run::run(&args);
    run::print_table(&rows);
}
