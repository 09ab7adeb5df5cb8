//! Application logic shared by `examples/server.rs`, `examples/client.rs` and `tests/udp_loopback.rs`
//! (which includes this directory with `#[path]`): the hq-interop and echo protocols as handlers of a
//! [`quicsand::udp::Driver`], and small helpers for certificates, cipher names and URLs.
//!
//! Every type here is driven only through `quicsand::udp::Handler`: events in, calls on the endpoint
//! out. None of them reads the clock; `now` comes with each call.

#![allow(dead_code, unreachable_pub)]

pub mod echo;
pub mod hq;
pub mod pattern;
pub mod server;
pub mod tls;
pub mod url;
