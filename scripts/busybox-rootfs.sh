#!/bin/bash
# Writes a busybox root filesystem into DIR: Debian's static busybox (/bin/busybox, package
# busybox-static), one link per applet in bin/, the usual mount points and a passwd with root.
# Used by the demo and by the node lane's guests.
#
#   scripts/busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: busybox-rootfs.sh DIR}
[ -x /bin/busybox ] || { echo "busybox-rootfs: /bin/busybox missing: install busybox-static" >&2; exit 1; }
mkdir -p "$dir"/{bin,proc,sys,dev,tmp,etc,root}
cp /bin/busybox "$dir/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
