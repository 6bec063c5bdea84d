#!/usr/bin/env bash
# Injection accuracy of the in-process emulated device (emu://, real clock):
# runs 4 KiB random reads through mlpdrive against two device profiles — a
# fixed 1 ms read latency and a lognormal with p50 200 µs / p99 2 ms, both
# with enough channels that no queueing is added — at queue depth 1 and 32,
# and prints the p50 and p99 mlpdrive measured against the profile's.
#
# Usage: scripts/bench-emu-accuracy.sh [--runtime S]
set -euo pipefail
runtime=10
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="$here/target/release/mlpdrive"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

profile() { # name read-latency
  cat > "$work/$1.yaml" <<YAML
description: accuracy test, $1
capacity: 1GiB
channels: 64
latency:
  read: $2
  write: {fixed: 1us}
  flush: {fixed: 1us}
  trim: {fixed: 1us}
channel_bandwidth: {read: unlimited, write: unlimited}
device_bandwidth: {read: unlimited, write: unlimited}
YAML
}
profile fixed1ms '{fixed: 1ms}'
profile lognormal '{lognormal: {p50: 200us, p99: 2ms}}'

echo "| profile | QD | want p50 µs | got p50 µs | ratio | want p99 µs | got p99 µs | ratio | IOPS |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for p in fixed1ms lognormal; do
  for qd in 1 32; do
    "$mlpdrive" run raw --quiet --target "emu://$work/$p.yaml" --results "$work/res" \
      --output "$work/out.json" --set rw=randread --set queue_depth=$qd --set size=64MiB \
      --set duration="${runtime}s" >/dev/null
    python3 - "$work/out.json" "$p" "$qd" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
r = j["summary"]["read"]
want = {"fixed1ms": (1000.0, 1000.0), "lognormal": (200.0, 2000.0)}[sys.argv[2]]
got = (r["latency_us"]["p50"], r["latency_us"]["p99"])
print(f"| {sys.argv[2]} | {sys.argv[3]} | {want[0]:.0f} | {got[0]:.1f} | {got[0]/want[0]:.3f} | {want[1]:.0f} | {got[1]:.1f} | {got[1]/want[1]:.3f} | {r['iops']:,.0f} |")
PY
  done
done
