"""numba kernels for random-hyperplane hashing (SimHash): bit packing,
τ-bit bucket signatures, popcount Hamming distances and counting top-k selection.

Conventions shared by every kernel:

- Projections on the hyperplanes are computed outside (``gsu.index.simhash.project``:
  BLAS on fixed-size blocks); the kernels here turn them into bits and signatures.
- Bit ``j`` (hash function j) is 1 when its projection is > 0 (strictly). It lives in
  word ``j // 64``, bit ``j % 64`` of a row of uint64 words; bits past ``m`` are 0.
- Hamming top-k returns *rows* best-first ordered by (distance, row): ties go to the
  smaller row. Distances are small integers in [0, n_bits], so the selection is a
  histogram of distances, a threshold, and one ordered collection pass — no sort.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload
from llvmlite import ir
from numba.extending import intrinsic

__all__ = [
    "popcount64",
    "pack_bits",
    "bucket_signatures",
    "hamming_topk_ranges",
]


@intrinsic
def _ctpop_u64(typingctx, x):
    """LLVM ``ctpop`` on a uint64 (compiles to POPCNT / VPOPCNTQ on the host CPU)."""
    if x != types.uint64:
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _cttz_u64(typingctx, x):
    """LLVM ``cttz`` on a uint64 (index of the lowest set bit; TZCNT)."""
    if x != types.uint64:
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@nb.njit(cache=True, inline="always")
def lowest_bit64(x):
    """Index of the lowest set bit of a non-zero uint64 (LLVM cttz intrinsic)."""
    return _cttz_u64(x)


@nb.njit(cache=True, inline="always")
def popcount64(x):
    """Number of set bits of a uint64 (LLVM ctpop intrinsic)."""
    return _ctpop_u64(x)


@nb.njit(cache=True)
def pack_bits(P, out):
    """Pack the signs of projections ``P`` (n, m) float32 into ``out`` (n, ceil(m/64)) uint64 (bit j = P[:, j] > 0)."""
    n, m = P.shape
    w = out.shape[1]
    for i in range(n):
        for a in range(w):
            word = np.uint64(0)
            for j in range(a * 64, min(m, a * 64 + 64)):
                word |= np.uint64(P[i, j] > 0) << np.uint64(j - a * 64)  # branch-free: signs are coin flips
            out[i, a] = word


def _bucket_rows(P, tau_t, out):
    """Plain-numpy twin of the compiled kernel below (numba calls the overload instead)."""
    tau = len(tau_t)
    S = P.shape[1] // tau
    acc = np.zeros((P.shape[0], S), np.int64)
    for t in range(tau):
        acc |= (P[:, t : S * tau : tau] > 0).astype(np.int64) << t
    out[:] = acc


@overload(_bucket_rows, jit_options={"cache": True})
def _bucket_rows_impl(P, tau_t, out):
    if not isinstance(tau_t, types.UniTuple):
        return None
    TAU = tau_t.count  # a compile-time constant: the stride-τ reads vectorise

    def impl(P, tau_t, out):
        n, m = P.shape
        S = m // TAU
        for i in range(n):
            row = P[i]
            for s in range(S):
                bk = np.int32(0)
                for t in range(TAU):
                    bk |= np.int32(row[s * TAU + t] > 0) << t  # branch-free; τ <= 16 bits
                out[i, s] = bk

    return impl


@nb.njit(cache=True)
def _bucket_signatures(P, tau_t, out):
    _bucket_rows(P, tau_t, out)


def bucket_signatures(P: np.ndarray, tau: int, out: np.ndarray) -> None:
    """τ-bit bucket signatures from projections ``P`` (n, m) float32 into ``out`` (n, m // τ) (any int dtype).

    Signature s of a row is the integer whose bit b is the SimHash bit (``P > 0``) of
    hash function ``s * τ + b`` (SDIM's s-th hash signature); m must be a multiple of τ.
    τ reaches the kernel as the length of a tuple, so it is compiled in as a constant
    (one specialisation per τ, dispatched on the type at no cost) and the stride-τ
    reads vectorise: about 2-3x faster than with τ a runtime value.
    """
    _bucket_signatures(P, (0,) * int(tau), out)


_BLOCK = 32  # rows per block in the top-k scan; a block is compacted element-wise only when its minimum qualifies


@nb.njit(cache=True, inline="always")
def _one_dist(q, CT, r):
    acc = np.uint64(0)
    for a in range(CT.shape[0]):
        acc += popcount64(q[a] ^ CT[a, r])
    return np.int64(acc)


@nb.njit(cache=True, fastmath=True)
def _collect(q, CT, lo, n, rows, use_rows, thr, blk, cpos, cd):
    """Every row of the range with distance <= thr, in row order, into cpos/cd; returns how many.

    Rows go in blocks of 64: the block's distances are computed in one fused loop
    (xor, popcount, min — vectorised by LLVM; one loop per word count, w = 1..4 covers
    n_bits <= 256) and the block is read element-wise only when its minimum is <= thr.
    """
    # views that start at 0 let LLVM prove the indices non-negative (no wraparound
    # checks), which is what makes the block loops vectorise
    w = CT.shape[0]
    hi = lo + n
    c0 = CT[0, lo:hi]
    c1 = CT[1, lo:hi] if w > 1 else c0
    c2 = CT[2, lo:hi] if w > 2 else c0
    c3 = CT[3, lo:hi] if w > 3 else c0
    rv = rows[lo:hi] if use_rows else rows
    q0 = q[0]
    q1 = q[1] if w > 1 else q[0]
    q2 = q[2] if w > 2 else q[0]
    q3 = q[3] if w > 3 else q[0]
    nc = 0
    nfull = n - n % _BLOCK
    for base in range(0, nfull, _BLOCK):
        mn = np.int64(1 << 30)
        if use_rows:
            for j in range(_BLOCK):
                v = _one_dist(q, CT, rv[base + j])
                blk[j] = v
                mn = min(mn, v)
        elif w == 1:
            for j in range(_BLOCK):
                v = np.int64(popcount64(q0 ^ c0[base + j]))
                blk[j] = v
                mn = min(mn, v)
        elif w == 2:
            for j in range(_BLOCK):
                r = base + j
                v = np.int64(popcount64(q0 ^ c0[r]) + popcount64(q1 ^ c1[r]))
                blk[j] = v
                mn = min(mn, v)
        elif w == 3:
            for j in range(_BLOCK):
                r = base + j
                v = np.int64(popcount64(q0 ^ c0[r]) + popcount64(q1 ^ c1[r]) + popcount64(q2 ^ c2[r]))
                blk[j] = v
                mn = min(mn, v)
        else:
            for j in range(_BLOCK):
                r = base + j
                v = np.int64(popcount64(q0 ^ c0[r]) + popcount64(q1 ^ c1[r]) + popcount64(q2 ^ c2[r]) + popcount64(q3 ^ c3[r]))
                blk[j] = v
                mn = min(mn, v)
        if mn <= thr:
            # bitmask of the hits (a vectorised compare), then visit only the set bits
            mask = np.uint64(0)
            for j in range(_BLOCK):
                mask |= np.uint64(blk[j] <= thr) << np.uint64(j)
            while mask:
                j = np.int64(lowest_bit64(mask))
                mask &= mask - np.uint64(1)
                cpos[nc] = rv[base + j] if use_rows else lo + base + j
                cd[nc] = blk[j]
                nc += 1
    for i in range(nfull, n):
        r = rv[i] if use_rows else lo + i
        dv = _one_dist(q, CT, r)
        if dv <= thr:
            cpos[nc] = r
            cd[nc] = dv
            nc += 1
    return nc


@nb.njit(cache=True)
def _topk_one(q, CT, lo, hi, rows, use_rows, k, n_bits, hist, blk, cpos, cd, out_pos, out_dist):
    """Hamming top-k of one query code ``q`` (w,) over rows ``lo..hi`` of ``CT`` (or ``rows[lo:hi]``).

    1. Short range (under ~1,000 rows, or k large against the range): every row is a
       candidate. Otherwise guess a distance a little above the k-th from the histogram
       of a strided sample (about 4n/k rows), then
    2. one blocked scan keeps every row whose distance is <= the guess (a block whose
       minimum is above it is skipped after its vectorised distance computation).
       If fewer than k rows were kept, the guess was low: raise it and scan again.
    3. Exact selection among the kept rows: a histogram of their (small integer)
       distances gives the k-th distance and the segment of each distance; one pass in
       row order drops each row into its final slot, so results are ordered by
       (distance, row) with no sort.
    Returns the number of results written (min(k, hi - lo)).
    """
    n = hi - lo
    kk = min(k, n)
    if kk == 0:
        return 0
    # sample about 4n/k rows (~8 expected below the 2k-th distance), at least 512
    stride = max(1, min(max(kk // 4, 16), n // 512))
    if stride == 1:
        # short range: every row is a candidate (distances still computed block-wise)
        thr = n_bits
        nc = _collect(q, CT, lo, n, rows, use_rows, thr, blk, cpos, cd)
    else:
        for b in range(n_bits + 1):
            hist[b] = 0
        for i in range(0, n, stride):
            r = rows[lo + i] if use_rows else lo + i
            hist[_one_dist(q, CT, r)] += 1
        # aim at about 2k candidates (one scan nearly always suffices)
        thr = n_bits
        cum = 0
        for b in range(n_bits + 1):
            cum += hist[b] * stride
            if cum >= 2 * kk:
                thr = b
                break
        while True:
            nc = _collect(q, CT, lo, n, rows, use_rows, thr, blk, cpos, cd)
            if nc >= kk or thr >= n_bits:
                break
            thr = min(thr + 1, n_bits)
    # exact selection among the candidates (they are in row order)
    for b in range(thr + 1):
        hist[b] = 0
    for i in range(nc):
        hist[cd[i]] += 1
    kth = thr
    cum = 0
    for b in range(thr + 1):
        if cum + hist[b] >= kk:
            kth = b
            break
        cum += hist[b]
    start = 0
    for b in range(kth):  # hist[b] becomes the fill pointer of distance b's segment
        h = hist[b]
        hist[b] = start
        start += h
    hist[kth] = start
    # branch-free placement: a row not taken is written to the dump slot kk
    # (out_pos / out_dist have k + 1 slots) and leaves the fill pointers unchanged
    for i in range(nc):
        dv = cd[i]
        f = hist[dv]
        take = (dv < kth) | ((dv == kth) & (f < kk))
        slot = f if take else kk
        out_pos[slot] = cpos[i]
        out_dist[slot] = dv
        hist[dv] = f + np.int64(take)
    return kk


@nb.njit(cache=True)
def _topk_chunk(Q, CT, starts, ends, rows, use_rows, k, n_bits, lo_q, hi_q, maxlen, out_pos, out_dist, counts):
    """Queries ``lo_q..hi_q`` of :func:`hamming_topk_ranges`, one after the other (scratch allocated once)."""
    hist = np.empty(n_bits + 1, np.int64)
    blk = np.empty(_BLOCK, np.int64)
    cpos = np.empty(maxlen + _BLOCK, np.int64)
    cd = np.empty(maxlen + _BLOCK, np.int64)
    pos = np.empty(k + 1, np.int64)
    dist = np.empty(k + 1, np.int64)
    for q in range(lo_q, hi_q):
        # the constant use_rows argument lets LLVM drop the other branch from the inlined scan
        if use_rows:
            cnt = _topk_one(Q[q], CT, starts[q], ends[q], rows, True, k, n_bits, hist, blk, cpos, cd, pos, dist)
        else:
            cnt = _topk_one(Q[q], CT, starts[q], ends[q], rows, False, k, n_bits, hist, blk, cpos, cd, pos, dist)
        for j in range(cnt):
            out_pos[q, j] = pos[j]
            out_dist[q, j] = np.int32(dist[j])
        counts[q] = cnt


@nb.njit(cache=True, parallel=True)
def hamming_topk_ranges(Q, CT, starts, ends, rows, use_rows, k, n_bits, nchunk, out_pos, out_dist, counts):
    """Batched Hamming top-k.

    Q (nq, w) uint64 query codes; CT (w, n) uint64 codes stored *word-major* (row r's
    words are ``CT[:, r]``) so that each word is a contiguous vector. Query q ranks rows
    ``starts[q]..ends[q]`` of CT, or, when ``use_rows``, the rows ``rows[starts[q]:ends[q]]``
    (sorted ascending, so ties go to the smaller row). Writes best-first rows into
    ``out_pos`` (nq, k) int64 and distances into ``out_dist`` (nq, k) int32 (caller
    pre-fills -1 padding) and the number of results into ``counts`` (nq,) int64.
    Parallel over ``nchunk`` blocks of queries.
    """
    nq = Q.shape[0]
    maxlen = 0
    for q in range(nq):
        ln = ends[q] - starts[q]
        if ln > maxlen:
            maxlen = ln
    for c in nb.prange(nchunk):
        _topk_chunk(Q, CT, starts, ends, rows, use_rows, k, n_bits, c * nq // nchunk, (c + 1) * nq // nchunk, maxlen,
                    out_pos, out_dist, counts)


@nb.njit(cache=True)
def hamming_topk_serial(Q, CT, starts, ends, rows, use_rows, k, n_bits, out_pos, out_dist, counts):
    """:func:`hamming_topk_ranges` on the calling thread only (no parallel region to enter)."""
    nq = Q.shape[0]
    maxlen = 0
    for q in range(nq):
        ln = ends[q] - starts[q]
        if ln > maxlen:
            maxlen = ln
    _topk_chunk(Q, CT, starts, ends, rows, use_rows, k, n_bits, np.int64(0), nq, maxlen, out_pos, out_dist, counts)
