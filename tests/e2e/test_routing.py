#!/usr/bin/env python3
"""End to end, routing that survives change: Record-Route stickiness, failover when a
backend dies (with its timeline), rejoin after --rise probes, drain at runtime through a
SIGHUP reload, a bad reload rejected whole, and two sipslb processes that agree on every
Call-ID. Loopback only; processes stopped by PID; every wait bounded.

usage: test_routing.py BUILD_DIR SOURCE_DIR"""

import os
import re
import signal
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import (Harness, SipClient, header_values, request,  # noqa: E402
                        run_tests, status_of)

PROBE = ["--probe-interval", "500ms", "--probe-timeout", "400ms", "--fall", "2", "--rise", "2"]


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    return c


def teardown(c):
    c.h.close()


def invite(cl, cid):
    """INVITE through sipslb; returns (to_tag, record_route_values) from the 200."""
    cl.send(request("INVITE", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
    resp = [cl.recv_message() for _ in range(3)]
    assert [status_of(m) for m in resp] == [100, 180, 200], [m[:30] for m in resp]
    ok = resp[2]
    tag = re.search(r"tag=([^;>\s]+)", header_values(ok, "To", "t")[0]).group(1)
    return tag, header_values(ok, "Record-Route")


def in_dialog(cl, method, cid, cseq, tag, route):
    extra = "Route: %s\r\n" % ", ".join(route) if route else ""
    cl.send(request(method, cid, cseq, "z9hG4bK" + uuid.uuid4().hex, cl.local_port,
                    to_tag=tag, extra=extra))
    if method == "ACK":
        return None
    return status_of(cl.recv_message())


def where(reports, cid):
    return [i for i, r in enumerate(reports) if cid in r]


def log_wait(c, p, pattern, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if re.search(pattern, c.h.log_of(p)):
            return True
        time.sleep(0.05)
    return False


def test_record_route_keeps_in_dialog_requests_on_their_backend(c):
    uas = [c.h.start_uas("rr%d" % i, c.h.free_port()) for i in range(3)]
    lb = c.h.start_sipslb(c.h.free_port(), [u.port for u in uas], ["--workers", "2"] + PROBE)
    cl = SipClient(lb.port, c.ca)
    dialogs = []
    for i in range(30):
        cid = "rr-%d-%s" % (i, uuid.uuid4().hex)
        tag, rr = invite(cl, cid)
        assert len(rr) == 1 and ";lr" in rr[0] and "slb=" in rr[0], rr
        in_dialog(cl, "ACK", cid, 1, tag, rr)
        dialogs.append((cid, tag, rr))
    for cid, tag, rr in dialogs:
        assert in_dialog(cl, "BYE", cid, 2, tag, rr) == 200
    cl.close()
    reports = c.h.reports(uas)
    for cid, _, _ in dialogs:
        w = where(reports, cid)
        assert len(w) == 1 and reports[w[0]][cid] == 3, (cid, w)
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    assert st["sticky_routed"] >= 60, st  # every ACK and BYE
    for u in uas:
        c.h.stop(u)


def test_failover_timeline_and_rejoin(c):
    uas = [c.h.start_uas("fo%d" % i, c.h.free_port()) for i in range(3)]
    lb = c.h.start_sipslb(c.h.free_port(), [u.port for u in uas], ["--workers", "2"] + PROBE)
    # Dialogs established before the failure, to be ended after it.
    cl = SipClient(lb.port, c.ca)
    before = []
    for i in range(30):
        cid = "fo-dlg-%d-%s" % (i, uuid.uuid4().hex)
        tag, rr = invite(cl, cid)
        in_dialog(cl, "ACK", cid, 1, tag, rr)
        before.append((cid, tag, rr))
    reports = c.h.reports(uas)
    victim = 1
    on_victim = [d for d in before if where(reports, d[0]) == [victim]]
    assert on_victim, "no dialog landed on the victim"

    # Load: 4 connections, each a closed loop of OPTIONS with new Call-IDs.
    results = []  # (time, ok)
    stop = threading.Event()

    def load(n):
        s = SipClient(lb.port, c.ca)
        i = 0
        while not stop.is_set():
            cid = "fo-load-%d-%d-%s" % (n, i, uuid.uuid4().hex[:8])
            i += 1
            t = time.time()
            try:
                s.send(request("OPTIONS", cid, 1, "z9hG4bKfo%d" % i, s.local_port))
                r = s.recv_message(timeout=1.0)
                results.append((t, r is not None and status_of(r) == 200))
            except Exception:
                results.append((t, False))
                s.close()
                s = SipClient(lb.port, c.ca)
        s.close()

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.time()
    c.h.stop(uas[victim], sig=signal.SIGKILL)
    assert log_wait(c, lb, r"backend 127\.0\.0\.1:%d is down" % uas[victim].port, 5)
    t_down = time.time()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(10)
    fails = [t for t, ok in results if not ok]
    after = [ok for t, ok in results if t > t0 + 0.5]
    print("failover: %d requests, %d failed, backend marked down %.0f ms after the kill, "
          "last failure %.0f ms after it" % (len(results), len(fails), 1000 * (t_down - t0),
                                           1000 * (max(fails) - t0) if fails else 0))
    # A request sent up to its 1 s timeout before the kill may be lost with the backend.
    assert all(t >= t0 - 1.0 for t in fails), "failures long before the kill"
    assert after and all(after), "failures more than 500 ms after the kill"
    assert t_down - t0 < 0.5 + 0.1, "down after %.3f s" % (t_down - t0)
    # Dialogs of the dead backend fail over by the table: their BYE is answered.
    for cid, tag, rr in on_victim:
        assert in_dialog(cl, "BYE", cid, 2, tag, rr) == 200
    # Dialogs elsewhere still reach their own backend.
    others = [d for d in before if d not in on_victim]
    for cid, tag, rr in others:
        assert in_dialog(cl, "BYE", cid, 2, tag, rr) == 200
    reports = c.h.reports([uas[0], uas[2]])
    for cid, _, _ in others:
        assert sum(r.get(cid, 0) for r in reports) == 3, cid
    # Restart it: it rejoins after --rise answered probes.
    uas[victim] = c.h.start_uas("fo%d" % victim, uas[victim].port)
    t1 = time.time()
    assert log_wait(c, lb, r"backend 127\.0\.0\.1:%d is up" % uas[victim].port, 10)
    print("rejoin: up %.0f ms after the restart" % (1000 * (time.time() - t1)))
    for i in range(60):
        cid = "fo-new-%d-%s" % (i, uuid.uuid4().hex)
        cl.send(request("OPTIONS", cid, 1, "z9hG4bKnew%d" % i, cl.local_port))
        assert status_of(cl.recv_message()) == 200
    assert len(c.h.reports([uas[victim]])[0]) > 0, "no new dialog reached the rejoined backend"
    cl.close()
    assert c.h.stop(lb) == 0
    for u in uas:
        c.h.stop(u)


def write_backends(path, ports, drain=()):
    with open(path, "w") as f:
        f.write("# backends for the drain test\n")
        for p in ports:
            f.write("sips:127.0.0.1:%d%s\n" % (p, ";drain" if p in drain else ""))


def test_drain_at_runtime_and_bad_reload(c):
    uas = [c.h.start_uas("dr%d" % i, c.h.free_port()) for i in range(3)]
    ports = [u.port for u in uas]
    bfile = os.path.join(c.h.tmp, "backends.txt")
    write_backends(bfile, ports)
    lb = c.h.start_sipslb(c.h.free_port(), [], ["--workers", "2", "--backends-file", bfile,
                                                "--drain-idle", "700ms"] + PROBE)
    cl = SipClient(lb.port, c.ca)
    dialogs = []
    for i in range(30):
        cid = "dr-%d-%s" % (i, uuid.uuid4().hex)
        tag, rr = invite(cl, cid)
        in_dialog(cl, "ACK", cid, 1, tag, rr)
        dialogs.append((cid, tag, rr))
    reports = c.h.reports(uas)
    victim = 2
    on_victim = [d for d in dialogs if where(reports, d[0]) == [victim]]
    assert on_victim
    write_backends(bfile, ports, drain=[ports[victim]])
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"backend 127\.0\.0\.1:%d is draining" % ports[victim], 5)
    # Established dialogs still reach it; new ones do not.
    for cid, tag, rr in on_victim:
        assert in_dialog(cl, "BYE", cid, 2, tag, rr) == 200
    new = []
    for i in range(150):
        cid = "dr-new-%d-%s" % (i, uuid.uuid4().hex)
        cl.send(request("INVITE", cid, 1, "z9hG4bKdn%d" % i, cl.local_port))
        for _ in range(3):
            cl.recv_message()
        new.append(cid)
    reports = c.h.reports(uas)
    for cid, _, _ in on_victim:
        assert reports[victim].get(cid) == 3, cid  # INVITE, ACK and the BYE after the drain
    assert not any(cid in reports[victim] for cid in new), "a new dialog reached a draining backend"
    assert all(any(cid in r for r in reports) for cid in new)
    # Idle for --drain-idle: reported drained.
    time.sleep(1.2)
    lb.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    st = c.h.read_stats(lb.stats)
    assert st["backend.127.0.0.1:%d" % ports[victim]] == "drained", st
    # A file that does not parse is rejected whole: the drain stays.
    with open(bfile, "a") as f:
        f.write("this is not a backend\n")
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"reload rejected", 5)
    for i in range(50):
        cid = "dr-after-%d-%s" % (i, uuid.uuid4().hex)
        cl.send(request("OPTIONS", cid, 1, "z9hG4bKda%d" % i, cl.local_port))
        assert status_of(cl.recv_message()) == 200
        new.append(cid)
    reports = c.h.reports(uas)
    assert not any(cid in reports[victim] for cid in new)
    cl.close()
    assert c.h.stop(lb) == 0
    for u in uas:
        c.h.stop(u)


def test_two_processes_route_every_call_id_alike(c):
    uas = [c.h.start_uas("tp%d" % i, c.h.free_port()) for i in range(3)]
    ports = [u.port for u in uas]
    lb1 = c.h.start_sipslb(c.h.free_port(), ports, ["--workers", "1"] + PROBE)
    lb2 = c.h.start_sipslb(c.h.free_port(), list(reversed(ports)), ["--workers", "2"] + PROBE)
    a, b = SipClient(lb1.port, c.ca), SipClient(lb2.port, c.ca)
    cids = ["tp-%d-%s@example.com" % (i, uuid.uuid4().hex) for i in range(300)]
    for i, cid in enumerate(cids):
        for cl in (a, b):
            cl.send(request("OPTIONS", cid, 1, "z9hG4bKtp%d" % i, cl.local_port))
            assert status_of(cl.recv_message()) == 200
    a.close()
    b.close()
    reports = c.h.reports(uas)
    for cid in cids:
        w = where(reports, cid)
        assert len(w) == 1 and reports[w[0]][cid] == 2, (cid, w)
    for p in (lb1, lb2):
        assert c.h.stop(p) == 0
    for u in uas:
        c.h.stop(u)


def peer_cert(port, ca):
    import ssl
    import socket
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def test_sighup_reloads_the_certificate_without_dropping_connections(c):
    import shutil
    uas = c.h.start_uas("cert0", c.h.free_port())
    cert, key = os.path.join(c.h.tmp, "lb.pem"), os.path.join(c.h.tmp, "lb.key")
    shutil.copy(c.h.cert("server-ec.pem"), cert)
    shutil.copy(c.h.cert("server-ec.key"), key)
    lb = c.h.start_sipslb(c.h.free_port(), [uas.port], ["--workers", "2"] + PROBE)
    # start_sipslb uses the harness certificate; restart on the copies instead.
    c.h.stop(lb)
    port = c.h.free_port()
    lb = c.h.start("sipslb-cert", [c.h.bin("balancer/sipslb"), "--cert", cert, "--key", key,
                                   "--listen", "127.0.0.1:%d" % port, "--backend",
                                   "sips:127.0.0.1:%d" % uas.port, "--backend-ca", c.ca,
                                   "--workers", "2"] + PROBE, wait_port=port)
    before = peer_cert(port, c.ca)
    old = SipClient(port, c.ca)
    # A renewal: another certificate (signed through the intermediate) in the same files.
    shutil.copy(c.h.cert("server-chain.pem"), cert)
    shutil.copy(c.h.cert("server-chain.key"), key)
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"re-read --cert", 5)
    time.sleep(0.3)  # workers take it within 100 ms
    after = peer_cert(port, c.ca)
    assert after != before, "new connections still get the old certificate"
    old.send(request("OPTIONS", "cert-old-" + uuid.uuid4().hex, 1, "z9hG4bKco", old.local_port))
    assert status_of(old.recv_message()) == 200, "the old connection was dropped"
    # A broken renewal is rejected whole; the current certificate stays.
    with open(key, "w") as f:
        f.write("not a key\n")
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"certificate reload rejected", 5)
    assert peer_cert(port, c.ca) == after
    old.send(request("OPTIONS", "cert-old2-" + uuid.uuid4().hex, 1, "z9hG4bKc2", old.local_port))
    assert status_of(old.recv_message()) == 200
    old.close()
    assert c.h.stop(lb) == 0
    c.h.stop(uas)


def test_sighup_adds_and_removes_backends_without_dropping_connections(c):
    uas = [c.h.start_uas("ar%d" % i, c.h.free_port()) for i in range(3)]
    ports = [u.port for u in uas]
    bfile = os.path.join(c.h.tmp, "backends-ar.txt")
    write_backends(bfile, ports[:2])
    lb = c.h.start_sipslb(c.h.free_port(), [], ["--workers", "2", "--backends-file", bfile]
                          + PROBE)
    conns = [SipClient(lb.port, c.ca) for _ in range(4)]

    def burst(tag, n=120):
        cids = []
        for i in range(n):
            cl = conns[i % len(conns)]
            cid = "%s-%d-%s" % (tag, i, uuid.uuid4().hex)
            cl.send(request("OPTIONS", cid, 1, "z9hG4bK%s%d" % (tag, i), cl.local_port))
            assert status_of(cl.recv_message()) == 200, (tag, i)
            cids.append(cid)
        return cids

    first = burst("ar1")
    third_report = c.h.reports([uas[2]])[0]
    assert not any(cid in third_report for cid in first)
    write_backends(bfile, ports)  # add the third
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"backend 127\.0\.0\.1:%d added" % ports[2], 5)
    time.sleep(0.3)
    second = burst("ar2")  # on the same connections: none was dropped
    reports = c.h.reports(uas)
    on_new = sum(1 for cid in second if cid in reports[2])
    assert 20 < on_new < 70, "the added backend got %d of 120" % on_new
    write_backends(bfile, [ports[0], ports[2]])  # remove the second
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"backend 127\.0\.0\.1:%d is removed" % ports[1], 5)
    time.sleep(0.3)
    third = burst("ar3")
    reports = c.h.reports(uas)
    assert not any(cid in reports[1] for cid in third), "a removed backend got traffic"
    for cl in conns:
        cl.close()
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    assert st["backend.127.0.0.1:%d" % ports[1]] == "removed", st
    assert st["handshakes_ok"] == 4, st  # the same four connections carried every burst
    for u in uas:
        c.h.stop(u)


def test_cancel_and_ack_follow_their_invite_after_the_table_changed(c):
    uas = [c.h.start_uas("cx%d" % i, c.h.free_port()) for i in range(3)]
    ports = [u.port for u in uas]
    bfile = os.path.join(c.h.tmp, "backends-cx.txt")
    write_backends(bfile, ports)
    lb = c.h.start_sipslb(c.h.free_port(), [], ["--workers", "1", "--backends-file", bfile]
                          + PROBE)
    cl = SipClient(lb.port, c.ca)
    pending = []
    for i in range(40):
        cid = "cx-%d-%s" % (i, uuid.uuid4().hex)
        br = "z9hG4bKcx%d%s" % (i, uuid.uuid4().hex[:8])
        cl.send(request("INVITE", cid, 1, br, cl.local_port))
        for _ in range(3):
            cl.recv_message()
        pending.append((cid, br))
    reports = c.h.reports(uas)
    home = {cid: where(reports, cid)[0] for cid, _ in pending}
    victim = home[pending[0][0]]
    # The table changes: the victim drains, so its Call-IDs now hash elsewhere.
    write_backends(bfile, ports, drain=[ports[victim]])
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"backend 127\.0\.0\.1:%d is draining" % ports[victim], 5)
    time.sleep(0.3)
    for cid, br in pending:
        # CANCEL and a non-2xx-style ACK carry the INVITE's branch and no Route.
        cl.send(request("CANCEL", cid, 1, br, cl.local_port))
        assert status_of(cl.recv_message()) == 200
        cl.send(request("ACK", cid, 1, br, cl.local_port, to_tag="x"))
    time.sleep(0.3)
    reports = c.h.reports(uas)
    for cid, _ in pending:
        assert where(reports, cid) == [home[cid]], (cid, home[cid], where(reports, cid))
        assert reports[home[cid]][cid] == 3, cid
    cl.close()
    assert c.h.stop(lb) == 0
    st = c.h.read_stats(lb.stats)
    assert st["pending_routed"] >= 80, st
    for u in uas:
        c.h.stop(u)


def test_a_request_looping_back_gets_482(c):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_faults import RogueBackend
    rogue = RogueBackend(c.h)
    lb = c.h.start_sipslb(c.h.free_port(), [rogue.port], ["--workers", "1"] + PROBE)
    cl = SipClient(lb.port, c.ca)
    cl.send(request("OPTIONS", "loop-" + uuid.uuid4().hex, 1, "z9hG4bKloop", cl.local_port))
    _, req = rogue.next_request()
    # The "backend" sends it straight back to sipslb, as a misconfigured route would.
    back = SipClient(lb.port, c.ca)
    lines = req.split(b"\r\n")
    looped = b"\r\n".join([lines[0], b"Via: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKrogue"]
                           + lines[1:])
    back.send(looped)
    r = back.recv_message()
    assert status_of(r) == 482, r[:80]
    back.close()
    cl.close()
    assert c.h.stop(lb) == 0
    rogue.close()
    assert c.h.read_stats(lb.stats)["loops"] == 1


def test_strict_router_before_us_is_handled(c):
    from test_faults import RogueBackend, response_for
    rogue = RogueBackend(c.h)
    lb = c.h.start_sipslb(c.h.free_port(), [rogue.port], ["--workers", "1"] + PROBE)
    cl = SipClient(lb.port, c.ca)
    cid = "strict-" + uuid.uuid4().hex
    cl.send(request("INVITE", cid, 1, "z9hG4bKst1", cl.local_port))
    bconn, inv = rogue.next_request()
    rr = header_values(inv, "Record-Route")[0]
    ours = re.search(r"<([^>]+)>", rr).group(1)
    bconn.sendall(response_for(inv, 200, "OK"))
    assert status_of(cl.recv_message()) == 200
    # A strict router (RFC 2543) puts the next hop, us, in the Request-URI and the remote
    # target last in Route.
    target = "sips:callee@127.0.0.1:9"
    bye = request("BYE", cid, 2, "z9hG4bKst2", cl.local_port, to_tag="rogue",
                  extra="Route: <%s>\r\n" % target)
    bye = bye.replace(b"BYE sips:bob@example.com SIP/2.0", ("BYE %s SIP/2.0" % ours).encode())
    cl.send(bye)
    bconn2, fwd = rogue.next_request()
    assert fwd.startswith(("BYE %s SIP/2.0" % target).encode()), fwd[:100]
    assert not header_values(fwd, "Route"), "the last Route became the Request-URI"
    bconn2.sendall(response_for(fwd, 200, "OK"))
    assert status_of(cl.recv_message()) == 200
    cl.close()
    assert c.h.stop(lb) == 0
    rogue.close()


TESTS = [
    test_record_route_keeps_in_dialog_requests_on_their_backend,
    test_failover_timeline_and_rejoin,
    test_drain_at_runtime_and_bad_reload,
    test_two_processes_route_every_call_id_alike,
    test_sighup_reloads_the_certificate_without_dropping_connections,
    test_sighup_adds_and_removes_backends_without_dropping_connections,
    test_cancel_and_ack_follow_their_invite_after_the_table_changed,
    test_a_request_looping_back_gets_482,
    test_strict_router_before_us_is_handled,
]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, setup, teardown))
