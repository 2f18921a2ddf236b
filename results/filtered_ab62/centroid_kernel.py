"""The 8-bit centroid scan alone: stop 61's row-major kernel (a copy below) against this stop's
(``gsu.index._filter_kernels.centroid_scores_i8`` on the blocked codes), one query, the list
counts and widths of the filtered suite's seven sets, random centroids; median µs of 7
passes of 3,000 calls each, old and new alternating. Run from the repository root:
``python results/filtered_ab62/centroid_kernel.py``."""
import time

import numba as nb
import numpy as np

from gsu.index import IVFIndex
from gsu.index import _filter_kernels as fk

_FM = {"contract", "reassoc", "nsz", "arcp"}


@nb.njit(cache=True, fastmath=_FM)
def old_scores(Q, codes, scale, extra, out):  # stop 61's kernel (its serial twin)
    nl, d = codes.shape
    aug = extra.shape[0] > 0
    for i in range(Q.shape[0]):
        qv = Q[i]
        for l in range(nl):
            c = codes[l]
            acc = np.float32(0.0)
            for t in range(d):
                acc += qv[t] * np.float32(c[t])
            acc *= scale[l]
            if aug:
                acc += qv[d] * extra[l]
            out[i, l] = acc


rng = np.random.default_rng(0)
for name, nl, d in (("clustered", 894, 64), ("power-law", 775, 32), ("anisotropic", 632, 128), ("near-dup", 490, 256),
                    ("wide mixture", 346, 768), ("pydocs", 476, 384), ("MovieLens", 186, 384)):
    ivf = IVFIndex(d, "ip", nlist=nl, seed=0)
    ivf._centroids = rng.standard_normal((nl, d)).astype(np.float32)  # the codes are built from these
    _, codes, scale, extra, blk = ivf._centroid_codes()
    q = rng.standard_normal((1, d)).astype(np.float32)
    a = np.empty((1, nl), np.float32)
    b = np.empty((1, nl), np.float32)
    old_scores(q, codes, scale, extra, a)
    fk.centroid_scores_i8(q, blk, scale, extra, b)
    ref = (q.astype(np.float64) @ codes.T.astype(np.float64)) * scale
    ts = {"old": [], "new": []}
    for _ in range(7):
        for tag, fn in (("old", lambda: old_scores(q, codes, scale, extra, a)), ("new", lambda: fk.centroid_scores_i8(q, blk, scale, extra, b))):
            t = time.perf_counter()
            for _ in range(3000):
                fn()
            ts[tag].append((time.perf_counter() - t) / 3000 * 1e6)
    o, n = np.median(ts["old"]), np.median(ts["new"])
    print(f"{name:13s} {nl:4d} lists x {d:3d}: old {o:5.2f} us  new {n:5.2f} us  old/new {o / n:.2f}  "
          f"max |score - float64|: old {np.abs(a - ref).max():.1e} new {np.abs(b - ref).max():.1e}")
