"""Who may use the admin server (SPEC §12) and one owner per address (SPEC
§11): Host and Origin checks, the bearer token, the unix socket, a second
mxlb on addresses the first holds, and what --check says about the admin
address. Real clients: curl, urllib and http.client."""
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import MXLB, deliver, free_port, wait_for

TOKEN = "access-tests-0123456789abcdef"


def start(env, backends, listen=None, token=TOKEN, **kw):
    """mxlb whose admin server listens on `listen` (default a free loopback
    port) with `token` ("" or None: no token key at all)."""
    admin = {"listen": listen or f"127.0.0.1:{free_port()}"}
    if token:
        admin["token"] = token
    mx = env.mxlb(backends, server={"admin": admin, **kw.pop("server", {})}, **kw)
    if not admin["listen"].startswith("unix:"):
        mx.admin_port = int(admin["listen"].rsplit(":", 1)[1])
    return mx


def request(mx, method, path, headers=None, host=None):
    """(status, headers, body) with http.client; `host` replaces the Host it sends."""
    conn = http.client.HTTPConnection("127.0.0.1", mx.admin_port, timeout=5)
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    conn.request(method, path, body=b"" if method == "POST" else None, headers=h)
    r = conn.getresponse()
    out = (r.status, dict(r.getheaders()), r.read().decode())
    conn.close()
    return out


def raw(mx, data):
    with socket.create_connection(("127.0.0.1", mx.admin_port), timeout=10) as s:
        s.sendall(data)
        return s.recv(500).decode()


def backend_states(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/status", timeout=5) as r:
        return {b["name"]: b["state"] for b in json.load(r)["pools"][0]["backends"]}


def curl(*args):
    r = subprocess.run(["curl", "-sS", "-o", "/dev/stdout", "-w", "\n%{http_code} %{local_port}",
                        *args], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    code, port = tail.split()
    return int(code), port, body


def admin_lines(mx):
    return [l for l in mx.log().splitlines() if "event=admin" in l]


# ---- Host and Origin ----

def test_forged_cross_origin_post_is_refused_and_changes_nothing(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    # the form another site posts: its Host (DNS rebinding), its Origin, no Content-Length
    forged = (b"POST /backends/main/b0/disable HTTP/1.1\r\nHost: evil.example\r\n"
              b"Origin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n")
    assert raw(mx, forged).startswith("HTTP/1.1 403 ")
    # even with the token: the Host alone refuses it
    assert request(mx, "POST", "/backends/main/b0/disable", host="evil.example:8025",
                   headers={"Authorization": f"Bearer {TOKEN}"})[0] == 403
    # a right Host but another site's Origin (a form on http://127.0.0.1 posting cross-site)
    for origin in ["http://evil.example", "null", f"http://localhost:{mx.admin_port + 1}",
                   f"http://127.0.0.1:{mx.admin_port}.evil.example"]:
        assert request(mx, "POST", "/backends/main/b0/disable",
                       headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"})[0] == 403, origin
    # reading is refused to a rebound name too
    assert request(mx, "GET", "/status", host="evil.example")[0] == 403
    assert backend_states(mx) == {"b0": "up"}
    assert deliver(mx.port) == {}
    refused = [l for l in admin_lines(mx) if "status=403" in l]
    assert len(refused) >= 7 and all("client=127.0.0.1:" in l for l in refused)
    assert mx.stop() == 0


def test_own_host_names_and_same_origin_are_accepted(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    p = mx.admin_port
    for host in [f"127.0.0.1:{p}", "127.0.0.1", "localhost", f"localhost:{p}", "LocalHost:9999",
                 "mx.test"]:
        assert request(mx, "GET", "/status", host=host)[0] == 200, host
    assert request(mx, "POST", "/backends/main/b0/drain",
                   headers={"Origin": f"http://127.0.0.1:{p}", **auth})[0] == 200
    assert request(mx, "POST", "/backends/main/b0/enable", host=f"localhost:{p}",
                   headers={"Origin": f"http://localhost:{p}", **auth})[0] == 200
    assert backend_states(mx) == {"b0": "up"}
    assert mx.stop() == 0


# ---- the token ----

def test_token_missing_is_401_and_wrong_is_403(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    code, headers, _ = request(mx, "POST", "/backends/main/b0/disable")
    assert code == 401
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    for value in [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN]:
        assert request(mx, "POST", "/backends/main/b0/disable",
                       headers={"Authorization": value})[0] == 403, value
    # urllib, as a script would do it
    req = urllib.request.Request(f"http://127.0.0.1:{mx.admin_port}/backends/main/b0/drain",
                                 method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401
    assert backend_states(mx) == {"b0": "up"}
    assert TOKEN not in mx.log()
    assert mx.stop() == 0


def test_actions_over_tcp_are_refused_without_a_configured_token(env):
    sink = env.sink()
    mx = start(env, [sink.port], token=None)
    assert request(mx, "POST", "/backends/main/b0/disable")[0] == 403
    assert request(mx, "POST", "/backends/main/b0/disable",
                   headers={"Authorization": "Bearer anything-at-all-here"})[0] == 403
    code, _, body = curl("-X", "POST", f"http://127.0.0.1:{mx.admin_port}/backends/main/b0/drain")
    assert code == 403 and "server.admin.token" in body
    assert backend_states(mx) == {"b0": "up"}
    assert mx.stop() == 0


def test_right_token_acts_and_the_log_names_the_requester(env):
    a, b = env.sink(), env.sink()
    mx = start(env, [a.port, b.port])
    code, port, body = curl("-X", "POST", "-H", f"Authorization: Bearer {TOKEN}",
                            f"http://127.0.0.1:{mx.admin_port}/backends/main/b0/disable")
    assert (code, body.strip()) == (200, "ok")
    assert backend_states(mx) == {"b0": "disabled", "b1": "up"}
    line = wait_for(lambda: [l for l in admin_lines(mx) if "status=200" in l])[-1]
    assert f"client=127.0.0.1:{port}" in line
    assert "path=/backends/main/b0/disable" in line and "state=disabled" in line
    for _ in range(3):
        assert deliver(mx.port) == {}
    assert not a.messages() and len(b.messages()) == 3
    code, port, _ = curl("-X", "POST", "-H", f"authorization: bearer {TOKEN}",
                         f"http://localhost:{mx.admin_port}/backends/main/b0/weight?value=3")
    assert code == 200
    assert wait_for(lambda: [l for l in admin_lines(mx) if f"client=127.0.0.1:{port}" in l])
    assert mx.stop() == 0


def test_reads_need_no_token(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        assert r.status == 200 and "mxlb_backend_up" in r.read().decode()
    code, _, body = curl(f"http://localhost:{mx.admin_port}/status")
    assert code == 200 and json.loads(body)["pools"][0]["name"] == "main"
    assert request(mx, "GET", "/metrics", headers={"Origin": f"http://127.0.0.1:{mx.admin_port}"})[0] == 200
    assert mx.stop() == 0


def test_a_reload_changes_the_token(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    new = "a-new-token-after-the-reload"
    doc = json.loads(mx.cfg_path.read_text())
    doc["server"]["admin"]["token"] = new
    mx.cfg_path.write_text(json.dumps(doc))
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in mx.log())
    assert request(mx, "POST", "/backends/main/b0/drain",
                   headers={"Authorization": f"Bearer {TOKEN}"})[0] == 403
    assert request(mx, "POST", "/backends/main/b0/drain",
                   headers={"Authorization": f"Bearer {new}"})[0] == 200
    assert mx.stop() == 0


# ---- the unix socket ----

def test_unix_socket_admin(env, tmp_path):
    sink = env.sink()
    path = tmp_path / "admin.sock"
    # left over from a run that did not stop cleanly: nobody answers on it
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    mx = start(env, [sink.port], listen=f"unix:{path}", token=None)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    code, _, body = curl("--unix-socket", str(path), "http://localhost/status")
    assert code == 200 and json.loads(body)["pools"][0]["backends"][0]["state"] == "up"
    # the file mode is the access control: no token needed here
    code, _, _ = curl("--unix-socket", str(path), "-X", "POST", "http://localhost/backends/main/b0/drain")
    assert code == 200
    code, _, body = curl("--unix-socket", str(path), "http://localhost/status")
    assert json.loads(body)["pools"][0]["backends"][0]["state"] == "drain"
    line = [l for l in admin_lines(mx) if "status=200" in l][-1]
    assert f'client="unix:uid={os.getuid()},pid=' in line
    # Host and Origin still apply
    code, _, _ = curl("--unix-socket", str(path), "-H", "Origin: http://evil.example", "-X", "POST",
                      "http://localhost/backends/main/b0/enable")
    assert code == 403
    # a reload keeps the socket (the same file, still answering)
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in mx.log())
    assert os.lstat(path).st_ino == st.st_ino
    assert curl("--unix-socket", str(path), "http://localhost/metrics")[0] == 200
    assert curl("--unix-socket", str(path), "-X", "POST", "http://localhost/backends/main/b0/enable")[0] == 200
    assert deliver(mx.port) == {}
    assert mx.stop() == 0
    assert not path.exists()


def test_unix_socket_with_a_token_needs_it(env, tmp_path):
    sink = env.sink()
    path = tmp_path / "admin.sock"
    mx = start(env, [sink.port], listen=f"unix:{path}")
    assert curl("--unix-socket", str(path), "-X", "POST", "http://localhost/backends/main/b0/drain")[0] == 401
    assert curl("--unix-socket", str(path), "-X", "POST", "-H", f"Authorization: Bearer {TOKEN}",
                "http://localhost/backends/main/b0/drain")[0] == 200
    assert mx.stop() == 0


def test_unix_socket_path_that_is_not_a_socket_is_left_alone(env, tmp_path):
    sink = env.sink()
    path = tmp_path / "admin.sock"
    path.write_text("not mine")
    mx = start(env, [sink.port], listen=f"unix:{path}", wait=False)
    assert mx.proc.proc.wait(10) == 2
    assert "not a socket" in mx.log()
    assert path.read_text() == "not mine"


def test_reload_moves_the_admin_server_to_a_unix_socket_and_back(env, tmp_path):
    sink = env.sink()
    mx = start(env, [sink.port])
    path = tmp_path / "admin.sock"
    tcp = mx.cfg_path.read_text()
    doc = json.loads(tcp)
    doc["server"]["admin"]["listen"] = f"unix:{path}"
    mx.cfg_path.write_text(json.dumps(doc))
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: mx.log().count("configuration reloaded") == 1)
    assert curl("--unix-socket", str(path), "http://localhost/status")[0] == 200
    wait_for(lambda: subprocess.run(["curl", "-s", f"http://127.0.0.1:{mx.admin_port}/"]).returncode != 0,
             what="the TCP admin socket to close")
    mx.cfg_path.write_text(tcp)
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: mx.log().count("configuration reloaded") == 2)
    assert request(mx, "GET", "/status")[0] == 200
    assert not path.exists()  # the socket it no longer uses is gone
    assert mx.stop() == 0


# ---- one owner per address ----

def served_by(mx):
    return len([s for s in mx.sessions() if s.get("result") == "relayed"])


def test_second_mxlb_on_the_same_smtp_address_exits_2(env):
    sink = env.sink()
    first = start(env, [sink.port])
    before = served_by(first)
    twin = start(env, [sink.port], listener={"listen": [f"127.0.0.1:{first.port}"]}, wait=False)
    assert twin.proc.proc.wait(10) == 2
    lines = [l for l in twin.log().splitlines() if l.strip()]
    assert any("already in use" in l and f"127.0.0.1:{first.port}" in l for l in lines), lines
    for _ in range(20):
        assert deliver(first.port) == {}
    assert wait_for(lambda: served_by(first) - before == 20)
    assert len(sink.messages()) == 20
    assert first.stop() == 0


def test_second_mxlb_on_the_same_admin_address_exits_2(env):
    sink = env.sink()
    first = start(env, [sink.port])
    twin = start(env, [sink.port], listen=f"127.0.0.1:{first.admin_port}", wait=False)
    assert twin.proc.proc.wait(10) == 2
    assert "already in use" in twin.log()
    # the twin never took the SMTP address of its own either
    assert subprocess.run(["curl", "-s", f"http://127.0.0.1:{twin.port}/"]).returncode != 0
    for _ in range(20):
        code, _, body = curl(f"http://127.0.0.1:{first.admin_port}/metrics")
        assert code == 200 and "mxlb_backend_up" in body
    assert deliver(first.port) == {}
    assert first.stop() == 0


def test_second_mxlb_on_the_same_unix_socket_exits_2(env, tmp_path):
    sink = env.sink()
    path = tmp_path / "admin.sock"
    first = start(env, [sink.port], listen=f"unix:{path}", token=None)
    twin = start(env, [sink.port], listen=f"unix:{path}", token=None, wait=False)
    assert twin.proc.proc.wait(10) == 2
    assert "already in use" in twin.log()
    for _ in range(20):
        assert curl("--unix-socket", str(path), "http://localhost/status")[0] == 200
    assert first.stop() == 0


def test_reload_onto_an_address_another_process_holds_changes_nothing(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    other = start(env, [sink.port])
    doc = json.loads(mx.cfg_path.read_text())
    doc["listeners"][0]["listen"] = [f"127.0.0.1:{mx.port}", f"127.0.0.1:{other.port}"]
    mx.cfg_path.write_text(json.dumps(doc))
    before = served_by(other)
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "configuration is unchanged" in mx.log())
    assert f"127.0.0.1:{other.port} (listener mx) is already in use" in mx.log()
    for _ in range(10):
        assert deliver(other.port) == {}
    assert wait_for(lambda: served_by(other) - before == 10)
    assert deliver(mx.port) == {}
    assert mx.stop() == 0 and other.stop() == 0


def test_reload_swapping_admin_and_listener_addresses_changes_nothing(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    doc = json.loads(mx.cfg_path.read_text())
    doc["listeners"][0]["listen"] = [f"127.0.0.1:{mx.admin_port}"]
    doc["server"]["admin"]["listen"] = f"127.0.0.1:{mx.port}"
    mx.cfg_path.write_text(json.dumps(doc))
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "configuration is unchanged" in mx.log())
    assert "in a reload of its own" in mx.log()
    assert deliver(mx.port) == {}
    assert request(mx, "GET", "/status")[0] == 200
    assert mx.stop() == 0


# ---- what --check says ----

def check(tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    os.chmod(cfg, 0o640)
    r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
    return cfg, r


POOLS = 'pools: [{name: p, health: {check: none}, backends: [{name: b, address: "127.0.0.1:2"}]}]\n'


def where(text, needle, nth=1):
    """LINE:COLUMN of the nth occurrence of needle in text."""
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return f"{line}:{at - (text.rfind(chr(10), 0, at) + 1) + 1}"


def test_admin_on_a_listener_address_is_a_config_error(tmp_path):
    port = free_port()
    text = (f'server:\n  admin: {{listen: "127.0.0.1:{port}"}}\n'
            f'listeners:\n  - {{name: mx, listen: ["127.0.0.1:{port + 1}", "127.0.0.1:{port}"], pool: p}}\n'
            + POOLS)
    cfg, r = check(tmp_path, text)
    assert r.returncode == 1
    at = where(text, f'"127.0.0.1:{port}"', 2)
    assert r.stderr.startswith(f"{cfg}:{at}: "), r.stderr
    assert "admin" in r.stderr
    # the wildcard covers every address of the port
    text = (f'server:\n  admin: {{listen: "0.0.0.0:{port}"}}\n'
            f'listeners: [{{name: mx, listen: "127.0.0.1:{port}", pool: p}}]\n' + POOLS)
    cfg, r = check(tmp_path, text)
    at = where(text, '"127.0.0.1')
    assert r.returncode == 1 and r.stderr.startswith(f"{cfg}:{at}: "), r.stderr
    # the default admin address counts too
    text = 'listeners: [{name: mx, listen: "127.0.0.1:8025", pool: p}]\n' + POOLS
    cfg, r = check(tmp_path, text)
    at = where(text, '"127.0.0.1')
    assert r.returncode == 1 and r.stderr.startswith(f"{cfg}:{at}: "), r.stderr
    # and mxlb itself refuses to start on it, saying so in a log line
    r = subprocess.run([str(MXLB), "-c", str(cfg)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and " level=error event=config " in r.stderr
    assert f'msg="{cfg}:{at}: ' in r.stderr, r.stderr


def test_check_warns_when_admin_listens_beyond_loopback(tmp_path):
    port = free_port()
    lst = f'listeners: [{{name: mx, listen: "127.0.0.1:{port}", pool: p}}]\n'
    for addr in ["0.0.0.0:8025", "[::]:8025"]:
        cfg, r = check(tmp_path, f'server:\n  admin: {{listen: "{addr}", token: {TOKEN}}}\n' + lst + POOLS)
        assert r.returncode == 0, r.stderr
        warn = [l for l in r.stderr.splitlines() if "warning" in l]
        assert len(warn) == 1 and warn[0].startswith(f"{cfg}:2:19: warning: server.admin.listen"), r.stderr
        assert addr in warn[0]
    for addr in ["127.0.0.1:8025", "[::1]:8025", "localhost:8025", f"unix:{tmp_path}/a.sock"]:
        cfg, r = check(tmp_path, f'server:\n  admin: {{listen: "{addr}"}}\n' + lst + POOLS)
        assert r.returncode == 0 and "warning" not in r.stderr, (addr, r.stderr)


def test_token_in_a_world_readable_file_is_warned_about(tmp_path):
    port = free_port()
    cfg, r = check(tmp_path, f'server:\n  admin: {{token: {TOKEN}}}\n'
                   f'listeners: [{{name: mx, listen: "127.0.0.1:{port}", pool: p}}]\n' + POOLS)
    assert r.returncode == 0 and "warning" not in r.stderr
    os.chmod(cfg, 0o644)
    r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 0 and "anyone can read" in r.stderr and TOKEN not in r.stderr
