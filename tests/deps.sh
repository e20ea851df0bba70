#!/bin/sh
# Install the Debian packages a make target needs, only those missing.
# Usage: tests/deps.sh build|test|fuzz|bench
set -e
need="liburing-dev android-libboringssl-dev libyaml-dev"
case "${1:-build}" in
test) need="$need libcmocka-dev python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl postfix openssl prometheus curl" ;;
fuzz) need="$need clang libclang-rt-14-dev" ;;
bench) need="$need postfix" ;;
esac
missing=""
for p in $need; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q >/dev/null
# postfix's maintainer scripts try to start the daemon; keep it stopped.
printf '#!/bin/sh\nexit 101\n' > /tmp/mxlb-policy-rc.d
[ -e /usr/sbin/policy-rc.d ] || { $SUDO cp /tmp/mxlb-policy-rc.d /usr/sbin/policy-rc.d; $SUDO chmod +x /usr/sbin/policy-rc.d; rm_policy=1; }
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
[ -n "${rm_policy:-}" ] && $SUDO rm -f /usr/sbin/policy-rc.d
exit 0
