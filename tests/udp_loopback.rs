//! quicsand on real UDP sockets on 127.0.0.1, through `quicsand::udp::Driver`: a 16 MiB hq-interop
//! download and the echo workload (4 streams of 256 KiB, 100 datagrams), checked byte for byte, for a
//! quicsand client with a quicsand server, a quinn client with a quicsand server and a quicsand client
//! with a quinn server.
//!
//! Each test runs the server in a thread (quicsand) or on a tokio runtime (quinn) and is bounded by a
//! deadline; nothing sleeps. The application logic is the examples' (`examples/common/`).

#![allow(clippy::unwrap_used)]

#[path = "../examples/common/mod.rs"]
mod apps;

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use apps::echo::{EchoClient, Workload};
use apps::hq::{Download, HqClient, Sink, NOT_FOUND};
use apps::pattern;
use apps::server::{ServerApp, ServerStats};
use apps::tls::{self_signed, SelfSigned};
use bytes::Bytes;
use quicsand::crypto::tls;
use quicsand::udp::{Driver, Handler};
use quicsand::{ClientConfig, ConnectionHandle, Endpoint, EndpointConfig, Event, ServerConfig};
use rustls::pki_types::CertificateDer;

/// Every test is over within this long, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const FILE_SIZE: usize = 16 << 20;
const ECHO: Workload = Workload {
    streams: 4,
    bytes: 256 << 10,
    datagrams: 100,
    seed: 0x5eed,
};
const ALPN: [&[u8]; 2] = [b"hq-interop", b"echo"];

fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|a| a.to_vec()).collect()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A directory with a 16 MiB file `big.bin` of pattern bytes, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("quicsand-udp-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("big.bin"), file_bytes()).unwrap();
        Root(dir)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_bytes() -> Vec<u8> {
    let mut data = vec![0; FILE_SIZE];
    pattern::fill(7, 7, 0, &mut data);
    data
}

/// Runs `handler` on `driver` until it stops; panics at `deadline`.
fn run_until<H: Handler>(driver: &mut Driver, handler: &mut H, deadline: Instant, what: &str) {
    while driver.turn(handler).unwrap().is_continue() {
        assert!(Driver::now() < deadline, "{what}: not done in {TEST_TIMEOUT:?}");
    }
    driver.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------------
// quicsand

/// A handler that also stops when a flag is raised (or the deadline passes).
struct Stoppable<H> {
    inner: H,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl<H: Handler> Handler for Stoppable<H> {
    fn on_event(&mut self, endpoint: &mut Endpoint, handle: ConnectionHandle, event: Event, now: Instant) {
        self.inner.on_event(endpoint, handle, event, now);
    }

    fn on_turn(&mut self, endpoint: &mut Endpoint, now: Instant) -> ControlFlow<()> {
        if self.stop.load(Ordering::Relaxed) || now >= self.deadline {
            return ControlFlow::Break(());
        }
        self.inner.on_turn(endpoint, now)
    }
}

/// A quicsand server (hq-interop from `root`, and echo) in a thread.
struct QuicsandServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ServerStats>>,
}

impl QuicsandServer {
    fn start(cert: &SelfSigned, root: &Path, deadline: Instant) -> Self {
        Self::start_with_qlog(cert, root, deadline, None)
    }

    /// Like `start`, writing each connection's qlog into `qlog_dir`.
    fn start_with_qlog(cert: &SelfSigned, root: &Path, deadline: Instant, qlog_dir: Option<PathBuf>) -> Self {
        let tls = tls::server_config(vec![cert.cert.clone()], cert.key.clone_key(), alpn()).unwrap();
        let endpoint = Endpoint::new(EndpointConfig::with_seed(11), Some(ServerConfig::new(tls)));
        let mut driver = Driver::bind(localhost(), endpoint).unwrap();
        driver.set_max_wait(Duration::from_millis(20));
        let addr = driver.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut app = Stoppable {
            inner: ServerApp::new(Some(root.to_path_buf())),
            stop: stop.clone(),
            deadline,
        };
        app.inner.qlog_dir = qlog_dir;
        let thread = std::thread::spawn(move || {
            driver.run(&mut app).unwrap();
            app.inner.stats
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> ServerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for QuicsandServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn quicsand_client(
    server: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> (Driver, ConnectionHandle, Instant) {
    let tls = tls::client_config(vec![cert.clone()], vec![alpn.to_vec()]).unwrap();
    let mut driver = Driver::bind(localhost(), Endpoint::new(EndpointConfig::with_seed(22), None)).unwrap();
    let now = Driver::now();
    let conn = driver
        .endpoint()
        .connect(now, ClientConfig::new(tls), server, "localhost")
        .unwrap();
    (driver, conn, now)
}

/// Downloads `/big.bin` and `/missing` with the quicsand client; checks the file byte for byte and the
/// reset of the missing one.
fn quicsand_hq(server: SocketAddr, cert: &CertificateDer<'static>, deadline: Instant) -> HqClient {
    let (mut driver, conn, now) = quicsand_client(server, cert, b"hq-interop");
    let downloads = vec![
        Download::new("/big.bin", Sink::Memory(Vec::new())),
        Download::new("/missing", Sink::Memory(Vec::new())),
    ];
    let mut client = HqClient::new(conn, downloads, now);
    run_until(&mut driver, &mut client, deadline, "quicsand hq client");
    let big = &client.downloads[0];
    assert!(
        big.complete,
        "big.bin incomplete: {} bytes, reset {:?}",
        big.received, big.reset
    );
    let Sink::Memory(data) = &big.sink else {
        unreachable!()
    };
    assert_eq!(data.len(), FILE_SIZE);
    assert!(data[..] == file_bytes()[..], "big.bin differs from the file");
    assert!(!client.downloads[1].complete);
    assert_eq!(client.lost, Some(quicsand::ConnectionError::LocallyClosed));
    // RFC 9000 §13.4.2: loopback carries ECN marks and both servers count them, so the client's marks
    // were validated and stayed on (beyond the ten packets of the testing period).
    let stats = client.stats.as_ref().expect("stats when the downloads ended");
    assert_eq!(stats.ecn_validation_failures, 0, "{stats:?}");
    assert!(stats.ecn_marked_sent > 10, "{stats:?}");
    client
}

/// Runs the echo workload with the quicsand client; checks every byte and datagram.
fn quicsand_echo(server: SocketAddr, cert: &CertificateDer<'static>, deadline: Instant) -> EchoClient {
    let (mut driver, conn, now) = quicsand_client(server, cert, b"echo");
    let mut client = EchoClient::new(conn, ECHO, now);
    run_until(&mut driver, &mut client, deadline, "quicsand echo client");
    assert!(client.all_ok(), "{}", client.json());
    assert_eq!(client.streams_verified(), ECHO.streams);
    assert_eq!(client.bytes_verified(), ECHO.streams as u64 * ECHO.bytes);
    assert_eq!(client.datagrams_echoed, ECHO.datagrams);
    client
}

#[test]
fn quicsand_client_downloads_16_mib_from_quicsand_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("qq-hq");
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let client = quicsand_hq(server.addr, &cert.cert, deadline);
    assert_eq!(client.downloads[1].reset, Some(NOT_FOUND));
    let stats = server.stop();
    assert_eq!(stats.files_served, 1);
    assert_eq!(stats.requests_refused, 1);
    assert_eq!(stats.file_bytes, FILE_SIZE as u64);
}

#[test]
fn quicsand_client_echoes_through_quicsand_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("qq-echo");
    let qlog_dir = root.0.join("qlog");
    std::fs::create_dir_all(&qlog_dir).unwrap();
    let server = QuicsandServer::start_with_qlog(&cert, &root.0, deadline, Some(qlog_dir.clone()));
    quicsand_echo(server.addr, &cert.cert, deadline);
    let stats = server.stop();
    assert_eq!(stats.echo_streams, ECHO.streams as u64);
    assert_eq!(stats.echo_bytes, ECHO.streams as u64 * ECHO.bytes);
    assert!(stats.echo_datagrams >= u64::from(ECHO.datagrams));
    // The example server's --qlog: one JSON-SEQ file for the one connection, whole once the server
    // stopped, with the handshake in it (the client's close may come after the server stopped).
    let names: Vec<_> = std::fs::read_dir(&qlog_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["server-1.sqlog"]);
    let text = String::from_utf8(std::fs::read(qlog_dir.join("server-1.sqlog")).unwrap()).unwrap();
    let records: Vec<&str> = text.split_terminator('\n').collect();
    assert!(
        records.iter().all(|r| r.starts_with('\u{1e}')),
        "every record starts with RS"
    );
    for needle in [
        "\"qlog_format\":\"JSON-SEQ\"",
        "transport:packet_received",
        "\"handshake_complete\"",
    ] {
        assert!(text.contains(needle), "no {needle} in the qlog");
    }
    assert!(records.len() > 100, "{} records", records.len());
}

// ---------------------------------------------------------------------------------------------------
// quinn

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn quinn_client_endpoint(cert: &CertificateDer<'static>, alpn: &[u8]) -> quinn::Endpoint {
    let tls = tls::client_config(vec![cert.clone()], vec![alpn.to_vec()]).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// What a quinn hq-interop client got for one path: the body, or the reset code.
async fn quinn_get(conn: quinn::Connection, path: String) -> Result<Vec<u8>, u64> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(format!("GET {path}\r\n").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    match recv.read_to_end(usize::MAX).await {
        Ok(body) => Ok(body),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Err(code.into_inner()),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// One echo stream from a quinn client: writes `ECHO.bytes` pattern bytes and checks what comes back.
async fn quinn_echo_stream(conn: quinn::Connection, index: u64) -> u64 {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let writer = tokio::spawn(async move {
        let mut data = vec![0; ECHO.bytes as usize];
        pattern::fill(ECHO.seed, index, 0, &mut data);
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        // Keep the stream until the peer has everything.
        let _ = send.stopped().await;
    });
    let mut verified = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        assert_eq!(chunk.offset, verified);
        let good = pattern::matching_prefix(ECHO.seed, index, verified, &chunk.bytes);
        assert_eq!(
            good,
            chunk.bytes.len(),
            "stream {index}: wrong byte at {}",
            verified + good as u64
        );
        verified += good as u64;
    }
    writer.await.unwrap();
    verified
}

/// Sends `ECHO.datagrams` datagrams in groups of 10, each group resent up to 4 times until every echo
/// came back, and checks the echoes; returns how many came back.
async fn quinn_echo_datagrams(conn: &quinn::Connection) -> u32 {
    let payload = |i: u32| {
        let mut d = vec![0u8; 1000];
        d[..4].copy_from_slice(&i.to_be_bytes());
        pattern::fill(ECHO.seed, u64::from(i) | 1 << 63, 0, &mut d[4..]);
        Bytes::from(d)
    };
    let mut echoed = std::collections::BTreeSet::new();
    for group in (0..ECHO.datagrams).collect::<Vec<_>>().chunks(10) {
        for _attempt in 0..4 {
            let missing: Vec<u32> = group.iter().copied().filter(|i| !echoed.contains(i)).collect();
            if missing.is_empty() {
                break;
            }
            for i in &missing {
                conn.send_datagram(payload(*i)).unwrap();
            }
            while group.iter().any(|i| !echoed.contains(i)) {
                match tokio::time::timeout(Duration::from_millis(500), conn.read_datagram()).await {
                    Ok(d) => {
                        let d = d.unwrap();
                        let i = u32::from_be_bytes(d[..4].try_into().unwrap());
                        assert_eq!(d, payload(i), "datagram {i} came back changed");
                        echoed.insert(i);
                    }
                    Err(_elapsed) => break,
                }
            }
        }
    }
    echoed.len() as u32
}

#[test]
fn quinn_client_downloads_16_mib_from_quicsand_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("quinn-client-hq");
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let rt = runtime();
    let (big, missing) = rt.block_on(async {
        let work = async {
            let endpoint = quinn_client_endpoint(&cert.cert, b"hq-interop");
            let conn = endpoint.connect(server.addr, "localhost").unwrap().await.unwrap();
            let big = tokio::spawn(quinn_get(conn.clone(), "/big.bin".into()));
            let missing = tokio::spawn(quinn_get(conn.clone(), "/missing".into()));
            let result = (big.await.unwrap(), missing.await.unwrap());
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            result
        };
        tokio::time::timeout(TEST_TIMEOUT, work)
            .await
            .expect("quinn hq client not done in time")
    });
    let big = big.unwrap();
    assert_eq!(big.len(), FILE_SIZE);
    assert!(big == file_bytes(), "big.bin differs from the file");
    assert_eq!(missing, Err(NOT_FOUND));
    let stats = server.stop();
    assert_eq!(stats.files_served, 1);
    assert_eq!(stats.requests_refused, 1);
}

#[test]
fn quinn_client_echoes_through_quicsand_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("quinn-client-echo");
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let rt = runtime();
    let (verified, datagrams) = rt.block_on(async {
        let work = async {
            let endpoint = quinn_client_endpoint(&cert.cert, b"echo");
            let conn = endpoint.connect(server.addr, "localhost").unwrap().await.unwrap();
            let streams: Vec<_> = (0..ECHO.streams as u64)
                .map(|i| tokio::spawn(quinn_echo_stream(conn.clone(), i)))
                .collect();
            let mut verified = Vec::new();
            for s in streams {
                verified.push(s.await.unwrap());
            }
            let datagrams = quinn_echo_datagrams(&conn).await;
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            (verified, datagrams)
        };
        tokio::time::timeout(TEST_TIMEOUT, work)
            .await
            .expect("quinn echo client not done in time")
    });
    assert_eq!(verified, vec![ECHO.bytes; ECHO.streams]);
    assert_eq!(datagrams, ECHO.datagrams);
    let stats = server.stop();
    assert_eq!(stats.echo_streams, ECHO.streams as u64);
    assert!(stats.echo_datagrams >= u64::from(ECHO.datagrams));
}

/// A quinn server: hq-interop from `root` (a missing file resets the stream with [`NOT_FOUND`]) and
/// echo, on the current tokio runtime.
fn quinn_server(cert: &SelfSigned, root: PathBuf) -> (quinn::Endpoint, SocketAddr) {
    let tls = tls::server_config(vec![cert.cert.clone()], cert.key.clone_key(), alpn()).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), localhost()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(quinn_serve(incoming, root.clone()));
        }
    });
    (endpoint, addr)
}

async fn quinn_serve(incoming: quinn::Incoming, root: PathBuf) {
    let Ok(conn) = incoming.await else { return };
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let hq = alpn.as_deref() == Some(b"hq-interop".as_slice());
    if !hq {
        let echo = conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = echo.read_datagram().await {
                let _ = echo.send_datagram(d);
            }
        });
    }
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let root = root.clone();
        tokio::spawn(async move {
            if hq {
                let Ok(request) = recv.read_to_end(4096).await else {
                    return;
                };
                let file = apps::hq::parse_request(&request)
                    .and_then(|p| apps::hq::resolve(&root, &p))
                    .and_then(|p| std::fs::read(p).ok());
                match file {
                    Some(body) => {
                        let _ = send.write_all(&body).await;
                        let _ = send.finish();
                    }
                    None => {
                        let _ = send.reset(quinn::VarInt::from_u64(NOT_FOUND).unwrap());
                    }
                }
            } else {
                while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                    if send.write_all(&chunk.bytes).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish();
            }
            let _ = send.stopped().await;
        });
    }
}

#[test]
fn quicsand_client_downloads_16_mib_from_quinn_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("quinn-server-hq");
    let rt = runtime();
    let (endpoint, addr) = rt.block_on(async { quinn_server(&cert, root.0.clone()) });
    let server_cert = cert.cert.clone();
    let client = rt
        .block_on(rt.spawn_blocking(move || quicsand_hq(addr, &server_cert, deadline)))
        .unwrap();
    assert_eq!(client.downloads[1].reset, Some(NOT_FOUND));
    endpoint.close(0u32.into(), b"");
}

#[test]
fn quicsand_client_echoes_through_quinn_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("quinn-server-echo");
    let rt = runtime();
    let (endpoint, addr) = rt.block_on(async { quinn_server(&cert, root.0.clone()) });
    let server_cert = cert.cert.clone();
    let client = rt
        .block_on(rt.spawn_blocking(move || quicsand_echo(addr, &server_cert, deadline)))
        .unwrap();
    assert_eq!(client.datagrams_echoed, ECHO.datagrams);
    endpoint.close(0u32.into(), b"");
}

// ---------------------------------------------------------------------------------------------------
// GSO refused by the kernel

/// A UDP socket on 127.0.0.1 whose GSO sends the kernel refuses: with `SO_NO_CHECK` (no UDP checksum)
/// Linux fails every `sendmsg` carrying `UDP_SEGMENT` with EINVAL, as a device without segmentation
/// offload fails it with EIO, while single datagrams still go out.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn socket_refusing_gso() -> std::net::UdpSocket {
    use std::os::fd::AsRawFd;
    let socket = std::net::UdpSocket::bind(localhost()).unwrap();
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
    socket
}

/// When the kernel refuses a GSO send (EIO or EINVAL: a device or kernel without segmentation offload),
/// quinn-udp turns GSO off; the driver sends that transmit's datagrams again one by one instead of
/// dropping them all, so nothing is lost to the fallback.
#[cfg(target_os = "linux")]
#[test]
fn datagrams_of_a_refused_gso_send_go_out_one_by_one() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("gso-refused");
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let tls = tls::client_config(vec![cert.cert.clone()], vec![b"echo".to_vec()]).unwrap();
    let endpoint = Endpoint::new(EndpointConfig::with_seed(33), None);
    let mut driver = Driver::new(socket_refusing_gso(), endpoint).unwrap();
    if driver.max_gso_segments() == 1 {
        // A kernel without UDP GSO: there is no refused GSO send to recover from.
        eprintln!("no UDP GSO on this host; nothing to test");
        server.stop();
        return;
    }
    let now = Driver::now();
    let conn = driver
        .endpoint()
        .connect(now, ClientConfig::new(tls), server.addr, "localhost")
        .unwrap();
    let mut client = EchoClient::new(conn, ECHO, now);
    run_until(&mut driver, &mut client, deadline, "echo client without GSO");
    assert!(client.all_ok(), "{}", client.json());
    let stats = driver.stats();
    assert_eq!(driver.max_gso_segments(), 1, "GSO was not turned off: {stats:?}");
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    server.stop();
}

// ---------------------------------------------------------------------------------------------------
// hq-interop requests for what is not a regular file

/// A request for a named pipe under the root is refused like any other non-file. Opening a FIFO for
/// reading blocks until a writer comes, so a server that opens before it looks would stop, every
/// connection with it, on one request.
#[cfg(unix)]
#[test]
fn a_request_for_a_fifo_is_refused_without_blocking_the_server() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("fifo");
    let fifo = root.0.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let (mut driver, conn, now) = quicsand_client(server.addr, &cert.cert, b"hq-interop");
    let downloads = vec![
        Download::new("/pipe", Sink::Memory(Vec::new())),
        Download::new("/big.bin", Sink::Discard),
    ];
    let mut client = HqClient::new(conn, downloads, now);
    run_until(&mut driver, &mut client, deadline, "hq client asking for a FIFO");
    assert_eq!(client.downloads[0].reset, Some(NOT_FOUND));
    assert!(client.downloads[1].complete, "big.bin after the FIFO");
    let stats = server.stop();
    assert_eq!(stats.requests_refused, 1);
    assert_eq!(stats.files_served, 1);
}

/// The root confines what is served: a symbolic link under it that points outside (here to a file in
/// another directory) is refused like `..`, while a link that stays inside is followed.
#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_root_is_not_followed() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("symlink");
    let outside = Root::new("symlink-outside");
    std::fs::write(outside.0.join("secret.txt"), b"not for clients").unwrap();
    std::os::unix::fs::symlink(outside.0.join("secret.txt"), root.0.join("secret.txt")).unwrap();
    std::os::unix::fs::symlink(&outside.0, root.0.join("out")).unwrap();
    std::os::unix::fs::symlink(root.0.join("big.bin"), root.0.join("alias.bin")).unwrap();
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let (mut driver, conn, now) = quicsand_client(server.addr, &cert.cert, b"hq-interop");
    let downloads = vec![
        Download::new("/secret.txt", Sink::Memory(Vec::new())),
        Download::new("/out/secret.txt", Sink::Memory(Vec::new())),
        Download::new("/alias.bin", Sink::Discard),
    ];
    let mut client = HqClient::new(conn, downloads, now);
    run_until(
        &mut driver,
        &mut client,
        deadline,
        "hq client asking through symlinks",
    );
    for d in &client.downloads[..2] {
        assert_eq!(
            d.reset,
            Some(NOT_FOUND),
            "{} was served: {} bytes",
            d.path,
            d.received
        );
        assert_eq!(d.received, 0);
    }
    assert!(client.downloads[2].complete, "a link inside the root is followed");
    server.stop();
}

/// A download that fails leaves no file behind: the client example creates each output file before
/// asking for it, and a 404 left an empty file that reads like a download that worked. The complete one
/// stays, byte for byte.
#[test]
fn the_file_of_a_failed_download_is_removed_and_a_complete_one_kept() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let root = Root::new("remove-failed");
    std::fs::write(root.0.join("small.txt"), b"small file").unwrap();
    let out = Root::new("remove-failed-out");
    let server = QuicsandServer::start(&cert, &root.0, deadline);
    let (mut driver, conn, now) = quicsand_client(server.addr, &cert.cert, b"hq-interop");
    let files = apps::hq::output_files(&out.0, &["/small.txt", "/missing"]).unwrap();
    let downloads = vec![
        Download::new("/small.txt", Sink::file(files[0].clone()).unwrap()),
        Download::new("/missing", Sink::file(files[1].clone()).unwrap()),
    ];
    let mut client = HqClient::new(conn, downloads, now);
    run_until(
        &mut driver,
        &mut client,
        deadline,
        "hq client downloading into files",
    );
    assert!(client.downloads[0].complete);
    assert_eq!(client.downloads[1].reset, Some(NOT_FOUND));
    assert!(
        files[1].exists(),
        "the failed download's file was made before the request"
    );
    assert_eq!(client.remove_failed_files(), vec![files[1].clone()]);
    assert!(!files[1].exists());
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"small file");
    server.stop();
}

/// The client names each downloaded file after its path's last part: two paths with the same last part
/// would write one file through two handles, leaving bytes of both (and exit status 0), so the client
/// refuses such a list before it sends anything.
#[test]
fn downloads_that_would_share_an_output_file_are_refused() {
    let dir = Path::new("/out");
    let files = apps::hq::output_files(dir, &["/a.bin", "/x/b.bin", "/"]).unwrap();
    assert_eq!(
        files,
        [dir.join("a.bin"), dir.join("b.bin"), dir.join("index.html")]
    );
    let clash = apps::hq::output_files(dir, &["/a.bin", "/sub/a.bin"]).unwrap_err();
    assert!(clash.contains("a.bin"), "{clash}");
    assert!(apps::hq::output_files(dir, &["/", "/index.html"]).is_err());
}

/// The echo client checks every byte it gets back, so an echoed datagram cut short is a failure: the
/// server here (quinn) sends each datagram back without its second half.
#[test]
fn quicsand_echo_client_fails_on_a_shortened_datagram_echo() {
    let deadline = Driver::now() + TEST_TIMEOUT;
    let cert = self_signed().unwrap();
    let rt = runtime();
    let (endpoint, addr) = rt.block_on(async {
        let tls = tls::server_config(vec![cert.cert.clone()], cert.key.clone_key(), alpn()).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, localhost()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok(d) = conn.read_datagram().await {
                        let _ = conn.send_datagram(d.slice(..d.len() / 2));
                    }
                });
            }
        });
        (endpoint, addr)
    });
    let server_cert = cert.cert.clone();
    let client = rt
        .block_on(rt.spawn_blocking(move || {
            let (mut driver, conn, now) = quicsand_client(addr, &server_cert, b"echo");
            let workload = Workload {
                streams: 0,
                bytes: 0,
                datagrams: 3,
                seed: 1,
            };
            let mut client = EchoClient::new(conn, workload, now);
            run_until(
                &mut driver,
                &mut client,
                deadline,
                "echo client, shortened echoes",
            );
            client
        }))
        .unwrap();
    assert!(!client.all_ok(), "shortened echoes passed: {}", client.json());
    assert_eq!(client.datagrams_echoed, 0, "{}", client.json());
    endpoint.close(0u32.into(), b"");
}
