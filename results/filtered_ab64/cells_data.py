"""Median µs of 100 fresh-filter searches (9 passes) per cell, a hash of the answers and recall@10 against the exact
route, on a data set named by a SPEC (a file, `gen:...`): python cells_data.py OUT.json SPEC CACHE kind:sel ... — the
gsu index is the one `gsu bench filtered --data SPEC --cache CACHE` built; the suite's filter kinds, rng(1)."""
import json, sys, time
from pathlib import Path
import numpy as np
import gsu
from gsu.bench.filtered import make_filters
from gsu.bench.filtered_data import from_registry
from gsu.index import load

out_path, spec, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
ds = from_registry(spec, nq=100, seed=0)
idx = load(str(next(cache.glob(f"{ds.name}_*_s0.gsu"))))
q = np.ascontiguousarray(ds.q[:100])
out = {}
for cell in sys.argv[4:]:
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
    out[cell] = (float(np.median(ts)), int(ids.sum() % 1000003), rec)
json.dump({"pkg": gsu.__file__, "spec": spec, "cells": out}, open(out_path, "w"))
print(gsu.__file__, {k: (round(v[0], 1), round(v[2], 3)) for k, v in out.items()})
