import numba; numba.set_num_threads(1)
import sys, numpy as np, scipy.sparse as sp
import gsu; print(gsu.__file__, file=sys.stderr)
from gsu.index import load
C = "/work/tmp/s24/sp100/cache"
out = {}
for name in ("movielens-bm25", "docstrings-bm25", "splade-100k", "rarity-100k", "rarity-keyword-100k"):
    z = np.load(f"{C}/data_{name}.npz")
    Q = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
    g = load(f"{C}/gsu_{name}.gsu")
    for qc, hf in ((3, 0.6), (8, 0.8), (13, 1.0)):
        r = g.search(Q, 10, query_cut=qc, heap_factor=hf)
        out[f"{name}-{qc}-{hf}-ids"] = r.ids; out[f"{name}-{qc}-{hf}-sc"] = r.scores
        ones = [g.search(Q[i], 10, query_cut=qc, heap_factor=hf) for i in range(min(100, Q.shape[0]))]
        out[f"{name}-{qc}-{hf}-one"] = np.concatenate([o.ids for o in ones])
        import numba; numba.set_num_threads(2)
        r2 = g.search(Q, 10, query_cut=qc, heap_factor=hf)
        numba.set_num_threads(1)
        mask = np.zeros(g.ntotal, bool); mask[::3] = True
        from gsu.index.filters import Filter
        r3 = g.search(Q, 10, query_cut=qc, heap_factor=hf, filter=Filter.from_mask(mask) if hasattr(Filter, "from_mask") else Filter(np.flatnonzero(mask)))
        out[f"{name}-{qc}-{hf}-filt"] = r3.ids
        out[f"{name}-{qc}-{hf}-par"] = r2.ids
np.savez(sys.argv[1], **out)
