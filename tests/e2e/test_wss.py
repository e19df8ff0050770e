#!/usr/bin/env python3
"""End to end, SIP over secure WebSocket (RFC 7118): a WebSocket client (written here, from
RFC 6455) connects to sipslb's wss:// listener, upgrades with the "sip" subprotocol and
relays SIP to mock SIPS backends: messages in text frames, fragmented or not, pings
answered, Record-Route twice (RFC 5658) with the browser side's ;transport=ws, received=
on its Via. Bad input gets its defined answer: a missing "sip" subprotocol 403, a wrong
version 426, a disallowed Origin 403, an unmasked frame, an oversized frame, an oversized
control frame, a reserved opcode: a close frame with its code, counted; other clients
never notice. Loopback only; processes stopped by PID; every wait bounded.

usage: test_wss.py BUILD_DIR SOURCE_DIR"""

import base64
import os
import re
import signal
import socket
import ssl
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import Harness, header_values, request, run_tests, status_of  # noqa: E402


class Ctx:
    pass


class WsClient:
    """A WebSocket client over TLS: the opening handshake, masked frames out, frames in."""

    def __init__(self, port, ca, protocol="sip", version="13", origin=None, timeout=5.0):
        ctx = ssl.create_default_context(cafile=ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.local_port = raw.getsockname()[1]
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock.settimeout(timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET / HTTP/1.1\r\nHost: localhost:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n"
               % (port, key, version))
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        if origin:
            req += "Origin: %s\r\n" % origin
        self.sock.sendall((req + "\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.response = head.decode("latin-1")
        self.status = int(self.response.split(" ", 2)[1]) if self.response else 0

    def send_frame(self, opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        m = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, m | 126, n)
        else:
            head = struct.pack("!BBQ", b0, m | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            head += key
        self.sock.sendall(head + payload)

    def send_sip(self, msg, pieces=1):
        if pieces == 1:
            self.send_frame(1, msg)
            return
        step = (len(msg) + pieces - 1) // pieces
        parts = [msg[i:i + step] for i in range(0, len(msg), step)]
        for i, p in enumerate(parts):
            self.send_frame(1 if i == 0 else 0, p, fin=i == len(parts) - 1)
            if i == 0:
                self.send_frame(9, b"in-between")  # a ping between fragments is allowed

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk

    def recv_frame(self):
        """(fin, opcode, payload); server frames are never masked."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "a server frame must not be masked"
        n, at = b1 & 0x7f, 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return bool(b0 & 0x80), b0 & 0x0f, payload

    def recv_sip(self):
        """The next SIP message (a text frame); pongs are skipped."""
        while True:
            fin, op, payload = self.recv_frame()
            if op == 10:
                continue
            assert fin and op == 1, (fin, op)
            return payload

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.uas = [c.h.start_uas("w%d" % i, c.h.free_port()) for i in range(2)]
    c.port, c.wss = c.h.free_port(), c.h.free_port()
    c.lb = c.h.start_sipslb(c.port, [u.port for u in c.uas], [
        "--listen", "wss://127.0.0.1:%d" % c.wss, "--workers", "2",
        "--max-message-size", "4096", "--ws-origin", "https://app.example.com"])
    c.h.wait_port(c.wss, c.lb)
    return c


def teardown(c):
    c.h.close()


def ws_request(method, cid, cseq, port, extra="", body=b""):
    """A browser-like request: Via WSS with an .invalid host (RFC 7118 5.2)."""
    m = request(method, cid, cseq, "z9hG4bK" + uuid.uuid4().hex, port, extra=extra, body=body)
    return m.replace(b"SIP/2.0/TLS client.example.com:%d" % port,
                     b"SIP/2.0/WSS df7jal23ls0d.invalid", 1)


def stats(c):
    c.lb.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    return c.h.read_stats(c.lb.stats)


def test_sip_over_wss_relays_like_tls(c):
    ws = WsClient(c.wss, c.ca, origin="https://app.example.com")
    assert ws.status == 101, ws.response
    assert re.search(r"(?im)^sec-websocket-protocol: sip$", ws.response), ws.response
    for i in range(20):
        cid = "wss-%d-%s" % (i, uuid.uuid4().hex)
        # Every other one in three fragments, with a ping between the first two.
        ws.send_sip(ws_request("OPTIONS", cid, 1, ws.local_port), pieces=1 + 2 * (i % 2))
        r = ws.recv_sip()
        assert status_of(r) == 200, r
        via = header_values(r, "Via", "v")
        assert len(via) == 1 and via[0].startswith("SIP/2.0/WSS df7jal23ls0d.invalid"), via
        assert "received=127.0.0.1" in via[0], via
    # A dialog: Record-Route twice, the browser's side with ;transport=ws (RFC 7118 5.4).
    cid = "wss-inv-" + uuid.uuid4().hex
    ws.send_sip(ws_request("INVITE", cid, 1, ws.local_port))
    got = [ws.recv_sip() for _ in range(3)]
    assert [status_of(m) for m in got] == [100, 180, 200], got
    rr = header_values(got[2], "Record-Route")
    assert len(rr) == 2, rr
    assert any(";transport=ws" in v and v.startswith("<sips:127.0.0.1:%d" % c.wss) for v in rr), rr
    assert any(v.startswith("<sips:127.0.0.1:%d;lr" % c.port) for v in rr), rr
    # A ping gets its pong with the same payload.
    ws.send_frame(9, b"keepalive")
    fin, op, payload = ws.recv_frame()
    assert (op, payload) == (10, b"keepalive"), (op, payload)
    # A close is answered with a close, then the connection ends.
    ws.send_frame(8, struct.pack("!H", 1000) + b"bye")
    fin, op, payload = ws.recv_frame()
    assert op == 8 and struct.unpack("!H", payload[:2])[0] == 1000, (op, payload)
    ws.close()
    st = stats(c)
    print("wss: 21 transactions relayed (10 fragmented), ws_upgrades %d, pings %d, closes %d" %
          (st["ws_upgrades"], st["ws_pings"], st["ws_peer_closes"]))
    assert st["ws_upgrades"] >= 1 and st["ws_pings"] >= 11 and st["ws_peer_closes"] >= 1, st


def refused(c, **kw):
    ws = WsClient(c.wss, c.ca, **kw)
    status, text = ws.status, ws.response
    ws.close()
    return status, text


def test_handshakes_refused_with_their_status(c):
    before = stats(c)["ws_refused"]
    assert refused(c, protocol="chat")[0] == 403
    assert refused(c, protocol=None)[0] == 403
    status, text = refused(c, version="8")
    assert status == 426 and re.search(r"(?im)^sec-websocket-version: 13", text), text
    assert refused(c, origin="https://evil.example.net")[0] == 403
    assert refused(c, origin=None)[0] == 403  # an allow-list is set: no Origin, no entry
    # Not HTTP at all: 400.
    ctx = ssl.create_default_context(cafile=c.ca)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", c.wss), timeout=5),
                        server_hostname="localhost")
    s.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 400"), "not a WebSocket handshake"
    s.close()
    assert stats(c)["ws_refused"] - before == 6


def bad_frame(c, frame_fn, want_code):
    ws = WsClient(c.wss, c.ca, origin="https://app.example.com")
    assert ws.status == 101
    frame_fn(ws)
    fin, op, payload = ws.recv_frame()
    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    try:
        rest = ws.sock.recv(100)
    except (ConnectionResetError, ssl.SSLError):
        rest = b""
    ws.close()
    assert op == 8 and code == want_code and rest == b"", (op, code, rest)


def test_bad_frames_get_their_close_code_and_spare_others(c):
    bystander = WsClient(c.wss, c.ca, origin="https://app.example.com")
    before = stats(c)["ws_protocol_errors"]
    msg = ws_request("OPTIONS", "bad-" + uuid.uuid4().hex, 1, 5060)
    bad_frame(c, lambda ws: ws.send_frame(1, msg, mask=False), 1002)      # unmasked
    bad_frame(c, lambda ws: ws.send_frame(1, b"x" * 5000), 1009)           # over the bound
    bad_frame(c, lambda ws: ws.send_frame(9, b"p" * 126), 1002)            # control > 125
    bad_frame(c, lambda ws: ws.send_frame(3, b"?"), 1002)                  # reserved opcode
    bad_frame(c, lambda ws: ws.send_frame(0, b"cont"), 1002)               # nothing to continue
    bad_frame(c, lambda ws: ws.send_frame(1, b"\xff\xfe"), 1007)           # not UTF-8 text

    def close_mid_message(ws):
        ws.send_frame(1, msg[:20], fin=False)
        ws.send_frame(8, struct.pack("!H", 1001))
    bad_frame(c, close_mid_message, 1001)  # answered; the half message is dropped
    assert stats(c)["ws_protocol_errors"] - before == 6
    # The bystander never noticed.
    bystander.send_sip(ws_request("OPTIONS", "by-" + uuid.uuid4().hex, 1, bystander.local_port))
    assert status_of(bystander.recv_sip()) == 200
    bystander.close()
    assert c.lb.poll() is None


def test_load_over_wss_across_both_workers(c):
    """sipslb-load --wss: many WebSocket clients (spread over both workers) calling, on a
    sipslb without an Origin allow-list (the load generator sends no Origin)."""
    import json
    import subprocess
    wss = c.h.free_port()
    lb = c.h.start_sipslb(c.h.free_port(), [u.port for u in c.uas], [
        "--listen", "wss://127.0.0.1:%d" % wss, "--workers", "2"])
    c.h.wait_port(wss, lb)
    p = subprocess.run([c.h.bin("bench/sipslb-load"), "--target", "127.0.0.1:%d" % wss,
                        "--server-name", "localhost", "--ca", c.ca, "--wss", "--scenario", "call",
                        "--rate", "300", "--duration", "2s", "--conns", "16", "--timeout", "5s",
                        "--max-duration", "30s", "--json"], capture_output=True, text=True,
                       timeout=90)
    s = json.loads(p.stdout)
    print("sipslb-load --wss: %d calls, %d ok, %d failed" %
          (s["calls"]["started"], s["calls"]["ok"], s["calls"]["failed"]))
    assert s["calls"]["failed"] == 0 and s["calls"]["ok"] >= 500, s["calls"]
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    assert st["ws_upgrades"] == 16 and st["ws_protocol_errors"] == 0, st


def test_clean_stop(c):
    assert c.h.stop(c.lb) == 0


if __name__ == "__main__":
    sys.exit(run_tests([test_sip_over_wss_relays_like_tls, test_handshakes_refused_with_their_status,
                        test_bad_frames_get_their_close_code_and_spare_others,
                        test_load_over_wss_across_both_workers, test_clean_stop],
                       setup, teardown))
