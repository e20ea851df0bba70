"""`make compare` in miniature: bench/compare.sh with COMPARE_QUICK=1 (case a,
plain, case e, implicit TLS, case l1, lock-step with Postfix's smtp-source in
front of two smtp-sink, and case x, an xclient pool with reuse off and on;
1 s each) runs every peer (direct, mxlb, HAProxy, nginx mail, stunnel),
writes results.json with each of them, prints a row for each, and draws its
chart. Two runs of each, so the medians and spreads are exercised."""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD

TOP = Path(__file__).resolve().parents[2]
PEERS = {"direct", "mxlb", "haproxy", "nginx", "stunnel"}


def peers_missing():
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in ("haproxy", "nginx", "stunnel4", "gnuplot", "smtp-source", "smtp-sink")
               if not shutil.which(b, path=path)]
    if not Path("/usr/lib/nginx/modules/ngx_mail_module.so").exists():
        missing.append("libnginx-mod-mail")
    if not (BUILD / "mxlb-bench").exists():
        missing.append("mxlb-bench")
    return missing


@pytest.mark.skipif(bool(peers_missing()), reason=f"missing: {', '.join(peers_missing())} "
                    "(tests/deps.sh test installs the peers)")
def test_quick_compare(tmp_path):
    out = tmp_path / "compare"
    env = dict(os.environ, COMPARE_QUICK="1", COMPARE_RUNS="2", COMPARE_DIR=str(out),
               MXLB_BUILD=str(BUILD))
    env.pop("CASES", None)
    env.pop("PEERS", None)
    env.pop("COMPARE_DURATION", None)
    r = subprocess.run([str(TOP / "bench" / "compare.sh")], env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["setup"]["runs_per_case"] == 2
    cases = {c["case"]: c for c in res["cases"]}
    assert set(cases) == {"a", "e", "l1", "x"}
    assert cases["a"]["tls"] == "none" and cases["e"]["tls"] == "implicit"
    assert cases["l1"]["client"] == "smtp-source" and cases["l1"]["backends"] == "smtp"
    for cid in ("a", "e", "l1"):
        assert set(cases[cid]["peers"]) == PEERS, cases[cid]["peers"].keys()
    # stunnel only terminates TLS; every other (case, peer) ran and delivered
    assert "na" in cases["a"]["peers"]["stunnel"]
    assert "na" in cases["l1"]["peers"]["stunnel"]
    for cid, c in cases.items():
        for peer, v in c["peers"].items():
            if cid in ("a", "l1") and peer == "stunnel" or peer == "mxlb-reuse":
                continue
            assert "error" not in v, (cid, peer, v)
            assert v["exit"] == 0 and v["messages"] > 0 and v["failed_messages"] == 0, (cid, peer)
            assert v["runs"] == 2 and v["runs_with_results"] == 2, (cid, peer)
            assert len(v["per_run"]) == 2 and v["spread"]["messages_per_s"][0] > 0, (cid, peer)
            lo, hi = v["spread"]["messages_per_s"]
            assert lo <= v["messages_per_s"] <= hi, (cid, peer)
            assert v["sink_count_matches"], (cid, peer, v["sink_messages"])
            if peer == "direct":
                assert v["proxy_cpu_us_per_message"] is None
            else:
                assert v["proxy_cpu_us_per_message"] > 0, (cid, peer)
                # both backends took part (nginx picks one at random per session)
                assert all(n > 0 for n in v["sink_messages"].values()), (cid, peer)
                assert v["ratio_to_mxlb"]["messages_per_s"] > 0
        assert c["peers"]["mxlb"]["ratio_to_mxlb"]["messages_per_s"] == 1.0
    # the lock-step messages are the size asked for, headers included
    l1 = cases["l1"]["peers"]["mxlb"]
    assert all(b["client"] == "smtp-source" and b["octets_per_message"] == 1024 for b in l1["bench"])
    assert l1["mb_per_s"] > 0 and l1["bench_cpu_core_pct"] is not None
    # the xclient case: mxlb only, reuse off and on; on is skipped while
    # mxlb --check refuses reuse, and runs once it accepts it
    x = cases["x"]["peers"]
    assert set(x) == {"mxlb", "mxlb-reuse"}
    conf = out / "mxlb-reuse.yaml"
    chk = subprocess.run([str(BUILD / "mxlb"), "-c", str(conf), "--check"], capture_output=True,
                         text=True, timeout=30)
    if "reuse is not supported yet" in chk.stdout + chk.stderr:
        assert x["mxlb-reuse"]["error"].startswith("skipped: reuse not built"), x["mxlb-reuse"]
        assert re.search(r"^x\s+mxlb-reuse\s.*skipped: reuse not built", r.stdout, re.M)
    else:
        assert chk.returncode == 0, chk.stderr
        v = x["mxlb-reuse"]
        assert v["exit"] == 0 and v["messages"] > 0 and v["sink_count_matches"], v
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "where mxlb is behind" in r.stdout or "behind no peer" in r.stdout
    assert "issue 10's goals" in r.stdout
    for peer in PEERS:  # the table on stdout has a row for each
        assert re.search(rf"^e\s+{peer}\s", r.stdout, re.M), peer
    # the lock-step rows carry numbers: msg/s, MB/s, latencies (none), CPU per message
    for peer in ("direct", "mxlb", "haproxy", "nginx"):
        m = re.search(rf"^l1\s+{peer}\s+(\d+)\s+(\d+\.\d)\s+-/-\s+-/-\s+(\S+)\s", r.stdout, re.M)
        assert m, (peer, r.stdout[-3000:])
        assert int(m.group(1)) > 0
        assert (m.group(3) == "-") == (peer == "direct"), m.group(0)
    assert re.search(r"^x\s+mxlb\s+\d+\s+\d+\.\d\s+-/-\s+-/-\s+\d+\s", r.stdout, re.M)


def compare(tmp_path, **env_vars):
    """bench/compare.sh with these settings (no quick mode); its output and
    its results.json."""
    out = tmp_path / "compare"
    env = dict(os.environ, COMPARE_DIR=str(out), MXLB_BUILD=str(BUILD), **env_vars)
    env.pop("COMPARE_QUICK", None)
    r = subprocess.run([str(TOP / "bench" / "compare.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads((out / "results.json").read_text())


@pytest.mark.skipif(not (BUILD / "mxlb-bench").exists(), reason="mxlb-bench is not built")
def test_idle_after_rcpt(tmp_path):
    """Case i500: 500 sessions held after RCPT on a fresh mxlb, measured as
    issue 10 sets its idle goal, which is reported in octets (whether it is
    met is the benchmark's to say, not this test's)."""
    r, res = compare(tmp_path, CASES="i500", PEERS="mxlb", COMPARE_RUNS="1")
    (case,) = res["cases"]
    assert case["case"] == "i500" and case["kind"] == "hold"
    assert "--hold-after rcpt" in case["options"]
    v = case["peers"]["mxlb"]
    assert v["all_held"] and v["held"] == 500, v
    assert v["bench"][0]["held"] == 500 and v["bench"][0]["sessions_failed"] == 0
    assert v["rss_per_session_bytes"] > 0
    (goal,) = res["goals"]
    assert goal["unit"] == "octets" and goal["value"] == v["rss_per_session_bytes"]
    assert isinstance(goal["met"], bool)
    assert re.search(r"^i500\s+mxlb\s+500\s", r.stdout, re.M), r.stdout[-2000:]
    assert re.search(r"i500: mxlb octets per session held after RCPT, fresh <= 2048: \d+ "
                     r"\((met|not met)\)", r.stdout), r.stdout[-2000:]


@pytest.mark.skipif(bool(peers_missing()), reason=f"missing: {', '.join(peers_missing())} "
                    "(tests/deps.sh test installs the peers)")
def test_bulk_lock_step_fast_backends(tmp_path):
    """Case l4m: smtp-source's persistent lock-step 1 MB messages through
    mxlb and HAProxy to two mxlb-sink (not smtp-sink), every message
    delivered, and its goal lines after the table."""
    r, res = compare(tmp_path, CASES="l4m", PEERS="mxlb haproxy", COMPARE_RUNS="1",
                     COMPARE_DURATION="1s")
    (case,) = res["cases"]
    assert case["case"] == "l4m" and case["client"] == "smtp-source"
    assert case["backends"] == "mxlb"
    for peer in ("mxlb", "haproxy"):
        v = case["peers"][peer]
        assert "error" not in v, (peer, v)
        assert v["messages"] > 0 and v["failed_messages"] == 0, (peer, v)
        assert v["sink_count_matches"], (peer, v["sink_messages"])
        assert all(b["octets_per_message"] == 1048576 for b in v["bench"])
    goals = [g["goal"] for g in res["goals"]]
    assert "l4m: mxlb MB/s / HAProxy's >= 1.2" in goals, goals
    assert re.search(r"l4m: mxlb CPU/msg / HAProxy's <= 0\.8: \d+\.\d\d \((met|not met)\)",
                     r.stdout), r.stdout[-2000:]


def affinities_while(proc, names):
    """While PROC runs: the CPU lists (Cpus_allowed_list) seen of its
    descendants named NAMES, polled from /proc every 20 ms: {name: {list}}."""
    seen = {n: set() for n in names}
    while proc.poll() is None:
        status = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                f = dict(line.split(":\t", 1) for line in
                         (d / "status").read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            status[int(d.name)] = (f.get("Name", "").strip(), int(f.get("PPid", "0")),
                                   f.get("Cpus_allowed_list", "").strip())
        mine = {proc.pid}
        grew = True
        while grew:  # the descendants of PROC
            more = {p for p, (_, pp, _) in status.items() if pp in mine} - mine
            grew = bool(more)
            mine |= more
        for p in mine:
            name, _, cpus = status.get(p, ("", 0, ""))
            if name in seen:
                seen[name].add(cpus)
        time.sleep(0.02)
    return seen


@pytest.mark.skipif(bool(peers_missing()) or len(os.sched_getaffinity(0)) < 2
                    or not {0, 1} <= os.sched_getaffinity(0),
                    reason="needs CPUs 0 and 1, and the peers (tests/deps.sh test)")
def test_pinned_roles(tmp_path):
    """COMPARE_PIN pins each role to its CPUs, as seen from outside in
    /proc while the run goes on: the clients (mxlb-bench, smtp-source) to
    CPU 0, the proxy (mxlb) and the sinks (mxlb-sink, Postfix's smtp-sink)
    to CPU 1; results.json and the table's first line say so."""
    out = tmp_path / "compare"
    env = dict(os.environ, COMPARE_DIR=str(out), MXLB_BUILD=str(BUILD), CASES="a l1",
               PEERS="mxlb", COMPARE_RUNS="1", COMPARE_DURATION="1s",
               COMPARE_PIN="client=0 proxy=1 sinks=1")
    env.pop("COMPARE_QUICK", None)
    proc = subprocess.Popen([str(TOP / "bench" / "compare.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = affinities_while(proc, ("mxlb", "mxlb-bench", "mxlb-sink", "smtp-source",
                                       "smtp-sink"))
        text = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, text[-3000:]
    assert seen == {"mxlb": {"1"}, "mxlb-bench": {"0"}, "mxlb-sink": {"1"},
                    "smtp-source": {"0"}, "smtp-sink": {"1"}}, seen
    res = json.loads((out / "results.json").read_text())
    assert res["setup"]["pin"] == {"asked": {"client": "0", "proxy": "1", "sinks": "1"},
                                   "sinks_cpus": ["1"]}
    for case in res["cases"]:
        v = case["peers"]["mxlb"]
        assert v["proxy_cpus"] == ["1"] and v["messages"] > 0, (case["case"], v)
    assert "pinned (taskset -c): client 0, proxy 1, sinks 1" in text
    assert (out / "table.md").read_text().split("\n", 1)[0].count("pinned (taskset -c)") == 1


@pytest.mark.parametrize("pin", ["client=0 clients=1", "proxy", "sinks=1 sinks=0", "proxy=9999",
                                 "client=0;1"])
def test_pin_refused(tmp_path, pin):
    """A COMPARE_PIN that is not ROLE=CPUS (each role once, CPUs of this
    machine) stops the script at once with status 2 and says which word."""
    env = dict(os.environ, COMPARE_DIR=str(tmp_path / "compare"), MXLB_BUILD=str(BUILD),
               COMPARE_PIN=pin)
    r = subprocess.run([str(TOP / "bench" / "compare.sh")], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "compare.sh: COMPARE_PIN: " in r.stderr and "is not ROLE=CPUS" in r.stderr, r.stderr
    assert not (tmp_path / "compare").exists()
