#!/bin/sh
# `make run`: two local mxlb-sink backends and mxlb in front of them on
# 127.0.0.1:2525, in the foreground. Ctrl-C stops all three.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
dir="$top/build/quickstart"
mkdir -p "$dir/mail"
cat > "$dir/mxlb.yaml" <<YAML
server:
  hostname: mxlb.localhost
  workers: 1
  admin: { listen: "127.0.0.1:8025" }
listeners:
  - name: quickstart
    listen: ["127.0.0.1:2525"]
    pool: local
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

mxlb is listening on 127.0.0.1:2525 in front of two mxlb-sink backends (127.0.0.1:2601, :2602).
Send a test mail from another terminal:

  /usr/bin/python3 -c 'import smtplib; s = smtplib.SMTP("127.0.0.1", 2525); s.ehlo("me.example"); print(s.sendmail("me@example.net", ["you@example.net"], "Subject: hello\r\n\r\nIt works.\r\n")); s.quit()'
  (or: swaks --server 127.0.0.1:2525 --from me@example.net --to you@example.net)

Each accepted message lands as one file in $dir/mail (.eml with the bytes, .json with the envelope
and the client identity the backend learnt by XCLIENT). mxlb logs one line per session below.
Admin: curl 127.0.0.1:8025/status   curl 127.0.0.1:8025/metrics
Ctrl-C stops all three.

MSG
wait "$mx"
stop
