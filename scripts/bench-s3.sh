#!/usr/bin/env bash
# mlpdrive's S3 object mode vs s3dlio (PyPI, 0.10.x) on one local S3 server.
#
# Starts a local S3 server on 127.0.0.1 (s3s-fs over a tmpfs directory,
# served by scripts/s3-bench-server built in release mode, or moto_server),
# creates the bucket, installs s3dlio into a
# venv under the cache directory, then runs ROUNDS alternating rounds (the
# tool that goes first alternates) of, for 64 MiB and 1 MiB objects at
# concurrency 1 and 16:
#   * PUT: `mlpdrive run raw --set rw=put` and `s3dlio.put(...)` of the same
#     number of objects of the same size (random payloads), each object one
#     PutObject on both sides (s3dlio sends a 64 MiB object as one PutObject;
#     mlpdrive gets `s3.part_size` = the object size, at least the default
#     8 MiB, to do the same instead of a multipart upload);
#   * GET: `mlpdrive run raw --set rw=get` (every byte verified) and
#     `s3dlio.get_many_stats(...)` (no verification) of those objects.
# Throughput is each tool's own timing of the operation (mlpdrive: the
# measured window; s3dlio: time around the call). Client CPU is user+sys of
# the client process: mlpdrive's results.json (getrusage of the whole run,
# setup and GET's prepare check included), s3dlio's getrusage delta around
# the call. Prints every run, then medians per case, the ratio mlpdrive /
# s3dlio throughput (goal ≥ 1.0) and CPU-s per GiB, and `uptime` before and
# after.
#
# Usage: scripts/bench-s3.sh [--server s3s|moto] [--rounds N] [--n-64m N] [--n-1m N]
#   --n-64m  objects per 64 MiB case (default 16: 1 GiB)
#   --n-1m   objects per 1 MiB case (default 256: 256 MiB)
#   --server-threads N  tokio worker threads of the s3s-fs server (default 2)
# MLPDRIVE=path skips mlpdrive's release build; BENCH_S3_SERVER=path skips
# the server's (built into target/s3-bench-server otherwise).
set -euo pipefail

server=s3s
rounds=3
n_64m=16
n_1m=256
server_threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --n-64m) n_64m=$2; shift 2 ;;
    --n-1m) n_1m=$2; shift 2 ;;
    --server-threads) server_threads=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$server" in s3s|moto) ;; *) echo "--server must be s3s or moto" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$here/target}
if [ -z "${MLPDRIVE:-}" ]; then
  cargo build --release -q -p mlpdrive --manifest-path "$here/Cargo.toml"
fi
mlpdrive=${MLPDRIVE:-$target_dir/release/mlpdrive}

cache=${XDG_CACHE_HOME:-$HOME/.cache}/mlpdrive-bench
venv=$cache/s3dlio-venv
if ! "$venv/bin/python" -c 'import s3dlio' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 's3dlio==0.10.*'
fi
s3dlio_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("s3dlio"))')

work=$(mktemp -d)
shm=$(mktemp -d -p /dev/shm mlpdrive-bench-s3.XXXXXX 2>/dev/null || mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work" "$shm"
}
trap cleanup EXIT

# The test credentials of tests/e2e/s3_server.rs (s3s-fs checks them; moto
# accepts any); no host profile is read.
export AWS_ACCESS_KEY_ID=MLPDRIVETESTACCESS01
export AWS_SECRET_ACCESS_KEY='mlpdrive/test+secret0123456789abcdefSECRET'
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=$work/no-config AWS_SHARED_CREDENTIALS_FILE=$work/no-credentials
export AWS_EC2_METADATA_DISABLED=true
bucket=bench

if [ "$server" = s3s ]; then
  # s3s-fs in release mode: a package of its own (not a workspace member).
  bin=${BENCH_S3_SERVER:-}
  if [ -z "$bin" ]; then
    cargo build --release -q --locked --manifest-path "$here/scripts/s3-bench-server/Cargo.toml" \
      --target-dir "$target_dir/s3-bench-server"
    bin=$target_dir/s3-bench-server/release/mlpdrive-s3-bench-server
  fi
  mkdir -p "$shm/$bucket"
  MLPDRIVE_BENCH_S3_ACCESS_KEY=$AWS_ACCESS_KEY_ID MLPDRIVE_BENCH_S3_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
    "$bin" "$shm" "$work/port" "$server_threads" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
  port=$(cat "$work/port")
  server_desc="s3s-fs 0.14.1 (release build, $server_threads threads) on tmpfs"
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  moto_server -H 127.0.0.1 -p "$port" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  server_desc="moto_server $(python3 -c 'import importlib.metadata as m; print(m.version("moto"))') (Python)"
fi
endpoint=http://127.0.0.1:$port
export AWS_ENDPOINT_URL=$endpoint
if [ "$server" = moto ]; then
  "$venv/bin/python" -c "import s3dlio; s3dlio.create_bucket('$bucket')"
fi

# One s3dlio operation: prints "seconds bytes cpu_s".
s3dlio_run() { # op prefix count size concurrency
  "$venv/bin/python" - "$@" <<'EOF'
import resource, sys, time
import s3dlio
op, prefix, n, size, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
uris = [f"{prefix}obj{i}_of_{n}" for i in range(n)]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
if op == "put":
    s3dlio.put(prefix, n, "obj{}_of_{}", max_in_flight=conc, size=size, object_type="random")
    moved = n * size
else:
    stats = s3dlio.get_many_stats(uris, max_in_flight=conc)
    moved = stats[1] if isinstance(stats, (tuple, list)) else n * size
t1, c1 = time.perf_counter(), cpu()
if op == "get" and moved != n * size:
    sys.exit(f"s3dlio GET moved {moved} bytes, expected {n * size}")
print(f"{t1 - t0:.6f} {moved} {c1 - c0:.6f}")
EOF
}

# One mlpdrive operation: prints "seconds bytes cpu_s".
mlpdrive_run() { # op target count size concurrency
  local out=$work/mlp.json
  "$mlpdrive" run raw --quiet --target "$2" --results "$work/res" --output "$out" \
    --set s3.endpoint="$endpoint" --set rw="$1" --set object_size="$4" --set objects="$3" \
    --set concurrency="$5" --set bytes=$(( $3 * $4 )) --set duration=null \
    --set s3.part_size=$(( $4 > 8 << 20 ? $4 : 8 << 20 )) >/dev/null
  python3 - "$out" "$1" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["status"] == "ok", j["errors"]
s = j["summary"][sys.argv[2]]
print(f'{s["bytes"] / s["bytes_per_s"]:.6f} {s["bytes"]} {j["cpu_user_s"] + j["cpu_sys_s"]:.6f}')
EOF
}

echo "server: $server_desc at $endpoint; s3dlio $s3dlio_version; mlpdrive $("$mlpdrive" --version)"
echo "uptime before: $(uptime)"
log=$work/runs.tsv
printf 'round\ttool\top\tsize\tconcurrency\tseconds\tbytes\tcpu_s\n' >"$log"
cases=("67108864 $n_64m" "1048576 $n_1m")
for round in $(seq "$rounds"); do
  for c in "${cases[@]}"; do
    read -r size count <<<"$c"
    for conc in 1 16; do
      tag=$((size >> 20))m-c$conc
      tools=(mlpdrive s3dlio)
      if [ $((round % 2)) -eq 0 ]; then tools=(s3dlio mlpdrive); fi
      for op in put get; do
        for tool in "${tools[@]}"; do
          if [ "$tool" = mlpdrive ]; then
            r=$(mlpdrive_run "$op" "s3://$bucket/mlp-$tag" "$count" "$size" "$conc")
          else
            r=$(s3dlio_run "$op" "s3://$bucket/s3dlio-$tag/" "$count" "$size" "$conc")
          fi
          read -r secs bytes cpu <<<"$r"
          printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$op" "$size" "$conc" "$secs" "$bytes" "$cpu" >>"$log"
          printf 'round %s %-8s %-3s %3d MiB c%-2s %8.1f MiB/s %6.3f CPU-s/GiB\n' "$round" "$tool" "$op" \
            $((size >> 20)) "$conc" "$(python3 -c "print($bytes / $secs / 2**20)")" \
            "$(python3 -c "print($cpu / ($bytes / 2**30))")"
        done
      done
    done
  done
done
echo "uptime after: $(uptime)"
python3 - "$log" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for key in sorted({(r["op"], int(r["size"]), int(r["concurrency"])) for r in rows}, key=lambda k: (k[0] != "put", -k[1], k[2])):
    out = {}
    for tool in ("mlpdrive", "s3dlio"):
        rs = [r for r in rows if (r["op"], int(r["size"]), int(r["concurrency"])) == key and r["tool"] == tool]
        mibs = [int(r["bytes"]) / float(r["seconds"]) / 2**20 for r in rs]
        cpu = [float(r["cpu_s"]) / (int(r["bytes"]) / 2**30) for r in rs]
        out[tool] = (statistics.median(mibs), min(mibs), max(mibs), statistics.median(cpu), min(cpu), max(cpu))
    med[key] = out
print()
print("Medians over the rounds (min-max in brackets).")
print()
print("| op | object | concurrency | mlpdrive MiB/s | s3dlio MiB/s | ratio | mlpdrive CPU-s/GiB | s3dlio CPU-s/GiB |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (op, size, conc), o in med.items():
    m, s_ = o["mlpdrive"], o["s3dlio"]
    print(f"| {op.upper()} | {size >> 20} MiB | {conc} | {m[0]:.0f} ({m[1]:.0f}-{m[2]:.0f}) | {s_[0]:.0f} ({s_[1]:.0f}-{s_[2]:.0f}) "
          f"| {m[0] / s_[0]:.2f} | {m[3]:.2f} ({m[4]:.2f}-{m[5]:.2f}) | {s_[3]:.2f} ({s_[4]:.2f}-{s_[5]:.2f}) |")
EOF
