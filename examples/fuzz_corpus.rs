//! Records the seed corpora of the fuzz targets into `fuzz/corpus/<target>/seed-*` from a real
//! handshake and transfer. It needs the null cipher of a fuzzing build, so run it as
//!
//! ```sh
//! RUSTFLAGS="--cfg fuzzing" CARGO_TARGET_DIR=target/fuzzing cargo run --example fuzz_corpus
//! ```
//!
//! In any other build it only says so.

#[cfg(fuzzing)]
fn main() -> std::io::Result<()> {
    // The example is the I/O edge: it reads the clock once, for the origin of the virtual clock.
    #[allow(clippy::disallowed_methods)]
    let epoch = std::time::Instant::now();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    quicsand::fuzzing::record_corpus(&dir, epoch)?;
    println!("seeds written under {}", dir.display());
    Ok(())
}

#[cfg(not(fuzzing))]
fn main() {
    eprintln!(
        "fuzz_corpus needs the null cipher of a fuzzing build: \
         RUSTFLAGS=\"--cfg fuzzing\" CARGO_TARGET_DIR=target/fuzzing cargo run --example fuzz_corpus"
    );
    std::process::exit(2);
}
