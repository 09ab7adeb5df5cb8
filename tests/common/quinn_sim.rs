//! A [`QuinnNode`] as a node of `quicsand::sim`: the same harness adapter the in-memory interop tests
//! use, behind the simulator's [`Engine`] trait, with a bulk-transfer application on top (the
//! counterpart of `quicsand::sim::{BulkSender, Sink}`: same byte pattern, same close at the end).
//!
//! Determinism: the node's quinn-proto endpoint takes its RNG seed, connection IDs, reset and token
//! keys from the seed the simulation hands to [`quicsand::sim::Simulation::add_engine`], and a fixed
//! wall clock for tokens. rustls still draws its randoms and key shares from the operating system, so
//! packet bytes differ between runs; their sizes do not.

// Test-support API: `pub` inside a private test module, on purpose.
#![allow(unreachable_pub)]

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quicsand::sim::{Engine, EngineCtx};
use quicsand::Transmit;
use quinn_proto::StreamEvent;

use super::quinn_node::QuinnNode;
use super::{LostReason, Node, NodeEvent};

/// Byte `i` of every stream is `i % 251`, as `quicsand::sim::BulkSender` writes it.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(|i| (i % 251) as u8).collect()
}

/// What the application of a [`QuinnPeer`] does.
enum Role {
    /// Connects to `server` at the start and sends `total` bytes over `streams` unidirectional streams;
    /// closes (code 0) once every stream was acknowledged.
    Sender {
        server: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        total: u64,
        streams: usize,
        opened: bool,
        acked: usize,
    },
    /// Accepts and reads every stream (the node's auto-read).
    Receiver,
}

/// A quinn-proto endpoint with a bulk sender or a sink as its application.
pub struct QuinnPeer {
    /// The harness adapter.
    pub node: QuinnNode,
    role: Role,
    /// Datagrams the node produced and the simulator has not taken yet.
    out: std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    /// Stream events already looked at.
    stream_events_seen: usize,
    /// When the handshake completed, since the epoch.
    pub connected_at: Option<Duration>,
    /// Sender: when the peer had acknowledged every stream, since the epoch.
    pub finished_at: Option<Duration>,
    /// Receiver: when every expected byte and stream end had been read, since the epoch.
    pub completed_at: Option<Duration>,
    /// Receiver: the bytes and streams that make the transfer complete.
    pub expect: Option<(u64, usize)>,
    /// Why the connection ended, if it did.
    pub lost: Option<LostReason>,
}

impl QuinnPeer {
    fn new(node: QuinnNode, role: Role) -> Self {
        Self {
            node,
            role,
            out: Default::default(),
            stream_events_seen: 0,
            connected_at: None,
            finished_at: None,
            completed_at: None,
            expect: None,
            lost: None,
        }
    }

    /// A client at `addr` that sends `total` bytes over `streams` streams to `server` ("localhost").
    pub fn sender(
        addr: SocketAddr,
        seed: u64,
        tls: Arc<rustls::ClientConfig>,
        server: SocketAddr,
        total: u64,
        streams: usize,
    ) -> Self {
        let role = Role::Sender {
            server,
            tls: Some(tls),
            total,
            streams: streams.max(1),
            opened: false,
            acked: 0,
        };
        Self::new(QuinnNode::client(addr, seed), role)
    }

    /// A server at `addr` that reads everything; it counts the transfer complete at `total` bytes over
    /// `streams` finished streams.
    pub fn receiver(
        addr: SocketAddr,
        seed: u64,
        tls: Arc<rustls::ServerConfig>,
        total: u64,
        streams: usize,
    ) -> Self {
        let mut peer = Self::new(QuinnNode::server_with_tls(addr, tls, seed), Role::Receiver);
        peer.expect = Some((total, streams));
        peer
    }

    /// Receiver: bytes read in order on all streams.
    pub fn total_bytes(&self) -> u64 {
        self.node.received.values().map(|r| r.data.len() as u64).sum()
    }

    /// Receiver: streams whose end was read.
    pub fn finished_streams(&self) -> usize {
        self.node.received.values().filter(|r| r.finished).count()
    }

    /// Receiver: whether every byte read matches the pattern.
    pub fn pattern_ok(&self) -> bool {
        self.node
            .received
            .values()
            .all(|r| r.data == pattern(0, r.data.len()))
    }

    /// Opens the streams and queues their bytes, once connected.
    fn open_streams(&mut self, now: Instant) {
        let Role::Sender {
            total,
            streams,
            opened,
            ..
        } = &mut self.role
        else {
            return;
        };
        if *opened {
            return;
        }
        *opened = true;
        let n = *streams as u64;
        for i in 0..n {
            let share = *total / n + u64::from(i < *total % n);
            self.node
                .send_stream(now, Bytes::from(pattern(0, share as usize)));
        }
    }

    /// Looks at new stream events: counts acknowledged streams and closes when all are.
    fn on_stream_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn fmt::Debug, &dyn fmt::Debug),
    ) -> bool {
        let new = self.node.stream_events.len() - self.stream_events_seen;
        let mut close = false;
        for e in self.node.stream_events.iter().skip(self.stream_events_seen) {
            report(&"quinn", e);
            if let (StreamEvent::Finished { .. }, Role::Sender { streams, acked, .. }) = (e, &mut self.role) {
                *acked += 1;
                close |= *acked == *streams;
            }
        }
        self.stream_events_seen = self.node.stream_events.len();
        if close && self.finished_at.is_none() {
            self.finished_at = Some(ctx.elapsed());
            self.node.close(ctx.now, 0, b"done");
        }
        new > 0
    }
}

impl Engine for QuinnPeer {
    fn start(&mut self, ctx: &EngineCtx) {
        if let Role::Sender { server, tls, .. } = &mut self.role {
            if let Some(tls) = tls.take() {
                let server = *server;
                self.node.connect(ctx.now, server, "localhost", tls);
            }
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        self.node.recv(now, from, &payload);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.node.timeout()
    }

    fn handle_timeout(&mut self, ctx: &EngineCtx) {
        self.node.on_timeout(ctx.now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.out.is_empty() {
            self.out.extend(self.node.send(now));
        }
        let (destination, data) = self.out.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&data);
        Some(Transmit {
            destination,
            src_ip: None,
            ecn: None,
            size: data.len(),
            segment_size: None,
        })
    }

    fn poll_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn fmt::Debug, &dyn fmt::Debug),
    ) -> bool {
        let events = self.node.events();
        for e in &events {
            report(&"quinn", e);
            match e {
                NodeEvent::Connected => {
                    self.connected_at.get_or_insert(ctx.elapsed());
                    self.open_streams(ctx.now);
                }
                NodeEvent::Lost(reason) => {
                    self.lost.get_or_insert(reason.clone());
                }
            }
        }
        let streams = self.on_stream_events(ctx, report);
        if let (Some((total, streams)), None) = (self.expect, self.completed_at) {
            if self.total_bytes() == total && self.finished_streams() == streams {
                self.completed_at = Some(ctx.elapsed());
            }
        }
        !events.is_empty() || streams
    }
}
