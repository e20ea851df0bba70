"""Alerts: mail sent by mxlb itself on backend_down, backend_up and
pool_down, to a real SMTP server (mxlb-sink); an unreachable alert server
is logged, never fatal."""
from conftest import deliver, free_port, wait_for


def subjects(sink):
    out = []
    for raw, _ in sink.messages():
        for line in raw.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return out


def test_alerts_on_down_up_and_pool_down(env):
    alerts = env.sink()
    a, b = env.sink(), env.sink()
    port_a = a.port
    pool = {"name": "main", "health": {"check": "smtp", "interval": "200ms", "timeout": "500ms",
                                       "rise": 1, "fall": 1},
            "backends": [{"name": "b0", "address": f"127.0.0.1:{a.port}"},
                         {"name": "b1", "address": f"127.0.0.1:{b.port}"}]}
    mx = env.mxlb([], pools=[pool], extra={"alerts": {
        "smtp": f"127.0.0.1:{alerts.port}", "from": "mxlb@mx.test",
        "to": ["postmaster@ops.test", "oncall@ops.test"]}})
    a.proc.stop()
    wait_for(lambda: any("backend_down: backend b0" in s for s in subjects(alerts)), timeout=10)
    b.proc.stop()
    wait_for(lambda: any("pool_down" in s for s in subjects(alerts)), timeout=10)
    env.sink(port=port_a)
    wait_for(lambda: any("backend_up: backend b0" in s for s in subjects(alerts)), timeout=10)
    raw, e = alerts.messages()[0]
    assert e["rcpt_to"] == ["postmaster@ops.test", "oncall@ops.test"]
    assert e["mail_from"] == "mxlb@mx.test"
    assert b"Pool: main" in raw
    assert deliver(mx.port) == {}
    assert mx.stop() == 0


def test_unreachable_alert_server_is_logged_not_fatal(env):
    a = env.sink()
    dead = free_port()
    pool = {"name": "main", "health": {"check": "tcp", "interval": "200ms", "timeout": "500ms",
                                       "rise": 1, "fall": 1},
            "backends": [{"name": "b0", "address": f"127.0.0.1:{a.port}"},
                         {"name": "b1", "address": f"127.0.0.1:{free_port()}"}]}
    mx = env.mxlb([], pools=[pool], extra={"alerts": {"smtp": f"127.0.0.1:{dead}",
                                                       "from": "mxlb@mx.test",
                                                       "to": ["ops@ops.test"]}})
    wait_for(lambda: "not sent to" in mx.log(), timeout=10, what="the alert failure line")
    assert deliver(mx.port) == {}
    assert mx.stop() == 0
