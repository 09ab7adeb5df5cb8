//! NEW_TOKEN frames (RFC 9000 §8.1.3, §19.7): the tokens a server sends, sent again if lost, and the
//! store a client files received ones in. The endpoint makes the tokens (`endpoint/token.rs`).

use std::net::IpAddr;

use bytes::Bytes;

use super::spaces::SentFrames;
use crate::wire::frame::Frame;

/// Received tokens a connection holds until the endpoint files them (after every input).
const MAX_RECEIVED: usize = 4;

/// The longest token a client puts in its Initial packets: a longer one would leave no room for the
/// ClientHello beside it in a 1200-byte Initial. NEW_TOKEN sets no limit; ours are under 100 bytes.
pub(crate) const MAX_CLIENT_TOKEN: usize = 512;

/// A connection's NEW_TOKEN state.
#[derive(Debug, Default)]
pub(crate) struct NewTokens {
    /// A server: tokens to send, or to send again after a loss (RFC 9000 §13.3), each with the client IP
    /// address it was made for (tokens are bound to it): only those for the address the client is at
    /// go out. The endpoint queues a bounded number, and each is in flight or here, never both.
    pending: Vec<(Bytes, IpAddr)>,
    /// A server: counted up when new tokens replace all earlier ones (a new address validated): a token
    /// of an earlier generation lost in flight is not queued again, so at most the tokens of one
    /// generation are ever live.
    generation: u32,
    /// A client: the name received tokens are filed under in the store, when it keeps them.
    server_name: Option<String>,
    /// A client: the last tokens received (at most [`MAX_RECEIVED`]), to tell a repeated one.
    received: Vec<Bytes>,
    /// A client: how many of the newest in `received` wait to be filed.
    unfiled: usize,
}

impl NewTokens {
    /// A server: queues a token made for a client at `ip` for a NEW_TOKEN frame.
    pub(crate) fn queue(&mut self, token: Bytes, ip: IpAddr) {
        self.pending.push((token, ip));
    }

    /// A server: new tokens are about to replace every earlier one (the client's new address was
    /// validated): those waiting are dropped, and those in flight are not sent again if lost.
    pub(crate) fn replace_all(&mut self) {
        self.pending = Vec::new();
        self.generation = self.generation.wrapping_add(1);
    }

    /// How many tokens wait, for any address (tests).
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a NEW_TOKEN frame for a client at `ip` waits to be sent.
    pub(crate) fn has_pending(&self, ip: IpAddr) -> bool {
        self.pending.iter().any(|(_, for_ip)| *for_ip == ip)
    }

    /// A client: keeps received tokens for the endpoint to file under `name`.
    pub(crate) fn keep_for(&mut self, name: String) {
        self.server_name = Some(name);
    }

    /// Whether tokens wait to be filed (checked after every datagram; rarely true).
    #[inline]
    pub(crate) fn has_received(&self) -> bool {
        self.unfiled > 0
    }

    /// A client: the tokens received since the last call, with the name to file them under.
    pub(crate) fn take_received(&mut self) -> Option<(&str, Vec<Bytes>)> {
        if self.unfiled == 0 {
            return None;
        }
        let name = self.server_name.as_deref()?;
        let new = self.received[self.received.len() - self.unfiled..].to_vec();
        self.unfiled = 0;
        Some((name, new))
    }

    /// Writes one pending NEW_TOKEN frame for a client at `ip` if it fits before `end`, recording it in
    /// `sent`. Returns whether it wrote one.
    pub(crate) fn write(&mut self, buf: &mut Vec<u8>, end: usize, sent: &mut SentFrames, ip: IpAddr) -> bool {
        let Some(i) = self.pending.iter().rposition(|(_, for_ip)| *for_ip == ip) else {
            return false;
        };
        let frame = Frame::NewToken(self.pending[i].0.clone());
        if buf.len() + frame.encoded_len() > end {
            return false;
        }
        frame.encode(buf);
        let (token, ip) = self.pending.remove(i);
        sent.rare_mut().new_token = Some((token, ip, self.generation));
        if self.pending.is_empty() {
            // The usual single token is out: an idle connection keeps no storage for it.
            self.pending = Vec::new();
        }
        true
    }

    /// A packet that carried `token` (with the address it was made for and its generation) was lost:
    /// send it again, to that address, unless newer tokens replaced it.
    pub(crate) fn on_lost(&mut self, token: Option<(Bytes, IpAddr, u32)>) {
        if let Some((t, ip, _)) = token.filter(|(_, _, g)| *g == self.generation) {
            self.pending.push((t, ip));
        }
    }

    /// A client received a token (RFC 9000 §19.7; its decoder already rejected an empty one). One too
    /// long to use is not kept.
    pub(crate) fn on_received(&mut self, token: Bytes) {
        if self.server_name.is_none() || token.len() > MAX_CLIENT_TOKEN {
            return;
        }
        // RFC 9000 §19.7: "Clients are responsible for discarding duplicate values, which might be used
        // to link connection attempts": a server sends a token again when its frame seems lost, and the
        // first copy may have arrived after all.
        if self.received.contains(&token) {
            return;
        }
        // A bounded few per connection: a server sending NEW_TOKEN after NEW_TOKEN only replaces them.
        if self.received.len() >= MAX_RECEIVED {
            self.received.remove(0);
        }
        // The frame's bytes are a view of the whole decrypted packet: keep a copy of the token only.
        self.received.push(Bytes::copy_from_slice(&token));
        self.unfiled = (self.unfiled + 1).min(self.received.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_token_is_sent_again_and_each_frame_fits() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut tokens = NewTokens::default();
        tokens.queue(Bytes::from_static(&[7; 40]), ip);
        let mut buf = Vec::new();
        let mut sent = SentFrames::default();
        // 40 bytes of token need 42 bytes of frame.
        assert!(!tokens.write(&mut buf, 41, &mut sent, ip));
        assert!(buf.is_empty() && tokens.has_pending(ip));
        assert!(tokens.write(&mut buf, 42, &mut sent, ip));
        assert_eq!(buf.len(), 42);
        assert!(!tokens.has_pending(ip));
        tokens.on_lost(sent.rare_mut().new_token.take());
        assert!(tokens.has_pending(ip));
        let mut again = SentFrames::default();
        assert!(tokens.write(&mut buf, 84, &mut again, ip));
        assert_eq!(buf[..42], buf[42..]);
    }

    /// Tokens are bound to the client's IP address: one made for another address waits, unsent, until
    /// the client is back there, and goes when new tokens replace it (a new address validated).
    #[test]
    fn a_token_goes_only_to_the_address_it_was_made_for() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.7".parse().unwrap());
        let mut tokens = NewTokens::default();
        tokens.queue(Bytes::from_static(&[7; 40]), a);
        let (mut buf, mut sent) = (Vec::new(), SentFrames::default());
        assert!(!tokens.has_pending(b));
        assert!(!tokens.write(&mut buf, 100, &mut sent, b));
        assert!(tokens.has_pending(a));
        tokens.replace_all();
        assert!(!tokens.has_pending(a));
    }

    /// The calls the endpoint and the connection make for a client bouncing between A and B, each move
    /// validated (`replace_all`, then one new token for the new address, as `Endpoint::after_conn` on
    /// PathValidated), whose token-carrying packets are never acknowledged and are declared lost after
    /// the next validation. Before (the first version of tokens bound to their address), the tokens
    /// for an address came back when lost and waited, and the next validation of their address kept
    /// them and added one more: one more live token per move, without end.
    #[test]
    fn tokens_stay_bounded_over_validated_bounces() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.7".parse().unwrap());
        let mut tokens = NewTokens::default();
        let mut in_flight: Vec<(Bytes, IpAddr, u32)> = Vec::new();
        let mut made = 0u8;
        // After the handshake, at A.
        tokens.queue(Bytes::from(vec![made; 40]), a);
        let mut live = Vec::new();
        for round in 0..10 {
            let (here, there) = if round % 2 == 0 { (b, a) } else { (a, b) };
            // The move to `here` is validated: tokens for other addresses that wait are dropped, and
            // one is made for `here`.
            tokens.replace_all();
            made += 1;
            tokens.queue(Bytes::from(vec![made; 40]), here);
            // Everything for `here` goes out.
            let mut buf = Vec::new();
            loop {
                let mut sent = SentFrames::default();
                if !tokens.write(&mut buf, usize::MAX, &mut sent, here) {
                    break;
                }
                in_flight.extend(sent.rare_mut().new_token.take());
            }
            // The packets that carried the tokens for `there` (sent there, before the move) are now
            // declared lost.
            let (lost, kept): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(_, ip, _)| *ip == there);
            in_flight = kept;
            for t in lost {
                tokens.on_lost(Some(t));
            }
            live.push(tokens.pending_len() + in_flight.len());
        }
        assert!(
            live.iter().all(|&n| n <= 2),
            "live tokens after each validated move: {live:?}"
        );
    }

    #[test]
    fn a_client_files_a_token_received_twice_once() {
        // RFC 9000 §19.7: duplicates might link connection attempts; the server sends a token again
        // when its frame seems lost, and the first copy may have arrived after all. Before, both copies
        // were filed, for the next two connections.
        let mut tokens = NewTokens::default();
        tokens.keep_for("example.com".to_string());
        let (a, b) = (Bytes::from_static(&[1; 40]), Bytes::from_static(&[2; 40]));
        tokens.on_received(a.clone());
        tokens.on_received(a.clone());
        assert_eq!(tokens.take_received(), Some(("example.com", vec![a.clone()])));
        // After filing, a late copy is still a duplicate; a new token is not.
        tokens.on_received(a.clone());
        assert!(!tokens.has_received());
        assert_eq!(tokens.take_received(), None);
        tokens.on_received(b.clone());
        tokens.on_received(a);
        assert_eq!(tokens.take_received(), Some(("example.com", vec![b])));
    }
}
