#!/bin/sh
# Install the Debian packages that make targets need, only those missing,
# with one apt-get for all the sets named.
# Usage: tests/deps.sh [--check] [build|test|fuzz|bench|compare]...
#   (no set: build). --check installs nothing: it names what is missing
#   and exits 1, so that `make` alone can stop before compiling.
set -e
check=
if [ "${1:-}" = --check ]; then
	check=1
	shift
fi
[ $# -gt 0 ] || set -- build
need="liburing-dev android-libboringssl-dev libyaml-dev libc-ares-dev"
# The peers of `make compare` (bench/compare.sh). In bookworm the package
# "nginx" is the nginx binary itself; its mail proxy is the dynamic module
# in libnginx-mod-mail.
peers="haproxy nginx libnginx-mod-mail stunnel4 gnuplot-nox"
for set in "$@"; do
	case "$set" in
	build) ;;
	test) need="$need libcmocka-dev python3-pytest python3-aiosmtpd dnsmasq swaks libnet-ssleay-perl postfix openssl prometheus curl chromium python3-websocket groff-base binutils systemd util-linux $peers" ;;
	fuzz) need="$need clang libclang-rt-14-dev" ;;
	bench) need="$need postfix" ;;
	compare) need="$need openssl python3 $peers" ;;
	*)
		echo "deps.sh: no package set '$set' (build, test, fuzz, bench, compare)" >&2
		exit 2
		;;
	esac
done
if [ -n "$check" ] && ! command -v dpkg-query >/dev/null 2>&1; then
	exit 0 # not Debian: nothing to check against
fi
missing=""
for p in $need; do
	case " $missing " in *" $p "*) continue ;; esac
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ -n "$check" ]; then
	echo "deps.sh: missing:$missing" >&2
	echo "deps.sh: \`make deps\` installs them (\`make DEPS_CHECK=\` builds without this check)" >&2
	exit 1
fi
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q >/dev/null
# The maintainer scripts of postfix, nginx and haproxy try to start their
# daemons; a policy-rc.d that says 101 ("action forbidden") keeps them
# stopped. It is removed afterwards, also when the install fails.
printf '#!/bin/sh\nexit 101\n' > /tmp/mxlb-policy-rc.d
rm_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	$SUDO cp /tmp/mxlb-policy-rc.d /usr/sbin/policy-rc.d
	$SUDO chmod +x /usr/sbin/policy-rc.d
	rm_policy=1
fi
stamp=/tmp/mxlb-deps-stamp.$$
trap 'rm -f "$stamp"; [ -z "$rm_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
: >"$stamp"
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
# Should a package start its system daemon anyway (it must not, see above),
# that is a bug worth a warning: stop that one daemon, the one this install
# started, by the PID in the package's own pid file written during the
# install, and only when that PID runs the package's binary. Nothing is
# stopped by name.
for spec in /run/nginx.pid:/usr/sbin/nginx /run/haproxy.pid:/usr/sbin/haproxy \
	/run/stunnel4/stunnel.pid:/usr/bin/stunnel4 \
	/var/spool/postfix/pid/master.pid:/usr/lib/postfix/sbin/master; do
	f=${spec%%:*}
	exe=${spec#*:}
	[ -f "$f" ] && [ "$f" -nt "$stamp" ] || continue
	pid=$(tr -dc 0-9 <"$f" | head -c 10)
	[ -n "$pid" ] || continue
	[ "$($SUDO readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] || continue
	echo "deps.sh: the install started $exe (PID $pid, $f) despite policy-rc.d; stopping that PID" >&2
	$SUDO kill "$pid" 2>/dev/null || true
done
exit 0
