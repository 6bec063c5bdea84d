#!/usr/bin/env python3
"""Opens an mlpdrive vdb index directory (the target's `mlpdrive/vdb`, files
`index_disk.index`, `index_pq_pivots.bin`, `index_pq_compressed.bin`,
`index_metadata.bin`) with diskannpy's StaticDiskIndex, searches a query file
with it and prints one JSON line: recall@10 and recall@1 against a DiskANN
truth-set file (mlpdrive's ground-truth cache next to the base file).

    vdb-diskannpy-check.py INDEX_DIR QUERY.fbin TRUTH.bin L W

Needs diskannpy 0.7.0 and numpy. Two search threads: diskannpy 0.7.0 was seen
to hang in its first disk read with num_threads=1 on this project's VM.
"""
import json
import sys

import numpy as np


def read_matrix(path, dtype):
    with open(path, "rb") as f:
        rows, cols = (int(x) for x in np.fromfile(f, dtype=np.uint32, count=2))
        return np.fromfile(f, dtype=dtype, count=rows * cols).reshape(rows, cols)


def main():
    import diskannpy

    index_dir, query_file, truth_file = sys.argv[1:4]
    search_list, beam_width = int(sys.argv[4]), int(sys.argv[5])
    queries = read_matrix(query_file, np.float32)
    truth = read_matrix(truth_file, np.uint32)
    # dtype, metric and dimension come from index_metadata.bin.
    index = diskannpy.StaticDiskIndex(index_dir, num_threads=2, num_nodes_to_cache=0, index_prefix="index")
    ids, _ = index.batch_search(queries, k_neighbors=10, complexity=search_list, num_threads=2,
                                beam_width=beam_width)
    hits10 = [len(set(found[:10].tolist()) & set(exact[:10].tolist())) / 10 for found, exact in zip(ids, truth)]
    hits1 = [float(found[0] == exact[0]) for found, exact in zip(ids, truth)]
    print(json.dumps({"queries": len(queries), "recall_at_10": float(np.mean(hits10)),
                      "recall_at_1": float(np.mean(hits1))}))


if __name__ == "__main__":
    main()
