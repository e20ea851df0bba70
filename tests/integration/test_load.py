"""5000 messages from Postfix's smtp-source through mxlb to two mxlb-sink
backends: every one counted by the sinks. Also prints (and writes to
build/smtp-source-figures.txt) messages per second and mxlb's CPU time per
message: a figure to quote, never asserted."""
import os
import subprocess
import time

from conftest import BUILD, wait_for

MESSAGES = 5000


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_smtp_source_5000_messages_all_counted(env):
    a, b = env.sink(), env.sink()
    mx = env.mxlb([a.port, b.port], server={"workers": 1})
    cpu0, t0 = cpu_seconds(mx.proc.pid), time.time()
    r = subprocess.run(["/usr/sbin/smtp-source", "-m", str(MESSAGES), "-s", "20", "-l", "1024",
                        "-f", "sender@client.test", "-t", "rcpt@dest.test", "-M", "client.test",
                        f"127.0.0.1:{mx.port}"], capture_output=True, text=True, timeout=300)
    elapsed, cpu = time.time() - t0, cpu_seconds(mx.proc.pid) - cpu0
    assert r.returncode == 0, r.stderr
    total = lambda: a.stats().get("messages", 0) + b.stats().get("messages", 0)
    wait_for(lambda: total() == MESSAGES, timeout=30, what=f"{MESSAGES} messages")
    assert a.stats()["messages"] > 0 and b.stats()["messages"] > 0
    wait_for(lambda: sum(s["result"] == "relayed" for s in mx.sessions()) == MESSAGES,
             what="every session line")
    assert mx.stop() == 0
    figures = (f"smtp-source -m {MESSAGES} -s 20 -l 1024 through mxlb (1 worker) to two mxlb-sink: "
               f"{MESSAGES / elapsed:.0f} messages/s, mxlb CPU {cpu * 1e6 / MESSAGES:.0f} us "
               f"per message ({cpu:.2f} s over {elapsed:.2f} s)")
    print("\n" + figures)
    (BUILD / "smtp-source-figures.txt").write_text(figures + "\n")
