"""Seismic batch search with 1 vs 2 numba threads (search_serial vs search_parallel) in the
gsu checkout given as the first argument (before the fix the parallel twin shared the serial
twin's numba cache entry). Run twice per checkout: the first run fills numba's cache, the
second loads from it (what a user gets from the second process on).

    python results/seismic_parallel_cache.py /path/to/checkout label"""
import json, os, sys, time
import numpy as np
import numba
sys.path.insert(0, sys.argv[1])
from gsu.datasets.synthetic import sparse_collection
from gsu.index import SeismicIndex, load
tag = sys.argv[2]
p = os.path.join(os.environ.get("GSU_CACHE", os.path.expanduser("~/.cache/gsu")), "seismic_par", "idx.gsu")
os.makedirs(os.path.dirname(p), exist_ok=True)
col = sparse_collection(60_000, 512, seed=0)
if os.path.exists(p):
    idx = load(p)
else:
    idx = SeismicIndex.build(col.docs, auto_calibrate=False)
    idx.save(p)
q = col.queries.tocsr().astype(np.float32)
out = {"tree": tag}
for th in (1, 2):
    numba.set_num_threads(th)
    idx.search(q[:64], 10, query_cut=10, heap_factor=0.9)  # warm (compile or cache load)
    ts = []
    for _ in range(5):
        t = time.perf_counter(); idx.search(q, 10, query_cut=10, heap_factor=0.9); ts.append(time.perf_counter() - t)
    out[f"t{th}_ms"] = round(1000 * float(np.median(ts)), 1)
out["speedup_2_vs_1"] = round(out["t1_ms"] / out["t2_ms"], 2)
print(json.dumps(out))
