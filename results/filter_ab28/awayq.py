import time, sys, dataclasses, collections
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
harness.pin_threads(1)
cache = Path("/work/tmp/s23/fcache")
name, kind, sel = sys.argv[1].split(",")
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
q = ds.q
allowed = make_filters(ds, kind, float(sel), np.random.default_rng(123))
nq = len(allowed); n = idx.hnsw._n
fit = idx._fit(None)
old = dataclasses.replace(fit, settings=dataclasses.replace(fit.settings, band_away_scan_us=(), band_away_ivf_us=()))
def per_query(f):
    idx._fits[None] = f
    t = np.zeros(nq)
    for rep in range(5):
        for i in range(nq):
            t0 = time.perf_counter(); idx.search(q[i], 10, filter=allowed[i]); t[i] += time.perf_counter() - t0
    return t / 5 * 1e6
for i in range(nq): idx.search(q[i], 10, filter=allowed[i])
tn = per_query(fit); to = per_query(old); tn2 = per_query(fit); to2 = per_query(old)
tn = (tn + tn2) / 2; to = (to + to2) / 2
st = fit.settings
rows = []
for i in range(nq):
    cf = idx.hnsw.compile_filter(allowed[i], 1)
    a = idx._plan_one(cf.count, False, 10, 1.0, st, cf); b = idx._plan_one(cf.count, False, 10, 1.0, old.settings, cf)
    idx._fits[None] = fit; en = idx.explain(q[i], 10, filter=allowed[i]).routes[0]
    idx._fits[None] = old; eo = idx.explain(q[i], 10, filter=allowed[i]).routes[0]
    rows.append((cf.count / n, a != b, en, eo, tn[i], to[i]))
r = np.array([(x[0], x[1], x[2], x[3], x[4], x[5]) for x in rows], float)
for ch in (0, 1):
    sel_ = r[:, 1] == ch
    print("plan changed" if ch else "same plan", int(sel_.sum()), "new us", r[sel_, 4].mean().round(1), "old us", r[sel_, 5].mean().round(1))
    for en in (0, 1, 2):
        for eo in (0, 1, 2):
            s2 = sel_ & (r[:, 2] == en) & (r[:, 3] == eo)
            if s2.any(): print("   routes new", en, "old", eo, int(s2.sum()), "new us", r[s2, 4].mean().round(1), "old us", r[s2, 5].mean().round(1), "s", r[s2, 0].mean().round(3))
