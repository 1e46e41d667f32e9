#!/bin/bash
# Prints the path of a CRIU that works on this machine, building one once per machine if needed.
#
#   scripts/criu.sh            prints e.g. /usr/sbin/criu or /var/cache/tether/criu/4.2.1/criu
#
# 1. The system's `criu`, when `criu check` passes.
# 2. Else a CRIU already built into the cache that passes `criu check` (newest version first).
# 3. Else CRIU 4.x built from the upstream tarball of Debian's source package (suite
#    $TETHER_CRIU_SUITE, default sid; Debian 12's 3.17 fails `criu check` on newer kernels with
#    "vdso: Unexpected rt vDSO area bounds"). The Sources index is fetched with a private sources
#    list and lists directory (the system's apt state is untouched), the .orig.tar.xz is
#    downloaded through apt and its sha256 checked against the index; only Debian's build
#    dependencies that are missing are installed (from the system's own suite); only the `criu`
#    binary is built (`make criu`, locking the network with nftables) and installed as
#    CACHE/VERSION/criu. That directory holds nothing else, so it can be put first on a daemon's
#    PATH.
#
# TETHER_CRIU_CACHE overrides the cache (default /var/cache/tether/criu).
# The archive URL is the one the system's own apt configuration uses for Debian's main archive:
# no host name is written here.
set -euo pipefail

CACHE=${TETHER_CRIU_CACHE:-/var/cache/tether/criu}
SUITE=${TETHER_CRIU_SUITE:-sid}
PACKAGE=criu
# CRIU's build dependencies for `make criu` (Debian 12 names); Debian's own patches and the
# rest of its Build-Depends (docs, tests, python bindings) are not needed for the binary.
BUILD_DEPS=(gcc make pkg-config xz-utils libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev
	protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev
	libgnutls28-dev libnftables-dev uuid-dev)

die() {
	echo "criu.sh: $*" >&2
	exit 1
}

# archive_url, private_apt
. "$(dirname "${BASH_SOURCE[0]}")/apt-private.sh"

# Whether the criu at $1 passes `criu check` on this kernel.
works() {
	[ -x "$1" ] && "$1" check >/dev/null 2>&1
}

# Installs whichever build dependencies are missing, from the system's configured suites
# (waiting for the dpkg lock).
install_build_deps() {
	bash "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" "${BUILD_DEPS[@]}" ||
		die "installing build dependencies failed"
}

build() {
	local url=$1 work
	mkdir -p "$CACHE"
	work=$(mktemp -d "$CACHE/.build.XXXXXX")
	WORK=$work
	mkdir -p "$work/src"
	private_apt "$work" "deb-src $url $SUITE main"
	apt-get "${APT_OPTS[@]}" -qq update >&2 || die "apt-get update of $SUITE sources from $url failed"
	# The newest source record: its version, directory and the orig tarball's sha256 and name.
	local record version dir sha name
	record=$(apt-cache "${APT_OPTS[@]}" showsrc "$PACKAGE" 2>/dev/null | awk '
		/^Package:/ { n++ }
		n == 0 { next }
		/^Version:/ { v[n] = $2 }
		/^Directory:/ { d[n] = $2 }
		/^[A-Za-z0-9-]+:/ { in_sha = ($1 == "Checksums-Sha256:") }
		in_sha && length($1) == 64 && $1 ~ /^[0-9a-f]+$/ && $3 ~ /\.orig\.tar\.(xz|gz|bz2)$/ { s[n] = $1; f[n] = $3 }
		END { for (i = 1; i <= n; i++) if (s[i] != "") print v[i], d[i], s[i], f[i] }
	' | sort -V -k1,1 | tail -n1)
	[ -n "$record" ] || die "$SUITE's Sources index has no $PACKAGE source with an orig tarball"
	read -r version dir sha name <<<"$record"
	local upstream=${version#*:}
	upstream=${upstream%-*}
	[ "${upstream%%.*}" -ge 4 ] 2>/dev/null || die "$SUITE has $PACKAGE $version; CRIU 4.x is needed"

	echo "criu.sh: building CRIU $upstream from $SUITE's $PACKAGE $version into $CACHE/$upstream" >&2
	# apt's own downloader, told the hash from the index: it refuses a tarball that differs.
	/usr/lib/apt/apt-helper "${APT_OPTS[@]}" download-file "$url/$dir/$name" "$work/$name" "SHA256:$sha" >&2 ||
		die "downloading $url/$dir/$name failed"
	# Checked again here so the guarantee does not rest on apt-helper's behaviour alone.
	echo "$sha  $work/$name" | sha256sum -c --quiet - >&2 ||
		die "$name does not match the sha256 in $SUITE's Sources index ($sha)"
	tar -xf "$work/$name" -C "$work/src" --strip-components=1

	install_build_deps
	local start=$SECONDS
	# The network lock (held while a container with its own network namespace is dumped) defaults
	# to running `iptables-restore`, which Debian's criu does not depend on and this system need
	# not have; nftables is linked in through libnftables and needs no other program.
	make -C "$work/src" -j"$(nproc)" NETWORK_LOCK_DEFAULT=NETWORK_LOCK_NFTABLES criu >"$work/build.log" 2>&1 ||
		die "make criu failed (CRIU $upstream); the last lines of the log:
$(tail -n 20 "$work/build.log")"
	echo "criu.sh: built CRIU $upstream in $((SECONDS - start)) s" >&2
	works "$work/src/criu/criu" ||
		die "the CRIU $upstream just built fails \`criu check\`: $("$work/src/criu/criu" check 2>&1 | tail -n 3)"

	# Replace atomically: a half-installed version is never seen as present.
	local dest=$CACHE/$upstream
	mkdir -p "$work/install"
	install -m 0755 "$work/src/criu/criu" "$work/install/criu"
	rm -rf "$dest.old"
	[ -e "$dest" ] && mv "$dest" "$dest.old"
	mv "$work/install" "$dest"
	rm -rf "$dest.old" "$work"
	WORK=""
	BUILT=$dest/criu
}

WORK=""
BUILT=""
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

main() {
	[ $# -eq 0 ] || die "takes no arguments (see the header of $0)"
	local system cached
	if system=$(command -v criu) && works "$system"; then
		echo "$system"
		return
	fi
	# Newest cached build first; one that stopped working (a new kernel) is rebuilt.
	for cached in $(ls -d "$CACHE"/[0-9]*/ 2>/dev/null | grep -v '\.old/$' | sort -V -r); do
		if works "${cached}criu"; then
			echo "${cached}criu"
			return
		fi
	done
	build "$(archive_url)"
	echo "$BUILT"
}

main "$@"
