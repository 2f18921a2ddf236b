"""``SimHashIndex``: random-hyperplane signatures (SimHash), Hamming top-k and τ-bit buckets.

SimHash (Charikar 2002) draws m Gaussian hyperplanes; bit j of a vector's code is 1
when its projection on hyperplane j is positive. Two vectors at angle θ agree on each
bit with probability 1 − θ/π, so the Hamming distance between codes estimates the
angle, and a group of τ bits (a *signature*) collides with probability (1 − θ/π)^τ.
Two GSUs of long-sequence CTR models use this instead of inner products:

- **ETA** (Chen et al. 2021, "End-to-End User Behavior Retrieval in Click-Through Rate
  Prediction Model") keeps the k behaviors whose code is nearest the target's in
  Hamming distance: :func:`hamming_topk` / :meth:`SimHashIndex.search`.
- **SDIM** (Cao et al. 2022, "Sampling Is All You Need on Modeling Long-Term User
  Behaviors for CTR Prediction") groups its m hash functions into m/τ signatures of τ
  bits and aggregates the behaviors that share the target's bucket:
  :meth:`SimHashIndex.signatures` here, the per-user tables in
  :class:`gsu.retrieval.BehaviorSequenceEncoder`.

Codes are packed into ``n_words = ceil(n_bits / 64)`` uint64 words per vector (bit j in
word j // 64, bit j % 64; bits past ``n_bits`` are 0). Scores of a Hamming search are
``-distance`` as float32 (higher is better), ties broken by the smaller row.
"""

from __future__ import annotations

import logging
from typing import Any

import numba
import numpy as np

from gsu._validate import as_ids, as_matrix, check_k, check_positive_int
from gsu.index import _hamming
from gsu.index._mutable import MutableIndex
from gsu.index.base import register_index
from gsu.index.result import SearchResult
from gsu.index.filters import IdMap

log = logging.getLogger(__name__)

__all__ = ["SimHashIndex", "hamming_topk", "gaussian_hyperplanes", "project", "MAX_BITS"]

MAX_BITS = 256
"""Largest supported number of hash functions (bits) per code."""


def check_n_bits(n_bits: Any, *, name: str = "n_bits") -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer in [1, {MAX_BITS}], got {n_bits!r}")
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"{name}: expected an integer in [1, {MAX_BITS}], got {n_bits}")
    return int(n_bits)


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def gaussian_hyperplanes(dim: int, n_bits: int, *, seed: int) -> np.ndarray:
    """The SimHash hyperplanes: (n_bits, dim) float32 standard normal, from ``np.random.default_rng(seed)``.

    Shared by :class:`SimHashIndex` and :class:`gsu.retrieval.BehaviorSequenceEncoder`,
    so that the same ``(dim, n_bits, seed)`` gives the same hash functions in both.
    """
    dim = check_positive_int(dim, name="dim")
    n_bits = check_n_bits(n_bits)
    rng = np.random.default_rng(check_seed(seed))
    return rng.standard_normal((n_bits, dim), dtype=np.float32)


def n_words_for(n_bits: int) -> int:
    """uint64 words per code: ``ceil(n_bits / 64)``."""
    return (int(n_bits) + 63) // 64


_PROJ_ROWS = 1024  # every projection is one sgemm of this many rows (zero-padded): same shape, same arithmetic
_CHUNK_ROWS = 16 * _PROJ_ROWS  # rows hashed per chunk (bounds the projection scratch)


def project(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Projections ``x @ h.T`` (n, m) float32 of rows ``x`` (n, d) on hyperplanes ``h`` (m, d).

    Computed by BLAS sgemm on blocks of exactly 1,024 rows (the last one zero-padded),
    so every row goes through a product of the same shape: its projections — hence its
    bits — do not depend on the batch it arrives in (alone, in a request, offline).
    """
    n, d = x.shape
    ht = np.ascontiguousarray(h.T)
    out = np.empty((n, h.shape[0]), np.float32)
    full = n - n % _PROJ_ROWS
    for s in range(0, full, _PROJ_ROWS):
        np.matmul(x[s : s + _PROJ_ROWS], ht, out=out[s : s + _PROJ_ROWS])
    if full < n:
        buf = np.zeros((_PROJ_ROWS, d), np.float32)
        buf[: n - full] = x[full:]
        out[full:] = (buf @ ht)[: n - full]
    return out


def hash_bits(x: np.ndarray, h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Packed SimHash codes of ``x`` (n, d) float32 into ``out`` (n, ceil(m/64)) uint64."""
    for s in range(0, x.shape[0], _CHUNK_ROWS):
        _hamming.pack_bits(project(x[s : s + _CHUNK_ROWS], h), out[s : s + _CHUNK_ROWS])
    return out


def hash_signatures(x: np.ndarray, h: np.ndarray, tau: int, out: np.ndarray) -> np.ndarray:
    """τ-bit bucket signatures of ``x`` (n, d) float32 into ``out`` (n, m // τ) (any int dtype)."""
    for s in range(0, x.shape[0], _CHUNK_ROWS):
        _hamming.bucket_signatures(project(x[s : s + _CHUNK_ROWS], h), tau, out[s : s + _CHUNK_ROWS])
    return out


def _check_codes(codes: Any, *, name: str, n_bits: int | None = None, n_words: int | None = None) -> np.ndarray:
    """``codes`` as a C-contiguous (n, n_words) uint64 array; padding bits past n_bits must be 0."""
    arr = np.asarray(codes)
    if arr.ndim == 1 and n_words is not None and arr.shape[0] == n_words:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, n_words) of uint64 codes, got shape {arr.shape}")
    if arr.dtype != np.uint64:
        if np.issubdtype(arr.dtype, np.integer) and (arr.size == 0 or arr.min() >= 0):
            arr = arr.astype(np.uint64)
        else:
            raise ValueError(f"{name}: expected uint64 packed codes, got dtype {arr.dtype}")
    if n_words is not None and arr.shape[1] != n_words:
        raise ValueError(f"{name}: expected {n_words} uint64 word(s) per code (n_bits={n_bits}), got shape {arr.shape}")
    if arr.shape[1] == 0 or arr.shape[1] > MAX_BITS // 64:
        raise ValueError(f"{name}: expected 1 to {MAX_BITS // 64} uint64 words per code, got {arr.shape[1]}")
    arr = np.ascontiguousarray(arr)
    if n_bits is not None and n_bits % 64 and arr.shape[0]:
        pad = ~np.uint64((1 << (n_bits % 64)) - 1)
        if np.any(arr[:, -1] & pad):
            raise ValueError(f"{name}: codes have bits set past n_bits={n_bits} (padding bits must be 0)")
    return arr


def _topk_codes(
    q: np.ndarray, ct: np.ndarray, k: int, n_bits: int, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, use_rows: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the Hamming top-k kernel: returns (rows (nq, k) int64, dist (nq, k) int32, counts (nq,) int64)."""
    nq = q.shape[0]
    out_pos = np.full((nq, k), -1, dtype=np.int64)
    out_dist = np.full((nq, k), -1, dtype=np.int32)
    counts = np.zeros(nq, dtype=np.int64)
    if nq == 0:
        return out_pos, out_dist, counts
    threads = numba.get_num_threads()
    if threads == 1 or nq == 1:
        _hamming.hamming_topk_serial(q, ct, starts, ends, rows, use_rows, k, n_bits, out_pos, out_dist, counts)
    else:
        _hamming.hamming_topk_ranges(q, ct, starts, ends, rows, use_rows, k, n_bits, min(nq, threads), out_pos, out_dist, counts)
    return out_pos, out_dist, counts


def hamming_topk(
    query_codes: Any, codes: Any, k: int, *, rows: Any = None, n_bits: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k of packed codes — ETA's per-request retrieval primitive.

    Args:
        query_codes: (T, w) uint64 packed codes of the targets (ETA's target hashes).
        codes: (L, w) uint64 packed codes of the behaviors (one row per position of the
            user's sequence).
        k: results per target (ETA's k, the number of retrieved behaviors).
        rows: optional 1-D int array of allowed positions into ``codes`` (e.g. the
            behaviors before a time cut); only these are ranked.
        n_bits: number of meaningful bits (default ``64 * w``); distances lie in
            [0, n_bits].

    Returns:
        ``(positions, dist)``: positions (T, k) int64 into ``codes``, best first,
        ordered by (distance, position) — ties go to the smaller position — and -1
        where fewer than k positions exist; dist (T, k) int32 Hamming distances, -1
        where ``positions == -1``.

    Cost: one pass over the codes per target (xor + popcount, vectorised in blocks of
    64 rows), a small sampled histogram, and a counting selection — no sort.
    """
    k = check_k(k)
    cq = _check_codes(query_codes, name="query_codes")
    w = cq.shape[1]
    if n_bits is None:
        n_bits = 64 * w
    n_bits = check_n_bits(n_bits)
    if n_words_for(n_bits) != w:
        raise ValueError(f"n_bits={n_bits} needs {n_words_for(n_bits)} word(s) per code, but query_codes have {w}")
    cq = _check_codes(cq, name="query_codes", n_bits=n_bits, n_words=w)
    c = _check_codes(codes, name="codes", n_bits=n_bits, n_words=w)
    ct = np.ascontiguousarray(c.T)
    nq = cq.shape[0]
    if rows is None:
        starts = np.zeros(nq, np.int64)
        ends = np.full(nq, c.shape[0], np.int64)
        return _topk_codes(cq, ct, k, n_bits, starts, ends, np.zeros(0, np.int64), False)[:2]
    r = np.unique(as_ids(rows, name="rows"))
    if r.size and (r[0] < 0 or r[-1] >= c.shape[0]):
        raise ValueError(f"rows: positions must lie in [0, {c.shape[0]}), got range [{r[0]}, {r[-1]}]")
    starts = np.zeros(nq, np.int64)
    ends = np.full(nq, r.shape[0], np.int64)
    return _topk_codes(cq, ct, k, n_bits, starts, ends, r, True)[:2]


@register_index("simhash")
class SimHashIndex(MutableIndex):
    """Hamming-distance index over SimHash codes (ETA), with SDIM's τ-bit signatures.

    Args:
        dim: vector dimension d.
        n_bits: number of hash functions m (bits per code), 1..256. More bits estimate
            the angle more finely (the std of the angle estimate shrinks like 1/sqrt(m))
            at a cost linear in ceil(m / 64) per distance.
        seed: seed of the Gaussian hyperplanes (``np.random.default_rng(seed)``).

    ``add(vectors)`` stores only the codes (8 bytes per 64 bits per vector), not the
    vectors. ``search`` is exact in Hamming distance: it is its own exact twin; as an
    approximation of inner-product / cosine search, compare it with
    :class:`gsu.index.FlatIndex`. Codes are kept word-major ((n_words, n) uint64) so
    that each word is one contiguous vector for the popcount kernel.
    """

    def __init__(self, dim: int, n_bits: int, *, seed: int = 0):
        self.dim = check_positive_int(dim, name="dim")
        self.n_bits = check_n_bits(n_bits)
        self.seed = check_seed(seed)
        self._h = gaussian_hyperplanes(self.dim, self.n_bits, seed=self.seed)
        self._ct = np.zeros((self.n_words, 0), dtype=np.uint64)
        self._idmap = IdMap(np.zeros(0, np.int64))

    # -- data --------------------------------------------------------------
    @property
    def n_words(self) -> int:
        """uint64 words per code: ceil(n_bits / 64)."""
        return n_words_for(self.n_bits)

    @property
    def ntotal(self) -> int:
        return int(self._ct.shape[1])

    @property
    def hyperplanes(self) -> np.ndarray:
        """(n_bits, dim) float32 Gaussian hyperplanes (one hash function per row)."""
        return self._h

    @property
    def codes(self) -> np.ndarray:
        """(n, n_words) uint64 stored codes in row order (a transposed view of the word-major store)."""
        return self._ct.T

    # -- hashing -----------------------------------------------------------
    def _vectors(self, vectors: Any, name: str) -> np.ndarray:
        return as_matrix(vectors, name=name, dim=self.dim, allow_empty=True)

    def encode(self, vectors: Any) -> np.ndarray:
        """SimHash codes of ``vectors`` (n, d) float32 → (n, n_words) uint64.

        Bit j is 1 when ``<hyperplanes[j], x> > 0``. Projections are computed on fixed-shape
        blocks (:func:`project`), so a vector gets the same code alone or in any batch.
        """
        x = self._vectors(vectors, "vectors")
        return hash_bits(x, self._h, np.zeros((x.shape[0], self.n_words), dtype=np.uint64))

    def signatures(self, vectors: Any, tau: int) -> np.ndarray:
        """SDIM's bucket signatures of ``vectors`` (n, d) float32 → (n, n_bits // τ) int64.

        Args:
            tau: τ, bits per signature (SDIM §3). The m = n_bits hash functions form m/τ
                signatures; signature s is the integer whose bit b is the SimHash bit of
                hash function ``s * τ + b``, a bucket id in [0, 2^τ). Two vectors at angle θ
                share a signature's bucket with probability (1 − θ/π)^τ. τ must divide
                n_bits and be at most 62.
        """
        tau = check_tau(tau, self.n_bits)
        x = self._vectors(vectors, "vectors")
        return hash_signatures(x, self._h, tau, np.zeros((x.shape[0], self.n_bits // tau), dtype=np.int64))

    # -- building ----------------------------------------------------------
    def add(self, vectors: Any, ids: Any = None) -> None:
        """Hash ``vectors`` (n, d) float32 and store their codes under ``ids`` (n,) int64.

        Default ids continue ``0..n-1`` from the current size; ids must be unique.
        """
        x = as_matrix(vectors, name="vectors", dim=self.dim)
        self._append(self.encode(x), self._new_ids(x.shape[0], ids))

    def add_codes(self, codes: Any, ids: Any = None) -> None:
        """Store precomputed codes (n, n_words) uint64 (e.g. from :meth:`encode`) under ``ids``."""
        c = _check_codes(codes, name="codes", n_bits=self.n_bits, n_words=self.n_words)
        if c.shape[0] == 0:
            raise ValueError("codes: empty input (0 rows)")
        self._append(c, self._new_ids(c.shape[0], ids))

    def _append(self, codes: np.ndarray, new_ids: np.ndarray) -> None:
        ct = np.ascontiguousarray(codes.T)
        self._ct = np.ascontiguousarray(np.concatenate([self._ct, ct], axis=1)) if self.ntotal else ct
        self._appended(new_ids)

    def _compact_rows(self, live: np.ndarray) -> None:
        self._ct = np.ascontiguousarray(self._ct[:, live])
        self._idmap = IdMap(self._idmap.ids[live])

    # -- search ------------------------------------------------------------
    def search(self, queries: Any, k: int, *, filter: Any = None) -> SearchResult:
        """The ``k`` stored codes nearest in Hamming distance to the codes of ``queries`` (nq, d).

        Returns a :class:`SearchResult` with scores ``-hamming`` (float32, higher is
        better), ids ordered by (distance, row) — ties go to the earlier-added item —
        and -1 / -inf padding when fewer than k items exist or pass ``filter`` (a
        :class:`Filter`, shared or per query).
        """
        q = as_matrix(queries, name="queries", dim=self.dim)
        return self.search_codes(self.encode(q), k, filter=filter)

    def search_codes(self, query_codes: Any, k: int, *, filter: Any = None) -> SearchResult:
        """Like :meth:`search` for precomputed query codes (nq, n_words) uint64."""
        cq = _check_codes(query_codes, name="query_codes", n_bits=self.n_bits, n_words=self.n_words)
        k = check_k(k)
        nq = cq.shape[0]
        if nq == 0:
            raise ValueError("query_codes: empty input (0 rows)")
        if self.ntotal == 0:
            return SearchResult.empty(nq, k)
        cf = self.compile_filter(filter, nq)  # the filter less the removed rows; None: every row
        no_rows = np.zeros(0, np.int64)
        if cf is None:
            starts, ends, rows, use_rows = np.zeros(nq, np.int64), np.full(nq, self.ntotal, np.int64), no_rows, False
        else:
            if cf.shared and cf.rows.shape[0] == self.ntotal:
                starts, ends, rows, use_rows = np.zeros(nq, np.int64), np.full(nq, self.ntotal, np.int64), no_rows, False
            else:
                starts, ends = cf.bounds(nq)
                rows, use_rows = np.ascontiguousarray(cf.rows, dtype=np.int64), True
        pos, dist, counts = _topk_codes(cq, self._ct, k, self.n_bits, starts, ends, rows, use_rows)
        scores = np.where(pos >= 0, -dist.astype(np.float32), np.float32(-np.inf)).astype(np.float32)
        return SearchResult(self._idmap.to_ids(pos), scores, counts)

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"dim": self.dim, "n_bits": self.n_bits, "seed": self.seed}
        arrays = {"hyperplanes": self._h, "codes_word_major": self._ct, "ids": self._idmap.ids}
        self._tomb_state(config, arrays)
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SimHashIndex":
        idx = cls(int(config["dim"]), int(config["n_bits"]), seed=int(config["seed"]))
        h, ct, ids = arrays["hyperplanes"], arrays["codes_word_major"], arrays["ids"]
        if h.shape != idx._h.shape or not np.array_equal(h, idx._h):
            raise ValueError("stored hyperplanes do not match (dim, n_bits, seed)")
        if ct.ndim != 2 or ct.shape[0] != idx.n_words or ct.dtype != np.uint64 or ids.shape != (ct.shape[1],):
            raise ValueError(f"codes {ct.shape} {ct.dtype} / ids {ids.shape} do not match n_bits={idx.n_bits}")
        idx._ct = ct
        idx._idmap = IdMap(ids)
        idx._tomb_load(config, arrays)
        return idx

    def __repr__(self) -> str:
        return f"SimHashIndex(dim={self.dim}, n_bits={self.n_bits}, seed={self.seed}, ntotal={self.ntotal})"


def check_tau(tau: Any, n_hashes: int) -> int:
    """Validate τ (bits per signature, SDIM §3) against m = ``n_hashes`` hash functions."""
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)):
        raise TypeError(f"tau: expected a positive integer (bits per signature), got {tau!r}")
    if tau < 1 or tau > 62:
        raise ValueError(f"tau: expected 1 <= tau <= 62 bits per signature, got {tau}")
    if n_hashes % tau:
        raise ValueError(
            f"tau={tau} does not divide the number of hash functions m={n_hashes}: "
            f"m must be a multiple of tau (m/tau signatures of tau bits each)"
        )
    return int(tau)
