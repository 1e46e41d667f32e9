#!/bin/bash
# Runs the containerd suites on each containerd build given (directories holding containerd, ctr
# and containerd-shim-runc-v2; `scripts/containerd-builds.sh` unpacks release tarballs into
# such), times each, and says in one line which of the expected versions it did not run.
#
#   scripts/test-containerd-builds.sh [DIR...]
#
# Environment: CARGO (cargo), BUILD_TESTS (the cargo test selection, unquoted globs:
# `--test harness --test shim_* --test cri`), CONTAINERD_BUILD_VERSIONS (the lines expected:
# `2.2 2.3`), TEST_THREADS (4). A directory that lacks a binary, or a suite that fails, fails
# the run, naming the version; every suite of every version still runs first.
set -euo pipefail

CARGO=${CARGO:-cargo}
BUILD_TESTS=${BUILD_TESTS:---test harness --test shim_* --test cri}
EXPECTED=${CONTAINERD_BUILD_VERSIONS:-2.2 2.3}
THREADS=${TEST_THREADS:-4}
cd "$(dirname "$0")/.."

set -f # the test selection holds globs for cargo, not for the shell
read -ra tests <<<"$BUILD_TESTS"
set +f

ran=() failed=() times=()
for dir in "$@"; do
	for b in containerd ctr containerd-shim-runc-v2; do
		if ! [ -x "$dir/$b" ]; then
			echo "=== containerd build $dir: no $b there" >&2
			failed+=("$dir")
			continue 2
		fi
	done
	version=$("$dir/containerd" --version | awk '{ print $3 }')
	echo "=== containerd $version ($dir): ${tests[*]}"
	start=$SECONDS
	if TETHER_CRIU=$(bash scripts/criu.sh) TETHER_CONTAINERD=$dir/containerd \
		"$CARGO" test --no-fail-fast -p tether-tests "${tests[@]}" -- --test-threads="$THREADS"; then
		ran+=("${version#v}")
	else
		failed+=("$version")
	fi
	times+=("containerd $version: $((SECONDS - start)) s")
done

for t in "${times[@]}"; do echo "=== $t"; done
missing=()
for want in $EXPECTED; do
	found=
	for v in "${ran[@]}" "${failed[@]}"; do
		case "${v#v}." in "$want".*) found=1 ;; esac
	done
	[ -n "$found" ] || missing+=("$want")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "=== NOT RUN: containerd ${missing[*]} (no build given: CONTAINERD_BUILDS; README, \"Other containerd versions\")"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "=== FAILED on containerd ${failed[*]}" >&2
	exit 1
fi
