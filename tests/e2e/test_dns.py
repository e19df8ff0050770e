#!/usr/bin/env python3
"""End to end, backends from DNS: sipslb with --backend sips:wild.test resolves
_sips._tcp.wild.test SRV records from a real dnsmasq on a loopback port, and
follows its changes (the test rewrites dnsmasq's configuration and restarts it): a backend
added, a weight changed, a backend removed, a lower priority group, and DNS failing (the last
good set is kept). Which backend answers a Call-ID is read from the To tag the mock
backends put in their answers. A load runs throughout: nothing is dropped.
Loopback only; processes stopped by PID; every wait bounded.

usage: test_dns.py BUILD_DIR SOURCE_DIR"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import (Harness, Skip, SipClient, header_values, request,  # noqa: E402
                        run_tests_skipping, status_of)

DOMAIN = "wild.test"  # server-other.pem is for *.wild.test: targets b1.wild.test...
N_CIDS = 400


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.dnsmasq = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq"
                                           if os.path.exists("/usr/sbin/dnsmasq") else None)
    c.cids = ["dns-%d-%s" % (i, uuid.uuid4().hex[:8]) for i in range(N_CIDS)]
    return c


def teardown(c):
    c.h.close()


def start_uas(c, name):
    port = c.h.free_port()
    p = c.h.start(name, [c.h.bin("bench/sipslb-uas"), "--cert", c.h.cert("server-other.pem"),
                         "--key", c.h.cert("server-other.key"), "--listen",
                         "127.0.0.1:%d" % port, "--name", name], wait_port=port)
    p.port = port
    return p


class Dns:
    """dnsmasq answering for DOMAIN from a configuration the test rewrites (a restart per
    change: dnsmasq does not re-read SRV records on SIGHUP)."""

    def __init__(self, c):
        self.c, self.port, self.proc, self.n = c, c.h.free_port(), None, 0

    def serve(self, srv):
        """srv: list of (target host label, port, priority, weight)."""
        self.stop()
        self.n += 1
        conf = os.path.join(self.c.h.tmp, "dnsmasq-%d.conf" % self.n)
        with open(conf, "w") as f:
            f.write("port=%d\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n"
                    "local=/%s/\nlocal-ttl=1\n" % (self.port, DOMAIN))
            for host, port, prio, weight in srv:
                f.write("srv-host=_sips._tcp.%s,%s.%s,%d,%d,%d\n" %
                        (DOMAIN, host, DOMAIN, port, prio, weight))
                f.write("host-record=%s.%s,127.0.0.1\n" % (host, DOMAIN))
        argv = [self.c.dnsmasq, "--no-daemon", "--conf-file=" + conf, "--pid-file="]
        if os.geteuid() == 0:
            argv.append("--user=root")
        self.proc = self.c.h.start("dnsmasq-%d" % self.n, argv)
        time.sleep(0.3)
        assert self.proc.poll() is None, self.c.h.log_of(self.proc)

    def stop(self):
        if self.proc is not None:
            self.c.h.stop(self.proc)
            self.proc = None


def owners(c, lb):
    """Which backend answers each of the test's Call-IDs (an OPTIONS each, one connection)."""
    cl = SipClient(lb.port, c.ca)
    out = {}
    for cid in c.cids:
        cl.send(request("OPTIONS", cid, 1, "z9hG4bK" + uuid.uuid4().hex, cl.local_port))
        r = cl.recv_message()
        assert status_of(r) == 200, r
        to = header_values(r, "To")[0]
        m = re.search(r"tag=(b\d)", to)
        assert m, to
        out[cid] = m.group(1)
    cl.close()
    return out


def share(m, name):
    return sum(1 for v in m.values() if v == name) / len(m)


def moved(a, b):
    return sum(1 for k in a if a[k] != b[k]) / len(a)


def wait_backends(c, lb, want, timeout=8.0):
    """Until the stats name exactly the backends in want as up (SIGUSR1 writes them)."""
    end = time.time() + timeout
    seen = None
    time.sleep(0.6)  # a new backend counts as up until its first checks
    while time.time() < end:
        lb.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        st = c.h.read_stats(lb.stats)
        seen = sorted(k.split(".", 1)[1].split(":")[0].split(".")[0]
                      for k, v in st.items() if k.startswith("backend.") and v == "up")
        if seen == sorted(want):
            return st
    raise AssertionError("backends up %s, wanted %s" % (seen, want))


def test_backends_follow_dns(c):
    if not c.dnsmasq:
        raise Skip("dnsmasq is not installed (deploy/setup-deps.sh installs it)")
    uas = {n: start_uas(c, n) for n in ("b1", "b2", "b3", "b4")}
    dns = Dns(c)
    dns.serve([("b1", uas["b1"].port, 10, 10), ("b2", uas["b2"].port, 10, 10),
               ("b3", uas["b3"].port, 10, 10)])
    admin = c.h.free_port()
    lb = c.h.start_sipslb(c.h.free_port(), [], [
        "--admin", "127.0.0.1:%d" % admin, "--backend", "sips:" + DOMAIN, "--dns-server", "127.0.0.1:%d" % dns.port,
        "--dns-min-ttl", "1s", "--workers", "2", "--probe-interval", "300ms",
        "--probe-timeout", "250ms"])
    wait_backends(c, lb, ["b1", "b2", "b3"])
    m1 = owners(c, lb)
    print("3 SRV targets: shares b1 %.2f b2 %.2f b3 %.2f" %
          (share(m1, "b1"), share(m1, "b2"), share(m1, "b3")))
    assert all(0.2 < share(m1, b) < 0.47 for b in ("b1", "b2", "b3")), m1

    # A load throughout the changes: nothing is dropped.
    out = {}

    def load():
        p = subprocess.run([c.h.bin("bench/sipslb-load"), "--target", "127.0.0.1:%d" % lb.port,
                            "--ca", c.ca, "--scenario", "call", "--rate", "100", "--conns", "4",
                            "--duration", "8s", "--timeout", "5s", "--max-duration", "30s",
                            "--json"], capture_output=True, text=True, timeout=90)
        out["load"] = json.loads(p.stdout)

    t = threading.Thread(target=load)
    t.start()

    # Added: about 1/4 of Call-IDs move, to the new backend.
    dns.serve([("b1", uas["b1"].port, 10, 10), ("b2", uas["b2"].port, 10, 10),
               ("b3", uas["b3"].port, 10, 10), ("b4", uas["b4"].port, 10, 10)])
    wait_backends(c, lb, ["b1", "b2", "b3", "b4"])
    m2 = owners(c, lb)
    mv = moved(m1, m2)
    to_new = sum(1 for k in m1 if m1[k] != m2[k] and m2[k] == "b4") / max(1, mv * N_CIDS)
    print("b4 added: %.2f of Call-IDs moved (ideal 0.25), %.2f of them to b4" % (mv, to_new))
    assert 0.12 < mv < 0.40 and to_new > 0.9, (mv, to_new)

    # A weight changed: b1 from 10 to 40 takes a larger share.
    dns.serve([("b1", uas["b1"].port, 10, 40), ("b2", uas["b2"].port, 10, 10),
               ("b3", uas["b3"].port, 10, 10), ("b4", uas["b4"].port, 10, 10)])
    end = time.time() + 8
    while time.time() < end:
        time.sleep(0.5)
        m3 = owners(c, lb)
        if share(m3, "b1") > 0.4:
            break
    print("b1 weight 10 -> 40 (of 70): its share %.2f -> %.2f" % (share(m2, "b1"),
                                                                  share(m3, "b1")))
    assert share(m3, "b1") > 0.4, share(m3, "b1")

    # Removed: b2 takes no new dialog; the others keep theirs.
    dns.serve([("b1", uas["b1"].port, 10, 40), ("b3", uas["b3"].port, 10, 10),
               ("b4", uas["b4"].port, 10, 10)])
    wait_backends(c, lb, ["b1", "b3", "b4"])
    m4 = owners(c, lb)
    kept = sum(1 for k in m3 if m3[k] != "b2" and m4[k] == m3[k]) / max(
        1, sum(1 for k in m3 if m3[k] != "b2"))
    print("b2 removed: its share %.2f -> %.2f; %.2f of the others' Call-IDs stayed" %
          (share(m3, "b2"), share(m4, "b2"), kept))
    assert share(m4, "b2") == 0 and kept > 0.9, (share(m4, "b2"), kept)

    # A priority group: b3 and b4 at priority 20 take nothing while b1 (10) is up.
    dns.serve([("b1", uas["b1"].port, 10, 40), ("b3", uas["b3"].port, 20, 10),
               ("b4", uas["b4"].port, 20, 10)])
    end = time.time() + 8
    while time.time() < end:
        time.sleep(0.5)
        m5 = owners(c, lb)
        if share(m5, "b1") == 1.0:
            break
    print("b3, b4 at priority 20: b1 (priority 10) takes %.2f" % share(m5, "b1"))
    assert share(m5, "b1") == 1.0
    t.join(60)
    s = out["load"]
    print("load during the changes: %d calls, %d failed %s" %
          (s["calls"]["started"], s["calls"]["failed"], json.dumps(s["failures"])))
    assert s["calls"]["failed"] == 0, s["failures"]
    # ... and b1 down: the next group takes over.
    c.h.stop(uas["b1"], sig=signal.SIGKILL)
    end = time.time() + 8
    while time.time() < end:
        time.sleep(0.5)
        m6 = owners(c, lb)
        if share(m6, "b1") == 0:
            break
    print("b1 down: b3 %.2f b4 %.2f" % (share(m6, "b3"), share(m6, "b4")))
    assert share(m6, "b3") > 0.3 and share(m6, "b4") > 0.3

    # DNS fails: the last good set stays.
    dns.stop()
    time.sleep(2.5)
    m7 = owners(c, lb)
    lb.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    st = c.h.read_stats(lb.stats)
    print("DNS down: %.2f of Call-IDs moved, dns_failures %d, dns_resolutions %d" %
          (moved(m6, m7), st["dns_failures"], st["dns_resolutions"]))
    assert moved(m6, m7) == 0 and st["dns_failures"] >= 1
    assert "last good backends kept" in c.h.log_of(lb)
    import urllib.request
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=5).read()
    m = re.search(rb"^sipslb_dns_failures_total (\d+)$", metrics, re.M)
    assert m and int(m.group(1)) >= 1, metrics[:300]
    assert c.h.stop(lb) == 0
    for u in uas.values():
        c.h.stop(u)


if __name__ == "__main__":
    sys.exit(run_tests_skipping([test_backends_follow_dns], setup, teardown, none_ran=1))
