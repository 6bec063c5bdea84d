#!/usr/bin/env bash
# Injection accuracy of the in-process emulated device (emu://, real clock):
# runs 4 KiB random reads through mlpdrive against two device profiles — a
# fixed 1 ms read latency and a lognormal with p50 200 µs / p99 2 ms, both
# with enough channels that no queueing is added — at queue depth 1 and 32,
# and prints the p50 and p99 mlpdrive measured against the profile's.
# With --shim the same runs go through the FUSE shim instead (a mount with
# the profile over in-memory files; mlpdrive uses O_DIRECT and io_uring on
# file://MOUNT), so the numbers include the kernel's FUSE round trip.
#
# Usage: scripts/bench-emu-accuracy.sh [--runtime S] [--shim]
set -euo pipefail
runtime=10
mode=emu
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    --shim) mode=shim; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="${CARGO_TARGET_DIR:-$here/target}/release/mlpdrive"
work=$(mktemp -d)
trap '"$mlpdrive" shim unmount "$work/mnt" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

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
    target="emu://$work/$p.yaml"
    if [ "$mode" = shim ]; then
      mkdir -p "$work/mnt"
      "$mlpdrive" shim mount --daemon --mountpoint "$work/mnt" --backing mem \
        --profile "$work/$p.yaml" 2>/dev/null
      target="file://$work/mnt"
    fi
    "$mlpdrive" run raw --quiet --target "$target" --results "$work/res" \
      --output "$work/out.json" --set rw=randread --set queue_depth=$qd --set size=64MiB \
      --set duration="${runtime}s" >/dev/null
    if [ "$mode" = shim ]; then "$mlpdrive" shim unmount "$work/mnt" >/dev/null; fi
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
