#!/usr/bin/env python3
"""End to end, several sipslb instances behind a real L4 balancer: HAProxy in TCP mode with
send-proxy-v2 spreads client connections over two sipslb processes that share
--secret-file and take their backends from a real DNS server (dnsmasq, SRV records).
Checks: received= carries the client's own address (127.0.0.3), not the balancer's; both
instances route every Call-ID alike; an in-dialog request through the other instance
follows the Record-Route token to the same backend; a TLS session from one instance resumes
on the other; a phone registered through an instance that restarts gets 430 (not 403) on
its old flow, and is reachable again once it re-registers (Kamailio as the registrar).
Loopback only (clients on 127.0.0.3/127.0.0.4, Kamailio on 127.0.0.2); processes stopped by
PID; every wait bounded.

usage: test_scale_out.py BUILD_DIR SOURCE_DIR"""

import os
import re
import socket
import ssl
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import SipClient, Skip, header_values, request, run_tests_skipping, status_of  # noqa
import test_dns as dnst  # noqa: E402  (dnsmasq, the mock backends for *.wild.test)
import test_edge as edge  # noqa: E402  (the Kamailio registrar)
import test_interop as interop  # noqa: E402

KEYS = ("# newest first\n"
        "8f1c2a7d0b9e4c3f5a6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b\n"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")
DIRECT = "127.0.0.4"  # clients that reach an instance without the balancer
PHONES = "127.0.0.3"  # clients behind the balancer


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = interop.Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.tools = {"haproxy": interop.find_program("haproxy"),
               "kamailio": interop.find_program("kamailio"),
               "dnsmasq": interop.find_program("dnsmasq")}
    c.dnsmasq = c.tools["dnsmasq"]
    c.kam_modules = interop.kamailio_modules()
    c.secret = os.path.join(c.h.tmp, "secrets")
    with open(c.secret, "w") as f:
        f.write(KEYS)
    os.chmod(c.secret, 0o600)
    c.cids = ["so-%d-%s" % (i, uuid.uuid4().hex[:8]) for i in range(200)]
    return c


def teardown(c):
    c.h.close()


def need(c, *names):
    missing = [n for n in names if not c.tools.get(n)]
    if missing:
        raise Skip("not installed: " + ", ".join(missing))


def start_instance(c, name, port, backend_args, extra=()):
    stats = os.path.join(c.h.tmp, name + ".stats")
    p = interop.start(c.h, name, [
        c.h.bin("balancer/sipslb"), "--cert", c.h.cert("server-ec.pem"), "--key",
        c.h.cert("server-ec.key"), "--listen", "127.0.0.1:%d" % port, "--advertise",
        "127.0.0.1:%d" % port, "--backend-ca", c.ca, "--secret-file", c.secret,
        "--proxy-protocol-from", "127.0.0.1/32", "--workers", "1", "--stats-file", stats,
        "--probe-interval", "300ms", "--probe-timeout", "250ms"] + backend_args + list(extra),
        wait_port=port)
    p.port, p.stats = port, stats
    return p


def start_haproxy(c, a, b):
    port = c.h.free_port()
    p = interop.start(c.h, "haproxy-l4", [c.tools["haproxy"], "-db", "-f", os.path.join(
        c.h.source, "tests/haproxy/l4-proxy-v2.cfg")],
        env={"HAP_LISTEN": "127.0.0.1:%d" % port, "HAP_A": "127.0.0.1:%d" % a.port,
             "HAP_B": "127.0.0.1:%d" % b.port}, wait_port=port)
    p.port = port
    time.sleep(0.7)  # its first health checks (each with a PROXY header)
    return p


def stats(c, lb):
    lb.send_signal(interop.signal.SIGUSR1)
    time.sleep(0.3)
    return c.h.read_stats(lb.stats)


def owners_via(c, port, source):
    cl = SipClient(port, c.ca, source=source)
    out = {}
    for cid in c.cids:
        cl.send(request("OPTIONS", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
        r = cl.recv_message()
        assert status_of(r) == 200, r
        out[cid] = re.search(r"tag=(b\d)", header_values(r, "To")[0]).group(1)
    cl.close()
    return out


def test_two_instances_behind_haproxy_act_as_one(c):
    need(c, "haproxy", "dnsmasq")
    uas = {n: dnst.start_uas(c, n) for n in ("b1", "b2", "b3")}
    dns = dnst.Dns(c)
    dns.serve([(n, uas[n].port, 10, 10) for n in ("b1", "b2", "b3")])
    dns_args = ["--backend", "sips:" + dnst.DOMAIN, "--dns-server", "127.0.0.1:%d" % dns.port]
    a = start_instance(c, "slb-a", c.h.free_port(), dns_args)
    b = start_instance(c, "slb-b", c.h.free_port(), dns_args)
    for lb in (a, b):
        dnst.wait_backends(c, lb, ["b1", "b2", "b3"])
    hap = start_haproxy(c, a, b)

    # Every Call-ID goes to the same backend whichever instance takes it.
    oa, ob = owners_via(c, a.port, DIRECT), owners_via(c, b.port, DIRECT)
    same = sum(1 for k in oa if oa[k] == ob[k]) / len(oa)
    print("routing: %.2f of %d Call-IDs go to the same backend through either instance" %
          (same, len(oa)))
    assert same == 1.0

    # Through the balancer: each instance sees the phone's own address (PROXY v2).
    for i in range(2):
        cl = SipClient(hap.port, c.ca, source=PHONES)
        cl.send(request("OPTIONS", "rcv-%d-%s" % (i, uuid.uuid4().hex), 1,
                        "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
        r = cl.recv_message()
        via = header_values(r, "Via", "v")
        assert status_of(r) == 200 and len(via) == 1, r
        assert "received=%s" % PHONES in via[0] and "rport=%d" % cl.local_port in via[0], via
        cl.close()
    sa, sb = stats(c, a), stats(c, b)
    print("PROXY v2: headers taken by A %d, by B %d; refused %d" %
          (sa["proxy_hdr_ok"], sb["proxy_hdr_ok"], sa["proxy_hdr_refused"] +
           sb["proxy_hdr_refused"]))
    assert sa["proxy_hdr_ok"] >= 1 and sb["proxy_hdr_ok"] >= 1, (sa, sb)
    # A client that is not the balancer may not claim an address.
    raw = socket.create_connection(("127.0.0.1", a.port), source_address=(DIRECT, 0))
    raw.sendall(b"PROXY TCP4 10.9.9.9 127.0.0.1 5555 5061\r\n")
    raw.settimeout(3)
    assert raw.recv(100) == b""
    raw.close()
    assert stats(c, a)["proxy_hdr_refused"] >= 1
    # From the balancer's address: a header split across reads (it borrows a buffer until
    # whole), then TLS; the address it names is the client's.
    raw = socket.create_connection(("127.0.0.1", a.port), source_address=("127.0.0.1", 0))
    hdr = b"PROXY TCP4 10.9.9.9 127.0.0.1 5555 5061\r\n"
    raw.sendall(hdr[:9])
    time.sleep(0.2)
    raw.sendall(hdr[9:])
    tls = ssl.create_default_context(cafile=c.ca).wrap_socket(raw, server_hostname="localhost")
    tls.sendall(request("OPTIONS", "split-" + uuid.uuid4().hex, 1, "z9hG4bKsp", 5555))
    tls.settimeout(5)
    r = tls.recv(65536)
    assert status_of(r) == 200 and b"received=10.9.9.9" in r, r
    tls.close()
    # ... and one that never sends its header is closed at --proxy-protocol-timeout (3 s).
    raw = socket.create_connection(("127.0.0.1", a.port), source_address=("127.0.0.1", 0))
    raw.settimeout(6)
    t0 = time.time()
    assert raw.recv(100) == b"" and 2.5 < time.time() - t0 < 5.5
    raw.close()
    assert stats(c, a)["proxy_hdr_timeouts"] >= 1

    # A dialog through A; its in-dialog request through B follows A's Record-Route token to
    # the backend A chose, even for a Call-ID that B would route elsewhere.
    cl = SipClient(a.port, c.ca, source=DIRECT)
    cid = c.cids[0]
    cl.send(request("INVITE", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
    got = [cl.recv_message() for _ in range(3)]
    ok = got[-1]
    assert status_of(ok) == 200, [status_of(m) for m in got]
    rr = header_values(ok, "Record-Route")
    assert rr and "slb=" in rr[0], rr
    x = oa[cid]
    other = next(k for k in c.cids if oa[k] != x)
    cl.close()
    cl = SipClient(b.port, c.ca, source=DIRECT)
    # No To tag: the mock backend then names itself in the answer's tag.
    msg = request("OPTIONS", other, 2, "z9hG4bK" + uuid.uuid4().hex, cl.local_port).replace(
        b"Call-ID:", ("Route: %s\r\nCall-ID:" % rr[0]).encode(), 1)
    cl.send(msg)
    r = cl.recv_message()
    got_by = re.search(r"tag=(b\d)", header_values(r, "To")[0]).group(1)
    print("in-dialog through the other instance: A chose %s, B by the Call-ID would choose "
          "%s, the request went to %s" % (x, oa[other], got_by))
    assert status_of(r) == 200 and got_by == x, (got_by, x)
    cl.close()

    # A TLS session from A resumes on B (ticket keys from the shared secret).
    ctx = ssl.create_default_context(cafile=c.ca)
    s1 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", a.port),
                                                  source_address=(DIRECT, 0)),
                         server_hostname="localhost")
    s1.sendall(request("OPTIONS", "tls-" + uuid.uuid4().hex, 1, "z9hG4bKt1", 5060))
    s1.recv(65536)  # TLS 1.3 tickets come after the handshake
    sess = s1.session
    s1.close()
    s2 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", b.port),
                                                  source_address=(DIRECT, 0)),
                         server_hostname="localhost", session=sess)
    s2.sendall(request("OPTIONS", "tls-" + uuid.uuid4().hex, 1, "z9hG4bKt2", 5060))
    s2.recv(65536)
    print("TLS: a session from A resumed on B: %s (%s)" % (s2.session_reused, s2.version()))
    assert s2.session_reused
    s2.close()

    # Key rotation (SIGHUP): a new key on top, the old one kept, on both instances: the
    # token A signed before still routes through B, and what A signs now too. Once the old
    # key is dropped, the old token is no longer ours (routed by the Call-ID, like anyone's).
    def in_dialog_owner(route):
        cl = SipClient(b.port, c.ca, source=DIRECT)
        cl.send(request("OPTIONS", other, 3, "z9hG4bK" + uuid.uuid4().hex,
                        cl.local_port).replace(b"Call-ID:", ("Route: %s\r\nCall-ID:" %
                                                             route).encode(), 1))
        r = cl.recv_message()
        cl.close()
        assert status_of(r) == 200, r
        return re.search(r"tag=(b\d)", header_values(r, "To")[0]).group(1)

    def rotate(text):
        with open(c.secret, "w") as f:
            f.write(text)
        for lb in (a, b):
            lb.send_signal(interop.signal.SIGHUP)
        time.sleep(0.5)  # the workers take new keys at their next refresh

    newest = "%064x\n" % 0xfeed
    rotate(newest + KEYS)
    assert in_dialog_owner(rr[0]) == x, "a token of the old key after the rotation"
    cl = SipClient(a.port, c.ca, source=DIRECT)
    cl.send(request("INVITE", cid, 5, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
    fresh_rr = header_values([cl.recv_message() for _ in range(3)][-1], "Record-Route")[0]
    cl.close()
    assert fresh_rr != rr[0], "the newest key signs"
    assert in_dialog_owner(fresh_rr) == x
    rotate(newest)
    assert in_dialog_owner(rr[0]) == oa[other], "a token of a removed key still verifies"
    assert in_dialog_owner(fresh_rr) == x
    assert "re-read --secret-file" in c.h.log_of(a), c.h.log_of(a)
    print("key rotation: old and new tokens verify while both keys are listed; the old one "
          "no longer once its key is removed")

    c.h.stop(hap)
    for p in (a, b):
        assert c.h.stop(p) == 0
    dns.stop()
    for u in uas.values():
        c.h.stop(u)


class Phone:
    def __init__(self, c, port, user):
        self.c, self.user = c, user
        self.cl = SipClient(port, c.ca, source=PHONES)
        # The same Contact over every connection: the registrar replaces the binding (and
        # its Path); reachability is the flow's job (RFC 5626).
        self.contact = "<sips:%s@%s:5061;transport=tcp>" % (user, PHONES)

    def via(self):
        return "SIP/2.0/TLS %s:%d;branch=z9hG4bK%s;rport" % (PHONES, self.cl.local_port,
                                                             uuid.uuid4().hex)

    def register(self, inst):
        """Registers; returns the port of the instance that took it (the one whose request
        count grew)."""
        before = {p: stats(self.c, lb)["requests_in"] for p, lb in inst.items()}
        self.cl.send(("REGISTER sips:example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
                      "From: <sips:%s@example.com>;tag=r1\r\nTo: <sips:%s@example.com>\r\n"
                      "Call-ID: reg-%s\r\nCSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 300\r\n"
                      "Content-Length: 0\r\n\r\n" % (self.via(), self.user, self.user,
                                                     uuid.uuid4().hex, self.contact)).encode())
        r = self.cl.recv_message()
        assert status_of(r) == 200, r
        took = [p for p, lb in inst.items() if stats(self.c, lb)["requests_in"] > before[p]]
        assert len(took) == 1, took
        return took[0]


def invite(caller, callee_user):
    cid = "so-call-" + uuid.uuid4().hex
    caller.cl.send(("INVITE sips:%s@example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
                    "From: <sips:%s@example.com>;tag=c1\r\nTo: <sips:%s@example.com>\r\n"
                    "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: %s\r\nContent-Length: 0\r\n\r\n"
                    % (callee_user, caller.via(), caller.user, callee_user, cid,
                       caller.contact)).encode())
    return cid


def test_phone_behind_a_restarted_instance_gets_430_then_reregisters(c):
    need(c, "haproxy", "kamailio")
    if not (c.kam_modules and os.path.exists(os.path.join(c.kam_modules, "registrar.so"))):
        raise Skip("kamailio's registrar module is not installed")
    kam = edge.start_registrar(c, c.h.free_port())
    try:
        back = ["--backend", "sips:127.0.0.2:%d" % kam.port] + edge.backend_auth(c.h)
        ports = [c.h.free_port(), c.h.free_port()]
        inst = {p: start_instance(c, "slb-%d" % p, p, back) for p in ports}
        hap = start_haproxy(c, inst[ports[0]], inst[ports[1]])
        phone = Phone(c, hap.port, "alice")
        x = phone.register(inst)
        caller = Phone(c, hap.port, "bob")
        cid = invite(caller, "alice")
        inv = phone.cl.recv_message()
        assert inv and inv.startswith(b"INVITE "), inv
        assert header_values(inv, "Call-ID", "i") == [cid]
        phone.cl.send(edge.response_to(inv, 486, "Busy Here", "a1"))
        assert status_of(caller.cl.recv_message()) == 486

        # The instance holding the phone's flow restarts (same address, same secret).
        old = inst[x]
        assert c.h.stop(old) == 0
        assert phone.cl.recv_message(timeout=5.0) is None, "its connection was not closed"
        inst[x] = start_instance(c, "slb-%d-new" % x, x, back)
        time.sleep(0.8)  # HAProxy sees it up again
        phone = Phone(c, hap.port, "alice")  # reconnects, wherever the balancer puts it
        # Before it re-registers, a call follows its old Path: the new process knows the
        # token (same key) but not the flow: 430, so a registrar tries another flow.
        caller = Phone(c, hap.port, "bob")
        invite(caller, "alice")
        r = caller.cl.recv_message()
        st = stats(c, inst[x])
        print("old flow after a restart: %s (new process: flow_failed %d, flow_bad_mac %d)" %
              (r.split(b"\r\n", 1)[0].decode(), st["flow_failed"], st["flow_bad_mac"]))
        assert status_of(r) == 430, r
        assert st["flow_failed"] >= 1 and st["flow_bad_mac"] == 0, st
        # Re-registered: reachable again.
        y = phone.register(inst)
        cid = invite(caller, "alice")
        inv = phone.cl.recv_message()
        assert inv and inv.startswith(b"INVITE ") and header_values(inv, "Call-ID", "i") == [cid]
        phone.cl.send(edge.response_to(inv, 486, "Busy Here", "a2"))
        assert status_of(caller.cl.recv_message()) == 486
        print("re-registered through the instance on port %d: reachable again" % y)
        for p in [hap] + list(inst.values()):
            c.h.stop(p)
    finally:
        interop.stop_kamailio(c.h, kam)


if __name__ == "__main__":
    sys.exit(run_tests_skipping([test_two_instances_behind_haproxy_act_as_one,
                                 test_phone_behind_a_restarted_instance_gets_430_then_reregisters],
                                setup, teardown, none_ran=1))
