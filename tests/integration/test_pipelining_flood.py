"""A client that pipelines a flood of commands before EHLO: one that reads
gets every reply (mxlb stops taking commands while its replies wait to be
sent, and goes on as they are read); one that never reads is closed in
bounded time and memory, and other clients do not notice."""
import os
import socket
import threading
import time

import pytest

from conftest import deliver, wait_for

N = 100_000
NOOP_REPLY = b"250 2.0.0 OK\r\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sanitized(pid):
    """Whether mxlb runs under ASan, whose quarantine keeps freed memory."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def holds_conn(pid, port, peer_port):
    """Whether process pid still has the socket of 127.0.0.1:port with the
    peer 127.0.0.1:peer_port open."""
    local, remote = f"0100007F:{port:04X}", f"0100007F:{peer_port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inodes.add(fields[9])
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def read_reply(sock, buf):
    """One reply from sock (buf: bytes already read); returns (code, buf)."""
    sock.settimeout(10)
    for _ in range(1000):
        lines = buf.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if line[3:4] != b"-":
                return int(line[:3]), b"\r\n".join(lines[i + 1:])
        chunk = sock.recv(65536)
        assert chunk, "mxlb closed the connection"
        buf += chunk
    raise AssertionError(f"no complete reply in {len(buf)} bytes")


def test_pipelined_noops_before_ehlo_all_answered_then_delivered(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])
    sock = socket.create_connection(("127.0.0.1", mx.port), timeout=10)
    code, rest = read_reply(sock, b"")
    assert code == 220 and rest == b""

    want = len(NOOP_REPLY) * N
    got = bytearray()
    done = threading.Event()

    def reader():
        try:
            while len(got) < want:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)
        except OSError:
            pass
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    start = time.monotonic()
    sock.sendall(b"NOOP\r\n" * N)
    assert done.wait(15), f"{len(got)} of {want} reply bytes after 15 s"
    took = time.monotonic() - start
    assert len(got) == want, f"{len(got)} of {want} reply bytes (connection closed?)"
    assert bytes(got) == NOOP_REPLY * N  # exactly N replies, each a 250
    print(f"{N} NOOP replies in {took:.2f} s")

    # the session goes on as if nothing had happened
    sock.sendall(b"EHLO flood.test\r\n")
    code, buf = read_reply(sock, b"")
    assert code == 250
    for line, expect in ((b"MAIL FROM:<a@flood.test>", 250), (b"RCPT TO:<b@dest.test>", 250),
                         (b"DATA", 354), (b"Subject: flood\r\n\r\nafter the noops\r\n.", 250),
                         (b"QUIT", 221)):
        sock.sendall(line + b"\r\n")
        code, buf = read_reply(sock, buf)
        assert code == expect, (line, code)
    sock.close()
    msgs = wait_for(sink.messages, what="the message at the sink")
    assert b"after the noops" in msgs[0][0]
    line = wait_for(lambda: [s for s in mx.sessions() if s.get("ehlo") == "flood.test"],
                    what="the session line")[0]
    assert line["result"] == "relayed"
    # the NOOPs of the command phase count as bytes in
    assert int(line["bytes_in"]) >= len(b"NOOP\r\n") * N
    assert int(line["bytes_out"]) >= want
    assert mx.stop() == 0


@pytest.mark.parametrize("verb", [b"NOOP", b"HELP"])
def test_flood_never_read_is_closed_in_bounded_time_and_memory(env, verb):
    """NOOP replies (1.4 MB) may all fit in the kernel's socket buffers;
    HELP replies (6.1 MB) cannot, so mxlb itself must stop and hold."""
    sink = env.sink()
    mx = env.mxlb([sink.port], listener={"timeouts": {"command": "2s", "connect": "1s",
                                                      "backend_reply": "2s"}})
    pid = mx.proc.pid
    deliver(mx.port)  # warm up: the buffers a normal session touches
    wait_for(lambda: len(mx.sessions()) >= 2, what="the warm-up session line")
    rss0 = rss_kb(pid)
    probe = socket.create_connection(("127.0.0.1", mx.port), timeout=10)
    assert read_reply(probe, b"")[0] == 220
    probe.sendall(verb + b"\r\n")
    reply_len = len(probe.recv(4096))  # one short line: one segment
    probe.close()

    flood = socket.socket()
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing anyway
    flood.connect(("127.0.0.1", mx.port))
    flood_port = flood.getsockname()[1]
    flood.settimeout(4)
    sent = [0]

    def writer():
        data = memoryview((verb + b"\r\n") * N)
        try:
            while sent[0] < len(data):
                sent[0] += flood.send(data[sent[0]:])
        except OSError:
            pass  # blocked past the timeout, or reset: either is fine

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(0.5)
    assert holds_conn(pid, mx.port, flood_port)

    # meanwhile other clients are served as usual
    start = time.monotonic()
    assert deliver(mx.port) == {}
    assert time.monotonic() - start < 3
    assert len(sink.messages()) == 2

    peak = [rss_kb(pid)]

    def flood_line():
        peak[0] = max(peak[0], rss_kb(pid))
        return [s for s in mx.sessions() if s.get("ehlo") == "-" and s["result"] != "client_quit"]

    line = wait_for(flood_line, timeout=10, what="the flood session to end")[0]
    assert line["result"] in ("timeout", "error"), line
    assert int(line["bytes_in"]) > 0, line
    if verb == b"HELP":
        # it stopped answering: far fewer replies went out than were asked for
        assert int(line["bytes_out"]) < reply_len * N * 0.9, (reply_len, line)
    # its connection is gone too, within the lingering close's bound (5 s)
    wait_for(lambda: not holds_conn(pid, mx.port, flood_port), timeout=8,
             what="the flood connection to close")
    t.join(5)
    grew = (peak[0] - rss0) / 1024
    print(f"flood: {sent[0]} bytes sent, session {line['result']} ({line['reason']}), "
          f"bytes_in={line['bytes_in']} bytes_out={line['bytes_out']}, "
          f"RSS {rss0 / 1024:.1f} MB -> peak {peak[0] / 1024:.1f} MB")
    bound = 64 if sanitized(pid) else 16
    assert grew < bound, f"mxlb grew by {grew:.1f} MB"
    flood.close()
    assert deliver(mx.port) == {}
    assert mx.stop() == 0
