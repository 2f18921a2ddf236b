"""Held-out rows (their node in the graph, the row excluded by the filter) vs fresh mixture draws, random 50 %, default plan."""
import sys, time
import numpy as np
import gsu.index
from gsu.bench import harness
from gsu.datasets.synthetic import clustered_catalog, catalog_queries
harness.pin_threads(1)
n, d = int(sys.argv[1]), int(sys.argv[2])
path, data = sys.argv[3], sys.argv[4]
x = np.load(data, mmap_mode="r")
idx = gsu.index.load(path, mmap=False)
cat = clustered_catalog(n, d, n_clusters=max(64, int(np.sqrt(n) / 4)), seed=0)
assert np.array_equal(cat.vectors[:5], np.asarray(x[:5]))
X = np.asarray(x, dtype=np.float32)
rng = np.random.default_rng(3); nq = 100
qrows = rng.choice(n, nq, replace=False)
for sel in [float(v) for v in sys.argv[5].split(",")] if len(sys.argv) > 5 else (0.5, 0.1):
    sets = [np.sort(rng.choice(n, int(sel * n), replace=False)) for _ in range(nq)]
    for name, Q, drop in (("held-out rows", X[qrows], True), ("mixture draws", catalog_queries(cat, nq, seed=7), False)):
        hits = 0
        for i in range(nq):
            al = sets[i][sets[i] != qrows[i]] if drop else sets[i]
            sc = X[al] @ Q[i]; kth = np.partition(sc, -10)[-10]
            got = idx.search(Q[i], 10, filter=al).ids[0]
            hits += int((X[np.sort(got[got >= 0])] @ Q[i] >= kth - 1e-6).sum())
        print(f"n={n} sel={sel} {name}: recall {hits / (10 * nq):.3f}", flush=True)
    print(idx.explain(X[qrows[:1]], 10, filter=sets[0]))
