#!/usr/bin/env bash
# `make compare`: mxlb side by side with HAProxy, nginx's mail proxy and
# stunnel, and with "direct" (the client straight to a sink: the limit of
# the client and the sink on this machine). The same client, the same two
# backends, the same ECDSA P-256 certificate, one worker/thread per proxy
# where the proxy allows it, everything on 127.0.0.1. Builds nothing (`make
# compare` runs `make all` first); installs the peers from Debian when
# missing (tests/deps.sh compare bench).
#
# The cases (CASES picks them by these names):
#   a b c d      build/mxlb-bench, plain: 1 KB x1 per session, 1 KB x100,
#                100 KB x20, 1 MB x10; two build/mxlb-sink backends
#   e f g        the same with TLS: implicit 1 KB x1, STARTTLS 1 KB x1,
#                implicit 1 MB x10 (full handshakes)
#   h h-tls      idle memory: 5000 sessions held after EHLO, plain and TLS
#   i500 i5000   idle memory as issue 10 measures it: 500 and 5000 plain
#                sessions held after RCPT (MAIL and RCPT accepted), on a
#                fresh process (no warm-up: fixed costs are counted)
#   l1           lock-step: Postfix's smtp-source (no pipelining), 20
#                sessions at once, one 1 KB message per session
#   l2 l3 l4     lock-step persistent sessions (smtp-source -d), 20 at once:
#                1 KB, 100 KB, 1 MB messages
#                (l1 to l4: two Postfix smtp-sink backends, what the
#                measurements of issue 10 used)
#   l3m l4m      l3 and l4 in front of two mxlb-sink (smtp-sink's CPU per
#                megabyte caps l3 and l4 below what the proxies move)
#   x            an xclient pool, mxlb only: smtp-source, one 1 KB message per
#                session, 20 at once, in front of two mxlb-sink --xclient;
#                peers "mxlb" (reuse off) and "mxlb-reuse" (pools[].reuse
#                on; "skipped: reuse not built" while mxlb --check refuses
#                the key)
#   x-setup      the same pool with mxlb-bench (lock-step, one 1 KB message
#                per session, 20 at once), for session setup latency
#
# Every (case, peer) is run COMPARE_RUNS times (rounds: each round runs
# every peer once, so slow drifts of the shared machine hit every peer
# alike); the table shows the median of each figure, results.json every
# run and the spread (min, max). Each run starts the peer afresh, waits
# until it answers, and reads its CPU time (utime + stime of every process
# of the peer, from /proc/PID/stat) before and after the load, and its RSS
# in the idle-memory cases. Every process is started here, in the
# foreground, and stopped by its PID; an EXIT trap stops whatever is left.
#
# Prints a table; writes under build/compare/ results.json, table.md,
# compare.png (gnuplot), each run's raw client output (runs/), and the
# peers' configurations and logs.
#
# Environment:
#   CASES="a e l1"       only those cases (a b c d e f g h h-tls i500 i5000 l1 l2 l3 l4
#                        l3m l4m x x-setup)
#   PEERS="mxlb nginx"   only those peers (direct mxlb haproxy nginx stunnel;
#                        mxlb-reuse, in case x, comes with mxlb)
#   COMPARE_DURATION=3s  length of each load run (mxlb-bench --duration;
#                        smtp-source is stopped after it)
#   COMPARE_RUNS=3       runs of each (case, peer); the table shows medians
#   COMPARE_HOLD=5000    sessions held in the idle-memory cases
#   COMPARE_QUICK=1      smoke run: cases a, e, l1 and x, 1 s each, one run
#   COMPARE_DIR=DIR      output directory (default build/compare)
#   COMPARE_BUDGET=1800  seconds; runs that would start later are skipped
#   COMPARE_PIN="client=0 proxy=0 sinks=1"
#                        pins each role to CPUs (taskset -c lists; roles
#                        client, proxy, sinks, any of them): everything the
#                        script runs in that role, the peer's own processes
#                        included. Unset: the scheduler places them
#   MXLB_BUILD=DIR       where mxlb, mxlb-sink and mxlb-bench are (build/)
set -u
PATH=$PATH:/usr/sbin:/sbin # haproxy and nginx live there
top=$(cd "$(dirname "$0")/.." && pwd)
build=${MXLB_BUILD:-$top/build}
dir=${COMPARE_DIR:-$build/compare}
MXLB="$build/mxlb"
SINK="$build/mxlb-sink"
BENCH="$build/mxlb-bench"
QUICK=${COMPARE_QUICK:-0}
[ "$QUICK" = 0 ] && QUICK=
if [ -n "$QUICK" ]; then
	DURATION=${COMPARE_DURATION:-1s}
	CASES=${CASES:-a e l1 x}
	RUNS=${COMPARE_RUNS:-1}
else
	DURATION=${COMPARE_DURATION:-3s}
	CASES=${CASES:-}
	RUNS=${COMPARE_RUNS:-3}
fi
if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
	echo "compare.sh: COMPARE_RUNS must be a positive number" >&2
	exit 2
fi
# COMPARE_PIN: "role=cpus ...", each role at most once; pin_cpus[role].
declare -A pin_cpus=()
for pin in ${COMPARE_PIN:-}; do
	role=${pin%%=*} cpus=${pin#*=}
	if [[ "$pin" != *=* || ! "$role" =~ ^(client|proxy|sinks)$ ]] || [ -n "${pin_cpus[$role]:-}" ] ||
		! [[ "$cpus" =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || ! taskset -c "$cpus" true 2>/dev/null; then
		echo "compare.sh: COMPARE_PIN: \"$pin\" is not ROLE=CPUS (client, proxy or sinks, each once;" \
			"CPUS a taskset -c list of this machine's $(nproc) CPUs)" >&2
		exit 2
	fi
	pin_cpus[$role]=$cpus
done
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
# Open files: the soft limit goes up to the hard one, which every process
# started here inherits; a proxy needs two per session, mxlb-bench one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=65536
MAXCONN=$(((NOFILE - 200) / 2))
[ "$MAXCONN" -gt 9000 ] && MAXCONN=9000
HOLD=${COMPARE_HOLD:-5000}
if [ "$HOLD" -gt $((MAXCONN - 100)) ]; then
	HOLD=$((MAXCONN - 100))
fi
PEERS=${PEERS:-direct mxlb haproxy nginx stunnel}
BUDGET=${COMPARE_BUDGET:-1800}
HZ=$(getconf CLK_TCK)
t_start=$(date +%s)
load_start=$(cat /proc/loadavg)

say() { echo "compare.sh: $*" >&2; }

# compare: the peers; bench: postfix (smtp-source and smtp-sink)
if ! "$top/tests/deps.sh" compare bench; then
	say "tests/deps.sh compare failed: the peers are not installed"
	exit 2
fi
for b in "$MXLB" "$SINK" "$BENCH"; do
	if [ ! -x "$b" ]; then
		say "$b is missing: run make first"
		exit 2
	fi
done
for b in haproxy nginx stunnel4 gnuplot openssl "$SMTP_SOURCE" "$SMTP_SINK"; do
	if ! command -v "$b" >/dev/null; then
		say "$b is not installed (tests/deps.sh compare)"
		exit 2
	fi
done
NGINX_MAIL=/usr/lib/nginx/modules/ngx_mail_module.so
if [ ! -f "$NGINX_MAIL" ]; then
	say "$NGINX_MAIL is missing (Debian package libnginx-mod-mail)"
	exit 2
fi

mkdir -p "$dir"
# outputs of an earlier run (only the files this script writes)
rm -rf "$dir/runs" "$dir/nginx" "$dir/capture"
rm -f "$dir"/results.json "$dir"/runs.jsonl "$dir"/table.md "$dir"/compare.png "$dir"/*.dat \
	"$dir"/compare.gp "$dir"/*.log "$dir"/*.out "$dir"/*.stats "$dir"/*.count "$dir"/*.last \
	"$dir"/mxlb.yaml "$dir"/mxlb-reuse.yaml "$dir"/versions.txt \
	"$dir"/haproxy.cfg "$dir"/stunnel.conf "$dir"/stunnel.pid "$dir"/tls.crt "$dir"/tls.key \
	"$dir"/tls.pem
mkdir -p "$dir/runs" "$dir/nginx/tmp"
: >"$dir/runs.jsonl"

# pids, lib_cleanup, stop_pid, free_port, wait_line, cpu_ticks, rss_kb,
# cert_make, sink_start, smtp_sink_start, sink_messages
. "$top/bench/lib.sh"
pin_client=() pin_proxy=()
[ -n "${pin_cpus[client]:-}" ] && pin_client=(taskset -c "${pin_cpus[client]}")
[ -n "${pin_cpus[proxy]:-}" ] && pin_proxy=(taskset -c "${pin_cpus[proxy]}")
[ -n "${pin_cpus[sinks]:-}" ] && pin_sinks=(taskset -c "${pin_cpus[sinks]}")
trap lib_cleanup EXIT
trap 'exit 130' INT TERM

if ! cert_make "$dir" compare.test; then
	say "openssl could not make the certificate"
	exit 1
fi

# The CPUs the PIDs given may run on (their Cpus_allowed_list), as a JSON
# array of the distinct lists: what COMPARE_PIN did, as the kernel has it.
cpus_json() {
	local p l out='' sep=''
	for l in $(for p in "$@"; do
		awk '/^Cpus_allowed_list:/ { print $2 }' "/proc/$p/status" 2>/dev/null
	done | sort -u); do
		out="$out$sep\"$l\""
		sep=,
	done
	echo "[$out]"
}

wanted() {
	[ -z "$CASES" ] || [[ " $CASES " == *" $1 "* ]]
}

any_wanted() {
	local c
	for c in "$@"; do
		wanted "$c" && return 0
	done
	return 1
}

# ---- the backends. Two plain mxlb-sink behind every proxy (cases a to h);
# for "direct" TLS, a STARTTLS sink and an implicit-TLS sink with the same
# certificate; two Postfix smtp-sink for the lock-step cases (l1 to l4);
# two mxlb-sink --xclient for the xclient pool (x, x-setup). sinkport: the
# ports by name; spids: every sink's PID (their CPU time is recorded).

declare -A sinkport
spids=
add_sink() {
	sinkport[$1]=$sink_port
	spids="$spids $sink_pid"
}
sink_start sink1
add_sink sink1
sink_start sink2
add_sink sink2
sink_start sinkstarttls --tls-cert "$dir/tls.crt" --tls-key "$dir/tls.key"
add_sink sinkstarttls
sink_start sinkimplicit --tls-cert "$dir/tls.crt" --tls-key "$dir/tls.key" --implicit-tls
add_sink sinkimplicit
if any_wanted l1 l2 l3 l4; then
	smtp_sink_start smtp1
	add_sink smtp1
	smtp_sink_start smtp2
	add_sink smtp2
fi
if any_wanted x x-setup; then
	sink_start xsink1 --xclient
	add_sink xsink1
	sink_start xsink2 --xclient
	add_sink xsink2
fi

# The two backends of the case at hand: be1 and be2 (names), be1_port and
# be2_port; use_backends mxlb|smtp|xclient.
be1='' be2='' be1_port='' be2_port=''
use_backends() {
	case "$1" in
	mxlb) be1=sink1 be2=sink2 ;;
	smtp) be1=smtp1 be2=smtp2 ;;
	xclient) be1=xsink1 be2=xsink2 ;;
	esac
	be1_port=${sinkport[$be1]}
	be2_port=${sinkport[$be2]}
}
use_backends mxlb

# smtp-source's headers (From, To, Date, Message-Id and the blank line), in
# octets, so that its -l (the body) can be the case's size less them: a
# "1 KB" message is then 1024 octets as the server stores it, as with
# mxlb-bench. Measured once, through an mxlb-sink that saves the message.
SRC_OPTS=(-c -M lockstep.compare.test -f sender@compare.test -t rcpt@compare.test)
SRC_HEADER=
if any_wanted l1 l2 l3 l4 l3m l4m x; then
	mkdir -p "$dir/capture"
	sink_start capture --save-dir "$dir/capture"
	if "${pin_client[@]}" timeout 20 "$SMTP_SOURCE" "${SRC_OPTS[@]}" -m 1 -l 100 "127.0.0.1:$sink_port" \
		>/dev/null 2>"$dir/capture.log"; then
		sleep 0.1
		SRC_HEADER=$(($(cat "$dir"/capture/*.eml 2>/dev/null | wc -c) - 100))
	fi
	stop_pid "$sink_pid"
	if [ -z "$SRC_HEADER" ] || [ "$SRC_HEADER" -le 0 ] || [ "$SRC_HEADER" -gt 1000 ]; then
		say "smtp-source's message could not be measured; see $dir/capture.log"
		exit 1
	fi
fi

# ---- the peers. start_PEER writes the configuration, starts the peer in
# the foreground and sets peer_pid (the PID started here) and the ports of
# its listeners: port_none, port_implicit, port_starttls ("" when the peer
# has no such listener).

peer_pid=
port_none=
port_implicit=
port_starttls=

start_direct() {
	peer_pid=
	port_none=$be1_port
	port_implicit=${sinkport[sinkimplicit]}
	port_starttls=${sinkport[sinkstarttls]}
}

# start_mxlb: MXLB_HANDOFF (default none) is the pool's handoff; with
# MXLB_REUSE=1 (the peer mxlb-reuse) the pool has reuse on. Returns 3 when
# mxlb --check refuses reuse as not supported yet (not built).
start_mxlb() {
	local conf=$dir/mxlb.yaml reuse='' check
	if [ -n "${MXLB_REUSE:-}" ]; then
		conf=$dir/mxlb-reuse.yaml
		reuse="    reuse: { max_idle: 32, idle_timeout: 30s, max_uses: 100 }"
	fi
	read -r port_none port_implicit port_starttls < <(free_port 3 | tr '\n' ' ')
	cat >"$conf" <<EOF
# mxlb for bench/compare.sh: one worker; per-session log lines off (level
# warn) like the other peers; handoff none, as HAProxy does no handoff
# (the xclient cases: xclient, to mxlb-sink --xclient).
server:
  hostname: mxlb.compare.test
  workers: 1
  shutdown_timeout: 2s
  log: { level: warn, format: text }
  admin: { listen: "" }
tls:
  compare:
    certificates: [ { cert: "$dir/tls.crt", key: "$dir/tls.key" } ]
listeners:
  - { name: plain, listen: ["127.0.0.1:$port_none"], pool: sinks }
  - { name: implicit, listen: ["127.0.0.1:$port_implicit"], pool: sinks, tls: implicit, tls_context: compare }
  - { name: starttls, listen: ["127.0.0.1:$port_starttls"], pool: sinks, tls: starttls, tls_context: compare }
pools:
  - name: sinks
    balance: roundrobin
    handoff: ${MXLB_HANDOFF:-none}
$reuse
    health: { check: smtp, interval: 2s }
    backends:
      - { name: $be1, address: "127.0.0.1:$be1_port" }
      - { name: $be2, address: "127.0.0.1:$be2_port" }
EOF
	if ! check=$("${pin_proxy[@]}" "$MXLB" -c "$conf" --check 2>&1); then
		echo "$check" >>"$dir/mxlb.log"
		if [ -n "$reuse" ] && [[ "$check" == *"reuse is not supported yet"* ]]; then
			return 3
		fi
		say "mxlb refuses $conf; see $dir/mxlb.log"
		return 1
	fi
	"${pin_proxy[@]}" "$MXLB" -c "$conf" >>"$dir/mxlb.log" 2>&1 &
	peer_pid=$!
	pids+=("$peer_pid")
}

start_mxlb_reuse() {
	MXLB_REUSE=1 start_mxlb
}

start_haproxy() {
	read -r port_none port_implicit < <(free_port 2 | tr '\n' ' ')
	port_starttls=
	# maxconn: two open files per session (see NOFILE)
	cat >"$dir/haproxy.cfg" <<EOF
# HAProxy for bench/compare.sh: one thread, TCP mode (it cannot speak
# STARTTLS), smtpchk health checks, round robin over both sinks. HAProxy
# sets TCP_NODELAY on its sockets itself. No logging.
global
    nbthread 1
    maxconn $MAXCONN
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
defaults
    mode tcp
    maxconn $MAXCONN
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend plain
    bind 127.0.0.1:$port_none
    default_backend sinks
frontend implicit
    bind 127.0.0.1:$port_implicit ssl crt $dir/tls.pem
    default_backend sinks
backend sinks
    balance roundrobin
    option smtpchk EHLO haproxy.compare.test
    server $be1 127.0.0.1:$be1_port check inter 2s
    server $be2 127.0.0.1:$be2_port check inter 2s
EOF
	if ! "${pin_proxy[@]}" haproxy -c -q -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1; then
		say "haproxy refuses $dir/haproxy.cfg; see $dir/haproxy.log"
		return 1
	fi
	"${pin_proxy[@]}" haproxy -db -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
	peer_pid=$!
	pids+=("$peer_pid")
}

start_nginx() {
	local auth_port
	read -r port_none port_implicit port_starttls auth_port < <(free_port 4 | tr '\n' ' ')
	local n="$dir/nginx"
	cat >"$n/nginx.conf" <<EOF
# nginx for bench/compare.sh: one worker process (plus the master); the
# mail proxy with smtp_auth none asks its own http server (auth_http) for a
# backend after the client's MAIL and RCPT, then replays them to it.
# split_clients on the random \$request_id picks either sink (50/50 at
# random, not strictly alternating). No access log; errors only. Its
# connections count every socket (clients, backends, both ends of each
# auth request): all but a few of the open files; the auth server's
# backlog takes a burst of held sessions' MAIL all at once.
load_module $NGINX_MAIL;
user root root;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fastcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    split_clients \$request_id \$sink_port {
        50% $be1_port;
        * $be2_port;
    }
    server {
        listen 127.0.0.1:$auth_port backlog=4096;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port \$sink_port;
            return 204;
        }
    }
}
mail {
    auth_http 127.0.0.1:$auth_port/auth;
    proxy on;
    smtp_auth none;
    xclient off;
    smtp_capabilities "SIZE 104857600" 8BITMIME;
    ssl_certificate $dir/tls.crt;
    ssl_certificate_key $dir/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    server { listen 127.0.0.1:$port_none; protocol smtp; }
    server { listen 127.0.0.1:$port_implicit ssl; protocol smtp; }
    server { listen 127.0.0.1:$port_starttls; protocol smtp; starttls on; }
}
EOF
	if ! "${pin_proxy[@]}" nginx -q -t -p "$n/" -e "$n/error.log" -c "$n/nginx.conf" >>"$dir/nginx.log" 2>&1; then
		say "nginx refuses $n/nginx.conf; see $dir/nginx.log"
		return 1
	fi
	"${pin_proxy[@]}" nginx -p "$n/" -e "$n/error.log" -c "$n/nginx.conf" -g 'daemon off;' >>"$dir/nginx.log" 2>&1 &
	peer_pid=$!
	pids+=("$peer_pid")
}

start_stunnel() {
	port_none=
	read -r port_implicit port_starttls < <(free_port 2 | tr '\n' ' ')
	cat >"$dir/stunnel.conf" <<EOF
; stunnel for bench/compare.sh. stunnel runs a thread per connection (its
; Debian build is PTHREAD); it has no setting for one thread. Two connect
; lines with failover = rr take both sinks in turn. Runs as root (no
; setuid). Log: warnings and worse.
foreground = yes
pid = $dir/stunnel.pid
output = $dir/stunnel.log
debug = warning
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
cert = $dir/tls.crt
key = $dir/tls.key
ciphersuites = TLS_AES_128_GCM_SHA256

[implicit]
accept = 127.0.0.1:$port_implicit
connect = 127.0.0.1:$be1_port
connect = 127.0.0.1:$be2_port
failover = rr

[starttls]
accept = 127.0.0.1:$port_starttls
connect = 127.0.0.1:$be1_port
connect = 127.0.0.1:$be2_port
failover = rr
protocol = smtp
EOF
	"${pin_proxy[@]}" stunnel4 "$dir/stunnel.conf" >>"$dir/stunnel.out" 2>&1 &
	peer_pid=$!
	pids+=("$peer_pid")
}

# Why PEER has no run for listener TLS $2 ("" when it has one).
na_reason() {
	case "$1:$2" in
	haproxy:starttls) echo "HAProxy cannot do STARTTLS (TCP mode does not speak SMTP)" ;;
	stunnel:none) echo "stunnel only terminates TLS" ;;
	esac
}

# Every PID of the peer: the one started here and, for nginx, the master's
# children (its worker).
peer_pids() {
	[ -n "$peer_pid" ] || return 0
	echo "$peer_pid"
	ps -o pid= --ppid "$peer_pid" 2>/dev/null | tr -d ' '
}

stop_peer() {
	[ -n "$peer_pid" ] || return 0
	local kids p
	kids=$(ps -o pid= --ppid "$peer_pid" 2>/dev/null | tr -d ' ')
	stop_pid "$peer_pid" 10
	# an nginx worker outlives its master only when the master was killed
	for p in $kids; do
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
	done
	peer_pid=
}

# Waits up to 10 s until the peer sets up an SMTP session (greeting, EHLO,
# with the TLS of $1) on port $2.
wait_ready() {
	local i
	for ((i = 0; i < 40; i++)); do
		if [ -n "$peer_pid" ] && ! kill -0 "$peer_pid" 2>/dev/null; then
			return 1
		fi
		if "${pin_client[@]}" timeout 5 "$BENCH" --target "127.0.0.1:$2" --tls "$1" --sessions 1 --messages 0 \
			--timeout 2s --quiet >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.25
	done
	return 1
}

port_for() {
	case "$1" in
	none) echo "$port_none" ;;
	implicit) echo "$port_implicit" ;;
	starttls) echo "$port_starttls" ;;
	esac
}

# The sinks a peer's messages land in, for listener TLS $2.
sinks_of() {
	if [ "$1" = direct ]; then
		case "$2" in
		none) echo "$be1" ;;
		implicit) echo sinkimplicit ;;
		starttls) echo sinkstarttls ;;
		esac
	else
		echo "$be1" "$be2"
	fi
}

sink_counts_json() { # {"sink1": N, ...} of the sinks named
	local s sep= out="{"
	for s in "$@"; do
		out="$out$sep\"$s\":$(sink_messages "$s")"
		sep=,
	done
	echo "$out}"
}

json_str() { # a JSON string of $1 (no control characters expected)
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

# COMPARE_PIN as asked, and the sinks' CPUs as the kernel has them (JSON).
pin_json() {
	local role sep=''
	printf '{"asked":{'
	for role in client proxy sinks; do
		[ -n "${pin_cpus[$role]:-}" ] || continue
		printf '%s"%s":"%s"' "$sep" "$role" "${pin_cpus[$role]}"
		sep=,
	done
	# shellcheck disable=SC2086
	printf '},"sinks_cpus":%s}' "$(cpus_json $spids)"
}

record() { # one line of runs.jsonl
	echo "$1" >>"$dir/runs.jsonl"
}

dur_s() { # whole seconds of a duration: 500ms, 8s, 2m
	case "$1" in
	*ms) echo 1 ;;
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*) echo "$1" ;;
	esac
}

over_budget() {
	[ $(($(date +%s) - t_start)) -ge "$BUDGET" ]
}

# Starts PEER for case $2 with TLS $3; 0 when it answers. Records why not.
peer_up() {
	local peer=$1 id=$2 tls=$3 head=$4 try st
	for try in 1 2 3; do
		"start_${peer//-/_}"
		st=$?
		if [ $st = 3 ]; then
			record "{$head,\"error\":\"skipped: reuse not built (mxlb --check: reuse is not supported yet)\"}"
			return 1
		elif [ $st != 0 ]; then
			record "{$head,\"error\":\"$peer did not start\"}"
			return 1
		fi
		wait_ready "$tls" "$(port_for "$tls")" && return 0
		# a peer that exited at once (a port taken meanwhile) gets new ports
		if [ -n "$peer_pid" ] && ! kill -0 "$peer_pid" 2>/dev/null && [ $try -lt 3 ]; then
			say "case $id: $peer exited at start (logs in $dir); again with other ports"
			stop_peer
			continue
		fi
		break
	done
	say "case $id: $peer does not answer on 127.0.0.1:$(port_for "$tls") (logs in $dir)"
	record "{$head,\"error\":\"$peer did not answer\"}"
	stop_peer
	return 1
}

# peer_begin PEER ID TLS HEAD: PEER up for case ID, unless it sits the case
# out (recorded: not applicable, over the time budget, did not start).
# Sets the caller's port, out and err.
peer_begin() {
	local peer=$1 id=$2 tls=$3 head=$4 reason
	reason=$(na_reason "$peer" "$tls")
	if [ -n "$reason" ]; then
		record "{$head,\"na\":$(json_str "$reason")}"
		return 1
	fi
	if over_budget; then
		record "{$head,\"error\":\"skipped: over the time budget of ${BUDGET}s\"}"
		return 1
	fi
	peer_up "$peer" "$id" "$tls" "$head" || return 1
	port=$(port_for "$tls")
	out="$dir/runs/$id-$peer-$rep.json"
	err="$dir/runs/$id-$peer-$rep.err"
}

# The peers of the case at hand: CASE_PEERS (when the case names its own)
# that PEERS has, mxlb-reuse coming with mxlb; else PEERS.
case_peers() {
	local p out=
	[ -n "${CASE_PEERS:-}" ] || {
		echo "$PEERS"
		return
	}
	for p in $CASE_PEERS; do
		if [[ " $PEERS " == *" $p "* ]] || { [ "$p" = mxlb-reuse ] && [[ " $PEERS " == *" mxlb "* ]]; }; then
			out="$out $p"
		fi
	done
	echo "$out"
}

dur_timeout() { # a duration for timeout(1): 500ms is 0.5s
	case "$1" in
	*ms) awk "BEGIN { printf \"%.3fs\", ${1%ms} / 1000 }" ;;
	*) echo "$1" ;;
	esac
}

# source_run PORT PERSISTENT SESSIONS OCTETS smtp-source-options...: one
# smtp-source run against 127.0.0.1:PORT, stopped after DURATION (SIGTERM)
# unless its -m messages are done before; writes to $out a JSON object with
# mxlb-bench's keys (latencies null: smtp-source measures none). Messages:
# smtp-source's own count (-c), which counts a message once its final dot
# is written, before the reply: when it was stopped, up to SESSIONS of them
# may not have been answered yet ("stopped", "in_flight_max"); when it ends
# by itself (its -m done), status 0 means every one was accepted. Sessions:
# SESSIONS when persistent (-d), else one per message; OCTETS per message,
# headers included; CPU: smtp-source's (bash's time). Returns 0 when it ran
# until stopped or did all its messages, 1 when it gave up (it stops at the
# first reply it did not expect: "smtp-source: fatal: ..." in $err).
source_run() {
	local port=$1 persistent=$2 sess=$3 octets=$4 rc t0 t1 n cpu ok inflight=$3
	shift 4
	t0=$(date +%s.%N)
	{
		TIMEFORMAT='%3U %3S'
		time "${pin_client[@]}" timeout -k 5 -s TERM "$(dur_timeout "$DURATION")" "$SMTP_SOURCE" "${SRC_OPTS[@]}" "$@" \
			"127.0.0.1:$port" >"$out.count" 2>"$err"
	} 2>"$out.time"
	rc=$?
	t1=$(date +%s.%N)
	n=$(tail -c 200 "$out.count" | tr '\r' '\n' | grep -E '^[0-9]+$' | tail -1)
	n=${n:-0}
	tail -c 200 "$out.count" >"$out.count.tail" # the whole count is a number per message
	rm -f "$out.count"
	cpu=$(awk 'NF == 2 { print $1 + $2 }' "$out.time" | tail -1)
	ok=0
	if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then ok=1; fi
	if [ "$n" = 0 ]; then ok=1; fi
	# its fatal errors sleep a second before it exits, so one near the end
	# may meet the SIGTERM: its message tells
	if grep -q 'fatal:' "$err"; then ok=1; fi
	[ "$persistent" = 1 ] || sess=$n
	awk -v n="$n" -v s="$sess" -v o="$octets" -v t0="$t0" -v t1="$t1" -v cpu="${cpu:-0}" -v ok=$ok \
		-v inflight="$inflight" \
		-v rc="$rc" -v err="$(grep -m1 -v '^$' "$err" | tr -d '"\\' | cut -c1-200)" 'BEGIN {
		el = t1 - t0
		errs = "{}"
		if (ok) errs = "{\"smtp-source exit " rc (err != "" ? ": " err : "") "\":1}"
		printf "{\"client\":\"smtp-source\",\"sessions\":%d,\"sessions_failed\":%d,\"messages\":%d,", \
			s, ok, n
		printf "\"failed_messages\":%d,\"elapsed_s\":%.3f,\"sessions_per_s\":%.1f,", ok, el, s / el
		printf "\"messages_per_s\":%.1f,\"mb_per_s\":%.2f,\"octets_per_message\":%d,", \
			n / el, n * o / el / 1e6, o
		printf "\"cpu_s\":%.3f,\"smtp_source_status\":%d,\"stopped\":%s,\"in_flight_max\":%d,", \
			cpu, rc, rc == 124 ? "true" : "false", inflight
		printf "\"setup_us\":{\"p50\":null,\"p99\":null},\"message_us\":{\"p50\":null,\"p99\":null},"
		printf "\"errors\":%s}\n", errs
	}' >"$out"
	return $ok
}

# run_case ID TLS TITLE CLIENT client-options...: every peer of the case,
# RUNS rounds. CLIENT: bench (mxlb-bench with the options) or source
# (smtp-source: the options are SIZE PERSISTENT SESSIONS then smtp-source's).
# BACKENDS (mxlb, smtp, xclient) and CASE_PEERS may be set for the call.
run_case() {
	local id=$1 tls=$2 title=$3 client=$4
	shift 4
	wanted "$id" || return 0
	echo "case $id: $title" >&2
	local peer head port out err cpu0 cpu1 scpu0 scpu1 c0 c1 rc ppids pcpus sinks
	local t0 t1 lim rep opts size='' persistent='' nsess='' args=("$@")
	lim=$(($(dur_s "$DURATION") + 40))
	use_backends "${BACKENDS:-mxlb}"
	if [ "$client" = source ]; then
		size=$1 persistent=$2 nsess=$3
		shift 3
		args=(-s "$nsess" -l $((size - SRC_HEADER)) "$@")
		[ "$persistent" = 1 ] && args=(-d "${args[@]}")
		opts="smtp-source ${SRC_OPTS[*]} ${args[*]} (stopped after $DURATION)"
	else
		opts="$*"
	fi
	for ((rep = 1; rep <= RUNS; rep++)); do
		for peer in $(case_peers); do
			head="\"case\":\"$id\",\"kind\":\"load\",\"title\":$(json_str "$title"),\"tls\":\"$tls\",\"peer\":\"$peer\",\"rep\":$rep,\"client\":\"$([ "$client" = source ] && echo smtp-source || echo mxlb-bench)\",\"backends\":\"${BACKENDS:-mxlb}\",\"options\":$(json_str "$opts")"
			peer_begin "$peer" "$id" "$tls" "$head" || continue
			ppids=$(peer_pids)
			# shellcheck disable=SC2086
			pcpus=$(cpus_json $ppids)
			sinks=$(sinks_of "$peer" "$tls")
			c0=$(sink_counts_json $sinks)
			# shellcheck disable=SC2086
			cpu0=$(cpu_ticks $ppids)
			# shellcheck disable=SC2086
			scpu0=$(cpu_ticks $spids)
			t0=$(date +%s.%N)
			if [ "$client" = source ]; then
				source_run "$port" "$persistent" "$nsess" "$size" "${args[@]}"
			else
				"${pin_client[@]}" timeout "$lim" "$BENCH" --target "127.0.0.1:$port" --tls "$tls" --timeout 10s --json --quiet \
					--duration "$DURATION" "$@" >"$out" 2>"$err"
			fi
			rc=$?
			t1=$(date +%s.%N)
			# shellcheck disable=SC2086
			cpu1=$(cpu_ticks $ppids)
			# shellcheck disable=SC2086
			scpu1=$(cpu_ticks $spids)
			sleep 0.3 # the mxlb-sinks rewrite their stats files every 200 ms
			c1=$(sink_counts_json $sinks)
			stop_peer
			if ! grep -q '^{' "$out"; then
				say "case $id: $peer: the client failed (status $rc): $(head -3 "$err")"
				record "{$head,\"error\":$(json_str "the client failed with status $rc")}"
				continue
			fi
			[ $rc = 0 ] || say "case $id: $peer (run $rep): the client's status is $rc: $(head -2 "$err")"
			record "{$head,\"exit\":$rc,\"hz\":$HZ,\"proxy_pids\":$(echo $ppids | wc -w),\"proxy_cpus\":$pcpus,\"proxy_cpu_ticks\":$(
				[ -n "$ppids" ] && echo $((cpu1 - cpu0)) || echo null),\"sinks_cpu_ticks\":$((scpu1 - scpu0)),\"wall_s\":$(
				awk "BEGIN { printf \"%.3f\", $t1 - $t0 }"),\"sinks_before\":$c0,\"sinks_after\":$c1,\"bench\":$(sed -n '/^{/p' "$out")}"
		done
	done
}

# load_case ID TLS TITLE mxlb-bench-options...
load_case() {
	local id=$1 tls=$2 title=$3
	shift 3
	run_case "$id" "$tls" "$title" bench "$@"
}

# lock_case ID TITLE SIZE PERSISTENT SESSIONS smtp-source-options...: the
# lock-step client; SIZE in octets as stored (smtp-source's -l is SIZE less
# its headers), PERSISTENT 1 for -d, SESSIONS its -s.
lock_case() {
	local id=$1 title=$2
	shift 2
	run_case "$id" none "$title" source "$@"
}

# hold_case ID TLS TITLE SESSIONS [AFTER [FRESH]]: AFTER ehlo (default)
# or rcpt (mxlb-bench --hold-after); FRESH 1: no warm-up before the hold.
hold_case() {
	local id=$1 tls=$2 title=$3 n=$4 after=${5:-ehlo} fresh=${6:-0}
	wanted "$id" || return 0
	echo "case $id: $title" >&2
	local peer head port out err rss0 rss1 cpu0 cpu1 bp rc ppids pcpus held rep
	use_backends mxlb
	for ((rep = 1; rep <= RUNS; rep++)); do
		for peer in $PEERS; do
			head="\"case\":\"$id\",\"kind\":\"hold\",\"title\":$(json_str "$title"),\"tls\":\"$tls\",\"peer\":\"$peer\",\"rep\":$rep,\"client\":\"mxlb-bench\",\"backends\":\"mxlb\",\"options\":\"--hold --hold-after $after --concurrency $n\",\"fresh\":$fresh"
			if [ "$peer" = direct ]; then
				record "{$head,\"na\":\"no proxy: nothing to measure\"}"
				continue
			fi
			peer_begin "$peer" "$id" "$tls" "$head" || continue
			# a warm-up of short sessions, few at once: fixed costs (buffer
			# pools, mxlb's ring buffers) are then not counted per session
			if [ "$fresh" = 0 ]; then
				"${pin_client[@]}" "$BENCH" --target "127.0.0.1:$port" --tls "$tls" --timeout 30s --sessions 2000 \
					--concurrency 20 --messages 1 --size 1k --duration 10s --quiet >/dev/null 2>&1
			fi
			sleep 0.5
			ppids=$(peer_pids)
			# shellcheck disable=SC2086
			pcpus=$(cpus_json $ppids)
			# shellcheck disable=SC2086
			rss0=$(rss_kb $ppids)
			# shellcheck disable=SC2086
			cpu0=$(cpu_ticks $ppids)
			"${pin_client[@]}" "$BENCH" --target "127.0.0.1:$port" --tls "$tls" --timeout 30s --hold --hold-after "$after" \
				--concurrency "$n" --hold-time 40s --json --quiet >"$out" 2>"$err" &
			bp=$!
			pids+=("$bp")
			held=1
			if ! wait_line "$out" 60 "^held"; then
				say "case $id: $peer: the sessions were not all set up within 60 s"
				held=0
			fi
			sleep 1 # let the last sessions settle
			# shellcheck disable=SC2086
			rss1=$(rss_kb $ppids)
			# shellcheck disable=SC2086
			cpu1=$(cpu_ticks $ppids)
			kill -INT "$bp" 2>/dev/null
			wait "$bp"
			rc=$?
			forget_pid "$bp"
			stop_peer
			if ! grep -q '^{' "$out"; then
				record "{$head,\"error\":$(json_str "mxlb-bench --hold failed with status $rc")}"
				continue
			fi
			record "{$head,\"exit\":$rc,\"all_held\":$held,\"hz\":$HZ,\"proxy_pids\":$(echo $ppids | wc -w),\"proxy_cpus\":$pcpus,\"proxy_cpu_ticks\":$((cpu1 - cpu0)),\"rss_before_kb\":$rss0,\"rss_after_kb\":$rss1,\"bench\":$(sed -n '/^{/p' "$out")}"
		done
	done
}

# ---- the cases: one line each. --duration bounds each run in time (the
# sessions in progress then finish), --sessions in work; `timeout` bounds
# mxlb-bench itself.

load_case a none "1 KB, 1 message per session" --sessions 200000 --concurrency 50 --messages 1 --size 1k
load_case b none "1 KB, 100 messages per session" --sessions 5000 --concurrency 20 --messages 100 --size 1k
load_case c none "100 KB, 20 messages per session" --sessions 2000 --concurrency 10 --messages 20 --size 100k
load_case d none "1 MB, 10 messages per session" --sessions 600 --concurrency 10 --messages 10 --size 1M
load_case e implicit "implicit TLS, 1 KB, 1 message per session, full handshakes" --sessions 50000 --concurrency 50 --messages 1 --size 1k
load_case f starttls "STARTTLS, 1 KB, 1 message per session, full handshakes" --sessions 50000 --concurrency 50 --messages 1 --size 1k
load_case g implicit "TLS bulk: implicit TLS, 1 MB, 10 messages per session" --sessions 600 --concurrency 10 --messages 10 --size 1M
if [ -z "$QUICK" ]; then
	hold_case h none "idle: $HOLD sessions held after EHLO" "$HOLD"
	hold_case h-tls implicit "idle: $HOLD implicit-TLS sessions held after EHLO" "$HOLD"
fi
# lock-step: smtp-source (no pipelining: every command waits for its reply),
# 20 sessions at once, two smtp-sink backends; -m bounds the work, DURATION
# the time.
BACKENDS=smtp lock_case l1 "lock-step (smtp-source), 1 KB, 1 message per session" 1024 0 20 -m 500000
BACKENDS=smtp lock_case l2 "lock-step (smtp-source -d), 1 KB, persistent sessions" 1024 1 20 -m 2000000
BACKENDS=smtp lock_case l3 "lock-step (smtp-source -d), 100 KB, persistent sessions" 102400 1 20 -m 200000
BACKENDS=smtp lock_case l4 "lock-step (smtp-source -d), 1 MB, persistent sessions" 1048576 1 20 -m 20000
# an xclient pool, mxlb with reuse off and on (mxlb-reuse)
BACKENDS=xclient CASE_PEERS="mxlb mxlb-reuse" MXLB_HANDOFF=xclient \
	lock_case x "xclient pool, lock-step (smtp-source), 1 KB, 1 message per session" 1024 0 20 -m 500000
BACKENDS=xclient CASE_PEERS="mxlb mxlb-reuse" MXLB_HANDOFF=xclient \
	load_case x-setup none "xclient pool, mxlb-bench lock-step, 1 KB, 1 message per session" \
	--sessions 200000 --concurrency 20 --messages 1 --size 1k
# last, so that a slow machine's budget skips these before the others: the
# bulk of l3 and l4 in front of two mxlb-sink (smtp-sink's CPU per megabyte
# caps l3 and l4 below what a proxy moves, so their MB/s compare the sinks),
# and idle memory as issue 10 sets its goal
BACKENDS=mxlb lock_case l3m "lock-step (smtp-source -d), 100 KB, persistent sessions, two mxlb-sink" \
	102400 1 20 -m 200000
BACKENDS=mxlb lock_case l4m "lock-step (smtp-source -d), 1 MB, persistent sessions, two mxlb-sink" \
	1048576 1 20 -m 20000
if [ -z "$QUICK" ]; then
	hold_case i500 none "idle: 500 sessions held after RCPT, fresh process" 500 rcpt 1
	hold_case i5000 none "idle: $HOLD sessions held after RCPT, fresh process" "$HOLD" rcpt 1
fi

# ---- versions, the table, results.json, the chart

versions="$dir/versions.txt"
{
	echo "mxlb: $("${pin_proxy[@]}" "$MXLB" --version 2>&1 | head -1) (BoringSSL)"
	echo "mxlb-source: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "haproxy: $("${pin_proxy[@]}" haproxy -v 2>&1 | head -1)"
	echo "haproxy-openssl: $("${pin_proxy[@]}" haproxy -vv 2>&1 | grep -m1 'Running on OpenSSL')"
	echo "nginx: $("${pin_proxy[@]}" nginx -v 2>&1 | head -1)"
	echo "stunnel: $("${pin_proxy[@]}" stunnel4 -version 2>&1 | grep -m1 '^stunnel')"
	echo "stunnel-openssl: $("${pin_proxy[@]}" stunnel4 -version 2>&1 | grep -m1 'Running')"
	echo "gnuplot: $(gnuplot --version 2>&1 | head -1)"
	echo "postfix: $(dpkg-query -W -f '${Version}' postfix 2>/dev/null) (smtp-source, smtp-sink)"
} >"$versions" 2>/dev/null

/usr/bin/python3 - "$dir" "$(nproc)" "$(uname -r)" "$DURATION" "$HOLD" "$(($(date +%s) - t_start))" \
	"$load_start" "$(cat /proc/loadavg)" "$RUNS" "${SRC_HEADER:-0}" "$(pin_json)" <<'PY'
import json, statistics, subprocess, sys
from pathlib import Path

d = Path(sys.argv[1])
cores, kernel, duration, hold = int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
took, load_start, loadavg = int(sys.argv[6]), sys.argv[7], sys.argv[8]
nruns, src_header = int(sys.argv[9]), int(sys.argv[10])
pin = json.loads(sys.argv[11])
PEERS = ["direct", "mxlb", "mxlb-reuse", "haproxy", "nginx", "stunnel"]
osname = "unknown"
for line in Path("/etc/os-release").read_text().splitlines():
    if line.startswith("PRETTY_NAME="):
        osname = line.split("=", 1)[1].strip('"')
versions = {}
for line in (d / "versions.txt").read_text().splitlines():
    k, _, v = line.partition(": ")
    versions[k] = v.strip()

NOTES = {
    "direct": "mxlb-bench straight to one mxlb-sink (for TLS, a sink terminating STARTTLS or "
              "implicit TLS itself): the limit of the generator and one sink; no proxy",
    "mxlb": "server.workers: 1; handoff none (cases x and x-setup: xclient, reuse off); "
            "balance roundrobin; health check smtp every 2 s; BoringSSL; sets TCP_NODELAY on "
            "both sides itself",
    "mxlb-reuse": "mxlb as above with handoff xclient and pools[].reuse {max_idle: 32, "
                  "idle_timeout: 30s, max_uses: 100}: cases x and x-setup only; skipped while "
                  "mxlb --check refuses reuse as not supported yet",
    "haproxy": "nbthread 1; mode tcp; balance roundrobin; option smtpchk every 2 s; implicit TLS "
               "with bind ... ssl crt; cannot do STARTTLS; sets TCP_NODELAY on its sockets itself "
               "(no option needed); OpenSSL 3",
    "nginx": "worker_processes 1 (CPU time and RSS are the master's and the worker's together); "
             "mail proxy with smtp_auth none and xclient off; the backend comes from nginx's own "
             "auth_http location, split_clients on $request_id (random 50/50); nginx answers "
             "EHLO, MAIL and RCPT itself and connects to the backend after RCPT; the mail module "
             "has no TCP_NODELAY setting and never sets it (Nagle stays on); OpenSSL 3",
    "stunnel": "TLS only; a thread per connection (no setting for one thread); two connect "
               "lines with failover = rr; TCP_NODELAY on both sides (socket = l:/r:); STARTTLS "
               "with protocol = smtp, whose server side first waits 200 ms for the client to "
               "speak (to tell implicit TLS apart), so every STARTTLS session starts 200 ms "
               "late; OpenSSL 3",
}

runs = [json.loads(l) for l in (d / "runs.jsonl").read_text().splitlines() if l.strip()]


def one_run(r):
    """The figures of one run (one line of runs.jsonl)."""
    if "na" in r:
        return {"na": r["na"]}
    if "error" in r:
        return {"error": r["error"]}
    b = r["bench"]
    cpu_s = r["proxy_cpu_ticks"] / r["hz"] if r.get("proxy_cpu_ticks") is not None else None
    out = {"exit": r["exit"], "sessions": b["sessions"], "errors": b["errors"],
           "proxy_cpu_s": None if cpu_s is None else round(cpu_s, 3),
           "proxy_cpus": r.get("proxy_cpus", []), "bench": b}
    if r["kind"] == "load":
        msgs, el = b["messages"], b["elapsed_s"]
        mu = b["message_us"]
        sinks = {k: r["sinks_after"][k] - r["sinks_before"][k] for k in r["sinks_after"]}
        out.update({
            "messages": msgs, "failed_messages": b["failed_messages"],
            "messages_per_s": b["messages_per_s"], "mb_per_s": b["mb_per_s"],
            "sessions_per_s": b["sessions_per_s"],
            "message_p50_ms": None if mu["p50"] is None else mu["p50"] / 1000,
            "message_p99_ms": None if mu["p99"] is None else mu["p99"] / 1000,
            "setup_p50_ms": None if b["setup_us"]["p50"] is None else b["setup_us"]["p50"] / 1000,
            "setup_p99_ms": None if b["setup_us"]["p99"] is None else b["setup_us"]["p99"] / 1000,
            "proxy_cpu_us_per_message": (round(cpu_s * 1e6 / msgs, 1)
                                         if cpu_s is not None and msgs else None),
            "proxy_cpu_core_pct": round(100 * cpu_s / el) if cpu_s is not None and el else None,
            "bench_cpu_core_pct": round(100 * b["cpu_s"] / el) if el else None,
            "sinks_cpu_us_per_message": (round(r["sinks_cpu_ticks"] / r["hz"] * 1e6 / msgs, 1)
                                         if msgs else None),
            "sink_messages": sinks, "sink_count_matches": sum(sinks.values()) == msgs,
        })
        if b.get("stopped"):  # smtp-source, stopped: its last messages may be in flight
            out["sink_count_matches"] = abs(sum(sinks.values()) - msgs) <= b["in_flight_max"]
    else:
        held = b.get("held") or 0
        grow = (r["rss_after_kb"] - r["rss_before_kb"]) * 1024
        su = b["setup_us"]
        out.update({
            "held": held, "all_held": bool(r["all_held"]),
            "rss_before_kb": r["rss_before_kb"], "rss_after_kb": r["rss_after_kb"],
            "rss_growth_bytes": grow,
            "rss_per_session_bytes": round(grow / held) if held else None,
            "setup_p50_ms": None if su["p50"] is None else su["p50"] / 1000,
            "setup_p99_ms": None if su["p99"] is None else su["p99"] / 1000,
        })
    return out


# Figures that get a median (over the runs that produced results) and a
# spread [min, max]; counts are summed.
MEDIAN = {"load": ["messages_per_s", "mb_per_s", "sessions_per_s", "message_p50_ms",
                   "message_p99_ms", "setup_p50_ms", "setup_p99_ms", "proxy_cpu_us_per_message",
                   "proxy_cpu_core_pct", "bench_cpu_core_pct", "sinks_cpu_us_per_message",
                   "proxy_cpu_s"],
          "hold": ["held", "rss_before_kb", "rss_after_kb", "rss_growth_bytes",
                   "rss_per_session_bytes", "setup_p50_ms", "setup_p99_ms", "proxy_cpu_s"]}


def aggregate(kind, outs):
    """One (case, peer): the median of each figure over its runs."""
    ok = [o for o in outs if "bench" in o]
    if not ok:  # not applicable, skipped or failed every time: the first says why
        first = dict(outs[0])
        if len(outs) > 1:
            first["runs"] = len(outs)
        return first
    agg = {"runs": len(outs), "runs_with_results": len(ok)}
    bad = [o["error"] for o in outs if "error" in o]
    agg["exit"] = max([o["exit"] for o in ok] + ([1] if bad else []))
    if bad:
        agg["run_errors"] = bad
    spread = {}
    for k in MEDIAN[kind]:
        xs = [o[k] for o in ok if o.get(k) is not None]
        agg[k] = None if not xs else statistics.median(xs)
        if xs:
            spread[k] = [min(xs), max(xs)]
    for k in ("proxy_cpu_us_per_message", "sinks_cpu_us_per_message", "message_p50_ms",
              "message_p99_ms", "setup_p50_ms", "setup_p99_ms", "mb_per_s"):
        if agg.get(k) is not None:
            agg[k] = round(agg[k], 3)
    agg["spread"] = spread
    # the CPUs the peer's processes could run on, over its runs
    agg["proxy_cpus"] = sorted({c for o in ok for c in o["proxy_cpus"]})
    agg["sessions"] = sum(o["sessions"] for o in ok)
    errs = {}
    for o in ok:
        for e, n in o["errors"].items():
            errs[e] = errs.get(e, 0) + n
    agg["errors"] = errs
    if kind == "load":
        agg["messages"] = sum(o["messages"] for o in ok)
        agg["failed_messages"] = sum(o["failed_messages"] or 0 for o in ok)
        sinks = {}
        for o in ok:
            for k, n in o["sink_messages"].items():
                sinks[k] = sinks.get(k, 0) + n
        agg["sink_messages"] = sinks
        agg["sink_count_matches"] = all(o["sink_count_matches"] for o in ok)
    else:
        agg["held"] = min(o["held"] for o in ok)
        agg["all_held"] = all(o["all_held"] for o in ok)
    agg["per_run"] = [{k: v for k, v in o.items() if k != "bench"} for o in outs]
    agg["bench"] = [o["bench"] for o in ok]
    return agg


cases, order, per = {}, [], {}
for r in runs:
    if r["case"] not in cases:
        cases[r["case"]] = {"case": r["case"], "kind": r["kind"], "title": r["title"],
                            "tls": r["tls"], "client": r.get("client", "mxlb-bench"),
                            "backends": r.get("backends", "mxlb"), "options": r["options"],
                            "peers": {}}
        order.append(r["case"])
    per.setdefault((r["case"], r["peer"]), []).append(one_run(r))
for (cid, peer), outs in per.items():
    cases[cid]["peers"][peer] = aggregate(cases[cid]["kind"], outs)

# ratios to mxlb: peer / mxlb for msg/s, MB/s, CPU per message and RSS per session
KEYS = {"load": [("messages_per_s", "messages_per_s"), ("mb_per_s", "mb_per_s"),
                 ("proxy_cpu_us_per_message", "cpu_per_message")],
        "hold": [("rss_per_session_bytes", "rss_per_session")]}
for c in cases.values():
    m = c["peers"].get("mxlb", {})
    for peer, v in c["peers"].items():
        if "bench" not in v or "bench" not in m:
            continue
        v["ratio_to_mxlb"] = {name: (round(v[k] / m[k], 2) if v.get(k) and m.get(k) else None)
                              for k, name in KEYS[c["kind"]]}

# where mxlb is behind a peer, and by how much
behind = []
for cid in order:
    c = cases[cid]
    m = c["peers"].get("mxlb", {})
    if "bench" not in m:
        continue
    for peer in ("haproxy", "nginx", "stunnel"):
        v = c["peers"].get(peer, {})
        if "bench" not in v:
            continue
        noise = lambda pct: " (under 10 %: within run-to-run noise)" if round(pct) < 10 else ""
        if c["kind"] == "load":
            if v["messages_per_s"] > m["messages_per_s"] > 0:
                pct = 100 * (v["messages_per_s"] / m["messages_per_s"] - 1)
                behind.append(f"case {cid}: {peer} moves {pct:.0f} % more messages/s than mxlb "
                              f"({v['messages_per_s']:.0f} vs {m['messages_per_s']:.0f}){noise(pct)}")
            a, b_ = v["proxy_cpu_us_per_message"], m["proxy_cpu_us_per_message"]
            if a and b_ and a < b_:
                pct = 100 * (b_ / a - 1)
                behind.append(f"case {cid}: mxlb spends {pct:.0f} % more CPU per message than "
                              f"{peer} ({b_:.0f} vs {a:.0f} us){noise(pct)}")
            for q in ("p50", "p99"):
                a, b_ = v[f"message_{q}_ms"], m[f"message_{q}_ms"]
                if a and b_ and a < b_:
                    pct = 100 * (b_ / a - 1)
                    behind.append(f"case {cid}: mxlb's {q} message latency is {pct:.0f} % above "
                                  f"{peer}'s ({b_:.2f} vs {a:.2f} ms){noise(pct)}")
        else:
            a, b_ = v["rss_per_session_bytes"], m["rss_per_session_bytes"]
            if a is not None and b_ is not None and a < b_:
                pct = 100 * (b_ / a - 1) if a > 0 else float("inf")
                behind.append(f"case {cid}: mxlb's RSS grows {pct:.0f} % more per held session than "
                              f"{peer}'s ({b_} vs {a} bytes){noise(pct)}")

# ---- the tables
def f0(x): return "-" if x is None else f"{x:.0f}"
def f1(x): return "-" if x is None else f"{x:.1f}"
def ms(x): return "-" if x is None else (f"{x:.2f}" if x < 100 else f"{x:.0f}")
def rt(v, k):
    x = v.get("ratio_to_mxlb", {}).get(k)
    return "-" if x is None else f"{x:.2f}"
def spread(v):
    """(max - min) / median of msg/s and of CPU per message, in %."""
    out = []
    for k in ("messages_per_s", "proxy_cpu_us_per_message"):
        sp, m = v.get("spread", {}).get(k), v.get(k)
        out.append("-" if not sp or not m else f"{100 * (sp[1] - sp[0]) / m:.0f}")
    return "/".join(out)
def note(v):
    if "na" in v:
        return "n/a: " + v["na"]
    if "error" in v:
        return ("" if v["error"].startswith("skipped") else "error: ") + v["error"]
    e = ", ".join(f"{k}: {n}" for k, n in v["errors"].items())
    parts = [f"errors {e}"] if e else []
    if v.get("run_errors"):
        parts.append(f"{len(v['run_errors'])} of {v['runs']} runs failed: " + "; ".join(v["run_errors"]))
    if "sink_messages" in v:
        s = v["sink_messages"]
        if not v["sink_count_matches"]:
            parts.append(f"sinks counted {sum(s.values())}")
        if len(s) == 2 and sum(s.values()):
            parts.append("sinks " + "/".join(str(round(100 * n / sum(s.values()))) for n in s.values()) + " %")
    if v.get("all_held") is False:
        parts.append("not all sessions held")
    return "; ".join(parts)

load_head = ("case", "peer", "msg/s", "MB/s", "msg ms p50/p99", "setup ms p50/p99", "CPU us/msg",
             "CPU % core", "gen CPU %", "msg/s vs mxlb", "MB/s vs mxlb", "CPU/msg vs mxlb",
             "spread % msg/s, CPU", "notes")
hold_head = ("case", "peer", "held", "RSS growth MiB", "RSS B/session", "vs mxlb",
             "setup ms p50/p99", "notes")
load_rows, hold_rows = [], []
for cid in order:
    c = cases[cid]
    for peer in PEERS:
        if peer not in c["peers"]:
            continue
        v = c["peers"][peer]
        ok = "bench" in v
        if c["kind"] == "load":
            load_rows.append((cid, peer,
                              f0(v.get("messages_per_s")) if ok else "",
                              f1(v.get("mb_per_s")) if ok else "",
                              f"{ms(v['message_p50_ms'])}/{ms(v['message_p99_ms'])}" if ok else "",
                              f"{ms(v['setup_p50_ms'])}/{ms(v['setup_p99_ms'])}" if ok else "",
                              f0(v.get("proxy_cpu_us_per_message")) if ok else "",
                              f0(v.get("proxy_cpu_core_pct")) if ok else "",
                              f0(v.get("bench_cpu_core_pct")) if ok else "",
                              rt(v, "messages_per_s") if ok else "", rt(v, "mb_per_s") if ok else "",
                              rt(v, "cpu_per_message") if ok else "",
                              spread(v) if ok else "", note(v)))
        else:
            hold_rows.append((cid, peer,
                              f0(v.get("held")) if ok else "",
                              f1(v["rss_growth_bytes"] / 1048576) if ok else "",
                              f0(v.get("rss_per_session_bytes")) if ok else "",
                              rt(v, "rss_per_session") if ok else "",
                              f"{ms(v['setup_p50_ms'])}/{ms(v['setup_p99_ms'])}" if ok else "",
                              note(v)))

def text_table(head, rows):
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(x).ljust(n) for x, n in zip(r, w)).rstrip()
    return "\n".join([line(head), line(["-" * n for n in w])] + [line(r) for r in rows])

def md_table(head, rows, right):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)

BACKENDS = {"mxlb": "two mxlb-sink", "smtp": "two Postfix smtp-sink",
            "xclient": "two mxlb-sink --xclient"}
titles = "\n".join(f"  {cid}: {cases[cid]['title']} ({cases[cid]['tls']}; "
                   f"{cases[cid]['client']}; {BACKENDS.get(cases[cid]['backends'], '')})"
                   for cid in order)
machine = f"{cores} cores, {osname}, kernel {kernel}"
if pin["asked"]:
    machine += "; pinned (taskset -c): " + ", ".join(f"{k} {v}" for k, v in pin["asked"].items())
print()
print(f"each peer in front of two sinks, {duration} per load run, medians of {nruns} "
      f"run{'s' if nruns > 1 else ''}; {machine}")
print("cases:\n" + titles)
print("(msg ms: message latency, MAIL FROM to the 250 after the final dot; setup ms: connect to "
      "the 250 to the last EHLO, TLS included; CPU: the proxy's utime+stime per accepted message "
      "and as a share of one core; gen CPU: the client's; 'vs mxlb': peer / mxlb; "
      "each run offers the same concurrency for the same time, so a peer that moves fewer "
      "messages also queues fewer: compare latencies at similar rates only; smtp-source "
      "measures no latency; spread: (max - min) / median over the runs, in %)")
if load_rows:
    print()
    print(text_table(load_head, load_rows))
if hold_rows:
    print()
    print("idle memory: RSS growth of the proxy (VmRSS, all its processes) with the sessions "
          "held (after EHLO in h and h-tls, after RCPT in i500 and i5000), per held session")
    print(text_table(hold_head, hold_rows))

# issue 10's goals for the lock-step cases: a ratio of two medians each
def fig(cid, peer, key):
    v = cases.get(cid, {}).get("peers", {}).get(peer, {})
    return v.get(key) if "bench" in v else None
def why(cid, peer):
    v = cases.get(cid, {}).get("peers", {}).get(peer)
    if v is None:
        return "not run"
    return v.get("error") or v.get("na") or "no figure"
goals = []
for name, (c1, p1, k1), (c2, p2, k2), op, target in (
        ("l1: mxlb CPU/msg / HAProxy's, without reuse", ("l1", "mxlb", "proxy_cpu_us_per_message"),
         ("l1", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.6),
        ("x: mxlb-reuse CPU/msg / HAProxy's in l1", ("x", "mxlb-reuse", "proxy_cpu_us_per_message"),
         ("l1", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.4),
        ("x-setup: session setup p50 with reuse / without", ("x-setup", "mxlb-reuse", "setup_p50_ms"),
         ("x-setup", "mxlb", "setup_p50_ms"), "<=", 0.5),
        ("l2: mxlb CPU/msg / HAProxy's", ("l2", "mxlb", "proxy_cpu_us_per_message"),
         ("l2", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.7),
        ("l3: mxlb MB/s / HAProxy's", ("l3", "mxlb", "mb_per_s"), ("l3", "haproxy", "mb_per_s"), ">=", 1.2),
        ("l3: mxlb CPU/msg / HAProxy's", ("l3", "mxlb", "proxy_cpu_us_per_message"),
         ("l3", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.8),
        ("l4: mxlb MB/s / HAProxy's", ("l4", "mxlb", "mb_per_s"), ("l4", "haproxy", "mb_per_s"), ">=", 1.2),
        ("l4: mxlb CPU/msg / HAProxy's", ("l4", "mxlb", "proxy_cpu_us_per_message"),
         ("l4", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.8),
        # the same goals where the backends do not cap the rate
        ("l3m: mxlb MB/s / HAProxy's", ("l3m", "mxlb", "mb_per_s"), ("l3m", "haproxy", "mb_per_s"),
         ">=", 1.2),
        ("l3m: mxlb CPU/msg / HAProxy's", ("l3m", "mxlb", "proxy_cpu_us_per_message"),
         ("l3m", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.8),
        ("l4m: mxlb MB/s / HAProxy's", ("l4m", "mxlb", "mb_per_s"), ("l4m", "haproxy", "mb_per_s"),
         ">=", 1.2),
        ("l4m: mxlb CPU/msg / HAProxy's", ("l4m", "mxlb", "proxy_cpu_us_per_message"),
         ("l4m", "haproxy", "proxy_cpu_us_per_message"), "<=", 0.8)):
    if c1 not in cases and c2 not in cases:
        continue
    a, b_ = fig(c1, p1, k1), fig(c2, p2, k2)
    g = {"goal": f"{name} {op} {target}", "value": None, "met": None}
    if a is not None and b_:
        g["value"] = round(a / b_, 2)
        g["met"] = g["value"] <= target if op == "<=" else g["value"] >= target
    else:
        g["why_not"] = why(c1, p1) if a is None else why(c2, p2)
    goals.append(g)
# and its idle-memory goals: mxlb's median RSS growth per held session
for cid, target in (("i500", 2048), ("i5000", 1024)):
    if cid not in cases:
        continue
    a = fig(cid, "mxlb", "rss_per_session_bytes")
    g = {"goal": f"{cid}: mxlb octets per session held after RCPT, fresh <= {target}",
         "value": a, "met": None, "unit": "octets"}
    if a is not None:
        g["met"] = a <= target
    else:
        g["why_not"] = why(cid, "mxlb")
    goals.append(g)
def goal_line(g):
    if g["value"] is None:
        return f"{g['goal']}: - ({g['why_not']})"
    v = f"{g['value']:.0f}" if g.get("unit") == "octets" else f"{g['value']:.2f}"
    return f"{g['goal']}: {v} ({'met' if g['met'] else 'not met'})"
if goals:
    print()
    print("issue 10's goals (ratios of medians; idle memory in octets):")
    for g in goals:
        print("  " + goal_line(g))

print()
if behind:
    print("where mxlb is behind:")
    for b in behind:
        print("  " + b)
else:
    print("mxlb is behind no peer in any case of this run")

md = [f"{machine}; {duration} per load run, medians of {nruns} run{'s' if nruns > 1 else ''}; "
      f"load average (1 min) {load_start.split()[0]} at the start, {loadavg.split()[0]} at "
      f"the end; {took} s.", ""]
if load_rows:
    md += [md_table(load_head, load_rows, {2, 3, 6, 7, 8, 9, 10, 11, 12}), ""]
if hold_rows:
    md += [md_table(hold_head, hold_rows, {2, 3, 4, 5}), ""]
if goals:
    md += ["Issue 10's goals (ratios of medians; idle memory in octets):", ""] + [f"- {goal_line(g)}" for g in goals] + [""]
(d / "table.md").write_text("\n".join(md))

# ---- the chart: grouped bars per case and peer
def dat(name, kind, key, peers):
    """Writes one bar chart's data; returns its positive values ([] when none)."""
    rows = [c for c in (cases[i] for i in order) if c["kind"] == kind]
    low = []
    if not rows:
        return low
    with open(d / name, "w") as f:
        f.write("# case " + " ".join(peers) + "\n")
        for c in rows:
            vals = []
            for p in peers:
                x = c["peers"].get(p, {}).get(key)
                vals.append("-" if x is None else f"{x:.3f}")
            f.write(f"\"{LABELS.get(c['case'], c['case'])}\" " + " ".join(vals) + "\n")
            low.extend(float(x) for x in vals if x != "-" and float(x) > 0)
    return low

LABELS = {"a": "a: 1 KB", "b": "b: 1 KB x100", "c": "c: 100 KB x20", "d": "d: 1 MB x10",
          "e": "e: TLS 1 KB", "f": "f: STARTTLS 1 KB", "g": "g: TLS 1 MB x10",
          "h": "h: plain", "h-tls": "h-tls: TLS", "i500": "i500: after RCPT",
          "i5000": "i5000: after RCPT", "l1": "l1: lock-step 1 KB",
          "l2": "l2: lock-step 1 KB -d", "l3": "l3: lock-step 100 KB -d",
          "l4": "l4: lock-step 1 MB -d", "l3m": "l3m: 100 KB -d, mxlb-sink",
          "l4m": "l4m: 1 MB -d, mxlb-sink", "x": "x: xclient 1 KB", "x-setup": "x-setup: xclient 1 KB"}

COLORS = {"direct": "#999999", "mxlb": "#1f77b4", "mxlb-reuse": "#17becf", "haproxy": "#ff7f0e",
          "nginx": "#2ca02c", "stunnel": "#d62728"}
import math
panels = []
proxies = PEERS[1:]
for f, kind, key, peers, title, log in (
        ("msgs.dat", "load", "messages_per_s", PEERS, "messages/s (log scale; higher is better)", True),
        ("cpu.dat", "load", "proxy_cpu_us_per_message", proxies,
         "proxy CPU time per message, us (log scale; lower is better)", True),
        ("mem.dat", "hold", "rss_per_session_bytes", proxies,
         "idle memory: RSS growth per held session, bytes (lower is better)", False)):
    vals = dat(f, kind, key, peers)
    if vals:
        panels.append((f, peers, title, 10 ** math.floor(math.log10(min(vals))) if log else None,
                       sum(1 for c in cases.values() if c["kind"] == kind)))
gp = [f'set terminal pngcairo size 1300,{380 * max(1, len(panels)) + 60} font "sans,10"',
      f'set output "{d / "compare.png"}"',
      f'set multiplot layout {max(1, len(panels))},1 title "mxlb, HAProxy, nginx mail, stunnel: '
      f'one worker each, two backends (mxlb-sink; l1-l4: smtp-sink); medians of {nruns}; {machine}"',
      "set style data histograms", "set style histogram clustered gap 1",
      "set style fill solid 0.85 border -1", 'set datafile missing "-"',
      "set key outside right top vertical", "set grid ytics", "set boxwidth 0.9"]
for f, peers, title, low, n in panels:
    gp.append("set logscale y" if low else "unset logscale y")
    gp.append(f"set yrange [{low}:*]" if low else "set yrange [0:*]")
    gp.append(f"set xrange [-0.6:{n - 0.4}]")
    gp.append(f'set title "{title}"')
    gp.append("plot " + ", ".join(
        f'"{d / f}" using {i + 2}:xtic(1) title "{p}" lc rgb "{COLORS[p]}"'
        for i, p in enumerate(peers)))
gp.append("unset multiplot")
(d / "compare.gp").write_text("\n".join(gp) + "\n")
chart = None
if panels:
    g = subprocess.run(["gnuplot", str(d / "compare.gp")], capture_output=True, text=True)
    if g.returncode == 0 and (d / "compare.png").exists():
        chart = str(d / "compare.png")
    else:
        print(f"gnuplot failed: {g.stderr.strip()[:500]}", file=sys.stderr)

failed = []
for cid in order:
    for peer, v in cases[cid]["peers"].items():
        if "error" in v and not v["error"].startswith("skipped"):
            failed.append(f"{cid}/{peer}: {v['error']}")
        elif "bench" in v and v.get("run_errors"):
            failed.append(f"{cid}/{peer}: {len(v['run_errors'])} of {v['runs']} runs failed: "
                          + "; ".join(v["run_errors"]))
        elif "bench" in v and v["exit"] != 0:
            failed.append(f"{cid}/{peer}: the client's exit status {v['exit']} ({note(v)})")
results = {
    "machine": {"cores": cores, "os": osname, "kernel": kernel, "loadavg_at_start": load_start,
                "loadavg_at_end": loadavg},
    "setup": {"duration_per_load_run": duration, "held_sessions": hold, "runs_per_case": nruns,
              "figures": f"the median of {nruns} runs (interleaved: each round runs every peer "
                         "once); spread: [min, max]; per_run: each run",
              "generator": "build/mxlb-bench, 1 thread, full TLS handshakes (no resumption); "
                           "lock-step cases l1-l4 and x: Postfix smtp-source, 20 sessions, "
                           "no pipelining, stopped after the duration",
              "smtp_source_header_octets": src_header,
              "backends": "two build/mxlb-sink on 127.0.0.1; l1-l4: two Postfix smtp-sink; "
                          "x, x-setup: two build/mxlb-sink --xclient",
              "certificate": "ECDSA P-256, self-signed (build/compare/tls.crt)",
              "tls13_ciphersuite": "TLS_AES_128_GCM_SHA256 set on the OpenSSL peers (BoringSSL's "
                                   "first choice on AES hardware)",
              "pin": pin,
              "took_s": took},
    "peers": {p: {"version": versions.get(p, ""), "notes": NOTES[p]} for p in PEERS},
    "versions": versions,
    "cases": [cases[i] for i in order],
    "mxlb_behind": behind,
    "goals": goals,
    "failed": failed,
    "chart": chart,
}
(d / "results.json").write_text(json.dumps(results, indent=2) + "\n")
print(f"results: {d / 'results.json'}, {d / 'table.md'}" + (f", chart: {chart}" if chart else ""))
print(f"took {took} s")
if failed:
    print("runs that failed: " + "; ".join(failed))
sys.exit(1 if failed else 0)
PY
