"""What /status and /metrics say for operators (SPEC §12): the process
(version, start, uptime, reloads), listeners, per backend the reason of
the last failed check and the time of the last up/down change, explicit
active/total session counts, weights and admin states, and the refusals
mxlb answers itself, by reason. The page that shows them:
test_status_page.py; the older fields: test_admin.py."""
import json
import re
import socket
import subprocess
import time
import urllib.request

from conftest import MXLB, Client, deliver, free_port, wait_for

TOKEN = "fields-tests-0123456789abcdef"


def start(env, backends, server=None, **kw):
    """mxlb with an admin token, so that the tests may POST actions."""
    admin = free_port()
    srv = {"admin": {"listen": f"127.0.0.1:{admin}", "token": TOKEN}, **(server or {})}
    mx = env.mxlb(backends, server=srv, **kw)
    mx.admin_port = admin
    return mx


def get(mx, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}{path}", timeout=5) as r:
        return r.read().decode()


def post(mx, path):
    req = urllib.request.Request(f"http://127.0.0.1:{mx.admin_port}{path}", method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def status(mx):
    return json.loads(get(mx, "/status"))


def backends(mx):
    return {b["name"]: b for b in status(mx)["pools"][0]["backends"]}


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(mx):
    """{(name, frozenset of label pairs): value} of every sample."""
    out = {}
    for line in get(mx, "/metrics").splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, line
        out[(m.group(1), frozenset(LABEL.findall(m.group(2) or "")))] = float(m.group(3))
    return out


def value(s, name, **labels):
    return s[(name, frozenset(labels.items()))]


def version():
    r = subprocess.run([str(MXLB), "--version"], capture_output=True, text=True)
    return re.match(r"mxlb (\S+)", r.stdout).group(1)


# ---- /status ----

def test_status_has_the_process_listeners_and_explicit_session_counts(env):
    a, b = env.sink(), env.sink()
    before = time.time() * 1000
    # checks that a loaded machine cannot fail: the backends stay up throughout
    mx = start(env, [a.port, b.port], pool={"health": {"check": "smtp", "interval": "200ms",
                                                       "timeout": "10s", "fall": 100}})
    wait_for(lambda: all(x["last_check"] for x in backends(mx).values()), what="first checks")
    st = status(mx)
    assert st["version"] == version()
    assert before - 1000 <= st["start_time_ms"] <= time.time() * 1000
    assert st["config_loaded_ms"] == st["start_time_ms"]
    assert isinstance(st["uptime_seconds"], int) and st["uptime_seconds"] >= 0
    assert st["reloads"] == {"ok": 0, "failed": 0}
    assert st["actions"] is True and st["token_required"] is True
    assert TOKEN not in json.dumps(st)
    # the probe session of the fixture is the one so far
    assert st["listeners"] == [{"name": "mx", "addresses": [f"127.0.0.1:{mx.port}"],
                                "pool": "main", "active": 0, "total": 1, "refused": 0}]
    for x in st["pools"][0]["backends"]:
        assert {"8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "PIPELINING",
                "CHUNKING"} <= set(x["capabilities"]), x
        assert x["idle"] == 0 and x["up"] is True and x["admin"] == "enabled"
        assert x["last_check"]["reason"] is None and x["last_failure"] is None
        assert x["state_changed_ms"] is None  # up since the start

    held = Client(mx.port)
    held.reply()
    assert held.cmd(b"EHLO held.test")[0] == 250
    for _ in range(2):
        assert deliver(mx.port) == {}
    st = wait_for(lambda: (lambda s: s["listeners"][0]["total"] == 4 and
                           s["listeners"][0]["active"] == 1 and s)(status(mx)),
                  what="3 more sessions, one open")
    assert st["sessions"] == st["sessions_active"] == 1
    bes = st["pools"][0]["backends"]
    # the old keys keep their meaning: "active" open, "sessions" in total
    assert sum(x["sessions_active"] for x in bes) == 1
    assert sum(x["sessions_total"] for x in bes) == 3
    for x in bes:
        assert (x["active"], x["sessions"]) == (x["sessions_active"], x["sessions_total"])
    held.cmd(b"QUIT")
    wait_for(lambda: status(mx)["sessions_active"] == 0, what="the held session to end")
    wait_for(lambda: status(mx)["uptime_seconds"] >= 1, what="a second of uptime")
    assert mx.stop() == 0


def test_status_says_why_checks_failed_and_when_the_state_changed(env):
    refused_port = free_port()  # nothing listens there (yet)
    greets_554 = env.sink("--fail-greeting", "554")
    silent = env.sink("--greeting-delay", "1h")
    start_ms = time.time() * 1000
    mx = start(env, [refused_port, greets_554.port, silent.port],
               pool={"health": {"check": "smtp", "interval": "200ms", "timeout": "2s",
                                "rise": 1, "fall": 1}})
    wait_for(lambda: all(x["state"] == "down" for x in backends(mx).values()), what="all down")
    bes = wait_for(lambda: (lambda b: all(x["last_failure"] for x in b.values()) and b)(
        backends(mx)), what="three failures")
    reasons = {n: x["last_failure"]["reason"] for n, x in bes.items()}
    assert reasons == {"b0": "connect refused", "b1": "greeting answered 554",
                       "b2": "timeout reading greeting"}, reasons
    for x in bes.values():
        assert x["up"] is False and x["state_changed_ms"] >= start_ms
        assert x["last_check"]["ok"] is False
        assert x["last_check"]["reason"] == x["last_failure"]["reason"]
    went_down = bes["b0"]["state_changed_ms"]

    env.sink(port=refused_port)
    b0 = wait_for(lambda: (lambda x: x["state"] == "up" and x)(backends(mx)["b0"]),
                  what="b0 up")
    assert b0["state_changed_ms"] > went_down
    assert b0["last_check"]["ok"] is True and b0["last_check"]["reason"] is None
    # why it was down is still there after it came back
    assert b0["last_failure"]["reason"] == "connect refused"
    assert b0["last_failure"]["time_ms"] < b0["state_changed_ms"]
    assert mx.stop() == 0


# ---- /metrics ----

def test_metrics_build_info_weight_admin_state_and_reload_time(env):
    a, b = env.sink(), env.sink()
    mx = start(env, [{"address": f"127.0.0.1:{a.port}", "weight": 2},
                     {"address": f"127.0.0.1:{b.port}", "weight": 5}])
    text = get(mx, "/metrics")
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    s = samples(mx)
    assert value(s, "mxlb_build_info", version=version()) == 1
    assert value(s, "mxlb_reloads_total", result="ok") == 0
    assert value(s, "mxlb_reloads_total", result="failed") == 0
    assert value(s, "mxlb_config_last_reload_success_timestamp_seconds") == \
        status(mx)["start_time_ms"] // 1000
    assert value(s, "mxlb_backend_weight", pool="main", backend="b0") == 2
    assert value(s, "mxlb_backend_weight", pool="main", backend="b1") == 5

    def admin_states(backend):
        s = samples(mx)
        return {st: value(s, "mxlb_backend_admin_state", pool="main", backend=backend, state=st)
                for st in ("enabled", "drain", "disabled")}

    assert admin_states("b0") == {"enabled": 1, "drain": 0, "disabled": 0}
    assert post(mx, "/backends/main/b0/drain") == 200
    assert post(mx, "/backends/main/b1/disable") == 200
    assert post(mx, "/backends/main/b1/weight?value=7") == 200
    assert admin_states("b0") == {"enabled": 0, "drain": 1, "disabled": 0}
    assert admin_states("b1") == {"enabled": 0, "drain": 0, "disabled": 1}
    assert value(samples(mx), "mxlb_backend_weight", pool="main", backend="b1") == 7
    r = subprocess.run(["promtool", "check", "metrics"], input=get(mx, "/metrics"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mx.stop() == 0


def test_reloads_are_counted_by_result_with_the_time_of_the_last_good_one(env):
    sink = env.sink()
    mx = start(env, [sink.port])
    started = status(mx)["start_time_ms"]
    mx.rewrite(lambda d: d["pools"][0]["backends"][0].update(weight=4))
    mx.reload(1)
    st = wait_for(lambda: (lambda s: s["reloads"]["ok"] == 1 and s)(status(mx)),
                  what="the reload counted")
    assert st["reloads"]["failed"] == 0 and st["config_loaded_ms"] > started
    s = samples(mx)
    assert value(s, "mxlb_reloads_total", result="ok") == 1
    assert value(s, "mxlb_config_last_reload_success_timestamp_seconds") == \
        st["config_loaded_ms"] // 1000
    assert value(s, "mxlb_backend_weight", pool="main", backend="b0") == 4

    mx.cfg_path.write_text("server: [not, a, mapping\n")
    mx.reload(2)
    st2 = wait_for(lambda: (lambda s: s["reloads"]["failed"] == 1 and s)(status(mx)),
                   what="the failed reload counted")
    assert st2["reloads"]["ok"] == 1 and st2["config_loaded_ms"] == st["config_loaded_ms"]
    assert value(samples(mx), "mxlb_reloads_total", result="failed") == 1
    assert mx.stop() == 0


# ---- refusals by reason ----

def rejections(mx):
    s = samples(mx)
    return {dict(k[1])["reason"]: v for k, v in s.items()
            if k[0] == "mxlb_rejections_total" and dict(k[1])["listener"] == "mx"}


def connect_from(mx, source):
    """A client from another loopback address (127.0.0.0/8 is all ours)."""
    c = Client.__new__(Client)
    c.sock = socket.create_connection(("127.0.0.1", mx.port), timeout=10,
                                      source_address=(source, 0))
    c.f = c.sock.makefile("rb")
    return c


def expect(mx, counts):
    """Every reason at 0 but those of counts."""
    zero = {k: 0 for k in rejections(mx)}
    want = {**zero, **counts}
    wait_for(lambda: rejections(mx) == want, what=f"rejections {counts}")


def test_rejections_are_counted_by_reason(env):
    sink = env.sink()
    mx = start(env, [sink.port], server={"max_sessions": 2},
               listener={"max_sessions_per_client": 1})
    assert set(rejections(mx)) >= {"max_sessions", "max_sessions_per_client", "connection_rate",
                                   "screen", "fd_reserve", "require_tls", "tracker",
                                   "no_backend", "too_many_errors"}
    expect(mx, {})
    first = Client(mx.port)
    assert first.reply()[0] == 220
    second = Client(mx.port)  # the same address again
    assert second.reply()[0] == 421
    expect(mx, {"max_sessions_per_client": 1})
    other = connect_from(mx, "127.0.0.2")
    assert other.reply()[0] == 220
    third = connect_from(mx, "127.0.0.3")  # a third session: over server.max_sessions
    assert third.reply()[0] == 421
    expect(mx, {"max_sessions_per_client": 1, "max_sessions": 1})
    assert status(mx)["listeners"][0]["refused"] == 2
    for c in (first, other, second, third):
        c.close()
    wait_for(lambda: status(mx)["sessions_active"] == 0, what="the clients gone")

    c = Client(mx.port)
    c.reply()
    got = [c.cmd(b"BOGUS")[0] for _ in range(10)]
    assert got[-1] == 421
    c.close()
    expect(mx, {"max_sessions_per_client": 1, "max_sessions": 1, "too_many_errors": 1})

    assert post(mx, "/backends/main/b0/disable") == 200
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO nobody.test")[0] == 421
    c.close()
    expect(mx, {"max_sessions_per_client": 1, "max_sessions": 1, "too_many_errors": 1,
                "no_backend": 1})
    # mail that goes through counts nowhere here
    assert post(mx, "/backends/main/b0/enable") == 200
    assert deliver(mx.port) == {}
    expect(mx, {"max_sessions_per_client": 1, "max_sessions": 1, "too_many_errors": 1,
                "no_backend": 1})
    assert mx.stop() == 0


def test_require_tls_and_tracker_refusals_are_counted(env, certs):
    sink = env.sink("--xclient")
    crt, key = certs.leaf("mx.test", "ecdsa")
    mx = start(env, [sink.port], pool={"handoff": "xclient"},
               listener={"tls": "starttls", "tls_context": "pub", "require_tls": True},
               extra={"tls": {"pub": {"certificates": [{"cert": str(crt), "key": str(key)}]}}})
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO plain.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<a@client.test>")[0] == 530
    assert c.cmd(b"RCPT TO:<b@client.test>")[0] == 530
    c.cmd(b"QUIT")
    c.close()
    expect(mx, {"require_tls": 2})

    # over TLS: a bare LF before a dot, which the tracker fails closed on
    import ssl
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", mx.port), timeout=10)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"EHLO client.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    raw.sendall(b"STARTTLS\r\n")
    assert f.readline().startswith(b"220")
    t = ctx.wrap_socket(raw, server_hostname="mx.test")
    tf = t.makefile("rb")
    t.sendall(b"EHLO client.test\r\n")
    while tf.readline()[3:4] == b"-":
        pass
    t.sendall(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n")
    assert [tf.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    t.sendall(b"line\n.\nmore\r\n.\r\n")
    last = b""
    for line in iter(tf.readline, b""):
        last = line
    assert last.startswith(b"554"), last
    t.close()
    expect(mx, {"require_tls": 2, "tracker": 1})
    assert sink.messages() == []
    assert mx.stop() == 0
