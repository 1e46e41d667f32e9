# Sourced by criu.sh and containerd-versions.sh: Debian's archive as this system's apt knows it,
# and a private apt (sources, lists, cache) that leaves the system's apt state untouched.
# The caller defines `die MESSAGE`. No host name is written here.

# The URL of Debian's main archive: the source serving this system's own codename's main
# component (`apt-cache policy` lists every source with its suite), else the deb822 sources
# file, else sources.list.
archive_url() {
	local codename url
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
	url=$(apt-cache policy 2>/dev/null |
		awk -v s="$codename/main" '$1 ~ /^[0-9]+$/ && $3 == s { print $2; exit }')
	if [ -z "$url" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
		url=$(awk -v c="$codename" '
			/^URIs:/ { u = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) { print u; exit } }
		' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$url" ] && [ -f /etc/apt/sources.list ]; then
		url=$(awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }' /etc/apt/sources.list)
	fi
	[ -n "$url" ] || die "cannot find Debian's archive for $codename in the apt configuration (run apt-get update?)"
	echo "${url%/}"
}

# private_apt WORK "SOURCES LINE": a private apt under WORK whose only source is the line given;
# sets APT_OPTS, the options every apt-get / apt-cache / apt-helper call then takes.
private_apt() {
	local work=$1
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/empty"
	echo "$2" >"$work/sources.list"
	APT_OPTS=(
		-o "Dir::Etc::SourceList=$work/sources.list"
		-o "Dir::Etc::SourceParts=-"
		-o "Dir::State::Lists=$work/lists"
		-o "Dir::Cache=$work/cache"
		-o "Dir::Etc::Preferences=$work/empty/preferences"
		-o "Dir::Etc::PreferencesParts=$work/empty"
		-o "APT::Get::List-Cleanup=0"
		-o "APT::Sandbox::User=root"
		-o "Debug::NoLocking=1"
	)
}
