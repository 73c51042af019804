#!/usr/bin/env bash
# Installs what the tests and the lab need on Debian (bookworm): qemu to boot
# the lab kernels, busybox-static and kmod to build their initramfs, iproute2
# (its `ip` goes into the VM), xz-utils for 6.12's compressed modules;
# Prometheus and Alertmanager (promtool, amtool) for the rules tests, the
# end-to-end run and the monitoring beside `make lab`; strace and systemd
# (systemd-analyze) for the systemd unit's tests.
# With --bpf also the pinned clang and llvm for `make generate`; with --arm64
# qemu-system-arm and dpkg's arm64 architecture, whose packages (kernels,
# busybox-static:arm64, iproute2:arm64) the arm64 lab downloads.
# Idempotent and quick when everything is there: apt runs only for what is
# missing. Called by `make deps`.
set -euo pipefail

arm64=false
packages=(qemu-system-x86 busybox-static kmod iproute2 cpio xz-utils
	prometheus prometheus-alertmanager strace systemd)
for arg in "$@"; do
	case "$arg" in
	--bpf) packages+=(clang-14 llvm-14 libbpf-dev) ;;
	--arm64) packages+=(qemu-system-arm) arm64=true ;;
	-h | --help)
		echo "usage: $0 [--bpf] [--arm64]   (--bpf: also clang-14, llvm-14 and libbpf-dev for make generate; --arm64: qemu-system-arm and the arm64 apt lists for make test-vm-arm64)"
		exit 0
		;;
	*)
		echo "install-deps: unknown argument $arg" >&2
		exit 2
		;;
	esac
done

say() { echo "install-deps: $*" >&2; }

if ! command -v go >/dev/null; then
	say "Go is not installed: get Go 1.26 or newer from https://go.dev/dl/ (this script does not install Go)"
	exit 1
fi

missing=()
installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)"
for p in "${packages[@]}"; do
	if ! grep -qx "$p install ok installed" <<<"$installed"; then
		missing+=("$p")
	fi
done

# The lab downloads Debian's kernel packages with apt-get download, so the
# apt lists must know them (6.12 comes from bookworm-security).
kernels_known() {
	local names
	names="$(apt-cache pkgnames linux-image-6. 2>/dev/null | grep -- '-cloud-amd64-unsigned$' || true)"
	grep -q '^linux-image-6\.1\.0-' <<<"$names" && grep -q '^linux-image-6\.12\.' <<<"$names"
}
lists_ok=true
if command -v apt-cache >/dev/null && ! kernels_known; then
	lists_ok=false
fi
if $arm64 && ! dpkg --print-foreign-architectures | grep -qx arm64; then
	lists_ok=false
fi

if [ ${#missing[@]} -eq 0 ] && $lists_ok; then
	say "everything is installed (${packages[*]})"
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	say "no apt-get here: install by hand: ${missing[*]:-} (the lab also needs Debian's apt archive for its kernels)"
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo=(sudo)
	else
		say "not root and no password-less sudo: run as root, or run:"
		say "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]:-}"
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive
if $arm64 && ! dpkg --print-foreign-architectures | grep -qx arm64; then
	say "dpkg --add-architecture arm64"
	"${sudo[@]}" dpkg --add-architecture arm64
fi
say "apt-get update"
"${sudo[@]}" apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! kernels_known; then
	say "warning: apt knows no linux-image-6.1.0-*/6.12.*-cloud-amd64-unsigned: add bookworm and bookworm-security to the apt sources"
fi
say "done"
