#!/usr/bin/env bash
# NBD export throughput: nbdcopy into and out of `mlpdrive emu serve --profile
# ideal` (mem backing, and a file on tmpfs) and of qemu-nbd serving a file on
# tmpfs, on the same machine in the same run. Copy-in reads a random file on
# tmpfs; copy-out writes to nbdcopy's null: sink. Each figure is the median
# of --reps runs.
#
# Needs nbdcopy (libnbd-bin) and qemu-nbd (qemu-utils).
# Usage: scripts/bench-nbd.sh [--size GiB] [--reps N]
set -euo pipefail
size_gib=2
reps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_gib=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in nbdcopy qemu-nbd; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install libnbd-bin qemu-utils" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="${CARGO_TARGET_DIR:-$here/target}/release/mlpdrive"
work=$(mktemp -d -p /dev/shm)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bytes=$((size_gib << 30))
head -c "$bytes" /dev/urandom > "$work/src.bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# Median seconds of `reps` runs of "$@".
timed() {
  local t=()
  for _ in $(seq "$reps"); do
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    t+=("$(echo "$e - $s" | bc -l)")
  done
  printf '%s\n' "${t[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

row() { # label uri
  local in_s out_s
  in_s=$(timed nbdcopy "$work/src.bin" "$2")
  out_s=$(timed nbdcopy "$2" null:)
  printf '%-44s %10.0f %10.0f\n' "$1" "$(echo "$bytes / $in_s / 1048576" | bc -l)" "$(echo "$bytes / $out_s / 1048576" | bc -l)"
}

printf '%-44s %10s %10s\n' "server ($size_gib GiB, median of $reps)" "in MiB/s" "out MiB/s"

port=$(free_port)
"$mlpdrive" emu serve --quiet --nbd "127.0.0.1:$port" --size "${size_gib}GiB" --profile ideal >/dev/null &
pids+=($!)
wait_port "$port"
row "mlpdrive emu serve --profile ideal (mem)" "nbd://127.0.0.1:$port/mlpdrive"

port=$(free_port)
"$mlpdrive" emu serve --quiet --nbd "127.0.0.1:$port" --size "${size_gib}GiB" --profile ideal \
  --backing "$work/emu.img" >/dev/null &
pids+=($!)
wait_port "$port"
row "mlpdrive emu serve --profile ideal (tmpfs)" "nbd://127.0.0.1:$port/mlpdrive"

port=$(free_port)
truncate -s "${size_gib}G" "$work/qemu.img"
qemu-nbd -f raw -x exp --persistent -e 8 -b 127.0.0.1 -p "$port" "$work/qemu.img" &
pids+=($!)
wait_port "$port"
row "qemu-nbd -f raw (tmpfs)" "nbd://127.0.0.1:$port/exp"
