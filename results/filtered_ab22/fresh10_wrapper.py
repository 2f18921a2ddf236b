import time, sys
import numpy as np
import gsu.index
from gsu.bench import harness
harness.pin_threads(1)
name = sys.argv[1] if len(sys.argv) > 1 else "clustered_200000x64_M32_efc200_s0"
sel = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
idx = gsu.index.load(f"/work/tmp/s23/fcache/{name}.gsu")
x = idx.hnsw.vectors
n = x.shape[0]
rng = np.random.default_rng(5)
nq = 100
Q = x[rng.choice(n, nq, replace=False)] + 0.05 * rng.standard_normal((nq, x.shape[1])).astype(np.float32)
ids = [np.sort(rng.choice(n, int(sel * n), replace=False)).astype(np.int64) for _ in range(nq)]
h = idx.hnsw
st = idx._fits[None].settings
def a(i): idx.search(Q[i], 10, filter=ids[i])
def b(i): idx._lean_search(Q[i], 10, {"filter": ids[i]})
def c(i):
    cf = h.compile_filter(ids[i], 1)
    p = idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf)
    idx._search_one(Q[i:i+1], 10, cf, *p)
def d(i):
    cf = h.compile_filter(ids[i], 1)
fs = {"search": a, "lean": b, "pieces": c, "compile": d}
res = {k: [] for k in fs}
for r in range(9):
    for k, f in fs.items():
        t = time.perf_counter()
        for i in range(nq):
            f(i)
        res[k].append((time.perf_counter() - t) / nq * 1e6)
for k, v in res.items():
    print("%-8s %.1f us" % (k, np.median(v)))
