"""The public search front against the locked wrapper with its lean hook, one process:
python ab_front.py INDEX.gsu QUERIES.npy. Per selectivity (1, 10, 50 %), 100 fresh sorted
random id arrays, seven rounds alternating the two (FilteredIndex.search and its __wrapped__),
the median µs a request of each."""
import sys, time, numpy as np
from gsu.index import FilteredIndex
idx = FilteredIndex.load(sys.argv[1])
Q = np.load(sys.argv[2]).astype(np.float32)
n = idx.ntotal
rng = np.random.default_rng(0)
idx.warm_up()
new = FilteredIndex.search
old = FilteredIndex.search.__wrapped__
for sel in (0.01, 0.1, 0.5):
    sets = [np.sort(rng.choice(n, int(sel*n), replace=False)).astype(np.int64) for _ in range(100)]
    qs = [np.ascontiguousarray(Q[i:i+1]) for i in range(100)]
    res = {"old": [], "new": []}
    for rep in range(7):
        for name, f in (("old", old), ("new", new)) if rep % 2 else (("new", new), ("old", old)):
            t0 = time.perf_counter()
            for i in range(100):
                f(idx, qs[i], 10, filter=sets[i])
            res[name].append((time.perf_counter() - t0) / 100 * 1e6)
    o, nw = np.median(res["old"]), np.median(res["new"])
    print("sel %g old %.2f new %.2f us  ratio %.3f" % (sel, o, nw, o / nw))
