"""The command line, a clean stop on SIGTERM (SPEC §2), and io_uring
refused by the kernel."""
import os
import signal
import subprocess
import time

import pytest

from conftest import refused, MXLB, Client, HOST, deliver, wait_for


def test_version_help_and_check(env, tmp_path):
    assert subprocess.run([str(MXLB), "--version"], capture_output=True).returncode == 0
    assert subprocess.run([str(MXLB), "--help"], capture_output=True).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  workers: two\n")
    r = subprocess.run([str(MXLB), "-c", str(bad), "--check"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{bad}:2:12: ")
    r = subprocess.run([str(MXLB), "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    r = subprocess.run([str(MXLB), "-c", str(tmp_path / "missing.yaml")], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "missing.yaml:1:1:" in r.stderr


def test_busy_port_is_a_runtime_failure(env):
    sink = env.sink()
    r = subprocess.run([str(MXLB), "-c", "/dev/null"], capture_output=True, text=True)
    assert r.returncode == 1  # an empty file is a configuration error
    mx = env.mxlb([sink.port])
    twin = env.mxlb([sink.port], listener={"listen": [f"127.0.0.1:{mx.port}"]}, wait=False)
    # no silent sharing through SO_REUSEPORT: the second one says why and
    # exits 2, and the first keeps serving
    assert twin.proc.proc.wait(10) == 2
    assert "already in use" in twin.log()
    assert deliver(mx.port) == {}
    twin.stop()
    assert mx.stop() == 0


def test_sigterm_refuses_waiting_sessions_and_lets_relaying_finish(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], server={"shutdown_timeout": "10s"})
    waiting = Client(mx.port)
    assert waiting.reply()[0] == 220
    relaying = Client(mx.port)
    relaying.reply()
    assert relaying.cmd(b"EHLO r.test")[0] == 250
    relaying.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [relaying.reply()[0] for _ in range(3)] == [250, 250, 354]
    mx.proc.signal(signal.SIGTERM)
    assert waiting.reply() == (421, [f"4.3.2 {HOST} Service shutting down"])
    assert waiting.eof()
    # new connections are refused once the listeners are closed
    wait_for(lambda: refused(mx.port), what="the listener to close")
    relaying.send(b"Subject: late\r\n\r\nfinished after SIGTERM\r\n.\r\n")
    assert relaying.reply()[0] == 250
    assert relaying.cmd(b"QUIT")[0] == 221
    assert mx.proc.proc.wait(10) == 0
    assert b"finished after SIGTERM" in sink.messages()[0][0]


def test_shutdown_timeout_bounds_the_stop(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], server={"shutdown_timeout": "500ms"})
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO slow.test")[0] == 250
    mx.proc.signal(signal.SIGINT)
    assert mx.proc.proc.wait(10) == 0
    assert c.eof()


def test_io_uring_disabled_is_one_line_and_exit_2(env):
    path = "/proc/sys/kernel/io_uring_disabled"
    if not os.path.exists(path) or not os.access(path, os.W_OK):
        pytest.skip("kernel.io_uring_disabled cannot be set here")
    from conftest import free_port

    sink = env.sink()
    cfg = env.tmp / "u.yaml"
    cfg.write_text('server: {hostname: mx.test, admin: {listen: ""}}\n'
                   f'listeners: [{{name: a, listen: "127.0.0.1:{free_port()}", pool: p}}]\n'
                   f'pools: [{{name: p, health: {{check: none}}, backends: [{{name: b, '
                   f'address: "127.0.0.1:{sink.port}"}}]}}]\n')
    old = open(path).read().strip()
    try:
        with open(path, "w") as f:
            f.write("2")
        r = subprocess.run([str(MXLB), "-c", str(cfg)], capture_output=True, text=True,
                           timeout=10)
    finally:
        with open(path, "w") as f:
            f.write(old)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "io_uring is unavailable" in lines[0]


def test_server_user_drops_privileges(env):
    import pwd

    if os.getuid() != 0:
        pytest.skip("needs root to drop privileges")
    sink = env.sink()
    mx = env.mxlb([sink.port], server={"user": "nobody"})
    uid = int([l for l in open(f"/proc/{mx.proc.pid}/status") if l.startswith("Uid:")][0].split()[1])
    assert uid == pwd.getpwnam("nobody").pw_uid
    assert deliver(mx.port) == {}
    assert "running as nobody" in mx.log()
    assert mx.stop() == 0


def test_shipped_examples_pass_check(certs, tmp_path):
    """Every example passes --check, its certificates (/etc/mxlb/NAME-KIND.crt)
    made by the test CA in a temporary directory."""
    import re
    import shutil
    from pathlib import Path

    top = Path(__file__).resolve().parents[2]
    examples = sorted((top / "config" / "examples").glob("*.yaml"))
    assert len(examples) >= 3
    for ex in examples:
        text = ex.read_text()
        for name, kind in set(re.findall(r"/etc/mxlb/([\w.-]+)-(rsa|ecdsa)\.crt", text)):
            crt, key = certs.leaf(name, kind)
            shutil.copy(crt, tmp_path / f"{name}-{kind}.crt")
            shutil.copy(key, tmp_path / f"{name}-{kind}.key")
        cfg = tmp_path / ex.name
        cfg.write_text(text.replace("/etc/mxlb/", f"{tmp_path}/"))
        r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
        assert r.returncode == 0, f"{ex}: {r.stderr}"
