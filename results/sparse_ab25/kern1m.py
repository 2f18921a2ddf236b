"""Split the per-query filtered call at 10^6: Filter(ids)+compile alone, and the search with the compiled filter reused."""
import sys, time
from pathlib import Path
import numpy as np
import gsu
from gsu.index import Filter, load
from gsu.bench import harness, sparse as S
harness.pin_threads(1)
label = sys.argv[1]
cache = Path("/work/tmp/s24/sp1m"); n = 1000000
docs, queries, ti, ts = S._scale_data(n, 300, 0, cache)
del docs
nq = 100
rows = [queries[i] for i in range(nq)]
idx = load(cache / "gsu_rarity-1000000.gsu", mmap=False)
rng = np.random.default_rng(3)
for sel in (0.05, 0.5):
    sets = [np.sort(rng.choice(n, int(sel * n), replace=False)) for _ in range(nq)]
    fs = [Filter(s) for s in sets]
    for i in range(nq):
        idx.search(rows[i], 10, query_cut=3, heap_factor=1.0, filter=fs[i])  # compiles and caches each
    a, b, c = [], [], []
    for r in range(5):
        t = time.perf_counter()
        for i in range(nq):
            idx.search(rows[i], 10, query_cut=3, heap_factor=1.0, filter=fs[i])
        a.append((time.perf_counter() - t) / nq * 1e3)
        t = time.perf_counter()
        for i in range(nq):
            idx.search(rows[i], 10, query_cut=3, heap_factor=1.0)
        b.append((time.perf_counter() - t) / nq * 1e3)
        t = time.perf_counter()
        for i in range(nq):
            idx.hnsw.compile_filter(Filter(sets[i]), 1) if hasattr(idx, "hnsw") else idx.compile_filter(Filter(sets[i]), 1).rows
        c.append((time.perf_counter() - t) / nq * 1e3)
    print(label, sel, "cached filter %.4f  unfiltered %.4f  Filter+compile+rows %.4f" % (np.median(a), np.median(b), np.median(c)), flush=True)
