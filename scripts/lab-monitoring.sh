#!/usr/bin/env bash
# Starts Debian's Prometheus (127.0.0.1:19090) and Alertmanager (127.0.0.1:19093)
# on the host against the lab exporter forwarded to 127.0.0.1:10871 by
# `ipsec-lab run`, with the shipped rules and Alertmanager example. Runs until
# interrupted; data lives in a temporary directory removed on exit. The ports
# are not the usual 9090/9093 so that the services Debian's packages start do
# not collide with these.
#   bash scripts/lab-monitoring.sh &  go run ./lab/cmd/ipsec-lab run
set -euo pipefail
cd "$(dirname "$0")/.."
alertmanager=$(command -v prometheus-alertmanager || command -v alertmanager || true)
if ! command -v prometheus >/dev/null || [ -z "$alertmanager" ]; then
	echo "lab-monitoring: install Debian's prometheus and prometheus-alertmanager (make deps)" >&2
	exit 1
fi
data=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$data"
}
trap cleanup EXIT INT TERM
"$alertmanager" --config.file=examples/alertmanager/alertmanager.yml \
	--storage.path="$data/alertmanager" --web.listen-address=127.0.0.1:19093 \
	--cluster.listen-address= >"$data/alertmanager.log" 2>&1 &
pids+=($!)
prometheus --config.file=examples/prometheus/prometheus-lab.yml \
	--storage.tsdb.path="$data/prometheus" --web.listen-address=127.0.0.1:19090 \
	>"$data/prometheus.log" 2>&1 &
pids+=($!)
echo "lab-monitoring: Prometheus http://127.0.0.1:19090 (alerts: /alerts), Alertmanager http://127.0.0.1:19093; logs in $data"
wait -n "${pids[@]}"
echo "lab-monitoring: a server exited; its log:" >&2
tail -20 "$data"/*.log >&2
exit 1
