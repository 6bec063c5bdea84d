#!/usr/bin/env bash
# Vector database benchmark against the reference peer (DiskANN's own
# Python package, diskannpy), on the same data and parameters:
#   100k x 128 uniform vectors, L2-normalised, 1000 planted queries
#   (noise 0.05), R 64, L_build 200, W 4, L 100 and 200, no node cache,
#   64-byte PQ codes on both sides (mlpdrive's default at 128-d).
#
# usage: scripts/bench-vdb.sh [NUM_VECTORS] [WORK_DIR]
#   VDB_PYTHON  python with numpy (and diskannpy 0.7.0 for the reference
#               columns: python3 -m venv V && V/bin/pip install diskannpy==0.7.0)
#   MLPDRIVE    the mlpdrive binary (default: target/release/mlpdrive)
#   ROUNDS      alternated rounds (default 3; medians are printed)
#
# The rounds alternate between the tools: round r runs mlpdrive (build, then
# its sweep points W 4 L 100 and 200 on the index it built), then diskannpy
# (load its index once, batch_search at the same points). mlpdrive builds
# in RAM on every run, so every mlpdrive round rebuilds its index (the build
# is deterministic: the same graph and codes each round) and every round
# gives a build figure. diskannpy builds once into WORK_DIR/data/diskannpy;
# a WORK_DIR that already holds the data and that index reuses both (say so
# when quoting its build figure). Every process runs under /usr/bin/time
# (wall and CPU seconds), with the load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
work=${2:-$(mktemp -d)}
py=${VDB_PYTHON:-python3}
bin=${MLPDRIVE:-target/release/mlpdrive}
rounds=${ROUNDS:-3}
points="4:100 4:200"
[ -x "$bin" ] || cargo build --release -p mlpdrive --locked
load() { cut -d' ' -f1-3 /proc/loadavg; }
timed() { # timed LOG CMD...: runs CMD with its output in LOG, then "time ..." and the loads
    local log=$1 before
    shift
    before=$(load)
    /usr/bin/time -o "$log.time" -f "time wall_s %e cpu_s %U+%S" "$@" > "$log" 2>&1
    echo "$(cat "$log.time") load_before $before load_after $(load)" >> "$log"
}

if [ -f "$work/data/base.fbin" ] && [ -f "$work/data/gt100.npy" ]; then
    echo "== data: reused from $work/data"
else
    echo "== data: $n x 128 in $work"
    "$py" scripts/vdb-reference.py gen "$work/data" "$n" 128 1000 0.05 7
fi

have_ref=0
if "$py" -c 'import diskannpy' 2>/dev/null; then
    have_ref=1
    export OMP_WAIT_POLICY=PASSIVE KMP_BLOCKTIME=0
    if [ -f "$work/data/diskannpy/ann_disk.index" ]; then
        echo "== diskannpy: index reused from $work/data/diskannpy (no build this run)"
    else
        echo "== diskannpy build (load: $(load))"
        timed "$work/diskannpy-build.log" "$py" scripts/vdb-reference.py diskannpy-build "$work/data" 64 200 "$(nproc)"
    fi
else
    echo "== diskannpy is not installed for $py: reference columns skipped" >&2
fi

lists=$(for p in $points; do printf '%s,' "${p#*:}"; done)
for r in $(seq "$rounds"); do
    echo "== round $r: mlpdrive (load: $(load))"
    timed "$work/mlpdrive-$r.log" "$bin" run vdb/vdb-smoke --quiet --target "file://$work/target" \
        --results "$work/res-$r" \
        --set "base_file=$work/data/base.fbin" --set "query_file=$work/data/query.fbin" \
        --set "num_vectors=$n" --set num_query_vectors=1000 --set metric=l2 \
        --set max_degree=64 --set build_list=200 --set beam_width=4 --set queries_in_flight=8 \
        --set "sweep.search_list=[${lists%,}]"
    tail -1 "$work/mlpdrive-$r.log"
    if [ "$have_ref" = 1 ]; then
        echo "== round $r: diskannpy search (load: $(load))"
        timed "$work/diskannpy-$r.log" "$py" scripts/vdb-reference.py diskannpy-search "$work/data" "$(nproc)" \
            "$points" 1
        tail -1 "$work/diskannpy-$r.log"
    fi
done

echo "== results"
"$py" - "$work" "$rounds" <<'PY'
import glob, json, os, re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])

def time_line(log):
    for line in open(log):
        m = re.match(r"time wall_s (\S+) cpu_s (\S+)\+(\S+) load_before (.*) load_after (.*)", line)
        if m:
            return float(m[1]), float(m[2]) + float(m[3]), m[4].strip(), m[5].strip()
    return None

rows, builds = {}, []
for r in range(1, rounds + 1):
    res = glob.glob(f"{work}/res-{r}/*/results.json")
    if res:
        s = json.load(open(res[0]))["summary"]
        wall, cpu, lb, la = time_line(f"{work}/mlpdrive-{r}.log")
        builds.append((r, s, wall, cpu, lb, la))
        for p in s["sweep"]:
            rows.setdefault(("mlpdrive", p["beam_width"], p["search_list"]), []).append(
                (p["recall_at_k"], p["recall_at_1"], p["reads_per_query"], p["throughput_qps"]))
    log = f"{work}/diskannpy-{r}.log"
    if os.path.exists(log):
        for line in open(log):
            m = re.match(r"diskannpy round \d+ W (\d+) L (\d+): recall@10 (\S+) recall@1 (\S+) "
                         r"reads/query (\S+) QPS (\S+)", line)
            if m:
                rows.setdefault(("diskannpy", int(m[1]), int(m[2])), []).append(tuple(float(x) for x in m.groups()[2:]))

print("| tool | W | L | recall@10 | recall@1 | reads/query | QPS median (rounds) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (tool, w, l), rs in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][0])):
    qps = [r[3] for r in rs]
    print(f"| {tool} | {w} | {l} | {rs[0][0]:.4f} | {rs[0][1]:.4f} | {rs[0][2]:.1f} | "
          f"{statistics.median(qps):.0f} ({', '.join(f'{q:.0f}' for q in qps)}) |")
print()
print("| build | wall s | CPU-s | load before / after | notes |")
print("| --- | ---: | ---: | --- | --- |")
ref = f"{work}/diskannpy-build.log"
if os.path.exists(ref):
    wall, cpu, lb, la = time_line(ref)
    print(f"| diskannpy (process) | {wall:.1f} | {cpu:.1f} | {lb} / {la} | the whole build process |")
for r, s, wall, cpu, lb, la in builds:
    print(f"| mlpdrive round {r} | {s['build_s']:.1f} | {s['build_cpu_s']:.1f} | {lb} / {la} | "
          f"build_s and build_cpu_s (codes {s['codes_build_s']:.1f} s); the whole process: {wall:.1f} s wall, "
          f"{cpu:.1f} CPU-s; ground truth {s['ground_truth_source']} |")
PY
echo "load at the end: $(load)"
