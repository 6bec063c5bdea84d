#!/usr/bin/env bash
# bench-kvcache.sh: mlpdrive's kvcache workload against `mlpdrive run raw` on the same target.
#
# Runs llama3.1-8b, 20 users, cpu 0, generation none, 60 s on a file target (the reference's
# R1-like configuration, spec §15.1), then `raw` randrw with 1 MiB I/O at the kvcache run's
# read share, and prints CPU-seconds per GiB moved, peak RSS and the achieved storage
# bandwidth of both. Usage: scripts/bench-kvcache.sh DIR [SECONDS]
# DIR is a directory on the storage under test (the runs write inside DIR/mlpdrive/).
set -euo pipefail
dir=${1:?usage: $0 DIR [SECONDS]}
secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p mlpdrive --manifest-path "$root/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/mlpdrive"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$bin" run kvcache --quiet --target "file://$dir" --results "$out/res" --output "$out/kv.json" \
  --set model=llama3.1-8b --set users=20 --set cpu_mem_gb=0 --set generation_mode=none \
  --set storage_capacity_gb=30 --set max_concurrent_allocs=4 --duration "${secs}s" >/dev/null

read -r rd wr cpu rss span <<<"$(python3 - "$out/kv.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
t = j["summary"]["extras"]["tiers"]["storage"]
rd = t["read_bytes"]; wr = t["write_bytes"] + t["demoted_in_bytes"]
print(rd, wr, j["cpu_user_s"] + j["cpu_sys_s"], j["peak_rss_bytes"], j["summary"]["extras"]["spanned_s"])
PY
)"
mix=$(python3 -c "print(round(100*$rd/max($rd+$wr,1)))")
"$bin" run raw --quiet --target "file://$dir" --results "$out/res" --output "$out/raw.json" \
  --set rw=randrw --set rwmix_read="$mix" --set block_size=1MiB --set queue_depth=64 \
  --set size=8GiB --duration "${secs}s" >/dev/null
python3 - "$out/raw.json" "$rd" "$wr" "$cpu" "$rss" "$span" <<'PY'
import json, sys
raw = json.load(open(sys.argv[1]))
rd, wr, cpu, rss, span = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
gib = 2**30
moved = (rd + wr) / gib
kv_bw = moved / span if span else 0.0
s = raw["summary"]
raw_bw = (s["read"]["bytes"] + s["write"]["bytes"]) / gib / raw["duration_s"]
raw_cpu = (raw["cpu_user_s"] + raw["cpu_sys_s"]) / max((s["read"]["bytes"] + s["write"]["bytes"]) / gib, 1e-9)
print(f"kvcache: {moved:.1f} GiB moved in {span:.1f} s, {cpu:.1f} CPU-s, {cpu / max(moved, 1e-9):.3f} CPU-s per GiB, "
      f"peak RSS {rss / 2**20:.0f} MiB, storage {kv_bw:.3f} GiB/s (read share {100 * rd / max(rd + wr, 1):.0f} %)")
print(f"raw randrw 1MiB QD64 same mix: {raw_bw:.3f} GiB/s, {raw_cpu:.3f} CPU-s per GiB")
print(f"kvcache / raw bandwidth: {kv_bw / raw_bw if raw_bw else 0:.2f}")
PY
