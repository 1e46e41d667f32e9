#!/bin/bash
# The node lane: each scenario of scripts/node/guest.sh on stock Debian nodes booted under qemu
# (software emulation: KVM guests do not boot on these machines), with containerd's runc shim
# and with ours side by side. A failure names the guest and the scenario.
#
#   scripts/node/lane.sh [SUITE...]      default: bookworm trixie sid
#
# Each guest starts from its clean cached image (scripts/node/image.sh; `snapshot=on`), gets
# the work tree's Makefile, deploy/ and release binaries over 9p, runs the scenarios from a
# oneshot unit and powers off. A guest still running after $TETHER_NODE_DEADLINE seconds
# (default 1500) is killed and its serial log printed. Needs `make build` first.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
DEADLINE=${TETHER_NODE_DEADLINE:-1500}
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bookworm trixie sid)

for b in containerd-shim-tether-v2 tether node-cri; do
	[ -x "$TOP/target/release/$b" ] || { echo "node lane: $TOP/target/release/$b missing: run 'make build'" >&2; exit 1; }
done

# The integration tests that need cgroup v2 controllers (ignored on hybrid hosts) run in every
# guest, from the test binary `cargo test` built for this tree.
V2_TESTS=shim_metrics_oom
v2_binary=$(cd "$TOP" && cargo test -p tether-tests --test "$V2_TESTS" --no-run 2>&1 |
	sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n1)
[ -n "$v2_binary" ] && [ -x "$TOP/$v2_binary" ] || { echo "node lane: cannot build the $V2_TESTS test binary" >&2; exit 1; }

failed=()
for suite in "${SUITES[@]}"; do
	start=$SECONDS
	img=$(bash "$HERE/image.sh" "$suite") || { failed+=("$suite: image"); continue; }
	built=$((SECONDS - start))
	lane=$(mktemp -d /tmp/tether-lane-"$suite".XXXXXX)
	mkdir -p "$lane/tree/target/release" "$lane/tree/images" "$lane/out"
	cp -r "$TOP/Makefile" "$TOP/deploy" "$lane/tree/"
	mkdir -p "$lane/tree/scripts"
	cp "$TOP/scripts/busybox-rootfs.sh" "$lane/tree/scripts/"
	cp "$TOP/target/release/containerd-shim-tether-v2" "$TOP/target/release/tether" \
		"$TOP/target/release/node-cri" "$lane/tree/target/release/"
	"$TOP/target/release/node-cri" images "$lane/tree/images" >"$lane/tree/images/refs.tmp" &&
		mv "$lane/tree/images/refs.tmp" "$lane/tree/images/refs"
	cp "$HERE/guest.sh" "$lane/tree/guest.sh"
	mkdir -p "$lane/tree/tests"
	cp "$TOP/$v2_binary" "$lane/tree/tests/$V2_TESTS"
	printf '#!/bin/sh\nexec bash /lane/tree/guest.sh\n' >"$lane/run-in-guest.sh"
	echo "$suite" >"$lane/suite"
	echo "=== node lane: Debian $suite (image $img, ready in ${built}s)"
	code=0
	timeout -s KILL "$DEADLINE" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu max -smp 2 -m 4096 \
		-display none -monitor none -serial "file:$lane/serial.log" -no-reboot -nic none \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 quiet" \
		-drive "file=$img/disk.img,format=raw,if=virtio,snapshot=on" \
		-virtfs "local,path=$lane,mount_tag=lane,security_model=none" || code=$?
	echo "    guest ran $((SECONDS - start - built))s"
	if [ ! -f "$lane/out/done" ]; then
		if [ $code = 137 ]; then why="killed after ${DEADLINE}s"; else why="qemu exited $code"; fi
		echo "node lane: Debian $suite: the guest did not finish ($why); its serial log ends:"
		tail -n 60 "$lane/serial.log" | sed 's/^/    /'
		failed+=("$suite: did not finish ($why)")
	fi
	# Side by side: scenario, runc's shim, ours.
	if [ -f "$lane/out/results" ]; then
		awk -v suite="$suite" '
			$1 == "RESULT" { key = $2; if (!(key in seen)) { order[n++] = key; seen[key] = 1 } r[key, $3] = $4 }
			END {
				printf "    %-16s %-6s %-6s\n", "scenario", "runc", "tether"
				for (i = 0; i < n; i++) {
					k = order[i]
					a = ((k, "runc") in r) ? r[k, "runc"] : (((k, "all") in r) ? r[k, "all"] : "-")
					b = ((k, "tether") in r) ? r[k, "tether"] : (((k, "all") in r) ? r[k, "all"] : "-")
					printf "    %-16s %-6s %-6s\n", k, a, b
				}
			}' "$lane/out/results"
		while read -r _ scenario shim verdict; do
			[ "$verdict" = PASS ] && continue
			failed+=("$suite: $scenario ($shim)")
			echo "--- Debian $suite, $scenario with $shim: log"
			sed 's/^/    /' "$lane/out/logs/$scenario-$shim.log" 2>/dev/null | tail -n 40 || true
		done <"$lane/out/results"
	elif [ -f "$lane/out/done" ]; then
		failed+=("$suite: no results")
	fi
	if [ ${#failed[@]} -eq 0 ] || [[ "${failed[-1]}" != "$suite:"* ]]; then
		rm -rf "$lane"
	else
		echo "    the guest's files are kept in $lane"
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "node lane FAILED:"
	printf '    %s\n' "${failed[@]}"
	exit 1
fi
echo "node lane: every scenario passed on ${SUITES[*]}"
