#!/usr/bin/env bash
# make bench: measures what watching IPsec costs and writes BENCHMARKS.md.
#   1. host: Go benchmarks of the verdict collector's scrape cost (100 to 100k
#      map keys), -benchmem, -count BENCH_COUNT (default 5);
#   2. lab: the TestLabBench* tests (bench/) on each kernel of BENCH_KERNELS
#      (default "6.1 6.12"), one VM run per kernel: per-packet BPF cost
#      (floor, reference, ours in both hook modes), ESP throughput with and
#      without the exporter, kernel-state collectors with 10k SAs/policies,
#      exporter RSS;
#   3. bench/cmd/benchreport: BENCHMARKS.md and bench/scrape.png.
# The lab VMs run under insnprof (bench/qemu/insnprof.c, a QEMU TCG plugin
# built here with gcc), which charges guest instructions to the hooks that
# caused them; without gcc the bench runs without it and says so.
# Raw outputs stay in .build/bench/<time>/. Needs root (BPF maps on the
# host, qemu) like `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if ! command -v gnuplot >/dev/null; then
	# The plot needs gnuplot (Debian's gnuplot-nox); the report is written without it.
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		apt-get install -y -q gnuplot-nox >/dev/null || echo "bench: gnuplot-nox did not install: no plot" >&2
	else
		echo "bench: gnuplot missing (apt-get install gnuplot-nox): no plot" >&2
	fi
fi

# The lab's qemu runs with an instruction-counted clock (bench/qemu/: one
# nanosecond per emulated instruction), so BPF run times and transfer times
# do not depend on the host's load. BENCH_ICOUNT=0 uses the wall clock.
# Debian's 6.1 hangs bringing up a second CPU under -icount, so those runs
# use one vCPU on both kernels (same conditions side by side).
if [ "${BENCH_ICOUNT:-1}" = 1 ]; then
	export PATH="$PWD/bench/qemu:$PATH"
	smp=1
	clock="instruction-counted (qemu -icount shift=0,sleep=off: guest time = emulated instructions, 1 ns each), 1 vCPU"
else
	smp=2
	clock="host wall clock (BENCH_ICOUNT=0), 2 vCPUs"
fi

out=".build/bench/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"

# insnprof needs gcc and TCG with the instruction-counted clock.
plugin=""
no_profile=""
if [ "${BENCH_ICOUNT:-1}" != 1 ]; then
	no_profile="BENCH_ICOUNT=0: no instruction counting"
elif ! command -v gcc >/dev/null; then
	no_profile="gcc not installed (apt-get install gcc)"
elif ! gcc -O2 -g -Wall -Wextra -Werror -std=gnu11 -shared -fPIC -fvisibility=hidden \
	-o "$out/insnprof.so" bench/qemu/insnprof.c 2>"$out/insnprof-build.txt"; then
	no_profile="insnprof did not build (see $out/insnprof-build.txt)"
else
	plugin="$PWD/$out/insnprof.so"
fi
if [ -n "$no_profile" ]; then
	echo "bench: running without insnprof: $no_profile" >&2
fi
count="${BENCH_COUNT:-5}"
kernels="${BENCH_KERNELS:-6.1 6.12}"
host_cmd="go test -run '^\$' -bench 'Verdict(Update|Scrape)' -benchmem -count $count ./collector"
load() { cut -d' ' -f1-3 /proc/loadavg; }

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "host: $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "load average (1/5/15 min) at start: $(load)"
	echo "lab clock: $clock"
	echo "insnprof: ${plugin:+loaded (bench/qemu/insnprof.c, gcc $(gcc -dumpfullversion), qemu $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'))}${no_profile:+not loaded: $no_profile}"
	echo "host benchmark command: $host_cmd"
	echo "lab command: go run ./lab/cmd/ipsec-lab test -kernel K -smp $smp -pkg ./bench -run '^TestLabBench' -timeout 75m -boot-timeout 10m, K in $kernels"
} >"$out/meta.txt"

status=0
echo "bench: host benchmarks ($out/host.txt)" >&2
eval "$host_cmd" | tee "$out/host.txt" || status=1

# lab_run K: one kernel's VM run. BENCH_PARALLEL=1 runs the kernels' VMs at
# the same time (one vCPU each): under the instruction-counted clock the
# figures do not depend on it, only the wall time does.
lab_run() {
	local k=$1 start
	echo "bench: lab benchmarks on $k ($out/lab-$k.txt)" >&2
	start=$(date +%s)
	BENCH_PLUGIN="$plugin" BENCH_PLUGIN_OUT="$PWD/$out/insnprof-$k.txt" \
		go run ./lab/cmd/ipsec-lab test -kernel "$k" -smp "$smp" -pkg ./bench -run '^TestLabBench' -timeout 75m -boot-timeout 10m \
		>"$out/lab-$k.txt" 2>&1 || { echo "bench: lab run on $k failed (see $out/lab-$k.txt)" >&2; return 1; }
	echo "lab wall time $k: $(($(date +%s) - start)) s" >>"$out/meta.txt"
}
labs=()
profiles=()
pids=()
for k in $kernels; do
	if [ "${BENCH_PARALLEL:-0}" = 1 ]; then
		lab_run "$k" &
		pids+=($!)
	else
		lab_run "$k" || status=1
	fi
done
for pid in "${pids[@]}"; do
	wait "$pid" || status=1
done
for k in $kernels; do
	labs+=("$out/lab-$k.txt")
	if [ -n "$plugin" ] && [ -s "$out/insnprof-$k.txt" ]; then
		profiles+=("$k=$out/insnprof-$k.txt")
	fi
done
echo "load average (1/5/15 min) at end: $(load)" >>"$out/meta.txt"

go run ./bench/cmd/benchreport -meta "$out/meta.txt" -host "$out/host.txt" \
	-lab "$(
		IFS=,
		echo "${labs[*]}"
	)" -profile "$(
		IFS=,
		echo "${profiles[*]}"
	)" -no-profile "$no_profile" -o BENCHMARKS.md -plot bench/scrape.png
if [ "$status" != 0 ]; then
	echo "bench: some measurements failed (see $out); BENCHMARKS.md has what ran" >&2
fi
exit "$status"
