//! Endpoints with real handshakes, through the public API only: routing among several clients,
//! retransmitted Initials, handles and draining, `AcceptPolicy::Ask`, the handshake limit, truncated and
//! corrupted Initials, Version Negotiation, the drive rule, the timer over several connections and the
//! order of events. Every test runs on a virtual clock (`common::epoch()` plus durations) over a small
//! in-memory network of any number of endpoints.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{epoch, NetRng, TestCert};
use quicsand::wire::header::{LongType, ProtectedHeader, VERSION_1, VERSION_2};
use quicsand::{
    AcceptPolicy, ClientConfig, ConnectionError, ConnectionHandle, Datagram, Endpoint, EndpointConfig, Event,
    RetryError, RetryPolicy, ServerConfig, StaleHandle, TransportConfig,
};

// ------------------------------------------------------------------------------------------------
// A network of endpoints

/// A datagram as it left its sender, with what the filter may base its decision on.
#[derive(Debug, Clone)]
struct Sent {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    at: Instant,
    /// Datagrams the sender had received when it sent this one.
    sender_received: u64,
    delivered: bool,
}

/// Decides whether a datagram is delivered.
type Filter = Box<dyn FnMut(&Sent, &mut NetRng) -> bool>;

struct Host {
    addr: SocketAddr,
    ep: Endpoint,
    /// Every event, in order, with the time it was polled.
    events: Vec<(ConnectionHandle, Event, Instant)>,
    received: u64,
}

impl Host {
    /// The events of one connection, in order.
    fn events_of(&self, h: ConnectionHandle) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(x, _, _)| *x == h)
            .map(|(_, e, _)| e.clone())
            .collect()
    }

    fn has(&self, h: ConnectionHandle, event: &Event) -> bool {
        self.events.iter().any(|(x, e, _)| *x == h && e == event)
    }

    /// When an event of a connection was polled.
    fn when(&self, h: ConnectionHandle, event: &Event) -> Option<Instant> {
        self.events
            .iter()
            .find(|(x, e, _)| *x == h && e == event)
            .map(|x| x.2)
    }

    fn connected(&self, h: ConnectionHandle) -> bool {
        self.has(h, &Event::Connected)
    }

    /// Why the connection ended, and when, if it did.
    fn lost(&self, h: ConnectionHandle) -> Option<(ConnectionError, Instant)> {
        self.events.iter().find_map(|(x, e, t)| match e {
            Event::ConnectionLost { reason } if *x == h => Some((reason.clone(), *t)),
            _ => None,
        })
    }

    /// Handles of the `Incoming` events, in order.
    fn incoming(&self) -> Vec<(ConnectionHandle, SocketAddr)> {
        self.events
            .iter()
            .filter_map(|(h, e, _)| match e {
                Event::Incoming { remote } => Some((*h, *remote)),
                _ => None,
            })
            .collect()
    }
}

/// Endpoints joined by an in-memory network with a fixed one-way latency, on a virtual clock. Every
/// input to an endpoint is followed by the drive rule (drain transmits, then events, then read the
/// deadline), and anything the rule leaves behind is recorded in `violations`.
struct Net {
    now: Instant,
    latency: Duration,
    hosts: Vec<Host>,
    /// In flight: (arrival, sequence, destination host, source, bytes).
    queue: Vec<(Instant, u64, usize, SocketAddr, Vec<u8>)>,
    seq: u64,
    filter: Filter,
    rng: NetRng,
    /// Every datagram sent, delivered or not.
    log: Vec<Sent>,
    buf: Vec<u8>,
    violations: Vec<String>,
    /// (host, now, deadline) whenever the deadline read after a datagram or command was before `now`.
    past_after_input: Vec<(usize, Instant, Instant)>,
    /// (host, now, deadline) whenever the deadline read after `handle_timeout(now)` was not after `now`.
    past_after_timeout: Vec<(usize, Instant, Instant)>,
    /// The most `handle_timeout` calls one host needed at one instant before its deadline moved past it.
    max_timeout_calls: u32,
    /// Calls of `handle_timeout` made.
    timeouts: u64,
}

impl Net {
    fn new(seed: u64) -> Self {
        Self {
            now: epoch(),
            latency: Duration::from_millis(10),
            hosts: Vec::new(),
            queue: Vec::new(),
            seq: 0,
            filter: Box::new(|_, _| true),
            rng: NetRng::new(seed),
            log: Vec::new(),
            buf: Vec::new(),
            violations: Vec::new(),
            past_after_input: Vec::new(),
            past_after_timeout: Vec::new(),
            max_timeout_calls: 0,
            timeouts: 0,
        }
    }

    fn add(&mut self, addr: SocketAddr, ep: Endpoint) -> usize {
        self.hosts.push(Host {
            addr,
            ep,
            events: Vec::new(),
            received: 0,
        });
        self.hosts.len() - 1
    }

    fn ep(&mut self, i: usize) -> &mut Endpoint {
        &mut self.hosts[i].ep
    }

    /// Starts a connection from host `i` to host `to` and applies the drive rule.
    fn connect(&mut self, i: usize, config: ClientConfig, to: usize) -> ConnectionHandle {
        let remote = self.hosts[to].addr;
        let now = self.now;
        let h = self.hosts[i]
            .ep
            .connect(now, config, remote, "localhost")
            .unwrap();
        self.settle(i, false);
        h
    }

    /// The drive rule after an input to host `i`: drain transmits into the network, then events, then
    /// read the deadline; record anything left behind.
    fn settle(&mut self, i: usize, after_timeout: bool) {
        let now = self.now;
        let mut out = Vec::new();
        {
            let host = &mut self.hosts[i];
            while let Some(t) = host.ep.poll_transmit(now, &mut self.buf) {
                for d in t.datagrams(&self.buf) {
                    out.push((t.destination, d.to_vec()));
                }
            }
            if host.ep.poll_transmit(now, &mut self.buf).is_some() {
                self.violations.push(format!(
                    "{now:?}: host {i}: poll_transmit after draining returned a transmit"
                ));
            }
            while let Some((h, e)) = host.ep.poll_event() {
                host.events.push((h, e, now));
            }
            if host.ep.poll_transmit(now, &mut self.buf).is_some() {
                self.violations
                    .push(format!("{now:?}: host {i}: draining events made a transmit"));
            }
            let deadline = host.ep.poll_timeout();
            if host.ep.poll_timeout() != deadline {
                self.violations
                    .push(format!("{now:?}: host {i}: poll_timeout is not idempotent"));
            }
            if let Some(d) = deadline {
                if after_timeout && d <= now {
                    // `handle_timeout` runs each due connection once; what that run re-arms in the past
                    // (see below) waits for the next call.
                    self.past_after_timeout.push((i, now, d));
                } else if d < now {
                    // Allowed: an input may re-arm a timer from an old send time (RFC 9002 A.8 computes
                    // the PTO from the last ack-eliciting packet), which means "now".
                    self.past_after_input.push((i, now, d));
                }
            }
        }
        let from = self.hosts[i].addr;
        let sender_received = self.hosts[i].received;
        for (to, data) in out {
            let mut sent = Sent {
                from,
                to,
                data,
                at: now,
                sender_received,
                delivered: false,
            };
            sent.delivered = (self.filter)(&sent, &mut self.rng);
            if sent.delivered {
                if let Some(dest) = self.hosts.iter().position(|h| h.addr == to) {
                    self.seq += 1;
                    self.queue
                        .push((now + self.latency, self.seq, dest, from, sent.data.clone()));
                }
            }
            self.log.push(sent);
        }
    }

    /// Hands a datagram to host `i` now and applies the drive rule.
    fn deliver(&mut self, i: usize, from: SocketAddr, data: &[u8]) {
        let now = self.now;
        let host = &mut self.hosts[i];
        host.received += 1;
        let local = Some(host.addr.ip());
        host.ep.handle_datagram(
            now,
            Datagram {
                remote: from,
                local,
                ecn: None,
                payload: BytesMut::from(data),
            },
        );
        self.settle(i, false);
    }

    fn next_event(&mut self) -> Option<Instant> {
        let delivery = self.queue.iter().map(|q| q.0).min();
        let timer = self.hosts.iter_mut().filter_map(|h| h.ep.poll_timeout()).min();
        match (delivery, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances to the next delivery or deadline and handles everything due then. False when nothing
    /// is left to happen.
    fn step(&mut self) -> bool {
        let Some(next) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(next);
        loop {
            let due = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, q)| q.0 <= self.now)
                .min_by_key(|(_, q)| (q.0, q.1))
                .map(|(k, _)| k);
            let Some(k) = due else { break };
            let (_, _, dest, from, data) = self.queue.swap_remove(k);
            self.deliver(dest, from, &data);
        }
        for i in 0..self.hosts.len() {
            let mut calls = 0;
            while self.hosts[i].ep.poll_timeout().is_some_and(|t| t <= self.now) {
                calls += 1;
                assert!(calls <= 100, "host {i}: handle_timeout makes no progress");
                self.timeouts += 1;
                let now = self.now;
                self.hosts[i].ep.handle_timeout(now);
                self.settle(i, true);
            }
            self.max_timeout_calls = self.max_timeout_calls.max(calls);
        }
        true
    }

    /// Steps until `done` holds or `limit` of virtual time passes; whether `done` held.
    fn drive_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let deadline = self.now + limit;
        let mut steps = 0u32;
        while self.now <= deadline {
            if done(self) {
                return true;
            }
            steps += 1;
            assert!(
                steps < 200_000,
                "no progress at {:?}: {:?}",
                self.now - epoch(),
                self.violations
            );
            match self.next_event() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => return done(self),
            }
        }
        done(self)
    }

    /// Steps until nothing is left to happen, or `limit` of virtual time passes.
    fn drive(&mut self, limit: Duration) {
        self.drive_until(limit, |_| false);
    }

    /// Handles everything up to `t`, then sets the clock to `t`.
    fn advance_to(&mut self, t: Instant) {
        while self.next_event().is_some_and(|n| n <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Datagrams `from` sent to `to`, delivered or not.
    fn sent(&self, from: SocketAddr, to: SocketAddr) -> Vec<&Sent> {
        self.log.iter().filter(|s| s.from == from && s.to == to).collect()
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers

fn at(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms)
}

fn server_addr() -> SocketAddr {
    "10.0.0.2:4433".parse().unwrap()
}

fn client_addr(i: u16) -> SocketAddr {
    SocketAddr::new([10, 0, 1, (i % 250) as u8 + 1].into(), 50_000 + i)
}

fn server_endpoint(cert: &TestCert, seed: u64, f: impl FnOnce(&mut ServerConfig)) -> Endpoint {
    let mut config = ServerConfig::new(cert.server_tls(&[]));
    f(&mut config);
    Endpoint::new(EndpointConfig::with_seed(seed), Some(config))
}

fn client_endpoint(seed: u64) -> Endpoint {
    Endpoint::new(EndpointConfig::with_seed(seed), None)
}

fn client_config(cert: &TestCert) -> ClientConfig {
    ClientConfig::new(cert.client_tls(&[]))
}

fn datagram(from: SocketAddr, to: SocketAddr, data: &[u8]) -> Datagram {
    Datagram {
        remote: from,
        local: Some(to.ip()),
        ecn: None,
        payload: BytesMut::from(data),
    }
}

/// The first datagram of a fresh client connection: its Initial, as `poll_transmit` hands it out.
fn real_client_initial(cert: &TestCert, seed: u64) -> Vec<u8> {
    let mut client = client_endpoint(seed);
    client
        .connect(epoch(), client_config(cert), server_addr(), "localhost")
        .unwrap();
    let mut buf = Vec::new();
    let t = client
        .poll_transmit(epoch(), &mut buf)
        .expect("the client's first Initial");
    let first = t.datagrams(&buf).next().unwrap().to_vec();
    assert!(
        first.len() >= 1200,
        "a client Initial datagram is at least 1200 bytes"
    );
    first
}

/// Everything an endpoint sends now, as datagrams.
fn drain(ep: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        for d in t.datagrams(&buf) {
            out.push((t.destination, d.to_vec()));
        }
    }
    out
}

/// Server events of one connection are Incoming, Connected, HandshakeConfirmed (then possibly a loss);
/// client events are Connected, HandshakeConfirmed.
fn assert_handshake_events(events: &[Event], server_remote: Option<SocketAddr>, what: &str) {
    let mut expected = Vec::new();
    if let Some(remote) = server_remote {
        expected.push(Event::Incoming { remote });
    }
    expected.push(Event::Connected);
    expected.push(Event::HandshakeConfirmed);
    assert!(
        events.len() >= expected.len() && events[..expected.len()] == expected[..],
        "{what}: events {events:?}, expected to start with {expected:?}"
    );
    assert!(
        events[expected.len()..]
            .iter()
            .all(|e| matches!(e, Event::ConnectionLost { .. })),
        "{what}: unexpected events after the handshake: {events:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 1. Routing among several clients

/// One server, five client endpoints at distinct addresses, and a second connection from the first
/// client endpoint (same address, other connection IDs): every handshake completes, every connection
/// reaches its own server connection, and the counters agree.
#[test]
fn one_server_routes_six_concurrent_handshakes() {
    let cert = TestCert::new();
    let mut net = Net::new(1);
    let server = net.add(server_addr(), server_endpoint(&cert, 100, |_| {}));
    let mut conns = Vec::new(); // (client host, client handle)
    for i in 0..5u16 {
        let c = net.add(client_addr(i), client_endpoint(200 + u64::from(i)));
        conns.push((c, net.connect(c, client_config(&cert), server)));
    }
    let first = conns[0].0;
    conns.push((first, net.connect(first, client_config(&cert), server)));
    assert_ne!(conns[0].1, conns[5].1);

    let all_confirmed = |net: &Net| {
        conns
            .iter()
            .all(|(c, h)| net.hosts[*c].has(*h, &Event::HandshakeConfirmed))
            && net.hosts[server]
                .events
                .iter()
                .filter(|(_, e, _)| *e == Event::HandshakeConfirmed)
                .count()
                == 6
    };
    assert!(
        net.drive_until(Duration::from_secs(5), all_confirmed),
        "not all connected"
    );
    // A lossless handshake takes a round trip or two, not a retransmission timeout.
    assert!(
        net.now - epoch() < Duration::from_millis(200),
        "took {:?}",
        net.now - epoch()
    );

    let incoming = net.hosts[server].incoming();
    assert_eq!(incoming.len(), 6, "one Incoming per client connection");
    let mut handles: Vec<_> = incoming.iter().map(|(h, _)| *h).collect();
    handles.sort();
    handles.dedup();
    assert_eq!(handles.len(), 6, "distinct server handles: {incoming:?}");
    for (h, remote) in &incoming {
        let events = net.hosts[server].events_of(*h);
        assert_handshake_events(&events, Some(*remote), "server connection");
        let mut v = net.ep(server).conn(*h).unwrap();
        assert_eq!(v.remote_address(), *remote);
        assert!(!v.is_handshaking());
        assert!(v.is_handshake_confirmed());
        assert_eq!(v.alpn_protocol().as_deref(), Some(common::ALPN));
        v.ping(); // every server connection can still be reached through its handle
    }
    // Two Incoming events come from the first client's address, one from each other client.
    for i in 0..5u16 {
        let n = incoming.iter().filter(|(_, r)| *r == client_addr(i)).count();
        assert_eq!(n, if i == 0 { 2 } else { 1 }, "connections from client {i}");
    }
    for (c, h) in &conns {
        let events = net.hosts[*c].events_of(*h);
        assert_handshake_events(&events, None, "client connection");
    }
    let s = net.ep(server).stats();
    assert_eq!(s.connections_active, 6);
    assert_eq!(s.connections_incoming, 6);
    assert_eq!(s.connections_accepted, 6);
    assert_eq!(s.dropped_unroutable, 0, "{s:?}");
    assert_eq!(
        s.dropped_malformed + s.dropped_unauthenticated + s.dropped_short_initial,
        0,
        "{s:?}"
    );
    assert_eq!(net.ep(first).stats().connections_active, 2);
    for i in 1..5 {
        assert_eq!(net.hosts[i + 1].ep.stats().connections_active, 1);
    }
    // The server's PINGs get answered: every connection still routes both ways.
    let before: Vec<_> = conns
        .iter()
        .map(|(c, h)| net.hosts[*c].ep.conn(*h).map(|v| v.stats()).unwrap())
        .collect();
    for i in 0..net.hosts.len() {
        net.settle(i, false);
    }
    net.drive(Duration::from_millis(100));
    for ((c, h), b) in conns.iter().zip(before) {
        let after = net.hosts[*c].ep.conn(*h).unwrap().stats();
        assert!(
            after.packets_received > b.packets_received,
            "client connection {h:?} got the server's PING"
        );
    }
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

// ------------------------------------------------------------------------------------------------
// 2. Retransmitted Initials

/// Everything the server sends before it has heard the client twice is lost, so the client's
/// retransmitted Initial must reach the connection its first Initial created.
#[test]
fn retransmitted_client_initial_reaches_its_connection() {
    let cert = TestCert::new();
    let mut net = Net::new(2);
    let server = net.add(server_addr(), server_endpoint(&cert, 101, |_| {}));
    let client = net.add(client_addr(0), client_endpoint(201));
    net.filter = Box::new(|s, _| !(s.from == server_addr() && s.sender_received < 2));
    let ch = net.connect(client, client_config(&cert), server);
    let done = |net: &Net| {
        net.hosts[client].connected(ch)
            && net.hosts[server]
                .events
                .iter()
                .any(|(_, e, _)| *e == Event::Connected)
    };
    assert!(
        net.drive_until(Duration::from_secs(10), done),
        "handshake did not complete"
    );

    let c2s = net.sent(client_addr(0), server_addr());
    assert!(c2s.len() >= 2);
    let dcid = |d: &[u8]| match ProtectedHeader::decode(d, 8).unwrap() {
        ProtectedHeader::Long {
            ty: LongType::Initial,
            dcid,
            ..
        } => dcid,
        other => panic!("expected an Initial, got {other:?}"),
    };
    assert_eq!(
        dcid(&c2s[0].data),
        dcid(&c2s[1].data),
        "the retransmission keeps the original DCID"
    );
    assert!(
        c2s[1].at - c2s[0].at >= Duration::from_millis(300),
        "the second Initial is a PTO retransmission"
    );
    let dropped = net.log.iter().filter(|s| !s.delivered).count();
    assert!(dropped >= 1, "the server's first flight was dropped");
    let s = net.ep(server).stats();
    assert_eq!(s.connections_incoming, 1, "{s:?}");
    assert_eq!(s.connections_active, 1);
    assert_eq!(net.hosts[server].incoming().len(), 1);
    assert_eq!(
        s.dropped_unroutable + s.dropped_malformed + s.dropped_unauthenticated,
        0,
        "{s:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 3. Handles and draining

#[test]
fn closed_connections_drain_and_their_handles_go_stale() {
    let cert = TestCert::new();
    let mut net = Net::new(3);
    let server = net.add(server_addr(), server_endpoint(&cert, 102, |_| {}));
    let client = net.add(client_addr(0), client_endpoint(202));
    let ch = net.connect(client, client_config(&cert), server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(ch, &Event::HandshakeConfirmed)));
    assert!(net.drive_until(Duration::from_secs(1), |n| n.hosts[server]
        .events
        .iter()
        .any(|(_, e, _)| *e == Event::HandshakeConfirmed)));
    let sh = net.hosts[server].incoming()[0].0;

    net.hosts[client].ep.close(net.now, ch, 7, b"bye").unwrap();
    net.settle(client, false);
    let closed_at = net.now;
    // Both are still in the table during the closing / draining period.
    assert!(net.ep(client).conn(ch).unwrap().is_closed());
    net.drive(Duration::from_secs(60));
    assert!(
        net.next_event().is_none(),
        "nothing left to happen once both drained"
    );
    assert!(
        net.now - closed_at < Duration::from_secs(5),
        "drained in {:?}",
        net.now - closed_at
    );

    assert_eq!(
        net.hosts[client].lost(ch).map(|l| l.0),
        Some(ConnectionError::LocallyClosed)
    );
    assert_eq!(
        net.hosts[server].lost(sh).map(|l| l.0),
        Some(ConnectionError::ApplicationClosed {
            code: 7,
            reason: bytes::Bytes::from_static(b"bye")
        })
    );
    for (host, h) in [(client, ch), (server, sh)] {
        let now = net.now;
        let ep = net.ep(host);
        assert_eq!(ep.stats().connections_active, 0);
        assert_eq!(ep.conn(h).err(), Some(StaleHandle(h)));
        assert_eq!(ep.close(now, h, 0, b""), Err(StaleHandle(h)));
        assert_eq!(ep.poll_timeout(), None);
    }
    assert_eq!(net.hosts[server].ep.accept(net.now, sh), Err(StaleHandle(sh)));
    assert_eq!(net.hosts[server].ep.refuse(net.now, sh), Err(StaleHandle(sh)));

    // A new connection reuses the slots, never the handles.
    let ch2 = net.connect(client, client_config(&cert), server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client].connected(ch2)));
    let sh2 = net.hosts[server].incoming()[1].0;
    assert_ne!(ch2, ch);
    assert_ne!(sh2, sh);
    assert_eq!(ch2.index(), ch.index(), "the freed client slot is reused");
    assert_eq!(sh2.index(), sh.index(), "the freed server slot is reused");
    assert_ne!(ch2.generation(), ch.generation());
    for (host, old, new) in [(client, ch, ch2), (server, sh, sh2)] {
        let now = net.now;
        let ep = net.ep(host);
        assert_eq!(ep.conn(old).err(), Some(StaleHandle(old)));
        assert_eq!(ep.close(now, old, 1, b"stale"), Err(StaleHandle(old)));
        assert!(
            !ep.conn(new).unwrap().is_closed(),
            "closing through a stale handle left the new one alone"
        );
        assert_eq!(ep.stats().connections_active, 1);
    }
    // Events of the new connection carry the new handle only.
    assert!(net.hosts[client].events_of(ch2).contains(&Event::Connected));
    assert_eq!(
        net.hosts[client]
            .events_of(ch)
            .iter()
            .filter(|e| **e == Event::Connected)
            .count(),
        1
    );
}

// ------------------------------------------------------------------------------------------------
// 4. AcceptPolicy::Ask

/// A held connection answers nothing, however often the client retransmits, until `accept`.
#[test]
fn ask_policy_holds_until_accept() {
    let cert = TestCert::new();
    let mut net = Net::new(4);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 103, |s| s.accept = AcceptPolicy::Ask),
    );
    let client = net.add(client_addr(0), client_endpoint(203));
    let ch = net.connect(client, client_config(&cert), server);
    net.advance_to(at(3000));
    let incoming = net.hosts[server].incoming();
    assert_eq!(
        incoming,
        vec![(incoming[0].0, client_addr(0))],
        "one Incoming, however many Initials"
    );
    let sh = incoming[0].0;
    assert!(
        net.sent(client_addr(0), server_addr()).len() >= 2,
        "the client retransmitted"
    );
    assert!(
        net.sent(server_addr(), client_addr(0)).is_empty(),
        "a held connection sends nothing"
    );
    let s = net.ep(server).stats();
    assert_eq!(
        (
            s.connections_incoming,
            s.connections_accepted,
            s.connections_active
        ),
        (1, 0, 1)
    );
    assert!(!net.hosts[client].connected(ch));
    assert_eq!(
        net.hosts[server].events_of(sh),
        vec![Event::Incoming {
            remote: client_addr(0)
        }]
    );

    net.hosts[server].ep.accept(net.now, sh).unwrap();
    net.settle(server, false);
    assert!(
        !net.sent(server_addr(), client_addr(0)).is_empty(),
        "accept sends the server's first flight at once"
    );
    assert!(
        net.drive_until(Duration::from_secs(5), |n| n.hosts[client].connected(ch)
            && n.hosts[server].connected(sh))
    );
    assert!(
        net.now - at(3000) < Duration::from_millis(200),
        "completed {:?} after accept",
        net.now - at(3000)
    );
    assert_eq!(net.ep(server).stats().connections_accepted, 1);
    // Accepting twice changes nothing.
    net.hosts[server].ep.accept(net.now, sh).unwrap();
    assert_eq!(net.ep(server).stats().connections_accepted, 1);
}

/// `refuse` closes with CONNECTION_REFUSED (RFC 9000 §20.1): the client sees `Refused`.
#[test]
fn ask_policy_refuse_ends_the_client_with_refused() {
    let cert = TestCert::new();
    let mut net = Net::new(5);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 104, |s| s.accept = AcceptPolicy::Ask),
    );
    let client = net.add(client_addr(0), client_endpoint(204));
    let ch = net.connect(client, client_config(&cert), server);
    net.advance_to(at(50));
    let sh = net.hosts[server].incoming()[0].0;
    net.hosts[server].ep.refuse(net.now, sh).unwrap();
    net.settle(server, false);
    let refused_at = net.now;
    assert_eq!(net.ep(server).stats().connections_refused, 1);
    assert_eq!(
        net.hosts[server].lost(sh).map(|l| l.0),
        Some(ConnectionError::Refused)
    );
    assert!(
        !net.sent(server_addr(), client_addr(0)).is_empty(),
        "the refusal is sent"
    );
    net.drive(Duration::from_secs(30));
    let (reason, when) = net.hosts[client]
        .lost(ch)
        .expect("the client learns it was refused");
    assert_eq!(reason, ConnectionError::Refused);
    assert!(
        when - refused_at <= Duration::from_millis(20),
        "refused after {:?}",
        when - refused_at
    );
    assert!(!net.hosts[client].connected(ch));
    assert!(!net.hosts[server].connected(sh));
    // Both drain.
    assert_eq!(net.ep(client).stats().connections_active, 0);
    assert_eq!(net.ep(server).stats().connections_active, 0);
    assert_eq!(net.ep(server).stats().connections_accepted, 0);
    assert_eq!(net.hosts[server].ep.refuse(net.now, sh), Err(StaleHandle(sh)));
}

/// A server going away: `set_accept_policy(Refuse)` refuses newcomers at once (they fail fast with
/// `Refused`, not after their idle timeout), `close_all` closes every established connection with the
/// application's code, and the endpoint empties.
#[test]
fn a_server_shuts_down_with_refuse_and_close_all() {
    let cert = TestCert::new();
    let mut net = Net::new(31);
    let server = net.add(server_addr(), server_endpoint(&cert, 131, |_| {}));
    let clients: Vec<usize> = (0..3)
        .map(|i| net.add(client_addr(i), client_endpoint(231 + u64::from(i))))
        .collect();
    let handles: Vec<ConnectionHandle> = clients
        .iter()
        .map(|&c| net.connect(c, client_config(&cert), server))
        .collect();
    assert!(net.drive_until(Duration::from_secs(5), |n| clients
        .iter()
        .zip(&handles)
        .all(|(&c, &h)| n.hosts[c].connected(h))));

    assert!(net.ep(server).set_accept_policy(AcceptPolicy::Refuse));
    let late = net.add(client_addr(9), client_endpoint(239));
    let lh = net.connect(late, client_config(&cert), server);
    let asked_at = net.now;
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[late].lost(lh).is_some()));
    let (reason, when) = net.hosts[late].lost(lh).unwrap();
    assert_eq!(reason, ConnectionError::Refused);
    assert!(
        when - asked_at < Duration::from_millis(100),
        "refused after {:?}",
        when - asked_at
    );
    assert_eq!(net.ep(server).stats().connections_refused, 1);
    assert_eq!(net.ep(server).stats().connections_accepted, 3);
    // The established ones are untouched by the policy.
    for (&c, &h) in clients.iter().zip(&handles) {
        assert!(net.hosts[c].lost(h).is_none());
    }

    let now = net.now;
    net.ep(server).close_all(now, 7, b"server shutting down");
    net.settle(server, false);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[server]
        .ep
        .stats()
        .connections_active
        == 0));
    for (&c, &h) in clients.iter().zip(&handles) {
        let (reason, _) = net.hosts[c].lost(h).expect("each client learns of the close");
        assert_eq!(
            reason,
            ConnectionError::ApplicationClosed {
                code: 7,
                reason: bytes::Bytes::from_static(b"server shutting down")
            }
        );
    }
    // A client endpoint has no accept policy.
    assert!(!net.ep(late).set_accept_policy(AcceptPolicy::Refuse));
}

/// `AcceptPolicy::Refuse` answers without connection state, ahead of the handshake limit: with room for
/// two handshakes, four clients are all refused at once (found in review: a refused connection held a
/// handshake slot for its closing period, so the third and fourth were dropped unanswered and waited for
/// their idle timeout), and a flood of Initials leaves nothing behind, each answer smaller than the
/// Initial it answers.
#[test]
fn refusals_hold_no_state_and_ignore_the_handshake_limit() {
    let cert = TestCert::new();
    let mut net = Net::new(41);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 141, |s| {
            s.accept = AcceptPolicy::Refuse;
            s.max_incoming_handshakes = 2;
        }),
    );
    let clients: Vec<usize> = (0..4)
        .map(|i| net.add(client_addr(i), client_endpoint(241 + u64::from(i))))
        .collect();
    let asked_at = net.now;
    let handles: Vec<ConnectionHandle> = clients
        .iter()
        .map(|&c| net.connect(c, client_config(&cert), server))
        .collect();
    net.drive_until(Duration::from_millis(200), |_| false);
    for (&c, &h) in clients.iter().zip(&handles) {
        let lost = net.hosts[c].lost(h);
        assert!(
            matches!(lost, Some((ConnectionError::Refused, t)) if t - asked_at < Duration::from_millis(100)),
            "client {c}: {lost:?}"
        );
    }
    let s = net.ep(server).stats();
    assert_eq!((s.connections_refused, s.dropped_handshake_limit), (4, 0));
    assert_eq!((s.connections_incoming, s.connections_active), (0, 0));
    assert!(net.hosts[server].events.is_empty(), "no events for refusals");

    // A flood: 200 Initials, no connection, every answer smaller than what it answers.
    let mut ep = server_endpoint(&cert, 9, |s| s.accept = AcceptPolicy::Refuse);
    let now = epoch();
    let mut buf = Vec::new();
    for i in 0..200u16 {
        let mut c = client_endpoint(500 + u64::from(i));
        c.connect(now, client_config(&cert), server_addr(), "localhost")
            .unwrap();
        let t = c.poll_transmit(now, &mut buf).unwrap();
        let initial = buf[..t.size].to_vec();
        ep.handle_datagram(now, datagram(client_addr(i), server_addr(), &initial));
        let answer = ep.poll_transmit(now, &mut buf).expect("a refusal");
        assert!(
            answer.size * 10 < initial.len(),
            "{} bytes answer {}",
            answer.size,
            initial.len()
        );
        assert_eq!(ep.stats().connections_active, 0);
    }
    assert_eq!(ep.stats().connections_refused, 200);
}

/// The stateless refusal is made for the client's version (RFC 9369 packet types and keys), and for a
/// client that followed a Retry, sealed with the keys of the DCID it uses since (RFC 9001 §5.2): both
/// clients see `Refused` within a round trip.
#[test]
fn refusals_follow_the_version_and_a_retry() {
    let cert = TestCert::new();
    let mut net = Net::new(77);
    let both = |seed| EndpointConfig {
        supported_versions: vec![VERSION_1, VERSION_2],
        ..EndpointConfig::with_seed(seed)
    };
    let mut sc = ServerConfig::new(cert.server_tls(&[]));
    sc.accept = AcceptPolicy::Refuse;
    let server = net.add(server_addr(), Endpoint::new(both(177), Some(sc)));
    let client = net.add(client_addr(0), Endpoint::new(both(277), None));
    let mut config = client_config(&cert);
    config.version = VERSION_2;
    let asked_at = net.now;
    let h = net.connect(client, config, server);
    net.drive_until(Duration::from_millis(200), |_| false);
    let lost = net.hosts[client].lost(h);
    assert!(
        matches!(lost, Some((ConnectionError::Refused, t)) if t - asked_at < Duration::from_millis(100)),
        "{lost:?}"
    );
    let answer = &net.sent(server_addr(), client_addr(0))[0].data;
    assert_eq!(&answer[1..5], &VERSION_2.to_be_bytes());

    let mut net = Net::new(78);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 178, |s| s.retry = quicsand::RetryPolicy::Always),
    );
    let client = net.add(client_addr(0), client_endpoint(278));
    let h = net.connect(client, client_config(&cert), server);
    assert!(net.drive_until(Duration::from_secs(1), |n| n.hosts[server]
        .ep
        .stats()
        .retries_sent
        == 1));
    assert!(net.ep(server).set_accept_policy(AcceptPolicy::Refuse));
    let asked_at = net.now;
    net.drive_until(Duration::from_millis(500), |_| false);
    let lost = net.hosts[client].lost(h);
    assert!(
        matches!(lost, Some((ConnectionError::Refused, t)) if t - asked_at < Duration::from_millis(100)),
        "{lost:?}"
    );
}

/// `close_all` refuses the connections still held under `AcceptPolicy::Ask` (their clients see
/// `Refused`, as after `refuse`), closes the others, and leaves draining ones to end: the endpoint
/// empties (found in review: held ones got an application close, counted as neither accepted nor
/// refused).
#[test]
fn close_all_refuses_held_connections_and_lets_draining_ones_end() {
    let cert = TestCert::new();
    let mut net = Net::new(43);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 143, |s| s.accept = AcceptPolicy::Ask),
    );
    let a = net.add(client_addr(0), client_endpoint(243));
    let b = net.add(client_addr(1), client_endpoint(244));
    let ha = net.connect(a, client_config(&cert), server);
    let hb = net.connect(b, client_config(&cert), server);
    net.drive_until(Duration::from_millis(50), |_| false);
    let incoming = net.hosts[server].incoming();
    let sb = incoming.iter().find(|(_, r)| *r == client_addr(1)).unwrap().0;
    let now = net.now;
    net.ep(server).accept(now, sb).unwrap();
    net.settle(server, false);
    assert!(net.drive_until(Duration::from_secs(2), |n| n.hosts[b].connected(hb)));
    // b closes: the server drains.
    let now = net.now;
    net.ep(b).close(now, hb, 1, b"bye").unwrap();
    net.settle(b, false);
    net.drive_until(Duration::from_millis(50), |_| false);
    assert!(net.ep(server).set_accept_policy(AcceptPolicy::Refuse));
    let now = net.now;
    net.ep(server).close_all(now, 7, b"going away");
    net.settle(server, false);
    assert!(net.drive_until(Duration::from_secs(10), |n| n.hosts[server]
        .ep
        .stats()
        .connections_active
        == 0));
    assert_eq!(
        net.hosts[a].lost(ha).map(|l| l.0),
        Some(ConnectionError::Refused),
        "a held client"
    );
    let s = net.ep(server).stats();
    assert_eq!((s.connections_accepted, s.connections_refused), (1, 1));
}

/// A held connection the application closes instead of answering has sent its CONNECTION_CLOSE: it is
/// no longer held. A Retry after that would contradict the packet the client already has (RFC 9000
/// §17.2.5.2: a client that processed a packet from the server discards Retry), so `retry` refuses with
/// `NotHeld`, and a later `accept` or `refuse` counts nothing: the connection was neither.
#[test]
fn a_held_connection_closed_by_the_application_is_no_longer_held() {
    let cert = TestCert::new();
    let mut net = Net::new(12);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 113, |s| s.accept = AcceptPolicy::Ask),
    );
    let client = net.add(client_addr(0), client_endpoint(213));
    let ch = net.connect(client, client_config(&cert), server);
    net.advance_to(at(50));
    let sh = net.hosts[server].incoming()[0].0;
    net.hosts[server].ep.close(net.now, sh, 9, b"go away").unwrap();
    net.settle(server, false);
    assert_eq!(
        net.sent(server_addr(), client_addr(0)).len(),
        1,
        "the CONNECTION_CLOSE went out"
    );
    let now = net.now;
    assert_eq!(net.hosts[server].ep.retry(now, sh), Err(RetryError::NotHeld));
    net.hosts[server].ep.accept(now, sh).unwrap();
    net.hosts[server].ep.refuse(now, sh).unwrap();
    net.settle(server, false);
    let s = net.ep(server).stats();
    assert_eq!(
        (
            s.connections_accepted,
            s.connections_refused,
            s.connections_retried,
            s.retries_sent
        ),
        (0, 0, 0, 0),
        "{s:?}"
    );
    net.drive(Duration::from_secs(30));
    assert_eq!(
        net.hosts[server].lost(sh).map(|l| l.0),
        Some(ConnectionError::LocallyClosed)
    );
    // RFC 9000 §10.2.3: in an Initial packet the application close is a bare APPLICATION_ERROR.
    assert!(matches!(
        net.hosts[client].lost(ch).map(|l| l.0),
        Some(ConnectionError::ConnectionClosed { error }) if error.code == quicsand::wire::TransportErrorCode::APPLICATION_ERROR
    ));
    assert_eq!(net.ep(server).stats().connections_active, 0);
}

/// A client connecting to a server whose certificate names `localhost` and `extra` long host names (a
/// larger chain, a larger first flight), run until the server's first flight went out: the network,
/// the server's and the client's host indices, and the client's connection.
fn first_flight_with_names(extra: usize) -> (Net, usize, usize, ConnectionHandle) {
    let names: Vec<String> = std::iter::once("localhost".to_string())
        .chain((0..extra).map(|i| format!("host-number-{i}.some-long-domain-name.example.com")))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert, key) = common::certs::self_signed(&names);
    let cert = TestCert { cert, key };
    let mut net = Net::new(13);
    let server = net.add(server_addr(), server_endpoint(&cert, 114, |_| {}));
    let client = net.add(client_addr(0), client_endpoint(214));
    let ch = net.connect(client, client_config(&cert), server);
    net.advance_to(at(10));
    (net, server, client, ch)
}

/// The bytes of every datagram sent from `from` to `to` so far.
fn bytes_sent(net: &Net, from: SocketAddr, to: SocketAddr) -> usize {
    net.sent(from, to).iter().map(|s| s.data.len()).sum()
}

/// A server whose first flight used up its anti-amplification allowance (RFC 9000 §8.1: three times
/// what the client sent, here a large certificate chain) and that then refuses the connection must still
/// get its CONNECTION_CLOSE out: the client's next datagrams raise the allowance while the server is
/// closing, as they do before (RFC 9000 §10.2.1 answers them with the close). Otherwise the client, never
/// told, waits for its idle timeout.
#[test]
fn a_refusal_at_the_amplification_limit_reaches_the_client() {
    let (mut net, server, client, ch) = first_flight_with_names(120);
    let sh = net.hosts[server].incoming()[0].0;
    let received = bytes_sent(&net, client_addr(0), server_addr());
    let sent = bytes_sent(&net, server_addr(), client_addr(0));
    assert!(
        sent + 1200 > 3 * received,
        "the first flight leaves less than a datagram of allowance: sent {sent}, received {received}"
    );
    net.hosts[server].ep.refuse(net.now, sh).unwrap();
    net.settle(server, false);
    let refused_at = net.now;
    net.drive(Duration::from_secs(60));
    let (reason, when) = net.hosts[client].lost(ch).expect("the client's connection ended");
    assert_eq!(reason, ConnectionError::Refused);
    assert!(
        when - refused_at < Duration::from_secs(1),
        "told after {:?}",
        when - refused_at
    );
    // The limit still holds: nothing the server sent exceeded three times what had reached it.
    for s in net.sent(server_addr(), client_addr(0)) {
        let arrived: usize = net
            .sent(client_addr(0), server_addr())
            .iter()
            .filter(|c| c.delivered && c.at + net.latency <= s.at)
            .map(|c| c.data.len())
            .sum();
        let sent_by_then: usize = net
            .sent(server_addr(), client_addr(0))
            .iter()
            .filter(|x| x.at <= s.at)
            .map(|x| x.data.len())
            .sum();
        assert!(
            sent_by_then <= 3 * arrived,
            "at {:?}: sent {sent_by_then} for {arrived} received",
            s.at - epoch()
        );
    }
}

/// A server that refuses a connection while less than a datagram of its anti-amplification allowance is
/// left, but enough for its CONNECTION_CLOSE, sends the close at once (RFC 9000 §8.1 limits bytes, and a
/// datagram with only CONNECTION_CLOSE in its Initial packet needs no padding, §14.1). Before, it waited
/// for 1,200 bytes of allowance, so the close went out only after the client's next datagram, a PTO
/// later.
#[test]
fn a_refusal_goes_out_at_once_within_a_small_allowance() {
    // Certificate chains of growing size until the first flight leaves between 300 and 1,100 bytes.
    for extra in (0..120).step_by(3) {
        let (mut net, server, client, ch) = first_flight_with_names(extra);
        let received = bytes_sent(&net, client_addr(0), server_addr());
        let sent = bytes_sent(&net, server_addr(), client_addr(0));
        let left = (3 * received).saturating_sub(sent);
        if !(300..=1100).contains(&left) {
            continue;
        }
        let sh = net.hosts[server].incoming()[0].0;
        net.hosts[server].ep.refuse(net.now, sh).unwrap();
        net.settle(server, false);
        let close = bytes_sent(&net, server_addr(), client_addr(0)) - sent;
        assert!(
            close > 0 && close <= left,
            "{left} bytes of allowance left: {close} bytes sent for the close"
        );
        net.drive(Duration::from_secs(60));
        let (reason, _) = net.hosts[client].lost(ch).expect("the client's connection ended");
        assert_eq!(reason, ConnectionError::Refused);
        return;
    }
    panic!("no certificate chain left between 300 and 1,100 bytes of allowance");
}

/// `stateless_resets_received` counts every stateless reset that ends a connection (RFC 9000 §10.3.1),
/// whichever way the reset reached it: to no connection (routed by connection ID), or, for a client with
/// zero-length connection IDs, routed by address to the connection itself, which finds the token when the
/// packet fails to decrypt.
#[test]
fn stateless_resets_are_counted_however_they_are_routed() {
    let cert = TestCert::new();
    for client_cid_len in [8, 0] {
        let mut net = Net::new(14);
        let server_endpoint = |seed| {
            let mut config = EndpointConfig::with_seed(seed);
            config.reset_key = Some([7; 32]);
            Endpoint::new(config, Some(ServerConfig::new(cert.server_tls(&[]))))
        };
        let server = net.add(server_addr(), server_endpoint(115));
        let mut config = EndpointConfig::with_seed(215);
        config.cid_generator = Box::new(quicsand::RandomCidGenerator::new(client_cid_len));
        let client = net.add(client_addr(0), Endpoint::new(config, None));
        let ch = net.connect(client, client_config(&cert), server);
        assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
            .has(ch, &Event::HandshakeConfirmed)));
        net.drive_until(Duration::from_millis(300), |_| false);
        // The server restarts with the same reset key: it answers the client's next packet with a reset.
        net.hosts[server].ep = server_endpoint(116);
        net.ep(client).conn(ch).unwrap().ping();
        net.settle(client, false);
        net.drive(Duration::from_secs(10));
        assert_eq!(net.ep(server).stats().stateless_resets_sent, 1);
        assert_eq!(
            net.hosts[client].lost(ch).map(|l| l.0),
            Some(ConnectionError::Reset),
            "client IDs of {client_cid_len} bytes"
        );
        assert_eq!(
            net.ep(client).stats().stateless_resets_received,
            1,
            "client IDs of {client_cid_len} bytes"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 5. max_incoming_handshakes

#[test]
fn handshake_limit_drops_a_second_initial_until_the_first_completes() {
    let cert = TestCert::new();
    let mut net = Net::new(6);
    let server = net.add(
        server_addr(),
        server_endpoint(&cert, 105, |s| s.max_incoming_handshakes = 1),
    );
    let a = net.add(client_addr(0), client_endpoint(205));
    let b = net.add(client_addr(1), client_endpoint(206));
    let ha = net.connect(a, client_config(&cert), server);
    net.advance_to(at(1));
    let hb = net.connect(b, client_config(&cert), server);
    // A's Initial arrives at 10 ms, B's at 11 ms: B's finds A's handshake in progress.
    net.advance_to(at(11));
    let s = net.ep(server).stats();
    assert_eq!(s.connections_incoming, 1, "{s:?}");
    assert_eq!(s.dropped_handshake_limit, 1, "{s:?}");
    assert_eq!(s.connections_active, 1);
    assert!(net.sent(server_addr(), client_addr(1)).is_empty());

    assert!(
        net.drive_until(Duration::from_secs(10), |n| n.hosts[a].connected(ha)
            && n.hosts[b].connected(hb))
    );
    let s = net.ep(server).stats();
    assert_eq!(s.connections_incoming, 2, "{s:?}");
    assert_eq!(s.connections_active, 2);
    let a_done = net.hosts[a].when(ha, &Event::Connected).unwrap();
    let b_done = net.hosts[b].when(hb, &Event::Connected).unwrap();
    assert!(a_done < at(100));
    // B gets through with its PTO retransmission, after A's handshake is done.
    assert!(b_done > at(300), "B connected at {:?}", b_done - epoch());
    let incoming = net.hosts[server].incoming();
    assert_eq!(
        incoming.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![client_addr(0), client_addr(1)]
    );
    assert_eq!(net.ep(server).stats().dropped_handshake_limit, 1);
}

/// A handshake that ends without completing (refused under `AcceptPolicy::Ask`, or closed by the
/// application) keeps its `max_incoming_handshakes` slot through its closing period, but once its
/// CONNECTION_CLOSE has gone out a new client's Initial takes its place at the limit: the closing
/// period is cut short (`closing_handshakes_ended`) rather than the new client turned away. Before,
/// with room for one handshake, the second client's Initial was dropped unanswered
/// (`dropped_handshake_limit` 1) and it waited for its PTO to get in.
#[test]
fn a_new_client_takes_the_slot_of_a_refused_or_closed_handshake() {
    for close in [false, true] {
        let cert = TestCert::new();
        let mut net = Net::new(61);
        let server = net.add(
            server_addr(),
            server_endpoint(&cert, 161, |s| {
                s.accept = AcceptPolicy::Ask;
                s.max_incoming_handshakes = 1;
            }),
        );
        let a = net.add(client_addr(0), client_endpoint(261));
        let b = net.add(client_addr(1), client_endpoint(262));
        let ha = net.connect(a, client_config(&cert), server);
        net.advance_to(at(20));
        let sa = net.hosts[server].incoming()[0].0;
        let now = net.now;
        if close {
            net.hosts[server].ep.close(now, sa, 3, b"no").unwrap();
        } else {
            net.hosts[server].ep.refuse(now, sa).unwrap();
        }
        net.settle(server, false);
        // B's Initial arrives 10 ms later, within A's closing period.
        net.connect(b, client_config(&cert), server);
        net.advance_to(at(40));
        let s = net.ep(server).stats();
        assert_eq!(
            (
                s.connections_incoming,
                s.dropped_handshake_limit,
                s.closing_handshakes_ended,
                s.connections_active
            ),
            (2, 0, 1, 1),
            "close {close}: {s:?}"
        );
        let incoming = net.hosts[server].incoming();
        assert_eq!(incoming.len(), 2, "close {close}");
        assert_eq!(incoming[1].1, client_addr(1));
        // A heard its close before its server-side state went (an application's close during the
        // handshake goes as APPLICATION_ERROR, RFC 9000 §10.2.3).
        let lost = net.hosts[a].lost(ha).map(|l| l.0);
        let heard = match &lost {
            Some(ConnectionError::ConnectionClosed { error }) => {
                close && error.code == quicsand::wire::TransportErrorCode::APPLICATION_ERROR
            }
            Some(ConnectionError::Refused) => !close,
            _ => false,
        };
        assert!(heard, "close {close}: {lost:?}");
    }
}

/// A closing handshake gives its slot only to a connection that is then made: with zero-length
/// connection IDs the server tells connections apart by address, and an Initial from the address of
/// another handshake still in progress makes none (`connections_failed`). Before, the closed
/// handshake's closing period was ended for it all the same (`closing_handshakes_ended` 1, the slot
/// freed for nothing).
#[test]
fn a_closed_handshake_keeps_its_slot_for_an_initial_that_makes_no_connection() {
    let cert = TestCert::new();
    let mut net = Net::new(63);
    let mut config = ServerConfig::new(cert.server_tls(&[]));
    config.accept = AcceptPolicy::Ask;
    config.max_incoming_handshakes = 2;
    let mut endpoint_config = EndpointConfig::with_seed(163);
    endpoint_config.cid_generator = Box::new(quicsand::RandomCidGenerator::new(0));
    let server = net.add(server_addr(), Endpoint::new(endpoint_config, Some(config)));
    let a = net.add(client_addr(0), client_endpoint(263));
    let b = net.add(client_addr(1), client_endpoint(264));
    net.connect(a, client_config(&cert), server);
    net.advance_to(at(20));
    let sa = net.hosts[server].incoming()[0].0;
    let now = net.now;
    net.hosts[server].ep.refuse(now, sa).unwrap();
    net.settle(server, false);
    // B's handshake is in progress, held for the application.
    net.connect(b, client_config(&cert), server);
    net.advance_to(at(40));
    assert_eq!(net.hosts[server].incoming().len(), 2);
    // A second connection from B's address: no connection can be made for it.
    net.connect(b, client_config(&cert), server);
    net.advance_to(at(60));
    let s = net.ep(server).stats();
    assert_eq!(
        (
            s.connections_incoming,
            s.connections_failed,
            s.closing_handshakes_ended,
            s.connections_active
        ),
        (2, 1, 0, 2),
        "{s:?}"
    );
    // A new connection from A's own address takes the slot of A's closed handshake.
    net.connect(a, client_config(&cert), server);
    net.advance_to(at(80));
    let s = net.ep(server).stats();
    assert_eq!(
        (
            s.connections_incoming,
            s.connections_failed,
            s.closing_handshakes_ended,
            s.connections_active
        ),
        (3, 1, 1, 2),
        "{s:?}"
    );
    assert_eq!(net.hosts[server].incoming()[2].1, client_addr(0));
}

/// A flood of handshakes that each close at once (a ClientHello the server rejects: no common ALPN)
/// stays within `max_incoming_handshakes` with its closing connections too, and with Retry off every
/// client still hears its CRYPTO_ERROR at once: each new one takes the slot of one that closed. With
/// Retry above a threshold, the closing ones count toward it, so the flood is met with Retries.
#[test]
fn handshakes_closing_at_once_stay_within_the_limit_and_count_toward_retry() {
    let cert = TestCert::new();
    for retry in [RetryPolicy::Never, RetryPolicy::WhenHandshakesExceed(1)] {
        let mut net = Net::new(62);
        let server = net.add(
            server_addr(),
            server_endpoint(&cert, 162, |s| {
                s.max_incoming_handshakes = 2;
                s.retry = retry;
            }),
        );
        let tls =
            quicsand::crypto::tls::client_config(vec![cert.cert.clone()], vec![b"other".to_vec()]).unwrap();
        let clients: Vec<(usize, ConnectionHandle)> = (0..10)
            .map(|i| {
                let c = net.add(client_addr(i), client_endpoint(262 + u64::from(i)));
                net.advance_to(at(u64::from(i)));
                let h = net.connect(c, ClientConfig::new(tls.clone()), server);
                (c, h)
            })
            .collect();
        let mut most = 0;
        let all_lost = net.drive_until(Duration::from_secs(2), |n| {
            clients.iter().all(|&(c, h)| n.hosts[c].lost(h).is_some())
        });
        // Step on through the closing periods, watching the server's connections.
        while net.now < at(10_000) && net.step() {
            most = most.max(net.ep(server).stats().connections_active);
        }
        assert!(all_lost, "{retry:?}");
        for &(c, h) in &clients {
            let lost = net.hosts[c].lost(h);
            assert!(
                matches!(lost, Some((ConnectionError::ConnectionClosed { ref error }, t)) if error.code.0 == 0x178 && t < at(200)),
                "{retry:?} client {c}: {lost:?}"
            );
        }
        let s = net.ep(server).stats();
        assert!(most <= 2, "{retry:?}: {most} connections at once");
        assert_eq!(s.dropped_handshake_limit, 0, "{retry:?}: {s:?}");
        assert_eq!(s.connections_active, 0, "{retry:?}: {s:?}");
        match retry {
            RetryPolicy::Never => {
                assert_eq!(
                    (s.connections_incoming, s.closing_handshakes_ended, s.retries_sent),
                    (10, 8, 0)
                )
            }
            _ => assert!(s.retries_sent >= 5, "{s:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 6. Truncated and corrupted Initials

#[test]
fn truncated_and_corrupted_initials_create_nothing() {
    let cert = TestCert::new();
    let initial = real_client_initial(&cert, 300);
    let mut server = server_endpoint(&cert, 106, |_| {});
    let now = epoch();
    let mut port = 1u16;
    let mut next_addr = || {
        port += 1;
        SocketAddr::new([10, 9, (port >> 8) as u8, port as u8].into(), port)
    };
    for len in 0..initial.len() {
        let from = next_addr();
        server.handle_datagram(now, datagram(from, server_addr(), &initial[..len]));
        let out = drain(&mut server, now);
        assert!(out.is_empty(), "a {len}-byte truncation was answered");
        assert!(
            server.poll_event().is_none(),
            "a {len}-byte truncation made an event"
        );
    }
    let s = server.stats();
    assert_eq!(s.connections_incoming, 0, "{s:?}");
    assert_eq!(s.connections_active, 0);
    assert_eq!(s.version_negotiations_sent, 0);
    assert_eq!(s.datagrams_received, initial.len() as u64);

    // One byte flipped at every position. A flipped version byte makes an unknown version, which
    // RFC 9000 §6.1 answers with Version Negotiation; nothing else is answered.
    let mut vn = 0;
    for pos in 0..initial.len() {
        let mut bad = initial.clone();
        bad[pos] ^= 1 << (pos % 8);
        let from = next_addr();
        server.handle_datagram(now, datagram(from, server_addr(), &bad));
        let out = drain(&mut server, now);
        assert!(server.poll_event().is_none(), "byte {pos} flipped made an event");
        if (1..=4).contains(&pos) {
            assert_eq!(
                out.len(),
                1,
                "byte {pos} flipped (version) gets Version Negotiation"
            );
            assert_eq!(&out[0].1[1..5], &[0, 0, 0, 0]);
            vn += 1;
        } else {
            assert!(out.is_empty(), "byte {pos} flipped was answered: {out:?}");
        }
    }
    let s = server.stats();
    assert_eq!(s.connections_incoming, 0, "{s:?}");
    assert_eq!(s.connections_active, 0);
    assert_eq!(s.version_negotiations_sent, vn);
    assert!(server.poll_timeout().is_none());

    let from = next_addr();
    server.handle_datagram(now, datagram(from, server_addr(), &initial));
    let out = drain(&mut server, now);
    let s = server.stats();
    assert_eq!(s.connections_incoming, 1, "{s:?}");
    assert_eq!(s.connections_active, 1);
    assert!(
        !out.is_empty() && out.iter().all(|(to, _)| *to == from),
        "answered to the sender"
    );
    assert_eq!(
        server.poll_event().map(|e| e.1),
        Some(Event::Incoming { remote: from })
    );
}

// ------------------------------------------------------------------------------------------------
// 7. Version Negotiation

#[test]
fn unknown_version_gets_one_version_negotiation() {
    let cert = TestCert::new();
    // The client endpoint that made the Initial, to give it the answer.
    let mut client = client_endpoint(301);
    let ch = client
        .connect(epoch(), client_config(&cert), server_addr(), "localhost")
        .unwrap();
    let mut buf = Vec::new();
    let t = client.poll_transmit(epoch(), &mut buf).unwrap();
    let initial = t.datagrams(&buf).next().unwrap().to_vec();
    let (odcid, oscid) = match ProtectedHeader::decode(&initial, 8).unwrap() {
        ProtectedHeader::Long { dcid, scid, .. } => (dcid, scid),
        other => panic!("{other:?}"),
    };
    let mut odd = initial.clone();
    odd[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());

    let mut server = server_endpoint(&cert, 107, |_| {});
    let now = at(10);
    server.handle_datagram(now, datagram(client_addr(0), server_addr(), &odd));
    let out = drain(&mut server, now);
    assert_eq!(out.len(), 1, "exactly one Version Negotiation");
    let (to, vn) = &out[0];
    assert_eq!(*to, client_addr(0));
    assert_eq!(vn[0] & 0x80, 0x80, "long header");
    assert_eq!(&vn[1..5], &[0, 0, 0, 0], "version 0");
    let header = ProtectedHeader::decode(vn, 8).unwrap();
    let ProtectedHeader::VersionNegotiation { dcid, scid, .. } = &header else {
        panic!("{header:?}")
    };
    assert_eq!((*dcid, *scid), (oscid, odcid), "connection IDs swapped");
    let versions: Vec<u32> = header.versions(vn).collect();
    assert!(versions.contains(&VERSION_1), "{versions:x?}");
    assert!(!versions.contains(&0x1a2a_3a4a), "{versions:x?}");
    let s = server.stats();
    assert_eq!(
        (
            s.version_negotiations_sent,
            s.connections_incoming,
            s.connections_active
        ),
        (1, 0, 0)
    );
    assert!(server.poll_event().is_none());
    assert!(
        server.poll_timeout().is_none(),
        "Version Negotiation keeps no state"
    );

    // The client offered v1, which the list contains: RFC 9000 §6.2 says to ignore such a packet.
    client.handle_datagram(at(20), datagram(server_addr(), client_addr(0), vn));
    assert!(client.poll_event().is_none());
    assert!(
        !client.conn(ch).unwrap().is_closed(),
        "a VN listing our version is ignored"
    );
}

/// A v1 client and a server speaking only v2: the server answers with Version Negotiation listing v2,
/// and the client gives up with `VersionMismatch`.
#[test]
fn client_without_a_common_version_ends_with_version_mismatch() {
    let cert = TestCert::new();
    let mut net = Net::new(7);
    let config = EndpointConfig {
        supported_versions: vec![VERSION_2],
        ..EndpointConfig::with_seed(108)
    };
    let server = net.add(
        server_addr(),
        Endpoint::new(config, Some(ServerConfig::new(cert.server_tls(&[])))),
    );
    let client = net.add(client_addr(0), client_endpoint(207));
    let ch = net.connect(client, client_config(&cert), server);
    net.drive(Duration::from_secs(10));
    let (reason, when) = net.hosts[client].lost(ch).expect("the client gave up");
    assert_eq!(reason, ConnectionError::VersionMismatch);
    assert_eq!(
        when,
        at(20),
        "at the first Version Negotiation, one round trip in"
    );
    assert_eq!(
        net.hosts[client].events_of(ch),
        vec![Event::ConnectionLost { reason }]
    );
    assert_eq!(net.ep(client).conn(ch).err(), Some(StaleHandle(ch)));
    assert_eq!(net.ep(client).stats().connections_active, 0);
    let s = net.ep(server).stats();
    assert_eq!(
        (s.version_negotiations_sent, s.connections_incoming),
        (1, 0),
        "{s:?}"
    );
    let answers = net.sent(server_addr(), client_addr(0));
    assert_eq!(answers.len(), 1);
    let header = ProtectedHeader::decode(&answers[0].data, 8).unwrap();
    let versions: Vec<u32> = header.versions(&answers[0].data).collect();
    assert!(
        versions.contains(&VERSION_2) && !versions.contains(&VERSION_1),
        "{versions:x?}"
    );
}

/// The same v2-only server completes a handshake with a client that starts with v2.
#[test]
fn version_2_client_and_server_complete_a_handshake() {
    let cert = TestCert::new();
    let mut net = Net::new(8);
    let v2 = |seed| EndpointConfig {
        supported_versions: vec![VERSION_2],
        ..EndpointConfig::with_seed(seed)
    };
    let server = net.add(
        server_addr(),
        Endpoint::new(v2(109), Some(ServerConfig::new(cert.server_tls(&[])))),
    );
    let client = net.add(client_addr(0), Endpoint::new(v2(208), None));
    let mut config = client_config(&cert);
    config.version = VERSION_2;
    let ch = net.connect(client, config, server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(ch, &Event::HandshakeConfirmed)));
    assert_eq!(net.ep(server).stats().version_negotiations_sent, 0);
    let first = &net.sent(client_addr(0), server_addr())[0].data;
    assert_eq!(&first[1..5], &VERSION_2.to_be_bytes());
}

/// RFC 9369 §7: NEW_TOKEN tokens are specific to the QUIC version of the connection that brought them.
/// A client that got one on a version 1 connection does not offer it on a version 2 connection to the
/// same server (and the server would not take it), but on its next version 1 connection. Before, the
/// token went with the version 2 connection and was accepted there.
#[test]
fn a_new_token_from_a_version_1_connection_is_not_used_on_version_2() {
    let cert = TestCert::new();
    let mut net = Net::new(9);
    let both = |seed| EndpointConfig {
        supported_versions: vec![VERSION_1, VERSION_2],
        ..EndpointConfig::with_seed(seed)
    };
    let server = net.add(
        server_addr(),
        Endpoint::new(both(110), Some(ServerConfig::new(cert.server_tls(&[])))),
    );
    let client = net.add(client_addr(0), Endpoint::new(both(209), None));
    let first = net.connect(client, client_config(&cert), server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(first, &Event::HandshakeConfirmed)));
    net.drive(Duration::from_millis(200));
    assert_eq!(net.ep(server).stats().new_tokens_issued, 1);
    let mut v2 = client_config(&cert);
    v2.version = VERSION_2;
    let second = net.connect(client, v2, server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(second, &Event::HandshakeConfirmed)));
    let s = net.ep(server).stats();
    assert_eq!(
        (s.new_tokens_accepted, s.tokens_ignored),
        (0, 0),
        "no token offered: {s:?}"
    );
    let third = net.connect(client, client_config(&cert), server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(third, &Event::HandshakeConfirmed)));
    assert_eq!(
        net.ep(server).stats().new_tokens_accepted,
        1,
        "the version 1 token, on version 1"
    );
}

// ------------------------------------------------------------------------------------------------
// 8. The drive rule

/// Over handshakes with loss, a close and idle timeouts, after every input draining transmits, then
/// events, then reading the deadline leaves nothing behind: a second `poll_transmit` returns nothing,
/// events draining sends nothing, `poll_timeout` is stable and, after `handle_timeout(now)`, later
/// than `now`. A spurious `handle_timeout` before the deadline does nothing.
#[test]
fn drive_rule_leaves_no_work_behind() {
    let cert = TestCert::new();
    for seed in 0..40u64 {
        let mut net = Net::new(seed);
        net.filter = Box::new(|_, rng| !rng.chance(0.2));
        let server = net.add(
            server_addr(),
            server_endpoint(&cert, 110 + seed, |s| {
                s.transport.max_idle_timeout = Some(Duration::from_secs(3));
            }),
        );
        let mut conns = Vec::new();
        for i in 0..3u16 {
            let c = net.add(client_addr(i), client_endpoint(seed * 10 + u64::from(i)));
            conns.push((c, net.connect(c, client_config(&cert), server)));
        }
        let done = |n: &Net| conns.iter().all(|(c, h)| n.hosts[*c].connected(*h));
        assert!(net.drive_until(Duration::from_secs(30), done), "seed {seed}");
        // A spurious wake-up before the deadline changes nothing.
        for i in 0..net.hosts.len() {
            let now = net.now;
            let before = net.ep(i).poll_timeout();
            if before.is_some_and(|d| d > now) {
                net.ep(i).handle_timeout(now);
                assert!(
                    net.ep(i).poll_transmit(now, &mut Vec::new()).is_none(),
                    "seed {seed} host {i}"
                );
                assert!(net.ep(i).poll_event().is_none());
                assert_eq!(net.ep(i).poll_timeout(), before, "seed {seed} host {i}");
            }
        }
        let (c0, h0) = conns[0];
        if net.hosts[c0].ep.close(net.now, h0, 0, b"").is_err() {
            // Under loss the connection may already be gone (idle timeout after a lost close).
            assert!(
                net.hosts[c0].lost(h0).is_some(),
                "seed {seed}: stale handle without a loss"
            );
        }
        net.settle(c0, false);
        net.drive(Duration::from_secs(60));
        assert!(
            net.next_event().is_none(),
            "seed {seed}: everything drained or timed out"
        );
        for (i, h) in net.hosts.iter().enumerate() {
            assert_eq!(h.ep.stats().connections_active, 0, "seed {seed} host {i}");
        }
        assert!(net.timeouts > 0);
        assert!(net.violations.is_empty(), "seed {seed}: {:#?}", net.violations);
        // One `handle_timeout(now)` handles everything due at `now`: the deadline it leaves is later.
        assert!(
            net.past_after_timeout.is_empty(),
            "seed {seed}: {:?}",
            net.past_after_timeout
        );
        assert!(
            net.max_timeout_calls <= 1,
            "seed {seed}: {} calls",
            net.max_timeout_calls
        );
        for (i, now, d) in &net.past_after_timeout {
            eprintln!(
                "seed {seed}: host {i}: after handle_timeout at {:?} the deadline is {:?}",
                *now - epoch(),
                *d - epoch()
            );
        }
        for (i, now, d) in &net.past_after_input {
            eprintln!(
                "seed {seed}: host {i} at {:?}: deadline {:?} read after an input was already past",
                *now - epoch(),
                *d - epoch()
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 9. The earliest deadline over several connections

/// One client endpoint with two connections, to servers with idle timeouts of 5 s and 2 s (the
/// shorter one opened second). With no traffic after the handshake, the endpoint's deadline is the
/// 2 s connection's: only it is lost, with `TimedOut`, about 2 s after the last packet; the other
/// lives on until its own 5 s.
#[test]
fn poll_timeout_is_the_earliest_over_connections() {
    let cert = TestCert::new();
    let mut net = Net::new(9);
    let idle = |secs| {
        move |s: &mut ServerConfig| {
            s.transport = TransportConfig {
                max_idle_timeout: Some(Duration::from_secs(secs)),
                ..TransportConfig::default()
            }
        }
    };
    let slow = net.add(server_addr(), server_endpoint(&cert, 111, idle(5)));
    let fast = net.add(
        "10.0.0.3:4433".parse().unwrap(),
        server_endpoint(&cert, 112, idle(2)),
    );
    let client = net.add(client_addr(0), client_endpoint(209));
    let h_slow = net.connect(client, client_config(&cert), slow);
    let h_fast = net.connect(client, client_config(&cert), fast);
    let confirmed = |n: &Net| {
        n.hosts[client].has(h_slow, &Event::HandshakeConfirmed)
            && n.hosts[client].has(h_fast, &Event::HandshakeConfirmed)
    };
    assert!(net.drive_until(Duration::from_secs(5), confirmed));
    // Let the last ACKs settle.
    net.drive_until(Duration::from_millis(500), |_| false);
    let last_packet = net.log.iter().map(|s| s.at).max().unwrap();
    assert!(
        last_packet < at(200),
        "traffic went on until {:?}",
        last_packet - epoch()
    );

    let deadline = net.ep(client).poll_timeout().expect("idle timers are armed");
    assert!(deadline <= last_packet + Duration::from_secs(2) + Duration::from_millis(50));

    assert!(net.drive_until(Duration::from_secs(10), |n| n.hosts[client]
        .lost(h_fast)
        .is_some()));
    let (reason, when) = net.hosts[client].lost(h_fast).unwrap();
    assert_eq!(reason, ConnectionError::TimedOut);
    // The idle period starts at the last packet received (RFC 9000 §10.1), one latency after it was
    // sent: with path MTU probes, the last packet is the server's acknowledgement of the client's probe.
    assert!(
        when >= at(2000) && when <= last_packet + net.latency + Duration::from_secs(2),
        "fast connection lost at {:?}",
        when - epoch()
    );
    assert!(
        net.hosts[client].lost(h_slow).is_none(),
        "only the fast connection is lost"
    );
    assert!(!net.ep(client).conn(h_slow).unwrap().is_closed());
    assert_eq!(
        net.ep(client).conn(h_fast).err(),
        Some(StaleHandle(h_fast)),
        "an idle timeout drains at once"
    );
    assert_eq!(net.ep(client).stats().connections_active, 1);

    assert!(net.drive_until(Duration::from_secs(10), |n| n.hosts[client]
        .lost(h_slow)
        .is_some()));
    let (reason, when) = net.hosts[client].lost(h_slow).unwrap();
    assert_eq!(reason, ConnectionError::TimedOut);
    assert!(
        when >= at(5000) && when <= last_packet + net.latency + Duration::from_secs(5),
        "slow lost at {:?}",
        when - epoch()
    );
    // The servers time out on their own clocks too.
    net.drive(Duration::from_secs(10));
    for s in [slow, fast] {
        let incoming = net.hosts[s].incoming();
        assert_eq!(incoming.len(), 1);
        assert_eq!(
            net.hosts[s].lost(incoming[0].0).map(|l| l.0),
            Some(ConnectionError::TimedOut)
        );
    }
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

// ------------------------------------------------------------------------------------------------
// 10. Event order

/// Per connection, the server reports Incoming, Connected, HandshakeConfirmed, and the client
/// Connected, HandshakeConfirmed, in that order and once each, also under 25% loss.
#[test]
fn events_come_in_order_per_connection() {
    let cert = TestCert::new();
    for seed in 0..10u64 {
        let mut net = Net::new(100 + seed);
        if seed > 0 {
            net.filter = Box::new(|_, rng| !rng.chance(0.25));
        }
        let server = net.add(server_addr(), server_endpoint(&cert, 120 + seed, |_| {}));
        let mut conns = Vec::new();
        for i in 0..2u16 {
            let c = net.add(client_addr(i), client_endpoint(400 + seed * 10 + u64::from(i)));
            conns.push((c, net.connect(c, client_config(&cert), server)));
        }
        let done = |n: &Net| {
            conns
                .iter()
                .all(|(c, h)| n.hosts[*c].has(*h, &Event::HandshakeConfirmed))
                && n.hosts[server]
                    .events
                    .iter()
                    .filter(|(_, e, _)| *e == Event::HandshakeConfirmed)
                    .count()
                    == 2
        };
        assert!(net.drive_until(Duration::from_secs(60), done), "seed {seed}");
        for (c, h) in &conns {
            assert_handshake_events(&net.hosts[*c].events_of(*h), None, &format!("seed {seed} client"));
        }
        for (h, remote) in net.hosts[server].incoming() {
            assert_handshake_events(
                &net.hosts[server].events_of(h),
                Some(remote),
                &format!("seed {seed} server"),
            );
        }
    }
}

/// RFC 9369 §3.2, §3.3.3 with RFC 9000 §8.1.2: a version 2 server that always sends Retry completes a
/// handshake with a version 2 client. The Retry carries the version 2 Retry type bits (0b00, an
/// Initial's in version 1) and the client's Initials before and after it the version 2 Initial bits
/// (0b01); the Retry's tag verifies with the version 2 key, and the server's transport parameters
/// name the Retry (RFC 9000 §7.3) or the client would have closed.
#[test]
fn a_version_2_handshake_goes_through_a_retry() {
    let cert = TestCert::new();
    let mut net = Net::new(91);
    let v2 = |seed| EndpointConfig {
        supported_versions: vec![VERSION_2],
        ..EndpointConfig::with_seed(seed)
    };
    let mut sc = ServerConfig::new(cert.server_tls(&[]));
    sc.retry = quicsand::RetryPolicy::Always;
    let server = net.add(server_addr(), Endpoint::new(v2(191), Some(sc)));
    let client = net.add(client_addr(0), Endpoint::new(v2(291), None));
    let mut config = client_config(&cert);
    config.version = VERSION_2;
    let ch = net.connect(client, config, server);
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(ch, &Event::HandshakeConfirmed)));
    assert_eq!(net.ep(server).stats().retries_sent, 1);
    let answers = net.sent(server_addr(), client_addr(0));
    let retry = &answers[0].data;
    assert_eq!((retry[0] >> 4) & 3, 0, "v2 Retry type bits");
    let sent = net.sent(client_addr(0), server_addr());
    assert_eq!((sent[0].data[0] >> 4) & 3, 1, "v2 Initial type bits");
    assert_eq!((sent[1].data[0] >> 4) & 3, 1, "v2 Initial type bits after Retry");
    // The Initial after the Retry goes to the Retry's SCID with its token (RFC 9000 §17.2.5.2).
    let retry_header = ProtectedHeader::decode(retry, 8).unwrap();
    assert_eq!(retry_header.long_type(), Some(LongType::Retry));
    let next = ProtectedHeader::decode(&sent[1].data, 8).unwrap();
    assert_eq!(next.long_type(), Some(LongType::Initial));
    assert_eq!(next.dcid(), retry_header.scid().unwrap());
    assert_eq!(next.token(&sent[1].data), retry_header.token(retry));
}

/// RFC 9000 §6.2: "A client MUST discard any Version Negotiation packet if it has received and
/// successfully processed any other packet". The server's Initial has been processed; a Version
/// Negotiation then, echoing both connection IDs of the client's Initial and listing no version the
/// client has, is ignored and the handshake completes.
#[test]
fn version_negotiation_after_the_servers_initial_is_ignored() {
    let cert = TestCert::new();
    let mut net = Net::new(92);
    let server = net.add(server_addr(), server_endpoint(&cert, 192, |_| {}));
    let client = net.add(client_addr(0), client_endpoint(292));
    let ch = net.connect(client, client_config(&cert), server);
    let first = net.sent(client_addr(0), server_addr())[0].data.clone();
    let h = ProtectedHeader::decode(&first, 0).unwrap();
    let (dcid, scid) = (*h.dcid(), *h.scid().unwrap());
    // Deliver the server's flight only.
    assert!(net.drive_until(Duration::from_secs(1), |n| n.hosts[client].received > 0));
    let mut vn = vec![0x80, 0, 0, 0, 0, scid.len() as u8];
    vn.extend_from_slice(&scid);
    vn.push(dcid.len() as u8);
    vn.extend_from_slice(&dcid);
    vn.extend_from_slice(&0x1a2a_3a4au32.to_be_bytes());
    net.deliver(client, server_addr(), &vn);
    assert!(net.hosts[client].lost(ch).is_none());
    assert!(net.drive_until(Duration::from_secs(5), |n| n.hosts[client]
        .has(ch, &Event::HandshakeConfirmed)));
}
