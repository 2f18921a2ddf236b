import time, sys, json
import numpy as np, scipy.sparse as sp
from gsu.bench import harness
harness.pin_threads(1)
import gsu; print(gsu.__file__, file=sys.stderr)
from gsu.index import load
from gsu.bench.peers import PyseismicPeer
C = "/work/tmp/s24/sp100/cache"
out = {}
for name, pts in (("movielens-bm25", ((2, 0.7), (3, 0.6), (6, 0.7))), ("docstrings-bm25", ((13, 0.8), (8, 0.6)))):
    z = np.load(f"{C}/data_{name}.npz")
    docs_n = int(z["ds"][0])
    queries = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
    rows = [queries[i] for i in range(queries.shape[0])]
    g = load(f"{C}/gsu_{name}.gsu")
    peer = PyseismicPeer.open(f"{C}/py_{name}", n=docs_n)
    pq = peer.prepare(queries)
    for qc, hf in pts:
        fns = {"gsu": lambda: [g.search(r, 10, query_cut=qc, heap_factor=hf) for r in rows],
               "py": lambda: [peer.search_raw(p, 10, query_cut=qc, heap_factor=hf) for p in pq],
               "batch": lambda: g.search(queries, 10, query_cut=qc, heap_factor=hf)}
        for f in fns.values(): f()
        res = {k: [] for k in fns}
        for rep in range(9 if name.startswith("movie") else 5):
            for k, f in fns.items():
                t = time.perf_counter(); f(); res[k].append((time.perf_counter() - t) / len(rows) * 1e6)
        out[f"{name} ({qc},{hf})"] = {k: round(float(np.median(v)), 2) for k, v in res.items()}
print(json.dumps(out))
