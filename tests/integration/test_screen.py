"""Screening on the front door (SPEC §9): allow and deny lists, the
pregreet test with its 220- teaser, DNSBL/DNSWL scores from a real DNS
server (dnsmasq on loopback serving a test zone), the actions enforce,
drop and ignore, the pass cache, PIPECONNECT removed from relayed EHLO
replies, STARTTLS listeners, mxlb_screen_total, and the example
configuration for a port-25 MX.

Clients are raw sockets (to talk early, and to see the teaser) or
smtplib; backends are mxlb-sink and, where the delivery itself matters, a
real Postfix. Loopback clients come from several addresses of 127/8 (the
source address bound), so that one DNS zone lists one and not another:
a client 127.0.0.N is looked up as N.0.0.127.<site>."""
import re
import shutil
import smtplib
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import MXLB, Client, wait_for
from dnsmasq import dead_resolver, dnsmasq  # noqa: F401  (the fixtures)
from postfix import postfix  # noqa: F401  (the fixture)

HOST = "mx.test"
BODY = b"Subject: screened\r\n\r\nhello\r\n"
TOP = Path(__file__).resolve().parents[2]


# ---- peers ----

class ScriptedBackend:
    """An SMTP server on loopback that offers `caps` in its EHLO reply and
    answers QUIT; enough to see what of its EHLO reply reaches the client."""

    def __init__(self, caps):
        self.caps = caps
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _serve(self, c):
        f = c.makefile("rb")
        c.sendall(b"220 backend.test ESMTP\r\n")
        for line in f:
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                c.sendall(b"250-backend.test\r\n" + b"".join(b"250-" + x + b"\r\n"
                                                            for x in self.caps)
                          + b"250 8BITMIME\r\n")
            elif verb == b"QUIT":
                c.sendall(b"221 bye\r\n")
                break
            else:
                c.sendall(b"250 ok\r\n")
        c.close()

    def _run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def close(self):
        # shut first: a thread blocked in accept() keeps a closed
        # listener accepting on its port (a later test's connection)
        try:
            self.srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.srv.close()


# ---- clients ----

def client(port, src="127.0.0.1", timeout=15):
    """A raw client (conftest.Client) from source address src."""
    c = Client.__new__(Client)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(src, 0))
    c.f = c.sock.makefile("rb")
    return c


def first_line(c):
    return c.f.readline()


def send_mail(port, src="127.0.0.1", ehlo="client.test", rcpts=("rcpt@dest.test",),
              starttls_ctx=None):
    """A patient client (smtplib reads the teaser and the final line as one
    reply): the message's refusals, {} when accepted."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname=ehlo, timeout=30,
                      source_address=(src, 0)) as s:
        s.ehlo()
        if starttls_ctx:
            s.starttls(context=starttls_ctx)
            s.ehlo()
        return s.sendmail("sender@client.test", list(rcpts), BODY)


def talk_early(c):
    """Read the teaser, then send EHLO before the final greeting."""
    line = first_line(c)
    assert line == f"220-{HOST} ESMTP\r\n".encode(), line
    c.send(b"EHLO early.test\r\n")


def metrics(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


RESULTS = ("pass", "cached", "allow", "deny", "pregreet", "dnsbl")


def _screen_total(mx, result, listener="mx"):
    m = re.search(r'^mxlb_screen_total\{listener="%s",result="%s"\} (\d+)$' % (listener, result),
                  metrics(mx), re.M)
    assert m, f"no mxlb_screen_total for {result}"
    return int(m.group(1))


def screen_total(mx, result):
    """mxlb_screen_total{result} of the test's own clients."""
    return _screen_total(mx, result) - mx.base[result]


def session_lines(mx, n):
    """The session lines of the test's own clients, once there are n."""
    def get():
        s = mx.sessions()[mx.n0:]
        return s if len(s) >= n else None
    return wait_for(get, what=f"{n} session lines")


def start(env, backends, **kw):
    """env.mxlb, and what its start-up probe (a connection from 127.0.0.1
    closed at once) left: its session line and, where it stayed long
    enough to be screened, its result, so that tests count their own
    clients only. Tests that want a 127.0.0.1 client to pass (not be
    cached after the probe) use another address or cache: 0s."""
    mx = env.mxlb(backends, **kw)
    mx.n0 = len(mx.sessions())
    mx.base = {r: _screen_total(mx, r) for r in RESULTS}
    return mx


def screened(env, backends, screen, listener=None, server=None, **kw):
    lst = {"screen": screen}
    lst.update(listener or {})
    return start(env, backends, listener=lst, server=server, **kw)


def sink_sessions(sink):
    time.sleep(0.5)  # the sink writes its counts every 200 ms
    return sink.stats().get("sessions", 0)


# ---- allow and deny ----

def test_deny_list_refused_and_closed(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"deny": ["127.0.0.2/32"], "pregreet": "2s"})
    c = client(mx.port, src="127.0.0.2")
    assert first_line(c) == f"554 5.7.1 {HOST} Access denied\r\n".encode()
    assert c.eof()
    c.close()
    assert send_mail(mx.port, src="127.0.0.3") == {}
    assert len(sink.messages()) == 1
    lines = session_lines(mx, 2)
    deny = [x for x in lines if x.get("screen") == "deny"]
    assert len(deny) == 1 and deny[0]["result"] == "rejected"
    assert deny[0]["client"].startswith("127.0.0.2:")
    assert screen_total(mx, "deny") == 1


def test_allow_list_skips_the_tests(env, dnsmasq):
    """An allowed client gets the final greeting at once (no teaser), may
    talk early, and is delivered even from a DNSBL-listed address."""
    sink = env.sink()
    dns = dnsmasq(addresses={"2.0.0.127.bl.test": "127.0.0.2"})
    mx = screened(env, [sink.port],
                  {"allow": ["127.0.0.2/32"], "deny": ["127.0.0.2/31"], "pregreet": "3s",
                   "dnsbl": {"sites": ["bl.test"]}},
                  server={"resolver": dns.resolver})
    c = client(mx.port, src="127.0.0.2")
    assert first_line(c) == f"220 {HOST} ESMTP\r\n".encode()
    assert c.cmd(b"EHLO allowed.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<a@allowed.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<b@dest.test>")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    c.send(BODY + b".\r\n")
    assert c.reply()[0] == 250
    c.cmd(b"QUIT")
    c.close()
    assert len(sink.messages()) == 1
    line = session_lines(mx, 1)[0]
    assert line["screen"] == "allow"
    assert "2.0.0.127.bl.test" not in dns.log()  # never looked up
    assert screen_total(mx, "allow") == 1


# ---- pregreet ----

def test_patient_client_delivered_after_the_teaser(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "cache": "0s"})
    c = client(mx.port)
    t0 = time.monotonic()
    assert first_line(c) == f"220-{HOST} ESMTP\r\n".encode()
    assert first_line(c) == f"220 {HOST} ESMTP\r\n".encode()
    assert time.monotonic() - t0 >= 0.9  # the wait is the test
    c.close()
    assert send_mail(mx.port) == {}
    assert len(sink.messages()) == 1
    lines = [x for x in session_lines(mx, 2) if x.get("screen") == "pass"]
    assert len(lines) == 2
    assert screen_total(mx, "pass") == 2


def test_early_talker_enforced_rejected_at_rcpt_never_routed(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "action": "enforce"})
    before = sink_sessions(sink)  # the sink's own start-up probe
    c = client(mx.port)
    talk_early(c)
    code, lines = c.reply()  # the final greeting
    assert (code, lines) == (220, [f"{HOST} ESMTP"])
    code, lines = c.reply()  # mxlb's own EHLO reply
    assert code == 250 and lines[0] == HOST
    assert c.cmd(b"MAIL FROM:<a@early.test>")[0] == 250
    code, lines = c.cmd(b"RCPT TO:<b@dest.test>")
    assert code == 550
    assert lines == ["5.7.1 Service unavailable; client [127.0.0.1] protocol error"]
    code, lines = c.cmd(b"DATA")
    assert code == 554
    assert c.cmd(b"RSET")[0] == 250
    assert c.cmd(b"DATA")[0] == 503
    assert c.cmd(b"QUIT")[0] == 221
    c.close()
    line = session_lines(mx, 1)[0]
    assert line["screen"] == "pregreet"
    assert line.get("pool") in (None, "-") and line.get("backend") in (None, "-")
    assert sink_sessions(sink) == before and sink.messages() == []
    assert screen_total(mx, "pregreet") == 1
    assert "event=screen" in mx.log() and "result=pregreet" in mx.log()


def test_early_talker_dropped(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "5s", "action": "drop"})
    c = client(mx.port)
    t0 = time.monotonic()
    talk_early(c)
    assert c.reply() == (521, [f"5.7.1 {HOST} Service unavailable"])
    assert c.eof()
    # dropped as soon as it talked, not after the 5 s wait
    assert time.monotonic() - t0 < 4.5
    c.close()
    assert send_mail(mx.port) == {}  # a patient one is delivered
    assert len(sink.messages()) == 1
    lines = session_lines(mx, 2)
    assert sorted(x["screen"] for x in lines) == ["pass", "pregreet"]
    assert [x["result"] for x in lines if x["screen"] == "pregreet"] == ["rejected"]


def test_early_talker_ignored_is_delivered_and_counted(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "action": "ignore"})
    c = client(mx.port)
    talk_early(c)
    assert c.reply()[0] == 220
    assert c.reply()[0] == 250  # the backend's EHLO reply: routed
    assert c.cmd(b"MAIL FROM:<a@early.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<b@dest.test>")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    c.send(BODY + b".\r\n")
    assert c.reply()[0] == 250
    c.cmd(b"QUIT")
    c.close()
    assert len(sink.messages()) == 1
    line = session_lines(mx, 1)[0]
    assert line["screen"] == "pregreet" and line["result"] == "relayed"
    assert screen_total(mx, "pregreet") == 1


def test_early_talker_that_hangs_up_counts(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "3s"})
    c = client(mx.port)
    talk_early(c)
    c.close()
    line = session_lines(mx, 1)[0]
    assert line["screen"] == "pregreet" and line["result"] == "client_quit"
    assert screen_total(mx, "pregreet") == 1


def test_cache_skips_the_wait_on_reconnect(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "cache": "1h"})
    assert send_mail(mx.port) == {}
    c = client(mx.port)
    # no teaser: the final greeting comes first
    assert first_line(c) == f"220 {HOST} ESMTP\r\n".encode()
    # and talking at once is no offence now
    assert c.cmd(b"EHLO client.test")[0] == 250
    c.cmd(b"QUIT")
    c.close()
    # another address is not in the cache
    c = client(mx.port, src="127.0.0.5")
    assert first_line(c) == f"220-{HOST} ESMTP\r\n".encode()
    c.close()
    # the lines of 127.0.0.1's two sessions, in order (the third, of
    # 127.0.0.5, may end before the second is logged)
    lines = [x for x in session_lines(mx, 3) if x["client"].startswith("127.0.0.1:")]
    assert [x["screen"] for x in lines] == ["pass", "cached"]
    assert screen_total(mx, "cached") == 1


def test_reload_that_changes_the_tests_voids_the_passes(env):
    """A pass holds for the tests it passed: after a reload that turns a
    longer pregreet on, the same client is tested again, not cached."""
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "cache": "1h"})
    assert send_mail(mx.port, src="127.0.0.6") == {}
    c = client(mx.port, src="127.0.0.6")
    assert first_line(c) == f"220 {HOST} ESMTP\r\n".encode()     # cached
    c.close()
    mx.rewrite(lambda d: d["listeners"][0]["screen"].update(pregreet="2s"))
    mx.reload(1)
    c = client(mx.port, src="127.0.0.6")
    assert first_line(c) == f"220-{HOST} ESMTP\r\n".encode()     # tested again
    c.close()


def test_failed_client_is_not_cached(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "cache": "1h", "action": "drop"})
    c = client(mx.port)
    talk_early(c)
    assert c.reply()[0] == 521
    c.close()
    c = client(mx.port)
    assert first_line(c) == f"220-{HOST} ESMTP\r\n".encode()  # tested again
    c.close()


def test_pipeconnect_removed_where_pregreet_runs(env):
    be = ScriptedBackend([b"PIPELINING", b"PIPECONNECT", b"X_PIPE_CONNECT"])
    try:
        plain = env.mxlb([be.port])
        pre = screened(env, [be.port], {"pregreet": "1s"})
        for mx, kept in ((plain, True), (pre, False)):
            with smtplib.SMTP("127.0.0.1", mx.port, timeout=15) as s:
                code, text = s.ehlo("client.test")
                assert code == 250
                assert (b"PIPECONNECT" in text) == kept, text
                assert (b"X_PIPE_CONNECT" in text) == kept, text
                assert b"PIPELINING" in text
    finally:
        be.close()


# ---- DNSBL ----

def test_dnsbl_listed_rejected_at_rcpt_unlisted_delivered_postfix(env, postfix, dnsmasq):
    """Through a real Postfix: the listed client's RCPT names the site and
    Postfix never sees it; the unlisted one is delivered."""
    pf = postfix()
    dns = dnsmasq(addresses={"2.0.0.127.bl.test": "127.0.0.2"})
    mx = screened(env, [pf.port], {"dnsbl": {"sites": ["bl.test*2"], "threshold": 2}},
                  server={"resolver": dns.resolver},
                  pool={"handoff": "xclient"})
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send_mail(mx.port, src="127.0.0.2")
    code, text = e.value.recipients["rcpt@dest.test"]
    assert code == 550
    assert text == b"5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test"
    assert send_mail(mx.port, src="127.0.0.3") == {}
    msgs = pf.wait_delivered(1)
    assert msgs[0][0].endswith(b"\r\nhello\r\n")
    pf.wait_idle()
    assert len(pf.clients()) == 1
    assert not any("[127.0.0.2]" in p for s in pf.sessions() for p in s["peers"] + [s["peer"]])
    assert {"2.0.0.127.bl.test", "3.0.0.127.bl.test"} <= set(dns.queries("A"))
    lines = session_lines(mx, 2)
    by = {x["client"].split(":")[0]: x for x in lines}
    assert by["127.0.0.2"]["screen"] == "dnsbl" and by["127.0.0.2"]["score"] == "2"
    assert by["127.0.0.3"]["screen"] == "pass" and by["127.0.0.3"]["score"] == "0"
    assert screen_total(mx, "dnsbl") == 1 and screen_total(mx, "pass") == 1
    assert "site=bl.test" in mx.log()


def test_dnsbl_drop(env, dnsmasq):
    sink = env.sink()
    dns = dnsmasq(addresses={"2.0.0.127.bl.test": "127.0.0.2"})
    mx = screened(env, [sink.port], {"dnsbl": {"sites": ["bl.test"]}, "action": "drop"},
                  server={"resolver": dns.resolver})
    before = sink_sessions(sink)
    c = client(mx.port, src="127.0.0.2")
    assert c.reply()[0] == 220  # DNSBL alone: the greeting comes at once
    c.send(b"EHLO listed.test\r\n")
    assert c.reply() == (521, [f"5.7.1 {HOST} Service unavailable"])
    assert c.eof()
    c.close()
    assert sink_sessions(sink) == before


def test_dnsbl_filter_and_negative_weights(env, dnsmasq):
    """bl.test answers 127.0.0.2 for .2 and .3 and 127.0.0.9 for .4, but only
    [2..4] counts; wl.test (weight -2) allow-lists .3. Threshold 2: .2
    fails, .3 (2 - 2) and .4 (filtered out) pass, .5 (listed nowhere) passes."""
    sink = env.sink()
    dns = dnsmasq(addresses={"2.0.0.127.bl.test": "127.0.0.2", "3.0.0.127.bl.test": "127.0.0.2",
                             "4.0.0.127.bl.test": "127.0.0.9", "3.0.0.127.wl.test": "127.0.0.1"})
    mx = screened(env, [sink.port],
                  {"dnsbl": {"sites": ["bl.test=127.0.0.[2..4]*2", "wl.test*-2"],
                             "threshold": 2}},
                  server={"resolver": dns.resolver})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_mail(mx.port, src="127.0.0.2")
    for src in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        assert send_mail(mx.port, src=src) == {}, src
    assert len(sink.messages()) == 3
    by = {x["client"].split(":")[0]: x for x in session_lines(mx, 4)}
    assert (by["127.0.0.2"]["screen"], by["127.0.0.2"]["score"]) == ("dnsbl", "2")
    assert (by["127.0.0.3"]["screen"], by["127.0.0.3"]["score"]) == ("pass", "0")
    assert (by["127.0.0.4"]["screen"], by["127.0.0.4"]["score"]) == ("pass", "0")
    assert (by["127.0.0.5"]["screen"], by["127.0.0.5"]["score"]) == ("pass", "0")


def test_dnsbl_with_pregreet_both_waited_for(env, dnsmasq):
    """The queries run during the pregreet wait; a listed patient client
    fails on the DNSBL, an unlisted early talker on the pregreet test."""
    sink = env.sink()
    dns = dnsmasq(addresses={"2.0.0.127.bl.test": "127.0.0.2"})
    mx = screened(env, [sink.port], {"pregreet": "1s", "dnsbl": {"sites": ["bl.test"]}},
                  server={"resolver": dns.resolver})
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send_mail(mx.port, src="127.0.0.2")
    assert b"blocked using bl.test" in e.value.recipients["rcpt@dest.test"][1]
    c = client(mx.port, src="127.0.0.1")
    talk_early(c)
    assert c.reply()[0] == 220
    assert c.reply()[0] == 250
    assert c.cmd(b"MAIL FROM:<a@x.test>")[0] == 250
    assert b"protocol error" in " ".join(c.cmd(b"RCPT TO:<b@dest.test>")[1]).encode()
    c.close()
    assert send_mail(mx.port, src="127.0.0.1") == {}
    assert len(sink.messages()) == 1


def test_dead_resolver_delays_mail_by_at_most_the_timeout(env, dead_resolver):
    sink = env.sink()
    dead = dead_resolver()
    mx = screened(env, [sink.port],
                  {"dnsbl": {"sites": ["bl.test", "other.test"], "timeout": "1s"},
                   "cache": "1h"},
                  server={"resolver": dead.resolver})
    t0 = time.monotonic()
    assert send_mail(mx.port) == {}
    took = time.monotonic() - t0
    # the decision waited for the timeout (no answer came), and no longer
    assert 0.9 <= took < 1.0 + 3.0, took
    assert len(sink.messages()) == 1
    line = session_lines(mx, 1)[0]
    assert (line["screen"], line["score"]) == ("pass", "0")
    # a pass that no site answered for is not cached: tested again
    assert send_mail(mx.port) == {}
    assert [x["screen"] for x in session_lines(mx, 2)] == ["pass", "pass"]


def proxy_client(port, src, dst="192.0.2.1"):
    """A client behind a PROXY v1 header that names src as the client."""
    import ipaddress
    c = client(port)
    fam = "TCP6" if ipaddress.ip_address(src).version == 6 else "TCP4"
    if fam == "TCP6" and ":" not in dst:
        dst = "2001:db8::25"
    c.send(f"PROXY {fam} {src} {dst} 40000 25\r\n".encode())
    return c


def test_proxy_header_client_screened_ipv4_and_ipv6(env, dnsmasq):
    """Behind an L4 balancer the client is the PROXY header's: it is what
    the lists match and the DNSBLs are asked about (IPv6 by nibbles)."""
    import ipaddress
    sink = env.sink()
    v6 = "2001:db8::7"
    v6name = ipaddress.ip_address(v6).reverse_pointer.replace(".ip6.arpa", ".bl.test")
    dns = dnsmasq(addresses={"9.2.0.192.bl.test": "127.0.0.2", v6name: "127.0.0.2"})
    mx = screened(env, [sink.port], {"dnsbl": {"sites": ["bl.test"]},
                                     "deny": ["198.51.100.0/24"]},
                  listener={"accept_proxy": True}, server={"resolver": dns.resolver})
    for src, listed in (("192.0.2.9", True), (v6, True), ("192.0.2.10", False)):
        c = proxy_client(mx.port, src)
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO proxied.test")[0] == 250
        assert c.cmd(b"MAIL FROM:<a@proxied.test>")[0] == 250
        code, lines = c.cmd(b"RCPT TO:<b@dest.test>")
        if listed:
            assert (code, lines) == (550, [f"5.7.1 Service unavailable; client [{src}] "
                                           "blocked using bl.test"])
        else:
            assert code == 250
        c.cmd(b"QUIT")
        c.close()
    c = proxy_client(mx.port, "198.51.100.7")
    assert c.reply() == (554, [f"5.7.1 {HOST} Access denied"])
    c.close()
    assert v6name in dns.queries("A") and "10.2.0.192.bl.test" in dns.queries("A")
    got = {r: screen_total(mx, r) for r in ("dnsbl", "pass", "deny")}
    assert got == {"dnsbl": 2, "pass": 1, "deny": 1}


def test_implicit_tls_screened_after_the_handshake(env, certs):
    """On an implicit-TLS listener mxlb terminates, the greeting point is
    after the handshake: the deny reply and the teaser go inside TLS."""
    from test_tls import client_ctx, context
    sink = env.sink()
    mx = start(env, [sink.port],
               listener={"tls": "implicit", "tls_context": "pub",
                         "screen": {"deny": ["127.0.0.2/32"], "pregreet": "1s"}},
               extra={"tls": {"pub": context(certs)}})
    for src, want in (("127.0.0.2", [f"554 5.7.1 {HOST} Access denied\r\n".encode()]),
                      ("127.0.0.3", [f"220-{HOST} ESMTP\r\n".encode(),
                                     f"220 {HOST} ESMTP\r\n".encode()])):
        raw = socket.create_connection(("127.0.0.1", mx.port), timeout=10,
                                       source_address=(src, 0))
        t = client_ctx(certs).wrap_socket(raw, server_hostname=HOST)
        f = t.makefile("rb")
        assert [f.readline() for _ in want] == want, src
        f.close()
        t.close()
    assert sorted(x["screen"] for x in session_lines(mx, 2)) == ["deny", "pass"]


def test_implicit_passthrough_applies_the_lists_only(env, certs):
    """Where mxlb reads no SMTP (implicit TLS passed through), a denied
    client is closed before anything is forwarded, without a reply (it
    speaks TLS first); the others go through as ever."""
    import ssl
    from test_tls import aiosmtpd_tls
    be = aiosmtpd_tls(certs, "backend.test", implicit=True)
    try:
        mx = start(env, [be.port], listener={"tls": "implicit", "tls_mode": "passthrough",
                                             "screen": {"deny": ["127.0.0.2/32"]}})
        c = client(mx.port, src="127.0.0.2")
        assert c.eof()
        c.close()
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as raw:
            t = ctx.wrap_socket(raw, server_hostname="backend.test")
            assert t.recv(100).startswith(b"220 ")
        deny = session_lines(mx, 1)[0]
        assert deny["screen"] == "deny" and deny["result"] == "rejected"
        assert deny["client"].startswith("127.0.0.2:")
    finally:
        be.stop()


# ---- STARTTLS ----

def tls_screened(env, certs, backends, screen, server=None):
    from test_tls import context
    return start(env, backends, listener={"tls": "starttls", "tls_context": "pub",
                                        "screen": screen},
                    extra={"tls": {"pub": context(certs)}}, server=server)


def test_starttls_patient_delivered_early_blocked_after_tls(env, certs):
    from test_tls import client_ctx
    sink = env.sink()
    mx = tls_screened(env, certs, [sink.port], {"pregreet": "1s"})
    assert send_mail(mx.port, starttls_ctx=client_ctx(certs)) == {}
    assert len(sink.messages()) == 1
    # an early talker: the screening ran before STARTTLS, and its verdict
    # holds inside TLS
    c = client(mx.port, src="127.0.0.7")
    talk_early(c)
    assert c.reply()[0] == 220
    code, lines = c.reply()
    assert code == 250 and "STARTTLS" in lines
    assert c.cmd(b"STARTTLS")[0] == 220
    tls = client_ctx(certs).wrap_socket(c.sock, server_hostname=HOST)
    f = tls.makefile("rb")

    def cmd(line):
        tls.sendall(line + b"\r\n")
        out = []
        while True:
            ln = f.readline()
            out.append(ln)
            if ln[3:4] != b"-":
                return int(ln[:3]), out
    code, out = cmd(b"EHLO early.test")
    assert code == 250 and not any(b"STARTTLS" in x for x in out)
    assert cmd(b"MAIL FROM:<a@early.test>")[0] == 250
    code, out = cmd(b"RCPT TO:<b@dest.test>")
    assert code == 550 and b"[127.0.0.7] protocol error" in out[0]
    assert cmd(b"QUIT")[0] == 221
    tls.close()
    assert len(sink.messages()) == 1
    lines = session_lines(mx, 2)
    early = [x for x in lines if x["client"].startswith("127.0.0.7:")][0]
    assert early["screen"] == "pregreet" and early["tls"].startswith("TLSv1")


def test_starttls_dnsbl_listed(env, certs, dnsmasq):
    from test_tls import client_ctx
    sink = env.sink()
    dns = dnsmasq(addresses={"2.0.0.127.bl.test": "127.0.0.2"})
    mx = tls_screened(env, certs, [sink.port], {"dnsbl": {"sites": ["bl.test"]}},
                      server={"resolver": dns.resolver})
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send_mail(mx.port, src="127.0.0.2", starttls_ctx=client_ctx(certs))
    assert b"blocked using bl.test" in e.value.recipients["rcpt@dest.test"][1]
    assert send_mail(mx.port, src="127.0.0.1", starttls_ctx=client_ctx(certs)) == {}
    assert len(sink.messages()) == 1


# ---- metrics and the example ----

def test_screen_total_counts_each_result(env):
    sink = env.sink()
    mx = screened(env, [sink.port], {"pregreet": "1s", "cache": "1h", "action": "drop",
                                     "allow": ["127.0.0.9/32"], "deny": ["127.0.0.8/32"]})
    assert send_mail(mx.port) == {}                   # pass
    assert send_mail(mx.port) == {}                   # cached
    assert send_mail(mx.port, src="127.0.0.9") == {}  # allow
    c = client(mx.port, src="127.0.0.8")              # deny
    assert c.reply()[0] == 554
    c.close()
    c = client(mx.port, src="127.0.0.6")              # pregreet
    talk_early(c)
    assert c.reply()[0] == 521
    c.close()
    session_lines(mx, 5)
    got = {r: screen_total(mx, r) for r in ("pass", "cached", "allow", "deny", "pregreet",
                                            "dnsbl")}
    assert got == {"pass": 1, "cached": 1, "allow": 1, "deny": 1, "pregreet": 1, "dnsbl": 0}
    assert "# TYPE mxlb_screen_total counter" in metrics(mx)


def test_mx_frontdoor_example_passes_check(certs, tmp_path):
    """The example for a port-25 MX passes --check, its certificates made by
    the test CA (as test_lifecycle does for every example)."""
    ex = TOP / "config" / "examples" / "mx-frontdoor.yaml"
    text = ex.read_text()
    for key in ("screen:", "pregreet:", "dnsbl:", "limits:", "connection_rate:",
                "bare_newline: normalize"):
        assert key in text, key
    for name, kind in set(re.findall(r"/etc/mxlb/([\w.-]+)-(rsa|ecdsa)\.crt", text)):
        crt, key = certs.leaf(name, kind)
        shutil.copy(crt, tmp_path / f"{name}-{kind}.crt")
        shutil.copy(key, tmp_path / f"{name}-{kind}.key")
    cfg = tmp_path / ex.name
    cfg.write_text(text.replace("/etc/mxlb/", f"{tmp_path}/"))
    r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
