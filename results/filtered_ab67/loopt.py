"""µs a request (median of eight passes over 100 queries, fresh sorted random id arrays) at
1, 10 and 50 %: python loopt.py INDEX.gsu QUERIES.npy, run with PYTHONPATH set to the
worktree whose code it times (old and new code in alternating processes)."""
import sys, time, numpy as np
from gsu.index import FilteredIndex
idx = FilteredIndex.load(sys.argv[1])
Q = np.load(sys.argv[2]).astype(np.float32)
n = idx.ntotal
idx.warm_up()
out = []
for sel in (0.01, 0.1, 0.5):
    rng = np.random.default_rng(0)
    sets = [np.sort(rng.choice(n, int(sel*n), replace=False)).astype(np.int64) for _ in range(100)]
    qs = [np.ascontiguousarray(Q[i:i+1]) for i in range(100)]
    ts = []
    for rep in range(9):
        t0 = time.perf_counter()
        for i in range(100):
            idx.search(qs[i], 10, filter=sets[i])
        ts.append((time.perf_counter() - t0) / 100 * 1e6)
    out.append("%.2f" % np.median(ts[1:]))
print(" ".join(out))
