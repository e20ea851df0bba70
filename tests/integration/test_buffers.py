"""The receive buffers (core/buf.c): provided-buffer rings consumed
incrementally (IOU_PBUF_RING_INC), so one 64 KB buffer holds the slices of
many receives of many sessions, each released on its own. If an offset or
a reference count went wrong, a slice would be overwritten while still
queued for the backend, or a buffer handed back twice: the messages below
would arrive changed. One worker, so that every session shares the rings."""
import hashlib
import random
import signal
import smtplib
import socket
import threading
import time

import pytest

from conftest import deliver, wait_for
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

    def __init__(self, port, ctx=None, sndbuf=None):
        s = socket.socket()
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.settimeout(60)
        s.connect(("127.0.0.1", port))
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



@pytest.mark.parametrize("handoff", ["none", "xclient"])
def test_a_hung_backend_does_not_starve_the_worker(env, handoff):
    """A backend that stops reading in the middle of DATA (hung on a full
    disk, say) leaves its sessions' bytes in mxlb's send queues. Those must
    not keep the worker's receive rings: when each stuck session held the
    provided buffers its queue pointed into, 150 of them emptied both rings
    and every other session of the worker (another pool, a healthy backend)
    waited for a buffer. relay: copy, and the xclient handoff, whose
    tracker always copies (relay: auto would splice the bulk of the plain
    case and hold no buffer at all). One worker, so that all share the
    rings."""
    args = ["--xclient"] if handoff == "xclient" else []
    hung_sink, good_sink = env.sink(*args), env.sink(*args)
    pools = [{"name": name, "handoff": handoff, "health": {"check": "none"},
              "backends": [{"name": name, "address": f"127.0.0.1:{sink.port}"}]}
             for name, sink in (("main", good_sink), ("hung", hung_sink))]
    mx = env.mxlb([], pools=pools, server={"workers": 1},
                  listener={"routes": [{"ehlo": "stuck*", "pool": "hung"}], "relay": "copy",
                            "timeouts": {"connect": "1s", "backend_reply": "2s",
                                         "idle": "60s"}})
    n, each = 150, 5 << 20  # the kernel's socket buffers take about 4 MB
    stuck = []
    for i in range(n):
        c = Raw(mx.port, sndbuf=64 * 1024)
        c.sock.sendall(f"EHLO stuck{i}.client.test\r\n".encode())
        assert c.reply() == 220 and c.reply() == 250
        c.sock.sendall(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
        assert [c.reply() for _ in range(3)] == [250, 250, 354]
        stuck.append(c)
    hung_sink.proc.signal(signal.SIGSTOP)
    try:
        block = (b"x" * 998 + b"\r\n") * 64
        pushed = [0] * n

        def push(i):
            s = stuck[i].sock
            s.settimeout(3)
            try:
                while pushed[i] < each:
                    s.sendall(block)
                    pushed[i] += len(block)
            except OSError:
                pass  # blocked: mxlb stopped reading it (backpressure)

        threads = [threading.Thread(target=push, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        start = time.monotonic()
        assert deliver(mx.port) == {}
        took = time.monotonic() - start
        assert len(good_sink.messages()) == 1
        print(f"{n} stuck sessions, {sum(pushed) >> 20} MB pushed; a delivery took {took:.2f} s")
    finally:
        hung_sink.proc.signal(signal.SIGCONT)
    for c in stuck:
        c.close()
    assert mx.stop() == 0


def test_a_hung_backend_does_not_starve_tls_sessions(env, certs):
    """The same for TLS sessions, whose plaintext lives in mxlb's own 16 KB
    buffers (at most 8192 per worker), not in the rings: each stuck
    session's send queue kept three or more of them, so 3000 TLS sessions
    behind a hung backend took them all, and about 300 TLS sessions of the
    worker then failed ("No buffer space available"). The hung sink offers
    a small window and MSS, so that each needs only a few hundred KB pushed
    to fill mxlb's socket buffers. Once the backend goes on, the sessions
    whose queued bytes went to the heap deliver them unchanged."""
    import resource
    import selectors
    import ssl

    n, finish = 3000, 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    hung_sink, good_sink = env.sink("--rcvbuf", "4k", "--mss", "536"), env.sink()
    pools = [{"name": name, "health": {"check": "none"},
              "backends": [{"name": name, "address": f"127.0.0.1:{sink.port}"}]}
             for name, sink in (("main", good_sink), ("hung", hung_sink))]
    mx = tls_mxlb(env, certs, [], tls="implicit", pools=pools, server={"workers": 1},
                  listener={"routes": [{"ehlo": "stuck*", "pool": "hung"}],
                            "timeouts": {"connect": "1s", "backend_reply": "2s",
                                         "idle": "120s"}})
    ctx = client_ctx(certs)
    stuck = []
    block = (b"x" * 998 + b"\r\n") * 16
    try:
        for i in range(n):
            c = Raw(mx.port, ctx, sndbuf=16 * 1024)
            assert c.reply() == 220
            c.sock.sendall(f"EHLO stuck{i}.client.test\r\n".encode()
                           + b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
            assert [c.reply() for _ in range(4)] == [250, 250, 250, 354]
            c.blocks, c.pending = 0, False
            stuck.append(c)
        hung_sink.proc.signal(signal.SIGSTOP)
        sel = selectors.DefaultSelector()
        for c in stuck:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_WRITE, c)
        live = len(stuck)
        quiet, deadline = time.monotonic(), time.monotonic() + 90
        while live and time.monotonic() - quiet < 2 and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                c = key.data
                try:
                    key.fileobj.send(block)  # all of it or nothing (no partial TLS writes)
                    c.blocks, c.pending = c.blocks + 1, False
                    quiet = time.monotonic()
                except (ssl.SSLWantWriteError, BlockingIOError):
                    c.pending = True  # the same block goes again
                except OSError:
                    sel.unregister(key.fileobj)  # mxlb closed it: counted below
                    c.blocks, live = -1, live - 1
        sel.close()
        failed = len(stuck) - live
        start = time.monotonic()
        with smtplib.SMTP_SSL("127.0.0.1", mx.port, context=ctx, timeout=30) as s:
            s.ehlo("client.test")
            assert s.sendmail("a@client.test", ["b@dest.test"], b"Subject: t\r\n\r\nhi\r\n") == {}
        took = time.monotonic() - start
        pushed = sum(c.blocks for c in stuck if c.blocks > 0) * len(block)
        print(f"{n} stuck TLS sessions, {pushed >> 20} MB pushed, {failed} closed; "
              f"a delivery took {took:.2f} s")
        assert len(good_sink.messages()) == 1
        assert failed == 0
        assert "No buffer space" not in mx.log()
        for c in stuck[finish:]:
            c.close()
        hung_sink.proc.signal(signal.SIGCONT)
        for c in stuck[:finish]:
            c.sock.settimeout(60)
            if c.pending:
                c.sock.sendall(block)
                c.blocks += 1
            c.sock.sendall(b".\r\n")
            assert c.reply() == 250
        got = wait_for(lambda: (lambda m: m if len(m) >= finish else None)(hung_sink.messages()),
                       timeout=30, what="the finished messages saved")
        assert sorted(raw for raw, _ in got) == sorted(block * c.blocks for c in stuck[:finish])
    finally:
        hung_sink.proc.signal(signal.SIGCONT)
        for c in stuck:
            c.close()
    assert mx.stop() == 0
