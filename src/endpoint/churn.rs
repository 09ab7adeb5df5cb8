//! Long-running churn: many connections opened and ended every way; afterwards the endpoint's state is
//! back to its baseline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::peer_errors::test_cert;
use super::{ConnectionHandle, Endpoint};
use crate::crypto::tls;
use crate::event::Event;
use crate::test_util::epoch;
use crate::validation::RetryPolicy;
use crate::{ClientConfig, Datagram, EndpointConfig, ServerConfig};

pub(super) const SERVER: &str = "192.0.2.2:443";

/// What an endpoint holds that is keyed by connection, ID, address, token, slot or timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Footprint {
    live: usize,
    routes: [usize; 4],
    timers: usize,
    send_queue: usize,
    dirty_timers: usize,
    stateless: usize,
    events: usize,
    handshakes: usize,
    deadline: bool,
}

pub(super) fn footprint(ep: &mut Endpoint) -> Footprint {
    let deadline = ep.poll_timeout().is_some();
    Footprint {
        live: ep.table.len(),
        routes: ep.routes.lens(),
        timers: ep.timers.len(),
        send_queue: ep.send_queue.len(),
        dirty_timers: ep.dirty_timers.len(),
        stateless: ep.stateless.len(),
        events: ep.events.len(),
        handshakes: ep.handshakes,
        deadline,
    }
}

/// The routing index says exactly what the connections hold (RFC 9000 §5.1.2, §10.3.1): every route
/// leads to a live connection that still owns the ID, address or token, and every ID a connection has
/// issued and not seen retired, and every reset token it checks, is routed. Checked between inputs,
/// when no connection has requests for the endpoint left.
pub(super) fn assert_routes_consistent(ep: &Endpoint) {
    let (local, initial, by_addr, reset, last_short) = ep.routes.all();
    let entry = |h| ep.table.get(h).expect("a route to a removed connection");
    for (cid, h) in &local {
        let e = entry(*h);
        assert!(
            e.local_cids.contains(cid),
            "{cid:?} routed to {h:?}, not in its list"
        );
        assert!(
            e.conn.local_cids.active.iter().any(|c| c.cid == *cid),
            "{cid:?} routed to {h:?}, which retired it"
        );
    }
    for (cid, h) in &initial {
        assert_eq!(entry(*h).initial_dcid, Some(*cid));
    }
    for (addr, h) in &by_addr {
        assert_eq!(entry(*h).addr_key, Some(*addr));
    }
    for (token, h) in &reset {
        let e = entry(*h);
        assert!(
            e.reset_tokens.contains(&Some(*token)),
            "{token:?} routed to {h:?}"
        );
        assert!(
            e.conn.reset_tokens().contains(&Some(*token)),
            "{token:?} routed to {h:?}, which no longer checks it"
        );
    }
    if let Some((cid, h)) = last_short {
        assert!(
            local.contains(&(cid, h)),
            "the cached short route {cid:?} is stale"
        );
    }
    for (h, e) in ep.table.iter() {
        assert!(e.conn.endpoint_events.is_empty(), "{h:?} has requests left");
        for cid in &e.local_cids {
            assert!(local.contains(&(*cid, h)), "{cid:?} of {h:?} not routed");
        }
        if !e.conn.local_cid.is_empty() {
            for c in &e.conn.local_cids.active {
                assert!(e.local_cids.contains(&c.cid), "{:?} of {h:?} not listed", c.cid);
            }
        }
        if let Some(cid) = e.initial_dcid {
            assert!(initial.contains(&(cid, h)));
        }
        if let Some(addr) = e.addr_key {
            assert!(by_addr.contains(&(addr, h)));
        }
        for token in e.conn.reset_tokens().into_iter().flatten() {
            assert!(
                reset.iter().any(|(t, _)| *t == token),
                "{h:?} checks {token:?}, which is not routed"
            );
        }
    }
}

pub(super) struct Net {
    pub(super) now: Instant,
    pub(super) server: Endpoint,
    pub(super) client: Endpoint,
    pub(super) client_addr: SocketAddr,
    pub(super) client_config: ClientConfig,
    pub(super) server_config: ServerConfig,
    /// Datagrams from the client are lost.
    pub(super) cut_client: bool,
    /// Datagrams from the server are lost.
    pub(super) cut_server: bool,
    /// The server's application never calls `poll_event`.
    pub(super) mute_server: bool,
    pub(super) server_events: Vec<(ConnectionHandle, Event)>,
    pub(super) client_events: Vec<(ConnectionHandle, Event)>,
    /// Every this many datagrams one is lost (0: none).
    pub(super) drop_every: usize,
    sent: usize,
}

impl Net {
    pub(super) fn new() -> Self {
        let (cert, key) = test_cert(Vec::new());
        let alpn = vec![b"test".to_vec()];
        let server_config =
            ServerConfig::new(tls::server_config(vec![cert.clone()], key, alpn.clone()).unwrap());
        let client_config = ClientConfig::new(tls::client_config(vec![cert], alpn).unwrap());
        Self {
            now: epoch(),
            server: Endpoint::new(EndpointConfig::with_seed(1), Some(server_config.clone())),
            client: Endpoint::new(EndpointConfig::with_seed(2), None),
            client_addr: "192.0.2.1:5000".parse().unwrap(),
            client_config,
            server_config,
            cut_client: false,
            cut_server: false,
            mute_server: false,
            server_events: Vec::new(),
            client_events: Vec::new(),
            drop_every: 0,
            sent: 0,
        }
    }

    pub(super) fn connect(&mut self) -> ConnectionHandle {
        self.client
            .connect(
                self.now,
                self.client_config.clone(),
                SERVER.parse().unwrap(),
                "localhost",
            )
            .unwrap()
    }

    /// Exchanges datagrams at `now` until neither side sends.
    pub(super) fn exchange(&mut self) {
        let mut buf = Vec::new();
        let server: SocketAddr = SERVER.parse().unwrap();
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                moved = true;
                if self.cut_client {
                    continue;
                }
                for d in t.datagrams(&buf) {
                    self.sent += 1;
                    if self.drop_every > 0 && self.sent % self.drop_every == 0 {
                        continue;
                    }
                    let d = dg(self.client_addr, d);
                    self.server.handle_datagram(self.now, d);
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                moved = true;
                if self.cut_server {
                    continue;
                }
                for d in t.datagrams(&buf) {
                    self.sent += 1;
                    if self.drop_every > 0 && self.sent % self.drop_every == 0 {
                        continue;
                    }
                    self.client.handle_datagram(self.now, dg(server, d));
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(e) = (!self.mute_server).then(|| self.server.poll_event()).flatten() {
                self.server_events.push(e);
            }
            assert_routes_consistent(&self.client);
            assert_routes_consistent(&self.server);
            if !moved {
                return;
            }
        }
        panic!("the endpoints never stop sending");
    }

    /// Runs for `limit` of virtual time, jumping from deadline to deadline. Returns the number of
    /// wake-ups.
    pub(super) fn run(&mut self, limit: Duration) -> usize {
        let end = self.now + limit;
        let mut wakes = 0;
        loop {
            self.exchange();
            if !super::peer_errors::advance_to_next_deadline(
                &mut self.now,
                &mut self.client,
                &mut self.server,
                end,
            ) {
                self.now = end;
                return wakes;
            }
            wakes += 1;
            assert!(wakes < 1_000_000, "the timers spin");
        }
    }
}

pub(super) fn dg(remote: SocketAddr, payload: &[u8]) -> Datagram {
    Datagram {
        remote,
        local: None,
        ecn: None,
        payload: BytesMut::from(payload),
    }
}

fn connected(events: &[(ConnectionHandle, Event)], h: ConnectionHandle) -> bool {
    events.iter().any(|(x, e)| *x == h && *e == Event::Connected)
}

/// Connections ended every way: closed by the client, by idle timeout, by a client vanishing mid
/// handshake, after a Retry, by a stateless reset, after the client moved; then both endpoints hold
/// nothing keyed by them and have no deadline.
#[test]
fn every_way_out_returns_the_endpoints_to_their_baseline() {
    let mut net = Net::new();
    let base_server = footprint(&mut net.server);
    let base_client = footprint(&mut net.client);
    const N: usize = 40;

    // Closed by the client.
    let hs: Vec<_> = (0..N).map(|_| net.connect()).collect();
    net.run(Duration::from_millis(10));
    for &h in &hs {
        assert!(connected(&net.client_events, h));
        let now = net.now;
        net.client.close(now, h, 0, b"bye").unwrap();
    }
    net.run(Duration::from_secs(10));
    assert_eq!(footprint(&mut net.server), base_server, "after closes");
    assert_eq!(footprint(&mut net.client), base_client, "after closes");

    // Idle timeout.
    (0..N).for_each(|_| {
        net.connect();
    });
    net.run(Duration::from_secs(300));
    assert_eq!(footprint(&mut net.server), base_server, "after idle timeouts");
    assert_eq!(footprint(&mut net.client), base_client, "after idle timeouts");

    // The client vanishes after its first flight.
    (0..N).for_each(|_| {
        net.connect();
    });
    net.cut_server = true;
    net.exchange();
    net.cut_client = true;
    net.run(Duration::from_secs(300));
    net.cut_client = false;
    net.cut_server = false;
    assert_eq!(footprint(&mut net.server), base_server, "after vanished clients");
    assert_eq!(footprint(&mut net.client), base_client, "after vanished clients");

    // Retry-validated clients, then closed by the server.
    net.server.set_retry_policy(RetryPolicy::Always);
    (0..N).for_each(|_| {
        net.connect();
    });
    net.run(Duration::from_millis(10));
    assert!(net.server.stats().retries_sent >= N as u64);
    let live: Vec<_> = net.server.table.iter().map(|(h, _)| h).collect();
    assert_eq!(live.len(), N);
    for h in live {
        let now = net.now;
        net.server.close(now, h, 0, b"").unwrap();
    }
    net.run(Duration::from_secs(10));
    net.server.set_retry_policy(RetryPolicy::Never);
    assert_eq!(footprint(&mut net.server), base_server, "after retries");
    assert_eq!(footprint(&mut net.client), base_client, "after retries");

    // The client moves, then idles out.
    (0..N).for_each(|_| {
        net.connect();
    });
    net.run(Duration::from_millis(200));
    net.client_addr = "192.0.2.1:5001".parse().unwrap();
    let client_hs: Vec<_> = net.client.table.iter().map(|(h, _)| h).collect();
    for h in client_hs {
        net.client.conn(h).unwrap().ping();
    }
    net.run(Duration::from_secs(300));
    assert_eq!(footprint(&mut net.server), base_server, "after migrations");
    assert_eq!(footprint(&mut net.client), base_client, "after migrations");

    // Stateless resets: the server restarts (same key) and resets the client's connections.
    (0..N).for_each(|_| {
        net.connect();
    });
    net.run(Duration::from_millis(200));
    net.server = Endpoint::new(EndpointConfig::with_seed(1), Some(net.server_config.clone()));
    let client_hs: Vec<_> = net.client.table.iter().map(|(h, _)| h).collect();
    for h in client_hs {
        net.client.conn(h).unwrap().ping();
    }
    net.run(Duration::from_secs(300));
    assert!(net.client.stats().stateless_resets_received > 0);
    assert_eq!(footprint(&mut net.client), base_client, "after resets");
}

/// What a connection holds that grows with its history if never pruned.
fn conn_sizes(ep: &Endpoint) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (h, e) in ep.table.iter() {
        let c = &e.conn;
        out.push((format!("{h:?} entry.local_cids"), e.local_cids.len()));
        out.push(("retired_spares".into(), c.retired_spares.len()));
        out.push(("retire_cids".into(), c.retire_cids.len()));
        out.push(("peer_cids".into(), c.peer_cids.len()));
        out.push(("local_cids.active".into(), c.local_cids.active.len()));
        out.push(("local_cids.pending".into(), c.local_cids.pending.len()));
        out.push(("events".into(), c.events.len()));
        out.push(("endpoint_events".into(), c.endpoint_events.len()));
        out.push(("open streams".into(), c.streams.open_streams()));
    }
    out.push(("routes.local".into(), ep.routes.lens()[0]));
    out.push(("routes.reset".into(), ep.routes.lens()[3]));
    out.push(("timers".into(), ep.timers.len()));
    out
}

/// One connection lives long: thousands of NAT rebindings and key updates, each side. What it holds
/// stays the size it was after the first few.
#[test]
fn a_long_life_of_migrations_and_key_updates_holds_no_more() {
    let mut net = Net::new();
    let h = net.connect();
    net.run(Duration::from_millis(100));
    assert!(connected(&net.client_events, h));
    let sh = net.server.table.iter().map(|(h, _)| h).next().unwrap();
    let mut early = None;
    for i in 0..3000u32 {
        net.client_addr = SocketAddr::from(([192, 0, 2, 1], 10_000 + (i % 50_000) as u16));
        net.client.conn(h).unwrap().force_key_update();
        net.client.conn(h).unwrap().ping();
        net.run(Duration::from_millis(300));
        net.server.conn(sh).unwrap().force_key_update();
        net.server.conn(sh).unwrap().ping();
        net.run(Duration::from_millis(300));
        if i == 20 {
            early = Some((conn_sizes(&net.server), conn_sizes(&net.client)));
        }
    }
    let stats = net.server.conn(sh).unwrap().stats();
    assert!(stats.path_migrations >= 2900, "{stats:?}");
    assert!(stats.key_updates >= 2000, "{stats:?}");
    let (es, ec) = early.unwrap();
    let (ls, lc) = (conn_sizes(&net.server), conn_sizes(&net.client));
    assert_eq!(ls, es, "server");
    assert_eq!(lc, ec, "client");
}

/// 20,000 request/response streams on one connection, 50 at a time, some with their own priority, some
/// reset: afterwards the streams state is what it was after the first batches.
#[test]
fn a_long_life_of_streams_holds_no_more() {
    use crate::wire::frame::Dir;
    let mut net = Net::new();
    let h = net.connect();
    net.run(Duration::from_millis(100));
    let sh = net.server.table.iter().map(|(h, _)| h).next().unwrap();
    let mut buf = vec![0u8; 4096];
    let mut snapshot = None;
    let mut total = 0usize;
    for round in 0..400i32 {
        let mut ids = Vec::new();
        for k in 0..50i32 {
            let mut c = net.client.conn(h).unwrap();
            let Some(id) = c.open_bi() else { break };
            let mut s = c.stream(id);
            s.set_priority(round * 50 + k).unwrap();
            s.write(&[7u8; 300]).unwrap();
            if k % 7 == 3 {
                s.reset(1).unwrap();
            } else {
                s.finish().unwrap();
            }
            ids.push(id);
        }
        net.run(Duration::from_millis(50));
        {
            let mut c = net.server.conn(sh).unwrap();
            while let Some(id) = c.accept(Dir::Bi) {
                let mut s = c.stream(id);
                loop {
                    match s.read(&mut buf) {
                        Ok(Some(n)) if n > 0 => continue,
                        _ => break,
                    }
                }
                let _ = s.write(&[9u8; 300]);
                let _ = s.finish();
            }
        }
        net.run(Duration::from_millis(50));
        {
            let mut c = net.client.conn(h).unwrap();
            for id in ids {
                let mut s = c.stream(id);
                loop {
                    match s.read(&mut buf) {
                        Ok(Some(n)) if n > 0 => total += n,
                        _ => break,
                    }
                }
            }
        }
        net.run(Duration::from_millis(200));
        net.client_events.clear();
        net.server_events.clear();
        if round == 10 {
            snapshot = Some((
                net.client.table.get(h).unwrap().conn.streams.sizes(),
                net.server.table.get(sh).unwrap().conn.streams.sizes(),
            ));
        }
    }
    assert!(total > 1_000_000, "{total}");
    let (c0, s0) = snapshot.unwrap();
    let c1 = net.client.table.get(h).unwrap().conn.streams.sizes();
    let s1 = net.server.table.get(sh).unwrap().conn.streams.sizes();
    assert_eq!(c1, c0, "client");
    assert_eq!(s1, s0, "server");
}

/// Connections held and refused, held and retried, held and never answered; Version Negotiation;
/// client connections with zero-length IDs; server connections ended by a stateless reset.
#[test]
fn the_other_ways_out_return_the_endpoints_to_their_baseline() {
    use crate::wire::header::VERSION_2;
    use crate::AcceptPolicy;
    const N: usize = 24;
    let mut net = Net::new();
    let mut held = net.server_config.clone();
    held.accept = AcceptPolicy::Ask;
    net.server = Endpoint::new(EndpointConfig::with_seed(1), Some(held));
    let base_server = footprint(&mut net.server);
    let base_client = footprint(&mut net.client);

    // Held: refused, retried or never answered.
    (0..N).for_each(|_| {
        net.connect();
    });
    net.exchange();
    let hs: Vec<_> = net.server.table.iter().map(|(h, _)| h).collect();
    assert_eq!(hs.len(), N);
    for (i, h) in hs.into_iter().enumerate() {
        let now = net.now;
        match i % 3 {
            0 => net.server.refuse(now, h).unwrap(),
            1 => net.server.retry(now, h).unwrap(),
            _ => {}
        }
    }
    net.run(Duration::from_secs(1));
    // The retried ones came back, held again: leave them.
    net.run(Duration::from_secs(300));
    assert_eq!(footprint(&mut net.server), base_server, "after held connections");
    assert_eq!(footprint(&mut net.client), base_client, "after held connections");

    // Version Negotiation.
    let mut config = EndpointConfig::with_seed(3);
    config.supported_versions = vec![VERSION_2];
    net.client = Endpoint::new(config, None);
    let base_client = footprint(&mut net.client);
    let mut v2 = net.client_config.clone();
    v2.version = VERSION_2;
    for _ in 0..N {
        let now = net.now;
        net.client
            .connect(now, v2.clone(), SERVER.parse().unwrap(), "localhost")
            .unwrap();
    }
    net.run(Duration::from_secs(300));
    assert!(net.server.stats().version_negotiations_sent >= N as u64);
    assert_eq!(
        footprint(&mut net.server),
        base_server,
        "after version negotiation"
    );
    assert_eq!(
        footprint(&mut net.client),
        base_client,
        "after version negotiation"
    );

    // Zero-length client IDs, one connection at a time, closed by the client; the server accepts.
    net.server = Endpoint::new(EndpointConfig::with_seed(1), Some(net.server_config.clone()));
    let mut config = EndpointConfig::with_seed(4);
    config.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
    net.client = Endpoint::new(config, None);
    let base_client = footprint(&mut net.client);
    for _ in 0..N {
        let h = net.connect();
        net.run(Duration::from_millis(50));
        let now = net.now;
        net.client.close(now, h, 0, b"").unwrap();
        net.run(Duration::from_secs(5));
    }
    assert_eq!(
        footprint(&mut net.server),
        base_server,
        "after zero-length client IDs"
    );
    assert_eq!(
        footprint(&mut net.client),
        base_client,
        "after zero-length client IDs"
    );

    // Server connections reset by a client endpoint that restarted with the same key.
    net.client = Endpoint::new(EndpointConfig::with_seed(2), None);
    (0..N).for_each(|_| {
        net.connect();
    });
    net.run(Duration::from_millis(200));
    net.client = Endpoint::new(EndpointConfig::with_seed(2), None);
    let hs: Vec<_> = net.server.table.iter().map(|(h, _)| h).collect();
    for h in hs {
        net.server.conn(h).unwrap().ping();
    }
    net.run(Duration::from_secs(300));
    assert_eq!(footprint(&mut net.server), base_server, "after resets");
}
