//! Stateless codecs for the QUIC v1 wire format.
//!
//! Nothing in this module sees time, randomness or connection state. Every decoder reads through a
//! bounds-checked [`Reader`] and returns a typed error; every encoder writes to a [`bytes::BufMut`] and has an
//! `encoded_len` that matches what it writes.

#![warn(clippy::indexing_slicing)]

use std::fmt;

mod cid;
mod error;
pub mod frame;
pub mod header;
pub mod packet_number;
mod reader;
pub mod transport_params;
mod varint;

pub use cid::{ConnectionId, ResetToken};
pub use error::{TransportError, TransportErrorCode};
pub use reader::Reader;
pub use varint::{VarInt, VarIntBoundsExceeded};

/// Why a decoder rejected its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the value did.
    UnexpectedEnd,
    /// The input is complete but breaks a rule of the format; the text says which.
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnexpectedEnd => f.write_str("unexpected end of input"),
            DecodeError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DecodeError {}
