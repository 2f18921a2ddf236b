import time, sys
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
harness.pin_threads(1)
name, kind, sel = sys.argv[1], sys.argv[2], float(sys.argv[3])
cache = Path("/work/tmp/s23/fcache")
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
q = ds.q
allowed = make_filters(ds, kind, sel, np.random.default_rng(123))
nq = len(allowed)
n = idx.hnsw._n
for tr in (0.95, 0.99):
    st = idx._fit(tr).settings
    plans = {}
    import collections
    c = collections.Counter()
    for i in range(nq):
        cf = idx.hnsw.compile_filter(allowed[i], 1)
        p = idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
        c[(p[0], p[1] > 0, p[3], p[4], p[5])] += 1
    print(tr, "exact_max_rows", round(st.exact_max_rows), "m range", min(len(a) for a in allowed), max(len(a) for a in allowed))
    for k, v in sorted(c.items(), key=lambda kv: -kv[1])[:6]: print("   ", k, v)
    # time per query
    ts = []
    for rep in range(3):
        t0 = time.perf_counter()
        for i in range(nq): idx.search(q[i], 10, filter=allowed[i], target_recall=tr)
        ts.append((time.perf_counter() - t0) / nq * 1e6)
    print("   us", np.median(ts))
# exact route for all
ts = []
for rep in range(3):
    t0 = time.perf_counter()
    for i in range(nq): idx.search(q[i], 10, filter=allowed[i], route="exact")
    ts.append((time.perf_counter() - t0) / nq * 1e6)
print("exact us", np.median(ts))
