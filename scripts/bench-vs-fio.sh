#!/usr/bin/env bash
# Runs fio (ioengine=io_uring, direct=1) and `mlpdrive run raw` with the same
# parameters on the same machine, alternating the two tools in pairs (these
# VMs are noisy), and prints per case the medians and the ratio mlpdrive/fio
# for IOPS, MB/s and CPU seconds per GiB moved.
#
# Cases: 4 KiB randread QD 32, 4 KiB randwrite QD 32, 1 MiB seq read QD 16,
# 1 MiB seq write QD 16; each on a disk directory and on a tmpfs (where the
# CPU, not the device, is the limit).
#
# fio does not verify what it reads, so the like-for-like mlpdrive run uses
# `verify=false`; for read cases a third run with mlpdrive's default
# (`verify=true`: every block's header and checksum checked) is reported too.
#
# Usage: scripts/bench-vs-fio.sh [--reps N] [--runtime S] [--size SIZE]
#        [--disk-dir DIR] [--tmpfs-dir DIR] [--only disk|tmpfs]
# Reads run on the file mlpdrive laid out (fio reads the same file); writes
# use one file per tool of the same size on the same filesystem, so neither
# tool's layout check or verification is disturbed by the other's data.
set -euo pipefail

reps=3
runtime=10
size=1GiB
disk_dir=./bench-vs-fio.d
tmpfs_dir=/dev/shm/mlpdrive-bench
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --disk-dir) disk_dir=$2; shift 2 ;;
    --tmpfs-dir) tmpfs_dir=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v fio >/dev/null; then
  echo "installing fio" >&2
  apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="$here/target/release/mlpdrive"
size_bytes=$(python3 -c "import sys; s=sys.argv[1]; u={'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}; print(int(s[:-3])*u[s[-3:]])" "$size")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# measure OUT_PREFIX CMD...: runs CMD, writes CPU user+sys seconds of the
# child to OUT_PREFIX.cpu and its stdout to OUT_PREFIX.out.
measure() {
  local prefix=$1; shift
  python3 - "$prefix" "$@" <<'PY'
import resource, subprocess, sys
prefix, cmd = sys.argv[1], sys.argv[2:]
with open(prefix + ".out", "wb") as out:
    rc = subprocess.call(cmd, stdout=out)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(prefix + ".cpu", "w").write(f"{ru.ru_utime + ru.ru_stime}\n")
sys.exit(rc)
PY
}

# case table: name rw bs qd
cases=(
  "4k-randread randread 4KiB 32"
  "4k-randwrite randwrite 4KiB 32"
  "1m-seqread read 1MiB 16"
  "1m-seqwrite write 1MiB 16"
)

fio_rw() { case $1 in read) echo read ;; write) echo write ;; *) echo "$1" ;; esac; }
fio_bs() { echo "$1" | sed 's/KiB/k/; s/MiB/m/'; }

rows=()
for loc in disk tmpfs; do
  [ -n "$only" ] && [ "$only" != "$loc" ] && continue
  if [ $loc = disk ]; then dir=$disk_dir; else dir=$tmpfs_dir; fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  echo "== $loc: $dir" >&2
  # Lay out mlpdrive's read file once (untimed, real writes).
  "$mlpdrive" run raw --quiet --target "file://$dir" --results "$work/res" \
    --set rw=write --set block_size=1MiB --set queue_depth=16 --set size=$size \
    --set bytes=$size --set duration=null >/dev/null
  readfile="$dir/mlpdrive/raw/job0.dat"
  fiowrite="$dir/fio-write.dat"
  for c in "${cases[@]}"; do
    read -r name rw bs qd <<<"$c"
    case $rw in *write*) fiofile=$fiowrite ;; *) fiofile=$readfile ;; esac
    case $rw in *write*) tools="fio mlpdrive" ;; *) tools="fio mlpdrive mlpdrive-verify" ;; esac
    for r in $(seq 1 "$reps"); do
      # Alternate the order in each round: fio first in odd rounds, last in even.
      order=$tools
      [ $((r % 2)) -eq 0 ] && order=$(echo $tools | tr ' ' '\n' | tac | tr '\n' ' ')
      for tool in $order; do
        p="$work/$loc-$name-$tool-$r"
        if [ $tool = fio ]; then
          measure "$p" fio --name=bench --ioengine=io_uring --direct=1 --rw="$(fio_rw "$rw")" \
            --bs="$(fio_bs "$bs")" --iodepth="$qd" --numjobs=1 --time_based --runtime="$runtime" \
            --norandommap --randrepeat=0 --filename="$fiofile" --size="$size_bytes" \
            --output-format=json
        else
          verify=false
          [ $tool = mlpdrive-verify ] && verify=true
          measure "$p" "$mlpdrive" run raw --quiet --target "file://$dir" --results "$work/res" \
            --output "$p.json" --set rw="$rw" --set block_size="$bs" --set queue_depth="$qd" \
            --set size=$size --set duration="${runtime}s" --set verify=$verify
        fi
        echo "   $loc $name rep $r $tool done" >&2
      done
    done
    rows+=("$loc $name")
  done
done

python3 - "$work" "$reps" "${rows[@]}" <<'PY'
import json, statistics, sys, glob
work, reps, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
GiB = 1 << 30
def fio_stats(p):
    j = json.load(open(p + ".out"))
    job = j["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
    return side["iops"], side["bw_bytes"], side["io_bytes"]
def mlp_stats(p):
    j = json.load(open(p + ".json"))
    s = j["summary"]
    side = s["write"] if s["write"]["ops"] > 0 else s["read"]
    return side["iops"], side["bytes_per_s"], side["bytes"]
def cpu(p):
    return float(open(p + ".cpu").read())
print("| location | case | fio IOPS | mlpdrive IOPS | ratio | fio MB/s | mlpdrive MB/s | ratio | fio CPU s/GiB | mlpdrive CPU s/GiB | ratio | verify=true: IOPS ratio | verify=true: CPU ratio |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for row in rows:
    loc, name = row.split()
    res = {}
    for tool, f in (("fio", fio_stats), ("mlpdrive", mlp_stats), ("mlpdrive-verify", mlp_stats)):
        iops, bw, cpg = [], [], []
        for r in range(1, reps + 1):
            p = f"{work}/{loc}-{name}-{tool}-{r}"
            if not glob.glob(p + ".cpu"):
                continue
            i, b, moved = f(p)
            iops.append(i); bw.append(b); cpg.append(cpu(p) / (moved / GiB) if moved else float("nan"))
        if iops:
            res[tool] = (statistics.median(iops), statistics.median(bw) / 1e6, statistics.median(cpg))
    f, m = res["fio"], res["mlpdrive"]
    v = res.get("mlpdrive-verify")
    vcols = f"{v[0]/f[0]:.2f} | {v[2]/f[2]:.2f}" if v else "n/a | n/a"
    print(f"| {loc} | {name} | {f[0]:,.0f} | {m[0]:,.0f} | {m[0]/f[0]:.2f} | {f[1]:,.1f} | {m[1]:,.1f} | {m[1]/f[1]:.2f} | {f[2]:.3f} | {m[2]:.3f} | {m[2]/f[2]:.2f} | {vcols} |")
PY
