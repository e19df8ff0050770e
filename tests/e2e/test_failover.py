#!/usr/bin/env python3
"""End to end, no call lost: one of three backends fails under 1,000 calls/s (SIGKILL, a
TCP reset of all its connections, a black hole that accepts and never answers) and no call
fails; the requests it never answered are re-sent to the next backend (counted). With no
other backend, the client gets 503 with Retry-After at once instead of waiting for its
timers. Loopback only; processes stopped by PID; every load bounded in count and time.

usage: test_failover.py BUILD_DIR SOURCE_DIR"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import (Harness, SipClient, header_values, request,  # noqa: E402
                        run_tests, status_of)

PROBE = ["--probe-interval", "500ms", "--probe-timeout", "400ms", "--fall", "2", "--rise", "2"]
RATE, SECONDS, FAIL_AT = 1000, 6, 2.0


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    return c


def teardown(c):
    c.h.close()


def load_with_failure(c, name, fail):
    """Three backends behind sipslb (2 workers), calls at RATE/s for SECONDS; fail(victim)
    at FAIL_AT s. Returns (load summary, sipslb stats)."""
    uas = [c.h.start_uas("%s%d" % (name, i), c.h.free_port()) for i in range(3)]
    lb = c.h.start_sipslb(c.h.free_port(), [u.port for u in uas], ["--workers", "2"] + PROBE)
    out = {}

    def load():
        p = subprocess.run([c.h.bin("bench/sipslb-load"), "--target", "127.0.0.1:%d" % lb.port,
                            "--ca", c.ca, "--scenario", "call", "--rate", str(RATE),
                            "--duration", "%ds" % SECONDS, "--conns", "20", "--timeout", "10s",
                            "--max-duration", "60s", "--json"],
                           capture_output=True, text=True, timeout=90)
        out["json"] = json.loads(p.stdout)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(FAIL_AT)
    fail(uas[1])
    t.join(100)
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    for u in uas:
        c.h.stop(u, sig=signal.SIGKILL)
    s = out["json"]
    print("%s: %d calls, %d ok, %d failed (%s); re-sent %d, answered 503 %d, late answers "
          "dropped %d, routed around a failed link %d, client gone %d, store full %d" %
          (name, s["calls"]["started"], s["calls"]["ok"], s["calls"]["failed"],
           json.dumps(s["failures"]), st["requests_resent"], st["resend_answered_503"],
           st["resend_late_dropped"], st["routed_around_link_down"], st["resend_client_gone"],
           st["resend_store_full"]))
    return s, st


def assert_no_call_lost(s, st):
    # A copy the store had no room for cannot be re-sent: said apart, since it is a matter
    # of --resend-max-bytes against the time the failure takes to detect.
    assert st["resend_store_full"] == 0, "the re-send store ran out: %s" % st
    assert s["calls"]["failed"] == 0, s["failures"]
    assert s["calls"]["ok"] >= RATE * SECONDS * 0.95, s["calls"]
    assert st["resend_answered_503"] == 0, st


def test_sigkill_of_a_backend_loses_no_call(c):
    s, st = load_with_failure(c, "kill", lambda u: c.h.stop(u, sig=signal.SIGKILL))
    assert_no_call_lost(s, st)
    assert st["backend_lost"] >= 1, st


def test_reset_of_a_backends_connections_loses_no_call(c):
    s, st = load_with_failure(c, "rst", lambda u: u.send_signal(signal.SIGHUP))
    assert_no_call_lost(s, st)
    assert st["backend_lost"] >= 1, st


def test_black_hole_backend_loses_no_call(c):
    # It keeps its connections and answers nothing: its requests wait until the probes mark
    # it down (--probe-timeout x --fall), then go to the next backend.
    s, st = load_with_failure(c, "hole", lambda u: u.send_signal(signal.SIGUSR2))
    assert_no_call_lost(s, st)
    assert st["requests_resent"] > 0, st


def test_no_other_backend_answers_503_at_once(c):
    uas = c.h.start_uas("alone", c.h.free_port())
    lb = c.h.start_sipslb(c.h.free_port(), [uas.port], ["--workers", "1"] + PROBE)
    cl = SipClient(lb.port, c.ca)
    cl.send(request("OPTIONS", "warm-" + uuid.uuid4().hex, 1, "z9hG4bKw", cl.local_port))
    assert status_of(cl.recv_message()) == 200
    uas.send_signal(signal.SIGUSR2)
    time.sleep(0.1)
    t0 = time.time()
    cid = "alone-" + uuid.uuid4().hex
    cl.send(request("INVITE", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
    r = cl.recv_message(timeout=5.0)
    waited = time.time() - t0
    assert r is not None and status_of(r) == 503, r
    assert header_values(r, "Retry-After"), r
    print("no other backend: 503 after %.0f ms (the backend marked down, not Timer B's 32 s)"
          % (1000 * waited))
    assert waited < 3.0, waited
    cl.close()
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    assert st["resend_answered_503"] == 1, st
    c.h.stop(uas)


def test_cancel_follows_its_resent_invite(c):
    """INVITEs a black-holed backend never answered are re-sent once it is marked down;
    each one's CANCEL then goes to the backend that got the re-sent INVITE (the pending
    map follows the re-send), not wherever the new table would send its Call-ID."""
    uas = [c.h.start_uas("cx%d" % i, c.h.free_port()) for i in range(3)]
    lb = c.h.start_sipslb(c.h.free_port(), [u.port for u in uas], ["--workers", "1"] + PROBE)
    cl = SipClient(lb.port, c.ca)
    cl.send(request("OPTIONS", "warm-" + uuid.uuid4().hex, 1, "z9hG4bKw", cl.local_port))
    assert status_of(cl.recv_message()) == 200
    time.sleep(1.0)  # every backend probed up
    uas[1].send_signal(signal.SIGUSR2)
    time.sleep(0.1)
    calls = []
    for i in range(30):
        cid, br = "cx-%d-%s" % (i, uuid.uuid4().hex), "z9hG4bK" + uuid.uuid4().hex
        calls.append((cid, br))
        cl.send(request("INVITE", cid, 1, br, cl.local_port))
    finals = {}
    end = time.time() + 10
    while len(finals) < len(calls) and time.time() < end:
        m = cl.recv_message(timeout=max(0.1, end - time.time()))
        if m and status_of(m) and status_of(m) >= 200:
            finals[header_values(m, "Call-ID", "i")[0]] = status_of(m)
    assert len(finals) == 30 and set(finals.values()) == {200}, finals
    for cid, br in calls:
        cl.send(request("CANCEL", cid, 1, br, cl.local_port))
    got = 0
    end = time.time() + 10
    while got < len(calls) and time.time() < end:
        m = cl.recv_message(timeout=max(0.1, end - time.time()))
        if m and status_of(m) and status_of(m) >= 200:
            got += 1
    assert got == 30, got
    cl.close()
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    reports = c.h.reports(uas)
    assert not any(cid in reports[1] for cid, _ in calls), "the black hole tallied our calls"
    for cid, _ in calls:
        where = [r.get(cid, 0) for r in reports]
        assert sorted(where) == [0, 0, 2], (cid, where)  # INVITE and CANCEL on one backend
    print("re-sent INVITEs: %d; every CANCEL reached its INVITE's backend (pending-routed %d)"
          % (st["requests_resent"], st["pending_routed"]))
    assert st["requests_resent"] >= 1 and st["pending_routed"] >= 30, st
    for u in uas:
        c.h.stop(u, sig=signal.SIGKILL)


def test_in_dialog_requests_of_a_backend_whose_links_failed(c):
    """A backend killed but not yet marked down (--fall 100): a re-INVITE our Route pins to
    it gets 503 (the client may retry; another backend's 481 would end the dialog), its
    BYE goes to the next backend (which can only end the dialog, as asked), and a new call
    whose Call-ID it owns goes to the next backend."""
    uas = [c.h.start_uas("pin%d" % i, c.h.free_port()) for i in range(3)]
    lb = c.h.start_sipslb(c.h.free_port(), [u.port for u in uas],
                          ["--workers", "1", "--probe-interval", "500ms", "--probe-timeout",
                           "400ms", "--fall", "100", "--rise", "1"])
    cl = SipClient(lb.port, c.ca)
    dialogs = []
    for i in range(30):
        cid = "pin-%d-%s" % (i, uuid.uuid4().hex)
        cl.send(request("INVITE", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
        resp = [cl.recv_message() for _ in range(3)]
        assert [status_of(m) for m in resp] == [100, 180, 200], resp
        tag = re.search(r"tag=([^;>\s]+)", header_values(resp[2], "To", "t")[0]).group(1)
        dialogs.append((cid, tag, header_values(resp[2], "Record-Route")))
    reports = c.h.reports(uas)
    pinned = [d for d in dialogs if d[0] in reports[1]]
    assert pinned, "no dialog on the victim"
    c.h.stop(uas[1], sig=signal.SIGKILL)
    time.sleep(0.5)  # its links are lost; 100 failed probes would take 50 s

    def in_dialog(method, cid, cseq, tag, rr):
        cl.send(request(method, cid, cseq, "z9hG4bK" + uuid.uuid4().hex, cl.local_port,
                        to_tag=tag, extra="Route: %s\r\n" % ", ".join(rr)))
        while True:
            m = cl.recv_message()
            if status_of(m) >= 200:
                return status_of(m)

    for cid, tag, rr in pinned:
        assert in_dialog("INVITE", cid, 2, tag, rr) == 503, cid
        assert in_dialog("BYE", cid, 3, tag, rr) == 200, cid
    for i in range(60):
        cid = "pin-new-%d-%s" % (i, uuid.uuid4().hex)
        cl.send(request("OPTIONS", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
        assert status_of(cl.recv_message()) == 200, cid
    cl.close()
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    moved = st["routed_around_link_down"]
    print("%d dialogs on the killed backend: re-INVITE 503, BYE 200; %d requests routed "
          "around its links" % (len(pinned), moved))
    assert moved >= len(pinned), st  # the BYEs, and new requests whose Call-ID it owns
    assert st["replied_503"] >= len(pinned), st
    for u in (uas[0], uas[2]):
        c.h.stop(u, sig=signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(run_tests([test_no_other_backend_answers_503_at_once,
                        test_sigkill_of_a_backend_loses_no_call,
                        test_reset_of_a_backends_connections_loses_no_call,
                        test_black_hole_backend_loses_no_call,
                        test_cancel_follows_its_resent_invite,
                        test_in_dialog_requests_of_a_backend_whose_links_failed], setup, teardown))
