#!/bin/sh
# `make certs`: self-signed certificates where the example configurations
# name them, so that an example passes `mxlb --check` and runs as it is.
# Usage: config/make-certs.sh DIR EXAMPLE.yaml...
#
# Every { cert: DIR/NAME-TYPE.crt, key: DIR/NAME-TYPE.key } pair of the
# examples gets a certificate for NAME (subject and subjectAltName), an
# ECDSA P-256 key for TYPE "ecdsa", RSA 2048 otherwise. A pair of which
# either file exists is left alone: a real key is never overwritten.
# Paths outside DIR are not ours to make.
set -eu
[ $# -ge 1 ] || {
	echo "usage: $0 DIR EXAMPLE.yaml..." >&2
	exit 2
}
dir=${1%/}
shift
command -v openssl >/dev/null || {
	echo "make-certs: openssl is needed (apt-get install openssl)" >&2
	exit 1
}
# one "CERT KEY" line per pair, in flow style as the examples write them
pairs=$(sed -n 's/.*cert: *\([^ ,}]*\) *, *key: *\([^ ,}]*\).*/\1 \2/p' "$@" | sort -u)
umask 077
echo "$pairs" | while read -r crt key; do
	[ -n "$crt" ] || continue
	case "$crt" in "$dir"/*) ;; *) continue ;; esac
	case "$key" in "$dir"/*) ;; *) continue ;; esac
	if [ -e "$crt" ] || [ -e "$key" ]; then
		echo "make-certs: $crt or $key exists, left as it is"
		continue
	fi
	base=$(basename "$crt" .crt)
	name=${base%-*}
	case "$base" in
	*-ecdsa) alg="-newkey ec -pkeyopt ec_paramgen_curve:P-256" ;;
	*) alg="-newkey rsa:2048" ;;
	esac
	(umask 022 && mkdir -p "$(dirname "$crt")" "$(dirname "$key")")
	# shellcheck disable=SC2086 # $alg is several words
	openssl req -x509 $alg -nodes -days 825 -subj "/CN=$name" \
		-addext "subjectAltName=DNS:$name" -keyout "$key" -out "$crt" 2>/dev/null
	chmod 0644 "$crt"
	echo "make-certs: $crt (self-signed for $name; replace it with a real one)"
done
