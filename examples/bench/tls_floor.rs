//! The TLS handshake through `rustls` alone, with no QUIC engine: the floor under any `rustls`-based engine.
//!
//! The same `rustls::quic` client and server connections an engine would hold, built from the same
//! configurations, exchange their handshake bytes in memory until both are done, and hand out their packet
//! keys (`write_hs` derives them when it returns a [`KeyChange`]). No packets, frames, acknowledgements,
//! AEAD or header protection: what is left is what every engine on `rustls` pays per handshake.

use std::hint::black_box;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::quic::{ClientConnection, Connection, KeyChange, ServerConnection, Version};

use crate::measure::cpu_timed;
use crate::setup::{Mode, Tls};

/// Transport parameters for both sides: `rustls` carries them in its extension without parsing them.
/// These are initial_max_data (0x04) = 1 MiB and initial_max_streams_bidi (0x08) = 100, as varints.
const PARAMS: &[u8] = &[0x04, 0x04, 0x80, 0x10, 0x00, 0x00, 0x08, 0x02, 0x40, 0x64];

/// `n` full TLS handshakes, each on a fresh client and server connection. Returns the CPU time.
///
/// In [`Mode::Default`] the server's session tickets, which it writes once it has read the client's
/// Finished, are written out and read by the client, as an engine would deliver them.
pub fn handshakes(n: usize, tls: &Tls) -> Duration {
    let ((), cpu) = cpu_timed(|| {
        for i in 0..n {
            let (tickets, keys) = handshake(tls);
            assert_eq!(
                keys,
                [2, 2],
                "rustls handshake {i}: handshake and 1-RTT keys on both sides"
            );
            match tls.mode {
                Mode::Default => assert!(tickets > 0, "rustls handshake {i}: the server sent tickets"),
                Mode::Lean => assert_eq!(tickets, 0, "rustls handshake {i}: no tickets in lean mode"),
            }
        }
    });
    cpu
}

/// One handshake; returns the bytes the server wrote after its handshake was over (its tickets) and the
/// key changes each side returned.
fn handshake(tls: &Tls) -> (usize, [usize; 2]) {
    let name = ServerName::try_from("localhost").expect("valid server name");
    let client = ClientConnection::new(tls.client.clone(), Version::V1, name, PARAMS.to_vec())
        .expect("client connection");
    let server =
        ServerConnection::new(tls.server.clone(), Version::V1, PARAMS.to_vec()).expect("server connection");
    let mut sides = [Connection::from(client), Connection::from(server)];
    let mut keys = [0usize; 2];
    let mut tickets = 0;
    let mut buf = Vec::new();
    // The client speaks first; then each side in turn writes everything it has and the other reads it,
    // until a round moves nothing (which, in Default mode, is after the server's tickets were read).
    let mut from = 0;
    let mut idle_turns = 0;
    // Where each level's bytes end in `buf`: `rustls` cannot tell levels apart and refuses bytes of the next
    // level in the same read as a message that changes keys, so, as an engine does with the CRYPTO data of
    // each packet-number space, the peer reads each level's bytes on their own.
    let mut ends = Vec::new();
    while idle_turns < 2 {
        buf.clear();
        ends.clear();
        let done_before = !sides[from].is_handshaking();
        while let Some(change) = sides[from].write_hs(&mut buf) {
            // The bytes written so far belong to the old level.
            ends.push(buf.len());
            // Taking the keys is part of the work: `rustls` builds them (HKDF, AEAD and header-protection
            // key setup) when it returns them.
            keys[from] += 1;
            black_box(match change {
                KeyChange::Handshake { keys } => (keys, None),
                KeyChange::OneRtt { keys, next } => (keys, Some(next)),
            });
        }
        ends.push(buf.len());
        if buf.is_empty() {
            idle_turns += 1;
        } else {
            idle_turns = 0;
            if from == 1 && done_before {
                tickets += buf.len();
            }
            let mut start = 0;
            for &end in &ends {
                if end > start {
                    sides[1 - from]
                        .read_hs(&buf[start..end])
                        .expect("peer accepts the handshake bytes");
                }
                start = end;
            }
        }
        from = 1 - from;
    }
    assert!(
        !sides[0].is_handshaking() && !sides[1].is_handshaking(),
        "both sides completed the handshake"
    );
    (tickets, keys)
}
