"""mxlb-sink over TLS: STARTTLS and --implicit-tls with real clients
(smtplib, openssl s_client, swaks) and with a raw client that controls
every write, so the tests can pipeline and put a PROXY header and a
ClientHello in one write."""
import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import SINK, Client, free_port, wait_for

NAME = "sink.test"
FROM, TO = "a@client.test", "b@dest.test"


def tls_args(certs, kind="ecdsa"):
    crt, key = certs.leaf(NAME, kind)
    return ["--tls-cert", str(crt), "--tls-key", str(key)]


class NamedContext(ssl.SSLContext):
    """Verifies the sink as NAME although smtplib connects to 127.0.0.1."""

    def wrap_socket(self, sock, server_hostname=None, **kw):
        return super().wrap_socket(sock, server_hostname=NAME, **kw)

    def wrap_bio(self, incoming, outgoing, server_hostname=None, **kw):
        return super().wrap_bio(incoming, outgoing, server_hostname=NAME, **kw)


def client_ctx(certs, **kw):
    ctx = NamedContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.load_verify_locations(cafile=str(certs.ca))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def big_body(n_lines=180000):
    lines = [b"Subject: big over TLS", b"", b".leading dot", b"..two dots", b"8bit: \xc3\xa9"]
    lines += [b"%07d %s" % (i, os.urandom(24).hex().encode()) for i in range(n_lines)]
    lines += [b".", b". not the end", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


def saved(sink, n=1):
    msgs = wait_for(lambda: len(sink.messages()) >= n and sink.messages(), what="the messages")
    assert len(msgs) == n
    return msgs


class MemTLS:
    """A TLS client over memory BIOs on a blocking socket: the test decides
    what goes into each write (e.g. a PROXY header and the ClientHello)."""

    def __init__(self, sock, ctx, first=b"", hold_finished=False):
        """first goes out with the ClientHello; with hold_finished the
        client's last flight waits for the first send(), to share its write."""
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out)
        self.buf = self.held = b""
        self.pos = 0
        while True:
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            if done and hold_finished:
                self.held = self.out.read()
                return
            self.sock.sendall(first + self.out.read())
            first = b""
            if done:
                return
            self._fill()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed during TLS")
        self.inc.write(data)

    def send(self, data):
        self.obj.write(data)
        self.sock.sendall(self.held + self.out.read())
        self.held = b""

    def _readline(self):
        while (end := self.buf.find(b"\n", self.pos)) < 0:
            try:
                self.buf = self.buf[self.pos:] + self.obj.read(65536)
                self.pos = 0
            except ssl.SSLWantReadError:
                self._fill()
        line, self.pos = self.buf[self.pos:end + 1], end + 1
        return line

    def reply(self):
        lines = []
        while True:
            line = self._readline()
            lines.append(line[4:].rstrip(b"\r\n").decode("latin-1"))
            if line[3:4] != b"-":
                return int(line[:3]), lines


class TLSClient(Client):
    """conftest's raw Client, over a socket already wrapped in TLS."""

    def __init__(self, tls_sock):
        self.sock = tls_sock
        self.f = tls_sock.makefile("rb")


def raw_starttls(c, certs):
    """STARTTLS on a Client (after its EHLO); the same session, now TLS."""
    code, lines = c.cmd(b"STARTTLS")
    assert (code, lines) == (220, ["2.0.0 Ready to start TLS"])
    return TLSClient(client_ctx(certs).wrap_socket(c.sock))


# ---- STARTTLS


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_smtplib_starttls_verified(env, certs, kind):
    sink = env.sink(*tls_args(certs, kind))
    body = b"Subject: over TLS\r\n\r\n.dot\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.ehlo("tls.test")
        assert s.has_extn("starttls")
        s.starttls(context=client_ctx(certs))
        version, cipher = s.sock.version(), s.sock.cipher()[0]
        s.ehlo("tls.test")
        assert not s.has_extn("starttls")  # RFC 3207: not offered again
        assert s.has_extn("pipelining") and s.has_extn("chunking")
        assert s.sendmail(FROM, [TO], body) == {}
    (raw, meta), = saved(sink)
    assert raw == body
    assert (meta["tls"], meta["cipher"], meta["sni"]) == (version, cipher, NAME)
    assert version == "TLSv1.3"
    assert meta["helo"] == "tls.test"
    assert sink.proc.stop() == 0


def test_tls12_rsa_records_version_and_cipher(env, certs):
    sink = env.sink(*tls_args(certs, "rsa"))
    ctx = client_ctx(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.starttls(context=ctx)
        cipher = s.sock.cipher()[0]
        assert s.sendmail(FROM, [TO], b"Subject: 1.2\r\n\r\nx\r\n") == {}
    (_, meta), = saved(sink)
    assert (meta["tls"], meta["cipher"]) == ("TLSv1.2", cipher)


def test_10mb_over_starttls_and_bdat(env, certs):
    sink = env.sink(*tls_args(certs))
    body = big_body()
    assert len(body) > 10_000_000
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=120) as s:
        s.starttls(context=client_ctx(certs))
        s.ehlo("big.test")
        assert s.sendmail(FROM, [TO], body, mail_options=["BODY=8BITMIME"]) == {}
    # the same octets as BDAT chunks, all pipelined in one stream
    c = Client(sink.port, timeout=120)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO bdat.test")[0] == 250
    t = raw_starttls(c, certs)
    chunks = [body[i:i + 3_000_000] for i in range(0, len(body), 3_000_000)]
    out = b"EHLO bdat.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
    for i, ch in enumerate(chunks):
        out += b"BDAT %d%s\r\n" % (len(ch), b" LAST" if i == len(chunks) - 1 else b"") + ch
    out += b"QUIT\r\n"
    t.send(out)
    codes = [t.reply()[0] for _ in range(3 + len(chunks) + 1)]
    assert codes == [250] * (3 + len(chunks)) + [221]
    assert t.eof()
    msgs = saved(sink, 2)
    assert [m[0] == body for m in msgs] == [True, True]
    assert [m[1]["body"] for m in msgs] == ["data", "bdat"]
    assert all(m[1]["tls"] == "TLSv1.3" for m in msgs)
    assert sink.proc.stop() == 0


def test_pipelined_after_starttls_is_never_executed(env, certs):
    sink = env.sink(*tls_args(certs))
    c = Client(sink.port)
    assert c.reply()[0] == 220
    # RFC 2920 3.1: STARTTLS ends a group; what follows in the write is dropped
    c.send(b"EHLO before.test\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<evil@y>\r\nNOOP\r\n")
    code, lines = c.reply()
    assert code == 250 and "STARTTLS" in lines
    code, lines = c.reply()
    assert (code, lines) == (220, ["2.0.0 Ready to start TLS"])
    t = TLSClient(client_ctx(certs).wrap_socket(c.sock))
    # the session starts over: no HELO, no transaction
    code, lines = t.cmd(b"MAIL FROM:<a@x>")
    assert code == 503 and "HELO/EHLO" in lines[0]
    code, lines = t.cmd(b"EHLO after.test")
    assert code == 250 and "STARTTLS" not in lines and lines[0] == "sink.local"
    assert t.cmd(b"MAIL FROM:<a@x>")[0] == 250  # not "nested MAIL"
    assert t.cmd(b"RCPT TO:<b@y>")[0] == 250
    assert t.cmd(b"STARTTLS") == (554, ["5.5.1 Error: TLS already active"])
    assert t.cmd(b"DATA")[0] == 354
    t.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert t.reply()[0] == 250
    assert t.cmd(b"QUIT")[0] == 221
    assert t.eof()
    (raw, meta), = saved(sink)
    assert meta["helo"] == "after.test" and meta["rcpt_to"] == ["b@y"] and meta["tls"]
    # nothing of the dropped commands ever answered: the sink got no MAIL from evil
    assert "evil" not in raw.decode() + str(meta)


def test_replies_wait_for_a_slow_reader(env, certs):
    sink = env.sink(*tls_args(certs), "--implicit-tls")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # all the commands fit
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)  # the replies do not
    sock.settimeout(30)
    sock.connect(("127.0.0.1", sink.port))
    t = MemTLS(sock, client_ctx(certs))
    assert t.reply()[0] == 220
    n = 50000  # about 7 MB of EHLO replies: the sink's SSL_write must wait
    body = os.urandom(100_000)
    t.send(b"EHLO slow.test\r\n" * n + b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
           + b"BDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n")
    time.sleep(1)
    codes = [t.reply()[0] for _ in range(n + 4)]
    assert codes == [250] * (n + 3) + [221]
    sock.close()
    (raw, meta), = saved(sink)
    assert raw == body and meta["helo"] == "slow.test"


@pytest.mark.parametrize("implicit", [False, True])
def test_first_command_in_the_same_write_as_the_finished(env, certs, implicit):
    sink = env.sink(*tls_args(certs), *(["--implicit-tls"] if implicit else []))
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
    if not implicit:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"STARTTLS\r\n")
        assert f.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    # the handshake's last client flight and the commands in one segment:
    # their epoll edge is spent on the handshake, yet they must be read
    t = MemTLS(sock, client_ctx(certs), hold_finished=True)
    t.send(b"EHLO fast.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 3 LAST\r\nabcQUIT\r\n")
    greeting = [220] if implicit else []  # commands sent early wait for it
    assert [t.reply()[0] for _ in range(len(greeting) + 5)] == greeting + [250] * 4 + [221]
    sock.close()
    (raw, meta), = saved(sink)
    assert raw == b"abc" and meta["helo"] == "fast.test" and meta["tls"] == "TLSv1.3"


def test_starttls_refusals(env, certs):
    sink = env.sink(*tls_args(certs))
    c = Client(sink.port)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO r.test")[0] == 250
    assert c.cmd(b"STARTTLS now")[0] == 501
    assert c.cmd(b"MAIL FROM:<a@x>")[0] == 250
    assert c.cmd(b"STARTTLS")[0] == 503  # inside a transaction
    assert c.cmd(b"RSET")[0] == 250
    raw_starttls(c, certs).cmd(b"QUIT")
    # without a certificate: neither offered nor accepted
    plain = env.sink()
    p = Client(plain.port)
    assert p.reply()[0] == 220
    code, lines = p.cmd(b"EHLO p.test")
    assert code == 250 and "STARTTLS" not in lines
    assert p.cmd(b"STARTTLS")[0] == 502
    with smtplib.SMTP("127.0.0.1", plain.port, timeout=30) as s:
        assert s.sendmail(FROM, [TO], b"Subject: plain\r\n\r\nx\r\n") == {}
    (_, meta), = saved(plain)
    assert (meta["tls"], meta["cipher"], meta["sni"]) == (None, None, None)


def test_openssl_s_client_starttls(env, certs):
    sink = env.sink(*tls_args(certs))
    script = (b"EHLO ossl.test\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n"
              b"Subject: s_client\n\nbody line\n.\nQUIT\n")
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        f"127.0.0.1:{sink.port}", "-servername", NAME, "-CAfile", str(certs.ca),
                        "-verify_return_error", "-crlf", "-ign_eof", "-quiet"],
                       input=script, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b"221 2.0.0 Bye" in r.stdout
    (raw, meta), = saved(sink)
    assert raw == b"Subject: s_client\r\n\r\nbody line\r\n"
    assert meta["helo"] == "ossl.test" and meta["tls"] and meta["sni"] == NAME


@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
def test_swaks(env, certs, mode):
    sink = env.sink(*tls_args(certs), *(["--implicit-tls"] if mode == "--tlsc" else []))
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{sink.port}", mode, "--tls-verify",
                        "--tls-ca-path", str(certs.ca), "--tls-sni", NAME, "--from", FROM,
                        "--to", TO, "--helo", "swaks.test", "--body", ".dot\nend", "--pipeline"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started with cipher TLSv1.3" in r.stdout
    (raw, meta), = saved(sink)
    assert b"\r\n\r\n.dot\r\nend\r\n" in raw
    assert meta["helo"] == "swaks.test" and meta["tls"] == "TLSv1.3" and meta["sni"] == NAME


# ---- implicit TLS


def test_implicit_tls_smtp_ssl(env, certs):
    sink = env.sink(*tls_args(certs), "--implicit-tls")
    body = big_body(20000)
    with smtplib.SMTP_SSL("127.0.0.1", sink.port, timeout=30, context=client_ctx(certs)) as s:
        code, _ = s.ehlo("ssl.test")
        assert code == 250 and not s.has_extn("starttls")
        assert s.docmd("STARTTLS")[0] == 554
        version = s.sock.version()
        assert s.sendmail(FROM, [TO], body) == {}
    (raw, meta), = saved(sink)
    assert raw == body and meta["tls"] == version


def test_implicit_tls_openssl_s_client(env, certs):
    sink = env.sink(*tls_args(certs), "--implicit-tls")
    script = b"EHLO o.test\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nBDAT 6 LAST\nhello\nQUIT\n"
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{sink.port}",
                        "-servername", NAME, "-CAfile", str(certs.ca), "-verify_return_error",
                        "-ign_eof", "-quiet"],
                       input=script, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"220 sink.local ESMTP") and b"221 2.0.0 Bye" in r.stdout
    (raw, meta), = saved(sink)
    assert raw == b"hello\n" and meta["body"] == "bdat" and meta["tls"]


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 465\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\xc6\x33\x64\x01\x9c\x40\x01\xd1",
])
def test_implicit_tls_after_proxy_header_in_the_same_write(env, certs, header):
    sink = env.sink(*tls_args(certs), "--implicit-tls", "--accept-proxy")
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
    # the header and the ClientHello leave in one write: the sink reads both
    # at once and must hand the rest of that read to the handshake
    t = MemTLS(sock, client_ctx(certs), first=header)
    assert t.reply() == (220, ["sink.local ESMTP"])
    t.send(b"EHLO proxied.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [t.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    t.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert [t.reply()[0] for _ in range(2)] == [250, 221]
    sock.close()
    (raw, meta), = saved(sink)
    assert raw == b"Subject: p\r\n\r\nbody\r\n"
    assert meta["client_addr"] == "192.0.2.7" and meta["client_port"] == 40000
    assert meta["proxy"]["dst_port"] == 465 and meta["tls"] == "TLSv1.3"


def test_implicit_tls_fail_greeting_and_delay(env, certs):
    sink = env.sink(*tls_args(certs), "--implicit-tls", "--fail-greeting", "421",
                    "--greeting-delay", "100ms")
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
    t = client_ctx(certs).wrap_socket(sock)
    start = time.monotonic()  # the delay runs from the end of the handshake
    f = t.makefile("rb")
    assert f.readline() == b"421 sink.local failing on purpose\r\n"
    assert time.monotonic() - start >= 0.09
    assert f.read() == b""  # close_notify, then the end
    t.close()


# ---- failures


def refused_tls(c):
    """What the server sent before it closed: nothing, or one TLS alert
    record (an RST may follow, for the unread rest of the garbage)."""
    c.sock.settimeout(10)
    out = b""
    try:
        while data := c.sock.recv(4096):
            out += data
    except ConnectionResetError:
        pass
    assert out == b"" or (out[:1] == b"\x15" and len(out) == 7), out
    return True


def run_sink(*args):
    return subprocess.run([str(SINK), "--listen", f"127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, timeout=10)


def test_bad_certificate_or_key_exits_2_naming_the_file(certs, tmp_path):
    crt, key = certs.leaf(NAME)
    _, other_key = certs.leaf("other.test")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    missing = tmp_path / "missing.key"
    for args, says in [
        (["--tls-cert", str(crt), "--tls-key", str(garbage)], f"--tls-key {garbage}: cannot load"),
        (["--tls-cert", str(crt), "--tls-key", str(missing)], f"--tls-key {missing}: cannot load"),
        (["--tls-cert", str(crt), "--tls-key", str(other_key)],
         f"--tls-key {other_key} does not match --tls-cert {crt}"),
        (["--tls-cert", str(garbage), "--tls-key", str(key)], f"--tls-cert {garbage}: cannot load"),
    ]:
        r = run_sink(*args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("mxlb-sink: ") and says in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1
    for args in (["--implicit-tls"], ["--tls-cert", str(crt)], ["--tls-key", str(key)]):
        r = run_sink(*args)
        assert r.returncode == 2 and "--tls-" in r.stderr, r.stderr


def test_garbage_instead_of_client_hello(env, certs):
    implicit = env.sink(*tls_args(certs), "--implicit-tls")
    starttls = env.sink(*tls_args(certs))
    # a client that stalls mid-handshake holds only its own session
    stalled = socket.create_connection(("127.0.0.1", implicit.port), timeout=10)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01")
    for garbage in (b"EHLO not-tls.test\r\n", os.urandom(4000), b"\x16\x03\x01\x00\x05hello"):
        bad = Client(implicit.port)
        bad.send(garbage)
        assert refused_tls(bad)
    s = Client(starttls.port)
    assert s.reply()[0] == 220
    assert s.cmd(b"STARTTLS")[0] == 220
    s.send(b"GET / HTTP/1.0\r\n\r\n")
    assert refused_tls(s)
    with smtplib.SMTP_SSL("127.0.0.1", implicit.port, timeout=30, context=client_ctx(certs)) as c:
        assert c.sendmail(FROM, [TO], b"Subject: still here\r\n\r\nx\r\n") == {}
    with smtplib.SMTP("127.0.0.1", starttls.port, timeout=30) as c:
        c.starttls(context=client_ctx(certs))
        assert c.sendmail(FROM, [TO], b"Subject: still here\r\n\r\nx\r\n") == {}
    saved(implicit)
    saved(starttls)
    assert "TLS handshake with 127.0.0.1:" in implicit.proc.log()
    stalled.close()
    assert implicit.proc.stop() == 0 and starttls.proc.stop() == 0


def test_client_rejecting_the_certificate(env, certs):
    sink = env.sink(*tls_args(certs))
    wrong_ca = NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    wrong_ca.load_default_certs()  # the system CAs: the test CA is not among them
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            s.starttls(context=wrong_ca)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.starttls(context=client_ctx(certs))
        assert s.sendmail(FROM, [TO], b"Subject: ok\r\n\r\nx\r\n") == {}
    saved(sink)


def test_threads_share_one_context(env, certs):
    sink = env.sink(*tls_args(certs), "--threads", "4")
    errors = []

    def session(i):
        try:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=60) as s:
                s.starttls(context=client_ctx(certs))
                for j in range(3):
                    body = b"Subject: %d-%d\r\n\r\n%s\r\n" % (i, j, os.urandom(3000).hex().encode())
                    assert s.sendmail(FROM, [TO], body) == {}
        except Exception as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    msgs = saved(sink, 48)
    assert all(m[1]["tls"] == "TLSv1.3" for m in msgs)
    assert sink.proc.stop() == 0
    assert "sink: sessions=17 messages=48" in sink.proc.log()  # 16 and the port probe
