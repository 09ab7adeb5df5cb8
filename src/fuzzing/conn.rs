//! Connection-level checks: the same functions run on real crypto in `cargo test` (proptest) and on the
//! null cipher under `cfg(fuzzing)` (cargo-fuzz); only the packet protection differs.

use std::net::SocketAddr;
use std::time::Duration;

use super::input::Input;
use super::pair::{Network, Pair, Perfect, Setup, StreamModel, BASE_DELAY, CLIENT, IDLE_TIMEOUT, SERVER};
use crate::event::ConnectionError;
use crate::wire::frame::{Frame, Frames};
use crate::wire::header::{Coalesced, LongType};
use crate::{AcceptPolicy, EcnCodepoint, StreamId};

/// Whether this build runs on the null cipher (fuzzing) rather than real packet protection (tests).
pub const NULL_CRYPTO: bool = cfg!(fuzzing);

/// Virtual time a run may take after the input is used up before it counts as hung: long enough for
/// any stall to end in an idle timeout and the close to drain.
const SETTLE: Duration = Duration::from_secs(120);

/// Virtual time `conn_network` may take in all: its input can slow the transfer down a lot (each byte
/// can drop or delay a datagram by seconds), but not past this.
const NETWORK_BOUND: Duration = Duration::from_secs(600);

/// Bytes each side sends in the transfer of `conn_frames` and `conn_network`.
pub(super) fn transfer_len(input: &mut Input<'_>) -> usize {
    1000 + usize::from(input.u8()) * 24
}

/// The transfer app: each side opens one stream (the client bidirectional, the server unidirectional),
/// writes `len` pattern bytes and finishes it; both read everything.
pub(crate) fn transfer_app(len: usize) -> impl FnMut(&mut Pair, usize) {
    move |pair: &mut Pair, s: usize| {
        // This side's own stream: the first it opened (the list also holds the streams it accepted).
        let own = pair.peers[s]
            .streams
            .iter()
            .copied()
            .find(|id| id.initiator() == super::pair::side_of(s));
        let id = match own {
            Some(id) => id,
            None => {
                let Some(h) = pair.peers[s].conn else { return };
                let Ok(mut conn) = pair.peers[s].ep.conn(h) else {
                    return;
                };
                let id = if s == CLIENT {
                    conn.open_bi()
                } else {
                    conn.open_uni()
                };
                drop(conn);
                let Some(id) = id else { return };
                pair.peers[s].streams.push(id);
                pair.model.entry((s, id)).or_default();
                id
            }
        };
        let written = pair.model.get(&(s, id)).map_or(0, |m| m.written) as usize;
        let finished = pair.model.get(&(s, id)).is_some_and(|m| m.finished);
        if written < len {
            pair.write(s, id, len - written);
        }
        let written = pair.model.get(&(s, id)).map_or(0, |m| m.written) as usize;
        if written >= len && !finished {
            pair.finish(s, id);
        }
        pair.read_all(s);
        // The peer's bidirectional streams: this side sends nothing back but the end.
        for i in 0..pair.peers[s].streams.len() {
            let id = pair.peers[s].streams[i];
            let theirs = id.initiator() != super::pair::side_of(s);
            if theirs && id.dir() == crate::Dir::Bi && !pair.model.get(&(s, id)).is_some_and(|m| m.finished) {
                pair.finish(s, id);
            }
        }
    }
}

/// Both directions of the transfer ended for their readers (data, reset or stop), or both
/// connections are lost.
pub(super) fn transfer_done(pair: &Pair) -> bool {
    // Streams only injected frames opened (nothing written, finished or reset by their writer) owe
    // nothing.
    let real = |m: &&StreamModel| m.written > 0 || m.finished || m.reset.is_some();
    both_lost(pair) || (pair.model.len() >= 2 && pair.model.values().filter(real).all(|m| m.ended()))
}

/// Asserts the pair ended: everything owed was read exactly, or a connection was lost; and that a side
/// which detected an error told its peer.
pub(super) fn assert_ended(pair: &Pair, finished: bool) {
    assert!(
        finished,
        "the connection hung: neither finished the transfer nor closed within the bound of virtual time \
         (client lost: {:?}, server lost: {:?}; streams: {:?})",
        pair.peers[CLIENT].lost, pair.peers[SERVER].lost, pair.model
    );
    pair.assert_settled();
}

/// `conn_frames`: after a handshake, a transfer runs both ways while the input injects arbitrary frames
/// into either side, as the payload of an authenticated 1-RTT packet from its peer.
///
/// Input: one byte for the transfer size, then records `[control, length, payload...]`: bit 0 of the
/// control picks the side that receives the payload, the other bits the virtual milliseconds to run
/// before injecting it. Invariants: no panic; the run ends within the virtual-time bound, each side
/// either reading every byte it is owed exactly (checked only where nothing was injected into the
/// reader) or losing its connection; and a side that closes with an error makes its peer close too.
pub fn check_conn_frames(setup: &Setup, data: &[u8]) {
    let mut input = Input::new(data);
    let len = transfer_len(&mut input);
    let mut pair = Pair::new(setup, 1);
    let mut net = Perfect;
    if !pair.handshake(&mut net) {
        panic!("the handshake failed on a perfect network");
    }
    let mut app = transfer_app(len);
    while !input.is_empty() {
        let control = input.u8();
        let payload_len = usize::from(input.u8());
        let payload = input.bytes(payload_len);
        let limit = pair.now + Duration::from_millis(u64::from(control >> 1));
        pair.run(&mut net, limit, &mut app, &|_| false);
        let to = usize::from(control & 1);
        // Forged stream data may legitimately differ from what the writer wrote.
        pair.peers[to].check_data = false;
        pair.peers[to].honest = false;
        if NULL_CRYPTO && forges_other_id_length(payload, pair.peers[1 - to].ep.local_cid_len()) {
            // Nothing authenticates packets under the null cipher. A forged NEW_CONNECTION_ID can give
            // this side an ID for its peer that starts with one of the peer's real IDs but is longer
            // or shorter; a short header does not carry the ID's length, so the peer reads the packet
            // from the wrong place and takes garbage for frames. Real packet protection rejects those
            // packets (a loss), so this holds only for the null cipher.
            pair.peers[1 - to].check_data = false;
        }
        pair.inject(to, payload);
    }
    let limit = pair.now + SETTLE;
    let finished = pair.run(&mut net, limit, &mut app, &|p: &Pair| {
        transfer_done(p) && (p.peers.iter().all(|p| p.lost.is_none()) || both_lost(p))
    });
    assert_ended(&pair, finished);
    for s in [CLIENT, SERVER] {
        if let Some(ConnectionError::TransportError(e)) = &pair.peers[s].lost {
            assert!(
                pair.peers[1 - s].lost.is_some(),
                "side {s} closed with {e:?} but its peer never learnt it"
            );
        }
    }
}

/// Whether the frames of `payload` that parse (up to the first error, where the receiver stops too)
/// include a NEW_CONNECTION_ID whose ID is not `peer_len` bytes long, the length the peer's short
/// headers are read with.
fn forges_other_id_length(payload: &[u8], peer_len: usize) -> bool {
    let bytes = bytes::Bytes::copy_from_slice(payload);
    Frames::new(&bytes)
        .map_while(Result::ok)
        .any(|f| matches!(f, Frame::NewConnectionId(n) if n.id.len() != peer_len))
}

/// Neither side has a connection left (a server that never heard the client has none at all).
pub(super) fn both_lost(pair: &Pair) -> bool {
    pair.peers.iter().all(|p| p.lost.is_some() || p.conn.is_none())
}

/// A network that follows the fuzz input, one byte per datagram (then delivers everything).
pub(super) struct Scripted<'a> {
    input: Input<'a>,
    /// A datagram was corrupted (under the null cipher, corruption is not detected).
    corrupted: bool,
    /// The port a NAT rebinding gave the client, if one did: its datagrams come from there since.
    client_port: Option<u16>,
    /// The codepoint the last routed datagram arrives with instead of its own, if the script rewrote it.
    ecn: Option<Option<EcnCodepoint>>,
}

impl<'a> Scripted<'a> {
    /// A network that follows `input`, then delivers everything.
    pub(super) fn new(input: Input<'a>) -> Self {
        Self {
            input,
            corrupted: false,
            client_port: None,
            ecn: None,
        }
    }
}

impl Network for Scripted<'_> {
    fn tainted(&self) -> bool {
        // Under real crypto a corrupted datagram fails authentication: it is only a loss.
        NULL_CRYPTO && self.corrupted
    }

    fn source_port(&self, from: usize) -> Option<u16> {
        self.client_port.filter(|_| from == CLIENT)
    }

    fn ecn(&mut self, _from: usize, sent: Option<EcnCodepoint>) -> Option<EcnCodepoint> {
        // Only a marked datagram can be CE-marked; a rewrite or a clearing applies to any.
        match self.ecn.take() {
            Some(Some(EcnCodepoint::Ce)) if sent.is_none() => None,
            Some(rewritten) => rewritten,
            None => sent,
        }
    }

    fn route(&mut self, from: usize, mut datagram: Vec<u8>, out: &mut Vec<(Duration, Vec<u8>)>) {
        if self.input.is_empty() {
            out.push((BASE_DELAY, datagram));
            return;
        }
        let b = self.input.u8();
        let extra = Duration::from_millis(u64::from(b >> 3));
        self.ecn = None;
        match b & 7 {
            // Deliver, with up to 31 ms of extra delay (reordering).
            0 | 1 => out.push((BASE_DELAY + extra, datagram)),
            // The same, the ECN field marked CE, cleared, or rewritten to ECT(1) (RFC 9000 §13.4), or
            // kept.
            2 => {
                self.ecn = match (b >> 3) & 3 {
                    0 => Some(Some(EcnCodepoint::Ce)),
                    1 => Some(None),
                    2 => Some(Some(EcnCodepoint::Ect1)),
                    _ => None,
                };
                out.push((BASE_DELAY + extra, datagram));
            }
            // A NAT rebinding: the client's datagrams come from another port from this one on (the
            // old mapping still delivers to it).
            3 => {
                if from == CLIENT {
                    self.client_port = Some(6000 + u16::from(b >> 3));
                }
                out.push((BASE_DELAY, datagram));
            }
            4 => {} // drop
            5 => {
                out.push((BASE_DELAY, datagram.clone()));
                out.push((BASE_DELAY + extra, datagram));
            }
            6 => {
                let at = usize::from(self.input.u16());
                if !datagram.is_empty() {
                    let i = at % datagram.len();
                    datagram[i] ^= 1 << (b >> 5);
                    self.corrupted = true;
                }
                out.push((BASE_DELAY, datagram));
            }
            // A long delay: up to 3.1 s.
            _ => out.push((BASE_DELAY + extra * 100, datagram)),
        }
    }
}

/// `conn_network`: a transfer both ways over a network where the input decides each datagram's fate:
/// delivery with extra delay (reordering), a NAT rebinding of the client (its datagrams come from a new
/// port from then on), drop, duplication, a flipped bit, a long delay.
///
/// Invariants: no panic; the run ends within the virtual-time bound with every byte read exactly or a
/// connection lost; and, since both peers are honest, a lost connection may only be an idle timeout
/// (or a stateless reset) — never a protocol error — unless a corrupted datagram got through the null
/// cipher (fuzzing builds), which makes the peer look dishonest.
pub fn check_conn_network(setup: &Setup, data: &[u8]) {
    let (pair, finished, tainted) = run_conn_network(setup, data);
    // Under the null cipher a corrupted datagram is a forged packet: it can reset a stream its writer
    // never reset and acknowledge a FIN that never arrived, so that the reader forgets a stream whose
    // writer still waits for credit. RFC 9000 §4.1 has that writer send STREAM_DATA_BLOCKED periodically
    // while nothing is in flight, which keeps the connection open for as long as the peer answers: not a
    // hang of the engine; and when that writer's connection finally times out, its peer needs its own
    // idle timeout, past the bound. Real packet protection drops such packets. Only a run with such a
    // forged reset is excused; the same check with real crypto (the property tests) excuses nothing.
    let kept_open_by_forgery = tainted && !finished && pair.forged_reset();
    if !kept_open_by_forgery {
        assert_ended(&pair, finished);
    }
    // When the server's handshake timed out while the client carried on, the client's next Initial
    // starts a new server connection and acknowledges the old one's packets: RFC 9000 §13.1 makes that
    // a PROTOCOL_VIOLATION, rightly, though both peers are honest.
    if !tainted && !pair.peers[SERVER].replaced {
        for p in &pair.peers {
            if let Some(reason) = &p.lost {
                assert!(
                    matches!(reason, ConnectionError::TimedOut | ConnectionError::Reset),
                    "an honest pair over a lossy network closed with {reason:?}"
                );
            }
        }
    }
}

/// The run of [`check_conn_network`]: the pair at the end, whether the transfer ended in time, and
/// whether the network forged what it delivered.
pub(super) fn run_conn_network(setup: &Setup, data: &[u8]) -> (Pair, bool, bool) {
    let mut input = Input::new(data);
    let len = transfer_len(&mut input);
    let mut pair = Pair::new(setup, 2);
    let mut net = Scripted::new(input);
    let mut app = transfer_app(len);
    let limit = pair.now + NETWORK_BOUND;
    let finished = pair.run(&mut net, limit, &mut app, &|p: &Pair| {
        transfer_done(p) && (p.peers.iter().all(|p| p.lost.is_none()) || both_lost(p))
    });
    let tainted = net.tainted();
    (pair, finished, tainted)
}

/// `stream_ops`: an arbitrary sequence of stream operations on both sides over a perfect network, then
/// both sides read everything.
///
/// Input: records `[op, argument]`; bit 0 of `op` picks the side, the rest the operation: open a
/// bidirectional or unidirectional stream, write, finish, reset, stop, read, accept, or let time pass.
/// The argument picks the stream (among those the side knows) and the length or code. Invariants: no
/// panic; no connection is lost (both peers are honest); every byte read matches what was written, at
/// its offset; every finished stream that neither side reset or stopped is read to its end, exactly.
pub fn check_stream_ops(setup: &Setup, data: &[u8]) {
    let mut input = Input::new(data);
    let mut pair = Pair::with_keep_alive(setup, 3);
    let mut net = Perfect;
    assert!(
        pair.handshake(&mut net),
        "the handshake failed on a perfect network"
    );
    let mut idle = |_: &mut Pair, _: usize| {};
    while !input.is_empty() {
        let op = input.u8();
        let arg = input.u8();
        let s = usize::from(op & 1);
        let pick = |pair: &Pair| -> Option<StreamId> {
            let streams = &pair.peers[s].streams;
            (!streams.is_empty()).then(|| streams[usize::from(arg) % streams.len()])
        };
        match (op >> 1) % 9 {
            0 | 1 => {
                let Some(h) = pair.peers[s].conn else { continue };
                let Ok(mut conn) = pair.peers[s].ep.conn(h) else {
                    continue;
                };
                let id = if op >> 1 == 0 {
                    conn.open_bi()
                } else {
                    conn.open_uni()
                };
                drop(conn);
                if let Some(id) = id {
                    pair.peers[s].streams.push(id);
                }
            }
            2 => {
                if let Some(id) = pick(&pair) {
                    pair.write(s, id, usize::from(arg) * 61);
                }
            }
            3 => {
                if let Some(id) = pick(&pair) {
                    pair.finish(s, id);
                }
            }
            4 => {
                if let Some(id) = pick(&pair) {
                    pair.reset(s, id, u64::from(arg));
                }
            }
            5 => {
                if let Some(id) = pick(&pair) {
                    pair.stop(s, id, u64::from(arg));
                }
            }
            6 => {
                if let Some(id) = pick(&pair) {
                    pair.read(s, id, usize::from(arg) * 37);
                }
            }
            7 => pair.accept_all(s),
            _ => {
                let limit = pair.now + Duration::from_millis(u64::from(arg) * 4);
                pair.run(&mut net, limit, &mut idle, &|_| false);
            }
        }
        // Drive whatever the operation queued.
        let now = pair.now;
        pair.run(&mut net, now, &mut idle, &|_| false);
    }
    let limit = pair.now + IDLE_TIMEOUT / 2;
    let mut read_all = |pair: &mut Pair, s: usize| pair.read_all(s);
    let finished = pair.run(&mut net, limit, &mut read_all, &|p: &Pair| {
        p.model.values().all(|m| !m.owed() || m.read_fin)
    });
    for p in &pair.peers {
        assert!(
            p.lost.is_none(),
            "an honest pair lost its connection: {:?}",
            p.lost
        );
    }
    assert!(finished, "streams owed to a reader never arrived");
    pair.assert_settled();
}

/// `server_recv`: a server endpoint receives an arbitrary sequence of datagrams from several addresses.
///
/// Input: records `[control, length (2 bytes), datagram...]`: the low 2 bits of `control` pick one of 4
/// client addresses, the rest the virtual milliseconds that pass before the datagram. An empty datagram
/// with bit 3 of `control` set switches the server's accept policy instead: to `AcceptPolicy::Refuse`
/// when bit 2 is set too, else back to `Accept`. Invariants: no
/// panic; the server never sends more than three times what an address sent it unless that address
/// sent a Handshake packet (RFC 9000 §8.1, anti-amplification); connections stay under
/// `max_incoming_handshakes`; and once the input ends, every connection is gone within the idle
/// timeout plus the closing period (nothing hangs).
pub fn check_server_recv(setup: &Setup, data: &[u8]) {
    let mut input = Input::new(data);
    let mut server = setup.server_endpoint(4);
    let limit_handshakes = setup.server.max_incoming_handshakes;
    let mut now = setup.epoch();
    let addrs: [SocketAddr; 4] = [
        "192.0.2.1:5000".parse().expect("valid address"),
        "192.0.2.1:5001".parse().expect("valid address"),
        "198.51.100.7:443".parse().expect("valid address"),
        "[2001:db8::1]:4433".parse().expect("valid address"),
    ];
    let mut received = [0usize; 4];
    let mut sent = [0usize; 4];
    let mut validated = [false; 4];
    let mut buf = Vec::new();
    let drain = |server: &mut crate::Endpoint, now, buf: &mut Vec<u8>, sent: &mut [usize; 4]| {
        while let Some(t) = server.poll_transmit(now, buf) {
            let i = addrs.iter().position(|a| *a == t.destination);
            let i = i.expect("the server only sends to addresses that sent to it");
            sent[i] += t.size;
        }
        while server.poll_event().is_some() {}
    };
    while !input.is_empty() {
        let control = input.u8();
        let len = usize::from(input.u16());
        let datagram = input.bytes(len);
        if datagram.is_empty() && control & 8 != 0 {
            let refuse = control & 4 != 0;
            server.set_accept_policy(if refuse {
                AcceptPolicy::Refuse
            } else {
                AcceptPolicy::Accept
            });
            continue;
        }
        let i = usize::from(control & 3);
        now += Duration::from_millis(u64::from(control >> 2));
        server.handle_timeout(now);
        drain(&mut server, now, &mut buf, &mut sent);
        received[i] += datagram.len();
        validated[i] |= Coalesced::new(datagram, 0)
            .flatten()
            .any(|(_, h)| h.long_type() == Some(LongType::Handshake));
        server.handle_datagram(
            now,
            crate::Datagram {
                remote: addrs[i],
                local: None,
                ecn: None,
                payload: bytes::BytesMut::from(datagram),
            },
        );
        drain(&mut server, now, &mut buf, &mut sent);
        for i in 0..4 {
            assert!(
                validated[i] || sent[i] <= 3 * received[i],
                "amplification: sent {} bytes to an address that sent {}",
                sent[i],
                received[i]
            );
        }
        assert!(server.stats().connections_active <= limit_handshakes);
    }
    // Nothing more arrives: every connection must time out and go.
    let end = now + IDLE_TIMEOUT * 4;
    let mut spins = 0;
    while let Some(t) = server.poll_timeout() {
        if t > end {
            break;
        }
        if t > now {
            now = t;
            spins = 0;
        }
        spins += 1;
        assert!(spins < 10_000, "the server spins at one instant");
        server.handle_timeout(now);
        drain(&mut server, now, &mut buf, &mut sent);
    }
    assert_eq!(
        server.stats().connections_active,
        0,
        "connections outlived the idle timeout with nothing arriving"
    );
}
