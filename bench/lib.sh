# Helpers shared by bench/bench.sh and bench/compare.sh (sourced, bash).
# The caller sets `dir` (its output directory) and SINK (build/mxlb-sink).
# Every process a script starts goes into `pids`; lib_cleanup, run on
# EXIT, stops exactly those PIDs and nothing else.

pids=()
# A command prefix for the sinks (compare.sh's COMPARE_PIN: taskset -c CPUS).
pin_sinks=()

# Stops every PID in `pids`: SIGTERM, up to 5 s of grace, then SIGKILL.
lib_cleanup() {
	local p i alive
	[ ${#pids[@]} -eq 0 ] && return 0
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	for ((i = 0; i < 50; i++)); do
		alive=0
		for p in "${pids[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${pids[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	pids=()
}

forget_pid() {
	local keep=() p
	for p in "${pids[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	pids=("${keep[@]}")
}

# Stops one PID this script started (SIGTERM, up to $2 seconds, default 10,
# then SIGKILL) and forgets it.
stop_pid() {
	local p=$1 i
	kill "$p" 2>/dev/null
	for ((i = 0; i < ${2:-10} * 20; i++)); do
		kill -0 "$p" 2>/dev/null || break
		# a child that has exited but is not reaped yet is a zombie
		[ "$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)" = Z ] && break
		sleep 0.05
	done
	kill -KILL "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	forget_pid "$p"
}

# A free TCP port of 127.0.0.1 for a listener, taken below the kernel's
# ephemeral range when there is room: a port of that range, free now, may
# be the source port of some outgoing connection before the listener binds
# it (hundreds of connections a second come and go here). free_port N:
# N different ports, one a line.
free_port() {
	/usr/bin/python3 - "${1:-1}" <<'PY'
import random, socket, sys
want = int(sys.argv[1])
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = random.sample(range(max(1024, lo - 12000), lo - 500), 50 + want) if lo > 6000 else []
held = []
for port in ports + [0] * want:
    if len(held) == want:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        held.append(s)  # kept bound until all are chosen: no port twice
    except OSError:
        s.close()
for s in held:
    print(s.getsockname()[1])
    s.close()
PY
}

# Waits up to $2 seconds for file $1 to hold a line matching $3.
wait_line() {
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		grep -q "$3" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# utime + stime, in clock ticks, summed over the PIDs given (all threads of
# each); fields counted after the ")" of comm. A PID that is gone counts 0.
cpu_ticks() {
	local p n=0 t
	for p in "$@"; do
		t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
		n=$((n + ${t:-0}))
	done
	echo "$n"
}

# VmRSS in KiB, summed over the PIDs given.
rss_kb() {
	local p n=0 t
	for p in "$@"; do
		t=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
		n=$((n + ${t:-0}))
	done
	echo "$n"
}

# An ECDSA P-256 self-signed certificate for CN $2 in $1/tls.crt and
# $1/tls.key, and both in $1/tls.pem (HAProxy's form). Made once.
cert_make() {
	[ -f "$1/tls.pem" ] && return 0
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-keyout "$1/tls.key" -out "$1/tls.crt" -subj "/CN=$2" \
		-addext "subjectAltName=DNS:$2" >/dev/null 2>&1 || return 1
	cat "$1/tls.crt" "$1/tls.key" >"$1/tls.pem"
}

# Starts mxlb-sink NAME (further options after the name) on a free port of
# 127.0.0.1, counting into $dir/NAME.stats; sets sink_port and sink_pid.
sink_start() {
	local name=$1
	shift
	"${pin_sinks[@]}" "$SINK" --listen 127.0.0.1:0 --hostname "$name.bench" --stats-file "$dir/$name.stats" "$@" \
		>"$dir/$name.out" 2>"$dir/$name.log" &
	sink_pid=$!
	pids+=("$sink_pid")
	if ! wait_line "$dir/$name.log" 10 "listening on"; then
		echo "$(basename "$0"): mxlb-sink did not start; see $dir/$name.log" >&2
		exit 1
	fi
	sink_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/$name.log")
}

# Starts Postfix's smtp-sink NAME on a free port of 127.0.0.1 (-c: its
# running counters, "sess=N quit=N mesg=N" and a CR after every session and
# message, appended to $dir/NAME.count; as root it needs -u: nobody); sets
# sink_port and sink_pid. SMTP_SINK: the binary (default /usr/sbin/smtp-sink).
smtp_sink_start() {
	local name=$1 try i port u=()
	[ "$(id -u)" = 0 ] && u=(-u nobody)
	for try in 1 2 3; do
		port=$(free_port)
		: >"$dir/$name.count"
		"${pin_sinks[@]}" "${SMTP_SINK:-/usr/sbin/smtp-sink}" "${u[@]}" -c -h "$name.bench" "127.0.0.1:$port" 1024 \
			>>"$dir/$name.count" 2>"$dir/$name.log" &
		sink_pid=$!
		pids+=("$sink_pid")
		for ((i = 0; i < 100; i++)); do
			kill -0 "$sink_pid" 2>/dev/null || break
			if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				sink_port=$port
				return 0
			fi
			sleep 0.05
		done
		stop_pid "$sink_pid" 2 # the port was taken meanwhile: another
	done
	echo "$(basename "$0"): smtp-sink did not start; see $dir/$name.log" >&2
	exit 1
}

# Messages counted so far by smtp-sink NAME: the last "mesg=" of its
# counters. The file is emptied after each read (smtp-sink appends; its
# counters are totals, so the next line is right again), the last value kept
# in $dir/NAME.last for when nothing came since.
smtp_sink_messages() {
	local f="$dir/$1.count" v
	v=$(tail -c 400 "$f" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1)
	v=${v#mesg=}
	if [ -n "$v" ]; then
		echo "$v" >"$dir/$1.last"
		: >"$f"
	else
		v=$(cat "$dir/$1.last" 2>/dev/null)
	fi
	echo "${v:-0}"
}

# Messages counted by the sinks named: mxlb-sink's stats files (rewritten
# every 200 ms), or smtp-sink's counters (smtp_sink_start).
sink_messages() {
	local n=0 f v
	for f in "$@"; do
		if [ -f "$dir/$f.count" ]; then
			v=$(smtp_sink_messages "$f")
		else
			v=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' "$dir/$f.stats" 2>/dev/null)
		fi
		n=$((n + ${v:-0}))
	done
	echo "$n"
}
