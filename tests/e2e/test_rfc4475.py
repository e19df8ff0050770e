#!/usr/bin/env python3
"""End to end, RFC 4475: every case in tests/corpus/rfc4475 sent to sipslb over TLS on its
own connection, in front of a mock SIPS backend; the client gets what the EXPECT file's
proxy column says (relayed and answered by the backend, answered by sipslb, dropped, or
closed), and sipslb-scan says what its scan column says. Also a request near --max-message-size with many headers still relays. Loopback
only; processes stopped by PID; every wait bounded.

usage: test_rfc4475.py BUILD_DIR SOURCE_DIR"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import Harness, SipClient, request, run_tests, status_of  # noqa: E402


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.uas = c.h.start_uas("uas", c.h.free_port())
    c.lb = c.h.start_sipslb(c.h.free_port(), [c.uas.port],
                            ["--workers", "1", "--message-timeout", "1s"])
    c.dir = os.path.join(c.h.source, "tests/corpus/rfc4475")
    return c


def teardown(c):
    c.h.close()


def cases(c):
    with open(os.path.join(c.dir, "EXPECT")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, section, _scan, proxy = line.split()[:4]
            yield name, section, proxy


def finals(cl, n, timeout=3.0):
    """The status codes of the next n final responses (provisional ones skipped)."""
    out = []
    end = time.time() + timeout
    while len(out) < n:
        m = cl.recv_message(timeout=max(0.1, end - time.time()))
        if m is None:
            out.append("closed")
            break
        s = status_of(m)
        if s is not None and s >= 200:
            out.append(s)
    return out


def still_open(c, cl):
    cid = "alive-%f" % time.time()
    cl.send(request("OPTIONS", cid, 1, "z9hG4bKalive%d" % int(time.time() * 1e6), cl.local_port))
    return finals(cl, 1) == [200]


def test_every_rfc4475_case_gets_its_outcome(c):
    seen = 0
    bad = []
    for name, section, want in cases(c):
        with open(os.path.join(c.dir, name + ".sip"), "rb") as f:
            data = f.read()
        cl = SipClient(c.lb.port, c.ca)
        cl.send(data)
        t0 = time.time()
        try:
            if want == "relay":
                n = len(re.findall(rb"(?m)^[A-Za-z!%][^ \r\n]* [^ \r\n]+ SIP/2\.0\r$", data))
                got = finals(cl, n)
                ok = got == [200] * n
            elif want in ("drop",):
                try:
                    got = finals(cl, 1, timeout=0.5)
                except TimeoutError:
                    got = []
                ok = got == [] and still_open(c, cl)
            elif want == "close":
                got = finals(cl, 1)
                ok = got == ["closed"]
            elif want == "wait":
                got = finals(cl, 1, timeout=4.0)
                ok = got == ["closed"] and time.time() - t0 >= 0.9
            else:
                got = finals(cl, 1)
                ok = got == [int(want)]
        except TimeoutError:
            got, ok = ["timeout"], False
        cl.close()
        seen += 1
        print("  %-16s %-9s want %-6s got %s" % (name, section, want, got))
        if not ok:
            bad.append((name, want, got))
    assert seen == 48, seen
    assert not bad, bad


def test_sipslb_scan_says_what_expect_says(c):
    """sipslb-scan on each file: valid messages listed, or the rejection with its status
    (and the close), or a truncated message, as EXPECT's scan column says."""
    bad = []
    for line in open(os.path.join(c.dir, "EXPECT")):
        if line.startswith("#") or not line.strip():
            continue
        name, _section, scan = line.split()[:3]
        p = subprocess.run([c.h.bin("balancer/sipslb-scan"), os.path.join(c.dir, name + ".sip")],
                           capture_output=True, text=True, timeout=30)
        out = p.stdout
        if scan == "ok":
            ok = p.returncode == 0 and re.search(r": (request|response) ", out) is not None
        elif scan == "more":
            ok = p.returncode == 1 and "truncated" in out
        else:
            status, _, closes = scan.partition("+")
            ok = (p.returncode == 1 and ("-> %s" % status) in out and
                  (", connection closed" in out) == bool(closes))
        if not ok:
            bad.append((name, scan, out.strip()[-200:]))
    assert not bad, bad


def test_a_request_near_max_message_size_relays(c):
    # 88 header lines (the bound is 96) and a body: 64,000 bytes in all, under
    # --max-message-size (65535) with room for our Via; 41 Via values (72 are kept).
    cl = SipClient(c.lb.port, c.ca)
    extra = "".join("Via: SIP/2.0/TLS hop%d.example.com;branch=z9hG4bKhop%d\r\n" % (i, i)
                    for i in range(40))
    extra += "".join("X-Filler-%d: %s\r\n" % (i, "f" * 200) for i in range(40))
    base = request("MESSAGE", "near-max-%f" % time.time(), 1, "z9hG4bKnearmax", cl.local_port,
                   extra=extra)
    body = b"b" * (64000 - len(base))
    msg = request("MESSAGE", "near-max-%f" % time.time(), 1, "z9hG4bKnearmax", cl.local_port,
                  extra=extra, body=body)
    assert 63900 <= len(msg) <= 64100, len(msg)
    cl.send(msg)
    got = finals(cl, 1)
    assert got == [200], got
    cl.close()


if __name__ == "__main__":
    sys.exit(run_tests([test_sipslb_scan_says_what_expect_says,
                        test_every_rfc4475_case_gets_its_outcome,
                        test_a_request_near_max_message_size_relays], setup, teardown))
