import time, sys
import numpy as np
import gsu.index
from gsu.index import Filter
from gsu.bench import harness
harness.pin_threads(1)
name = sys.argv[1] if len(sys.argv) > 1 else "clustered_200000x64_M32_efc200_s0"
sel = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
idx = gsu.index.load(f"/work/tmp/s23/fcache/{name}.gsu")
h = idx.hnsw
x = h.vectors; n = x.shape[0]
rng = np.random.default_rng(5); nq = 100
Q = (x[rng.choice(n, nq, replace=False)] + 0.05 * rng.standard_normal((nq, x.shape[1]))).astype(np.float32)
ids = [np.sort(rng.choice(n, int(sel * n), replace=False)).astype(np.int64) for _ in range(nq)]
st = idx._fits[None].settings
def run(f, reps=9):
    b = []
    for r in range(reps):
        t = time.perf_counter()
        for i in range(nq): f(i)
        b.append((time.perf_counter() - t) / nq * 1e6)
    return np.median(b)
def parts(i):
    cf = h.compile_filter(ids[i], 1)
    p = idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
    return idx._search_one(Q[i:i+1], 10, cf, *p)
tests = {
 "search": lambda i: idx.search(Q[i], 10, filter=ids[i]),
 "lean": lambda i: idx._lean_search(Q[i], 10, {"filter": ids[i]}),
 "parts": parts,
 "compile": lambda i: h.compile_filter(ids[i], 1),
}
for k, f in tests.items(): run(f, 2)
for rep in range(2):
    for k, f in tests.items(): print(f"{k:10s} {run(f):7.1f} us")
acc = np.zeros(3)
def parts2(i):
    t0 = time.perf_counter_ns()
    cf = h.compile_filter(ids[i], 1)
    t1 = time.perf_counter_ns()
    p = idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
    t2 = time.perf_counter_ns()
    r = idx._search_one(Q[i:i+1], 10, cf, *p)
    t3 = time.perf_counter_ns()
    acc[:] += (t1 - t0, t2 - t1, t3 - t2)
run(parts2, 9)
print("compile/plan/search", acc / 900 / 1e3)
print(p := idx._plan_one(h.compile_filter(ids[0],1).count, False, 10, 1.0, st, h.compile_filter(ids[0],1)))
cf = h.compile_filter(ids[0], 1)
print(cf.__slots__)
