#!/usr/bin/env python3
"""End to end over real TLS on loopback: sipslb with 2 workers in front of 3 mock backends
(sipslb-uas). Started and stopped here, by PID; every wait bounded.

usage: test_relay.py BUILD_DIR SOURCE_DIR"""

import os
import re
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import (Harness, SipClient, header_values, request,  # noqa: E402
                        run_tests, status_of)

SDP = (b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 49170 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Ctx:
    pass


def setup():
    h = Harness(sys.argv[1], sys.argv[2])
    c = Ctx()
    c.h = h
    c.uas = [h.start_uas("uas%d" % i, h.free_port()) for i in range(3)]
    c.lb = h.start_sipslb(h.free_port(), [u.port for u in c.uas], ["--workers", "2"])
    c.ca = h.cert("ca.pem")
    c.dialogs = {}  # call-id -> requests sent
    wait_backends_up(c)
    return c


def teardown(c):
    c.h.close()


def wait_backends_up(c, timeout=10.0):
    """Until an OPTIONS is answered 200 (the backend links are up)."""
    end = time.time() + timeout
    while time.time() < end:
        cl = SipClient(c.lb.port, c.ca)
        cl.send(request("OPTIONS", "warmup-" + uuid.uuid4().hex, 1, "z9hG4bKw" + uuid.uuid4().hex,
                        cl.local_port))
        r = cl.recv_message()
        cl.close()
        if r and status_of(r) == 200:
            return
        time.sleep(0.1)
    raise AssertionError("backends never came up")


def check_response_to(resp, sent_branch, call_id):
    """Our Via is gone, the client's Via is the only one and got received/rport, and the
    response belongs to the request."""
    assert resp is not None, "connection closed instead of a response"
    vias = header_values(resp, "Via", "v")
    assert len(vias) == 1, "expected only the client's Via, got %r" % vias
    assert b"z9hG4bKslb" not in resp, "our Via leaked to the client"
    assert ("branch=%s" % sent_branch) in vias[0], vias[0]
    assert "received=127.0.0.1" in vias[0] and re.search(r"rport=\d+", vias[0]), vias[0]
    assert header_values(resp, "Call-ID", "i") == [call_id]


def run_dialog(c, cl, call_id, record):
    """INVITE/100/180/200, ACK, BYE/200 on one connection."""
    br = "z9hG4bK" + uuid.uuid4().hex
    cl.send(request("INVITE", call_id, 1, br, cl.local_port, body=SDP,
                    extra="Content-Type: application/sdp\r\n"))
    got = [cl.recv_message() for _ in range(3)]
    assert [status_of(m) for m in got] == [100, 180, 200], [m[:40] for m in got]
    for m in got:
        check_response_to(m, br, call_id)
    ok = got[2]
    body = ok.split(b"\r\n\r\n", 1)[1]
    assert int(header_values(ok, "Content-Length", "l")[0]) == len(body) > 0
    to_tag = re.search(r"tag=([^;>\s]+)", header_values(ok, "To", "t")[0]).group(1)
    cl.send(request("ACK", call_id, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port,
                    to_tag=to_tag))
    br = "z9hG4bK" + uuid.uuid4().hex
    cl.send(request("BYE", call_id, 2, br, cl.local_port, to_tag=to_tag))
    bye_ok = cl.recv_message()
    assert status_of(bye_ok) == 200
    check_response_to(bye_ok, br, call_id)
    record[call_id] = 3


def test_dialogs_on_many_connections(c):
    """8 connections x 25 dialogs in parallel: every response comes back on the connection
    that sent the request."""
    errors = []

    def worker(n):
        try:
            cl = SipClient(c.lb.port, c.ca)
            for i in range(25):
                run_dialog(c, cl, "dlg-%d-%d-%s@client" % (n, i, uuid.uuid4().hex[:8]),
                           c.dialogs)
            cl.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(c.dialogs) == 200


def test_options_and_register(c):
    cl = SipClient(c.lb.port, c.ca)
    for method in ("OPTIONS", "REGISTER"):
        cid = "%s-%s" % (method.lower(), uuid.uuid4().hex)
        br = "z9hG4bK" + uuid.uuid4().hex
        cl.send(request(method, cid, 1, br, cl.local_port))
        r = cl.recv_message()
        assert status_of(r) == 200
        check_response_to(r, br, cid)
        c.dialogs[cid] = 1
    cl.close()


def test_split_records_and_batched_messages(c):
    cl = SipClient(c.lb.port, c.ca)
    # One message in three TLS records, cut inside the headers and inside a header name.
    cid = "split-" + uuid.uuid4().hex
    msg = request("OPTIONS", cid, 1, "z9hG4bKsplit1", cl.local_port)
    for part in (msg[:17], msg[17:90], msg[90:]):
        cl.send(part)
        time.sleep(0.02)
    assert status_of(cl.recv_message()) == 200
    c.dialogs[cid] = 1
    # Five messages in one record.
    batch = b""
    cids = ["batch-%d-%s" % (i, uuid.uuid4().hex) for i in range(5)]
    for i, b in enumerate(cids):
        batch += request("OPTIONS", b, 1, "z9hG4bKbatch%d" % i, cl.local_port)
        c.dialogs[b] = 1
    cl.send(batch)
    seen = [header_values(cl.recv_message(), "Call-ID")[0] for _ in range(5)]
    assert sorted(seen) == sorted(cids)
    cl.close()


def test_keepalive_ping_gets_pong(c):
    cl = SipClient(c.lb.port, c.ca)
    cl.send(b"\r\n\r\n")
    assert cl.recv_message() == b"\r\n"
    cl.close()


def test_max_forwards_zero_gets_483(c):
    cl = SipClient(c.lb.port, c.ca)
    cl.send(request("OPTIONS", "mf0-" + uuid.uuid4().hex, 1, "z9hG4bKmf0", cl.local_port,
                    max_forwards=0))
    r = cl.recv_message()
    assert status_of(r) == 483, r[:60]
    assert re.search(r";tag=", header_values(r, "To")[0])
    cl.close()


def test_malformed_input_gets_400_or_close_and_spares_others(c):
    bystander = SipClient(c.lb.port, c.ca)
    cl = SipClient(c.lb.port, c.ca)
    # A malformed Max-Forwards: 400 with the reason, and the connection goes on.
    bad = request("OPTIONS", "x", 1, "z9hG4bKbad1", cl.local_port).replace(
        b"Max-Forwards: 70", b"Max-Forwards: lots")
    cl.send(bad)
    r = cl.recv_message()
    assert status_of(r) == 400 and b"Max-Forwards" in r.split(b"\r\n")[0], r[:80]
    cid = "after-bad-" + uuid.uuid4().hex
    cl.send(request("OPTIONS", cid, 1, "z9hG4bKbad2", cl.local_port))
    assert status_of(cl.recv_message()) == 200
    c.dialogs[cid] = 1
    # Missing Call-ID: no response can be built, so the connection is closed.
    nocid = SipClient(c.lb.port, c.ca)
    nocid.send(request("OPTIONS", "y", 1, "z9hG4bKbad3", nocid.local_port).replace(
        b"Call-ID: y\r\n", b""))
    assert nocid.recv_message() is None
    nocid.close()
    # Garbage: the connection is closed.
    cl.send(b"\x16\x03\x01 this is not SIP at all\r\n\r\n")
    assert cl.recv_message() is None
    cl.close()
    # A message over the size limit: 513, then the connection is closed.
    big = SipClient(c.lb.port, c.ca)
    body = b"x" * 70000
    big.send(request("MESSAGE", "big", 1, "z9hG4bKbig", big.local_port, body=body)[:2000])
    big.send(body[:1000])
    r = big.recv_message()
    assert r is None or status_of(r) == 513, r[:60]
    big.close()
    # The bystander was not hurt.
    cid = "bystander-" + uuid.uuid4().hex
    bystander.send(request("OPTIONS", cid, 1, "z9hG4bKby", bystander.local_port))
    assert status_of(bystander.recv_message()) == 200
    c.dialogs[cid] = 1
    bystander.close()


def test_spread_over_backends_is_even(c):
    """6000 Call-IDs over 3 backends: each within 6% (relative) of a third."""
    cl = SipClient(c.lb.port, c.ca, timeout=20)
    n = 6000
    cids = ["spread-%d-%s@example.com" % (i, uuid.uuid4().hex[:12]) for i in range(n)]
    for k in range(0, n, 100):
        batch = b"".join(request("OPTIONS", cid, 1, "z9hG4bKs%d" % (k + i), cl.local_port)
                         for i, cid in enumerate(cids[k:k + 100]))
        cl.send(batch)
        for _ in range(100):
            assert status_of(cl.recv_message(timeout=20)) == 200
    cl.close()
    for cid in cids:
        c.dialogs[cid] = 1
    reports = c.h.reports(c.uas)
    counts = [sum(1 for cid in cids if cid in r) for r in reports]
    assert sum(counts) == n, counts
    for k in counts:
        assert abs(k - n / 3) <= 0.06 * n / 3, counts


def test_every_call_id_reached_exactly_one_backend(c):
    reports = c.h.reports(c.uas)
    for cid, sent in c.dialogs.items():
        where = [i for i, r in enumerate(reports) if cid in r]
        assert len(where) == 1, "%s reached backends %r" % (cid, where)
        assert reports[where[0]][cid] == sent, (cid, reports[where[0]][cid], sent)


def test_all_backends_down_gives_503(c):
    for u in c.uas:
        c.h.stop(u)
    end = time.time() + 10
    status = None
    while time.time() < end:
        cl = SipClient(c.lb.port, c.ca)
        cl.send(request("OPTIONS", "down-" + uuid.uuid4().hex, 1, "z9hG4bKdown", cl.local_port))
        r = cl.recv_message()
        cl.close()
        status = status_of(r) if r else None
        if status == 503:
            assert header_values(r, "Retry-After") == ["5"]
            return
        time.sleep(0.1)
    raise AssertionError("expected 503, last status %r" % status)


def test_clean_stop_exits_zero(c):
    rc = c.h.stop(c.lb)
    assert rc == 0, "sipslb exited %r:\n%s" % (rc, c.h.log_of(c.lb)[-2000:])
    stats = c.h.read_stats(c.lb.stats)
    assert stats["requests_forwarded"] > 6000, stats
    assert stats["replied_483"] >= 1 and stats["replied_400"] >= 1 and stats["replied_503"] >= 1


TESTS = [
    test_dialogs_on_many_connections,
    test_options_and_register,
    test_split_records_and_batched_messages,
    test_keepalive_ping_gets_pong,
    test_max_forwards_zero_gets_483,
    test_malformed_input_gets_400_or_close_and_spares_others,
    test_spread_over_backends_is_even,
    test_every_call_id_reached_exactly_one_backend,
    test_all_backends_down_gives_503,
    test_clean_stop_exits_zero,
]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, setup, teardown))
