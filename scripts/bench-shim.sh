#!/usr/bin/env bash
# Overhead of the FUSE shim: fio (ioengine=io_uring, direct=1) on the same
# file, once directly in the backing directory and once through a shim mount
# over it, for 4 KiB random read/write (QD 32) and 1 MiB sequential
# read/write (QD 16). Configurations, alternated in every repetition (these
# VMs are noisy) and reported as medians with the ratio to direct:
#   direct       fio on the backing directory itself
#   passthrough  shim, profile `ideal`, nothing observed: kernel FUSE passthrough
#   daemon       shim, profile `ideal`, --no-passthrough: every I/O through the daemon
#   daemon+log   shim, profile `ideal`, --oplog (in /dev/shm): the daemon in the
#                data path, hashing every block for the op log
#
#   base+log     with --baseline BIN only: daemon+log served by another
#                mlpdrive binary (an older build), alternated with the rest
#
# Usage: scripts/bench-shim.sh [--reps N] [--runtime S] [--size SIZE] [--dir DIR]
#        [--cases "randread-4k randwrite-4k read-1m write-1m"]
#        [--configs "direct passthrough daemon daemon+log"] [--baseline BIN]
# DIR (default ./bench-shim.d) holds the backing directory and the mount
# point; it must be on the file system to measure (not tmpfs for O_DIRECT
# numbers that mean anything).
set -euo pipefail

reps=3
runtime=10
cases="randread-4k randwrite-4k read-1m write-1m"
size=1GiB
dir=./bench-shim.d
configs="direct passthrough daemon daemon+log"
baseline=
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v fio >/dev/null; then
  echo "installing fio" >&2
  apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="${CARGO_TARGET_DIR:-$here/target}/release/mlpdrive"
mkdir -p "$dir/backing" "$dir/mnt"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
oplog_dir=$(mktemp -d -p /dev/shm mlpdrive-bench-shim.XXXXXX)
cleanup() {
  "$mlpdrive" shim unmount "$dir/mnt" >/dev/null 2>&1 || true
  rm -rf "$work" "$oplog_dir"
}
trap cleanup EXIT

# Lay the file out once; every configuration uses the same bytes.
fio --name=layout --filename="$dir/backing/bench.dat" --size="$size" --rw=write --bs=1M \
  --ioengine=io_uring --direct=1 --iodepth=16 --output=/dev/null

case " $configs " in *" direct "*) ;; *) echo "--configs must include direct (the ratios' base)" >&2; exit 2 ;; esac
if [ -n "$baseline" ]; then configs="$configs base+log"; fi

run_case() { # config case out.json
  local cfgname=$1 case=$2 out=$3 path
  if [ "$cfgname" = direct ]; then path="$dir/backing/bench.dat"; else path="$dir/mnt/bench.dat"; fi
  local rw bs qd
  case "$case" in
    randread-4k) rw=randread; bs=4k; qd=32 ;;
    randwrite-4k) rw=randwrite; bs=4k; qd=32 ;;
    read-1m) rw=read; bs=1M; qd=16 ;;
    write-1m) rw=write; bs=1M; qd=16 ;;
  esac
  fio --name=b --filename="$path" --size="$size" --rw=$rw --bs=$bs --iodepth=$qd \
    --ioengine=io_uring --direct=1 --runtime="$runtime" --time_based --ramp_time=1 \
    --output-format=json --output="$out"
}

bin_for() { # config
  if [ "$1" = base+log ]; then echo "$baseline"; else echo "$mlpdrive"; fi
}

mount_shim() { # config
  case "$1" in
    passthrough) extra=() ;;
    daemon) extra=(--no-passthrough) ;;
    daemon+log|base+log) extra=(--oplog "$oplog_dir/ops.csv") ;;
  esac
  "$(bin_for "$1")" shim mount --daemon --mountpoint "$dir/mnt" --backing "$dir/backing" \
    --profile ideal "${extra[@]}" 2>&1 | sed 's/^/  /' >&2
}

for rep in $(seq 1 "$reps"); do
  for cfgname in $configs; do
    echo "rep $rep: $cfgname" >&2
    [ "$cfgname" = direct ] || mount_shim "$cfgname"
    for c in $cases; do
      run_case "$cfgname" "$c" "$work/$cfgname.$c.$rep.json"
    done
    if [ "$cfgname" != direct ]; then
      "$(bin_for "$cfgname")" shim unmount "$dir/mnt" >/dev/null
      rm -f "$oplog_dir/ops.csv"
    fi
  done
done

python3 - "$work" "$reps" "$cases" "$configs" <<'PY'
import json, statistics, sys
work, reps, cases, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
def value(cfg, case, rep):
    j = json.load(open(f"{work}/{cfg}.{case}.{rep}.json"))["jobs"][0]
    side = j["read"] if "read" in case else j["write"]
    return side["iops"] if case.endswith("4k") else side["bw_bytes"] / 1e6
# Medians per configuration, and the median over repetitions of the ratio
# to direct within the same repetition (the disk's speed drifts between
# repetitions; a paired ratio cancels most of that).
print("| case | unit | " + " | ".join(configs) + " | " + " | ".join(f"{c}/direct" for c in configs[1:]) + " |")
print("| --- | --- | " + " | ".join("---:" for _ in configs) + " | " + " | ".join("---:" for _ in configs[1:]) + " |")
per_rep = []
for case in cases:
    vals = {c: [value(c, case, r) for r in range(1, reps + 1)] for c in configs}
    unit = "IOPS" if case.endswith("4k") else "MB/s"
    cells = [f"{statistics.median(vals[c]):,.0f}" for c in configs]
    ratios = [f"{statistics.median(v / d for v, d in zip(vals[c], vals['direct'])):.2f}" for c in configs[1:]]
    print(f"| {case} | {unit} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    per_rep.append(f"{case}: " + "; ".join(f"{c} " + ", ".join(f"{x:,.0f}" for x in vals[c]) for c in configs))
print()
print("per repetition:")
for line in per_rep:
    print("  " + line)
PY
