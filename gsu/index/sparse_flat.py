"""``SparseFlatIndex``: exact top-k inner product over sparse vectors (the ground truth of ``SeismicIndex``).

Also home of :func:`as_csr`, the input check every sparse index shares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from gsu._validate import check_k, check_positive_int
from gsu.index import _seismic_kernels as _sk
from gsu.index._mutable import MutableIndex
from gsu.index.base import register_index
from gsu.index.result import SearchResult
from gsu.index.filters import IdMap

log = logging.getLogger(__name__)

__all__ = ["SparseFlatIndex", "SparseRows", "as_csr"]


@dataclass(frozen=True)
class SparseRows:
    """Validated sparse rows in CSR form.

    Attributes:
        indptr: (n+1,) int64 row boundaries.
        indices: (nnz,) int32 component ids, strictly increasing inside each row.
        data: (nnz,) float32 weights, finite and nonzero.
        dim: number of columns (the vocabulary size).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    dim: int

    @property
    def n(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n, self.dim))


_CHECK_MESSAGES = {
    1: "component id out of range [0, {dim})",
    3: "duplicate component ids (sum them first, e.g. with scipy's `sum_duplicates()`)",
    4: "negative weights (the block bounds of this index assume non-negative weights)",
    5: "NaN or inf weights",
    7: "a malformed CSR structure (indptr must start at 0, be non-decreasing and end at nnz)",
}


_CSR_TYPES = (sp.csr_matrix, sp.csr_array)


def as_csr(x: Any, *, name: str, dim: int, allow_negative: bool = True, allow_empty: bool = False) -> SparseRows:
    """Validate sparse vectors and return them as :class:`SparseRows`.

    Accepts any ``scipy.sparse`` matrix or array (converted to CSR) or a dense 2-D array
    (a 1-D array of length ``dim`` is one row). Documented normalisations: explicit
    zeros are dropped and components are sorted inside each row (on a copy).
    Raises ``ValueError`` for a wrong number of columns (vocabulary size), duplicate
    components in a row, NaN/inf, negative weights when ``allow_negative`` is false,
    or an empty batch (unless ``allow_empty``); ``TypeError`` for non-numeric input.
    """
    if type(x) in _CSR_TYPES or sp.issparse(x):
        m = x if type(x) in _CSR_TYPES else x.tocsr()
        if len(m.shape) != 2:
            raise ValueError(f"{name}: expected a 2-D sparse matrix, got shape {m.shape}")
        n, ncols = m.shape
        if m.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected real numeric weights, got dtype {m.dtype}")
        if m.indptr.ndim != 1 or m.indices.ndim != 1 or m.data.ndim != 1 or m.indptr.shape[0] != n + 1:
            raise ValueError(f"{name}: a malformed CSR matrix (indptr {m.indptr.shape}, indices {m.indices.shape}, "
                             f"data {m.data.shape} for {n} rows; expected 1-D arrays and n + 1 row pointers)")
        indptr = m.indptr if m.indptr.dtype == np.int64 else m.indptr.astype(np.int64)
        indices = m.indices if m.indices.dtype == np.int32 else m.indices.astype(np.int32)
        data = m.data if m.data.dtype == np.float32 else m.data.astype(np.float32)
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected a scipy sparse matrix or a numeric array, got {type(x).__name__} of dtype {arr.dtype}")
        if arr.ndim == 1 and arr.shape[0] == dim:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (n, {dim}) array or sparse matrix, got shape {arr.shape}")
        m = sp.csr_matrix(arr.astype(np.float32, copy=False))
        n, ncols = arr.shape
        indptr = m.indptr.astype(np.int64)
        indices = m.indices.astype(np.int32, copy=False)
        data = m.data.astype(np.float32, copy=False)
    if ncols != dim:
        raise ValueError(f"{name}: expected vocabulary size (columns) {dim}, got {ncols}")
    if n == 0 and not allow_empty:
        raise ValueError(f"{name}: empty input (0 rows)")
    code, row = _sk.check_rows(indptr, indices, data, dim, allow_negative)
    if code == 6:  # explicit zeros: drop them (on a copy), then check again
        keep = data != 0
        cs = np.zeros(data.shape[0] + 1, np.int64)
        np.cumsum(keep, out=cs[1:])
        indptr = cs[indptr]
        indices = indices[keep]
        data = data[keep]
        code, row = _sk.check_rows(indptr, indices, data, dim, allow_negative)
    if code == 2:  # unsorted components: sort each row (on a copy), then check again
        s = sp.csr_matrix((data, indices, indptr), shape=(n, dim))
        s = s.copy()
        s.has_sorted_indices = False
        s.sort_indices()
        indptr = np.asarray(s.indptr, dtype=np.int64)
        indices = np.asarray(s.indices, dtype=np.int32)
        data = np.asarray(s.data, dtype=np.float32)
        code, row = _sk.check_rows(indptr, indices, data, dim, allow_negative)
    if code != 0:
        raise ValueError(f"{name}: row {row} has " + _CHECK_MESSAGES[code].format(dim=dim))
    return SparseRows(indptr, indices, data, int(dim))


@register_index("sparse_flat")
class SparseFlatIndex(MutableIndex):
    """Exact top-k inner product over sparse vectors (scipy sparse products).

    Args:
        dim: vocabulary size (number of components).

    Only documents with a nonzero inner product are returned: a row of the result
    holds fewer than ``k`` entries (padded with -1 / -inf) when fewer documents share
    a component with the query. Documents with no components are stored but never
    returned; an empty query returns nothing. Weights may be negative here (the exact
    product needs no bound), unlike :class:`~gsu.index.seismic.SeismicIndex`.
    """

    def __init__(self, dim: int, *, max_block_entries: int = 20_000_000):
        self.dim = check_positive_int(dim, name="dim")
        self.max_block_entries = check_positive_int(max_block_entries, name="max_block_entries")
        self._indptr = np.zeros(1, np.int64)
        self._indices = np.zeros(0, np.int32)
        self._data = np.zeros(0, np.float32)
        self._idmap = IdMap(np.zeros(0, np.int64))
        self._x: sp.csr_matrix | None = None
        self._xt: sp.csr_matrix | None = None

    # -- data --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._indptr.shape[0] - 1)

    @property
    def matrix(self) -> sp.csr_matrix:
        """The stored vectors as a (n, dim) float32 CSR matrix (rows in insertion order)."""
        if self._x is None:
            self._x = sp.csr_matrix((self._data, self._indices, self._indptr), shape=(self.ntotal, self.dim))
        return self._x

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append sparse ``vectors`` (n, dim) with external ``ids`` (n,) int64 (default: continue 0..n-1)."""
        rows = as_csr(vectors, name="vectors", dim=self.dim, allow_negative=True)
        new_ids = self._new_ids(rows.n, ids)
        n_empty = int(np.count_nonzero(np.diff(rows.indptr) == 0))
        if n_empty:
            log.warning("%d of %d added documents have no components: they can never be returned", n_empty, rows.n)
        self._indptr = np.concatenate([self._indptr, rows.indptr[1:] + self._indptr[-1]])
        self._indices = np.concatenate([self._indices, rows.indices])
        self._data = np.concatenate([self._data, rows.data])
        self._appended(new_ids)
        self._x = None
        self._xt = None

    def _compact_rows(self, live: np.ndarray) -> None:
        m = self.matrix[live]
        self._indptr = np.asarray(m.indptr, np.int64)
        self._indices = np.asarray(m.indices, np.int32)
        self._data = np.asarray(m.data, np.float32)
        self._idmap = IdMap(self._idmap.ids[live])
        self._x = None
        self._xt = None

    # -- search ------------------------------------------------------------
    def search(self, queries: Any, k: int, *, filter: Any = None) -> SearchResult:
        """Exact top-``k`` documents by inner product for each query.

        Args:
            queries: (nq, dim) scipy sparse matrix (or dense array); a 1-D dense vector
                is a batch of one.
            k: results per query.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared
                or one per query.

        Returns:
            :class:`SearchResult` with ids (nq, k) int64, scores (nq, k) float32 and
            counts (nq,) — only documents with a nonzero score appear.
        """
        q = as_csr(queries, name="queries", dim=self.dim, allow_negative=True)
        k = check_k(k)
        nq = q.n
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        counts = np.zeros(nq, np.int64)
        if self.ntotal == 0 or nq == 0:
            return SearchResult(out_r, out_s, counts)
        qm = q.to_scipy()
        cf = self.compile_filter(filter, nq)  # the filter less the removed rows; None: every row
        empty = np.zeros(0, np.int64)
        if cf is None:
            self._product_topk(qm, k, None, out_r, out_s, counts)
        else:
            if cf.shared:
                rows = cf.rows
                if rows.shape[0]:
                    self._product_topk(qm, k, None if rows.shape[0] == self.ntotal else rows, out_r, out_s, counts)
            else:
                x = self.matrix
                starts, ends = cf.bounds(nq)
                for i in range(nq):
                    rows = cf.rows[starts[i] : ends[i]]
                    if rows.shape[0] == 0:
                        continue
                    s = (qm[i] @ x[rows].T).tocsr()
                    _sk.csr_topk(
                        np.asarray(s.indptr, np.int64), s.indices, s.data.astype(np.float32, copy=False), k,
                        rows, np.zeros(1, np.int64), empty, False, i, out_r, out_s, counts,
                    )
        return SearchResult(self._idmap.to_ids(out_r), out_s, counts)

    def _product_topk(self, qm: sp.csr_matrix, k: int, rows: np.ndarray | None, out_r, out_s, counts) -> None:
        if rows is None:
            if self._xt is None:
                self._xt = self.matrix.T.tocsr()
            xt = self._xt
            col_rows = np.zeros(0, np.int64)
            n_cols = self.ntotal
        else:
            xt = self.matrix[rows].T.tocsr()
            col_rows = rows
            n_cols = rows.shape[0]
        nq = qm.shape[0]
        block = max(1, min(nq, self.max_block_entries // max(n_cols, 1)))
        empty = np.zeros(0, np.int64)
        for s0 in range(0, nq, block):
            s = (qm[s0 : s0 + block] @ xt).tocsr()
            _sk.csr_topk(
                np.asarray(s.indptr, np.int64), s.indices, s.data.astype(np.float32, copy=False), k,
                col_rows, np.zeros(1, np.int64), empty, False, s0, out_r, out_s, counts,
            )

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"dim": self.dim}
        arrays = {"indptr": self._indptr, "indices": self._indices, "data": self._data, "ids": self._idmap.ids}
        self._tomb_state(config, arrays)
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SparseFlatIndex":
        idx = cls(int(config["dim"]))
        indptr, indices, data, ids = arrays["indptr"], arrays["indices"], arrays["data"], arrays["ids"]
        n = indptr.shape[0] - 1
        if indptr.ndim != 1 or n < 0 or ids.shape != (n,) or indices.shape != data.shape or int(indptr[-1]) != indices.shape[0]:
            raise ValueError(f"arrays do not form a CSR matrix: indptr {indptr.shape}, indices {indices.shape}, data {data.shape}, ids {ids.shape}")
        idx._indptr, idx._indices, idx._data = indptr, indices, data
        idx._idmap = IdMap(ids)
        idx._tomb_load(config, arrays)
        return idx

    def __repr__(self) -> str:
        return f"SparseFlatIndex(dim={self.dim}, ntotal={self.ntotal})"
