"""mxlb-bench, the load generator, against mxlb-sink (and once through
mxlb): what it reports is what arrived, errors are counted by reply code,
the exit status says whether every message was accepted, PIPELINING puts
MAIL/RCPT/DATA in one write, --hold holds, TLS works both ways."""
import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BUILD, SINK, free_port, wait_for

BENCH = BUILD / "mxlb-bench"


def bench(port, *args, timeout=60):
    """Runs mxlb-bench against 127.0.0.1:port; (exit status, stdout, stderr)."""
    r = subprocess.run([str(BENCH), "--target", f"127.0.0.1:{port}", "--quiet", *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def bench_json(port, *args, status=0):
    rc, out, err = bench(port, "--json", *args)
    assert rc == status, err
    return json.loads(out)


def probed(sink):
    """The sink's session count once env.sink()'s probe connection is in
    its stats file (rewritten every 200 ms)."""
    return wait_for(lambda: sink.stats().get("sessions"), what="the probe session counted")


def sink_has_tls():
    return b"not supported yet" not in subprocess.run([str(SINK), "--help"],
                                                      capture_output=True).stdout


def test_messages_arriving_are_those_reported(env):
    sink = env.sink()
    sessions0 = probed(sink)
    j = bench_json(sink.port, "--sessions", "12", "--concurrency", "4", "--messages", "3",
                   "--size", "3k")
    assert (j["sessions"], j["messages"], j["failed_messages"], j["errors"]) == (12, 36, 0, {})
    msgs = wait_for(lambda: (m := sink.messages()) and len(m) == 36 and m, what="36 messages")
    ids = set()
    for eml, env_ in msgs:
        assert len(eml) == 3 * 1024
        assert env_["mail_from"] == "bench@client.test" and env_["rcpt_to"] == ["rcpt@dest.test"]
        assert env_["helo"] == "bench.client.test"
        assert re.search(rb"^Date: ", eml, re.M) and re.search(rb"^From: ", eml, re.M)
        ids.add(re.search(rb"^Message-ID: (<[^>]+>)\r$", eml, re.M).group(1))
    assert len(ids) == 36
    wait_for(lambda: sink.stats()["sessions"] - sessions0 == 12, what="12 sessions counted")


def test_json_fields(env):
    sink = env.sink()
    j = bench_json(sink.port, "--sessions", "20", "--concurrency", "5", "--messages", "2")
    for key in ("sessions", "messages", "elapsed_s", "sessions_per_s", "messages_per_s",
                "mb_per_s", "setup_us", "message_us", "errors", "failed_messages"):
        assert key in j, key
    assert j["setup_us"]["count"] == 20 and j["message_us"]["count"] == 40
    for h in (j["setup_us"], j["message_us"]):
        assert 0 < h["p50"] <= h["p90"] <= h["p99"] <= h["p999"] <= h["max"]
    assert j["messages_per_s"] > 0 and j["mb_per_s"] > 0 and j["elapsed_s"] > 0


def test_table_by_default(env):
    sink = env.sink()
    rc, out, _ = bench(sink.port, "--sessions", "3")
    assert rc == 0
    assert re.search(r"^messages\s+3 accepted, 0 failed", out, re.M), out
    assert re.search(r"^\s+message\s+\d+us", out, re.M) and "errors          none" in out


def test_exact_sizes_and_dot_stuffing(env):
    rc, _, err = bench(free_port(), "--size", "1")
    assert rc == 2
    hdr = int(re.search(r"below the (\d+) octets", err).group(1))
    sink = env.sink()
    sizes = [hdr, hdr + 1, hdr + 2, hdr + 3, hdr + 79, hdr + 80, 1000, 64 * 1024 + 7]
    for size in sizes:
        assert bench_json(sink.port, "--sessions", "1", "--size", str(size))["messages"] == 1
    msgs = wait_for(lambda: (m := sink.messages()) and len(m) == len(sizes) and m, what="messages")
    assert [len(eml) for eml, _ in msgs] == sizes
    big = msgs[-1][0]
    assert big.endswith(b"\r\n")
    lines = big.split(b"\r\n")[:-1]
    assert max(len(line) for line in lines) <= 76
    assert any(line.startswith(b".") for line in lines)  # unstuffed by the sink: sent stuffed


def test_refused_greeting_exit_1_counted_by_code(env):
    sink = env.sink("--fail-greeting", "554")
    j = bench_json(sink.port, "--sessions", "5", "--messages", "2", status=1)
    assert j["errors"] == {"554": 5}
    assert (j["sessions"], j["sessions_failed"], j["messages"], j["failed_messages"]) == (0, 5, 0, 10)


def test_too_big_refused_session_goes_on(env):
    sink = env.sink("--max-size", "2k")
    j = bench_json(sink.port, "--sessions", "3", "--messages", "2", "--size", "4k", status=1)
    assert j["errors"] == {"552": 6}
    assert (j["sessions"], j["messages"], j["failed_messages"]) == (3, 0, 6)
    assert bench_json(sink.port, "--sessions", "2", "--size", "1k")["messages"] == 2


def test_sink_small_window_and_mss(env):
    """--mss and --rcvbuf reach the accepted connections: the client's
    segments shrink to the MSS the sink offered, and a sink that reads
    nothing (stopped) takes far less before the client's writes block;
    a message still goes through whole."""
    def taken_while_stopped(sink):
        sink.proc.signal(signal.SIGSTOP)
        try:
            with socket.socket() as c:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                c.settimeout(10)
                c.connect(("127.0.0.1", sink.port))  # the kernel accepts for it
                c.setblocking(False)
                taken, deadline = 0, time.monotonic() + 2
                while time.monotonic() < deadline:
                    try:
                        taken += c.send(b"x" * 65536)
                    except BlockingIOError:
                        time.sleep(0.05)  # the window may open a little more
                return taken
        finally:
            sink.proc.signal(signal.SIGCONT)

    small, usual = env.sink("--rcvbuf", "4k", "--mss", "536"), env.sink()
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as c:
        assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= 536
    with socket.create_connection(("127.0.0.1", usual.port), timeout=10) as c:
        assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) > 536
    a, b = taken_while_stopped(small), taken_while_stopped(usual)
    assert a * 4 < b, (a, b)
    j = bench_json(small.port, "--sessions", "2", "--size", "300k")
    assert (j["messages"], j["errors"]) == (2, {})
    for args in (["--mss", "10"], ["--mss", "40000"], ["--rcvbuf", "4x"]):
        r = subprocess.run([str(SINK), *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and args[0] in r.stderr, (args, r.stderr)


class ScriptedServer:
    """A one-connection-at-a-time SMTP server that records each recv()."""

    def __init__(self, pipelining=True):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.pipelining = pipelining
        self.chunks = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.session(conn)

    def session(self, conn):
        conn.sendall(b"220 scripted ESMTP\r\n")
        buf, data = b"", False
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            if not data:
                self.chunks.append(chunk)
            buf += chunk
            while True:
                if data:
                    end = buf.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    buf, data = buf[end + 5:], False
                    conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                if b"\r\n" not in buf:
                    break
                line, buf = buf.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    ext = b"250-PIPELINING\r\n" if self.pipelining else b""
                    conn.sendall(b"250-scripted\r\n" + ext + b"250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    data = True
                    # the message starts right after DATA's line end
                    buf = b"\r\n" + buf
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_pipelining_sends_mail_rcpt_data_in_one_write(pipelining):
    srv = ScriptedServer()
    try:
        args = ["--sessions", "1", "--messages", "2"] + (["--pipelining"] if pipelining else [])
        assert bench_json(srv.port, *args)["messages"] == 2
    finally:
        srv.close()
    mails = [c for c in srv.chunks if c.startswith(b"MAIL FROM:")]
    assert len(mails) == 2
    for c in mails:
        if pipelining:
            assert re.fullmatch(rb"MAIL FROM:<[^>]+> *\r\nRCPT TO:<[^>]+>\r\nDATA\r\n", c), c
        else:
            assert c.count(b"\r\n") == 1, c


def test_pipelining_not_offered_falls_back():
    srv = ScriptedServer(pipelining=False)
    try:
        rc, out, err = bench(srv.port, "--json", "--sessions", "1", "--pipelining")
    finally:
        srv.close()
    assert rc == 0 and json.loads(out)["messages"] == 1
    assert "does not advertise PIPELINING" in err
    assert all(c.count(b"\r\n") == 1 for c in srv.chunks if c.startswith(b"MAIL"))


def test_pipelining_against_sink(env):
    sink = env.sink()
    j = bench_json(sink.port, "--pipelining", "--sessions", "10", "--concurrency", "5",
                   "--messages", "5")
    assert j["messages"] == 50 and j["pipelining"]
    wait_for(lambda: sink.stats().get("messages") == 50, what="50 messages")


def test_hold_until_hold_time(env):
    sink = env.sink()
    sessions0 = probed(sink)
    t0 = time.time()
    rc, out, err = bench(sink.port, "--hold", "--concurrency", "20", "--hold-time", "1s", "--json")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "held 20"
    j = json.loads(lines[1])
    assert (j["mode"], j["held"], j["sessions_failed"], j["setup_us"]["count"]) == ("hold", 20, 0, 20)
    assert time.time() - t0 >= 1.0
    wait_for(lambda: sink.stats()["sessions"] - sessions0 == 20, what="20 sessions counted")
    assert sink.stats()["messages"] == 0


def test_hold_until_sigint(env):
    sink = env.sink()
    p = subprocess.Popen([str(BENCH), "--target", f"127.0.0.1:{sink.port}", "--hold",
                          "--concurrency", "30", "--threads", "2", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "held 30\n"
        time.sleep(0.3)
        assert p.poll() is None  # still holding
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert re.search(r"^held\s+30 sessions established, 0 failed", out, re.M), out


def test_hold_failures_counted(env):
    sink = env.sink("--fail-greeting", "421")
    rc, out, _ = bench(sink.port, "--hold", "--concurrency", "4", "--json")
    assert rc == 1
    assert out.splitlines()[0] == "held 0"
    assert json.loads(out.splitlines()[1])["errors"] == {"421": 4}


def test_timeout_when_the_server_never_greets():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # the kernel completes the handshakes; nobody speaks
        t0 = time.time()
        j = bench_json(s.getsockname()[1], "--sessions", "2", "--timeout", "500ms", status=1)
    assert j["errors"] == {"timeout": 2} and j["failed_messages"] == 2
    assert time.time() - t0 < 5


def test_connect_refused_counted():
    j = bench_json(free_port(), "--sessions", "3", status=1)
    assert j["errors"] == {"connect": 3}


def test_duration_bounds_the_run(env):
    sink = env.sink()
    t0 = time.time()
    j = bench_json(sink.port, "--duration", "1s", "--concurrency", "4")
    assert 1.0 <= time.time() - t0 < 10
    assert j["sessions"] > 10 and j["failed_messages"] == 0
    wait_for(lambda: sink.stats().get("messages") == j["messages"], what="every message")


def test_sessions_and_duration_both_bound(env):
    sink = env.sink()
    j = bench_json(sink.port, "--duration", "30s", "--sessions", "7")
    assert j["sessions"] == 7 and j["elapsed_s"] < 10


@pytest.mark.parametrize("args", [[], ["--target", "127.0.0.1"], ["--size", "10x"],
                                  ["--tls", "ssl"], ["--duration", "5"], ["--sessions", "0"],
                                  ["--hold-time", "1s"], ["--sni", "x.test"], ["--bogus"]])
def test_usage_errors_exit_2(args):
    full = args if not args or args[0] == "--target" else ["--target", "127.0.0.1:25", *args]
    r = subprocess.run([str(BENCH), *full], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (args, r.stderr)
    assert r.stderr


def test_through_mxlb(env):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([a.port, b.port], server={"workers": 1})
    j = bench_json(mx.port, "--sessions", "40", "--concurrency", "8", "--messages", "2",
                   "--size", "10k", "--pipelining")
    assert (j["messages"], j["errors"]) == (80, {})
    total = lambda: a.stats().get("messages", 0) + b.stats().get("messages", 0)
    wait_for(lambda: total() == 80, what="80 messages at the sinks")


@pytest.mark.skipif(not sink_has_tls(), reason="mxlb-sink has no TLS yet")
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls_verified(env, certs, mode):
    crt, key = certs.leaf("sink.test")
    sink = env.sink("--tls-cert", str(crt), "--tls-key", str(key),
                    *(["--implicit-tls"] if mode == "implicit" else []))
    j = bench_json(sink.port, "--tls", mode, "--tls-ca", str(certs.ca), "--sni", "sink.test",
                   "--sessions", "6", "--concurrency", "3", "--messages", "2", "--size", "20k")
    assert (j["messages"], j["tls_resumed"], j["errors"]) == (12, 0, {})
    msgs = wait_for(lambda: (m := sink.messages()) and len(m) == 12 and m, what="12 messages")
    assert all(len(eml) == 20 * 1024 for eml, _ in msgs)
    # a name the certificate does not carry fails the handshake
    j = bench_json(sink.port, "--tls", mode, "--tls-ca", str(certs.ca), "--sni", "other.test",
                   "--sessions", "2", status=1)
    assert j["errors"] == {"tls": 2}


@pytest.mark.skipif(not sink_has_tls(), reason="mxlb-sink has no TLS yet")
def test_tls_resumption_only_when_asked(env, certs):
    crt, key = certs.leaf("sink.test")
    sink = env.sink("--tls-cert", str(crt), "--tls-key", str(key), "--implicit-tls")
    j = bench_json(sink.port, "--tls", "implicit", "--sessions", "10", "--concurrency", "1")
    assert j["tls_resumed"] == 0 and j["messages"] == 10
    j = bench_json(sink.port, "--tls", "implicit", "--sessions", "10", "--concurrency", "1",
                   "--resume")
    assert j["tls_resumed"] == 9 and j["messages"] == 10


def test_starttls_not_offered(env):
    sink = env.sink()
    j = bench_json(sink.port, "--tls", "starttls", "--sessions", "2", status=1)
    assert j["errors"] == {"tls": 2}


def test_sigint_stops_a_load_run_with_status_1(env):
    sink = env.sink()
    p = subprocess.Popen([str(BENCH), "--target", f"127.0.0.1:{sink.port}", "--sessions", "0",
                          "--duration", "60s", "--concurrency", "4", "--json", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sink.stats().get("messages", 0) > 20, what="some messages")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, err
    j = json.loads(out)
    assert j["interrupted"] and j["messages"] > 20 and j["elapsed_s"] < 30


def test_verbose_traces_the_dialogue(env):
    sink = env.sink()
    rc, _, err = bench(sink.port, "--sessions", "1", "--verbose")
    assert rc == 0
    states = re.findall(r"\] (\w+) -> (\w+)", err)
    assert [b for _, b in states] == ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "BODY", "QUIT",
                                      "DONE"]
    assert "<- 250 2.0.0 Ok: queued as" in err


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_target(env):
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port6 = s.getsockname()[1]
    sink = env.sink("--listen", f"[::1]:{port6}")
    r = subprocess.run([str(BENCH), "--target", f"[::1]:{port6}", "--sessions", "3", "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["messages"] == 3
    msgs = wait_for(lambda: (m := sink.messages()) and len(m) == 3 and m, what="3 messages")
    assert {e["peer_addr"] for _, e in msgs} == {"::1"}
