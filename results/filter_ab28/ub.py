# upper bounds: fresh search with (a) as is, (b) plan memoised (zero-cost plan), (c) + direct compile
import time, sys
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
from gsu.index import Filter, _filter_kernels as fk
from gsu.index import _mutable
from gsu.index.filters import CompiledFilter
harness.pin_threads(1)
cache = Path("/work/tmp/s23/fcache")
for cell in sys.argv[1].split(";"):
    name, kind, sel = cell.split(",")
    ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
    idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
    q = ds.q; h = idx.hnsw; n = h._n
    allowed = make_filters(ds, kind, float(sel), np.random.default_rng(123))
    nq = len(allowed)
    cached = [Filter(a) for a in allowed]
    orig_plan = idx._plan_one; orig_comp = h.compile_filter
    memo = {}
    plans = [None] * nq
    for i in range(nq):
        cf = h.compile_filter(allowed[i], 1); plans[i] = orig_plan(cf.count, cf.run is not None, 10, 1.0, idx._fits[None].settings, cf)
    cur = [0]
    def fake_plan(*a, **kw): return plans[cur[0]]
    def fast_comp(f, nq_):
        bm, m, rmin, rmax = fk.ids_bitmap64(f, 0, n)
        return CompiledFilter.from_bitmap(bm, m, n, None)
    def run(lab, fl):
        for i in range(nq): cur[0] = i; idx.search(q[i], 10, filter=fl[i])
        ts = []
        for rep in range(9):
            t0 = time.perf_counter()
            for i in range(nq): cur[0] = i; idx.search(q[i], 10, filter=fl[i])
            ts.append((time.perf_counter() - t0) / nq * 1e6)
        return np.median(ts)
    res = {}
    for rnd in range(2):
        idx._plan_one = orig_plan; h.compile_filter = orig_comp
        res.setdefault("fresh", []).append(run("fresh", allowed))
        res.setdefault("cached", []).append(run("cached", cached))
        idx._plan_one = fake_plan
        res.setdefault("fresh-noplan", []).append(run("fresh", allowed))
        if kind != "time-range" and h._idmap.offset == 0:
            h.compile_filter = fast_comp
            res.setdefault("fresh-noplan-fastcomp", []).append(run("fresh", allowed))
    print(cell, " ".join(f"{k} {np.mean(v):.1f}" for k, v in res.items()), flush=True)
