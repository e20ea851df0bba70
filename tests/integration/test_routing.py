"""Balancing, routes, invisible failover, and the client's identity handed
to the backend (PROXY v1/v2 checked by aiosmtpd's own PROXY support,
XCLIENT by mxlb-sink)."""
import asyncio
import time

import pytest

from conftest import Client, HOST, deliver, free_port, wait_for


def backends_used(mx):
    return [s["backend"] for s in mx.sessions() if s.get("result") == "relayed"]


def test_roundrobin_uses_both_and_honours_weights(env):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([{"address": f"127.0.0.1:{a.port}", "weight": 3},
                   {"address": f"127.0.0.1:{b.port}", "weight": 1}])
    for _ in range(20):
        assert deliver(mx.port) == {}
    wait_for(lambda: len(a.messages()) + len(b.messages()) == 20)
    assert len(a.messages()) == 15 and len(b.messages()) == 5
    assert mx.stop() == 0


@pytest.mark.parametrize("balance", ["leastconn", "random", "source", "ehlo"])
def test_other_balancers_deliver(env, balance):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([a.port, b.port], pool={"balance": balance})
    for i in range(10):
        assert deliver(mx.port, ehlo=f"h{i}.test") == {}
    wait_for(lambda: len(a.messages()) + len(b.messages()) == 10)
    if balance in ("leastconn", "random"):
        assert a.messages() and b.messages()
    assert mx.stop() == 0


def test_routes_by_ehlo_and_client(env):
    main, partner, local = env.sink(), env.sink(), env.sink()
    pools = [
        {"name": "main", "health": {"check": "none"},
         "backends": [{"name": "m", "address": f"127.0.0.1:{main.port}"}]},
        {"name": "partner", "health": {"check": "none"},
         "backends": [{"name": "p", "address": f"127.0.0.1:{partner.port}"}]},
        {"name": "local", "health": {"check": "none"},
         "backends": [{"name": "l", "address": f"127.0.0.1:{local.port}"}]},
    ]
    mx = env.mxlb([], pools=pools, listener={"routes": [
        {"ehlo": "*.Partner.test", "pool": "partner"},
        {"client": "127.0.0.0/8", "ehlo": "loopback.test", "pool": "local"},
    ]})
    assert deliver(mx.port, ehlo="mx1.partner.TEST") == {}
    assert deliver(mx.port, ehlo="loopback.test") == {}
    assert deliver(mx.port, ehlo="other.test") == {}
    wait_for(lambda: main.messages() and partner.messages() and local.messages())
    pools = lambda: [s["pool"] for s in mx.sessions() if s["result"] == "relayed"]
    assert wait_for(lambda: len(pools()) == 3 and pools()) == ["partner", "local", "main"]
    assert mx.stop() == 0


@pytest.mark.parametrize("first", ["refused", "421", "554", "slow"])
def test_failover_is_invisible(env, first):
    good = env.sink()
    if first == "refused":
        bad_port = free_port()
    elif first == "slow":
        bad_port = env.sink("--greeting-delay", "3s").port
    else:
        bad_port = env.sink("--fail-greeting", first).port
    mx = env.mxlb([bad_port, good.port],
                  listener={"timeouts": {"connect": "1s", "backend_reply": "1s"}})
    c = Client(mx.port)
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO fo.test")
    assert code == 250 and lines[0] == "sink.local"
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert c.cmd(b"hi\r\n.")[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    assert len(good.messages()) == 1
    assert "event=backend_error" in mx.log() and "backend=b0" in mx.log()
    assert mx.stop() == 0


def test_all_backends_down_gives_421(env):
    mx = env.mxlb([free_port(), free_port(), free_port()], pool={"retries": 2})
    c = Client(mx.port)
    c.reply()
    code, lines = c.cmd(b"EHLO x.test")
    assert code == 421
    assert lines == [f"4.3.2 {HOST} Service not available, closing transmission channel"]
    assert c.eof()
    assert mx.sessions()[-1]["result"] == "unavailable"
    assert mx.stop() == 0


def test_retries_bound_the_attempts(env):
    good = env.sink()
    mx = env.mxlb([free_port(), free_port(), good.port], pool={"retries": 1})
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO x.test")[0] == 421  # two tries, both refused
    assert mx.log().count("event=backend_error") == 2
    assert mx.stop() == 0


def aiosmtpd_with_proxy():
    from aiosmtpd.controller import Controller

    seen = []

    class Handler:
        async def handle_PROXY(self, server, session, envelope, proxy_data):
            seen.append(proxy_data)
            return True

        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port, proxy_protocol_timeout=5)
    ctl.start()
    return ctl, port, seen


@pytest.mark.parametrize("handoff,version", [("proxy_v1", 1), ("proxy_v2", 2)])
def test_proxy_handoff_seen_by_aiosmtpd(env, handoff, version):
    ctl, port, seen = aiosmtpd_with_proxy()
    try:
        mx = env.mxlb([port], pool={"handoff": handoff})
        c = Client(mx.port)
        c.reply()
        my_port = c.sock.getsockname()[1]
        assert c.cmd(b"EHLO proxied.test")[0] == 250
        c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
        assert c.cmd(b"x\r\n.")[0] == 250
        c.cmd(b"QUIT")
        pd = wait_for(lambda: seen)[0]
        assert pd.version == version
        assert str(pd.src_addr) == "127.0.0.1" and pd.src_port == my_port
        assert pd.dst_port == mx.port
        assert mx.stop() == 0
    finally:
        ctl.stop()


def test_xclient_handoff_and_guard(env):
    sink = env.sink("--xclient")
    mx = env.mxlb([sink.port], pool={"handoff": "xclient"})
    c = Client(mx.port)
    c.reply()
    my_port = c.sock.getsockname()[1]
    code, lines = c.cmd(b"EHLO real.test")
    assert code == 250 and not any(l.startswith(("XCLIENT", "XFORWARD")) for l in lines)
    # the client's own XCLIENT never reaches the backend as one
    code, _ = c.cmd(b"XCLIENT ADDR=6.6.6.6 PORT=1 HELO=evil")
    assert code // 100 == 5
    c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert c.cmd(b"XCLIENT in the body stays\r\n.")[0] == 250
    c.cmd(b"QUIT")
    raw, e = wait_for(sink.messages)[0]
    assert raw == b"XCLIENT in the body stays\r\n"
    assert e["xclient"]["ADDR"] == "127.0.0.1"
    assert e["xclient"]["PORT"] == str(my_port)
    assert e["xclient"]["HELO"] == "real.test"
    assert e["client_addr"] == "127.0.0.1"
    assert mx.stop() == 0


def test_xclient_before_ehlo_refused_by_mxlb(env):
    sink = env.sink("--xclient")
    mx = env.mxlb([sink.port], pool={"handoff": "xclient"})
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"XCLIENT ADDR=6.6.6.6")[0] == 503
    assert c.cmd(b"XFORWARD ADDR=6.6.6.6")[0] == 503
    assert mx.stop() == 0
