#!/usr/bin/env bash
# Checkpoint benchmark: the `checkpoint` workload's save and load throughput
# against `mlpdrive run raw` sequential writes and reads with the same request
# size, queue depth and number of streams on the same target (goal: ≥ 0.95×),
# and the process's peak RSS for an ~8 GiB and an ~32 GiB checkpoint (goal:
# ≤ 256 MiB, i.e. bounded by the buffer pools, not by the checkpoint).
#
# The model is checkpoint-smoke's llama-shaped model with more layers
# (14 bytes per parameter: fp16 model + fp32 Adam state), ZeRO-3 over
# --ranks ranks. Throughput: --reps pairs, alternating checkpoint and raw
# (these VMs are noisy), medians printed. The checkpoint figure is the rules'
# one (checkpoint bytes / slowest rank's duration, fdatasync of every file
# included); raw's is bytes / measured window (its final fsync is untimed).
#
# Usage: scripts/bench-checkpoint.sh [--dir DIR] [--reps N] [--ranks R]
#        [--layers L] [--skip-rss]
# DIR must be on a real disk (not tmpfs) with room for the 32 GiB checkpoint
# (about 35 GB); everything the script writes there is removed at the end.
set -euo pipefail

dir=./bench-checkpoint.d
reps=3
ranks=4
layers=100
skip_rss=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --skip-rss) skip_rss=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="${CARGO_TARGET_DIR:-$here/target}/release/mlpdrive"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ "$(stat -f -c %T "$dir")" = tmpfs ]; then
  echo "$dir is on tmpfs: O_DIRECT and the RSS figures need a real disk (use --dir)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work" "$dir/mlpdrive"' EXIT
target="file://$dir"
transfer=4MiB
qd=4

# ck NAME LAYERS RANKS WRITES READS: one checkpoint run, results in $work/NAME.json.
ck() {
  rm -rf "$dir/mlpdrive/checkpoints"
  "$mlpdrive" run checkpoint-smoke --quiet --target "$target" --results "$work/res" \
    --output "$work/$1.json" --set "model.num_layers=$2" --set "ranks=$3" \
    --set checkpoint.time_between_checkpoints=0s --set "checkpoint.num_checkpoints_write=$4" \
    --set "checkpoint.num_checkpoints_read=$5" --set "transfer_size=$transfer" --set "queue_depth=$qd" >/dev/null
}

# raw NAME RW SIZE: one raw run with a job per rank, each over SIZE bytes.
raw() {
  "$mlpdrive" run raw --quiet --target "$target" --results "$work/res" --output "$work/$1.json" \
    --set "rw=$2" --set "jobs=$ranks" --set "block_size=$transfer" --set "queue_depth=$qd" \
    --set "size=$3" --set "bytes=$(( $3 * ranks ))" >/dev/null
}

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

echo "model: checkpoint-smoke with num_layers=$layers, $ranks ranks, transfer_size $transfer, queue_depth $qd"
for i in $(seq 1 "$reps"); do
  ck "ck$i" "$layers" "$ranks" 2 2
  rank_bytes=$(field "$work/ck$i.json" "d['summary']['rank_bytes_max'] // 4096 * 4096")
  raw "w$i" write "$rank_bytes"
  raw "r$i" read "$rank_bytes"
  rm -rf "$dir/mlpdrive/raw"
  echo "rep $i: checkpoint $(field "$work/ck$i.json" "round(d['summary']['checkpoint_bytes']/2**30, 2)") GiB:" \
    "save $(field "$work/ck$i.json" "round(d['summary']['save']['throughput_mean_GB_per_s'], 3)") GB/s," \
    "load $(field "$work/ck$i.json" "round(d['summary']['load']['throughput_mean_GB_per_s'], 3)") GB/s;" \
    "raw write $(field "$work/w$i.json" "round(d['summary']['write']['bytes_per_s']/1e9, 3)") GB/s," \
    "raw read $(field "$work/r$i.json" "round(d['summary']['read']['bytes_per_s']/1e9, 3)") GB/s"
done
python3 - "$work" "$reps" <<'PY'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
load = lambda n: json.load(open(f"{work}/{n}.json"))
med = lambda xs: statistics.median(xs)
save = med([load(f"ck{i}")["summary"]["save"]["throughput_mean_GB_per_s"] for i in range(1, reps + 1)])
ld = med([load(f"ck{i}")["summary"]["load"]["throughput_mean_GB_per_s"] for i in range(1, reps + 1)])
w = med([load(f"w{i}")["summary"]["write"]["bytes_per_s"] / 1e9 for i in range(1, reps + 1)])
r = med([load(f"r{i}")["summary"]["read"]["bytes_per_s"] / 1e9 for i in range(1, reps + 1)])
print(f"median: save {save:.3f} GB/s vs raw write {w:.3f} GB/s = {save / w:.2f}x;"
      f" load {ld:.3f} GB/s vs raw read {r:.3f} GB/s = {ld / r:.2f}x")
PY

if [ -z "$skip_rss" ]; then
  # 202 layers: 8.05 GiB; 814 layers: 32.12 GiB (one save, one verified load each).
  for case in "8GiB 202" "32GiB 814"; do
    set -- $case
    ck "rss$1" "$2" 8 1 1
    echo "checkpoint $(field "$work/rss$1.json" "round(d['summary']['checkpoint_bytes']/2**30, 2)") GiB, 8 ranks:" \
      "peak RSS $(field "$work/rss$1.json" "round(d['peak_rss_bytes']/2**20, 1)") MiB" \
      "(I/O buffers $(field "$work/rss$1.json" "d['summary']['buffer_bytes']//2**20") MiB);" \
      "save $(field "$work/rss$1.json" "round(d['summary']['save']['throughput_mean_GB_per_s'], 3)") GB/s," \
      "load $(field "$work/rss$1.json" "round(d['summary']['load']['throughput_mean_GB_per_s'], 3)") GB/s," \
      "verified $(field "$work/rss$1.json" "d['verify']['verified_bytes']") bytes," \
      "status $(field "$work/rss$1.json" "d['status']")"
  done
fi
