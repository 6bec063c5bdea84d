#!/usr/bin/env bash
# Vector database benchmark against the reference peer (DiskANN's own
# Python package, diskannpy), on the same data and parameters:
#   100k x 128 uniform vectors, L2-normalised, 1000 planted queries
#   (noise 0.05), R 64, L_build 200, W 4, L 100 and 200, no node cache.
#
# usage: scripts/bench-vdb.sh [NUM_VECTORS] [WORK_DIR]
#   VDB_PYTHON  python with numpy (and diskannpy 0.7.0 for the reference
#               columns: python3 -m venv V && V/bin/pip install diskannpy==0.7.0)
#   MLPDRIVE    the mlpdrive binary (default: target/release/mlpdrive)
#   ROUNDS      search rounds per point (default 3; medians are printed)
#
# mlpdrive builds its index once and runs the (W, L) points ROUNDS times
# as one sweep; diskannpy builds once, then searches ROUNDS times. Timing
# on a shared machine is noisy: the load average is printed with each side.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
work=${2:-$(mktemp -d)}
py=${VDB_PYTHON:-python3}
bin=${MLPDRIVE:-target/release/mlpdrive}
rounds=${ROUNDS:-3}
points="4:100 4:200"
[ -x "$bin" ] || cargo build --release -p mlpdrive --locked

echo "== data: $n x 128 in $work"
"$py" scripts/vdb-reference.py gen "$work/data" "$n" 128 1000 0.05 7

lists=$(for _ in $(seq "$rounds"); do for p in $points; do printf '%s,' "${p#*:}"; done; done)
echo "== mlpdrive (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$bin" run vdb/vdb-smoke --quiet --target "file://$work/target" --results "$work/res" \
    --set "base_file=$work/data/base.fbin" --set "query_file=$work/data/query.fbin" \
    --set "num_vectors=$n" --set num_query_vectors=1000 --set metric=l2 \
    --set max_degree=64 --set build_list=200 --set beam_width=4 --set queries_in_flight=8 \
    --set "sweep.search_list=[${lists%,}]" > "$work/mlpdrive.log"
"$py" - "$work/res" <<'PY'
import glob, json, os, statistics, sys
run = sorted(glob.glob(sys.argv[1] + "/*/results.json"), key=os.path.getmtime)[-1]
s = json.load(open(run))["summary"]
print(f"mlpdrive build_s {s['build_s']:.1f} (threads {s['build_threads']}, passes {s['build_passes']}), "
      f"ground_truth_s {s['ground_truth_s']:.1f}, mean degree {s['mean_degree']:.1f}")
by = {}
for p in s["sweep"]:
    by.setdefault((p["beam_width"], p["search_list"]), []).append(p)
print("| tool | W | L | recall@10 | recall@1 | reads/query | QPS (median) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (w, l), ps in by.items():
    print(f"| mlpdrive | {w} | {l} | {ps[0]['recall_at_k']:.4f} | {ps[0]['recall_at_1']:.4f} | "
          f"{ps[0]['reads_per_query']:.1f} | {statistics.median(p['throughput_qps'] for p in ps):.0f} |")
PY

if "$py" -c 'import diskannpy' 2>/dev/null; then
    echo "== diskannpy (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    OMP_WAIT_POLICY=PASSIVE KMP_BLOCKTIME=0 "$py" scripts/vdb-reference.py diskannpy "$work/data" 64 200 \
        "$(nproc)" "$points" "$rounds" > "$work/diskannpy.log" 2>&1
    grep '^diskannpy build_s' "$work/diskannpy.log" || echo "diskannpy: index reused from $work/data/diskannpy"
    "$py" - "$work/diskannpy.log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"diskannpy round \d+ W (\d+) L (\d+): recall@10 (\S+) recall@1 (\S+) reads/query (\S+) QPS (\S+)", line)
    if m:
        rows.setdefault((m[1], m[2]), []).append(m.groups()[2:])
for (w, l), rs in rows.items():
    print(f"| diskannpy | {w} | {l} | {rs[0][0]} | {rs[0][1]} | {rs[0][2]} | "
          f"{statistics.median(float(r[3]) for r in rs):.0f} |")
PY
else
    echo "== diskannpy is not installed for $py: reference columns skipped" >&2
fi
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
