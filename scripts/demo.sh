#!/usr/bin/env bash
# `make run`: a busybox container through the tether manager.
#
# Builds a busybox rootfs from Debian's busybox-static into a private directory, starts
# `target/release/tether daemon` with a private state root and socket unless one already serves
# $TETHER_SOCKET, runs the container, prints its output, and stops what it started (by pid).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tether="$here/target/release/tether"
[ -x "$tether" ] || { echo "demo: $tether missing: run 'make' first" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "demo: /bin/busybox missing: install busybox-static ('make deps')" >&2; exit 1; }

work="$(mktemp -d /tmp/tether-demo.XXXXXX)"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The rootfs: busybox and one link per applet.
rootfs="$work/rootfs"
bash "$here/scripts/busybox-rootfs.sh" "$rootfs"

# A daemon: the one at $TETHER_SOCKET if it answers, else a private one.
if [ -n "${TETHER_SOCKET:-}" ] && "$tether" ps >/dev/null 2>&1; then
    echo "demo: using the tether daemon at $TETHER_SOCKET"
else
    export TETHER_SOCKET="$work/run/tether.sock"
    "$tether" daemon --root "$work/root" --state "$work/state" >"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 200); do
        [ -S "$TETHER_SOCKET" ] && break
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "demo: started a private tether daemon (pid $daemon_pid) at $TETHER_SOCKET"
fi

id="demo-$$"
echo "demo: tether run --rm --rootfs $rootfs $id -- /bin/sh -c 'echo hello from busybox in tether; uname -a'"
"$tether" run --rm --rootfs "$rootfs" "$id" -- /bin/sh -c 'echo hello from busybox in tether; uname -a'
