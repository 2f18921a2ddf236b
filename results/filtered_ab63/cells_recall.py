import sys, time, json, numpy as np
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
from gsu.index import load
import gsu
cache = Path("/work/tmp/s62/cache_rec")
CELLS = [c.split(":") for c in sys.argv[2:]]
out = {}
byds = {}
for name, kind, sel in CELLS:
    byds.setdefault(name, []).append((kind, sel))
for name, cells in byds.items():
    ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
    idx = load(str(next(cache.glob(f"{name}_*_s0.gsu"))))
    q = [np.ascontiguousarray(ds.q[i:i+1], dtype=np.float32) for i in range(100)]
    for kind, sel in cells:
        allowed = make_filters(ds, kind, float(sel), np.random.default_rng(1))
        gt = [set(idx.search(q[i], 10, filter=allowed[i], route="exact").ids[0].tolist()) for i in range(100)]
        for i in range(100): idx.search(q[i], 10, filter=allowed[i])
        ts = []
        for rep in range(9):
            t = time.perf_counter()
            for i in range(100): idx.search(q[i], 10, filter=allowed[i])
            ts.append((time.perf_counter() - t) / 100 * 1e6)
        rec = float(np.mean([len(gt[i] & set(idx.search(q[i], 10, filter=allowed[i]).ids[0].tolist())) / 10 for i in range(100)]))
        out[f"{name}:{kind}:{sel}"] = (float(np.median(ts)), rec)
json.dump({"pkg": gsu.__file__, "cells": out}, open(sys.argv[1], "w"))
print(gsu.__file__.split('/')[-3], {k: (round(v[0], 1), round(v[1], 3)) for k, v in out.items()})
