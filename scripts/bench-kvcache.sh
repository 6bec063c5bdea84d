#!/usr/bin/env bash
# bench-kvcache.sh: mlpdrive's kvcache workload against `mlpdrive run raw` on the same target.
#
# Each round runs kvcache with llama3.1-8b, 20 users, cpu 0, generation none for SECONDS on
# a file target (the reference's R1-like configuration, spec §15.1), then `raw` randrw with
# 1 MiB I/O at QD 64 and the kvcache run's read share of bytes, alternating, and prints
# CPU-seconds per GiB moved, peak RSS and the achieved storage bandwidth of both, then the
# medians over the rounds.
#
# Usage: scripts/bench-kvcache.sh DIR [SECONDS] [ROUNDS]
# DIR is a directory on the storage under test (the runs write inside DIR/mlpdrive/).
set -euo pipefail
dir=${1:?usage: $0 DIR [SECONDS] [ROUNDS]}
secs=${2:-60}
rounds=${3:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p mlpdrive --manifest-path "$root/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/mlpdrive"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for r in $(seq 1 "$rounds"); do
  "$bin" run kvcache --quiet --target "file://$dir" --results "$out/res" --output "$out/kv$r.json" \
    --set model=llama3.1-8b --set users=20 --set cpu_mem_gb=0 --set generation_mode=none \
    --set storage_capacity_gb=30 --set max_concurrent_allocs=4 \
    --duration "${secs}s" >/dev/null
  mix=$(python3 - "$out/kv$r.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["summary"]["extras"]["tiers"]["storage"]
rd = t["read_bytes"]; wr = t["write_bytes"] + t["demoted_in_bytes"]
print(max(0, min(100, round(100 * rd / max(rd + wr, 1)))))
PY
)
  "$bin" run raw --quiet --target "file://$dir" --results "$out/res" --output "$out/raw$r.json" \
    --set rw=randrw --set rwmix_read="$mix" --set block_size=1MiB --set queue_depth=64 \
    --set size=8GiB --duration "${secs}s" >/dev/null
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
gib = 2**30
rows = []
for r in range(1, rounds + 1):
    kv = json.load(open(f"{out}/kv{r}.json"))
    raw = json.load(open(f"{out}/raw{r}.json"))
    t = kv["summary"]["extras"]["tiers"]["storage"]
    moved = (t["read_bytes"] + t["write_bytes"] + t["demoted_in_bytes"]) / gib
    span = kv["summary"]["extras"]["spanned_s"]
    kv_cpu = kv["cpu_user_s"] + kv["cpu_sys_s"]
    s = raw["summary"]
    raw_moved = (s["read"]["bytes"] + s["write"]["bytes"]) / gib
    raw_bw = raw_moved / raw["duration_s"]
    raw_cpu = raw["cpu_user_s"] + raw["cpu_sys_s"]
    row = dict(moved=moved, span=span, cpu_per_gib=kv_cpu / max(moved, 1e-9), rss_mib=kv["peak_rss_bytes"] / 2**20,
               kv_bw=moved / span if span else 0.0, raw_bw=raw_bw, raw_cpu_per_gib=raw_cpu / max(raw_moved, 1e-9),
               read_share=100 * t["read_bytes"] / max(moved * gib, 1), verified=kv["verify"]["verified_bytes"] / gib)
    row["ratio"] = row["kv_bw"] / raw_bw if raw_bw else 0.0
    rows.append(row)
    print(f"round {r}: kvcache {row['moved']:.1f} GiB in {row['span']:.1f} s = {row['kv_bw']:.3f} GiB/s, "
          f"{row['cpu_per_gib']:.3f} CPU-s/GiB, peak RSS {row['rss_mib']:.0f} MiB, {row['verified']:.1f} GiB verified, "
          f"read share {row['read_share']:.0f} % | raw same mix {row['raw_bw']:.3f} GiB/s, {row['raw_cpu_per_gib']:.3f} CPU-s/GiB "
          f"| kvcache/raw {row['ratio']:.2f}")
med = lambda k: statistics.median(r[k] for r in rows)
print(f"median: kvcache {med('kv_bw'):.3f} GiB/s, {med('cpu_per_gib'):.3f} CPU-s/GiB, peak RSS {med('rss_mib'):.0f} MiB; "
      f"raw {med('raw_bw'):.3f} GiB/s, {med('raw_cpu_per_gib'):.3f} CPU-s/GiB; kvcache/raw {med('ratio'):.2f}")
PY
