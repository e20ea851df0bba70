"""State that outlives a configuration: session counts, totals and
listener stats are kept per backend and per listener across SIGHUP, so
max_sessions, leastconn and /metrics count the sessions that started
before a reload, and drop them when they end under the new one; and a
session answers with the hostname of the configuration it started with."""
import json
import re
import signal
import urllib.request

import pytest

from conftest import HOST, Client, deliver, wait_for

NEW_HOST = "new.test"


def new_hostname(doc):
    doc["server"]["hostname"] = NEW_HOST


def metrics(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def status(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/status", timeout=5) as r:
        return json.loads(r.read())


def backend_active(mx, backend, pool="main"):
    return metrics(mx).get(f'mxlb_backend_sessions_active{{pool="{pool}",backend="{backend}"}}')


def listener_active(mx, listener="mx"):
    return metrics(mx).get(f'mxlb_sessions_active{{listener="{listener}"}}')


def relaying(mx, ehlo="held.test"):
    """A session routed and relaying: (client, the backend's EHLO name)."""
    c = Client(mx.port)
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO " + ehlo.encode())
    assert code == 250, lines
    return c, lines[0]


def quit_all(clients):
    for c in clients:
        assert c.cmd(b"QUIT")[0] == 221
        c.close()


def all_zero(mx, backends, pool="main"):
    m = metrics(mx)
    keys = [f'mxlb_backend_sessions_active{{pool="{pool}",backend="{b}"}}' for b in backends]
    return all(m.get(k) == 0 for k in keys) and m.get('mxlb_sessions_active{listener="mx"}') == 0


@pytest.mark.parametrize("overflow", ["backup", "421"])
def test_max_sessions_counts_sessions_from_before_the_reload(env, overflow):
    a = env.sink("--hostname", "a.sink")
    b = env.sink("--hostname", "b.sink")
    backends = [{"address": f"127.0.0.1:{a.port}", "max_sessions": 2}]
    if overflow == "backup":
        backends.append({"address": f"127.0.0.1:{b.port}", "backup": True})
    mx = env.mxlb(backends)
    held = [relaying(mx) for _ in range(2)]
    assert [name for _, name in held] == ["a.sink", "a.sink"]
    assert backend_active(mx, "b0") == 2
    mx.rewrite(new_hostname)
    mx.reload(1)

    # the two sessions from before the reload still fill b0
    assert backend_active(mx, "b0") == 2
    assert listener_active(mx) == 2
    assert metrics(mx)['mxlb_backend_sessions_total{pool="main",backend="b0"}'] == 2
    st = status(mx)
    assert st["hostname"] == NEW_HOST
    assert st["pools"][0]["backends"][0]["active"] == 2
    c = Client(mx.port)
    assert c.reply() == (220, [f"{NEW_HOST} ESMTP"])
    code, lines = c.cmd(b"EHLO third.test")
    if overflow == "backup":
        assert (code, lines[0]) == (250, "b.sink")
        assert backend_active(mx, "b1") == 1
        assert listener_active(mx) == 3
        held.append((c, "b.sink"))
    else:
        assert (code, lines) == (421, [f"4.3.2 {NEW_HOST} Service not available, closing "
                                       "transmission channel"])
        assert c.eof()
        c.close()
    assert backend_active(mx, "b0") == 2

    quit_all(c for c, _ in held)
    names = ["b0", "b1"] if overflow == "backup" else ["b0"]
    wait_for(lambda: all_zero(mx, names), what="every gauge back to 0")
    m = metrics(mx)
    relayed = m['mxlb_sessions_total{listener="mx",result="relayed"}']
    assert relayed == (3 if overflow == "backup" else 2)
    # the slot is free again: a new session gets b0
    c, name = relaying(mx)
    assert name == "a.sink"
    quit_all([c])
    wait_for(lambda: all_zero(mx, names), what="every gauge back to 0")
    assert metrics(mx)['mxlb_backend_sessions_total{pool="main",backend="b0"}'] == 3
    assert mx.stop() == 0


def test_leastconn_counts_sessions_from_before_the_reload(env):
    a = env.sink("--hostname", "a.sink")
    b = env.sink("--hostname", "b.sink")
    mx = env.mxlb([a.port], pool={"balance": "leastconn"})
    held = [relaying(mx) for _ in range(2)]
    # b1 joins the pool: b0 still has the two sessions it had
    mx.rewrite(lambda d: (new_hostname(d), d["pools"][0]["backends"].append(
        {"name": "b1", "address": f"127.0.0.1:{b.port}"})))
    mx.reload(1)
    fresh = [relaying(mx) for _ in range(2)]
    assert [name for _, name in fresh] == ["b.sink", "b.sink"]
    assert backend_active(mx, "b0") == 2 and backend_active(mx, "b1") == 2
    assert listener_active(mx) == 4
    quit_all(c for c, _ in held + fresh)
    wait_for(lambda: all_zero(mx, ["b0", "b1"]), what="every gauge back to 0")
    assert mx.stop() == 0


def test_removed_backend_keeps_counting_its_sessions_until_they_end(env):
    a = env.sink("--hostname", "a.sink")
    b = env.sink("--hostname", "b.sink")
    mx = env.mxlb([a.port, b.port], pool={"balance": "leastconn"})
    held = [relaying(mx) for _ in range(2)]
    assert sorted(name for _, name in held) == ["a.sink", "b.sink"]
    on_b0 = [c for c, name in held if name == "a.sink"]
    on_b1 = [c for c, name in held if name == "b.sink"]
    # b0 leaves the pool, then comes back while its session still runs
    mx.rewrite(lambda d: d["pools"][0]["backends"].pop(0))
    mx.reload(1)
    assert backend_active(mx, "b0") is None
    assert backend_active(mx, "b1") == 1
    mx.rewrite(lambda d: d["pools"][0]["backends"].insert(
        0, {"name": "b0", "address": f"127.0.0.1:{a.port}"}))
    mx.reload(2)
    assert backend_active(mx, "b0") == 1
    quit_all(on_b0 + on_b1)
    wait_for(lambda: all_zero(mx, ["b0", "b1"]), what="every gauge back to 0")
    # the whole pool renamed: a fresh pool, nothing left over or negative
    mx.rewrite(lambda d: (d["pools"][0].__setitem__("name", "other"),
                           d["listeners"][0].__setitem__("pool", "other")))
    mx.reload(3)
    assert deliver(mx.port) == {}
    wait_for(lambda: all_zero(mx, ["b0", "b1"], pool="other"), what="every gauge back to 0")
    assert metrics(mx)['mxlb_backend_sessions_total{pool="other",backend="b0"}'] + \
        metrics(mx)['mxlb_backend_sessions_total{pool="other",backend="b1"}'] == 1
    assert mx.stop() == 0


def test_old_sessions_answer_with_their_own_hostname(env):
    a = env.sink()
    mx = env.mxlb([a.port])
    old_quit, old_stop = Client(mx.port), Client(mx.port)
    for c in (old_quit, old_stop):
        assert c.reply() == (220, [f"{HOST} ESMTP"])
        assert c.cmd(b"NOOP")[0] == 250
    mx.rewrite(new_hostname)
    mx.reload(1)
    new = Client(mx.port)
    assert new.reply() == (220, [f"{NEW_HOST} ESMTP"])
    # replies mxlb writes itself, in the command phase
    assert old_quit.cmd(b"QUIT") == (221, [f"2.0.0 {HOST} closing connection"])
    assert listener_active(mx) == 2
    mx.proc.signal(signal.SIGTERM)
    assert old_stop.reply() == (421, [f"4.3.2 {HOST} Service shutting down"])
    assert new.reply() == (421, [f"4.3.2 {NEW_HOST} Service shutting down"])
    assert mx.stop() == 0
