"""The client-stream tracker (proxy/smtp_track.c) end to end, in front of
mxlb-sink --xclient: hostile client streams of the security issue, each
checked on what the backend saw (the XCLIENT attributes it accepted, the
messages it saved) and what the client was told. The same corpus runs
against a real Postfix in test_track_postfix.py."""
import socket
import time

import pytest

from conftest import Client, wait_for

ENVELOPE = b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\n"


def xclient_env(env, ehlo="real.test"):
    sink = env.sink("--xclient")
    mx = env.mxlb([sink.port], pool={"handoff": "xclient"})
    c = Client(mx.port)
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO " + ehlo.encode())
    assert code == 250
    return sink, mx, c



def send_split(c, data, step):
    for i in range(0, len(data), step):
        c.send(data[i:i + step])
        time.sleep(0.001)


def assert_backend_trusts_only_mxlb(sink):
    """Every message the sink saved carries mxlb's XCLIENT, none a client's."""
    for raw, e in sink.messages():
        assert e["xclient"]["ADDR"] == "127.0.0.1", e
        assert e["client_addr"] == "127.0.0.1", e
        assert "LOGIN" not in e["xclient"], e


# verbs after blanks and other separators, which Postfix tokenizes on
SPOOFS = [b" XCLIENT ADDR=203.0.113.66", b"\tXCLIENT ADDR=203.0.113.66",
          b"\x0bXCLIENT ADDR=203.0.113.66", b"\x0cXCLIENT ADDR=203.0.113.66",
          b"XCLIENT\tADDR=203.0.113.66", b"  xclient   ADDR=203.0.113.66",
          b"XcLiEnT ADDR=203.0.113.66", b" XFORWARD ADDR=6.6.6.10 NAME=spoof.example",
          b"XFORWARD\tADDR=6.6.6.10"]


@pytest.mark.parametrize("line", SPOOFS, ids=lambda l: repr(l)[2:14])
def test_spoofed_xclient_never_reaches_backend(env, line):
    sink, mx, c = xclient_env(env)
    code, _ = c.cmd(line)
    assert code // 100 == 5
    c.send(ENVELOPE + b"DATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert c.cmd(b"Subject: t\r\n\r\nbody\r\n.")[0] == 250
    c.cmd(b"QUIT")
    raw, e = wait_for(sink.messages)[0]
    assert raw == b"Subject: t\r\n\r\nbody\r\n"
    assert_backend_trusts_only_mxlb(sink)
    assert mx.stop() == 0


@pytest.mark.parametrize("bdat", [b"BDAT 38 X", b"BDAT 38x", b"BDAT 38\tLAST",
                                  b"BDAT 38 LAST LAST", b" BDAT 38", b"BDAT  38"])
def test_malformed_bdat_fails_closed(env, bdat):
    sink, mx, c = xclient_env(env)
    payload = b"XCLIENT ADDR=203.0.113.66 LOGIN=admin\r\n"
    c.send(ENVELOPE)
    assert [c.reply()[0] for _ in range(2)] == [250, 250]
    c.send(bdat + b"\r\n" + payload + b"MAIL FROM:<x@y>\r\n")
    got = c.replies_until_eof()
    assert got and got[-1][0] == 554 and "malformed BDAT" in got[-1][1][0], got
    wait_for(lambda: mx.sessions()[-1:] and mx.sessions()[-1].get("result") == "rejected")
    assert "malformed BDAT" in mx.sessions()[-1]["reason"]
    assert sink.messages() == []
    assert mx.stop() == 0


def test_bare_lf_dot_in_data_fails_closed_and_delivers_nothing(env):
    """The issue's case: `\\n.\\n` then text, which a lenient backend would
    end the message at and read the rest as commands."""
    sink, mx, c = xclient_env(env)
    c.send(ENVELOPE + b"DATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(b"line\n.\nXCLIENT is a word\r\nend\r\n.\r\n")
    got = c.replies_until_eof()
    assert got and got[-1][0] == 554, got
    assert "bare <LF> or <CR>" in got[-1][1][0]
    time.sleep(0.3)
    assert sink.messages() == []
    s = wait_for(lambda: [x for x in mx.sessions() if x.get("ehlo") == "real.test"])[-1]
    assert s["result"] == "rejected"
    assert mx.stop() == 0


@pytest.mark.parametrize("body", [b"a\r\n.\nRSET\r\n.\r\n", b"a\n.\r\nRSET\r\n.\r\n",
                                  b"a\r.\rRSET\r\n.\r\n", b"a\r\n.\rRSET\r\n.\r\n"],
                         ids=["crlf-dot-lf", "lf-dot-crlf", "cr-dot-cr", "crlf-dot-cr"])
def test_bare_cr_lf_dot_variants_fail_closed(env, body):
    sink, mx, c = xclient_env(env)
    c.send(ENVELOPE + b"DATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    send_split(c, body, 3)
    got = c.replies_until_eof()
    assert got and got[-1][0] == 554, got
    time.sleep(0.2)
    assert sink.messages() == []
    assert mx.stop() == 0


def test_sloppy_bare_lf_in_text_passes_untouched(env):
    """A bare LF that frames nothing is honest mail: delivered byte for byte."""
    sink, mx, c = xclient_env(env)
    body = b"Subject: t\n\nfoo\nbar\rbaz\r\n..dot\r\n"
    c.send(ENVELOPE + b"DATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert c.cmd(body + b".")[0] == 250
    c.cmd(b"QUIT")
    raw, _ = wait_for(sink.messages)[0]
    assert raw == body.replace(b"\r\n..dot", b"\r\n.dot")  # the sink unstuffs
    assert mx.stop() == 0


@pytest.mark.parametrize("step", [1, 2, 5, 7, 64])
def test_pipelined_stream_split_everywhere(env, step):
    """Pipelined after DATA end, after a refused DATA, after BDAT 0 LAST,
    inside a BDAT chunk: the same outcome however the bytes are cut."""
    sink, mx, c = xclient_env(env)
    stream = (ENVELOPE + b"DATA\r\nXCLIENT ADDR=6.6.6.1 in text\r\n.\r\n"
              b"XCLIENT ADDR=6.6.6.2\r\n"
              b"DATA\r\nXCLIENT ADDR=6.6.6.3\r\n"               # refused DATA: commands
              + ENVELOPE + b"BDAT 22\r\nXCLIENT ADDR=6.6.6.4\r\nBDAT 0 LAST\r\n"
              b" xclient ADDR=6.6.6.5\r\nQUIT\r\n")
    send_split(c, stream, step)
    got = c.replies_until_eof()
    codes = [g[0] for g in got]
    # MAIL RCPT DATA(354) end(250) XCLIENT(5xx) DATA(503/554) XCLIENT(5xx)
    # MAIL RCPT BDAT(250) BDAT-LAST(250) xclient(5xx) QUIT(221)
    assert codes[:4] == [250, 250, 354, 250], got
    assert codes[4] // 100 == 5 and codes[5] // 100 == 5 and codes[6] // 100 == 5, got
    assert codes[7:11] == [250, 250, 250, 250], got
    assert codes[11] // 100 == 5 and codes[12] == 221, got
    msgs = wait_for(lambda: len(sink.messages()) == 2 and sink.messages())
    assert msgs[0][0] == b"XCLIENT ADDR=6.6.6.1 in text\r\n"
    assert msgs[1][0] == b"XCLIENT ADDR=6.6.6.4\r\n"
    assert_backend_trusts_only_mxlb(sink)
    assert mx.stop() == 0


def test_second_ehlo_reply_filtered(env):
    """After RSET and a second EHLO in the relay phase, the backend's
    XCLIENT capability is still removed."""
    sink, mx, c = xclient_env(env)
    assert c.cmd(b"RSET")[0] == 250
    code, lines = c.cmd(b"EHLO again.test")
    assert code == 250
    assert lines and not any(l.upper().startswith(("XCLIENT", "XFORWARD", "STARTTLS"))
                             for l in lines), lines
    # pipelined behind the EHLO: still answered in order
    c.send(b"EHLO third.test\r\nNOOP\r\n")
    code, lines = c.reply()
    assert code == 250 and not any(l.upper().startswith("XCLIENT") for l in lines)
    assert c.reply()[0] == 250
    assert mx.stop() == 0


def test_control_characters_in_the_routing_ehlo_refused(env):
    """The routing line goes to the backend as the client wrote it: a CR
    or NUL in it would end it early for some servers."""
    sink = env.sink("--xclient")
    mx = env.mxlb([sink.port], pool={"handoff": "xclient"})
    c = Client(mx.port)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO foo\rXCLIENT ADDR=6.6.6.6")[0] == 501
    assert c.cmd(b"EHLO foo\x00bar")[0] == 501
    assert c.cmd(b"EHLO good.test")[0] == 250
    assert mx.stop() == 0


def test_long_command_line_fails_closed(env):
    sink, mx, c = xclient_env(env)
    c.send(b"NOOP " + b"a" * 20000 + b"\r\nXCLIENT ADDR=6.6.6.6\r\n")
    got = c.replies_until_eof()
    assert got and got[-1][0] == 554 and "too long" in got[-1][1][0], got
    assert mx.stop() == 0
