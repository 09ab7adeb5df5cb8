//! Invariant checks shared by the cargo-fuzz targets in `fuzz/` and the property tests.
//!
//! Each `check_*` function takes arbitrary bytes, runs part of the engine over them and panics if an
//! invariant breaks: the fuzz targets call them on libFuzzer's input, and proptest calls them on every
//! test run, so CI exercises the same checks. The module exists only in test builds and under
//! `cfg(fuzzing)`.
//!
//! The decoder checks ([`check_header`], [`check_frames`], [`check_transport_params`]) and
//! [`check_reassembly`] need nothing else. The connection checks ([`check_server_recv`],
//! [`check_conn_frames`], [`check_conn_network`], [`check_conn_datagrams`], [`check_stream_ops`]) take
//! a [`Setup`] made once per process. They are the same functions in both builds; only the packet protection differs: real TLS
//! and AEADs in tests, the null cipher and null handshake under `cfg(fuzzing)` ([`NULL_CRYPTO`]), so
//! that fuzz input reaches frame handling in established connections. See `docs/fuzzing.md`.

use bytes::Bytes;

mod conn;
// Built in tests too (for its own test), though only a fuzzing build records seeds worth keeping.
mod corpus;
mod datagrams;
mod input;
mod pair;
mod reassembly;

#[cfg(test)]
mod tests;

pub use conn::{check_conn_frames, check_conn_network, check_server_recv, check_stream_ops, NULL_CRYPTO};
pub use corpus::record_corpus;
pub use datagrams::check_conn_datagrams;
pub use pair::Setup;
pub use reassembly::check_reassembly;

use crate::wire::frame::{Frame, Frames, StreamFrame};
use crate::wire::header::{Coalesced, Header, ProtectedHeader};
use crate::wire::transport_params::TransportParameters;
use crate::wire::{Reader, TransportError, TransportErrorCode};
use crate::Side;

/// Header parsing: the first byte picks the short-header connection ID length (0 to 20), the rest is a
/// datagram. Coalesced packets stay inside the datagram, and any header whose packet number parses
/// re-encodes to a header that parses back to the same fields.
pub fn check_header(data: &[u8]) {
    let Some((&first, datagram)) = data.split_first() else {
        return;
    };
    let cid_len = usize::from(first % 21);
    for (at, header) in Coalesced::new(datagram, cid_len).flatten() {
        let packet = datagram
            .get(at..)
            .expect("Coalesced yields offsets inside the datagram");
        assert!(header.len() <= packet.len(), "packet runs past its datagram");
        let _ = header.token(packet);
        let _ = header.versions(packet).count();
        let Ok(plain) = header.finish(packet) else {
            continue;
        };
        assert!(plain.header_len <= header.len(), "header longer than its packet");
        let rebuilt = match &header {
            ProtectedHeader::Long {
                ty,
                version,
                dcid,
                scid,
                ..
            } => match ty {
                crate::wire::header::LongType::Initial => Header::Initial {
                    version: *version,
                    dcid: *dcid,
                    scid: *scid,
                    token: Bytes::copy_from_slice(header.token(packet)),
                },
                crate::wire::header::LongType::ZeroRtt => Header::ZeroRtt {
                    version: *version,
                    dcid: *dcid,
                    scid: *scid,
                },
                _ => Header::Handshake {
                    version: *version,
                    dcid: *dcid,
                    scid: *scid,
                },
            },
            ProtectedHeader::Short { dcid, .. } => Header::Short {
                spin: header.spin(),
                key_phase: plain.key_phase,
                dcid: *dcid,
            },
            _ => continue,
        };
        let mut buf = Vec::new();
        let enc = rebuilt.encode(plain.pn, &mut buf);
        assert_eq!(
            buf.len(),
            rebuilt.encoded_len(plain.pn),
            "encoded_len disagrees with encode"
        );
        let payload = header.len() - plain.header_len;
        buf.resize(buf.len() + payload, 0);
        let total = buf.len();
        if enc.set_length(&mut buf, total).is_err() {
            continue; // longer than a 2-byte Length field holds
        }
        let again = ProtectedHeader::decode(&buf, cid_len).expect("re-encoded header parses");
        assert_eq!(again.dcid(), header.dcid());
        assert_eq!(again.scid(), header.scid());
        assert_eq!(again.long_type(), header.long_type());
        assert_eq!(again.token(&buf), header.token(packet));
        assert_eq!(again.len() - enc.header_len, payload);
        assert_eq!(
            again.finish(&buf).expect("re-encoded packet number parses").pn,
            plain.pn
        );
    }
}

/// Transport parameters: whatever decodes (as sent by either side) re-encodes, with a matching
/// `encoded_len`, to bytes that decode to the same value.
pub fn check_transport_params(data: &[u8]) {
    for side in [Side::Client, Side::Server] {
        if let Ok(params) = TransportParameters::decode(side, data) {
            let mut out = Vec::new();
            params.encode(&mut out);
            assert_eq!(
                out.len(),
                params.encoded_len(),
                "encoded_len disagrees with encode"
            );
            assert_eq!(
                TransportParameters::decode(side, &out),
                Ok(params),
                "re-encoded parameters differ"
            );
        }
    }
}

/// One frame: it encodes to exactly `encoded_len()` bytes, decodes back (zero-copy, from `Bytes`) to an
/// equal frame, and the decoder consumes exactly the encoding.
pub fn check_frame_round_trip(frame: &Frame) {
    let mut buf = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut buf);
    assert_eq!(
        buf.len(),
        frame.encoded_len(),
        "encoded_len disagrees with encode for {frame:?}"
    );
    let bytes = Bytes::from(buf);
    let mut r = Reader::from_bytes(&bytes);
    let decoded = Frame::decode(&mut r).expect("a frame we encoded decodes");
    assert_eq!(&decoded, frame);
    assert!(r.is_empty(), "decode left {} bytes of {frame:?}", r.remaining());
}

/// Frame parsing of an arbitrary decrypted payload: iteration stops after the first error, every error
/// maps to FRAME_ENCODING_ERROR carrying its frame type, and every frame found round-trips.
pub fn check_frames(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let mut failed = false;
    for item in Frames::new(&bytes) {
        assert!(!failed, "Frames must stop after the first error");
        match item {
            Ok(frame) => check_frame_round_trip(&frame),
            Err(e) => {
                let te = TransportError::from(e);
                assert_eq!(te.code, TransportErrorCode::FRAME_ENCODING_ERROR);
                assert_eq!(te.frame_type, Some(e.frame_type));
                failed = true;
            }
        }
    }
    check_owned_stream_frames(&bytes);
}

/// The receive path's STREAM decoder ([`StreamFrame::decode_owned`]) agrees with [`Frame::decode`] at
/// every frame boundary: same frame and type or same error, same end; it declines only other types.
fn check_owned_stream_frames(bytes: &Bytes) {
    let mut owned = bytes.clone();
    let mut r = Reader::from_bytes(bytes);
    while !r.is_empty() {
        let start = r.position();
        let general = Frame::decode_typed(&mut r);
        let mut pos = start;
        match StreamFrame::decode_owned(&mut owned, &mut pos) {
            Some(fast) => {
                let fast = fast.map(|(frame, ty)| (Frame::Stream(frame), ty));
                assert_eq!(fast, general, "STREAM at {start}");
                if general.is_ok() {
                    assert_eq!(pos, r.position(), "end of the STREAM frame at {start}");
                    assert_eq!(
                        owned.is_empty(),
                        pos == bytes.len(),
                        "the last frame takes the buffer"
                    );
                }
            }
            None => {
                assert_eq!(pos, start);
                let first = bytes.get(start).copied().unwrap_or_default();
                assert!(
                    !(0x08..=0x0f).contains(&first),
                    "a one-byte STREAM type was declined at {start}"
                );
            }
        }
        if general.is_err() {
            break;
        }
    }
}
