"""Packaging (SPEC §12): `make install` with PREFIX and DESTDIR, the systemd
unit it writes, the man pages, the hardened binary, and the example
configurations, each of which passes `mxlb --check` as shipped."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, MXLB

TOP = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((TOP / "config" / "examples").iterdir())
MANS = [TOP / "man" / "mxlb.8", TOP / "man" / "mxlb.yaml.5"]


def make_args():
    """BUILD and the variant of the binaries under test, so that `make`
    finds them built instead of building another variant over them."""
    variant = (BUILD / ".variant").read_text().strip() if (BUILD / ".variant").exists() else ""
    return ["-C", str(TOP), f"BUILD={BUILD}", *(["SANITIZE=1"] if variant == "asan" else [])]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


COMPILES = re.compile(r"^\S*cc .* -o ", re.M)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    args = [*make_args(), f"DESTDIR={dest}", "PREFIX=/usr"]
    # Where `make` has nothing left to build, `make install` builds
    # nothing either: `sudo make install` after `make` compiles nothing as
    # root.
    dry_all = run(["make", "-n", *args, "all"])
    dry_install = run(["make", "-n", *args, "install"])
    assert dry_all.returncode == 0 and dry_install.returncode == 0, dry_install.stderr
    if not COMPILES.search(dry_all.stdout):
        assert not COMPILES.search(dry_install.stdout), dry_install.stdout
    # the binaries under test, as they are (-o: never rebuilt from sources
    # edited since)
    keep = [f"-o{BUILD / b}" for b in ("mxlb", "mxlb-sink", "mxlb-bench")]
    r = run(["make", *args, *keep, "install"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not COMPILES.search(r.stdout), r.stdout
    return dest


def test_install_puts_every_file_in_its_place(installed):
    files = {str(p.relative_to(installed)): p.stat().st_mode & 0o7777
             for p in installed.rglob("*") if p.is_file()}
    want = {
        "usr/sbin/mxlb": 0o755,
        "usr/bin/mxlb-sink": 0o755,
        "usr/bin/mxlb-bench": 0o755,
        "usr/lib/systemd/system/mxlb.service": 0o644,
        "usr/share/man/man8/mxlb.8": 0o644,
        "usr/share/man/man5/mxlb.yaml.5": 0o644,
        "usr/share/doc/mxlb/README.md": 0o644,
    }
    for e in EXAMPLES:
        want[f"usr/share/doc/mxlb/examples/{e.name}"] = 0o644
    assert files == want
    for e in EXAMPLES:
        assert (installed / f"usr/share/doc/mxlb/examples/{e.name}").read_bytes() == e.read_bytes()


def test_uninstall_removes_what_install_wrote(tmp_path):
    args = [*make_args(), f"DESTDIR={tmp_path}", "PREFIX=/usr/local",
            *[f"-o{BUILD / b}" for b in ("mxlb", "mxlb-sink", "mxlb-bench")]]
    assert run(["make", *args, "install"]).returncode == 0
    assert (tmp_path / "usr/local/sbin/mxlb").exists()
    assert "/usr/local/sbin/mxlb -c" in \
        (tmp_path / "usr/local/lib/systemd/system/mxlb.service").read_text()
    r = run(["make", *args, "uninstall"])
    assert r.returncode == 0, r.stderr
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []


def test_installed_binary_runs(installed):
    r = run([str(installed / "usr/sbin/mxlb"), "--version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("mxlb ")
    for tool in ("mxlb-sink", "mxlb-bench"):
        assert run([str(installed / "usr/bin" / tool), "--help"]).returncode == 0


def unit_lines(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_paths_and_reload(installed):
    text = (installed / "usr/lib/systemd/system/mxlb.service").read_text()
    assert "@" not in re.sub(r"(?m)^#.*$", "", text).replace("@system-service", "")
    u = unit_lines(text)
    assert u["Type"] == ["notify"]
    assert u["Environment"] == ["CONFIG=/etc/mxlb/mxlb.yaml"]
    assert u["ExecStartPre"] == ["/usr/sbin/mxlb -c ${CONFIG} --check"]
    assert u["ExecStart"] == ["/usr/sbin/mxlb -c ${CONFIG}"]
    # a file that fails the check never reaches the running mxlb
    assert u["ExecReload"] == ["/usr/sbin/mxlb -c ${CONFIG} --check", "/bin/kill -HUP $MAINPID"]
    assert "man:mxlb(8)" in u["Documentation"][0]
    assert u["RuntimeDirectory"] == ["mxlb"]
    assert u["UMask"] == ["0027"]
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
                "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime",
                "RestrictSUIDSGID", "PrivateDevices", "PrivateTmp", "NoNewPrivileges",
                "ProtectHome"):
        assert u[key] == ["yes"], key
    assert u["ProtectSystem"] == ["strict"]
    assert u["SystemCallArchitectures"] == ["native"]
    assert sorted(u["RestrictAddressFamilies"][0].split()) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "CAP_CHOWN" in u["CapabilityBoundingSet"][0]  # the unix admin socket's owner


def syscall_set(group, seen=None):
    seen = set() if seen is None else seen
    out = set()
    lines = run(["systemd-analyze", "syscall-filter", group]).stdout.splitlines()[1:]
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("@"):
            if s not in seen:
                seen.add(s)
                out |= syscall_set(s, seen)
        else:
            out.add(s)
    return out


def test_unit_sandbox_leaves_io_uring_and_scores_better_than_haproxy(installed, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = installed / "usr/lib/systemd/system/mxlb.service"
    u = unit_lines(unit.read_text())
    allowed = set()
    for f in u.get("SystemCallFilter", []):
        assert not f.startswith("~"), "a deny list could drop io_uring"
        for item in f.split():
            allowed |= syscall_set(item) if item.startswith("@") else {item}
    if allowed:
        assert {"io_uring_setup", "io_uring_enter", "io_uring_register"} <= allowed

    def score(path):
        r = run(["systemd-analyze", "security", "--offline=yes", str(path)])
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
        assert m, r.stdout + r.stderr
        return float(m.group(1)), r.stderr

    ours, warnings = score(unit)
    assert warnings == ""  # every directive known to this systemd and well formed
    assert ours <= 3.0, f"exposure {ours}"
    haproxy = Path("/lib/systemd/system/haproxy.service")
    if haproxy.exists():
        assert ours < score(haproxy)[0]


@pytest.mark.parametrize("man", MANS, ids=lambda p: p.name)
def test_man_pages_format_cleanly(installed, man):
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    section = man.suffix[1:]
    page = installed / f"usr/share/man/man{section}" / man.name
    assert page.read_bytes() == man.read_bytes()
    r = run(["groff", "-ww", "-man", "-Tutf8", str(page)])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert re.search(r"NAME\s+mxlb", re.sub(r".\x08", "", r.stdout))


def test_config_man_page_names_every_key():
    """Every key the configuration parser knows is in mxlb.yaml(5)."""
    page = (TOP / "man" / "mxlb.yaml.5").read_text().replace("\\-", "-")
    keys = set()
    for src in (TOP / "config").glob("*.c"):
        keys |= set(re.findall(r'strcmp\(key, "([a-z_0-9]+)"\)', src.read_text()))
    assert keys
    missing = sorted(k for k in keys if not re.search(rf"\b{k}\b", page))
    assert missing == []


def test_binary_is_hardened():
    if not shutil.which("readelf"):
        pytest.skip("readelf (binutils) is not installed")
    dyn = run(["readelf", "-d", str(MXLB)]).stdout
    assert "BIND_NOW" in dyn and re.search(r"FLAGS_1.*\bNOW\b.*\bPIE\b", dyn), dyn
    assert "Type:                              DYN" in run(["readelf", "-h", str(MXLB)]).stdout
    assert "GNU_RELRO" in run(["readelf", "-lW", str(MXLB)]).stdout
    syms = run(["readelf", "-sW", str(MXLB)]).stdout
    assert "__stack_chk_fail" in syms
    if (BUILD / ".variant").read_text().strip() != "asan":  # FORTIFY is off under ASan
        assert re.search(r"__\w+_chk\b", syms.replace("__stack_chk_fail", ""))


def check(path, **kw):
    return run([str(MXLB), "-c", str(path), "--check"], **kw)


def cert_paths(example):
    return re.findall(r"(?:cert|key): *([^ ,}]+)", example.read_text())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_check_as_shipped(example, tmp_path):
    paths = cert_paths(example)
    if not paths or all(os.path.exists(p) for p in paths):
        r = check(example)
        assert r.returncode == 0, r.stderr
        return
    # Certificates where the example expects them, made by `make certs`, in
    # a mount namespace of the test's own whose /etc is an overlay: the
    # machine's /etc is never written.
    assert all(p.startswith("/etc/mxlb/") for p in paths), paths
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    ns = tmp_path / "ns"
    ns.mkdir()
    script = f"""set -e
mount -t tmpfs tmpfs '{ns}'
mkdir '{ns}/up' '{ns}/work'
mount -t overlay overlay -o lowerdir=/etc,upperdir='{ns}/up',workdir='{ns}/work' /etc
make -s -C '{TOP}' certs >/dev/null
exec '{MXLB}' -c '{example}' --check
"""
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    probe = run(["unshare", *userns, "--mount", "--propagation", "private", "sh", "-ec",
                 f"mount -t tmpfs tmpfs '{ns}' && umount '{ns}'"])
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here for /etc/mxlb: {probe.stderr.strip()}")
    r = run(["unshare", *userns, "--mount", "--propagation", "private", "sh", "-ec", script])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration is valid" in r.stderr


def test_make_certs_never_overwrites(tmp_path):
    example = tmp_path / "ex.yaml"
    d = tmp_path / "certs"
    example.write_text(
        f"tls:\n  t:\n    certificates:\n"
        f"      - {{ cert: {d}/mx.test-ecdsa.crt, key: {d}/mx.test-ecdsa.key }}\n"
        f"      - {{ cert: {d}/mx.test-rsa.crt, key: {d}/mx.test-rsa.key }}\n"
        f"      - {{ cert: /elsewhere/x.crt, key: /elsewhere/x.key }}\n")
    r = run([str(TOP / "config/make-certs.sh"), str(d), str(example)])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in d.iterdir()) == [
        "mx.test-ecdsa.crt", "mx.test-ecdsa.key", "mx.test-rsa.crt", "mx.test-rsa.key"]
    assert (d / "mx.test-ecdsa.key").stat().st_mode & 0o077 == 0
    text = run(["openssl", "x509", "-in", str(d / "mx.test-ecdsa.crt"), "-noout", "-text"]).stdout
    assert "DNS:mx.test" in text and "id-ecPublicKey" in text
    assert "rsaEncryption" in run(["openssl", "x509", "-in", str(d / "mx.test-rsa.crt"),
                                   "-noout", "-text"]).stdout
    (d / "mx.test-rsa.key").write_text("mine\n")
    r = run([str(TOP / "config/make-certs.sh"), str(d), str(example)])
    assert r.returncode == 0
    assert (d / "mx.test-rsa.key").read_text() == "mine\n"
    assert "left as it is" in r.stdout
