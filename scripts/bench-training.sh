#!/usr/bin/env bash
# Training read path vs `mlpdrive run raw` on the same file target.
#
# Generates a unet3d-like npz set (files of ~RECORD bytes, stdev RECORD/2)
# with `mlpdrive datagen`, then alternates, REPS times:
#   * `mlpdrive run` of the training workload with computation_time 0
#     (pure I/O: every accelerator's readers read whole files in REQ-sized
#     O_DIRECT requests), ACC accelerators × THREADS readers, one request in
#     flight per reader;
#   * `mlpdrive run raw` sequential reads at the same request size with a
#     queue depth of ACC × THREADS, on one laid-out file of comparable size.
# Prints per run: GB/s read (10^9 bytes/s) and client CPU seconds per GB read,
# then the medians and the ratio training/raw (goal ≥ 0.95) and training's
# CPU-s per GB (goal ≤ 0.1). Both runs verify what they read with the same
# mode: --verify full (the default), sampled (with --sample-every N, default
# 16) or off; the results' verify.mode is printed so a run shows what it did.
#
# Usage: scripts/bench-training.sh [--dir DIR] [--files N] [--record BYTES]
#        [--req SIZE] [--acc N] [--threads N] [--reps N] [--epochs N]
#        [--verify full|sampled|off] [--sample-every N]
set -euo pipefail

dir=./bench-training.d
files=48
record=104857600
req=4MiB
acc=2
threads=4
reps=3
epochs=2
verify=full
sample_every=16
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --record) record=$2; shift 2 ;;
    --req) req=$2; shift 2 ;;
    --acc) acc=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --verify) verify=$2; shift 2 ;;
    --sample-every) sample_every=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$here/target}
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="$target_dir/release/mlpdrive"
mkdir -p "$dir"
uri="file://$(cd "$dir" && pwd)"
res=$(mktemp -d)
trap 'rm -rf "$res"' EXIT

sets=(--set dataset.num_files_train="$files" --set dataset.record_length_bytes="$record"
      --set dataset.record_length_bytes_stdev=$((record / 2)) --set dataset.data_folder=data/bench-unet3d
      --set reader.transfer_size="$req" --set reader.read_threads="$threads" --set reader.batch_size=1
      --set accelerators="$acc" --set train.computation_time=0 --set train.epochs="$epochs"
      --set allow_short_epochs=true)
echo "== datagen ($files files of ~$record bytes)"
"$mlpdrive" datagen training-smoke -q --target "$uri" "${sets[@]}"
set_bytes=$(du -sb "$dir/mlpdrive/data/bench-unet3d/train" | cut -f1)
qd=$((acc * threads))
vsets=(--set verify="$verify")
if [ "$verify" = sampled ]; then vsets+=(--set verify_sample_every="$sample_every"); fi

# figures KIND JSON: prints "GB/s CPU-s/GB" of a results.json.
figures() {
  python3 - "$1" "$2" <<'PY'
import json, sys
kind, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
if kind == "training":
    m = r["summary"]["measured"]
    gbs = m["read_bytes_per_s"] / 1e9
    cpu = m["cpu_s_per_GB_read"]
else:
    rd = r["summary"]["read"]
    gbs = rd["bytes_per_s"] / 1e9
    cpu = (r["cpu_user_s"] + r["cpu_sys_s"]) / (rd["bytes"] / 1e9)
v = r["verify"]
print(f"{gbs:.3f} {cpu:.4f} {v.get('mode', 'full')}/{v.get('sample_every') or '-'}")
PY
}

echo "== runs: training ($acc accelerators x $threads readers, $req requests) vs raw (seq read, $req, QD $qd), verify=$verify"
uptime
: > "$res/t"; : > "$res/r"
for i in $(seq 1 "$reps"); do
  "$mlpdrive" run training-smoke -q --target "$uri" --results "$res/runs" --output "$res/t.json" "${sets[@]}" "${vsets[@]}" >/dev/null
  t=$(figures training "$res/t.json"); echo "$t" >> "$res/t"
  "$mlpdrive" run raw -q --target "$uri" --results "$res/runs" --output "$res/r.json" \
    --set rw=read --set block_size="$req" --set queue_depth="$qd" --set jobs=1 \
    --set size=$((set_bytes / 4096 * 4096)) --set bytes=$((set_bytes * epochs)) --set duration=600s \
    "${vsets[@]}" >/dev/null
  r=$(figures raw "$res/r.json"); echo "$r" >> "$res/r"
  echo "rep $i: training $t | raw $r   (GB/s, CPU-s/GB, verify mode/rate)"
done
uptime
python3 - "$res/t" "$res/r" <<'PY'
import statistics, sys
t = [list(map(float, l.split()[:2])) for l in open(sys.argv[1])]
r = [list(map(float, l.split()[:2])) for l in open(sys.argv[2])]
tg, tc = statistics.median(x[0] for x in t), statistics.median(x[1] for x in t)
rg, rc = statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)
print(f"median: training {tg:.3f} GB/s, {tc:.4f} CPU-s/GB | raw {rg:.3f} GB/s, {rc:.4f} CPU-s/GB")
print(f"training/raw bandwidth: {tg / rg:.3f} (goal >= 0.95); training CPU-s/GB: {tc:.4f} (goal <= 0.1)")
PY
