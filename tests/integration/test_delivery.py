"""Messages through mxlb arrive byte-identical, with real clients (smtplib,
swaks, raw pipelining and BDAT) and real servers (mxlb-sink, aiosmtpd,
Postfix smtp-sink)."""
import os
import shutil
import smtplib
import subprocess
import time

from conftest import Client, deliver, free_port, wait_for, wait_port, Proc


def big_body(n_lines=180000):
    lines = [b"Subject: big", b"", b".leading dot", b"..two dots", b"8bit: \xc3\xa9\xe2\x82\xac"]
    lines += [b"%07d %s" % (i, os.urandom(24).hex().encode()) for i in range(n_lines)]
    lines += [b".", b". not the end", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


def test_10mb_8bitmime_dots_to_mxlb_sink(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])
    body = big_body()
    assert len(body) > 10_000_000
    with smtplib.SMTP("127.0.0.1", mx.port, timeout=60) as s:
        s.ehlo("big.test")
        assert s.has_extn("8bitmime")
        assert s.sendmail("a@client.test", ["b@dest.test"], body, mail_options=["BODY=8BITMIME"]) == {}
    msgs = wait_for(sink.messages, what="the message")
    assert msgs[0][0] == body
    assert msgs[0][1]["helo"] == "big.test"
    assert mx.stop() == 0


def test_swaks_plain_and_pipelined(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])
    for extra in ([], ["--pipeline"]):
        r = subprocess.run(["swaks", "--server", f"127.0.0.1:{mx.port}", "--from", "a@client.test",
                            "--to", "b@dest.test", "--helo", "swaks.test", "--body",
                            ".dot line\n..two\nend", *extra],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    msgs = wait_for(lambda: len(sink.messages()) == 2 and sink.messages())
    for raw, env_ in msgs:
        assert b"\r\n.dot line\r\n..two\r\nend\r\n" in raw
        assert env_["helo"] == "swaks.test"
    assert mx.stop() == 0


def test_raw_pipelining_in_one_write(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])
    c = Client(mx.port)
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO pipe.test")
    assert code == 250 and "PIPELINING" in lines
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert c.reply()[0] == 250
    assert c.reply()[0] == 221
    assert c.eof()
    raw, e = wait_for(sink.messages)[0]
    assert raw == b"Subject: p\r\n\r\nbody\r\n"
    assert e["rcpt_to"] == ["b@y", "c@y"]
    assert mx.stop() == 0


def test_pipelined_after_ehlo_kept_in_order(env):
    """Commands sent with the EHLO, before mxlb has a backend, reach it."""
    sink = env.sink("--greeting-delay", "300ms")
    mx = env.mxlb([sink.port])
    c = Client(mx.port)
    c.reply()
    c.send(b"EHLO eager.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert c.reply()[0] == 250
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(b"x\r\n.\r\nQUIT\r\n")
    assert c.reply()[0] == 250 and c.reply()[0] == 221
    assert wait_for(sink.messages)[0][0] == b"x\r\n"
    assert mx.stop() == 0


def test_bdat_chunks(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])
    c = Client(mx.port)
    c.reply()
    code, lines = c.cmd(b"EHLO chunk.test")
    assert "CHUNKING" in lines
    chunk1 = b"Subject: b\r\n\r\nline\r\n.\r\n"
    chunk2 = b"\x00\xff binary \r\n.\r\nend\r\n"
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n")
    assert [c.reply()[0], c.reply()[0]] == [250, 250]
    c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
    assert c.reply()[0] == 250
    c.send(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
    assert c.reply()[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    raw, e = wait_for(sink.messages)[0]
    assert raw == chunk1 + chunk2 and e["body"] == "bdat"
    assert mx.stop() == 0


def test_aiosmtpd_backend(env):
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append((session.host_name, envelope.original_content))
            return "250 2.0.0 OK saved"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port, decode_data=False)
    ctl.start()
    try:
        mx = env.mxlb([port])
        body = b"Subject: aio\r\n\r\n.leading\r\n" + b"".join(os.urandom(30).hex().encode() + b"\r\n" for _ in range(100))
        assert deliver(mx.port, body, ehlo="aio.test") == {}
        wait_for(lambda: got)
        assert got[0] == ("aio.test", body)
        assert mx.stop() == 0
    finally:
        ctl.stop()


def test_postfix_smtp_sink_backend(env, tmp_path):
    import tempfile
    from pathlib import Path

    port = free_port()
    # smtp-sink writes as nobody: pytest's own tmp dirs are private
    dump = Path(tempfile.mkdtemp(prefix="mxlb-smtp-sink-"))
    os.chmod(dump, 0o777)
    p = Proc(["/usr/sbin/smtp-sink", "-u", "nobody", "-d", str(dump) + "/%M.", f"127.0.0.1:{port}",
              "50"], tmp_path / "smtp-sink.log")
    env.procs.append(p)
    wait_port(port)
    mx = env.mxlb([port])
    for i in range(3):
        assert deliver(mx.port, b"Subject: %d\r\n\r\nvia postfix smtp-sink\r\n" % i) == {}
    files = wait_for(lambda: len(list(dump.iterdir())) >= 3 and list(dump.iterdir()))
    text = b"".join(f.read_bytes() for f in files)
    assert text.count(b"via postfix smtp-sink") == 3
    assert mx.stop() == 0
    shutil.rmtree(dump)


def test_impatient_client_half_closes_after_quit(env):
    """EHLO ... QUIT in one write, then shutdown(SHUT_WR): the kept bytes
    are relayed in order, the backend's replies still come back."""
    import socket

    sink = env.sink("--greeting-delay", "200ms")
    mx = env.mxlb([sink.port])
    c = Client(mx.port)
    c.reply()
    c.send(b"EHLO eager.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert c.reply()[0] == 250
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(b"half-closed\r\n.\r\nQUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.reply()[0] == 250
    assert c.reply()[0] == 221
    assert c.eof()
    assert wait_for(sink.messages)[0][0] == b"half-closed\r\n"
    assert mx.stop() == 0
