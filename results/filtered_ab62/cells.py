"""Median µs of 100 fresh-filter searches (9 passes) per cell and a hash of the answers: python cells.py OUT.json
name:kind:sel ... (GSU_CELLS_CACHE: the index files' folder; GSU_CELLS_RECALL=1: recall@10 against the exact
route as a third value)."""
import os, sys, time, json, numpy as np
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
from gsu.index import load
import gsu
cache = Path(os.environ.get("GSU_CELLS_CACHE", "/work/tmp/s61/fsuite/cache"))
RECALL = os.environ.get("GSU_CELLS_RECALL") == "1"
CELLS = [c.split(":") for c in sys.argv[2:]]
out = {}
byds = {}
for name, kind, sel in CELLS:
    byds.setdefault(name, []).append((kind, sel))
for name, cells in byds.items():
    ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
    idx = load(str(next(cache.glob(f"{name}_*_s0.gsu"))))
    q = ds.q
    for kind, sel in cells:
        allowed = make_filters(ds, kind, float(sel), np.random.default_rng(1))
        gt = [set(idx.search(q[i], 10, filter=allowed[i], route="exact").ids[0].tolist()) for i in range(100)] if RECALL else None
        for i in range(100): idx.search(q[i], 10, filter=allowed[i])
        ts = []
        for rep in range(9):
            t = time.perf_counter()
            for i in range(100): idx.search(q[i], 10, filter=allowed[i])
            ts.append((time.perf_counter() - t) / 100 * 1e6)
        ids = np.stack([idx.search(q[i], 10, filter=allowed[i]).ids[0] for i in range(100)])
        out[f"{name}:{kind}:{sel}"] = (float(np.median(ts)), int(ids.sum() % 1000003))
        if RECALL:
            out[f"{name}:{kind}:{sel}"] += (float(np.mean([len(gt[i] & set(ids[i].tolist())) / 10 for i in range(100)])),)
json.dump({"pkg": gsu.__file__, "cells": out}, open(sys.argv[1], "w"))
print(gsu.__file__, {k: round(v[0], 1) for k, v in out.items()})
