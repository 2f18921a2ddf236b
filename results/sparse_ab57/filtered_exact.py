import time, sys, numpy as np, scipy.sparse as sp
from gsu.bench import harness
harness.pin_threads(1)
import gsu; print(gsu.__file__, file=sys.stderr)
from gsu.index import load
C = "/work/tmp/s24/sp100/cache"
out = {}
for name in ("splade-100k", "rarity-100k", "docstrings-bm25"):
    z = np.load(f"{C}/data_{name}.npz")
    Q = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
    rows = [Q[i] for i in range(min(200, Q.shape[0]))]
    g = load(f"{C}/gsu_{name}.gsu")
    n = g.ntotal
    rng = np.random.default_rng(7)
    for sel in (0.01, 0.03):
        fs = [np.sort(rng.choice(n, int(sel * n), replace=False)).astype(np.int64) for _ in rows]
        res = [g.search(r, 10, filter=f) for r, f in zip(rows, fs)]
        ts = []
        for rep in range(5):
            t0 = time.perf_counter()
            for r, f in zip(rows, fs): g.search(r, 10, filter=f)
            ts.append((time.perf_counter() - t0) / len(rows) * 1e6)
        out[f"{name} {sel}"] = round(float(np.median(ts)), 1)
        np.save(f"/work/tmp/s57/sf_{name}_{sel}_{sys.argv[1]}.npy", np.concatenate([x.ids for x in res]))
print(out)
