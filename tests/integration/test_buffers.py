"""The receive buffers (core/buf.c): provided-buffer rings consumed
incrementally (IOU_PBUF_RING_INC), so one 64 KB buffer holds the slices of
many receives of many sessions, each released on its own. If an offset or
a reference count went wrong, a slice would be overwritten while still
queued for the backend, or a buffer handed back twice: the messages below
would arrive changed. One worker, so that every session shares the rings."""
import hashlib
import random
import socket
import threading
import time

import pytest

from conftest import wait_for
from test_tls import client_ctx, tls_mxlb


def body(seed, size):
    """A message of about size octets, unique to seed, some lines dotted."""
    out = bytearray(f"Subject: buffers {seed}\r\n\r\n".encode())
    line = hashlib.sha256(seed.encode()).hexdigest().encode()
    i = 0
    while len(out) < size:
        out += (b"." if i % 5 == 0 else b"") + line[: 8 + i % 50] + f" {i}\r\n".encode()
        i += 1
    return bytes(out)


def transactions(msgs):
    out = b""
    for m in msgs:
        out += b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n"
        out += m.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    return out


class Raw:
    """A client over a plain or TLS socket, reading replies line by line."""

    def __init__(self, port, ctx=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(s, server_hostname="mx.test") if ctx else s
        self.f = self.sock.makefile("rb")

    def reply(self):
        while True:
            line = self.f.readline()
            assert line, "the server closed"
            if line[3:4] != b"-":
                return int(line[:3])

    def close(self):
        self.f.close()
        self.sock.close()


def run_sessions(port, n, per, ctx=None, dribble=True):
    """n sessions at once, each pipelining per small messages (and one of
    40 KB, so that slices straddle buffers) in pieces of 1 to 200 octets;
    returns every message sent."""
    sent, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(n)

    def one(i):
        rnd = random.Random(i)
        try:
            c = Raw(port, ctx)
            assert c.reply() == 220
            c.sock.sendall(b"EHLO client.test\r\n")
            assert c.reply() == 250
            msgs = [body(f"s{i}-m{k}", rnd.randint(1, 600)) for k in range(per)]
            msgs.insert(per // 2, body(f"s{i}-big", 40 * 1024))
            data = transactions(msgs)
            barrier.wait(timeout=60)
            off = 0
            while off < len(data):
                step = rnd.randint(1, 200) if dribble else len(data)
                c.sock.sendall(data[off:off + step])
                off += step
            for _ in msgs:
                assert [c.reply() for _ in range(4)] == [250, 250, 354, 250]
            c.sock.sendall(b"QUIT\r\n")
            assert c.reply() == 221
            c.close()
            with lock:
                sent.extend(msgs)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"session {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors[:5]
    return sent


def check_saved(sink, sent):
    got = wait_for(lambda: (lambda m: m if len(m) >= len(sent) else None)(sink.messages()),
                   timeout=30, what="every message saved")
    assert sorted(raw for raw, _ in got) == sorted(sent)


@pytest.mark.parametrize("dribble", [True, False], ids=["dribbled", "one-write"])
def test_many_small_pipelined_messages(env, dribble):
    sinks = [env.sink(), env.sink()]
    mx = env.mxlb([s.port for s in sinks], server={"workers": 1})
    sent = run_sessions(mx.port, 40, 25, dribble=dribble)
    wait_for(lambda: sum(len(s.messages()) for s in sinks) >= len(sent), timeout=30,
             what="every message saved")
    got = [raw for s in sinks for raw, _ in s.messages()]
    assert sorted(got) == sorted(sent)
    assert mx.stop() == 0


def test_many_small_pipelined_messages_tls(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit", server={"workers": 1})
    sent = run_sessions(mx.port, 20, 20, ctx=client_ctx(certs))
    check_saved(sink, sent)
    assert mx.stop() == 0


def test_held_sessions_share_buffers(env):
    """Sessions held after RCPT cost little: before incremental consumption
    each receive took a 16 KB buffer and touched a page of its own, so
    300 held sessions cost about 10 KB each on a fresh process."""
    sink = env.sink()
    mx = env.mxlb([sink.port], server={"workers": 1})
    pid = mx.proc.pid
    maps = open(f"/proc/{pid}/maps").read()
    if "asan" in maps or "libasan" in maps:
        pytest.skip("ASan's allocator: RSS says nothing")

    def rss():
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    before = rss()
    n, held = 300, []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", mx.port), timeout=30)
        f = s.makefile("rb")
        held.append((s, f))
        s.sendall(f"EHLO c{i}.client.test\r\nMAIL FROM:<a@client.test>\r\n"
                  "RCPT TO:<b@dest.test>\r\n".encode())
    for s, f in held:
        codes = []
        while len(codes) < 4:
            line = f.readline()
            assert line
            if line[3:4] != b"-":
                codes.append(int(line[:3]))
        assert codes == [220, 250, 250, 250]
    time.sleep(0.5)
    grown = (rss() - before) * 1024 / n
    for s, f in held:
        f.close()
        s.close()
    assert grown < 4096, f"{grown:.0f} B per held session"
    assert mx.stop() == 0
