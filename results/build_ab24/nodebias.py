"""Is a held-out row easier because its own node is in the graph? The same 100 rows as queries on
(a) the full index (the row in the graph, left out of the answer by the filter) and (b) an index
built without them (same ids for the rest), random 50 % filters, the walk forced at fixed beams."""
import numpy as np, time
from gsu.index import FilteredIndex
from gsu.bench.build import _catalog
from gsu.bench import harness
n, d, nq = 200_000, 64, 100
X = _catalog(n, d).vectors
rng = np.random.default_rng(4)
qrows = np.sort(rng.choice(n, nq, replace=False))
keep = np.setdiff1d(np.arange(n), qrows)
harness.pin_threads(2)
full = FilteredIndex(d, calibrate=False); full.add(X, np.arange(n))
part = FilteredIndex(d, calibrate=False); part.add(X[keep], keep)
harness.pin_threads(1)
sets = [np.sort(rng.choice(keep, int(0.5 * n), replace=False)) for _ in range(nq)]
truth = []
for i in range(nq):
    sc = X[sets[i]] @ X[qrows[i]]
    truth.append(np.partition(sc, -10)[-10])
for ef in (1.0, 1.5, 2.0, 2.8, 4.0):
    out = []
    for name, idx in (("row in graph", full), ("row not in graph", part)):
        hits = 0
        for i in range(nq):
            got = idx.search(X[qrows[i]], 10, filter=sets[i], route="hnsw", hnsw_ef=ef).ids[0]
            hits += int((X[np.sort(got[got >= 0])] @ X[qrows[i]] >= truth[i] - 1e-6).sum())
        out.append(f"{name} {hits / (10 * nq):.3f}")
    print(f"hnsw_ef {ef}: " + ", ".join(out), flush=True)
