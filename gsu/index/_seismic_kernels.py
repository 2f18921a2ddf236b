"""numba kernels of the Seismic-style blocked inverted index (:mod:`gsu.index.seismic`).

Algorithm: Bruch, Nardini, Rulli, Venturini, "Efficient Inverted Indexes for
Approximate Retrieval over Learned Sparse Representations", SIGIR 2024.

Build: global static pruning of the posting lists (:func:`prune_lists`), the top
``doc_cut`` components of every document (:func:`doc_top_components`), then per
posting list a random-centroid clustering into blocks and one quantised summary per
block (:func:`build_lists_chunk`).

Search: :func:`search_serial` / :func:`search_parallel` (one body, compiled twice; the
work of each thread in the leaf :func:`_search_rows`, over the view's arrays borrowed by
:func:`_view_arrays`), with per-thread scratch that persists across calls (a visited bitmap and an allowed mask, both
left all-zero after each query).

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

from numba.core import types as _nbt
from numba.experimental import structref

from gsu._nbopts import LEAF
from gsu._simd import load_f32, load_index, prefetch
from gsu.index._bits import ctz64, load_u32, load_u64, popcount64
from gsu.index._structview import borrowed_fields
from gsu.index.topk import heap_push, heap_sorted, lower_bound, serial_and_parallel

# ---------------------------------------------------------------------------
# the index as one kernel argument
# ---------------------------------------------------------------------------
VIEW_FIELDS = (
    "fwd_indptr", "fwd_comps", "fwd_vals", "list_blk", "blk_ptr", "post_docs", "list_max", "blk_scale", "blk_min",
    "sum_ent", "sum_bit", "sum_pack", "sum_start", "sum_dir", "sum_comp", "sum_bmp", "sum_bm", "sum_sptr", "sum_samp",
    "qdense", "visited", "amask", "scr_f", "scr_i",
)


@structref.register
class IndexViewType(_nbt.StructRef):
    """numba type of :class:`IndexView`."""

    def preprocess_fields(self, fields):
        return tuple((name, _nbt.unliteral(t)) for name, t in fields)


class IndexView(structref.StructRefProxy):
    """The arrays one search reads, bundled so that a call passes one object instead of ~25
    arrays (numba unboxes each array argument on every call; this costs microseconds per
    query, as much as a cheap query itself). Fields, in order, :data:`VIEW_FIELDS`: the
    forward index, posting lists, block and summary arrays of ``SeismicIndex`` and the
    per-thread search scratch — ``qdense`` (threads, dim) float32 all-zero between
    searches, ``visited`` (threads, ceil(n / 64)) uint64 the documents a search has seen, a
    bit each, all-zero between searches (:func:`_search_impl`), ``amask`` (threads, n)
    uint8 the rows a per-query filter allows, all-zero between searches, ``scr_f`` / ``scr_i``
    (threads, m) float32 / int64 the heaps, block buffers and evaluated-block lists of a
    search (grown by the kernel when a call needs more; a search allocates nothing else per
    query)."""

    def __new__(cls, *arrays):
        return structref.StructRefProxy.__new__(cls, *arrays)


structref.define_proxy(IndexView, IndexViewType, list(VIEW_FIELDS))


#: the arrays of a view (:data:`VIEW_FIELDS`, in order) as a tuple of borrowed arrays
#: (:func:`gsu.index._structview.borrowed_fields`): valid only for the duration of the kernel
#: call that holds the view, after anything in that call that replaces a field (:func:`_prepare`
#: grows the scratch), and never stored
_view_arrays = borrowed_fields(IndexViewType, VIEW_FIELDS)


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


@nb.njit(cache=True, inline="always")
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
def _score_rows(qdense, fwd_indptr, fwd_comps, fwd_vals, rows, s, e, hs, hr, size, k):
    """Offer the documents ``rows[s:e]`` to the heap ``hs``/``hr`` (``size`` entries, capacity
    ``k``) with their dot products with ``qdense``; returns the new size. All of them are
    prefetched whole first: they lie scattered over the forward index, and their misses
    overlap only when they are in flight together (two documents ahead took 1.02-1.20x the
    time at 10^6; the exact route one document at a time 2-3x at 1 % of 100,000)."""
    for i in range(s, e):
        _prefetch_doc(fwd_indptr, fwd_comps, fwd_vals, rows[i])
    for i in range(s, e):
        d = rows[i]
        sc = _doc_dot(qdense, fwd_indptr, fwd_comps, fwd_vals, d)
        if sc > 0:
            size = heap_push(hs, hr, size, k, sc, d)
    return size


@nb.njit(cache=True, **LEAF)
def _passes(d, mode, allowed, amask):
    """Document ``d`` passes the filter: ``mode`` 0 no filter, 1 the shared mask
    ``allowed``, 2 this query's allowed mask ``amask``."""
    if mode == 1:
        return allowed[d] != 0
    if mode == 2:
        return amask[d] != 0
    return True


@nb.njit(cache=True)
def _mark_rows(mask, rows, s, e):
    """``mask[rows[s:e]] = 1``: one byte store a row (a bit per row cost more to set than the
    search saved: at 10^6 documents a 50 % filter's 500,000 rows took 0.58-0.61 ms as bits, built
    in a register a word at a time, against 0.31 ms as bytes; a 4-byte stamp took 0.36)."""
    for p in range(s, e):
        mask[rows[p]] = 1


@nb.njit(cache=True)
def _clear_rows(mask, rows, s, e):
    """Zero ``mask`` at ``rows[s:e]`` (ascending): the span from the first to the last at once
    when the rows fill at least a sixteenth of it, else row by row."""
    if e <= s:
        return
    lo = rows[s]
    hi = rows[e - 1]
    if lo <= hi and 16 * (e - s) >= hi - lo + 1:
        mask[lo:hi + 1] = 0
        return
    for p in range(s, e):
        mask[rows[p]] = 0


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


_U1 = np.uint64(1)
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
    list_docs int32, list_max (vocab,) float32)``; the order inside a list is arbitrary
    (clustering reorders it); ``list_max[c]`` is the largest weight kept in list ``c``.
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
    lmax = np.zeros(vocab, np.float32)
    for c in range(vocab):
        for p in range(ptr[c], ptr[c + 1]):
            if vals[p] > lmax[c]:
                lmax[c] = vals[p]
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
    return out_ptr, out, lmax


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


@nb.njit(cache=True, inline="always")
def _before(dots, a, b):
    """Block ``a`` comes before block ``b`` in bound order: a larger dot, or an equal one
    and a smaller position (the stable order of ``np.argsort(-dots)``)."""
    return dots[a] > dots[b] or (dots[a] == dots[b] and a < b)


@nb.njit(cache=True, inline="always")
def _sift_down(dots, heap, i, hn):
    """Restore the heap ``heap[:hn]`` (first in bound order at the root) below ``i``."""
    x = heap[i]
    while True:
        c = 2 * i + 1
        if c >= hn:
            break
        if c + 1 < hn and _before(dots, heap[c + 1], heap[c]):
            c += 1
        if not _before(dots, heap[c], x):
            break
        heap[i] = heap[c]
        i = c
    heap[i] = x


@nb.njit(cache=True, **LEAF)
def _block_heap(dots, n, heap):
    """``heap[:n]``: the positions ``0..n-1`` as a binary heap in bound order (the block with
    the largest dot at ``heap[0]``, ties to the smaller position), built in O(n) in the
    caller's scratch. The first list's blocks are taken from it one at a time
    (:func:`_block_pop`) until one falls below the heap factor's threshold — usually after
    a few of them — so the blocks are never sorted whole (a full sort was ~11 % of a
    docstrings query's time); they come in the order a stable sort by decreasing dot gives."""
    for i in range(n):
        heap[i] = i
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(dots, heap, i, n)


@nb.njit(cache=True, inline="always")
def _block_pop(dots, heap, hn):
    """The first block in bound order of the heap ``heap[:hn]`` (``hn >= 1``), removed from it
    (the heap then holds ``hn - 1``)."""
    top = heap[0]
    hn -= 1
    if hn > 0:
        heap[0] = heap[hn]
        _sift_down(dots, heap, 0, hn)
    return top


@nb.njit(cache=True, **LEAF)
def _check_queries(q_indptr, q_comps, q_vals, dim):
    """Queries ready for the search kernel: ``(0, -1)``, else ``(code, first bad row)``.

    Codes: 7 malformed CSR structure; 1 component out of ``[0, dim)``; 2 components not
    strictly increasing in a row (unsorted or duplicate); 8 a weight that is not a
    positive finite number (zero, negative, NaN, inf). The caller then normalises the
    queries with :func:`gsu.index.sparse_flat.as_csr` (which raises the precise error
    or drops zeros and sorts) and searches again.
    """
    nq = q_indptr.shape[0] - 1
    if nq < 0 or q_indptr[0] != 0 or q_indptr[nq] != q_comps.shape[0] or q_comps.shape[0] != q_vals.shape[0]:
        return 7, 0
    for r in range(nq):
        s = q_indptr[r]
        e = q_indptr[r + 1]
        if e < s:
            return 7, r
        prev = -1
        for j in range(s, e):
            c = q_comps[j]
            v = q_vals[j]
            if c < 0 or c >= dim:
                return 1, r
            if not (v > 0 and v < np.inf):
                return 8, r
            if c <= prev:
                return 2, r
            prev = c
    return 0, -1


@nb.njit(cache=True, **LEAF)
def _search_rows(
    fwd_indptr, fwd_comps, fwd_vals, list_blk, blk_ptr, post_docs, list_max, blk_scale, blk_min,
    sum_ent, sum_bit, sum_pack, sum_start, sum_dir, sum_comp, sum_bmp, sum_bm, sum_sptr, sum_samp,
    qdense, visited, amask, sf, si,
    q_indptr, q_comps, q_vals, k, query_cut, heap_factor, first_sorted, term_order, n_indexed,
    mode, allowed, blk_ok, f_indptr, f_rows, exact_max, q0, q_step, cap, tcap, n_ev,
    out_rows, out_scores, counts, n_scored,
):
    """The queries ``q0, q0 + q_step, ...`` of :func:`_search_impl` (see there) with one
    thread's scratch rows (``qdense``, ``visited``, ``amask``, ``sf`` / ``si`` sized by
    :func:`_prepare`), every array passed in: a leaf without reference counting
    (:data:`gsu._nbopts.LEAF`), which allocates nothing. Reading the view's fields and
    slicing its scratch inside the search cost an atomic increment and decrement each
    that numba's pruning left in the loops (62 / 70 per query of a small collection)."""
    heap_factor = np.float32(heap_factor)
    nq = q_indptr.shape[0] - 1
    n = fwd_indptr.shape[0] - 1
    hs = sf[:k]
    dots = sf[k:k + cap]
    acc = sf[k + cap:k + 2 * cap]
    aq = sf[k + 2 * cap:k + 3 * cap]
    top_v = sf[k + 3 * cap:k + 3 * cap + tcap]
    hr = si[:k]
    top_c = si[k:k + tcap]
    o = k + tcap
    cand = si[o:o + _CAND]
    o += _CAND
    evb = si[o:o + n_ev]
    o += n_ev
    order = si[o:o + cap]
    for q in range(q0, nq, q_step):
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
            # low selectivity: exact scoring of every allowed row, _CAND at a time (_score_rows)
            fs = f_indptr[0] if mode == 1 else f_indptr[q]
            fe = f_indptr[1] if mode == 1 else f_indptr[q + 1]
            for pc in range(fs, fe, _CAND):
                pe = min(fe, pc + _CAND)
                for p in range(pc, pe):
                    prefetch(fwd_indptr, f_rows[p])
                size = _score_rows(qdense, fwd_indptr, fwd_comps, fwd_vals, f_rows, pc, pe, hs, hr, size, k)
            scored += fe - fs
        else:
            if mode == 2:
                _mark_rows(amask, f_rows, f_indptr[q], f_indptr[q + 1])
            # the query_cut largest query terms, largest first
            cut = min(query_cut, nqt)
            # partial insertion selection (stable: ties keep the earlier component)
            nt = 0
            for j in range(qs, qe):
                v = q_vals[j]
                if term_order == 1:
                    v = v * list_max[q_comps[j]]
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
            nev = 0
            for ti in range(cut):
                l = top_c[ti]
                b0 = list_blk[l]
                nb_ = list_blk[l + 1] - b0
                if nb_ == 0:
                    continue
                # summary inner products of all the list's blocks (inverted summaries)
                _list_summary_dots(l, b0, nb_, qs, qe, q_comps, qdense,
                                   sum_ent, sum_bit, sum_pack, sum_start, sum_dir, sum_comp, sum_bmp, sum_bm, sum_sptr, sum_samp,
                                   blk_scale, blk_min, acc, aq, dots)
                use_sorted = ti == 0 and first_sorted
                if use_sorted:
                    _block_heap(dots, nb_, order)
                for bi in range(nb_):
                    b = _block_pop(dots, order, nb_ - bi) if use_sorted else bi
                    if size == k and dots[b] < heap_factor * hs[0]:
                        if use_sorted:
                            break  # blocks come in decreasing bound order
                        continue
                    gb = b0 + b
                    if mode == 1 and blk_ok[gb] == 0:
                        continue
                    p0 = blk_ptr[gb]
                    p1 = blk_ptr[gb + 1]
                    evb[nev] = gb  # its documents' bits are cleared after the query
                    nev += 1
                    for p in range(p0, p1):
                        d = post_docs[p]
                        prefetch(visited, d >> 6)
                        prefetch(fwd_indptr, d)
                    # in chunks of _CAND: pick the unvisited (allowed) documents, marking
                    # them visited, prefetch every one of them whole, then score them
                    pc = p0
                    while pc < p1:
                        pe = min(p1, pc + _CAND)
                        m = 0
                        for p in range(pc, pe):
                            d = post_docs[p]
                            w = d >> 6
                            bit = _U1 << np.uint64(d & 63)
                            if visited[w] & bit:
                                continue
                            visited[w] |= bit
                            if not _passes(d, mode, allowed, amask):
                                continue
                            cand[m] = d
                            m += 1
                        pc = pe
                        if m == 0:
                            continue
                        size = _score_rows(qdense, fwd_indptr, fwd_comps, fwd_vals, cand, 0, m, hs, hr, size, k)
                        scored += m
            for e in range(nev):  # the bitmap all-zero again for the next query
                for p in range(blk_ptr[evb[e]], blk_ptr[evb[e] + 1]):
                    visited[post_docs[p] >> 6] = 0
            # rows added since the last build: exact
            for d in range(n_indexed, n):
                if not _passes(d, mode, allowed, amask):
                    continue
                sc = _doc_dot(qdense, fwd_indptr, fwd_comps, fwd_vals, d)
                scored += 1
                if sc > 0:
                    size = heap_push(hs, hr, size, k, sc, d)
            if mode == 2:  # the allowed mask all-zero again
                _clear_rows(amask, f_rows, f_indptr[q], f_indptr[q + 1])
        for j in range(qs, qe):
            qdense[q_comps[j]] = 0.0
        heap_sorted(hs, hr, size, out_scores[q], out_rows[q])
        for i in range(size, k):
            out_scores[q, i] = -np.inf
            out_rows[q, i] = -1
        counts[q] = size
        n_scored[q] = scored


@nb.njit(cache=True)
def _prepare(v, q_indptr, k, query_cut, max_blocks, n_threads):
    """``(cap, tcap, n_ev)`` of a search of the queries ``q_indptr`` with ``n_threads``
    threads, the view's scratch ``v.scr_f`` / ``v.scr_i`` grown to hold them (per thread:
    the heap, block dots and sums, the top terms, the candidates, the evaluated blocks —
    at most ``cap`` per opened list, each block at most once — and the first list's block heap)."""
    # room for any block id a list's bit width can encode (a damaged file cannot write past it)
    cap = 2
    while cap < max_blocks:
        cap *= 2
    tcap = 1
    for q in range(q_indptr.shape[0] - 1):
        tcap = max(tcap, min(query_cut, q_indptr[q + 1] - q_indptr[q]))
    n_ev = min(tcap * cap, v.blk_ptr.shape[0] - 1)
    need_f = k + 3 * cap + tcap
    need_i = k + tcap + _CAND + n_ev + cap
    if v.scr_f.shape[0] < n_threads or v.scr_f.shape[1] < need_f:
        v.scr_f = np.empty((max(n_threads, v.scr_f.shape[0]), max(need_f, 2 * v.scr_f.shape[1])), np.float32)
    if v.scr_i.shape[0] < n_threads or v.scr_i.shape[1] < need_i:
        v.scr_i = np.empty((max(n_threads, v.scr_i.shape[0]), max(need_i, 2 * v.scr_i.shape[1])), np.int64)
    return cap, tcap, n_ev


@nb.njit(cache=True, inline="always")
def _view_rows(v, t, q_indptr, q_comps, q_vals, k, query_cut, heap_factor, first_sorted, term_order, n_indexed,
               mode, allowed, blk_ok, f_indptr, f_rows, exact_max, n_threads, cap, tcap, n_ev,
               out_rows, out_scores, counts, n_scored):
    """:func:`_search_rows` of thread ``t`` of ``n_threads`` with the arrays of the view ``v``
    (borrowed: :func:`_view_arrays`; after :func:`_prepare`)."""
    a = _view_arrays(v)
    _search_rows(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15],
                 a[16], a[17], a[18], a[19][t], a[20][t], a[21][t], a[22][t], a[23][t],
                 q_indptr, q_comps, q_vals, k, query_cut, heap_factor, first_sorted, term_order, n_indexed,
                 mode, allowed, blk_ok, f_indptr, f_rows, exact_max, t, n_threads, cap, tcap, n_ev,
                 out_rows, out_scores, counts, n_scored)


def _search_impl(
    v, q_indptr, q_comps, q_vals, dim, k, query_cut, heap_factor, first_sorted, term_order, n_indexed,
    mode, allowed, blk_ok, f_indptr, f_rows, exact_max, n_threads, max_blocks,
    out_rows, out_scores, counts, n_scored,
):
    """Top-``k`` of each query over the index ``v`` (an :class:`IndexView`).

    ``heap_factor``: float (a block is skipped when its summary dot is below it times
    the k-th score); ``term_order``: 0 the ``query_cut`` heaviest query terms open
    their lists, 1 the terms of largest ``weight × list_max``. ``mode``: 0 no filter; 1 shared filter — ``allowed`` (n,) uint8 row mask, ``blk_ok``
    (n_blocks,) uint8 (0: the block holds no allowed row), the allowed rows listed in
    ``f_rows[f_indptr[0]:f_indptr[1]]``; 2 per-query filter — query ``q`` allows the
    sorted rows ``f_rows[f_indptr[q]:f_indptr[q+1]]``. A query whose filter allows at
    most ``exact_max`` rows is answered exactly from the forward index. Rows
    ``>= n_indexed`` (added after the last build) are always scored exactly.
    A query marks the documents it has seen in its thread's bitmap ``v.visited`` (a bit per
    document: at 10^6 documents 125 KB, which stays in the core's cache, where a
    stamp per document, 4 MB, was read and written back from memory for every posting of an
    evaluated block) and clears them again from its list of evaluated blocks before the
    next query. A per-query filter's rows are set in the thread's byte mask ``v.amask`` for
    the query and cleared after it from the same sorted rows (a 4-byte stamp per document
    before: 4 MB per thread at 10^6, 1 MB now);
    ``v.qdense`` rows are all-zero on entry and left so.
    Only documents with a positive score are returned.

    The queries are checked first (:func:`_check_queries`); on a nonzero code nothing
    is searched and ``(code, row)`` is returned, else ``(0, -1)``.
    """
    code, bad_row = _check_queries(q_indptr, q_comps, q_vals, dim)
    if code != 0:
        return code, bad_row
    cap, tcap, n_ev = _prepare(v, q_indptr, k, query_cut, max_blocks, n_threads)
    for t in nb.prange(n_threads):
        _view_rows(v, t, q_indptr, q_comps, q_vals, k, query_cut, heap_factor, first_sorted, term_order, n_indexed,
                   mode, allowed, blk_ok, f_indptr, f_rows, exact_max, n_threads, cap, tcap, n_ev,
                   out_rows, out_scores, counts, n_scored)
    return 0, -1


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
def lists_of_queries(q_indptr, q_comps, q_vals, query_cut, vocab, list_max, term_order):
    """Distinct posting lists that the top-``query_cut`` terms of the queries open (terms
    ranked as the search ranks them: by weight, or by weight times ``list_max``)."""
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
            key = np.empty(qe - qs, np.float32)
            for j in range(qs, qe):
                key[j - qs] = q_vals[j] * list_max[q_comps[j]] if term_order == 1 else q_vals[j]
            order = np.argsort(-key, kind="mergesort")
            for ti in range(cut):
                mark[q_comps[qs + order[ti]]] = 1
    return np.flatnonzero(mark).astype(np.int64)


# ---------------------------------------------------------------------------
# calibration helpers
# ---------------------------------------------------------------------------


@nb.njit(cache=True, parallel=True)
def exact_topk_forward(fwd_indptr, fwd_comps, fwd_vals, q_indptr, q_comps, q_vals, vocab, k, n_threads,
                       exclude, out_rows, out_scores, counts):
    """Exact top-``k`` of every query over all documents of the forward index.

    Document-at-a-time over the forward index against the queries transposed by
    component, so a document costs its length plus its matches with the queries;
    parallel over document ranges with per-thread heaps merged at the end. Row
    ``exclude[q]`` (or -1) is left out of query ``q``'s answer. Only positive scores
    count. Writes ``out_rows``/``out_scores`` (nq, k) best first (-1 / -inf padded),
    ``counts`` (nq,).
    """
    nq = q_indptr.shape[0] - 1
    n = fwd_indptr.shape[0] - 1
    tptr = np.zeros(vocab + 1, np.int64)
    for j in range(q_indptr[nq]):
        tptr[q_comps[j] + 1] += 1
    for c in range(vocab):
        tptr[c + 1] += tptr[c]
    tq = np.empty(q_indptr[nq], np.int64)
    tv = np.empty(q_indptr[nq], np.float32)
    fill = tptr[:-1].copy()
    for q in range(nq):
        for j in range(q_indptr[q], q_indptr[q + 1]):
            c = q_comps[j]
            tq[fill[c]] = q
            tv[fill[c]] = q_vals[j]
            fill[c] += 1
    hs = np.empty((n_threads, nq, k), np.float32)
    hr = np.empty((n_threads, nq, k), np.int64)
    sz = np.zeros((n_threads, nq), np.int64)
    for t in nb.prange(n_threads):
        acc = np.zeros(nq, np.float32)
        touched = np.empty(nq, np.int64)
        d0 = t * n // n_threads
        d1 = (t + 1) * n // n_threads
        for d in range(d0, d1):
            nt = 0
            for j in range(fwd_indptr[d], fwd_indptr[d + 1]):
                c = load_index(fwd_comps, j)
                w = load_f32(fwd_vals, j)
                for p in range(tptr[c], tptr[c + 1]):
                    q = tq[p]
                    if acc[q] == 0.0:
                        touched[nt] = q
                        nt += 1
                    acc[q] += w * tv[p]
            for i in range(nt):
                q = touched[i]
                sc = acc[q]
                acc[q] = 0.0
                if sc > 0 and exclude[q] != d:
                    sz[t, q] = heap_push(hs[t, q], hr[t, q], sz[t, q], k, sc, d)
    for q in nb.prange(nq):
        fs = np.empty(k, np.float32)
        fr = np.empty(k, np.int64)
        size = 0
        for t in range(n_threads):
            for i in range(sz[t, q]):
                size = heap_push(fs, fr, size, k, hs[t, q, i], hr[t, q, i])
        heap_sorted(fs, fr, size, out_scores[q], out_rows[q])
        for i in range(size, k):
            out_scores[q, i] = -np.inf
            out_rows[q, i] = -1
        counts[q] = size


@nb.njit(cache=True)
def recall_per_query(found_rows, found_scores, true_scores, true_counts, k, exclude):
    """Recall@``k`` of each query, tie-tolerant: a found row counts when its (exact) score
    reaches the true ``k``-th score within a relative 1e-5; ``exclude[q]`` never counts."""
    nq = found_rows.shape[0]
    out = np.empty(nq, np.float64)
    for q in range(nq):
        m = min(k, true_counts[q])
        if m == 0:
            out[q] = 1.0
            continue
        kth = true_scores[q, m - 1]
        tol = kth - 1e-5 * abs(kth) - 1e-7
        hits = 0
        got = 0
        for i in range(found_rows.shape[1]):
            r = found_rows[q, i]
            if r < 0 or r == exclude[q]:
                continue
            if got == k:
                break
            got += 1
            if found_scores[q, i] >= tol:
                hits += 1
        out[q] = min(hits, m) / m
    return out


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
# compact summary layout
# ---------------------------------------------------------------------------
#
# The summaries of list ``l`` (blocks ``list_blk[l]:list_blk[l+1]``, ``nb`` of them) are
# stored component-major: every distinct component once (the *directory*), then for
# each component the blocks whose summary holds it, with their 8-bit codes.
#
# - entries: list ``l`` owns entries ``0 .. E-1``; entry ``j`` is a ``W = bw + 8``-bit
#   field at bit ``sum_bit[l] + j*W`` of the byte stream ``sum_pack`` (little-endian,
#   ``bw = max(1, bit_length(nb - 1))``): block (local to the list) in the low ``bw``
#   bits, code above. ``E = (sum_bit[l+1] - sum_bit[l]) // W`` (each list starts on a
#   byte; the padding is shorter than ``W``).
# - ``sum_start``: bit ``sum_ent[l] + j`` is set when entry ``j`` is the first entry of
#   a component (``sum_ent[l]`` is a multiple of 8).
# - directory, one of two kinds per list (whichever is smaller):
#   * sorted component ids ``sum_comp[sum_dir[l]:sum_dir[l+1]]`` (uint16/int32), or
#   * a bitmap over the vocabulary at ``sum_bm[sum_bmp[l]:sum_bmp[l+1]]``: per 64
#     components three uint32 — the word's low half, high half, and the number of
#     set bits before the word (rank) — when ``sum_bmp[l+1] > sum_bmp[l]``.
# - samples: the first entry of distinct components 0, 16, 32, ... of list ``l``:
#   ``sum_samp[sum_sptr[l] + i // 16]`` (uint32, relative to the list).
#
# Lossless with respect to the block summaries' (component, code) pairs.

_SAMPLE_SHIFT = 4  # one sample per 16 distinct components
_PAD_BYTES = 8  # readers load 8 bytes at a time


@nb.njit(cache=True, inline="always")
def _bit_width(x):
    """Bits needed for values ``0..x`` (at least 1)."""
    b = 1
    while (np.int64(1) << b) <= x:
        b += 1
    return b


@nb.njit(cache=True, parallel=True)
def summary_sizes(lb, sum_ptr, sum_comp, vocab, n_threads, comp_bits):
    """First pass of :func:`summary_encode` over a run of lists (list ``i`` owns blocks
    ``lb[i]:lb[i+1]``, block ``b``'s summary is ``sum_comp[sum_ptr[b]:sum_ptr[b+1]]``).

    Returns (n_lists, 6) int64 per list: entries, distinct components, stream bits
    (byte-padded), sorted-directory slots (0 for a bitmap), bitmap uint32s (0 for
    sorted ids), samples; the smaller directory kind is chosen (``comp_bits`` bits per
    sorted id against 96 bits per 64 components of vocabulary for a bitmap).
    """
    nl = lb.shape[0] - 1
    out = np.zeros((nl, 6), np.int64)
    n_words = (vocab + 63) // 64
    bitmap_bits = 96 * n_words
    stamp = np.full((n_threads, vocab), -1, np.int64)
    for t in nb.prange(n_threads):
        st = stamp[t]
        for l in range(t, nl, n_threads):
            b0 = lb[l]
            b1 = lb[l + 1]
            if b1 == b0:
                continue
            e0 = sum_ptr[b0]
            e1 = sum_ptr[b1]
            d = 0
            for e in range(e0, e1):
                c = sum_comp[e]
                if st[c] != l:
                    st[c] = l
                    d += 1
            w = _bit_width(b1 - b0 - 1) + 8
            out[l, 0] = e1 - e0
            out[l, 1] = d
            out[l, 2] = ((e1 - e0) * w + 7) // 8 * 8
            if d * comp_bits <= bitmap_bits:
                out[l, 3] = d
            else:
                out[l, 4] = 3 * n_words
            out[l, 5] = (d + (1 << _SAMPLE_SHIFT) - 1) >> _SAMPLE_SHIFT
    return out


@nb.njit(cache=True, inline="always")
def _put_bits(buf, pos, val):
    """OR the value ``val`` (non-negative) into ``buf`` starting at bit ``pos``."""
    v = np.uint64(val) << np.uint64(pos & 7)
    i = pos >> 3
    while v != 0:
        buf[i] |= np.uint8(v & np.uint64(0xFF))
        v >>= np.uint64(8)
        i += 1


@nb.njit(cache=True, parallel=True)
def summary_encode(lb, sum_ptr, sum_comp, sum_code, vocab, n_threads, sizes,
                   ent_off, bit_off, dir_off, bm_off, samp_off,
                   o_pack, o_start, o_comp, o_bm, o_samp):
    """Second pass: write the compact summaries (layout above) of a run of lists.

    ``lb``, ``sum_ptr``, ``sum_comp``, ``sum_code``: as in :func:`summary_sizes`;
    ``sizes``: its result; ``*_off`` (n_lists+1,) int64: each list's first entry
    (multiple of 8), stream bit, sorted-directory slot, bitmap uint32 and sample, as
    prefix sums of ``sizes`` (entries rounded up to 8). Outputs must be zero-filled.
    Parallel over lists: lists never share a byte of the outputs.
    """
    nl = lb.shape[0] - 1
    n_words = (vocab + 63) // 64
    s_stamp = np.full((n_threads, vocab), -1, np.int64)
    s_slot = np.zeros((n_threads, vocab), np.int64)
    max_d = 1
    for l in range(nl):
        max_d = max(max_d, sizes[l, 1])
    for t in nb.prange(n_threads):
        st = s_stamp[t]
        slot = s_slot[t]
        comps = np.empty(max_d, np.int64)
        for l in range(t, nl, n_threads):
            b0 = lb[l]
            b1 = lb[l + 1]
            if b1 == b0:
                continue
            bw = _bit_width(b1 - b0 - 1)
            w = bw + 8
            nd = 0
            for e in range(sum_ptr[b0], sum_ptr[b1]):
                c = sum_comp[e]
                if st[c] != l:
                    st[c] = l
                    slot[c] = 0
                    comps[nd] = c
                    nd += 1
                slot[c] += 1
            cs = np.sort(comps[:nd])
            # entry offsets per component, start bits, samples, directory
            off = 0
            for i in range(nd):
                c = cs[i]
                cnt = slot[c]
                slot[c] = off
                g = ent_off[l] + off
                o_start[g >> 3] |= np.uint8(1 << (g & 7))
                if (i & ((1 << _SAMPLE_SHIFT) - 1)) == 0:
                    o_samp[samp_off[l] + (i >> _SAMPLE_SHIFT)] = np.uint32(off)
                off += cnt
            if bm_off[l + 1] > bm_off[l]:
                base = bm_off[l]
                for i in range(nd):
                    c = cs[i]
                    wd = c >> 6
                    bit = c & 63
                    if bit < 32:
                        o_bm[base + 3 * wd] |= np.uint32(1) << np.uint32(bit)
                    else:
                        o_bm[base + 3 * wd + 1] |= np.uint32(1) << np.uint32(bit - 32)
                r = 0
                for wd in range(n_words):
                    o_bm[base + 3 * wd + 2] = np.uint32(r)
                    word = np.uint64(o_bm[base + 3 * wd]) | (np.uint64(o_bm[base + 3 * wd + 1]) << np.uint64(32))
                    r += np.int64(popcount64(word))
            else:
                for i in range(nd):
                    o_comp[dir_off[l] + i] = cs[i]
            # entries: blocks visited in ascending order, so ascending within a component
            pos0 = bit_off[l]
            for b in range(b0, b1):
                for e in range(sum_ptr[b], sum_ptr[b + 1]):
                    c = sum_comp[e]
                    j = slot[c]
                    slot[c] = j + 1
                    _put_bits(o_pack, pos0 + j * w, np.int64(b - b0) | (np.int64(sum_code[e]) << bw))


@nb.njit(cache=True)
def check_summary_layout(list_blk, sum_ent, sum_bit, sum_dir, sum_bmp, sum_sptr, vocab):
    """O(vocab) consistency of the per-list offsets of the compact summaries (see the layout
    above; the offset arrays themselves are already known to be monotone and to end at
    their arrays' lengths). Returns -1 when consistent, else the first bad list."""
    n_words = (vocab + 63) // 64
    for l in range(vocab):
        nb_ = list_blk[l + 1] - list_blk[l]
        ent = sum_ent[l + 1] - sum_ent[l]
        bits = sum_bit[l + 1] - sum_bit[l]
        nd = sum_dir[l + 1] - sum_dir[l]
        nbm = sum_bmp[l + 1] - sum_bmp[l]
        ns = sum_sptr[l + 1] - sum_sptr[l]
        if nb_ == 0:
            if ent or bits or nd or nbm or ns:
                return l
            continue
        w = _bit_width(nb_ - 1) + 8
        e = bits // w
        if e == 0 or bits - e * w >= 8 or ent != (e + 7) // 8 * 8:
            return l
        if nbm == 0:
            d = nd
        elif nd == 0 and nbm == 3 * n_words:
            d = -1  # counted by the search's bounds checks (ranks are data)
        else:
            return l
        if d == 0 or d > e:
            return l
        if d > 0 and ns != (d + (1 << _SAMPLE_SHIFT) - 1) >> _SAMPLE_SHIFT:
            return l
        if ns == 0:
            return l
    return -1


@nb.njit(cache=True)
def summary_entry_count(list_blk, sum_bit):
    """Total summary entries of all lists (from the stream lengths)."""
    t = 0
    for l in range(list_blk.shape[0] - 1):
        nb_ = list_blk[l + 1] - list_blk[l]
        if nb_:
            t += (sum_bit[l + 1] - sum_bit[l]) // (_bit_width(nb_ - 1) + 8)
    return t


@nb.njit(cache=True, inline="always")
def _next_start(sum_start, g):
    """Smallest set bit index ``>= g`` of the start bitvector (a sentinel bit ends it)."""
    while True:
        word = load_u64(sum_start, g >> 3) >> np.uint64(g & 7)
        if word != 0:
            return g + np.int64(ctz64(word))
        g = (g & ~np.int64(7)) + 64  # bits g .. (g & ~7) + 63 are all zero


@nb.njit(cache=True, inline="always")
def _entry_bits(sum_pack, pos, mask):
    return np.int64(load_u32(sum_pack, pos >> 3) >> np.uint32(pos & 7)) & mask


@nb.njit(cache=True)
def summary_list_entries(l, list_blk, sum_ent, sum_bit, sum_pack, sum_start, sum_dir, sum_comp, sum_bmp, sum_bm):
    """Decode list ``l``'s summaries: ``(comp, blk, code)`` int64 arrays in storage order
    (component ascending, block ascending within a component; blocks local to the list)."""
    nb_ = list_blk[l + 1] - list_blk[l]
    if nb_ == 0:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    bw = _bit_width(nb_ - 1)
    w = bw + 8
    ne = (sum_bit[l + 1] - sum_bit[l]) // w
    comp = np.empty(ne, np.int64)
    blk = np.empty(ne, np.int64)
    code = np.empty(ne, np.int64)
    # the directory in order
    dirc = np.empty(ne, np.int64)
    nd = 0
    if sum_bmp[l + 1] > sum_bmp[l]:
        base = sum_bmp[l]
        for wd in range((sum_bmp[l + 1] - base) // 3):
            word = np.uint64(sum_bm[base + 3 * wd]) | (np.uint64(sum_bm[base + 3 * wd + 1]) << np.uint64(32))
            while word != 0:
                dirc[nd] = wd * 64 + np.int64(ctz64(word))
                nd += 1
                word &= word - np.uint64(1)
    else:
        for i in range(sum_dir[l], sum_dir[l + 1]):
            dirc[nd] = sum_comp[i]
            nd += 1
    ci = -1
    mask = (np.int64(1) << w) - 1
    for j in range(ne):
        g = sum_ent[l] + j
        if (sum_start[g >> 3] >> (g & 7)) & 1:
            ci += 1
        v = _entry_bits(sum_pack, sum_bit[l] + j * w, mask)
        comp[j] = dirc[ci]
        blk[j] = v & ((np.int64(1) << bw) - 1)
        code[j] = v >> bw
    return comp, blk, code


@nb.njit(cache=True, inline="always")
def _sampled_run(i, l, g0, ne, sum_start, sum_sptr, sum_samp):
    """Entries ``[j, je)`` of list ``l`` that hold its ``i``-th directory component,
    found from the sampled run starts; ``(0, 0)`` for a rank the samples do not cover
    (a damaged file: never read past them) or a run past the list's ``ne`` entries."""
    if (i >> _SAMPLE_SHIFT) >= sum_sptr[l + 1] - sum_sptr[l]:
        return np.int64(0), np.int64(0)
    j = np.int64(sum_samp[sum_sptr[l] + (i >> _SAMPLE_SHIFT)])
    if j >= ne:
        return np.int64(0), np.int64(0)
    for _ in range(i & ((1 << _SAMPLE_SHIFT) - 1)):
        j = min(_next_start(sum_start, g0 + j + 1) - g0, ne)
    return j, min(_next_start(sum_start, g0 + j + 1) - g0, ne)


@nb.njit(cache=True, inline="always")
def _add_run(j, je, qv, p0, w, mask, bw, bmask, sum_pack, acc, aq):
    """Add ``qv`` times the quantised summary values of entries ``[j, je)`` to their
    blocks' accumulators (``acc``: weighted codes, ``aq``: the query weight)."""
    for jj in range(j, je):
        v = _entry_bits(sum_pack, p0 + jj * w, mask)
        b = v & bmask
        acc[b] += np.float32(v >> bw) * qv
        aq[b] += qv


@nb.njit(cache=True, **LEAF)
def _list_summary_dots(l, b0, nb_, qs, qe, q_comps, qdense,
                       sum_ent, sum_bit, sum_pack, sum_start, sum_dir, sum_comp, sum_bmp, sum_bm, sum_sptr, sum_samp,
                       blk_scale, blk_min, acc, aq, dots):
    """``dots[b]`` = dequantised summary of block ``b0 + b`` of list ``l`` times the query, ``b < nb_``.

    Visits only components common to the query and the list's directory: each query
    component (ascending) looked up in the directory (binary search in sorted ids, or
    a rank in the bitmap) when the query is short against the directory, else the
    directory walked in order against the dense query ``qdense``.
    """
    for b in range(nb_):
        acc[b] = 0.0
        aq[b] = 0.0
    bw = _bit_width(nb_ - 1)
    w = bw + 8
    mask = (np.int64(1) << w) - 1
    bmask = (np.int64(1) << bw) - 1
    g0 = sum_ent[l]
    p0 = sum_bit[l]
    ne = (sum_bit[l + 1] - p0) // w
    nqt = qe - qs
    if sum_bmp[l + 1] > sum_bmp[l]:
        base = sum_bmp[l]
        # bitmap directory: O(1) lookup of each query component
        for jq in range(qs, qe):
            c = q_comps[jq]
            wd = c >> 6
            bit = c & 63
            word = np.uint64(sum_bm[base + 3 * wd]) | (np.uint64(sum_bm[base + 3 * wd + 1]) << np.uint64(32))
            if (word >> np.uint64(bit)) & np.uint64(1) == 0:
                continue
            i = np.int64(sum_bm[base + 3 * wd + 2]) + np.int64(popcount64(word & ((np.uint64(1) << np.uint64(bit)) - np.uint64(1))))
            j, je = _sampled_run(i, l, g0, ne, sum_start, sum_sptr, sum_samp)
            _add_run(j, je, qdense[c], p0, w, mask, bw, bmask, sum_pack, acc, aq)
    else:
        ds = sum_dir[l]
        de = sum_dir[l + 1]
        nd = de - ds
        lg = 1
        while (1 << lg) < nd:
            lg += 1
        if nqt * (lg + 4) < nd:
            lo = ds
            for jq in range(qs, qe):
                c = q_comps[jq]
                a = lower_bound(sum_comp, lo, de, c)
                if a >= de:
                    break
                lo = a
                if sum_comp[a] != c:
                    continue
                j, je = _sampled_run(np.int64(a - ds), l, g0, ne, sum_start, sum_sptr, sum_samp)
                _add_run(j, je, qdense[c], p0, w, mask, bw, bmask, sum_pack, acc, aq)
        else:
            j = 0
            for i in range(nd):
                je = min(_next_start(sum_start, g0 + j + 1) - g0, ne)
                c = sum_comp[ds + i]
                qv = qdense[c] if c < qdense.shape[0] else np.float32(0.0)
                if qv != 0.0:
                    _add_run(j, je, qv, p0, w, mask, bw, bmask, sum_pack, acc, aq)
                j = je
    for b in range(nb_):
        gb = b0 + b
        dots[b] = blk_scale[gb] * acc[b] + blk_min[gb] * aq[b]


search_serial, search_parallel = serial_and_parallel(_search_impl)

# the unused filter arguments of an unfiltered one-query search (constants: no allocation per call)
_NO_U8 = np.zeros(0, np.uint8)
_NO_PTR = np.zeros(2, np.int64)
_NO_I64 = np.zeros(0, np.int64)


@nb.njit(cache=True)
def search_one(v, q_indptr, q_comps, q_vals, dim, k, query_cut, heap_factor, first_sorted, term_order, n_indexed, max_blocks,
               out_rows, out_scores, out_counts, scored):
    """One unfiltered query (a one-row CSR: ``q_indptr`` (2,), sorted components
    ``q_comps``, values ``q_vals``; any strides) as :func:`search_serial` answers it (the
    same checks, scratch and leaf body, without its filter arguments) into
    ``out_rows`` (1, k) / ``out_scores`` (1, k) / ``out_counts`` (1,), the documents
    scored into ``scored`` (1,) (the caller's scratch: an allocation here costs ~0.1 µs):
    the lean path of a one-query call, whose Python side unboxes 16 arguments instead of
    23 and checks nothing the kernel checks (arrays are made by the caller: boxing arrays
    returned from here costs more than making them in Python).

    Returns ``code`` (as :func:`_check_queries`, 7 also when ``q_indptr`` is not one
    row; nothing is searched when it is nonzero)."""
    if q_indptr.shape[0] != 2 or out_rows.shape[0] != 1 or out_rows.shape[1] != k or out_scores.shape[0] != 1 \
            or out_scores.shape[1] != k or out_counts.shape[0] != 1 or scored.shape[0] != 1:
        return 7
    code, _ = _check_queries(q_indptr, q_comps, q_vals, dim)
    if code != 0:
        return code
    cap, tcap, n_ev = _prepare(v, q_indptr, k, query_cut, max_blocks, 1)
    _view_rows(v, 0, q_indptr, q_comps, q_vals, k, query_cut, heap_factor, first_sorted, term_order, n_indexed,
               0, _NO_U8, _NO_U8, _NO_PTR, _NO_I64, 0, 1, cap, tcap, n_ev, out_rows, out_scores, out_counts, scored)
    return 0
