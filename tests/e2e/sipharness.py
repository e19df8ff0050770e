"""Shared pieces of the end-to-end tests: certificates, free ports, processes started and
stopped by PID, a small SIP-over-TLS client, and a test runner that prints the closing
"N passed, N failed" line. Standard library only; loopback only; every wait is bounded."""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback


def _die_with_parent():
    """In the child before exec: SIGTERM when the test runner dies (say, on a timeout)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Harness:
    def __init__(self, build, source):
        self.build = os.path.abspath(build)
        self.source = os.path.abspath(source)
        self.tmp = tempfile.mkdtemp(prefix="sipslb-e2e-")
        self.procs = []
        # Whatever happens to the test (a failed set-up included), its processes go.
        import atexit
        atexit.register(self.close)
        self.certs = os.path.join(self.tmp, "certs")
        subprocess.run([os.path.join(self.source, "tests/tls/gen-certs.sh"), self.certs],
                       check=True, stdout=subprocess.DEVNULL)

    def cert(self, name):
        return os.path.join(self.certs, name)

    def bin(self, rel):
        return os.path.join(self.build, rel)

    @staticmethod
    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start(self, name, argv, wait_port=None):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=_die_with_parent)
        p.name = name
        p.logpath = log.name
        self.procs.append(p)
        if wait_port:
            self.wait_port(wait_port, p)
        return p

    @staticmethod
    def wait_port(port, proc, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            if proc.poll() is not None:
                raise RuntimeError("%s exited with %s" % (proc.name, proc.returncode))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not listen on %d" % (proc.name, port))

    def stop(self, p, sig=signal.SIGTERM, timeout=10.0):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def log_of(self, p):
        with open(p.logpath) as f:
            return f.read()

    def close(self):
        for p in self.procs:
            self.stop(p)

    def start_uas(self, name, port, extra=()):
        report = os.path.join(self.tmp, name + ".report")
        p = self.start(name, [self.bin("bench/sipslb-uas"), "--cert", self.cert("server-ec.pem"),
                              "--key", self.cert("server-ec.key"), "--listen",
                              "127.0.0.1:%d" % port, "--report", report, "--name", name] +
                       list(extra), wait_port=port)
        p.report = report
        p.port = port
        return p

    def start_sipslb(self, port, backends, extra=()):
        stats = os.path.join(self.tmp, "sipslb-%d.stats" % port)
        argv = [self.bin("balancer/sipslb"), "--cert", self.cert("server-ec.pem"), "--key",
                self.cert("server-ec.key"), "--listen", "127.0.0.1:%d" % port,
                "--backend-ca", self.cert("ca.pem"), "--stats-file", stats]
        for b in backends:
            argv += ["--backend", "sips:127.0.0.1:%d" % b]
        p = self.start("sipslb-%d" % port, argv + list(extra), wait_port=port)
        p.stats = stats
        p.port = port
        return p

    @staticmethod
    def read_report(path):
        calls = {}
        with open(path) as f:
            for line in f:
                if line.startswith("#"):
                    continue
                cid, n, _methods = line.split()
                calls[cid] = int(n)
        return calls

    @staticmethod
    def read_stats(path):
        """Counters as ints; "backend.NAME" entries keep their state word (up, down...)."""
        out = {}
        with open(path) as f:
            for line in f:
                k, v = line.split()
                out[k] = int(v) if v.isdigit() else v
        return out

    def reports(self, uas_list):
        """Per-backend {call-id: requests}, after asking each backend to write its report."""
        for u in uas_list:
            try:
                os.unlink(u.report)
            except FileNotFoundError:
                pass
            u.send_signal(signal.SIGUSR1)
        out = []
        for u in uas_list:
            end = time.time() + 5
            while not os.path.exists(u.report) and time.time() < end:
                time.sleep(0.02)
            time.sleep(0.05)
            out.append(self.read_report(u.report))
        return out


class SipClient:
    """A SIP client over one TLS connection: sends raw messages, reads whole messages."""

    def __init__(self, port, ca, timeout=5.0, source=None):
        """source: a local address (say "127.0.0.3") to connect from; default: any."""
        ctx = ssl.create_default_context(cafile=ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        self.local_port = raw.getsockname()[1]
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def recv_message(self, timeout=5.0):
        """The next whole SIP message (bytes), b"\\r\\n" for a pong, or None on EOF."""
        end = time.time() + timeout
        while True:
            if self.buf.startswith(b"\r\n") and not self.buf.startswith(b"\r\n\r\n"):
                if len(self.buf) >= 2 and (len(self.buf) == 2 or self.buf[2:3] != b"\r"):
                    self.buf = self.buf[2:]
                    return b"\r\n"
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)",
                              self.buf[:head_end])
                n = int(m.group(1)) if m else 0
                total = head_end + 4 + n
                if len(self.buf) >= total:
                    msg, self.buf = self.buf[:total], self.buf[total:]
                    return msg
            left = end - time.time()
            if left <= 0:
                raise TimeoutError("no complete message within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def send_while_receiving(self, data, n, timeout=60.0):
        """Writes data while reading responses, from this one thread, until n whole
        messages came back (or EOF, or timeout): returns them. One SSL connection must not
        be read and written from two threads at once (OpenSSL's SSL objects are not
        thread-safe, and Python's ssl releases the GIL inside SSL_read and SSL_write): a
        writer thread racing the reader broke the big burst test now and then."""
        import select
        out = []
        end = time.time() + timeout
        self.sock.setblocking(False)
        try:
            while len(out) < n:
                while len(out) < n:
                    m = self._take()
                    if m is None:
                        break
                    out.append(m)
                if len(out) >= n:
                    break
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError("%d of %d messages within %.0fs" % (len(out), n, timeout))
                want_w = [self.sock] if data else []
                if not self.sock.pending():
                    select.select([self.sock], want_w, [], min(left, 1.0))
                if data:
                    try:
                        k = self.sock.send(data[:65536])
                        data = data[k:]
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        pass
                try:
                    chunk = self.sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                if not chunk:
                    return out  # EOF
                self.buf += chunk
        finally:
            self.sock.setblocking(True)
        return out

    def _take(self):
        """One whole message out of the buffer, or None."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", self.buf[:head_end])
        total = head_end + 4 + (int(m.group(1)) if m else 0)
        if len(self.buf) < total:
            return None
        msg, self.buf = self.buf[:total], self.buf[total:]
        return msg

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def status_of(msg):
    m = re.match(rb"SIP/2\.0 (\d{3}) ", msg)
    return int(m.group(1)) if m else None


def header_values(msg, name, compact=None):
    head = msg.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    names = {name.lower()} | ({compact} if compact else set())
    out = []
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() in names:
            out.append(v.strip())
    return out


def request(method, call_id, cseq, branch, port, to_tag=None, body=b"", max_forwards=70,
            extra=""):
    to = "<sips:bob@example.com>" + (";tag=%s" % to_tag if to_tag else "")
    head = ("%s sips:bob@example.com SIP/2.0\r\n"
            "Via: SIP/2.0/TLS client.example.com:%d;branch=%s;rport\r\n"
            "Max-Forwards: %d\r\n"
            "From: <sips:alice@example.com>;tag=a%s\r\n"
            "To: %s\r\n"
            "Call-ID: %s\r\n"
            "CSeq: %d %s\r\n"
            "Contact: <sips:alice@127.0.0.1:%d>\r\n"
            "%s"
            "Content-Length: %d\r\n\r\n" % (method, port, branch, max_forwards, call_id[:8], to,
                                            call_id, cseq, method, port, extra, len(body)))
    return head.encode() + body


def run_tests(tests, setup, teardown):
    """Runs the tests in order around one setup/teardown; prints a line per test and the
    closing "N passed, N failed, N skipped". A suite that ran nothing fails."""
    return run_tests_skipping(tests, setup, teardown, none_ran=1)


# ---- optional peers: tests that need a program which is genuinely not installed ----------

class Skip(Exception):
    """Raised by a test whose prerequisite (a peer program) is missing: counted as skipped."""


def run_tests_skipping(tests, setup, teardown, none_ran=77):
    """run_tests, plus tests that raise Skip: printed as "skip", counted apart. The closing
    line is "N passed, N failed, N skipped". Exit status: 1 on any failure, 77 when nothing
    ran because everything was skipped (CTest's SKIP_RETURN_CODE), else 0."""
    passed = failed = skipped = 0
    ctx = None
    try:
        ctx = setup()
        for t in tests:
            t0 = time.time()
            try:
                t(ctx)
                passed += 1
                print("ok     %-52s %.2fs" % (t.__name__, time.time() - t0), flush=True)
            except Skip as why:
                skipped += 1
                print("skip   %-52s (%s)" % (t.__name__, why), flush=True)
            except Exception:
                failed += 1
                print("FAILED %s" % t.__name__, flush=True)
                traceback.print_exc()
    except Exception:
        failed += 1
        print("FAILED setup", flush=True)
        traceback.print_exc()
    finally:
        if ctx is not None:
            teardown(ctx)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    if failed:
        return 1
    return 0 if passed else none_ran
