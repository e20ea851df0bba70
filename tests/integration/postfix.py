"""A real Postfix (Debian's postfix package: /usr/sbin/postfix and
/usr/lib/postfix/sbin/*) run from a throwaway configuration directory, as a
backend of mxlb for differential tests.

    from postfix import postfix          # the fixture (a factory)

    def test_x(env, postfix):
        pf = postfix(params={"smtpd_discard_ehlo_keywords": "chunking"})
        mx = env.mxlb([pf.port], pool={"handoff": "xclient"})
        ...
        msgs = pf.wait_delivered(1)      # [(bytes, envelope dict)] from the sink
        assert "client=unknown[127.0.0.1]" in pf.maillog()

Layout: DIR/etc (main.cf and master.cf), DIR/spool (queue_directory),
DIR/data (data_directory), DIR/maillog (maillog_file, written by the
postlog service) and DIR/master.out (the master's stdout/stderr; normally
empty, as the master reports fatal start-up errors only to syslog: a failed
start() includes `postfix check`'s verdict instead). DIR is a fresh /tmp/mxlb-postfix-* (mode
0755): the master opens data_directory/master.lock as the postfix user, who
cannot search pytest's private /tmp/pytest-of-root. The test's tmp dir gets
a symlink tmp/postfixN -> DIR while Postfix runs; stop() replaces it with a
copy of etc/, maillog and master.out and removes DIR. Nothing uses the
system /etc/postfix/main.cf (it need not exist).

Postfix listens on 127.0.0.1 only: smtpd on a free port; every other
service is a UNIX socket in DIR/spool. Every accepted message is relayed at
once (relayhost = [127.0.0.1]:SINK, no TLS, no MIME conversion, no line
folding) to an mxlb-sink started with `env.sink()`, which saves it byte for
byte. The changes Postfix makes to a message: its own Received: header on
top; every line end written as CRLF (a bare LF in DATA, and any run of CRs
before an LF, become one CRLF); a bare CR inside a line becomes a space; a
message not ending in a line end gets one. Headers are not rewritten or
added (local_header_rewrite_clients is empty), 8-bit content is not
converted and long lines are not folded.

The master runs in the foreground (`master -c DIR/etc -s`) as the leader
of its own process group; stop() sends SIGTERM to that PID and afterwards
SIGKILLs whatever is left in the group, so no Postfix process survives a
test. Needs root (the daemons drop to mail_owner = postfix).
"""
import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, terminate, wait_for

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
DAEMON_DIR = "/usr/lib/postfix/sbin"
MASTER = DAEMON_DIR + "/master"
HOSTNAME = "postfix.test"

# the queue layout of /etc/postfix/postfix-files: (name, owner, group, mode)
_QUEUE_DIRS = [
    ("active", "postfix", None, 0o700), ("bounce", "postfix", None, 0o700),
    ("corrupt", "postfix", None, 0o700), ("defer", "postfix", None, 0o700),
    ("deferred", "postfix", None, 0o700), ("flush", "postfix", None, 0o700),
    ("hold", "postfix", None, 0o700), ("incoming", "postfix", None, 0o700),
    ("private", "postfix", None, 0o700), ("maildrop", "postfix", "postdrop", 0o730),
    ("public", "postfix", "postdrop", 0o710), ("pid", "root", None, 0o755),
    ("saved", "postfix", None, 0o700), ("trace", "postfix", None, 0o700),
]


class _PortTaken(Exception):
    pass


_live_groups = set()  # master PIDs (= process group IDs) not yet stopped


@atexit.register
def _kill_leftovers():
    for pgid in list(_live_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def available():
    """None when a Postfix can be started here, else why not."""
    if os.geteuid() != 0:
        return "Postfix needs root (its daemons drop to the postfix user)"
    if not os.path.exists(MASTER):
        return "Debian's postfix package is not installed"
    return None


def mail_version():
    """The installed Postfix's mail_version (e.g. '3.7.11')."""
    r = subprocess.run([POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True)
    return r.stdout.strip()


def _listening(port):
    """True when a TCP socket listens on 127.0.0.1:port (from /proc/net/tcp)."""
    want = "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in f.readlines()[1:])
    except OSError:
        return False


def _pf_value(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


class Postfix:
    """One Postfix instance in directory `base`, relaying to
    127.0.0.1:relay_port; start() writes its files and starts it. `params`
    (main.cf parameters: str, int, bool or list values) override the
    defaults below, including the smtpd_discard_ehlo_keywords that
    chunking=False / pipelining=False set; `smtpd_options` are -o overrides
    for the smtpd service alone; verbose runs smtpd -v, which logs every
    command line it reads and every reply line (sessions())."""

    def __init__(self, base, relay_port, keep=None, params=None, chunking=True, pipelining=True,
                 verbose=True, smtpd_options=None, port=None):
        self.base = Path(base)
        self.keep = Path(keep) if keep else None  # where stop() copies the logs
        self.port = port or free_port()
        self.relay_port = relay_port
        self.etc = self.base / "etc"
        self.queue = self.base / "spool"
        self.data = self.base / "data"
        self.log_path = self.base / "maillog"
        self.stderr_path = self.base / "master.out"
        self.sink = None
        self.proc = None
        self.pid = None

        discard = []
        if not chunking:
            discard.append("chunking")
        if not pipelining:
            discard.append("pipelining")
        p = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": HOSTNAME,
            "mydomain": "test",
            "myorigin": "$myhostname",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # nothing is local: every recipient goes to the relayhost
            "mydestination": "",
            # every domain is a relay domain: reject_unauth_destination (which
            # smtpd insists on) passes for any recipient from any client,
            # also from addresses set with XCLIENT
            "relay_domains": "static:ALL",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": f"[127.0.0.1]:{relay_port}",
            # accept everything from anyone (also from XCLIENT-given addresses)
            "smtpd_client_restrictions": "",
            "smtpd_helo_restrictions": "",
            "smtpd_sender_restrictions": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_data_restrictions": "",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",  # no DNS: names are "unknown" unless XCLIENT NAME=
            "smtpd_client_port_logging": "yes",  # connect from unknown[ADDR]:PORT
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "smtpd_error_sleep_time": "0s",
            "smtpd_tls_security_level": "none",
            "smtpd_discard_ehlo_keywords": ", ".join(discard),
            # the default ($mynetworks) would exempt every loopback client
            # from smtpd_forbid_bare_newline (which stays "no" by default)
            "smtpd_forbid_bare_newline_exclusions": "",
            "in_flow_delay": "0s",
            # messages leave as they came: no header rewriting or additions,
            # no 8bit->7bit conversion, no folding of long lines
            "local_header_rewrite_clients": "",
            "disable_mime_output_conversion": "yes",
            "smtp_line_length_limit": "0",
            "smtp_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "smtp_connection_cache_on_demand": "no",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
            "append_dot_mydomain": "no",
            "notify_classes": "",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.base),
        }
        p.update({k: _pf_value(v) for k, v in (params or {}).items()})
        self.params = p

        self.verbose = verbose
        self.smtpd_options = dict(smtpd_options or {})
        self._auto_port = port is None

    # -- lifecycle ---------------------------------------------------------

    def _master_cf(self):
        smtpd = ["smtpd"]
        if self.verbose:
            smtpd.append("-v")  # logs every command line read: "< unknown[ADDR]:PORT: LINE"
        for k, v in self.smtpd_options.items():
            v = _pf_value(v)
            smtpd += ["-o", f"{{ {k} = {v} }}" if re.search(r"\s", v) or not v else f"{k}={v}"]
        # service type private unpriv chroot wakeup maxproc command
        services = [
            (f"127.0.0.1:{self.port}", "inet", "n", "-", "n", "-", "-", " ".join(smtpd)),
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        return "".join("%-24s %-10s %-3s %-3s %-3s %-6s %-3s %s\n" % s
                       for s in services)

    def _make_dirs(self):
        import grp
        import pwd

        def own(path, user, group, mode):
            uid = pwd.getpwnam(user).pw_uid
            gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
            os.chown(path, uid, gid)
            os.chmod(path, mode)

        self.base.mkdir(parents=True, exist_ok=True)
        self.etc.mkdir()
        (self.etc / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in self.params.items()))
        (self.etc / "master.cf").write_text(self._master_cf())
        # Postfix rereads a file modified in the last second (after 300 ms
        # sleeps, for up to about 2 s): date both files back
        old = time.time() - 60
        for f in ("main.cf", "master.cf"):
            os.utime(self.etc / f, (old, old))
        self.queue.mkdir()
        own(self.queue, "root", None, 0o755)
        for name, user, group, mode in _QUEUE_DIRS:
            (self.queue / name).mkdir()
            own(self.queue / name, user, group, mode)
        self.data.mkdir()
        own(self.data, "postfix", None, 0o700)
        self.log_path.touch()
        os.chmod(self.log_path, 0o644)

    def start(self, timeout=10.0):
        why = available()
        if why:
            pytest.skip(why)
        self._make_dirs()
        r = subprocess.run([POSTCONF, "-c", str(self.etc), "-n"], capture_output=True,
                           text=True)
        # postconf warns about unknown (misspelt) parameters: fail on those
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
        self.stderr_file = open(self.stderr_path, "ab")
        for attempt in range(3):
            try:
                return self._launch(timeout)
            except _PortTaken:
                if not self._auto_port or attempt == 2:
                    self.stop()
                    raise RuntimeError(f"port {self.port} is taken:\n" + self.maillog())
                # free_port() raced with another process: take another one
                self.port = free_port()
                (self.etc / "master.cf").write_text(self._master_cf())
                old = time.time() - 60
                os.utime(self.etc / "master.cf", (old, old))
            except BaseException:
                self.stop()
                raise

    def _launch(self, timeout):
        envv = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        envv["MAIL_CONFIG"] = str(self.etc)
        # -s: stay in the foreground, logging to stdout/stderr while postlogd
        # is not up; start_new_session: the master leads its own process
        # group, so its SIGTERM handler's kill(-pid) reaches every child.
        self.proc = subprocess.Popen([MASTER, "-c", str(self.etc), "-s"], stdin=subprocess.DEVNULL,
                                     stdout=self.stderr_file, stderr=subprocess.STDOUT,
                                     env=envv, start_new_session=True, cwd="/")
        self.pid = self.proc.pid
        _live_groups.add(self.pid)
        end = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                self._reap_group()
                # the master logs its fatal start-up errors (such as "bind
                # ... Address already in use") only to syslog; see for ourselves
                if _listening(self.port):
                    raise _PortTaken()
                chk = subprocess.run([POSTFIX, "-c", str(self.etc), "check"], capture_output=True,
                                     text=True)
                raise RuntimeError("postfix master exited %s:\n%s%s\n`postfix check`: %s%s" % (
                    self.proc.returncode, self.stderr_path.read_text(errors="replace"),
                    self.maillog(), chk.stdout, chk.stderr))
            # no probe connection: smtpd would log a session for it
            if _listening(self.port) and "daemon started" in self.maillog():
                return self
            if time.time() > end:
                raise TimeoutError("Postfix did not start:\n" + self.maillog())
            time.sleep(0.02)

    def stop(self, timeout=10.0):
        """SIGTERM to the master (which passes it on to its process group),
        then SIGKILL to anything of the group still alive. Returns the
        master's exit status: -SIGTERM (-15) is a clean stop (the master
        kills its process group, then re-raises the signal on itself)."""
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        self._reap_group()
        f = getattr(self, "stderr_file", None)
        if f and not f.closed:
            f.close()
        self._archive()
        return self.proc.returncode

    def _archive(self):
        """Copy the configuration and logs to `keep` and remove the instance
        directory (the queue is empty or of no interest any more)."""
        if not self.keep or not self.base.exists():
            return
        if self.keep.is_symlink():
            self.keep.unlink()
        self.keep.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.etc, self.keep / "etc", dirs_exist_ok=True)
        for f in (self.log_path, self.stderr_path):
            if f.exists():
                shutil.copy(f, self.keep / f.name)
        shutil.rmtree(self.base, ignore_errors=True)
        self.log_path = self.keep / self.log_path.name
        self.stderr_path = self.keep / self.stderr_path.name
        self.etc = self.keep / "etc"

    def _reap_group(self):
        """The master's children exit on their own when it goes (they see
        its status pipe close); make sure of it, with SIGKILL after 5 s."""
        end = time.time() + 5
        while time.time() < end and self._group_alive():
            time.sleep(0.02)
        if self._group_alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            while self._group_alive():
                time.sleep(0.02)
        _live_groups.discard(self.pid)

    def _group_alive(self):
        # zombies count as gone: once the master is gone they are init's to reap
        return bool(self.group_pids())

    def group_pids(self):
        """PIDs of the live processes of the master's process group."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.pid and fields[0] != "Z":
                    out.append(int(d.name))
        return out

    # -- what Postfix did ----------------------------------------------------

    def maillog(self):
        """The text of the maillog so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10.0, count=1):
        """Wait until the regex `pattern` matches `count` times in the
        maillog (logging goes through postlogd: it lags a little); returns
        the list of matches."""
        rx = re.compile(pattern, re.M)
        end = time.time() + timeout
        while True:
            m = list(rx.finditer(self.maillog()))
            if len(m) >= count:
                return m
            if time.time() > end:
                raise TimeoutError(f"{pattern!r} not {count} times in the Postfix maillog:\n"
                                   + self._brief_log())
            time.sleep(0.02)

    _SMTPD = re.compile(r"postfix/smtpd\[(\d+)\]: (.*)$")
    _PEER = r"\S*?\[[^\]]*\](?::\d+|:unknown)?"

    def sessions(self):
        """Every smtpd session in the maillog, in order, as a dict:
        pid, peer (the real client, "unknown[127.0.0.1]:PORT"), commands
        (each line smtpd read, as logged: non-printable octets shown as
        '?', lines over about 1970 octets cut), replies (each reply line),
        peers (the client name[addr]:port smtpd showed for each command:
        it changes after an accepted XCLIENT), clients (the `client=` value
        of each message queued, with `, orig_client=...` after XFORWARD),
        lines (all its log lines) and disconnect (the summary line, or None
        while the session is open). commands/replies/peers need verbose."""
        out, open_ = [], {}
        cmd_rx = re.compile(r"^< (%s): (.*)$" % self._PEER)
        rep_rx = re.compile(r"^> (%s): (.*)$" % self._PEER)
        for line in self.maillog().splitlines():
            m = self._SMTPD.search(line)
            if not m:
                continue
            pid, text = m.groups()
            c = re.match(r"connect from (%s)$" % self._PEER, text)
            if c:
                sess = {"pid": int(pid), "peer": c.group(1), "commands": [], "replies": [],
                        "peers": [], "clients": [], "lines": [], "disconnect": None}
                open_[pid] = sess
                out.append(sess)
            sess = open_.get(pid)
            if sess is None:
                continue
            sess["lines"].append(text)
            if (m2 := cmd_rx.match(text)):
                sess["peers"].append(m2.group(1))
                sess["commands"].append(m2.group(2))
            elif (m2 := rep_rx.match(text)):
                sess["replies"].append(m2.group(2))
            elif (m2 := re.match(r"[0-9A-F]+: client=(.*)$", text)):
                sess["clients"].append(m2.group(1))
            elif text.startswith("disconnect from "):
                sess["disconnect"] = text
                del open_[pid]
        return out

    def commands(self):
        """The command lines smtpd read, in order, over all sessions (needs
        verbose=True)."""
        return [c for s in self.sessions() for c in s["commands"]]

    def replies(self):
        """The reply lines smtpd wrote, in order (needs verbose=True)."""
        return [r for s in self.sessions() for r in s["replies"]]

    def clients(self):
        """The `client=` value of every message smtpd queued, in order
        (e.g. 'unknown[127.0.0.1]:40000'; after XFORWARD
        'unknown[127.0.0.1]:40000, orig_client=unknown[192.0.2.1]:unknown')."""
        return re.findall(r"postfix/smtpd\[\d+\]: [0-9A-F]+: client=(.*)$", self.maillog(),
                          re.M)

    def wait_idle(self, timeout=10.0):
        """Wait until every smtpd session has logged its disconnect and the
        queue is empty (everything accepted was delivered or bounced)."""
        wait_for(lambda: all(s["disconnect"] for s in self.sessions()) and self.queue_empty(),
                 timeout, what="Postfix to finish its sessions and empty its queue")

    def wait_delivered(self, n, timeout=10.0):
        """The first `n` messages the sink saved, as [(bytes, envelope dict)]
        (the envelope from the sink's JSON: mail_from, rcpt_to, helo, ...),
        once there are at least `n`."""
        end = time.time() + timeout
        while True:
            msgs = self.sink.messages()
            if len(msgs) >= n:
                return msgs[:n]
            if time.time() > end:
                raise TimeoutError(f"{len(msgs)} of {n} messages relayed by Postfix; maillog:\n"
                                   + self._brief_log())
            time.sleep(0.02)

    def _brief_log(self, n=60):
        """The last `n` maillog lines without smtpd -v's table-lookup noise."""
        noise = re.compile(r"\]: (match_|dict_|maps_find|mail_addr_find|ctable_|name_mask|"
                           r"(input|send) attr|[a-z/]+ socket: wanted|connect to subsystem|"
                           r"generic_checks|smtpd_acl|event_|vstream_|rewrite_clnt|resolve_clnt|"
                           r"extract_addr|smtp_stream_setup|xtext|> .*: 250-)")
        lines = [ln for ln in self.maillog().splitlines() if not noise.search(ln)]
        return "\n".join(lines[-n:])

    def queue_empty(self):
        """True when no message waits in the queue."""
        for d in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _root, _dirs, files in os.walk(self.queue / d):
                if files:
                    return False
        return True

    def postconf(self, name):
        r = subprocess.run([POSTCONF, "-c", str(self.etc), "-h", name], capture_output=True,
                           text=True)
        return r.stdout.strip()


def start_postfix(env, sink=None, **kw):
    """Start a Postfix relaying to `sink` (default: a new `env.sink()`);
    it is stopped with the test's other processes. Keywords: params (dict
    of main.cf parameters, overriding the defaults), chunking (False:
    smtpd_discard_ehlo_keywords += chunking), pipelining (False: the same
    for pipelining), verbose (smtpd -v: every command line logged),
    smtpd_options (dict of -o overrides for the smtpd service only), port."""
    why = available()
    if why:
        pytest.skip(why)
    sink = sink or env.sink()
    keep = env._name("postfix")
    base = Path(tempfile.mkdtemp(prefix="mxlb-postfix-", dir="/tmp"))
    os.chmod(base, 0o755)
    keep.symlink_to(base)
    pf = Postfix(base, sink.port, keep=keep, **kw)
    pf.sink = sink
    pf.start()
    env.procs.append(pf)  # env.stop_all() calls .stop()
    return pf


@pytest.fixture
def postfix(env):
    """A factory: postfix(**kw) starts a Postfix (see start_postfix)."""
    started = []

    def make(**kw):
        pf = start_postfix(env, **kw)
        started.append(pf)
        return pf
    yield make
    for pf in started:
        pf.stop()
