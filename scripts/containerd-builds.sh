#!/bin/bash
# Unpacks containerd builds that Debian does not package (one `containerd-vX-linux-amd64.tar.xz`
# per version, each holding containerd, ctr, containerd-shim-runc-v2 and their SHA256SUMS) into a
# private cache, once per machine, and prints the directories, one per line: what
# `make test CONTAINERD_BUILDS=...` takes.
#
#   scripts/containerd-builds.sh DIR      DIR holds the tarballs (e.g. ../shared/containerd)
#
# A DIR that does not exist or holds no tarball prints nothing and succeeds: the caller then
# runs without extra builds, and `make test` says which versions it did not run. A tarball
# whose sums do not match is an error. TETHER_CONTAINERD_CACHE overrides the cache (default
# /var/cache/tether/containerd); the builds go under its `builds/`.
set -euo pipefail

SRC=${1:?usage: containerd-builds.sh DIR}
CACHE=${TETHER_CONTAINERD_CACHE:-/var/cache/tether/containerd}/builds

die() {
	echo "containerd-builds: $*" >&2
	exit 1
}

[ -d "$SRC" ] || exit 0
shopt -s nullglob
for tarball in "$SRC"/containerd-v*-linux-amd64.tar.xz; do
	name=$(basename "$tarball" -linux-amd64.tar.xz)
	dir=$CACHE/$name
	# The sums name the files as `containerd-vX/FILE`: checked from the directory above.
	if ! [ -f "$dir/SHA256SUMS" ] || ! (cd "$CACHE" && sha256sum --quiet -c "$name/SHA256SUMS" >/dev/null 2>&1); then
		mkdir -p "$CACHE"
		work=$(mktemp -d "$CACHE/.$name.XXXXXX")
		tar -xJf "$tarball" -C "$work" || { rm -rf "$work"; die "cannot unpack $tarball"; }
		unpacked=$work/$name
		[ -d "$unpacked" ] || { rm -rf "$work"; die "$tarball holds no $name/"; }
		(cd "$work" && sha256sum --quiet -c "$name/SHA256SUMS" >&2) ||
			{ rm -rf "$work"; die "$tarball: checksums do not match"; }
		rm -rf "$dir"
		mv "$unpacked" "$dir"
		rm -rf "$work"
	fi
	"$dir/containerd" --version >/dev/null 2>&1 || die "$dir/containerd does not run here"
	echo "$dir"
done
