"""The log (SPEC §7, §12): every line in the configured format, a bind
failure included; UTF-8 kept valid; missing values as JSON null; the start
and ready lines; client protocol errors at info with the client's address,
rate limited; tries and the backend's address in the session line; and the
<N> priority prefixes when stderr is the journal."""
import json
import os
import signal
import subprocess
import time

from conftest import MXLB, Client, Proc, deliver, free_port, wait_for, wait_port, _kv_split


def jlines(text):
    """Every line as JSON; a line that is not JSON fails the test."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}")
    return out


def kv(line):
    """A text log line as a dict (values unquoted, as conftest reads them)."""
    fields = {}
    for part in _kv_split(line):
        if "=" in part:
            k, v = part.split("=", 1)
            fields[k] = v.strip('"')
    return fields


def events(mx, name):
    return [kv(l) for l in mx.log().splitlines() if f"event={name} " in l]


def json_mxlb(env, backends, **kw):
    server = {"log": {"format": "json"}, **kw.pop("server", {})}
    mx = env.mxlb(backends, server=server, wait=False, **kw)
    wait_port(mx.port)
    wait_for(lambda: '"event":"session"' in mx.log(), what="the probe session to end")
    return mx


def test_json_every_line(env):
    sink = env.sink()
    mx = json_mxlb(env, [sink.port], listener={"name": "mx-caf\u00e9"})
    assert deliver(mx.port) == {}
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"BOGUS")[0] == 500
    assert c.cmd(b"QUIT")[0] == 221
    c.close()
    mx.reload(0)  # SIGHUP: a reload line
    wait_for(lambda: '"event":"reload"' in mx.log(), what="the reload line")
    wait_for(lambda: mx.log().count('"event":"session"') >= 3, what="three session lines")
    assert mx.stop() == 0
    raw = open(mx.proc.log_path, "rb").read()
    raw.decode("utf-8")  # valid UTF-8 throughout
    assert b"\\u00c3" not in raw
    lines = jlines(raw.decode())
    by = {}
    for l in lines:
        assert l["level"] in ("error", "warn", "info", "debug") and l["ts"].endswith("Z")
        by.setdefault(l["event"], []).append(l)
    start = by["start"][0]
    assert start["version"] and start["config"] == str(mx.cfg_path)
    assert start["workers"] == 2 and start["admin"] == f"127.0.0.1:{mx.admin_port}"
    assert start["listeners"] == f"mx-caf\u00e9=127.0.0.1:{mx.port}"
    assert start["user"] is None
    assert by["ready"][0]["addresses"] == 1
    assert [l["event"] for l in lines].index("ready") > [l["event"] for l in lines].index("start")
    # the probe's line came first (waited for); the others in any order
    probe = by["session"][0]
    relayed = [l for l in by["session"] if l["result"] == "relayed"][0]
    err = by["client_error"][0]
    quit_ = [l for l in by["session"] if l["id"] == err["id"]][0]
    # the probe never routed: missing values are null, not "-" or 0
    assert probe["listener"] == "mx-caf\u00e9"
    for k in ("tls", "tls_cipher", "sni", "ehlo", "pool", "backend", "backend_addr",
              "routed_ms"):
        assert probe[k] is None, k
    assert probe["tries"] == 0 and probe["greeting_ms"] is not None
    assert relayed["result"] == "relayed" and relayed["backend"] == "b0"
    assert relayed["backend_addr"] == f"127.0.0.1:{sink.port}" and relayed["tries"] == 1
    assert isinstance(relayed["routed_ms"], float) and relayed["ehlo"] == "client.test"
    assert quit_["result"] == "client_quit" and quit_["routed_ms"] is None
    assert err["level"] == "info" and err["error"] == "unknown command"
    assert err["client"].startswith("127.0.0.1:") and err["id"] == quit_["id"]
    assert by["stop"]


def test_json_bind_failure(env):
    sink = env.sink()
    mx = json_mxlb(env, [sink.port])
    twin = env.mxlb([sink.port], server={"log": {"format": "json"}},
                    listener={"listen": [f"127.0.0.1:{mx.port}"]}, wait=False)
    assert twin.proc.proc.wait(10) == 2
    lines = jlines(twin.log())
    fails = [l for l in lines if l["level"] == "error"]
    assert len(fails) == 1 and "already in use" in fails[0]["msg"]
    assert fails[0]["event"] == "listen"
    twin.stop()
    assert mx.stop() == 0


def test_config_errors_before_the_format_is_known_are_text_lines(env, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  log: {format: json}\n  workers: two\n  max_sessions: 0\n")
    r = subprocess.run([str(MXLB), "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 4  # the two, and the two missing sections
    for l in lines:
        f = kv(l)
        assert f["level"] == "error" and f["event"] == "config", l
        assert f["msg"].startswith(f"{cfg}:")
    assert kv(lines[0])["msg"].startswith(f"{cfg}:3:12: server.workers")
    assert kv(lines[1])["msg"].startswith(f"{cfg}:4:17: server.max_sessions")


def test_utf8_in_text_lines(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], listener={"name": "caf\u00e9"})
    assert deliver(mx.port) == {}
    wait_for(lambda: len(mx.sessions()) >= 2, what="the session line")
    mx.stop()
    raw = open(mx.proc.log_path, "rb").read()
    text = raw.decode("utf-8")
    assert "\\xc3" not in text
    assert mx.sessions()[-1]["listener"] == "caf\u00e9"
    assert "listeners=\"caf\u00e9=127.0.0.1:" in text


def test_protocol_errors_at_info_with_the_client_and_rate_limited(env):
    sink = env.sink()
    mx = env.mxlb([sink.port], server={"workers": 1})
    total = 0
    for _ in range(20):
        c = Client(mx.port)
        c.reply()
        # ten refused commands in one segment: ten lines in microseconds
        c.send(b"BOGUS\r\n" * 9 + b"NOOP " + b"x" * 600 + b"\r\n")
        codes = [code for code, _ in c.replies_until_eof()]
        assert codes == [500] * 9 + [421]
        c.close()
        total += 11  # ten refusals and "too many errors"
    wait_for(lambda: len(mx.sessions()) >= 21, what="the session lines")
    lines = events(mx, "client_error")
    assert 0 < len(lines) < total
    for l in lines:
        assert l["level"] == "info" and l["client"].startswith("127.0.0.1:") and l["id"]
    # the first session's first ten always fit in the first second
    assert {"unknown command", "line too long"} <= {l["error"] for l in lines}
    # a second later, the next line says how many were left out
    time.sleep(1.1)
    c = Client(mx.port)
    c.reply()
    c.send(b"NOOP\n")
    assert c.reply()[0] == 500
    c.close()
    total += 1
    wait_for(lambda: len(events(mx, "client_error")) > len(lines), what="the next line")
    lines = events(mx, "client_error")
    assert lines[-1]["error"] == "bare LF" and any("suppressed" in l for l in lines)
    assert len(lines) + sum(int(l.get("suppressed", 0)) for l in lines) == total
    assert mx.stop() == 0


def test_tries_and_backend_address(env):
    sink = env.sink()
    dead = free_port()
    mx = env.mxlb([dead, sink.port])
    assert deliver(mx.port) == {}
    wait_for(lambda: len(mx.sessions()) >= 2, what="the session line")
    probe, s = mx.sessions()[:2]
    assert probe["tries"] == "0" and probe["backend_addr"] == "-" and probe["routed_ms"] == "-"
    assert s["result"] == "relayed" and s["backend"] == "b1"
    assert s["tries"] == "2" and s["backend_addr"] == f"127.0.0.1:{sink.port}"
    assert float(s["routed_ms"]) > 0
    assert mx.stop() == 0


def start_on_journal(env, cfg_text, name, journal=True):
    """mxlb with stderr on a file that $JOURNAL_STREAM names (as systemd
    sets it), or another file's."""
    d = env.tmp / name
    d.mkdir()
    cfg = d / "mxlb.yaml"
    cfg.write_text(cfg_text)
    log = d / "log"
    log.touch()
    st = os.stat(log if journal else cfg)
    e = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    p = Proc([str(MXLB), "-c", str(cfg)], log, env=e)
    env.procs.append(p)
    return p


def test_priority_prefixes_when_stderr_is_the_journal(env):
    sink = env.sink()
    port, admin = free_port(), free_port()
    pools = ('pools: [{name: p, health: {check: none}, backends: [{name: b, '
             f'address: "127.0.0.1:{sink.port}"}}, {{name: z, address: "127.0.0.1:{sink.port}", '
             'weight: 0}]}, {name: q, health: {check: none}, backends: [{name: b, '
             f'address: "127.0.0.1:{sink.port}", weight: 0}}]}}]\n')
    for fmt in ("text", "json"):
        cfg = (f'server: {{hostname: mx.test, workers: 1, log: {{format: {fmt}}}, '
               f'admin: {{listen: "127.0.0.1:{admin}"}}}}\n'
               f'listeners: [{{name: mx, listen: "127.0.0.1:{port}", pool: p}}]\n' + pools)
        p = start_on_journal(env, cfg, f"j-{fmt}")
        wait_port(port)
        assert deliver(port) == {}
        ev = '"event":"session"' if fmt == "json" else "event=session"
        wait_for(lambda: p.log().count(ev) >= 2, what="the session lines")
        twin = start_on_journal(env, cfg, f"twin-{fmt}")
        assert twin.proc.wait(10) == 2
        assert p.stop() == 0
        lines = p.log().splitlines()
        assert lines and all(l[:3] in ("<3>", "<4>", "<6>", "<7>") for l in lines), lines
        body = [l[3:] for l in lines]
        if fmt == "json":
            parsed = [json.loads(b) for b in body]
            want = {"error": "<3>", "warn": "<4>", "info": "<6>", "debug": "<7>"}
            assert all(l[:3] == want[j["level"]] for l, j in zip(lines, parsed))
        warn = [l for l in lines if "weight 0" in l]
        assert len(warn) == 1 and warn[0].startswith("<4>")
        assert any(l.startswith("<6>") and "session" in l for l in lines)
        failed = twin.log().splitlines()
        assert [l for l in failed if "already in use" in l][0].startswith("<3>")
        twin.stop()
    # stderr redirected away from the stream systemd named: no prefix
    cfg = (f'server: {{hostname: mx.test, workers: 1, admin: {{listen: ""}}}}\n'
           f'listeners: [{{name: mx, listen: "127.0.0.1:{port}", pool: p}}]\n' + pools)
    p = start_on_journal(env, cfg, "elsewhere", journal=False)
    wait_port(port)
    assert p.stop() == 0
    assert all(l[:1].isdigit() for l in p.log().splitlines())
