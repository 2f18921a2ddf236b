"""numba beam search over a faiss HNSW graph, on 8-bit codes, reranked in float32.

faiss builds the graph (``IndexHNSWFlat``); this kernel reads it (``neighbors``,
``offsets``, ``cum_nneighbor_per_level``, entry point, levels) and searches it for
``FilteredIndex``'s HNSW route and for batches where every query has its own filter
(faiss takes one ``IDSelector`` per call).

The search is the standard HNSW one (Malkov & Yashunin): greedy descent through the
upper levels, then a beam on level 0. Filtered-out nodes are expanded like any other
(the graph stays connected) but only allowed nodes enter the result set, and the beam
stops once the best unexpanded candidate is worse than the ``ef``-th *allowed* result
(hnswlib's filtered rule: ``ef`` counts allowed results, so a sparse filter walks further
on its own, where faiss's filtered beam keeps the excluded nodes it met and needs a
``1/s`` wider ``ef``).

Traversal scores come from a per-dimension 8-bit scalar quantisation of the vectors
(:func:`sq8_encode`: one 64-byte line per 64-d vector instead of four), with the query
pre-multiplied by the step sizes; the score offset ``q · vmin`` is the same for every
node and left out. The traversal is latency-bound on scattered rows, so reading a
quarter of the bytes is what makes it fast; the unvisited neighbours of an expanded
node are prefetched together before any is scored. The ``ef`` allowed results are then
rescored exactly in float32 and the best ``k`` returned, so returned scores are exact
inner products; the codes only steer the walk.

Membership: ``mode`` ``ALL`` (no filter), ``BITMAP`` (bit ``v & 63`` of word ``v >> 6``)
or ``SORTED`` (binary search in the sorted allowed rows; dense per-query filters, where
building an O(n) bitmap would cost more than the few thousand lookups of a search).
Visited marks are a bitset (n/8 bytes: stays in L1/L2 where the traversal checks ~64
neighbours per expanded node); the nodes marked are listed and their words cleared after
the query.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu._format import aligned_empty
from gsu._simd import prefetch
from gsu.index._filter_kernels import _dot1, _dot4  # on uint8 code rows too (float32 sums)
from gsu.index.topk import heap_push, heap_sorted, lower_bound

_FM = {"contract", "reassoc", "nsz", "arcp"}
_DENSE = 8  # per-query filters allowing more than n / _DENSE rows are tested by binary search, not a bitmap
ALL, BITMAP, SORTED = 0, 1, 2
#: level-0 nodes visited before the density probe decides (about two expansions)
_PROBE = 96
#: candidate-heap slots beyond ``16 · ef`` (a full heap drops new candidates: quality only)
_CAP_BASE = 4096


def sq8_encode(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension 8-bit scalar quantisation of ``X`` (n, d) float32 for the traversal.

    Returns ``(codes (n, d) uint8, step (d,) float32)`` with
    ``X[:, t] ≈ vmin[t] + step[t] · codes[:, t]`` (``vmin`` = column minimum, not needed
    by the search: it shifts every score by the same ``q · vmin``). A constant column gets
    step 1 and code 0. Every code is ``clip(rint((x - vmin) / step), 0, 255)`` in float64
    (:func:`_sq8_rows`, rows in parallel; the column ranges are numpy's).
    """
    n, d = X.shape
    if n == 0:
        return np.zeros((0, d), np.uint8), np.ones(d, np.float32)
    X = np.ascontiguousarray(X, dtype=np.float32)
    vmin = X.min(axis=0).astype(np.float64)
    span = X.max(axis=0).astype(np.float64) - vmin
    step = np.where(span > 0, span / 255.0, 1.0)
    codes = aligned_empty((n, d), np.uint8)  # rows on cache-line boundaries (d a multiple of 64: one line per 64)
    _sq8_rows(X, vmin, step, codes)
    return codes, step.astype(np.float32)


@nb.njit(cache=True, parallel=True)
def _sq8_rows(X, vmin, step, codes):
    """``codes[i, t] = clip(rint((X[i, t] - vmin[t]) / step[t]), 0, 255)`` in float64."""
    n, d = X.shape
    for i in nb.prange(n):
        for t in range(d):
            c = np.rint((np.float64(X[i, t]) - vmin[t]) / step[t])
            if c < 0.0:
                c = 0.0
            elif c > 255.0:
                c = 255.0
            codes[i, t] = np.uint8(c)


@nb.njit(cache=True)
def without_nodes(nbr, off, cum, drop, X, aug):
    """A copy of the neighbour array ``nbr`` as if the nodes marked in the bitmap ``drop``
    (bit ``v & 63`` of word ``v >> 6``) had not been inserted: their own lists are emptied,
    and in every other list a dropped node is replaced by the neighbour of it (same level)
    most similar to the list's owner (inner product on ``X``) that is not dropped and not
    in the list yet — the repair a graph built without it would have had there — or
    removed when there is none. ``aug`` = 1: ``X`` holds the l2-augmented rows
    ``[x, -|x|²/2]`` (:mod:`gsu.index._l2`) and a candidate is ranked by
    ``x_v·x_c - |x_c|²/2``, i.e. by euclidean distance to the owner. Used to time searches
    for index rows as held-out queries (calibration)."""
    out = nbr.copy()
    slots, vals = _held_out_slots(nbr, off, cum, drop, X, aug)
    for i in range(slots.shape[0]):
        out[slots[i]] = vals[i]
    return out


@nb.njit(cache=True)
def hold_out_nodes(nbr, off, cum, drop, X, aug):
    """:func:`without_nodes` in place: writes the repaired links into ``nbr`` and returns
    ``(slots, saved)``, the changed positions and their original links, for
    :func:`restore_slots` (a few per held-out node: no copy of the graph)."""
    slots, vals = _held_out_slots(nbr, off, cum, drop, X, aug)
    saved = np.empty(slots.shape[0], nbr.dtype)
    for i in range(slots.shape[0]):
        saved[i] = nbr[slots[i]]
    for i in range(slots.shape[0]):
        nbr[slots[i]] = vals[i]
    return slots, saved


@nb.njit(cache=True)
def restore_slots(nbr, slots, saved):
    """Undo :func:`hold_out_nodes`."""
    for i in range(slots.shape[0]):
        nbr[slots[i]] = saved[i]


@nb.njit(cache=True)
def _held_out_slots(nbr, off, cum, drop, X, aug):
    """The links of the graph without the ``drop`` nodes (see :func:`without_nodes`) that
    differ from ``nbr``: ``(slots int64, values)``, computed from the original links only."""
    n = off.shape[0] - 1
    nlev = cum.shape[0] - 1
    one = np.uint64(1)
    cap = 1024
    slots = np.empty(cap, np.int64)
    vals = np.empty(cap, nbr.dtype)
    nch = 0
    width = 0
    for lv in range(nlev):
        width = max(width, cum[lv + 1] - cum[lv])
    tmp = np.empty(max(width, 1), nbr.dtype)
    for v in range(n):
        if (drop[v >> 6] >> np.uint64(v & 63)) & one:
            for j in range(off[v], off[v + 1]):
                if nbr[j] != -1:
                    if nch == cap:
                        cap *= 2
                        slots = _grow(slots, cap)
                        vals = _grow(vals, cap)
                    slots[nch] = j
                    vals[nch] = -1
                    nch += 1
            continue
        for lv in range(nlev):
            a = off[v] + cum[lv]
            b = off[v] + cum[lv + 1]
            if b > off[v + 1]:
                break
            hit = False
            for j in range(a, b):
                u = nbr[j]
                if u < 0:
                    break
                if (drop[u >> 6] >> np.uint64(u & 63)) & one:
                    hit = True
                    break
            if not hit:
                continue  # the common case: this list is unchanged
            w = 0
            for j in range(a, b):
                u = nbr[j]
                if u < 0:
                    break
                if ((drop[u >> 6] >> np.uint64(u & 63)) & one) == 0:
                    tmp[w] = u
                    w += 1
                    continue
                best = -1
                best_s = np.float32(-np.inf)
                ua = off[u] + cum[lv]
                ub = min(off[u] + cum[lv + 1], off[u + 1])
                for jj in range(ua, ub):
                    c = nbr[jj]
                    if c < 0:
                        break
                    if c == v or ((drop[c >> 6] >> np.uint64(c & 63)) & one):
                        continue
                    dup = False
                    for t in range(a, b):  # already linked (kept so far, or still to come)?
                        if nbr[t] == c or (t - a < w and tmp[t - a] == c):
                            dup = True
                            break
                    if dup:
                        continue
                    sc = np.float32(0.0)
                    dd = X.shape[1] - aug
                    for t in range(dd):
                        sc += X[v, t] * X[c, t]
                    if aug:
                        sc += X[c, dd]
                    if sc > best_s:
                        best_s = sc
                        best = c
                if best >= 0:
                    tmp[w] = best
                    w += 1
            for t in range(w, b - a):
                tmp[t] = -1
            for t in range(b - a):
                if tmp[t] != nbr[a + t]:
                    if nch == cap:
                        cap *= 2
                        slots = _grow(slots, cap)
                        vals = _grow(vals, cap)
                    slots[nch] = a + t
                    vals[nch] = tmp[t]
                    nch += 1
    return slots[:nch].copy(), vals[:nch].copy()


@nb.njit(cache=True)
def _grow(a, cap):
    b = np.empty(cap, a.dtype)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True, inline="always")
def _allowed(v, mode, bm, rows, lo, hi):
    """Row ``v`` passes the filter (see the module docstring for ``mode``)."""
    if mode == ALL:
        return True
    if mode == BITMAP:
        return (bm[v >> 6] >> np.uint64(v & 63)) & np.uint64(1) != 0
    i = lower_bound(rows, lo, hi, v)
    return i < hi and rows[i] == v


@nb.njit(cache=True, inline="always")
def _fsift(hs, hr, size, i, s, r):
    """Place (s, r) at slot ``i`` of the score-only min-heap ``hs``/``hr`` (``size``
    entries) and sift it down (moving a hole: one store per level).

    Every path ends in its own ``return`` (as in :func:`_fpush`): with a ``break`` out of the
    loop and the stores after it, numba kept a reference count on ``hs``/``hr`` per call
    (~20 ns, more than the sift), which its pruning removes in this shape."""
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


@nb.njit(cache=True, inline="always")
def _fpush(hs, hr, size, cap, s, r):
    """Offer (s, r) to a score-only min-heap of capacity ``cap``; returns the new size.
    The walk's heaps need no tie rule (the results are rescored and ordered with one).

    Written so that every path returns by itself, without a ``break`` or a join after a
    branch that stores: in that shape numba's reference-count pruning drops the count on
    the heap arrays it otherwise took on every call (a loop of 5,000 offers to a heap of 64,
    one thread: 124 → 15 µs; the walk offers every scored neighbour that beats its bound)."""
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
    _fsift(hs, hr, size, 0, s, r)
    return size


@nb.njit(cache=True, fastmath=_FM)
def _beam_one(qv, qp, C, X, nbr, off, cum, ep, maxl, mode, bm, rows, rlo, rhi, ef, k, vis, touched,
              cs, cr, ts, tr, buf, out_s, out_r, probe, seeds, si):
    """One query: returns the number of results written best-first into out_s/out_r, or
    -1 when the density probe failed (nothing written).

    Density probe (``probe > 0``): once ``_PROBE`` level-0 nodes were visited — the
    neighbourhood the descent landed in — the search gives up if fewer than ``probe`` of
    them pass the filter: a filter that sparse near the query is cheaper on the IVF route.

    ``qv`` the float32 query (rescoring), ``qp`` the query times the code steps
    (traversal); allowed rows per ``mode``/``bm``/``rows[rlo:rhi]``; ``vis`` (ceil(n/64),)
    uint64 visited bitset, all zero on entry and on return; ``touched`` (n,) int32 scratch
    (the nodes marked); ``cs``/``cr`` candidate heap scratch (its capacity bounds the
    frontier), ``ts``/``tr`` (>= ef,) result heap scratch, ``buf`` (>= level-0 degree,)
    int64 scratch. ``seeds[si]`` (when ``seeds`` has rows): extra level-0 entry points
    (-1: none), e.g. rows of the IVF lists whose centroids score best, entered beside the
    node the greedy descent reached, so a query whose descent lands in the wrong region
    still starts near its answer.
    """
    d = qp.shape[0]
    Cf = C.reshape(-1)
    nf = nbr.reshape(-1)
    cur = ep
    cur_s = _dot1(qp, C[cur])
    sc = np.empty(4, np.float32)
    for lv in range(maxl, 0, -1):  # greedy descent through the upper levels
        changed = True
        while changed:
            changed = False
            b = off[cur]
            nn = 0
            for j in range(b + cum[lv], b + cum[lv + 1]):  # prefetch every neighbour first
                v = nbr[j]
                if v < 0:
                    break
                buf[nn] = v
                nn += 1
                for t in range(0, d, 64):
                    prefetch(Cf, v * d + t)
            nxt = cur
            for j in range(0, nn, 4):
                v0 = buf[j]
                v1 = buf[j + 1] if j + 1 < nn else v0
                v2 = buf[j + 2] if j + 2 < nn else v0
                v3 = buf[j + 3] if j + 3 < nn else v0
                sc[0], sc[1], sc[2], sc[3] = _dot4(qp, C[v0], C[v1], C[v2], C[v3])
                for u in range(min(4, nn - j)):
                    if sc[u] > cur_s:
                        cur_s = sc[u]
                        nxt = buf[j + u]
                        changed = True
            cur = nxt
    cap = cs.shape[0]
    csize = 0  # candidates: a min-heap of -score, so its root is the best candidate
    tsize = 0  # results: a min-heap of score over allowed nodes, at most ef
    vis[cur >> 6] |= np.uint64(1) << np.uint64(cur & 63)
    touched[0] = cur
    nt = 1
    csize = _fpush(cs, cr, csize, cap, -cur_s, cur)
    nok = 0  # allowed among the visited, counted until the probe
    if _allowed(cur, mode, bm, rows, rlo, rhi):
        tsize = _fpush(ts, tr, tsize, ef, cur_s, cur)
        nok = 1
    if seeds.shape[0] > 0:
        for j in range(seeds.shape[1]):
            v = seeds[si, j]
            if v < 0 or v >= C.shape[0]:
                continue
            w = vis[v >> 6]
            bit = np.uint64(1) << np.uint64(v & 63)
            if (w & bit) != 0:
                continue
            vis[v >> 6] = w | bit
            touched[nt] = v
            nt += 1
            s = _dot1(qp, C[v])
            csize = _fpush(cs, cr, csize, cap, -s, v)
            if _allowed(v, mode, bm, rows, rlo, rhi):
                tsize = _fpush(ts, tr, tsize, ef, s, v)
                nok += 1
    probing = probe > 0
    lb = ts[0] if tsize == ef else np.float32(-np.inf)
    deg = cum[1] - cum[0]
    while csize > 0:
        c_s = -cs[0]
        c = cr[0]
        if tsize == ef and c_s < lb:
            break
        csize -= 1
        if csize > 0:
            _fsift(cs, cr, csize, 0, cs[csize], cr[csize])
        if csize > 0:  # the next node to expand: its neighbour list
            o = off[cr[0]]
            for t in range(0, deg, 16):
                prefetch(nf, o + t)
        b = off[c]
        nn = 0
        for j in range(b, b + deg):  # collect and prefetch the unvisited neighbours first
            v = nbr[j]
            if v < 0:
                break
            w = vis[v >> 6]
            bit = np.uint64(1) << np.uint64(v & 63)
            if (w & bit) == 0:
                vis[v >> 6] = w | bit
                touched[nt] = v
                nt += 1
                buf[nn] = v
                if probing and _allowed(v, mode, bm, rows, rlo, rhi):
                    nok += 1
                nn += 1
                for t in range(0, d, 64):
                    prefetch(Cf, v * d + t)
        if probing and nt >= _PROBE:
            probing = False
            if nok < probe * nt:
                for a in range(nt):
                    vis[touched[a] >> 6] = 0
                return -1
        for j in range(0, nn, 4):  # score four at a time (sc); the tail pads with node c
            v0 = buf[j]
            v1 = buf[j + 1] if j + 1 < nn else c
            v2 = buf[j + 2] if j + 2 < nn else c
            v3 = buf[j + 3] if j + 3 < nn else c
            sc[0], sc[1], sc[2], sc[3] = _dot4(qp, C[v0], C[v1], C[v2], C[v3])
            for u in range(min(4, nn - j)):
                v = buf[j + u]
                s = sc[u]
                if tsize < ef or s > lb:
                    if csize > 0 and s > -cs[0]:  # the new best candidate: fetch its neighbour list
                        o = off[v]
                        for t in range(0, deg, 16):
                            prefetch(nf, o + t)
                    if csize < cap:
                        csize = _fpush(cs, cr, csize, cap, -s, v)
                    if _allowed(v, mode, bm, rows, rlo, rhi):
                        tsize = _fpush(ts, tr, tsize, ef, s, v)
                        if tsize == ef:
                            lb = ts[0]
    for a in range(nt):
        vis[touched[a] >> 6] = 0
    # rescore the ef allowed results exactly; the k best, best first (ties to the smaller row)
    Xf = X.reshape(-1)
    for a in range(tsize):
        r = tr[a]
        for t in range(0, X.shape[1], 16):
            prefetch(Xf, r * X.shape[1] + t)
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    size = 0
    for a in range(tsize):
        r = tr[a]
        size = heap_push(hs, hr, size, k, _dot1(qv, X[r]), r)
    for a in range(k):
        out_r[a] = -1
        out_s[a] = -np.inf
    heap_sorted(hs, hr, size, out_s, out_r)
    return size


@nb.njit(cache=True)
def _search_range(Q, step, C, X, nbr, off, cum, ep, maxl, which, i0, i1, all_rows, sbm, starts, ends, rows, ef, ef0, k,
                  out_r, out_s, counts, vis, touched, bm, probe, seeds, bail):
    """Queries ``which[i0:i1]`` with the given scratch (``vis`` and ``bm`` all-zero bitsets,
    left all-zero; ``touched`` (n,) int32). ``bail`` > 0 with one filter per query: each
    query's density probe share is at least ``bail`` times its filter's selectivity."""
    n = X.shape[0]
    d = X.shape[1]
    ef_max = max(k, ef0)
    if ef.shape[0] > 0:
        for i in range(i0, i1):
            ef_max = max(ef_max, ef[which[i]])
    cap = _CAP_BASE + 16 * ef_max
    cs = np.empty(cap, np.float32)
    cr = np.empty(cap, np.int64)
    ts = np.empty(ef_max, np.float32)
    tr = np.empty(ef_max, np.int64)
    buf = np.empty(cum[1] - cum[0], np.int64)
    qp = np.empty(d, np.float32)
    for i in range(i0, i1):
        q = which[i]
        e = max(ef[q] if ef.shape[0] > 0 else ef0, k)
        for t in range(d):
            qp[t] = Q[q, t] * step[t]
        if all_rows:
            counts[q] = _beam_one(Q[q], qp, C, X, nbr, off, cum, ep, maxl, np.int64(ALL), sbm, rows, np.int64(0),
                                  np.int64(0), e, k, vis, touched, cs, cr, ts, tr, buf, out_s[q], out_r[q], probe, seeds, q)
            continue
        if sbm.shape[0] > 0:  # one filter for the batch, its bitmap built once
            counts[q] = _beam_one(Q[q], qp, C, X, nbr, off, cum, ep, maxl, np.int64(BITMAP), sbm, rows, np.int64(0), rows.shape[0], e, k,
                                  vis, touched, cs, cr, ts, tr, buf, out_s[q], out_r[q], probe, seeds, q)
            continue
        if ends[q] == starts[q]:
            for a in range(k):
                out_r[q, a] = -1
                out_s[q, a] = -np.inf
            counts[q] = 0
            continue
        pq = max(probe, bail * (ends[q] - starts[q]) / n) if bail > 0 else probe
        if (ends[q] - starts[q]) * _DENSE > n:
            counts[q] = _beam_one(Q[q], qp, C, X, nbr, off, cum, ep, maxl, np.int64(SORTED), bm, rows, starts[q], ends[q], e, k,
                                  vis, touched, cs, cr, ts, tr, buf, out_s[q], out_r[q], pq, seeds, q)
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
        counts[q] = _beam_one(Q[q], qp, C, X, nbr, off, cum, ep, maxl, np.int64(BITMAP), bm, rows, starts[q], ends[q], e, k,
                              vis, touched, cs, cr, ts, tr, buf, out_s[q], out_r[q], pq, seeds, q)
        for j in range(starts[q], ends[q]):
            bm[rows[j] >> 6] = 0


@nb.njit(cache=True)
def search_serial(Q, step, C, X, nbr, off, cum, ep, maxl, which, all_rows, sbm, starts, ends, rows, ef, ef0, k,
                  out_r, out_s, counts, vis, touched, bm, probe, seeds, bail):
    """:func:`search_batch` on the caller's scratch (two all-zero (ceil(n/64),) uint64
    bitsets ``vis``/``bm``, left all-zero, and ``touched`` (n,) int32), serially: one
    query per call pays no thread-pool launch and no O(n) scratch allocation."""
    _search_range(Q, step, C, X, nbr, off, cum, ep, maxl, which, np.int64(0), which.shape[0], all_rows, sbm, starts, ends, rows,
                  ef, ef0, k, out_r, out_s, counts, vis, touched, bm, probe, seeds, bail)


@nb.njit(cache=True, parallel=True)
def search_batch(Q, step, C, X, nbr, off, cum, ep, maxl, which, all_rows, sbm, starts, ends, rows, ef, ef0, k,
                 out_r, out_s, counts, nchunk, probe, seeds, bail):
    """Filtered HNSW search of queries ``which``, parallel over ``nchunk`` chunks.

    ``Q`` (nq, d) float32 queries, ``step`` (d,) float32 code steps, ``C`` (n, d) uint8
    codes, ``X`` (n, d) float32 vectors (rescoring). Beam: ``ef[q]``, or ``ef0`` for every
    query when ``ef`` is empty. Allowed rows: every row when ``all_rows``; else the rows
    ``rows`` (sorted, unique) of one filter for the batch when its bitmap ``sbm`` is
    non-empty, else ``rows[starts[q]:ends[q]]``. ``nbr`` (int32), ``off`` (n+1,) int64,
    ``cum`` (levels+2,) int64: faiss's level layout (node v's level-l neighbours are
    ``nbr[off[v]+cum[l] : off[v]+cum[l+1]]``, -1 padded); ``ep``/``maxl``: entry point and
    its level. Writes rows, scores and counts into ``out_r``/``out_s`` (nq, k) (padding
    -1 / -inf) and ``counts`` (nq,): -1 for a query whose density probe failed
    (``probe > 0``: see :func:`_beam_one`; its output rows are not written). ``seeds``
    (nq, S) int64 extra level-0 entry points per query (-1: none), or (0, 0): none.
    ``bail``: see :func:`_search_range`.
    """
    n = X.shape[0]
    W = which.shape[0]
    for c in nb.prange(nchunk):
        vis = np.zeros((n + 63) >> 6, np.uint64)
        bm = np.zeros((n + 63) >> 6, np.uint64)
        touched = np.empty(n, np.int32)
        _search_range(Q, step, C, X, nbr, off, cum, ep, maxl, which, c * W // nchunk, (c + 1) * W // nchunk, all_rows, sbm,
                      starts, ends, rows, ef, ef0, k, out_r, out_s, counts, vis, touched, bm, probe, seeds, bail)


@nb.njit(cache=True, fastmath=_FM)
def list_seeds(Q, which, C, first, out):
    """Walk seeds: for each query ``which[i]``, the first rows (``first``, (nlist,) int64,
    -1 for an empty list) of the ``out.shape[1]`` lists whose centroids ``C`` (nlist, d)
    score best against ``Q[which[i]]``, best first, into ``out[which[i]]`` (-1 where fewer
    lists hold rows). One scan of the centroids per query, four at a time."""
    S = out.shape[1]
    nl = C.shape[0]
    bs = np.empty(S, np.float32)
    bl = np.empty(S, np.int64)
    for i in range(which.shape[0]):
        q = which[i]
        qv = Q[q]
        m = 0
        for l0 in range(0, nl, 4):
            l1 = min(l0 + 1, nl - 1)
            l2 = min(l0 + 2, nl - 1)
            l3 = min(l0 + 3, nl - 1)
            a0, a1, a2, a3 = _dot4(qv, C[l0], C[l1], C[l2], C[l3])
            for u in range(min(4, nl - l0)):
                l = l0 + u
                if first[l] < 0:
                    continue
                s = a0 if u == 0 else (a1 if u == 1 else (a2 if u == 2 else a3))
                if m == S and s <= bs[S - 1]:
                    continue
                j = m if m < S else S - 1  # insertion into the sorted top-S
                while j > 0 and bs[j - 1] < s:
                    bs[j] = bs[j - 1]
                    bl[j] = bl[j - 1]
                    j -= 1
                bs[j] = s
                bl[j] = l
                if m < S:
                    m += 1
        for j in range(S):
            out[q, j] = first[bl[j]] if j < m else -1
