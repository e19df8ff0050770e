#!/usr/bin/env python3
"""End to end in a real browser: JsSIP (npm jssip, bundled by esbuild) in Debian's chromium,
headless, driven by puppeteer-core (tests/browser/drive.mjs), registers through sipslb's
wss:// listener to a Kamailio registrar; a phone on the TLS side calls it, the page answers
(fake media devices), the caller ACKs, the page hangs up (a BYE from the browser), then the
page calls the TLS phone, which answers 486. Each step is asserted from both ends: the
page's JsSIP events and what the TLS phone receives, and sipslb's counters. Skips loudly
only when the browser or its npm packages are not installed (deploy/setup-deps.sh installs
them). Loopback only (Kamailio on 127.0.0.2); processes stopped by PID; every wait bounded.

usage: test_browser.py BUILD_DIR SOURCE_DIR"""

import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipharness import SipClient, Skip, header_values, run_tests_skipping, status_of  # noqa
import test_edge as edge  # noqa: E402  (the Kamailio registrar, response_to, uri_of)
import test_interop as interop  # noqa: E402

DEPS = os.environ.get("SLB_BROWSER_DEPS", "/opt/sipslb-deps/browser")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# A WebRTC offer the browser accepts (ICE and DTLS attributes; no candidates: signalling is
# what is tested, not media).
OFFER = ("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
         "a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n"
         "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
         "a=ice-ufrag:SLBt\r\na=ice-pwd:sipslbtestsipslbtestsip0\r\na=ice-options:trickle\r\n"
         "a=fingerprint:sha-256 " + ":".join(["5A"] * 32) + "\r\n"
         "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
         "a=rtpmap:111 opus/48000/2\r\n")


class Ctx:
    pass


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def setup():
    c = Ctx()
    c.h = interop.Harness(sys.argv[1], sys.argv[2])
    c.ca = c.h.cert("ca.pem")
    c.tools = {"kamailio": interop.find_program("kamailio")}
    c.kam_modules = interop.kamailio_modules()
    c.kam = c.lb = c.web = None
    return c


def teardown(c):
    if c.web:
        c.web.shutdown()
    if c.kam:
        interop.stop_kamailio(c.h, c.kam)
    c.h.close()


class Page:
    """The driver: JsSIP events in (a queue), commands out."""

    def __init__(self, c, page_url, wss_url):
        spki = subprocess.run(
            "openssl x509 -pubkey -noout -in '%s' | openssl pkey -pubin -outform der | "
            "openssl dgst -sha256 -binary | base64" % c.h.cert("server-ec.pem"),
            shell=True, capture_output=True, text=True, check=True).stdout.strip()
        # The test CA, trusted in a throwaway NSS database (Chromium's trust store on Linux,
        # under $HOME/.pki/nssdb): the browser then checks sipslb's certificate for real.
        home = os.path.join(c.h.tmp, "browser-home")
        nssdb = os.path.join(home, ".pki", "nssdb")
        os.makedirs(nssdb)
        subprocess.run(["certutil", "-N", "-d", "sql:" + nssdb, "--empty-password"], check=True)
        subprocess.run(["certutil", "-A", "-d", "sql:" + nssdb, "-n", "sipslb-test-ca", "-t",
                        "C,,", "-i", c.ca], check=True)
        env = dict(os.environ, NODE_PATH=os.path.join(DEPS, "node_modules"), SLB_CHROMIUM=CHROMIUM,
                   SLB_SPKI=spki, HOME=home,
                   SLB_PAGE=page_url, SLB_WSS=wss_url, SLB_URI="sip:alice@example.com",
                   SLB_MAX_S="90")
        self.p = subprocess.Popen(["node", os.path.join(c.h.source, "tests/browser/drive.mjs")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env,
                                  preexec_fn=interop.die_with_parent)
        c.h.procs.append(self.p)
        self.q, self.log = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "output", "text": line.rstrip()}
            self.log.append(ev)
            self.q.put(ev)

    def wait(self, name, timeout=20.0, **match):
        end = time.time() + timeout
        while time.time() < end:
            try:
                ev = self.q.get(timeout=max(0.05, end - time.time()))
            except queue.Empty:
                break
            if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                return ev
        raise AssertionError("no %s %s within %.0f s; the page said: %s" %
                             (name, match, timeout, json.dumps(self.log[-15:])))

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()


def bob_register(c):
    bob = SipClient(c.lb.port, c.ca)
    via = "SIP/2.0/TLS 127.0.0.1:%d;branch=z9hG4bK%s;rport" % (bob.local_port, uuid.uuid4().hex)
    bob.contact = "<sips:bob@127.0.0.1:%d;transport=tcp>" % bob.local_port
    bob.send("REGISTER sips:example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
             "From: <sips:bob@example.com>;tag=rb\r\nTo: <sips:bob@example.com>\r\n"
             "Call-ID: reg-bob-%s\r\nCSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 300\r\n"
             "Content-Length: 0\r\n\r\n" % (via, uuid.uuid4().hex, bob.contact))
    r = bob.recv_message()
    assert status_of(r) == 200, r
    return bob


def via_of(cl):
    return "SIP/2.0/TLS 127.0.0.1:%d;branch=z9hG4bK%s;rport" % (cl.local_port, uuid.uuid4().hex)


def test_jssip_in_chromium_registers_receives_and_places_calls(c):
    if not os.access(CHROMIUM, os.X_OK) or not os.path.exists(
            os.path.join(DEPS, "node_modules", "puppeteer-core")) or not shutil.which("node") \
            or not shutil.which("certutil"):
        raise Skip("BROWSER TEST SKIPPED: chromium, node, certutil or %s/node_modules "
                   "(puppeteer-core, jssip) missing; deploy/setup-deps.sh installs them" % DEPS)
    if not (c.tools["kamailio"] and c.kam_modules and
            os.path.exists(os.path.join(c.kam_modules, "registrar.so"))):
        raise Skip("kamailio with its registrar module is not installed")
    c.kam = edge.start_registrar(c, c.h.free_port())
    port, wss = c.h.free_port(), c.h.free_port()
    stats = os.path.join(c.h.tmp, "sipslb-browser.stats")
    c.lb = interop.start(c.h, "sipslb-browser", [
        c.h.bin("balancer/sipslb"), "--cert", c.h.cert("server-ec.pem"), "--key",
        c.h.cert("server-ec.key"), "--listen", "127.0.0.1:%d" % port, "--listen",
        "wss://127.0.0.1:%d" % wss, "--backend", "sips:127.0.0.2:%d" % c.kam.port,
        "--backend-ca", c.ca, "--workers", "2", "--stats-file", stats] + edge.backend_auth(c.h),
        wait_port=port)
    c.lb.port, c.lb.stats = port, stats
    # The page, from loopback, with the JsSIP bundle beside it.
    web_dir = os.path.join(c.h.tmp, "web")
    os.makedirs(web_dir)
    shutil.copy(os.path.join(c.h.source, "tests/browser/page.html"), web_dir)
    shutil.copy(os.path.join(DEPS, "jssip.min.js"), web_dir)
    c.web = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Quiet, directory=web_dir))
    threading.Thread(target=c.web.serve_forever, daemon=True).start()
    page = Page(c, "http://127.0.0.1:%d/page.html" % c.web.server_address[1],
                "wss://127.0.0.1:%d" % wss)
    print("browser:", page.wait("browser", 30).get("version"))
    page.wait("registered", 20)
    bob = bob_register(c)

    # Bob calls the browser: through Kamailio, back through sipslb, down its WebSocket.
    cid = "browser-in-" + uuid.uuid4().hex
    bob.send(("INVITE sip:alice@example.com SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
              "From: <sips:bob@example.com>;tag=bobtag\r\nTo: <sip:alice@example.com>\r\n"
              "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: %s\r\n"
              "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
              % (via_of(bob), cid, bob.contact, len(OFFER), OFFER)).encode())
    page.wait("newRTCSession", 10, direction="incoming")
    page.wait("accepted", 15, direction="incoming")
    ok = None
    for _ in range(6):
        r = bob.recv_message(10.0)
        assert r is not None, "bob's connection closed"
        if status_of(r) == 200:
            ok = r
            break
        assert status_of(r) < 200, r[:200]
    assert ok is not None and b"a=fingerprint" in ok, ok
    route = ", ".join(reversed(header_values(ok, "Record-Route")))
    contact = edge.uri_of(header_values(ok, "Contact", "m")[0])
    to = header_values(ok, "To", "t")[0]
    bob.send(("ACK %s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\nRoute: %s\r\n"
              "From: <sips:bob@example.com>;tag=bobtag\r\nTo: %s\r\nCall-ID: %s\r\n"
              "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
              % (contact, via_of(bob), route, to, cid)).encode())
    page.wait("confirmed", 10, direction="incoming")
    # The browser hangs up: its BYE reaches Bob over TLS.
    page.send("hangup")
    bye = bob.recv_message(10.0)
    assert bye is not None and bye.startswith(b"BYE "), bye
    assert header_values(bye, "Call-ID", "i") == [cid]
    bob.send(edge.response_to(bye, 200, "OK"))
    page.wait("ended", 10, direction="incoming", originator="local")

    # The browser calls Bob; Bob is busy.
    page.send("call sip:bob@example.com")
    inv = bob.recv_message(15.0)
    assert inv is not None and inv.startswith(b"INVITE "), inv
    assert b"a=fingerprint" in inv, "the browser's WebRTC offer"
    bob.send(edge.response_to(inv, 486, "Busy Here", "busy1"))
    failed = page.wait("failed", 10, direction="outgoing")
    assert failed.get("cause") == "Busy", failed
    page.send("quit")
    page.p.wait(15)

    c.lb.send_signal(interop.signal.SIGUSR1)
    time.sleep(0.3)
    st = c.h.read_stats(stats)
    print("browser: registered, answered a call from the TLS side, hung up, called the TLS "
          "side (busy); sipslb: ws_upgrades %d, requests to clients %d, protocol errors %d" %
          (st["ws_upgrades"], st["requests_to_clients_forwarded"], st["ws_protocol_errors"]))
    assert st["ws_upgrades"] >= 1 and st["ws_protocol_errors"] == 0, st
    assert st["requests_to_clients_forwarded"] >= 2, st  # the INVITE and ACK to the browser
    bob.close()
    assert c.h.stop(c.lb) == 0


if __name__ == "__main__":
    sys.exit(run_tests_skipping([test_jssip_in_chromium_registers_receives_and_places_calls],
                                setup, teardown))
