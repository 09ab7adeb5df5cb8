//! What a simulation drives: the [`Engine`] trait, and quicsand's [`Endpoint`] with an [`App`] as its
//! built-in implementation.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{App, AsAny, NodeCtx, NodeId};
use crate::{ConnectionHandle, Datagram, EcnCodepoint, Endpoint, Event, Transmit};

/// Where and when an [`Engine`] call happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineCtx {
    /// The node.
    pub node: NodeId,
    /// The node's current address (it changes when the node is rebound).
    pub addr: SocketAddr,
    /// The virtual time.
    pub now: Instant,
    /// The simulation's epoch, the origin of virtual time.
    pub epoch: Instant,
}

impl EngineCtx {
    /// The virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }
}

/// A sans-IO protocol engine together with the application that uses it: one node of a
/// [`Simulation`](super::Simulation).
///
/// Nodes made with [`Simulation::add_node`](super::Simulation::add_node) are quicsand [`Endpoint`]s
/// with an [`App`]; any other engine (another QUIC implementation, to test interoperability under
/// loss and reordering) joins a simulation through this trait and
/// [`Simulation::add_engine`](super::Simulation::add_engine).
///
/// The simulator follows the drive rule of the crate root. Once per step in which the node has
/// something to do, and again as long as a round did anything, it:
///
/// 1. calls [`start`](Self::start) once, at the node's first step;
/// 2. calls [`handle_timeout`](Self::handle_timeout) if [`poll_timeout`](Self::poll_timeout) is due;
/// 3. drains [`poll_transmit`](Self::poll_transmit);
/// 4. calls [`poll_events`](Self::poll_events), where the application reacts to what happened;
/// 5. offers the datagrams of step 3 to the network.
///
/// Datagrams arrive through [`handle_datagram`](Self::handle_datagram) (or, with batching on,
/// [`handle_batch`](Self::handle_batch)) before the node's rounds of the step in which they are
/// delivered. To stay deterministic, an engine must draw all its randomness
/// from the seed [`Simulation::add_engine`](super::Simulation::add_engine) gives it and never read a
/// clock.
pub trait Engine: AsAny {
    /// Called once, at the node's first step: the application starts (a client connects, for example).
    fn start(&mut self, ctx: &EngineCtx);
    /// A datagram from `from` arrived at `now`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut);
    /// As [`handle_datagram`](Self::handle_datagram), with the ECN codepoint of its IP header (what the
    /// sender's [`Transmit::ecn`] asked for, as the link left it). Engines that take ECN marks override
    /// it; the default drops the codepoint.
    fn handle_datagram_with_ecn(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<EcnCodepoint>,
        payload: BytesMut,
    ) {
        let _ = ecn;
        self.handle_datagram(now, from, payload);
    }
    /// Datagrams that arrived together at `now`, as a socket's receive offload (GRO) hands them over:
    /// `payload` holds datagrams of `stride` bytes each (the last may be shorter), all from `from` with
    /// the ECN codepoint `ecn`. The simulator calls it only when batching is on (see
    /// [`Simulation::set_batching`](super::Simulation::set_batching)), for two datagrams or more.
    /// Engines that take such buffers whole override it; the default splits the buffer and hands each
    /// datagram, in order, to [`handle_datagram_with_ecn`](Self::handle_datagram_with_ecn).
    fn handle_batch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<EcnCodepoint>,
        mut payload: BytesMut,
        stride: usize,
    ) {
        let stride = if stride == 0 { payload.len() } else { stride };
        loop {
            if payload.len() <= stride {
                self.handle_datagram_with_ecn(now, from, ecn, payload);
                return;
            }
            let datagram = payload.split_to(stride);
            self.handle_datagram_with_ecn(now, from, ecn, datagram);
        }
    }
    /// The earliest instant at which the node wants [`handle_timeout`](Self::handle_timeout): engine
    /// timers and application wake-ups alike.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Runs everything due at `ctx.now`.
    fn handle_timeout(&mut self, ctx: &EngineCtx);
    /// The next datagram, or batch of equal-size datagrams, to send, written into `buf` (cleared or
    /// overwritten as the engine likes) and described as by [`Endpoint::poll_transmit`].
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;
    /// Hands the engine's pending events to its application, and reports each to `report` (a
    /// connection label and the event, both recorded in the trace by their `Debug` text). Returns
    /// whether there were any: the application may have given the engine work, so the simulator drains
    /// it again.
    fn poll_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn fmt::Debug, &dyn fmt::Debug),
    ) -> bool;
}

/// How many recent `Debug` texts a [`TextCache`] keeps.
const TEXT_CACHE: usize = 16;

/// The `Debug` texts of recently reported values. A transfer reports the same few events over and over
/// (`Readable` and `Writable` of a few streams, of one connection), and formatting them each time
/// costs more than the rest of the simulator's work per event.
struct TextCache<T> {
    entries: Vec<(T, String)>,
    /// The entry to replace next once full.
    next: usize,
}

impl<T: Clone + PartialEq + fmt::Debug> TextCache<T> {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
            next: 0,
        }
    }

    /// `format!("{value:?}")`, from the cache when it holds an equal value.
    fn text(&mut self, value: &T) -> &str {
        let i = match self.entries.iter().position(|(v, _)| v == value) {
            Some(i) => i,
            None if self.entries.len() < TEXT_CACHE => {
                self.entries.push((value.clone(), format!("{value:?}")));
                self.entries.len() - 1
            }
            None => {
                let i = self.next;
                self.next = (i + 1) % TEXT_CACHE;
                if let Some(entry) = self.entries.get_mut(i) {
                    *entry = (value.clone(), format!("{value:?}"));
                }
                i
            }
        };
        self.entries.get(i).map_or("", |(_, text)| text)
    }
}

/// A text whose `Debug` form is itself, unquoted.
struct Text<'a>(&'a str);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The built-in node: a quicsand endpoint and the app that uses it.
pub(super) struct EndpointNode {
    pub(super) endpoint: Endpoint,
    pub(super) app: Box<dyn App>,
    wake: Option<Instant>,
    /// Events drained from the endpoint, reused between calls.
    events: Vec<(ConnectionHandle, Event)>,
    handle_texts: TextCache<ConnectionHandle>,
    event_texts: TextCache<Event>,
    /// Buffers handed to [`Endpoint::handle_batch`], for the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) batches: u64,
}

impl EndpointNode {
    pub(super) fn new(endpoint: Endpoint, app: Box<dyn App>) -> Self {
        Self {
            endpoint,
            app,
            wake: None,
            events: Vec::new(),
            handle_texts: TextCache::new(),
            event_texts: TextCache::new(),
            batches: 0,
        }
    }
}

/// The [`NodeCtx`] an app sees during a call.
fn node_ctx<'a>(endpoint: &'a mut Endpoint, wake: &'a mut Option<Instant>, ctx: &EngineCtx) -> NodeCtx<'a> {
    NodeCtx {
        endpoint,
        node: ctx.node,
        addr: ctx.addr,
        now: ctx.now,
        epoch: ctx.epoch,
        wake,
    }
}

impl Engine for EndpointNode {
    fn start(&mut self, ctx: &EngineCtx) {
        let mut app_ctx = node_ctx(&mut self.endpoint, &mut self.wake, ctx);
        self.app.on_start(&mut app_ctx);
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        self.handle_datagram_with_ecn(now, from, None, payload);
    }

    fn handle_datagram_with_ecn(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<EcnCodepoint>,
        payload: BytesMut,
    ) {
        let datagram = Datagram {
            remote: from,
            local: None,
            ecn,
            payload,
        };
        self.endpoint.handle_datagram(now, datagram);
    }

    fn handle_batch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<EcnCodepoint>,
        payload: BytesMut,
        stride: usize,
    ) {
        self.batches += 1;
        let batch = Datagram {
            remote: from,
            local: None,
            ecn,
            payload,
        };
        self.endpoint.handle_batch(now, batch, stride);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.endpoint.poll_timeout(), self.wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, ctx: &EngineCtx) {
        let now = ctx.now;
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        if self.wake.is_some_and(|w| w <= now) {
            self.wake = None;
            let mut app_ctx = node_ctx(&mut self.endpoint, &mut self.wake, ctx);
            self.app.on_wake(&mut app_ctx);
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.endpoint.poll_transmit(now, buf)
    }

    fn poll_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn fmt::Debug, &dyn fmt::Debug),
    ) -> bool {
        // Drain first, then call the app: what the app's calls cause shows up in the next round.
        let mut events = std::mem::take(&mut self.events);
        while let Some(e) = self.endpoint.poll_event() {
            events.push(e);
        }
        let any = !events.is_empty();
        for (h, e) in events.drain(..) {
            let mut app_ctx = node_ctx(&mut self.endpoint, &mut self.wake, ctx);
            self.app.on_event(&mut app_ctx, h, &e);
            let handle = self.handle_texts.text(&h);
            report(&Text(handle), &Text(self.event_texts.text(&e)));
        }
        self.events = events;
        any
    }
}
