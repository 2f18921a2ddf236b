import time, sys, dataclasses, collections
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
harness.pin_threads(1)
cache = Path("/work/tmp/s23/fcache")
for cell in sys.argv[1].split(";"):
    name, kind, sel = cell.split(",")
    ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
    idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
    q = ds.q
    allowed = make_filters(ds, kind, float(sel), np.random.default_rng(123))
    nq = len(allowed)
    fit = idx._fit(None)
    new = fit
    old = dataclasses.replace(fit, settings=dataclasses.replace(fit.settings, band_away_scan_us=(), band_away_ivf_us=()))
    n = idx.hnsw._n
    ex = {}
    res = {"old": [], "new": []}
    for rnd in range(6):
        for lab, f in (("old", old), ("new", new)) if rnd % 2 else (("new", new), ("old", old)):
            idx._fits[None] = f
            for i in range(nq): idx.search(q[i], 10, filter=allowed[i])
            ts = []
            for rep in range(3):
                t0 = time.perf_counter()
                for i in range(nq): idx.search(q[i], 10, filter=allowed[i])
                ts.append((time.perf_counter() - t0) / nq * 1e6)
            res[lab].append(np.median(ts))
    c = collections.Counter()
    for i in range(nq):
        cf = idx.hnsw.compile_filter(allowed[i], 1)
        a = idx._plan_one(cf.count, False, 10, 1.0, new.settings, cf); b = idx._plan_one(cf.count, False, 10, 1.0, old.settings, cf)
        c[(a != b)] += 1
    print(cell, "old", round(np.median(res["old"]), 1), "new", round(np.median(res["new"]), 1), "plans changed", c[True], "of", nq, res)
