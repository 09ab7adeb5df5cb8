//! The same workloads on quinn-proto 0.11: endpoints and connections driven in memory in one thread, the
//! way quinn's own I/O layer drives them (endpoint events shuttled both ways after every call).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, EndpointConfig,
    Event, ReadError, ServerConfig, StreamEvent, StreamId, TransportConfig, ValidationTokenConfig,
};

use crate::alloc::{charged, counts, CLIENT, HARNESS, SERVER};
use crate::measure::{cpu_timed, real_now, SkipClock};
use crate::setup::{client_addr, server_addr, BulkParams, BulkResult, MemoryResult, Mode, Tls, CHUNK};

const QUIET: Duration = Duration::from_secs(1);

/// The AES-128-GCM suite QUIC needs for Initial packets when the TLS config offers another suite only.
fn initial_suite() -> rustls::quic::Suite {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|s| s.quic_suite())
        .expect("ring's TLS13_AES_128_GCM_SHA256 is a QUIC suite")
}

/// One endpoint and its connections (indexed by handle).
struct Side {
    endpoint: Endpoint,
    conns: Vec<Option<Connection>>,
    /// Connections polled for transmits and timers: all of them, except in `memory`, where only the newest.
    active: Vec<ConnectionHandle>,
    ctx: usize,
    addr: SocketAddr,
    buf: Vec<u8>,
    /// Stateless responses the endpoint produced, waiting to be sent.
    responses: Vec<Vec<u8>>,
    /// Application events, for the workload.
    events: Vec<(ConnectionHandle, Event)>,
    transport: Arc<TransportConfig>,
}

impl Side {
    fn new(endpoint: Endpoint, ctx: usize, addr: SocketAddr, transport: Arc<TransportConfig>) -> Side {
        Side {
            endpoint,
            conns: Vec::new(),
            active: Vec::new(),
            ctx,
            addr,
            buf: Vec::new(),
            responses: Vec::new(),
            events: Vec::new(),
            transport,
        }
    }

    fn conn(&mut self, h: ConnectionHandle) -> &mut Connection {
        self.conns[h.0].as_mut().expect("a live connection")
    }

    fn insert(&mut self, h: ConnectionHandle, conn: Connection) {
        if self.conns.len() <= h.0 {
            self.conns.resize_with(h.0 + 1, || None);
        }
        self.conns[h.0] = Some(conn);
        self.active.push(h);
    }

    /// Shuttles endpoint events of `h` both ways and collects its application events.
    fn service(&mut self, h: ConnectionHandle) {
        let conn = self.conns[h.0].as_mut().expect("a live connection");
        while let Some(ev) = conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(h, ev) {
                conn.handle_event(back);
            }
        }
        while let Some(ev) = conn.poll() {
            self.events.push((h, ev));
        }
    }

    fn recv(&mut self, now: Instant, from: SocketAddr, ecn: Option<EcnCodepoint>, payload: BytesMut) {
        let local = Some(self.addr.ip());
        match self
            .endpoint
            .handle(now, from, local, ecn, payload, &mut self.buf)
        {
            None => {}
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                self.conn(h).handle_event(ev);
                self.service(h);
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.buf.clear();
                let (h, conn) = self
                    .endpoint
                    .accept(incoming, now, &mut self.buf, None)
                    .unwrap_or_else(|e| panic!("quinn-proto accepts: {:?}", e.cause));
                self.insert(h, conn);
                self.service(h);
            }
            Some(DatagramEvent::Response(t)) => self.responses.push(self.buf[..t.size].to_vec()),
        }
        self.buf.clear();
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        let conns = &mut self.conns;
        self.active
            .iter()
            .filter_map(|h| conns[h.0].as_mut().and_then(|c| c.poll_timeout()))
            .min()
    }

    fn run_timers(&mut self, now: Instant) {
        for i in 0..self.active.len() {
            let h = self.active[i];
            let conn = self.conn(h);
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
                self.service(h);
            }
        }
    }
}

struct Pair {
    client: Side,
    server: Side,
    batch: usize,
    charge_buffers_to_receiver: bool,
    connected: [usize; 2],
    /// Transmits (GSO batches) from the client and from the server.
    transmits: [u64; 2],
    /// Datagrams from the client and from the server.
    datagrams: [u64; 2],
}

impl Pair {
    fn new(transport: TransportConfig, tls: &Tls, mode: Mode, batch: usize) -> Pair {
        let transport = Arc::new(transport);
        let server_tls = match QuicServerConfig::try_from(tls.server.clone()) {
            Ok(c) => c,
            Err(_) => QuicServerConfig::with_initial(tls.server.clone(), initial_suite()).expect("initial"),
        };
        let server = charged(SERVER, || {
            let mut config = ServerConfig::with_crypto(Arc::new(server_tls));
            config.transport_config(transport.clone());
            if mode == Mode::Lean {
                let mut tokens = ValidationTokenConfig::default();
                tokens.sent(0);
                config.validation_token_config(tokens);
            }
            Endpoint::new(
                Arc::new(EndpointConfig::default()),
                Some(Arc::new(config)),
                true,
                None,
            )
        });
        let client = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        Pair {
            client: Side::new(client, CLIENT, client_addr(), transport.clone()),
            server: Side::new(server, SERVER, server_addr(), transport),
            batch,
            charge_buffers_to_receiver: false,
            connected: [0; 2],
            transmits: [0; 2],
            datagrams: [0; 2],
        }
    }

    fn connect(&mut self, now: Instant, tls: &Tls) -> ConnectionHandle {
        let crypto = match QuicClientConfig::try_from(tls.client.clone()) {
            Ok(c) => c,
            Err(_) => QuicClientConfig::with_initial(tls.client.clone(), initial_suite()).expect("initial"),
        };
        let mut config = ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.client.transport.clone());
        let (h, conn) = charged(CLIENT, || {
            self.client
                .endpoint
                .connect(now, config, server_addr(), "localhost")
        })
        .expect("connect");
        self.client.insert(h, conn);
        h
    }

    /// Moves up to `limit` datagrams from one side to the other (whole transmits); returns how many.
    fn pump(&mut self, now: Instant, from_client: bool, limit: usize) -> usize {
        let (src, dst) = if from_client {
            (&mut self.client, &mut self.server)
        } else {
            (&mut self.server, &mut self.client)
        };
        let buf_ctx = if self.charge_buffers_to_receiver {
            dst.ctx
        } else {
            HARNESS
        };
        let (src_ctx, dst_ctx, from) = (src.ctx, dst.ctx, src.addr);
        let mut moved = 0;
        let mut buf = std::mem::take(&mut src.buf);
        for r in std::mem::take(&mut src.responses) {
            let payload = charged(buf_ctx, || BytesMut::from(&r[..]));
            charged(dst_ctx, || dst.recv(now, from, None, payload));
            moved += 1;
        }
        let mut i = 0;
        while moved < limit && i < src.active.len() {
            let h = src.active[i];
            buf.clear();
            let t = charged(src_ctx, || {
                let t = src.conn(h).poll_transmit(now, self.batch, &mut buf);
                src.service(h);
                t
            });
            let Some(t) = t else {
                i += 1;
                continue;
            };
            self.transmits[usize::from(!from_client)] += 1;
            let segment = t.segment_size.unwrap_or(t.size).max(1);
            let mut payload = charged(buf_ctx, || BytesMut::from(&buf[..t.size]));
            while !payload.is_empty() {
                // The last datagram takes the buffer itself, so the engine holds its last reference and
                // frees it (in its own accounting context).
                let d = if payload.len() > segment {
                    charged(buf_ctx, || payload.split_to(segment))
                } else {
                    std::mem::take(&mut payload)
                };
                // The codepoint travels as on a path that carries ECN (quicsand's pump does the same).
                charged(dst_ctx, || dst.recv(now, from, t.ecn, d));
                moved += 1;
                self.datagrams[usize::from(!from_client)] += 1;
            }
        }
        buf.clear();
        src.buf = buf;
        moved
    }

    /// Drains both sides' application events into `f` (with `true` for the client side).
    fn events(&mut self, mut f: impl FnMut(bool, &mut Side, ConnectionHandle, Event)) {
        for (is_client, side) in [(true, &mut self.client), (false, &mut self.server)] {
            let ctx = side.ctx;
            let mut events = std::mem::take(&mut side.events);
            charged(ctx, || {
                for (h, e) in events.drain(..) {
                    if matches!(e, Event::Connected) {
                        self.connected[usize::from(!is_client)] += 1;
                    }
                    f(is_client, side, h, e);
                }
            });
            side.events = events;
        }
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        [self.client.next_timeout(), self.server.next_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn run_timers(&mut self, now: Instant) {
        charged(CLIENT, || self.client.run_timers(now));
        charged(SERVER, || self.server.run_timers(now));
    }

    fn settle(&mut self, now: &mut Instant) {
        loop {
            let moved = self.pump(*now, true, usize::MAX) + self.pump(*now, false, usize::MAX);
            self.events(|_, _, _, _| {});
            if moved > 0 {
                continue;
            }
            match self.next_timeout() {
                Some(t) if t <= *now + QUIET => {
                    *now = (*now).max(t);
                    self.run_timers(*now);
                }
                _ => break,
            }
        }
    }

    fn idle(&mut self, clock: &mut SkipClock, moved: usize) {
        if moved == 0 {
            let next = self.next_timeout().expect("a stalled transfer has a deadline");
            clock.skip_to(next);
        }
        self.run_timers(clock.now());
    }
}

/// quinn-proto's transport for a fixed datagram size: MTU discovery off, so both engines send `size`.
fn transport(size: usize) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.initial_mtu(size as u16)
        .min_mtu(size as u16)
        .mtu_discovery_config(None);
    t
}

fn handshake_transport(mode: Mode) -> TransportConfig {
    let mut t = TransportConfig::default();
    if mode == Mode::Lean {
        t.mtu_discovery_config(None);
    }
    t
}

pub fn bulk(p: &BulkParams, tls: &Tls) -> BulkResult {
    let mut pair = Pair::new(transport(p.size), tls, Mode::Default, p.batch);
    let mut clock = SkipClock::new();
    let mut now = clock.now();
    let ch = pair.connect(now, tls);
    pair.settle(&mut now);
    assert_eq!(pair.connected, [1, 1], "quinn-proto handshake");
    clock.skip_to(now);

    let start_allocs = counts(CLIENT).allocs + counts(SERVER).allocs;
    let start_transmits = pair.transmits[0];
    let sid = charged(CLIENT, || pair.client.conn(ch).streams().open(Dir::Uni)).expect("stream credit");
    let (mut written, mut finished, mut received, mut done) = (0u64, false, 0u64, false);
    let (mut datagrams, mut acks) = (0u64, 0u64);
    let mut readable: Vec<(ConnectionHandle, StreamId)> = Vec::new();
    let ((), cpu) = cpu_timed(|| {
        while !done {
            let now = clock.now();
            if !finished {
                charged(CLIENT, || {
                    let conn = pair.client.conn(ch);
                    let mut s = conn.send_stream(sid);
                    while written < p.bytes {
                        let n = (p.bytes - written).min(CHUNK.len() as u64) as usize;
                        match s.write(&CHUNK[..n]) {
                            Ok(k) if k > 0 => written += k as u64,
                            _ => break,
                        }
                    }
                    if written == p.bytes {
                        s.finish().expect("finish");
                        finished = true;
                    }
                });
            }
            let sent = pair.pump(now, true, p.round);
            pair.events(|is_client, side, h, e| match (is_client, e) {
                (false, Event::Stream(StreamEvent::Opened { dir })) => {
                    while let Some(id) = side.conn(h).streams().accept(dir) {
                        readable.push((h, id));
                    }
                }
                (false, Event::Stream(StreamEvent::Readable { id })) => readable.push((h, id)),
                _ => {}
            });
            charged(SERVER, || {
                for (h, id) in readable.drain(..) {
                    let conn = pair.server.conn(h);
                    let mut s = conn.recv_stream(id);
                    let Ok(mut chunks) = s.read(true) else { continue };
                    loop {
                        match chunks.next(usize::MAX) {
                            Ok(Some(chunk)) => received += chunk.bytes.len() as u64,
                            Ok(None) => {
                                done = true;
                                break;
                            }
                            Err(ReadError::Blocked) => break,
                            Err(e) => panic!("read: {e}"),
                        }
                    }
                    let _ = chunks.finalize();
                    pair.server.service(h);
                }
            });
            let back = pair.pump(now, false, usize::MAX);
            pair.events(|_, _, _, _| {});
            datagrams += sent as u64;
            acks += back as u64;
            pair.idle(&mut clock, sent + back);
        }
    });
    assert_eq!(received, p.bytes, "every byte arrived");
    BulkResult {
        cpu,
        bytes: received,
        datagrams,
        acks,
        engine_allocs: counts(CLIENT).allocs + counts(SERVER).allocs - start_allocs,
        transmits: pair.transmits[0] - start_transmits,
    }
}

pub fn handshakes(n: usize, tls: &Tls, mode: Mode) -> Duration {
    let mut now = real_now();
    let ((), cpu) = cpu_timed(|| {
        for i in 0..n {
            let mut pair = Pair::new(handshake_transport(mode), tls, mode, 10);
            pair.connect(now, tls);
            pair.settle(&mut now);
            assert_eq!(pair.connected, [1, 1], "quinn-proto handshake {i}");
        }
    });
    cpu
}

pub fn memory(n: usize, tls: &Tls) -> MemoryResult {
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(None);
    let mut pair = Pair::new(transport, tls, Mode::Default, 10);
    pair.charge_buffers_to_receiver = true;
    let mut now = real_now();
    let before = counts(SERVER);
    for _ in 0..n {
        // Only the newest connection on each side is driven: the others are idle.
        pair.client.active.clear();
        pair.server.active.clear();
        pair.connect(now, tls);
        pair.settle(&mut now);
    }
    assert_eq!(pair.connected, [n, n], "every quinn-proto handshake completed");
    let grown = counts(SERVER).since(&before);
    MemoryResult {
        conns: n,
        bytes_per_conn: grown.live_bytes as f64 / n as f64,
        live_allocs_per_conn: grown.live_allocs() as f64 / n as f64,
        allocs_per_conn: grown.allocs as f64 / n as f64,
    }
}

pub fn streams(n: usize, size: usize, tls: &Tls) -> Duration {
    // 1200-byte datagrams on both engines (no MTU discovery), as in `bulk`.
    let mut pair = Pair::new(transport(1200), tls, Mode::Default, 10);
    let mut clock = SkipClock::new();
    let mut now = clock.now();
    let ch = pair.connect(now, tls);
    pair.settle(&mut now);
    assert_eq!(pair.connected, [1, 1], "quinn-proto handshake");
    clock.skip_to(now);
    let request = &CHUNK[..size];
    let (mut opened, mut completed) = (0usize, 0usize);
    let mut readable: Vec<(bool, ConnectionHandle, StreamId)> = Vec::new();
    let mut got = std::collections::HashMap::<StreamId, usize>::new();
    let ((), cpu) = cpu_timed(|| {
        while completed < n {
            let now = clock.now();
            charged(CLIENT, || {
                let conn = pair.client.conn(ch);
                while opened < n {
                    let Some(id) = conn.streams().open(Dir::Bi) else {
                        break;
                    };
                    let mut s = conn.send_stream(id);
                    assert_eq!(
                        s.write(request).ok(),
                        Some(size),
                        "a fresh stream takes the request"
                    );
                    s.finish().expect("finish");
                    opened += 1;
                }
                pair.client.service(ch);
            });
            let mut moved = pair.pump(now, true, usize::MAX);
            pair.events(|is_client, side, h, e| match e {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = side.conn(h).streams().accept(Dir::Bi) {
                        readable.push((is_client, h, id));
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => readable.push((is_client, h, id)),
                _ => {}
            });
            for (is_client, h, id) in readable.drain(..) {
                let side = if is_client {
                    &mut pair.client
                } else {
                    &mut pair.server
                };
                let ctx = side.ctx;
                charged(ctx, || {
                    let conn = side.conn(h);
                    let mut fin = false;
                    {
                        let mut s = conn.recv_stream(id);
                        let Ok(mut chunks) = s.read(true) else { return };
                        loop {
                            match chunks.next(usize::MAX) {
                                Ok(Some(chunk)) => *got.entry(id).or_default() += chunk.bytes.len(),
                                Ok(None) => {
                                    fin = true;
                                    break;
                                }
                                Err(ReadError::Blocked) => break,
                                Err(e) => panic!("read: {e}"),
                            }
                        }
                        let _ = chunks.finalize();
                    }
                    if fin {
                        assert_eq!(got.remove(&id), Some(size), "a whole message");
                        if is_client {
                            completed += 1;
                        } else {
                            let mut s = conn.send_stream(id);
                            assert_eq!(s.write(request).ok(), Some(size), "the response fits");
                            s.finish().expect("finish");
                        }
                    }
                    side.service(h);
                });
            }
            moved += pair.pump(now, false, usize::MAX);
            moved += pair.pump(now, true, usize::MAX);
            pair.idle(&mut clock, moved);
        }
    });
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!(
            "streams: datagrams {:?}, transmits {:?}",
            pair.datagrams, pair.transmits
        );
    }
    cpu
}
