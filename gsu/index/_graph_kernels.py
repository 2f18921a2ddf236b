"""numba beam search over a faiss HNSW graph, for batches where every query has its own filter.

faiss filters an HNSW search through one ``IDSelector`` per call, so a batch whose
queries each carry their own allowed set (one user's behavior set per request) costs one
faiss call, one selector and one bitmap per query from Python. This kernel reads the
graph faiss built (``neighbors``, ``offsets``, ``cum_nneighbor_per_level``, entry point,
levels) and runs the whole batch in one call, parallel over queries, each with its own
allowed-row bitmap set and cleared in place from the compiled filter's rows.

The search is the standard HNSW one (Malkov & Yashunin): greedy descent through the upper
levels, then a beam of width ``ef`` on level 0. Filtered-out nodes are expanded like any
other (the graph stays connected) but only allowed nodes enter the result set, and the
beam stops once the best unexpanded candidate is worse than the ef-th allowed result —
hnswlib's filtered rule. Visited marks are epoch stamps, never cleared between queries.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu._simd import prefetch
from gsu.index._filter_kernels import _dot1
from gsu.index._kernels import heap_push, heap_sorted, lower_bound, sift_down

_FM = {"contract", "reassoc", "nsz", "arcp"}
_DENSE = 8  # filters allowing more than n / _DENSE rows are tested by binary search, not a bitmap


@nb.njit(cache=True, inline="always")
def _allowed(v, bm, rows, lo, hi):
    """Row ``v`` allowed: bit ``v`` of the bitmap ``bm``, or when ``bm`` is empty a binary
    search in the sorted ``rows[lo:hi]`` (dense filters: no O(m) bitmap to build)."""
    if bm.shape[0] > 0:
        return (bm[v >> 6] >> np.uint64(v & 63)) & np.uint64(1) != 0
    i = lower_bound(rows, lo, hi, v)
    return i < hi and rows[i] == v


@nb.njit(cache=True, fastmath=_FM)
def _beam_one(qv, X, nbr, off, cum, ep, maxl, bm, rows, rlo, rhi, ef, k, visited, epoch, cs, cr, ts, tr, out_s, out_r):
    """One query: returns the number of results written best-first into out_s/out_r.

    Allowed rows: bit ``v & 63`` of word ``v >> 6`` of ``bm``, or (``bm`` empty) the
    sorted ``rows[rlo:rhi]``; ``visited`` (n,) uint32 epoch stamps; ``cs``/``cr``
    candidate heap scratch (its capacity bounds the frontier), ``ts``/``tr`` (>= ef,)
    result heap scratch.
    """
    d = qv.shape[0]
    Xf = X.reshape(-1)
    cur = ep
    cur_s = _dot1(qv, X[cur])
    for lv in range(maxl, 0, -1):  # greedy descent through the upper levels
        changed = True
        while changed:
            changed = False
            for j in range(off[cur] + cum[lv], off[cur] + cum[lv + 1]):
                v = nbr[j]
                if v < 0:
                    break
                s = _dot1(qv, X[v])
                if s > cur_s:
                    cur_s = s
                    cur = v
                    changed = True
    cap = cs.shape[0]
    csize = 0  # candidates: a min-heap of -score, so its root is the best candidate
    tsize = 0  # results: a min-heap of score over allowed nodes, at most ef
    visited[cur] = epoch
    csize = heap_push(cs, cr, csize, cap, -cur_s, cur)
    if _allowed(cur, bm, rows, rlo, rhi):
        tsize = heap_push(ts, tr, tsize, ef, cur_s, cur)
    lb = ts[0] if tsize == ef else np.float32(-np.inf)
    deg = cum[1] - cum[0]
    while csize > 0:
        c_s = -cs[0]
        c = cr[0]
        if tsize == ef and c_s < lb:
            break
        csize -= 1
        cs[0] = cs[csize]
        cr[0] = cr[csize]
        sift_down(cs, cr, csize, 0)
        b = off[c]
        for j in range(b, b + deg):  # fetch the unvisited neighbours' vectors first
            v = nbr[j]
            if v < 0:
                break
            if visited[v] != epoch:
                for t in range(0, d, 16):
                    prefetch(Xf, v * d + t)
        for j in range(b, b + deg):
            v = nbr[j]
            if v < 0:
                break
            if visited[v] == epoch:
                continue
            visited[v] = epoch
            s = _dot1(qv, X[v])
            if tsize < ef or s > lb:
                if csize < cap:
                    csize = heap_push(cs, cr, csize, cap, -s, v)
                if _allowed(v, bm, rows, rlo, rhi):
                    tsize = heap_push(ts, tr, tsize, ef, s, v)
                    if tsize == ef:
                        lb = ts[0]
    # the k best of the ef results, best first (ties to the smaller row)
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    size = 0
    for a in range(tsize):
        size = heap_push(hs, hr, size, k, ts[a], tr[a])
    for a in range(k):
        out_r[a] = -1
        out_s[a] = -np.inf
    heap_sorted(hs, hr, size, out_s, out_r)
    return size


@nb.njit(cache=True, parallel=True)
def search_per_query(Q, X, nbr, off, cum, ep, maxl, which, starts, ends, rows, ef, k, out_r, out_s, nchunk):
    """Filtered HNSW search of queries ``which``, query ``q`` restricted to the rows
    ``rows[starts[q]:ends[q]]`` (sorted, unique) with beam ``ef[q]``.

    ``nbr`` (int32), ``off`` (n+1,) int64, ``cum`` (levels+2,) int64: faiss's level
    layout (node v's level-l neighbours are ``nbr[off[v]+cum[l] : off[v]+cum[l+1]]``,
    -1 padded); ``ep``/``maxl``: entry point and its level. Writes rows and scores into
    ``out_r``/``out_s`` (nq, k) (padding -1 / -inf). ``nchunk`` chunks share scratch.
    """
    n = X.shape[0]
    W = which.shape[0]
    ef_max = k
    for i in range(W):
        ef_max = max(ef_max, ef[which[i]])
    for c in nb.prange(nchunk):
        visited = np.zeros(n, np.uint32)
        bm = np.zeros((n + 63) >> 6, np.uint64)
        no_bm = np.zeros(0, np.uint64)
        cap = 4096 + 16 * ef_max
        cs = np.empty(cap, np.float32)
        cr = np.empty(cap, np.int64)
        ts = np.empty(ef_max, np.float32)
        tr = np.empty(ef_max, np.int64)
        epoch = np.uint32(0)
        for i in range(c * W // nchunk, (c + 1) * W // nchunk):
            q = which[i]
            if ends[q] == starts[q]:
                continue
            e = max(ef[q], k)
            epoch += np.uint32(1)
            if (ends[q] - starts[q]) * _DENSE > n:
                # dense filter: membership by binary search in its sorted rows (a search
                # visits a few thousand nodes; building an O(m) bitmap would cost more)
                _beam_one(Q[q], X, nbr, off, cum, ep, maxl, no_bm, rows, starts[q], ends[q], e, k, visited, epoch,
                          cs, cr, ts, tr, out_s[q], out_r[q])
                continue
            # sparse filter: a bitmap, 64 rows per word; rows are sorted, so each word is
            # assembled in a register and stored once
            cur = rows[starts[q]] >> 6
            acc = np.uint64(0)
            for j in range(starts[q], ends[q]):
                r = rows[j]
                w = r >> 6
                if w != cur:
                    bm[cur] = acc
                    cur = w
                    acc = np.uint64(0)
                acc |= np.uint64(1) << np.uint64(r & 63)
            bm[cur] = acc
            _beam_one(Q[q], X, nbr, off, cum, ep, maxl, bm, rows, starts[q], ends[q], e, k, visited, epoch,
                      cs, cr, ts, tr, out_s[q], out_r[q])
            for j in range(starts[q], ends[q]):
                bm[rows[j] >> 6] = 0
