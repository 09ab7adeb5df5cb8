//! Packet protection (RFC 9001 §5).
