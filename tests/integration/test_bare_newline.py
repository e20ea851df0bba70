"""listeners[].bare_newline (SPEC §9) with a real Postfix behind mxlb, in
plain text and after STARTTLS terminated by mxlb.

Two Postfix settings make the judges. With smtpd_forbid_bare_newline =
reject, Postfix refuses any line that ends in a bare LF: a message it
accepts through mxlb's `normalize` proves that it received CRLF only. With
the default (no), Postfix 3.7 reads a bare LF as a line end, so `\\n.\\n`
ends its DATA: the reading that SMTP smuggling (CVE-2023-51764) abuses,
and the one `normalize` and `reject` must defeat. `pass` relays the bytes
untouched, and the smuggled message gets through: what the guard is for.
mxlb-sink (--save-dir) shows the exact bytes normalize sends."""
import re
import ssl

import pytest

from conftest import Client, HOST, wait_for
from postfix import postfix  # noqa: F401  (the fixture)

ENV = b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\n"
RECEIVED = re.compile(rb"Received: from [^\r\n]*\r\n(\t[^\r\n]*\r\n)*")
SMUGGLE = (b"Subject: real\r\n\r\nreal text\n.\nMAIL FROM:<evil@spoof.test>\r\n"
           b"RCPT TO:<b@dest.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled text\r\n.\r\n")
# what the one message holds after normalize: the smuggled lines as text
SMUGGLED_TEXT = (b"Subject: real\r\n\r\nreal text\r\n.\r\nMAIL FROM:<evil@spoof.test>\r\n"
                 b"RCPT TO:<b@dest.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled text\r\n")

TLS = [None, "starttls"]


def start_mxlb(env, certs, backend_port, bare, tls, handoff="none"):
    listener = {"bare_newline": bare, "timeouts": {"backend_reply": "5s", "idle": "10s"}}
    extra = None
    if tls:
        crt, key = certs.leaf("mx.test", "ecdsa")
        listener.update({"tls": "starttls", "tls_context": "pub"})
        extra = {"tls": {"pub": {"certificates": [{"cert": str(crt), "key": str(key)}]}}}
    return env.mxlb([backend_port], pool={"handoff": handoff}, listener=listener, extra=extra)


def session(mx, certs, tls, ehlo=b"client.test"):
    """A client greeted, through STARTTLS where tls, and past its EHLO (the
    routing point): the backend's EHLO reply read."""
    c = Client(mx.port, timeout=15)
    assert c.reply()[0] == 220
    if tls:
        assert c.cmd(b"EHLO " + ehlo)[0] == 250
        assert c.cmd(b"STARTTLS")[0] == 220
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        ctx.check_hostname = False
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test")
        c.f = c.sock.makefile("rb")
    code, lines = c.cmd(b"EHLO " + ehlo)
    assert code == 250, lines
    return c


def send_message(c, envelope, body):
    """envelope (pipelined), DATA, then body (it carries its own end) and
    QUIT: every reply until the server closes, as codes."""
    c.send(envelope + b"DATA\r\n")
    codes = [c.reply()[0] for _ in range(envelope.count(b"\n") + 1)]
    assert codes[-1] == 354, codes
    c.send(body + b"QUIT\r\n")
    return codes + [code for code, _ in c.replies_until_eof()]


def bodies(pf, n):
    """The n messages Postfix relayed, each without its Received: header,
    and no more than n once it is idle."""
    msgs = pf.wait_delivered(n, timeout=15) if n else []
    pf.wait_idle(timeout=15)
    msgs = pf.sink.messages()
    assert len(msgs) == n, [m[0][:300] for m in msgs]
    out = []
    for raw, meta in msgs:
        m = RECEIVED.match(raw)
        assert m, raw[:200]
        out.append((raw[m.end():], meta))
    return out


def commands(pf):
    return [cmd for s in pf.sessions() for cmd in s["commands"]]


@pytest.mark.parametrize("tls", TLS, ids=["plain", "starttls"])
def test_normalize_postfix_receives_crlf(env, certs, postfix, tls):
    """Commands and text with bare LF and bare CR: Postfix, which refuses
    a bare LF here, accepts them, and the text arrives with CRLF lines."""
    pf = postfix(params={"smtpd_forbid_bare_newline": "reject"})
    mx = start_mxlb(env, certs, pf.port, "normalize", tls)
    c = session(mx, certs, tls)
    got = send_message(c, b"MAIL FROM:<a@client.test>\nRCPT TO:<b@dest.test>\n",
                       b"Subject: bare\n\nline one\nline two\rline three\n\r\n.\r\n")
    assert got == [250, 250, 354, 250, 221], got
    [(body, meta)] = bodies(pf, 1)
    assert body == b"Subject: bare\r\n\r\nline one\r\nline two\r\nline three\r\n\r\n"
    assert meta["mail_from"] == "a@client.test"
    assert "bare <LF> received" not in pf.maillog()
    assert "MAIL FROM:<a@client.test>" in commands(pf)
    assert mx.stop() == 0


@pytest.mark.parametrize("tls", TLS, ids=["plain", "starttls"])
def test_pass_relays_bare_lf_untouched(env, certs, postfix, tls):
    """The judge of the test above is strict: with pass, the same bare LF
    reaches Postfix, which refuses it itself."""
    pf = postfix(params={"smtpd_forbid_bare_newline": "reject"})
    mx = start_mxlb(env, certs, pf.port, "pass", tls)
    c = session(mx, certs, tls)
    got = send_message(c, ENV, b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
    assert got[:3] == [250, 250, 354] and 550 in got[3:], got
    assert bodies(pf, 0) == []
    pf.wait_log(r"bare <LF> received")
    assert mx.stop() == 0


@pytest.mark.parametrize("handoff", ["none", "xclient"])
@pytest.mark.parametrize("tls", TLS, ids=["plain", "starttls"])
def test_normalize_smuggling_delivers_one_message(env, certs, postfix, tls, handoff):
    """`\\n.\\n` ends DATA for this Postfix; through normalize it is text:
    exactly one message, holding the smuggled lines, and Postfix never
    reads them as commands."""
    pf = postfix()
    mx = start_mxlb(env, certs, pf.port, "normalize", tls, handoff)
    c = session(mx, certs, tls)
    got = send_message(c, ENV, SMUGGLE)
    assert got == [250, 250, 354, 250, 221], got
    [(body, meta)] = bodies(pf, 1)
    assert body == SMUGGLED_TEXT
    assert meta["mail_from"] == "a@client.test"
    assert "MAIL FROM:<evil@spoof.test>" not in commands(pf)
    assert "from=<evil@spoof.test>" not in pf.maillog()
    assert mx.stop() == 0


@pytest.mark.parametrize("tls", TLS, ids=["plain", "starttls"])
def test_pass_lets_the_smuggled_message_through(env, certs, postfix, tls):
    """What normalize prevents: with pass, the same stream is two messages
    to this Postfix, the second from the smuggler."""
    pf = postfix()
    mx = start_mxlb(env, certs, pf.port, "pass", tls)
    c = session(mx, certs, tls)
    got = send_message(c, ENV, SMUGGLE)
    assert got == [250, 250, 354, 250, 250, 250, 354, 250, 221], got
    msgs = bodies(pf, 2)
    assert sorted(m["mail_from"] for _, m in msgs) == ["a@client.test", "evil@spoof.test"]
    assert mx.stop() == 0


@pytest.mark.parametrize("body", [SMUGGLE, b"Subject: x\r\n\r\none\ntwo\r\n.\r\n",
                                  b"Subject: x\r\n\r\none\rtwo\r\n.\r\n",
                                  b"Subject: x\r\n\r\nend\r\n.\n"],
                         ids=["smuggle", "bare-lf", "bare-cr", "lf-end"])
@pytest.mark.parametrize("tls", TLS, ids=["plain", "starttls"])
def test_reject_delivers_nothing(env, certs, postfix, tls, body):
    """reject: the backend connection is reset before the end of data, the
    client is told 550 5.5.2 and closed, and nothing is delivered."""
    pf = postfix()
    mx = start_mxlb(env, certs, pf.port, "reject", tls)
    c = session(mx, certs, tls)
    c.send(ENV + b"DATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(body + b"QUIT\r\n")
    assert c.replies_until_eof() == [(550, ["5.5.2 Error: bare <LF> received"])]
    assert bodies(pf, 0) == []
    assert "MAIL FROM:<evil@spoof.test>" not in commands(pf)
    line = wait_for(lambda: [s for s in mx.sessions() if s.get("result") == "rejected"])[0]
    assert line["reason"].startswith("bare <"), line
    assert mx.stop() == 0


@pytest.mark.parametrize("tls", TLS, ids=["plain", "starttls"])
def test_reject_delivers_clean_mail(env, certs, postfix, tls):
    pf = postfix()
    mx = start_mxlb(env, certs, pf.port, "reject", tls)
    c = session(mx, certs, tls)
    body = b"Subject: clean\r\n\r\nline\r\n..leading dot\r\n"
    assert send_message(c, ENV, body + b".\r\n") == [250, 250, 354, 250, 221]
    assert bodies(pf, 1)[0][0] == body.replace(b"\r\n..", b"\r\n.")
    assert mx.stop() == 0


def test_normalize_bytes_at_a_sink(env, certs):
    """The exact bytes: mxlb-sink saves what it received (dot-unstuffed).
    A "." line that a bare line end starts or ends is sent "..", so it
    arrives as "."; bytes_in is what the client sent, not what the
    backend got."""
    sink = env.sink()
    mx = start_mxlb(env, certs, sink.port, "normalize", None)
    body = b"a\nb\rc\r\n\n.\n.x\r\n..y\n.\r\n.\r\n"
    c = session(mx, certs, None)
    got = send_message(c, ENV, body)
    assert got == [250, 250, 354, 250, 221], got
    [(raw, meta)] = wait_for(sink.messages)
    assert raw == b"a\r\nb\r\nc\r\n\r\n.\r\nx\r\n.y\r\n.\r\n"
    sent = len(b"EHLO client.test\r\n" + ENV + b"DATA\r\n" + body + b"QUIT\r\n")
    line = wait_for(lambda: [s for s in mx.sessions() if s.get("result") == "relayed"])[0]
    assert int(line["bytes_in"]) == sent
    assert mx.stop() == 0


def test_normalize_hides_starttls_of_the_backend(env, certs, postfix):
    """The tracker reads the client's stream: a STARTTLS to the backend
    would hide it, so the backend's is not offered, and a client's is
    refused."""
    pf = postfix(params={"smtpd_tls_security_level": "may",
                         "smtpd_tls_chain_files": " ".join(map(str, certs.leaf("postfix.test",
                                                                                 "ecdsa")[::-1]))})
    direct = Client(pf.port, timeout=15)
    assert direct.reply()[0] == 220
    code, lines = direct.cmd(b"EHLO client.test")
    assert code == 250 and "STARTTLS" in lines, lines
    direct.cmd(b"QUIT")
    mx = start_mxlb(env, certs, pf.port, "normalize", None)
    c = Client(mx.port, timeout=15)
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO client.test")
    assert code == 250 and not any(ln.upper().startswith("STARTTLS") for ln in lines), lines
    assert c.cmd(b"STARTTLS")[0] // 100 == 5
    assert c.cmd(b"QUIT")[0] == 221
    assert "STARTTLS" not in commands(pf)
    assert mx.stop() == 0


def test_check_accepts_every_value(env, tmp_path):
    import subprocess
    from conftest import MXLB
    for v in ("pass", "normalize", "reject"):
        cfg = tmp_path / f"{v}.yaml"
        cfg.write_text(
            "server: {hostname: %s}\n"
            "listeners: [{name: mx, listen: [\"127.0.0.1:1\"], pool: p, bare_newline: %s}]\n"
            "pools: [{name: p, health: {check: none}, backends: [{name: b, address: "
            "\"127.0.0.1:2\"}]}]\n" % (HOST, v))
        r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
