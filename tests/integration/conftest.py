"""Fixtures for mxlb's integration tests: real peers started as processes
(mxlb, mxlb-sink, Postfix smtp-sink/smtp-source, aiosmtpd in-process), on
loopback only, each stopped by its PID when the test ends."""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

BUILD = Path(os.environ.get("MXLB_BUILD", Path(__file__).resolve().parents[2] / "build"))
MXLB = BUILD / "mxlb"
SINK = BUILD / "mxlb-sink"
HOST = "mx.test"


_handed_out = set()


def free_port():
    """A loopback port nothing listens on, never one this process handed
    out before (the kernel may give a just-closed ephemeral port again, and
    two servers of one test must not be told the same port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def refused(port, host="127.0.0.1"):
    """True when nothing listens on the port any more."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return False
    except OSError:
        return True


def wait_for(pred, timeout=10.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def terminate(proc, timeout):
    """SIGTERM a Popen, wait; SIGKILL if it hangs. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Proc:
    def __init__(self, cmd, log_path, env=None):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0):
        """SIGTERM, then wait; SIGKILL if it hangs. Returns the exit status."""
        code = terminate(self.proc, timeout)
        self.log_file.close()
        return code


class Sink:
    def __init__(self, proc, port, save_dir, stats):
        self.proc, self.port, self.save_dir, self.stats_file = proc, port, save_dir, stats

    def messages(self):
        """[(bytes, envelope dict)] of every saved message, oldest first."""
        # the sink writes .tmp-* files and renames them into place
        done = [j for j in self.save_dir.glob("*.json") if not j.name.startswith(".")]
        out = []
        for j in sorted(done, key=lambda p: p.stat().st_mtime_ns):
            out.append((j.with_suffix(".eml").read_bytes(), json.loads(j.read_text())))
        return out

    def stats(self):
        try:
            text = self.stats_file.read_text()
        except OSError:
            return {}
        return {k: int(v) for k, v in (f.split("=") for f in text.split())}


class Mxlb:
    def __init__(self, proc, port, admin, cfg_path):
        self.proc, self.port, self.admin_port, self.cfg_path = proc, port, admin, cfg_path

    def log(self):
        return self.proc.log()

    def sessions(self):
        """The session log lines as dicts of their key=value fields."""
        out = []
        for line in self.log().splitlines():
            if "event=session" not in line:
                continue
            fields = {}
            for part in _kv_split(line):
                if "=" in part:
                    k, v = part.split("=", 1)
                    fields[k] = v.strip('"')
            out.append(fields)
        return out

    def stop(self):
        return self.proc.stop()

    def rewrite(self, change):
        """Apply change(doc) to the configuration file (JSON is YAML)."""
        doc = json.loads(self.cfg_path.read_text())
        change(doc)
        self.cfg_path.write_text(json.dumps(doc))

    def reload(self, n):
        """SIGHUP, then wait for the n-th reload line of this process."""
        self.proc.signal(signal.SIGHUP)
        wait_for(lambda: self.log().count("event=reload") >= n, what=f"reload {n}")


def _kv_split(line):
    parts, cur, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == " " and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


class Env:
    """What one test starts; everything is stopped at its end."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []
        self.n = 0

    def _name(self, what):
        self.n += 1
        return self.tmp / f"{what}{self.n}"

    def sink(self, *args, port=None):
        port = port or free_port()
        d = self._name("sink")
        save = d / "mail"
        save.mkdir(parents=True)
        stats = d / "stats"
        p = Proc([str(SINK), "--listen", f"127.0.0.1:{port}", "--save-dir", str(save),
                  "--stats-file", str(stats), *args], d / "log")
        self.procs.append(p)
        wait_port(port)
        return Sink(p, port, save, stats)

    def mxlb(self, backends, pool=None, listener=None, server=None, pools=None, check=True,
             wait=True, extra=None):
        """Start mxlb with one listener in front of `backends` (ports, or dicts of
        backend keys). `pools` replaces the default single pool entirely."""
        port = free_port()
        admin = free_port()
        bl = []
        for i, b in enumerate(backends):
            if isinstance(b, int):
                b = {"address": f"127.0.0.1:{b}"}
            bl.append({"name": f"b{i}", **b})
        p = {"name": "main", "health": {"check": "none"}, "backends": bl}
        p.update(pool or {})
        lst = {"name": "mx", "listen": [f"127.0.0.1:{port}"], "pool": "main",
               "timeouts": {"connect": "1s", "backend_reply": "2s"}}
        lst.update(listener or {})
        srv = {"hostname": HOST, "workers": 2, "shutdown_timeout": "5s",
               "admin": {"listen": f"127.0.0.1:{admin}"}}
        srv.update(server or {})
        cfg = {"server": srv, "listeners": [lst], "pools": pools or [p], **(extra or {})}
        if "resolver" not in srv and '"xclient"' in json.dumps(cfg["pools"]):
            # XCLIENT NAME= asks DNS for the client's name: a dnsmasq of the
            # test's own that knows no name (NXDOMAIN at once), never the
            # machine's resolver, which may answer, differ or never answer
            from dnsmasq import start_dnsmasq
            srv["resolver"] = start_dnsmasq(self).resolver
        d = self._name("mxlb")
        d.mkdir()
        cfg_path = d / "mxlb.yaml"
        cfg_path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        if check:
            r = subprocess.run([str(MXLB), "-c", str(cfg_path), "--check"], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr
        proc = Proc([str(MXLB), "-c", str(cfg_path)], d / "log")
        self.procs.append(proc)
        m = Mxlb(proc, port, admin, cfg_path)
        if wait:
            wait_port(port)
            # the probe's own session must be over before a test counts sessions
            wait_for(lambda: "event=session" in m.log(), what="the probe session to end")
        return m

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """The test CA and its leaf certificates (tlscerts.Certs)."""
    from tlscerts import Certs
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.stop_all()


class Client:
    """A raw SMTP client: bytes in, replies out, nothing hidden."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One reply: (code, [text of each line]); (None, [...]) at EOF."""
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                return (None, lines)
            lines.append(line[4:].rstrip(b"\r\n").decode("latin-1"))
            if len(line) < 4 or line[3:4] != b"-":
                return (int(line[:3]), lines)

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def replies_until_eof(self, limit=100000):
        """Every reply until the server closes: [(code, lines)]."""
        out = []
        for _ in range(limit):
            code, lines = self.reply()
            if code is None:
                break
            out.append((code, lines))
        return out

    def eof(self, timeout=10):
        """True when the server closes without sending anything more."""
        self.sock.settimeout(timeout)
        try:
            return self.f.read() == b""
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.f.close()
        self.sock.close()


def deliver(port, body=b"Subject: test\r\n\r\nhello\r\n", ehlo="client.test"):
    """One message with smtplib; returns its refusal dict ({} when accepted)."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo(ehlo)
        return s.sendmail("sender@client.test", ["rcpt@dest.test"], body)
