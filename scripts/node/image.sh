#!/bin/bash
# Builds (once per machine) the disk image of a stock Debian node for the node lane: Debian's own
# containerd and runc from SUITE, systemd as init, cgroup v2 only (systemd's default), and for
# suites that package it Docker Engine. Nothing of the project is inside: the lane shares the
# work tree into the guest at boot and installs from it as a user would.
#
#   scripts/node/image.sh SUITE        prints the image's directory: disk.img, vmlinuz, initrd.img
#
# Cache: $TETHER_VM_CACHE (default /var/cache/tether/vm)/SUITE-REV/. An image is rebuilt only when
# its recipe (this file) changes. The archive is the one this system's apt configuration uses.
set -euo pipefail

SUITE=${1:?usage: image.sh SUITE}
CACHE=${TETHER_VM_CACHE:-/var/cache/tether/vm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
	echo "node image ($SUITE): $*" >&2
	exit 1
}
# archive_url
. "$HERE/../apt-private.sh"

# The recipe's revision: a change to this script builds new images beside the old ones.
REV=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
DIR=$CACHE/$SUITE-$REV
if [ -f "$DIR/ready" ]; then
	echo "$DIR"
	exit 0
fi

for cmd in mmdebstrap mkfs.ext4 qemu-system-x86_64; do
	command -v "$cmd" >/dev/null || die "$cmd is missing (make deps installs mmdebstrap, e2fsprogs, qemu-system-x86)"
done

PACKAGES=systemd,systemd-sysv,dbus,udev,kmod,linux-image-amd64,containerd,runc,busybox-static,make,procps,iproute2,util-linux
case $SUITE in
bookworm) ;;
# The CLI is its own package from Debian 13 on, only recommended by docker.io.
*) PACKAGES=$PACKAGES,docker.io,docker-cli ;;
esac

url=$(archive_url)
mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.$SUITE.XXXXXX")
# An interrupted mmdebstrap leaves its mounts (proc, sys, dev/pts) in the root: unmount them
# before removing it.
cleanup() {
	findmnt -rno TARGET | grep -F "$work/" | sort -r | while read -r m; do umount -l "$m"; done
	rm -rf "$work"
}
trap cleanup EXIT
root=$work/root
echo "node image ($SUITE): mmdebstrap from $url" >&2
# The archive may be a mirror frozen in time (sid's Release then says it has expired). A failed
# fetch is tried once more: the archive is a network away.
for attempt in 1 2; do
	rm -rf "$root"
	mmdebstrap --quiet --mode=root --variant=minbase --include="$PACKAGES" \
		--aptopt='Acquire::Check-Valid-Until "false"' \
		--customize-hook='echo tether-node >"$1/etc/hostname"' \
		"$SUITE" "$root" "deb $url $SUITE main" >&2 && break
	[ $attempt = 2 ] && die "mmdebstrap failed twice"
	echo "node image ($SUITE): mmdebstrap failed; once more" >&2
	sleep 10
done

# The guest mounts the lane's directory (work tree, results) over 9p and runs its script from
# a oneshot unit, then powers off.
cat >"$root/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,relatime 0 1
lane /lane 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
FSTAB
mkdir -p "$root/lane"
cat >"$root/etc/systemd/system/tether-lane.service" <<'UNIT'
[Unit]
Description=Tether node lane
After=containerd.service network.target lane.mount
Requires=lane.mount
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/bin/sh /lane/run-in-guest.sh
ExecStopPost=/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/tether-lane.service "$root/etc/systemd/system/multi-user.target.wants/tether-lane.service"
# A stock node's containerd, but nothing in the lane needs the network or a getty.
rm -f "$root/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
mkfs.ext4 -q -L root -d "$root" "$work/disk.img" 6G >&2 || die "mkfs.ext4 failed"
rm -rf "$root"
rm -rf "$DIR"
mv "$work" "$DIR"
trap - EXIT
touch "$DIR/ready"
# Images of this suite from older recipes are no longer used.
for old in "$CACHE/$SUITE"-*; do
	[ "$old" = "$DIR" ] || rm -rf "$old"
done
echo "$DIR"
