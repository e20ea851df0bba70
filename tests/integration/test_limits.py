"""accept_proxy, max_sessions and max_sessions_per_client."""
import socket
import struct
import time

import pytest

from conftest import Client, HOST, deliver, wait_for
from test_rate import From, limit_rejects


def v2_header(src, sport, dst, dport):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + b"\x21\x11" + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n",
    v2_header("198.51.100.7", 40000, "192.0.2.1", 25),
])
def test_accept_proxy_takes_the_client_address(env, header):
    sink = env.sink("--xclient")
    mx = env.mxlb([sink.port], pool={"handoff": "xclient"}, listener={"accept_proxy": True})
    c = Client(mx.port)
    c.send(header)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO behind.lb")[0] == 250
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    [c.reply() for _ in range(3)]
    assert c.cmd(b"x\r\n.")[0] == 250
    c.cmd(b"QUIT")
    e = wait_for(sink.messages)[0][1]
    assert e["xclient"]["ADDR"] == "198.51.100.7" and e["xclient"]["PORT"] == "40000"
    wait_for(lambda: "client=198.51.100.7:40000" in mx.log(), what="the session line")
    assert mx.stop() == 0


@pytest.mark.parametrize("first", [b"EHLO x\r\n", b"PROXY TCP4 nonsense\r\n", b""])
def test_accept_proxy_missing_or_bad_header_closes_silently(env, first):
    sink = env.sink()
    mx = env.mxlb([sink.port], listener={"accept_proxy": True,
                                         "timeouts": {"proxy_header": "500ms"}})
    c = Client(mx.port)
    c.send(first)
    assert c.eof()  # no greeting, no reply
    assert mx.stop() == 0


def test_max_sessions(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], server={"max_sessions": 2})
    held = [Client(mx.port) for _ in range(2)]
    for h in held:
        assert h.reply()[0] == 220
    c = Client(mx.port)
    assert c.reply() == (421, [f"4.7.0 {HOST} Too many connections, try again later"])
    assert c.eof()
    assert limit_rejects(mx, "max_sessions") == 1
    held[0].cmd(b"QUIT")
    wait_for(lambda: deliver(mx.port) == {}, what="a free slot")
    assert mx.stop() == 0


def test_max_sessions_per_client(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], listener={"max_sessions_per_client": 2})
    held = [Client(mx.port) for _ in range(2)]
    for h in held:
        assert h.reply()[0] == 220
    c = Client(mx.port)
    code, lines = c.reply()
    assert (code, lines) == (421, [f"4.7.0 {HOST} Error: too many sessions from 127.0.0.1, "
                                   "try again later"])
    assert c.eof()
    assert limit_rejects(mx, "max_sessions_per_client") == 1
    for h in held:
        h.cmd(b"QUIT")
    wait_for(lambda: deliver(mx.port) == {}, what="a free slot")
    assert mx.stop() == 0


@pytest.mark.parametrize("prefix, third_refused", [(32, False), (24, True)])
def test_max_sessions_per_client_counts_by_the_key(env, prefix, third_refused):
    """limits.ipv4_prefix makes the key of max_sessions_per_client too:
    with /24, 127.0.0.1 and 127.0.0.2 share one count of 2."""
    sink = env.sink()
    mx = env.mxlb([sink.port], listener={"max_sessions_per_client": 2,
                                         "limits": {"ipv4_prefix": prefix}})
    held = [From(mx.port, "127.0.0.1"), From(mx.port, "127.0.0.2")]
    for h in held:
        assert h.reply()[0] == 220
    c = From(mx.port, "127.0.0.1")
    code, lines = c.reply()
    if third_refused:
        assert code == 421 and lines[0].startswith("4.7.0 ") and c.eof()
        assert limit_rejects(mx, "max_sessions_per_client") == 1
    else:
        assert code == 220 and c.cmd(b"QUIT")[0] == 221
        assert limit_rejects(mx, "max_sessions_per_client") == 0
    c.close()
    for h in held:
        assert h.cmd(b"QUIT")[0] == 221
    # the slots come back: two more fit again
    quits = 2 if third_refused else 3
    wait_for(lambda: len([s for s in mx.sessions() if s.get("reason") == "quit"]) == quits,
             what="the held sessions to end")
    again = [From(mx.port, "127.0.0.1"), From(mx.port, "127.0.0.2")]
    assert [a.reply()[0] for a in again] == [220, 220]
    for a in again:
        a.cmd(b"QUIT")
    assert mx.stop() == 0


def test_buffer_starvation_then_closes_and_stop(env):
    """Every receive buffer held by sessions whose backend stopped reading:
    new clients starve, time out and are closed; once the backend goes,
    everything is released and SIGTERM ends mxlb at once (a lingering
    close of a starved connection once cut the starved list)."""
    import threading

    from conftest import free_port, wait_port

    stalled = []

    def backend(port, stop):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        srv.bind(("127.0.0.1", port))
        srv.listen(1024)
        srv.settimeout(0.2)

        def serve(c):
            try:
                converse(c)
            except OSError:
                pass  # mxlb reset it (a session it ended): nothing to check here

        def converse(c):
            f = c.makefile("rb")
            c.sendall(b"220 stall.test ESMTP\r\n")
            while not stop.is_set():
                line = f.readline()
                if not line:
                    return
                if line.upper().startswith(b"EHLO"):
                    c.sendall(b"250-stall.test\r\n250 8BITMIME\r\n")
                elif line.upper().startswith(b"DATA"):
                    c.sendall(b"354 go\r\n")
                    stop.wait(60)  # never reads again: mxlb's buffers fill
                    return
                else:
                    c.sendall(b"250 ok\r\n")

        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            stalled.append(c)
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        srv.close()

    bport, stop = free_port(), threading.Event()
    bt = threading.Thread(target=backend, args=(bport, stop), daemon=True)
    bt.start()
    wait_port(bport)
    mx = env.mxlb([bport], server={"workers": 1},
                  listener={"timeouts": {"command": "1s", "idle": "60s", "connect": "1s"}})
    big = (b"y" * 78 + b"\r\n") * 50000  # 4 MB
    fillers = []

    def fill():
        try:
            s = socket.create_connection(("127.0.0.1", mx.port), timeout=60)
            fillers.append(s)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO fill.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
            for cmd in (b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<c@d.test>\r\n", b"DATA\r\n"):
                s.sendall(cmd)
                f.readline()
            s.sendall(big)
        except OSError:
            pass

    threads = [threading.Thread(target=fill, daemon=True) for _ in range(300)]
    for t in threads:
        t.start()
    time.sleep(6)
    # two more clients: greeted, then starved of buffers; their command
    # timeout closes them with a 421 and a lingering close
    late = [Client(mx.port) for _ in range(2)]
    for c in late:
        assert c.reply()[0] == 220
    time.sleep(2.5)
    stop.set()  # the backend goes: every buffer comes back
    for c in stalled:
        c.close()
    for s in fillers:
        s.close()
    for c in late:
        c.close()
    time.sleep(2)
    # a hang here ends in SIGKILL after 15 s: a non-zero status
    assert mx.stop() == 0
