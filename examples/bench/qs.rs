//! The workloads on quicsand: two endpoints in one thread, datagrams handed over in memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quicsand::{
    ClientConfig, ConnectionHandle, Datagram, Dir, Endpoint, EndpointConfig, Event, ReadError, ServerConfig,
    StreamEvent, StreamId, TransportConfig,
};

use crate::alloc::{charged, counts, CLIENT, HARNESS, SERVER};
use crate::measure::{cpu_timed, real_now, SkipClock};
use crate::setup::{client_addr, server_addr, BulkParams, BulkResult, MemoryResult, Mode, Tls, CHUNK};

/// A deadline closer than this still belongs to the handshake's aftermath; a later one means idle.
const QUIET: Duration = Duration::from_secs(1);

/// A client and a server endpoint joined in memory.
struct Pair {
    client: Endpoint,
    server: Endpoint,
    cbuf: Vec<u8>,
    sbuf: Vec<u8>,
    /// Charge the receive buffers to the receiving engine (it may keep slices of them), not the harness.
    charge_buffers_to_receiver: bool,
    /// `Connected` events seen on each side.
    connected: [usize; 2],
    /// Transmits (GSO batches) from the client and from the server.
    transmits: [u64; 2],
    /// Datagrams from the client and from the server.
    datagrams: [u64; 2],
}

impl Pair {
    fn new(transport: &TransportConfig, tls: &Tls, batch: usize, seed: u64) -> Pair {
        let mut sc = EndpointConfig::with_seed(seed);
        sc.max_segments = batch;
        let mut server_config = ServerConfig::new(tls.server.clone());
        server_config.transport = transport.clone();
        if tls.mode == Mode::Lean {
            server_config.tokens.new_tokens_per_connection = 0;
        }
        let mut cc = EndpointConfig::with_seed(seed ^ 0xc1);
        cc.max_segments = batch;
        Pair {
            client: Endpoint::new(cc, None),
            server: charged(SERVER, || Endpoint::new(sc, Some(server_config))),
            cbuf: Vec::new(),
            sbuf: Vec::new(),
            charge_buffers_to_receiver: false,
            connected: [0; 2],
            transmits: [0; 2],
            datagrams: [0; 2],
        }
    }

    fn connect(&mut self, now: Instant, transport: &TransportConfig, tls: &Tls) -> ConnectionHandle {
        let mut config = ClientConfig::new(tls.client.clone());
        config.transport = transport.clone();
        charged(CLIENT, || {
            self.client.connect(now, config, server_addr(), "localhost")
        })
        .expect("connect")
    }

    /// Moves up to `limit` datagrams from one side to the other (whole transmits); returns how many.
    fn pump(&mut self, now: Instant, from_client: bool, limit: usize) -> usize {
        let (src, dst, buf, src_ctx, dst_ctx, from, to): (_, _, _, _, _, SocketAddr, SocketAddr) =
            if from_client {
                (
                    &mut self.client,
                    &mut self.server,
                    &mut self.cbuf,
                    CLIENT,
                    SERVER,
                    client_addr(),
                    server_addr(),
                )
            } else {
                (
                    &mut self.server,
                    &mut self.client,
                    &mut self.sbuf,
                    SERVER,
                    CLIENT,
                    server_addr(),
                    client_addr(),
                )
            };
        let buf_ctx = if self.charge_buffers_to_receiver {
            dst_ctx
        } else {
            HARNESS
        };
        let mut moved = 0;
        while moved < limit {
            let Some(t) = charged(src_ctx, || src.poll_transmit(now, buf)) else {
                break;
            };
            // One receive buffer per batch, as a GRO receive hands it over, split into its datagrams.
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
                let datagram = Datagram {
                    remote: from,
                    local: Some(to.ip()),
                    ecn: t.ecn,
                    payload: d,
                };
                charged(dst_ctx, || dst.handle_datagram(now, datagram));
                moved += 1;
                self.datagrams[usize::from(!from_client)] += 1;
            }
        }
        moved
    }

    /// Drains both sides' events, handing each to `f` (with `true` for the client side).
    fn events(&mut self, mut f: impl FnMut(bool, &mut Endpoint, ConnectionHandle, Event)) {
        for (is_client, endpoint, ctx) in [
            (true, &mut self.client, CLIENT),
            (false, &mut self.server, SERVER),
        ] {
            charged(ctx, || {
                while let Some((h, event)) = endpoint.poll_event() {
                    if event == Event::Connected {
                        self.connected[usize::from(!is_client)] += 1;
                    }
                    f(is_client, endpoint, h, event);
                }
            });
        }
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn run_timers(&mut self, now: Instant) {
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            charged(CLIENT, || self.client.handle_timeout(now));
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            charged(SERVER, || self.server.handle_timeout(now));
        }
    }

    /// Exchanges everything, running timers due within [`QUIET`] on a virtual clock, until both sides are
    /// idle: the handshake and all its aftermath (acknowledgements, tickets, HANDSHAKE_DONE) are done.
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

    /// Runs due timers, or when nothing moved jumps the clock to the next deadline.
    fn idle(&mut self, clock: &mut SkipClock, moved: usize) {
        if moved == 0 {
            let next = self.next_timeout().expect("a stalled transfer has a deadline");
            clock.skip_to(next);
        }
        self.run_timers(clock.now());
    }
}

/// quicsand's transport for a fixed datagram size: path MTU discovery off, as for quinn-proto.
fn transport(size: usize) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.mtu = size as u16;
    t.mtu_discovery = None;
    t.max_udp_payload_size = t.max_udp_payload_size.max(size as u16);
    t
}

/// One stream of `p.bytes` from client to server; CPU time counted from the end of the handshake.
pub fn bulk(p: &BulkParams, tls: &Tls) -> BulkResult {
    let transport = transport(p.size);
    let mut pair = Pair::new(&transport, tls, p.batch, 1);
    let mut clock = SkipClock::new();
    let mut now = clock.now();
    let ch = pair.connect(now, &transport, tls);
    pair.settle(&mut now);
    assert_eq!(pair.connected, [1, 1], "quicsand handshake");
    clock.skip_to(now);

    let start_allocs = counts(CLIENT).allocs + counts(SERVER).allocs;
    let start_transmits = pair.transmits[0];
    let sid = pair
        .client
        .conn(ch)
        .expect("live")
        .open_uni()
        .expect("stream credit");
    let (mut written, mut finished, mut received, mut done) = (0u64, false, 0u64, false);
    let (mut datagrams, mut acks) = (0u64, 0u64);
    let mut readable: Vec<(ConnectionHandle, StreamId)> = Vec::new();
    let ((), cpu) = cpu_timed(|| {
        while !done {
            let now = clock.now();
            if !finished {
                charged(CLIENT, || {
                    let mut conn = pair.client.conn(ch).expect("live");
                    let mut s = conn.stream(sid);
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
            pair.events(|is_client, _, h, e| {
                if let (false, Event::Stream(StreamEvent::Readable { id })) = (is_client, e) {
                    readable.push((h, id));
                }
            });
            charged(SERVER, || {
                for (h, id) in readable.drain(..) {
                    let mut conn = pair.server.conn(h).expect("live");
                    let mut s = conn.stream(id);
                    loop {
                        match s.read_chunk(usize::MAX) {
                            Ok(Some(chunk)) => received += chunk.len() as u64,
                            Ok(None) => {
                                done = true;
                                break;
                            }
                            Err(ReadError::Blocked) => break,
                            Err(e) => panic!("read: {e}"),
                        }
                    }
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

/// `n` full handshakes, each on fresh endpoints, each driven until both sides are idle. Returns the CPU time.
pub fn handshakes(n: usize, tls: &Tls) -> Duration {
    // Default: path MTU discovery on, like quinn-proto's default; lean: off on both.
    let transport = TransportConfig {
        mtu_discovery: match tls.mode {
            Mode::Default => TransportConfig::default().mtu_discovery,
            Mode::Lean => None,
        },
        ..TransportConfig::default()
    };
    let mut now = real_now();
    let ((), cpu) = cpu_timed(|| {
        for i in 0..n {
            let mut pair = Pair::new(&transport, tls, 10, i as u64);
            pair.connect(now, &transport, tls);
            pair.settle(&mut now);
            assert_eq!(pair.connected, [1, 1], "quicsand handshake {i}");
        }
    });
    cpu
}

/// `n` connections to one server, each left idle once established; the server's heap growth per connection.
pub fn memory(n: usize, tls: &Tls) -> MemoryResult {
    // Idle connections must outlive the run, whose virtual clock advances with every handshake.
    let transport = TransportConfig {
        max_idle_timeout: None,
        ..TransportConfig::default()
    };
    let mut pair = Pair::new(&transport, tls, 10, 7);
    pair.charge_buffers_to_receiver = true;
    let mut now = real_now();
    let before = counts(SERVER);
    for _ in 0..n {
        pair.connect(now, &transport, tls);
        pair.settle(&mut now);
    }
    assert_eq!(pair.connected, [n, n], "every quicsand handshake completed");
    assert_eq!(pair.server.stats().connections_active, n);
    let grown = counts(SERVER).since(&before);
    if std::env::var_os("BENCH_LEAK").is_some() {
        // For a heap profiler: keep the server's connections alive to the end of the process.
        let Pair { client, server, .. } = pair;
        drop(client);
        std::mem::forget(server);
    }
    MemoryResult {
        conns: n,
        bytes_per_conn: grown.live_bytes as f64 / n as f64,
        live_allocs_per_conn: grown.live_allocs() as f64 / n as f64,
        allocs_per_conn: grown.allocs as f64 / n as f64,
    }
}

/// `n` request/response exchanges of `size` bytes each way, each on its own bidirectional stream, as many
/// at once as the server's stream limit allows. Returns the CPU time.
pub fn streams(n: usize, size: usize, tls: &Tls) -> Duration {
    // 1200-byte datagrams on both engines, as in `bulk`.
    let transport = transport(1200);
    let mut pair = Pair::new(&transport, tls, 10, 3);
    let mut clock = SkipClock::new();
    let mut now = clock.now();
    let ch = pair.connect(now, &transport, tls);
    pair.settle(&mut now);
    assert_eq!(pair.connected, [1, 1], "quicsand handshake");
    clock.skip_to(now);
    let request = &CHUNK[..size];
    let (mut opened, mut completed) = (0usize, 0usize);
    // Streams to read: (is_client, handle, id); the server's requests read so far, by stream.
    let mut readable: Vec<(bool, ConnectionHandle, StreamId)> = Vec::new();
    let mut got = std::collections::HashMap::<StreamId, usize>::new();
    let ((), cpu) = cpu_timed(|| {
        while completed < n {
            let now = clock.now();
            charged(CLIENT, || {
                let mut conn = pair.client.conn(ch).expect("live");
                while opened < n {
                    let Some(id) = conn.open_bi() else { break };
                    let mut s = conn.stream(id);
                    assert_eq!(s.write(request), Ok(size), "a fresh stream takes the request");
                    s.finish().expect("finish");
                    opened += 1;
                }
            });
            let mut moved = pair.pump(now, true, usize::MAX);
            pair.events(|is_client, endpoint, h, e| match e {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    let mut conn = endpoint.conn(h).expect("live");
                    while let Some(id) = conn.accept(Dir::Bi) {
                        readable.push((is_client, h, id));
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => readable.push((is_client, h, id)),
                _ => {}
            });
            for (is_client, h, id) in readable.drain(..) {
                let (endpoint, ctx) = if is_client {
                    (&mut pair.client, CLIENT)
                } else {
                    (&mut pair.server, SERVER)
                };
                charged(ctx, || {
                    let mut conn = endpoint.conn(h).expect("live");
                    let mut s = conn.stream(id);
                    loop {
                        match s.read_chunk(usize::MAX) {
                            Ok(Some(chunk)) => *got.entry(id).or_default() += chunk.len(),
                            Ok(None) => {
                                assert_eq!(got.remove(&id), Some(size), "a whole message");
                                if is_client {
                                    completed += 1;
                                } else {
                                    assert_eq!(s.write(request), Ok(size), "the response fits");
                                    s.finish().expect("finish");
                                }
                                break;
                            }
                            // Blocked, or a stream listed twice and already read to its end.
                            Err(_) => break,
                        }
                    }
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
