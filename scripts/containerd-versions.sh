#!/bin/bash
# Unpacks containerd from newer Debian suites into a private cache, once per machine, so the
# integration tests can run against containerd 1.7 (trixie) and 2.x (sid) beside the system's
# 1.6 (bookworm). Nothing is installed system-wide: the packages are fetched with a private
# sources list and lists directory, then `dpkg -x`ed. Their `containerd` and `ctr` need only
# libc6 >= 2.34, which bookworm has.
#
#   scripts/containerd-versions.sh [SUITE...]       default: trixie sid
#
# Prints one line per suite: `SUITE VERSION BIN_DIR` (BIN_DIR holds containerd, ctr and, when the
# package ships it, containerd-shim-runc-v2). A suite already unpacked and working is skipped.
#
# TETHER_CONTAINERD_CACHE overrides the cache (default /var/cache/tether/containerd).
# The archive URL is the one the system's own apt configuration uses for Debian's main archive:
# no host name is written here.
set -euo pipefail

CACHE=${TETHER_CONTAINERD_CACHE:-/var/cache/tether/containerd}
PACKAGE=containerd

die() {
	echo "containerd-versions: $*" >&2
	exit 1
}

# archive_url, private_apt
. "$(dirname "${BASH_SOURCE[0]}")/apt-private.sh"

# Whether SUITE's unpacked containerd runs; prints its version.
working() {
	local bin=$CACHE/$1/root/usr/bin
	[ -x "$bin/containerd" ] && [ -x "$bin/ctr" ] || return 1
	"$bin/containerd" --version 2>/dev/null | awk '{ print $3; ok = 1 } END { exit !ok }'
}

fetch_suite() {
	local suite=$1 url=$2 dir=$CACHE/$1 work
	mkdir -p "$CACHE"
	work=$(mktemp -d "$CACHE/.$suite.XXXXXX")
	WORK=$work
	mkdir -p "$work/deb"
	private_apt "$work" "deb $url $suite main"
	apt-get "${APT_OPTS[@]}" -qq update >&2 || die "apt-get update of $suite from $url failed"
	local version
	version=$(apt-cache "${APT_OPTS[@]}" show "$PACKAGE" 2>/dev/null |
		awk '/^Version:/ { print $2 }' | sort -V | tail -n1)
	[ -n "$version" ] || die "$suite has no $PACKAGE package"
	(cd "$work/deb" && apt-get "${APT_OPTS[@]}" -qq download "$PACKAGE=$version" >&2) ||
		die "apt-get download $PACKAGE=$version ($suite) failed"
	local deb
	deb=$(ls "$work"/deb/*.deb)
	mkdir -p "$work/root"
	dpkg -x "$deb" "$work/root"
	cp "$deb" "$work/root/"
	# Replace atomically: a half-unpacked suite is never seen as present.
	rm -rf "$dir.old"
	[ -e "$dir" ] && mv "$dir" "$dir.old"
	mkdir -p "$dir"
	mv "$work/root" "$dir/root"
	rm -rf "$dir.old" "$work"
	WORK=""
}

WORK=""
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

main() {
	local suites=("$@")
	[ ${#suites[@]} -gt 0 ] || suites=(trixie sid)
	local url="" suite version
	for suite in "${suites[@]}"; do
		if ! version=$(working "$suite"); then
			[ -n "$url" ] || url=$(archive_url)
			echo "containerd-versions: unpacking $PACKAGE from $suite into $CACHE/$suite" >&2
			fetch_suite "$suite" "$url"
			version=$(working "$suite") || die "$suite's containerd does not run here: $("$CACHE/$suite/root/usr/bin/containerd" --version 2>&1 | head -n3)"
		fi
		echo "$suite $version $CACHE/$suite/root/usr/bin"
	done
}

main "$@"
