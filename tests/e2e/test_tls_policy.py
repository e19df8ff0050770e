#!/usr/bin/env python3
"""End to end, TLS policy: certificates chosen by SNI (and --strict-sni refusing unknown
names) as `openssl s_client` sees them; client certificates against a --crl that a SIGHUP
replaces; and ten certificate generations reloaded while a client of each stays connected.
Loopback only; processes started here are stopped by PID; every wait is bounded.

usage: test_tls_policy.py BUILD_DIR SOURCE_DIR"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import Harness, SipClient, request, run_tests, status_of  # noqa: E402

PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


class Ctx:
    pass


def setup():
    c = Ctx()
    c.h = Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.uas = c.h.start_uas("uas", c.h.free_port())
    return c


def teardown(c):
    c.h.close()


def leaf_der(path):
    """The first certificate of a PEM file, DER."""
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(PEM_CERT.search(f.read()).group(0))


class CertClient(SipClient):
    """SipClient with a client certificate and a chosen SNI name."""

    def __init__(self, port, ca, cert=None, key=None, host="localhost", timeout=5.0):
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.local_port = raw.getsockname()[1]
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.buf = b""


def options(cl):
    """Status of an OPTIONS relayed on cl, or None when the connection failed or closed."""
    try:
        cl.send(request("OPTIONS", "tp-" + uuid.uuid4().hex, 1, "z9hG4bKtp" + uuid.uuid4().hex,
                        cl.local_port))
        r = cl.recv_message()
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    return status_of(r) if r else None


def try_client(port, ca, cert=None, key=None):
    """Status of an OPTIONS on a new connection with that client certificate; None when the
    handshake or the connection failed (TLS 1.3 reports a refused client certificate only
    after the client's handshake ended)."""
    try:
        cl = CertClient(port, ca, cert, key)
    except (OSError, ssl.SSLError):
        return None
    st = options(cl)
    cl.close()
    return st


def wait_relay(port, ca, cert=None, key=None, timeout=10.0):
    """Until an OPTIONS is answered 200 (the backend link is up)."""
    end = time.time() + timeout
    while time.time() < end:
        if try_client(port, ca, cert, key) == 200:
            return
        time.sleep(0.1)
    raise AssertionError("no 200 through sipslb within %.0fs" % timeout)


def log_count(c, p, pattern):
    return len(re.findall(pattern, c.h.log_of(p)))


def log_wait(c, p, pattern, count=1, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        if log_count(c, p, pattern) >= count:
            return True
        time.sleep(0.05)
    return False


def s_client(port, servername=None):
    """(returncode, output, peer leaf certificate as DER or None) of openssl s_client."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    argv += ["-servername", servername] if servername else ["-noservername"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=15)
    out = r.stdout + r.stderr
    m = PEM_CERT.search(r.stdout)
    return r.returncode, out, ssl.PEM_cert_to_DER_cert(m.group(0)) if m else None


def test_sni_picks_the_certificate_and_strict_sni_refuses_unknown_names(c):
    h = c.h
    default, other = leaf_der(h.cert("server-ec.pem")), leaf_der(h.cert("server-other.pem"))
    two = ["--workers", "2", "--cert", h.cert("server-other.pem"), "--key",
           h.cert("server-other.key")]
    lb = h.start_sipslb(h.free_port(), [c.uas.port], two)
    rc, out, got = s_client(lb.port, "other.test")
    assert rc == 0 and got == other, out[-600:]
    rc, out, got = s_client(lb.port, "a.wild.test")
    assert rc == 0 and got == other, "wildcard SAN: " + out[-600:]
    for name in ("localhost", "nobody.test", None):
        rc, out, got = s_client(lb.port, name)
        assert rc == 0 and got == default, "%s: %s" % (name, out[-600:])
    # SIP over the chosen certificate, verified by name.
    cl = CertClient(lb.port, c.ca, host="other.test")
    assert cl.sock.getpeercert(binary_form=True) == other
    assert options(cl) == 200
    cl.close()
    assert h.stop(lb) == 0

    lb = h.start_sipslb(h.free_port(), [c.uas.port], two + ["--strict-sni"])
    for name in ("nobody.test", None):
        rc, out, got = s_client(lb.port, name)
        assert rc != 0 and got is None, "%s was accepted: %s" % (name, out[-600:])
        assert "unrecognized name" in out.lower(), out[-600:]
    rc, out, got = s_client(lb.port, "other.test")
    assert rc == 0 and got == other, out[-600:]
    rc, out, got = s_client(lb.port, "localhost")
    assert rc == 0 and got == default, out[-600:]
    cl = CertClient(lb.port, c.ca, host="localhost")
    assert options(cl) == 200
    cl.close()
    assert h.stop(lb) == 0


def test_crl_refuses_revoked_clients_and_a_sighup_brings_a_new_one(c):
    h = c.h
    crl = os.path.join(h.tmp, "live-crl.pem")
    shutil.copy(h.cert("crl.pem"), crl)  # revokes client2
    one = (h.cert("client.pem"), h.cert("client.key"))
    two = (h.cert("client2.pem"), h.cert("client2.key"))
    lb = h.start_sipslb(h.free_port(), [c.uas.port],
                        ["--workers", "2", "--verify-client", "require", "--ca", c.ca,
                         "--crl", crl])
    wait_relay(lb.port, c.ca, *one)
    assert try_client(lb.port, c.ca, *two) is None, "a revoked client certificate was accepted"
    assert try_client(lb.port, c.ca) is None, "no client certificate was accepted"
    held = CertClient(lb.port, c.ca, *one)  # stays connected across the reload
    assert options(held) == 200

    # A SIGHUP that changes nothing TLS-related makes no new certificate generation.
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"TLS contexts kept"), h.log_of(lb)[-800:]
    assert log_count(c, lb, r"re-read --cert") == 0

    # The new CRL revokes client instead: allowed before, refused after.
    tmp = crl + ".new"
    shutil.copy(h.cert("crl2.pem"), tmp)
    os.replace(tmp, crl)
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"re-read --cert .*changed: --crl"), h.log_of(lb)[-800:]
    time.sleep(0.3)  # workers take the new contexts within 100 ms
    assert try_client(lb.port, c.ca, *one) is None, "client revoked by the new CRL was accepted"
    assert try_client(lb.port, c.ca, *two) == 200, "client no longer revoked was refused"
    assert options(held) == 200, "an established session was dropped by the reload"
    held.close()

    # A CRL that does not load is rejected whole: the one in force stays.
    with open(crl, "w") as f:
        f.write("not a CRL\n")
    lb.send_signal(signal.SIGHUP)
    assert log_wait(c, lb, r"certificate reload rejected.*CRL"), h.log_of(lb)[-800:]
    assert try_client(lb.port, c.ca, *two) == 200
    assert try_client(lb.port, c.ca, *one) is None
    assert h.stop(lb) == 0


def test_ten_certificate_generations_with_a_client_of_each_still_connected(c):
    h = c.h
    certs = [(h.cert("server-ec.pem"), h.cert("server-ec.key")),
             (h.cert("server-chain.pem"), h.cert("server-chain.key"))]
    ders = [leaf_der(p) for p, _ in certs]
    assert ders[0] != ders[1]
    live_cert, live_key = os.path.join(h.tmp, "gen.pem"), os.path.join(h.tmp, "gen.key")

    def install(i):
        for src, dst in ((certs[i][0], live_cert), (certs[i][1], live_key)):
            shutil.copy(src, dst + ".new")
            os.replace(dst + ".new", dst)

    install(0)
    port = h.free_port()
    lb = h.start("sipslb-gen", [h.bin("balancer/sipslb"), "--cert", live_cert, "--key", live_key,
                                "--listen", "127.0.0.1:%d" % port, "--backend",
                                "sips:127.0.0.1:%d" % c.uas.port, "--backend-ca", c.ca,
                                "--workers", "2"], wait_port=port)
    wait_relay(port, c.ca)
    held = []
    try:
        for gen in range(11):
            cur = gen % 2
            cl = CertClient(port, c.ca)
            got = cl.sock.getpeercert(binary_form=True)
            assert got == ders[cur], "generation %d: a new client got the old certificate" % gen
            assert options(cl) == 200
            held.append(cl)
            for k, old in enumerate(held):
                assert options(old) == 200, "the client of generation %d was dropped" % k
            if gen == 10:
                break
            install(1 - cur)
            lb.send_signal(signal.SIGHUP)
            assert log_wait(c, lb, r"re-read --cert", gen + 1), h.log_of(lb)[-800:]
            time.sleep(0.3)  # workers take the new contexts within 100 ms
    finally:
        for cl in held:
            cl.close()
    assert h.stop(lb) == 0


if __name__ == "__main__":
    sys.exit(run_tests([
        test_sni_picks_the_certificate_and_strict_sni_refuses_unknown_names,
        test_crl_refuses_revoked_clients_and_a_sighup_brings_a_new_one,
        test_ten_certificate_generations_with_a_client_of_each_still_connected,
    ], setup, teardown))
