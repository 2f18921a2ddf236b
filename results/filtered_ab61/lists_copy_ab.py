# Stop 61: one-copy layout (row-ordered vectors, 8-bit codes first from d = 64) against lists_copy=True, forced IVF, fresh filters, interleaved; d = 64 (edit n, d for d = 32). Output of both runs in lists_copy_ab.log
import time, numpy as np
from gsu.index import FilteredIndex
rng = np.random.default_rng(0)
n, d = 100_000, 64
C = rng.standard_normal((300, d)).astype(np.float32)
x = (C[rng.integers(0, 300, n)] + 0.35 * rng.standard_normal((n, d))).astype(np.float32)
q = (C[rng.integers(0, 300, 200)] + 0.35 * rng.standard_normal((200, d))).astype(np.float32)
ix = {}
for lc in (False, True):
    t = time.time(); f = FilteredIndex(d, "ip", calibrate=False, seed=1, lists_copy=lc); f.add(x); ix[lc] = f; print("built", lc, round(time.time() - t, 1))
for sel in (0.1, 0.5):
    F = [np.sort(rng.choice(n, int(sel * n), replace=False)).astype(np.int64) for _ in range(200)]
    for lists in (16, 40):
        kw = dict(route="ivf", ivf_candidates=float(lists * 10), ivf_min_lists=float(lists))
        a = ix[False].search(q[0], 10, filter=F[0], **kw)
        for i in range(200):
            assert np.array_equal(ix[False].search(q[i], 10, filter=F[i], **kw).ids, ix[True].search(q[i], 10, filter=F[i], **kw).ids)
        res = {False: [], True: []}
        for rep in range(7):
            for lc in (False, True):
                t = time.perf_counter()
                for i in range(200): ix[lc].search(q[i], 10, filter=F[i], **kw)
                res[lc].append((time.perf_counter() - t) / 200 * 1e6)
        o, c = np.median(res[False]), np.median(res[True])
        print(f"sel {sel} lists {lists}: one copy {o:.1f} us, lists_copy {c:.1f} us, one/copy {o/c:.2f}")
