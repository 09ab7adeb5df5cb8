//! A small blocking driver that runs an [`Endpoint`] on a real UDP socket (feature `udp`).
//!
//! This module is the crate's I/O edge: the only place that owns a socket and reads the operating
//! system's clock. Everything else stays sans-IO. The [`Driver`] owns a [`std::net::UdpSocket`] through
//! [`quinn_udp`], which gives it
//!
//! - GSO on send: a [`Transmit`] with a `segment_size` leaves in one system call (split into several when
//!   the kernel takes fewer segments than the transmit holds);
//! - GRO and `recvmmsg` on receive: one system call hands over many datagrams, which the driver splits at
//!   their stride;
//! - ECN marks in both directions, and the local address each datagram arrived at (pktinfo), which the
//!   endpoint passes back as the source address of its answers (a datagram sent to a multicast or
//!   broadcast address is dropped by the endpoint, unanswered);
//! - on an IPv6 socket, IPv4 peers: the endpoint knows them by their IPv4 addresses, which the driver
//!   maps to IPv4-mapped IPv6 addresses when sending (an IPv6 destination on an IPv4 socket is a send
//!   error, counted in [`DriverStats::send_errors`]).
//!
//! It runs the crate's drive rule in a loop, with no async runtime and no threads:
//!
//! 1. read the clock; when [`Endpoint::poll_timeout`] has passed, call [`Endpoint::handle_timeout`];
//! 2. drain [`Endpoint::poll_transmit`] onto the socket, then hand each [`Endpoint::poll_event`] to the
//!    caller's [`Handler`], repeating while the handler's calls produce more (up to a bound: what is
//!    left goes out in the next turn, which then does not block);
//! 3. receive what the socket holds and feed each received buffer (one datagram, or several coalesced
//!    by GRO) to [`Endpoint::handle_batch`]; when it holds nothing,
//!    wait for a datagram or the next deadline (the endpoint's or the handler's), whichever comes first.
//!    On Unix that is one `poll` of the socket (`ppoll` on Linux, whose timeout is in nanoseconds, fine
//!    enough for pacing). Elsewhere, socket read timeouts have the kernel tick's granularity, so a far
//!    deadline is waited for in the socket with a timeout that wakes early and a near one in short sleeps.
//!
//! ```no_run
//! use quicsand::crypto::tls;
//! use quicsand::udp::Driver;
//! use quicsand::{ClientConfig, Endpoint, EndpointConfig, Event};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = tls::client_config(vec![/* trusted roots */], vec![b"echo".to_vec()])?;
//! // Seeded from the operating system: connection IDs and keys must not be guessable on a network.
//! let config = EndpointConfig { seed: quicsand::udp::os_seed()?, ..EndpointConfig::default() };
//! let mut driver = Driver::bind("0.0.0.0:0".parse()?, Endpoint::new(config, None))?;
//! let now = Driver::now();
//! let conn = driver.endpoint().connect(now, ClientConfig::new(tls), "127.0.0.1:4433".parse()?, "localhost")?;
//! let mut done = false;
//! while !done {
//!     driver.turn(&mut |endpoint: &mut Endpoint, _handle, event: Event, now| match event {
//!         Event::Connected => {
//!             let _ = endpoint.close(now, conn, 0, b"bye");
//!         }
//!         Event::ConnectionLost { .. } => done = true,
//!         _ => {}
//!     })?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A server with many clients, or a fast transfer, wants larger kernel buffers than the defaults: with
//! the defaults, 50 clients on loopback already lose datagrams in the kernel (`RcvbufErrors` in
//! `/proc/net/snmp`). See [`Driver::set_buffer_sizes`].
//!
//! The endpoint belongs to the driver's thread. Other threads hand it work through a channel that the
//! handler drains in [`Handler::on_turn`], and end the driver's wait with a [`Waker`] (from
//! [`Driver::waker`]) so that the work does not wait for the next deadline.
//!
//! `docs/embedding.md` shows how to write the same loop on another event loop (tokio, mio, io_uring).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};

use crate::{ConnectionHandle, Datagram, EcnCodepoint, Endpoint, Event, Transmit};

#[cfg(test)]
mod tests;

/// Room for one received buffer: the largest UDP payload, which is also the most a GRO batch holds.
const RECV_SLOT: usize = 64 * 1024;
// Without `poll` (non-Unix systems, see `Driver::wait`) the driver waits with socket read timeouts. The
// constants below were tuned on Linux, which used this path until `poll` replaced it; on other systems
// they are unmeasured.

/// Without `poll`: waits at least this long block in the socket; shorter ones are slept.
#[cfg(not(unix))]
const COARSE_WAIT_MIN: Duration = Duration::from_millis(20);
/// How much earlier than the deadline a wait in the socket asks to be woken, to absorb the kernel tick.
#[cfg(not(unix))]
const COARSE_MARGIN: Duration = Duration::from_millis(10);
/// A long wait in the socket asks to be woken this fraction of it early, at least: Linux's timer wheel
/// fires a timeout of more than 63 ticks (252 ms at 250 Hz, 63 ms at 1000 Hz) up to an eighth of it late
/// (its coarser levels batch timers: 8 ticks from 63 ticks on, 64 ticks from 504 on, ...).
#[cfg(not(unix))]
const COARSE_FRACTION: u32 = 7;
/// With `poll`: how long a wait that found an error but nothing to read sleeps before the driver looks
/// again (see `Driver::wait`).
#[cfg(unix)]
const ERROR_SLICE: Duration = Duration::from_micros(500);
/// With `poll`: the longest one wait lasts. A longer `max_wait` with no deadline only ends the turn
/// sooner, and `poll` takes its timeout in milliseconds as a C `int` where there is no `ppoll` (macOS,
/// OpenBSD, illumos): over about 24.8 days it fails with EINVAL.
#[cfg(unix)]
const LONGEST_POLL: Duration = Duration::from_secs(86_400);
/// Without `poll`: the longest sleep between two looks at the socket during a short wait.
#[cfg(not(unix))]
const FINE_SLICE: Duration = Duration::from_micros(500);
/// Events handed out in one pass of "flush, then hand out events, again while events come" (twice a
/// turn: before and after `Handler::on_turn`), so that a handler whose calls queue further events (one
/// that reconnects whenever a connection is lost, and loses the new one at once) cannot keep a turn
/// going and starve receiving. Events left over are handed out in the next turn, which does not block.
const MAX_PROCESS_EVENTS: usize = 1024;

/// What the application does with the endpoint's events; see [`Driver::turn`].
///
/// Any `FnMut(&mut Endpoint, ConnectionHandle, Event, Instant)` closure is a handler that only looks at
/// events.
pub trait Handler {
    /// An event of connection `handle`, at `now`. The handler may call into the endpoint (read and write
    /// streams, open connections, close them); the driver sends what that produces.
    fn on_event(&mut self, endpoint: &mut Endpoint, handle: ConnectionHandle, event: Event, now: Instant);

    /// Called once per turn, after the events: a place for work that no event announces (progress, the
    /// handler's own timers). Returning `ControlFlow::Break` makes [`Driver::run`] return.
    fn on_turn(&mut self, _endpoint: &mut Endpoint, _now: Instant) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// The handler's own next deadline, if any: the driver wakes up for it and calls
    /// [`on_turn`](Self::on_turn).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

impl<F> Handler for F
where
    F: FnMut(&mut Endpoint, ConnectionHandle, Event, Instant),
{
    fn on_event(&mut self, endpoint: &mut Endpoint, handle: ConnectionHandle, event: Event, now: Instant) {
        self(endpoint, handle, event, now)
    }
}

/// 32 bytes from the operating system's RNG, for [`EndpointConfig::seed`](crate::EndpointConfig::seed):
/// an endpoint on a real network needs a seed nobody can guess (the engine itself takes randomness only
/// from its seed, so that simulations repeat).
pub fn os_seed() -> io::Result<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| io::Error::other("the operating system's RNG failed"))?;
    Ok(seed)
}

/// Counters of a [`Driver`], from [`Driver::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Datagrams received and handed to the endpoint.
    pub datagrams_received: u64,
    /// Receive system calls that returned data.
    pub recv_calls: u64,
    /// Received buffers that held more than one datagram (GRO).
    pub gro_batches: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Send system calls.
    pub send_calls: u64,
    /// Send calls that carried more than one datagram (GSO).
    pub gso_batches: u64,
    /// Datagrams whose sending failed (logged and dropped: QUIC recovers from loss).
    pub send_errors: u64,
    /// Receive errors that concern a datagram or a peer (ICMP reports, memory pressure): logged and
    /// ignored. Errors of an unusable socket end the turn instead.
    pub recv_errors: u64,
    /// Times the driver blocked in the socket waiting for a datagram or a deadline.
    pub waits: u64,
    /// Wake-ups from a [`Waker`] received (not handed to the endpoint).
    pub wakes: u64,
}

/// Wakes a [`Driver`] from another thread, from [`Driver::waker`]: [`wake`](Self::wake) ends the wait of
/// the driver's turn (or, when the driver is not waiting, keeps the next turn from blocking), and the
/// turn after that calls [`Handler::on_turn`]. The endpoint belongs to the driver's thread, so work for it
/// from other threads goes through a channel the handler drains in `on_turn`; send on the channel first,
/// then wake, and no message waits for the driver's next deadline.
///
/// A wake-up is an empty datagram to the driver's socket from a socket of its own, on the loopback
/// address (or on the driver's own address, when it is bound to one); the driver recognises it by its
/// source and does not hand it to the endpoint. Wakes between two turns are one wake-up: a producer
/// that wakes once per message would otherwise fill the driver's receive buffer with empty datagrams
/// (a few hundred fill the default one), and the kernel would drop the peers' datagrams behind them.
#[derive(Debug, Clone)]
pub struct Waker {
    shared: std::sync::Arc<WakerShared>,
}

/// What a driver and its wakers share.
#[derive(Debug)]
struct WakerShared {
    socket: UdpSocket,
    /// Whether a wake-up went since the driver's last turn started calling [`Handler::on_turn`]: a
    /// wake then has nothing to add, as that wake-up ends a wait after the work sent before it.
    sent: AtomicBool,
}

impl Waker {
    /// Wakes the driver. Errors are those of sending on a loopback socket (none in normal operation).
    pub fn wake(&self) -> io::Result<()> {
        // Acquire-release, paired with the driver's swap before `on_turn`: the work sent before a wake
        // that sends nothing is seen by the `on_turn` after the driver clears the flag.
        if self.shared.sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match self.shared.socket.send(&[]) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Nothing went: the next wake tries again.
                self.shared.sent.store(false, Ordering::Release);
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// A blocking event loop for one [`Endpoint`] on one UDP socket. See the [module documentation](self).
pub struct Driver {
    socket: UdpSocket,
    state: UdpSocketState,
    endpoint: Endpoint,
    /// `BATCH_SIZE` receive slots of `RECV_SLOT` bytes.
    recv_buf: Vec<u8>,
    metas: Vec<RecvMeta>,
    send_buf: Vec<u8>,
    /// The socket is IPv6: IPv4 addresses are sent to in their IPv4-mapped form.
    ipv6: bool,
    max_wait: Duration,
    stats: DriverStats,
    /// What [`Waker`]s share and the address they send from, once [`Driver::waker`] made their socket.
    waker: Option<(std::sync::Arc<WakerShared>, SocketAddr)>,
    /// Errors the next receive calls return instead of calling the system: the tests' way to reach
    /// errors a loopback socket does not produce.
    #[cfg(test)]
    recv_faults: std::collections::VecDeque<io::Error>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("socket", &self.socket)
            .field("endpoint", &self.endpoint)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Binds a UDP socket to `addr` and drives `endpoint` on it.
    pub fn bind(addr: SocketAddr, endpoint: Endpoint) -> io::Result<Self> {
        Self::new(UdpSocket::bind(addr)?, endpoint)
    }

    /// Drives `endpoint` on `socket`, which the driver configures (non-blocking mode, ECN and pktinfo
    /// reporting, GRO where available) and owns from now on.
    ///
    /// An endpoint whose [`seed`](crate::EndpointConfig::seed) is all zeros (the default, meant for tests
    /// and simulations) is refused with `InvalidInput`: on a network, whoever knows the seed predicts its
    /// connection IDs and forges its stateless resets and tokens. Seed it with [`os_seed`].
    ///
    /// On a platform where quinn-udp cannot set the IP don't-fragment bit, path MTU discovery is turned
    /// off for the endpoint's connections ([`Endpoint::set_path_mtu_discovery`]).
    pub fn new(socket: UdpSocket, mut endpoint: Endpoint) -> io::Result<Self> {
        if endpoint.has_zero_seed() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the endpoint's seed is all zeros (the EndpointConfig default, for tests and simulations): \
                 seed it from the operating system with quicsand::udp::os_seed() on a network",
            ));
        }
        let state = UdpSocketState::new((&socket).into())?;
        if state.may_fragment() {
            // RFC 9000 §14: datagrams "MUST NOT be fragmented at the IP layer". Without the don't-fragment
            // bit, a path MTU probe larger than the path could arrive in fragments and be taken as the
            // path's size; quinn turns discovery off for such sockets too.
            tracing::info!("the socket cannot forbid IP fragmentation: path MTU discovery is off");
            endpoint.set_path_mtu_discovery(false);
        }
        // `UdpSocketState::new` already made it non-blocking; the driver relies on that (see `wait`).
        socket.set_nonblocking(true)?;
        let ipv6 = socket.local_addr()?.is_ipv6();
        Ok(Self {
            ipv6,
            socket,
            state,
            endpoint,
            recv_buf: vec![0; BATCH_SIZE * RECV_SLOT],
            metas: vec![RecvMeta::default(); BATCH_SIZE],
            send_buf: Vec::new(),
            max_wait: Duration::from_millis(100),
            stats: DriverStats::default(),
            waker: None,
            #[cfg(test)]
            recv_faults: std::collections::VecDeque::new(),
        })
    }

    /// The clock the driver runs on. Use it for `now` arguments of calls made outside a [`Handler`].
    // The driver is the crate's I/O edge: the only code allowed to read the OS clock.
    #[allow(clippy::disallowed_methods)]
    pub fn now() -> Instant {
        Instant::now()
    }

    /// The endpoint, for calls made between turns (connecting, closing).
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Gives the endpoint back, dropping the socket.
    pub fn into_endpoint(self) -> Endpoint {
        self.endpoint
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A handle that wakes the driver from another thread: see [`Waker`]. The first call makes a socket
    /// on the loopback address of the driver's family (or on the driver's own address, when it is bound
    /// to one), which every waker of this driver shares.
    ///
    /// Fails with `InvalidInput` when the driver's socket is connected: it takes datagrams from its peer
    /// only, so the kernel would drop every wake-up.
    pub fn waker(&mut self) -> io::Result<Waker> {
        if let Some((shared, _)) = &self.waker {
            return Ok(Waker {
                shared: shared.clone(),
            });
        }
        if self.socket.peer_addr().is_ok() {
            // The kernel would also answer each wake-up with an ICMP "port unreachable", failing the
            // next wake with ECONNREFUSED.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a connected socket takes datagrams from its peer only: no waker can reach it",
            ));
        }
        let local = self.socket.local_addr()?;
        let target = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), local.port())
            }
            _ => local,
        };
        let unspecified: IpAddr = match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
        socket.connect(target)?;
        // A wake never blocks the thread that wakes (see `Waker::wake`).
        socket.set_nonblocking(true)?;
        let from = socket.local_addr()?;
        let shared = std::sync::Arc::new(WakerShared {
            socket,
            sent: AtomicBool::new(false),
        });
        self.waker = Some((shared.clone(), from));
        Ok(Waker { shared })
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The most datagrams the kernel takes in one GSO send (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// The most datagrams the kernel coalesces into one received buffer (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Sets the longest the driver blocks in one turn when no deadline comes sooner (default 100 ms), so
    /// [`Handler::on_turn`] runs at least that often.
    pub fn set_max_wait(&mut self, max_wait: Duration) {
        self.max_wait = max_wait.max(Duration::from_micros(1));
    }

    /// Sets the socket's kernel receive and send buffer sizes (the kernel may cap them).
    pub fn set_buffer_sizes(&self, recv: usize, send: usize) -> io::Result<()> {
        self.state.set_recv_buffer_size((&self.socket).into(), recv)?;
        self.state.set_send_buffer_size((&self.socket).into(), send)
    }

    /// Calls [`turn`](Self::turn) until the handler's [`on_turn`](Handler::on_turn) breaks, then sends
    /// what is left to send (a CONNECTION_CLOSE, say) and returns.
    pub fn run(&mut self, handler: &mut impl Handler) -> io::Result<()> {
        while self.turn(handler)?.is_continue() {}
        self.flush()
    }

    /// One turn of the loop: expired timers, sending, events, [`Handler::on_turn`], then one receive,
    /// blocking until a datagram arrives or the next deadline (at most the
    /// [`max wait`](Self::set_max_wait)) when the socket holds nothing.
    ///
    /// Returns what `on_turn` returned. A failed send is counted and logged (QUIC recovers from loss), and
    /// so is a receive error that concerns one datagram or peer (an ICMP report such as
    /// `ECONNREFUSED`, `ENOBUFS`): the turn goes on. Only an error that means the socket is unusable
    /// (`EBADF`, `ENOTSOCK`, `EINVAL`) ends the turn with the error.
    pub fn turn(&mut self, handler: &mut impl Handler) -> io::Result<ControlFlow<()>> {
        let now = Self::now();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.process(handler, now)?;
        if let Some((shared, _)) = &self.waker {
            // Wakes from now on send a wake-up again (see `Waker::wake`).
            shared.sent.swap(false, Ordering::AcqRel);
        }
        let flow = handler.on_turn(&mut self.endpoint, now);
        let events_left = self.process(handler, now)?;
        if flow.is_break() {
            return Ok(flow);
        }
        if self.receive()? || events_left {
            return Ok(flow);
        }
        let deadline = [self.endpoint.poll_timeout(), handler.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let now = Self::now();
        let wait = match deadline {
            Some(t) => t.saturating_duration_since(now).min(self.max_wait),
            None => self.max_wait,
        };
        if !wait.is_zero() && self.wait(wait)? {
            self.receive()?;
        }
        Ok(flow)
    }

    /// Follows the drive rule after an input: flush, hand out events, again while events come, up to
    /// [`MAX_PROCESS_EVENTS`] events; `true` when that many went out, and more may be waiting.
    fn process(&mut self, handler: &mut impl Handler, now: Instant) -> io::Result<bool> {
        let mut budget = MAX_PROCESS_EVENTS;
        loop {
            self.flush()?;
            let mut any = false;
            while budget > 0 {
                let Some((handle, event)) = self.endpoint.poll_event() else {
                    break;
                };
                any = true;
                budget -= 1;
                handler.on_event(&mut self.endpoint, handle, event, now);
            }
            if !any {
                return Ok(false);
            }
            if budget == 0 {
                self.flush()?;
                return Ok(true);
            }
        }
    }

    /// Sends everything the endpoint has to send now: for calls made on [`endpoint`](Self::endpoint)
    /// between turns, when no further turn follows (the next turn would send it too).
    pub fn flush(&mut self) -> io::Result<()> {
        let now = Self::now();
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.send_buf) {
            let contents = self.send_buf.get(..t.size).unwrap_or(&self.send_buf);
            send(
                &self.socket,
                &self.state,
                &mut self.stats,
                &for_socket(t, self.ipv6),
                contents,
            )?;
        }
        Ok(())
    }

    /// Receives one batch without blocking and feeds it to the endpoint; `false` when there was nothing.
    fn receive(&mut self) -> io::Result<bool> {
        let count = match self.recv_batch() {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if is_fatal(&e) => return Err(e),
            // The kernel hands an ICMP report over once (and clears it), so this is no busy loop: the next
            // turn reads on.
            Err(e) => {
                self.recv_error(&e);
                return Ok(true);
            }
        };
        self.stats.recv_calls += 1;
        // The datagrams were on the socket before this instant; the clock is read after the system call.
        let now = Self::now();
        let waker = self.waker.as_ref().map(|(_, from)| *from);
        for (meta, slot) in self.metas.iter().zip(self.recv_buf.chunks(RECV_SLOT)).take(count) {
            if waker == Some(meta.addr) {
                // A wake-up: it has done its work by ending the wait; the endpoint never sees it.
                self.stats.wakes += 1;
                continue;
            }
            let data = slot.get(..meta.len).unwrap_or(slot);
            let (batch, stride, datagrams) = received_batch(meta, data);
            if datagrams > 1 {
                self.stats.gro_batches += 1;
            }
            self.stats.datagrams_received += datagrams as u64;
            self.endpoint.handle_batch(now, batch, stride);
        }
        Ok(true)
    }

    /// One receive system call into the receive slots: the number of slots filled.
    fn recv_batch(&mut self) -> io::Result<usize> {
        #[cfg(test)]
        if let Some(e) = self.recv_faults.pop_front() {
            return Err(e);
        }
        // On the stack: a vector here was an allocation per receive call.
        let mut slots = self.recv_buf.chunks_mut(RECV_SLOT);
        let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        self.state.recv((&self.socket).into(), &mut bufs, &mut self.metas)
    }

    /// Waits until a datagram may be waiting or `timeout` passes; `true` when one may be waiting.
    ///
    /// One `poll` of the socket for reading, woken by a datagram at once and by the deadline to within the
    /// timer slack (Linux's `ppoll` takes the timeout in nanoseconds and sleeps on a high-resolution
    /// timer), or after [`LONGEST_POLL`]. Readiness with an error pending (an ICMP report) also counts as
    /// "may be waiting": the receive that follows takes the error. Errors that stay queued (a socket with
    /// `IP_RECVERR`, which the driver does not set, keeps them until read with `MSG_ERRQUEUE`) would make
    /// every poll return at once, so a readiness without data is followed by a sleep of
    /// [`ERROR_SLICE`]: such a socket costs a turn every 500 µs, not a spin.
    #[cfg(unix)]
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        self.stats.waits += 1;
        let timespec = Timespec::try_from(timeout.min(LONGEST_POLL)).unwrap_or(Timespec {
            tv_sec: 86_400,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
        match poll(&mut fds, Some(&timespec)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => Ok(false),
            Ok(_) if fds[0].revents().contains(PollFlags::IN) => Ok(true),
            // An error and nothing to read (or a closed descriptor): the receive that follows takes the
            // error. A socket whose error queue keeps errors (`IP_RECVERR`, set by whoever made it) stays
            // in this state, so what is left of the wait is slept in a slice rather than polled at once.
            Ok(_) => {
                std::thread::sleep(timeout.min(ERROR_SLICE));
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until a datagram may be waiting or `timeout` passes; `true` when one may be waiting (without
    /// `poll`, where std is all there is; the Linux figures below are from when Linux used this path).
    ///
    /// Long waits block in the socket: quinn-udp receives with `recvmmsg`, which on a blocking socket
    /// would wait to fill every slot, so the socket stays non-blocking and the wait is a one-byte
    /// `MSG_PEEK` with the socket switched to blocking mode and its read timeout (`SO_RCVTIMEO`) set.
    /// That timeout has the granularity of the kernel tick (Linux rounds it up to whole jiffies; 8 ms was
    /// measured on a 250 Hz kernel even for 1 µs), far coarser than pacing and ACK timers, and a long one
    /// fires up to an eighth of itself late (the timer wheel's outer levels), so the socket is asked to
    /// wake [`COARSE_MARGIN`] or a [`COARSE_FRACTION`]th of the wait early, whichever is more (see
    /// `socket_wait`). The rest of the wait is left to the next turns: a long rest waits in the socket
    /// again, and a short one, like every short wait, is slept in slices of at most [`FINE_SLICE`]
    /// (`nanosleep` is precise to tens of microseconds), looking at the socket after each.
    #[cfg(not(unix))]
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        self.stats.waits += 1;
        let Some(read_timeout) = socket_wait(timeout) else {
            std::thread::sleep(timeout.min(FINE_SLICE));
            return Ok(true);
        };
        self.socket.set_read_timeout(Some(read_timeout))?;
        self.socket.set_nonblocking(false)?;
        let peeked = self.socket.peek_from(&mut [0u8; 1]);
        self.socket.set_nonblocking(true)?;
        match peeked {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) if is_fatal(&e) => Err(e),
            // A truncated peek still means a datagram is waiting (Windows reports it as an error).
            Err(e) if is_truncated(&e) => Ok(true),
            // A pending error (an ICMP report) is handed over once, to this peek: counted here.
            Err(e) => {
                self.recv_error(&e);
                Ok(true)
            }
        }
    }

    /// Counts a receive error that concerns a datagram or a peer, not the socket, and logs it.
    fn recv_error(&mut self, e: &io::Error) {
        self.stats.recv_errors += 1;
        tracing::debug!(error = %e, "udp receive error");
    }
}

/// The read timeout for a wait of `timeout` in the socket, or `None` when the wait is too short for the
/// socket and is slept in slices (see `Driver::wait` without `poll`).
#[cfg(not(unix))]
fn socket_wait(timeout: Duration) -> Option<Duration> {
    if timeout < COARSE_WAIT_MIN {
        return None;
    }
    let margin = COARSE_MARGIN.max(timeout / COARSE_FRACTION);
    timeout.checked_sub(margin).filter(|d| !d.is_zero())
}

/// Receive errors that mean the socket itself is unusable: it was closed under the driver or is no
/// socket (`EBADF`, `ENOTSOCK`), the call was malformed (`EFAULT`, `EINVAL`), or the system lacks it
/// (`ENOSYS`). The driver stops on these, since every later call would fail the same way.
///
/// Every other receive error concerns one datagram or one peer, and the driver counts it and goes on,
/// as a server must not go down for one bad datagram: ICMP reports of an earlier send (on a connected
/// socket, or one with `IP_RECVERR`): `ECONNREFUSED`, `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`,
/// `EMSGSIZE` (fragmentation needed), `EACCES` (administratively prohibited), `EPROTO`; `ENOBUFS` and
/// `ENOMEM` under memory pressure; `ECONNRESET`, which QUIC does not define and an attacker can cause
/// (quinn ignores it for that reason). quinn's own endpoint goes further and retries every receive error.
fn is_fatal(e: &io::Error) -> bool {
    // Not `ErrorKind::Unsupported`: the standard library gives that kind to EOPNOTSUPP too, which an ICMP
    // "source route failed" turns into.
    if e.kind() == io::ErrorKind::InvalidInput {
        return true;
    }
    #[cfg(unix)]
    let unusable = [libc::EBADF, libc::ENOTSOCK, libc::EFAULT, libc::ENOSYS];
    // WSAEBADF, WSAEFAULT, WSAENOTSOCK.
    #[cfg(windows)]
    let unusable = [10_009, 10_014, 10_038];
    #[cfg(not(any(unix, windows)))]
    let unusable: [i32; 0] = [];
    e.raw_os_error().is_some_and(|code| unusable.contains(&code))
}

/// A receive into a buffer shorter than the datagram, which Windows reports as an error (WSAEMSGSIZE);
/// Unix truncates silently.
#[cfg(not(unix))]
fn is_truncated(e: &io::Error) -> bool {
    cfg!(windows) && e.raw_os_error() == Some(10_040)
}

/// `t` with its addresses in the socket's family: IPv4 ones in their IPv4-mapped form on an IPv6 socket
/// (the endpoint names IPv4 peers by their IPv4 addresses).
fn for_socket(t: Transmit, ipv6: bool) -> Transmit {
    let map = |ip: IpAddr| match ip {
        IpAddr::V4(v4) if ipv6 => IpAddr::V6(v4.to_ipv6_mapped()),
        other => other,
    };
    // An IPv6 destination keeps its flow label and scope (a link-local peer needs the latter).
    let destination = match t.destination {
        SocketAddr::V4(v4) if ipv6 => SocketAddr::new(map(IpAddr::V4(*v4.ip())), v4.port()),
        other => other,
    };
    Transmit {
        destination,
        src_ip: t.src_ip.map(map),
        ..t
    }
}

/// Sends one transmit, in as many GSO calls as the kernel's segment limit needs.
///
/// The limit is read again before each call: when the kernel refuses a GSO send (EIO or EINVAL, from a
/// device or kernel without segmentation offload) quinn-udp lowers it to 1, and the refused segments go
/// again one by one rather than being dropped.
fn send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    stats: &mut DriverStats,
    t: &Transmit,
    contents: &[u8],
) -> io::Result<()> {
    let segment = t.segment_size.unwrap_or(contents.len()).max(1);
    let mut rest = contents;
    while !rest.is_empty() {
        let max_segments = state.max_gso_segments();
        let len = gso_chunk_len(rest.len(), t.segment_size, max_segments).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        let segments = chunk.len().div_ceil(segment);
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: t.ecn.map(to_quinn_ecn),
            contents: chunk,
            segment_size: (segments > 1).then_some(segment),
            src_ip: t.src_ip,
        };
        stats.send_calls += 1;
        match send_blocking(socket, state, &transmit) {
            Ok(()) => {
                stats.datagrams_sent += segments as u64;
                if segments > 1 {
                    stats.gso_batches += 1;
                }
            }
            // GSO was turned off by this failure: the same bytes again, in smaller calls. The limit only
            // goes down, so this repeats at most once per segment limit.
            Err(e) if segments > 1 && state.max_gso_segments() < max_segments => {
                tracing::debug!(error = %e, "udp GSO send refused; sending its datagrams one by one");
                continue;
            }
            Err(e) => {
                stats.send_errors += segments as u64;
                tracing::debug!(error = %e, destination = %t.destination, "udp send error");
            }
        }
        rest = tail;
    }
    Ok(())
}

/// `try_send`, waiting for room in the socket's send buffer when it is full.
fn send_blocking(socket: &UdpSocket, state: &UdpSocketState, t: &quinn_udp::Transmit<'_>) -> io::Result<()> {
    match state.try_send(socket.into(), t) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // The send buffer is full: wait for room in blocking mode rather than drop the datagrams.
            socket.set_nonblocking(false)?;
            let sent = state.try_send(socket.into(), t);
            socket.set_nonblocking(true)?;
            sent
        }
        other => other,
    }
}

/// The bytes of `size` that one send call carries: whole transmits when the kernel takes all their
/// segments and they fit one UDP send, else as many segments as it takes and fit.
fn gso_chunk_len(size: usize, segment_size: Option<usize>, max_segments: usize) -> usize {
    match segment_size {
        Some(s) if s > 0 => {
            let segments = max_segments
                .max(1)
                .min((crate::datagram::MAX_TRANSMIT_SIZE / s).max(1));
            s.saturating_mul(segments).min(size).max(1)
        }
        _ => size.max(1),
    }
}

/// One received buffer as a batch for [`Endpoint::handle_batch`], copied out of the receive slot into
/// one allocation: the batch, its stride and the number of datagrams in it (several when GRO coalesced
/// them at `meta.stride`). The endpoint splits it without copying, and copies out of it what it holds
/// for long.
fn received_batch(meta: &RecvMeta, data: &[u8]) -> (Datagram, usize, usize) {
    let stride = if meta.stride == 0 { data.len() } else { meta.stride }.max(1);
    let batch = Datagram {
        remote: meta.addr,
        local: meta.dst_ip,
        ecn: meta.ecn.map(from_quinn_ecn),
        payload: BytesMut::from(data),
    };
    (batch, stride, data.len().div_ceil(stride).max(1))
}

fn to_quinn_ecn(ecn: EcnCodepoint) -> quinn_udp::EcnCodepoint {
    match ecn {
        EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
    }
}

fn from_quinn_ecn(ecn: quinn_udp::EcnCodepoint) -> EcnCodepoint {
    match ecn {
        quinn_udp::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
        quinn_udp::EcnCodepoint::Ce => EcnCodepoint::Ce,
    }
}
