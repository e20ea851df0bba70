"""Admin HTTP (/metrics valid for promtool, /status, backend actions,
malformed requests) and health checks seen through it. Who may use it
(Host, Origin, the token, the unix socket): test_admin_access.py."""
import json
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import Client, deliver, free_port, wait_for

TOKEN = "admin-tests-0123456789abcdef"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


def start(env, backends, **kw):
    """mxlb with an admin token, so that the tests may POST actions."""
    admin = free_port()
    server = {"admin": {"listen": f"127.0.0.1:{admin}", "token": TOKEN}, **kw.pop("server", {})}
    mx = env.mxlb(backends, server=server, **kw)
    mx.admin_port = admin
    return mx


def get(mx, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def post(mx, path):
    req = urllib.request.Request(f"http://127.0.0.1:{mx.admin_port}{path}", method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def raw(mx, data):
    with socket.create_connection(("127.0.0.1", mx.admin_port), timeout=10) as s:
        s.sendall(data)
        return s.recv(200).split(b"\r\n")[0].decode()


def status(mx):
    return json.loads(get(mx, "/status")[1])


def test_metrics_are_valid_prometheus_text(env):
    sink = env.sink()
    mx = env.mxlb([sink.port])
    for _ in range(3):
        assert deliver(mx.port) == {}
    # a session is counted when it ends, which may be just after the client saw 221
    relayed = 'mxlb_sessions_total{listener="mx",result="relayed"} 3'
    assert wait_for(lambda: relayed in get(mx, "/metrics")[1])
    code, text = get(mx, "/metrics")
    assert code == 200
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'mxlb_backend_sessions_total{pool="main",backend="b0"} 3' in text
    for name in ["mxlb_sessions_active", "mxlb_backend_up", "mxlb_backend_sessions_active",
                 "mxlb_backend_connect_failures_total", "mxlb_health_checks_total",
                 "mxlb_bytes_total", "mxlb_tls_handshakes_total",
                 "mxlb_tls_handshake_failures_total", "mxlb_starttls_discarded_bytes_total",
                 "mxlb_session_duration_seconds_bucket", "mxlb_route_seconds_count"]:
        assert name in text, name
    assert mx.stop() == 0


def test_malformed_admin_requests_get_4xx(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    assert raw(mx, b"garbage\r\n\r\n").endswith("400 Bad Request")
    assert raw(mx, b"GET /nope HTTP/1.1\r\n\r\n").endswith("404 Not Found")
    assert raw(mx, b"DELETE /metrics HTTP/1.1\r\n\r\n").endswith("405 Method Not Allowed")
    assert raw(mx, b"POST /backends/main/b0/drain HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"
               ).endswith("413 Content Too Large")
    assert raw(mx, b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 431")
    assert raw(mx, b"POST /backends/main/b0/weight?value=x HTTP/1.1\r\n" + AUTH + b"\r\n"
               ).endswith("400 Bad Request")
    assert raw(mx, b"POST /backends/main/b0/weight?value=+5 HTTP/1.1\r\n" + AUTH + b"\r\n"
               ).endswith("400 Bad Request")
    assert raw(mx, b"POST /backends/main/zz/drain HTTP/1.1\r\n" + AUTH + b"\r\n"
               ).endswith("404 Not Found")
    assert raw(mx, b"GET /status HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").endswith("400 Bad Request")
    assert raw(mx, b"GET /status HTTP/1.1\r\n folded: x\r\n\r\n").endswith("400 Bad Request")
    assert raw(mx, b"POST /backends/main/b0/drain HTTP/1.1\r\n" + AUTH +
               b"Transfer-Encoding: chunked\r\n\r\n").startswith("HTTP/1.1 411")
    assert raw(mx, b"POST /backends/main/b0/drain HTTP/1.1\r\n" + AUTH +
               b"CONTENT-LENGTH: 1\r\ncontent-length: 1\r\n\r\nx").endswith("400 Bad Request")
    assert status(mx)["pools"][0]["backends"][0]["state"] == "up"
    # a slow client is cut off; mail goes on meanwhile
    with socket.create_connection(("127.0.0.1", mx.admin_port)) as s:
        s.sendall(b"GET /sta")
        assert deliver(mx.port) == {}
        assert s.recv(100).startswith(b"HTTP/1.1 408")
    assert mx.stop() == 0


def test_drain_disable_enable_and_weight(env):
    a, b = env.sink(), env.sink()
    mx = start(env, [a.port, b.port])
    held = Client(mx.port)
    held.reply()
    assert held.cmd(b"EHLO held.test")[0] == 250
    held_backend = wait_for(lambda: status(mx)["pools"][0]["backends"][0]["active"] +
                            status(mx)["pools"][0]["backends"][1]["active"] == 1 and
                            [x for x in status(mx)["pools"][0]["backends"] if x["active"]][0]["name"])
    assert post(mx, f"/backends/main/{held_backend}/drain") == 200
    st = {x["name"]: x for x in status(mx)["pools"][0]["backends"]}
    assert st[held_backend]["state"] == "drain"
    other = "b1" if held_backend == "b0" else "b0"
    for _ in range(4):
        assert deliver(mx.port) == {}
    relayed = lambda: [s["backend"] for s in mx.sessions() if s["result"] == "relayed"]
    assert wait_for(lambda: len(relayed()) == 4 and relayed()) == [other] * 4
    # the drained backend's session finishes normally
    held.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [held.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert held.cmd(b"drained\r\n.")[0] == 250
    assert post(mx, f"/backends/main/{other}/disable") == 200
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO none.test")[0] == 421
    assert post(mx, f"/backends/main/{held_backend}/enable") == 200
    assert post(mx, f"/backends/main/{other}/enable") == 200
    assert post(mx, f"/backends/main/{other}/weight?value=0") == 200
    for _ in range(3):
        assert deliver(mx.port) == {}
    wait_for(lambda: len(relayed()) == 7)
    assert relayed()[-3:] == [held_backend] * 3
    assert mx.stop() == 0


def test_health_checks_see_a_backend_die_and_return(env):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([a.port, b.port], pool={"health": {"check": "smtp", "interval": "200ms",
                                                      "timeout": "500ms", "rise": 2, "fall": 2}})
    up = lambda name: {x["name"]: x["state"] for x in status(mx)["pools"][0]["backends"]}[name]
    wait_for(lambda: status(mx)["pools"][0]["backends"][0]["last_check"], what="a first check")
    assert up("b0") == "up"
    caps = status(mx)["pools"][0]["backends"][0]["capabilities"]
    assert "PIPELINING" in caps and "CHUNKING" in caps
    port = a.port
    a.proc.stop()
    wait_for(lambda: up("b0") == "down", timeout=5, what="b0 down")
    wait_for(lambda: "state=down" in mx.log())
    assert 'mxlb_backend_up{pool="main",backend="b0"} 0' in get(mx, "/metrics")[1]
    before = mx.log().count("event=backend_error")
    for _ in range(4):
        assert deliver(mx.port) == {}
    assert mx.log().count("event=backend_error") == before  # no session tried it
    a2 = env.sink(port=port)
    wait_for(lambda: up("b0") == "up", timeout=5, what="b0 up again")
    for _ in range(4):
        assert deliver(mx.port) == {}
    assert a2.messages()
    # every check ended with QUIT: the sink saw whole sessions, no message
    wait_for(lambda: a2.stats().get("messages") == len(a2.messages()))
    assert mx.stop() == 0
