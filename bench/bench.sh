#!/usr/bin/env bash
# `make bench`: build/mxlb-bench against build/mxlb (one worker) in front of
# two build/mxlb-sink backends, everything on 127.0.0.1. Builds nothing.
# Prints a table; writes build/bench/results.json, and each case's raw
# mxlb-bench JSON, mxlb log and configuration under build/bench/.
#
# A case is one line at the bottom (see "The cases"): load_case for
# traffic, hold_case for idle memory. mxlb is started afresh for each case,
# so CPU time and memory are its own. Every process started here is
# stopped by its PID on exit.
#
# Environment: HANDOFF (default xclient), BENCH_THREADS (mxlb-bench
# --threads, default 1), CASES (e.g. "a d h": only those), MXLB_BUILD
# (where mxlb, mxlb-sink and mxlb-bench are; default build/).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=${MXLB_BUILD:-$top/build}
dir="$build/bench"
MXLB="$build/mxlb"
SINK="$build/mxlb-sink"
BENCH="$build/mxlb-bench"
HANDOFF=${HANDOFF:-xclient}
BENCH_THREADS=${BENCH_THREADS:-1}
CASES=${CASES:-}
HZ=$(getconf CLK_TCK)

for b in "$MXLB" "$SINK" "$BENCH"; do
	if [ ! -x "$b" ]; then
		echo "bench.sh: $b is missing: run make first" >&2
		exit 2
	fi
done
mkdir -p "$dir"
# shared helpers: pids and cleanup, free_port, wait_line, cpu_ticks, rss_kb,
# cert_make, sink_start, sink_messages
. "$top/bench/lib.sh"
# old start lines would be read as the new ones
rm -f "$dir"/case-* "$dir"/cases.jsonl "$dir"/results.json "$dir"/mxlb.log "$dir"/mxlb-*.yaml \
	"$dir"/sink*.log "$dir"/sink*.out "$dir"/sink*.stats
: >"$dir/cases.jsonl"

trap lib_cleanup EXIT
trap 'exit 130' INT TERM

# ---- the backends, shared by every case

sink_ports=()
for i in 1 2; do
	sink_start "sink$i" --xclient
	sink_ports+=("$sink_port")
done

# ---- mxlb

# Writes $dir/mxlb-$1.yaml: one listener on port $2 with tls $3.
proxy_config() {
	local f="$dir/mxlb-$1.yaml" tls="$3"
	{
		echo "server:"
		echo "  hostname: mxlb.bench"
		echo "  workers: 1"
		echo "  shutdown_timeout: 2s"
		echo "  log: { level: info, format: text }"
		echo '  admin: { listen: "" }'
		if [ "$tls" != none ]; then
			cert_make "$dir" mxlb.bench
			echo "tls:"
			echo "  bench:"
			echo "    certificates: [ { cert: \"$dir/tls.crt\", key: \"$dir/tls.key\" } ]"
		fi
		echo "listeners:"
		echo "  - name: bench"
		echo "    listen: [\"127.0.0.1:$2\"]"
		echo "    pool: sinks"
		if [ "$tls" != none ]; then
			echo "    tls: $tls"
			echo "    tls_context: bench"
		fi
		echo "pools:"
		echo "  - name: sinks"
		echo "    handoff: $HANDOFF"
		echo "    health: { check: none }"
		echo "    backends:"
		echo "      - { name: sink1, address: \"127.0.0.1:${sink_ports[0]}\" }"
		echo "      - { name: sink2, address: \"127.0.0.1:${sink_ports[1]}\" }"
	} >"$f"
	echo "$f"
}

proxy_pid=
proxy_port=
skip_reason=

# Starts mxlb for case $1 with listener tls $2. Returns 1 with
# skip_reason set when mxlb refuses the configuration as not built yet.
proxy_start() {
	local cfg check
	proxy_port=$(free_port)
	cfg=$(proxy_config "$1" "$proxy_port" "$2")
	if ! check=$("$MXLB" -c "$cfg" --check 2>&1); then
		if echo "$check" | grep -q "not supported yet"; then
			skip_reason="mxlb --check: $(echo "$check" | grep 'not supported yet' | head -1 |
				sed 's/^.*:[0-9]*:[0-9]*: //')"
			return 1
		fi
		echo "bench.sh: $cfg: $check" >&2
		exit 1
	fi
	echo "=== case $1" >>"$dir/mxlb.log"
	"$MXLB" -c "$cfg" 2>>"$dir/mxlb.log" &
	proxy_pid=$!
	pids+=("$proxy_pid")
	local i
	for ((i = 0; i < 100; i++)); do
		if "$BENCH" --target "127.0.0.1:$proxy_port" --tls "$2" --sessions 1 --messages 0 \
			--timeout 2s --quiet >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench.sh: mxlb did not answer on 127.0.0.1:$proxy_port; see $dir/mxlb.log" >&2
	exit 1
}

proxy_stop() {
	stop_pid "$proxy_pid"
	proxy_pid=
}

wanted() {
	[ -z "$CASES" ] || [[ " $CASES " == *" $1 "* ]]
}

skip_case() { # ID TITLE REASON
	printf '{"case":"%s","title":"%s","skipped":"%s"}\n' "$1" "$2" "$3" >>"$dir/cases.jsonl"
	echo "case $1: $2: skipped: $3"
}

# load_case ID LISTENER_TLS TITLE mxlb-bench-options...
load_case() {
	local id=$1 tls=$2 title=$3
	shift 3
	wanted "$id" || return 0
	if ! proxy_start "$id" "$tls"; then
		skip_case "$id" "$title" "$skip_reason"
		return 0
	fi
	echo "case $id: $title"
	local out="$dir/case-$id.json" cpu0 cpu1 sink0 sink1 rc
	cpu0=$(cpu_ticks "$proxy_pid")
	sink0=$(sink_messages sink1 sink2)
	"$BENCH" --target "127.0.0.1:$proxy_port" --tls "$tls" --threads "$BENCH_THREADS" \
		--json --quiet "$@" >"$out" 2>"$dir/case-$id.err"
	rc=$?
	cpu1=$(cpu_ticks "$proxy_pid")
	sleep 0.3 # the sinks' stats files are rewritten every 200 ms
	sink1=$(sink_messages sink1 sink2)
	proxy_stop
	if [ ! -s "$out" ]; then
		echo "bench.sh: case $id: mxlb-bench failed (status $rc): $(head -3 "$dir/case-$id.err")" >&2
		skip_case "$id" "$title" "mxlb-bench failed with status $rc"
		return 0
	fi
	printf '{"case":"%s","title":"%s","options":"%s","exit":%d,"proxy_cpu_ticks":%d,"hz":%d,"sink_messages":%d,"bench":%s}\n' \
		"$id" "$title" "$*" "$rc" "$((cpu1 - cpu0))" "$HZ" "$((sink1 - sink0))" "$(cat "$out")" \
		>>"$dir/cases.jsonl"
}

# hold_case ID LISTENER_TLS TITLE SESSIONS [mxlb-bench-options...]
hold_case() {
	local id=$1 tls=$2 title=$3 n=$4
	shift 4
	wanted "$id" || return 0
	if ! proxy_start "$id" "$tls"; then
		skip_case "$id" "$title" "$skip_reason"
		return 0
	fi
	echo "case $id: $title"
	local out="$dir/case-$id.json" rss0 rss1 cpu0 cpu1 bp rc
	# a warm-up of short sessions, few at once: fixed costs (the ring's
	# buffers, allocator arenas) are then not counted per session
	"$BENCH" --target "127.0.0.1:$proxy_port" --tls "$tls" --sessions 2000 --concurrency 20 \
		--messages 1 --size 1k --duration 10s --quiet >/dev/null 2>&1
	sleep 0.5
	rss0=$(rss_kb "$proxy_pid")
	cpu0=$(cpu_ticks "$proxy_pid")
	"$BENCH" --target "127.0.0.1:$proxy_port" --tls "$tls" --threads "$BENCH_THREADS" --hold \
		--concurrency "$n" --hold-time 60s --json --quiet "$@" >"$out" 2>"$dir/case-$id.err" &
	bp=$!
	pids+=("$bp")
	if ! wait_line "$out" 60 "^held"; then
		echo "bench.sh: case $id: the sessions were not all set up within 60 s" >&2
	fi
	sleep 1 # let the last relays settle
	rss1=$(rss_kb "$proxy_pid")
	cpu1=$(cpu_ticks "$proxy_pid")
	kill -INT "$bp" 2>/dev/null
	wait "$bp"
	rc=$?
	forget_pid "$bp"
	proxy_stop
	printf '{"case":"%s","title":"%s","options":"%s","exit":%d,"proxy_cpu_ticks":%d,"hz":%d,"rss_before_kb":%d,"rss_after_kb":%d,"bench":%s}\n' \
		"$id" "$title" "--hold --concurrency $n $*" "$rc" "$((cpu1 - cpu0))" "$HZ" "$rss0" "$rss1" \
		"$(sed -n '/^{/p' "$out")" >>"$dir/cases.jsonl"
}

# ---- the cases: one line each. --duration bounds each run in time
# (sessions in progress then finish), the counts bound it in work.

load_case a none "1 KB, 1 message per session" --sessions 60000 --concurrency 50 --messages 1 --size 1k --duration 10s
load_case b none "1 KB, 100 messages per session" --sessions 1500 --concurrency 20 --messages 100 --size 1k --duration 10s
load_case c none "100 KB, 20 messages per session" --sessions 1000 --concurrency 10 --messages 20 --size 100k --duration 10s
load_case d none "1 MB, 10 messages per session" --sessions 300 --concurrency 10 --messages 10 --size 1M --duration 10s
load_case e implicit "implicit TLS, 1 KB, 1 message per session, full handshakes" --sessions 15000 --concurrency 50 --messages 1 --size 1k --duration 10s
load_case f starttls "STARTTLS, 1 KB, 1 message per session, full handshakes" --sessions 15000 --concurrency 50 --messages 1 --size 1k --duration 10s
load_case g implicit "TLS bulk: implicit TLS, 1 MB, 10 messages per session" --sessions 300 --concurrency 10 --messages 10 --size 1M --duration 10s
hold_case h none "idle memory: 5000 sessions held after EHLO" 5000
hold_case h-tls implicit "idle memory: 5000 implicit-TLS sessions held after EHLO" 5000

# ---- the table and results.json

/usr/bin/python3 - "$dir" "$(nproc)" "$(uname -r)" "$HANDOFF" <<'PY'
import json, sys
from pathlib import Path

d, cores, kernel, handoff = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
osname = "unknown"
for line in Path("/etc/os-release").read_text().splitlines():
    if line.startswith("PRETTY_NAME="):
        osname = line.split("=", 1)[1].strip('"')
cases = [json.loads(l) for l in (d / "cases.jsonl").read_text().splitlines() if l.strip()]

def lat(b, key):
    v = b[key]
    if v["p50"] is None:
        return "-"
    f = lambda us: f"{us / 1000:.2f}" if us < 100000 else f"{us / 1000:.0f}"
    return f"{f(v['p50'])}/{f(v['p99'])}"

def errors(b):
    e = b["errors"]
    return ", ".join(f"{k}: {v}" for k, v in e.items()) or "none"

rows = []
for c in cases:
    if "skipped" in c:
        continue
    b = c["bench"]
    cpu_s = c["proxy_cpu_ticks"] / c["hz"]
    c["proxy_cpu_s"] = round(cpu_s, 3)
    if b["mode"] == "hold":
        grow = (c["rss_after_kb"] - c["rss_before_kb"]) * 1024
        held = b["held"]
        c["rss_growth_bytes"] = grow
        c["rss_per_session_bytes"] = round(grow / held) if held else None
        rows.append((c["case"], c["title"], f"held {held}", "", "",
                     lat(b, "setup_us"), "",
                     f"RSS +{grow / 1048576:.1f} MiB, {c['rss_per_session_bytes']} B/session",
                     "", "", errors(b)))
        continue
    msgs, el = b["messages"], b["elapsed_s"]
    c["proxy_cpu_us_per_message"] = round(cpu_s * 1e6 / msgs, 1) if msgs else None
    c["proxy_cpu_core_pct"] = round(100 * cpu_s / el) if el else None
    c["bench_cpu_core_pct"] = round(100 * b["cpu_s"] / el) if el else None
    c["sink_count_matches"] = c["sink_messages"] == msgs
    cpu = f"{c['proxy_cpu_us_per_message']:.0f} us/msg" if msgs else "-"
    rows.append((c["case"], c["title"], f"{b['sessions_per_s']:.0f}", f"{b['messages_per_s']:.0f}",
                 f"{b['mb_per_s']:.1f}", lat(b, "setup_us"), lat(b, "message_us"), cpu,
                 f"{c['proxy_cpu_core_pct']}%", f"{c['bench_cpu_core_pct']}%",
                 errors(b) + ("" if c["sink_count_matches"] else
                              f" (sinks counted {c['sink_messages']})")))

head = ("case", "workload", "sess/s", "msg/s", "MB/s", "setup ms p50/p99", "msg ms p50/p99",
        "mxlb CPU", "mxlb", "bench", "errors")
widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
print()
print(f"mxlb (1 worker, handoff {handoff}) in front of two mxlb-sink; mxlb-bench on the same "
      f"machine: {cores} cores, {osname}, kernel {kernel}")
print("(latencies in ms as p50/p99; mxlb CPU per accepted message, and mxlb's and mxlb-bench's "
      "CPU time as a share of one core)")
print(line(head))
print(line(["-" * w for w in widths]))
for r in rows:
    print(line(r))
for c in cases:
    if "skipped" in c:
        print(f"case {c['case']} ({c['title']}): skipped: {c['skipped']}")
failed = [c["case"] for c in cases if "skipped" not in c and c["exit"] != 0]
if failed:
    print(f"cases with refused or failed messages: {', '.join(failed)}")
results = {"machine": {"cores": cores, "os": osname, "kernel": kernel},
           "proxy": {"workers": 1, "handoff": handoff}, "cases": cases}
(d / "results.json").write_text(json.dumps(results, indent=2) + "\n")
print(f"results: {d / 'results.json'}")
sys.exit(1 if failed else 0)
PY
