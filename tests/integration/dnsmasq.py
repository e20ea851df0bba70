"""A real DNS server on loopback for the tests: Debian's dnsmasq, answering
only from the records a test gives it, and a resolver that never answers.

    from dnsmasq import dnsmasq, dead_resolver   # the fixtures (factories)

    def test_x(env, dnsmasq):
        dns = dnsmasq(hosts={"client.example": "127.0.0.1"},        # A/AAAA
                      ptrs={"127.0.0.1": "client.example"},         # PTR
                      addresses={"2.0.0.127.zen.example": "127.0.0.2"},
                      txts={"2.0.0.127.zen.example": "listed"})
        mx = env.mxlb([...], server={"resolver": dns.resolver})    # "127.0.0.1:PORT"
        ...
        assert dns.queries("PTR") == ["1.0.0.127.in-addr.arpa"]    # what was asked

dnsmasq(...) keywords, each optional:
  hosts      {name: address or [addresses]}: --host-record (A or AAAA by
             the address; dnsmasq answers the PTR of each address with the
             name too)
  ptrs       {address: name or [names]}: --ptr-record (the reverse name is
             made from the address; several names give several PTRs)
  addresses  {domain: address}: --address=/domain/address (the domain and
             every name below it; a DNSBL listing: "2.0.0.127.zen.example")
  txts       {name: text}: --txt-record
  ttl        the TTL of every answer (--local-ttl; default 60 s). Negative
             answers carry no SOA, so mxlb keeps them its fixed 60 s.
  args       more dnsmasq options, as a list
Every other name gets NXDOMAIN at once (--local=/#/: nothing is forwarded
and no /etc/resolv.conf or /etc/hosts is read). The object has .port,
.resolver ("127.0.0.1:PORT", for server.resolver), .queries(qtype=None)
(the names asked, in order, from dnsmasq's --log-queries lines), .log()
and .stop(); it is stopped by PID (SIGTERM) with the test's other processes.

dead_resolver() binds a UDP socket on 127.0.0.1 that reads nothing and
answers nothing (unlike a closed port, which answers with ICMP at once):
.port, .resolver; closed at the end of the test.
"""
import ipaddress
import os
import re
import socket
import struct
import time

import pytest

from conftest import Proc, free_port

DNSMASQ = "/usr/sbin/dnsmasq"


def _ptr_name(addr):
    return ipaddress.ip_address(addr).reverse_pointer


def _list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def probe(port, name="probe.invalid", qtype=1, timeout=0.3):
    """One UDP query to 127.0.0.1:port; the rcode, or None without an answer."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    pkt = struct.pack(">HHHHHH", 0x4d58, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(4096)
        except OSError:
            return None
    return data[3] & 15


class Dnsmasq:
    def __init__(self, proc, port):
        self.proc, self.port = proc, port
        self.resolver = f"127.0.0.1:{port}"

    def log(self):
        return self.proc.log()

    def queries(self, qtype=None):
        """The names asked, in order: all, or those of one type ("A", "PTR")."""
        out = []
        for m in re.finditer(r"query\[(\w+)\] (\S+) from ", self.log()):
            if m.group(2) == "probe.invalid":
                continue
            if qtype is None or m.group(1) == qtype:
                out.append(m.group(2))
        return out

    def stop(self):
        return self.proc.stop()


def start_dnsmasq(env, hosts=None, ptrs=None, addresses=None, txts=None, ttl=60, args=()):
    if not os.path.exists(DNSMASQ):
        pytest.skip("Debian's dnsmasq package is not installed")
    opts = []
    for name, addrs in (hosts or {}).items():
        opts.append("--host-record=" + ",".join([name] + _list(addrs)))
    for addr, names in (ptrs or {}).items():
        for n in _list(names):
            opts.append(f"--ptr-record={_ptr_name(addr)},{n}")
    for domain, addr in (addresses or {}).items():
        opts.append(f"--address=/{domain}/{addr}")
    for name, text in (txts or {}).items():
        opts.append(f"--txt-record={name},{text}")
    last = None
    for attempt in range(3):
        port = free_port()
        d = env._name("dnsmasq")
        d.mkdir()
        cmd = [DNSMASQ, "--no-daemon", f"--port={port}", "--listen-address=127.0.0.1",
               "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
               "--pid-file=", "--local=/#/", f"--local-ttl={ttl}", "--log-queries",
               "--log-facility=-", "--cache-size=0", *opts, *args]
        p = Proc(cmd, d / "log")
        end = time.time() + 10
        while time.time() < end and p.proc.poll() is None and probe(port) is None:
            time.sleep(0.02)
        if p.proc.poll() is None and probe(port) is not None:
            dm = Dnsmasq(p, port)
            env.procs.append(dm)
            return dm
        p.stop()
        last = p.log()
        if "in use" not in last:
            break
    raise RuntimeError("dnsmasq did not start:\n" + (last or ""))


@pytest.fixture
def dnsmasq(env):
    """A factory: dnsmasq(**records) starts one (see start_dnsmasq)."""
    return lambda **kw: start_dnsmasq(env, **kw)


class DeadResolver:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.resolver = f"127.0.0.1:{self.port}"

    def close(self):
        self.sock.close()


@pytest.fixture
def dead_resolver():
    made = []

    def make():
        d = DeadResolver()
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()
