"""The same index (fcache3), the fit with SPLIT_TIE 0 (before) and 0.03 (after), side by side in one process."""
import sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index, gsu.index.planner as P
name = sys.argv[1]; kinds = sys.argv[2].split(","); sels = [float(x) for x in sys.argv[3].split(",")]
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
X, Q = ds.x, ds.q
idx = gsu.index.load(str([f for f in Path("/work/tmp/s20/fcache3").glob(f"{name}_*.gsu")][0]), mmap=False)
fits = {}
for tie in (0.0, 0.03):
    P.SPLIT_TIE = tie; idx._fits.clear(); fits[tie] = idx._fit(None)
idx._fits.clear()
with threadpool_limits(1):
  for kind in kinds:
    for sel in sels:
        fl = make_filters(ds, kind, sel, np.random.default_rng(7))
        if fl is None: continue
        truth = []
        for i in range(100):
            s = X[fl[i]] @ Q[i]
            truth.append(set(fl[i][np.argsort(-s)[:10]].tolist()))
        res = {}
        for tie in (0.0, 0.03):
            idx._fits[None] = fits[tie]
            r = np.mean([len(truth[i] & set(idx.search(Q[i], 10, filter=fl[i]).ids[0].tolist())) / 10 for i in range(100)])
            res[tie] = {"rec": r, "t": [], "routes": idx.explain(Q[:3], 10, filter=fl[0]).routes.tolist()}
        for rnd in range(9):
            for tie in ((0.0, 0.03) if rnd % 2 == 0 else (0.03, 0.0)):
                idx._fits[None] = fits[tie]
                for i in range(100): idx.search(Q[i], 10, filter=fl[i])
                t = time.perf_counter()
                for i in range(100): idx.search(Q[i], 10, filter=fl[i])
                res[tie]["t"].append((time.perf_counter() - t) * 1e4)
        o, n_ = res[0.0], res[0.03]
        mo, mn = np.median(o["t"]), np.median(n_["t"])
        print(f"{name:18s} {kind:10s} {sel:5}: before {mo:7.1f} us r={o['rec']:.3f} {o['routes']}  after {mn:7.1f} us r={n_['rec']:.3f} {n_['routes']}  speedup {mo/mn:.2f}", flush=True)
