//! `conn_datagrams`: unreliable datagrams (RFC 9221) between the pair of `conn_network`, each side with
//! its own receive and send buffers, its application sending and reading datagrams at points the input
//! picks (before the handshake completes, during the transfer, after a close).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::conn::{assert_ended, both_lost, transfer_app, transfer_done, transfer_len, Scripted};
use super::input::Input;
use super::pair::{Network, Pair, Setup, SERVER};
use crate::conn::max_datagram_frame_size;
use crate::event::ConnectionError;
use crate::wire::{TransportErrorCode, VarInt};
use crate::{ConnectionHandle, SendDatagramError};

/// What `TransportConfig::datagram_receive_buffer` (and `datagram_send_buffer`) count each datagram
/// with on top of its bytes.
const QUEUE_SLOT: usize = 64;

/// Virtual time the run may take after the input is used up, as in `conn_network`: the script can slow
/// the network down a lot.
const SETTLE: Duration = Duration::from_secs(600);

/// A side's receive buffer, from one input byte: none (nothing announced, which RFC 9221 §3 makes the
/// same as 0), too small for one datagram (nothing announced either), every size that announces a
/// max_datagram_frame_size from 1 (no frame fits) to 128, then coarser sizes past the path MTU and past
/// 65,535 (announced as 65,535), and the default.
fn receive_buffer(b: u8) -> Option<usize> {
    match b {
        0 => None,
        1 => Some(0),
        2 => Some(QUEUE_SLOT - 1),
        3..=130 => Some(QUEUE_SLOT + usize::from(b - 3)),
        131..=254 => Some(QUEUE_SLOT + usize::from(b - 130) * 600),
        255 => Some(1 << 20),
    }
}

/// A side's send buffer, from one input byte: 0 (sending disabled), tiny (below one queue slot, so one
/// datagram at a time), small, and the default.
fn send_buffer(b: u8) -> usize {
    match b {
        0..=127 => usize::from(b),
        128..=254 => QUEUE_SLOT + usize::from(b - 128) * 32,
        255 => 1 << 20,
    }
}

/// Byte `i` of the datagram of length `len` that side `writer` sends.
fn datagram_byte(writer: usize, len: usize, i: usize) -> u8 {
    (i as u64)
        .wrapping_mul(131)
        .wrapping_add(len as u64 * 7)
        .wrapping_add(writer as u64 * 59) as u8
        ^ 0x5a
}

/// What the harness knows of one side's datagrams.
#[derive(Debug, Default)]
struct Model {
    /// Datagrams the API accepted from this side, by length.
    sent: BTreeMap<usize, u64>,
    /// Datagrams this side's application read, by length.
    received: BTreeMap<usize, u64>,
    /// The connection this side's application closed (a server's may be replaced by a new one: see
    /// `Peer::replaced`).
    closed: Option<ConnectionHandle>,
}

/// Side `s`'s application sends one datagram, its length picked by `mode` and `arg` around the largest
/// the API reports: that size, one more, one less, empty, or a given size. Checks that the API accepts
/// exactly what it reported it would, that what it reports fits the peer's announced
/// max_datagram_frame_size (RFC 9221 §3) and the send buffer, and that nothing goes once the
/// connection is closing.
fn send(pair: &mut Pair, model: &mut [Model; 2], s: usize, mode: u8, arg: u8) {
    let Some(h) = pair.peers[s].conn else { return };
    let honest = pair.peers[s].check_data;
    let peer_limit = max_datagram_frame_size(pair.transport(1 - s));
    let send_limit = pair.transport(s).datagram_send_buffer;
    let Ok(mut conn) = pair.peers[s].ep.conn(h) else {
        return;
    };
    let max = conn.max_datagram_size();
    let base = *max.as_ref().unwrap_or(&usize::from(arg));
    let len = match mode % 8 {
        0 => base,
        1 => base + 1,
        2 => 0,
        3 => base.saturating_sub(1),
        4 => usize::from(arg),
        5 => usize::from(arg) * 8,
        6 => usize::from(arg) * 256,
        _ => base + usize::from(arg),
    };
    let data: Vec<u8> = (0..len).map(|i| datagram_byte(s, len, i)).collect();
    let result = conn.send_datagram(Bytes::from(data));
    let closing = conn.is_closed();
    drop(conn);
    if model[s].closed == Some(h) || closing {
        assert_eq!(max, Err(SendDatagramError::ConnectionClosed), "side {s}: closed");
        assert_eq!(
            result,
            Err(SendDatagramError::ConnectionClosed),
            "side {s}: closed"
        );
    }
    match max {
        Err(e) => assert_eq!(result, Err(e), "side {s}: {len} bytes"),
        Ok(m) => {
            let expected = if len <= m {
                Ok(())
            } else {
                Err(SendDatagramError::TooLarge { max: m })
            };
            assert_eq!(result, expected, "side {s}: {len} bytes, {m} reported");
            assert!(
                m <= send_limit,
                "side {s}: {m} bytes offered, send buffer {send_limit}"
            );
            // Unless corruption reached the peer's transport parameters (null cipher).
            if honest {
                let frame = 1 + VarInt::size(m as u64) + m;
                assert!(
                    peer_limit.is_some_and(|limit| frame as u64 <= limit),
                    "side {s}: {m} bytes offered (a {frame}-byte frame), peer announced {peer_limit:?}"
                );
            }
        }
    }
    if result.is_ok() {
        *model[s].sent.entry(len).or_default() += 1;
    }
}

/// Side `s`'s application reads up to `n` datagrams. Each is within the max_datagram_frame_size this
/// side announced (RFC 9221 §3: a larger frame is an error, never a datagram) and, unless the input
/// could forge one, is a datagram the peer's API accepted, with its contents, delivered at most once.
fn read(pair: &mut Pair, model: &mut [Model; 2], s: usize, n: usize) {
    let Some(h) = pair.peers[s].conn else { return };
    let check = pair.peers[s].check_data;
    let announced = max_datagram_frame_size(pair.transport(s));
    let Ok(mut conn) = pair.peers[s].ep.conn(h) else {
        return;
    };
    for _ in 0..n {
        let Some(d) = conn.recv_datagram() else { break };
        let len = d.len();
        // The frame carried at least its type byte besides the data.
        assert!(
            announced.is_some_and(|limit| (len as u64) < limit),
            "side {s} read a {len}-byte datagram, having announced {announced:?}"
        );
        if check {
            let writer = 1 - s;
            let got = model[s].received.entry(len).or_default();
            *got += 1;
            let sent = model[writer].sent.get(&len).copied().unwrap_or(0);
            assert!(
                *got <= sent,
                "side {s}: {got} datagrams of {len} bytes read, {sent} sent"
            );
            assert!(
                d.iter()
                    .enumerate()
                    .all(|(i, &b)| b == datagram_byte(writer, len, i)),
                "side {s}: a {len}-byte datagram with the wrong contents"
            );
        }
    }
}

/// Both sides' datagram queues are within their limits.
fn assert_queues(pair: &Pair) {
    for p in &pair.peers {
        if let Some(h) = p.conn {
            p.ep.assert_datagram_queues_bounded(h);
        }
    }
}

/// `conn_datagrams`: the transfer of `conn_network` over a scripted network, while both applications
/// send and read datagrams.
///
/// Input: the transfer size; four bytes for the client's receive and send buffers and the server's
/// (`receive_buffer`, `send_buffer`: from none through the sizes that announce a max_datagram_frame_size
/// of 1, 2, 3, ... to the default); a count `n` and `n` fate bytes of the `conn_network` script; then
/// records `[op, a, b]`: bit 0 of `op` picks the side and the rest the action, which happens now, at
/// any point of the connection's life: send a datagram (of the largest size reported, one more, one
/// less, empty, or a size from `b`), send a burst of `a % 32 + 1`, read up to `a` (0: all), let `2a` ms
/// pass, or close the connection (only with `a` ≥ 0xf0, else let `b` ms pass). After the records both
/// sides read everything.
///
/// Invariants: no panic; `send_datagram` accepts exactly what `max_datagram_size` reported, which fits
/// the peer's announced max_datagram_frame_size and the send buffer, and refuses everything once the
/// connection is closing; a datagram read is within what the reader announced and (when nothing was
/// forged) is one the peer's API accepted, with its contents, read at most once; both datagram queues
/// hold what their byte counts say, within their limits; and the ends of `conn_network`: the transfer
/// completes or the connections are lost, and an honest pair that did not close loses its connection
/// only to an idle timeout or a stateless reset.
pub fn check_conn_datagrams(setup: &Setup, data: &[u8]) {
    run_conn_datagrams(setup, data);
}

/// The run of [`check_conn_datagrams`]; returns how many datagrams each side's application read.
pub(super) fn run_conn_datagrams(setup: &Setup, data: &[u8]) -> [u64; 2] {
    let mut input = Input::new(data);
    let len = transfer_len(&mut input);
    let buffers = [input.u8(), input.u8(), input.u8(), input.u8()];
    let mut pair = Pair::with_transport(setup, 5, |s, t| {
        t.datagram_receive_buffer = receive_buffer(buffers[2 * s]);
        t.datagram_send_buffer = send_buffer(buffers[2 * s + 1]);
    });
    let fates = usize::from(input.u8());
    let mut net = Scripted::new(Input::new(input.bytes(fates)));
    let mut model: [Model; 2] = Default::default();
    let mut app = transfer_app(len);
    while !input.is_empty() {
        let op = input.u8();
        let a = input.u8();
        let b = input.u8();
        let s = usize::from(op & 1);
        let mut wait = Duration::ZERO;
        match (op >> 1) % 8 {
            0..=2 => send(&mut pair, &mut model, s, a, b),
            3 => {
                for _ in 0..=a % 32 {
                    send(&mut pair, &mut model, s, b, a);
                }
            }
            4 | 5 => read(
                &mut pair,
                &mut model,
                s,
                if a == 0 { usize::MAX } else { usize::from(a) },
            ),
            6 => wait = Duration::from_millis(u64::from(a) * 2),
            _ if a >= 0xf0 => {
                if let Some(h) = pair.peers[s].conn {
                    if let Ok(mut conn) = pair.peers[s].ep.conn(h) {
                        conn.close(pair.now, u64::from(b), b"fuzz");
                        model[s].closed = Some(h);
                    }
                }
            }
            _ => wait = Duration::from_millis(u64::from(b)),
        }
        assert_queues(&pair);
        let limit = pair.now + wait;
        pair.run(&mut net, limit, &mut app, &|_| false);
        assert_queues(&pair);
    }
    let limit = pair.now + SETTLE;
    let mut settle = |pair: &mut Pair, s: usize| {
        app(pair, s);
        read(pair, &mut model, s, usize::MAX);
    };
    let finished = pair.run(&mut net, limit, &mut settle, &|p: &Pair| {
        transfer_done(p) && (p.peers.iter().all(|p| p.lost.is_none()) || both_lost(p))
    });
    assert_queues(&pair);
    let tainted = net.tainted();
    // As in `check_conn_network`: only a forged reset through the null cipher excuses a run that did
    // not end.
    if !(tainted && !finished && pair.forged_reset()) {
        assert_ended(&pair, finished);
    }
    let closed = model.iter().any(|m| m.closed.is_some());
    if !tainted && !pair.peers[SERVER].replaced {
        for (s, p) in pair.peers.iter().enumerate() {
            let Some(reason) = &p.lost else { continue };
            let by_application = match reason {
                ConnectionError::LocallyClosed | ConnectionError::ApplicationClosed { .. } => true,
                // An application's close before the handshake completes goes as a transport close with
                // APPLICATION_ERROR (RFC 9000 §10.2.3).
                ConnectionError::ConnectionClosed { error } => {
                    error.code == TransportErrorCode::APPLICATION_ERROR
                }
                _ => false,
            };
            assert!(
                matches!(reason, ConnectionError::TimedOut | ConnectionError::Reset)
                    || (closed && by_application),
                "side {s} of an honest pair closed with {reason:?} (an application closed: {closed})"
            );
        }
    }
    model.map(|m| m.received.values().sum())
}
