import time, numba as nb, numpy as np

@nb.njit(inline="always")
def fsift2(hs, hr, size, i, s, r):
    while True:
        c = 2 * i + 1
        if c >= size:
            hs[i] = s
            hr[i] = r
            return
        if c + 1 < size and hs[c + 1] < hs[c]:
            c += 1
        if hs[c] >= s:
            hs[i] = s
            hr[i] = r
            return
        hs[i] = hs[c]
        hr[i] = hr[c]
        i = c

@nb.njit(inline="always")
def fpush2(hs, hr, size, cap, s, r):
    if size < cap:
        i = size
        while True:
            if i == 0:
                hs[0] = s
                hr[0] = r
                return size + 1
            p = (i - 1) >> 1
            if hs[p] <= s:
                hs[i] = s
                hr[i] = r
                return size + 1
            hs[i] = hs[p]
            hr[i] = hr[p]
            i = p
    if s > hs[0]:
        fsift2(hs, hr, size, 0, s, r)
    return size

@nb.njit(inline="always")
def fpush3(hs, hr, size, cap, s, r):
    if size < cap:
        i = size
        while True:
            if i == 0:
                hs[0] = s
                hr[0] = r
                return size + 1
            p = (i - 1) >> 1
            if hs[p] <= s:
                hs[i] = s
                hr[i] = r
                return size + 1
            hs[i] = hs[p]
            hr[i] = hr[p]
            i = p
    if s <= hs[0]:
        return size
    fsift2(hs, hr, size, 0, s, r)
    return size

def mk(h):
    @nb.njit
    def loop(ss, rs, hs, hr, cap):
        size = 0
        for j in range(ss.shape[0]):
            size = h(hs, hr, size, cap, ss[j], rs[j])
        return size
    return loop
@nb.njit
def pops(hs, hr, size):
    t = 0.0
    while size > 0:
        t += hs[0]
        size -= 1
        if size > 0:
            fsift2(hs, hr, size, 0, hs[size], hr[size])
    return t
rng = np.random.default_rng(0)
ss = rng.standard_normal(5000).astype(np.float32); rs = np.arange(5000, dtype=np.int64)
hs = np.empty(64, np.float32); hr = np.empty(64, np.int64)
for name, h in (("fpush2", fpush2), ("fpush3", fpush3)):
    f = mk(h); n = f(ss, rs, hs, hr, 64)
    t0 = time.perf_counter()
    for _ in range(2000): f(ss, rs, hs, hr, 64)
    asm = f.inspect_asm(f.signatures[0])
    print(f"{name:10s} {(time.perf_counter() - t0) / 2000 * 1e6:7.2f} us  incref {asm.count('NRT_incref')}")
pops(hs.copy(), hr.copy(), 64)
asm = pops.inspect_asm(pops.signatures[0]); print("pops incref", asm.count("NRT_incref"))
