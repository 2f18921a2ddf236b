"""numba kernels of the retrieval layer: fused top-k selection with a time cut, and
group expansion (item or category → that group's positions, most recent first).

Tie rule everywhere: among equal scores the *more recent* behavior (larger
position) wins, so an item seen several times yields its most recent positions first.
The bounded min-heaps are :mod:`gsu.index.topk`' (the root is the worst kept entry,
ties towards the smaller "row", inlined into the scanning loops); positions enter them
negated so that ties go to the more recent behavior.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu.index.topk import heap_push, lower_bound, sift_down as _sift_down, worse


@nb.njit(cache=True, nogil=True)
def heap_scan_prefix(S, off, cuts, k, hs, hr, sizes):
    """Offer a chunk of scores to per-row bounded heaps (columns are positions).

    S (B, W) float32 holds the scores of positions ``off .. off+W-1``; row ``b`` sees
    only positions ``< cuts[b]``. ``hs`` (B, k) float32 / ``hr`` (B, k) int64 /
    ``sizes`` (B,) int64 carry each row's heap across chunks (``hr`` stores ``-position``
    so that ties go to the more recent behavior). NaN is never kept.
    """
    B, W = S.shape
    for b in range(B):
        c = cuts[b] - off
        if c > W:
            c = W
        size = sizes[b]
        h_s = hs[b]
        h_r = hr[b]
        row = S[b]
        j = 0
        while j < c and size < k:
            v = row[j]
            if v == v:
                size = heap_push(h_s, h_r, size, k, v, -(j + off))
            j += 1
        if size == k:
            root = h_s[0]
            while j < c:
                v = row[j]
                if v >= root:
                    size = heap_push(h_s, h_r, size, k, v, -(j + off))
                    root = h_s[0]
                j += 1
        sizes[b] = size


@nb.njit(cache=True, nogil=True)
def distinct_first(rows, slot):
    """``(distinct (G,), inv (L,))`` of ``rows`` (L,) (each in ``0..len(slot)-1``), the
    distinct values in order of first occurrence, ``rows == distinct[inv]``, in one pass;
    ``slot`` (n,) int32 all -1 on entry (a fresh scratch: it is left marked)."""
    L = rows.shape[0]
    u = np.empty(L, np.int64)
    inv = np.empty(L, np.int64)
    G = 0
    for p in range(L):
        r = rows[p]
        s = slot[r]
        if s < 0:
            s = G
            slot[r] = G
            u[G] = r
            G += 1
        inv[p] = s
    return u[:G], inv


@nb.njit(cache=True, nogil=True)
def group_layout(col_rows, n_groups):
    """``(grp_ptr (G+1,), grp_pos (L,))``: the positions of each group ``g`` of ``col_rows``
    (L,) (each in ``0..G-1``) as ``grp_pos[grp_ptr[g]:grp_ptr[g+1]]``, ascending (a counting
    sort, O(L + G))."""
    L = col_rows.shape[0]
    ptr = np.zeros(n_groups + 1, np.int64)
    for p in range(L):
        ptr[col_rows[p] + 1] += 1
    for g in range(n_groups):
        ptr[g + 1] += ptr[g]
    fill = ptr[:-1].copy()
    pos = np.empty(L, np.int64)
    for p in range(L):
        g = col_rows[p]
        pos[fill[g]] = p
        fill[g] += 1
    return ptr, pos


@nb.njit(cache=True, nogil=True)
def heap_scan_distinct(S, off, grp_ptr, grp_pos, cuts, k, hs, hr, sizes):
    """Like :func:`heap_scan_prefix`, but column ``j`` of ``S`` scores the distinct key
    ``g = off + j``, whose positions are ``grp_pos[grp_ptr[g]:grp_ptr[g+1]]`` (ascending):
    each of them before the row's cut is offered with that one score, the most recent
    first (once one is refused the older ones are too). The heaps order (score, position)
    entries totally, so they end as a positional scan leaves them."""
    B, W = S.shape
    for b in range(B):
        c = cuts[b]
        size = sizes[b]
        h_s = hs[b]
        h_r = hr[b]
        row = S[b]
        root = h_s[0] if size == k else np.float32(-np.inf)
        for j in range(W):
            v = row[j]
            if v != v or (size == k and v < root):
                continue
            g = off + j
            lo = grp_ptr[g]
            i = lower_bound(grp_pos, lo, grp_ptr[g + 1], c) - 1  # the most recent position before the cut
            while i >= lo:
                r = -grp_pos[i]
                if size == k and not worse(h_s[0], h_r[0], v, r):
                    break  # refused: the older copies would be too
                size = heap_push(h_s, h_r, size, k, v, r)
                i -= 1
            root = h_s[0] if size == k else np.float32(-np.inf)
        sizes[b] = size


@nb.njit(cache=True, nogil=True)
def heap_scan_groups(S, off, first_pos, cuts, k, hs, hr, sizes):
    """Like :func:`heap_scan_prefix`, but columns are groups (distinct items).

    Column ``j`` of ``S`` is group ``g = off + j``; it is visible to row ``b`` when
    ``first_pos[g] < cuts[b]`` (its oldest occurrence lies before the cut).
    """
    B, W = S.shape
    for b in range(B):
        c = cuts[b]
        size = sizes[b]
        h_s = hs[b]
        h_r = hr[b]
        row = S[b]
        root = h_s[0] if size == k else np.float32(-np.inf)
        for j in range(W):
            v = row[j]
            if size == k and not (v >= root):
                continue
            if v != v or first_pos[off + j] >= c:
                continue
            size = heap_push(h_s, h_r, size, k, v, -(j + off))
            if size == k:
                root = h_s[0]
        sizes[b] = size


@nb.njit(cache=True, nogil=True)
def heaps_finish(hs, hr, sizes, out_idx, out_s):
    """Write each row's heap best first into ``out_idx`` (B, k) int64 / ``out_s`` (B, k)
    float32 (pre-filled -1 / -inf), undoing the negation of the stored indices.

    Heap-sort: the root (worst kept entry) is popped into the last free slot, so a
    row costs O(k log k). The heaps are consumed.
    """
    B = hs.shape[0]
    for b in range(B):
        n = sizes[b]
        h_s = hs[b]
        h_r = hr[b]
        while n > 0:
            out_s[b, n - 1] = h_s[0]
            out_idx[b, n - 1] = -h_r[0]
            n -= 1
            h_s[0] = h_s[n]
            h_r[0] = h_r[n]
            _sift_down(h_s, h_r, n, 0)


@nb.njit(cache=True, nogil=True)
def expand_groups(top_g, top_s, grp_ptr, grp_pos, cuts, k, out_pos, out_s, counts):
    """Expand ranked groups into positions, most recent first, up to ``k`` per row.

    top_g (B, m) int64 group ids best first (-1 = end), top_s (B, m) float32 their
    scores; group ``g`` holds positions ``grp_pos[grp_ptr[g]:grp_ptr[g+1]]`` in
    ascending order. Only positions ``< cuts[b]`` are emitted. Every emitted position
    carries its group's score.
    """
    B, m = top_g.shape
    for b in range(B):
        c = cuts[b]
        n = 0
        for j in range(m):
            if n >= k:
                break
            g = top_g[b, j]
            if g < 0:
                break
            lo = grp_ptr[g]
            hi = grp_ptr[g + 1]
            i = lower_bound(grp_pos, lo, hi, c) - 1  # the last position < c
            s = top_s[b, j]
            while i >= lo and n < k:
                out_pos[b, n] = grp_pos[i]
                out_s[b, n] = s
                n += 1
                i -= 1
        counts[b] = n


@nb.njit(cache=True, nogil=True)
def hard_lookup(tcat_group, grp_ptr, grp_pos, cuts, k, out_pos, counts):
    """SIM-hard: for each target, the ``k`` most recent positions of its category group.

    tcat_group (T,) int64 group index of the target's category in the user's category
    index (-1 = the user never saw that category). O(log L + k) per target.
    """
    T = tcat_group.shape[0]
    for t in range(T):
        g = tcat_group[t]
        n = 0
        if g >= 0:
            lo = grp_ptr[g]
            hi = grp_ptr[g + 1]
            i = lower_bound(grp_pos, lo, hi, cuts[t]) - 1  # the last position before the cut
            while i >= lo and n < k:
                out_pos[t, n] = grp_pos[i]
                n += 1
                i -= 1
        counts[t] = n




@nb.njit(cache=True, nogil=True)
def mask_after_cut(S, cuts):
    """Set ``S[b, cuts[b]:] = -inf`` for every row (invisible positions)."""
    B, W = S.shape
    ninf = np.float32(-np.inf)
    for b in range(B):
        for j in range(max(cuts[b], 0), W):
            S[b, j] = ninf


@nb.njit(cache=True, nogil=True)
def mask_invisible_groups(S, first_pos, cuts):
    """Set ``S[b, g] = -inf`` where group ``g`` is not visible to row ``b``
    (``first_pos[g] >= cuts[b]``)."""
    B, W = S.shape
    ninf = np.float32(-np.inf)
    for b in range(B):
        c = cuts[b]
        for g in range(W):
            if first_pos[g] >= c:
                S[b, g] = ninf


@nb.njit(cache=True, inline="always")
def _desc_key(v, j):
    """uint64 key whose ascending order is (score descending, position descending)."""
    u = np.uint32(np.float32(v).view(np.uint32))
    if u & np.uint32(0x80000000):
        u = ~u
    else:
        u = u | np.uint32(0x80000000)
    return (np.uint64(~u) << np.uint64(32)) | np.uint64(np.uint32(0xFFFFFFFF) - np.uint32(j))


@nb.njit(cache=True, nogil=True)
def collect_topk(S, cuts, thr, k, keys):
    """Given each row's k-th largest visible score ``thr[b]`` (from a partition), write the
    top-``k`` positions among the first ``cuts[b]`` columns of ``S`` (B, W) as sort keys
    (:func:`_desc_key`) into ``keys`` (B, k) uint64, padded with the max uint64: every
    score above ``thr`` and, among scores equal to it, the most recent. A row-wise
    ``np.sort`` of ``keys`` then gives best first with ties to the more recent behavior
    (:func:`decode_keys`). Branch-free index compaction, O(W) per row. Scores must be
    finite or -inf; -inf is never returned.
    """
    B, W = S.shape
    ninf = np.float32(-np.inf)
    tmp = np.empty(k + 1, np.int64)
    pad = np.uint64(0xFFFFFFFFFFFFFFFF)
    for b in range(B):
        c = min(cuts[b], W)
        kk = min(k, c)
        krow = keys[b]
        if kk <= 0:
            for a in range(k):
                krow[a] = pad
            continue
        row = S[b]
        t = thr[b]
        g = 0
        for j in range(c):
            tmp[g] = j
            g += 1 if row[j] > t else 0
            if g > kk:  # only with an inexact threshold; stay in bounds
                g = kk
        for a in range(g):
            j = tmp[a]
            krow[a] = _desc_key(row[j], j)
        if t > ninf:
            j = c - 1
            while g < kk and j >= 0:
                if row[j] == t:
                    krow[g] = _desc_key(t, j)
                    g += 1
                j -= 1
        for a in range(g, k):
            krow[a] = pad


@nb.njit(cache=True, nogil=True)
def decode_keys(keys, out_pos, out_s):
    """Sorted keys (B, k) uint64 → positions (B, k) int64 (-1 padded) and scores (B, k)
    float32 (-inf padded), written into ``out_pos`` / ``out_s``."""
    B, k = keys.shape
    pad = np.uint64(0xFFFFFFFFFFFFFFFF)
    for b in range(B):
        for a in range(k):
            key = keys[b, a]
            if key == pad:
                out_pos[b, a] = -1
                out_s[b, a] = -np.inf
                continue
            out_pos[b, a] = np.int64(np.uint32(0xFFFFFFFF) - np.uint32(key & np.uint64(0xFFFFFFFF)))
            u = ~np.uint32(key >> np.uint64(32))
            if u & np.uint32(0x80000000):
                u = u & np.uint32(0x7FFFFFFF)
            else:
                u = ~u
            out_s[b, a] = np.uint32(u).view(np.float32)


@nb.njit(cache=True, nogil=True)
def union_merge(P, S, quotas, k, L, out_pos, out_s):
    """Hybrid union: per row, take each method's first ``quotas[m]`` distinct positions
    (rank by rank, methods in order), then fill the remaining slots by rank, round-robin
    over methods, skipping positions already taken.

    P (T, m, k') int64 positions (-1 padded) and S (T, m, k') float32 scores of m
    methods; L is the history length (positions < L). Writes ``out_pos`` / ``out_s``
    (T, k) pre-filled -1 / -inf; a position keeps the score of the method that
    contributed it first.
    """
    T, nm, kp = P.shape
    seen = np.zeros(max(L, 1), np.bool_)
    for t in range(T):
        n = 0
        for phase in range(2):
            for r in range(kp):
                if n >= k:
                    break
                for m in range(nm):
                    if n >= k:
                        break
                    if (phase == 0) != (r < quotas[m]):
                        continue
                    p = P[t, m, r]
                    if p < 0 or seen[p]:
                        continue
                    seen[p] = True
                    out_pos[t, n] = p
                    out_s[t, n] = S[t, m, r]
                    n += 1
        for a in range(n):
            seen[out_pos[t, a]] = False
