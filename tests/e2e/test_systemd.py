#!/usr/bin/env python3
"""End to end, sipslb as a systemd service without systemd: the test is the service
manager's notification socket (NOTIFY_SOCKET, a Unix datagram socket) and watchdog
(WATCHDOG_USEC). It must see READY=1 once the listeners are open and the first probe round
is done, RELOADING=1 then READY=1 around a SIGHUP, WATCHDOG=1 pings, STOPPING=1 on SIGTERM,
and no more pings once a worker hangs (a debug-only stall, SLB_DEBUG_STALL_WORKER_MS).
Also systemd-analyze verify on the unit file, when it is installed.

usage: test_systemd.py BUILD_DIR SOURCE_DIR"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import Harness, Skip, run_tests_skipping  # noqa: E402

PROBE = ["--probe-interval", "500ms", "--probe-timeout", "400ms", "--fall", "2", "--rise", "2"]


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    return c


def teardown(c):
    c.h.close()


class Notifications:
    """The notification socket: every datagram, with its arrival time."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(path)
        self.s.settimeout(0.2)
        self.got = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.got.append((time.time(), self.s.recv(4096).decode()))
            except socket.timeout:
                pass

    def states(self):
        return [m for _, m in self.got]

    def wait(self, pred, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if pred(self.states()):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.stop.set()
        self.t.join(2)
        self.s.close()


def start(c, name, extra_env):
    uas = c.h.start_uas(name + "-uas", c.h.free_port())
    n = Notifications(os.path.join(c.h.tmp, name + ".notify"))
    env = dict(os.environ, NOTIFY_SOCKET=n.path, **extra_env)
    port = c.h.free_port()
    argv = [c.h.bin("balancer/sipslb"), "--cert", c.h.cert("server-ec.pem"), "--key",
            c.h.cert("server-ec.key"), "--listen", "127.0.0.1:%d" % port, "--backend-ca",
            c.h.cert("ca.pem"), "--backend", "sips:127.0.0.1:%d" % uas.port,
            "--workers", "2"] + PROBE
    log = open(os.path.join(c.h.tmp, name + ".log"), "w")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    p.name, p.logpath = name, log.name
    c.h.procs.append(p)
    return p, n, uas


def test_ready_reloading_watchdog_stopping(c):
    p, n, uas = start(c, "sd", {"WATCHDOG_USEC": "1000000"})
    assert n.wait(lambda s: any(m.startswith("READY=1") for m in s), 10), n.states()
    # READY only once sipslb relays: the listener takes connections by then.
    assert n.wait(lambda s: s.count("WATCHDOG=1") >= 3, 5), n.states()
    p.send_signal(signal.SIGHUP)
    assert n.wait(lambda s: "RELOADING=1" in s and s.index("RELOADING=1") < len(s) - 1 and
                  any(m.startswith("READY=1") for m in s[s.index("RELOADING=1") + 1:]), 5), \
        n.states()
    pings = [t for t, m in n.got if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert gaps and max(gaps) < 0.9, gaps  # every half interval (0.5 s), give or take
    assert c.h.stop(p) == 0
    assert "STOPPING=1" in n.states(), n.states()
    n.close()
    c.h.stop(uas)


def test_a_hung_worker_stops_the_watchdog(c):
    p, n, uas = start(c, "hung", {"WATCHDOG_USEC": "1000000", "SLB_DEBUG_STALL_WORKER_MS": "2000"})
    assert n.wait(lambda s: s.count("WATCHDOG=1") >= 2, 5), n.states()
    # Worker 0 hangs two seconds after start: the pings stop while the process lives on.
    time.sleep(4.0)
    assert p.poll() is None
    last = max(t for t, m in n.got if m == "WATCHDOG=1")
    assert time.time() - last > 1.5, "still pinging %.2fs ago" % (time.time() - last)
    with open(p.logpath) as f:
        assert "has not made progress" in f.read()
    c.h.stop(p)
    n.close()
    c.h.stop(uas)


def test_unit_file_verifies(c):
    tool = shutil.which("systemd-analyze")
    if not tool:
        raise Skip("systemd-analyze not installed")
    unit = os.path.join(c.h.source, "deploy/systemd/sipslb.service")
    r = subprocess.run([tool, "verify", unit], capture_output=True, text=True, timeout=60)
    # Without the package installed, verify says the binary and the man page are missing;
    # anything else is a mistake in the unit.
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "/usr/sbin/sipslb" not in line and "man sipslb" not in line]
    assert not problems, problems


if __name__ == "__main__":
    sys.exit(run_tests_skipping([
        test_ready_reloading_watchdog_stopping,
        test_a_hung_worker_stops_the_watchdog,
        test_unit_file_verifies,
    ], setup, teardown))
