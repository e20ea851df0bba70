"""Differential tests of the client-stream tracker against a real Postfix
(tests/integration/postfix.py) that trusts XCLIENT and XFORWARD from mxlb,
behind an `xclient` pool. A corpus of hostile client streams goes through
mxlb; the test reads what Postfix logged (every command line it read, the
client it believed in at each, the client= of each queued message) and
what it delivered, and fails if Postfix ever acted on a client-written
XCLIENT/XFORWARD or a message arrived other than the client sent it."""
import re
import time

import pytest

from conftest import Client, wait_for
from postfix import postfix  # noqa: F401  (the fixture)

ENV = b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\n"
RECEIVED = re.compile(rb"Received: from [^\r\n]*\r\n(\t[^\r\n]*\r\n)*")
SPOOF_ADDRS = ("203.0.113.66", "6.6.6.", "192.0.2.")


class Rig:
    def __init__(self, env, pf):
        self.env, self.pf = env, pf
        self.mx = env.mxlb([pf.port], pool={"handoff": "xclient"},
                           listener={"timeouts": {"backend_reply": "5s", "idle": "10s"}})

    def session(self, stream, step=None, ehlo=b"real.test"):
        """One client session: EHLO, then the stream (in pieces of `step`
        octets), then read replies until mxlb closes. Returns
        (client port, [(code, lines)])."""
        c = Client(self.mx.port, timeout=10)
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO " + ehlo)[0] == 250
        port = c.sock.getsockname()[1]
        step = step or len(stream)
        for i in range(0, len(stream), step):
            c.send(stream[i:i + step])
            if step < len(stream):
                time.sleep(0.001)
        out = c.replies_until_eof()
        c.close()
        return port, out

    def check_postfix(self, ports):
        """Postfix never believed in another client than the real ones."""
        self.pf.wait_idle(timeout=15)
        real = {f"unknown[127.0.0.1]:{p}" for p in ports}
        log = self.pf.maillog()
        for sess in self.pf.sessions():
            cmds = sess["commands"]
            # mxlb's own dialogue: EHLO, its XCLIENT, the client's EHLO
            assert cmds[1].startswith("XCLIENT ADDR=127.0.0.1 PORT="), cmds
            for cmd in cmds[2:]:
                verb = cmd.lstrip(" \t\x0b\x0c\r?").split(None, 1)[:1]
                assert not (verb and verb[0].upper() in ("XCLIENT", "XFORWARD")), cmds
            assert set(sess["peers"][2:]) <= real, sess["peers"]
            for cl in sess["clients"]:
                assert cl in real, cl
        assert "orig_client=" not in log
        for a in SPOOF_ADDRS:
            assert f"[{a}" not in log, a

    def delivered(self, n_expected, timeout=3.0):
        """The bodies Postfix relayed (its Received: header removed),
        waiting until n_expected arrived, or briefly when 0."""
        if n_expected:
            msgs = self.pf.wait_delivered(n_expected, timeout=15)
        else:
            time.sleep(0.3)
            self.pf.wait_idle(timeout=15)
            msgs = self.pf.sink.messages()
        out = []
        for raw, _ in msgs:
            m = RECEIVED.match(raw)
            assert m, raw[:200]
            out.append(raw[m.end():])
        return out


@pytest.fixture
def rig(env, postfix):
    return Rig(env, postfix())


# Leading blanks and other separators, which Postfix tokenizes on: each
# line pipelined before an honest message.
SPOOFS = [b" XCLIENT ADDR=203.0.113.66", b"\tXCLIENT ADDR=203.0.113.66",
          b"\x0bXCLIENT ADDR=203.0.113.66", b"\x0cXCLIENT ADDR=203.0.113.66",
          b"XCLIENT\tADDR=203.0.113.66", b"  xclient   ADDR=203.0.113.66",
          b"XcLiEnT ADDR=203.0.113.66 NAME=spoof.example",
          b" XFORWARD ADDR=6.6.6.10 NAME=spoof.example", b"\tXFORWARD ADDR=6.6.6.11",
          b"XFORWARD\x0bADDR=6.6.6.12"]


def test_spoofed_xclient_xforward_never_reach_postfix(rig):
    ports = []
    for line in SPOOFS:
        port, got = rig.session(line + b"\r\nQUIT\r\n")
        ports.append(port)
        assert [g[0] // 100 for g in got] == [5, 2], (line, got)
    rig.check_postfix(ports)


@pytest.mark.parametrize("line", [b" " * 2041 + b"XCLIENTX ADDR=203.0.113.66",
                                  b" " * 2040 + b"XFORWARDX NAME=x ADDR=6.6.6.13",
                                  b"\t" * 2040 + b"STARTTLS-whatever"],
                         ids=["xclient", "xforward", "starttls"])
def test_verb_cut_at_postfix_line_limit(rig, line):
    """Postfix runs the first 2048 octets of a longer line as the command:
    blanks that push the verb across that point make XCLIENTX an XCLIENT
    there. Postfix must answer as to an unknown command, not run it."""
    port, got = rig.session(line + b"\r\nQUIT\r\n")
    # "command not recognized", or Postfix's "I can break rules, too" and a
    # close for a line of tabs; never its XCLIENT 501 or STARTTLS 220
    assert got[0][0] in (500, 221) and got[-1][0] == 221, got
    rig.check_postfix([port])


def test_messages_after_spoofs_arrive_intact(rig):
    body = b"Subject: after spoofs\r\n\r\nXCLIENT ADDR=6.6.6.1 is text here\r\n..dot\r\n"
    stream = b"\r\n".join(SPOOFS) + b"\r\n" + ENV
    c = Client(rig.mx.port, timeout=10)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO real.test")[0] == 250
    port = c.sock.getsockname()[1]
    c.send(stream)
    codes = [c.reply()[0] for _ in range(len(SPOOFS) + 2)]
    assert all(x // 100 == 5 for x in codes[:len(SPOOFS)]) and codes[-2:] == [250, 250], codes
    assert c.cmd(b"DATA")[0] == 354
    assert c.cmd(body + b".")[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    assert rig.delivered(1) == [body.replace(b"\r\n..dot", b"\r\n.dot")]
    rig.check_postfix([port])


@pytest.mark.parametrize("bdat", [b"BDAT 38 X", b"BDAT 38x", b"BDAT 38\tLAST",
                                  b"BDAT 38 LAST LAST", b" BDAT 38", b"BDAT 38\n"],
                         ids=["arg", "suffix", "tab", "last-last", "lead", "bare-lf"])
def test_malformed_bdat(rig, bdat):
    term = b"" if bdat.endswith(b"\n") else b"\r\n"
    port, got = rig.session(ENV + bdat + term + b"XCLIENT ADDR=203.0.113.66 LOGIN=admin\r\n"
                            b"MAIL FROM:<x@y>\r\n")
    assert got[-1][0] == 554, got
    assert rig.delivered(0) == []
    rig.check_postfix([port])


BAD_BODIES = [b"line\n.\nXCLIENT is a word\r\nend\r\n.\r\n",
              b"line\r\n.\nMAIL FROM:<x@y>\r\n.\r\n",
              b"line\n.\r\nRSET\r\n.\r\n",
              b"line\r.\rQUIT\r\n.\r\n",
              b"line\r\n.\rXCLIENT ADDR=6.6.6.2\r\n.\r\n",
              b"line\r\n.\r\r\nXCLIENT ADDR=6.6.6.3\r\n.\r\n"]


@pytest.mark.parametrize("body", BAD_BODIES, ids=["lf.lf", "crlf.lf", "lf.crlf", "cr.cr",
                                                  "crlf.cr", "crlf.crcrlf"])
@pytest.mark.parametrize("step", [None, 1, 3])
def test_ambiguous_end_of_data_never_delivered(rig, body, step):
    port, got = rig.session(ENV + b"DATA\r\n" + body, step=step)
    codes = [g[0] for g in got]
    assert codes[:3] == [250, 250, 354] and codes[-1] == 554, got
    assert rig.delivered(0) == []
    rig.check_postfix([port])


def test_pipelined_corpus_split_at_every_offset(rig):
    """After a DATA end, after a refused DATA, after BDAT 0 LAST, inside a
    BDAT chunk (CHUNKING offered): cut into two writes at every offset."""
    stream = (ENV + b"DATA\r\nXCLIENT ADDR=6.6.6.4 in text\r\n.\r\n"
              b" XCLIENT ADDR=6.6.6.5\r\n"
              b"DATA\r\nXFORWARD ADDR=6.6.6.6\r\n"          # refused DATA: commands
              + ENV + b"BDAT 22\r\nXCLIENT ADDR=6.6.6.7\r\nBDAT 0 LAST\r\n"
              b"\txclient ADDR=6.6.6.8\r\nQUIT\r\n")
    ports = []
    offsets = range(1, len(stream), 3)
    for cut in offsets:
        c = Client(rig.mx.port, timeout=10)
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO real.test")[0] == 250
        ports.append(c.sock.getsockname()[1])
        c.send(stream[:cut])
        time.sleep(0.002)
        c.send(stream[cut:])
        codes = [code for code, _ in c.replies_until_eof()]
        c.close()
        assert codes[:4] == [250, 250, 354, 250], (cut, codes)
        assert codes[-1] == 221 and 554 not in codes, (cut, codes)
    bodies = rig.delivered(2 * len(offsets))
    # (Postfix puts an empty line before a body that starts with no header)
    assert bodies.count(b"\r\nXCLIENT ADDR=6.6.6.4 in text\r\n") == len(offsets)
    assert bodies.count(b"\r\nXCLIENT ADDR=6.6.6.7\r\n") == len(offsets)
    rig.check_postfix(ports)


def test_second_ehlo_does_not_show_xclient(rig):
    c = Client(rig.mx.port, timeout=10)
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO real.test")
    assert code == 250 and not any(l.upper().startswith("XCLIENT") for l in lines)
    assert c.cmd(b"RSET")[0] == 250
    code, lines = c.cmd(b"EHLO again.test")
    assert code == 250 and lines[0].startswith("postfix.test"), lines
    assert not any(l.upper().startswith(("XCLIENT", "XFORWARD")) for l in lines), lines
    assert any(l.upper().startswith("PIPELINING") for l in lines), lines
    assert c.cmd(b"QUIT")[0] == 221


def test_bdat_to_postfix_without_chunking_fails_closed(env, postfix):
    pf = postfix(chunking=False)
    rig = Rig(env, pf)
    port, got = rig.session(ENV + b"BDAT 22\r\nXCLIENT ADDR=6.6.6.9\r\nBDAT 0 LAST\r\n")
    assert got[-1][0] == 554 and "CHUNKING" in got[-1][1][0], got
    assert rig.delivered(0) == []
    rig.check_postfix([port])
