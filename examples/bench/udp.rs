//! The `udp` workload: one stream of N bytes over 127.0.0.1 on real sockets, client sending, server
//! receiving, each side in its own thread with its own event loop:
//!
//! - quicsand: one [`quicsand::udp::Driver`] per side (quinn-udp with GSO, GRO and `recvmmsg`);
//! - quinn: one tokio `current_thread` runtime per side (quinn's own endpoint driver, also on quinn-udp).
//!
//! Both use the same rustls configurations, the same datagram size (quinn's MTU discovery is off, as
//! quicsand has none) and each engine's default windows and congestion controller (CUBIC for both). The
//! CPU time is the whole process's (both threads, user + system, from `/proc/self/stat`), from the moment
//! both sockets are bound until both threads are done; the wall time runs until the receiver has the
//! last byte.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use quicsand::udp::{Driver, DriverStats, Handler};
use quicsand::{
    ClientConfig, ConnectionHandle, Endpoint, EndpointConfig, Event, ReadError, ServerConfig, StreamEvent,
    StreamId, TransportConfig,
};

use crate::alloc::{counts, HARNESS};
use crate::measure::{process_cpu, real_now};
use crate::setup::{Tls, CHUNK};

/// A run that takes longer than this fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// What one transfer measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpResult {
    /// Process CPU time (both sides, user + system).
    pub cpu: Duration,
    /// Wall time from the start until the receiver had every byte.
    pub wall: Duration,
    /// Stream bytes the receiver read.
    pub bytes: u64,
    /// quicsand only: the sender's and the receiver's driver counters.
    pub drivers: Option<(DriverStats, DriverStats)>,
    /// Heap allocations in the whole process (both threads, engine, driver and runtime) during the run.
    pub allocs: u64,
    /// UDP datagrams sent, both directions.
    pub datagrams: u64,
}

impl UdpResult {
    /// Goodput per CPU-second in Gbit/s.
    pub fn gbps_cpu(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.cpu.as_secs_f64() / 1e9
    }

    /// Goodput per wall-clock second in Gbit/s.
    pub fn gbps_wall(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }

    /// Heap allocations per datagram, both directions, whole process.
    pub fn allocs_per_datagram(&self) -> f64 {
        self.allocs as f64 / self.datagrams.max(1) as f64
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

// ---------------------------------------------------------------------------------------------------
// quicsand

/// The receiving side: reads the one stream to its end, then closes the connection.
struct Receiver {
    received: u64,
    done_at: Option<Instant>,
    deadline: Instant,
}

impl Receiver {
    fn drain(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, id: StreamId, now: Instant) {
        let Ok(mut conn) = endpoint.conn(h) else { return };
        loop {
            match conn.stream(id).read_chunk(usize::MAX) {
                Ok(Some(chunk)) => self.received += chunk.len() as u64,
                Ok(None) => {
                    self.done_at = Some(real_now());
                    break;
                }
                Err(ReadError::Blocked) => return,
                Err(e) => panic!("udp quicsand receiver: read: {e}"),
            }
        }
        conn.close(now, 0, b"done");
    }
}

impl Handler for Receiver {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, now: Instant) {
        match event {
            Event::Stream(StreamEvent::Readable { id }) => self.drain(endpoint, h, id, now),
            Event::ConnectionLost { reason } if self.done_at.is_none() => {
                panic!("udp quicsand receiver: connection lost: {reason:?}")
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, _endpoint: &mut Endpoint, now: Instant) -> ControlFlow<()> {
        assert!(
            now < self.deadline,
            "udp quicsand receiver: not done in {TIMEOUT:?}"
        );
        if self.done_at.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// The sending side: opens one stream once connected, keeps it full until `bytes` are written, finishes
/// it, and stops when the peer closes the connection.
struct Sender {
    conn: ConnectionHandle,
    stream: Option<StreamId>,
    bytes: u64,
    written: u64,
    finished: bool,
    closed: bool,
    deadline: Instant,
}

impl Sender {
    fn fill(&mut self, endpoint: &mut Endpoint) {
        let (Some(id), false) = (self.stream, self.finished) else {
            return;
        };
        let Ok(mut conn) = endpoint.conn(self.conn) else {
            return;
        };
        let mut s = conn.stream(id);
        while self.written < self.bytes {
            let n = (self.bytes - self.written).min(CHUNK.len() as u64) as usize;
            match s.write(&CHUNK[..n]) {
                Ok(k) if k > 0 => self.written += k as u64,
                _ => return,
            }
        }
        s.finish().expect("udp quicsand sender: finish");
        self.finished = true;
    }
}

impl Handler for Sender {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, _now: Instant) {
        match event {
            Event::Connected => {
                let id = endpoint
                    .conn(h)
                    .ok()
                    .and_then(|mut c| c.open_uni())
                    .expect("udp quicsand sender: a fresh connection has stream credit");
                self.stream = Some(id);
                self.fill(endpoint);
            }
            Event::Stream(StreamEvent::Writable { .. }) => self.fill(endpoint),
            Event::ConnectionLost { reason } => {
                assert!(
                    self.finished,
                    "udp quicsand sender: connection lost after {} bytes: {reason:?}",
                    self.written
                );
                self.closed = true;
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, endpoint: &mut Endpoint, now: Instant) -> ControlFlow<()> {
        assert!(
            now < self.deadline,
            "udp quicsand sender: not done in {TIMEOUT:?}"
        );
        self.fill(endpoint);
        if self.closed {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn quicsand_transport(size: usize) -> TransportConfig {
    TransportConfig {
        mtu: size as u16,
        // A fixed datagram size, as for quinn below; the peer (quicsand too) must accept it.
        mtu_discovery: None,
        max_udp_payload_size: (size as u16).max(TransportConfig::default().max_udp_payload_size),
        ..TransportConfig::default()
    }
}

/// One transfer of `bytes` through two quicsand drivers, `batch` datagrams per GSO send at most.
pub fn quicsand(bytes: u64, size: usize, batch: usize, tls: &Tls) -> UdpResult {
    let deadline = real_now() + TIMEOUT;
    let mut server_config = ServerConfig::new(tls.server.clone());
    server_config.transport = quicsand_transport(size);
    let mut sc = EndpointConfig::with_seed(1);
    sc.max_segments = batch;
    let mut server =
        Driver::bind(localhost(), Endpoint::new(sc, Some(server_config))).expect("bind the server socket");
    let server_addr = server.local_addr().expect("server address");
    let mut cc = EndpointConfig::with_seed(2);
    cc.max_segments = batch;
    let mut client = Driver::bind(localhost(), Endpoint::new(cc, None)).expect("bind the client socket");

    let start = real_now();
    let cpu0 = process_cpu();
    let allocs0 = counts(HARNESS);
    let receiver = std::thread::spawn(move || {
        let mut app = Receiver {
            received: 0,
            done_at: None,
            deadline,
        };
        server.run(&mut app).expect("udp quicsand receiver: socket error");
        (app, server.stats())
    });
    let mut config = ClientConfig::new(tls.client.clone());
    config.transport = quicsand_transport(size);
    let conn = client
        .endpoint()
        .connect(Driver::now(), config, server_addr, "localhost")
        .expect("connect");
    let mut app = Sender {
        conn,
        stream: None,
        bytes,
        written: 0,
        finished: false,
        closed: false,
        deadline,
    };
    client.run(&mut app).expect("udp quicsand sender: socket error");
    let (received, server_stats) = receiver.join().expect("udp quicsand receiver thread");
    let cpu = process_cpu() - cpu0;
    let allocs = counts(HARNESS).since(&allocs0).allocs;
    assert_eq!(received.received, bytes, "udp quicsand: every byte arrived");
    let client_stats = client.stats();
    UdpResult {
        cpu,
        wall: received.done_at.expect("done") - start,
        bytes: received.received,
        drivers: Some((client_stats, server_stats)),
        allocs,
        datagrams: client_stats.datagrams_sent + server_stats.datagrams_sent,
    }
}

// ---------------------------------------------------------------------------------------------------
// quinn

fn quinn_transport(size: usize) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.initial_mtu(size as u16)
        .min_mtu(size as u16)
        .mtu_discovery_config(None);
    Arc::new(t)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One transfer of `bytes` between two quinn endpoints, each on its own thread's tokio runtime.
pub fn quinn(bytes: u64, size: usize, tls: &Tls) -> UdpResult {
    let server_crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls.server.clone()).expect("quinn server TLS");
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(quinn_transport(size));
    let client_crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls.client.clone()).expect("quinn client TLS");
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(quinn_transport(size));

    let (addr_tx, addr_rx) = mpsc::channel();
    let ready = Arc::new(Barrier::new(2));
    let server_ready = ready.clone();
    let receiver = std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let endpoint = quinn::Endpoint::server(server_config, localhost()).expect("quinn server");
            addr_tx
                .send(endpoint.local_addr().expect("server address"))
                .expect("main thread waits");
            server_ready.wait();
            let work = async {
                let conn = endpoint
                    .accept()
                    .await
                    .expect("an incoming connection")
                    .await
                    .expect("quinn handshake");
                let mut stream = conn.accept_uni().await.expect("a stream");
                let mut received = 0u64;
                while let Some(chunk) = stream.read_chunk(usize::MAX, true).await.expect("read") {
                    received += chunk.bytes.len() as u64;
                }
                let done_at = real_now();
                conn.close(0u32.into(), b"done");
                // Let the endpoint send the CONNECTION_CLOSE.
                endpoint.wait_idle().await;
                (received, done_at, conn.stats().udp_tx.datagrams)
            };
            tokio::time::timeout(TIMEOUT, work)
                .await
                .expect("udp quinn receiver: not done in time")
        })
    });
    let server_addr = addr_rx.recv().expect("server thread sends its address");
    let rt = runtime();
    let endpoint = rt.block_on(async { quinn::Endpoint::client(localhost()).expect("quinn client") });
    ready.wait();
    let start = real_now();
    let cpu0 = process_cpu();
    let allocs0 = counts(HARNESS);
    let sent = rt.block_on(async {
        let work = async {
            let conn = endpoint
                .connect_with(client_config, server_addr, "localhost")
                .expect("connect")
                .await
                .expect("quinn handshake");
            let mut stream = conn.open_uni().await.expect("stream credit");
            let mut written = 0u64;
            while written < bytes {
                let n = (bytes - written).min(CHUNK.len() as u64) as usize;
                stream.write_all(&CHUNK[..n]).await.expect("write");
                written += n as u64;
            }
            stream.finish().expect("finish");
            // Ends when the receiver closes the connection, after it has read everything.
            let reason = conn.closed().await;
            assert!(
                matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
                "udp quinn sender: {reason}"
            );
            conn.stats().udp_tx.datagrams
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .expect("udp quinn sender: not done in time")
    });
    let (received, done_at, server_sent) = receiver.join().expect("udp quinn receiver thread");
    let cpu = process_cpu() - cpu0;
    let allocs = counts(HARNESS).since(&allocs0).allocs;
    assert_eq!(received, bytes, "udp quinn: every byte arrived");
    UdpResult {
        cpu,
        wall: done_at - start,
        bytes: received,
        drivers: None,
        allocs,
        datagrams: sent + server_sent,
    }
}
