"""TLS through mxlb with real clients (Python smtplib and ssl, openssl
s_client, swaks) and real TLS servers (aiosmtpd) as backends: STARTTLS and
implicit termination, the STARTTLS injection class, SNI and key-type
certificate choice, min_version, resumption, handshake failures, both
passthrough modes, TLS to backends with verification, PROXY v2 TLVs and
certificate reload."""
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import Client, free_port, wait_for

BODY = (b"Subject: tls\r\n\r\n.leading dot\r\n\xc3\xa9t\xc3\xa9 8bit\r\n"
        + b"".join(os.urandom(36).hex().encode() + b"\r\n" for _ in range(20000)))


def context(certs, names=(("mx.test", "ecdsa"),), **opts):
    """A tls: context for mxlb with certificates for names."""
    cl = []
    for name, kind in names:
        crt, key = certs.leaf(name, kind)
        cl.append({"cert": str(crt), "key": str(key)})
    return {"certificates": cl, **opts}


def client_ctx(certs, **kw):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_mxlb(env, certs, backends, tls="starttls", ctxopts=None, names=(("mx.test", "ecdsa"),),
             listener=None, **kw):
    lst = {"tls": tls, "tls_context": "pub"}
    lst.update(listener or {})
    extra = {"tls": {"pub": context(certs, names, **(ctxopts or {}))}}
    extra.update(kw.pop("extra", {}))
    return env.mxlb(backends, listener=lst, extra=extra, **kw)


def metric(mx, name):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def s_client(args, data=b"", timeout=20):
    return subprocess.run(["openssl", "s_client", *args], input=data, capture_output=True,
                          timeout=timeout)


def send_starttls(port, certs, body=BODY, ehlo="client.test"):
    with smtplib.SMTP("127.0.0.1", port, local_hostname=ehlo, timeout=30) as s:
        code, text = s.ehlo()
        assert code == 250 and b"STARTTLS" in text
        s.starttls(context=client_ctx(certs))
        version = s.sock.version()
        s.ehlo()
        assert s.sendmail("a@client.test", ["b@dest.test"], body) == {}
        return version


# ---- termination ----

def test_starttls_terminated_delivers_byte_identical(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port])
    with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="client.test", timeout=30) as s:
        code, text = s.ehlo()
        caps = text.decode().split("\n")[1:]
        # mxlb's own pre-TLS reply: nothing a client could misuse in the clear
        assert "STARTTLS" in caps
        for kw in ("PIPELINING", "CHUNKING", "AUTH", "XCLIENT"):
            assert not any(c.startswith(kw) for c in caps), caps
        s.starttls(context=client_ctx(certs))
        assert s.sock.getpeercert()["subject"] == ((("commonName", "mx.test"),),)
        code, text = s.ehlo()
        # the backend's reply now, without STARTTLS
        assert code == 250 and b"PIPELINING" in text and b"STARTTLS" not in text
        assert s.sendmail("a@client.test", ["b@dest.test"], BODY) == {}
    raw, meta = wait_for(sink.messages)[0]
    assert raw == BODY
    line = wait_for(lambda: [x for x in mx.sessions() if x.get("listener") == "mx" and x.get("tls") != "-"])[0]
    assert line["tls"] == "TLSv1.3" and line["result"] == "relayed"
    assert metric(mx, 'mxlb_tls_handshakes_total') == 1
    assert mx.stop() == 0


def test_implicit_tls_delivers_byte_identical(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit")
    with smtplib.SMTP_SSL("127.0.0.1", mx.port, local_hostname="client.test", timeout=30,
                          context=client_ctx(certs)) as s:
        assert s.sock.version() == "TLSv1.3"
        assert s.sendmail("a@client.test", ["b@dest.test"], BODY) == {}
    raw, _ = wait_for(sink.messages)[0]
    assert raw == BODY
    assert mx.stop() == 0


def test_swaks_starttls_and_implicit(env, certs):
    sink = env.sink()
    st = tls_mxlb(env, certs, [sink.port])
    imp = tls_mxlb(env, certs, [sink.port], tls="implicit")
    for port, flag in ((st.port, "--tls"), (imp.port, "--tlsc")):
        r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", flag, "--to", "b@dest.test",
                            "--from", "a@client.test", "--helo", "swaks.test",
                            "--body", "swaks over TLS"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "TLS started" in r.stdout or "TLS started" in r.stderr
    wait_for(lambda: len(sink.messages()) == 2)
    assert all(b"swaks over TLS" in raw for raw, _ in sink.messages())
    assert st.stop() == 0 and imp.stop() == 0


def test_openssl_s_client_verifies_both_modes(env, certs):
    sink = env.sink()
    st = tls_mxlb(env, certs, [sink.port])
    imp = tls_mxlb(env, certs, [sink.port], tls="implicit")
    r = s_client(["-starttls", "smtp", "-connect", f"127.0.0.1:{st.port}", "-CAfile",
                  str(certs.ca), "-verify_return_error", "-brief"], b"QUIT\r\n")
    assert r.returncode == 0, r.stderr
    assert b"Verification: OK" in r.stderr
    r = s_client(["-connect", f"127.0.0.1:{imp.port}", "-CAfile", str(certs.ca),
                  "-verify_return_error", "-ign_eof"], b"EHLO s.test\r\nQUIT\r\n")
    assert r.returncode == 0, r.stderr
    assert b"Verify return code: 0 (ok)" in r.stdout
    assert b"220 mx.test" in r.stdout and b"221" in r.stdout
    assert st.stop() == 0 and imp.stop() == 0


def test_plaintext_after_starttls_is_never_executed(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port])
    c = Client(mx.port)
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO inject.test")[0] == 250
    # the CVE-2011-0411 class: a command smuggled behind STARTTLS
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.reply()[0] == 220
    tls = client_ctx(certs).wrap_socket(c.sock)
    tls.settimeout(1)
    with pytest.raises(socket.timeout):
        tls.recv(100)  # the RSET was not answered
    tls.settimeout(10)
    tls.sendall(b"EHLO inject.test\r\n")
    f = tls.makefile("rb")
    line = f.readline()
    assert line.startswith(b"250"), line
    tls.sendall(b"QUIT\r\n")
    while line[3:4] == b"-":
        line = f.readline()
    assert f.readline().startswith(b"221")
    tls.close()
    assert metric(mx, "mxlb_starttls_discarded_bytes_total") == 6
    assert "plaintext after STARTTLS discarded" in mx.log()
    assert mx.stop() == 0


def test_require_tls_refuses_mail_before_starttls(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], listener={"require_tls": True})
    c = Client(mx.port)
    c.reply()
    assert c.cmd(b"EHLO plain.test")[0] == 250
    code, text = c.cmd(b"MAIL FROM:<a@client.test>")
    assert code == 530 and text[0].startswith("5.7.0 Must issue a STARTTLS command first")
    assert c.cmd(b"QUIT")[0] == 221
    assert send_starttls(mx.port, certs, b"Subject: ok\r\n\r\nok\r\n") == "TLSv1.3"
    wait_for(lambda: len(sink.messages()) == 1)
    assert mx.stop() == 0


def test_mail_without_starttls_is_the_routing_point(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port])
    with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="legacy.test", timeout=30) as s:
        s.ehlo()
        assert s.sendmail("a@client.test", ["b@dest.test"], BODY) == {}
    raw, meta = wait_for(sink.messages)[0]
    assert raw == BODY
    assert meta["helo"] == "legacy.test"
    line = wait_for(lambda: [x for x in mx.sessions() if x.get("ehlo") == "legacy.test"])[0]
    assert line["tls"] == "-" and line["result"] == "relayed"
    assert mx.stop() == 0


# ---- certificates ----

def peer_cert(port, servername=None, extra=()):
    args = ["-connect", f"127.0.0.1:{port}"] + (["-servername", servername] if servername else [])
    r = s_client(args + list(extra), b"")
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def test_sni_and_key_type_pick_the_certificate(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit",
                  names=(("mx.test", "rsa"), ("mx.test", "ecdsa"), ("other.test", "ecdsa")))
    out = peer_cert(mx.port, "other.test")
    assert "subject=CN = other.test" in out
    out = peer_cert(mx.port, "mx.test")
    assert "subject=CN = mx.test" in out and "Server public key is 256 bit" in out
    # an RSA-only client (TLS 1.3 with RSA-PSS signatures only)
    out = peer_cert(mx.port, "mx.test", ["-sigalgs", "rsa_pss_rsae_sha256"])
    assert "subject=CN = mx.test" in out and "Server public key is 2048 bit" in out
    # TLS 1.2 with only ECDHE-RSA suites
    out = peer_cert(mx.port, "mx.test", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"])
    assert "Server public key is 2048 bit" in out
    # no name, or an unknown one: the first certificates still serve
    assert "subject=CN = mx.test" in peer_cert(mx.port, None)
    assert "subject=CN = mx.test" in peer_cert(mx.port, "unknown.test")
    assert mx.stop() == 0


def test_min_version_13_refuses_a_tls12_client(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit", ctxopts={"min_version": "1.3"})
    before = metric(mx, "mxlb_tls_handshake_failures_total")
    r = s_client(["-connect", f"127.0.0.1:{mx.port}", "-tls1_2"], b"")
    assert r.returncode != 0
    wait_for(lambda: metric(mx, "mxlb_tls_handshake_failures_total") == before + 1)
    with smtplib.SMTP_SSL("127.0.0.1", mx.port, timeout=30, context=client_ctx(certs)) as s:
        assert s.sock.version() == "TLSv1.3"
        s.noop()
    assert mx.stop() == 0


def test_resumption_tls12_and_tls13(env, certs, tmp_path):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit")
    sess = tmp_path / "sess"
    r = s_client(["-connect", f"127.0.0.1:{mx.port}", "-tls1_2", "-sess_out", str(sess)], b"")
    assert b"New, " in r.stdout
    r = s_client(["-connect", f"127.0.0.1:{mx.port}", "-tls1_2", "-sess_in", str(sess)], b"")
    assert b"Reused, " in r.stdout, r.stdout
    # TLS 1.3: the ticket comes with the greeting
    ctx = client_ctx(certs)
    with socket.create_connection(("127.0.0.1", mx.port)) as raw:
        t = ctx.wrap_socket(raw)
        assert t.recv(100).startswith(b"220")
        session = t.session
        t.sendall(b"QUIT\r\n")
        t.recv(100)
    with socket.create_connection(("127.0.0.1", mx.port)) as raw:
        t = ctx.wrap_socket(raw, session=session)
        assert t.recv(100).startswith(b"220")
        assert t.session_reused and t.version() == "TLSv1.3"
    assert mx.stop() == 0


def test_handshake_failures_are_counted_and_others_served(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit",
                  listener={"timeouts": {"tls_handshake": "1s"}})
    before = metric(mx, "mxlb_tls_handshake_failures_total")
    # garbage instead of a ClientHello
    with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as s:
        s.sendall(b"EHLO i am not tls\r\n" * 10)
        s.settimeout(10)
        data = s.recv(100)
        assert not data.startswith(b"220")
    # a client that never starts: the handshake timeout
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as s:
        assert s.recv(100) == b""
    assert time.time() - t0 < 5
    # a client that does not trust the certificate aborts
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as s:
            ssl.create_default_context().wrap_socket(s, server_hostname="mx.test")
    wait_for(lambda: metric(mx, "mxlb_tls_handshake_failures_total") >= before + 3)
    with smtplib.SMTP_SSL("127.0.0.1", mx.port, timeout=30, context=client_ctx(certs)) as s:
        assert s.sendmail("a@client.test", ["b@dest.test"], b"Subject: x\r\n\r\nafter\r\n") == {}
    lines = mx.sessions()
    assert any(x.get("reason") == "tls handshake timeout" for x in lines)
    assert mx.stop() == 0


def test_sighup_reloads_certificates(env, certs, tmp_path):
    sink = env.sink()
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    a_crt, a_key = certs.leaf("mx.test", "ecdsa")
    b_crt, b_key = certs.leaf("renewed.test", "ecdsa")
    crt.write_bytes(a_crt.read_bytes())
    key.write_bytes(a_key.read_bytes())
    extra = {"tls": {"pub": {"certificates": [{"cert": str(crt), "key": str(key)}]}}}
    mx = env.mxlb([sink.port], listener={"tls": "implicit", "tls_context": "pub"}, extra=extra)
    held = smtplib.SMTP_SSL("127.0.0.1", mx.port, timeout=30, context=client_ctx(certs))
    held.ehlo("held.test")
    crt.write_bytes(b_crt.read_bytes())
    key.write_bytes(b_key.read_bytes())
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "renewed.test" in peer_cert(mx.port, "renewed.test"))
    # the session in progress keeps its TLS and finishes
    assert held.sendmail("a@client.test", ["b@dest.test"], b"Subject: held\r\n\r\nheld\r\n") == {}
    held.quit()
    # a key that does not match its certificate: logged, nothing changes
    key.write_bytes(a_key.read_bytes())
    mx.proc.signal(signal.SIGHUP)
    wait_for(lambda: "does not match" in mx.log())
    assert "renewed.test" in peer_cert(mx.port, "x")
    assert mx.stop() == 0


# ---- passthrough ----

def aiosmtpd_tls(certs, name, implicit=False, self_signed=False):
    """An aiosmtpd server with TLS (implicit, or STARTTLS) on a free port."""
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append({"content": envelope.original_content, "tls": session.ssl is not None,
                        "helo": session.host_name})
            return "250 2.0.0 OK"

    crt, key = certs.leaf(name, "ecdsa", ca=False if self_signed else None)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(str(crt), str(key))
    port = free_port()
    if implicit:
        ctl = Controller(Handler(), hostname="127.0.0.1", port=port, ssl_context=sctx,
                         decode_data=False)
    else:
        ctl = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=sctx,
                         decode_data=False)
    ctl.start()
    ctl.got = got
    ctl.port = port
    return ctl


def test_implicit_passthrough_routes_on_sni(env, certs):
    a = aiosmtpd_tls(certs, "a.test", implicit=True)
    b = aiosmtpd_tls(certs, "b.test", implicit=True)
    try:
        pools = [{"name": "pa", "health": {"check": "none"},
                  "backends": [{"name": "a", "address": f"127.0.0.1:{a.port}"}]},
                 {"name": "pb", "health": {"check": "none"},
                  "backends": [{"name": "b", "address": f"127.0.0.1:{b.port}"}]}]
        mx = env.mxlb([], pools=pools, listener={
            "tls": "implicit", "tls_mode": "passthrough", "pool": "pa",
            "routes": [{"sni": "b.test", "pool": "pb"}]})
        for name, srv in (("a.test", a), ("b.test", b)):
            ctx = ssl.create_default_context(cafile=str(certs.ca))
            with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as raw:
                t = ctx.wrap_socket(raw, server_hostname=name)
                # end to end: the backend's own certificate
                assert t.getpeercert()["subject"] == ((("commonName", name),),)
                s = smtplib.SMTP()
                s.sock, s.file = t, t.makefile("rb")
                assert s.getreply()[0] == 220
                s.ehlo("pass.test")
                assert s.sendmail("a@client.test", ["b@dest.test"], b"Subject: p\r\n\r\npass\r\n") == {}
                s.quit()
            wait_for(lambda: srv.got)
            assert srv.got[0]["content"] == b"Subject: p\r\n\r\npass\r\n"
        snis = lambda: {x["sni"] for x in mx.sessions() if x.get("sni") not in (None, "-")}
        wait_for(lambda: snis() == {"a.test", "b.test"})
        assert mx.stop() == 0
    finally:
        a.stop()
        b.stop()


def test_starttls_passthrough_negotiates_with_the_backend(env, certs):
    be = aiosmtpd_tls(certs, "backend.test")
    try:
        mx = env.mxlb([be.port], listener={"tls": "starttls", "tls_mode": "passthrough"})
        with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="pass.test", timeout=30) as s:
            code, text = s.ehlo()
            assert b"STARTTLS" in text  # the backend's, offered as it is
            s.starttls(context=client_ctx(certs))
            assert s.sock.getpeercert()["subject"] == ((("commonName", "backend.test"),),)
            s.ehlo()
            assert s.sendmail("a@client.test", ["b@dest.test"], b"Subject: s\r\n\r\nst\r\n") == {}
        wait_for(lambda: be.got)
        assert be.got[0]["tls"] and be.got[0]["content"] == b"Subject: s\r\n\r\nst\r\n"
        assert mx.stop() == 0
    finally:
        be.stop()


def test_passthrough_with_xclient_is_a_config_error(env, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(json.dumps({
        "listeners": [{"name": "p", "listen": ["127.0.0.1:1"], "tls": "implicit",
                       "tls_mode": "passthrough", "pool": "x"}],
        "pools": [{"name": "x", "handoff": "xclient",
                   "backends": [{"name": "a", "address": "127.0.0.1:2"}]}]}))
    from conftest import MXLB
    r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "passthrough cannot guard XCLIENT" in r.stderr
    assert r.stderr.startswith(f"{cfg}:")


# ---- TLS to backends ----

@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_backend_tls_verification_failure_fails_over(env, certs, mode):
    # the same name on both; only one certificate is signed by the CA
    bad = aiosmtpd_tls(certs, "good.test", implicit=mode == "implicit", self_signed=True)
    good = aiosmtpd_tls(certs, "good.test", implicit=mode == "implicit")
    try:
        extra = {"tls": {"back": {"ca": str(certs.ca), "verify": True,
                                  "server_name": "good.test"}}}
        backends = [{"address": f"127.0.0.1:{bad.port}", "tls": mode, "tls_context": "back"},
                    {"address": f"127.0.0.1:{good.port}", "tls": mode, "tls_context": "back"}]
        mx = env.mxlb(backends, extra=extra, pool={"retries": 1})
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="c.test", timeout=30) as s:
                s.ehlo()
                assert s.sendmail("a@client.test", ["b@dest.test"], BODY) == {}
        wait_for(lambda: len(good.got) == 2)
        # (an implicit-TLS aiosmtpd speaks nothing else, and leaves session.ssl unset)
        assert all((g["tls"] or mode == "implicit") and g["content"] == BODY for g in good.got)
        assert not bad.got
        assert 'error="TLS: self signed certificate"' in mx.log()
        assert mx.stop() == 0
    finally:
        bad.stop()
        good.stop()


def test_proxy_v2_carries_tls_tlvs(env, certs):
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_PROXY(self, server, session, envelope, proxy_data):
            got.append(proxy_data)
            return True

        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port, proxy_protocol_timeout=5)
    ctl.start()
    try:
        mx = tls_mxlb(env, certs, [port], tls="implicit", pool={"handoff": "proxy_v2"})
        ctx = client_ctx(certs)
        with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as raw:
            t = ctx.wrap_socket(raw, server_hostname="mx.test")
            s = smtplib.SMTP()
            s.sock, s.file = t, t.makefile("rb")
            assert s.getreply()[0] == 220
            s.ehlo("tlv.test")
            s.quit()
        pd = wait_for(lambda: [g for g in got if g.tlv])[0]
        assert pd.tlv["AUTHORITY"] == b"mx.test"
        assert pd.tlv["SSL_VERSION"] == b"TLSv1.3"
        assert pd.tlv["SSL_CIPHER"].startswith(b"TLS_")
        assert mx.stop() == 0
    finally:
        ctl.stop()


def test_certificate_errors_name_the_file(certs, tmp_path):
    from conftest import MXLB
    e_crt, e_key = certs.leaf("mx.test", "ecdsa")
    r_crt, r_key = certs.leaf("mx.test", "rsa")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [({"cert": str(e_crt), "key": str(r_key)}, f"private key {r_key} does not match certificate {e_crt}"),
             ({"cert": str(junk), "key": str(e_key)}, f"no PEM certificate in {junk}"),
             ({"cert": str(e_crt), "key": str(junk)}, f"cannot load private key {junk}")]
    for pair, want in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("tls:\n  pub:\n    certificates:\n      - " + json.dumps(pair) + "\n"
                       "pools: [{name: p, backends: [{name: b, address: \"127.0.0.1:2\"}]}]\n"
                       "listeners: [{name: l, listen: \"127.0.0.1:1\", pool: p, tls: implicit, "
                       "tls_context: pub}]\n")
        r = subprocess.run([str(MXLB), "-c", str(cfg), "--check"], capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith(f"{cfg}:2:3: tls context \"pub\": "), r.stderr
        assert want in r.stderr, r.stderr


def status(mx):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/status", timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_health_checks_speak_tls_to_backends(env, certs, mode):
    bad = aiosmtpd_tls(certs, "good.test", implicit=mode == "implicit", self_signed=True)
    good = aiosmtpd_tls(certs, "good.test", implicit=mode == "implicit")
    try:
        extra = {"tls": {"back": {"ca": str(certs.ca), "server_name": "good.test"}}}
        backends = [{"address": f"127.0.0.1:{p}", "tls": mode, "tls_context": "back"}
                    for p in (bad.port, good.port)]
        mx = env.mxlb(backends, extra=extra, pool={
            "health": {"check": "smtp", "interval": "200ms", "timeout": "1s", "rise": 1,
                       "fall": 1}})
        state = lambda: {b["name"]: b["state"] for b in status(mx)["pools"][0]["backends"]}
        wait_for(lambda: state() == {"b0": "down", "b1": "up"})
        assert "self signed certificate" in mx.log()
        with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="c.test", timeout=30) as s:
            s.ehlo()
            assert s.sendmail("a@client.test", ["b@dest.test"], b"Subject: h\r\n\r\nh\r\n") == {}
        wait_for(lambda: [g for g in good.got if "content" in g])
        assert mx.stop() == 0
    finally:
        bad.stop()
        good.stop()


def test_pre_tls_ehlo_offers_what_checks_learned(env, certs):
    sink = env.sink("--max-size", "1000000")
    mx = tls_mxlb(env, certs, [sink.port], pool={
        "health": {"check": "smtp", "interval": "200ms", "timeout": "1s", "rise": 1, "fall": 1}})
    wait_for(lambda: status(mx)["pools"][0]["backends"][0].get("last_check"))
    c = Client(mx.port)
    c.reply()
    code, lines = c.cmd(b"EHLO caps.test")
    assert code == 250
    caps = lines[1:]
    assert "SIZE 1000000" in caps and "8BITMIME" in caps and "ENHANCEDSTATUSCODES" in caps
    assert caps[-1] == "STARTTLS"
    assert not any(x.split()[0] in ("PIPELINING", "CHUNKING", "AUTH", "XCLIENT") for x in caps)
    c.cmd(b"QUIT")
    assert mx.stop() == 0


def test_implicit_tls_after_a_proxy_header(env, certs):
    sink = env.sink()
    mx = tls_mxlb(env, certs, [sink.port], tls="implicit", listener={"accept_proxy": True},
                  wait=False)
    from conftest import wait_port
    wait_port(mx.port)
    with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as raw:
        # the header and the ClientHello may arrive in one read
        raw.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 465\r\n")
        t = client_ctx(certs).wrap_socket(raw)
        s = smtplib.SMTP()
        s.sock, s.file = t, t.makefile("rb")
        assert s.getreply()[0] == 220
        s.ehlo("proxied.test")
        assert s.sendmail("a@client.test", ["b@dest.test"], b"Subject: p\r\n\r\nproxied\r\n") == {}
        s.quit()
    line = wait_for(lambda: [x for x in mx.sessions() if x.get("ehlo") == "proxied.test"])[0]
    assert line["client"] == "192.0.2.7:40000" and line["tls"] == "TLSv1.3"
    assert mx.stop() == 0


def test_starttls_routes_on_the_sni_of_the_handshake(env, certs):
    a, b = env.sink(), env.sink()
    pools = [{"name": "main", "health": {"check": "none"},
              "backends": [{"name": "a", "address": f"127.0.0.1:{a.port}"}]},
             {"name": "other", "health": {"check": "none"},
              "backends": [{"name": "b", "address": f"127.0.0.1:{b.port}"}]}]
    mx = tls_mxlb(env, certs, [], pools=pools, names=(("mx.test", "ecdsa"), ("other.test", "ecdsa")),
                  listener={"routes": [{"sni": "other.test", "pool": "other"}]})
    for name in ("other.test", "mx.test"):
        # smtplib sends no SNI to an address: STARTTLS by hand
        with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO c.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
            t = client_ctx(certs).wrap_socket(raw, server_hostname=name)
            s = smtplib.SMTP()
            s.sock, s.file = t, t.makefile("rb")
            s.ehlo("c.test")
            assert s.sendmail("a@client.test", ["b@dest.test"], f"Subject: {name}\r\n\r\nx\r\n".encode()) == {}
            s.quit()
    wait_for(lambda: len(a.messages()) == 1 and len(b.messages()) == 1)
    assert b"other.test" in b.messages()[0][0] and b"mx.test" in a.messages()[0][0]
    assert mx.stop() == 0


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_mxlb_sink_tls_backends_fail_over_on_verification(env, certs, mode):
    bad_crt, bad_key = certs.leaf("sink.test", "ecdsa", ca=False)
    good_crt, good_key = certs.leaf("sink.test", "rsa")
    extra_args = ["--implicit-tls"] if mode == "implicit" else []
    bad = env.sink("--tls-cert", str(bad_crt), "--tls-key", str(bad_key), *extra_args)
    good = env.sink("--tls-cert", str(good_crt), "--tls-key", str(good_key), *extra_args)
    tls = {"back": {"ca": str(certs.ca), "server_name": "sink.test"}}
    backends = [{"address": f"127.0.0.1:{p}", "tls": mode, "tls_context": "back"}
                for p in (bad.port, good.port)]
    mx = env.mxlb(backends, extra={"tls": tls}, pool={"retries": 1})
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="c.test", timeout=30) as s:
            s.ehlo()
            assert s.sendmail("a@client.test", ["b@dest.test"], BODY) == {}
    msgs = wait_for(lambda: len(good.messages()) == 2 and good.messages())
    assert all(raw == BODY and meta["tls"] in ("TLSv1.2", "TLSv1.3") for raw, meta in msgs)
    assert not bad.messages()
    assert mx.log().count('error="TLS: self signed certificate"') >= 1
    assert mx.stop() == 0


def test_implicit_tls_over_the_limits_is_closed_without_plaintext(env, certs):
    sink = env.sink()
    for limit in ({"server": {"max_sessions": 1}}, {"listener": {"max_sessions_per_client": 1}}):
        kw = {"listener": {}, **limit}
        mx = tls_mxlb(env, certs, [sink.port], tls="implicit", **kw)
        held = smtplib.SMTP_SSL("127.0.0.1", mx.port, timeout=30, context=client_ctx(certs))
        held.ehlo("held.test")
        with socket.create_connection(("127.0.0.1", mx.port), timeout=10) as s:
            assert s.recv(100) == b""  # no "421" in the clear to a TLS client
        held.quit()
        wait_for(lambda: any(x.get("result") == "rejected" for x in mx.sessions()))
        assert mx.stop() == 0
