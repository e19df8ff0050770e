#!/usr/bin/env python3
"""End to end, sipslb as a complete edge proxy: phones register through sipslb to a
Kamailio registrar (which stores sipslb's Path), another phone calls them, Kamailio routes
each INVITE back through sipslb to the callee's own TLS connection (often on another
worker), the callee answers, the caller ACKs, and the callee hangs up (a request from the
backend side toward a client). A call to a phone whose connection is gone gets 430.
Loopback only (Kamailio on 127.0.0.2); processes stopped by PID; every wait bounded.

usage: test_edge.py BUILD_DIR SOURCE_DIR"""

import os
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import SipClient, header_values, run_tests_skipping, Skip, status_of  # noqa
import test_interop as interop  # noqa: E402  (Kamailio start/stop, tool discovery)


class Ctx:
    pass


def backend_auth(h):
    """sipslb takes requests toward clients only from authenticated backends: the
    registrar's own connections to our listener present a client certificate (see
    start_registrar) that sipslb verifies against the test CA."""
    return ["--verify-client", "optional", "--ca", h.cert("ca.pem")]


def start_registrar(c, port):
    h = c.h
    d = os.path.join(h.tmp, "registrar")
    os.makedirs(d, exist_ok=True)
    tls_cfg = os.path.join(d, "tls.cfg")
    with open(tls_cfg, "w") as f:
        f.write("[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                "require_certificate = no\ncertificate = %s\nprivate_key = %s\n\n"
                "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                "require_certificate = no\ncertificate = %s\nprivate_key = %s\n"
                % (h.cert("server-ec.pem"), h.cert("server-ec.key"), h.cert("client.pem"),
                   h.cert("client.key")))
    argv = [c.tools["kamailio"], "-f", os.path.join(h.source, "tests/kamailio/registrar.cfg"),
            "-DD", "-E", "-m", "64", "-M", "8", "-L", c.kam_modules, "-Y", d,
            "-P", os.path.join(d, "kamailio.pid"), "-w", d,
            "-A", "KAM_LISTEN=tls:127.0.0.2:%d" % port, "-A", 'KAM_TLS_CFG="%s"' % tls_cfg,
            "-A", 'KAM_SERVER="Server: registrar"']
    k = interop.start(h, "registrar", argv, cwd=d)
    end = time.time() + 20
    import socket
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.2", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    k.port = port
    return k


def setup():
    c = Ctx()
    c.h = interop.Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.tools = {"kamailio": interop.find_program("kamailio")}
    c.kam_modules = interop.kamailio_modules()
    c.kam = None
    if c.tools["kamailio"] and c.kam_modules and os.path.exists(
            os.path.join(c.kam_modules, "registrar.so")):
        c.kam = start_registrar(c, c.h.free_port())
        port, tcp_port = c.h.free_port(), c.h.free_port()
        stats = os.path.join(c.h.tmp, "sipslb-edge.stats")
        c.lb = interop.start(c.h, "sipslb-edge", [
            c.h.bin("balancer/sipslb"), "--cert", c.h.cert("server-ec.pem"), "--key",
            c.h.cert("server-ec.key"), "--listen", "127.0.0.1:%d" % port, "--listen",
            "tcp://127.0.0.1:%d" % tcp_port, "--backend", "sips:127.0.0.2:%d" % c.kam.port,
            "--backend-ca", c.ca, "--workers", "2", "--stats-file", stats] + backend_auth(c.h),
            wait_port=port)
        c.lb.port = port
        c.lb.tcp_port = tcp_port
        c.lb.stats = stats
    return c


def teardown(c):
    if c.kam:
        interop.stop_kamailio(c.h, c.kam)
    c.h.close()


def need_kamailio(c):
    if not c.kam:
        raise Skip("kamailio with its tls and registrar modules is not installed")


class PlainClient(SipClient):
    """SipClient over plain TCP (a tcp:// listener)."""

    def __init__(self, port, timeout=5.0):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.local_port = self.sock.getsockname()[1]
        self.buf = b""


class Phone:
    """A SIP user agent on its own connection through sipslb: TLS, or plain TCP."""

    def __init__(self, c, user, plain=False):
        self.c = c
        self.user = user
        self.plain = plain
        self.cl = PlainClient(c.lb.tcp_port) if plain else SipClient(c.lb.port, c.ca)
        self.port = self.cl.local_port
        scheme = "sip" if plain else "sips"
        self.scheme = scheme
        self.contact = "<%s:%s@127.0.0.1:%d;transport=tcp>" % (scheme, user, self.port)
        self.cseq = 1

    def via(self):
        return "SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bK%s;rport" % (
            "TCP" if self.plain else "TLS", self.port, uuid.uuid4().hex)

    def send(self, text):
        self.cl.send(text.encode() if isinstance(text, str) else text)

    def recv(self, timeout=5.0):
        m = self.cl.recv_message(timeout)
        assert m is not None, "%s: connection closed" % self.user
        return m

    def register(self):
        cid = "reg-%s-%s" % (self.user, uuid.uuid4().hex)
        s = self.scheme
        self.send("REGISTER %s:example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
                  "From: <%s:%s@example.com>;tag=r%s\r\nTo: <%s:%s@example.com>\r\n"
                  "Call-ID: %s\r\nCSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 300\r\n"
                  "Content-Length: 0\r\n\r\n" % (s, self.via(), s, self.user, self.port, s,
                                                 self.user, cid, self.contact))
        r = self.recv()
        assert status_of(r) == 200, r[:200]
        return r


def first_line(m):
    return m.split(b"\r\n", 1)[0].decode()


def response_to(req, status, reason, to_tag=None, contact=None):
    """A UAS response to a request (RFC 3261 8.2.6, 12.1.1: Record-Route copied)."""
    head = req.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    out = ["SIP/2.0 %d %s" % (status, reason)]
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
            out.append(line)
        elif name in ("to", "t"):
            out.append(line if (";tag=" in line or not to_tag) else line + ";tag=" + to_tag)
    if contact:
        out.append("Contact: " + contact)
    return ("\r\n".join(out) + "\r\nContent-Length: 0\r\n\r\n").encode()


def uri_of(value):
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


def test_incoming_call_to_registered_phones_and_callee_hangup(c):
    need_kamailio(c)
    # 16 phones over TLS (spread over the 2 workers) and 2 over plain TCP (tcp:// listener).
    phones = [Phone(c, "a%d" % i) for i in range(16)] + [Phone(c, "p%d" % i, plain=True)
                                                          for i in range(2)]
    for p in phones:
        reg = p.register()
        assert "Path" not in first_line(reg)
    caller = Phone(c, "b")
    for callee in phones:
        cid = "edge-%s-%s" % (callee.user, uuid.uuid4().hex)
        # B calls A's address of record.
        caller.send("INVITE %s:%s@example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
                    "From: <sips:b@example.com>;tag=btag\r\nTo: <%s:%s@example.com>\r\n"
                    "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: %s\r\nContent-Length: 0\r\n\r\n"
                    % (callee.scheme, callee.user, caller.via(), callee.scheme, callee.user, cid,
                       # A plain-TCP callee cannot send to a sips: target (RFC 5630).
                       caller.contact.replace("<sips:", "<sip:") if callee.plain
                       else caller.contact))
        inv = callee.recv()
        scheme = "sip" if callee.plain else "sips"
        assert first_line(inv).startswith("INVITE %s:%s@127.0.0.1" % (scheme, callee.user)), \
            inv[:120]
        assert header_values(inv, "Call-ID", "i") == [cid]
        assert not any("flow=" in r for r in header_values(inv, "Route")), \
            "sipslb's own Route must be gone"
        rr = header_values(inv, "Record-Route")
        assert len(rr) >= 3 and "flow=" in rr[0], rr  # ours (to A), Kamailio's, ours (to B)
        if callee.plain:
            # RFC 5658: two values of ours, the plain side's nearest the phone.
            assert rr[0].startswith("<sip:") and "transport=tcp" in rr[0], rr
            assert rr[1].startswith("<sips:") and "flow=" in rr[1], rr
        # A answers.
        callee.send(response_to(inv, 180, "Ringing", "atag"))
        callee.send(response_to(inv, 200, "OK", "atag", callee.contact))
        got = [caller.recv() for _ in range(2)]
        assert [status_of(m) for m in got] == [180, 200], [first_line(m) for m in got]
        ok = got[1]
        assert len(header_values(ok, "Via", "v")) == 1, "only the caller's Via is left"
        route_b = list(reversed(header_values(ok, "Record-Route")))
        # B acknowledges along its route set, to A's Contact.
        a_contact = uri_of(header_values(ok, "Contact", "m")[0])
        caller.send("ACK %s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\nRoute: %s\r\n"
                    "From: <sips:b@example.com>;tag=btag\r\nTo: <sips:%s@example.com>;tag=atag\r\n"
                    "Call-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                    % (a_contact, caller.via(), ", ".join(route_b), callee.user, cid))
        ack = callee.recv()
        assert first_line(ack).startswith("ACK "), ack[:80]
        # A hangs up: a request from the backend side of the dialog toward B.
        route_a = header_values(inv, "Record-Route")
        b_contact = uri_of(header_values(inv, "Contact", "m")[0])
        callee.send("BYE %s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\nRoute: %s\r\n"
                    "From: <sips:%s@example.com>;tag=atag\r\nTo: <sips:b@example.com>;tag=btag\r\n"
                    "Call-ID: %s\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
                    % (b_contact, callee.via(), ", ".join(route_a), callee.user, cid))
        bye = caller.recv()
        assert first_line(bye).startswith("BYE "), bye[:80]
        caller.send(response_to(bye, 200, "OK"))
        bye_ok = callee.recv()
        assert status_of(bye_ok) == 200, bye_ok[:80]
    for p in phones + [caller]:
        p.cl.close()
    c.lb.send_signal(interop.signal.SIGUSR1)
    time.sleep(0.3)
    st = c.h.read_stats(c.lb.stats)
    assert st["requests_to_clients_forwarded"] >= 54, st  # INVITE, ACK, BYE per call
    assert st["handoffs_delivered"] > 0, "the cross-worker path was not exercised: %s" % st
    assert st["flow_failed"] == 0 and st["handoffs_lost"] == 0, st


def test_call_to_a_phone_that_went_away_gets_430(c):
    need_kamailio(c)
    gone = Phone(c, "gone")
    gone.register()
    gone.cl.close()
    time.sleep(0.3)
    caller = Phone(c, "b2")
    cid = "edge-gone-" + uuid.uuid4().hex
    caller.send("INVITE sips:gone@example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
                "From: <sips:b2@example.com>;tag=b2\r\nTo: <sips:gone@example.com>\r\n"
                "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: %s\r\nContent-Length: 0\r\n\r\n"
                % (caller.via(), cid, caller.contact))
    r = caller.recv()
    assert status_of(r) == 430, first_line(r)  # RFC 5626 5.3 Flow Failed
    caller.cl.close()


def test_sips_request_on_the_plain_listener_is_refused(c):
    need_kamailio(c)
    p = Phone(c, "plainer", plain=True)
    p.send("OPTIONS sips:x@example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
           "From: <sip:plainer@example.com>;tag=1\r\nTo: <sips:x@example.com>\r\n"
           "Call-ID: plain-sips-%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
           % (p.via(), uuid.uuid4().hex))
    r = p.recv()
    assert status_of(r) == 403 and b"SIPS" in first_line(r).encode(), first_line(r)
    p.cl.close()


def test_clean_stop(c):
    need_kamailio(c)
    assert c.h.stop(c.lb) == 0


TESTS = [
    test_incoming_call_to_registered_phones_and_callee_hangup,
    test_call_to_a_phone_that_went_away_gets_430,
    test_sips_request_on_the_plain_listener_is_refused,
    test_clean_stop,
]

if __name__ == "__main__":
    sys.exit(run_tests_skipping(TESTS, setup, teardown))
