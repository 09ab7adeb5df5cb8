//! quicsand against quinn-proto, in the same process: see `docs/performance.md` and `--help`.
//!
//! ```sh
//! cargo run --release --example bench -- bulk --suite aes128
//! ```

#![allow(unreachable_pub, dead_code)]

mod aead;
mod alloc;
mod measure;
mod plot;
mod qp;
mod qs;
mod run;
mod setup;
mod tls_floor;
#[cfg(feature = "udp")]
mod udp;

use std::process::ExitCode;

fn main() -> ExitCode {
    match run::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => {
            let rows = run::run(&args);
            if !rows.is_empty() {
                run::print_table(&rows);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            print!("{}", run::HELP);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", run::HELP);
            ExitCode::FAILURE
        }
    }
}
