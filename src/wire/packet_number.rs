//! Packet number encoding and decoding (RFC 9000 §17.1, Appendix A).
