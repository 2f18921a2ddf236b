"""numba kernels of the filtered indexes (IVF list skipping, selector bitmaps, exact fallback).

Conventions shared with :mod:`gsu.index.topk`: per-query allowed rows come in CSR
form (``rows[starts[q]:ends[q]]``, sorted ascending); results are written best-first
into caller-filled ``out_r`` (nq, k) int64 (-1) / ``out_s`` (nq, k) float32 (-inf);
ties are broken by the smaller row.

Selector bitmaps are packed (bit ``r & 7`` of byte ``r >> 3``), the
``faiss.IDSelectorBitmap`` layout. The IVF kernels never test membership: a filter's
allowed rows are grouped by list first (O(m)), so only allowed rows are read.

IVF layout ("list-ordered copy"): the vectors of list ``l`` are
``Xl[list_off[l]:list_off[l+1]]``; ``pos_row[p]`` is the index row held at position
``p``, ``row_pos[r]`` its inverse and ``row_list[r]`` the list of row ``r``. Inside a
list, positions follow row order, so gathering a sorted subset of a list's rows reads
memory forward.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu._simd import DOT_GROUPS, LANES, dot_i8_groups, load_f32, prefetch
from gsu.index._bits import ctz64
from gsu.index.topk import heap_push, heap_sorted, lower_bound, serial_and_parallel

# fast-math without the no-NaN/no-inf assumptions (-inf marks empty result slots)
_FM = {"contract", "reassoc", "nsz", "arcp"}
#: below this many queries a kernel runs serially: a one-query call pays no
#: thread-pool launch (and no wait for a busy core on a shared machine)
_PAR_MIN = 2


def _parallel(nq: int) -> bool:
    """Whether ``nq`` queries take a kernel's parallel twin: at least :data:`_PAR_MIN`
    queries and more than one numba thread (on one thread the parallel twin is the serial
    kernel plus the thread pool's start-up, and compiling it costs ~3x the serial one)."""
    return nq >= _PAR_MIN and nb.get_num_threads() > 1


@nb.njit(cache=True, inline="always")
def _centroid_row(qv, blk, scale, extra, out):
    """One query's scores against centroids held as 8-bit codes in groups of
    :data:`gsu._simd.LANES` (:meth:`gsu.index.ivf.IVFIndex._centroid_codes`):
    ``out[l] = scale[l] · Σ_t qv[t] · codes[l, t]`` over the ``d`` code columns (each sum in
    column order, :func:`gsu._simd.dot_i8_groups`), plus ``qv[d] · extra[l]`` when ``extra``
    (nlist,) is given (the l2 norm term of augmented centroids, kept in float32). Every
    read stays in bounds: the column count comes from ``blk``'s length, and fewer scales
    (or norm terms) than ``out`` holds lists raise ``IndexError``."""
    nl = out.shape[0]
    if scale.shape[0] < nl or (extra.shape[0] > 0 and extra.shape[0] < nl):
        raise IndexError("centroid scores: fewer scales (or norm terms) than lists")
    span = DOT_GROUPS * LANES
    calls = (nl + span - 1) // span
    d = blk.shape[0] // (calls * span) if calls > 0 else 0
    q = np.empty(d + 1, np.float32)  # a contiguous copy (whatever the caller's layout)
    for t in range(min(d + 1, qv.shape[0])):
        q[t] = qv[t]
    tmp = np.empty(span, np.float32)
    aug = extra.shape[0] > 0
    for c in range(calls):
        dot_i8_groups(q, blk, c * span * d, d, tmp)
        o = c * span
        for j in range(min(span, nl - o)):
            acc = tmp[j] * scale[o + j]
            if aug:
                acc += q[d] * extra[o + j]
            out[o + j] = acc


def _centroid_scores_i8_impl(Q, blk, scale, extra, out):
    """Scores of queries ``Q`` (nq, D) float32 against centroids held as 8-bit codes
    (:func:`_centroid_row` for each query; ``out`` (nq, nlist))."""
    for i in nb.prange(Q.shape[0]):
        _centroid_row(Q[i], blk, scale, extra, out[i])


_centroid_scores_i8_ser, _centroid_scores_i8_par = serial_and_parallel(_centroid_scores_i8_impl)


def centroid_scores_i8(Q, blk, scale, extra, out):
    """:func:`_centroid_scores_i8_impl`, serial for one query, parallel for batches."""
    (_centroid_scores_i8_par if _parallel(Q.shape[0]) else _centroid_scores_i8_ser)(Q, blk, scale, extra, out)


@nb.njit(cache=True)
def compact_id_sets(ids, lens, n, out_rows, indptr):
    """Per-query id sets, concatenated (``lens`` (nq,) each), under the identity id map:
    keep the ids in ``0..n-1`` as rows into ``out_rows``, CSR offsets into ``indptr``
    (nq+1,); returns the number kept. Sorted sets stay sorted."""
    j = 0
    w = 0
    indptr[0] = 0
    for q in range(lens.shape[0]):
        for _ in range(lens[q]):
            v = ids[j]
            j += 1
            out_rows[w] = v
            w += 1 if (v >= 0 and v < n) else 0
        indptr[q + 1] = w
    return w


@nb.njit(cache=True)
def strictly_increasing(a):
    """``a[0] < a[1] < ...`` (sorted, no duplicates) for a 1-D int64 array, in one
    branch-free pass (vectorised: an OR of ``a[j+1] - a[j] - 1`` keeps its sign bit
    only when some step is below 1). A difference that overflows int64 reads as a
    failure: the caller then sorts, which is slower, never wrong."""
    acc = np.int64(0)
    for j in range(a.shape[0] - 1):
        acc |= a[j + 1] - a[j] - 1
    return acc >= 0


@nb.njit(cache=True)
def copy_increasing(a, out):
    """Copy the 1-D int64 ``a`` into ``out`` and return whether it is strictly increasing
    (:func:`strictly_increasing`'s test): one pass, so a cold id array is read from memory
    once (a copy and then a check of the copy read it twice)."""
    n = a.shape[0]
    if n == 0:
        return True
    out[0] = a[0]
    acc = np.int64(0)
    for j in range(n - 1):
        v = a[j + 1]
        out[j + 1] = v
        acc |= v - a[j] - 1
    return acc >= 0


@nb.njit(cache=True)
def segments_increasing(indptr, ids):
    """Every CSR segment ``ids[indptr[q]:indptr[q+1]]`` strictly increasing (one pass)."""
    acc = np.int64(0)
    for q in range(indptr.shape[0] - 1):
        for j in range(indptr[q], indptr[q + 1] - 1):
            acc |= ids[j + 1] - ids[j] - 1
    return acc >= 0


@nb.njit(cache=True)
def min_max(a):
    """``(min, max)`` of a non-empty 1-D int64 array, one pass."""
    lo = a[0]
    hi = a[0]
    for j in range(a.shape[0]):
        v = a[j]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@nb.njit(cache=True)
def dedup_sorted(a):
    """The distinct values of the sorted 1-D int64 array ``a`` (a new array)."""
    m = a.shape[0]
    out = np.empty(m, np.int64)
    w = 0
    for j in range(m):
        v = a[j]
        if w == 0 or out[w - 1] != v:
            out[w] = v
            w += 1
    return out[:w].copy()


_U1 = np.uint64(1)
_U6 = np.uint64(6)
_U63 = np.uint64(63)


@nb.njit(cache=True, inline="always")
def _row_or_n(v, lo, n):
    """``v - lo`` as uint64 when it lies in ``0..n-1``, else ``n``: one unsigned compare
    (a negative difference wraps to a huge value), a conditional move, and an unsigned
    index (no negative-index wraparound test at the store). The signed form (two compares,
    an int64 index) compiled to branches in the bitmap loops: :func:`ids_bitmap64` of
    100,000 sorted random ids of 200,000 rows 93 -> 59 us, of 20,000 24 -> 15 us (this VM)."""
    return min(np.uint64(v - lo), np.uint64(n))


@nb.njit(cache=True, inline="always")
def _set_bits(bm, vals, lo, n):
    """OR the bits of the rows ``vals - lo`` into ``bm`` (at least ``ceil(n/64) + 2``
    words, the row ``r``'s bit in word ``(r >> 6) + 1``; a value outside ``0..n-1`` sets
    bit ``n``, in the words past the rows). Any order, repeats allowed.

    Dense near-contiguous ids (a window; not :func:`_spread`): two streams over the halves
    of ``vals``, each building its current word in a register and OR-ing it into the
    bitmap when the word changes: they touch memory once per word, not once per id. (A
    read-modify-write per id makes each id wait on the store of the previous one when they
    share a word: 1.3 ns per id on 100,000 sorted ids of 200,000 rows, against 0.85 ns
    here.) Below one id per eight rows, or spread out (where the word changes at
    unpredictable ids), eight plain read-modify-write streams over the eighths of ``vals``
    are cheaper, and are used instead (dense spread-out sets go to :func:`_dense_bitmap`
    first, see :func:`_bytes_pay`): ids of one stream that share a word wait on each other's
    store, and eight independent chains keep more of them in flight than four (sorted
    random ids of 200,000 rows, cold, one thread, an Intel Xeon VM: 10,000 13.7 → 9.9 µs,
    20,000 26.7 → 21.7 µs, 24,000 31.3 → 26.7 µs, 2,000 3.1 → 2.7 µs for :func:`ids_bitmap64`).
    """
    m = vals.shape[0]
    if m * 8 < n or _spread(vals):
        q = m >> 3
        for j in range(q):
            r0 = _row_or_n(vals[j], lo, n)
            r1 = _row_or_n(vals[j + q], lo, n)
            r2 = _row_or_n(vals[j + 2 * q], lo, n)
            r3 = _row_or_n(vals[j + 3 * q], lo, n)
            r4 = _row_or_n(vals[j + 4 * q], lo, n)
            r5 = _row_or_n(vals[j + 5 * q], lo, n)
            r6 = _row_or_n(vals[j + 6 * q], lo, n)
            r7 = _row_or_n(vals[j + 7 * q], lo, n)
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
        return
    h = m >> 1
    c0 = np.uint64(0) - _U1  # "word -1": c0 + 1 wraps to word 0
    c1 = c0
    a0 = np.uint64(0)
    a1 = np.uint64(0)
    for j in range(h):
        r0 = _row_or_n(vals[j], lo, n)
        r1 = _row_or_n(vals[j + h], lo, n)
        w0 = r0 >> _U6
        w1 = r1 >> _U6
        if w0 != c0:
            bm[c0 + _U1] |= a0  # the first time: word 0, a spare, takes the empty first word
            a0 = np.uint64(0)
            c0 = w0
        if w1 != c1:
            bm[c1 + _U1] |= a1
            a1 = np.uint64(0)
            c1 = w1
        a0 |= _U1 << (r0 & _U63)
        a1 |= _U1 << (r1 & _U63)
    bm[c0 + _U1] |= a0
    bm[c1 + _U1] |= a1
    for j in range(2 * h, m):
        r = _row_or_n(vals[j], lo, n)
        bm[(r >> _U6) + _U1] |= _U1 << (r & _U63)


_PACK8 = np.uint64(0x0102040810204080)  # (x * _PACK8) >> 56: bit i = byte i of x (bytes 0/1)
_ONES8 = np.uint64(0x0101010101010101)  # (x * _ONES8) >> 56: the sum of the bytes of x (at most 8 each)


@nb.njit(cache=True, inline="always")
def _dense_bitmap(vals, lo, n):
    """Bitmap (as :func:`rows_bitmap64`, ``ceil(n/64)`` words) of the rows ``vals - lo``
    in ``0..n-1`` (others dropped; any order, repeats allowed) and the number of distinct
    rows set, for dense spread-out sets (:func:`_bytes_pay`): a byte per row first
    (independent stores, four streams; nothing waits on the previous value), then eight
    bytes at a time packed into eight bits by one multiply (and counted by another).

    Against :func:`_set_bits` (plus the popcount pass), sorted random id arrays cycled
    (~40 MB of ids, cold), one thread, this VM: 50,000 of 100,000 rows 42 → 28 µs,
    100,000 of 200,000 85 → 56 µs, 500,000 of 10^6 400 → 245 µs; about equal at one row
    in four or five, below which the read-modify-write streams win (the O(n) byte mask
    costs more than it saves)."""
    nw = (n + 63) >> 6
    mask = np.zeros(nw * 64 + 64, np.uint8)  # byte n (a spare) takes the values outside
    m = vals.shape[0]
    q = m >> 2
    for j in range(q):
        r0 = _row_or_n(vals[j], lo, n)
        r1 = _row_or_n(vals[j + q], lo, n)
        r2 = _row_or_n(vals[j + 2 * q], lo, n)
        r3 = _row_or_n(vals[j + 3 * q], lo, n)
        mask[r0] = 1
        mask[r1] = 1
        mask[r2] = 1
        mask[r3] = 1
    for j in range(4 * q, m):
        r = _row_or_n(vals[j], lo, n)
        mask[r] = 1
    mask[n] = 0
    m8 = mask.view(np.uint64)
    bm = np.empty(nw, np.uint64)
    cnt = np.uint64(0)
    s56 = np.uint64(56)
    for w in range(nw):
        acc = np.uint64(0)
        for b in range(8):
            x = m8[w * 8 + b]
            cnt += (x * _ONES8) >> s56
            acc |= ((x * _PACK8) >> s56) << np.uint64(8 * b)
        bm[w] = acc
    return bm, np.int64(cnt)


@nb.njit(cache=True, inline="always")
def _spread(vals):
    """Whether ``vals`` are not one near-contiguous ascending stretch: below 3/4 of the
    values between the first and the last are present (or they are not ascending)."""
    m = vals.shape[0]
    if m == 0:
        return False
    span = vals[m - 1] - vals[0] + 1
    return span <= 0 or m * 4 < span * 3


@nb.njit(cache=True, inline="always")
def _bytes_pay(vals, n):
    """Whether :func:`_dense_bitmap` beats :func:`_set_bits` for ``vals``: one value per four
    rows or more, spread out (:func:`_spread`; a near-contiguous stretch, e.g. a time window
    over rows stored in time order, fills whole words in registers for less)."""
    return vals.shape[0] * 4 >= n and _spread(vals)


@nb.njit(cache=True)
def rows_bitmap64(rows, n):
    """Bitmap of the allowed ``rows`` (each in ``0..n-1``) as (ceil(n/64),) uint64 words:
    bit ``r & 63`` of word ``r >> 6``. On a little-endian machine its bytes are the
    packed layout of ``faiss.IDSelectorBitmap`` (bit ``r & 7`` of byte ``r >> 3``).

    O(n/64 + m): the zeroing is a memset, then :func:`_set_bits` (a word at a time for
    sorted rows); dense spread-out sets (:func:`_bytes_pay`) by :func:`_dense_bitmap`, O(n/8 + m).
    """
    if _bytes_pay(rows, n):
        return _dense_bitmap(rows, 0, n)[0]
    nw = (n + 63) >> 6
    bm = np.zeros(nw + 2, np.uint64)
    _set_bits(bm, rows, 0, n)
    return bm[1 : nw + 1]


@nb.njit(cache=True)
def ids_bitmap64(ids, lo, n):
    """Bitmap (as :func:`rows_bitmap64`) of the rows ``ids - lo`` that lie in ``0..n-1``,
    straight from a request's id array in any order, repeats allowed (ids outside are
    dropped): ``(bm, m, rmin, rmax)`` with ``m`` the distinct rows set and ``rmin``/``rmax``
    the least and greatest (``n``/``-1`` when none).

    One pass over ``ids`` (:func:`_set_bits`, or for dense spread-out sets
    :func:`_dense_bitmap`, see :func:`_bytes_pay`) and
    one over the words (popcount, the first and last set bit): the form a large filter's
    graph walk and list scan read, without a sorted copy of the ids first; nothing reads
    ``ids`` afterwards.
    """
    nw = (n + 63) >> 6
    one = np.uint64(1)
    if _bytes_pay(ids, n):  # dense and spread: a byte per row, then packed (and counted)
        bm, m = _dense_bitmap(ids, lo, n)
    else:
        full = np.zeros(nw + 2, np.uint64)  # word 0 spare; words nw+1.. take the bits of the ids outside
        _set_bits(full, ids, lo, n)
        bm = full[1 : nw + 1]
        if n & 63:  # the spare bits at the end of the last word
            bm[nw - 1] &= (one << np.uint64(n & 63)) - one
        m = _popcount(bm)
    rmin, rmax = _ends(bm, m, n)
    return bm, m, rmin, rmax


@nb.njit(cache=True, inline="always")
def _popcount(bm):
    """Set bits of the words ``bm`` (SWAR; a loop the compiler vectorizes)."""
    m = np.int64(0)
    for w in range(bm.shape[0]):
        x = bm[w]
        x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
        x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
        x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        m += np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))
    return m


@nb.njit(cache=True, inline="always")
def _ends(bm, m, n):
    """``(least, greatest)`` set bit of ``bm`` holding ``m`` set bits (``(n, -1)`` when none)."""
    if m == 0:
        return n, -1
    first = 0
    while bm[first] == 0:
        first += 1
    last = bm.shape[0] - 1
    while bm[last] == 0:
        last -= 1
    rmin = first << 6
    while ((bm[first] >> np.uint64(rmin & 63)) & np.uint64(1)) == 0:
        rmin += 1
    rmax = (last << 6) + 63
    while ((bm[last] >> np.uint64(rmax & 63)) & np.uint64(1)) == 0:
        rmax -= 1
    return rmin, rmax


def _debruijn_table() -> np.ndarray:
    """Bit index of ``low`` (a single set bit of a uint64) at ``(low * _DEBRUIJN) >> 58``."""
    t = np.zeros(64, np.int64)
    for i in range(64):
        t[((1 << i) * 0x03F79D71B4CB0A89 & (2**64 - 1)) >> 58] = i
    return t


_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_POS = _debruijn_table()


@nb.njit(cache=True)
def bitmap64_rows(bm, m):
    """The ``m`` set rows of the bitmap ``bm`` (as :func:`rows_bitmap64`), ascending, (m,)
    int64: O(n/64 + m), a set bit at a time (the lowest bit isolated, its index by a de
    Bruijn multiply), empty words skipped. Faster than a byte-table decode at every density
    measured (100,000 rows: 12.5 % set 11.9 vs 33.0 µs, 50 % 49.8 vs 99.4 µs, 90 % 80 vs 96
    µs). Stops at ``m`` rows."""
    out = np.empty(m, np.int64)
    j = 0
    one = np.uint64(1)
    for w in range(bm.shape[0]):
        x = bm[w]
        if x == 0:
            continue
        base = w << 6
        while x != 0:
            if j == m:
                return out[:j]
            low = x & (~x + one)
            out[j] = base + _DEBRUIJN_POS[(low * _DEBRUIJN) >> np.uint64(58)]
            j += 1
            x ^= low
    return out[:j]


@nb.njit(cache=True)
def range_bitmap64(lo, hi, n):
    """Bitmap (as :func:`rows_bitmap64`) of the rows ``lo..hi-1`` (``0 <= lo <= hi <= n``),
    in O(n/64): whole words are filled, never single bits."""
    bm = np.zeros((n + 63) >> 6, np.uint64)
    if hi <= lo:
        return bm
    full = ~np.uint64(0)
    wl = lo >> 6
    wh = (hi - 1) >> 6
    for w in range(wl, wh + 1):
        bm[w] = full
    bm[wl] &= full << np.uint64(lo & 63)
    top = hi & 63
    if top:
        bm[wh] &= full >> np.uint64(64 - top)
    return bm


def rows_bitmap(rows, n):
    """Packed little-endian bitmap of ``rows`` over ``0..n-1``: (ceil(n/8),) uint8 (bit
    ``r & 7`` of byte ``r >> 3``: the layout of ``faiss.IDSelectorBitmap``); a byte view
    of :func:`rows_bitmap64`."""
    return rows_bitmap64(rows, n).view(np.uint8)[: (n + 7) >> 3]


@nb.njit(cache=True)
def table_rows(ids, table, base, out):
    """Rows of the ids through a dense lookup table (``table[id - base]``, -1 = absent),
    ids outside the table dropped: writes the found rows to ``out`` in input order and
    returns ``(count, sorted)`` where ``sorted`` says the rows came out ascending."""
    w = 0
    span = table.shape[0]
    last = -1
    inc = True
    for j in range(ids.shape[0]):
        i = ids[j] - base  # wraps for ids far below the base: those fail ids[j] >= base
        if ids[j] >= base and i >= 0 and i < span:
            r = np.int64(table[i])
            if r >= 0:
                out[w] = r
                inc = inc and r > last
                last = r
                w += 1
    return w, inc


_FIB = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: the multiplicative hash of the id table


@nb.njit(cache=True)
def id_hash_build(ids, bits):
    """An open-addressing table of the ids (distinct int64) of an index: ``2 · 2^bits``
    int64, slot ``h`` holding ``[id, row]`` side by side (one cache line per lookup),
    row -1 = empty; the slot of an id is ``(id · _FIB) >> (64 - bits)``, then the next
    ones (linear probing). ``2^bits`` must exceed ``len(ids)``."""
    size = np.int64(1) << bits
    tab = np.full(2 * size, -1, np.int64)
    mask = np.uint64(size - 1)
    sh = np.uint64(64 - bits)
    for r in range(ids.shape[0]):
        v = ids[r]
        h = (np.uint64(v) * _FIB) >> sh
        while tab[2 * h + 1] >= 0:
            h = (h + np.uint64(1)) & mask
        tab[2 * h] = v
        tab[2 * h + 1] = r
    return tab


@nb.njit(cache=True, inline="always")
def _hash_find(tab, v, sh, mask):
    """The row of id ``v`` in :func:`id_hash_build`'s table (``sh = 64 - bits``,
    ``mask = 2^bits - 1``), -1 when absent."""
    h = (np.uint64(v) * _FIB) >> sh
    found = np.int64(-1)
    while True:
        r = tab[2 * h + 1]
        if r < 0:
            break
        if tab[2 * h] == v:
            found = r
            break
        h = (h + np.uint64(1)) & mask
    return found


@nb.njit(cache=True)
def id_hash_rows(ids, tab, bits, out):
    """Rows of ``ids`` through :func:`id_hash_build`'s table, absent ids dropped: writes
    the rows found to ``out`` in input order and returns ``(count, sorted)`` (as
    :func:`table_rows`). The slot of the id 16 ahead is prefetched: a lookup is one cache
    line of a table larger than the L2 cache, ~5.5 ns per id on this VM against ~23 for a
    binary search of the sorted ids (200,000 ids, 100,000 looked up)."""
    mask = np.uint64((np.int64(1) << bits) - 1)
    sh = np.uint64(64 - bits)
    m = ids.shape[0]
    w = 0
    last = -1
    inc = True
    for j in range(m):
        if j + 16 < m:
            prefetch(tab, 2 * ((np.uint64(ids[j + 16]) * _FIB) >> sh))
        r = _hash_find(tab, ids[j], sh, mask)
        if r >= 0:
            out[w] = r
            inc = inc and r > last
            last = r
            w += 1
    return w, inc


@nb.njit(cache=True)
def id_hash_lookup(ids, tab, bits, out):
    """``out[j]``: the row of ``ids[j]`` through :func:`id_hash_build`'s table, -1 when absent
    (1-D, any order; the slot 16 ids ahead prefetched)."""
    mask = np.uint64((np.int64(1) << bits) - 1)
    sh = np.uint64(64 - bits)
    m = ids.shape[0]
    for j in range(m):
        if j + 16 < m:
            prefetch(tab, 2 * ((np.uint64(ids[j + 16]) * _FIB) >> sh))
        out[j] = _hash_find(tab, ids[j], sh, mask)


@nb.njit(cache=True)
def id_hash_bitmap(ids, tab, bits, n):
    """:func:`ids_bitmap64` for an index whose ids go through :func:`id_hash_build`'s
    table: the rows of ``ids`` (any order, repeats allowed, absent ids dropped) as
    ``(bm, m, rmin, rmax)``, without sorting the ids or listing the rows first."""
    bm = np.zeros((n + 63) >> 6, np.uint64)
    mask = np.uint64((np.int64(1) << bits) - 1)
    sh = np.uint64(64 - bits)
    m = ids.shape[0]
    for j in range(m):
        if j + 16 < m:
            prefetch(tab, 2 * ((np.uint64(ids[j + 16]) * _FIB) >> sh))
        r = _hash_find(tab, ids[j], sh, mask)
        if r >= 0:
            ur = np.uint64(r)
            bm[ur >> _U6] |= _U1 << (ur & _U63)
    cnt = _popcount(bm)
    rmin, rmax = _ends(bm, cnt, n)
    return bm, cnt, rmin, rmax


@nb.njit(cache=True)
def list_counts(rows, row_list, nlist):
    """Allowed rows per IVF list of one sorted row array: (nlist,) int64."""
    c = np.zeros(nlist, np.int64)
    for j in range(rows.shape[0]):
        c[row_list[rows[j]]] += 1
    return c


@nb.njit(cache=True)
def _bucket(rows, start, end, row_list, row_pos, boff, bpos):
    """Group the allowed rows ``rows[start:end]`` by IVF list.

    Fills ``boff`` (nlist+1,) and ``bpos`` (>= m,): the list positions (into ``Xl``)
    of the allowed rows of list ``l`` are ``bpos[boff[l]:boff[l+1]]``, ascending
    (rows are sorted and positions follow row order inside a list).
    """
    nlist = boff.shape[0] - 1
    for l in range(nlist + 1):
        boff[l] = 0
    for j in range(start, end):
        boff[row_list[rows[j]] + 1] += 1
    for l in range(nlist):
        boff[l + 1] += boff[l]
    for j in range(start, end):
        r = rows[j]
        l = row_list[r]
        bpos[boff[l]] = row_pos[r]
        boff[l] += 1
    for l in range(nlist, 0, -1):  # the scatter advanced each start to the next list's start
        boff[l] = boff[l - 1]
    boff[0] = 0


@nb.njit(cache=True, inline="always")
def _uniform_verdict(c, ng, tot, N, s):
    """The test of :func:`filter_uniform` from the per-list counts ``c`` of allowed samples
    (``ng`` samples per list, ``tot`` allowed of ``N``) for a filter allowing a share ``s``."""
    if N == 0 or s <= 0.0 or s >= 1.0:
        return False
    p = tot / N
    if abs(p - s) > 3.0 * np.sqrt(s * (1.0 - s) / N):
        return False
    if p <= 0.0 or p >= 1.0:
        return True
    v = p * (1.0 - p)
    x2 = 0.0
    var = 0.0
    for g in range(ng.shape[0]):
        k = ng[g]
        d = c[g] - k * p
        x2 += d * d / (k * v)
        # variance of one list's term under the binomial: 4th central moment / (k v)^2 - 1
        var += (1.0 + 3.0 * (k - 2) * v) / (k * v) - 1.0
    return x2 <= ng.shape[0] + 3.0 * np.sqrt(max(var, 0.0))


@nb.njit(cache=True)
def filter_uniform(R, G, ng, rows, starts, ends, which, shares, out):
    """Whether each per-query filter looks spread evenly over the IVF lists (no dense
    region anywhere).

    ``R`` (N,) the sorted rows of a fixed sample design (a few evenly spaced rows of evenly
    spaced lists), ``G`` (N,) the sampled list (0..L-1) of each, ``ng`` (L,) the samples per
    list. For query ``which[i]`` (allowed rows: the sorted ``rows[starts[q]:ends[q]]``, read
    by galloping through them in step with ``R``) the allowed samples are counted per list;
    ``out[i]`` is True when their share matches the filter's own share ``shares[i]``
    (``m / n``) within 3 binomial standard deviations and their spread over the lists is
    within 3 standard deviations of its binomial expectation (each list's term with its
    exact binomial variance: a few samples per list are far from the chi-square's). A
    concentrated filter fails one or the other: its sampled lists mostly miss its dense
    region (share far below ``m / n``), or hit it (spread far above binomial). The counts
    are those :func:`filter_uniform_one` takes from a bitmap or a run.
    """
    N = R.shape[0]
    c = np.zeros(ng.shape[0], np.int64)
    for i in range(which.shape[0]):
        q = which[i]
        c[:] = 0
        tot = 0
        j = starts[q]
        e0 = ends[q]
        for t in range(N):
            r = R[t]
            # gallop from j to the first rows[.] >= r (R ascends, so j only moves forward)
            step = 1
            while j + step < e0 and rows[j + step] < r:
                step *= 2
            j = lower_bound(rows, j + step // 2 if step > 1 else j, min(j + step, e0), r)
            a = 1 if (j < e0 and rows[j] == r) else 0
            c[G[t]] += a
            tot += a
        out[i] = _uniform_verdict(c, ng, tot, N, shares[i])


@nb.njit(cache=True)
def filter_uniform_one(R, G, ng, bm, lo, hi, s):
    """:func:`filter_uniform` for one shared filter given as a bitmap ``bm`` (non-empty) or
    the run ``lo..hi-1``: the verdict (a bool)."""
    N = R.shape[0]
    c = np.zeros(ng.shape[0], np.int64)
    tot = 0
    use_bm = bm.shape[0] > 0
    for t in range(N):
        r = R[t]
        if use_bm:
            a = np.int64((bm[r >> 6] >> np.uint64(r & 63)) & np.uint64(1))
        else:
            a = 1 if (r >= lo and r < hi) else 0
        c[G[t]] += a
        tot += a
    return _uniform_verdict(c, ng, tot, N, s)


@nb.njit(cache=True)
def _coprime_step(N):
    """A stride near ``0.618 N`` with no factor in common with ``N`` (``N >= 1``): ``j -> (j +
    step) mod N`` then visits every position once, each next one far from those before."""
    step = max(1, np.int64(N * 0.6180339887498949))
    while True:
        a, b = step, N
        while b:
            a, b = b, a % b
        if a == 1:
            return step
        step += 1


@nb.njit(cache=True)
def in_fewer_lists(row_list, rows, lo, hi, bm, nlist, want):
    """Whether a shared filter's allowed rows lie in fewer than ``want`` IVF lists
    (``row_list`` (n,) int32: each row's list). The rows are the sorted ``rows`` when not
    empty, else the run ``lo..hi-1`` when ``hi > lo``, else the set bits of the bitmap
    ``bm``. They are visited in a strided order (:func:`_coprime_step`; a bitmap a word at a
    time), which reaches rows far apart in the id order, and so in different lists, first:
    a filter spread over many lists answers after a few dozen rows, one held by fewer
    lists reads every row (O(m), or O(n/64 + m) for a bitmap). A row outside ``row_list``, or
    a list outside ``0..nlist-1``, answers ``False`` (the caller's plan stands).

    The two loops repeat their counting lines on purpose: moved into a helper taking
    ``seen`` (even inlined), the count ran ~10x slower (3.2 → 34.5 µs for 1,455 rows: the
    array's reference counting on every call)."""
    n = row_list.shape[0]
    seen = np.zeros(nlist, np.bool_)
    cnt = 0
    if rows.shape[0] > 0 or hi > lo:
        N = rows.shape[0] if rows.shape[0] > 0 else hi - lo
        step = _coprime_step(N)
        j = 0
        for _ in range(N):
            r = rows[j] if rows.shape[0] > 0 else lo + j
            if r < 0 or r >= n:
                return False
            l = row_list[r]
            if l < 0 or l >= nlist:
                return False
            if not seen[l]:
                seen[l] = True
                cnt += 1
                if cnt >= want:
                    return False
            j += step
            if j >= N:
                j -= N
        return True
    W = bm.shape[0]
    if W == 0:
        return True
    step = _coprime_step(W)
    j = 0
    one = np.uint64(1)
    for _ in range(W):
        x = bm[j]
        base = np.int64(j) << 6
        while x != 0:
            r = base + np.int64(ctz64(x))
            x &= x - one
            if r >= n:
                return False
            l = row_list[r]
            if l < 0 or l >= nlist:
                return False
            if not seen[l]:
                seen[l] = True
                cnt += 1
                if cnt >= want:
                    return False
        j += step
        if j >= W:
            j -= W
    return True


@nb.njit(cache=True)
def bucket_rows(rows, row_list, row_pos, nlist):
    """One shared filter grouped by list: ``(boff (nlist+1,) int64, bpos (m,) int64)``."""
    boff = np.empty(nlist + 1, np.int64)
    bpos = np.empty(rows.shape[0], np.int64)
    _bucket(rows, 0, rows.shape[0], row_list, row_pos, boff, bpos)
    return boff, bpos


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _dot1(qv, x):
    """``qv · x`` in float32."""
    acc = np.float32(0.0)
    for t in range(qv.shape[0]):
        acc += qv[t] * x[t]
    return acc


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _dot4(qv, x0, x1, x2, x3):
    """``qv`` against four rows at once: independent loads overlap their latency."""
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    for t in range(qv.shape[0]):
        qt = qv[t]
        a0 += qt * x0[t]
        a1 += qt * x1[t]
        a2 += qt * x2[t]
        a3 += qt * x3[t]
    return a0, a1, a2, a3


_BUCKETS = 256  # score buckets that order the lists without a heap
#: collected rows a query's list scan scores at a time, at least (:func:`_probe_lists`)
_CHUNK = 1024


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _score_rows(qv, Xl, pos_row, cb, w, k, hs, hr, hsize, ind):
    """Score the collected ``cb[:w]`` into the heap; returns its size. ``ind`` True: ``cb``
    holds rows of ``Xl`` (row order); False: list positions (``Xl`` in list order, the row
    is ``pos_row[p]``). The rows about 8 KiB ahead are prefetched, the first ones at once:
    the collected rows of several lists lie scattered over the table."""
    d = Xl.shape[1]
    Xf = Xl.reshape(-1)
    ahead = max(4, 2048 // max(d, 1))
    for u in range(min(w, ahead)):
        b = cb[u] * d
        for t in range(0, d, 16):
            prefetch(Xf, b + t)
    j = 0
    while j + 4 <= w:  # four rows per step: independent loads overlap
        for u in range(j + ahead, min(j + ahead + 4, w)):
            b = cb[u] * d
            for t in range(0, d, 16):
                prefetch(Xf, b + t)
        p0, p1, p2, p3 = cb[j], cb[j + 1], cb[j + 2], cb[j + 3]
        a0, a1, a2, a3 = _dot4(qv, Xl[p0], Xl[p1], Xl[p2], Xl[p3])
        if hsize < k or a0 >= hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a0, p0 if ind else pos_row[p0])
        if hsize < k or a1 >= hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a1, p1 if ind else pos_row[p1])
        if hsize < k or a2 >= hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a2, p2 if ind else pos_row[p2])
        if hsize < k or a3 >= hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a3, p3 if ind else pos_row[p3])
        j += 4
    while j < w:
        p = cb[j]
        acc = _dot1(qv, Xl[p])
        if hsize < k or acc >= hs[0]:
            hsize = heap_push(hs, hr, hsize, k, acc, p if ind else pos_row[p])
        j += 1
    return hsize


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _rescore_within(qv, X, rows, start, approx, m, thr, k, hs, hr, cand):
    """Pass 2 of the approximate-first scans: the rows ``rows[start + i]`` (``i < m``) whose
    approximate score ``approx[i]`` is at least ``thr`` are collected into ``cand`` (scratch
    of ``m``; may be ``rows`` itself when ``start`` is 0: writes trail reads), their float32
    rows prefetched, then scored exactly into the emptied heap ``hs``/``hr``; returns its size."""
    d = qv.shape[0]
    Xf = X.reshape(-1)
    nc = 0
    for i in range(m):
        if approx[i] >= thr:
            r = rows[start + i]
            cand[nc] = r
            nc += 1
            for t in range(0, d, 16):
                prefetch(Xf, r * d + t)
    size = 0
    for i in range(nc):
        r = cand[i]
        acc = _dot1(qv, X[r])
        if size < k or acc >= hs[0]:
            size = heap_push(hs, hr, size, k, acc, r)
    return size


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _score_rows_sq8(qp, C, cb, w, k, hs, hr, hsize, abuf, rbuf, nb_):
    """:func:`_score_rows` (rows ``cb[:w]`` of the row-ordered table) from the 8-bit codes
    ``C``: the approximate scores ``Σ qp_t C_t`` go into the heap and, with their rows,
    into ``abuf``/``rbuf`` from ``nb_`` on (for the exact rescoring, :func:`_probe_lists`);
    returns ``(hsize, nb_)``. The codes of the rows about 8 KiB ahead are prefetched, the
    first ones at once."""
    if nb_ + w > abuf.shape[0] or nb_ + w > rbuf.shape[0]:  # the caller's bound broken: never write past them
        raise IndexError("IVF scan: more rows scored than the rescoring buffers hold")
    d = C.shape[1]
    Cf = C.reshape(-1)
    ahead = max(4, (8192 // max(d, 1)) // 4 * 4)
    for u in range(min(w, ahead)):
        b = cb[u] * d
        for t in range(0, d, 64):
            prefetch(Cf, b + t)
    j = 0
    while j + 4 <= w:
        for u in range(j + ahead, min(j + ahead + 4, w)):
            b = cb[u] * d
            for t in range(0, d, 64):
                prefetch(Cf, b + t)
        r0, r1, r2, r3 = cb[j], cb[j + 1], cb[j + 2], cb[j + 3]
        c0, c1, c2, c3 = C[r0], C[r1], C[r2], C[r3]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for t in range(qp.shape[0]):
            qt = qp[t]
            a0 += qt * np.float32(c0[t])
            a1 += qt * np.float32(c1[t])
            a2 += qt * np.float32(c2[t])
            a3 += qt * np.float32(c3[t])
        abuf[nb_] = a0
        abuf[nb_ + 1] = a1
        abuf[nb_ + 2] = a2
        abuf[nb_ + 3] = a3
        rbuf[nb_] = r0
        rbuf[nb_ + 1] = r1
        rbuf[nb_ + 2] = r2
        rbuf[nb_ + 3] = r3
        nb_ += 4
        if hsize < k or a0 > hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a0, 0)
        if hsize < k or a1 > hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a1, 0)
        if hsize < k or a2 > hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a2, 0)
        if hsize < k or a3 > hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a3, 0)
        j += 4
    while j < w:
        r = cb[j]
        c0 = C[r]
        a0 = np.float32(0.0)
        for t in range(qp.shape[0]):
            a0 += qp[t] * np.float32(c0[t])
        abuf[nb_] = a0
        rbuf[nb_] = r
        nb_ += 1
        if hsize < k or a0 > hs[0]:
            hsize = heap_push(hs, hr, hsize, k, a0, 0)
        j += 1
    return hsize, nb_


@nb.njit(cache=True, inline="always")
def _sq8_query(qv, step, nmax, qp):
    """Fill ``qp`` with the query times the code steps; returns ``eps``, the bound on
    ``|Σ qp_t C_t + q·vmin − the float32 score this module computes|`` (quantisation,
    step stored in float32, the rounding of either sum; 2.2 and 1.0001 are slack)."""
    return _sq8_bound(qv, step, nmax, qp, np.inf)


#: the IVF list scan rescores the rows whose approximate score lies within this many
#: standard deviations of the codes' rounding error of the approximate k-th best (twice, as
#: for the worst-case bound), not within the worst case (see :func:`_sq8_query_scan`)
SCAN_RESCORE_Z = 5.0


@nb.njit(cache=True, inline="always")
def _sq8_query_scan(qv, step, nmax, qp):
    """:func:`_sq8_query` for the IVF list scan: fills ``qp`` alike and returns the smaller
    of its worst-case bound and ``SCAN_RESCORE_Z`` standard deviations of the codes' rounding
    error (plus the same float rounding terms).

    A code rounds each coordinate to the nearest of 256 levels: the error ``r_t`` of
    coordinate ``t`` lies in ``±step_t / 2``, and the approximate score's error is
    ``Σ q_t r_t``. The worst case, ``Σ |q_t| step_t / 2``, needs every coordinate's error at
    its bound with the query's sign; as a sum of ``d`` independent errors spread evenly over
    their range its standard deviation is ``sqrt(Σ (q_t step_t)² / 12)``, about a
    ``sqrt(3 / d)`` share of the worst case for a query spread over the dimensions (the
    suite's sets at d = 128–768: the worst case 11–36 standard deviations; the scanned rows'
    errors measured 0.0005–0.0015 against bounds of 0.012–0.021). Within the worst case,
    the list scan rescored a median of 82 rows (90th percentile 323) from their float32
    rows, each a cache miss, on the anisotropic set's 10 % correlated filters; the true
    top 10 of the scanned rows always lay within the approximate top 14–18.
    Five standard deviations each for the candidate's and the k-th row's error put a miss
    at a 7-sigma deviation of their difference. Where the query
    weighs few coordinates the worst case is the smaller and is kept. The exact route keeps
    the worst case (its answers are exact by contract); the list scan is approximate
    anyway, by the rows it reads."""
    return _sq8_bound(qv, step, nmax, qp, SCAN_RESCORE_Z)


@nb.njit(cache=True, inline="always")
def _sq8_bound(qv, step, nmax, qp, z):
    """:func:`_sq8_query` (``z`` infinite: the worst case) and :func:`_sq8_query_scan` (the
    quantisation term at most ``z`` standard deviations of the rounding error): one pass
    filling ``qp``, the same float rounding terms."""
    d = qv.shape[0]
    l1s = 0.0
    l2 = 0.0
    v2 = 0.0
    for t in range(d):
        p = qv[t] * step[t]
        qp[t] = p
        l1s += abs(np.float64(qv[t])) * np.float64(step[t])
        l2 += np.float64(qv[t]) * np.float64(qv[t])
        v2 += np.float64(p) * np.float64(p)
    u = (d + 2) * 2.0 ** -24
    g = u / (1.0 - u)
    quant = 0.5 * l1s
    if z < np.inf:
        quant = min(quant, z * np.sqrt(v2 / 12.0))
    return np.float32(((quant + l1s * 256.0 * 2.0 ** -23) * (1.0 + 255.0 * 2.2 * g / 0.5) + 2.2 * g * np.sqrt(l2) * nmax)
                      * 1.0001)


#: the lists nearest a query whose allowed share decides whether it lies away from the
#: filter's rows (see :func:`_probe_lists`)
_LOCAL_LISTS = 4
#: the result count :func:`_probe_lists` gives a query away from the allowed rows when its
#: away budget is the exact scan (``target_hi`` < 0): the caller scans its rows exactly
AWAY_ELSEWHERE = -2


@nb.njit(cache=True, inline="always")
def _run_span(pos_row, j, e, run_lo, run_hi):
    """The positions ``[a, b)`` of ``j..e-1`` (one list's, rows ascending) whose rows lie in
    the run ``run_lo..run_hi-1``: two binary searches."""
    a = lower_bound(pos_row, j, e, run_lo)
    return a, lower_bound(pos_row, a, e, run_hi)


@nb.njit(cache=True)
def local_share(CS, q, loff, boff, bm, pos_row, run_lo=0, run_hi=0):
    """Share of allowed rows among the rows of query ``q``'s ``_LOCAL_LISTS`` best lists
    by centroid score ``CS[q]`` (every non-empty list, with allowed rows or not; ``loff``
    the lists' offsets). The allowed rows: a bitmap ``bm`` over rows (``pos_row`` maps
    list positions to rows), the rows ``run_lo..run_hi-1`` (``run_hi > run_lo``; a list's
    rows ascend with its positions), or, ``bm`` empty, grouped by list (``boff``: how many
    in each list). 1.0 when there are no lists."""
    L = _LOCAL_LISTS
    hs = np.empty(L, np.float32)
    hl = np.empty(L, np.int64)
    size = 0
    for l in range(loff.shape[0] - 1):  # the best L non-empty lists (a top-L heap)
        if loff[l + 1] > loff[l]:
            v = CS[q, l]
            if size < L or v >= hs[0]:
                size = heap_push(hs, hl, size, L, v, l)
    tot = 0
    ok = 0
    one = np.uint64(1)
    for i in range(size):
        l = hl[i]
        tot += loff[l + 1] - loff[l]
        if run_hi > run_lo:
            a, b = _run_span(pos_row, loff[l], loff[l + 1], run_lo, run_hi)
            ok += b - a
        elif bm.shape[0] > 0:
            for p in range(loff[l], loff[l + 1]):
                r = pos_row[p]
                ok += np.int64((bm[r >> 6] >> np.uint64(r & 63)) & one)
        else:
            ok += boff[l + 1] - boff[l]
    return 1.0 if tot == 0 else ok / tot


@nb.njit(cache=True, fastmath=_FM)
def _probe_lists(q, Q, CS, Xl, pos_row, boff, bpos, bm, m_all, k, target, min_lists, out_r, out_s, counts, scored, keys,
                 vals, ind, C, step, cnmax, loff, share_lo, target_hi, lists_hi, run_lo, run_hi):
    """Probe the lists holding allowed rows in decreasing centroid score.

    Two ways to find a list's allowed rows: *grouped* (``bm`` empty): ``boff``/``bpos``
    are the allowed rows grouped by list (:func:`_bucket`), so only allowed rows are ever
    read, and lists without an allowed row are never opened; *scan* (``bm`` a bitmap of
    the allowed rows): ``boff`` are the list offsets into ``Xl`` (``list_off``), and each
    opened list's rows are tested against the bitmap. Grouping costs O(m) per filter,
    scanning O(rows in the opened lists): the caller picks the cheaper. A third, *run*
    (``run_hi > run_lo``: the allowed rows are ``run_lo..run_hi-1``, a time window;
    ``boff``/``bpos`` the list offsets and every position, ``bm`` empty): a list's rows
    ascend with its positions, so its allowed ones
    are one span of positions, found by two binary searches — no bitmap is built and no
    other row of an opened list is read; the same rows are scored, in the same order, as
    by the scan. ``m_all`` is the number of allowed rows. ``ind``: ``Xl``
    is in row order, read through ``pos_row`` (see :func:`_score_rows`).

    Stops once ``target`` allowed rows were scored and at least ``min_lists`` lists with
    an allowed row were opened (or every list was). ``keys``/``vals`` are (nlist,) scratch.

    Order without a heap (whose sift-downs mispredict a branch per level on every
    query): the lists' scores go into ``_BUCKETS`` equal-width buckets (branch-free),
    the top buckets holding about as many lists as the stop rule is expected to open
    are collected and sorted, and the next buckets only when those run out.

    The opened lists' allowed rows are collected first (``_CHUNK`` at a time, or a longest
    list) and then scored in that order with the rows ahead prefetched across the lists'
    boundaries (:func:`_score_rows`): the same rows in the same order as scoring each list
    as it opens, and so the same answer. Scored list by list, a 10 % filter's few dozen
    allowed rows per list were fetched with the first ones of each list waited for (the IVF
    kernel alone, old and new code in one process, on the filtered suite's cached indexes:
    1.22–1.87x at d = 32, 1.04–1.27x with 8-bit codes at d = 64–768).

    With 8-bit codes (``C`` (n, d) uint8 in row order, ``step``, ``cnmax``: see
    :func:`_gather_one_sq8`; ``ind`` only) the lists' rows are scored from their codes
    and, at the end, the scored rows within the error bound of the approximate k-th best
    (:func:`_sq8_query_scan`: five standard deviations of the codes' rounding error, or the
    worst case where that is smaller) are rescored from ``Xl``: the rows scored are the same
    (the stop rule counts rows, not scores) and so, but for a rounding error beyond those
    deviations, is the answer, for a quarter of the bytes per row.

    A query away from the allowed rows (``share_lo`` > 0, ``loff`` the lists' offsets):
    when the allowed share of the rows of its ``_LOCAL_LISTS`` best lists (by centroid
    score, allowed rows or not) is below ``share_lo`` times the filter's selectivity
    (``m_all`` of the lists' rows) — the filter's rows lie in regions away from it, as
    the items of a few categories do — the budget is ``target_hi`` / ``lists_hi``
    instead: its answers then lie on the near edges of those regions, in lists whose
    centroids rank them poorly (:func:`local_share`). ``target_hi`` < 0: such a query is
    not scanned; its count is set to ``AWAY_ELSEWHERE`` (the caller answers it with the
    exact scan, cheaper there than the away budget: ``PlannerSettings.band_away_exact``).
    """
    nlist = boff.shape[0] - 1
    d = Q.shape[1]
    qv = Q[q]
    scan = bm.shape[0] > 0
    share_min = share_lo * m_all / max(loff[loff.shape[0] - 1], 1)
    # the away test: in the scan mode, on the first lists the scan opens (the same lists, in
    # the same order, as local_share's; their rows are read once), else before the scan
    pending = share_lo > 0 and (target_hi < 0 or target_hi > target or lists_hi > min_lists)
    run = run_hi > run_lo
    # a test before the scan opens lists, once its first batch is sorted (below): in the scan
    # and run modes (``boff`` the lists' offsets, as ``loff``) on that batch's best lists
    # (local_share's lists, without its pass over every list's score); grouped (``boff``
    # counts allowed rows), by local_share
    first = pending and not (scan and min_lists >= _LOCAL_LISTS)
    if first:
        pending = False
    loc_n = 0
    loc_tot = 0
    loc_ok = 0
    sq = C.shape[0] > 0 and ind
    qp = np.empty(d if sq else 0, np.float32)
    eps = np.float32(0.0)
    nbuf = 0
    maxb = 0
    for l in range(nlist):
        maxb = max(maxb, boff[l + 1] - boff[l])
    if sq:
        eps = _sq8_query_scan(qv, step, cnmax, qp)
        # rows scored < max(target, min_lists · longest) + longest (see the stop rule), with
        # the away budget's where the away test is still to come
        t_cap = max(target, target_hi) if pending or first else target
        l_cap = max(min_lists, lists_hi) if pending or first else min_lists
        cap = min(m_all, max(t_cap, l_cap * maxb) + maxb)
    else:
        cap = 0
    abuf = np.empty(cap, np.float32)
    rbuf = np.empty(cap, np.int64)
    # the opened lists' allowed rows are collected here (``ind``: rows of ``Xl``; else list
    # positions) and scored a chunk at a time: the scoring prefetches the rows ahead across
    # the lists' boundaries (a list holds a few dozen allowed rows at 10 %: prefetched
    # within its list only, the first ones of every list were waited for)
    cb = np.empty(max(_CHUNK, maxb), np.int64)
    w = 0
    size = 0
    mn = np.float32(np.inf)
    mx = np.float32(-np.inf)
    for l in range(nlist):
        v = CS[q, l]
        keys[size] = v
        vals[size] = l
        ne = boff[l + 1] > boff[l]
        size += 1 if ne else 0
    for i in range(size):
        v = keys[i]
        mn = min(mn, v)
        mx = max(mx, v)
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    hsize = 0
    covered = 0
    opened = 0
    one = np.uint64(1)
    if size > 0 and m_all > 0:
        scale = np.float32((_BUCKETS - 1) / (mx - mn)) if mx > mn else np.float32(0.0)
        hist = np.zeros(_BUCKETS, np.int64)
        bk = np.empty(size, np.int32)
        for i in range(size):
            b = np.int32((keys[i] - mn) * scale)
            b = min(max(b, 0), _BUCKETS - 1)
            bk[i] = b
            hist[b] += 1
        # lists the stop rule should open: enough for `target` rows at the average density
        want = max(min_lists, (target * size + m_all - 1) // max(m_all, 1)) + 8
        bkeys = np.empty(size, np.float32)
        blist = np.empty(size, np.int64)
        hi_b = _BUCKETS
        done = False
        while not done and hi_b > 0:
            lo_b = hi_b
            cnt = 0
            while lo_b > 0 and cnt < want:
                lo_b -= 1
                cnt += hist[lo_b]
            nb_ = 0
            for i in range(size):  # branch-free compaction of the lists in [lo_b, hi_b)
                b = bk[i]
                bkeys[nb_] = keys[i]
                blist[nb_] = vals[i]
                nb_ += 1 if (b >= lo_b and b < hi_b) else 0
            order = np.argsort(-bkeys[:nb_])
            if first:  # the away test before the scan (see above)
                first = False
                if (scan or run) and (nb_ >= _LOCAL_LISTS or nb_ == size):
                    tot = 0
                    ok = 0
                    for a in range(min(_LOCAL_LISTS, nb_)):
                        l = blist[order[a]]
                        tot += boff[l + 1] - boff[l]
                        if run:
                            j0, e0 = _run_span(pos_row, boff[l], boff[l + 1], run_lo, run_hi)
                            ok += e0 - j0
                        else:
                            for p in range(boff[l], boff[l + 1]):
                                r = pos_row[p]
                                ok += np.int64((bm[r >> 6] >> np.uint64(r & 63)) & one)
                    away = tot > 0 and ok < share_min * tot
                else:  # grouped, or a batch of fewer lists than the test reads: its own pass
                    away = local_share(CS, q, loff, boff, bm, pos_row, run_lo, run_hi) < share_min
                if away:
                    if target_hi < 0:  # away: answered by the exact scan, which the caller runs
                        counts[q] = AWAY_ELSEWHERE
                        scored[q] = 0
                        return
                    target = target_hi
                    min_lists = lists_hi
            for a in range(nb_):
                if not (covered < target or opened < min_lists):
                    done = True
                    break
                l = blist[order[a]]
                j0 = boff[l]
                e0 = boff[l + 1]
                if run:
                    j0, e0 = _run_span(pos_row, j0, e0, run_lo, run_hi)
                if e0 <= j0:
                    continue
                if w + (e0 - j0) > cb.shape[0]:
                    if sq:
                        hsize, nbuf = _score_rows_sq8(qp, C, cb, w, k, hs, hr, hsize, abuf, rbuf, nbuf)
                    else:
                        hsize = _score_rows(qv, Xl, pos_row, cb, w, k, hs, hr, hsize, ind)
                    w = 0
                if scan:  # branch-free: the list's rows set in the bitmap
                    w0 = w
                    for p in range(j0, e0):
                        r = pos_row[p]
                        cb[w] = r if ind else p
                        w += np.int64((bm[r >> 6] >> np.uint64(r & 63)) & one)
                    na = w - w0
                elif run:
                    for p in range(j0, e0):
                        cb[w] = pos_row[p] if ind else p
                        w += 1
                    na = e0 - j0
                else:
                    for j in range(j0, e0):
                        p = bpos[j]
                        cb[w] = pos_row[p] if ind else p
                        w += 1
                    na = e0 - j0
                if na > 0:
                    covered += na
                    opened += 1
                if pending:
                    loc_n += 1
                    loc_tot += e0 - j0
                    loc_ok += na
                    if loc_n == _LOCAL_LISTS:
                        pending = False
                        if loc_ok < share_min * loc_tot:
                            if target_hi < 0:
                                counts[q] = AWAY_ELSEWHERE
                                scored[q] = 0
                                return
                            target = target_hi
                            min_lists = lists_hi
            hi_b = lo_b
            want *= 2
    # (a test still pending here had fewer lists than it reads: every list was opened, every
    # allowed row collected, and the answer is exact whichever budget the test would pick)
    if w > 0:
        if sq:
            hsize, nbuf = _score_rows_sq8(qp, C, cb, w, k, hs, hr, hsize, abuf, rbuf, nbuf)
        else:
            hsize = _score_rows(qv, Xl, pos_row, cb, w, k, hs, hr, hsize, ind)
    if sq:  # the scored rows within the bound of the approximate k-th best, rescored exactly
        thr = np.float32(-np.inf) if hsize < k else hs[0] - 2 * eps
        hsize = _rescore_within(qv, Xl, rbuf, 0, abuf, nbuf, thr, k, hs, hr, rbuf)
    for a in range(hsize, k):  # padding: callers may hand over uninitialised rows
        out_r[q, a] = -1
        out_s[q, a] = -np.inf
    heap_sorted(hs, hr, hsize, out_s[q], out_r[q])
    counts[q] = hsize
    scored[q] = covered


def ivf_search_shared(Q, CS, Xl, pos_row, boff, bpos, bm, m_all, k, target, min_lists, out_r, out_s, counts, scored,
                      ind=False, sq8=None, away=None, run=None, c8=None):
    """Filter-aware IVF search, one filter for every query: the serial kernel for a
    single query (no thread-pool launch), the parallel one for batches. Arguments as
    :func:`_ivf_search_shared_impl`; ``sq8``: ``(C, step, nmax)``, 8-bit codes of the
    rows read first (with ``ind``; see :func:`_probe_lists`); ``run``: ``(lo, hi)``, the
    allowed rows are ``lo..hi-1`` (``boff``/``bpos`` the list offsets and every position);
    ``c8``: ``(blocked codes, scale, extra)`` of the centroids, scored inside the kernel
    (``CS`` then unused, see :func:`_ivf_search_shared_impl`)."""
    C, step, cnmax = _NO_SQ8 if sq8 is None else sq8
    cb, cs_, ce = _NO_C8 if c8 is None else c8
    loff, share_lo, target_hi, lists_hi = _NO_AWAY if away is None else away
    run_lo, run_hi = _NO_RUN if run is None else run
    f = _ivf_search_shared_par if _parallel(Q.shape[0]) else _ivf_search_shared_ser
    f(Q, CS, Xl, pos_row, boff, bpos, bm, m_all, k, target, min_lists, out_r, out_s, counts, scored, bool(ind), C, step,
      float(cnmax), loff, float(share_lo), int(target_hi), int(lists_hi), int(run_lo), int(run_hi), cb, cs_, ce)


def _ivf_search_shared_impl(Q, CS, Xl, pos_row, boff, bpos, bm, m_all, k, target, min_lists, out_r, out_s, counts, scored,
                            ind, C, step, cnmax, loff, share_lo, target_hi, lists_hi, run_lo, run_hi, cblk, cscale, cextra):
    """Filter-aware IVF search, one filter for every query (compiled serial and parallel
    over queries: :data:`_ivf_search_shared_ser` / :data:`_ivf_search_shared_par`).

    Q (nq, d) float32 queries, CS (nq, nlist) float32 centroid scores; the allowed rows
    either grouped by list (``boff``/``bpos`` from :func:`bucket_rows`, ``bm`` empty) or
    as a bitmap ``bm`` with ``boff`` the list offsets (see :func:`_probe_lists`);
    ``m_all`` the number of allowed rows; ``target`` (int) allowed rows to score per
    query; ``min_lists`` (int) lists to open at least. ``counts`` (nq,) int64 receives
    the number of results, ``scored`` (nq,) int64 the number of allowed rows scored.
    ``Xl``: the vectors in list order, or with ``ind`` in row order (read through
    ``pos_row``: an owner that keeps one copy of its vectors). ``loff``, ``share_lo``,
    ``target_hi``, ``lists_hi``: the budget of a query away from the allowed rows (see
    :func:`_probe_lists`; ``share_lo`` 0: none). ``run_lo``/``run_hi``: the allowed rows
    are ``run_lo..run_hi-1`` when ``run_hi > run_lo`` (the run mode of :func:`_probe_lists`).
    ``cblk``/``cscale``/``cextra``: the centroids' 8-bit codes (:func:`_centroid_row`), each
    query's centroid scores computed here (``CS`` unused; ``cblk`` empty: ``CS`` is read) —
    the same scores, bit for bit, as :func:`centroid_scores_i8`'s, without a second call.
    """
    nlist = boff.shape[0] - 1
    own = cblk.shape[0] > 0
    CSx = np.empty((Q.shape[0] if own else 0, nlist), np.float32)
    for q in nb.prange(Q.shape[0]):
        keys = np.empty(nlist, np.float32)
        vals = np.empty(nlist, np.int64)
        if own:
            _centroid_row(Q[q], cblk, cscale, cextra, CSx[q])
            _probe_lists(np.int64(q), Q, CSx, Xl, pos_row, boff, bpos, bm, m_all, k, target, min_lists, out_r, out_s, counts,
                         scored, keys, vals, ind, C, step, cnmax, loff, share_lo, target_hi, lists_hi, run_lo, run_hi)
        else:
            _probe_lists(np.int64(q), Q, CS, Xl, pos_row, boff, bpos, bm, m_all, k, target, min_lists, out_r, out_s, counts,
                         scored, keys, vals, ind, C, step, cnmax, loff, share_lo, target_hi, lists_hi, run_lo, run_hi)


_ivf_search_shared_ser, _ivf_search_shared_par = serial_and_parallel(_ivf_search_shared_impl)


@nb.njit(cache=True, parallel=True)
def ivf_search_per_query(
    Q, CS, Xl, pos_row, row_list, row_pos, starts, ends, rows, k, target, min_lists, out_r, out_s, counts, scored, ind, C, step,
    cnmax, loff, share_lo, target_hi, lists_hi
):
    """Filter-aware IVF search with one filter per query (CSR ``rows`` / ``starts`` / ``ends``).

    Each query groups its own allowed rows by list (O(m), no O(n) work), then probes
    as in :func:`ivf_search_shared`; ``C``/``step``/``cnmax`` as there (``C`` (0, 1): none);
    ``loff``/``share_lo``/``target_hi``/``lists_hi``: see :func:`_probe_lists`.
    """
    nlist = CS.shape[1]
    no_bm = np.zeros(0, np.uint64)
    for q in nb.prange(Q.shape[0]):
        boff = np.empty(nlist + 1, np.int64)
        bpos = np.empty(ends[q] - starts[q], np.int64)
        keys = np.empty(nlist, np.float32)
        vals = np.empty(nlist, np.int64)
        _bucket(rows, starts[q], ends[q], row_list, row_pos, boff, bpos)
        _probe_lists(np.int64(q), Q, CS, Xl, pos_row, boff, bpos, no_bm, ends[q] - starts[q], k, target, min_lists, out_r, out_s,
                     counts, scored, keys, vals, ind, C, step, cnmax, loff, share_lo, target_hi, lists_hi, np.int64(0),
                     np.int64(0))


@nb.njit(cache=True, fastmath=_FM)
def _gather_one(qv, X, rows, start, end, k, out_s, out_r):
    """Exact top-k of one query over ``X[rows[start:end]]``; returns the count.

    Four rows are scored per step (independent loads overlap their memory latency),
    and for short rows (d <= 128) the rows about 4 KiB ahead are prefetched, the first
    ones at once (allowed rows are scattered over the table; measured 5-25 % faster at
    d = 64, and 10-20 % for a filter of 100-200 rows with the first ones at once).
    """
    d = qv.shape[0]
    Xf = X.reshape(-1)
    ahead = max(4, (1024 // max(d, 1)) // 4 * 4)  # rows ~4 KiB ahead, a multiple of 4
    pf = d <= 128  # long rows are streamed by the hardware prefetcher; hints only cost there
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    size = 0
    if pf:  # the first rows at once (a short filter is all cold misses)
        for u in range(start, min(end, start + ahead)):
            base = rows[u] * d
            for t in range(0, d, 16):
                prefetch(Xf, base + t)
    j = start
    while j + 4 <= end:
        if pf and j + ahead + 4 <= end:
            for u in range(j + ahead, j + ahead + 4):
                base = rows[u] * d
                for t in range(0, d, 16):  # one prefetch per 64-byte line
                    prefetch(Xf, base + t)
        r0, r1, r2, r3 = rows[j], rows[j + 1], rows[j + 2], rows[j + 3]
        x0, x1, x2, x3 = X[r0], X[r1], X[r2], X[r3]
        a0, a1, a2, a3 = _dot4(qv, x0, x1, x2, x3)
        if size < k or a0 >= hs[0]:
            size = heap_push(hs, hr, size, k, a0, r0)
        if size < k or a1 >= hs[0]:
            size = heap_push(hs, hr, size, k, a1, r1)
        if size < k or a2 >= hs[0]:
            size = heap_push(hs, hr, size, k, a2, r2)
        if size < k or a3 >= hs[0]:
            size = heap_push(hs, hr, size, k, a3, r3)
        j += 4
    while j < end:
        r = rows[j]
        acc = _dot1(qv, X[r])
        if size < k or acc >= hs[0]:
            size = heap_push(hs, hr, size, k, acc, r)
        j += 1
    for a in range(k):
        out_r[a] = -1
        out_s[a] = -np.inf
    heap_sorted(hs, hr, size, out_s, out_r)
    return size


@nb.njit(cache=True, fastmath=_FM)
def _gather_one_half(qv, X, H, rmax, nmax, rows, start, end, k, out_s, out_r):
    """:func:`_gather_one` reading a half-precision copy first; the same result exactly.

    ``H`` (n, d) uint16 holds ``X`` rounded to IEEE half precision; every element
    differs from ``X`` by at most ``rmax``, and every row of ``X`` has L2 norm at most
    ``nmax``. Pass 1 scores every allowed row from ``H`` (half the bytes: long rows are
    bandwidth-bound) and keeps the approximate k-th best ``A``; an approximate score
    ``a`` is within ``eps = ||q||_1 rmax + 2.2 γ_d ||q||_2 nmax`` of the float32 score
    this module computes (γ_d = d u / (1 - d u), u = 2^-24, covers the rounding of
    either sum in any order), so only rows with ``a >= A - 2 eps`` can reach the exact
    top-k (ties included). Pass 2 rescores those few from ``X`` into the usual heap.

    Prefetches: the half rows ``4096 // d`` rows (~8 KiB) ahead (d <= 512; longer rows are streamed by the
    hardware prefetcher) and the first ones at once, and pass 2's rows before it scores
    them (a short filter's rows are all cold misses: 8.4 -> 4.8 us for 60 of 60,000 rows at
    d = 256, 14.8 -> 12.9 us at d = 768; neutral for thousands of rows).
    """
    d = qv.shape[0]
    Hf = H.reshape(-1)
    m = end - start
    l1 = np.float32(0.0)
    l2 = np.float32(0.0)
    for t in range(d):
        l1 += abs(qv[t])
        l2 += qv[t] * qv[t]
    u = d * 2.0 ** -24
    eps = np.float32(np.float64(l1) * rmax + 2.2 * u / (1.0 - u) * np.sqrt(np.float64(l2)) * nmax)
    # half rows 4096 // d rows ahead are prefetched, the first ones at once
    ahead = max(4, (4096 // max(d, 1)) // 4 * 4)
    pf = d <= 512
    for j in range(start, min(end, start + ahead)):
        b = rows[j] * d
        for t in range(0, d, 32):
            prefetch(Hf, b + t)
    buf = np.empty(m, np.float32)
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    size = 0
    j = start
    while j + 4 <= end:
        if pf and j + ahead + 4 <= end:
            for uu in range(j + ahead, j + ahead + 4):
                b = rows[uu] * d
                for t in range(0, d, 32):
                    prefetch(Hf, b + t)
        b0, b1, b2, b3 = rows[j] * d, rows[j + 1] * d, rows[j + 2] * d, rows[j + 3] * d
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for t in range(d):
            qt = qv[t]
            a0 += qt * load_f32(Hf, b0 + t)
            a1 += qt * load_f32(Hf, b1 + t)
            a2 += qt * load_f32(Hf, b2 + t)
            a3 += qt * load_f32(Hf, b3 + t)
        i = j - start
        buf[i] = a0
        buf[i + 1] = a1
        buf[i + 2] = a2
        buf[i + 3] = a3
        if size < k or a0 > hs[0]:
            size = heap_push(hs, hr, size, k, a0, 0)
        if size < k or a1 > hs[0]:
            size = heap_push(hs, hr, size, k, a1, 0)
        if size < k or a2 > hs[0]:
            size = heap_push(hs, hr, size, k, a2, 0)
        if size < k or a3 > hs[0]:
            size = heap_push(hs, hr, size, k, a3, 0)
        j += 4
    while j < end:
        b0 = rows[j] * d
        a0 = np.float32(0.0)
        for t in range(d):
            a0 += qv[t] * load_f32(Hf, b0 + t)
        buf[j - start] = a0
        if size < k or a0 > hs[0]:
            size = heap_push(hs, hr, size, k, a0, 0)
        j += 1
    thr = np.float32(-np.inf) if size < k else hs[0] - 2 * eps
    size = _rescore_within(qv, X, rows, start, buf, m, thr, k, hs, hr, np.empty(m, np.int64))
    for a in range(k):
        out_r[a] = -1
        out_s[a] = -np.inf
    heap_sorted(hs, hr, size, out_s, out_r)
    return size


@nb.njit(cache=True, fastmath=_FM)
def _gather_one_sq8(qv, X, C, step, nmax, rows, start, end, k, out_s, out_r):
    """:func:`_gather_one` reading the 8-bit codes first; the same result exactly.

    ``C`` (n, d) uint8 / ``step`` (d,) float32 are the graph walk's scalar codes
    (:func:`gsu.index._graph_kernels.sq8_encode`: ``X[:, t] ≈ vmin[t] + step[t] · C[:, t]``
    within ``step[t] / 2``), ``nmax`` bounds the L2 norm of every row of ``X``. Pass 1
    scores every allowed row from its code (a quarter of the bytes of a float32 row: one
    64-byte line at d = 64), ``a = Σ q_t step_t C_t``, and keeps the approximate k-th best
    ``A``. ``a + q · vmin`` is within ``eps`` of the float32 score this module computes
    (quantisation ``Σ |q_t| step_t / 2``, the rounding of ``a`` and of the float32 score,
    see the code), so a row with ``a < A - 2 eps`` scores strictly below the k-th best and
    is skipped; pass 2 rescores the rest (a few dozen rows, prefetched) from ``X``.
    Measured against the half-precision path, cold rows, 2,000 of 60,000-200,000 rows:
    1.5-1.8x faster at d = 64-384, 1.3x at d = 768; slower at d = 32 (the caller's choice).
    """
    d = qv.shape[0]
    Cf = C.reshape(-1)
    m = end - start
    qp = np.empty(d, np.float32)
    eps = _sq8_query(qv, step, nmax, qp)
    ahead = max(4, (4096 // max(d, 1)) // 4 * 4)
    for j in range(start, min(end, start + ahead)):
        b = rows[j] * d
        for t in range(0, d, 64):
            prefetch(Cf, b + t)
    buf = np.empty(m, np.float32)
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    size = 0
    j = start
    while j + 4 <= end:
        if j + ahead + 4 <= end:
            for uu in range(j + ahead, j + ahead + 4):
                b = rows[uu] * d
                for t in range(0, d, 64):
                    prefetch(Cf, b + t)
        c0, c1, c2, c3 = C[rows[j]], C[rows[j + 1]], C[rows[j + 2]], C[rows[j + 3]]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for t in range(d):
            qt = qp[t]
            a0 += qt * np.float32(c0[t])
            a1 += qt * np.float32(c1[t])
            a2 += qt * np.float32(c2[t])
            a3 += qt * np.float32(c3[t])
        i = j - start
        buf[i] = a0
        buf[i + 1] = a1
        buf[i + 2] = a2
        buf[i + 3] = a3
        if size < k or a0 > hs[0]:
            size = heap_push(hs, hr, size, k, a0, 0)
        if size < k or a1 > hs[0]:
            size = heap_push(hs, hr, size, k, a1, 0)
        if size < k or a2 > hs[0]:
            size = heap_push(hs, hr, size, k, a2, 0)
        if size < k or a3 > hs[0]:
            size = heap_push(hs, hr, size, k, a3, 0)
        j += 4
    while j < end:
        c0 = C[rows[j]]
        a0 = np.float32(0.0)
        for t in range(d):
            a0 += qp[t] * np.float32(c0[t])
        buf[j - start] = a0
        if size < k or a0 > hs[0]:
            size = heap_push(hs, hr, size, k, a0, 0)
        j += 1
    thr = np.float32(-np.inf) if size < k else hs[0] - 2 * eps
    size = _rescore_within(qv, X, rows, start, buf, m, thr, k, hs, hr, np.empty(m, np.int64))
    for a in range(k):
        out_r[a] = -1
        out_s[a] = -np.inf
    heap_sorted(hs, hr, size, out_s, out_r)
    return size


@nb.njit(cache=True, inline="always")
def _gather_any(qv, X, H, rmax, nmax, C, step, cnmax, rows, start, end, k, out_s, out_r):
    if C.shape[0] > 0:
        return _gather_one_sq8(qv, X, C, step, cnmax, rows, start, end, k, out_s, out_r)
    if H.shape[0] > 0:
        return _gather_one_half(qv, X, H, rmax, nmax, rows, start, end, k, out_s, out_r)
    return _gather_one(qv, X, rows, start, end, k, out_s, out_r)


_NO_HALF = (np.zeros((0, 1), np.uint16), 0.0, 0.0)
_NO_SQ8 = (np.zeros((0, 1), np.uint8), np.zeros(1, np.float32), 0.0)
#: no budget for queries away from the allowed rows (see :func:`_probe_lists`)
_NO_AWAY = (np.zeros(1, np.int64), 0.0, 0, 0)
#: no run (see :func:`_probe_lists`): the allowed rows are given otherwise
_NO_RUN = (0, 0)
#: no centroid codes: the IVF kernels read the centroid scores they are given
_NO_C8 = (np.zeros(0, np.int8), np.zeros(0, np.float32), np.zeros(0, np.float32))
#: the centroid scores of a kernel that scores the centroids itself (``c8`` given)
_NO_CS = np.zeros((0, 0), np.float32)


def half_copy(X: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, float, float] | bool:
    """``X`` rounded to IEEE half precision as uint16 bits, with ``rmax`` (largest
    element-wise rounding error) and ``nmax`` (largest row norm), both rounded up; or
    ``False`` when some value does not fit half precision: the ``half`` argument of
    :func:`gather_topk_ip_sel` / :func:`gather_topk_ip_shared`."""
    n, d = X.shape
    H = np.empty((n, d), np.uint16)
    rmax = nmax = 0.0
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            x = np.asarray(X[s : s + chunk], dtype=np.float64)
            h = x.astype(np.float16)
            if not np.isfinite(h).all():
                return False
            H[s : s + chunk] = h.view(np.uint16)
            rmax = max(rmax, float(np.abs(x - h.astype(np.float64)).max()))
            nmax = max(nmax, float(np.sqrt((x * x).sum(axis=1)).max()))
    return H, rmax * (1 + 2.0**-20), nmax * (1 + 2.0**-20)


@nb.njit(cache=True)
def max_row_norm(X):
    """The largest L2 norm of a row of ``X`` (n, d), accumulated in float64."""
    best = 0.0
    for i in range(X.shape[0]):
        acc = 0.0
        for t in range(X.shape[1]):
            v = np.float64(X[i, t])
            acc += v * v
        best = max(best, acc)
    return np.sqrt(best)


def gather_topk_ip_sel(Q, X, which, starts, ends, rows, k, out_r, out_s, counts, half=None, sq8=None):
    """Exact top-k over allowed rows for queries ``which``: serial kernel for a single
    query, parallel for more. Arguments as :func:`_gather_topk_ip_sel_impl`; ``half``:
    ``(H, rmax, nmax)`` to read a half-precision copy first (:func:`_gather_one_half`);
    ``sq8``: ``(C, step, nmax)`` to read 8-bit codes first (:func:`_gather_one_sq8`; taken
    over ``half``)."""
    H, rmax, nmax = _NO_HALF if half is None else half
    C, step, cnmax = _NO_SQ8 if sq8 is None else sq8
    f = _gather_topk_ip_sel_par if _parallel(which.shape[0]) else _gather_topk_ip_sel_ser
    f(Q, X, H, rmax, nmax, C, step, cnmax, which, starts, ends, rows, k, out_r, out_s, counts)


def _gather_topk_ip_sel_impl(Q, X, H, rmax, nmax, C, step, cnmax, which, starts, ends, rows, k, out_r, out_s, counts):
    """Exact inner-product top-k over allowed rows for the query subset ``which``
    (compiled serial and parallel over queries).

    Q (nq, d) float32, X (n, d) float32 in row order; the allowed rows of query q
    are ``rows[starts[q]:ends[q]]``. Only queries ``which`` (int64) are computed;
    ``out_r``/``out_s``/``counts`` are indexed by the original query number. ``H``
    (n, d) uint16 half-precision copy of X, or (0, 1) for none; ``rmax``/``nmax``
    as :func:`_gather_one_half`; ``C``/``step``/``cnmax``: 8-bit codes of X (``C`` (0, 1)
    for none) as :func:`_gather_one_sq8`.
    """
    for i in nb.prange(which.shape[0]):
        q = which[i]
        counts[q] = _gather_any(Q[q], X, H, rmax, nmax, C, step, cnmax, rows, starts[q], ends[q], k, out_s[q], out_r[q])


_gather_topk_ip_sel_ser, _gather_topk_ip_sel_par = serial_and_parallel(_gather_topk_ip_sel_impl)


def gather_topk_ip_shared(Q, X, rows, k, out_r, out_s, counts, half=None, sq8=None):
    """Exact top-k of every query over the same allowed ``rows``: serial kernel for a
    single query, parallel for more. Arguments as :func:`_gather_topk_ip_shared_impl`;
    ``half`` and ``sq8`` as :func:`gather_topk_ip_sel`."""
    H, rmax, nmax = _NO_HALF if half is None else half
    C, step, cnmax = _NO_SQ8 if sq8 is None else sq8
    f = _gather_topk_ip_shared_par if _parallel(Q.shape[0]) else _gather_topk_ip_shared_ser
    f(Q, X, H, rmax, nmax, C, step, cnmax, rows, k, out_r, out_s, counts)


def _gather_topk_ip_shared_impl(Q, X, H, rmax, nmax, C, step, cnmax, rows, k, out_r, out_s, counts):
    """Exact inner-product top-k of every query over the same allowed ``rows`` (compiled
    serial and parallel over queries).

    Writes ``out_r``/``out_s`` (nq, k) completely (padding -1 / -inf) and ``counts``;
    ``H``/``rmax``/``nmax`` and ``C``/``step``/``cnmax`` as :func:`_gather_topk_ip_sel_impl`.
    """
    for q in nb.prange(Q.shape[0]):
        counts[q] = _gather_any(Q[q], X, H, rmax, nmax, C, step, cnmax, rows, np.int64(0), rows.shape[0], k, out_s[q], out_r[q])


_gather_topk_ip_shared_ser, _gather_topk_ip_shared_par = serial_and_parallel(_gather_topk_ip_shared_impl)
