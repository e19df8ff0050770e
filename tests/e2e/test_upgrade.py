#!/usr/bin/env python3
"""End to end, graceful stop and zero-downtime upgrade: SIGTERM stops accepting and closes
each client connection once it is idle (no request awaiting its answer), a second signal or
--drain-timeout cuts the rest (counted); a new sipslb started with the same
--handover-socket takes the running one's listening sockets, and the old one drains and
exits, under a connection-churning load and a persistent one, with no connection refused
or reset and no transaction lost. Loopback only; processes stopped by PID; loads bounded.

usage: test_upgrade.py BUILD_DIR SOURCE_DIR"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import (Harness, SipClient, request, run_tests, status_of)  # noqa: E402


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    return c


def teardown(c):
    c.h.close()


def options(cl, tag):
    cl.send(request("OPTIONS", "%s-%s" % (tag, uuid.uuid4().hex), 1,
                    "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
    return cl.recv_message()


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return False
    except OSError:
        return True


def test_sigterm_closes_idle_connections_and_relays_on_busy_ones(c):
    uas = c.h.start_uas("d-uas", c.h.free_port())
    lb = c.h.start_sipslb(c.h.free_port(), [uas.port],
                          ["--workers", "2", "--drain-timeout", "10s", "--probe-interval",
                           "500ms", "--probe-timeout", "400ms", "--fall", "2"])
    idle, busy = SipClient(lb.port, c.ca), SipClient(lb.port, c.ca)
    assert status_of(options(idle, "idle")) == 200
    assert status_of(options(busy, "busy")) == 200
    # The busy client's INVITE waits at a backend that stopped answering.
    uas.send_signal(signal.SIGUSR2)
    time.sleep(0.1)
    busy.send(request("INVITE", "busy-" + uuid.uuid4().hex, 1, "z9hG4bK" + uuid.uuid4().hex,
                      busy.local_port))
    time.sleep(0.1)
    t0 = time.time()
    lb.send_signal(signal.SIGTERM)
    # Stops accepting at once (within a refresh tick); the idle one is closed.
    time.sleep(0.5)
    assert refused(lb.port), "still accepting after SIGTERM"
    assert idle.recv_message(timeout=3.0) is None, "the idle connection was not closed"
    assert lb.poll() is None, "exited with a request in flight"
    # The busy one keeps relaying: its INVITE gets its answer (503 once the backend is
    # marked down, instead of waiting for the client's timers), then it is closed too and
    # the process exits by itself.
    r = busy.recv_message(timeout=5.0)
    assert r is not None and status_of(r) == 503, r
    assert busy.recv_message(timeout=3.0) is None
    lb.wait(5)
    waited = time.time() - t0
    assert lb.returncode == 0, lb.returncode
    st = c.h.read_stats(lb.stats)
    print("drain: the idle connection closed at once, the busy one after its answer; exit "
          "%.2f s after SIGTERM (drain_closed_idle %d, cut %d)" %
          (waited, st["drain_closed_idle"], st["drain_cut_conns"]))
    assert st["drain_closed_idle"] == 2 and st["drain_cut_conns"] == 0, st
    c.h.stop(uas, sig=signal.SIGKILL)


def start_hung(c, name, timeout):
    """sipslb in front of one black-holed backend, with a client awaiting an answer."""
    uas = c.h.start_uas(name, c.h.free_port())
    lb = c.h.start_sipslb(c.h.free_port(), [uas.port], ["--workers", "1", "--drain-timeout",
                                                         timeout, "--probe-interval", "60s"])
    cl = SipClient(lb.port, c.ca)
    assert status_of(options(cl, "warm")) == 200
    uas.send_signal(signal.SIGUSR2)
    time.sleep(0.1)
    cl.send(request("INVITE", "hung-" + uuid.uuid4().hex, 1, "z9hG4bK" + uuid.uuid4().hex,
                    cl.local_port))
    time.sleep(0.3)
    return uas, lb, cl


def test_drain_timeout_cuts_what_is_left_and_counts_it(c):
    uas, lb, cl = start_hung(c, "t-uas", "1s")
    t0 = time.time()
    lb.send_signal(signal.SIGTERM)
    lb.wait(10)
    waited = time.time() - t0
    st = c.h.read_stats(lb.stats)
    print("drain timeout 1 s: exited after %.2f s, cut %d connections with %d requests" %
          (waited, st["drain_cut_conns"], st["drain_cut_requests"]))
    assert lb.returncode == 0
    assert 0.9 <= waited < 5.0, waited
    assert st["drain_cut_conns"] == 1 and st["drain_cut_requests"] == 1, st
    assert "cutting 1 client connections with 1 requests" in c.h.log_of(lb)
    cl.close()
    c.h.stop(uas, sig=signal.SIGKILL)


def test_second_sigterm_stops_at_once(c):
    uas, lb, cl = start_hung(c, "q-uas", "60s")
    lb.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert lb.poll() is None, "a busy connection must hold the drain"
    t0 = time.time()
    lb.send_signal(signal.SIGTERM)
    lb.wait(10)
    assert lb.returncode == 0 and time.time() - t0 < 3.0
    st = c.h.read_stats(lb.stats)
    assert st["drain_cut_conns"] == 1, st
    cl.close()
    c.h.stop(uas, sig=signal.SIGKILL)


def load(c, port, out, key, extra):
    p = subprocess.run([c.h.bin("bench/sipslb-load"), "--target", "127.0.0.1:%d" % port,
                        "--ca", c.ca, "--scenario", "call", "--duration", "6s",
                        "--timeout", "5s", "--max-duration", "30s", "--json"] + extra,
                       capture_output=True, text=True, timeout=90)
    out[key] = json.loads(p.stdout)


def test_upgrade_under_load_loses_nothing(c):
    """Old and new sipslb share --handover-socket: the new one takes the listening sockets,
    the old one drains and exits, while a load opens a new TLS connection per call and
    another keeps persistent connections."""
    uas = [c.h.start_uas("u%d" % i, c.h.free_port()) for i in range(2)]
    port = c.h.free_port()
    sock = os.path.join(c.h.tmp, "handover.sock")
    flags = ["--workers", "2", "--handover-socket", sock, "--drain-timeout", "10s"]
    old = c.h.start_sipslb(port, [u.port for u in uas], flags)
    time.sleep(0.5)
    out = {}
    # Churn: a new TLS connection per call, 4 at a time. Persistent: 8 connections, 20
    # calls/s in all, so each goes quiet between calls (what "idle" needs).
    loads = [threading.Thread(target=load, args=(c, port, out, "churn",
                                                 ["--handshake", "--conns", "4"])),
             threading.Thread(target=load, args=(c, port, out, "persistent",
                                                 ["--conns", "8", "--rate", "20"]))]
    for t in loads:
        t.start()
    time.sleep(2.0)
    t_new = time.time()
    # The harness's port wait passes at once (the old process listens): wait for the old
    # one to finish its drain instead.
    stats_new = os.path.join(c.h.tmp, "sipslb-new.stats")
    new = c.h.start("sipslb-new", [c.h.bin("balancer/sipslb"), "--cert",
                                   c.h.cert("server-ec.pem"), "--key", c.h.cert("server-ec.key"),
                                   "--listen", "127.0.0.1:%d" % port, "--backend-ca",
                                   c.h.cert("ca.pem"), "--stats-file", stats_new] +
                    sum([["--backend", "sips:127.0.0.1:%d" % u.port] for u in uas], []) + flags)
    old.wait(20)
    drain_s = time.time() - t_new
    for t in loads:
        t.join(60)
    assert old.returncode == 0, old.returncode
    assert new.poll() is None, "the new process died"
    st_old = c.h.read_stats(old.stats)
    assert c.h.stop(new) == 0
    st_new = c.h.read_stats(stats_new)
    ch, pe = out["churn"], out["persistent"]
    print("upgrade under load: old drained and exited %.2f s after the new one started; "
          "churn %d calls, %d failed %s; persistent %d calls, %d failed %s; old: closed idle "
          "%d, cut %d (requests %d); new accepted %d" %
          (drain_s, ch["calls"]["started"], ch["calls"]["failed"], json.dumps(ch["failures"]),
           pe["calls"]["started"], pe["calls"]["failed"], json.dumps(pe["failures"]),
           st_old["drain_closed_idle"], st_old["drain_cut_conns"], st_old["drain_cut_requests"],
           st_new["client_accepted"]))
    assert "took over" in c.h.log_of(new), c.h.log_of(new)
    assert "handed to" in c.h.log_of(old), c.h.log_of(old)
    assert st_new["client_accepted"] > 0
    assert ch["calls"]["failed"] == 0, ch["failures"]
    assert pe["calls"]["failed"] == 0, pe["failures"]
    assert ch["calls"]["ok"] > 50 and pe["calls"]["ok"] > 50
    assert st_old["drain_cut_conns"] == 0, st_old
    for u in uas:
        c.h.stop(u)


def test_a_new_process_that_fails_leaves_the_old_one_serving(c):
    uas = c.h.start_uas("f-uas", c.h.free_port())
    port = c.h.free_port()
    sock = os.path.join(c.h.tmp, "handover-f.sock")
    old = c.h.start_sipslb(port, [uas.port], ["--handover-socket", sock])
    time.sleep(0.5)
    # A newer process takes the sockets and dies before it runs (never says "ready").
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(sock)
    msg, fds, _flags, _addr = socket.recv_fds(u, 64, 64)
    assert msg.startswith(b"SLBH1 ") and len(fds) == int(msg.split()[1]) >= 1, (msg, fds)
    for fd in fds:
        os.close(fd)
    u.close()
    time.sleep(0.5)
    assert old.poll() is None
    cl = SipClient(port, c.ca)
    assert status_of(options(cl, "still")) == 200
    cl.close()
    assert c.h.stop(old) == 0
    c.h.stop(uas)


if __name__ == "__main__":
    sys.exit(run_tests([test_sigterm_closes_idle_connections_and_relays_on_busy_ones,
                        test_drain_timeout_cuts_what_is_left_and_counts_it,
                        test_second_sigterm_stops_at_once,
                        test_upgrade_under_load_loses_nothing,
                        test_a_new_process_that_fails_leaves_the_old_one_serving],
                       setup, teardown))
