#!/usr/bin/env python3
"""Scripted aioquic-client scenarios against a quicsand server (docs/interop.md).

Each scenario prints one JSON line and exits 0 when it passed. The server must serve hq-interop and echo
from the directory given as --root, which must hold big.bin, hello.txt and 1m.bin:

    mkdir -p www && head -c 16777216 /dev/urandom > www/big.bin && head -c 1048576 /dev/urandom > www/1m.bin
    echo hello > www/hello.txt
    target/release/examples/server --root www --write-cert /tmp/quicsand.pem &
    python3 tools/aioquic_scenarios.py keyupdate --ca /tmp/quicsand.pem --root www

Scenarios: keyupdate, keyupdate-burst, cid, rebind, all (the three interleaved) during a download of
big.bin; resume (a second connection with the first one's session ticket), resume0rtt (the same with the
ticket edited to allow early data, which the server must refuse); appclose; idle [--idle S];
conc-hq / conc-echo --n N (N connections at once). Several of them reach into aioquic's internals
(`_quic`, `_transport`), as aioquic has no public API for key phases or rebinding; written against
aioquic 1.7.2.
"""
import argparse
import asyncio
import hashlib
import json
import os
import socket
import ssl
import sys
import time

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.quic.events import (ConnectionTerminated, DatagramFrameReceived, StreamDataReceived,
                                 StreamReset, HandshakeCompleted, ConnectionIdIssued, ConnectionIdRetired)
from aioquic.quic.logger import QuicLogger
from aioquic.tls import Epoch
ONE = Epoch.ONE_RTT

HOST, PORT = "localhost", 4433
CA = "quicsand.pem"
ROOT = "www"
VERSION = 1


def served(name):
    return os.path.join(ROOT, name)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class P(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.streams = {}
        self.terminated = None
        self.handshake = None
        self.datagrams = asyncio.Queue()
        self.on_progress = None

    def quic_event_received(self, ev):
        if isinstance(ev, StreamDataReceived) and ev.stream_id in self.streams:
            s = self.streams[ev.stream_id]
            s["h"].update(ev.data)
            s["n"] += len(ev.data)
            if self.on_progress:
                self.on_progress(s["n"])
            if ev.end_stream and not s["f"].done():
                s["f"].set_result((s["n"], s["h"].hexdigest()))
        elif isinstance(ev, StreamReset) and ev.stream_id in self.streams:
            f = self.streams[ev.stream_id]["f"]
            if not f.done():
                f.set_exception(RuntimeError(f"reset {ev.error_code}"))
        elif isinstance(ev, DatagramFrameReceived):
            self.datagrams.put_nowait(ev.data)
        elif isinstance(ev, HandshakeCompleted):
            self.handshake = ev
        elif isinstance(ev, ConnectionTerminated):
            self.terminated = (time.monotonic(), ev)
            for s in self.streams.values():
                if not s["f"].done():
                    s["f"].set_exception(ConnectionError(
                        f"terminated code={ev.error_code:#x} frame={ev.frame_type} reason={ev.reason_phrase!r}"))

    def request(self, data: bytes, fin=True):
        sid = self._quic.get_next_available_stream_id()
        f = asyncio.get_running_loop().create_future()
        self.streams[sid] = {"h": hashlib.sha256(), "n": 0, "f": f}
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()
        return f


def config(alpn="hq-interop", idle=None, ticket=None, logger=None, cipher=None):
    c = QuicConfiguration(is_client=True, alpn_protocols=[alpn], max_datagram_frame_size=65536)
    if VERSION == 2:
        c.supported_versions = [QuicProtocolVersion.VERSION_2]
    c.load_verify_locations(CA)
    if idle is not None:
        c.idle_timeout = idle
    if ticket is not None:
        c.session_ticket = ticket
    if logger is not None:
        c.quic_logger = logger
    return c


def packet_types(logger):
    """Counts of sent/received packet types from aioquic's QuicLogger trace."""
    out = {}
    for trace in logger.to_dict()["traces"]:
        for e in trace["events"]:
            if e["name"] in ("transport:packet_sent", "transport:packet_received"):
                k = e["name"].split("_")[-1] + ":" + e["data"]["header"]["packet_type"]
                out[k] = out.get(k, 0) + 1
    return out


def frames_seen(logger, direction, names):
    out = {}
    for trace in logger.to_dict()["traces"]:
        for e in trace["events"]:
            if e["name"] == f"transport:packet_{direction}":
                for fr in e["data"].get("frames", []):
                    if fr["frame_type"] in names:
                        out[fr["frame_type"]] = out.get(fr["frame_type"], 0) + 1
    return out


async def rebind(proto):
    """Moves the client to a fresh UDP socket (new local port); the old one is closed (NAT rebinding)."""
    loop = asyncio.get_running_loop()
    old = proto._transport
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0, 0, 0))
    await loop.create_datagram_endpoint(lambda: proto, sock=sock)  # connection_made swaps _transport
    old.close()
    # A PING (non-probing) from the new port so the server sees the new address promptly.
    proto._quic.send_ping(12345)
    proto.transmit()
    return old.get_extra_info("sockname")[1] if old.get_extra_info("sockname") else None, sock.getsockname()[1]


async def download_with_actions(name, actions_at, action, path="/big.bin", expect=None, logger=None, **cfg):
    """Downloads `path`; when the received count crosses each value of actions_at, runs action(proto, i)."""
    expect = expect or sha(served("big.bin"))
    t0 = time.monotonic()
    log = []
    async with connect(HOST, PORT, configuration=config(logger=logger, **cfg), create_protocol=P) as conn:
        pending = list(actions_at)
        tasks = []

        def prog(n):
            while pending and n >= pending[0]:
                at = pending.pop(0)
                i = len(actions_at) - len(pending)
                tasks.append(asyncio.ensure_future(action(conn, i, at, log)))
        conn.on_progress = prog
        t1 = time.monotonic()
        try:
            n, h = await asyncio.wait_for(conn.request(f"GET {path}\r\n".encode()), 120)
            ok = h == expect
            res = f"{n} bytes, sha {'OK' if ok else 'MISMATCH'}"
        except Exception as e:
            ok, n = False, 0
            res = f"FAILED: {e!r}"
        secs = time.monotonic() - t1
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(r, Exception):
                log.append(f"action error {r!r}")
        q = conn._quic
        extra = {
            "key_phase": q._cryptos[ONE].send.key_phase,
            "peer_cid_seq": q._peer_cid.sequence_number,
            "local_port_now": conn._transport.get_extra_info("sockname")[1],
        }
    print(json.dumps({"scenario": name, "ok": ok, "result": res,
                      "mbit_s": round(n * 8 / secs / 1e6, 1), "secs": round(secs, 3),
                      "actions": log, **extra}))
    return ok


async def act_key_update(conn, i, at, log):
    before = conn._quic._cryptos[ONE].send.key_phase
    conn.request_key_update()
    log.append(f"KU#{i} at {at >> 20} MiB (phase {before}->)")


async def act_cid(conn, i, at, log):
    before = conn._quic._peer_cid.cid.hex()
    avail = len(conn._quic._peer_cid_available)
    conn.change_connection_id()
    log.append(f"CID#{i} at {at >> 20} MiB {before[:8]}->{conn._quic._peer_cid.cid.hex()[:8]} (spare {avail})")


async def act_rebind(conn, i, at, log):
    old, new = await rebind(conn)
    log.append(f"rebind#{i} at {at >> 20} MiB port {old}->{new}")


async def act_all(conn, i, at, log):
    await [act_key_update, act_cid, act_rebind][i % 3](conn, i, at, log)


async def scen_resume(zero_rtt_force=False):
    tickets = []
    lg1 = QuicLogger()
    async with connect(HOST, PORT, configuration=config(logger=lg1), create_protocol=P,
                       session_ticket_handler=tickets.append) as conn:
        n, h = await conn.request(b"GET /hello.txt\r\n")
        await asyncio.sleep(0.3)
    if not tickets:
        print(json.dumps({"scenario": "resume", "ok": False, "result": "no session ticket received"}))
        return False
    t = tickets[-1]
    info = {"tickets": len(tickets), "ticket_max_early_data": t.max_early_data_size,
            "ticket_lifetime": getattr(t, "ticket_lifetime", None) or str(t.not_valid_after - t.not_valid_before), "cipher": str(t.cipher_suite)}
    if zero_rtt_force:
        t.max_early_data_size = 0xFFFFFFFF  # pretend the server allowed early data (it did not)
    lg2 = QuicLogger()
    t0 = time.monotonic()
    async with connect(HOST, PORT, configuration=config(ticket=t, logger=lg2), create_protocol=P,
                       session_ticket_handler=tickets.append, wait_connected=False) as conn:
        f = conn.request(b"GET /hello.txt\r\n")  # sent in 0-RTT if aioquic thinks it can
        try:
            n, h = await asyncio.wait_for(f, 10)
            ok = h == sha(served("hello.txt"))
            res = f"{n} bytes {'OK' if ok else 'MISMATCH'}"
        except Exception as e:
            ok, res = False, f"FAILED {e!r}"
        tls = conn._quic.tls
        info.update({"session_resumed": tls.session_resumed, "early_data_accepted": tls.early_data_accepted,
                     "handshake_event": str(conn.handshake), "secs": round(time.monotonic() - t0, 3)})
        # The point of the scenario: the second handshake resumed, and (quicsand takes no early data)
        # the 0-RTT offered with the edited ticket was refused.
        ok = ok and tls.session_resumed and not tls.early_data_accepted
    info["packets"] = packet_types(lg2)
    print(json.dumps({"scenario": "resume" + ("+forced0rtt" if zero_rtt_force else ""), "ok": ok,
                      "result": res, **info}))
    return ok


async def scen_app_close(code=0x1234):
    async with connect(HOST, PORT, configuration=config(alpn="echo"), create_protocol=P) as conn:
        f = conn.request(b"x" * 1000, fin=False)
        await asyncio.sleep(0.2)
        conn.close(error_code=code, reason_phrase="bye from aioquic")
        t0 = time.monotonic()
        await asyncio.wait_for(conn.wait_closed(), 10)
        ev = conn.terminated[1]
        print(json.dumps({"scenario": "app_close", "ok": True, "closed_after_s": round(time.monotonic() - t0, 3),
                          "local_event": f"code={ev.error_code:#x} reason={ev.reason_phrase!r}"}))
    return True


async def scen_idle(idle):
    t0 = time.monotonic()
    lg = QuicLogger()
    cfg = config(alpn="echo", logger=lg) if idle is None else config(alpn="echo", idle=idle, logger=lg)
    conn_cm = connect(HOST, PORT, configuration=cfg, create_protocol=P)
    conn = await conn_cm.__aenter__()
    t1 = time.monotonic()
    n, h = await conn.request(b"ping")
    t2 = time.monotonic()
    await asyncio.wait_for(conn.wait_closed(), 200)
    ev = conn.terminated[1]
    print(json.dumps({"scenario": f"idle(aioquic idle_timeout={idle or 'default 60'})", "ok": True,
                      "idle_for_s": round(conn.terminated[0] - t2, 2),
                      "event": f"code={ev.error_code:#x} reason={ev.reason_phrase!r}",
                      "peer_idle_tp_ms": conn._quic._remote_max_idle_timeout * 1000 if hasattr(conn._quic, '_remote_max_idle_timeout') else None,
                      "packets": packet_types(lg)}))
    try:
        await conn_cm.__aexit__(None, None, None)
    except Exception:
        pass
    return True


async def one_concurrent(i, mode):
    async with connect(HOST, PORT, configuration=config(alpn="hq-interop" if mode == "hq" else "echo"),
                       create_protocol=P) as conn:
        if mode == "hq":
            n, h = await conn.request(b"GET /1m.bin\r\n")
            return h == sha(served("1m.bin"))
        data = os.urandom(65536)
        n, h = await conn.request(data)
        ok = h == hashlib.sha256(data).hexdigest()
        got = 0
        for j in range(10):
            d = os.urandom(1000)
            for _ in range(4):
                conn._quic.send_datagram_frame(d)
                conn.transmit()
                try:
                    if await asyncio.wait_for(conn.datagrams.get(), 1.0) == d:
                        got += 1
                    break
                except asyncio.TimeoutError:
                    pass
        return ok and got == 10


async def scen_concurrent(count, mode):
    t0 = time.monotonic()
    res = await asyncio.gather(*[asyncio.wait_for(one_concurrent(i, mode), 120) for i in range(count)],
                               return_exceptions=True)
    good = sum(1 for r in res if r is True)
    errs = [repr(r) for r in res if r is not True][:5]
    print(json.dumps({"scenario": f"concurrent {count} x {mode}", "ok": good == count, "good": good,
                      "secs": round(time.monotonic() - t0, 2), "errors": errs}))
    return good == count


async def main():
    global HOST, PORT, CA, ROOT, VERSION
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--idle", type=float, default=None)
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--ca", default=CA, help="PEM file of the certificate to trust")
    ap.add_argument("--root", default=ROOT, help="the directory the server serves")
    ap.add_argument("--quic-version", type=int, choices=[1, 2], default=1)
    a = ap.parse_args()
    HOST, PORT, CA, ROOT, VERSION = a.host, a.port, a.ca, a.root, a.quic_version
    s = a.scenario
    MiB = 1 << 20
    if s == "keyupdate":
        ok = await download_with_actions(s, [k * 2 * MiB for k in range(1, a.n + 1)], act_key_update)
    elif s == "keyupdate-burst":  # several requests back to back, no wait for acknowledgement
        async def burst(conn, i, at, log):
            for j in range(3):
                conn.request_key_update()
                conn._quic.send_ping(100 + j)
                conn.transmit()
            log.append(f"3 KU back-to-back (each with a PING, no ACK awaited) at {at >> 20} MiB")
        ok = await download_with_actions(s, [4 * MiB], burst)
    elif s == "cid":
        ok = await download_with_actions(s, [k * 2 * MiB for k in range(1, a.n + 1)], act_cid)
    elif s == "rebind":
        ok = await download_with_actions(s, [k * 3 * MiB for k in range(1, a.n + 1)], act_rebind)
    elif s == "all":
        ok = await download_with_actions(s, [k * MiB for k in range(1, a.n + 1)], act_all)
    elif s == "resume":
        ok = await scen_resume()
    elif s == "resume0rtt":
        ok = await scen_resume(zero_rtt_force=True)
    elif s == "appclose":
        ok = await scen_app_close()
    elif s == "idle":
        ok = await scen_idle(a.idle)
    elif s in ("conc-hq", "conc-echo"):
        ok = await scen_concurrent(a.n, s.split("-")[1])
    else:
        sys.exit("unknown scenario")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
