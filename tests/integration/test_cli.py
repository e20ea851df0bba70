"""The command line (SPEC §2, §12): --version with the libraries and the
io_uring probe, --dump that --check accepts back, exit statuses, every
configuration error in one run, hints, both places of a duplicate address,
and the warnings --check prints and a start logs."""
import re
import shutil
import subprocess

import pytest

from conftest import MXLB, free_port, wait_for

TOKEN = "cli-test-token-0123456789"


def run(*args, **kw):
    return subprocess.run([str(MXLB), *map(str, args)], capture_output=True, text=True,
                          timeout=30, **kw)


def write(tmp_path, text, name="mxlb.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def deb_version(pkg):
    if not shutil.which("dpkg-query"):
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                       text=True)
    return r.stdout.split("-")[0] if r.returncode == 0 and r.stdout else None


def test_version_names_the_libraries_and_probes_io_uring():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    fields = {l.split(" ", 1)[0]: l.split(" ", 1)[1] for l in lines if " " in l}
    assert re.fullmatch(r"mxlb \d+\.\d+\.\d+", lines[0])
    assert re.fullmatch(r"\d+\.\d+", fields["liburing"])
    assert re.fullmatch(r"API version \d+ \(OpenSSL .*BoringSSL\)\)", fields["BoringSSL"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", fields["libyaml"])
    for pkg, key in (("liburing2", "liburing"), ("libyaml-0-2", "libyaml")):
        v = deb_version(pkg)
        if v:
            assert fields[key] == v, (pkg, v, fields[key])
    assert fields["kernel"].startswith("Linux ")
    probe = [l for l in lines if l.startswith("io_uring")]
    setup = [l for l in probe if l.startswith("io_uring ring setup: ")][0]
    if setup.startswith("io_uring ring setup: no"):
        pytest.skip(f"io_uring refused here: {setup}")
    ops = [l for l in probe if l.startswith("io_uring operations: ")][0]
    for op in ("accept", "connect", "recv", "send", "read", "timeout", "link_timeout",
               "async_cancel"):
        assert re.search(rf"\b{op} (yes|no)\b", ops), op
    assert "io_uring provided buffer rings: yes" in lines
    assert lines[-1] == "io_uring: everything mxlb needs is there"


def test_exit_statuses(tmp_path):
    # usage errors: 64 (EX_USAGE), with the usage on stderr
    for args in (["--bogus"], ["-c"], ["-c", "x.yaml", "extra"], ["-q"]):
        r = run(*args)
        assert r.returncode == 64, (args, r.stderr)
        assert "usage: mxlb" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "--dump" in r.stdout and "64" in r.stdout
    # a configuration error: 1, for --check, --dump and a start
    bad = write(tmp_path, "server: {workers: x}\n")
    for args in (["--check"], ["--dump"], []):
        assert run("-c", bad, *args).returncode == 1, args
    assert run("-c", tmp_path / "missing.yaml", "--dump").returncode == 1


def base(port, admin, backend_port, extra=""):
    return (f"server:\n  hostname: mx.test\n  workers: 1\n"
            f"  admin: {{listen: \"127.0.0.1:{admin}\", token: {TOKEN}}}\n"
            f"pools:\n  - name: p\n    health: {{check: none}}\n"
            f"    backends:\n      - {{name: b, address: \"127.0.0.1:{backend_port}\"}}\n"
            f"listeners:\n  - name: mx\n    listen: \"127.0.0.1:{port}\"\n    pool: p\n" + extra)


def dump_and_check(tmp_path, cfg, name):
    r = run("-c", cfg, "--dump")
    assert r.returncode == 0, r.stderr
    out = write(tmp_path, r.stdout, f"{name}-dump.yaml")
    c = run("-c", out, "--check")
    assert c.returncode == 0, f"{c.stderr}\n{r.stdout}"
    again = run("-c", out, "--dump")
    assert again.returncode == 0
    # the same configuration: only the first line (the file's name) differs
    assert again.stdout.splitlines()[1:] == r.stdout.splitlines()[1:]
    return r.stdout


def test_dump_round_trip(tmp_path, certs):
    crt, key = certs.leaf("mx.test")
    plain = write(tmp_path, base(free_port(), free_port(), free_port()), "plain.yaml")
    text = dump_and_check(tmp_path, plain, "plain")
    assert TOKEN not in text and "<redacted-token>" in text
    # every default filled in
    for key_ in ("hostname:", "workers: 1", "max_sessions: 50000", "shutdown_timeout: 30s",
                 "level: info", "format: text", "resolver:", "balance: roundrobin",
                 "retries: 2", "handoff: none", "interval: 2s", "rise: 2", "fall: 3",
                 "reuse:", "max_idle: 0", "idle_timeout: 30s", "max_uses: 100", "weight: 1",
                 "backup: false", "tls: none", "tls_mode: terminate", "require_tls: false",
                 "accept_proxy: false", 'banner: "ESMTP"', "relay: auto", "proxy_header: 5s",
                 "command: 5m", "idle: 10m", "screen:", "limits:", "ipv4_prefix: 32",
                 "ipv6_prefix: 64", "bare_newline: pass"):
        assert key_ in text, key_
    full = write(tmp_path, base(free_port(), free_port(), free_port(), (
        "    tls: starttls\n    tls_context: pub\n    banner: \"caf\u00e9 \\\"ready\\\"\"\n"
        "    routes:\n      - {ehlo: \"*.partner.example\", client: \"192.0.2.0/24\", pool: p}\n"
        "    timeouts: {idle: 1500ms, command: 2m}\n"
        f"tls:\n  pub:\n    certificates: [{{cert: \"{crt}\", key: \"{key}\"}}]\n"
        "    min_version: \"1.3\"\n    session_tickets: false\n"
        "alerts: {smtp: \"127.0.0.1:25\", from: a@mx.test, to: [b@mx.test], "
        "events: [pool_down]}\n")), "full.yaml")
    text = dump_and_check(tmp_path, full, "full")
    for want in ("tls: starttls", 'tls_context: "pub"', 'min_version: "1.3"',
                 "session_tickets: false", 'banner: "caf\u00e9 \\"ready\\""', "idle: 1500ms",
                 "command: 2m", 'client: "192.0.2.0/24"', "- pool_down", 'from: "a@mx.test"'):
        assert want in text, want


def test_every_error_in_one_run(tmp_path):
    cfg = write(tmp_path, (
        "server:\n  workers: many\n  hostnam: x\n"
        "pools:\n  - name: p\n    retries: 99\n    backends: [{name: b, address: \"1.2.3.4:25\"}]\n"
        "listeners:\n  - name: l\n    listen: \"127.0.0.1:25\"\n    pool: p\n"
        "    tls_mode: sideways\n"))
    r = run("-c", cfg, "--check")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert [l.split(": ", 1)[0] for l in lines] == [
        f"{cfg}:2:12", f"{cfg}:3:3", f"{cfg}:6:14", f"{cfg}:12:15"], r.stderr
    assert "unknown key \"hostnam\" in server" in lines[1]
    # a start says the same, one log line each
    r = run("-c", cfg)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 4
    assert all("level=error event=config" in l for l in r.stderr.splitlines())
    # past 20, one line says there were more
    many = write(tmp_path, "server:\n" + "".join(f"  k{i}: 1\n" for i in range(40)), "many.yaml")
    r = run("-c", many, "--check")
    lines = r.stderr.splitlines()
    assert len(lines) == 21 and lines[-1] == f"{many}: more errors not shown (at most 20 are reported)"


@pytest.mark.parametrize("text,where,hint", [
    ("server:\n\thostname: mx\n", "2:1", "(YAML does not allow tabs for indentation)"),
    ("listeners: [{name: l, listen: [::1]:25, pool: p}]\n", "1:32",
     "(quote IPv6 addresses: \"[::1]:25\")"),
    ("pools:\n  - name: p\n    backends:\n      - name: b\n        address: [2001:db8::5]:2525\n",
     "5:", "(quote IPv6 addresses: \"[2001:db8::5]:2525\")"),
    ("pools: [{name: p, backends: [{name: b, address: \"no-such-host.invalid:25\"}]}]\n", "1:49",
     "the host name \"no-such-host.invalid\" does not resolve"),
    ("pools: [{name: p, backends: [{name: b, address: \"localhost:70000\"}]}]\n", "1:49",
     "the port must be a number from 1 to 65535"),
])
def test_hints(tmp_path, text, where, hint):
    cfg = write(tmp_path, text)
    r = run("-c", cfg, "--check")
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{cfg}:{where}") and hint in first, first


def test_duplicate_address_names_both_places(tmp_path):
    port, other = free_port(), free_port()
    cfg = write(tmp_path, (
        "pools: [{name: p, backends: [{name: b, address: \"127.0.0.1:25\"}]}]\n"
        "listeners:\n"
        f"  - {{name: a, listen: \"127.0.0.1:{port}\", pool: p}}\n"
        f"  - {{name: b, listen: [\"127.0.0.1:{other}\", \"127.0.0.1:{port}\"], pool: p}}\n"))
    r = run("-c", cfg, "--check")
    assert r.returncode == 1
    line = r.stderr.strip()
    second = 1 + (f"  - {{name: b, listen: [\"127.0.0.1:{other}\", ").__len__()
    assert line == (f"{cfg}:4:{second}: 127.0.0.1:{port} is listened on twice "
                    f"(as 127.0.0.1:{port}, at {cfg}:3:23)"), line


def test_warnings_at_check_and_start(env, tmp_path):
    sink = env.sink()
    port, admin = free_port(), free_port()
    cfg = write(tmp_path, (
        f"server: {{hostname: mx.test, workers: 1, admin: {{listen: \"127.0.0.1:{admin}\"}}}}\n"
        "pools:\n"
        "  - name: p\n    health: {check: none}\n"
        f"    backends: [{{name: b, address: \"127.0.0.1:{sink.port}\"}}]\n"
        "  - name: idle\n    health: {check: none}\n"
        f"    backends: [{{name: z, address: \"127.0.0.1:{sink.port}\", weight: 0}}]\n"
        "  - name: self\n    health: {check: none}\n"
        f"    backends: [{{name: me, address: \"127.0.0.1:{port}\"}}]\n"
        f"listeners: [{{name: mx, listen: \"127.0.0.1:{port}\", pool: p}}]\n"))
    r = run("-c", cfg, "--check")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == f"{cfg}: configuration is valid"
    assert lines[0] == (f"{cfg}:6:5: warning: pool \"idle\": every backend has weight 0, so it "
                        "takes no session (its clients get 421) until an admin sets a weight")
    assert lines[1].startswith(f"{cfg}:11:36: warning: backend \"me\" of pool \"self\": "
                               f"127.0.0.1:{port} is mxlb's own listener \"mx\"")
    assert "loop back into mxlb" in lines[1]
    # a backend on another port of the same host is no loop
    assert len(lines) == 3
    from conftest import Proc, wait_port
    p = Proc([str(MXLB), "-c", str(cfg)], tmp_path / "log")
    env.procs.append(p)
    wait_port(port)
    wait_for(lambda: "event=ready" in p.log(), what="the ready line")
    warns = [l for l in p.log().splitlines() if "level=warn event=config" in l]
    assert len(warns) == 2 and "weight 0" in warns[0] and "loop back" in warns[1]
    assert p.stop() == 0
