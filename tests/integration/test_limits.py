"""accept_proxy, max_sessions and max_sessions_per_client."""
import socket
import struct
import time

import pytest

from conftest import Client, HOST, deliver, wait_for


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
    assert code == 421 and lines[0].startswith("4.7.0")
    assert c.eof()
    for h in held:
        h.cmd(b"QUIT")
    wait_for(lambda: deliver(mx.port) == {}, what="a free slot")
    assert mx.stop() == 0
