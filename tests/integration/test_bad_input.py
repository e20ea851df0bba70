"""Every bad input of SPEC §4 gets its reply and a log line, and mxlb goes
on serving others: each test ends with a normal delivery."""
import os
import socket
import struct
import time

import pytest

from conftest import Client, HOST, deliver, wait_for


@pytest.fixture
def setup(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], listener={"timeouts": {"command": "1s", "idle": "1s",
                                                       "connect": "1s", "backend_reply": "2s"}})
    yield env, sink, mx
    # still serving, and a clean exit (no leak under SANITIZE=1)
    assert deliver(mx.port) == {}
    assert mx.stop() == 0


def test_command_phase_replies(setup):
    env, sink, mx = setup
    c = Client(mx.port)
    assert c.reply() == (220, [f"{HOST} ESMTP"])
    assert c.cmd(b"NOOP")[0] == 250
    assert c.cmd(b"RSET")[0] == 250
    assert c.cmd(b"HELP")[0] == 214
    assert c.cmd(b"MAIL FROM:<a@b>") == (503, ["5.5.1 Error: send HELO/EHLO first"])
    assert c.cmd(b"DATA")[0] == 503
    assert c.cmd(b"FOO bar") == (500, ["5.5.2 Error: command not recognized"])
    assert c.cmd(b"EHLO")[0] == 501
    assert c.cmd(b"QUIT")[0] == 221
    assert c.eof()
    assert mx.sessions()[-1]["result"] == "client_quit"


def test_long_line_and_bare_lf(setup):
    env, sink, mx = setup
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"NOOP " + b"x" * 600)[0] == 500
    assert c.cmd(b"NOOP " + b"x" * 505) == (250, ["2.0.0 OK"])  # 512 with CRLF is fine
    c.send(b"NOOP\n")
    assert c.reply() == (500, ["5.5.2 Error: bare <LF> received"])
    assert c.cmd(b"NOOP")[0] == 250
    assert "error=\"line too long\"" in mx.log() and "error=\"bare LF\"" in mx.log()


def test_ten_errors_close_with_421(setup):
    env, sink, mx = setup
    c = Client(mx.port)
    c.reply()
    for _ in range(9):
        assert c.cmd(b"BOGUS")[0] == 500
    assert c.cmd(b"BOGUS") == (421, [f"4.7.0 {HOST} Error: too many errors"])
    assert c.eof()
    assert mx.sessions()[-1]["result"] == "rejected"


def test_binary_garbage(setup):
    env, sink, mx = setup
    c = Client(mx.port)
    c.reply()
    c.send(os.urandom(4000) + b"\n" + os.urandom(3000).replace(b"\n", b"\r\n") + b"\r\n" * 12)
    codes = []
    while True:
        code, _ = c.reply()
        if code is None:
            break
        codes.append(code)
    assert codes[-1] == 421 and all(x == 500 for x in codes[:-1])


def test_command_timeout(setup):
    env, sink, mx = setup
    c = Client(mx.port)
    c.reply()
    assert c.reply() == (421, [f"4.4.2 {HOST} Error: timeout exceeded"])
    assert c.eof()
    assert mx.sessions()[-1]["result"] == "timeout"


def test_idle_timeout_closes_relaying_session(setup):
    env, sink, mx = setup
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO idle.test")[0] == 250
    assert c.eof(timeout=10)
    assert wait_for(lambda: mx.sessions() and mx.sessions()[-1])["reason"] == "idle timeout"


@pytest.mark.parametrize("phase", ["greeting", "command", "connecting", "data"])
def test_client_disconnects(setup, phase):
    env, sink, mx = setup
    if phase == "connecting":
        slow = env.sink("--greeting-delay", "500ms")
        mx2 = env.mxlb([slow.port])
        c = Client(mx2.port)
        c.reply()
        c.send(b"EHLO gone.test\r\n")
        c.close()
        time.sleep(1)
        assert deliver(mx2.port) == {}
        assert mx2.stop() == 0
        return
    c = Client(mx.port)
    if phase != "greeting":
        c.reply()
        c.send(b"NOOP\r\n")
    if phase == "data":
        c.reply()
        c.cmd(b"EHLO d.test")
        c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        [c.reply() for _ in range(3)]
        c.send(b"half a message")
    # a reset, not a polite close
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    wait_for(lambda: any(s["result"] in ("client_quit", "relayed") for s in mx.sessions()))
    time.sleep(0.2)
    assert sink.messages() == []  # half a message is never delivered


def test_backend_disconnects_during_relay(setup):
    env, sink, mx = setup
    other = env.sink()
    mx2 = env.mxlb([other.port])
    c = Client(mx2.port)
    c.reply()
    assert c.cmd(b"EHLO b.test")[0] == 250
    other.proc.stop()
    assert c.eof()
    wait_for(lambda: any(s.get("backend") == "b0" and s["result"] == "relayed"
                         for s in mx2.sessions()))
    assert mx2.stop() == 0


def test_backend_stops_during_greeting_wait(setup):
    env, sink, mx = setup
    slow = env.sink("--greeting-delay", "5s")
    mx2 = env.mxlb([slow.port], pool={"retries": 0},
                   listener={"timeouts": {"backend_reply": "500ms"}})
    c = Client(mx2.port)
    c.reply()
    assert c.cmd(b"EHLO s.test")[0] == 421
    assert "reading backend greeting" in mx2.log()
    assert mx2.stop() == 0
