import time, sys
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
from gsu.index import _plan_kernel as pk
from gsu.index._direct import direct_entry
harness.pin_threads(1)
name, kind, sel = sys.argv[1], sys.argv[2], float(sys.argv[3])
cache = Path("/work/tmp/s23/fcache")
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
h = idx.hnsw; q = ds.q
allowed = make_filters(ds, kind, sel, np.random.default_rng(123))
nq = len(allowed); st = idx._fits[None].settings
T = time.perf_counter_ns
acc = {}
def add(k, v): acc[k] = acc.get(k, 0) + v
NR = np.zeros(0, np.int64)
cfs = [h.compile_filter(a, 1) for a in allowed]
ctx = idx._plan_ctx(); P = st.plan_consts; n = h._n
args0 = (P, ctx[0], ctx[1], ctx[2], ctx[3], cfs[0].count, n, False, 10, 1.0, True, -1, cfs[0]._masks["bitmap64"], 0, 0, NR)
ep = direct_entry(pk.plan_shared, args0)
print("entry", ep is not pk.plan_shared)
for rep in range(6):
    if rep == 1: acc.clear()
    for i in range(nq):
        bm = cfs[i]._masks["bitmap64"]; m = cfs[i].count
        idx.search(q[i], 10, filter=allowed[(i + 7) % nq])
        t0 = T(); r1 = pk.plan_shared(P, ctx[0], ctx[1], ctx[2], ctx[3], m, n, False, 10, 1.0, True, -1, bm, 0, 0, NR); t1 = T()
        idx.search(q[i], 10, filter=allowed[(i + 9) % nq])
        t2 = T(); r2 = ep(P, ctx[0], ctx[1], ctx[2], ctx[3], m, n, False, 10, 1.0, True, -1, bm, 0, 0, NR); t3 = T()
        assert r1 == r2
        add("dispatcher", t1 - t0); add("entry", t3 - t2)
print(name, " ".join(f"{k} {v/5/nq/1e3:.2f}" for k, v in acc.items()))
acc.clear()
for rep in range(8):
    if rep == 2: acc.clear()
    for i in range(nq):
        f = pk.plan_shared if (i + rep) % 2 else ep
        bm = cfs[i]._masks["bitmap64"]; m = cfs[i].count
        idx.search(q[i], 10, filter=allowed[(i + 7) % nq])
        t0 = T(); f(P, ctx[0], ctx[1], ctx[2], ctx[3], m, n, False, 10, 1.0, True, -1, bm, 0, 0, NR); t1 = T()
        add("disp" if f is not ep else "entry", t1 - t0)
print("fair", " ".join(f"{k} {v/6/nq/1e3*2:.2f}" for k, v in acc.items()))
