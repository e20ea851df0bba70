"""SIGHUP reloads the configuration: new sessions use the new one, sessions
in progress finish on theirs, an invalid file changes nothing, listeners
come and go, and reloads under load lose nothing."""
import signal
import subprocess
import time

from conftest import refused, Client, deliver, free_port, wait_for


def test_reload_switches_new_sessions_and_keeps_old_ones(env):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([a.port])
    held = Client(mx.port)
    held.reply()
    assert held.cmd(b"EHLO old.test")[0] == 250
    mx.rewrite(lambda d: d["pools"][0]["backends"].__setitem__(
        0, {"name": "b0", "address": f"127.0.0.1:{b.port}"}))
    mx.reload(1)
    assert "configuration reloaded" in mx.log()
    assert deliver(mx.port) == {}
    assert wait_for(b.messages)
    # the session that started before the reload ends on its old backend
    held.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [held.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert held.cmd(b"old config\r\n.")[0] == 250
    assert held.cmd(b"QUIT")[0] == 221
    assert wait_for(a.messages)[0][0] == b"old config\r\n"
    assert mx.stop() == 0


def test_invalid_file_changes_nothing(env):
    a = env.sink()
    mx = env.mxlb([a.port])
    good = mx.cfg_path.read_text()
    mx.cfg_path.write_text(good + "\nnonsense: [\n")
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "configuration is unchanged" in mx.log())
    assert f"{mx.cfg_path}:" in mx.log()
    assert deliver(mx.port) == {}
    assert mx.stop() == 0


def test_listeners_added_and_removed(env):
    a = env.sink()
    mx = env.mxlb([a.port])
    new_port = free_port()
    mx.rewrite(lambda d: d["listeners"][0].__setitem__("listen", [f"127.0.0.1:{new_port}"]))
    mx.reload(1)
    assert deliver(new_port) == {}
    wait_for(lambda: refused(mx.port), what="the old listener to close")
    assert mx.stop() == 0


def test_three_reloads_during_smtp_source_lose_nothing(env):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([a.port, b.port], pool={"health": {"check": "smtp", "interval": "500ms"}})
    src = subprocess.Popen(["/usr/sbin/smtp-source", "-m", "3000", "-s", "10", "-l", "1024",
                            "-f", "a@client.test", "-t", "b@dest.test", f"127.0.0.1:{mx.port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for i in range(3):
        time.sleep(0.15)
        mx.rewrite(lambda d: d["pools"][0]["backends"][0].__setitem__("weight", 1 + i))
        mx.proc.signal(signal.SIGHUP)
    out, err = src.communicate(timeout=120)
    assert src.returncode == 0, err
    wait_for(lambda: mx.log().count("configuration reloaded") == 3)
    total = lambda: a.stats().get("messages", 0) + b.stats().get("messages", 0)
    wait_for(lambda: total() == 3000, timeout=30, what="3000 messages")
    assert not [s for s in mx.sessions() if s["result"] not in ("relayed", "client_quit")]
    assert mx.stop() == 0
