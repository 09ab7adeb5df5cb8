//! Stream behaviour beyond bulk transfer: many short request/response exchanges under stream-limit
//! back-pressure, a slow reader throttling its writer, resets and stops carrying their application codes,
//! GSO batches, key updates in the middle of transfers, priorities, and connection statistics after loss.
//! quicsand against quicsand and, where the behaviour is on the wire, quinn-proto in both roles.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::quicsand_node::QuicsandNode;
use common::quinn_node::{stream_id, QuinnNode};
use common::{client_addr, server_addr, Engine, Node, Pair, StreamError, TestCert};
use quicsand::{
    ClientConfig, Dir, Endpoint, EndpointConfig, Event, ReadError, ServerConfig, StreamEvent, StreamId,
    TransportConfig, WriteError,
};

const PAIRS: [(Engine, Engine); 3] = [
    (Engine::Quicsand, Engine::Quicsand),
    (Engine::Quicsand, Engine::Quinn),
    (Engine::Quinn, Engine::Quicsand),
];

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

use common::{digest, payload};

/// Per-engine settings of a pair's connections; the defaults are each engine's own.
#[derive(Default)]
struct Settings {
    /// The quicsand client's transport config.
    client: TransportConfig,
    /// The quicsand server's transport config.
    server: TransportConfig,
    /// Applied to quinn-proto's transport config, in either role.
    quinn: Option<fn(&mut quinn_proto::TransportConfig)>,
    /// `EndpointConfig::max_segments` of the quicsand client endpoint.
    client_max_segments: Option<usize>,
}

/// A client and a server of the given engines with `settings`, handshake done.
fn connected(c: Engine, s: Engine, seed: u64, settings: Settings) -> Pair {
    let cert = TestCert::new();
    let now = common::epoch();
    let server: Box<dyn Node> = match s {
        Engine::Quicsand => {
            let mut config = ServerConfig::new(cert.server_tls(&[]));
            config.transport = settings.server.clone();
            Box::new(QuicsandNode::server(server_addr(), config, seed ^ 0x5e))
        }
        Engine::Quinn => {
            let mut n = QuinnNode::server_with_tls(server_addr(), cert.server_tls(&[]), seed ^ 0x5e);
            if let Some(f) = settings.quinn {
                n.set_transport(f);
            }
            Box::new(n)
        }
    };
    let client: Box<dyn Node> = match c {
        Engine::Quicsand => {
            let mut endpoint_config = EndpointConfig::with_seed(seed ^ 0xc1);
            if let Some(m) = settings.client_max_segments {
                endpoint_config.max_segments = m;
            }
            let mut n = QuicsandNode::with_endpoint(client_addr(), Endpoint::new(endpoint_config, None));
            let mut config = ClientConfig::new(cert.client_tls(&[]));
            config.transport = settings.client.clone();
            n.connect(now, config, server_addr(), "localhost");
            Box::new(n)
        }
        Engine::Quinn => {
            let mut n = QuinnNode::client(client_addr(), seed ^ 0xc1);
            if let Some(f) = settings.quinn {
                n.set_transport(f);
            }
            n.connect(now, server_addr(), "localhost", cert.client_tls(&[]));
            Box::new(n)
        }
    };
    let mut p = Pair::new(client, server, seed);
    assert!(
        p.drive_until(Duration::from_secs(5), |p| p.both_connected()),
        "{c:?}/{s:?} handshake"
    );
    p
}

fn quicsand(node: &mut Box<dyn Node>) -> &mut QuicsandNode {
    node.as_any()
        .downcast_mut::<QuicsandNode>()
        .expect("a quicsand node")
}

fn quinn(node: &mut Box<dyn Node>) -> &mut QuinnNode {
    node.as_any()
        .downcast_mut::<QuinnNode>()
        .expect("a quinn-proto node")
}

fn engine_of(node: &mut Box<dyn Node>) -> Engine {
    if node.as_any().is::<QuicsandNode>() {
        Engine::Quicsand
    } else {
        Engine::Quinn
    }
}

/// Writes `data[*written..]` as far as the stream takes it; true once everything is written.
fn write_some(node: &mut dyn Node, id: u64, data: &[u8], written: &mut usize) -> bool {
    while *written < data.len() {
        match node.stream_write(id, &data[*written..]) {
            Ok(n) if n > 0 => *written += n,
            Ok(_) | Err(StreamError::Blocked) => return false,
            Err(e) => panic!("write on stream {id}: {e:?}"),
        }
    }
    true
}

/// Reads what stream `id` has into `into`; true at its end.
fn read_some(node: &mut dyn Node, id: u64, into: &mut Vec<u8>) -> bool {
    loop {
        match node.stream_read(id, usize::MAX) {
            Ok(Some(chunk)) => into.extend_from_slice(&chunk),
            Ok(None) => return true,
            Err(StreamError::Blocked) => return false,
            Err(e) => panic!("read on stream {id}: {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. Request/response exchanges under the server's concurrent-stream limit.
// ---------------------------------------------------------------------------------------------------

const REQUESTS: usize = 1000;
const MESSAGE: usize = KIB;
const SERVER_BIDI_LIMIT: u64 = 50;

fn request(i: usize) -> Bytes {
    payload(MESSAGE, 1_000_000 + i as u64)
}

fn respond(request: &[u8]) -> Vec<u8> {
    request.iter().rev().copied().collect()
}

/// One exchange as the client sees it.
struct Exchange {
    id: u64,
    index: usize,
    request: Bytes,
    written: usize,
    finished: bool,
    response: Vec<u8>,
}

/// The requesting side: keeps as many exchanges open as the peer's stream limit allows.
#[derive(Default)]
struct Requester {
    next: usize,
    open: Vec<Exchange>,
    completed: usize,
    /// `open_bi` returned `None` this many times.
    refused: usize,
    /// Streams opened after at least one refusal.
    opened_after_refusal: usize,
    max_open: usize,
}

impl Requester {
    fn step(&mut self, node: &mut dyn Node) {
        while self.next < REQUESTS {
            let Some(id) = node.stream_open(true) else {
                self.refused += 1;
                break;
            };
            if self.refused > 0 {
                self.opened_after_refusal += 1;
            }
            self.open.push(Exchange {
                id,
                index: self.next,
                request: request(self.next),
                written: 0,
                finished: false,
                response: Vec::new(),
            });
            self.next += 1;
        }
        self.max_open = self.max_open.max(self.open.len());
        let mut completed = 0;
        self.open.retain_mut(|x| {
            if !x.finished && write_some(node, x.id, &x.request, &mut x.written) {
                node.stream_finish(x.id).expect("finish a request");
                x.finished = true;
            }
            if !read_some(node, x.id, &mut x.response) {
                return true;
            }
            assert_eq!(
                x.response,
                respond(&x.request),
                "response to request {} on stream {}",
                x.index,
                x.id
            );
            completed += 1;
            false
        });
        self.completed += completed;
    }
}

/// One exchange as the server sees it.
struct Answer {
    id: u64,
    request: Vec<u8>,
    /// The response and how much of it was written, once the request ended.
    response: Option<(Vec<u8>, usize)>,
}

/// The answering side: reads each request to its end, then writes the reversed bytes and finishes.
#[derive(Default)]
struct Responder {
    open: Vec<Answer>,
    answered: usize,
}

impl Responder {
    fn step(&mut self, node: &mut dyn Node) {
        while let Some(id) = node.stream_accept(true) {
            self.open.push(Answer {
                id,
                request: Vec::new(),
                response: None,
            });
        }
        let mut answered = 0;
        self.open.retain_mut(|a| {
            if a.response.is_none() && read_some(node, a.id, &mut a.request) {
                assert_eq!(a.request.len(), MESSAGE, "request on stream {}", a.id);
                a.response = Some((respond(&a.request), 0));
            }
            let Some((data, written)) = &mut a.response else {
                return true;
            };
            if !write_some(node, a.id, data, written) {
                return true;
            }
            node.stream_finish(a.id).expect("finish a response");
            answered += 1;
            false
        });
        self.answered += answered;
    }
}

/// Runs the 1000 exchanges; returns the requester's counters and the virtual time taken.
fn exchanges(c: Engine, s: Engine, seed: u64) -> (Requester, Duration) {
    let settings = Settings {
        server: TransportConfig {
            streams: quicsand::StreamsConfig {
                max_concurrent_bidi_streams: SERVER_BIDI_LIMIT,
                ..Default::default()
            },
            ..Default::default()
        },
        quinn: Some(|t| {
            t.max_concurrent_bidi_streams(quinn_proto::VarInt::from_u64(SERVER_BIDI_LIMIT).unwrap());
        }),
        ..Default::default()
    };
    let mut p = connected(c, s, seed, settings);
    p.client.set_auto_read(false);
    p.server.set_auto_read(false);
    let (mut requester, mut responder) = (Requester::default(), Responder::default());
    let start = p.now;
    loop {
        requester.step(&mut *p.client);
        responder.step(&mut *p.server);
        if requester.completed == REQUESTS {
            break;
        }
        assert!(
            p.now - start < Duration::from_secs(60),
            "{c:?}/{s:?}: {} of {REQUESTS} exchanges after 60 s",
            requester.completed
        );
        assert!(
            p.step(),
            "{c:?}/{s:?}: stalled after {} exchanges",
            requester.completed
        );
    }
    assert_eq!(responder.answered, REQUESTS, "{c:?}/{s:?}");
    // The client learnt of new stream credit through an event.
    let available = match c {
        Engine::Quicsand => quicsand(&mut p.client)
            .stream_events()
            .iter()
            .filter(|e| **e == StreamEvent::Available { dir: Dir::Bi })
            .count(),
        Engine::Quinn => quinn(&mut p.client)
            .stream_events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    quinn_proto::StreamEvent::Available {
                        dir: quinn_proto::Dir::Bi
                    }
                )
            })
            .count(),
    };
    assert!(
        available > 0,
        "{c:?}/{s:?}: no Available event for bidirectional streams"
    );
    eprintln!(
        "{c:?} client / {s:?} server: {REQUESTS} exchanges in {:?} virtual; open_bi refused {} times, \
         {} opened after a refusal, at most {} open at once, {available} Available events",
        p.now - start,
        requester.refused,
        requester.opened_after_refusal,
        requester.max_open
    );
    (requester, p.now - start)
}

#[test]
fn thousand_request_response_exchanges_under_the_stream_limit() {
    for (c, s) in PAIRS {
        let (r, _) = exchanges(c, s, 60);
        assert_eq!(r.completed, REQUESTS, "{c:?}/{s:?}");
        assert!(r.refused > 0, "{c:?}/{s:?}: open_bi never hit the limit");
        assert!(
            r.opened_after_refusal > 0,
            "{c:?}/{s:?}: no stream opened after a refusal"
        );
        assert!(
            r.max_open as u64 <= SERVER_BIDI_LIMIT,
            "{c:?}/{s:?}: {} streams open at once, over the server's limit of {SERVER_BIDI_LIMIT}",
            r.max_open
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. A slow reader throttles the writer.
// ---------------------------------------------------------------------------------------------------

#[test]
fn slow_reader_throttles_the_writer() {
    const LEN: usize = 4 * MIB;
    const WINDOW: usize = 64 * KIB;
    const SEND_BUFFER: usize = 256 * KIB;
    const READ_SIZE: usize = 16 * KIB;
    const READ_EVERY: Duration = Duration::from_millis(100);
    let window = WINDOW as u64;
    let settings = Settings {
        server: TransportConfig {
            streams: quicsand::StreamsConfig {
                stream_receive_window: window,
                max_stream_receive_window: window,
                receive_window: window,
                max_receive_window: window,
                ..Default::default()
            },
            ..Default::default()
        },
        client: TransportConfig {
            streams: quicsand::StreamsConfig {
                send_buffer: SEND_BUFFER,
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let mut p = connected(Engine::Quicsand, Engine::Quicsand, 61, settings);
    p.server.set_auto_read(false);
    let data = payload(LEN, 61);
    let id = p.client.stream_open(false).expect("stream credit");
    let (mut accepted, mut finished) = (0usize, false);
    let mut received = Vec::with_capacity(LEN);
    let mut server_id = None;
    let mut at_end = false;
    let (mut blocked, mut writable_after_blocked) = (0usize, 0usize);
    // Index into the client's events where the latest unanswered Blocked happened.
    let mut waiting_since: Option<usize> = None;
    let mut max_outstanding = 0usize;
    let mut max_cwnd = 0usize;
    let start = p.now;
    let mut next_read = p.now;
    while !at_end {
        // The client writes as fast as `write` accepts.
        let client = quicsand(&mut p.client);
        if let Some(since) = waiting_since {
            let writable = client.raw_events[since..]
                .iter()
                .any(|(_, e)| *e == Event::Stream(StreamEvent::Writable { id: StreamId(id) }));
            if writable {
                writable_after_blocked += 1;
                waiting_since = None;
            }
        }
        while accepted < LEN {
            let written = client.conn().stream(StreamId(id)).write(&data[accepted..]);
            match written {
                Ok(n) => {
                    assert!(n > 0, "write accepted nothing without saying Blocked");
                    accepted += n;
                }
                Err(WriteError::Blocked) => {
                    blocked += 1;
                    waiting_since.get_or_insert(client.raw_events.len());
                    break;
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        if accepted == LEN && !finished {
            client.conn().stream(StreamId(id)).finish().expect("finish");
            finished = true;
        }
        // The server reads at most READ_SIZE every READ_EVERY.
        if p.now >= next_read {
            next_read += READ_EVERY;
            if server_id.is_none() {
                server_id = p.server.stream_accept(false);
            }
            if let Some(sid) = server_id {
                let mut budget = READ_SIZE;
                while budget > 0 {
                    match p.server.stream_read(sid, budget) {
                        Ok(Some(chunk)) => {
                            budget -= chunk.len();
                            received.extend_from_slice(&chunk);
                        }
                        Ok(None) => {
                            at_end = true;
                            break;
                        }
                        Err(StreamError::Blocked) => break,
                        Err(e) => panic!("read: {e:?}"),
                    }
                }
            }
        }
        let outstanding = accepted - received.len();
        max_outstanding = max_outstanding.max(outstanding);
        // The send buffer takes `send_buffer`, or up to four congestion windows while the window is large
        // (`StreamsConfig::max_send_buffer`); a window held back by flow control does not grow (RFC 9002
        // §7.8), so neither does the buffer.
        max_cwnd = max_cwnd.max(quicsand(&mut p.client).conn().stats().cwnd as usize);
        let buffer = SEND_BUFFER.max(4 * max_cwnd);
        assert!(
            outstanding <= buffer + WINDOW,
            "accepted {accepted} bytes while the reader has read {}: {outstanding} outstanding, over the send \
             buffer ({buffer}) and receive window ({WINDOW}) together",
            received.len()
        );
        assert!(p.now - start < Duration::from_secs(60), "slow transfer stalled");
        p.step_before(Some(next_read));
    }
    let elapsed = p.now - start;
    assert_eq!(received.len(), LEN);
    assert_eq!(digest(&received), digest(&data), "bytes arrived intact");
    assert!(blocked > 0, "write never returned Blocked");
    assert!(
        writable_after_blocked > 0,
        "no Writable event after a Blocked write"
    );
    assert!(
        waiting_since.is_none() || accepted == LEN,
        "a Blocked write still waits for its Writable event"
    );
    // 4 MiB at 16 KiB per 100 ms is 25.6 s: the reader set the pace.
    let reads = (LEN / READ_SIZE) as u32;
    assert!(
        elapsed >= READ_EVERY * (reads - 1),
        "transfer took {elapsed:?}, faster than the reader reads"
    );
    eprintln!(
        "slow reader: {} MiB in {elapsed:?} virtual; at most {max_outstanding} bytes accepted and not yet read \
         (bound {}, the congestion window at most {max_cwnd}); {blocked} Blocked writes, \
         {writable_after_blocked} answered by Writable",
        LEN / MIB,
        SEND_BUFFER.max(4 * max_cwnd) + WINDOW
    );
}

// ---------------------------------------------------------------------------------------------------
// 3. Reset and stop carry their application codes.
// ---------------------------------------------------------------------------------------------------

/// Reads stream `id` with the engine's own API until it reports a reset: `Some(code)` then, `None` while
/// nothing more is there. Panics on the end of the stream or any other error.
fn read_until_reset(node: &mut Box<dyn Node>, id: u64, into: &mut Vec<u8>) -> Option<u64> {
    match engine_of(node) {
        Engine::Quicsand => {
            let mut conn = quicsand(node).conn();
            let mut stream = conn.stream(StreamId(id));
            loop {
                match stream.read_chunk(usize::MAX) {
                    Ok(Some(chunk)) => into.extend_from_slice(&chunk),
                    Err(ReadError::Blocked) => return None,
                    Err(ReadError::Reset { code }) => return Some(code),
                    other => panic!("quicsand read on stream {id}: {other:?}"),
                }
            }
        }
        Engine::Quinn => {
            let conn = quinn(node).live();
            let mut stream = conn.recv_stream(stream_id(id));
            let mut chunks = stream.read(true).expect("a readable stream");
            let r = loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => into.extend_from_slice(&chunk.bytes),
                    Err(quinn_proto::ReadError::Blocked) => break None,
                    Err(quinn_proto::ReadError::Reset(code)) => break Some(code.into_inner()),
                    Ok(None) => panic!("quinn: stream {id} ended instead of being reset"),
                }
            };
            let _ = chunks.finalize();
            r
        }
    }
}

/// Writes `chunk` on stream `id` with the engine's own API until the stream takes no more: `Some(code)`
/// once the write reports the peer's STOP_SENDING. Panics on any other error.
fn write_until_stopped(node: &mut Box<dyn Node>, id: u64, chunk: &[u8]) -> Option<u64> {
    match engine_of(node) {
        Engine::Quicsand => {
            let mut conn = quicsand(node).conn();
            let mut stream = conn.stream(StreamId(id));
            loop {
                match stream.write(chunk) {
                    Ok(_) => {}
                    Err(WriteError::Blocked) => return None,
                    Err(WriteError::Stopped { code }) => return Some(code),
                    Err(e) => panic!("quicsand write on stream {id}: {e:?}"),
                }
            }
        }
        Engine::Quinn => {
            let conn = quinn(node).live();
            let mut stream = conn.send_stream(stream_id(id));
            loop {
                match stream.write(chunk) {
                    Ok(_) => {}
                    Err(quinn_proto::WriteError::Blocked) => return None,
                    Err(quinn_proto::WriteError::Stopped(code)) => return Some(code.into_inner()),
                    Err(e) => panic!("quinn write on stream {id}: {e:?}"),
                }
            }
        }
    }
}

/// The sender and the receiver of a stream, as (sender, receiver) nodes of the pair.
fn roles(p: &mut Pair, client_sends: bool) -> (&mut Box<dyn Node>, &mut Box<dyn Node>) {
    if client_sends {
        (&mut p.client, &mut p.server)
    } else {
        (&mut p.server, &mut p.client)
    }
}

/// Opens a bidirectional stream on the sender and drives until the receiver has read `at_least` bytes of
/// it; returns the pair, the stream, the data and the bytes read so far.
fn stream_under_way(
    c: Engine,
    s: Engine,
    client_sends: bool,
    seed: u64,
    at_least: usize,
) -> (Pair, u64, Bytes, Vec<u8>) {
    let mut p = connected(c, s, seed, Settings::default());
    p.client.set_auto_read(false);
    p.server.set_auto_read(false);
    let data = payload(4 * MIB, seed);
    let (mut written, mut received) = (0usize, Vec::new());
    let (sender, _) = roles(&mut p, client_sends);
    let id = sender.stream_open(true).expect("stream credit");
    let mut accepted = false;
    let limit = p.now + Duration::from_secs(10);
    while received.len() < at_least {
        let (sender, receiver) = roles(&mut p, client_sends);
        write_some(&mut **sender, id, &data, &mut written);
        if !accepted {
            if let Some(got) = receiver.stream_accept(true) {
                assert_eq!(got, id, "the receiver accepts the sender's stream");
                accepted = true;
            }
        }
        if accepted {
            assert!(
                !read_some(&mut **receiver, id, &mut received),
                "stream ended early"
            );
        }
        assert!(p.now < limit && p.step(), "stream {id} did not get going");
    }
    assert_eq!(&received[..], &data[..received.len()], "bytes before the reset");
    (p, id, data, received)
}

#[test]
fn reset_delivers_its_code_to_the_reader() {
    for (c, s) in PAIRS {
        for client_sends in [true, false] {
            let what = format!("{c:?} client / {s:?} server, client sends: {client_sends}");
            let (mut p, id, data, mut received) = stream_under_way(c, s, client_sends, 62, 64 * KIB);
            let (sender, _) = roles(&mut p, client_sends);
            sender.stream_reset(id, 77).expect("reset");
            let limit = p.now + Duration::from_secs(5);
            let code = loop {
                let (_, receiver) = roles(&mut p, client_sends);
                if let Some(code) = read_until_reset(receiver, id, &mut received) {
                    break code;
                }
                assert!(
                    p.now < limit && p.step(),
                    "{what}: the reset never reached the reader"
                );
            };
            assert_eq!(code, 77, "{what}: reset code");
            assert!(received.len() < data.len(), "{what}: reset mid-way");
            assert_eq!(
                &received[..],
                &data[..received.len()],
                "{what}: bytes before the reset"
            );
            let (_, receiver) = roles(&mut p, client_sends);
            if engine_of(receiver) == Engine::Quicsand {
                let events = quicsand(receiver).stream_events();
                assert!(
                    events.contains(&StreamEvent::Reset {
                        id: StreamId(id),
                        code: 77
                    }),
                    "{what}: no Reset event: {events:?}"
                );
            }
            eprintln!(
                "{what}: reset 77 read after {} of {} bytes",
                received.len(),
                data.len()
            );
        }
    }
}

#[test]
fn stop_delivers_its_code_to_the_writer() {
    for (c, s) in PAIRS {
        for client_sends in [true, false] {
            let what = format!("{c:?} client / {s:?} server, client sends: {client_sends}");
            let (mut p, id, data, _) = stream_under_way(c, s, client_sends, 63, 16 * KIB);
            let (_, receiver) = roles(&mut p, client_sends);
            receiver.stream_stop(id, 88).expect("stop");
            let limit = p.now + Duration::from_secs(5);
            let code = loop {
                let (sender, _) = roles(&mut p, client_sends);
                if let Some(code) = write_until_stopped(sender, id, &data[..16 * KIB]) {
                    break code;
                }
                assert!(
                    p.now < limit && p.step(),
                    "{what}: the stop never reached the writer"
                );
            };
            assert_eq!(code, 88, "{what}: stop code");
            let (sender, _) = roles(&mut p, client_sends);
            match engine_of(sender) {
                Engine::Quicsand => {
                    let events = quicsand(sender).stream_events();
                    assert!(
                        events.contains(&StreamEvent::Stopped {
                            id: StreamId(id),
                            code: 88
                        }),
                        "{what}: no Stopped event: {events:?}"
                    );
                }
                Engine::Quinn => {
                    let stopped = quinn(sender).stream_events.iter().any(|e| {
                        matches!(e, quinn_proto::StreamEvent::Stopped { id: i, error_code }
                            if u64::from(*i) == id && error_code.into_inner() == 88)
                    });
                    assert!(stopped, "{what}: no quinn Stopped event");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 4. GSO batches.
// ---------------------------------------------------------------------------------------------------

/// Sends `len` bytes from the client on one stream (and, if `both`, from the server too) and steps until
/// they arrive, calling `each` after every step; returns the virtual time taken.
fn bulk(p: &mut Pair, len: usize, seed: u64, both: bool, mut each: impl FnMut(&mut Pair)) -> Duration {
    let up = payload(len, seed);
    let down = payload(len, seed + 1);
    let now = p.now;
    let up_id = p.client.send_stream(now, up.clone());
    let down_id = both.then(|| p.server.send_stream(now, down.clone()));
    let start = p.now;
    let arrived = |node: &mut Box<dyn Node>, id: u64| node.received_streams().get(&id) == Some(&(len, true));
    loop {
        each(p);
        if arrived(&mut p.server, up_id) && down_id.map_or(true, |id| arrived(&mut p.client, id)) {
            break;
        }
        assert!(
            p.now - start < Duration::from_secs(120),
            "transfer did not finish"
        );
        assert!(p.step(), "nothing left to do before the transfer finished");
    }
    assert_eq!(
        digest(&p.server.received_data(up_id)),
        digest(&up),
        "client to server bytes"
    );
    if let Some(id) = down_id {
        assert_eq!(
            digest(&p.client.received_data(id)),
            digest(&down),
            "server to client bytes"
        );
    }
    p.now - start
}

/// A `max_segments` above what one UDP send carries (64 segments of 1452 bytes are 92,928 bytes; the
/// kernel refuses a send over 65,507 with EMSGSIZE) still makes transmits a socket takes: batches stop
/// at 45 segments of 1452 bytes. Before, a caller's loop that handed transmits to the socket as they
/// were lost every large batch whole.
#[test]
fn transmits_never_exceed_one_udp_send() {
    let settings = Settings {
        client_max_segments: Some(64),
        ..Default::default()
    };
    let mut p = connected(Engine::Quicsand, Engine::Quicsand, 65, settings);
    quicsand(&mut p.client).transmits.clear();
    bulk(&mut p, 16 * MIB, 64, false, |_| {});
    let transmits = std::mem::take(&mut quicsand(&mut p.client).transmits);
    let largest = transmits.iter().map(|&(size, _)| size).max().unwrap_or(0);
    assert!(largest <= 65_507, "a transmit of {largest} bytes");
    assert!(
        largest > 60_000,
        "no batch near the limit: {largest} bytes at most"
    );
}

#[test]
fn bulk_transfer_sends_gso_batches_within_max_segments() {
    const MAX_SEGMENTS: usize = 7;
    let settings = Settings {
        client_max_segments: Some(MAX_SEGMENTS),
        ..Default::default()
    };
    let mut p = connected(Engine::Quicsand, Engine::Quicsand, 64, settings);
    quicsand(&mut p.client).transmits.clear();
    let t = bulk(&mut p, 8 * MIB, 64, false, |_| {});
    // Path MTU discovery raises the datagram size from `mtu` up to its bound on this lossless path.
    let config = TransportConfig::default();
    let mtu = usize::from(config.mtu_discovery.map_or(config.mtu, |d| d.upper_bound));
    let transmits = std::mem::take(&mut quicsand(&mut p.client).transmits);
    let mut histogram = [0usize; MAX_SEGMENTS + 1];
    let (mut batched_bytes, mut total_bytes, mut short_last) = (0usize, 0usize, 0usize);
    for &(size, segment) in &transmits {
        total_bytes += size;
        let Some(s) = segment else {
            assert!(size > 0 && size <= mtu, "a single datagram of {size} bytes");
            histogram[1] += 1;
            continue;
        };
        assert!(s > 0 && s <= mtu, "segment size {s} over the MTU {mtu}");
        let n = size.div_ceil(s);
        assert!(
            n <= MAX_SEGMENTS,
            "a batch of {n} datagrams ({size} bytes of {s}), over max_segments {MAX_SEGMENTS}"
        );
        if size % s != 0 {
            // With the default 1 MiB send buffer the writer refills only what was acknowledged, so a
            // batch often ends with a small datagram carrying the few bytes left over.
            short_last += 1;
        }
        histogram[n] += 1;
        if n > 1 {
            batched_bytes += size;
        }
    }
    let batches: usize = histogram[2..].iter().sum();
    assert!(batches > 0, "no GSO batch in {} transmits", transmits.len());
    assert!(
        histogram[MAX_SEGMENTS] > 0,
        "never a full batch of {MAX_SEGMENTS}: {histogram:?}"
    );
    // Every datagram of every batch was a valid packet on its own: the server decrypted them all.
    let (client_stats, server_stats) = (
        quicsand(&mut p.client).conn().stats(),
        quicsand(&mut p.server).conn().stats(),
    );
    assert_eq!(server_stats.packets_dropped, 0, "the server dropped packets");
    assert_eq!(
        server_stats.datagrams_received, client_stats.datagrams_sent,
        "datagrams sent and received on a lossless network"
    );
    eprintln!(
        "GSO: 8 MiB in {t:?} virtual; {} transmits, datagrams per transmit {histogram:?} (index = count); \
         {:.1}% of bytes in batches; {short_last} batches with a shorter last datagram",
        transmits.len(),
        100.0 * batched_bytes as f64 / total_bytes as f64
    );
}

// ---------------------------------------------------------------------------------------------------
// 5. Key updates in the middle of transfers.
// ---------------------------------------------------------------------------------------------------

#[test]
fn key_updates_mid_transfer_keep_every_byte() {
    const EVERY: Duration = Duration::from_millis(25);
    for (c, s) in PAIRS {
        let mut p = connected(c, s, 65, Settings::default());
        let mut next = p.now + EVERY;
        let mut forced = 0u32;
        // Long enough for several updates with RFC 9001 §6.5's three PTOs between the acknowledgement of
        // one and the start of the next: about 0.6 s between quicsand endpoints, whose send buffers grow
        // with the congestion window (32 MiB took 0.3 s then, against 0.8 s with 1 MiB buffers).
        let t = bulk(&mut p, 160 * MIB, 65, true, |p| {
            if p.now >= next {
                next = p.now + EVERY;
                // Alternate sides; ask twice in a row, which must still be one update.
                let node = if forced % 2 == 0 {
                    &mut p.client
                } else {
                    &mut p.server
                };
                node.force_key_update();
                node.force_key_update();
                forced += 1;
            }
        });
        let updates: Vec<_> = [&mut p.client, &mut p.server]
            .into_iter()
            .filter_map(|n| n.key_updates())
            .collect();
        assert!(!updates.is_empty(), "{c:?}/{s:?}: a quicsand side");
        for u in &updates {
            assert!(
                *u >= 4,
                "{c:?}/{s:?}: only {u} key updates after {forced} requests"
            );
        }
        assert!(
            p.client_events
                .iter()
                .chain(&p.server_events)
                .all(|e| *e == common::NodeEvent::Connected),
            "{c:?}/{s:?}: {:?} {:?}",
            p.client_events,
            p.server_events
        );
        eprintln!(
            "{c:?} client / {s:?} server: 32 MiB each way in {t:?} virtual with {forced} forced updates; \
             quicsand counted {updates:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 6. Priorities.
// ---------------------------------------------------------------------------------------------------

#[test]
fn higher_priority_stream_arrives_first() {
    const LEN: usize = MIB;
    let mut p = connected(Engine::Quicsand, Engine::Quicsand, 66, Settings::default());
    let client = quicsand(&mut p.client);
    let mut ids = Vec::new();
    // The low-priority stream is opened (and written) first, so priority has to overtake it.
    for (priority, seed) in [(0, 1), (10, 2)] {
        let mut conn = client.conn();
        let id = conn.open_uni().expect("stream credit");
        conn.stream(id).set_priority(priority).unwrap();
        drop(conn);
        client.writing.push((id, payload(LEN, seed), 0));
        ids.push(id.0);
    }
    let (low, high) = (ids[0], ids[1]);
    let start = p.now;
    let (mut low_done, mut high_done) = (None, None);
    let mut low_at_high_done = 0;
    while low_done.is_none() || high_done.is_none() {
        let got = p.server.received_streams();
        let done = |id| got.get(&id).is_some_and(|&(n, fin)| fin && n == LEN);
        if high_done.is_none() && done(high) {
            high_done = Some(p.now - start);
            low_at_high_done = got.get(&low).map_or(0, |&(n, _)| n);
        }
        if low_done.is_none() && done(low) {
            low_done = Some(p.now - start);
        }
        assert!(p.now - start < Duration::from_secs(30), "transfer stalled");
        if !p.step() {
            break;
        }
    }
    let (low_done, high_done) = (low_done.expect("low done"), high_done.expect("high done"));
    assert_eq!(digest(&p.server.received_data(high)), digest(&payload(LEN, 2)));
    assert_eq!(digest(&p.server.received_data(low)), digest(&payload(LEN, 1)));
    eprintln!(
        "priorities: priority 10 complete after {high_done:?}, priority 0 after {low_done:?}; the low one had \
         {low_at_high_done} of {LEN} bytes when the high one completed"
    );
    assert!(
        high_done < low_done,
        "priority 10 completed at {high_done:?}, not before priority 0 at {low_done:?}"
    );
}

// ---------------------------------------------------------------------------------------------------
// 7. Statistics after a lossy transfer.
// ---------------------------------------------------------------------------------------------------

#[test]
fn stats_after_a_lossy_transfer() {
    let mut p = connected(Engine::Quicsand, Engine::Quicsand, 67, Settings::default());
    p.filter = Box::new(|_, _, _, rng| (!rng.chance(0.05)).then_some(Duration::ZERO));
    let t = bulk(&mut p, 4 * MIB, 67, false, |_| {});
    // The server has everything; wait for the client to learn that all of it was acknowledged.
    let limit = p.now + Duration::from_secs(5);
    while !quicsand(&mut p.client)
        .stream_events()
        .iter()
        .any(|e| matches!(e, StreamEvent::Finished { .. }))
    {
        assert!(
            p.now < limit && p.step(),
            "the client never saw its stream acknowledged"
        );
    }
    let at_finished = quicsand(&mut p.client).conn().stats().bytes_in_flight;
    // Let the last acknowledgements of anything else (flow-control updates, probes) come in.
    p.drive(Duration::from_secs(1));
    let stats = quicsand(&mut p.client).conn().stats();
    eprintln!("bytes_in_flight when the stream was acknowledged: {at_finished}");
    let rtt = 2 * p.latency;
    eprintln!("lossy 4 MiB in {t:?} virtual; client stats {stats:#?}");
    assert!(stats.packets_lost > 0, "packets_lost");
    assert!(stats.stream_bytes_retransmitted > 0, "stream_bytes_retransmitted");
    assert!(stats.stream_bytes_sent >= 4 * MIB as u64, "stream_bytes_sent");
    assert!(stats.cwnd > 0, "cwnd");
    assert!(
        stats.smoothed_rtt >= rtt / 2 && stats.smoothed_rtt <= rtt * 2,
        "smoothed_rtt {:?} against a network RTT of {rtt:?}",
        stats.smoothed_rtt
    );
    assert_eq!(
        stats.bytes_in_flight, 0,
        "bytes_in_flight after everything was acknowledged"
    );
}

/// RFC 9000 §14.3 against quinn-proto, in both roles: each side's path MTU probes (PING and PADDING,
/// 1452 bytes) are acknowledged by the other, and both end up sending 1452-byte datagrams.
#[test]
fn path_mtu_discovery_with_quinn_proto_in_both_roles() {
    for (c, s) in [
        (Engine::Quicsand, Engine::Quinn),
        (Engine::Quinn, Engine::Quicsand),
    ] {
        let mut p = connected(c, s, 81, Settings::default());
        bulk(&mut p, 2 * MIB, 81, true, |_| {});
        let (ours, theirs) = match c {
            Engine::Quicsand => (&mut p.client, &mut p.server),
            Engine::Quinn => (&mut p.server, &mut p.client),
        };
        let stats = quicsand(ours).conn().stats();
        assert_eq!(stats.path_mtu, 1452, "{c:?}/{s:?}: {stats:?}");
        assert!(
            stats.mtu_probes_sent >= 1 && stats.mtu_probes_lost == 0,
            "{stats:?}"
        );
        let quinn_mtu = quinn(theirs).connection().unwrap().stats().path.current_mtu;
        assert_eq!(
            quinn_mtu, 1452,
            "{c:?}/{s:?}: quinn-proto's probes reach quicsand"
        );
    }
}
