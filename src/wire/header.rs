//! Packet headers (RFC 9000 §17, RFC 8999).
