//! NEW_TOKEN frames (RFC 9000 §8.1.3, §19.7): the tokens a server sends, sent again if lost, and the
//! store a client files received ones in. The endpoint makes the tokens (`endpoint/token.rs`).

use std::sync::Arc;

use bytes::Bytes;

use super::spaces::SentFrames;
use crate::validation::TokenStore;
use crate::wire::frame::Frame;

/// A connection's NEW_TOKEN state.
#[derive(Debug, Default)]
pub(crate) struct NewTokens {
    /// A server: tokens to send, or to send again after a loss (RFC 9000 §13.3). The endpoint queues a
    /// bounded number, and each is in flight or here, never both.
    pending: Vec<Bytes>,
    /// A client: the store received tokens go to, and the server name they are filed under.
    store: Option<(Arc<dyn TokenStore>, String)>,
}

impl NewTokens {
    /// A server: queues a token for a NEW_TOKEN frame.
    pub(crate) fn queue(&mut self, token: Bytes) {
        self.pending.push(token);
    }

    /// Whether a NEW_TOKEN frame waits to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A client: files received tokens in `store` under `server_name`.
    pub(crate) fn set_store(&mut self, store: Arc<dyn TokenStore>, server_name: &str) {
        self.store = Some((store, server_name.to_string()));
    }

    /// Writes one pending NEW_TOKEN frame if it fits before `end`, recording it in `sent`. Returns
    /// whether it wrote one.
    pub(crate) fn write(&mut self, buf: &mut Vec<u8>, end: usize, sent: &mut SentFrames) -> bool {
        let Some(token) = self.pending.last() else {
            return false;
        };
        let frame = Frame::NewToken(token.clone());
        if buf.len() + frame.encoded_len() > end {
            return false;
        }
        frame.encode(buf);
        sent.new_token = self.pending.pop();
        true
    }

    /// A packet that carried `token` was lost: send it again.
    pub(crate) fn on_lost(&mut self, token: Option<Bytes>) {
        self.pending.extend(token);
    }

    /// A client received a token (RFC 9000 §19.7; its decoder already rejected an empty one).
    pub(crate) fn on_received(&mut self, token: Bytes) {
        if let Some((store, server_name)) = &self.store {
            // The frame's bytes are a view of the whole decrypted packet: keep a copy of the token only.
            store.insert(server_name, Bytes::copy_from_slice(&token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_token_is_sent_again_and_each_frame_fits() {
        let mut tokens = NewTokens::default();
        tokens.queue(Bytes::from_static(&[7; 40]));
        let mut buf = Vec::new();
        let mut sent = SentFrames::default();
        // 40 bytes of token need 42 bytes of frame.
        assert!(!tokens.write(&mut buf, 41, &mut sent));
        assert!(buf.is_empty() && tokens.has_pending());
        assert!(tokens.write(&mut buf, 42, &mut sent));
        assert_eq!(buf.len(), 42);
        assert!(!tokens.has_pending());
        tokens.on_lost(sent.new_token.take());
        assert!(tokens.has_pending());
        let mut again = SentFrames::default();
        assert!(tokens.write(&mut buf, 84, &mut again));
        assert_eq!(buf[..42], buf[42..]);
    }
}
