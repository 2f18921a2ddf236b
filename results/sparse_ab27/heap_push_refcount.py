import time, numba as nb, numpy as np
from gsu.index.topk import heap_push, worse

@nb.njit(inline="always")
def heap_push2(hs, hr, size, k, s, r):
    if size < k:
        i = size
        while True:
            if i == 0:
                hs[0] = s
                hr[0] = r
                return size + 1
            p = (i - 1) >> 1
            if worse(s, r, hs[p], hr[p]):
                hs[i] = hs[p]
                hr[i] = hr[p]
                i = p
            else:
                hs[i] = s
                hr[i] = r
                return size + 1
    if not worse(hs[0], hr[0], s, r):
        return size
    i = 0
    while True:
        c = 2 * i + 1
        if c >= k:
            hs[i] = s
            hr[i] = r
            return size
        if c + 1 < k and worse(hs[c + 1], hr[c + 1], hs[c], hr[c]):
            c += 1
        if worse(hs[c], hr[c], s, r):
            hs[i] = hs[c]
            hr[i] = hr[c]
            i = c
        else:
            hs[i] = s
            hr[i] = r
            return size

def mk(h, guarded):
    if guarded:
        @nb.njit
        def loop(ss, hs, hr, k):
            size = 0
            for j in range(ss.shape[0]):
                s = ss[j]
                if size < k or s > hs[0]:
                    size = h(hs, hr, size, k, s, j)
            return size
    else:
        @nb.njit
        def loop(ss, hs, hr, k):
            size = 0
            for j in range(ss.shape[0]):
                size = h(hs, hr, size, k, ss[j], j)
            return size
    return loop
rng = np.random.default_rng(0)
for k, n in ((10, 50), (10, 5000), (100, 5000)):
    ss = rng.standard_normal(n).astype(np.float32)
    ss[::7] = ss[3]  # ties
    res = {}
    for name, h in (("topk.heap_push", heap_push), ("return-style", heap_push2)):
        for g in (True, False):
            hs = np.empty(k, np.float32); hr = np.empty(k, np.int64)
            f = mk(h, g); sz = f(ss, hs, hr, k)
            res[(name, g)] = sorted(zip(hs[:sz].tolist(), hr[:sz].tolist()))
            reps = max(200, 200000 // n)
            t0 = time.perf_counter()
            for _ in range(reps): f(ss, hs, hr, k)
            asm = f.inspect_asm(f.signatures[0])
            print(f"k {k:3d} n {n:5d} {name:15s} guarded={g!s:5s} {(time.perf_counter() - t0) / reps * 1e6:8.3f} us  incref {asm.count('NRT_incref')}")
    assert res[("topk.heap_push", True)] == res[("return-style", True)] == res[("return-style", False)]
print("same heaps")
