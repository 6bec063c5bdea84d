#!/usr/bin/env bash
# Virtual-clock speed: runs one workload on an emulated device with the
# virtual clock (a discrete-event simulation) for a simulated duration and
# prints simulated seconds against wall seconds. A benchmark, not a test:
# the wall time depends on the machine and on how many ops the simulation
# has to compute (ops per simulated second × simulated seconds).
#
# Usage: scripts/bench-virtual-clock.sh [--workload W] [--simulated D]
#          [--target URI] [--set KEY=VALUE]...
#   --workload   preset or config file to run (default: raw; e.g. kvcache/kvcache-smoke)
#   --simulated  simulated duration, passed as --duration (default: 10min)
#   --target     emu:// target with clock=virtual
#                (default: emu://nvme-gen4?clock=virtual&store=none)
#   --set        passed through to `mlpdrive run` (repeatable)
set -euo pipefail
workload=raw
simulated=10min
target='emu://nvme-gen4?clock=virtual&store=none'
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) workload=$2; shift 2 ;;
    --simulated) simulated=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$target" in
  emu://*clock=virtual*) ;;
  *) echo "--target must be an emu:// target with clock=virtual, got $target" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
mlpdrive="${CARGO_TARGET_DIR:-$here/target}/release/mlpdrive"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

start=$(date +%s.%N)
set +e
"$mlpdrive" run "$workload" --quiet --target "$target" --duration "$simulated" \
  --results "$work/res" --output "$work/out.json" "${sets[@]}" >"$work/summary.txt"
code=$?
set -e
end=$(date +%s.%N)
if [ ! -f "$work/out.json" ]; then
  cat "$work/summary.txt" >&2
  echo "the run wrote no results (exit $code)" >&2
  exit 1
fi
python3 - "$work/out.json" "$start" "$end" "$code" "$workload" "$target" "${sets[*]:-}" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
code, workload, target, sets = sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
sim = j["duration_s"]
ops = sum(s["ops"] for s in j["series"])
print(f"workload: {workload} {sets}".rstrip())
print(f"target:   {target}")
print(f"status:   {j['status']} (exit {code})")
print(f"simulated {sim:.1f} s in {wall:.2f} s of wall time: {sim / wall:.1f}x real time")
print(f"ops:      {ops:,} in all phases ({ops / wall:,.0f} ops per wall second); CPU user {j['cpu_user_s']:.2f} s; peak RSS {j['peak_rss_bytes'] / 2**20:.0f} MiB")
print(f"| {workload} {sets} | `{target}` | {sim:.1f} | {wall:.2f} | {sim / wall:.1f}x | {ops:,} | {j['peak_rss_bytes'] / 2**20:.0f} MiB |")
PY
exit "$code"
