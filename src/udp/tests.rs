use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::Duration;

use super::*;
use crate::crypto::tls;
use crate::{ClientConfig, EndpointConfig, ServerConfig};

fn meta(len: usize, stride: usize) -> RecvMeta {
    RecvMeta {
        addr: "127.0.0.1:9".parse().expect("an address"),
        len,
        stride,
        ecn: Some(quinn_udp::EcnCodepoint::Ce),
        dst_ip: Some("127.0.0.2".parse().expect("an address")),
    }
}

#[test]
fn a_gro_buffer_is_one_batch_at_its_stride() {
    let data: Vec<u8> = (0..25u8).collect();
    let (batch, stride, datagrams) = received_batch(&meta(25, 10), &data);
    assert_eq!((stride, datagrams), (10, 3));
    assert_eq!(&batch.payload[..], &data[..]);
    assert_eq!(batch.ecn, Some(EcnCodepoint::Ce));
    assert_eq!(batch.local, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(batch.remote, "127.0.0.1:9".parse().unwrap());
}

#[test]
fn a_single_datagram_stays_whole() {
    let data = [7u8; 1200];
    for stride in [1200, 0] {
        let (batch, stride, datagrams) = received_batch(&meta(1200, stride), &data);
        assert_eq!((batch.payload.len(), stride, datagrams), (1200, 1200, 1));
    }
}

/// The driver counts the datagrams of a received buffer as the endpoint splits it: an empty buffer is one
/// (empty) datagram, an exact multiple of the stride has no empty last one, a stride beyond the buffer
/// leaves it whole.
#[test]
fn the_driver_counts_a_buffer_as_the_endpoint_splits_it() {
    let mut endpoint = Endpoint::new(EndpointConfig::with_seed(1), None);
    let now = Driver::now();
    for (len, stride, expected) in [
        (0, 0, 1),
        (0, 10, 1),
        (30, 10, 3),
        (25, 10, 3),
        (5, 1, 5),
        (1200, 65_535, 1),
    ] {
        let data = vec![0xc0; len];
        let (batch, stride, datagrams) = received_batch(&meta(len, stride), &data);
        assert_eq!(datagrams, expected, "{len} bytes at stride {stride}");
        let before = endpoint.stats().datagrams_received;
        endpoint.handle_batch(now, batch, stride);
        let taken = endpoint.stats().datagrams_received - before;
        assert_eq!(taken, datagrams as u64, "{len} bytes at stride {stride}");
    }
}

#[test]
fn gso_transmits_split_to_the_kernels_segment_limit() {
    // 10 segments of 1200, kernel takes 64: one call.
    assert_eq!(gso_chunk_len(11_500, Some(1200), 64), 11_500);
    // Kernel takes 4: calls of 4 segments.
    assert_eq!(gso_chunk_len(11_500, Some(1200), 4), 4800);
    // No GSO: one datagram per call.
    assert_eq!(gso_chunk_len(11_500, Some(1200), 1), 1200);
    // A plain datagram.
    assert_eq!(gso_chunk_len(900, None, 1), 900);
    // One UDP send carries at most 65,507 bytes, whatever the segment limit: 46 segments of 1400.
    assert_eq!(gso_chunk_len(50 * 1400, Some(1400), 64), 46 * 1400);
    assert_eq!(gso_chunk_len(100_000, Some(65_507), 64), 65_507);
}

#[test]
fn a_transmit_larger_than_one_udp_send_goes_out_whole() {
    // 50 segments of 1400 bytes (70,000 bytes) with the kernel's 64-segment limit: before, one send of
    // all of them failed with EMSGSIZE and every segment was counted lost.
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.set_nonblocking(true).unwrap();
    let state = UdpSocketState::new((&tx).into()).unwrap();
    let mut stats = DriverStats::default();
    let contents = vec![0u8; 50 * 1400];
    let t = Transmit {
        destination: rx.local_addr().unwrap(),
        src_ip: None,
        ecn: None,
        size: contents.len(),
        segment_size: Some(1400),
    };
    send(&tx, &state, &mut stats, &t, &contents).unwrap();
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    assert_eq!(stats.datagrams_sent, 50);
}

#[test]
fn ecn_codepoints_map_both_ways() {
    for ecn in [EcnCodepoint::Ect0, EcnCodepoint::Ect1, EcnCodepoint::Ce] {
        assert_eq!(from_quinn_ecn(to_quinn_ecn(ecn)), ecn);
        assert_eq!(to_quinn_ecn(ecn) as u8, ecn.bits());
    }
}

/// A server configuration with a fresh self-signed certificate for localhost, and a client
/// configuration that trusts it (ALPN `t`).
fn loopback_configs() -> (ServerConfig, ClientConfig) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let alpn = vec![b"t".to_vec()];
    let server_tls = tls::server_config(vec![der.clone()], key, alpn.clone()).unwrap();
    let client_tls = tls::client_config(vec![der], alpn).unwrap();
    (ServerConfig::new(server_tls), ClientConfig::new(client_tls))
}

/// Two drivers on loopback sockets, turned alternately in one thread, complete a handshake and close.
#[test]
fn two_drivers_connect_over_loopback() {
    let (server_config, client_config) = loopback_configs();
    let server = Endpoint::new(EndpointConfig::with_seed(1), Some(server_config));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = Driver::bind(any, server).unwrap();
    let mut client = Driver::bind(any, Endpoint::new(EndpointConfig::with_seed(2), None)).unwrap();
    server.set_max_wait(Duration::from_millis(5));
    client.set_max_wait(Duration::from_millis(5));
    let server_addr = server.local_addr().unwrap();
    let h = client
        .endpoint()
        .connect(Driver::now(), client_config, server_addr, "localhost")
        .unwrap();

    let mut server_events = Vec::new();
    let mut client_lost = false;
    let deadline = Driver::now() + Duration::from_secs(20);
    while !client_lost {
        assert!(Driver::now() < deadline, "no handshake and close within 20 s");
        let flow = client
            .turn(&mut |ep: &mut Endpoint, handle, event: Event, now| match event {
                Event::Connected => {
                    assert_eq!(handle, h);
                    ep.close(now, handle, 0, b"done").unwrap();
                }
                Event::ConnectionLost { .. } => client_lost = true,
                _ => {}
            })
            .unwrap();
        assert_eq!(flow, ControlFlow::Continue(()));
        let _ = server
            .turn(&mut |_: &mut Endpoint, _, event: Event, _| server_events.push(event))
            .unwrap();
    }
    // Let the server read the CONNECTION_CLOSE.
    while !server_events
        .iter()
        .any(|e| matches!(e, Event::ConnectionLost { .. }))
    {
        assert!(Driver::now() < deadline, "the server never saw the close");
        let _ = server
            .turn(&mut |_: &mut Endpoint, _, event: Event, _| server_events.push(event))
            .unwrap();
    }
    assert!(server_events.contains(&Event::Connected));
    let (c, s) = (client.stats(), server.stats());
    assert!(c.datagrams_sent >= 2 && c.datagrams_received >= 1, "{c:?}");
    assert!(s.datagrams_sent >= 1 && s.datagrams_received >= 2, "{s:?}");
    assert_eq!(c.send_errors + s.send_errors, 0);
}

/// A handler that ignores every event.
fn ignore(_: &mut Endpoint, _: ConnectionHandle, _: Event, _: Instant) {}

/// A driver on a loopback socket with a client endpoint and no connection, whose waits are short.
fn idle_driver() -> Driver {
    let endpoint = Endpoint::new(EndpointConfig::with_seed(3), None);
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), endpoint).unwrap();
    driver.set_max_wait(Duration::from_millis(1));
    driver
}

/// Turns `driver` until it has handed `count` datagrams to its endpoint.
fn turn_until_received(driver: &mut Driver, count: u64) {
    let deadline = Driver::now() + Duration::from_secs(20);
    while driver.stats().datagrams_received < count {
        assert!(
            Driver::now() < deadline,
            "no datagram within 20 s: {:?}",
            driver.stats()
        );
        let _ = driver.turn(&mut ignore).expect("the driver goes on");
    }
}

#[cfg(unix)]
#[test]
fn receive_errors_about_one_datagram_or_peer_do_not_stop_the_driver() {
    // What an ICMP error turns into on a connected socket (or any socket with IP_RECVERR), memory
    // pressure, and interrupted calls. Before, EMSGSIZE (an ICMP "fragmentation needed"), EHOSTDOWN,
    // EPROTO, EACCES (administratively prohibited), ENETDOWN, ENOBUFS and ENOMEM stopped the driver.
    let errors = [
        libc::ECONNREFUSED,
        libc::ECONNRESET,
        libc::EHOSTUNREACH,
        libc::ENETUNREACH,
        libc::EHOSTDOWN,
        libc::ENETDOWN,
        libc::EMSGSIZE,
        libc::EPROTO,
        libc::ENOPROTOOPT,
        libc::EOPNOTSUPP,
        libc::EACCES,
        libc::ETIMEDOUT,
        libc::ENOBUFS,
        libc::ENOMEM,
        libc::EINTR,
    ];
    let mut driver = idle_driver();
    driver
        .recv_faults
        .extend(errors.iter().map(|&code| io::Error::from_raw_os_error(code)));
    for code in errors {
        let turned = driver.turn(&mut ignore);
        assert!(turned.is_ok(), "error {code} stopped the driver: {turned:?}");
    }
    assert_eq!(driver.stats().recv_errors, errors.len() as u64);
    // The socket still delivers.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(&[0u8; 1200], driver.local_addr().unwrap()).unwrap();
    turn_until_received(&mut driver, 1);
}

#[cfg(unix)]
#[test]
fn a_receive_error_of_an_unusable_socket_stops_the_driver() {
    for code in [
        libc::EBADF,
        libc::ENOTSOCK,
        libc::EFAULT,
        libc::EINVAL,
        libc::ENOSYS,
    ] {
        let mut driver = idle_driver();
        driver.recv_faults.push_back(io::Error::from_raw_os_error(code));
        let error = driver.turn(&mut ignore).expect_err("the socket is unusable");
        assert_eq!(error.raw_os_error(), Some(code));
        assert_eq!(driver.stats().recv_errors, 0);
    }
}

#[test]
fn a_refused_datagram_is_counted_and_the_driver_goes_on() {
    // A connected UDP socket hears of the ICMP "port unreachable" its datagram caused: a later receive
    // fails with ECONNREFUSED (an unconnected one without IP_RECVERR, which quinn-udp does not set,
    // hears nothing).
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(closed).unwrap();
    let mut driver = Driver::new(socket, Endpoint::new(EndpointConfig::with_seed(4), None)).unwrap();
    driver.set_max_wait(Duration::from_millis(5));
    let client_tls = tls::client_config(Vec::new(), vec![b"t".to_vec()]).unwrap();
    driver
        .endpoint()
        .connect(Driver::now(), ClientConfig::new(client_tls), closed, "localhost")
        .unwrap();
    let deadline = Driver::now() + Duration::from_secs(20);
    while driver.stats().recv_errors == 0 {
        assert!(
            Driver::now() < deadline,
            "no ECONNREFUSED within 20 s: {:?}",
            driver.stats()
        );
        let _ = driver
            .turn(&mut ignore)
            .expect("a refused datagram does not stop the driver");
    }
    assert!(driver.stats().datagrams_sent >= 1);
}

/// The latest Linux wakes a thread blocked in a socket with read timeout `asked`, on a kernel of `hz`
/// ticks a second. `SO_RCVTIMEO` is rounded up to whole ticks; the timer wheel (`kernel/time/timer.c`)
/// files a timer due in `ticks` at the first level whose range holds it (level n from 63 · 8^(n-1) ticks
/// on) and fires it at the next multiple of that level's granularity (8^n ticks) after its expiry: up to
/// one granularity late, one tick at level 0 (where the current tick has partly passed).
///
/// Measured on a 250 Hz kernel (6.18, a busy shared machine), the read timeout and how late a blocking
/// peek returned at worst over 4 to 30 tries: 240 ms, 4 ms late; 260 ms, 28 ms; 300 ms, 24 ms; 1 s, 28 ms;
/// 2.5 s, 124 ms. The model allows 4, 32, 32, 32 and 256 ms. (1 ms and 250 ms were seen 4 ms beyond it,
/// 11 and 38 ms late: a tick of scheduling delay that no margin bounds.) Linux now waits with `poll`; the
/// socket-timeout wait is what systems without it use.
#[cfg(not(unix))]
fn linux_latest_wake(asked: Duration, hz: u128) -> Duration {
    let ticks = (asked.as_nanos() * hz).div_ceil(1_000_000_000);
    let mut granularity = 1;
    while ticks >= 63 * granularity {
        granularity *= 8;
    }
    let nanos = (ticks + granularity) * 1_000_000_000 / hz;
    Duration::from_nanos(u64::try_from(nanos).expect("within u64 nanoseconds"))
}

#[cfg(not(unix))]
#[test]
fn a_wait_in_the_socket_wakes_before_its_deadline() {
    // Before, the socket was asked to wake 10 ms early whatever the wait: enough at level 0 of the timer
    // wheel, but a wait over 63 ticks (252 ms at 250 Hz, so any `set_max_wait` above about 260 ms, or a
    // deadline that far) could wake up to an eighth of it late: 32 ms for 300 ms, 256 ms for 3 s.
    assert_eq!(socket_wait(COARSE_WAIT_MIN - Duration::from_nanos(1)), None);
    let ms = Duration::from_millis;
    let timeouts = (20..10_000).map(ms).chain((10_000..120_000).step_by(97).map(ms));
    for timeout in timeouts {
        let asked = socket_wait(timeout).expect("a long wait blocks in the socket");
        assert!(!asked.is_zero());
        if timeout >= ms(40) {
            assert!(
                asked >= timeout * 3 / 4,
                "{timeout:?} asks for {asked:?}: needlessly early"
            );
        }
        // 250 Hz (Debian, Ubuntu), 300 Hz, 1000 Hz (Fedora, RHEL). At 100 Hz two ticks are 20 ms, more than
        // the 10 ms margin of short waits.
        for hz in [250, 300, 1000] {
            let latest = linux_latest_wake(asked, hz);
            assert!(
                latest <= timeout,
                "{timeout:?} at {hz} Hz: asks for {asked:?}, may wake at {latest:?}"
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn a_short_wait_is_one_wait() {
    // Before, a wait under 20 ms was slept in slices of at most 500 µs, each of which ended the turn: a
    // 10 ms wait took about twenty turns (twenty sleeps and twenty empty receives), and a datagram that
    // arrived during a slice waited for its end. Now the turn polls the socket until the deadline.
    let mut driver = idle_driver();
    driver.set_max_wait(Duration::from_millis(10));
    let start = Driver::now();
    let mut turns = 0;
    while Driver::now() < start + Duration::from_millis(10) {
        let _ = driver.turn(&mut ignore).expect("an idle driver goes on");
        turns += 1;
    }
    // One wait, or two if the first wakes a hair before the deadline the loop checks.
    assert!(turns <= 2, "{turns} turns for a 10 ms wait: {:?}", driver.stats());
    assert_eq!(driver.stats().waits, turns);
}

#[cfg(unix)]
#[test]
fn a_datagram_ends_a_wait_at_once() {
    // The wait for a distant deadline is a poll of the socket, which a datagram ends: the turn receives
    // it rather than sleeping out its 30 s.
    let mut driver = idle_driver();
    driver.set_max_wait(Duration::from_secs(30));
    let to = driver.local_addr().expect("bound");
    let sender = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Sent after the driver has started waiting, most likely; if before, the turn finds it at once.
        std::thread::sleep(Duration::from_millis(50));
        socket.send_to(&[0u8; 1200], to).expect("send");
    });
    let _ = driver.turn(&mut ignore).expect("the driver goes on");
    sender.join().expect("sender");
    assert_eq!(driver.stats().datagrams_received, 1, "{:?}", driver.stats());
}

/// A client that opens a connection whenever one is lost and closes it at once, so that each event it
/// handles queues another, `limit` times in all.
struct Reconnect {
    tls: std::sync::Arc<rustls::ClientConfig>,
    server: SocketAddr,
    lost: usize,
    limit: usize,
}

impl Handler for Reconnect {
    fn on_event(&mut self, endpoint: &mut Endpoint, _: ConnectionHandle, event: Event, now: Instant) {
        if !matches!(event, Event::ConnectionLost { .. }) {
            return;
        }
        self.lost += 1;
        if self.lost < self.limit {
            let config = ClientConfig::new(self.tls.clone());
            let h = endpoint.connect(now, config, self.server, "localhost").unwrap();
            endpoint.close(now, h, 0, b"").unwrap();
        }
    }
}

#[test]
fn a_handler_that_keeps_queueing_events_does_not_hold_the_turn() {
    // Before, a round handed out events until none was left, however many the handler's own calls
    // queued: one turn handed out all 3,000 here (and, without the limit, never returned), neither
    // sending nor receiving in between.
    let mut driver = idle_driver();
    let mut handler = Reconnect {
        tls: tls::client_config(Vec::new(), vec![b"t".to_vec()]).unwrap(),
        server: "127.0.0.1:9".parse().unwrap(),
        lost: 0,
        limit: 3_000,
    };
    let now = Driver::now();
    let config = ClientConfig::new(handler.tls.clone());
    let first = driver
        .endpoint()
        .connect(now, config, handler.server, "localhost")
        .unwrap();
    driver.endpoint().close(now, first, 0, b"").unwrap();
    let _ = driver.turn(&mut handler).unwrap();
    assert!(
        handler.lost < handler.limit,
        "one turn handed out all {} events",
        handler.lost
    );
    // The driver did not block with events waiting.
    assert_eq!(driver.stats().waits, 0);
    for _ in 0..handler.limit {
        if handler.lost == handler.limit {
            break;
        }
        let _ = driver.turn(&mut handler).unwrap();
    }
    assert_eq!(handler.lost, handler.limit);
}

/// A client driver on `client_bind` connects to the server driver on `server_bind`, at the address
/// `target` makes of the server's; returns whether the handshake completed within 5 s, and the
/// client's stats.
fn handshake_between(
    server_bind: &str,
    client_bind: &str,
    target: impl Fn(SocketAddr) -> SocketAddr,
) -> (bool, DriverStats) {
    let (server_config, client_config) = loopback_configs();
    let server = Endpoint::new(EndpointConfig::with_seed(1), Some(server_config));
    let mut server = Driver::bind(server_bind.parse().unwrap(), server).unwrap();
    let client = Endpoint::new(EndpointConfig::with_seed(2), None);
    let mut client = Driver::bind(client_bind.parse().unwrap(), client).unwrap();
    server.set_max_wait(Duration::from_millis(2));
    client.set_max_wait(Duration::from_millis(2));
    let to = target(server.local_addr().unwrap());
    client
        .endpoint()
        .connect(Driver::now(), client_config, to, "localhost")
        .unwrap();
    let mut connected = false;
    let deadline = Driver::now() + Duration::from_secs(5);
    while !connected && Driver::now() < deadline {
        let _ = client
            .turn(&mut |_: &mut Endpoint, _, e: Event, _| connected |= e == Event::Connected)
            .unwrap();
        let _ = server.turn(&mut ignore).unwrap();
    }
    (connected, client.stats())
}

/// The IPv4-mapped form of an IPv4 socket address.
fn mapped(addr: SocketAddr) -> SocketAddr {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr} is not IPv4")
    };
    SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
}

/// A client on a dual-stack IPv6 socket connects to an IPv4 server: the server's answers arrive from
/// the IPv4-mapped form of the address connected to, which is the same peer. Before, the client
/// dropped every answer as coming from another address, and never connected.
#[cfg(target_os = "linux")]
#[test]
fn a_dual_stack_client_reaches_an_ipv4_server() {
    let (connected, stats) = handshake_between("127.0.0.1:0", "[::]:0", |a| a);
    assert!(connected, "{stats:?}");
    // The same, with the server's address written in its IPv4-mapped form.
    let (connected, stats) = handshake_between("127.0.0.1:0", "[::]:0", mapped);
    assert!(connected, "{stats:?}");
}

/// An IPv4 client given the IPv4-mapped form of an IPv4 server's address sends to the IPv4 address
/// (before, every send failed: an IPv6 destination on an IPv4 socket).
#[test]
fn an_ipv4_client_given_a_mapped_address_connects() {
    let (connected, stats) = handshake_between("127.0.0.1:0", "127.0.0.1:0", mapped);
    assert!(connected, "{stats:?}");
    assert_eq!(stats.send_errors, 0);
}

/// A native IPv6 destination keeps its scope ID and flow label on an IPv6 socket (a link-local peer,
/// fe80::1%3, is reachable only through its interface). Before, mapping IPv4 destinations rebuilt
/// every one and dropped both.
#[test]
fn a_scoped_ipv6_destination_keeps_its_scope_id() {
    let dest = SocketAddr::V6(std::net::SocketAddrV6::new(
        "fe80::1".parse().expect("an address"),
        4433,
        7,
        3,
    ));
    let t = Transmit {
        destination: dest,
        src_ip: None,
        ecn: None,
        size: 100,
        segment_size: None,
    };
    let out = for_socket(t, true);
    assert_eq!(out.destination, dest, "scope ID / flowinfo lost");
}

#[cfg(unix)]
#[test]
fn a_waker_ends_a_wait_from_another_thread() {
    // The turn waits for a distant deadline; a wake from another thread ends it, and the wake-up is not
    // handed to the endpoint as a datagram.
    let mut driver = idle_driver();
    driver.set_max_wait(Duration::from_secs(30));
    let waker = driver.waker().expect("a waker");
    let before = driver.endpoint().stats();
    let other = std::thread::spawn(move || {
        // Sent after the driver has started waiting, most likely; if before, the turn finds it at once.
        std::thread::sleep(Duration::from_millis(50));
        waker.wake().expect("wake");
    });
    let _ = driver.turn(&mut ignore).expect("the driver goes on");
    other.join().expect("the waking thread");
    let stats = driver.stats();
    assert_eq!((stats.wakes, stats.datagrams_received), (1, 0), "{stats:?}");
    assert_eq!(driver.endpoint().stats(), before);
}

/// A handler that takes work from other threads through a channel, as [`Waker`] describes, and says when
/// its first turn has looked at the channel.
struct Inbox {
    rx: std::sync::mpsc::Receiver<&'static str>,
    ready: Option<std::sync::mpsc::Sender<()>>,
    got: Vec<&'static str>,
}

impl Handler for Inbox {
    fn on_event(&mut self, _: &mut Endpoint, _: ConnectionHandle, _: Event, _: Instant) {}

    fn on_turn(&mut self, _: &mut Endpoint, _: Instant) -> ControlFlow<()> {
        self.got.extend(self.rx.try_iter());
        if let Some(ready) = self.ready.take() {
            ready.send(()).expect("the other thread waits");
        }
        if self.got.contains(&"stop") {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[test]
fn work_sent_with_a_wake_reaches_the_handler_in_the_next_turn() {
    // The other thread sends once the first turn has looked at the channel, so only the wake can end
    // that turn's 30 s wait; the next turn's `on_turn` takes the message.
    let mut driver = idle_driver();
    driver.set_max_wait(Duration::from_secs(30));
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let waker = driver.waker().expect("a waker");
    let other = std::thread::spawn(move || {
        ready_rx.recv().expect("the driver's first turn");
        tx.send("stop").expect("the driver listens");
        waker.wake().expect("wake");
    });
    let mut inbox = Inbox {
        rx,
        ready: Some(ready_tx),
        got: Vec::new(),
    };
    let mut turns = 1;
    while driver.turn(&mut inbox).expect("the driver goes on").is_continue() {
        turns += 1;
    }
    other.join().expect("the waking thread");
    assert_eq!(inbox.got, ["stop"]);
    let stats = driver.stats();
    assert_eq!(
        (turns, stats.wakes, stats.datagrams_received),
        (2, 1, 0),
        "{stats:?}"
    );
}

#[test]
fn an_endpoint_with_the_default_all_zero_seed_is_refused() {
    // Its connection IDs, stateless reset tokens and address validation tokens would be predictable.
    let refused = Driver::bind(
        "127.0.0.1:0".parse().unwrap(),
        Endpoint::new(EndpointConfig::default(), None),
    );
    let e = refused.expect_err("an all-zero seed on a real socket");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("os_seed"), "{e}");
    let seeded = EndpointConfig {
        seed: os_seed().expect("the OS RNG"),
        ..EndpointConfig::default()
    };
    assert!(Driver::bind("127.0.0.1:0".parse().unwrap(), Endpoint::new(seeded, None)).is_ok());
}

#[cfg(unix)]
#[test]
fn a_burst_of_wakes_is_one_wake_up_and_leaves_room_for_datagrams() {
    // A producer that wakes once per message, as `Waker` asks, can call `wake` thousands of times
    // before the driver turns. Each call was a datagram in the driver's receive buffer: a few hundred
    // empty datagrams fill the default buffer (each costs a whole socket buffer's overhead), and the
    // kernel then drops the peers' datagrams. Wakes between two turns are one wake-up.
    let mut driver = idle_driver();
    let waker = driver.waker().expect("a waker");
    for _ in 0..5000 {
        waker.wake().expect("wake");
    }
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(&[0u8; 1200], driver.local_addr().unwrap()).unwrap();
    let deadline = Driver::now() + Duration::from_secs(2);
    while driver.stats().datagrams_received < 1 && Driver::now() < deadline {
        let _ = driver.turn(&mut ignore).expect("the driver goes on");
    }
    let stats = driver.stats();
    assert_eq!((stats.datagrams_received, stats.wakes), (1, 1), "{stats:?}");
    // A wake after that turn wakes again.
    waker.wake().expect("wake");
    driver.set_max_wait(Duration::from_secs(30));
    let _ = driver.turn(&mut ignore).expect("the driver goes on");
    assert_eq!(driver.stats().wakes, 2, "{:?}", driver.stats());
}

#[cfg(unix)]
#[test]
fn a_waker_wakes_drivers_on_ipv6_addresses() {
    // The wildcard (dual-stack) address and the loopback one: the wake-up comes from [::1] and is
    // recognised by its source.
    for addr in ["[::]:0", "[::1]:0"] {
        let endpoint = Endpoint::new(EndpointConfig::with_seed(3), None);
        let Ok(mut driver) = Driver::bind(addr.parse().unwrap(), endpoint) else {
            // No IPv6 on this host.
            continue;
        };
        driver.set_max_wait(Duration::from_secs(30));
        let waker = driver.waker().expect("a waker");
        waker.wake().expect("wake");
        let _ = driver.turn(&mut ignore).expect("the driver goes on");
        let stats = driver.stats();
        assert_eq!(
            (stats.wakes, stats.datagrams_received),
            (1, 0),
            "{addr}: {stats:?}"
        );
    }
}

/// A GSO send of three datagrams, the last shorter, reaches a driver on loopback as three datagrams: one
/// GRO buffer split at its stride where the kernel coalesces (Linux), three buffers elsewhere.
#[test]
fn a_gso_send_with_a_short_last_segment_arrives_as_its_datagrams() {
    let mut driver = idle_driver();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = UdpSocketState::new((&tx).into()).unwrap();
    let mut stats = DriverStats::default();
    let contents = vec![0u8; 2 * 1200 + 500];
    let t = Transmit {
        destination: driver.local_addr().unwrap(),
        src_ip: None,
        ecn: Some(EcnCodepoint::Ect0),
        size: contents.len(),
        segment_size: Some(1200),
    };
    send(&tx, &state, &mut stats, &t, &contents).unwrap();
    assert_eq!((stats.datagrams_sent, stats.send_errors), (3, 0), "{stats:?}");
    turn_until_received(&mut driver, 3);
    let received = driver.stats();
    assert_eq!(received.datagrams_received, 3, "{received:?}");
    assert_eq!(driver.endpoint().stats().datagrams_received, 3);
    if driver.gro_segments() > 1 && driver.max_gso_segments() > 1 {
        // Linux hands a GSO send over loopback to a GRO socket whole: one buffer, split at its stride.
        assert_eq!(
            (received.recv_calls, received.gro_batches),
            (1, 1),
            "{received:?}"
        );
    }
}

/// A send the kernel refuses with EMSGSIZE (here a datagram beyond UDP's 65,507 bytes; on a network, a
/// path MTU probe beyond the interface's MTU) is counted and dropped, as a loss QUIC recovers from: the
/// send returns no error, and the socket goes on sending.
#[test]
fn an_oversized_datagram_is_counted_and_dropped() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.set_nonblocking(true).unwrap();
    let state = UdpSocketState::new((&tx).into()).unwrap();
    let mut stats = DriverStats::default();
    let mut t = Transmit {
        destination: rx.local_addr().unwrap(),
        src_ip: None,
        ecn: None,
        size: 65_508,
        segment_size: None,
    };
    send(&tx, &state, &mut stats, &t, &[0u8; 65_508]).expect("a refused datagram is no error");
    assert_eq!((stats.send_errors, stats.datagrams_sent), (1, 0), "{stats:?}");
    t.size = 1200;
    send(&tx, &state, &mut stats, &t, &[0u8; 1200]).unwrap();
    assert_eq!((stats.send_errors, stats.datagrams_sent), (1, 1), "{stats:?}");
    // A bound on a failure, not a timing assertion: loopback delivers at once.
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(rx.recv(&mut buf).unwrap(), 1200);
}

#[test]
fn a_driver_on_a_connected_socket_makes_no_waker_that_cannot_wake_it() {
    // A connected UDP socket takes datagrams from its peer only: the kernel drops a wake-up from the
    // waker's socket (and answers it with an ICMP "port unreachable", which fails the next wake with
    // ECONNREFUSED). Before, `waker` made such a waker anyway: a wake then ended no wait, and the work
    // sent with it waited for the driver's next deadline (a turn with a 1 s wait counted no wake-up).
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(peer.local_addr().unwrap()).unwrap();
    let mut driver = Driver::new(socket, Endpoint::new(EndpointConfig::with_seed(4), None)).unwrap();
    let e = driver.waker().expect_err("a waker that cannot reach the driver");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

/// A server on a dual-stack IPv6 socket answers an IPv4 client: it knows the client by its IPv4 address
/// and the address the client's datagrams arrived at (pktinfo) as IPv4, and the driver sends from and
/// to their IPv4-mapped forms.
#[cfg(target_os = "linux")]
#[test]
fn a_dual_stack_server_answers_an_ipv4_client() {
    let ipv4 = |a: SocketAddr| SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port());
    let (connected, stats) = handshake_between("[::]:0", "127.0.0.1:0", ipv4);
    assert!(connected, "{stats:?}");
    assert_eq!(stats.send_errors, 0);
}
