"""systemd's readiness protocol (SPEC §12): the datagrams mxlb sends to
$NOTIFY_SOCKET, read from a socket of the test's own, and server.user
naming the user mxlb already runs as."""
import json
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import HOST, MXLB, Client, Proc, deliver, free_port

WAIT = 30  # seconds before a missing datagram fails the test (not a timing claim)


class Notify:
    """A datagram socket standing in for systemd's: a path, or an @name in
    the abstract namespace. Each message comes with its sender's PID."""

    def __init__(self, addr):
        self.addr = addr
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + addr[1:] if addr.startswith("@") else addr)
        self.sock.settimeout(WAIT)

    def recv(self, proc=None):
        """({KEY: value}, sender pid) of the next datagram; fails at once
        when proc (a conftest Proc) exits before sending it."""
        end = time.monotonic() + WAIT
        while not select.select([self.sock], [], [], 0.2)[0]:
            if proc is not None and proc.proc.poll() is not None:
                pytest.fail(f"mxlb exited {proc.proc.returncode} before notifying:\n{proc.log()}")
            if time.monotonic() > end:
                pytest.fail("no datagram from mxlb")
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, val in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", val[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        return fields, pid

    def pending(self):
        """Datagrams already queued, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(WAIT)
        return out

    def close(self):
        self.sock.close()


def config(port, sink_port, admin="", **server):
    srv = {"hostname": HOST, "workers": 2, "shutdown_timeout": "5s",
           "admin": {"listen": admin}, **server}
    return {"server": srv,
            "listeners": [{"name": "mx", "listen": [f"127.0.0.1:{port}"], "pool": "main"}],
            "pools": [{"name": "main", "health": {"check": "none"},
                       "backends": [{"name": "b0", "address": f"127.0.0.1:{sink_port}"}]}]}


def start(env, cfg_path, notify_addr, prefix=()):
    e = dict(os.environ, NOTIFY_SOCKET=notify_addr)
    p = Proc([*prefix, str(MXLB), "-c", str(cfg_path)], cfg_path.parent / "log", env=e)
    env.procs.append(p)
    return p


def expect(n, state, proc):
    fields, sender = n.recv(proc)
    assert state in fields, fields
    # NotifyAccess=main: systemd takes only the main process's datagrams
    assert sender == proc.pid
    return fields


def greets(port):
    c = Client(port)
    try:
        return c.reply()[0] == 220
    finally:
        c.close()


def test_ready_once_listening_then_reload_and_stop(env, tmp_path):
    sink = env.sink()
    port = free_port()
    n = Notify(str(tmp_path / "notify"))
    cfg = tmp_path / "mxlb.yaml"
    cfg.write_text(json.dumps(config(port, sink.port)))
    mx = start(env, cfg, n.addr)

    ready = expect(n, "READY", mx)
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("started: 1 listener on 1 address")
    # READY=1 means listening: no waiting for the port after it
    assert greets(port)
    assert deliver(port) == {}

    before = time.monotonic_ns() // 1000
    mx.signal(signal.SIGHUP)
    reloading = expect(n, "RELOADING", mx)
    assert reloading["RELOADING"] == "1"
    # the time of the request on CLOCK_MONOTONIC (systemd's notify-reload)
    assert before <= int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
    ready = expect(n, "READY", mx)
    assert ready["STATUS"].startswith("reloaded")
    assert "configuration reloaded" in mx.log()

    # a file that does not load: RELOADING=1, then READY=1 all the same,
    # since the old configuration goes on serving
    cfg.write_text("server: [\n")
    mx.signal(signal.SIGHUP)
    expect(n, "RELOADING", mx)
    ready = expect(n, "READY", mx)
    assert ready["READY"] == "1"
    assert "reload failed" in ready["STATUS"]
    assert greets(port)
    assert deliver(port) == {}

    mx.signal(signal.SIGTERM)
    stopping = expect(n, "STOPPING", mx)
    assert stopping["STOPPING"] == "1"
    assert mx.proc.wait(WAIT) == 0
    assert n.pending() == []
    n.close()


def test_abstract_notify_socket(env, tmp_path):
    sink = env.sink()
    port = free_port()
    n = Notify(f"@mxlb-test-{os.getpid()}-{port}")
    cfg = tmp_path / "mxlb.yaml"
    cfg.write_text(json.dumps(config(port, sink.port)))
    mx = start(env, cfg, n.addr)
    expect(n, "READY", mx)
    assert greets(port)
    mx.signal(signal.SIGINT)
    expect(n, "STOPPING", mx)
    assert mx.proc.wait(WAIT) == 0
    n.close()


def test_without_notify_socket_nothing_changes(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])  # NOTIFY_SOCKET unset (conftest's own start)
    assert deliver(mx.port) == {}
    assert "event=notify" not in mx.log()
    assert mx.stop() == 0


def test_user_is_the_current_user(env, tmp_path):
    sink = env.sink()
    port = free_port()
    me = pwd.getpwuid(os.getuid()).pw_name
    n = Notify(str(tmp_path / "notify"))
    cfg = tmp_path / "mxlb.yaml"
    cfg.write_text(json.dumps(config(port, sink.port, user=me)))
    r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mx = start(env, cfg, n.addr)
    expect(n, "READY", mx)
    assert deliver(port) == {}
    assert f"running as {me}" in mx.log()
    assert mx.stop() == 0


def test_nobody_with_user_nobody(env):
    """Started as nobody (as systemd's User= would) with server.user:
    nobody: nothing to drop, and no error."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start mxlb as nobody")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    for d in [MXLB, *MXLB.parents]:
        if not os.stat(d).st_mode & 0o001:
            pytest.skip(f"nobody cannot reach {MXLB} ({d} is not searchable by others)")
    sink = env.sink()
    port, admin = free_port(), free_port()
    # the test's tmp_path is root's alone; nobody needs to read the file
    d = Path(tempfile.mkdtemp(prefix="mxlb-nobody-"))
    try:
        d.chmod(0o755)
        cfg = d / "mxlb.yaml"
        cfg.write_text(json.dumps(config(port, sink.port, admin=f"127.0.0.1:{admin}",
                                         user="nobody")))
        cfg.chmod(0o644)
        # an abstract socket: no file permissions stand between nobody and it
        n = Notify(f"@mxlb-test-nobody-{os.getpid()}-{port}")
        group = subprocess.run(["id", "-gn", "nobody"], capture_output=True,
                               text=True).stdout.strip()
        mx = start(env, cfg, n.addr, prefix=["setpriv", f"--reuid={nobody.pw_uid}",
                                              f"--regid={group}", "--clear-groups"])
        expect(n, "READY", mx)
        assert deliver(port) == {}
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=WAIT) as r:
            assert r.status == 200
        log = mx.log()
        assert "running as nobody" in log and "already" in log
        assert "cannot become" not in log
        status = Path(f"/proc/{mx.pid}/status").read_text()
        uid_line = next(x for x in status.splitlines() if x.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
        mx.signal(signal.SIGHUP)
        expect(n, "RELOADING", mx)
        assert expect(n, "READY", mx)["STATUS"].startswith("reloaded")
        assert mx.stop() == 0
        n.close()
    finally:
        shutil.rmtree(d)
