//! Unit tests of the simulated links.

use std::time::Duration;

use super::link::{Fate, Link};
use super::*;

use crate::test_util::epoch;

fn delivered_after(fate: Fate) -> Option<Duration> {
    match fate {
        Fate::Delivered { after, .. } => Some(after),
        _ => None,
    }
}

#[test]
fn delay_and_jitter_stay_in_bounds_and_reorder() {
    let config = LinkConfig {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, seed_from_env(1));
    let now = epoch();
    let mut arrivals = Vec::new();
    for i in 0..2000u64 {
        let sent = now + Duration::from_micros(100 * i);
        let after = delivered_after(link.offer(sent, 1200, 0).fate).expect("an ideal link delivers");
        assert!(
            after >= Duration::from_millis(10) && after <= Duration::from_millis(15),
            "{after:?}"
        );
        arrivals.push(sent + after);
    }
    let reordered = arrivals.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(reordered > 0, "jitter larger than the send interval reorders");
    let max = arrivals
        .iter()
        .zip(0..)
        .map(|(a, i)| *a - (now + Duration::from_micros(100 * i)))
        .max();
    assert!(
        max.unwrap() > Duration::from_millis(14),
        "jitter reaches near its bound"
    );
}

#[test]
fn loss_rate_roughly_as_configured() {
    for p in [0.01, 0.1, 0.3] {
        let config = LinkConfig {
            loss: p,
            ..LinkConfig::default()
        };
        let mut link = Link::new(config, seed_from_env(2));
        let n = 20_000;
        let lost = (0..n)
            .filter(|_| link.offer(epoch(), 100, 0).fate == Fate::DroppedLoss)
            .count();
        let rate = lost as f64 / n as f64;
        assert!((rate - p).abs() < p * 0.2 + 0.002, "p {p}: rate {rate}");
    }
}

#[test]
fn gilbert_elliott_loss_is_bursty() {
    let ge = GilbertElliott {
        p_good_to_bad: 0.01,
        p_bad_to_good: 0.2,
        loss_bad: 1.0,
        loss_good: 0.0,
    };
    let config = LinkConfig {
        gilbert_elliott: Some(ge),
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, seed_from_env(3));
    let fates: Vec<bool> = (0..50_000)
        .map(|_| link.offer(epoch(), 100, 0).fate.is_delivered())
        .collect();
    let lost = fates.iter().filter(|d| !**d).count() as f64 / fates.len() as f64;
    // Stationary share of the bad state: 0.01 / (0.01 + 0.2) ≈ 4.8 %.
    assert!((lost - 0.048).abs() < 0.015, "loss {lost}");
    let bursts = fates.windows(2).filter(|w| w[0] && !w[1]).count() as f64;
    let mean_burst = (lost * fates.len() as f64) / bursts;
    assert!(mean_burst > 3.0, "mean burst {mean_burst}: losses come in bursts");
}

#[test]
fn bandwidth_serialises_and_queue_overflows() {
    let config = LinkConfig {
        delay: Duration::from_millis(10),
        bandwidth_bps: Some(1_000_000),
        queue_bytes: 10_000,
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, seed_from_env(4));
    let now = epoch();
    // 8 datagrams of 1000 bytes fit in the queue: the last leaves after 8 * 8 ms.
    let mut last = Duration::ZERO;
    for _ in 0..8 {
        last = delivered_after(link.offer(now, 1000, 0).fate).expect("fits the queue");
    }
    assert_eq!(last, Duration::from_millis(8 * 8 + 10));
    // Two more fit (10 000 bytes), the next is dropped at the tail.
    assert!(link.offer(now, 1000, 0).fate.is_delivered());
    assert!(link.offer(now, 1000, 0).fate.is_delivered());
    assert_eq!(link.offer(now, 1000, 0).fate, Fate::DroppedQueue);
    // Once the queue drains, N bytes take N * 8 / bw plus the delay.
    let later = now + Duration::from_secs(1);
    let after = delivered_after(link.offer(later, 500, 0).fate).expect("empty queue");
    assert_eq!(after, Duration::from_millis(4 + 10));
}

#[test]
fn oversized_datagrams_and_down_links_drop() {
    let config = LinkConfig {
        max_datagram_size: 1200,
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, 5);
    assert!(link.offer(epoch(), 1200, 0).fate.is_delivered());
    assert_eq!(link.offer(epoch(), 1201, 0).fate, Fate::DroppedTooBig);
    link.up = false;
    assert_eq!(link.offer(epoch(), 100, 0).fate, Fate::DroppedLinkDown);
}

#[test]
fn corruption_and_duplication_happen_at_their_rates() {
    let config = LinkConfig {
        corrupt: 0.1,
        duplicate: 0.2,
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, seed_from_env(6));
    let n = 10_000;
    let offers: Vec<_> = (0..n).map(|_| link.offer(epoch(), 100, 0)).collect();
    let flips = offers.iter().filter(|o| o.flip.is_some()).count() as f64 / n as f64;
    let copies = offers.iter().filter(|o| o.copy.is_some()).count() as f64 / n as f64;
    assert!((flips - 0.1).abs() < 0.02, "{flips}");
    assert!((copies - 0.2).abs() < 0.03, "{copies}");
    assert!(offers.iter().filter_map(|o| o.flip).all(|bit| bit < 800));
}

#[test]
fn same_seed_same_link_decisions() {
    let config = LinkConfig {
        loss: 0.2,
        jitter: Duration::from_millis(3),
        duplicate: 0.1,
        ..LinkConfig::default()
    };
    let now = epoch();
    let run = |seed| {
        let mut link = Link::new(config.clone(), seed);
        (0..500).map(|_| link.offer(now, 1000, 0)).collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn trace_hash_is_stable_and_sensitive() {
    let record = |size| TraceRecord::Datagram {
        at: Duration::from_millis(5),
        size,
        from: "10.0.0.1:1".parse().expect("valid address"),
        to: "10.0.0.2:2".parse().expect("valid address"),
        fate: Fate::DroppedLoss,
    };
    let mut a = Trace::new(1);
    let mut b = Trace::new(10);
    for t in [&mut a, &mut b] {
        t.record(record(100));
        t.record(record(200));
    }
    assert_eq!(a.hash(), b.hash(), "the hash covers records beyond the kept ones");
    assert_eq!(a.records().count(), 1);
    assert_eq!(a.total(), 2);
    let mut c = Trace::new(10);
    c.record(record(100));
    c.record(record(201));
    assert_ne!(a.hash(), c.hash());
    let mut d = Trace::new(0);
    d.record(record(100));
    assert_ne!(d.hash(), Trace::new(0).hash());
    assert_eq!(
        d.records().count(),
        0,
        "capacity 0 keeps nothing but still hashes"
    );
}

#[test]
fn wake_ups_and_scheduled_rebinding_reach_the_app() {
    #[derive(Default)]
    struct Ticker {
        wakes: Vec<Duration>,
        addrs: Vec<SocketAddr>,
    }
    impl App for Ticker {
        fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
            ctx.wake_after(Duration::from_millis(100));
        }
        fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
            self.wakes.push(ctx.elapsed());
            self.addrs.push(ctx.addr());
            if self.wakes.len() < 3 {
                ctx.wake_after(Duration::from_millis(100));
            }
        }
    }
    let mut sim = Simulation::new(epoch(), 1);
    let node = sim.add_node(
        "10.0.0.1:1".parse().expect("valid"),
        None,
        Box::<Ticker>::default(),
    );
    let new_addr: SocketAddr = "10.0.0.1:2".parse().expect("valid");
    sim.schedule_rebind(node, Duration::from_millis(150), new_addr);
    sim.run(Duration::from_secs(1));
    let t = sim.app::<Ticker>(node).expect("a ticker");
    let ms = |n| Duration::from_millis(n);
    assert_eq!(t.wakes, vec![ms(100), ms(200), ms(300)]);
    assert_eq!(t.addrs.get(1), Some(&new_addr));
    assert_eq!(
        sim.elapsed(),
        ms(300),
        "the clock stops when nothing is left to happen"
    );
}

/// A toy engine: at the start it sends `count` datagrams of 100 bytes to `peer`, one every 10 ms (or,
/// each time, a burst of `burst` sizes, the `i`th datagram of a burst filled with `7 + i`); with
/// `count` 0 it echoes every datagram it receives. It reports each arrival as an event.
struct Echo {
    peer: SocketAddr,
    count: usize,
    echo: bool,
    next_send: Option<Instant>,
    out: Vec<(SocketAddr, BytesMut)>,
    arrivals: Vec<(Duration, SocketAddr, usize)>,
    /// The first byte of each arrival.
    firsts: Vec<u8>,
    burst: Vec<usize>,
    unreported: usize,
    seed: u64,
    /// A log shared between engines, with this one's name: each arrival adds the name.
    log: Option<(std::rc::Rc<std::cell::RefCell<Vec<u8>>>, u8)>,
}

impl Echo {
    fn new(peer: SocketAddr, count: usize, seed: u64) -> Self {
        Self {
            peer,
            count,
            echo: count == 0,
            next_send: None,
            out: Vec::new(),
            arrivals: Vec::new(),
            firsts: Vec::new(),
            burst: vec![100],
            unreported: 0,
            seed,
            log: None,
        }
    }
}

impl Engine for Echo {
    fn start(&mut self, ctx: &EngineCtx) {
        if self.count > 0 {
            self.next_send = Some(ctx.now);
        }
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        let _ = now;
        self.arrivals.push((Duration::ZERO, from, payload.len()));
        self.firsts.extend(payload.first());
        self.unreported += 1;
        if let Some((log, name)) = &self.log {
            log.borrow_mut().push(*name);
        }
        if self.echo {
            self.out.push((from, payload));
        }
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_send
    }
    fn handle_timeout(&mut self, ctx: &EngineCtx) {
        if self.next_send.is_some_and(|t| t <= ctx.now) {
            // `poll_transmit` takes from the end: pushed last to first.
            for (i, &size) in self.burst.iter().enumerate().rev() {
                let fill = 7u8.wrapping_add(i as u8);
                self.out.push((self.peer, BytesMut::from(&vec![fill; size][..])));
            }
            self.count -= 1;
            self.next_send = (self.count > 0).then(|| ctx.now + Duration::from_millis(10));
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<crate::Transmit> {
        let _ = now;
        let (destination, payload) = self.out.pop()?;
        buf.clear();
        buf.extend_from_slice(&payload);
        Some(crate::Transmit {
            destination,
            src_ip: None,
            ecn: None,
            size: payload.len(),
            segment_size: None,
        })
    }
    fn poll_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn std::fmt::Debug, &dyn std::fmt::Debug),
    ) -> bool {
        let n = std::mem::take(&mut self.unreported);
        let first = self.arrivals.len() - n;
        for a in self.arrivals.iter_mut().skip(first) {
            a.0 = ctx.elapsed();
            report(&ctx.node, &"arrival");
        }
        n > 0
    }
}

#[test]
fn other_engines_run_as_nodes_with_derived_seeds() {
    let a_addr: SocketAddr = "10.0.0.1:1".parse().expect("valid");
    let b_addr: SocketAddr = "10.0.0.2:2".parse().expect("valid");
    let run = |seed| {
        let mut sim = Simulation::new(epoch(), seed);
        let a = sim.add_engine(a_addr, |seed| Box::new(Echo::new(b_addr, 3, seed)));
        let b = sim.add_engine(b_addr, |seed| Box::new(Echo::new(a_addr, 0, seed)));
        sim.add_duplex_link(a, b, LinkConfig::with_delay(Duration::from_millis(5)));
        sim.run(Duration::from_secs(1));
        assert!(sim.endpoint(a).is_none() && sim.app::<NoApp>(a).is_none());
        let ea = sim.engine::<Echo>(a).expect("an echo engine");
        let eb = sim.engine::<Echo>(b).expect("an echo engine");
        assert_ne!(ea.seed, eb.seed, "each node gets its own seed");
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            eb.arrivals,
            vec![(ms(5), a_addr, 100), (ms(15), a_addr, 100), (ms(25), a_addr, 100)]
        );
        assert_eq!(
            ea.arrivals,
            vec![
                (ms(10), b_addr, 100),
                (ms(20), b_addr, 100),
                (ms(30), b_addr, 100)
            ]
        );
        let events = sim
            .trace()
            .records()
            .filter(|r| matches!(r, TraceRecord::Event { event, .. } if event == "\"arrival\""))
            .count();
        assert_eq!((sim.trace().delivered, events), (6, 6));
        (ea.seed, sim.trace().hash())
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3).0, run(4).0);
}

fn echo_pair(link: LinkConfig, count: usize) -> (Simulation, NodeId) {
    let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:2".parse().unwrap();
    let mut sim = Simulation::new(epoch(), 1);
    let na = sim.add_engine(a, |s| Box::new(Echo::new(b, count, s)));
    let nb = sim.add_engine(b, |s| Box::new(Echo::new(a, 0, s)));
    sim.add_link(na, nb, link);
    (sim, nb)
}

#[test]
fn a_link_of_zero_bandwidth_carries_nothing() {
    let config = LinkConfig {
        bandwidth_bps: Some(0),
        ..LinkConfig::default()
    };
    let mut link = Link::new(config, 1);
    assert_eq!(link.offer(epoch(), 1200, 0).fate, Fate::DroppedQueue);
}

#[test]
fn durations_too_long_for_the_clock_do_not_panic() {
    let (mut sim, _) = echo_pair(LinkConfig::default(), 1);
    sim.run(Duration::MAX);
    let (mut sim, _) = echo_pair(LinkConfig::with_delay(Duration::MAX), 1);
    sim.run(Duration::from_secs(1));
    let slow = LinkConfig {
        bandwidth_bps: Some(1),
        queue_bytes: usize::MAX,
        delay: Duration::MAX,
        ..LinkConfig::default()
    };
    let (mut sim, nb) = echo_pair(slow, 3);
    sim.schedule_rebind(nb, Duration::MAX, "10.0.0.2:3".parse().unwrap());
    sim.run(Duration::from_secs(1));
}

/// The simulator's rule (docs/simulation.md): after a rebinding, datagrams to the old address find
/// no node, also those already on the way.
#[test]
fn datagrams_on_the_way_to_an_address_left_are_not_delivered() {
    let (mut sim, nb) = echo_pair(LinkConfig::with_delay(Duration::from_millis(5)), 3);
    sim.schedule_rebind(nb, Duration::from_millis(12), "10.0.0.2:3".parse().unwrap());
    sim.run(Duration::from_secs(1));
    let at: Vec<_> = sim
        .engine::<Echo>(nb)
        .unwrap()
        .arrivals
        .iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(at, [Duration::from_millis(5)]);
}

/// An app that asks to be woken at the current instant again and again cannot hold the clock: after
/// the drain bound the clock moves on by a tick, and the run reaches its limit.
#[test]
fn a_node_busy_at_one_instant_does_not_hold_the_clock() {
    struct Busy;
    impl App for Busy {
        fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
            let t = ctx.now();
            ctx.wake_at(t);
        }
        fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
            let t = ctx.now();
            ctx.wake_at(t);
        }
    }
    let mut sim = Simulation::new(epoch(), 1);
    sim.add_node("10.0.0.1:1".parse().unwrap(), None, Box::new(Busy));
    sim.run(Duration::from_millis(50));
    assert_eq!(sim.now(), epoch() + Duration::from_millis(50));
}

/// Two engines that echo each other's datagram over links without delay would pass it back and forth
/// for ever at one instant, one step per pass, each node going quiet after its own round: the clock
/// must still move on, so that a run reaches its limit.
#[test]
fn a_ping_pong_without_delay_does_not_hold_the_clock() {
    let a: SocketAddr = "10.0.0.1:1".parse().expect("valid");
    let b: SocketAddr = "10.0.0.2:2".parse().expect("valid");
    let mut sim = Simulation::new(epoch(), 1);
    let na = sim.add_engine(a, |s| {
        let mut e = Echo::new(b, 1, s);
        e.echo = true;
        Box::new(e)
    });
    let nb = sim.add_engine(b, |s| Box::new(Echo::new(a, 0, s)));
    sim.add_duplex_link(na, nb, LinkConfig::default());
    // Beside them, datagrams every 10 ms over a link of 0.5 ms arrive on time all the same.
    let c: SocketAddr = "10.0.0.3:3".parse().expect("valid");
    let d: SocketAddr = "10.0.0.4:4".parse().expect("valid");
    let nc = sim.add_engine(c, |s| Box::new(Echo::new(d, 3, s)));
    let nd = sim.add_engine(d, |s| Box::new(Echo::new(c, 0, s)));
    sim.add_link(nc, nd, LinkConfig::with_delay(Duration::from_micros(500)));
    let deadline = epoch() + Duration::from_millis(50);
    let mut steps = 0u64;
    while sim.step_before(Some(deadline)) {
        steps += 1;
        assert!(
            steps < 1_000_000,
            "a million steps, the clock still at {:?}",
            sim.elapsed()
        );
    }
    assert_eq!(sim.now(), deadline);
    let echoes = sim.engine::<Echo>(nb).expect("an echo engine").arrivals.len();
    assert!(echoes > 1000, "the exchange goes on as the clock moves: {echoes}");
    let at: Vec<_> = sim
        .engine::<Echo>(nd)
        .expect("an echo engine")
        .arrivals
        .iter()
        .map(|a| a.0)
        .collect();
    let us = Duration::from_micros;
    assert_eq!(at, [us(500), us(10_500), us(20_500)]);
}

#[test]
fn a_blackout_ending_past_the_clock_does_not_panic() {
    let (mut sim, nb) = echo_pair(LinkConfig::default(), 1);
    sim.schedule_blackout(NodeId(0), nb, Duration::MAX, Duration::from_secs(1));
    sim.run(Duration::from_secs(1));
}

/// A node that re-arms a wake-up at the current instant a few times, more than one step's drain bound
/// allows, is served at that instant (the clock moves on only for a node busy step after step).
#[test]
fn a_node_rearming_a_few_times_is_not_delayed() {
    struct Rearm(Vec<Instant>);
    impl App for Rearm {
        fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
            let t = ctx.now();
            ctx.wake_at(t);
        }
        fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
            self.0.push(ctx.now());
            if self.0.len() < 3 {
                let t = ctx.now();
                ctx.wake_at(t);
            }
        }
    }
    let limits = Limits {
        max_drain_rounds: 2,
        ..Limits::default()
    };
    let mut sim = Simulation::with_limits(epoch(), 1, limits);
    let n = sim.add_node("10.0.0.1:1".parse().unwrap(), None, Box::new(Rearm(Vec::new())));
    sim.run(Duration::from_millis(50));
    assert_eq!(sim.app::<Rearm>(n).unwrap().0, [epoch(); 3]);
}

/// `Trace::corrupted` counts corrupted datagrams still delivered: one that found no node because its
/// destination moved on the way is no longer counted there.
#[test]
fn an_undelivered_corrupted_datagram_is_not_counted_corrupted() {
    let link = LinkConfig {
        corrupt: 1.0,
        ..LinkConfig::with_delay(Duration::from_millis(5))
    };
    let (mut sim, nb) = echo_pair(link, 3);
    sim.schedule_rebind(nb, Duration::from_millis(12), "10.0.0.2:3".parse().unwrap());
    sim.run(Duration::from_secs(1));
    let t = sim.trace();
    assert!(
        t.corrupted <= t.delivered,
        "corrupted {} > delivered {} (dropped {})",
        t.corrupted,
        t.delivered,
        t.dropped
    );
}

#[test]
fn links_carry_clear_or_mark_the_ecn_field() {
    let ect0 = EcnCodepoint::Ect0.bits();
    let mut carry = Link::new(LinkConfig::default(), 1);
    assert_eq!(carry.offer(epoch(), 1000, ect0).ecn, ect0);
    assert_eq!(carry.offer(epoch(), 1000, 0).ecn, 0);
    let mut clear = Link::new(
        LinkConfig {
            ecn: LinkEcn::Clear,
            ..LinkConfig::default()
        },
        1,
    );
    assert_eq!(clear.offer(epoch(), 1000, ect0).ecn, 0);
    // 1 Mbit/s: a 1000-byte datagram takes 8 ms. Marked CE once more than 2500 bytes wait.
    let mut mark = Link::new(
        LinkConfig {
            bandwidth_bps: Some(1_000_000),
            queue_bytes: 10_000,
            ecn: LinkEcn::MarkAbove { above: 2500 },
            ..LinkConfig::default()
        },
        1,
    );
    let now = epoch();
    let got: Vec<u8> = (0..5).map(|_| mark.offer(now, 1000, ect0).ecn).collect();
    let ce = EcnCodepoint::Ce.bits();
    assert_eq!(got, [ect0, ect0, ect0, ce, ce]);
    // Not-ECT datagrams are never marked (RFC 3168 §5): they would be dropped by a real AQM instead.
    assert_eq!(mark.offer(now, 1000, 0).ecn, 0);
    // Once the queue drained, no mark.
    assert_eq!(mark.offer(now + Duration::from_secs(1), 1000, ect0).ecn, ect0);
}

/// Two echo engines over links with jitter, loss, duplication and corruption, one of them rebound
/// mid-run (datagrams on the way to its old address find no node), with batching as asked.
fn echo_run(batching: bool) -> Trace {
    let link = LinkConfig {
        jitter: Duration::from_millis(8),
        loss: 0.1,
        duplicate: 0.1,
        corrupt: 0.05,
        ..LinkConfig::with_delay(Duration::from_millis(5))
    };
    let (mut sim, nb) = echo_pair(link.clone(), 40);
    sim.set_batching(batching);
    sim.add_link(nb, NodeId(0), link);
    sim.schedule_rebind(
        nb,
        Duration::from_millis(203),
        "10.0.0.2:3".parse().expect("valid"),
    );
    sim.run(Duration::from_secs(2));
    sim.trace().clone()
}

/// Batching is off by default, and off the simulator hands datagrams over as it always did: the trace of
/// [`echo_run`] is the one it had before batching came in (no quicsand endpoint takes part, so engine
/// changes do not move it).
#[test]
fn without_batching_the_trace_is_as_before() {
    assert!(!Simulation::new(epoch(), 1).batching());
    let t = echo_run(false);
    assert_eq!(t.hash(), 0xb410_e978_5c25_1833, "{:#x}", t.hash());
    assert_eq!((t.total(), t.delivered, t.dropped, t.corrupted), (88, 30, 27, 3));
    assert_eq!((t.batches, t.batched), (0, 0));
}

/// With batching on, datagrams on the way to an address their node left find no node, and the trace
/// records them as it does without batching: bursts of four sent every 10 ms over a 5 ms link without
/// jitter, the receiver moving at 15 ms, the instant the second burst arrives (actions go first).
#[test]
fn with_batching_datagrams_to_an_address_left_are_recorded_as_before() {
    let run = |batching: bool| {
        let (mut sim, nb) = echo_pair(LinkConfig::with_delay(Duration::from_millis(5)), 3);
        sim.set_batching(batching);
        sim.engine_mut::<Echo>(NodeId(0)).expect("an echo engine").burst = vec![100; 4];
        sim.add_link(nb, NodeId(0), LinkConfig::with_delay(Duration::from_millis(5)));
        sim.schedule_rebind(
            nb,
            Duration::from_millis(15),
            "10.0.0.2:3".parse().expect("valid"),
        );
        sim.run(Duration::from_secs(1));
        let arrivals = sim.engine::<Echo>(nb).expect("an echo engine").arrivals.clone();
        (arrivals, sim.trace().clone())
    };
    let ((arrivals_off, off), (arrivals_on, on)) = (run(false), run(true));
    let undelivered = |t: &Trace| {
        t.records()
            .filter(|r| {
                matches!(
                    r,
                    TraceRecord::Datagram {
                        fate: Fate::DroppedNoRoute,
                        ..
                    }
                )
            })
            .count()
    };
    // The first burst arrives in one batch, and its echo goes back in another; the other two bursts
    // find no node.
    assert_eq!((on.batches, on.batched), (2, 8));
    assert_eq!((undelivered(&on), undelivered(&off)), (8, 8));
    assert_eq!(arrivals_on, arrivals_off);
    assert_eq!(arrivals_on.len(), 4);
    assert_eq!(on.hash(), off.hash());
}

/// Nodes may share state (one TLS randomness source for all, say), so the order in which nodes get
/// their datagrams matters, not only each node's own order: with batching on, datagrams that form no
/// batch go to their nodes exactly in the order they would with batching off.
#[test]
fn with_batching_lone_datagrams_reach_nodes_in_the_order_of_arrival() {
    let run = |batching: bool| {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let a: SocketAddr = "10.0.0.1:1".parse().expect("valid");
        let b: SocketAddr = "10.0.0.2:2".parse().expect("valid");
        let mut sim = Simulation::new(epoch(), 1);
        sim.set_batching(batching);
        let (la, lb) = (log.clone(), log.clone());
        let na = sim.add_engine(a, move |s| {
            let mut e = Echo::new(b, 1, s);
            e.log = Some((la, 0));
            Box::new(e)
        });
        let nb = sim.add_engine(b, move |s| {
            let mut e = Echo::new(a, 1, s);
            e.log = Some((lb, 1));
            Box::new(e)
        });
        sim.add_duplex_link(na, nb, LinkConfig::with_delay(Duration::from_millis(5)));
        sim.run(Duration::from_secs(1));
        let order = log.borrow().clone();
        (order, sim.trace().batches)
    };
    let (off, on) = (run(false), run(true));
    assert_eq!(on.1, 0, "lone datagrams form no batch");
    // Node 0 sends first, so node 1's datagram arrives first.
    assert_eq!(off.0, [1, 0]);
    assert_eq!(on.0, off.0);
}

/// A batch holds the datagrams of one source: bursts of equal sizes from two nodes, arriving at a third
/// at the same instant, go in two batches, each from its own address.
#[test]
fn with_batching_bursts_from_two_sources_go_in_a_batch_each() {
    let run = |batching: bool| {
        let (a, c, b): (SocketAddr, SocketAddr, SocketAddr) = (
            "10.0.0.1:1".parse().expect("valid"),
            "10.0.0.3:3".parse().expect("valid"),
            "10.0.0.2:2".parse().expect("valid"),
        );
        let mut sim = Simulation::new(epoch(), 1);
        sim.set_batching(batching);
        let na = sim.add_engine(a, |s| Box::new(Echo::new(b, 2, s)));
        let nc = sim.add_engine(c, |s| Box::new(Echo::new(b, 2, s)));
        let nb = sim.add_engine(b, |s| Box::new(Echo::new(a, 0, s)));
        for n in [na, nc] {
            sim.engine_mut::<Echo>(n).expect("an echo engine").burst = vec![100; 3];
            sim.add_link(n, nb, LinkConfig::with_delay(Duration::from_millis(5)));
        }
        sim.run(Duration::from_secs(1));
        let arrivals = sim.engine::<Echo>(nb).expect("an echo engine").arrivals.clone();
        (arrivals, sim.trace().clone())
    };
    let ((arrivals_off, off), (arrivals_on, on)) = (run(false), run(true));
    assert_eq!(arrivals_on.len(), 12);
    assert_eq!(
        arrivals_on, arrivals_off,
        "each datagram with its own source, in order"
    );
    assert_eq!((on.batches, on.batched), (4, 12));
    assert_eq!(on.hash(), off.hash());
}

/// Bursts of `burst` sent three times 10 ms apart over a 5 ms link without jitter, with batching on or
/// off: what the receiving echo engine saw (arrivals, their first bytes) and the trace.
fn echo_bursts(burst: &[usize], batching: bool) -> (Vec<(Duration, SocketAddr, usize)>, Vec<u8>, Trace) {
    let (mut sim, nb) = echo_pair(LinkConfig::with_delay(Duration::from_millis(5)), 3);
    sim.set_batching(batching);
    sim.engine_mut::<Echo>(NodeId(0)).expect("an echo engine").burst = burst.to_vec();
    sim.run(Duration::from_secs(1));
    let echo = sim.engine::<Echo>(nb).expect("an echo engine");
    (echo.arrivals.clone(), echo.firsts.clone(), sim.trace().clone())
}

/// An engine that takes no batches (the default `Engine::handle_batch`) gets a batch datagram by
/// datagram, in order, as with batching off, and the trace is the same; runs of equal sizes (the last
/// may be shorter) are batched, and a datagram larger than the run's size starts a new one.
#[test]
fn an_engine_without_batches_gets_them_datagram_by_datagram() {
    let burst = [100, 100, 100, 40, 100, 100, 120];
    let (arrivals, firsts, off) = echo_bursts(&burst, false);
    let (arrivals_on, firsts_on, on) = echo_bursts(&burst, true);
    assert_eq!(arrivals.len(), 3 * burst.len());
    assert_eq!(arrivals_on, arrivals);
    assert_eq!(firsts_on, firsts);
    assert_eq!(&firsts[..burst.len()], [7, 8, 9, 10, 11, 12, 13]);
    assert_eq!(on.hash(), off.hash());
    assert_eq!((off.batches, off.batched), (0, 0));
    // Each burst: 100, 100, 100, 40 in one batch, 100, 100 in another, 120 alone.
    assert_eq!((on.batches, on.batched), (6, 18));
}

/// A batch ends at 64 datagrams, and before it would pass 64 KiB.
#[test]
fn batches_end_at_64_datagrams_or_64_kib() {
    let (.., t) = echo_bursts(&[100; 65], true);
    assert_eq!(
        (t.batches, t.batched),
        (3, 3 * 64),
        "the 65th datagram comes alone"
    );
    let (.., t) = echo_bursts(&[1400; 47], true);
    assert_eq!(
        (t.batches, t.batched),
        (3, 3 * 46),
        "46 datagrams of 1400 bytes fit in 64 KiB"
    );
}

/// The fuzz harness's certificate (Ed25519, for "localhost").
const CERT: &[u8] = include_bytes!("../fuzzing/cert.der");
const KEY: &[u8] = include_bytes!("../fuzzing/key.der");

/// A quicsand client sending `total` bytes on two streams to a quicsand server over a duplex `link`,
/// with batching on or off; returns the simulation, the server and whether the transfer completed.
fn transfer(seed: u64, batching: bool, link: LinkConfig, total: u64) -> (Simulation, NodeId, bool) {
    transfer_from(epoch(), seed, batching, link, total)
}

/// [`transfer`] with virtual time starting at `epoch`.
fn transfer_from(
    epoch: Instant,
    seed: u64,
    batching: bool,
    link: LinkConfig,
    total: u64,
) -> (Simulation, NodeId, bool) {
    let (server_tls, client_tls) = sim_tls(seed);
    let mut sim = Simulation::new(epoch, seed);
    sim.set_batching(batching);
    let server_addr = "10.0.0.2:4433".parse().expect("valid");
    let server = sim.add_node(
        server_addr,
        Some(crate::ServerConfig::new(server_tls)),
        Box::new(Sink::default()),
    );
    let sender = BulkSender::new(
        crate::ClientConfig::new(client_tls),
        server_addr,
        "localhost",
        total,
        2,
    );
    let client = sim.add_node("10.0.0.1:50000".parse().expect("valid"), None, Box::new(sender));
    sim.add_duplex_link(client, server, link);
    let done = sim.run_until(Duration::from_secs(60), |sim| {
        sim.app::<Sink>(server)
            .is_some_and(|s| s.total_bytes() == total && s.finished_streams() == 2)
    });
    (sim, server, done)
}

/// The TLS configurations of a simulated transfer's server and client (the embedded certificate, ALPN
/// `sim`, TLS randomness from `seed`).
fn sim_tls(
    seed: u64,
) -> (
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let cert = CertificateDer::from(CERT.to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY.to_vec()));
    let alpn = vec![b"sim".to_vec()];
    let options = deterministic_tls(seed);
    let server_tls = crate::crypto::tls::server_config_with(vec![cert.clone()], key, alpn.clone(), &options)
        .expect("the embedded certificate and key belong together");
    let client_tls = crate::crypto::tls::client_config_with(vec![cert], alpn, &options)
        .expect("the embedded certificate is a valid root");
    (server_tls, client_tls)
}

/// An endpoint node that notes the most datagrams it put in one transmit.
struct CountingSegments {
    inner: EndpointNode,
    most: std::rc::Rc<std::cell::Cell<usize>>,
}

impl Engine for CountingSegments {
    fn start(&mut self, ctx: &EngineCtx) {
        self.inner.start(ctx);
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        self.inner.handle_datagram(now, from, payload);
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn handle_timeout(&mut self, ctx: &EngineCtx) {
        self.inner.handle_timeout(ctx);
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<crate::Transmit> {
        let t = self.inner.poll_transmit(now, buf)?;
        let datagrams = t.segment_size.map_or(1, |s| t.size.div_ceil(s));
        self.most.set(self.most.get().max(datagrams));
        Some(t)
    }
    fn poll_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn std::fmt::Debug, &dyn std::fmt::Debug),
    ) -> bool {
        self.inner.poll_events(ctx, report)
    }
}

/// `EndpointConfig::max_segments` (64 by default) bounds how many datagrams share a transmit, not how
/// many leave at once: pacing does (RFC 9002 §7.7). Over a 20 Mbit/s bottleneck the pacer's bucket is
/// the initial window (12,000 bytes: 10 datagrams of 1200 bytes), and no transmit of a 2 MB transfer
/// holds more; on a path without a bottleneck the window and the rate grow, and transmits take many
/// more datagrams up to the limit.
#[test]
fn transmits_are_as_large_as_pacing_lets_them_be() {
    let seed = seed_from_env(14);
    let total = 2_000_000;
    let run = |bandwidth_bps: Option<u64>| {
        let (server_tls, client_tls) = sim_tls(seed);
        let mut sim = Simulation::new(epoch(), seed);
        let server_addr = "10.0.0.2:4433".parse().expect("valid");
        let server = sim.add_node(
            server_addr,
            Some(crate::ServerConfig::new(server_tls)),
            Box::new(Sink::default()),
        );
        let most = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = most.clone();
        let client = sim.add_engine("10.0.0.1:50000".parse().expect("valid"), move |node_seed| {
            let config = EndpointConfig::with_seed(node_seed);
            assert_eq!(config.max_segments, 64, "the default");
            let sender = BulkSender::new(
                crate::ClientConfig::new(client_tls),
                server_addr,
                "localhost",
                total,
                1,
            );
            Box::new(CountingSegments {
                inner: EndpointNode::new(Endpoint::new(config, None), Box::new(sender)),
                most: counted,
            })
        });
        let link = LinkConfig {
            bandwidth_bps,
            // PMTUD off the path: every datagram the client sends is at most 1200 bytes.
            max_datagram_size: 1200,
            ..LinkConfig::with_delay(Duration::from_millis(20))
        };
        sim.add_duplex_link(client, server, link);
        let done = sim.run_until(Duration::from_secs(60), |sim| {
            sim.app::<Sink>(server).is_some_and(|s| s.total_bytes() == total)
        });
        assert!(
            done,
            "seed {seed}, {bandwidth_bps:?} bit/s: the transfer did not complete"
        );
        most.get()
    };
    let paced = run(Some(20_000_000));
    assert!(
        (2..=10).contains(&paced),
        "seed {seed}: {paced} datagrams in one transmit over 20 Mbit/s"
    );
    let unlimited = run(None);
    assert!(
        unlimited > 20,
        "seed {seed}: at most {unlimited} datagrams in a transmit without a bottleneck"
    );
}

/// Buffers a node's endpoint took through `Endpoint::handle_batch`.
fn endpoint_batches(sim: &Simulation, node: NodeId) -> u64 {
    sim.nodes
        .get(node.0)
        .and_then(Node::endpoint_node)
        .map_or(0, |n| n.batches)
}

/// A link that delivers a burst together: no bandwidth limit, no jitter; some loss.
fn bursty_link() -> LinkConfig {
    LinkConfig {
        loss: 0.01,
        ..LinkConfig::with_delay(Duration::from_millis(10))
    }
}

/// With batching on, a transfer completes byte for byte, and the endpoints took datagrams in batches
/// through `Endpoint::handle_batch`.
#[test]
fn a_transfer_with_batching_arrives_intact() {
    let seed = seed_from_env(11);
    let total = 300_000;
    let (sim, server, done) = transfer(seed, true, bursty_link(), total);
    let sink = sim.app::<Sink>(server).expect("a sink");
    assert!(done, "seed {seed}: {} of {total} bytes", sink.total_bytes());
    assert_eq!(sink.total_bytes(), total);
    assert!(
        sink.streams.values().all(|s| s.pattern_ok),
        "seed {seed}: bytes differ"
    );
    let t = sim.trace();
    let taken: u64 = (0..2).map(|i| endpoint_batches(&sim, NodeId(i))).sum();
    assert!(
        endpoint_batches(&sim, server) > 0,
        "seed {seed}: the server took no batch"
    );
    assert_eq!(taken, t.batches, "seed {seed}: every batch went to an endpoint");
    assert!(
        t.batched > 2 * t.batches,
        "seed {seed}: {} datagrams in {} batches",
        t.batched,
        t.batches
    );
}

/// With batching on, the same seed gives the same trace; and since a batch is handled as its datagrams
/// one by one would be, the trace is the one of the run without batching.
#[test]
fn a_transfer_with_batching_repeats_with_the_seed() {
    let seed = seed_from_env(12);
    let link = LinkConfig {
        reorder: 0.05,
        duplicate: 0.02,
        ..bursty_link()
    };
    let run = |batching| {
        let (sim, _, done) = transfer(seed, batching, link.clone(), 200_000);
        assert!(done, "seed {seed}: the transfer did not complete");
        (sim.trace().hash(), sim.trace().batches)
    };
    let (hash, batches) = run(true);
    assert!(batches > 0, "seed {seed}: no batch");
    assert_eq!(run(true), (hash, batches), "seed {seed}: the replay differs");
    assert_eq!(run(false), (hash, 0), "seed {seed}: batching changed the trace");
}

/// RFC 9000 §13.2.1: "An endpoint MUST NOT send a non-ack-eliciting packet in response to a
/// non-ack-eliciting packet". Over transfers like the demo's (100 Mbit/s, 50 ms, a queue of one
/// bandwidth-delay product, where the receive windows hold the sender back now and then), with loss
/// and with reordering, neither endpoint sends a packet of ACK frames only while no ack-eliciting
/// packet waits for acknowledgement. Before session 26 every write of the sending application to a
/// stream waiting for credit sent one (`conn::streams::Streams::schedule_written`); and a stream queued
/// for data that was gone when its packet was built (acknowledged after all, with the stream at the
/// peer's limit) left a packet with only its ACK frame, which `build_packet` now drops (found with
/// send buffers of four times the window, where the clean run sent one).
#[test]
fn no_ack_only_packet_answers_only_ack_only_packets() {
    let path = LinkConfig {
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 625_000,
        ..LinkConfig::with_delay(Duration::from_millis(25))
    };
    let cases = [
        ("clean", path.clone()),
        (
            "1% loss",
            LinkConfig {
                loss: 0.01,
                ..path.clone()
            },
        ),
        (
            "5% reordered",
            LinkConfig {
                reorder: 0.05,
                reorder_delay: Duration::from_millis(12),
                ..path
            },
        ),
    ];
    for (name, link) in cases {
        let seed = seed_from_env(21);
        crate::conn::unprompted::take();
        let total = 4_000_000;
        let (sim, server, done) = transfer(seed, false, link, total);
        let received = sim.app::<Sink>(server).map_or(0, Sink::total_bytes);
        assert!(done, "{name}, seed {seed}: {received} of {total} bytes");
        assert_eq!(
            crate::conn::unprompted::take(),
            0,
            "{name}, seed {seed}: ACK-only packets sent with no ack-eliciting packet to acknowledge"
        );
    }
}

/// The epoch is only the origin of virtual time: the same seed gives the same trace whatever instant
/// the caller passes (a test process reads its epoch from the real clock, so this is what makes a
/// failing seed replay in another process), over a link with every random impairment.
#[test]
fn the_trace_does_not_depend_on_the_epoch() {
    let seed = seed_from_env(13);
    let link = LinkConfig {
        loss: 0.02,
        jitter: Duration::from_millis(3),
        reorder: 0.05,
        reorder_delay: Duration::from_millis(7),
        duplicate: 0.02,
        corrupt: 0.01,
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 40_000,
        ..LinkConfig::with_delay(Duration::from_millis(10))
    };
    let run = |epoch: Instant| {
        let (sim, _, done) = transfer_from(epoch, seed, false, link.clone(), 300_000);
        assert!(done, "seed {seed}: the transfer did not complete");
        (sim.trace().hash(), sim.trace().total(), sim.elapsed())
    };
    let first = run(epoch());
    let later = epoch() + Duration::from_secs(86_400 * 400) + Duration::from_nanos(123_457);
    assert_eq!(run(later), first, "seed {seed}");
}

/// An app that installs a qlog sink on each connection of its node as soon as it can (the client's at
/// the start, the server's at its first event), then does what `inner` does.
#[cfg(feature = "qlog")]
struct Traced {
    inner: Box<dyn App>,
    sink: std::sync::mpsc::Sender<Vec<u8>>,
    traced: Vec<ConnectionHandle>,
}

#[cfg(feature = "qlog")]
impl Traced {
    fn trace(&mut self, ctx: &mut NodeCtx<'_>, h: ConnectionHandle) {
        if self.traced.contains(&h) {
            return;
        }
        self.traced.push(h);
        if let Ok(mut conn) = ctx.endpoint().conn(h) {
            conn.set_qlog(Box::new(self.sink.clone()));
        }
    }

    fn inner<T: App + 'static>(&self) -> Option<&T> {
        (*self.inner).as_any().downcast_ref()
    }
}

#[cfg(feature = "qlog")]
impl App for Traced {
    fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
        self.inner.on_start(ctx);
        if let Some(h) = self.inner::<BulkSender>().and_then(BulkSender::connection) {
            self.trace(ctx, h);
        }
    }
    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        self.trace(ctx, handle);
        self.inner.on_event(ctx, handle, event);
    }
    fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
        self.inner.on_wake(ctx);
    }
}

/// qlog only watches: a transfer with loss and reordering gives the same trace (datagram sizes, times,
/// fates, events) with a qlog sink on both connections as without one, for the same seed.
#[cfg(feature = "qlog")]
#[test]
fn qlog_does_not_change_the_trace() {
    let seed = seed_from_env(13);
    let total = 200_000;
    let run = |qlog: bool| {
        let (server_tls, client_tls) = sim_tls(seed);
        let (tx, rx) = std::sync::mpsc::channel();
        let wrap = |app: Box<dyn App>| -> Box<dyn App> {
            if qlog {
                Box::new(Traced {
                    inner: app,
                    sink: tx.clone(),
                    traced: Vec::new(),
                })
            } else {
                app
            }
        };
        let mut sim = Simulation::new(epoch(), seed);
        let server_addr = "10.0.0.2:4433".parse().unwrap();
        let server = sim.add_node(
            server_addr,
            Some(crate::ServerConfig::new(server_tls)),
            wrap(Box::<Sink>::default()),
        );
        let sender = BulkSender::new(
            crate::ClientConfig::new(client_tls),
            server_addr,
            "localhost",
            total,
            2,
        );
        let client = sim.add_node("10.0.0.1:50000".parse().unwrap(), None, wrap(Box::new(sender)));
        let link = LinkConfig {
            reorder: 0.05,
            duplicate: 0.02,
            ..bursty_link()
        };
        sim.add_duplex_link(client, server, link);
        let done = sim.run_until(Duration::from_secs(60), |sim| {
            let sink = match sim.app::<Traced>(server) {
                Some(t) => t.inner::<Sink>(),
                None => sim.app::<Sink>(server),
            };
            sink.is_some_and(|s| s.total_bytes() == total && s.finished_streams() == 2)
        });
        assert!(done, "seed {seed}, qlog {qlog}: the transfer did not complete");
        (sim.trace().hash(), rx.try_iter().count())
    };
    let (plain, none) = run(false);
    let (traced, records) = run(true);
    assert_eq!(none, 0);
    assert!(records > 100, "{records} qlog records");
    assert_eq!(traced, plain, "seed {seed}: qlog changed the trace");
}

/// The text of the panic `f` ends in (none: `None`).
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> Option<String> {
    let payload = std::panic::catch_unwind(f).err()?;
    Some(match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast::<&str>()
            .map_or_else(|_| String::new(), |s| (*s).to_owned()),
    })
}

/// A probability of a link that is NaN, negative or above 1 is the caller's mistake: adding the link
/// panics with the field named, rather than a NaN or negative loss acting as none and one above 1 as
/// all. 0 and 1 are allowed.
#[test]
fn a_link_with_a_probability_out_of_range_is_refused_where_it_is_added() {
    let ge = GilbertElliott {
        p_good_to_bad: 0.0,
        p_bad_to_good: 1.0,
        loss_bad: 1.0,
        loss_good: 0.0,
    };
    let with_ge = |g: GilbertElliott| LinkConfig {
        gilbert_elliott: Some(g),
        ..LinkConfig::default()
    };
    let bad = [
        (
            "loss",
            LinkConfig {
                loss: f64::NAN,
                ..LinkConfig::default()
            },
        ),
        (
            "loss",
            LinkConfig {
                loss: 1.5,
                ..LinkConfig::default()
            },
        ),
        (
            "loss",
            LinkConfig {
                loss: -0.1,
                ..LinkConfig::default()
            },
        ),
        (
            "reorder",
            LinkConfig {
                reorder: f64::INFINITY,
                ..LinkConfig::default()
            },
        ),
        (
            "duplicate",
            LinkConfig {
                duplicate: -1.0,
                ..LinkConfig::default()
            },
        ),
        (
            "corrupt",
            LinkConfig {
                corrupt: f64::NAN,
                ..LinkConfig::default()
            },
        ),
        (
            "gilbert_elliott.p_good_to_bad",
            with_ge(GilbertElliott {
                p_good_to_bad: 2.0,
                ..ge
            }),
        ),
        (
            "gilbert_elliott.p_bad_to_good",
            with_ge(GilbertElliott {
                p_bad_to_good: f64::NAN,
                ..ge
            }),
        ),
        (
            "gilbert_elliott.loss_bad",
            with_ge(GilbertElliott { loss_bad: -0.5, ..ge }),
        ),
        (
            "gilbert_elliott.loss_good",
            with_ge(GilbertElliott {
                loss_good: 1.0001,
                ..ge
            }),
        ),
    ];
    for (field, config) in bad {
        let message = panic_message(|| {
            let mut sim = Simulation::new(epoch(), 1);
            sim.add_link(NodeId(0), NodeId(1), config);
        })
        .unwrap_or_else(|| panic!("a link with a bad {field} was added"));
        assert!(message.contains(&format!("{field} = ")), "{field}: {message}");
    }
    let edges = LinkConfig {
        loss: 1.0,
        duplicate: 1.0,
        corrupt: 1.0,
        gilbert_elliott: Some(ge),
        ..LinkConfig::default()
    };
    let mut sim = Simulation::new(epoch(), 1);
    sim.add_duplex_link(NodeId(0), NodeId(1), edges);
    // Made invalid after it was added: the link's next datagram panics.
    let message = panic_message(|| {
        let (mut sim, _) = echo_pair(LinkConfig::default(), 1);
        sim.link_config_mut(NodeId(0), NodeId(1)).unwrap().loss = f64::NAN;
        sim.run(Duration::from_secs(1));
    })
    .expect("a link made invalid carried a datagram");
    assert!(message.contains("loss = NaN"), "{message}");
}

/// `QUICSAND_SIM_SEED` unset gives the default seed; set, it must be a seed (decimal, or hex with `0x`):
/// a mistyped one panics, naming the variable, rather than running the default seed as if replaying.
#[test]
fn a_malformed_seed_in_the_environment_is_refused() {
    use std::env::VarError;
    assert_eq!(seed_from(Err(VarError::NotPresent), 7), 7);
    assert_eq!(seed_from(Ok("42".into()), 7), 42);
    assert_eq!(seed_from(Ok(" 0x2a\n".into()), 7), 42);
    assert_eq!(seed_from(Ok(u64::MAX.to_string()), 7), u64::MAX);
    let malformed = [
        "",
        "  ",
        "12x",
        "0x",
        "0xg1",
        "-1",
        "18446744073709551616",
        "1e3",
        "0x+5",
    ];
    for value in malformed {
        let message = panic_message(|| {
            seed_from(Ok(value.into()), 7);
        })
        .unwrap_or_else(|| panic!("{value:?} taken as a seed"));
        assert!(message.contains(SEED_ENV), "{value:?}: {message}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        let not_unicode = std::ffi::OsString::from_vec(vec![0x31, 0xff]);
        let message = panic_message(|| {
            seed_from(Err(VarError::NotUnicode(not_unicode)), 7);
        })
        .expect("a seed that is not Unicode was ignored");
        assert!(message.contains(SEED_ENV), "{message}");
    }
}
