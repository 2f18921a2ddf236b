"""Calibration's held_out (the rows' nodes removed, their neighbours' links repaired) against the
row in the graph and an index built without the rows: same 100 rows, random 50 % filters, fixed beams."""
import numpy as np
from gsu.index import FilteredIndex
from gsu.index._calibrate import held_out
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
truth = [np.partition(X[sets[i]] @ X[qrows[i]], -10)[-10] for i in range(nq)]
def rec(idx, ef):
    hits = 0
    for i in range(nq):
        got = idx.search(X[qrows[i]], 10, filter=sets[i], route="hnsw", hnsw_ef=ef).ids[0]
        hits += int((X[np.sort(got[got >= 0])] @ X[qrows[i]] >= truth[i] - 1e-6).sum())
    return hits / (10 * nq)
for ef in (1.0, 1.5, 2.0, 2.8):
    a = rec(full, ef)
    with held_out(full, qrows):
        b = rec(full, ef)
    c = rec(part, ef)
    print(f"hnsw_ef {ef}: row in graph {a:.3f}, held_out (calibration's) {b:.3f}, index built without the rows {c:.3f}", flush=True)
