//! A client and a server endpoint on a virtual clock, joined by a network the caller controls, with a
//! model of every stream's bytes: the harness of the connection-level checks.
//!
//! It is smaller than [`crate::sim`] on purpose: the fuzz input decides the fate of each datagram and
//! the time of each injected frame, which the simulator's seeded links do not allow, and a fuzz
//! execution must cost well under a millisecond.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::conn::{ReadError, StreamEvent, WriteError};
use crate::crypto::tls;
use crate::wire::frame::Dir;
use crate::{
    ClientConfig, ConnectionError, ConnectionHandle, Datagram, EcnCodepoint, Endpoint, EndpointConfig, Event,
    ServerConfig, StreamId, TransportConfig,
};

/// Index of the client in [`Pair`]'s per-side arrays.
pub(crate) const CLIENT: usize = 0;
/// Index of the server.
pub(crate) const SERVER: usize = 1;

/// An Ed25519 certificate for "localhost" and its key (PKCS#8), made once with rcgen: the real-crypto
/// (test) builds of the checks need a certificate, and a fixed one keeps runs reproducible.
const CERT: &[u8] = include_bytes!("cert.der");
const KEY: &[u8] = include_bytes!("key.der");

/// Idle timeout of both peers: a connection the input stalled closes after this much virtual time.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive interval of both peers in [`Pair::with_keep_alive`], so that an idle application
/// (`stream_ops` waiting) does not lose its connection to the idle timeout. Not for the transfer
/// targets: there a stream stuck behind a forged ACK must end in an idle timeout, not hang.
const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// One-way delay of the network when the input does not say otherwise.
pub(crate) const BASE_DELAY: Duration = Duration::from_millis(10);
/// Datagrams in flight at once; beyond it the network drops (keeps memory bounded).
const MAX_IN_FLIGHT: usize = 4096;
/// Rounds at one instant after which the pair is deemed to spin: an engine that keeps producing work
/// without time advancing is a bug.
const SPIN_LIMIT: u32 = 10_000;

/// What every connection-level check needs, made once per process: the clock origin and the client and
/// server configurations.
#[derive(Debug, Clone)]
pub struct Setup {
    epoch: Instant,
    client: ClientConfig,
    pub(crate) server: ServerConfig,
}

impl Setup {
    /// Configurations around a fixed certificate, with `epoch` as the origin of the virtual clock (the
    /// caller reads the clock; the checks never do).
    pub fn new(epoch: Instant) -> Self {
        let cert = CertificateDer::from(CERT.to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY.to_vec()));
        let alpn = vec![b"fuzz".to_vec()];
        let server_tls = tls::server_config(vec![cert.clone()], key, alpn.clone())
            .expect("the embedded certificate and key belong together");
        let client_tls =
            tls::client_config(vec![cert], alpn).expect("the embedded certificate is a valid root");
        let transport = TransportConfig {
            max_idle_timeout: Some(IDLE_TIMEOUT),
            ..TransportConfig::default()
        };
        let mut client = ClientConfig::new(client_tls);
        client.transport = transport.clone();
        let mut server = ServerConfig::new(server_tls);
        server.transport = transport;
        Self {
            epoch,
            client,
            server,
        }
    }

    /// The clock origin.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A server endpoint with the setup's configuration.
    pub(crate) fn server_endpoint(&self, seed: u64) -> Endpoint {
        Endpoint::new(EndpointConfig::with_seed(seed), Some(self.server.clone()))
    }
}

/// What the network does with one datagram.
pub(crate) trait Network {
    /// Appends one `(delay, bytes)` per copy to deliver (none: dropped). `datagram` may be changed
    /// (corrupted) on the way.
    fn route(&mut self, from: usize, datagram: Vec<u8>, out: &mut Vec<(Duration, Vec<u8>)>);

    /// The port side `from`'s datagrams appear to come from, after the last [`route`](Self::route) (a
    /// NAT rebinding, RFC 9000 §9.3); `None` for the side's own. Replies reach the side whatever port
    /// they go to.
    fn source_port(&self, _from: usize) -> Option<u16> {
        None
    }

    /// Whether the network forged what it delivered (a corruption the null cipher cannot detect): then
    /// received stream data is no longer checked against what was written.
    fn tainted(&self) -> bool {
        false
    }

    /// The ECN codepoint a datagram of side `from` sent with `sent` arrives with, after the last
    /// [`route`](Self::route) (a network may clear, rewrite or CE-mark it); carried unchanged by default.
    fn ecn(&mut self, _from: usize, sent: Option<EcnCodepoint>) -> Option<EcnCodepoint> {
        sent
    }
}

/// A network that delivers everything after [`BASE_DELAY`].
#[derive(Debug, Default)]
pub(crate) struct Perfect;

impl Network for Perfect {
    fn route(&mut self, _from: usize, datagram: Vec<u8>, out: &mut Vec<(Duration, Vec<u8>)>) {
        out.push((BASE_DELAY, datagram));
    }
}

/// One direction of one stream, as the harness knows it: what the writer wrote and what the reader read.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamModel {
    pub(crate) written: u64,
    pub(crate) finished: bool,
    /// The writer reset it with this code.
    pub(crate) reset: Option<u64>,
    /// The writer learnt the reader stopped it.
    pub(crate) stopped_seen: bool,
    /// The reader stopped it with this code.
    pub(crate) stop: Option<u64>,
    pub(crate) read: u64,
    pub(crate) read_fin: bool,
    pub(crate) read_reset: Option<u64>,
}

impl StreamModel {
    /// The reader is owed every byte and the end: finished, not reset, not stopped.
    pub(crate) fn owed(&self) -> bool {
        self.finished && self.reset.is_none() && self.stop.is_none() && !self.stopped_seen
    }

    /// The reader has seen the end of this direction, one way or another.
    pub(crate) fn ended(&self) -> bool {
        self.read_fin || self.read_reset.is_some() || self.stop.is_some()
    }
}

/// The byte at `offset` of what `writer` sends on `id`.
pub(crate) fn pattern_byte(writer: usize, id: StreamId, offset: u64) -> u8 {
    let x = offset
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(id.0.wrapping_mul(31))
        .wrapping_add(writer as u64 * 7);
    (x >> 7) as u8 ^ offset as u8
}

/// One peer of the pair.
pub(crate) struct Peer {
    pub(crate) ep: Endpoint,
    pub(crate) addr: SocketAddr,
    pub(crate) conn: Option<ConnectionHandle>,
    pub(crate) connected: bool,
    pub(crate) lost: Option<ConnectionError>,
    /// Streams this side knows: opened or accepted, in order.
    pub(crate) streams: Vec<StreamId>,
    /// Bytes received from the other side must match the pattern (not when the input could forge
    /// stream data: injected frames, or corruption under the null cipher).
    pub(crate) check_data: bool,
    /// Nothing was injected into this side: what it does to its streams is only what its application
    /// asked for (an injected STOP_SENDING makes it reset a stream on its own).
    pub(crate) honest: bool,
    /// The server's first connection died before connecting and a later one replaced it.
    pub(crate) replaced: bool,
}

/// A datagram on its way: arrival time, sequence number (for a stable order), receiving side, the
/// address it comes from, bytes.
/// Arrival, sequence, receiving side, source address, the ECN bits, the bytes.
type InFlight = (Instant, u64, usize, SocketAddr, u8, Vec<u8>);

/// A client and a server endpoint, a network, and the stream model.
pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) peers: [Peer; 2],
    /// Both directions of every stream: `(writer, id)`.
    pub(crate) model: BTreeMap<(usize, StreamId), StreamModel>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    buf: Vec<u8>,
    routed: Vec<(Duration, Vec<u8>)>,
    /// Datagrams each side sent, for corpus recording.
    pub(crate) record: Option<Vec<(usize, Vec<u8>)>>,
    /// Each side's transport configuration.
    transports: [TransportConfig; 2],
}

impl Pair {
    /// A client connecting to a server; nothing has been sent yet.
    pub(crate) fn new(setup: &Setup, seed: u64) -> Self {
        Self::build(setup.clone(), seed)
    }

    /// Like [`Pair::new`], with keep-alives on both sides.
    pub(crate) fn with_keep_alive(setup: &Setup, seed: u64) -> Self {
        Self::with_transport(setup, seed, |_, t| t.keep_alive_interval = Some(KEEP_ALIVE))
    }

    /// Like [`Pair::new`], with each side's transport configuration changed by `configure` (called with
    /// [`CLIENT`] and [`SERVER`]).
    pub(crate) fn with_transport(
        setup: &Setup,
        seed: u64,
        configure: impl Fn(usize, &mut TransportConfig),
    ) -> Self {
        let mut setup = setup.clone();
        configure(CLIENT, &mut setup.client.transport);
        configure(SERVER, &mut setup.server.transport);
        Self::build(setup, seed)
    }

    /// The transport configuration of side `s`'s connections.
    pub(crate) fn transport(&self, s: usize) -> &TransportConfig {
        &self.transports[s]
    }

    fn build(setup: Setup, seed: u64) -> Self {
        let setup = &setup;
        let now = setup.epoch;
        let client_addr: SocketAddr = "192.0.2.1:5000".parse().expect("valid address");
        let server_addr: SocketAddr = "192.0.2.2:443".parse().expect("valid address");
        let mut client = Endpoint::new(EndpointConfig::with_seed(seed), None);
        let conn = client
            .connect(now, setup.client.clone(), server_addr, "localhost")
            .expect("a fresh client endpoint can connect");
        let peer = |ep, addr, conn| Peer {
            ep,
            addr,
            conn,
            connected: false,
            lost: None,
            streams: Vec::new(),
            check_data: true,
            honest: true,
            replaced: false,
        };
        Self {
            now,
            peers: [
                peer(client, client_addr, Some(conn)),
                peer(setup.server_endpoint(seed ^ 0x5eed), server_addr, None),
            ],
            model: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            buf: Vec::new(),
            routed: Vec::new(),
            record: None,
            transports: [setup.client.transport.clone(), setup.server.transport.clone()],
        }
    }

    /// Whether side `s`'s connection is up and not lost.
    pub(crate) fn usable(&self, s: usize) -> bool {
        let p = &self.peers[s];
        p.connected && p.lost.is_none() && p.conn.is_some()
    }

    /// Sends what both endpoints have, through `net`. Returns whether anything was sent.
    fn flush(&mut self, net: &mut dyn Network) -> bool {
        let mut sent = false;
        for s in [CLIENT, SERVER] {
            while let Some(t) = self.peers[s].ep.poll_transmit(self.now, &mut self.buf) {
                sent = true;
                for d in t.datagrams(&self.buf) {
                    if let Some(record) = &mut self.record {
                        record.push((s, d.to_vec()));
                    }
                    net.route(s, d.to_vec(), &mut self.routed);
                    let ecn = net.ecn(s, t.ecn).map_or(0, EcnCodepoint::bits);
                    let mut from = self.peers[s].addr;
                    if let Some(port) = net.source_port(s) {
                        from.set_port(port);
                    }
                    for (delay, bytes) in self.routed.drain(..) {
                        if self.in_flight.len() < MAX_IN_FLIGHT {
                            self.seq += 1;
                            self.in_flight.push(Reverse((
                                self.now + delay,
                                self.seq,
                                1 - s,
                                from,
                                ecn,
                                bytes,
                            )));
                        }
                    }
                }
            }
        }
        sent
    }

    /// Takes the events of both endpoints into the peers and the model.
    fn events(&mut self) {
        for s in [CLIENT, SERVER] {
            while let Some((h, event)) = self.peers[s].ep.poll_event() {
                let p = &mut self.peers[s];
                if let Event::Incoming { .. } = event {
                    // A connection that died before it connected (its client's first Initial was
                    // corrupted, say) is replaced by the next one the client's retransmissions start.
                    if p.conn.is_none() || (p.lost.is_some() && !p.connected) {
                        p.replaced |= p.conn.is_some();
                        p.conn = Some(h);
                        p.lost = None;
                    }
                }
                // A stale datagram (duplicated or delayed Initial) can start a second connection at
                // the server: only one is the pair's.
                if p.conn != Some(h) {
                    continue;
                }
                match event {
                    Event::Connected => p.connected = true,
                    Event::ConnectionLost { reason } => {
                        p.lost.get_or_insert(reason);
                    }
                    Event::Stream(StreamEvent::Stopped { id, .. }) => {
                        self.model.entry((s, id)).or_default().stopped_seen = true;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Delivers `datagram` to side `to` now, with the ECN codepoint `ecn`.
    fn deliver(&mut self, to: usize, from: SocketAddr, ecn: Option<EcnCodepoint>, datagram: &[u8]) {
        self.peers[to].ep.handle_datagram(
            self.now,
            Datagram {
                remote: from,
                local: None,
                ecn,
                payload: BytesMut::from(datagram),
            },
        );
    }

    /// Delivers the datagrams due now, in order. A run of them from one sender to one receiver with one
    /// ECN codepoint, of one size but for a shorter last, arrives together, as a receive offload (GRO)
    /// would hand it over: one batch for [`Endpoint::handle_batch`](crate::Endpoint::handle_batch), at
    /// most 64 datagrams and 65,535 bytes.
    fn deliver_due(&mut self, due: &[(usize, SocketAddr, u8, Vec<u8>)]) {
        let mut i = 0;
        while i < due.len() {
            let (to, from, ecn, ref first) = due[i];
            let stride = first.len();
            let mut total = stride;
            let mut j = i + 1;
            while j < due.len()
                && j - i < 64
                && stride > 0
                && due[j - 1].3.len() == stride
                && (due[j].0, due[j].1, due[j].2) == (to, from, ecn)
                && due[j].3.len() <= stride
                && total + due[j].3.len() <= 65_535
            {
                total += due[j].3.len();
                j += 1;
            }
            let ecn = EcnCodepoint::from_bits(ecn);
            if j - i == 1 {
                self.deliver(to, from, ecn, first);
            } else {
                let mut batch = BytesMut::with_capacity(total);
                for (.., bytes) in &due[i..j] {
                    batch.extend_from_slice(bytes);
                }
                let batch = Datagram {
                    remote: from,
                    local: None,
                    ecn,
                    payload: batch,
                };
                self.peers[to].ep.handle_batch(self.now, batch, stride);
            }
            i = j;
        }
    }

    /// Runs until `done` holds (then `true`) or the clock would pass `limit` (then `false`). `app` runs
    /// after every round, for each usable side: writing and reading streams.
    pub(crate) fn run(
        &mut self,
        net: &mut dyn Network,
        limit: Instant,
        app: &mut dyn FnMut(&mut Pair, usize),
        done: &dyn Fn(&Pair) -> bool,
    ) -> bool {
        let mut spins = 0u32;
        loop {
            spins += 1;
            assert!(
                spins < SPIN_LIMIT,
                "the endpoints spin: {SPIN_LIMIT} rounds without the clock moving"
            );
            self.events();
            for s in [CLIENT, SERVER] {
                if self.usable(s) {
                    app(self, s);
                }
            }
            let sent = self.flush(net);
            if net.tainted() {
                for p in &mut self.peers {
                    p.check_data = false;
                }
            }
            if sent {
                continue;
            }
            self.events();
            if done(self) {
                return true;
            }
            let next_arrival = self.in_flight.peek().map(|Reverse((at, ..))| *at);
            let next = [
                next_arrival,
                self.peers[CLIENT].ep.poll_timeout(),
                self.peers[SERVER].ep.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return false;
            };
            if next > limit {
                self.now = self.now.max(limit);
                return false;
            }
            if next > self.now {
                self.now = next;
                spins = 0;
            }
            let mut due = Vec::new();
            while let Some(Reverse((at, ..))) = self.in_flight.peek() {
                if *at > self.now {
                    break;
                }
                let Some(Reverse((_, _, to, from, ecn, bytes))) = self.in_flight.pop() else {
                    break;
                };
                due.push((to, from, ecn, bytes));
            }
            self.deliver_due(&due);
            for s in [CLIENT, SERVER] {
                if self.peers[s].ep.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.peers[s].ep.handle_timeout(self.now);
                }
            }
        }
    }

    /// Runs the handshake over a perfect network; returns whether both sides connected.
    pub(crate) fn handshake(&mut self, net: &mut dyn Network) -> bool {
        let limit = self.now + IDLE_TIMEOUT;
        self.run(net, limit, &mut |_, _| {}, &|p: &Pair| {
            p.peers.iter().all(|p| p.connected || p.lost.is_some())
        });
        self.usable(CLIENT) && self.usable(SERVER)
    }

    /// Writes up to `len` pattern bytes on stream `id` of side `s`; returns how many were taken.
    pub(crate) fn write(&mut self, s: usize, id: StreamId, len: usize) -> usize {
        let Some(h) = self.peers[s].conn else {
            return 0;
        };
        let m = self.model.entry((s, id)).or_default();
        let data: Vec<u8> = (0..len as u64)
            .map(|i| pattern_byte(s, id, m.written + i))
            .collect();
        let Ok(mut conn) = self.peers[s].ep.conn(h) else {
            return 0;
        };
        match conn.stream(id).write(&data) {
            Ok(n) => {
                m.written += n as u64;
                n
            }
            Err(WriteError::Stopped { .. }) => {
                m.stopped_seen = true;
                0
            }
            Err(_) => 0,
        }
    }

    /// Finishes stream `id` of side `s`.
    pub(crate) fn finish(&mut self, s: usize, id: StreamId) {
        let Some(h) = self.peers[s].conn else { return };
        let Ok(mut conn) = self.peers[s].ep.conn(h) else {
            return;
        };
        let m = self.model.entry((s, id)).or_default();
        match conn.stream(id).finish() {
            Ok(()) => m.finished = true,
            Err(WriteError::Stopped { .. }) => m.stopped_seen = true,
            Err(_) => {}
        }
    }

    /// Resets stream `id` of side `s` with `code`.
    pub(crate) fn reset(&mut self, s: usize, id: StreamId, code: u64) {
        let Some(h) = self.peers[s].conn else { return };
        let Ok(mut conn) = self.peers[s].ep.conn(h) else {
            return;
        };
        if conn.stream(id).reset(code).is_ok() {
            let m = self.model.entry((s, id)).or_default();
            // A reset after the end was acknowledged changes nothing for the reader.
            m.reset.get_or_insert(code);
        }
    }

    /// Side `s` stops reading stream `id` (STOP_SENDING with `code`).
    pub(crate) fn stop(&mut self, s: usize, id: StreamId, code: u64) {
        let Some(h) = self.peers[s].conn else { return };
        let Ok(mut conn) = self.peers[s].ep.conn(h) else {
            return;
        };
        if conn.stream(id).stop(code).is_ok() {
            self.model
                .entry((1 - s, id))
                .or_default()
                .stop
                .get_or_insert(code);
        }
    }

    /// Side `s` accepts every stream the peer opened.
    pub(crate) fn accept_all(&mut self, s: usize) {
        let Some(h) = self.peers[s].conn else { return };
        let Ok(mut conn) = self.peers[s].ep.conn(h) else {
            return;
        };
        for dir in [Dir::Bi, Dir::Uni] {
            while let Some(id) = conn.accept(dir) {
                self.peers[s].streams.push(id);
            }
        }
    }

    /// Side `s` reads up to `max` bytes of stream `id` (`usize::MAX`: all there is), checking them
    /// against the model.
    pub(crate) fn read(&mut self, s: usize, id: StreamId, mut max: usize) {
        let Some(h) = self.peers[s].conn else { return };
        let check = self.peers[s].check_data;
        let writer_honest = self.peers[1 - s].honest;
        let Ok(mut conn) = self.peers[s].ep.conn(h) else {
            return;
        };
        let writer = 1 - s;
        while max > 0 {
            let m = self.model.entry((writer, id)).or_default();
            match conn.stream(id).read_chunk(max) {
                Ok(Some(chunk)) => {
                    check_chunk(check, writer, id, m, &chunk);
                    max -= chunk.len().min(max);
                }
                Ok(None) => {
                    if check {
                        assert!(m.finished, "{id:?}: end of stream that was never finished");
                        assert_eq!(m.read, m.written, "{id:?}: end of stream before all its data");
                    }
                    m.read_fin = true;
                    return;
                }
                Err(ReadError::Reset { code }) => {
                    if check && writer_honest {
                        assert!(
                            m.reset == Some(code) || m.stop == Some(code),
                            "{id:?}: reset with {code}, which neither side asked for"
                        );
                    }
                    m.read_reset = Some(code);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Side `s` accepts and reads everything it can.
    pub(crate) fn read_all(&mut self, s: usize) {
        self.accept_all(s);
        for i in 0..self.peers[s].streams.len() {
            let id = self.peers[s].streams[i];
            // Our own unidirectional streams have nothing to read.
            if id.dir() == Dir::Uni && id.initiator() == side_of(s) {
                continue;
            }
            self.read(s, id, usize::MAX);
        }
    }

    /// Injects `payload` into side `to`'s connection as a 1-RTT packet payload from its peer.
    pub(crate) fn inject(&mut self, to: usize, payload: &[u8]) {
        if let Some(h) = self.peers[to].conn {
            self.peers[to]
                .ep
                .inject_payload(self.now, h, Bytes::copy_from_slice(payload));
        }
    }

    /// Whether a reader saw a reset its writer never sent: a forged RESET_STREAM, after which the reader
    /// forgets the stream while its writer waits for credit, sending STREAM_DATA_BLOCKED periodically
    /// (RFC 9000 §4.1) until it or its connection gives up.
    pub(crate) fn forged_reset(&self) -> bool {
        self.model
            .values()
            .any(|m| m.reset.is_none() && m.read_reset.is_some())
            || self.forged_final_size()
    }

    /// Whether a reader holds a final size its writer never sent: a forged FIN (a corrupted PING frame
    /// read as a STREAM frame with FIN at offset 1, say). The reader then sends no more MAX_STREAM_DATA
    /// (RFC 9000 §4.5: nothing lies beyond the final size), and a writer still at a lower limit sends
    /// STREAM_DATA_BLOCKED periodically, answered, for ever.
    fn forged_final_size(&self) -> bool {
        // An end read that was never written: a forged FIN at the read offset, after which the reader
        // read to that "end" and forgot the stream.
        let read_forged_end = |m: &StreamModel| m.read_fin && !(m.finished && m.read == m.written);
        self.model.values().any(read_forged_end)
            || self.model.iter().any(|((writer, id), m)| {
                let reader = &self.peers[1 - writer];
                let Some(h) = reader.conn else { return false };
                reader
                    .ep
                    .recv_final_size(h, *id)
                    .is_some_and(|size| m.reset.is_none() && !(m.finished && size == m.written))
            })
    }

    /// The invariant every connection check ends with: each side either got its connection lost or
    /// read to the end of every direction it is owed, exactly.
    pub(crate) fn assert_settled(&self) {
        for ((writer, id), m) in &self.model {
            let reader = 1 - writer;
            if self.peers[reader].lost.is_some() || self.peers[*writer].lost.is_some() {
                continue;
            }
            // A reader that received injected frames may have taken a forged RESET_STREAM.
            let forged_end = !self.peers[reader].check_data && m.ended();
            if m.owed() && !forged_end {
                assert!(
                    m.read_fin,
                    "{id:?} from side {writer}: the reader never saw the end (read {} of {} bytes)",
                    m.read, m.written
                );
            }
        }
    }
}

/// The [`crate::Side`] of index `s`.
pub(crate) fn side_of(s: usize) -> crate::Side {
    if s == CLIENT {
        crate::Side::Client
    } else {
        crate::Side::Server
    }
}

fn check_chunk(check: bool, writer: usize, id: StreamId, m: &mut StreamModel, chunk: &[u8]) {
    if check {
        assert!(!m.read_fin, "{id:?}: data after the end");
        let end = m.read + chunk.len() as u64;
        assert!(
            end <= m.written,
            "{id:?}: read past what was written ({end} > {})",
            m.written
        );
        for (i, &b) in chunk.iter().enumerate() {
            let offset = m.read + i as u64;
            assert_eq!(
                b,
                pattern_byte(writer, id, offset),
                "{id:?}: wrong byte at {offset}"
            );
        }
    }
    m.read += chunk.len() as u64;
}
