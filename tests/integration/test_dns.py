"""XCLIENT NAME=, DESTADDR= and DESTPORT= (SPEC §9) from mxlb's resolver
(proxy/dns.c: c-ares on the worker's ring), against a real DNS server
(dnsmasq, tests/integration/dnsmasq.py) that mxlb asks through
server.resolver, and a resolver that never answers.

The client is 127.0.0.1 in every test: what dnsmasq answers for
1.0.0.127.in-addr.arpa decides its name. Backends: mxlb-sink --xclient
(it saves the XCLIENT attributes it was given with each message), a
scripted backend (what an XCLIENT line without those attributes gets),
and a real Postfix (the name in its Received: header; the destination
its policy service is told).
"""
import re
import socketserver
import threading
import time

import pytest

from conftest import Client, deliver, free_port, wait_for
from dnsmasq import dead_resolver, dnsmasq  # noqa: F401  (the fixtures)
from postfix import postfix  # noqa: F401  (the fixture)

# the bound mxlb puts on a client name lookup (XCLIENT_NAME_MS, smtp_back.c)
NAME_TIMEOUT = 2.0


# A second address for the listener: on loopback the backend's own
# address is 127.0.0.1 too, so only another one shows that DESTADDR is the
# address the client connected to.
DEST = "127.0.0.2"


def start_mx(env, backend_port, resolver, workers=2, dest=False):
    """mxlb in front of an xclient backend; with dest, its listener also
    listens on DEST:mx.dest_port (added by a reload: the fixture's
    listener has its one address)."""
    mx = env.mxlb([backend_port], pool={"handoff": "xclient"},
                  server={"resolver": resolver, "workers": workers},
                  listener={"timeouts": {"backend_reply": "5s"}})
    if dest:
        mx.dest_port = free_port()
        mx.rewrite(lambda d: d["listeners"][0]["listen"].append(f"{DEST}:{mx.dest_port}"))
        mx.reload(1)
    return mx


def xclient_rig(env, resolver, workers=2, dest=False):
    sink = env.sink("--xclient")
    return sink, start_mx(env, sink.port, resolver, workers, dest)


def xclient_of(sink, n):
    """The XCLIENT attributes of the first n messages the sink saved."""
    wait_for(lambda: len(sink.messages()) >= n, what=f"{n} messages")
    return [env["xclient"] for _, env in sink.messages()[:n]]


def session_line(mx, port):
    """mxlb's session line of the client that used local port `port`."""
    def find():
        for s in mx.sessions():
            if s.get("client") == f"127.0.0.1:{port}":
                return s
        return None
    return wait_for(find, what=f"the session line of port {port}")


def send_one(mx, ehlo="client.example", dest=False):
    """One message by hand (to DEST:mx.dest_port with dest); returns the
    client's local port."""
    c = Client(mx.dest_port, host=DEST) if dest else Client(mx.port)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO " + ehlo.encode())[0] == 250
    port = c.sock.getsockname()[1]
    assert c.cmd(b"MAIL FROM:<a@client.example>")[0] == 250
    assert c.cmd(b"RCPT TO:<b@dest.example>")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    assert c.cmd(b"Subject: dns\r\n\r\nhello\r\n.")[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    c.close()
    return port


# ---- the name, with mxlb-sink ----

def test_verified_name_and_destination(env, dnsmasq):
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"})
    sink, mx = xclient_rig(env, dns.resolver, dest=True)
    port = send_one(mx, dest=True)
    x = xclient_of(sink, 1)[0]
    assert x["NAME"] == "client.example"
    assert x["ADDR"] == "127.0.0.1" and x["PORT"] == str(port)
    # the address and port the client connected to
    assert x["DESTADDR"] == DEST and x["DESTPORT"] == str(mx.dest_port)
    # the PTR first, then the forward lookup of its name
    assert dns.queries("PTR") and set(dns.queries("PTR")) == {"1.0.0.127.in-addr.arpa"}
    assert "client.example" in dns.queries("A")


def test_no_ptr_is_unavailable(env, dnsmasq):
    dns = dnsmasq()
    sink, mx = xclient_rig(env, dns.resolver)
    send_one(mx)
    assert xclient_of(sink, 1)[0]["NAME"] == "[UNAVAILABLE]"
    assert "1.0.0.127.in-addr.arpa" in dns.queries("PTR")


def test_ptr_not_confirmed_is_unavailable(env, dnsmasq):
    # the PTR names a host whose address is another: not verified
    dns = dnsmasq(ptrs={"127.0.0.1": "liar.example"}, hosts={"liar.example": "192.0.2.7"})
    sink, mx = xclient_rig(env, dns.resolver)
    send_one(mx)
    assert xclient_of(sink, 1)[0]["NAME"] == "[UNAVAILABLE]"
    assert "liar.example" in dns.queries("A")


def test_ptr_name_without_address_is_unavailable(env, dnsmasq):
    dns = dnsmasq(ptrs={"127.0.0.1": "gone.example"})
    sink, mx = xclient_rig(env, dns.resolver)
    send_one(mx)
    assert xclient_of(sink, 1)[0]["NAME"] == "[UNAVAILABLE]"
    assert "gone.example" in dns.queries("A")


def test_second_ptr_name_confirms(env, dnsmasq):
    # each PTR name is looked up until one gives the address back
    dns = dnsmasq(ptrs={"127.0.0.1": ["liar.example", "real.example"]},
                  hosts={"liar.example": "192.0.2.7", "real.example": "127.0.0.1"})
    sink, mx = xclient_rig(env, dns.resolver)
    send_one(mx)
    assert xclient_of(sink, 1)[0]["NAME"] == "real.example"


def test_dead_resolver_costs_at_most_the_timeout(env, dead_resolver):
    dead = dead_resolver()
    sink, mx = xclient_rig(env, dead.resolver)
    t = time.monotonic()
    port = send_one(mx)
    took = time.monotonic() - t
    assert xclient_of(sink, 1)[0]["NAME"] == "[TEMPUNAVAIL]"
    # loose bounds: the message goes once the lookup gives up
    assert took < NAME_TIMEOUT + 3, took
    routed = float(session_line(mx, port)["routed_ms"])
    assert routed < (NAME_TIMEOUT + 1.5) * 1000, routed


def test_cache_answers_the_second_session(env, dnsmasq):
    # one worker: the cache is per worker
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"}, ttl=60)
    sink, mx = xclient_rig(env, dns.resolver, workers=1)
    send_one(mx)
    send_one(mx)
    assert [x["NAME"] for x in xclient_of(sink, 2)] == ["client.example"] * 2
    assert dns.queries("PTR") == ["1.0.0.127.in-addr.arpa"]
    assert dns.queries("A") == ["client.example"]


def test_cache_honours_the_ttl(env, dnsmasq):
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"}, ttl=1)
    sink, mx = xclient_rig(env, dns.resolver, workers=1)
    send_one(mx)
    n = len(dns.queries("PTR"))
    time.sleep(1.5)  # past the TTL
    send_one(mx)
    assert [x["NAME"] for x in xclient_of(sink, 2)] == ["client.example"] * 2
    assert len(dns.queries("PTR")) > n


def test_negative_answer_is_cached(env, dnsmasq):
    dns = dnsmasq()
    sink, mx = xclient_rig(env, dns.resolver, workers=1)
    send_one(mx)
    send_one(mx)
    assert [x["NAME"] for x in xclient_of(sink, 2)] == ["[UNAVAILABLE]"] * 2
    # the probe session of the fixture asked first; nobody after it
    assert dns.queries("PTR") == ["1.0.0.127.in-addr.arpa"]


def test_reload_switches_resolver(env, dnsmasq, dead_resolver):
    dead = dead_resolver()
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"})
    sink, mx = xclient_rig(env, dead.resolver)
    send_one(mx)
    mx.rewrite(lambda d: d["server"].update(resolver=dns.resolver))
    mx.reload(1)
    send_one(mx)
    assert [x["NAME"] for x in xclient_of(sink, 2)] == ["[TEMPUNAVAIL]", "client.example"]
    # the retired channel went, with all it held (LeakSanitizer under ASan)
    assert mx.stop() == 0


def test_sessions_closed_mid_lookup(env, dead_resolver, dnsmasq):
    """Clients that go while their name is looked up (before EHLO: the
    session ends and cancels it; after: the session goes on to the backend
    and waits for it): under ASan a use after free would kill mxlb, and
    mxlb serves the next client."""
    dead = dead_resolver()
    sink, mx = xclient_rig(env, dead.resolver)
    for i in range(20):
        c = Client(mx.port)
        assert c.reply()[0] == 220
        if i % 2:
            c.send(b"EHLO client.example\r\n")
            time.sleep(0.01)
        c.close()
    # the probe, and the 20: those that sent EHLO waited for the name
    wait_for(lambda: len(mx.sessions()) >= 21, what="the sessions to end")
    time.sleep(NAME_TIMEOUT + 0.5)  # the lookups' deadlines pass
    assert deliver(mx.port) == {}
    assert xclient_of(sink, 1)[0]["NAME"] == "[TEMPUNAVAIL]"
    assert mx.proc.proc.poll() is None
    assert mx.stop() == 0


def test_proxy_header_client_is_looked_up(env, dnsmasq):
    """Behind accept_proxy the client is the PROXY header's: its name is
    looked up (and DESTADDR/DESTPORT are the header's destination)."""
    dns = dnsmasq(hosts={"relay.example": "192.0.2.25"})
    sink = env.sink("--xclient")
    mx = env.mxlb([sink.port], pool={"handoff": "xclient"},
                  server={"resolver": dns.resolver},
                  listener={"accept_proxy": True, "timeouts": {"backend_reply": "5s"}})
    c = Client(mx.port)
    c.send(b"PROXY TCP4 192.0.2.25 198.51.100.3 40000 2525\r\n")
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO relay.example")[0] == 250
    assert c.cmd(b"MAIL FROM:<a@relay.example>")[0] == 250
    assert c.cmd(b"RCPT TO:<b@dest.example>")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    assert c.cmd(b"Subject: p\r\n\r\nx\r\n.")[0] == 250
    c.cmd(b"QUIT")
    c.close()
    x = xclient_of(sink, 1)[0]
    assert x["ADDR"] == "192.0.2.25" and x["NAME"] == "relay.example"
    assert x["DESTADDR"] == "198.51.100.3" and x["DESTPORT"] == "2525"


# ---- only what the backend offers ----

class ScriptedBackend(socketserver.ThreadingTCPServer):
    """An SMTP server whose EHLO reply offers XCLIENT with the given
    attributes; it records every command line and accepts every XCLIENT."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, attrs):
        self.attrs = attrs
        self.lines = []
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _ScriptedHandler(socketserver.StreamRequestHandler):
    def handle(self):
        srv = self.server
        self.wfile.write(b"220 scripted ESMTP\r\n")
        for line in self.rfile:
            line = line.rstrip(b"\r\n")
            srv.lines.append(line.decode("latin-1"))
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-scripted\r\n250-XCLIENT " + srv.attrs.encode()
                                 + b"\r\n250 8BITMIME\r\n")
            elif verb == b"XCLIENT":
                self.wfile.write(b"220 scripted ESMTP\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def scripted():
    made = []

    def make(attrs):
        b = ScriptedBackend(attrs)
        made.append(b)
        return b
    yield make
    for b in made:
        b.shutdown()
        b.server_close()


@pytest.mark.parametrize("attrs,want,unwanted", [
    ("ADDR PORT PROTO HELO", [], ["NAME=", "DESTADDR=", "DESTPORT="]),
    ("NAME ADDR PORT PROTO HELO", ["NAME=client.example"], ["DESTADDR=", "DESTPORT="]),
    ("ADDR PORT PROTO HELO DESTPORT", ["DESTPORT="], ["NAME=", "DESTADDR="]),
    ("name addr port proto helo destaddr", ["NAME=client.example", "DESTADDR=127.0.0.1"],
     ["DESTPORT="]),
], ids=["classic", "name", "destport", "lowercase"])
def test_only_offered_attributes(env, dnsmasq, scripted, attrs, want, unwanted):
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"})
    be = scripted(attrs)
    mx = env.mxlb([be.port], pool={"handoff": "xclient"}, server={"resolver": dns.resolver})
    c = Client(mx.port)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO client.example")[0] == 250
    c.cmd(b"QUIT")
    c.close()
    xc = wait_for(lambda: [ln for ln in be.lines if ln.startswith("XCLIENT ")],
                  what="the XCLIENT line")[0]
    assert xc.startswith("XCLIENT ADDR=127.0.0.1 PORT="), xc
    for w in want:
        assert w in xc, xc
    for u in unwanted:
        assert u not in xc, xc


def test_no_lookup_without_xclient_pool(env, dnsmasq):
    """A listener whose pools hand off otherwise asks nothing."""
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"})
    sink = env.sink("--accept-proxy")
    mx = env.mxlb([sink.port], pool={"handoff": "proxy_v1"}, server={"resolver": dns.resolver})
    assert deliver(mx.port) == {}
    assert dns.queries() == []


# ---- a real Postfix ----

class PolicyServer(socketserver.ThreadingTCPServer):
    """A Postfix policy service (SMTPD_POLICY_README) that records each
    request's attributes and answers DUNNO."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.requests = []
        super().__init__(("127.0.0.1", 0), _PolicyHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _PolicyHandler(socketserver.StreamRequestHandler):
    def handle(self):
        req = {}
        for line in self.rfile:
            line = line.decode("latin-1").rstrip("\n")
            if line:
                k, _, v = line.partition("=")
                req[k] = v
                continue
            self.server.requests.append(req)
            self.wfile.write(b"action=DUNNO\n\n")
            self.wfile.flush()
            req = {}


@pytest.fixture
def policy():
    p = PolicyServer()
    yield p
    p.shutdown()
    p.server_close()


RECEIVED = re.compile(rb"^Received: from (\S+) \(([^)]*)\)", re.M)


def postfix_received(env, pf, resolver, ehlo="client.example"):
    mx = start_mx(env, pf.port, resolver, dest=True)
    port = send_one(mx, ehlo=ehlo, dest=True)
    raw, _ = pf.wait_delivered(1, timeout=15)[0]
    m = RECEIVED.search(raw)
    assert m, raw[:300]
    return mx, port, m.group(1).decode(), m.group(2).decode()


def test_postfix_received_shows_verified_name(env, dnsmasq, postfix, policy):
    dns = dnsmasq(hosts={"client.example": "127.0.0.1"})
    pf = postfix(params={"smtpd_recipient_restrictions":
                         f"check_policy_service inet:127.0.0.1:{policy.port}"})
    mx, port, helo, peer = postfix_received(env, pf, dns.resolver)
    assert (helo, peer) == ("client.example", "client.example [127.0.0.1]")
    # what Postfix believes, as its policy service is told
    req = wait_for(lambda: policy.requests, what="a policy request")[0]
    assert req["client_name"] == "client.example"
    assert req["reverse_client_name"] == "client.example"
    assert req["client_address"] == "127.0.0.1" and req["client_port"] == str(port)
    assert req["server_address"] == DEST
    assert req["server_port"] == str(mx.dest_port)


def test_postfix_unknown_without_ptr(env, dnsmasq, postfix):
    dns = dnsmasq()
    pf = postfix()
    _, _, helo, peer = postfix_received(env, pf, dns.resolver)
    assert (helo, peer) == ("client.example", "unknown [127.0.0.1]")


def test_postfix_unknown_when_ptr_not_confirmed(env, dnsmasq, postfix):
    dns = dnsmasq(ptrs={"127.0.0.1": "client.example"}, hosts={"client.example": "192.0.2.7"})
    pf = postfix()
    _, _, helo, peer = postfix_received(env, pf, dns.resolver)
    assert peer == "unknown [127.0.0.1]"


def test_postfix_dead_resolver_delivers_within_timeout(env, dead_resolver, postfix, policy):
    dead = dead_resolver()
    pf = postfix(params={"smtpd_recipient_restrictions":
                         f"check_policy_service inet:127.0.0.1:{policy.port}"})
    mx, port, helo, peer = postfix_received(env, pf, dead.resolver)
    assert peer == "unknown [127.0.0.1]"
    routed = float(session_line(mx, port)["routed_ms"])
    assert routed < (NAME_TIMEOUT + 1.5) * 1000, routed
    # [TEMPUNAVAIL]: Postfix knows the lookup failed for now, not for good
    req = wait_for(lambda: policy.requests, what="a policy request")[0]
    assert req["client_name"] == "unknown"
