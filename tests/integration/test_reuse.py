"""Backend session reuse (pools[].reuse, SPEC §10): a clean QUIT parks the
backend connection (RSET), the next session routed to that backend takes
it (XCLIENT, or the client's EHLO), and nothing of one client ever carries
over to the next. Real components: a real Postfix behind an xclient pool
(postfix.py), an aiosmtpd backend of our own that offers AUTH and logs
what it believes of each connection, and mxlb-sink (handoff none, TLS).

One mxlb worker, so that every session sees the same parked connections;
before each next session the test waits until mxlb reports the connection
parked (mxlb_backend_idle), so what is reused does not depend on timing."""
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import Client, Proc, free_port, wait_port, wait_for
from postfix import postfix  # noqa: F401  (the fixture)

RECEIVED = re.compile(rb"Received: from (\S+) \((\S+) \[([^\]]+)\]\)")


class SrcClient(Client):
    """A raw client whose socket is bound to a source address first."""

    def __init__(self, port, src="127.0.0.1", timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(src, 0))
        self.f = self.sock.makefile("rb")


def metric(mx, name, backend="b0"):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^%s\{pool="main",backend="%s"\} (\d+)$' % (name, backend), text, re.M)
    assert m, (name, text[-2000:])
    return int(m.group(1))


def status_idle(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/status", timeout=5) as r:
        st = json.loads(r.read())
    return [b["idle"] for b in st["pools"][0]["backends"]]


def wait_idle(mx, n=1):
    wait_for(lambda: metric(mx, "mxlb_backend_idle") == n, what=f"{n} parked connection(s)")


def send_message(port, src="127.0.0.1", helo="client.test", body=None, before=(),
                 quit=True):
    """One session: EHLO, the lines of `before`, a message, QUIT. Returns
    the replies after the greeting and EHLO, in order."""
    c = SrcClient(port, src)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO " + helo.encode())[0] == 250
    got = [c.cmd(line) for line in before]
    body = body or f"Subject: from {helo}\r\n\r\nhello from {src}\r\n".encode()
    got.append(c.cmd(b"MAIL FROM:<a@client.test>"))
    got.append(c.cmd(b"RCPT TO:<b@dest.test>"))
    got.append(c.cmd(b"DATA"))
    c.send(body + b".\r\n")
    got.append(c.reply())
    if quit:
        got.append(c.cmd(b"QUIT"))
        assert c.eof()
    c.close()
    return got


REUSE = {"max_idle": 4}
ONE_WORKER = {"workers": 1}


# ---- a real Postfix behind an xclient pool ----


def test_postfix_xclient_reuse_keeps_each_clients_identity(env, postfix):
    pf = postfix()
    mx = env.mxlb([pf.port], pool={"handoff": "xclient", "reuse": REUSE}, server=ONE_WORKER)
    clients = [("127.0.0.1", "first.test"), ("127.0.0.2", "second.test"),
               ("127.0.0.3", "third.test")]
    for i, (src, helo) in enumerate(clients):
        got = send_message(mx.port, src, helo)
        assert [g[0] for g in got] == [250, 250, 354, 250, 221], got
        assert got[-1][1] == ["2.0.0 Bye"]
        wait_idle(mx)
    msgs = pf.wait_delivered(3, timeout=20)
    seen = []
    for raw, _ in msgs:
        m = RECEIVED.match(raw)
        assert m, raw[:300]
        helo, _name, addr = (x.decode() for x in m.groups())
        # the body says who sent it: its Received: header must say the same
        src = re.search(rb"hello from (\S+)\r\n", raw).group(1).decode()
        seen.append((addr, helo))
        assert (addr, helo) == next((s, h) for s, h in clients if s == src), raw[:300]
    assert sorted(seen) == sorted(clients)
    # one connection carried the three sessions; each XCLIENT named its client.
    # smtpd's lines reach the maillog through postlogd, after mxlb got the
    # reply to the last RSET: wait for that line before reading the rest
    wait_for(lambda: sum(1 for s in pf.sessions() for c in s["commands"] if c.upper() == "RSET") == 3,
             what="smtpd's third RSET in the maillog")
    log = pf.maillog()
    assert len(re.findall(r"postfix/smtpd\[\d+\]: connect from ", log)) == 1, log[-3000:]
    [sess] = pf.sessions()
    xclients = [c for c in sess["commands"] if c.startswith("XCLIENT")]
    assert [re.search(r"ADDR=(\S+)", x).group(1) for x in xclients] == [
        "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert [re.search(r"HELO=(\S+)", x).group(1) for x in xclients] == [
        "first.test", "second.test", "third.test"]
    # mxlb answered the QUITs itself and reset the session before parking
    assert not any(c.upper() == "QUIT" for c in sess["commands"])
    assert sum(1 for c in sess["commands"] if c.upper() == "RSET") == 3
    assert metric(mx, "mxlb_backend_reused_total") == 2
    assert status_idle(mx) == [1]
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/", timeout=5) as r:
        assert '<td class="n idle">1</td>' in r.read().decode()  # the status page too
    assert all(s["result"] == "relayed" for s in mx.sessions() if s.get("backend") == "b0")
    # at stop, the parked connection is closed with QUIT
    assert mx.stop() == 0
    pf.wait_log(r"disconnect from .* quit=1", timeout=10)


def test_postfix_idle_timeout_quits_the_parked_connection(env, postfix):
    pf = postfix()
    mx = env.mxlb([pf.port], pool={"handoff": "xclient",
                                   "reuse": {"max_idle": 2, "idle_timeout": "1s"}},
                  server=ONE_WORKER)
    send_message(mx.port)
    pf.wait_delivered(1)
    # once idle_timeout passes, mxlb says QUIT and Postfix logs the end
    pf.wait_log(r"disconnect from .* rset=1 quit=1", timeout=15)
    wait_idle(mx, 0)
    send_message(mx.port, "127.0.0.2", "later.test")
    pf.wait_delivered(2)
    assert metric(mx, "mxlb_backend_reused_total") == 0


def test_postfix_restarted_behind_a_parked_connection(env, postfix):
    """The backend goes away while a connection is parked: the next session
    still delivers, on a new connection, and the client sees nothing."""
    pf = postfix()
    mx = env.mxlb([pf.port], pool={"handoff": "xclient", "reuse": REUSE}, server=ONE_WORKER)
    send_message(mx.port, "127.0.0.1", "before.test")
    wait_idle(mx)
    pf.wait_delivered(1)
    pf.stop()
    pf2 = postfix(port=pf.port)
    # mxlb notices the parked connection close, and drops it at once
    wait_idle(mx, 0)
    got = send_message(mx.port, "127.0.0.2", "after.test")
    assert [g[0] for g in got] == [250, 250, 354, 250, 221], got
    [(raw, _)] = pf2.wait_delivered(1)
    assert RECEIVED.match(raw).group(3) == b"127.0.0.2"


# ---- an aiosmtpd backend that offers AUTH and logs what it believes ----

BACKEND = r'''
import asyncio, json, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

port, log_path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = open(log_path, "a", buffering=1)
conns = [0]

def ev(**k):
    out.write(json.dumps(k) + "\n")

class Server(SMTP):
    def connection_made(self, transport):
        conns[0] += 1
        self.conn_no = conns[0]
        self.ehlos = 0
        ev(ev="connect", conn=self.conn_no)
        super().connection_made(transport)

    def connection_lost(self, exc):
        ev(ev="lost", conn=self.conn_no)
        super().connection_lost(exc)

    async def smtp_EHLO(self, arg):
        self.ehlos += 1
        ev(ev="ehlo", conn=self.conn_no, name=arg, auth=bool(self.session.authenticated))
        if mode == "close2" and self.ehlos == 2:
            await self.push("421 4.3.0 closing now")
            self.transport.close()
            return
        await super().smtp_EHLO(arg)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        if mode == "slow":
            await asyncio.sleep(0.5)
        ev(ev="data", conn=server.conn_no, auth=bool(session.authenticated),
           login=session.login_data and str(session.login_data), helo=session.host_name)
        return "250 2.0.0 OK"

def auth(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)

class C(Controller):
    def factory(self):
        return Server(self.handler, authenticator=auth, auth_require_tls=False,
                      hostname="aiosmtpd.test")

c = C(Handler(), hostname="127.0.0.1", port=port)
c.start()
ev(ev="ready")
import signal, threading
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
c.stop()
'''


class Backend:
    def __init__(self, env, mode="plain"):
        self.port = free_port()
        d = env._name("aiosmtpd")
        d.mkdir()
        script = d / "backend.py"
        script.write_text(BACKEND)
        self.log_path = d / "events"
        self.proc = Proc([sys.executable, str(script), str(self.port), str(self.log_path), mode],
                         d / "log")
        env.procs.append(self.proc)
        wait_port(self.port)

    def conns(self):
        """The connections that got an EHLO, in order (probes of the
        port get none)."""
        out = []
        for e in self.events("ehlo"):
            if e["conn"] not in out:
                out.append(e["conn"])
        return out

    def lost(self, conn):
        return any(e["conn"] == conn for e in self.events("lost"))

    def events(self, kind=None):
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return []
        evs = [json.loads(x) for x in lines if x]
        return [e for e in evs if kind is None or e["ev"] == kind]


def auth_plain():
    import base64
    return b"AUTH PLAIN " + base64.b64encode(b"\0user\0secret")


def test_authenticated_session_is_never_parked(env):
    be = Backend(env)
    mx = env.mxlb([be.port], pool={"reuse": REUSE}, server=ONE_WORKER)
    got = send_message(mx.port, helo="authed.test", before=[auth_plain()])
    assert got[0][0] == 235, got
    assert got[-1][0] == 221
    # the authenticated connection was closed (QUIT passed), never parked
    [first] = be.conns()
    wait_for(lambda: be.lost(first), what="the authenticated connection to close")
    assert metric(mx, "mxlb_backend_idle") == 0
    send_message(mx.port, "127.0.0.2", "plain.test")
    wait_idle(mx)
    send_message(mx.port, "127.0.0.3", "plain2.test")
    wait_idle(mx)
    data = be.events("data")
    first, second = be.conns()
    assert [(d["conn"], d["auth"]) for d in data] == [
        (first, True), (second, False), (second, False)], data
    assert [d["helo"] for d in data] == ["authed.test", "plain.test", "plain2.test"]
    # and the reused connection's new EHLO found it unauthenticated
    assert [e["auth"] for e in be.events("ehlo") if e["conn"] == second] == [False, False]
    assert metric(mx, "mxlb_backend_reused_total") == 1


@pytest.mark.parametrize("line", [b"FOOBAR", b"STARTTLS", b"XCLIENT ADDR=192.0.2.1",
                                  b"QUIT now"], ids=["unknown", "starttls", "xclient", "quit-arg"])
def test_unsafe_command_is_never_parked(env, line):
    be = Backend(env)
    mx = env.mxlb([be.port], pool={"reuse": REUSE}, server=ONE_WORKER)
    got = send_message(mx.port, before=[line])
    assert got[0][0] >= 500, got  # refused by the backend (mxlb hides STARTTLS/XCLIENT)
    assert got[-1][0] == 221
    [first] = be.conns()
    wait_for(lambda: be.lost(first), what="the connection to close")
    send_message(mx.port, "127.0.0.2", "next.test")
    wait_idle(mx)
    assert len(be.conns()) == 2
    assert metric(mx, "mxlb_backend_reused_total") == 0


def test_pipelined_session_parks_once_every_reply_came(env):
    """MAIL, RCPT, DATA, the message and QUIT in one write, the backend slow
    to answer the message: mxlb's 221 comes after the backend's 250, and
    only then is the connection parked."""
    be = Backend(env, "slow")
    mx = env.mxlb([be.port], pool={"reuse": REUSE}, server=ONE_WORKER)
    for src, helo in (("127.0.0.1", "pipe1.test"), ("127.0.0.2", "pipe2.test")):
        c = SrcClient(mx.port, src)
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO " + helo.encode())[0] == 250
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n"
               b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        got = c.replies_until_eof()
        c.close()
        assert [g[0] for g in got] == [250, 250, 354, 250, 221], got
        assert got[3][1] == ["2.0.0 OK"] and got[4][1] == ["2.0.0 Bye"]
        wait_idle(mx)
    [conn] = be.conns()
    assert [(d["conn"], d["helo"]) for d in be.events("data")] == [
        (conn, "pipe1.test"), (conn, "pipe2.test")]
    assert metric(mx, "mxlb_backend_reused_total") == 1


def test_max_uses(env):
    be = Backend(env)
    mx = env.mxlb([be.port], pool={"reuse": {"max_idle": 4, "max_uses": 2}}, server=ONE_WORKER)
    for i in range(4):
        send_message(mx.port, helo=f"s{i}.test")
        if i % 2 == 0:
            wait_idle(mx)
        else:  # its second session: QUIT instead of parked
            wait_for(lambda: be.lost(be.conns()[-1]), what="max_uses QUIT")
    a, b = be.conns()
    assert [d["conn"] for d in be.events("data")] == [a, a, b, b]
    assert metric(mx, "mxlb_backend_reused_total") == 2


def test_parked_connection_failing_when_taken_is_invisible(env):
    """The backend answers the reused connection's EHLO with 421 and
    closes: the session goes on over a new connection, unseen."""
    be = Backend(env, "close2")
    mx = env.mxlb([be.port], pool={"reuse": REUSE}, server=ONE_WORKER)
    send_message(mx.port, helo="one.test")
    wait_idle(mx)
    got = send_message(mx.port, "127.0.0.2", "two.test")
    assert [g[0] for g in got] == [250, 250, 354, 250, 221], got
    data = be.events("data")
    a, b = be.conns()
    assert [(d["conn"], d["helo"]) for d in data] == [(a, "one.test"), (b, "two.test")]
    assert be.lost(a)
    assert metric(mx, "mxlb_backend_reused_total") == 0


def test_drained_backend_drops_its_parked_connections(env):
    token = "reuse-tests-0123456789abcdef"
    be = Backend(env)
    admin = free_port()
    mx = env.mxlb([be.port], pool={"reuse": REUSE},
                  server={**ONE_WORKER, "admin": {"listen": f"127.0.0.1:{admin}",
                                                  "token": token}})
    mx.admin_port = admin
    send_message(mx.port)
    wait_idle(mx)
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/backends/main/b0/drain",
                                 method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {token}"})
    urllib.request.urlopen(req, timeout=5).read()
    wait_idle(mx, 0)
    [conn] = be.conns()
    wait_for(lambda: be.lost(conn), what="the parked connection to close")


# ---- mxlb-sink: handoff none, plain and TLS ----


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_handoff_none_reuse_with_mxlb_sink(env, certs, tls):
    extra, backend = None, {}
    if tls:
        crt, key = certs.leaf("sink.test", "ecdsa")
        sink = env.sink("--tls-cert", str(crt), "--tls-key", str(key))
        extra = {"tls": {"back": {"ca": str(certs.ca), "server_name": "sink.test"}}}
        backend = {"tls": "starttls", "tls_context": "back"}
    else:
        sink = env.sink()
    mx = env.mxlb([{"address": f"127.0.0.1:{sink.port}", **backend}],
                  pool={"handoff": "none", "reuse": REUSE}, server=ONE_WORKER, extra=extra)
    for i in range(3):
        got = send_message(mx.port, helo=f"n{i}.test")
        assert [g[0] for g in got] == [250, 250, 354, 250, 221], got
        wait_idle(mx)
    msgs = wait_for(lambda: len(sink.messages()) == 3 and sink.messages())
    assert [m[1]["helo"] for m in msgs] == ["n0.test", "n1.test", "n2.test"]
    if tls:
        assert all(m[1]["tls"] in ("TLSv1.2", "TLSv1.3") for m in msgs), msgs
    # one connection carried them: mxlb's one source port
    assert len({m[1]["peer_port"] for m in msgs}) == 1, msgs
    assert metric(mx, "mxlb_backend_reused_total") == 2


def test_reuse_refused_with_proxy_handoff(env, tmp_path):
    from conftest import MXLB
    cfg = {"server": {"hostname": "mx.test"},
           "listeners": [{"name": "mx", "listen": ["127.0.0.1:2599"], "pool": "p"}],
           "pools": [{"name": "p", "handoff": "proxy_v2", "reuse": {"max_idle": 1},
                      "backends": [{"name": "b", "address": "127.0.0.1:2600"}]}]}
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([str(MXLB), "-c", str(path), "--check"], capture_output=True, text=True)
    assert r.returncode != 0 and "reuse cannot work with handoff proxy_v2" in r.stderr, r.stderr
    cfg["pools"][0]["handoff"] = "none"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([str(MXLB), "-c", str(path), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    time.sleep(0)  # nothing started
