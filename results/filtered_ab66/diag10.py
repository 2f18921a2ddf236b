import time, numpy as np
from gsu.index import load
from gsu.bench.filtered import make_filters
from gsu.bench.filtered_data import from_registry
from gsu.index.filtered import IVF, HNSW
ds = from_registry("gen:powerlaw-d32", nq=100, seed=0)
idx = load("/work/tmp/s66/suite/cache/powerlaw-d32_150000x32_M32_efc200_s0.gsu")
q = np.ascontiguousarray(ds.q[:100])
allowed = make_filters(ds, "correlated", 0.1, np.random.default_rng(1))
ts = []
for i in range(100):
    b = 1e9
    for r in range(2):
        t = time.perf_counter(); idx.search(q[i], 10, filter=allowed[i]); b = min(b, time.perf_counter() - t)
    ts.append(b * 1e6)
order = np.argsort(ts)[::-1][:3]
st = idx.settings
for w in order:
    f = allowed[w]; cf = idx.hnsw.compile_filter(f, 1)
    plan = idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
    qs = idx._scoring_queries(q[w:w+1].copy())
    print("query", w, "µs", round(ts[w]), "plan", plan)
    for name, pl in (("as planned", plan), ("ivf plain", (IVF, 0.0, 0, plan[3], plan[4], None)), ("ivf+away", (IVF, 0.0, 0, plan[3], plan[4], plan[5])),
                     ("walk no probe", (HNSW, 0.0, plan[2], plan[3], plan[4], None)), ("probe, no away", (IVF, plan[1], plan[2], plan[3], plan[4], None))):
        t = time.perf_counter(); o = idx._search_one(qs, 10, idx.hnsw.compile_filter(f, 1), *pl); print("   ", name, round((time.perf_counter() - t) * 1e6), o[2])
