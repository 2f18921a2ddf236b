"""numba kernels of the lifelong-sequence methods: cluster routing, scoring of opened
clusters into per-target heaps, exact rescoring of draft candidates, and the
quota merge of multi-interest probes.

Heaps are :mod:`gsu.index._kernels`' bounded min-heaps over ``(score, -position)``:
the root is the worst kept entry and, among equal scores, the *older* behavior is
worse, so ties go to the more recent behavior (the tie rule of every GSU method).
:func:`gsu.retrieval._kernels.heaps_finish` turns them into best-first rows.

Every kernel checks the indices it follows (rows into the embedding table, positions
into the history, offsets into member lists) and skips what is out of range, so a
malformed layout cannot make it read or write outside its arrays.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu.index._kernels import _worse, heap_push, lower_bound, sift_down

_FM = {"contract", "reassoc", "nsz", "arcp"}  # no nnan/ninf: -inf sentinels and NaN checks stay valid


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _dot(q, E, r):
    """``q · E[r]`` in float32."""
    acc = np.float32(0.0)
    for j in range(q.shape[0]):
        acc += q[j] * E[r, j]
    return acc


@nb.njit(cache=True, inline="always")
def _push_group(hs, hr, size, k, s, pos, a, b, cut):
    """Offer the positions ``pos[a:b]`` (ascending) that lie before ``cut``, all scoring
    ``s``, most recent first, until one is rejected (every older one would be too)."""
    i = lower_bound(pos, a, b, cut) - 1
    while i >= a:
        p = pos[i]
        if size == k and not _worse(hs[0], hr[0], s, -p):
            break
        size = heap_push(hs, hr, size, k, s, -p)
        i -= 1
    return size


@nb.njit(cache=True, nogil=True)
def route(Sc, counts, first, last, cuts, budget, min_probe, p0, out_ptr, out_cl):
    """Per target, the clusters to open: best centroid score first, until the opened
    clusters hold about ``budget`` behaviors visible to the target (and at least
    ``min_probe`` clusters are open).

    Sc (T, C) float32 centroid scores; counts / first / last (C,) int64 behaviors,
    earliest and latest position of each cluster; cuts (T,) int64 (a cluster with
    ``first >= cut`` is invisible and never opened). A cluster straddling the cut counts
    ``count · (cut - first) / (last + 1 - first)`` behaviors (an estimate). ``p0`` is the
    first guess of how many clusters a row needs (doubled until enough).

    Writes ``out_ptr`` (T+1,) int64 and ``out_cl`` (at least T·C,) int32: the clusters of
    row t are ``out_cl[out_ptr[t]:out_ptr[t+1]]``, best first. NaN scores are skipped.
    """
    T, C = Sc.shape
    hs = np.empty(max(C, 1), np.float32)
    hr = np.empty(max(C, 1), np.int64)
    ss = np.empty(max(C, 1), np.float32)
    sc = np.empty(max(C, 1), np.int64)
    n = 0
    out_ptr[0] = 0
    for t in range(T):
        cut = cuts[t]
        P = min(max(p0, 1), C)
        while True:
            size = 0
            nvis = 0
            for c in range(C):
                if first[c] >= cut:
                    continue
                v = Sc[t, c]
                if v != v:
                    continue
                nvis += 1
                size = heap_push(hs, hr, size, P, v, c)
            m = size
            while size > 0:  # heap-sort: worst popped into the last free slot
                ss[size - 1] = hs[0]
                sc[size - 1] = hr[0]
                size -= 1
                hs[0] = hs[size]
                hr[0] = hr[size]
                sift_down(hs, hr, size, 0)
            acc = 0.0
            opened = 0
            done = False
            for i in range(m):
                c = sc[i]
                out_cl[n + opened] = c
                opened += 1
                if last[c] < cut:
                    acc += counts[c]
                else:
                    acc += counts[c] * (cut - first[c]) / max(last[c] + 1 - first[c], 1)
                if acc >= budget and opened >= min_probe:
                    done = True
                    break
            if done or m >= nvis or P >= C:
                break
            P = min(2 * P, C)
        n += opened
        out_ptr[t + 1] = n


@nb.njit(cache=True, nogil=True)
def invert(out_ptr, out_cl, C, cl_tptr, cl_t):
    """Per-cluster target lists from per-target cluster lists (counting sort).

    ``cl_tptr`` (C+1,) int64 and ``cl_t`` (out_ptr[-1],) int32 are written: the targets
    that open cluster c are ``cl_t[cl_tptr[c]:cl_tptr[c+1]]``, ascending. Cluster ids
    outside ``[0, C)`` are dropped.
    """
    T = out_ptr.shape[0] - 1
    for c in range(C + 1):
        cl_tptr[c] = 0
    for t in range(T):
        for i in range(out_ptr[t], out_ptr[t + 1]):
            c = out_cl[i]
            if 0 <= c < C:
                cl_tptr[c + 1] += 1
    for c in range(C):
        cl_tptr[c + 1] += cl_tptr[c]
    fill = cl_tptr[:C].copy()
    for t in range(T):
        for i in range(out_ptr[t], out_ptr[t + 1]):
            c = out_cl[i]
            if 0 <= c < C:
                cl_t[fill[c]] = t
                fill[c] += 1


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def score_clusters(E, grp_rows, cl_ptr, grp_ptr, pos, cl_tptr, cl_t, Q, cuts, k, hs, hr, sizes, scratch):
    """Score every member group of every opened cluster for the targets that opened it.

    E (n, d) float32 item embeddings; grp_rows (G,) int64 item row of each group (a
    distinct item of the cluster); cl_ptr (C+1,) groups of cluster c are
    ``cl_ptr[c]:cl_ptr[c+1]``; grp_ptr (G+1,) positions of group g are
    ``pos[grp_ptr[g]:grp_ptr[g+1]]``, ascending. cl_tptr / cl_t: the targets of each
    cluster (:func:`invert`). Q (T, d) float32 queries, cuts (T,) int64. Every visible
    position of a group scores ``Q[t] · E[row]`` and goes into heap t (``hs``/``hr``
    (T, k), ``sizes`` (T,), carried across calls). ``scratch`` (n_max, d) float32 holds
    one cluster's member embeddings (gathered once, used by all its targets).
    """
    C = cl_ptr.shape[0] - 1
    G = grp_ptr.shape[0] - 1
    nE, d = E.shape
    npos = pos.shape[0]
    ninf = np.float32(-np.inf)
    for c in range(C):
        t0 = cl_tptr[c]
        t1 = cl_tptr[c + 1]
        if t1 <= t0:
            continue
        g0 = max(cl_ptr[c], 0)
        g1 = min(cl_ptr[c + 1], G, g0 + scratch.shape[0])
        if g1 <= g0:
            continue
        nm = g1 - g0
        for j in range(nm):
            r = grp_rows[g0 + j]
            if 0 <= r < nE:
                for u in range(d):
                    scratch[j, u] = E[r, u]
            else:
                for u in range(d):
                    scratch[j, u] = np.nan  # an unknown row never scores
        for ti in range(t0, t1):
            t = cl_t[ti]
            q = Q[t]
            cut = cuts[t]
            h_s = hs[t]
            h_r = hr[t]
            size = sizes[t]
            root = h_s[0] if size == k else ninf
            for j in range(nm):
                acc = np.float32(0.0)
                for u in range(d):
                    acc += q[u] * scratch[j, u]
                if acc != acc or (size == k and acc < root):
                    continue
                g = g0 + j
                a = max(grp_ptr[g], 0)
                b = min(grp_ptr[g + 1], npos)
                if b <= a:
                    continue
                size = _push_group(h_s, h_r, size, k, acc, pos, a, b, cut)
                if size == k:
                    root = h_s[0]
            sizes[t] = size


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def rescore_candidates(Q, E, hrows, cand, cuts, k, hs, hr, sizes):
    """Exact rescoring of draft candidates.

    Q (T, d) float32 queries; E (n, d) float32 embeddings; hrows (L,) int64 item row of
    each history position; cand (T, m) int64 candidate positions (-1 = none, distinct per
    row). Each candidate ``p < cuts[t]`` scores ``Q[t] · E[hrows[p]]`` into heap t
    (``hs``/``hr`` (T, k), ``sizes`` (T,)). Out-of-range positions and rows are skipped.
    """
    T, m = cand.shape
    L = hrows.shape[0]
    nE = E.shape[0]
    for t in range(T):
        q = Q[t]
        cut = min(cuts[t], L)
        h_s = hs[t]
        h_r = hr[t]
        size = sizes[t]
        for j in range(m):
            p = cand[t, j]
            if p < 0 or p >= cut:
                continue
            r = hrows[p]
            if r < 0 or r >= nE:
                continue
            s = _dot(q, E, r)
            if s != s:
                continue
            size = heap_push(h_s, h_r, size, k, s, -p)
        sizes[t] = size


@nb.njit(cache=True, nogil=True)
def quota_merge(P, quotas, k, L, out_pos):
    """Merge per-probe ranked lists with per-row quotas and de-duplication.

    P (R, m, kk) int64 positions (-1 padded) of m probes per row, best first; quotas
    (R, m) int64 (the share of k each probe gets); positions lie in ``[0, L)``. First
    each probe contributes its best ``quotas[r, j]`` positions not taken yet (rank by
    rank, probes in order); then the free slots are filled by rank, round-robin over
    probes, skipping positions already taken. Writes ``out_pos`` (R, k) (pre-filled -1)
    and returns the (R,) int64 counts.
    """
    R, m, kk = P.shape
    seen = np.zeros(max(L, 1), np.bool_)
    counts = np.zeros(R, np.int64)
    for r in range(R):
        n = 0
        used = np.zeros(m, np.int64)  # per probe: positions of its quota taken
        for phase in range(2):
            for rank in range(kk):
                if n >= k:
                    break
                for j in range(m):
                    if n >= k:
                        break
                    if phase == 0 and used[j] >= quotas[r, j]:
                        continue
                    p = P[r, j, rank]
                    if p < 0 or p >= L or seen[p]:
                        continue
                    seen[p] = True
                    out_pos[r, n] = p
                    n += 1
                    if phase == 0:
                        used[j] += 1
        for a in range(n):
            seen[out_pos[r, a]] = False
        counts[r] = n
    return counts
