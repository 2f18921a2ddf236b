import sys, time, numpy as np
from pathlib import Path
from gsu.bench.build import vectors
import gsu.index, gsu.index.planner as P
from gsu.index import FilteredIndex, Filter
n = int(sys.argv[1])
path = Path(f"/work/tmp/s19/big_{n}.gsu")
data = vectors(n, 96, "clustered", Path("/work/tmp/s19/cache"))
x = np.load(data, mmap_mode="r")
if not path.exists():
    t = time.perf_counter()
    idx = FilteredIndex(96, "ip"); idx.add(np.asarray(x))
    print("build s", round(time.perf_counter() - t, 1), flush=True)
    idx.save(str(path))
idx = gsu.index.load(str(path), mmap=True)
fits = {}
for flag in (False, True):
    P.SPLIT_BY_USERS = flag; idx._fits.clear(); fits[flag] = idx._fit(None)
    st = fits[flag].settings
    print("flag", flag, "hnsw_min", st.hnsw_min_selectivity, "probe_min", st.probe_min_selectivity, "even", st.even_hnsw_min_selectivity, st.even_probe_min_selectivity, "run", st.run_hnsw_min_selectivity, st.run_probe_min_selectivity)
rng = np.random.default_rng(1)
nq = 100
qrows = rng.choice(n, nq, replace=False)
q = np.asarray(x[qrows], dtype=np.float32) + 0.05 * rng.standard_normal((nq, 96)).astype(np.float32)
for kind, s in (("random", 0.01), ("random", 0.1), ("random", 0.5), ("range", 0.01), ("range", 0.1), ("correlated", 0.1), ("correlated", 0.5)):
    m = max(10, int(s * n))
    if kind == "random":
        sets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(nq)]
    elif kind == "range":
        sets = [np.arange(a, a + m, dtype=np.int64) for a in rng.integers(0, n - m, nq)]
    else:
        sets = []
        for i in range(nq):
            sc = np.asarray(x) @ q[i]
            near = np.argpartition(-sc, int(0.8 * m))[: int(0.8 * m)]
            rest = rng.choice(n, m - near.shape[0], replace=False)
            sets.append(np.unique(np.concatenate([near, rest])))
    rec = {}
    for flag in (False, True):
        idx._fits.clear(); idx._fits[None] = fits[flag]
        hits = 0
        for i in range(nq):
            res = idx.search(q[i], 10, filter=sets[i])
            sc = np.asarray(x[sets[i]], dtype=np.float64) @ q[i].astype(np.float64)
            kth = np.partition(sc, -10)[-10]
            got = res.ids[0][res.ids[0] >= 0]
            hits += int((np.asarray(x[np.sort(got)], dtype=np.float64) @ q[i].astype(np.float64) >= kth - 1e-6).sum())
        rec[flag] = hits / (10 * nq)
    print(kind, s, "recall old fit %.3f new fit %.3f" % (rec[False], rec[True]), flush=True)
