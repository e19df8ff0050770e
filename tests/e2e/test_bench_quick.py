#!/usr/bin/env python3
"""The bench runner's smoke run: `bench/run --quick` against the build under test.

It passes only if the runner exits 0, its JSON shows sipslb relaying calls (over persistent
connections and over a new TLS connection per call) with zero failures, and the same for
Kamailio and HAProxy when they are installed (deploy/setup-deps.sh installs them; a peer
that is genuinely not installed must be reported as skipped, loudly, by the runner).
Nothing about speed is asserted. The runner is bounded (it has its own time limit, and this
test gives it 240 s), and every process it started must be gone when it returns.

usage: test_bench_quick.py BUILD_DIR SOURCE_DIR"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import run_tests  # noqa: E402

BUILD, SOURCE = (os.path.abspath(a) for a in sys.argv[1:3])
PEER_MODULES = ("tls.so", "dispatcher.so", "rr.so", "maxfwd.so", "siputils.so", "sl.so")


class Ctx:
    pass


def installed(peer):
    def prog(name):
        return any(p and os.access(p, os.X_OK)
                   for p in (shutil.which(name), "/usr/sbin/" + name, "/usr/bin/" + name))
    if peer == "haproxy":
        return prog("haproxy")
    if peer == "kamailio":
        dirs = glob.glob("/usr/lib/*/kamailio/modules") + ["/usr/lib/kamailio/modules"]
        return prog("kamailio") and any(
            all(os.path.exists(os.path.join(d, m)) for m in PEER_MODULES) for d in dirs)
    return True


def setup():
    c = Ctx()
    c.tmp = tempfile.mkdtemp(prefix="sipslb-benchq-")
    c.out = os.path.join(c.tmp, "out")
    # The runner's temporary files (and so its children's command lines) live under c.tmp.
    env = dict(os.environ, TMPDIR=c.tmp)
    argv = [sys.executable, os.path.join(SOURCE, "bench/run"), "--quick", "--build", BUILD,
            "--out", c.out]
    print("running: %s" % " ".join(argv), flush=True)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
        c.rc, c.stdout, c.stderr = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        c.rc, c.stdout, c.stderr = "timeout", e.stdout or "", e.stderr or ""
    print(c.stdout if isinstance(c.stdout, str) else c.stdout.decode(), flush=True)
    files = sorted(glob.glob(os.path.join(c.out, "bench-*.json")))
    c.doc = json.load(open(files[-1])) if files else None
    return c


def teardown(c):
    shutil.rmtree(c.tmp, ignore_errors=True)


def tail(c):
    s = c.stderr if isinstance(c.stderr, str) else (c.stderr or b"").decode("utf-8", "replace")
    return s[-3000:]


def test_runner_exits_zero(c):
    assert c.rc == 0, "bench/run --quick exited %r:\n%s" % (c.rc, tail(c))
    assert "quick bench: every balancer relayed its calls with zero failures" in c.stdout


def test_json_written(c):
    assert c.doc, "no out/bench-*.json:\n%s" % tail(c)
    assert c.doc["modes"] == ["quick"], c.doc["modes"]
    assert not c.doc["problems"], c.doc["problems"]


def check_lb(c, lb):
    if not installed(lb):
        assert lb in c.doc["skipped"], "%s is not installed but was not reported as skipped" % lb
        print("       (%s not installed here: the runner skipped it: %s)" % (
            lb, c.doc["skipped"][lb]), flush=True)
        return
    assert lb in c.doc["balancers"], "%s installed but not measured: %s" % (
        lb, c.doc.get("skipped"))
    for kind in ("quick", "quick-hs"):
        runs = [r for r in c.doc["runs"] if r["kind"] == kind and r["lb"] == lb]
        assert runs, "no %s run for %s" % (kind, lb)
        r = runs[0]
        assert "error" not in r, r["error"]
        assert r["calls_ok"] > 0, "%s %s: no call relayed" % (lb, kind)
        assert r["calls_failed"] == 0, "%s %s: %d calls failed: %s" % (
            lb, kind, r["calls_failed"], r["failures"])
        # INVITE, 100, 180, 200, ACK, BYE, 200: all seven went through the balancer.
        assert r["messages_per_call"] == 7, r["messages_per_call"]
        assert r["cpu_us_per_msg"] is not None and r["cpu_us_per_msg"] > 0
    checks = [x for x in c.doc["quick_checks"] if x["lb"] == lb]
    assert checks and all(x["ok"] for x in checks), checks


def test_sipslb_relays_with_zero_failures(c):
    check_lb(c, "sipslb")
    runs = [r for r in c.doc["runs"] if r["lb"] == "sipslb" and r["kind"] == "quick"]
    # sipslb's own counters agree with the client's count of relayed messages.
    assert runs[0].get("lb_counted_msgs") == runs[0]["messages_relayed"], runs[0]


def test_kamailio_relays_with_zero_failures(c):
    check_lb(c, "kamailio")


def test_haproxy_relays_with_zero_failures(c):
    check_lb(c, "haproxy")


def test_nothing_left_running(c):
    left = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if c.tmp in cmd and str(os.getpid()) != d[6:]:
            left.append("%s: %s" % (d[6:], cmd[:200]))
    assert not left, "processes of the bench still running:\n" + "\n".join(left)


TESTS = [
    test_runner_exits_zero,
    test_json_written,
    test_sipslb_relays_with_zero_failures,
    test_kamailio_relays_with_zero_failures,
    test_haproxy_relays_with_zero_failures,
    test_nothing_left_running,
]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, setup, teardown))
