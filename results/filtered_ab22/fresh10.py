"""Where a fresh 10 % filter's time goes on the suite's clustered index (recalibrated at 0fc0529)."""
import time, sys
import numpy as np
from threadpoolctl import threadpool_limits
import gsu.index
from gsu.index import Filter
from gsu.bench import harness
harness.pin_threads(1)
name = sys.argv[1] if len(sys.argv) > 1 else "clustered_200000x64_M32_efc200_s0"
sel = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
idx = gsu.index.load(f"/work/tmp/s23/fcache/{name}.gsu")
x = idx.hnsw.vectors
n = x.shape[0]
rng = np.random.default_rng(5)
nq = 100
Q = x[rng.choice(n, nq, replace=False)] + 0.0
Q = Q + 0.05 * rng.standard_normal(Q.shape).astype(np.float32)
ids = [np.sort(rng.choice(n, int(sel * n), replace=False)).astype(np.int64) for _ in range(nq)]
h = idx.hnsw
def run(f, reps=7):
    best = []
    for r in range(reps):
        t = time.perf_counter()
        for i in range(nq):
            f(i)
        best.append((time.perf_counter() - t) / nq * 1e6)
    return np.median(best)
for i in range(nq): idx.search(Q[i], 10, filter=ids[i])
cfs = [h.compile_filter(ids[i], 1) for i in range(nq)]
for cf in cfs: idx.search(Q[0], 10, filter=Filter(ids[0]))
print("compile_filter only          %.1f us" % run(lambda i: h.compile_filter(ids[i], 1)))
print("compile + bitmap64           %.1f us" % run(lambda i: h.compile_filter(ids[i], 1).bitmap64()))
print("search fresh (plain ids)     %.1f us" % run(lambda i: idx.search(Q[i], 10, filter=ids[i])))
fs = [Filter(ids[i]) for i in range(nq)]
for i in range(nq): idx.search(Q[i], 10, filter=fs[i])
print("search cached Filter         %.1f us" % run(lambda i: idx.search(Q[i], 10, filter=fs[i])))
ex = idx.explain(Q[:5], 10, filter=ids[0])
print(ex)
from gsu.index import _filter_kernels as fk
iv = idx.ivf
print("scan_pays:", iv.scan_pays(int(sel * n), int(ex.candidates[0]) if ex.candidates[0] else 100, 20))
print("bucket_rows                  %.1f us" % run(lambda i: fk.bucket_rows(cfs[i].rows, iv._row_list, iv._row_pos, iv.nlist)))
st = idx._fits[None].settings
print("has_even", st.has_even)
cfs2 = [h.compile_filter(ids[i], 1) for i in range(nq)]
for cf in cfs2: cf.bitmap64()
def plan(i):
    cf = h.compile_filter(ids[i], 1)
    idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
print("compile + plan_one           %.1f us" % run(plan))
def shared(i):
    cf = h.compile_filter(ids[i], 1)
    idx._settings_shared(cf, cf.count, False, st)
print("compile + settings_shared    %.1f us" % run(shared))
def full_nosearch(i):
    cf = h.compile_filter(ids[i], 1)
    p = idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
    idx._search_one(Q[i:i+1], 10, cf, *p)
print("compile + plan + search_one  %.1f us" % run(full_nosearch))
pl = [idx._plan_one(cf.count, False, 10, 1.0, st, cf) for cf in cfs2]
print("search_one on compiled cf    %.1f us" % run(lambda i: idx._search_one(Q[i:i+1], 10, cfs2[i], *pl[i])))
print(pl[0])
# first use of a compiled filter, compile outside the timing
import gc
firsts = []
for rep in range(7):
    cfs3 = [h.compile_filter(ids[i], 1) for i in range(nq)]
    for cf in cfs3: cf.bitmap64()
    pl3 = [idx._plan_one(cf.count, False, 10, 1.0, st, cf) for cf in cfs3]
    t = time.perf_counter()
    for i in range(nq):
        idx._search_one(Q[i:i+1], 10, cfs3[i], *pl3[i])
    firsts.append((time.perf_counter() - t) / nq * 1e6)
    t = time.perf_counter()
    for i in range(nq):
        idx._search_one(Q[i:i+1], 10, cfs3[i], *pl3[i])
    firsts.append(-(time.perf_counter() - t) / nq * 1e6)
print("search_one first use / second use (compiled beforehand): %.1f / %.1f us" % (np.median([f for f in firsts if f > 0]), -np.median([f for f in firsts if f < 0])))
cf = h.compile_filter(ids[0], 1)
print("fresh:", cf._masks.keys() if hasattr(cf, "_masks") else None, getattr(cf, "_derived", None))
cf.bitmap64()
idx._search_one(Q[0:1], 10, cf, *pl3[0])
print("after search:", cf._masks.keys() if hasattr(cf, "_masks") else None, getattr(cf, "_derived", None))
