#!/usr/bin/env bash
# Builds the release tarballs (`make release`): for every platform in
# .promu.yml's crossbuild.platforms, `promu build` with .promu.yml's version
# ldflags, then a tarball ipsec_exporter-VERSION.OS-ARCH.tar.gz (promu's
# naming and layout: one top directory holding the binary and the files of
# .promu.yml's tarball.files, which keep their paths here), then
# `promu checksum` writes .tarballs/sha256sums.txt.
#
# Reproducible: SOURCE_DATE_EPOCH (default: the commit's time) is the build
# date promu writes into the binary (and its build user becomes
# reproducible@reproducible), and the tarballs' entries have that time, owner
# 0 and fixed modes, in name order, gzip without a time stamp. The same commit
# built with the same Go version gives the same bytes, so the sums can be
# checked by rebuilding.
#   usage: scripts/release.sh PROMU [OUT]    (OUT: default .tarballs)
set -euo pipefail
promu=$(realpath "${1:?usage: $0 PROMU [OUT]}")
out=$(realpath -m "${2:-.tarballs}")
cd "$(dirname "$0")/.."
say() { echo "release: $*" >&2; }

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	say "warning: the work tree has uncommitted changes; the binaries say they are of $(git rev-parse --short HEAD)"
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
version=$(tr -d ' \n' <VERSION)

# The two lists of .promu.yml this script reads (one "- item" per line).
promu_list() { # section key
	awk -v section="$1:" -v key="$2:" '
		/^[^ #]/ { in_section = ($1 == section); in_key = 0; next }
		in_section && $1 == key { in_key = 1; next }
		in_section && in_key && $1 == "-" { print $2; next }
		in_section && in_key && $1 !~ /^#/ { in_key = 0 }
	' .promu.yml
}
mapfile -t platforms < <(promu_list crossbuild platforms)
mapfile -t files < <(promu_list tarball files)
[ ${#platforms[@]} -gt 0 ] || { say ".promu.yml lists no crossbuild platforms"; exit 1; }
for f in "${files[@]}"; do
	[ -e "$f" ] || { say ".promu.yml tarball file $f does not exist"; exit 1; }
done

work=$out/.work
# Only what an earlier release left there.
rm -rf "$work" "$out"/ipsec_exporter-*.tar.gz "$out/sha256sums.txt"
mkdir -p "$work"
for platform in "${platforms[@]}"; do
	os=${platform%/*} arch=${platform#*/}
	name=ipsec_exporter-$version.$os-$arch
	say "$name"
	GOOS=$os GOARCH=$arch "$promu" build --prefix "$work/$os-$arch"
	dir=$work/stage/$name
	mkdir -p "$dir"
	cp "$work/$os-$arch/ipsec_exporter" "$dir/"
	for f in "${files[@]}"; do
		mkdir -p "$dir/$(dirname "$f")"
		cp -R "$f" "$dir/$f"
	done
	tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
		--mode='u+rw,go+r,go-w,a+X' --format=gnu -C "$work/stage" -cf - "$name" |
		gzip -9 -n >"$out/$name.tar.gz"
done
rm -rf "$work"
"$promu" checksum "$out"
say "done, in $out: $(ls "$out" | tr '\n' ' ')"
