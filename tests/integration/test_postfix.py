"""A real Postfix smtpd behind mxlb (fixture: postfix.py): what Postfix
believes about the client after mxlb's XCLIENT handoff, and that the
message arrives byte for byte."""
import re
import signal
import smtplib

from dnsmasq import dnsmasq  # noqa: F401  (the fixture)
from postfix import mail_version, postfix  # noqa: F401  (postfix is the fixture)


def test_xclient_handoff_to_real_postfix(env, postfix, dnsmasq):
    pf = postfix()
    # a resolver that knows no name: NAME=[UNAVAILABLE] wherever this runs
    mx = env.mxlb([pf.port], pool={"handoff": "xclient"},
                  server={"resolver": dnsmasq().resolver})
    body = (b"From: <sender@client.test>\r\nTo: <rcpt@dest.test>\r\nSubject: real postfix\r\n"
            b"\r\n.leading dot\r\n8bit \xc3\xa9\r\nlast line\r\n")
    with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as s:
        s.ehlo("client.test")
        # mxlb removes XCLIENT/XFORWARD from Postfix's EHLO reply
        assert not s.has_extn("xclient") and not s.has_extn("xforward")
        client_port = s.sock.getsockname()[1]
        assert s.sendmail("sender@client.test", ["rcpt@dest.test"], body,
                          mail_options=["BODY=8BITMIME"]) == {}

    [(raw, envelope)] = pf.wait_delivered(1)
    assert envelope["mail_from"] == "sender@client.test"
    assert envelope["rcpt_to"] == ["rcpt@dest.test"]
    # Postfix prepends only its Received: header; the rest is the client's bytes
    m = re.match(rb"Received: from (\S+) \((\S+) \[([^\]]+)\]\)\r\n\tby postfix\.test "
                 rb"\(Postfix\) with (\S+) id ([0-9A-F]+)\r\n\tfor <rcpt@dest\.test>; [^\r\n]*\r\n",
                 raw)
    assert m, raw[:400]
    assert raw[m.end():] == body
    helo, name, addr, proto, qid = (x.decode() for x in m.groups())
    # the client's HELO name and address as mxlb handed them over
    assert (helo, name, addr, proto) == ("client.test", "unknown", "127.0.0.1", "ESMTP")

    # Postfix's log: one smtpd session, from mxlb's own socket; the XCLIENT
    # mxlb sent, then the client's commands; the queue file's client= is the
    # client's address and *its* port (not mxlb's outgoing one)
    pf.wait_log(rf"{qid}: removed")
    pf.wait_idle()
    log = pf.maillog()
    [sess] = pf.sessions()
    mxlb_port = int(sess["peer"].rsplit(":", 1)[1])
    assert sess["peer"].startswith("unknown[127.0.0.1]:") and mxlb_port != client_port
    assert sess["clients"] == pf.clients() == [f"unknown[127.0.0.1]:{client_port}"]
    assert re.search(rf"{qid}: client=unknown\[127\.0\.0\.1\]:{client_port}$", log, re.M)
    cmds = sess["commands"]
    assert cmds[:3] == ["EHLO mx.test",
                        f"XCLIENT ADDR=127.0.0.1 PORT={client_port} HELO=client.test PROTO=ESMTP"
                        f" NAME=[UNAVAILABLE] DESTADDR=127.0.0.1 DESTPORT={mx.port}",
                        "ehlo client.test"], cmds
    assert [c.split()[0].upper() for c in cmds[3:]] == ["MAIL", "RCPT", "DATA", "QUIT"], cmds
    # smtpd's idea of the peer: mxlb's socket until the XCLIENT, the client after it
    assert sess["peers"][:2] == [sess["peer"]] * 2
    assert set(sess["peers"][2:]) == {f"unknown[127.0.0.1]:{client_port}"}
    # (Postfix 3.7 counts an accepted XCLIENT as "0/1" in this summary)
    assert " ehlo=2 xclient=0/1 mail=1 rcpt=1 data=1 quit=1 " in sess["disconnect"] + " "
    assert re.search(rf"postfix/smtp\[\d+\]: {qid}: to=<rcpt@dest\.test>, "
                     rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{pf.sink.port},.* status=sent", log)
    assert mx.stop() == 0
    # the master re-raises SIGTERM on itself once its children are told
    assert pf.stop() == -signal.SIGTERM and pf.group_pids() == []
    assert mail_version().startswith("3.")


def test_fixture_knobs_and_postfix_facts(env, postfix):
    """The fixture's chunking switch, and the behaviours of this Postfix that
    mxlb's client-stream tracker must match (direct to Postfix, no mxlb)."""
    from conftest import Client

    pf = postfix()
    nochunk = postfix(chunking=False, sink=pf.sink)
    major, minor = (int(x) for x in mail_version().split(".")[:2])
    assert (major, minor) >= (3, 7)  # smtpd_forbid_bare_newline etc. exist

    def session(port, *sends):
        c = Client(port, timeout=5)
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO facts.test")[0] == 250
        codes = []
        for data, n in sends:
            c.send(data)
            codes += [c.reply()[0] for _ in range(n)]
        c.close()
        return codes

    tx = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
    # a bare-LF "\n.\n" ends DATA (smtpd_forbid_bare_newline = no)
    assert session(pf.port, (tx + b"DATA\r\n", 3), (b"Subject: lf\r\n\r\nx\n.\nNOOP\r\n", 2)) \
        == [250, 250, 354, 250, 250]
    # XCLIENT after leading white space is still XCLIENT to Postfix
    assert session(pf.port, (b" XCLIENT ADDR=192.0.2.1\r\n", 1)) == [220]
    # a malformed BDAT: 521 and close
    assert session(pf.port, (tx + b"BDAT 5 X\r\n", 3)) == [250, 250, 521]
    # CHUNKING discarded: BDAT gets 521 and a close, its chunk is never run as commands
    c = Client(nochunk.port, timeout=5)
    c.reply()
    code, lines = c.cmd(b"EHLO facts.test")
    assert code == 250 and "CHUNKING" not in lines and "PIPELINING" in lines
    c.send(tx + b"BDAT 6 LAST\r\nNOOP\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 521] and c.eof()
    c.close()
    pf.wait_idle()
    nochunk.wait_idle()
    # the leading-space XCLIENT changed who Postfix thinks the client is
    [xs] = [s for s in pf.sessions() if " XCLIENT ADDR=192.0.2.1" in s["commands"]]
    assert xs["peers"][-1].startswith("unknown[127.0.0.1]:")  # the line itself
    assert "unknown[192.0.2.1]:" in xs["disconnect"]
    [(raw, _)] = pf.wait_delivered(1)
    assert raw.endswith(b"\r\n\r\nx\r\n")
