import time, numpy as np, numba as nb
from gsu.index import _filter_kernels as fk
from gsu.index._filter_kernels import _row_or_n, _U1, _U6, _U63, _popcount, _ends
from gsu._simd import prefetch
from gsu.bench import harness
harness.pin_threads(1)
n = 200000; N = 400
import sys
m = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
rng = np.random.default_rng(0)
ids = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for _ in range(N)]

@nb.njit(cache=False)
def set8(vals, lo, n):
    nw = (n + 63) >> 6
    bm = np.zeros(nw + 2, np.uint64)
    m = vals.shape[0]
    q = m >> 3
    for j in range(q):
        r0 = _row_or_n(vals[j], lo, n); r1 = _row_or_n(vals[j + q], lo, n)
        r2 = _row_or_n(vals[j + 2 * q], lo, n); r3 = _row_or_n(vals[j + 3 * q], lo, n)
        r4 = _row_or_n(vals[j + 4 * q], lo, n); r5 = _row_or_n(vals[j + 5 * q], lo, n)
        r6 = _row_or_n(vals[j + 6 * q], lo, n); r7 = _row_or_n(vals[j + 7 * q], lo, n)
        bm[(r0 >> _U6) + _U1] |= _U1 << (r0 & _U63)
        bm[(r1 >> _U6) + _U1] |= _U1 << (r1 & _U63)
        bm[(r2 >> _U6) + _U1] |= _U1 << (r2 & _U63)
        bm[(r3 >> _U6) + _U1] |= _U1 << (r3 & _U63)
        bm[(r4 >> _U6) + _U1] |= _U1 << (r4 & _U63)
        bm[(r5 >> _U6) + _U1] |= _U1 << (r5 & _U63)
        bm[(r6 >> _U6) + _U1] |= _U1 << (r6 & _U63)
        bm[(r7 >> _U6) + _U1] |= _U1 << (r7 & _U63)
    for j in range(8 * q, m):
        r = _row_or_n(vals[j], lo, n)
        bm[(r >> _U6) + _U1] |= _U1 << (r & _U63)
    b = bm[1:nw + 1]
    return b, _popcount(b)

@nb.njit(cache=False)
def set4pf(vals, lo, n):
    nw = (n + 63) >> 6
    bm = np.zeros(nw + 2, np.uint64)
    m = vals.shape[0]
    q = m >> 2
    D = 64
    for j0 in range(0, q, 8):
        if j0 + D < q:
            prefetch(vals, j0 + D); prefetch(vals, j0 + q + D); prefetch(vals, j0 + 2 * q + D); prefetch(vals, j0 + 3 * q + D)
        for j in range(j0, min(j0 + 8, q)):
            r0 = _row_or_n(vals[j], lo, n); r1 = _row_or_n(vals[j + q], lo, n)
            r2 = _row_or_n(vals[j + 2 * q], lo, n); r3 = _row_or_n(vals[j + 3 * q], lo, n)
            bm[(r0 >> _U6) + _U1] |= _U1 << (r0 & _U63)
            bm[(r1 >> _U6) + _U1] |= _U1 << (r1 & _U63)
            bm[(r2 >> _U6) + _U1] |= _U1 << (r2 & _U63)
            bm[(r3 >> _U6) + _U1] |= _U1 << (r3 & _U63)
    for j in range(4 * q, m):
        r = _row_or_n(vals[j], lo, n)
        bm[(r >> _U6) + _U1] |= _U1 << (r & _U63)
    b = bm[1:nw + 1]
    return b, _popcount(b)

@nb.njit(cache=False)
def set4(vals, lo, n):
    nw = (n + 63) >> 6
    bm = np.zeros(nw + 2, np.uint64)
    m = vals.shape[0]
    q = m >> 2
    for j in range(q):
        r0 = _row_or_n(vals[j], lo, n); r1 = _row_or_n(vals[j + q], lo, n)
        r2 = _row_or_n(vals[j + 2 * q], lo, n); r3 = _row_or_n(vals[j + 3 * q], lo, n)
        bm[(r0 >> _U6) + _U1] |= _U1 << (r0 & _U63)
        bm[(r1 >> _U6) + _U1] |= _U1 << (r1 & _U63)
        bm[(r2 >> _U6) + _U1] |= _U1 << (r2 & _U63)
        bm[(r3 >> _U6) + _U1] |= _U1 << (r3 & _U63)
    for j in range(4 * q, m):
        r = _row_or_n(vals[j], lo, n)
        bm[(r >> _U6) + _U1] |= _U1 << (r & _U63)
    b = bm[1:nw + 1]
    return b, _popcount(b)

@nb.njit(cache=False)
def setw(vals, lo, n):
    nw = (n + 63) >> 6
    bm = np.zeros(nw + 2, np.uint64)
    m = vals.shape[0]
    a0 = np.uint64(0); c0 = np.uint64(0)
    for j in range(m):
        r0 = _row_or_n(vals[j], lo, n)
        w0 = (r0 >> _U6) + _U1
        a0 = (a0 if w0 == c0 else np.uint64(0)) | (_U1 << (r0 & _U63))
        c0 = w0
        bm[w0] = a0
    b = bm[1:nw + 1]
    return b, _popcount(b)

ref = fk.ids_bitmap64(ids[0], 0, n)[0]
for f in (set8, set4pf, set4, setw):
    b, c = f(ids[0], 0, n)
    assert (b == ref).all() and c == m, f
def run(f, cold=True):
    b = []
    for rep in range(5):
        t = time.perf_counter()
        for i in range(N): f(ids[i] if cold else ids[0])
        b.append((time.perf_counter() - t) / N * 1e6)
    return np.median(b)
for _ in range(2):
    for name, f in [("current", lambda a: fk.ids_bitmap64(a, 0, n)), ("set4", lambda a: set4(a, 0, n)), ("set8", lambda a: set8(a, 0, n)),
                    ("set4pf", lambda a: set4pf(a, 0, n)), ("setw", lambda a: setw(a, 0, n))]:
        print(f"{name:8s} cold {run(f):6.1f}  warm {run(f, False):6.1f}")
