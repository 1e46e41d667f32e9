#!/bin/bash
# Installs whichever of the packages named are missing, from the system's configured suites:
#
#   scripts/install-deps.sh PACKAGE...
#
# apt-get update once, and only when a package is missing. Every apt-get here waits for the
# dpkg lock (up to TETHER_APT_LOCK_WAIT seconds, default 600) instead of failing at once when
# another apt run (unattended-upgrades, a provisioning script) holds it.
set -euo pipefail

WAIT=${TETHER_APT_LOCK_WAIT:-600}
missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() {
	apt-get -o "DPkg::Lock::Timeout=$WAIT" "$@"
}
apt_get update -qq >&2 || { echo "install-deps.sh: apt-get update failed" >&2; exit 1; }
apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
	{ echo "install-deps.sh: installing ${missing[*]} failed" >&2; exit 1; }
