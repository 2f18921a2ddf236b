"""The shared top-k toolkit of the index and retrieval kernels: bounded top-k heaps,
``lower_bound``, a dense top-k, and :func:`serial_and_parallel` (one body compiled twice).

Heap convention: a fixed-size *min*-heap of (score, row) pairs whose root is the
worst kept entry. "Worse" means a lower score, or an equal score and a larger row,
so results are deterministic under ties (smaller row wins).
"""

from __future__ import annotations

import types
from typing import Any, Callable

import numba as nb
import numpy as np


def serial_and_parallel(impl: Callable[..., Any], **options: Any) -> tuple[Any, Any]:
    """``impl`` (a loop over ``nb.prange``) compiled twice: serially and with
    ``parallel=True``; ``options`` go to both (``fastmath``, ...).

    numba's on-disk cache names its files after the function's qualified name and keys
    entries by signature and bytecode, not by compile flags: the two dispatchers of one
    function would share one entry, and the parallel one would load the serial machine
    code (or the reverse) on the next run. The parallel twin is therefore compiled from
    a copy of the function under its own qualified name, with its own cache files.
    """
    par_fn = types.FunctionType(impl.__code__, impl.__globals__, impl.__name__ + "_parallel", impl.__defaults__,
                                impl.__closure__)
    par_fn.__qualname__ = impl.__qualname__ + "_parallel"
    par_fn.__doc__ = impl.__doc__
    par_fn.__module__ = impl.__module__
    return nb.njit(cache=True, **options)(impl), nb.njit(cache=True, parallel=True, **options)(par_fn)


@nb.njit(cache=True, inline="always")
def lower_bound(arr, lo, hi, v):
    """First index in ``[lo, hi)`` of the ascending ``arr`` whose value is ``>= v`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def worse(sa, ra, sb, rb):
    return sa < sb or (sa == sb and ra > rb)


@nb.njit(cache=True, inline="always")
def sift_hole(hs, hr, size, i, s, r):
    """Place (s, r) at slot ``i`` of a heap holding ``size`` entries, moving it down as a hole
    (one store per level) until the heap property holds below it.

    Every path returns by itself: with a ``break`` out of the loop and the stores after it,
    numba kept a reference count on ``hs``/``hr`` per call (~20 ns, more than an offer the
    heap turns away), which its pruning pass removes in this shape."""
    while True:
        c = 2 * i + 1
        if c >= size:
            hs[i] = s
            hr[i] = r
            return
        if c + 1 < size and worse(hs[c + 1], hr[c + 1], hs[c], hr[c]):
            c += 1
        if worse(hs[c], hr[c], s, r):
            hs[i] = hs[c]
            hr[i] = hr[c]
            i = c
        else:
            hs[i] = s
            hr[i] = r
            return


@nb.njit(cache=True, inline="always")
def sift_down(hs, hr, size, i):
    """Restore the heap property below slot ``i`` of a heap holding ``size`` entries."""
    sift_hole(hs, hr, size, i, hs[i], hr[i])
    return


@nb.njit(cache=True, inline="always")
def heap_push(hs, hr, size, k, s, r):
    """Offer (s, r) to the heap ``hs``/``hr`` holding ``size`` entries (capacity k).

    Returns the new size. When full, replaces the root if (s, r) is better. Inlined
    into the scanning loops: a call per offer would cost more than the offer itself.

    The entry moves as a hole (one store per level) and every path returns by itself (see
    :func:`sift_hole`; 5,000 unguarded offers to a heap of 10: 203 → 79 µs with that shape).
    The same heap as before, slot for slot."""
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
    sift_hole(hs, hr, k, 0, s, r)
    return size


@nb.njit(cache=True)
def heap_sorted(hs, hr, size, out_s, out_r):
    """Write the heap's entries best-first into ``out_s``/``out_r`` (first ``size`` slots).

    Copied, then sorted in place by insertion on (score desc, row asc) (k is small): no
    permutation array (its allocation was ~0.25 µs of a one-query sparse search's ~2.5 µs
    compiled call on a small collection)."""
    for a in range(size):
        out_s[a] = hs[a]
        out_r[a] = hr[a]
    for a in range(1, size):
        j = a
        while j > 0 and worse(out_s[j - 1], out_r[j - 1], out_s[j], out_r[j]):
            out_s[j - 1], out_s[j] = out_s[j], out_s[j - 1]
            out_r[j - 1], out_r[j] = out_r[j], out_r[j - 1]
            j -= 1


@nb.njit(cache=True, parallel=True, fastmath=True)
def gather_topk_ip(Q, X, starts, ends, rows, k, out_r, out_s, counts):
    """Exact inner-product top-k of each query over its allowed rows.

    Q (nq, d) float32, X (n, d) float32, allowed rows of query q are
    ``rows[starts[q]:ends[q]]``. Writes best-first rows/scores into ``out_r`` (nq, k)
    int64 / ``out_s`` (nq, k) float32 (caller pre-fills -1 / -inf) and ``counts``.
    """
    nq, d = Q.shape
    for q in nb.prange(nq):
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        size = 0
        for j in range(starts[q], ends[q]):
            r = rows[j]
            acc = np.float32(0.0)
            for t in range(d):
                acc += Q[q, t] * X[r, t]
            size = heap_push(hs, hr, size, k, acc, r)
        heap_sorted(hs, hr, size, out_s[q], out_r[q])
        counts[q] = size


@nb.njit(cache=True, parallel=True)
def dense_topk(S, k, out_r, out_s, counts, mask):
    """Top-k columns of each row of a dense score matrix S (nq, m) float32.

    Entries equal to -inf (excluded) or NaN are skipped, and so are columns where
    ``mask`` (m,) bool is False (pass a length-0 mask for "all allowed"). Writes best-first column
    indices / scores into ``out_r`` / ``out_s`` (pre-filled -1 / -inf) and ``counts``.
    """
    nq, m = S.shape
    for q in nb.prange(nq):
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        size = 0
        row = S[q]
        use_mask = mask.shape[0] > 0
        for j in range(m):
            if use_mask and not mask[j]:
                continue
            s = row[j]
            if s > -np.inf:  # False for -inf and NaN
                if size < k or s > hs[0]:
                    size = heap_push(hs, hr, size, k, s, j)
        heap_sorted(hs, hr, size, out_s[q], out_r[q])
        counts[q] = size


def recall_rows(found: Any, true: Any, *, found_scores: Any = None, true_scores: Any = None, eps: float = 1e-3,
                empty: float = 1.0) -> np.ndarray:
    """Per-row recall (nq,) float64 of ``found`` (nq, k) against the exact top-k ``true``
    (nq, k'), both -1 padded: |found ∩ true| / |true|.

    With ``found_scores`` (the *exact* scores of the found entries) and ``true_scores``
    (the exact top-k scores, best first), a found entry also counts as a hit when its
    score is ≥ the true k-th score − ``eps`` (ann-benchmarks' tie tolerance: items that
    tie with the k-th, such as one item seen several times in a history, are all right
    answers). Hits are capped at the number of true entries; a row with no true entry
    gets ``empty``.
    """
    f = np.asarray(found, dtype=np.int64)
    t = np.asarray(true, dtype=np.int64)
    if f.ndim != 2 or t.ndim != 2 or f.shape[0] != t.shape[0]:
        raise ValueError(f"recall: found {f.shape} and true {t.shape} must be (nq, k) arrays with the same nq")
    n_true = (t >= 0).sum(axis=1)
    hit = np.zeros(f.shape, dtype=bool)
    for s in range(0, f.shape[0], 256):  # (rows, k_found, k_true) membership, in slabs
        fb, tb = f[s : s + 256], t[s : s + 256]
        hit[s : s + 256] = (fb >= 0) & (fb[:, :, None] == np.where(tb >= 0, tb, -2)[:, None, :]).any(axis=2)
    if found_scores is not None and true_scores is not None:
        fs = np.asarray(found_scores, dtype=np.float64)
        ts = np.asarray(true_scores, dtype=np.float64)
        if fs.shape != f.shape or ts.shape != t.shape:
            raise ValueError("recall: found_scores / true_scores must have the shapes of found / true")
        kth = np.where(t >= 0, ts, np.inf).min(axis=1)
        hit |= (f >= 0) & (fs >= kth[:, None] - eps)
    hits = np.minimum(hit.sum(axis=1), n_true)
    return np.where(n_true > 0, hits / np.maximum(n_true, 1), float(empty))


def recall_at_k(found: Any, true: Any, *, found_scores: Any = None, true_scores: Any = None, eps: float = 1e-3) -> float:
    """Mean recall@k over the rows that have a true entry (1.0 when none has): the mean
    of :func:`recall_rows` (same arguments, same tie tolerance)."""
    r = recall_rows(found, true, found_scores=found_scores, true_scores=true_scores, eps=eps, empty=np.nan)
    ok = ~np.isnan(r)
    return float(r[ok].mean()) if ok.any() else 1.0
