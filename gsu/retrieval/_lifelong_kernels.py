"""numba kernels of the lifelong-sequence methods: cluster routing, scoring of opened
clusters into per-target heaps, exact rescoring of draft candidates, and the
quota merge of multi-interest probes.

Position heaps are :mod:`gsu.index.topk`' bounded min-heaps over ``(score, -position)``:
the root is the worst kept entry and, among equal scores, the *older* behavior is
worse, so ties go to the more recent behavior (the tie rule of every GSU method).
:func:`gsu.retrieval._kernels.heaps_finish` turns them into best-first rows. The
opened clusters' members go into *group* heaps instead (a distinct item with all its
visible positions as one entry, the same order on positions; :func:`groups_finish`).

Every kernel checks the indices it follows (rows into the embedding table, positions
into the history, offsets into member lists) and skips what is out of range, so a
malformed layout cannot make it read or write outside its arrays.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu._simd import prefetch
from gsu.index.topk import heap_push, lower_bound, sift_down
from gsu.retrieval._kernels import _desc_key

_FM = {"contract", "reassoc", "nsz", "arcp"}  # no nnan/ninf: -inf sentinels and NaN checks stay valid


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _dot(q, E, r):
    """``q · E[r]`` in float32."""
    acc = np.float32(0.0)
    for j in range(q.shape[0]):
        acc += q[j] * E[r, j]
    return acc


_GATHER_AHEAD = 8  # member rows prefetched ahead of the one copied (score_clusters)
_RESCAN = 2  # the route's heap grows by this factor when its clusters do not reach the budget


@nb.njit(cache=True, nogil=True)
def route(Sc, counts, first, last, cuts, budget, min_probe, p0, out_ptr, out_cl):
    """Per target, the clusters to open: best centroid score first (ties: smaller cluster
    id first), until the opened clusters hold about ``budget`` behaviors visible to the
    target and at least ``min_probe`` clusters are open.

    Sc (T, C) float32 centroid scores; counts / first / last (C,) int64 behaviors,
    earliest and latest position of each cluster; cuts (T,) int64 (a cluster with
    ``first >= cut`` is invisible and never opened). A cluster straddling the cut counts
    ``count · (cut - first) / (last + 1 - first)`` behaviors (an estimate).

    Per row, a bounded heap keeps the best ``P`` visible clusters (``P = p0`` first; the
    scan is redone with twice as many when they do not reach the budget: 5 % less route time
    than 4·P on the lifelong users at 10^6), heap-sorted and walked
    best first. Writes ``out_ptr`` (T+1,) int64 and ``out_cl`` (at least T·C,) int32: the
    clusters of row t are ``out_cl[out_ptr[t]:out_ptr[t+1]]``, best first. NaN scores are
    skipped.
    """
    T, C = Sc.shape
    C = min(C, counts.shape[0], first.shape[0], last.shape[0])
    hs = np.empty(max(C, 1), np.float32)
    hr = np.empty(max(C, 1), np.int64)
    ss = np.empty(max(C, 1), np.float32)
    sc = np.empty(max(C, 1), np.int64)
    n = 0
    out_ptr[0] = 0
    for t in range(T):
        cut = cuts[t]
        P = min(max(p0, 1), C)
        opened = 0
        while True:
            size = 0
            root = np.float32(-np.inf)
            for c in range(C):
                v = Sc[t, c]
                if size == P and v < root:  # the common case once the heap is full: one compare
                    continue
                if first[c] >= cut or v != v:
                    continue
                size = heap_push(hs, hr, size, P, v, c)
                if size == P:
                    root = hs[0]
            m = size
            while size > 0:  # heap-sort: the worst kept entry goes to the last free slot
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
            if done or m < P or P >= C:
                break
            P = min(_RESCAN * P, C)
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


# --------------------------------------------------------------------------- group lists
# A target's top-k *positions* kept as whole groups (a distinct item with its visible
# positions, all scoring alike), in a list sorted by (score, oldest kept position), worst
# first, in the slots ``st .. st + size - 1`` of its rows (``k + 2`` slots: the front
# moves as the worst are dropped, the rest moves back to slot 0 when the end is reached).
# Entry i holds the score ``gs[i]``, the end ``ge[i]`` of the group's visible positions
# and the count ``gn[i]`` of its most recent ones kept, ``pos[ge[i] - gn[i] : ge[i]]``.
# An item repeated r times costs one offer instead of r position pushes into a k-heap,
# and a position is read only where two entries' scores tie (a history's positions lie
# scattered in memory). The offers are plain calls: inlined (``inline="always"``), their
# conditional loads kept numba's reference counts on the arrays, ~2x slower.


@nb.njit(cache=True)
def _g_trim(gs, ge, gn, lo, hi, tot, k, pos):
    """Drop the worst positions of the sorted entries ``lo .. hi - 1`` holding ``tot``
    positions until ``k`` remain: the front entry's oldest kept ones — all of them at once
    where its score is below the next entry's, one at a time where they tie (the entry,
    its oldest kept position now newer, then moves past older tied ones). Returns the new
    front and total ``(lo, tot)``."""
    while tot > k:
        n0 = gn[lo]
        alone = lo + 1 >= hi or gs[lo + 1] > gs[lo]
        drop = min(tot - k, n0) if alone else 1
        tot -= drop
        if drop >= n0:
            lo += 1
        else:
            gn[lo] = n0 - drop
            if not alone:
                i = lo
                while i + 1 < hi and gs[i + 1] == gs[i] and pos[ge[i + 1] - gn[i + 1]] < pos[ge[i] - gn[i]]:
                    gs[i], gs[i + 1] = gs[i + 1], gs[i]
                    ge[i], ge[i + 1] = ge[i + 1], ge[i]
                    gn[i], gn[i + 1] = gn[i + 1], gn[i]
                    i += 1
    return lo, tot


@nb.njit(cache=True)
def _g_offer(gs, ge, gn, st, size, tot, k, s, pos, a, b):
    """Offer a group whose visible positions ``pos[a:b]`` (ascending, ``b > a``) all
    score ``s`` to a list holding ``size`` groups and ``tot <= k`` positions; keeps the
    best ``k`` positions by (score, recency). Returns ``(st, size, tot)``."""
    if tot >= k and s <= gs[st]:
        if s < gs[st] or pos[b - 1] < pos[ge[st] - gn[st]]:
            return st, size, tot  # its most recent position is worse than the worst kept
    nv = min(b - a, k)
    cap = gs.shape[0]
    if st + size >= cap:  # the end is reached: back to slot 0
        for i in range(size):
            gs[i] = gs[st + i]
            ge[i] = ge[st + i]
            gn[i] = gn[st + i]
        st = 0
    # insertion slot: after every entry that is not better than (s, oldest kept position)
    lo = st
    hi = st + size
    while lo < hi:
        mid = (lo + hi) >> 1
        v = gs[mid]
        if v < s or (v == s and pos[ge[mid] - gn[mid]] < pos[b - nv]):
            lo = mid + 1
        else:
            hi = mid
    for i in range(st + size, lo, -1):
        gs[i] = gs[i - 1]
        ge[i] = ge[i - 1]
        gn[i] = gn[i - 1]
    gs[lo] = s
    ge[lo] = b
    gn[lo] = nv
    end = st + size + 1
    tot += nv
    st, tot = _g_trim(gs, ge, gn, st, end, tot, k, pos)
    return st, end - st, tot


@nb.njit(cache=True)
def _g_merge(gs, ge, gn, st, size, tot, k, cs, ce, cn, m, pos, ts, te, tn):
    """Merge ``m`` candidate groups (``cs``/``ce``/``cn``: score, end, positions kept; any
    order) into a list as :func:`_g_offer` would one by one, in one pass over it: the
    candidates are sorted, merged with the list into ``ts``/``te``/``tn`` (capacity at
    least ``size + m``), the worst positions dropped down to ``k``, and the rest copied
    back from slot 0. One pass per (cluster, target) instead of a search and a shift per
    group: the lists of many targets do not stay in cache between their clusters.
    Returns ``(st, size, tot)``."""
    for i in range(1, m):  # insertion sort by (score, oldest kept position): m is small
        s = cs[i]
        e = ce[i]
        n = cn[i]
        j = i - 1
        while j >= 0 and (cs[j] > s or (cs[j] == s and pos[ce[j] - cn[j]] > pos[e - n])):
            cs[j + 1] = cs[j]
            ce[j + 1] = ce[j]
            cn[j + 1] = cn[j]
            j -= 1
        cs[j + 1] = s
        ce[j + 1] = e
        cn[j + 1] = n
    i = st
    end = st + size
    j = 0
    w = 0
    while i < end or j < m:
        if j >= m or (i < end and (gs[i] < cs[j] or (gs[i] == cs[j] and pos[ge[i] - gn[i]] < pos[ce[j] - cn[j]]))):
            ts[w] = gs[i]
            te[w] = ge[i]
            tn[w] = gn[i]
            i += 1
        else:
            ts[w] = cs[j]
            te[w] = ce[j]
            tn[w] = cn[j]
            tot += cn[j]
            j += 1
        w += 1
    f, tot = _g_trim(ts, te, tn, 0, w, tot, k, pos)
    for i in range(f, w):
        gs[i - f] = ts[i]
        ge[i - f] = te[i]
        gn[i - f] = tn[i]
    return 0, w - f, tot


@nb.njit(cache=True, nogil=True)
def groups_finish(gs, ge, gn, starts, sizes, tots, pos, out_pos, out_s):
    """Write each row's group list (:func:`score_clusters`) best first into ``out_pos``
    (R, k) int64 / ``out_s`` (R, k) float32, pre-filled -1 / -inf: positions by score,
    then most recent first (the positions of entries whose scores tie merged by
    recency)."""
    R = min(gs.shape[0], ge.shape[0], gn.shape[0], starts.shape[0], sizes.shape[0], tots.shape[0], out_pos.shape[0], out_s.shape[0])
    cap = min(gs.shape[1], ge.shape[1], gn.shape[1])
    kk = min(out_pos.shape[1], out_s.shape[1])
    npos = pos.shape[0]
    buf = np.empty(kk, np.int64)
    for t in range(R):
        st = starts[t]
        en = min(st + sizes[t], cap)
        w = 0
        i = en - 1
        while i >= st and i >= 0 and w < kk:
            s = gs[t, i]
            j = i  # the run of entries tying with it: j..i
            while j - 1 >= st and gs[t, j - 1] == s:
                j -= 1
            nb_ = 0
            for u in range(j, i + 1):
                e = ge[t, u]
                n = gn[t, u]
                if n < 1 or e - n < 0 or e > npos:  # never from score_clusters
                    continue
                for v in range(e - 1, e - n - 1, -1):
                    if nb_ < kk:
                        buf[nb_] = pos[v]
                        nb_ += 1
            if i > j:  # ties: most recent first across the run
                buf[:nb_] = -np.sort(-buf[:nb_])
            for v in range(nb_):
                if w < kk:
                    out_pos[t, w] = buf[v]
                    out_s[t, w] = s
                    w += 1
            i = j - 1


@nb.njit(cache=True, nogil=True)
def merge_ranked(pa, sa, pb, sb, out_pos, out_s):
    """Merge two best-first rows per target (positions ``pa``/``pb`` (R, k) int64,
    -1 padded, scores ``sa``/``sb`` float32) into the best ``k`` by score, then most
    recent first: ``out_pos`` / ``out_s`` (R, k), pre-filled -1 / -inf. A row's two
    lists hold distinct positions (the clusters' members and the unclustered tail)."""
    R = min(pa.shape[0], sa.shape[0], pb.shape[0], sb.shape[0], out_pos.shape[0], out_s.shape[0])
    k = min(pa.shape[1], sa.shape[1], pb.shape[1], sb.shape[1], out_pos.shape[1], out_s.shape[1])
    for r in range(R):
        i = 0
        j = 0
        for w in range(k):
            ai = i < k and pa[r, i] >= 0
            bj = j < k and pb[r, j] >= 0
            if ai and (not bj or sa[r, i] > sb[r, j] or (sa[r, i] == sb[r, j] and pa[r, i] > pb[r, j])):
                out_pos[r, w] = pa[r, i]
                out_s[r, w] = sa[r, i]
                i += 1
            elif bj:
                out_pos[r, w] = pb[r, j]
                out_s[r, w] = sb[r, j]
                j += 1


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def score_clusters(E, grp_rows, cl_ptr, grp_ptr, cl_last, pos, cl_tptr, cl_t, Q, cuts, k, gs, ge, gn, starts, sizes,
                   tots, scratch):
    """Score every member group of every opened cluster for the targets that opened it.

    E (n, d) float32 item embeddings; grp_rows (G,) int64 item row of each group (a
    distinct item of the cluster); cl_ptr (C+1,) groups of cluster c are
    ``cl_ptr[c]:cl_ptr[c+1]``, its latest position ``cl_last[c]``; grp_ptr (G+1,)
    positions of group g are ``pos[grp_ptr[g]:grp_ptr[g+1]]``, ascending. cl_tptr / cl_t: the targets of each cluster (:func:`invert`). Q (T, d)
    float32 queries, cuts (T,) int64. Every visible position of a group scores
    ``Q[t] · E[row]``; the group goes whole into target t's group list
    (``gs``/``ge``/``gn`` (T, k + 2), ``starts``, ``sizes`` groups and ``tots``
    positions (T,), carried across calls; see :func:`groups_finish`). A cluster whose latest position
    lies before a target's cut is visible whole (no search for the cut in its groups).
    ``scratch`` (n_max, d) float32 holds one cluster's member embeddings (gathered once,
    used by all its targets).
    """
    C = min(cl_ptr.shape[0] - 1, cl_tptr.shape[0] - 1, cl_last.shape[0])
    G = min(grp_ptr.shape[0] - 1, grp_rows.shape[0])
    nE, d = E.shape
    Ef = E.reshape(-1)  # C-contiguous (the caller's contract): the prefetches' flat view
    npos = pos.shape[0]
    nT = min(Q.shape[0], cuts.shape[0], gs.shape[0], ge.shape[0], gn.shape[0], starts.shape[0], sizes.shape[0], tots.shape[0])
    if Q.shape[1] != d or scratch.shape[1] != d or min(gs.shape[1], ge.shape[1], gn.shape[1]) < k + 2:
        return
    ninf = np.float32(-np.inf)
    nmax = scratch.shape[0]
    cs = np.empty(nmax, np.float32)  # one visit's candidates (score, end, positions kept)
    ce = np.empty(nmax, np.int64)
    cn = np.empty(nmax, np.int64)
    cap = gs.shape[1]
    ts = np.empty(cap + nmax, np.float32)  # merge scratch (_g_merge)
    te = np.empty(cap + nmax, np.int64)
    tn = np.empty(cap + nmax, np.int64)
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
        # the members' rows lie scattered over the item table: prefetched _GATHER_AHEAD ahead
        for j in range(min(nm, _GATHER_AHEAD)):
            r = grp_rows[g0 + j]
            if 0 <= r < nE:
                for u in range(0, d, 16):
                    prefetch(Ef, r * d + u)
        for j in range(nm):
            if j + _GATHER_AHEAD < nm:
                r2 = grp_rows[g0 + j + _GATHER_AHEAD]
                if 0 <= r2 < nE:
                    for u in range(0, d, 16):
                        prefetch(Ef, r2 * d + u)
            r = grp_rows[g0 + j]
            if 0 <= r < nE:
                for u in range(d):
                    scratch[j, u] = E[r, u]
            else:
                for u in range(d):
                    scratch[j, u] = np.nan  # an unknown row never scores
        last = cl_last[c]
        for ti in range(max(t0, 0), min(t1, cl_t.shape[0])):
            t = cl_t[ti]
            if t < 0 or t >= nT:
                continue
            q = Q[t]
            cut = cuts[t]
            whole = last < cut
            h_s = gs[t]
            h_e = ge[t]
            h_n = gn[t]
            st = starts[t]
            size = sizes[t]
            tot = tots[t]
            if st < 0 or size < 0 or st + size > h_s.shape[0] or tot < 0 or tot > k:  # never from a fresh list
                continue
            root = h_s[st] if tot >= k else ninf
            m = 0
            for j in range(nm):
                acc = np.float32(0.0)
                for u in range(d):
                    acc += q[u] * scratch[j, u]
                if acc != acc or acc < root:
                    continue
                g = g0 + j
                a = max(grp_ptr[g], 0)
                b = min(grp_ptr[g + 1], npos)
                if not whole:
                    b = lower_bound(pos, a, b, cut)
                if b <= a:
                    continue
                cs[m] = acc
                ce[m] = b
                cn[m] = min(b - a, k)
                m += 1
            if m == 1:
                st, size, tot = _g_offer(h_s, h_e, h_n, st, size, tot, k, cs[0], pos, ce[0] - cn[0], ce[0])
            elif m > 1:
                st, size, tot = _g_merge(h_s, h_e, h_n, st, size, tot, k, cs, ce, cn, m, pos, ts, te, tn)
            starts[t] = st
            sizes[t] = size
            tots[t] = tot


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def rescore_candidates(Q, E, hrows, cand, cuts, k, hs, hr, sizes):
    """Exact rescoring of draft candidates.

    Q (T, d) float32 queries; E (n, d) float32 embeddings; hrows (L,) int64 item row of
    each history position; cand (T, m) int64 candidate positions (-1 = none, distinct per
    row). Each candidate ``p < cuts[t]`` scores ``Q[t] · E[hrows[p]]`` into heap t
    (``hs``/``hr`` (T, k), ``sizes`` (T,)). Out-of-range positions and rows are skipped.
    """
    T = min(cand.shape[0], Q.shape[0], cuts.shape[0], hs.shape[0], sizes.shape[0])
    m = cand.shape[1]
    L = hrows.shape[0]
    nE = E.shape[0]
    if Q.shape[1] != E.shape[1]:
        return
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


@nb.njit(cache=True, nogil=True)
def _compact(keys, n, m):
    """Keep the ``m`` smallest of ``keys[:n]`` (uint64 sort keys: best first) in
    ``keys[:m]``; returns the largest kept key (the new admission bound)."""
    kth = np.partition(keys[:n], m - 1)[m - 1]
    j = 0
    for i in range(n):
        if keys[i] <= kth:
            keys[j] = keys[i]
            j += 1
    return kth


@nb.njit(cache=True, nogil=True)
def buffer_topm(S, off, cuts, m, keys, nkeys, bound):
    """Offer a tile of draft scores to per-row candidate buffers (draft top-m selection).

    S (B, W) float32 scores of positions ``off .. off+W-1``; row b sees positions
    ``< cuts[b]``. ``keys`` (B, cap) uint64 (cap >= 2·m) hold each row's candidates as
    :func:`gsu.retrieval._kernels._desc_key` keys (ascending = score desc, then more
    recent first), ``nkeys`` (B,) their number, ``bound`` (B,) uint64 the admission
    bound (max uint64 until the buffer first fills): a key above it cannot make the
    top m. When a buffer fills it is compacted to its best m in O(cap) (a partition).
    Carried across tiles; :func:`buffer_finish` extracts the top m. NaN is never kept.
    """
    B, W = S.shape
    cap = keys.shape[1]
    for b in range(B):
        c = min(cuts[b] - off, W)
        n = nkeys[b]
        bd = bound[b]
        kr = keys[b]
        for j in range(max(c, 0)):
            v = S[b, j]
            if v != v:
                continue
            key = _desc_key(v, j + off)
            if key > bd:
                continue
            kr[n] = key
            n += 1
            if n == cap:
                bd = _compact(kr, n, m)
                n = m
        nkeys[b] = n
        bound[b] = bd


@nb.njit(cache=True, nogil=True)
def buffer_finish(keys, nkeys, m, out_pos):
    """Best ``m`` positions of each row's buffer into ``out_pos`` (B, m) int64 (-1 padded),
    best first."""
    B = keys.shape[0]
    for b in range(B):
        n = nkeys[b]
        if n > m:
            _compact(keys[b], n, m)
            n = m
        srt = np.sort(keys[b, :n])
        for a in range(n):
            out_pos[b, a] = np.int64(np.uint32(0xFFFFFFFF) - np.uint32(srt[a] & np.uint64(0xFFFFFFFF)))
        for a in range(n, m):
            out_pos[b, a] = -1
