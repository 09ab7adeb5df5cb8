//! Time given by the caller: clocks that step back, stand still or leap ahead.

use std::time::{Duration, Instant};

use super::churn::Net;
use crate::event::Event;
use crate::rng::Rng;
use crate::wire::frame::Dir;

/// Drives `net` like an event loop whose clock reads `clock(real)`, over a path with 10 ms each way
/// (every 50th datagram lost): reads the deadlines, and when the clock has passed one calls
/// `handle_timeout`, else lets real time pass until it would. The client sends `bytes` on one stream;
/// the server reads it all. Returns (bytes the server read, the most `handle_timeout` calls in a row at
/// a deadline that stayed passed, whether the transfer ended).
fn transfer(
    net: &mut Net,
    bytes: usize,
    limit: Duration,
    mut clock: impl FnMut(Instant, &mut Rng) -> Instant,
) -> (usize, usize, bool) {
    const ONE_WAY: Duration = Duration::from_millis(10);
    let server_addr: std::net::SocketAddr = super::churn::SERVER.parse().unwrap();
    let mut rng = Rng::from_seed(7);
    let mut real = net.now;
    let end = real + limit;
    let h = net.connect();
    let mut stream = None;
    let mut written = 0;
    let mut read = 0;
    let mut finished = false;
    let mut in_a_row = 0;
    let mut worst = 0;
    let mut sent = 0usize;
    // (real arrival time, to the server, payload)
    let mut wire: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut tx = Vec::new();
    let chunk = vec![0x5au8; 16 * 1024];
    while real < end {
        net.now = clock(real, &mut rng);
        let now = net.now;
        // Deliver what arrived by `real`.
        let mut i = 0;
        while i < wire.len() {
            if wire[i].0 <= real {
                let (_, to_server, p) = wire.remove(i);
                if to_server {
                    net.server
                        .handle_datagram(now, super::churn::dg(net.client_addr, &p));
                } else {
                    net.client.handle_datagram(now, super::churn::dg(server_addr, &p));
                }
            } else {
                i += 1;
            }
        }
        if stream.is_none() && net.client_events.iter().any(|(_, e)| *e == Event::Connected) {
            stream = net.client.conn(h).ok().and_then(|mut c| c.open_bi());
        }
        if let Some(id) = stream {
            while written < bytes {
                let Ok(mut c) = net.client.conn(h) else { break };
                match c.stream(id).write(&chunk[..chunk.len().min(bytes - written)]) {
                    Ok(n) if n > 0 => written += n,
                    _ => break,
                }
            }
            if written == bytes && !finished {
                if let Ok(mut c) = net.client.conn(h) {
                    let _ = c.stream(id).finish();
                }
                finished = true;
            }
        }
        let server_hs: Vec<_> = net.server.table.iter().map(|(h, _)| h).collect();
        for sh in server_hs {
            let Ok(mut c) = net.server.conn(sh) else { continue };
            let _ = c.accept(Dir::Bi);
            let id = crate::wire::frame::StreamId(0);
            loop {
                match c.stream(id).read(&mut buf) {
                    Ok(Some(n)) if n > 0 => read += n,
                    Ok(None) => return (read, worst, true),
                    _ => break,
                }
            }
        }
        for (ep, to_server) in [(&mut net.client, true), (&mut net.server, false)] {
            while let Some(t) = ep.poll_transmit(now, &mut tx) {
                for d in t.datagrams(&tx) {
                    sent += 1;
                    if sent % 50 != 0 {
                        wire.push((real + ONE_WAY, to_server, d.to_vec()));
                    }
                }
            }
        }
        while let Some(e) = net.client.poll_event() {
            net.client_events.push(e);
        }
        while let Some(e) = net.server.poll_event() {
            net.server_events.push(e);
        }
        if net.client.table.len() == 0 {
            break;
        }
        let next = [net.client.poll_timeout(), net.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let arrival = wire.iter().map(|w| w.0).min();
        match next {
            Some(d) if d <= now => {
                net.client.handle_timeout(now);
                net.server.handle_timeout(now);
                in_a_row += 1;
                worst = worst.max(in_a_row);
                if in_a_row > 10_000 {
                    break;
                }
                continue;
            }
            _ => in_a_row = 0,
        }
        // Sleep until the next deadline (as this clock reads it) or the next arrival.
        let wake = next.map(|d| real + d.saturating_duration_since(now));
        real = match (wake, arrival) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => break,
            },
        }
        .max(real + Duration::from_micros(1));
        let now = clock(real, &mut rng);
        net.now = now;
        if next.is_some_and(|d| now >= d) {
            net.client.handle_timeout(now);
            net.server.handle_timeout(now);
        }
    }
    (read, worst, false)
}

#[test]
fn a_steady_clock_transfers() {
    let mut net = Net::new();
    net.drop_every = 17;
    let (read, worst, done) = transfer(&mut net, 2_000_000, Duration::from_secs(60), |t, _| t);
    assert!(done && read == 2_000_000, "{read} {worst}");
}

#[test]
fn a_clock_jittering_backwards_transfers() {
    let mut net = Net::new();
    net.drop_every = 17;
    let (read, worst, done) = transfer(&mut net, 2_000_000, Duration::from_secs(60), |t, rng| {
        t.checked_sub(Duration::from_micros(rng.below(20_000)))
            .unwrap_or(t)
    });
    assert!(done && read == 2_000_000, "read {read}, spins {worst}");
    assert!(worst < 100, "spins {worst}");
}

fn elapsed_for(step_back: Duration) -> Duration {
    let mut net = Net::new();
    net.drop_every = 17;
    let start = net.now;
    let step_at = start + Duration::from_millis(300);
    let mut last_real = start;
    let (read, worst, done) = transfer(&mut net, 5_000_000, Duration::from_secs(600), |t, _| {
        last_real = t;
        if t >= step_at {
            t.checked_sub(step_back).unwrap_or(t)
        } else {
            t
        }
    });
    assert!(
        done && read == 5_000_000,
        "step {step_back:?}: read {read}, spins {worst}, real {:?}, client {:?}, server {:?}",
        last_real - start,
        net.client_events,
        net.server_events
    );
    last_real - start
}

#[test]
fn a_clock_stepping_back_once_costs_no_more_than_the_step() {
    let steady = elapsed_for(Duration::ZERO);
    let five = elapsed_for(Duration::from_secs(5));
    eprintln!("steady {steady:?}, stepped back 5 s: {five:?}");
    let stepped = elapsed_for(Duration::from_secs(60));
    eprintln!("steady {steady:?}, stepped back 60 s: {stepped:?}");
    assert!(
        stepped < steady + Duration::from_secs(1),
        "steady {steady:?}, stepped {stepped:?}"
    );
}
