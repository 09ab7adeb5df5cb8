#!/usr/bin/env python3
"""An aioquic peer for interop runs against the quicsand examples (see docs/interop.md).

    python3 tools/aioquic_peer.py server --cert cert.pem --key key.pem --root DIR [--listen 127.0.0.1:4434]
    python3 tools/aioquic_peer.py hq --ca cert.pem https://localhost:4433/file ...
    python3 tools/aioquic_peer.py echo --ca cert.pem [--streams 4 --bytes 262144 --datagrams 100] https://localhost:4433

The server speaks hq-interop (GET /path -> file and FIN, missing file -> reset 404) and echo (streams and
datagrams sent back). The clients check what they get and exit 0 only when every check passed. Needs
`pip install aioquic`.
"""

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import sys
import time
from urllib.parse import urlparse

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.tls import CipherSuite

CIPHERS = {
    "aes128": CipherSuite.AES_128_GCM_SHA256,
    "aes256": CipherSuite.AES_256_GCM_SHA384,
    "chacha20": CipherSuite.CHACHA20_POLY1305_SHA256,
}
NOT_FOUND = 404
# The longest request line read: a longer one is answered with what came so far.
MAX_REQUEST = 4096


def payload(seed: int, ident: int, size: int) -> bytes:
    """Deterministic bytes (not the Rust examples' pattern: the echo only needs the client to know them)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{ident}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


class Reset(Exception):
    def __init__(self, code):
        super().__init__(f"stream reset with code {code}")
        self.code = code


class ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = {}
        self.datagrams = asyncio.Queue()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id in self.streams:
            buf, done = self.streams[event.stream_id]
            buf += event.data
            if event.end_stream and not done.done():
                done.set_result(bytes(buf))
        elif isinstance(event, StreamReset) and event.stream_id in self.streams:
            _, done = self.streams[event.stream_id]
            if not done.done():
                done.set_exception(Reset(event.error_code))
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams.put_nowait(event.data)
        elif isinstance(event, ConnectionTerminated):
            for _, done in self.streams.values():
                if not done.done():
                    done.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))

    async def exchange(self, data: bytes) -> bytes:
        """Sends `data` and FIN on a new bidirectional stream; returns everything that comes back."""
        sid = self._quic.get_next_available_stream_id()
        done = asyncio.get_running_loop().create_future()
        self.streams[sid] = (bytearray(), done)
        self._quic.send_stream_data(sid, data, end_stream=True)
        self.transmit()
        return await done


class ServerProtocol(QuicConnectionProtocol):
    root = "."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = {}

    def quic_event_received(self, event):
        alpn = self._quic.tls.alpn_negotiated
        if isinstance(event, StreamDataReceived):
            if alpn == "hq-interop":
                # None once answered: what else comes on the stream (its FIN, say) is dropped.
                buf = self.requests.setdefault(event.stream_id, bytearray())
                if buf is not None:
                    buf += event.data
                    if event.end_stream or b"\n" in buf or len(buf) > MAX_REQUEST:
                        self.answer(event.stream_id, bytes(buf))
            else:
                self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.end_stream)
        elif isinstance(event, DatagramFrameReceived) and alpn != "hq-interop":
            self._quic.send_datagram_frame(event.data)
        self.transmit()

    def answer(self, sid, request):
        if self.requests.get(sid) is None:
            return
        self.requests[sid] = None
        line = request.split(b"\n")[0].strip()
        path = line[4:].decode(errors="replace") if line.startswith(b"GET /") else None
        # Links followed, then inside the root by whole components: a plain prefix test let
        # /../www2/secret out of a root named www, and a link lead anywhere.
        root = os.path.realpath(self.root)
        try:
            full = os.path.realpath(os.path.join(root, path.lstrip("/"))) if path else None
        except ValueError:  # a NUL byte in the path
            full = None
        if full and os.path.commonpath([root, full]) == root and os.path.isfile(full):
            with open(full, "rb") as f:
                self._quic.send_stream_data(sid, f.read(), end_stream=True)
        else:
            self._quic.reset_stream(sid, NOT_FOUND)


def client_config(args, alpn):
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], max_datagram_frame_size=65536)
    if args.quic_version == 2:
        config.supported_versions = [QuicProtocolVersion.VERSION_2]
    if args.insecure:
        config.verify_mode = ssl.CERT_NONE
    elif args.ca:
        config.load_verify_locations(args.ca)
    if args.cipher:
        config.cipher_suites = [CIPHERS[args.cipher]]
    return config


async def run_hq(args) -> bool:
    urls = [urlparse(u) for u in args.urls]
    host, port = urls[0].hostname, urls[0].port or 443
    start = time.monotonic()
    ok = True
    async with connect(host, port, configuration=client_config(args, "hq-interop"),
                       create_protocol=ClientProtocol) as conn:
        connected = time.monotonic()
        results = await asyncio.gather(
            *[conn.exchange(f"GET {u.path or '/'}\r\n".encode()) for u in urls], return_exceptions=True)
        end = time.monotonic()
        total = 0
        for u, r in zip(urls, results):
            if isinstance(r, Exception):
                ok = False
                print(f"{u.path}: {r}", file=sys.stderr)
            else:
                total += len(r)
                if args.output:
                    os.makedirs(args.output, exist_ok=True)
                    name = os.path.basename(u.path) or "index.html"
                    with open(os.path.join(args.output, name), "wb") as f:
                        f.write(r)
        secs = end - connected
        print(f"{total} bytes in {secs:.3f} s: {total * 8 / max(secs, 1e-9) / 1e6:.1f} Mbit/s "
              f"(handshake {(connected - start) * 1e3:.1f} ms)")
    return ok


async def run_echo(args) -> bool:
    url = urlparse(args.urls[0])
    start = time.monotonic()
    async with connect(url.hostname, url.port or 443, configuration=client_config(args, args.alpn),
                       create_protocol=ClientProtocol) as conn:
        connected = time.monotonic()
        sent = [payload(args.seed, i, args.bytes) for i in range(args.streams)]
        echoed = await asyncio.gather(*[conn.exchange(s) for s in sent], return_exceptions=True)
        verified = [e for s, e in zip(sent, echoed) if e == s]
        echoed_datagrams = 0
        for i in range(args.datagrams):
            d = payload(args.seed, 1_000_000 + i, 1000)
            for _attempt in range(4):
                conn._quic.send_datagram_frame(d)
                conn.transmit()
                try:
                    back = await asyncio.wait_for(conn.datagrams.get(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if back == d:
                    echoed_datagrams += 1
                break
        end = time.monotonic()
        ok = len(verified) == args.streams and echoed_datagrams == args.datagrams
        print(json.dumps({
            "ok": ok,
            "handshake_ms": round((connected - start) * 1e3, 3),
            "streams_verified": len(verified),
            "bytes_verified": sum(len(v) for v in verified),
            "datagrams_echoed": echoed_datagrams,
            "seconds": round(end - connected, 6),
            "cipher": conn._quic.tls.key_schedule.cipher_suite.name if conn._quic.tls.key_schedule else None,
        }))
    return ok


async def run_server(args):
    host, port = args.listen.rsplit(":", 1)
    config = QuicConfiguration(is_client=False, alpn_protocols=args.alpn.split(","), max_datagram_frame_size=65536)
    config.supported_versions = [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2]
    config.load_cert_chain(args.cert, args.key)
    if args.cipher:
        config.cipher_suites = [CIPHERS[args.cipher]]
    ServerProtocol.root = os.path.abspath(args.root)
    await serve(host, int(port), configuration=config, create_protocol=ServerProtocol)
    print(f"aioquic server on {args.listen}", file=sys.stderr)
    await asyncio.Future()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["server", "hq", "echo"])
    p.add_argument("urls", nargs="*")
    p.add_argument("--ca")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--cipher", choices=sorted(CIPHERS))
    p.add_argument("--output")
    p.add_argument("--alpn", default=None)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--bytes", type=int, default=256 * 1024)
    p.add_argument("--datagrams", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--listen", default="127.0.0.1:4434")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--root", default=".")
    p.add_argument("--quic-version", type=int, choices=[1, 2], default=1, help="client: the QUIC version to use")
    args = p.parse_intermixed_args()
    if args.mode == "server":
        args.alpn = args.alpn or "hq-interop,echo"
        asyncio.run(run_server(args))
        return 0
    args.alpn = args.alpn or ("hq-interop" if args.mode == "hq" else "echo")
    ok = asyncio.run(run_hq(args) if args.mode == "hq" else run_echo(args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
