#!/usr/bin/env bash
# Injection accuracy of the emulated device: runs 4 KiB random reads through
# mlpdrive against two device profiles — a fixed 1 ms read latency and a
# lognormal with p50 200 µs / p99 2 ms, both with enough channels that no
# queueing is added — at queue depth 1 and 32, and prints the p50 and p99
# mlpdrive measured against the profile's, for each path:
#
#   emu        the in-process target emu://PROFILE (real clock)
#   shim       through the FUSE shim (a mount with the profile over in-memory
#              files; mlpdrive uses O_DIRECT and io_uring on file://MOUNT),
#              replies sent early by the FUSE round trip measured at mount
#   shim-raw   the same with --no-rtt-compensation
#
# The paths alternate within each round (so they share the machine's load);
# each cell is the median over the rounds. `uptime` is printed before and
# after. --bin uses an existing mlpdrive binary instead of building one.
#
# Usage: scripts/bench-emu-accuracy.sh [--runtime S] [--rounds N]
#            [--paths emu,shim,shim-raw] [--shim] [--bin PATH]
#        (--shim is short for --paths shim)
set -euo pipefail
runtime=10
rounds=1
paths=emu
bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --paths) paths=$2; shift 2 ;;
    --shim) paths=shim; shift ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$bin" ]; then
  mlpdrive=$bin
else
  cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
  mlpdrive="${CARGO_TARGET_DIR:-$here/target}/release/mlpdrive"
fi
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

echo "load before: $(uptime)"
: > "$work/rows.tsv"
for round in $(seq 1 "$rounds"); do
  for p in fixed1ms lognormal; do
    for qd in 1 32; do
      for path in ${paths//,/ }; do
        target="emu://$work/$p.yaml"
        case "$path" in
          emu) ;;
          shim|shim-raw)
            extra=()
            [ "$path" = shim-raw ] && extra=(--no-rtt-compensation)
            mkdir -p "$work/mnt"
            msg=$("$mlpdrive" shim mount --daemon --mountpoint "$work/mnt" --backing mem \
              --profile "$work/$p.yaml" "${extra[@]}" 2>&1)
            rtt=$(echo "$msg" | sed -n 's/.*FUSE round trip \([0-9.]*\) µs.*/\1/p')
            echo "round $round $p QD $qd $path: ${rtt:+FUSE round trip $rtt µs}" >&2
            target="file://$work/mnt"
            ;;
          *) echo "unknown path $path (emu, shim, shim-raw)" >&2; exit 2 ;;
        esac
        "$mlpdrive" run raw --quiet --target "$target" --results "$work/res" \
          --output "$work/out.json" --set rw=randread --set queue_depth=$qd --set size=64MiB \
          --set duration="${runtime}s" >/dev/null
        if [ "$path" != emu ]; then "$mlpdrive" shim unmount "$work/mnt" >/dev/null 2>&1; fi
        python3 - "$work/out.json" "$path" "$p" "$qd" >> "$work/rows.tsv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["summary"]["read"]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], str(r["latency_us"]["p50"]), str(r["latency_us"]["p99"]), str(r["iops"])]))
PY
      done
    done
  done
done
echo "load after: $(uptime)"
python3 - "$work/rows.tsv" "$paths" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
want = {"fixed1ms": (1000.0, 1000.0), "lognormal": (200.0, 2000.0)}
print("| path | profile | QD | want p50 µs | got p50 µs | ratio | want p99 µs | got p99 µs | ratio | IOPS | rounds |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in sys.argv[2].split(","):
    for p in ("fixed1ms", "lognormal"):
        for qd in ("1", "32"):
            sel = [r for r in rows if r[0] == path and r[1] == p and r[2] == qd]
            if not sel:
                continue
            p50 = statistics.median(float(r[3]) for r in sel)
            p99 = statistics.median(float(r[4]) for r in sel)
            iops = statistics.median(float(r[5]) for r in sel)
            w = want[p]
            print(f"| {path} | {p} | {qd} | {w[0]:.0f} | {p50:.1f} | {p50/w[0]:.3f} | {w[1]:.0f} | {p99:.1f} | {p99/w[1]:.3f} | {iops:,.0f} | {len(sel)} |")
PY
