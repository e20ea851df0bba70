"""limits.connection_rate (SPEC §9): new sessions per client key (the
address masked to ipv4_prefix), over it 421 4.7.0 and a close; the window
slides; allow-listed clients (screen.allow) are exempt; every refusal is
counted in mxlb_limit_rejects_total{listener,limit}. Clients come from
127.0.0.1 and 127.0.0.2, both loopback, so that /32 and /24 keys differ."""
import socket
import urllib.request

from conftest import Client, HOST, wait_for


class From(Client):
    """A Client whose connection comes from a given loopback address."""

    def __init__(self, port, src, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(src, 0))
        self.f = self.sock.makefile("rb")


def admitted(port, src):
    """One session from src: True when greeted (and then ended with QUIT),
    False when refused with the rate limit's 421 and closed."""
    c = From(port, src)
    code, lines = c.reply()
    if code == 220:
        assert c.cmd(b"QUIT")[0] == 221
        c.close()
        return True
    assert code == 421, (code, lines)
    assert lines == [f"4.7.0 {HOST} Error: too many connections from {src}, try again later"]
    assert c.eof()
    c.close()
    return False


def limit_rejects(mx, limit):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = f'mxlb_limit_rejects_total{{listener="mx",limit="{limit}"}} '
    lines = [ln for ln in text.splitlines() if ln.startswith(want)]
    assert len(lines) == 1, text
    return int(float(lines[0].split()[-1]))


def start(env, backends, listener):
    """mxlb without the start-up probe connection (from 127.0.0.1, which
    would count): ready once its log says it listens."""
    mx = env.mxlb(backends, listener=listener, wait=False)
    wait_for(lambda: "event=ready" in mx.log(), what="mxlb to listen")
    return mx


def rate_mxlb(env, rate, **limits):
    sink = env.sink()
    return start(env, [sink.port], {"limits": {"connection_rate": rate, **limits}})


def test_rate_per_address(env):
    mx = rate_mxlb(env, "3/1h")
    assert [admitted(mx.port, "127.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert not admitted(mx.port, "127.0.0.1")
    # another /32: a key of its own
    assert [admitted(mx.port, "127.0.0.2") for _ in range(4)] == [True, True, True, False]
    assert limit_rejects(mx, "connection_rate") == 3
    assert limit_rejects(mx, "max_sessions_per_client") == 0
    refused = [s for s in mx.sessions() if s.get("reason") == "connection_rate"]
    assert len(refused) == 3 and all(s["result"] == "rejected" for s in refused)
    assert mx.stop() == 0


def test_rate_per_prefix(env):
    """ipv4_prefix 24: 127.0.0.1 and 127.0.0.2 are one client."""
    mx = rate_mxlb(env, "3/1h", ipv4_prefix=24)
    assert admitted(mx.port, "127.0.0.1") and admitted(mx.port, "127.0.0.2")
    assert admitted(mx.port, "127.0.0.1")
    assert not admitted(mx.port, "127.0.0.2")
    assert not admitted(mx.port, "127.0.0.1")
    assert limit_rejects(mx, "connection_rate") == 2
    assert mx.stop() == 0


def test_allow_listed_clients_are_exempt(env):
    sink = env.sink()
    mx = start(env, [sink.port], {"limits": {"connection_rate": "1/1h"},
                                  "screen": {"allow": ["127.0.0.2/32"]}})
    assert [admitted(mx.port, "127.0.0.1") for _ in range(2)] == [True, False]
    assert all(admitted(mx.port, "127.0.0.2") for _ in range(5))
    assert limit_rejects(mx, "connection_rate") == 1
    assert mx.stop() == 0


def test_window_slides(env):
    """Refused now, the same client gets in again once the window has moved
    on (a refused attempt does not count)."""
    mx = rate_mxlb(env, "2/1s")
    assert admitted(mx.port, "127.0.0.1") and admitted(mx.port, "127.0.0.1")
    assert not admitted(mx.port, "127.0.0.1")
    wait_for(lambda: admitted(mx.port, "127.0.0.1"), what="the window to slide")
    assert mx.stop() == 0


def test_rate_counts_sessions_that_deliver(env):
    """Sessions that go on to deliver count like any other; the limit's
    421 comes before the greeting, so nothing reaches a backend."""
    sink = env.sink()
    mx = start(env, [sink.port], {"limits": {"connection_rate": "2/1h"}})
    for i in range(2):
        c = From(mx.port, "127.0.0.1")
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO client.test")[0] == 250
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
        assert c.cmd(b"Subject: %d\r\n\r\nhello\r\n." % i)[0] == 250
        assert c.cmd(b"QUIT")[0] == 221
        c.close()
    assert not admitted(mx.port, "127.0.0.1")
    assert len(wait_for(lambda: len(sink.messages()) == 2 and sink.messages())) == 2
    assert mx.stop() == 0
