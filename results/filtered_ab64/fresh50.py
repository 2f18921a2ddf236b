"""The fresh 50 % filter taken apart: python fresh50.py SET SEL (an index of the suite cache GSU_CELLS_CACHE, default /work/tmp/s62/cache_rec):
the reused Filter, a fresh Filter.from_ids, a plain sorted id array, and the steps alone, on 100 cold id arrays,
the variants alternating, medians of 9 passes (µs per query)."""
import os, sys, time, numpy as np
from pathlib import Path
from gsu.index import load, Filter
from gsu.index import _filter_kernels as fk
from gsu.bench.filtered_data import load_dataset
cache = Path(os.environ.get("GSU_CELLS_CACHE", "/work/tmp/s62/cache_rec"))
name = sys.argv[1]; sel = float(sys.argv[2])
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = load(str(next(cache.glob(f"{name}_*_s0.gsu"))))
n = ds.x.shape[0]; q = ds.q; nq = 100
rng = np.random.default_rng(99)
m = int(round(sel * n))
allowed = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for _ in range(nq)]
fobj = [Filter.from_ids(a) for a in allowed]
for i in range(nq): idx.search(q[i], 10, filter=fobj[i])
h = idx.hnsw
V = {
 "cached": lambda i: idx.search(q[i], 10, filter=fobj[i]),
 "fresh from_ids": lambda i: idx.search(q[i], 10, filter=Filter.from_ids(allowed[i])),
 "plain sorted": lambda i: idx.search(q[i], 10, filter=allowed[i]),
 "from_ids": lambda i: Filter.from_ids(allowed[i]),
 "from_ids+compile": lambda i: h.compile_filter(Filter.from_ids(allowed[i]), 1),
 "from_ids+compile+plan": lambda i: (lambda cf: idx._plan_one(cf.count, cf.run is not None, 10, 1.0, idx.settings, cf))(h.compile_filter(Filter.from_ids(allowed[i]), 1)),
 "ids_bitmap64": lambda i: fk.ids_bitmap64(allowed[i], 0, n),
 "max": lambda i: allowed[i].max(),
}
res = {k: [] for k in V}
for rep in range(9):
    for k, fn in V.items():
        t = time.perf_counter()
        for i in range(nq): fn(i)
        res[k].append((time.perf_counter() - t) / nq * 1e6)
for k, v in res.items(): print(f"{k:24s} {np.median(v):7.1f}")
