"""Current code, two calibrations of the same index: s17 cache (before) vs s20 cache (with the unfiltered point).
usage: ab3.py name kinds sels [seed]"""
import sys, time, zlib
import numpy as np
from threadpoolctl import threadpool_limits
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index
name = sys.argv[1]; kinds = sys.argv[2].split(","); sels = [float(x) for x in sys.argv[3].split(",")]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 7
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
X, Q = ds.x, ds.q
f = [f for f in Path("/work/tmp/s17/fcache").glob(f"{name}_*.gsu")][0]
A = gsu.index.load(str(f), mmap=False); B = gsu.index.load(str(Path("/work/tmp/s20/fcache") / f.name), mmap=False)
with threadpool_limits(1):
  for kind in kinds:
    for sel in sels:
        fl = make_filters(ds, kind, sel, np.random.default_rng(seed))
        if fl is None: continue
        truth = []
        for i in range(100):
            s = X[fl[i]] @ Q[i]
            truth.append(set(fl[i][np.argsort(-s)[:10]].tolist()))
        res = {}
        for nm, idx in (("old", A), ("new", B)):
            ids = [idx.search(Q[i], 10, filter=fl[i]).ids[0] for i in range(100)]
            ex = idx.explain(Q[:3], 10, filter=fl[0])
            res[nm] = [np.mean([len(truth[i] & set(ids[i].tolist())) / 10 for i in range(100)]), (ex.routes.tolist(), ex.ef.tolist(), ex.candidates.tolist()), []]
        for rnd in range(9):
            for nm, idx in ((("old", A), ("new", B)) if rnd % 2 == 0 else (("new", B), ("old", A))):
                for i in range(100): idx.search(Q[i], 10, filter=fl[i])
                t = time.perf_counter()
                for i in range(100): idx.search(Q[i], 10, filter=fl[i])
                res[nm][2].append((time.perf_counter() - t) * 1e4)
        o, n_ = res["old"], res["new"]
        mo, mn = np.median(o[2]), np.median(n_[2])
        print(f"{name:16s} {kind:10s} {sel:5}: old {mo:7.1f} us r={o[0]:.3f} {o[1]}  new {mn:7.1f} us r={n_[0]:.3f} {n_[1]}  speedup {mo/mn:.3f}", flush=True)
