#!/usr/bin/env bash
# Prints .promu.yml's build.ldflags with promu's templates filled in as
# promu fills them, so that `make build` stamps the same build info
# (--version, ipsec_exporter_build_info, the landing page) as `promu build`
# and the release: .promu.yml is the one place for the flags, VERSION the
# source of the version. A template this script does not know is an error,
# so a flag added to .promu.yml cannot silently go missing here.
set -euo pipefail
cd "$(dirname "$0")/.."

# The block scalar under build: ldflags: |, one flag per line.
flags="$(awk '
	/^[^ #]/ { in_build = ($0 ~ /^build:/); in_flags = 0; next }
	in_build && /^    ldflags: *\|/ { in_flags = 1; next }
	in_flags && /^        / { print; next }
	in_flags { in_flags = 0 }
' .promu.yml)"
if [ -z "$flags" ]; then
	echo "ldflags: no build.ldflags in .promu.yml" >&2
	exit 1
fi

version="$(tr -d '[:space:]' <VERSION)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
branch="$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
# promu's date is UTC, from SOURCE_DATE_EPOCH when that is set.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d-%H:%M:%S)"
else
	date="$(date -u +%Y%m%d-%H:%M:%S)"
fi

flags="${flags//"{{.Version}}"/$version}"
flags="${flags//"{{.Revision}}"/$revision}"
flags="${flags//"{{.Branch}}"/$branch}"
flags="${flags//"{{user}}"/$(id -un)}"
flags="${flags//"{{host}}"/$(cat /proc/sys/kernel/hostname)}"
flags="${flags//"{{date \"20060102-15:04:05\"}}"/$date}"
if [[ "$flags" == *"{{"* ]]; then
	echo "ldflags: a template in .promu.yml's ldflags this script does not fill: $flags" >&2
	exit 1
fi
# One line: the flags, whitespace-separated (no globbing: set -f).
set -f
echo $flags
