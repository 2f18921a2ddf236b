"""numba kernels of the Seismic-style blocked inverted index (:mod:`gsu.index.seismic`).

Algorithm: Bruch, Nardini, Rulli, Venturini, "Efficient Inverted Indexes for
Approximate Retrieval over Learned Sparse Representations", SIGIR 2024.

Build: global static pruning of the posting lists (:func:`prune_lists`), the top
``doc_cut`` components of every document (:func:`doc_top_components`), then per
posting list a random-centroid clustering into blocks and one quantised summary per
block (:func:`build_lists_chunk`).

Search: :func:`search_serial` / :func:`search_parallel` (one body, compiled twice),
with per-thread scratch that persists across calls (stamp arrays, never re-zeroed).

Layouts (all produced by the build, see ``SeismicIndex`` for the full list):

- forward index: CSR ``fwd_indptr`` (n+1,) int64, ``fwd_comps`` (nnz,) uint16/int32,
  ``fwd_vals`` (nnz,) float32 — every document, for exact scoring;
- blocks: ``list_blk`` (vocab+1,) int64 — blocks of list ``c`` are
  ``list_blk[c]:list_blk[c+1]``; ``blk_ptr`` (n_blocks+1,) int64 into ``post_docs``
  (n_postings,) int32; ``blk_scale``/``blk_min`` (n_blocks,) float32 — per summary
  8-bit quantisation ``value = code * scale + min``;
- summaries, one per block: ``sum_ptr`` (n_blocks+1,) int64 into ``sum_comp``
  (uint16/int32 component ids) and ``sum_code`` (uint8 codes); a block's summary is
  scored against a dense scatter of the query.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu._simd import load_f32, load_index, prefetch
from gsu.index._kernels import heap_push, heap_sorted, lower_bound

# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def _splitmix64(state):
    """One step of splitmix64: returns (new_state, random uint64)."""
    state = (state + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = state
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = z ^ (z >> np.uint64(31))
    return state, z


@nb.njit(cache=True)
def _doc_dot(qdense, fwd_indptr, fwd_comps, fwd_vals, d):
    """Inner product of the dense query ``qdense`` with document ``d`` of the forward index.

    Four independent accumulators (no vector gathers: scalar loads are faster here);
    loads without numba's negative-index wraparound (``0 <= j < nnz`` by construction).
    """
    s = fwd_indptr[d]
    e = fwd_indptr[d + 1]
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    j = s
    while j + 4 <= e:
        a0 += qdense[load_index(fwd_comps, j)] * load_f32(fwd_vals, j)
        a1 += qdense[load_index(fwd_comps, j + 1)] * load_f32(fwd_vals, j + 1)
        a2 += qdense[load_index(fwd_comps, j + 2)] * load_f32(fwd_vals, j + 2)
        a3 += qdense[load_index(fwd_comps, j + 3)] * load_f32(fwd_vals, j + 3)
        j += 4
    while j < e:
        a0 += qdense[load_index(fwd_comps, j)] * load_f32(fwd_vals, j)
        j += 1
    return (a0 + a1) + (a2 + a3)


@nb.njit(cache=True, inline="always")
def _passes(d, mode, allowed, astamp, stamp):
    """Document ``d`` passes the filter: ``mode`` 0 no filter, 1 the shared mask
    ``allowed``, 2 this query's stamp in ``astamp``."""
    if mode == 1:
        return allowed[d] != 0
    if mode == 2:
        return astamp[d] == stamp
    return True


@nb.njit(cache=True, inline="always")
def _prefetch_doc(fwd_indptr, fwd_comps, fwd_vals, d):
    """Prefetch every cache line of document ``d``'s components and values.

    Scoring a document touches all of them; a hint for the first line only leaves the
    rest to the hardware prefetcher, which starts too late for vectors this short.
    """
    s = fwd_indptr[d]
    e = fwd_indptr[d + 1]
    if e <= s:
        return
    sc = 64 // fwd_comps.itemsize
    sv = 64 // fwd_vals.itemsize
    for j in range(s, e, sc):
        prefetch(fwd_comps, j)
    prefetch(fwd_comps, e - 1)
    for j in range(s, e, sv):
        prefetch(fwd_vals, j)
    prefetch(fwd_vals, e - 1)


_PF_DIST = 2  # documents prefetched ahead of the one scored
_CAND = 64  # documents picked per chunk of a block before scoring them (search scratch)
_ENERGY_BUCKETS = 512


@nb.njit(cache=True)
def _energy_threshold(vals, m, target, hsum, work):
    """Smallest value ``t`` such that the values ``>= t`` among ``vals[:m]`` (positive) sum to ``>= target``.

    This is the cut of Seismic's energy-preserving summary: keep the largest entries
    until their sum reaches ``summary_energy`` of the total, the crossing entry
    included. Linear-time: a histogram of ``len(hsum)`` equal-width buckets locates the
    bucket holding the crossing entry, whose few values are then sorted. ``work`` must
    hold ``m`` floats.
    """
    nbk = hsum.shape[0]
    mx = vals[0]
    mn = vals[0]
    for i in range(m):
        v = vals[i]
        if v > mx:
            mx = v
        if v < mn:
            mn = v
    if mx <= 0 or target <= 0:
        return mx
    scale = (nbk - 1) / mx
    hsum[:] = 0.0
    for i in range(m):
        v = vals[i]
        hsum[int(v * scale)] += v
    acc = 0.0
    cross = -1
    for b in range(nbk - 1, -1, -1):
        if acc + hsum[b] >= target:
            cross = b
            break
        acc += hsum[b]
    if cross < 0:
        return mn  # rounding: keep everything
    n = 0
    for i in range(m):
        v = vals[i]
        if int(v * scale) == cross:
            work[n] = v
            n += 1
    part = np.sort(work[:n])
    for j in range(n - 1, -1, -1):
        acc += part[j]
        if acc >= target:
            return part[j]
    return part[0]


# ---------------------------------------------------------------------------
# build: validation, pruning, doc cut
# ---------------------------------------------------------------------------


@nb.njit(cache=True)
def check_rows(indptr, indices, data, dim, allow_negative):
    """Validate a CSR matrix row by row.

    Returns ``(code, row)``: code 0 ok, 1 component out of range, 3 duplicate
    component, 4 negative value, 5 NaN/inf value (errors, ``row`` is the first
    offending row); otherwise 6 when explicit zeros are present (to drop), else 2
    when some row has unsorted components (to sort); 7 malformed ``indptr``.
    """
    n = indptr.shape[0] - 1
    if n < 0 or indptr[0] != 0 or indptr[n] != indices.shape[0] or indices.shape[0] != data.shape[0]:
        return 7, 0
    first_unsorted = -1
    first_zero = -1
    for r in range(n):
        if indptr[r + 1] < indptr[r]:
            return 7, r
        prev = -1
        for j in range(indptr[r], indptr[r + 1]):
            c = indices[j]
            v = data[j]
            if c < 0 or c >= dim:
                return 1, r
            if not np.isfinite(v):
                return 5, r
            if v < 0 and not allow_negative:
                return 4, r
            if v == 0 and first_zero < 0:
                first_zero = r
            if c == prev:
                return 3, r
            if c < prev and first_unsorted < 0:
                first_unsorted = r
            prev = c
    if first_zero >= 0:
        return 6, first_zero
    if first_unsorted >= 0:
        # duplicates can hide in unsorted rows: the caller sorts, then checks again
        return 2, first_unsorted
    return 0, -1


@nb.njit(cache=True)
def prune_lists(indptr, indices, data, vocab, thr, n_eq_keep, cap, row_offset):
    """Global-threshold static pruning (Seismic ``GlobalThreshold``), then a per-list cap.

    Keeps every entry with value ``> thr`` and the first ``n_eq_keep`` entries equal to
    ``thr`` (row-major order); then each posting list keeps its ``cap`` largest entries.
    Rows are numbered from ``row_offset``. Returns ``(list_ptr (vocab+1,) int64,
    list_docs int32)``; the order inside a list is arbitrary (clustering reorders it).
    """
    n = indptr.shape[0] - 1
    cnt = np.zeros(vocab + 1, np.int64)
    eq_left = n_eq_keep
    for r in range(n):
        for j in range(indptr[r], indptr[r + 1]):
            v = data[j]
            if v > thr:
                cnt[indices[j] + 1] += 1
            elif v == thr and eq_left > 0:
                cnt[indices[j] + 1] += 1
                eq_left -= 1
    ptr = np.zeros(vocab + 1, np.int64)
    for c in range(vocab):
        ptr[c + 1] = ptr[c] + cnt[c + 1]
    pos = ptr[:-1].copy()
    docs = np.empty(ptr[vocab], np.int32)
    vals = np.empty(ptr[vocab], np.float32)
    eq_left = n_eq_keep
    for r in range(n):
        for j in range(indptr[r], indptr[r + 1]):
            v = data[j]
            keep = False
            if v > thr:
                keep = True
            elif v == thr and eq_left > 0:
                keep = True
                eq_left -= 1
            if keep:
                c = indices[j]
                docs[pos[c]] = r + row_offset
                vals[pos[c]] = v
                pos[c] += 1
    # cap each list to its `cap` largest values
    out_ptr = np.zeros(vocab + 1, np.int64)
    for c in range(vocab):
        out_ptr[c + 1] = out_ptr[c] + min(ptr[c + 1] - ptr[c], cap)
    out = np.empty(out_ptr[vocab], np.int32)
    for c in range(vocab):
        s = ptr[c]
        e = ptr[c + 1]
        m = e - s
        o = out_ptr[c]
        if m <= cap:
            out[o : o + m] = docs[s:e]
        else:
            order = np.argsort(-vals[s:e], kind="mergesort")
            for i in range(cap):
                out[o + i] = docs[s + order[i]]
    return out_ptr, out


@nb.njit(cache=True, parallel=True)
def doc_top_components(fwd_indptr, fwd_comps, fwd_vals, doc_cut, rows):
    """The ``doc_cut`` largest components of each document in ``rows`` (Seismic ``doc_cut``).

    Returns ``(comps (len(rows), doc_cut) int32, vals float32, lens (len(rows),) int32)``;
    each row's entries sorted by value, largest first.
    """
    nr = rows.shape[0]
    oc = np.zeros((nr, doc_cut), np.int32)
    ov = np.zeros((nr, doc_cut), np.float32)
    ol = np.zeros(nr, np.int32)
    for i in nb.prange(nr):
        d = rows[i]
        size = 0
        for j in range(fwd_indptr[d], fwd_indptr[d + 1]):
            v = fwd_vals[j]
            c = np.int32(fwd_comps[j])
            if size < doc_cut:
                p = size
                size += 1
            elif v > ov[i, doc_cut - 1]:
                p = doc_cut - 1
            else:
                continue
            while p > 0 and ov[i, p - 1] < v:
                ov[i, p] = ov[i, p - 1]
                oc[i, p] = oc[i, p - 1]
                p -= 1
            ov[i, p] = v
            oc[i, p] = c
        ol[i] = size
    return oc, ov, ol


# ---------------------------------------------------------------------------
# build: clustering + summaries of a chunk of posting lists
# ---------------------------------------------------------------------------


@nb.njit(cache=True)
def _assign(docs_pos, n_docs, list_docs, base, dc_comps, dc_vals, dc_lens, dc_row,
            cstamp, cst, coff, ccnt, ent_cent, ent_val, scores, n_cent, removed, assign):
    """Assign each listed document to the centroid of largest (approximate) inner product.

    Inner products use the document's top ``doc_cut`` components against the centroids'
    full vectors (Seismic ``RandomKmeansInvertedIndexApprox``). Centroids with
    ``removed[j]`` set are never chosen; when all are removed everything goes to 0.
    """
    for ii in range(n_docs):
        p = docs_pos[ii]
        d = list_docs[base + p]
        for j in range(n_cent):
            scores[j] = 0.0
        r = dc_row[d]
        for t in range(dc_lens[r]):
            c = dc_comps[r, t]
            if cstamp[c] != cst:
                continue
            v = dc_vals[r, t]
            o = coff[c]
            for e in range(o, o + ccnt[c]):
                scores[ent_cent[e]] += ent_val[e] * v
        best = -1
        bs = -np.inf
        for j in range(n_cent):
            if removed[j]:
                continue
            if scores[j] > bs:
                bs = scores[j]
                best = j
        if best < 0:
            best = 0
        assign[p] = best


@nb.njit(cache=True)
def _build_one_list(
    l, base, m, list_docs, fwd_indptr, fwd_comps, fwd_vals, dc_comps, dc_vals, dc_lens, dc_row,
    centroid_fraction, min_cluster_size, summary_energy, seed,
    cstamp, coff, ccnt, maxv, bufs,
    blk_off, ent_off,
    o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code,
):
    """Cluster list ``l`` (postings ``list_docs[base:base+m]``, reordered in place) and summarise its blocks.

    Writes block starts (local to the list) at ``o_blk_start[blk_off:]``, summary
    scales/minimums/entry counts at ``o_scale/o_min/o_bcnt[blk_off:]`` and the summary
    entries (component, 8-bit code), block after block, at ``o_comp/o_code[ent_off:]``.
    Returns ``(n_blocks, n_entries, bufs)``.
    """
    (perm, assign, keys, tmp_i64, ent_cent, ent_val, scores, removed, touched, wbuf, wbuf2, hsum) = bufs
    if m == 0:
        return 0, 0, bufs
    n_cent = int(np.float32(centroid_fraction) * np.float32(m))
    if n_cent < 1:
        n_cent = 1
    # random distinct centroids among the list's documents (partial Fisher-Yates)
    st = np.uint64(seed) * np.uint64(0x100000001B3) + np.uint64(l) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)
    for i in range(m):
        perm[i] = i
    for i in range(n_cent):
        st, z = _splitmix64(st)
        j = i + np.int64(z % np.uint64(m - i))
        perm[i], perm[j] = perm[j], perm[i]
        tmp_i64[i] = np.int64(list_docs[base + perm[i]])  # centroid i's document
    # inverted index of the centroids' full vectors, grouped by component
    cst = l + 1
    n_ent = 0
    n_touch = 0
    for j in range(n_cent):
        d = tmp_i64[j]
        for t in range(fwd_indptr[d], fwd_indptr[d + 1]):
            c = fwd_comps[t]
            if cstamp[c] != cst:
                cstamp[c] = cst
                ccnt[c] = 0
                touched[n_touch] = c
                n_touch += 1
            ccnt[c] += 1
            n_ent += 1
    if ent_cent.shape[0] < n_ent:
        ent_cent = np.empty(2 * n_ent, np.int32)
        ent_val = np.empty(2 * n_ent, np.float32)
    s = 0
    for i in range(n_touch):
        c = touched[i]
        coff[c] = s
        s += ccnt[c]
        ccnt[c] = 0
    for j in range(n_cent):
        d = tmp_i64[j]
        for t in range(fwd_indptr[d], fwd_indptr[d + 1]):
            c = fwd_comps[t]
            e = coff[c] + ccnt[c]
            ent_cent[e] = j
            ent_val[e] = fwd_vals[t]
            ccnt[c] += 1
    # assignment of every document, then dissolution of too small clusters
    for j in range(n_cent):
        removed[j] = False
    for i in range(m):
        perm[i] = i  # reuse as the list of positions to assign
    _assign(perm, m, list_docs, base, dc_comps, dc_vals, dc_lens, dc_row,
            cstamp, cst, coff, ccnt, ent_cent, ent_val, scores, n_cent, removed, assign)
    sizes = np.zeros(n_cent, np.int64)
    for i in range(m):
        sizes[assign[i]] += 1
    any_removed = False
    n_kept = 0
    for j in range(n_cent):
        if sizes[j] <= min_cluster_size:
            removed[j] = True
            any_removed = True
        else:
            n_kept += 1
    if any_removed:
        n_re = 0
        for i in range(m):
            if removed[assign[i]]:
                perm[n_re] = i
                n_re += 1
        if n_kept == 0:
            for ii in range(n_re):
                assign[perm[ii]] = 0
        else:
            _assign(perm, n_re, list_docs, base, dc_comps, dc_vals, dc_lens, dc_row,
                    cstamp, cst, coff, ccnt, ent_cent, ent_val, scores, n_cent, removed, assign)
    # order blocks by their centroid's document id, documents ascending inside a block
    # (as the reference does): sort keys = centroid document * 2**32 + document
    for i in range(m):
        cdoc = tmp_i64[assign[i]]
        keys[i] = (cdoc << np.int64(32)) | np.int64(list_docs[base + i])
    order = np.argsort(keys[:m])
    nb_ = 0
    prev = np.int64(-1)
    for i in range(m):
        kk = keys[order[i]]
        list_docs[base + i] = np.int32(kk & np.int64(0xFFFFFFFF))
        cd = kk >> np.int64(32)
        if cd != prev:
            o_blk_start[blk_off + nb_] = i
            nb_ += 1
            prev = cd
    o_blk_start[blk_off + nb_] = m
    # summaries: coordinate-wise max over the block, energy cut, 8-bit quantisation
    n_e = 0
    for b in range(nb_):
        # maxv is all-zero between blocks; weights are positive, so 0 marks "not seen"
        nt = 0
        for i in range(o_blk_start[blk_off + b], o_blk_start[blk_off + b + 1]):
            d = list_docs[base + i]
            for t in range(fwd_indptr[d], fwd_indptr[d + 1]):
                c = fwd_comps[t]
                v = fwd_vals[t]
                old = maxv[c]
                touched[nt] = c
                nt += old == 0
                maxv[c] = max(old, v)
        if wbuf.shape[0] < nt:
            wbuf = np.empty(2 * nt, np.float32)
            wbuf2 = np.empty(2 * nt, np.float32)
        total = 0.0
        for i in range(nt):
            wbuf[i] = maxv[touched[i]]
            total += wbuf[i]
        if summary_energy >= 1.0:
            thr = np.float32(0.0)
        else:
            thr = _energy_threshold(wbuf, nt, summary_energy * total, hsum, wbuf2)
        mn = np.inf
        mx = -np.inf
        nk = 0
        for i in range(nt):
            v = maxv[touched[i]]
            if v >= thr:
                nk += 1
                if v < mn:
                    mn = v
                if v > mx:
                    mx = v
        scale = (mx - mn) / 255.0
        o_scale[blk_off + b] = scale
        o_min[blk_off + b] = mn
        o_bcnt[blk_off + b] = nk
        for i in range(nt):
            c = touched[i]
            v = maxv[c]
            if v >= thr:
                o_comp[ent_off + n_e] = c
                if scale > 0:
                    q = np.floor((v - mn) / scale + 0.5)
                    if q > 255.0:
                        q = 255.0
                    o_code[ent_off + n_e] = np.uint8(q)
                else:
                    o_code[ent_off + n_e] = 0
                n_e += 1
        for i in range(nt):
            maxv[touched[i]] = 0.0
    bufs = (perm, assign, keys, tmp_i64, ent_cent, ent_val, scores, removed, touched, wbuf, wbuf2, hsum)
    return nb_, n_e, bufs


@nb.njit(cache=True, parallel=True)
def build_lists_chunk(
    lists, list_ptr, list_docs, fwd_indptr, fwd_comps, fwd_vals, dc_comps, dc_vals, dc_lens, dc_row,
    centroid_fraction, min_cluster_size, summary_energy, seed, n_threads,
    s_cstamp, s_coff, s_ccnt, s_maxv,
    blk_slot_off, ent_bound_off, max_len,
    o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code, o_counts,
):
    """Cluster and summarise the posting lists ``lists`` (one chunk), in parallel.

    Thread ``t`` handles ``lists[t::n_threads]`` with its own scratch rows of the
    ``s_*`` (n_threads, vocab) arrays. List ``lists[i]`` writes its blocks at slot
    offset ``blk_slot_off[i]`` (room for ``n_centroids + 1`` entries) and its summary
    entries at ``ent_bound_off[i]`` (room for the sum of its documents' lengths).
    ``o_counts[i] = (n_blocks, n_entries)``. ``list_docs`` is
    reordered in place (documents grouped by block).
    """
    nl = lists.shape[0]
    for t in nb.prange(n_threads):
        cstamp = s_cstamp[t]
        coff = s_coff[t]
        ccnt = s_ccnt[t]
        maxv = s_maxv[t]
        ml = max(max_len, 1)
        bufs = (
            np.empty(ml, np.int64), np.empty(ml, np.int64), np.empty(ml, np.int64), np.empty(ml, np.int64),
            np.empty(1024, np.int32), np.empty(1024, np.float32), np.empty(ml, np.float64),
            np.empty(ml, np.bool_), np.empty(s_cstamp.shape[1] + 1, np.int64),
            np.empty(4096, np.float32), np.empty(4096, np.float32), np.zeros(_ENERGY_BUCKETS, np.float64),
        )
        for i in range(t, nl, n_threads):
            l = lists[i]
            base = list_ptr[l]
            m = list_ptr[l + 1] - base
            nbk, ne, bufs = _build_one_list(
                l, base, m, list_docs, fwd_indptr, fwd_comps, fwd_vals, dc_comps, dc_vals, dc_lens, dc_row,
                centroid_fraction, min_cluster_size, summary_energy, seed,
                cstamp, coff, ccnt, maxv, bufs,
                blk_slot_off[i], ent_bound_off[i],
                o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code,
            )
            o_counts[i, 0] = nbk
            o_counts[i, 1] = ne


@nb.njit(cache=True)
def compact_chunk(lists, list_ptr, counts, blk_slot_off, ent_off, o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code):
    """Gather one chunk's per-list outputs of :func:`build_lists_chunk` into contiguous arrays.

    Returns ``(blk_start (n_blocks,) int64 global posting offsets, scale, min,
    bcnt (n_blocks,) int64 summary entries per block, comp (n_entries,) int64, code uint8)``.
    """
    nl = lists.shape[0]
    tb = 0
    te = 0
    for i in range(nl):
        tb += counts[i, 0]
        te += counts[i, 1]
    blk = np.empty(tb, np.int64)
    sc = np.empty(tb, np.float32)
    mn = np.empty(tb, np.float32)
    bcnt = np.empty(tb, np.int64)
    comp = np.empty(te, np.int64)
    code = np.empty(te, np.uint8)
    ib = 0
    ie = 0
    for i in range(nl):
        base = list_ptr[lists[i]]
        so = blk_slot_off[i]
        for b in range(counts[i, 0]):
            blk[ib] = base + o_blk_start[so + b]
            sc[ib] = o_scale[so + b]
            mn[ib] = o_min[so + b]
            bcnt[ib] = o_bcnt[so + b]
            ib += 1
        eo = ent_off[i]
        for e in range(counts[i, 1]):
            comp[ie] = o_comp[eo + e]
            code[ie] = o_code[eo + e]
            ie += 1
    return blk, sc, mn, bcnt, comp, code


@nb.njit(cache=True)
def list_entry_bounds(list_ptr, list_docs, fwd_indptr, lists):
    """Upper bound of each listed posting list's summary entries: the sum of its documents' lengths."""
    out = np.zeros(lists.shape[0], np.int64)
    for i in range(lists.shape[0]):
        l = lists[i]
        s = 0
        for p in range(list_ptr[l], list_ptr[l + 1]):
            d = list_docs[p]
            s += fwd_indptr[d + 1] - fwd_indptr[d]
        out[i] = s
    return out


# ---------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------


def _search_impl(
    q_indptr, q_comps, q_vals, k, query_cut, heap_factor, first_sorted,
    fwd_indptr, fwd_comps, fwd_vals,
    list_blk, blk_ptr, post_docs, blk_scale, blk_min, ls_ptr, inv_comp, inv_blk, inv_code,
    n_indexed, mode, allowed, blk_ok, f_indptr, f_rows, exact_max,
    n_threads, s_qdense, s_vstamp, s_astamp, stamp_base, max_blocks,
    out_rows, out_scores, counts, n_scored,
):
    """Top-``k`` of each query (see module docstring for the index layout).

    ``mode``: 0 no filter; 1 shared filter — ``allowed`` (n,) uint8 row mask, ``blk_ok``
    (n_blocks,) uint8 (0: the block holds no allowed row), the allowed rows listed in
    ``f_rows[f_indptr[0]:f_indptr[1]]``; 2 per-query filter — query ``q`` allows the
    sorted rows ``f_rows[f_indptr[q]:f_indptr[q+1]]``. A query whose filter allows at
    most ``exact_max`` rows is answered exactly from the forward index. Rows
    ``>= n_indexed`` (added after the last build) are always scored exactly.
    Stamps ``stamp_base + q + 1`` mark visited (``s_vstamp``) and allowed (``s_astamp``)
    rows per thread; ``s_qdense`` rows must be all-zero on entry and are left so.
    Only documents with a positive score are returned.
    """
    nq = q_indptr.shape[0] - 1
    n = fwd_indptr.shape[0] - 1
    for t in nb.prange(n_threads):
        qdense = s_qdense[t]
        vstamp = s_vstamp[t]
        astamp = s_astamp[t] if mode == 2 else s_vstamp[t]
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        dots = np.empty(max_blocks, np.float32)
        acc = np.empty(max_blocks, np.float32)
        tcap = 1
        for q in range(nq):
            tcap = max(tcap, min(query_cut, q_indptr[q + 1] - q_indptr[q]))
        top_v = np.empty(tcap, np.float32)
        top_c = np.empty(tcap, np.int64)
        aq = np.empty(max_blocks, np.float32)
        cand = np.empty(_CAND, np.int64)
        no_order = np.empty(0, np.int64)
        for q in range(t, nq, n_threads):
            stamp = np.int32(stamp_base + q + 1)
            qs = q_indptr[q]
            qe = q_indptr[q + 1]
            nqt = qe - qs
            size = 0
            scored = 0
            for j in range(qs, qe):
                qdense[q_comps[j]] = q_vals[j]
            n_allowed = n
            if mode == 1:
                n_allowed = f_indptr[1] - f_indptr[0]
            elif mode == 2:
                n_allowed = f_indptr[q + 1] - f_indptr[q]
            if nqt == 0:
                pass
            elif mode != 0 and n_allowed <= exact_max:
                # low selectivity: exact scoring of every allowed row
                fs = f_indptr[0] if mode == 1 else f_indptr[q]
                fe = f_indptr[1] if mode == 1 else f_indptr[q + 1]
                for p in range(fs, fe):
                    d = f_rows[p]
                    sc = _doc_dot(qdense, fwd_indptr, fwd_comps, fwd_vals, d)
                    scored += 1
                    if sc > 0:
                        size = heap_push(hs, hr, size, k, sc, d)
            else:
                if mode == 2:
                    for p in range(f_indptr[q], f_indptr[q + 1]):
                        astamp[f_rows[p]] = stamp
                # the query_cut largest query terms, largest first
                cut = min(query_cut, nqt)
                # partial insertion selection (stable: ties keep the earlier component)
                nt = 0
                for j in range(qs, qe):
                    v = q_vals[j]
                    if nt == cut and v <= top_v[cut - 1]:
                        continue
                    p = nt if nt < cut else cut - 1
                    if nt < cut:
                        nt += 1
                    while p > 0 and top_v[p - 1] < v:
                        top_v[p] = top_v[p - 1]
                        top_c[p] = top_c[p - 1]
                        p -= 1
                    top_v[p] = v
                    top_c[p] = q_comps[j]
                for ti in range(cut):
                    l = top_c[ti]
                    b0 = list_blk[l]
                    nb_ = list_blk[l + 1] - b0
                    if nb_ == 0:
                        continue
                    # summary inner products of all the list's blocks (inverted summaries)
                    _list_summary_dots(l, b0, nb_, qs, qe, q_comps, qdense, ls_ptr, inv_comp, inv_blk, inv_code, blk_scale, blk_min, acc, aq, dots)
                    use_sorted = ti == 0 and first_sorted
                    if use_sorted:
                        border = np.argsort(-dots[:nb_])
                    else:
                        border = no_order
                    for bi in range(nb_):
                        b = border[bi] if use_sorted else bi
                        if size == k and dots[b] < heap_factor * hs[0]:
                            if use_sorted:
                                break  # blocks come in decreasing bound order
                            continue
                        gb = b0 + b
                        if mode == 1 and blk_ok[gb] == 0:
                            continue
                        p0 = blk_ptr[gb]
                        p1 = blk_ptr[gb + 1]
                        for p in range(p0, p1):
                            d = post_docs[p]
                            prefetch(vstamp, d)
                            prefetch(fwd_indptr, d)
                        # in chunks of _CAND: pick the unvisited (allowed) documents, marking
                        # them visited, then score them, prefetching each next document whole
                        pc = p0
                        while pc < p1:
                            pe = min(p1, pc + _CAND)
                            m = 0
                            for p in range(pc, pe):
                                d = post_docs[p]
                                if vstamp[d] == stamp:
                                    continue
                                vstamp[d] = stamp
                                if not _passes(d, mode, allowed, astamp, stamp):
                                    continue
                                cand[m] = d
                                m += 1
                            pc = pe
                            if m == 0:
                                continue
                            for i in range(min(m, _PF_DIST)):
                                _prefetch_doc(fwd_indptr, fwd_comps, fwd_vals, cand[i])
                            for i in range(m):
                                d = cand[i]
                                if i + _PF_DIST < m:
                                    _prefetch_doc(fwd_indptr, fwd_comps, fwd_vals, cand[i + _PF_DIST])
                                sc = _doc_dot(qdense, fwd_indptr, fwd_comps, fwd_vals, d)
                                if sc > 0:
                                    size = heap_push(hs, hr, size, k, sc, d)
                            scored += m
                # rows added since the last build: exact
                for d in range(n_indexed, n):
                    if not _passes(d, mode, allowed, astamp, stamp):
                        continue
                    sc = _doc_dot(qdense, fwd_indptr, fwd_comps, fwd_vals, d)
                    scored += 1
                    if sc > 0:
                        size = heap_push(hs, hr, size, k, sc, d)
            for j in range(qs, qe):
                qdense[q_comps[j]] = 0.0
            heap_sorted(hs, hr, size, out_scores[q], out_rows[q])
            for i in range(size, k):
                out_scores[q, i] = -np.inf
                out_rows[q, i] = -1
            counts[q] = size
            n_scored[q] = scored




@nb.njit(cache=True, parallel=True)
def block_any_allowed(lists, list_blk, blk_ptr, post_docs, allowed, blk_ok):
    """``blk_ok[b] = 1`` when block ``b`` (of one of ``lists``) holds an allowed row."""
    for i in nb.prange(lists.shape[0]):
        l = lists[i]
        for b in range(list_blk[l], list_blk[l + 1]):
            ok = 0
            for p in range(blk_ptr[b], blk_ptr[b + 1]):
                if allowed[post_docs[p]]:
                    ok = 1
                    break
            blk_ok[b] = ok


@nb.njit(cache=True)
def lists_of_queries(q_indptr, q_comps, q_vals, query_cut, vocab):
    """Distinct posting lists that the top-``query_cut`` terms of the queries open."""
    mark = np.zeros(vocab, np.uint8)
    nq = q_indptr.shape[0] - 1
    for q in range(nq):
        qs = q_indptr[q]
        qe = q_indptr[q + 1]
        cut = min(query_cut, qe - qs)
        if cut == qe - qs:
            for j in range(qs, qe):
                mark[q_comps[j]] = 1
        else:
            order = np.argsort(-q_vals[qs:qe], kind="mergesort")
            for ti in range(cut):
                mark[q_comps[qs + order[ti]]] = 1
    return np.flatnonzero(mark).astype(np.int64)


# ---------------------------------------------------------------------------
# exact twin helpers
# ---------------------------------------------------------------------------


@nb.njit(cache=True, parallel=True)
def csr_topk(indptr, indices, data, k, col_rows, f_indptr, f_rows, per_query, q_offset, out_rows, out_scores, counts):
    """Top-``k`` nonzero entries of each row of a CSR score matrix (rows = queries).

    Columns map to index rows through ``col_rows`` (or are rows themselves when it is
    empty). With ``per_query``, an entry counts only when its row is among the sorted
    ``f_rows[f_indptr[q]:f_indptr[q+1]]`` of query ``q = q_offset + row``.
    """
    nq = indptr.shape[0] - 1
    for i in nb.prange(nq):
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        size = 0
        q = q_offset + i
        for j in range(indptr[i], indptr[i + 1]):
            s = data[j]
            if s == 0 or not np.isfinite(s):
                continue
            r = np.int64(indices[j])
            if col_rows.shape[0] > 0:
                r = col_rows[r]
            if per_query:
                a = lower_bound(f_rows, f_indptr[q], f_indptr[q + 1], r)
                if a >= f_indptr[q + 1] or f_rows[a] != r:
                    continue
            size = heap_push(hs, hr, size, k, np.float32(s), r)
        heap_sorted(hs, hr, size, out_scores[q], out_rows[q])
        counts[q] = size


# ---------------------------------------------------------------------------
# inverted summary layout
# ---------------------------------------------------------------------------


@nb.njit(cache=True)
def invert_summaries(list_blk, sum_ptr, sum_comp, sum_code, vocab, blk_dtype):
    """Turn per-block summaries into one small component-major matrix per posting list.

    Input: block ``b``'s summary is ``sum_comp/sum_code[sum_ptr[b]:sum_ptr[b+1]]``;
    list ``l`` owns blocks ``list_blk[l]:list_blk[l+1]``. Output (the layout searched):
    ``ls_ptr`` (vocab+1,) int64 — list ``l``'s summary entries are
    ``ls_ptr[l]:ls_ptr[l+1]`` of ``inv_comp`` (component, ascending), ``inv_blk``
    (block local to the list, ascending within a component; ``blk_dtype``: uint8 or
    uint16) and ``inv_code`` (8-bit code, dequantised as ``code * scale + min`` of the
    block). No per-component offsets: most components occur in a single block.
    """
    n_ent = sum_comp.shape[0]
    cnt = np.zeros(vocab, np.int64)
    stamp = np.full(vocab, -1, np.int64)
    ls_ptr = np.zeros(vocab + 1, np.int64)
    inv_comp = np.empty(n_ent, sum_comp.dtype)
    inv_blk = np.empty(n_ent, blk_dtype)
    inv_code = np.empty(n_ent, np.uint8)
    slot = np.empty(vocab, np.int64)
    comps = np.empty(vocab, np.int64)
    ep = 0
    for l in range(vocab):
        b0 = list_blk[l]
        b1 = list_blk[l + 1]
        ls_ptr[l] = ep
        nc = 0
        for b in range(b0, b1):
            for e in range(sum_ptr[b], sum_ptr[b + 1]):
                c = sum_comp[e]
                if stamp[c] != l:
                    stamp[c] = l
                    cnt[c] = 0
                    comps[nc] = c
                    nc += 1
                cnt[c] += 1
        cs = np.sort(comps[:nc])
        for i in range(nc):
            c = cs[i]
            slot[c] = ep
            ep += cnt[c]
        for b in range(b0, b1):
            for e in range(sum_ptr[b], sum_ptr[b + 1]):
                c = sum_comp[e]
                s = slot[c]
                inv_comp[s] = c
                inv_blk[s] = b - b0
                inv_code[s] = sum_code[e]
                slot[c] = s + 1
    ls_ptr[vocab] = ep
    return ls_ptr, inv_comp, inv_blk, inv_code


@nb.njit(cache=True, inline="always")
def _list_summary_dots(l, b0, nb_, qs, qe, q_comps, qdense, ls_ptr, inv_comp, inv_blk, inv_code,
                       blk_scale, blk_min, acc, aq, dots):
    """``dots[b]`` = dequantised summary of block ``b0 + b`` of list ``l`` times the query, ``b < nb_``.

    Visits only components common to the query and the list's summaries: the
    query's (sorted) components looked up by binary search in the list's
    component-sorted entries, or the list's entries probed in the dense query,
    whichever is cheaper.
    """
    for b in range(nb_):
        acc[b] = 0.0
        aq[b] = 0.0
    cs = ls_ptr[l]
    ce = ls_ptr[l + 1]
    nlc = ce - cs
    nqt = qe - qs
    lg = 1
    while (1 << lg) < nlc:
        lg += 1
    if nqt * (lg + 4) < nlc:
        lo = cs
        for j in range(qs, qe):
            c = q_comps[j]
            a = lower_bound(inv_comp, lo, ce, c)
            if a >= ce:
                break
            qv = qdense[c]
            while a < ce and inv_comp[a] == c:
                b = inv_blk[a]
                acc[b] += np.float32(inv_code[a]) * qv
                aq[b] += qv
                a += 1
            lo = a
    else:
        for p in range(cs, ce):
            qv = qdense[inv_comp[p]]
            if qv != 0.0:
                b = inv_blk[p]
                acc[b] += np.float32(inv_code[p]) * qv
                aq[b] += qv
    for b in range(nb_):
        gb = b0 + b
        dots[b] = blk_scale[gb] * acc[b] + blk_min[gb] * aq[b]


search_serial = nb.njit(cache=True)(_search_impl)
search_parallel = nb.njit(cache=True, parallel=True)(_search_impl)
