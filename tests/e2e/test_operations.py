#!/usr/bin/env python3
"""End to end, operating sipslb: the --admin listener watched by a real Prometheus server
(Debian's prometheus, scraping every second) during load, promtool's check of a scrape,
drain / undrain / weight through the admin API under load (no failed call, no dialog
moved, 403 without the token), a slow admin client that cannot slow relaying, /ready and
/live, and the stats file. Loopback only; processes stopped by PID; every wait bounded.

usage: test_operations.py BUILD_DIR SOURCE_DIR"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import (Harness, SipClient, Skip, request, run_tests_skipping,  # noqa: E402
                        status_of)

PROBE = ["--probe-interval", "500ms", "--probe-timeout", "400ms", "--fall", "2", "--rise", "2"]
TOKEN = "e2e-admin-token-" + uuid.uuid4().hex


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.token_file = os.path.join(c.h.tmp, "admin.token")
    with open(c.token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(c.token_file, 0o600)
    return c


def teardown(c):
    c.h.close()


def http(port, path, method="GET", token=None, timeout=5):
    """(status, body) of one admin call."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_lb(c, backends, extra=()):
    admin = c.h.free_port()
    lb = c.h.start_sipslb(c.h.free_port(), backends,
                          ["--workers", "2", "--admin", "127.0.0.1:%d" % admin,
                           "--admin-token-file", c.token_file] + PROBE + list(extra))
    lb.admin = admin
    c.h.wait_port(admin, lb)
    return lb


def backends_of(lb):
    st, body = http(lb.admin, "/backends")
    assert st == 200, (st, body)
    return {b["name"]: b for b in json.loads(body)["backends"]}


def run_load(c, lb, rate, count, extra=()):
    """sipslb-load through lb; returns its --json summary."""
    out = subprocess.run([c.h.bin("bench/sipslb-load"), "--target", "127.0.0.1:%d" % lb.port,
                          "--ca", c.ca, "--scenario", "call", "--rate", str(rate), "--count",
                          str(count), "--json"] + list(extra),
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


class Prometheus:
    """A real Prometheus server scraping sipslb's /metrics every second."""

    def __init__(self, c, target_port):
        exe = shutil.which("prometheus")
        if not exe:
            raise Skip("prometheus not installed")
        d = os.path.join(c.h.tmp, "prometheus-%d" % target_port)
        os.makedirs(d)
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: sipslb\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.port = c.h.free_port()
        self.p = c.h.start("prometheus-%d" % target_port,
                           [exe, "--config.file", cfg, "--storage.tsdb.path", os.path.join(d, "db"),
                            "--web.listen-address", "127.0.0.1:%d" % self.port],
                           wait_port=self.port)
        # Its port opens before it is ready: queries get 503 until then (the intermittent
        # e2e_operations failure). Wait for /-/ready, bounded.
        end = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port,
                                            timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > end:
                raise AssertionError("prometheus not ready after 30 s")
            time.sleep(0.2)

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (self.port, urllib.parse.quote(q))
        with urllib.request.urlopen(url, timeout=5) as r:
            d = json.loads(r.read().decode())
        assert d["status"] == "success", d
        return d["data"]["result"]

    def value(self, q):
        """The single value of q, or None when it has none yet."""
        r = self.query(q)
        return float(r[0]["value"][1]) if r else None

    def wait(self, q, pred, timeout):
        end = time.time() + timeout
        v = None
        while time.time() < end:
            v = self.value(q)
            if v is not None and pred(v):
                return v
            time.sleep(0.2)
        raise AssertionError("%s: last value %s after %.0fs" % (q, v, timeout))


def test_prometheus_watches_load_failover_and_probes(c):
    uas = [c.h.start_uas("pm%d" % i, c.h.free_port()) for i in range(2)]
    lb = start_lb(c, [u.port for u in uas])
    prom = Prometheus(c, lb.admin)
    prom.wait('up{job="sipslb"}', lambda v: v == 1, 20)
    before = prom.wait("sipslb_requests_forwarded_total", lambda v: True, 10)
    load = run_load(c, lb, 400, 2000)
    assert load["calls"]["failed"] == 0, load["failures"]
    sent = load["messages"]["sent"]
    # Every request the load generator sent was relayed, and Prometheus saw all of them:
    # the counter's increase over the run is exactly what was sent.
    prom.wait("sipslb_requests_forwarded_total", lambda v: v - before == sent, 10)
    inc = prom.value("increase(sipslb_requests_forwarded_total[2m])")
    assert inc is not None and inc >= sent * 0.9, (inc, sent)  # increase() extrapolates
    per_backend = prom.query("sipslb_backend_requests_total")
    assert len(per_backend) == 2 and all(float(r["value"][1]) > 0 for r in per_backend), \
        per_backend
    # The latency histogram: every call's INVITE and BYE got a final response through it
    # (4,000 at least), and a loopback backend answers well within a second.
    n = prom.wait("sum(sipslb_backend_response_seconds_count)", lambda v: v >= 2 * 2000, 10)
    fast = prom.value('sum(sipslb_backend_response_seconds_bucket{le="1"})')
    assert fast is not None and fast >= 0.99 * n, (fast, n)
    p99 = prom.value("histogram_quantile(0.99, sum by (le) "
                     "(rate(sipslb_backend_response_seconds_bucket[1m])))")
    print("backend response time p99 from Prometheus: %s s" % p99)
    # Per listener: the load generator's connection was accepted and completed TLS 1.3.
    assert prom.value("sum(sipslb_listener_connections_accepted_total)") >= 1
    assert prom.value('sum(sipslb_listener_handshakes_total{result="ok"})') >= 1
    assert prom.value('sum(sipslb_listener_handshakes_total{result="failed"})') == 0
    rtt = prom.value('max(sipslb_backend_probe_rtt_seconds)')
    assert rtt is not None and 0 < rtt < 0.4, rtt
    # promtool accepts a scrape as it is.
    promtool = shutil.which("promtool")
    if promtool:
        st, body = http(lb.admin, "/metrics")
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    # A killed backend shows down within two probe intervals (and a scrape).
    victim = uas[1]
    t0 = time.time()
    c.h.stop(victim, sig=9)
    q = 'sipslb_backend_state{backend="127.0.0.1:%d",state="down"}' % victim.port
    prom.wait(q, lambda v: v == 1, 1.0 + 2 * 0.5 + 1.5)
    print("down in Prometheus %.2fs after the kill" % (time.time() - t0))
    assert prom.value('sipslb_backend_state{backend="127.0.0.1:%d",state="up"}' % uas[0].port) == 1
    c.h.stop(prom.p)
    assert c.h.stop(lb) == 0
    c.h.stop(uas[0])


def test_admin_drain_undrain_weight_under_load(c):
    uas = [c.h.start_uas("ad%d" % i, c.h.free_port()) for i in range(3)]
    lb = start_lb(c, [u.port for u in uas], ["--drain-idle", "700ms"])
    name = "127.0.0.1:%d" % uas[2].port
    # Without the token, or with a wrong one: 403, nothing changes.
    assert http(lb.admin, "/backends/%s/drain" % name, "POST")[0] == 403
    assert http(lb.admin, "/backends/%s/drain" % name, "POST", token=TOKEN + "x")[0] == 403
    assert backends_of(lb)[name]["state"] == "up"
    assert http(lb.admin, "/backends/nosuch:1/drain", "POST", token=TOKEN)[0] == 404
    assert http(lb.admin, "/backends/%s/weight?value=0" % name, "POST", token=TOKEN)[0] == 400
    # Dialogs established before the drain keep their backend after it.
    cl = SipClient(lb.port, c.ca)
    dialogs = []
    for i in range(30):
        cid = "ad-%d-%s" % (i, uuid.uuid4().hex)
        cl.send(request("INVITE", cid, 1, "z9hG4bKad%d" % i, cl.local_port))
        resp = [cl.recv_message() for _ in range(3)]
        assert status_of(resp[2]) == 200
        dialogs.append(cid)
    result = {}
    loader = threading.Thread(target=lambda: result.update(run_load(c, lb, 300, 1800)))
    loader.start()
    time.sleep(1.0)
    assert http(lb.admin, "/backends/%s/drain" % name, "POST", token=TOKEN) == (200, "ok\n")
    end = time.time() + 5
    while backends_of(lb)[name]["state"] != "draining" and time.time() < end:
        time.sleep(0.05)
    assert backends_of(lb)[name]["state"] == "draining"
    seen = backends_of(lb)[name]["requests"]
    time.sleep(1.5)
    # New dialogs avoid it (what still reaches it are in-dialog requests: ACK and BYE of
    # calls placed before the drain, a few per call at most).
    assert backends_of(lb)[name]["requests"] - seen < 100
    assert http(lb.admin, "/backends/%s/weight?value=5" % name, "POST", token=TOKEN)[0] == 200
    assert backends_of(lb)[name]["weight"] == 5
    assert http(lb.admin, "/backends/%s/undrain" % name, "POST", token=TOKEN)[0] == 200
    loader.join(60)
    assert result and result["calls"]["failed"] == 0, result.get("failures")
    assert backends_of(lb)[name]["state"] == "up"
    log = c.h.log_of(lb)
    assert "admin: 127.0.0.1:" in log and "drains backend %s" % name in log, log[-2000:]
    assert "sets the weight of backend %s to 5" % name in log
    # The dialogs from before still end on the backend that has them.
    reports = c.h.reports(uas)
    for cid in dialogs:
        assert sum(1 for r in reports if cid in r) == 1, cid
    cl.close()
    assert c.h.stop(lb) == 0
    for u in uas:
        c.h.stop(u)


def test_slow_admin_client_does_not_slow_relaying(c):
    uas = [c.h.start_uas("sl%d" % i, c.h.free_port()) for i in range(2)]
    lb = start_lb(c, [u.port for u in uas])
    # A few admin clients that send one byte a second, and never finish their request.
    stop = threading.Event()

    def dribble():
        s = socket.create_connection(("127.0.0.1", lb.admin), timeout=5)
        try:
            for ch in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                if stop.wait(1.0):
                    break
                s.send(bytes([ch]))
        except OSError:
            pass  # the admin server may close it: that is its bound
        s.close()

    slow = [threading.Thread(target=dribble) for _ in range(8)]
    for t in slow:
        t.start()
    t0 = time.time()
    load = run_load(c, lb, 500, 2500)
    took = time.time() - t0
    stop.set()
    for t in slow:
        t.join(10)
    assert load["calls"]["failed"] == 0, load["failures"]
    # 2,500 calls at 500/s: five seconds and a little, whatever the admin clients do.
    assert took < 12, took
    assert load["latency_us"]["call"]["p99"] < 200000, load["latency_us"]
    # The admin listener still answers others meanwhile.
    assert http(lb.admin, "/live")[0] == 200
    assert c.h.stop(lb) == 0
    for u in uas:
        c.h.stop(u)


def test_ready_and_live(c):
    uas = [c.h.start_uas("rd%d" % i, c.h.free_port()) for i in range(1)]
    lb = start_lb(c, [uas[0].port])
    assert http(lb.admin, "/ready") == (200, "ready\n")
    assert http(lb.admin, "/live") == (200, "live\n")
    # A TLS 1.3 client shows as open on its listener, by version, while it is connected.
    cl = SipClient(lb.port, c.ca)
    cl.send(request("OPTIONS", "rd-" + uuid.uuid4().hex, 1, "z9hG4bKrd", cl.local_port))
    cl.recv_message()
    metrics = http(lb.admin, "/metrics")[1]
    assert 'sipslb_listener_tls_connections_open{listener="127.0.0.1:%d",version="1.3"} 1' % \
        lb.port in metrics, [ln for ln in metrics.splitlines() if "listener" in ln]
    cl.close()
    st, body = http(lb.admin, "/status")
    s = json.loads(body)
    assert st == 200 and len(s["workers"]) == 2 and s["version"], s
    # No backend up: not ready (an L4 balancer sends no one here), but alive.
    c.h.stop(uas[0], sig=9)
    end = time.time() + 5
    while http(lb.admin, "/ready")[0] != 503 and time.time() < end:
        time.sleep(0.1)
    assert http(lb.admin, "/ready")[0] == 503
    assert http(lb.admin, "/live")[0] == 200
    assert http(lb.admin, "/nothing")[0] == 404
    assert http(lb.admin, "/reload", "POST")[0] == 403
    st, body = http(lb.admin, "/reload", "POST", token=TOKEN)
    assert st == 200, (st, body)  # certificates re-read; no backends file
    assert c.h.stop(lb) == 0


def test_stats_file_is_replaced_whole(c):
    uas = c.h.start_uas("sf", c.h.free_port())
    lb = start_lb(c, [uas.port])
    for _ in range(20):
        lb.send_signal(10)  # SIGUSR1
        time.sleep(0.02)
    time.sleep(0.3)
    st = c.h.read_stats(lb.stats)
    assert "requests_in" in st and "backend.127.0.0.1:%d" % uas.port in st, st
    assert not os.path.exists(lb.stats + ".tmp")
    assert c.h.stop(lb) == 0
    c.h.stop(uas)


def test_json_log_lines(c):
    """--log-format json: every line sipslb writes (start, an admin call refused with quote,
    backslash, control and non-UTF-8 bytes in its URL, a killed backend's link and probe
    failures, SIGTERM and the counters at exit) is one JSON object with time, level and msg."""
    uas = [c.h.start_uas("jl%d" % i, c.h.free_port()) for i in range(2)]
    lb = start_lb(c, [u.port for u in uas], ["--log-format", "json"])
    # libmicrohttpd unescapes the path: these bytes reach the log line as they are.
    assert http(lb.admin, "/backends/%22q%5C%01%0A%09%FF/drain", "POST")[0] == 403
    c.h.stop(uas[1], sig=9)
    end = time.time() + 10
    while '"backend_down"' not in c.h.log_of(lb) and time.time() < end:
        time.sleep(0.1)
    assert c.h.stop(lb) == 0
    with open(lb.logpath, "rb") as f:
        text = f.read().decode("utf-8")  # strict: the lines are valid UTF-8
    assert text.endswith("\n"), text
    recs = []
    for line in text.split("\n")[:-1]:
        r = json.loads(line)
        assert isinstance(r, dict) and isinstance(r["msg"], str), line
        assert r["level"] in ("error", "warn", "info", "debug"), line
        assert len(r["time"]) == 24 and time.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ"), line
        assert "suppressed" not in r or isinstance(r["suppressed"], int), line
        recs.append(r)
    by_event = {}
    for r in recs:
        by_event.setdefault(r.get("event"), []).append(r)
    dead = "127.0.0.1:%d" % uas[1].port
    assert "sipslb_starting" in by_event and "not_accepting_any_more" in by_event, by_event.keys()
    down = by_event["backend_down"]
    assert down[0]["backend"] == dead and down[0]["checks"] == 2 and down[0]["level"] == "warn"
    assert any(r["backend"] == dead and r["state"] == "down" for r in by_event["backend_state"])
    lost = by_event.get("backend_link_lost", []) + by_event.get("backend_connect_failed", [])
    assert lost and all(r["backend"] == dead and isinstance(r["suppressed"], int) for r in lost)
    refused = [r for r in by_event["admin_refused_for"] if "/drain" in r["msg"]]
    # The URL arrives decoded; control bytes and bytes past ASCII are shown as '?' (in the
    # text format a decoded %0A would otherwise start a forged log line).
    assert refused and '/backends/"q\\????/drain' in refused[0]["msg"], refused
    assert any(r["msg"].startswith("clients accepted") for r in recs), recs[-1]
    c.h.stop(uas[0])


def test_unix_admin_socket_and_connection_records(c):
    """--admin unix:PATH (mode 0660, no token needed) and --log-connections (a JSON record
    per closed client connection)."""
    uas = c.h.start_uas("ux", c.h.free_port())
    sock = os.path.join(c.h.tmp, "admin.sock")
    lb = c.h.start_sipslb(c.h.free_port(), [uas.port],
                          ["--workers", "1", "--admin", "unix:" + sock, "--log-connections",
                           "--log-format", "json"] + PROBE)
    end = time.time() + 5
    while not os.path.exists(sock) and time.time() < end:
        time.sleep(0.05)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o660", oct(os.stat(sock).st_mode)

    def unix_http(method, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(sock)
        s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0"
                   "\r\n\r\n" % (method, path)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1].decode()

    assert unix_http("GET", "/ready")[0] == 200
    name = "127.0.0.1:%d" % uas.port
    assert unix_http("POST", "/backends/%s/drain" % name) == (200, "ok\n")  # no token
    end = time.time() + 5
    while json.loads(unix_http("GET", "/backends")[1])["backends"][0]["state"] != "draining":
        assert time.time() < end
        time.sleep(0.05)
    cl = SipClient(lb.port, c.ca)
    cl.send(request("OPTIONS", "ux-" + uuid.uuid4().hex, 1, "z9hG4bKux", cl.local_port))
    cl.recv_message()
    cl.close()
    end = time.time() + 5
    recs = []
    while time.time() < end and not recs:
        recs = [r for r in (json.loads(line) for line in c.h.log_of(lb).splitlines()
                            if '"connection_closed"' in line) if r["messages"] >= 1]
        time.sleep(0.05)
    assert recs, c.h.log_of(lb)[-2000:]
    r = recs[0]
    assert r["peer"].startswith("127.0.0.1:") and r["messages"] >= 1 and r["tls"].startswith("TLS")
    assert r["reason"] and r["duration_ms"] >= 0, r
    assert c.h.stop(lb) == 0
    assert not os.path.exists(sock)
    c.h.stop(uas)


def test_every_probe_is_a_new_request(c):
    """RFC 3261 8.1.1.4: each OPTIONS probe (a request outside a dialog) has a new Call-ID
    (and From tag and branch), also across a restart."""
    uas = c.h.start_uas("pr", c.h.free_port())
    for _ in range(2):  # twice: a restarted sipslb does not reuse the first one's Call-IDs
        lb = c.h.start_sipslb(c.h.free_port(), [uas.port], ["--workers", "1"] + PROBE)
        time.sleep(1.8)
        assert c.h.stop(lb) == 0
    report = c.h.reports([uas])[0]
    probes = {cid: n for cid, n in report.items() if cid.startswith("slbprobe")}
    assert len(probes) >= 6, probes
    assert all(n == 1 for n in probes.values()), probes
    c.h.stop(uas)


if __name__ == "__main__":
    sys.exit(run_tests_skipping([
        test_prometheus_watches_load_failover_and_probes,
        test_admin_drain_undrain_weight_under_load,
        test_slow_admin_client_does_not_slow_relaying,
        test_ready_and_live,
        test_stats_file_is_replaced_whole,
        test_unix_admin_socket_and_connection_records,
        test_every_probe_is_a_new_request,
        test_json_log_lines,
    ], setup, teardown))
