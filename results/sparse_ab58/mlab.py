# MovieLens BM25 one-query calls, gsu vs pyseismic, the suite's loop shape, alternating rounds
import time, sys, numpy as np, scipy.sparse as sp
from gsu.bench import harness
harness.pin_threads(1)
from gsu.index import load
from gsu.bench.peers import PyseismicPeer
C = "/work/tmp/s58/sp100/cache"
name = sys.argv[1] if len(sys.argv) > 1 else "movielens-bm25"
z = np.load(f"{C}/data_{name}.npz")
Q = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
rows = [Q[i] for i in range(Q.shape[0])]
g = load(f"{C}/gsu_{name}.gsu", mmap=False)
peer = PyseismicPeer.open(f"{C}/py_{name}", n=g.ntotal)
pq = peer.prepare(Q)
pts = [(2, 1.0), (3, 0.9), (3, 1.0), (2, 0.6)] if name.startswith("movielens") else [(13, 0.8), (8, 0.6), (6, 0.7)]
res = {}
for qc, hf in pts:
    fo = lambda: [g.search(r, 10, query_cut=qc, heap_factor=hf) for r in rows]
    ft = lambda: [peer.search_raw(p, 10, query_cut=qc, heap_factor=hf) for p in pq]
    fo(); ft()
    a, b = [], []
    for rep in range(int(sys.argv[2]) if len(sys.argv) > 2 else 11):
        for f, l in ((fo, a), (ft, b)):
            t0 = time.perf_counter(); f(); l.append((time.perf_counter() - t0) / len(rows) * 1e6)
    ma, mb = np.median(a), np.median(b)
    print(f"({qc},{hf}) gsu {ma:.3f} us  pyseismic {mb:.3f} us  ratio {ma/mb:.3f}", flush=True)
