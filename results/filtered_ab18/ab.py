import sys, time, json
import numpy as np
from threadpoolctl import threadpool_limits
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index, gsu.index.planner as P

name = sys.argv[1]; kinds = sys.argv[2].split(","); sels = [float(x) for x in sys.argv[3].split(",")]
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
X, Q = ds.x, ds.q
fc = Path("/work/tmp/s17/fcache")
idx = gsu.index.load(str([f for f in fc.glob(f"{name}_*.gsu")][0]), mmap=False)
fits = {}
for flag in (False, True):
    P.SPLIT_BY_USERS = flag; idx._fits.clear(); fits[flag] = idx._fit(None)
idx._fits.clear()
with threadpool_limits(1):
    for kind in kinds:
        for sel in sels:
            filters = make_filters(ds, kind, sel, np.random.default_rng(7))
            if filters is None: continue
            truth = []
            for i in range(100):
                s = X[filters[i]] @ Q[i]
                truth.append(set(filters[i][np.argsort(-s)[:10]].tolist()))
            res = {}
            for flag in (False, True):
                idx._fits[None] = fits[flag]
                r = np.mean([len(truth[i] & set(idx.search(Q[i], 10, filter=filters[i]).ids[0].tolist())) / 10 for i in range(100)])
                ex = idx.explain(Q[:5], 10, filter=filters[0])
                res[flag] = {"rec": r, "t": [], "routes": ex.routes.tolist()}
            for rnd in range(9):
                for flag in ((False, True) if rnd % 2 == 0 else (True, False)):
                    idx._fits[None] = fits[flag]
                    for i in range(100): idx.search(Q[i], 10, filter=filters[i])
                    t = time.perf_counter()
                    for i in range(100): idx.search(Q[i], 10, filter=filters[i])
                    res[flag]["t"].append((time.perf_counter() - t) * 1e4)
            o, n_ = res[False], res[True]
            mo, mn = np.median(o["t"]), np.median(n_["t"])
            print(f"{name:18s} {kind:10s} {sel:5}: old {mo:7.1f} µs r={o['rec']:.3f} {o['routes']}  new {mn:7.1f} µs r={n_['rec']:.3f} {n_['routes']}  speedup {mo/mn:.2f}", flush=True)
