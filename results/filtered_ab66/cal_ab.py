"""python cal_ab.py OUT.json SPEC CACHE MAXSEC SEED kind:sel ... : the index built once (cached), recalibrated by this
code (max_seconds, seed), then median µs of 100 fresh-filter searches per cell (9 passes), recall vs exact."""
import json, sys, time, os
from pathlib import Path
import numpy as np
import gsu
from gsu.bench.filtered import make_filters
from gsu.bench.filtered_data import from_registry
from gsu.index import load, FilteredIndex

out_path, spec, cache, maxsec, seed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
ds = from_registry(spec, nq=100, seed=0)
cache.mkdir(parents=True, exist_ok=True)
f = cache / f"{ds.name}.gsu"
if not f.exists():
    idx = FilteredIndex(ds.x.shape[1], metric=ds.metric)
    idx.add(ds.x)
    idx.save(str(f))
idx = load(str(f))
t = time.perf_counter()
cal = idx.calibrate(max_seconds=maxsec, seed=seed, progress=False) if maxsec >= 0 else idx.calibration
cs = time.perf_counter() - t
st = idx.settings
sets = {k: getattr(st, k) for k in ("exact_max_rows", "exact_run_factor", "hnsw_min_selectivity", "probe_min_selectivity",
                                   "probe_min_share", "ivf_candidates", "ivf_min_lists", "hnsw_ef")}
sets["points"] = [p["s"] for p in cal.points]
q = np.ascontiguousarray(ds.q[:100])
out = {}
for cell in sys.argv[6:]:
    kind, sel = cell.split(":")
    allowed = make_filters(ds, kind, float(sel), np.random.default_rng(1))
    gt = [set(idx.search(q[i], 10, filter=allowed[i], route="exact").ids[0].tolist()) for i in range(100)]
    for i in range(100):
        idx.search(q[i], 10, filter=allowed[i])
    ts = []
    for rep in range(9):
        t = time.perf_counter()
        for i in range(100):
            idx.search(q[i], 10, filter=allowed[i])
        ts.append((time.perf_counter() - t) / 100 * 1e6)
    ids = np.stack([idx.search(q[i], 10, filter=allowed[i]).ids[0] for i in range(100)])
    rec = float(np.mean([len(gt[i] & set(ids[i].tolist())) / 10 for i in range(100)]))
    routes = {}
    for i in range(0, 100, 5):
        r = idx.explain(q[i], 10, filter=allowed[i]).route_names()[0]
        routes[r] = routes.get(r, 0) + 1
    out[cell] = (float(np.median(ts)), int(ids.sum() % 1000003), rec, routes)
json.dump({"pkg": gsu.__file__, "spec": spec, "cal_s": cs, "settings": sets, "cells": out}, open(out_path, "w"), default=str)
print(gsu.__file__, round(cs, 2), sets, {k: (round(v[0], 1), round(v[2], 3), v[3]) for k, v in out.items()})
