"""numba kernels of the retrieval layer: fused top-k selection with a time cut, and
group expansion (item or category → that group's positions, most recent first).

Tie rule everywhere: among equal scores the *more recent* behavior (larger
position) wins, so an item seen several times yields its most recent positions first.
The shared bounded heap of :mod:`gsu.index._kernels` breaks ties towards the smaller
"row", so positions enter it negated.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu.index._kernels import heap_push, heap_sorted


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
    float32 (pre-filled -1 / -inf), undoing the negation of the stored indices."""
    B = hs.shape[0]
    for b in range(B):
        size = sizes[b]
        heap_sorted(hs[b], hr[b], size, out_s[b], out_idx[b])
        for a in range(size):
            out_idx[b, a] = -out_idx[b, a]


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
            # first index in [lo, hi) whose position is >= c (binary search)
            a = lo
            z = hi
            while a < z:
                mid = (a + z) >> 1
                if grp_pos[mid] < c:
                    a = mid + 1
                else:
                    z = mid
            i = a - 1
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
            c = cuts[t]
            a = lo
            z = hi
            while a < z:
                mid = (a + z) >> 1
                if grp_pos[mid] < c:
                    a = mid + 1
                else:
                    z = mid
            i = a - 1
            while i >= lo and n < k:
                out_pos[t, n] = grp_pos[i]
                n += 1
                i -= 1
        counts[t] = n
