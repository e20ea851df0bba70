#!/bin/sh
# `make run`: two local mxlb-sink backends and mxlb in front of them on
# 127.0.0.1:2525 (STARTTLS offered) and 127.0.0.1:2465 (implicit TLS), in
# the foreground, with a self-signed ECDSA certificate made here. Ctrl-C
# stops all three.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
dir="$top/build/quickstart"
mkdir -p "$dir/mail"
if [ ! -s "$dir/mxlb.key" ] && command -v openssl >/dev/null; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
		-subj /CN=mxlb.localhost -keyout "$dir/mxlb.key" -out "$dir/mxlb.crt" 2>/dev/null
fi
if [ -s "$dir/mxlb.key" ]; then
	tls="tls:
  local: { certificates: [ { cert: \"$dir/mxlb.crt\", key: \"$dir/mxlb.key\" } ] }"
	starttls="tls: starttls
    tls_context: local"
	smtps="  - name: smtps
    listen: [\"127.0.0.1:2465\"]
    tls: implicit
    tls_context: local
    pool: local"
else
	tls="" starttls="tls: none" smtps="" # no openssl to make a certificate with
fi
cat > "$dir/mxlb.yaml" <<YAML
server:
  hostname: mxlb.localhost
  workers: 1
  admin: { listen: "127.0.0.1:8025" }
$tls
listeners:
  - name: quickstart
    listen: ["127.0.0.1:2525"]
    $starttls
    pool: local
$smtps
pools:
  - name: local
    handoff: xclient
    backends:
      - { name: sink1, address: "127.0.0.1:2601" }
      - { name: sink2, address: "127.0.0.1:2602" }
YAML
"$top/build/mxlb-sink" --listen 127.0.0.1:2601 --xclient --hostname sink1.localhost --save-dir "$dir/mail" &
s1=$!
"$top/build/mxlb-sink" --listen 127.0.0.1:2602 --xclient --hostname sink2.localhost --save-dir "$dir/mail" &
s2=$!
"$top/build/mxlb" -c "$dir/mxlb.yaml" &
mx=$!
stop() {
	kill "$mx" "$s1" "$s2" 2>/dev/null
	wait "$mx" "$s1" "$s2" 2>/dev/null
	exit 0
}
trap stop INT TERM
sleep 0.5
cat <<MSG

mxlb is listening on 127.0.0.1:2525 (STARTTLS offered) and 127.0.0.1:2465 (implicit TLS)
in front of two mxlb-sink backends (127.0.0.1:2601, :2602). Send a test mail from another terminal:

  /usr/bin/python3 -c 'import smtplib; s = smtplib.SMTP("127.0.0.1", 2525); s.ehlo("me.example"); print(s.sendmail("me@example.net", ["you@example.net"], "Subject: hello\r\n\r\nIt works.\r\n")); s.quit()'
  (or: swaks --server 127.0.0.1:2525 --from me@example.net --to you@example.net
   with TLS: swaks ... --tls, or swaks --server 127.0.0.1:2465 --tlsc ...; the certificate is self-signed)

Each accepted message lands as one file in $dir/mail (.eml with the bytes, .json with the envelope
and the client identity the backend learnt by XCLIENT). mxlb logs one line per session below.
Admin: http://127.0.0.1:8025/ (the status page)   curl 127.0.0.1:8025/status   curl 127.0.0.1:8025/metrics
Ctrl-C stops all three.

MSG
wait "$mx"
stop
