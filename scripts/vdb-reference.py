#!/usr/bin/env python3
"""The reference side of scripts/bench-vdb.sh: writes the benchmark's data set
(DiskANN .bin files, uniform vectors L2-normalised, planted queries), then
optionally builds and searches it with diskannpy, DiskANN's own Python
package, printing one line per (W, L) with recall@1/@10, node reads per query
(from this process's /proc/self/io read_bytes, so O_DIRECT reads count) and QPS.

    vdb-reference.py gen DIR N DIM NQ NOISE SEED
    vdb-reference.py diskannpy DIR R LBUILD THREADS "W:L W:L ..." ROUNDS
    vdb-reference.py diskannpy-build DIR R LBUILD THREADS
    vdb-reference.py diskannpy-search DIR THREADS "W:L W:L ..." ROUNDS

`diskannpy` builds the index in DIR/diskannpy unless it is there already,
then searches; `diskannpy-build` only builds (so its process's rusage is the
build's), `diskannpy-search` only loads the built index and searches.
"""
import os
import sys
import time

import numpy as np


def write_bin(path, a):
    with open(path, "wb") as f:
        np.array(a.shape, dtype=np.uint32).tofile(f)
        a.astype(np.float32).tofile(f)


def read_bin(path):
    with open(path, "rb") as f:
        n, d = np.fromfile(f, dtype=np.uint32, count=2)
        return np.fromfile(f, dtype=np.float32, count=int(n) * int(d)).reshape(int(n), int(d))


def normalise(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def gen(out, n, dim, nq, noise, seed):
    rng = np.random.default_rng(seed)
    base = normalise(rng.random((n, dim), dtype=np.float32))
    ids = rng.integers(0, n, nq)
    e = normalise(rng.standard_normal((nq, dim)).astype(np.float32))
    queries = normalise(base[ids] + noise * e)
    os.makedirs(out, exist_ok=True)
    write_bin(os.path.join(out, "base.fbin"), base)
    write_bin(os.path.join(out, "query.fbin"), queries)
    # Exact top-100 by brute force (squared L2 on normalised vectors).
    gt = np.empty((nq, 100), dtype=np.int64)
    bn = (base * base).sum(1)
    for s in range(0, nq, 100):
        q = queries[s : s + 100]
        d = bn[None, :] - 2 * q @ base.T
        top = np.argpartition(d, 100, axis=1)[:, :100]
        order = np.take_along_axis(d, top, 1).argsort(1)
        gt[s : s + 100] = np.take_along_axis(top, order, 1)
    np.save(os.path.join(out, "gt100.npy"), gt)
    print(f"gen: {n} x {dim} base, {nq} planted queries (noise {noise}) in {out}")


def read_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def recall(found, gt, at):
    return float(np.mean([len(set(f[:at]) & set(g[:at])) / at for f, g in zip(found, gt)]))


def build_diskannpy(out, r, lbuild, threads):
    import diskannpy

    base = read_bin(os.path.join(out, "base.fbin"))
    n = base.shape[0]
    idx = os.path.join(out, "diskannpy")
    os.makedirs(idx, exist_ok=True)
    # PQ of 64 bytes per vector (DiskANN derives the chunk count from the
    # search memory budget: bytes / n).
    budget_gb = 64 * n / 2**30 * 1.0001
    t0 = time.time()
    if not os.path.exists(os.path.join(idx, "ann_disk.index")):
        diskannpy.build_disk_index(
            data=os.path.join(out, "base.fbin"), distance_metric="l2", index_directory=idx,
            complexity=lbuild, graph_degree=r, search_memory_maximum=budget_gb,
            build_memory_maximum=16.0, num_threads=threads, pq_disk_bytes=0, vector_dtype=np.float32,
        )
        print(f"diskannpy build_s {time.time() - t0:.1f} (threads {threads}, R {r}, L_b {lbuild})", flush=True)


def search_diskannpy(out, threads, points, rounds):
    import diskannpy

    queries = read_bin(os.path.join(out, "query.fbin"))
    gt = np.load(os.path.join(out, "gt100.npy"))
    dim = queries.shape[1]
    idx = os.path.join(out, "diskannpy")
    index = diskannpy.StaticDiskIndex(idx, num_threads=threads, num_nodes_to_cache=0, distance_metric="l2",
                                      vector_dtype=np.float32, dimensions=dim)
    for rnd in range(rounds):
        for w, l in points:
            b0, t0 = read_bytes(), time.perf_counter()
            ids, _ = index.batch_search(queries, k_neighbors=10, complexity=l, num_threads=threads, beam_width=w)
            dt = time.perf_counter() - t0
            reads = (read_bytes() - b0) / 4096 / len(queries)
            print(f"diskannpy round {rnd} W {w} L {l}: recall@10 {recall(ids, gt, 10):.4f} recall@1 "
                  f"{recall(ids, gt, 1):.4f} reads/query {reads:.1f} QPS {len(queries) / dt:.0f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]))
    elif sys.argv[1] == "diskannpy":
        pts = [tuple(int(x) for x in p.split(":")) for p in sys.argv[6].split()]
        build_diskannpy(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        search_diskannpy(sys.argv[2], int(sys.argv[5]), pts, int(sys.argv[7]))
    elif sys.argv[1] == "diskannpy-build":
        build_diskannpy(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "diskannpy-search":
        pts = [tuple(int(x) for x in p.split(":")) for p in sys.argv[4].split()]
        search_diskannpy(sys.argv[2], int(sys.argv[3]), pts, int(sys.argv[5]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
