"""`make compare` in miniature: bench/compare.sh with COMPARE_QUICK=1 (case a,
plain, and case e, implicit TLS, 1 s each) runs every peer (direct, mxlb,
HAProxy, nginx mail, stunnel), writes results.json with each of them, and
draws its chart."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD

TOP = Path(__file__).resolve().parents[2]
PEERS = {"direct", "mxlb", "haproxy", "nginx", "stunnel"}


def peers_missing():
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in ("haproxy", "nginx", "stunnel4", "gnuplot") if not shutil.which(b, path=path)]
    if not Path("/usr/lib/nginx/modules/ngx_mail_module.so").exists():
        missing.append("libnginx-mod-mail")
    if not (BUILD / "mxlb-bench").exists():
        missing.append("mxlb-bench")
    return missing


@pytest.mark.skipif(bool(peers_missing()), reason=f"missing: {', '.join(peers_missing())} "
                    "(tests/deps.sh test installs the peers)")
def test_quick_compare(tmp_path):
    out = tmp_path / "compare"
    env = dict(os.environ, COMPARE_QUICK="1", COMPARE_DIR=str(out), MXLB_BUILD=str(BUILD))
    env.pop("CASES", None)
    env.pop("PEERS", None)
    r = subprocess.run([str(TOP / "bench" / "compare.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    cases = {c["case"]: c for c in res["cases"]}
    assert set(cases) == {"a", "e"}
    assert cases["a"]["tls"] == "none" and cases["e"]["tls"] == "implicit"
    for c in cases.values():
        assert set(c["peers"]) == PEERS, c["peers"].keys()
    # stunnel only terminates TLS; every other (case, peer) ran and delivered
    assert "na" in cases["a"]["peers"]["stunnel"]
    for cid, c in cases.items():
        for peer, v in c["peers"].items():
            if cid == "a" and peer == "stunnel":
                continue
            assert "error" not in v, (cid, peer, v)
            assert v["exit"] == 0 and v["messages"] > 0 and v["failed_messages"] == 0, (cid, peer)
            assert v["sink_count_matches"], (cid, peer, v["sink_messages"])
            if peer == "direct":
                assert v["proxy_cpu_us_per_message"] is None
            else:
                assert v["proxy_cpu_us_per_message"] > 0, (cid, peer)
                # both backends took part (nginx picks one at random per session)
                assert all(n > 0 for n in v["sink_messages"].values()), (cid, peer)
                assert v["ratio_to_mxlb"]["messages_per_s"] > 0
        assert c["peers"]["mxlb"]["ratio_to_mxlb"]["messages_per_s"] == 1.0
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "where mxlb is behind" in r.stdout or "behind no peer" in r.stdout
    for peer in PEERS:  # the table on stdout has a row for each
        assert re.search(rf"^e\s+{peer}\s", r.stdout, re.M), peer
