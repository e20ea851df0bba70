"""File-descriptor exhaustion: mxlb under a small RLIMIT_NOFILE with more
clients than it may hold backs off accepting instead of spinning, keeps
file descriptors in reserve for health checks and backend connects, and
serves new clients by itself once the load goes away."""
import json
import os
import re
import resource
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import HOST, MXLB, Mxlb, Proc, deliver, free_port, wait_for, wait_port

NOFILE = 256
CLIENTS = 600
WINDOW = 3.0  # seconds measured while the clients are held


def start_limited(env, backend_port, nofile):
    """mxlb, and only mxlb, under `ulimit -n nofile`, in front of one backend
    with smtp health checks every 500 ms."""
    port, admin = free_port(), free_port()
    cfg = {
        "server": {"hostname": HOST, "workers": 2, "shutdown_timeout": "5s",
                   "admin": {"listen": f"127.0.0.1:{admin}"}},
        "listeners": [{"name": "mx", "listen": [f"127.0.0.1:{port}"], "pool": "main",
                       "timeouts": {"connect": "1s", "backend_reply": "2s"}}],
        "pools": [{"name": "main",
                   "health": {"check": "smtp", "interval": "500ms", "timeout": "1s"},
                   "backends": [{"name": "b0", "address": f"127.0.0.1:{backend_port}"}]}],
    }
    d = env._name("mxlb")
    d.mkdir()
    cfg_path = d / "mxlb.yaml"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    r = subprocess.run([str(MXLB), "-c", str(cfg_path), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    # sh sets soft and hard limit alike; exec keeps the PID
    proc = Proc(["/bin/sh", "-c", f'ulimit -n {nofile} && exec "$0" -c "$1"', str(MXLB),
                 str(cfg_path)], d / "log")
    env.procs.append(proc)
    m = Mxlb(proc, port, admin, cfg_path)
    wait_port(port)
    wait_for(lambda: "event=session" in m.log(), what="the probe session to end")
    return m


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def checks(mx):
    """(ok, failed) health checks of b0 so far; None when /metrics does not
    answer."""
    try:
        m = metrics(mx)
    except OSError:
        return None
    get = lambda r: int(re.search(  # noqa: E731
        rf'^mxlb_health_checks_total\{{pool="main",backend="b0",result="{r}"\}} (\d+)$',
        m, re.M).group(1))
    return get("ok"), get("failed")


def first_reply(s):
    """What a held connection got so far (b"" for nothing yet)."""
    try:
        return s.recv(4096, socket.MSG_DONTWAIT)
    except (BlockingIOError, OSError):
        return b""


def backend_up(mx):
    return re.search(r'^mxlb_backend_up\{pool="main",backend="b0"\} 1$', metrics(mx), re.M)


def log_size(mx):
    return os.path.getsize(mx.proc.log_path)


def log_between(mx, start, end):
    """The log from byte start to end: the lines of a window (a spinning
    mxlb writes hundreds of MB; read no more than 1 MB of it)."""
    with open(mx.proc.log_path, "rb") as f:
        f.seek(start)
        return f.read(min(end - start, 1 << 20)).decode(errors="replace")


def fds_open(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_idle(port, n):
    """n connections, opened without waiting (a full backlog must not block
    the test) and never read from."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


def raise_own_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the test needs {need} open files, the hard limit is {hard}")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_fd_exhaustion_backs_off_keeps_health_checks_and_recovers(env):
    raise_own_nofile(CLIENTS + 256)
    sink = env.sink()
    mx = start_limited(env, sink.port, NOFILE)
    limits = open(f"/proc/{mx.proc.pid}/limits").read()
    assert re.search(rf"^Max open files\s+{NOFILE}\s+{NOFILE}\s", limits, re.M), limits
    wait_for(lambda: backend_up(mx), timeout=10, what="the backend to come up")

    held = open_idle(mx.port, CLIENTS)
    try:
        # mxlb takes clients until it runs into the limit, then settles
        wait_for(lambda: fds_open(mx.proc.pid) >= NOFILE - 64, timeout=10,
                 what="mxlb to take clients up to its limit")
        time.sleep(1.0)
        checks0 = checks(mx)
        size0, cpu0, t0 = log_size(mx), cpu_seconds(mx.proc.pid), time.monotonic()
        time.sleep(WINDOW)
        size1, cpu1, t1 = log_size(mx), cpu_seconds(mx.proc.pid), time.monotonic()
        checks1 = checks(mx)
        cpu_rate = (cpu1 - cpu0) / (t1 - t0)
        window = log_between(mx, size0, size1)
        nlines = window.count("\n") if size1 - size0 < 1 << 20 else None
        print(f"cpu {cpu_rate:.3f} s/s, {nlines} log lines ({size1 - size0} bytes) in "
              f"{t1 - t0:.1f} s, {fds_open(mx.proc.pid)} fds open, health checks "
              f"{checks0} -> {checks1} (ok, failed)")
        assert cpu_rate < 0.2, f"mxlb used {cpu_rate:.2f} s of CPU per second"
        assert nlines is not None and nlines < 100, window[-3000:]
        # health checks found a file descriptor: the backend never went down
        assert backend_up(mx), metrics(mx)
        assert "state=down" not in mx.log()
        assert checks0 and checks1, "/metrics did not answer"
        assert checks1[0] - checks0[0] >= 3 and checks1[1] == checks0[1], (checks0, checks1)
        # accepting backed off (one line per pause) and the clients over the
        # reserve were told to come back later
        assert "not accepting for" in mx.log()
        assert "out of file descriptors" in mx.log()
        replies = [first_reply(s)[:9] for s in held]
        greeted, refused = replies.count(b"220 mx.te"), replies.count(b"421 4.3.2")
        print(f"{greeted} clients greeted, {refused} told 421 4.3.2, "
              f"{replies.count(b'')} waiting")
        assert greeted > 100 and refused > 0
        assert greeted + refused + replies.count(b"") == CLIENTS, set(replies)
    finally:
        for s in held:
            s.close()

    # the held sessions end; accepting resumes by itself
    def delivered():
        try:
            return deliver(mx.port) == {}
        except OSError:  # smtplib errors included
            return False

    wait_for(delivered, timeout=15, what="a client served after the load")
    wait_for(sink.messages, timeout=5, what="the message at the sink")
    assert backend_up(mx)
    assert mx.stop() == 0
