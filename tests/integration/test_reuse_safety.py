"""Backend session reuse, adversarially (SPEC §10): a parked connection
must never carry one client's state to the next. Where the tracker's
command/reply count cannot be trusted, or the client used anything but the
ten allowed verbs, the QUIT goes to the backend and nothing is parked.

The backend is a scripted SMTP server of the test's own (a thread), so
that it can misbehave exactly: it logs every line it reads, per
connection."""
import socket
import threading
import time

from conftest import Client, wait_for
from test_reuse import ONE_WORKER, REUSE, metric, wait_idle


class Scripted:
    """An SMTP server that answers each line as `answer(conn_no, line)`
    says (bytes to send, or None to close), and records the lines."""

    def __init__(self, extra_after_ehlo=b""):
        self.extra_after_ehlo = extra_after_ehlo
        self.lines = {}  # conn number -> [lines]
        self.closed = set()
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.n = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            self.n += 1
            threading.Thread(target=self._serve, args=(s, self.n), daemon=True).start()

    def answer(self, line):
        verb = line.split(b" ")[0].upper()
        if verb == b"EHLO":
            return b"250-scripted.test\r\n250 PIPELINING\r\n" + self.extra_after_ehlo
        if verb == b"QUIT":
            return None
        if verb in (b"NOOP", b"RSET", b"MAIL", b"RCPT", b"HELO"):
            return b"250 2.0.0 Ok\r\n"
        return b"500 5.5.2 Error: bad syntax\r\n"

    def _serve(self, s, n):
        with self.lock:
            self.lines[n] = []
        f = s.makefile("rb")
        try:
            s.sendall(b"220 scripted.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                with self.lock:
                    self.lines[n].append(line)
                out = self.answer(line)
                if out is None:
                    s.sendall(b"221 2.0.0 Bye\r\n")
                    break
                s.sendall(out)
        except OSError:
            pass
        finally:
            with self.lock:
                self.closed.add(n)
            f.close()
            s.close()

    def conn_lines(self, n):
        with self.lock:
            return list(self.lines.get(n, []))

    def ehlo_conns(self):
        """The connections that got an EHLO (mxlb's port probes get none)."""
        with self.lock:
            return [n for n, ls in sorted(self.lines.items())
                    if any(x.upper().startswith(b"EHLO") for x in ls)]

    def close(self):
        # shut first: a thread blocked in accept() keeps a closed
        # listener accepting on its port (a later test's connection)
        try:
            self.srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.srv.close()


def session(port, lines, helo=b"client.test"):
    """EHLO, then each of lines with its reply, then QUIT: the replies
    until the close, and the seconds the QUIT took."""
    c = Client(port)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO " + helo)[0] == 250
    got = [c.cmd(x) for x in lines]
    t0 = time.monotonic()
    c.send(b"QUIT\r\n")
    got += c.replies_until_eof()
    c.close()
    return got, time.monotonic() - t0


def test_empty_line_is_not_a_reusable_command(env):
    """An empty command line is no verb of the ten: not parked, the QUIT
    goes to the backend."""
    be = Scripted()
    try:
        mx = env.mxlb([be.port], pool={"handoff": "none", "reuse": REUSE}, server=ONE_WORKER)
        got, _ = session(mx.port, [b"NOOP", b""])
        assert [g[0] for g in got] == [250, 500, 221], got
        [conn] = be.ehlo_conns()
        wait_for(lambda: conn in be.closed, what="the connection to close")
        assert [x for x in be.conn_lines(conn)][-1].upper() == b"QUIT"
        assert b"RSET" not in be.conn_lines(conn)
        assert metric(mx, "mxlb_backend_idle") == 0
    finally:
        be.close()


def test_unsolicited_reply_line_means_no_reuse(env):
    """The backend says one reply line more than it was asked for (here
    right after its EHLO reply): the tracker's count of what is answered is
    off by one, so it would take a reply still to come as the last one and
    park a connection with a reply in flight (to be read as the RSET reply,
    or by the next client). Not parked: the QUIT goes to the backend, at
    once (not after an idle timeout)."""
    be = Scripted(extra_after_ehlo=b"250 2.0.0 unsolicited\r\n")
    try:
        mx = env.mxlb([be.port], pool={"handoff": "none", "reuse": REUSE}, server=ONE_WORKER)
        got, took = session(mx.port, [b"NOOP"])
        assert took < 5, took
        assert got[-1][0] == 221, got
        [conn] = be.ehlo_conns()
        wait_for(lambda: conn in be.closed, what="the connection to close")
        assert b"RSET" not in be.conn_lines(conn), be.conn_lines(conn)
        assert be.conn_lines(conn)[-1].upper() == b"QUIT"
        assert metric(mx, "mxlb_backend_idle") == 0
    finally:
        be.close()


def test_extra_reply_after_quit_was_stopped_passes_the_quit(env):
    """QUIT is already held by mxlb, waiting for the last reply, when the
    backend sends one more line than asked for: the QUIT goes on to the
    backend and the client is answered without waiting for a timeout."""
    be = Scripted()
    orig = be.answer

    def answer(line):
        if line.upper() == b"NOOP":
            time.sleep(0.3)  # the QUIT is in mxlb by now
            return b"250 2.0.0 Ok\r\n250 2.0.0 and one more\r\n"
        return orig(line)

    be.answer = answer
    try:
        mx = env.mxlb([be.port], pool={"handoff": "none", "reuse": REUSE}, server=ONE_WORKER)
        c = Client(mx.port)
        assert c.reply()[0] == 220
        assert c.cmd(b"EHLO client.test")[0] == 250
        t0 = time.monotonic()
        c.send(b"NOOP\r\nQUIT\r\n")
        got = c.replies_until_eof()
        took = time.monotonic() - t0
        c.close()
        assert took < 5, (took, got)
        assert [g[0] for g in got][:2] == [250, 250] and got[-1][0] == 221, got
        [conn] = be.ehlo_conns()
        wait_for(lambda: conn in be.closed, what="the connection to close")
        assert b"RSET" not in be.conn_lines(conn), be.conn_lines(conn)
        assert metric(mx, "mxlb_backend_idle") == 0
    finally:
        be.close()


def test_clean_session_with_scripted_backend_is_parked(env):
    """The control: the same backend, behaving, is reused; the second
    client's EHLO is the first line after the RSET."""
    be = Scripted()
    try:
        mx = env.mxlb([be.port], pool={"handoff": "none", "reuse": REUSE}, server=ONE_WORKER)
        got, _ = session(mx.port, [b"NOOP", b"MAIL FROM:<a@b>"])
        assert [g[0] for g in got] == [250, 250, 221], got
        wait_idle(mx)
        got, _ = session(mx.port, [b"NOOP"], helo=b"second.test")
        assert [g[0] for g in got] == [250, 221], got
        [conn] = be.ehlo_conns()
        ls = be.conn_lines(conn)
        assert b"QUIT" not in ls, ls
        i = ls.index(b"RSET")
        assert ls[i + 1] == b"EHLO second.test", ls
        assert metric(mx, "mxlb_backend_reused_total") == 1
    finally:
        be.close()


def test_stale_bytes_after_the_reused_ehlo_reply_are_never_relayed(env):
    """A parked connection whose backend sends, with its reply to the next
    client's EHLO, a line nobody asked for (a reply of the last client's
    still on its way): that connection is dropped, the session goes on
    over a new one, and the client never sees the stale line."""
    be = Scripted()
    ehlos = {}
    orig = be.answer

    def answer(line):
        out = orig(line)
        if line.upper().startswith(b"EHLO"):
            k = threading.get_ident()
            ehlos[k] = ehlos.get(k, 0) + 1
            if ehlos[k] == 2:
                out += b"250 2.0.0 stale reply of the last client\r\n"
        return out

    be.answer = answer
    try:
        mx = env.mxlb([be.port], pool={"handoff": "none", "reuse": REUSE}, server=ONE_WORKER)
        got, _ = session(mx.port, [b"NOOP"])
        assert [g[0] for g in got] == [250, 221], got
        wait_idle(mx)
        got, _ = session(mx.port, [b"NOOP", b"MAIL FROM:<a@b>"], helo=b"second.test")
        assert [g[0] for g in got] == [250, 250, 221], got
        assert not any("stale" in t for g in got for t in g[1]), got
        first, second = be.ehlo_conns()
        assert be.conn_lines(second)[0] == b"EHLO second.test"
        assert metric(mx, "mxlb_backend_reused_total") == 0
    finally:
        be.close()
