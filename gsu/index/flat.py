"""``FlatIndex``: exact dense search — the ground truth every approximate index is held to."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gsu._validate import as_ids, as_matrix, check_choice, check_k, check_positive_int
from gsu.index import _kernels
from gsu.index._mutable import MutableIndex
from gsu.index.base import SearchResult, _lexsort_rows, register_index
from gsu.index.filters import Filter, IdMap

log = logging.getLogger(__name__)

__all__ = ["FlatIndex", "METRICS"]

METRICS = ("ip", "cosine")

# From this allowed fraction on, a shared filter scores every row with BLAS and masks.
_DENSE_FRACTION = 0.2
_NO_MASK = np.zeros(0, dtype=bool)
# Below this many queries a shared filter is served by the gather kernel (reads only the
# allowed rows, no copy); from it on, copying the allowed rows once and using BLAS wins.
_GATHER_BATCH = 8



def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32); zero rows stay zero."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return (x / n).astype(np.float32, copy=False)


@register_index("flat")
class FlatIndex(MutableIndex):
    """Exact inner-product / cosine search over dense float32 vectors.

    Args:
        dim: vector dimension d.
        metric: ``"ip"`` (inner product) or ``"cosine"`` (vectors and queries are
            L2-normalised; scores are cosines).
        block_size: queries scored per matrix product (bounds memory: block × n floats).
        device: ``None`` (numpy/BLAS + numba kernels) or a torch device string such as
            ``"cuda"``/``"cuda:0"``/``"cpu"``: unfiltered and shared-filter batches then run
            as one torch matmul + ``topk`` on that device (the vectors are copied there
            once, lazily). Per-query filters always use the CPU gather kernel. A runtime
            setting: not saved; set ``idx.device`` after ``load``.

    Unfiltered batches use one BLAS matrix product per block of queries; filtered
    queries gather the allowed rows (a numba kernel for per-query filters), so a
    filtered search equals a search over an index holding only the allowed items.
    Ties are broken by the smaller row (insertion order).
    """

    def __init__(self, dim: int, metric: str = "ip", *, block_size: int = 1024, device: str | None = None):
        self.dim = check_positive_int(dim, name="dim")
        self.metric = check_choice(metric, name="metric", choices=METRICS)
        self.block_size = check_positive_int(block_size, name="block_size")
        self.device = device
        self._dev_x: Any = None  # torch copy of _x on `device`, built on first use
        self._x = np.zeros((0, self.dim), dtype=np.float32)
        self._idmap = IdMap(np.zeros(0, np.int64))

    # -- data --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._x.shape[0])

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 external ids in row order."""
        return self._idmap.ids

    @property
    def vectors(self) -> np.ndarray:
        """(n, d) float32 stored vectors (normalised for cosine)."""
        return self._x

    @property
    def idmap(self) -> IdMap:
        return self._idmap

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append ``vectors`` (n, d) float32 with external ``ids`` (n,) int64.

        Default ids continue ``0..n-1`` from the current size. Ids must be unique
        across the whole index.
        """
        x = as_matrix(vectors, name="vectors", dim=self.dim)
        if ids is None:
            new_ids = np.arange(self.ntotal, self.ntotal + x.shape[0], dtype=np.int64)
        else:
            new_ids = as_ids(ids, name="ids", n=x.shape[0], unique=True)
        if self.ntotal and np.any(self._idmap.contains(new_ids)):
            raise ValueError("ids: some ids are already in the index")
        if self.metric == "cosine":
            x = normalize_rows(x)
        self._x = np.ascontiguousarray(np.concatenate([self._x, x])) if self.ntotal else x
        self._dev_x = None
        self._appended(new_ids)

    def reconstruct(self, ids: Any) -> np.ndarray:
        """Stored vectors of ``ids``; unknown ids raise ``KeyError``."""
        rows = self._idmap.rows(as_ids(ids, name="ids"))
        if np.any(rows < 0):
            raise KeyError(f"unknown ids: {np.asarray(ids)[rows < 0][:5].tolist()}")
        return self._x[rows]

    # -- search ------------------------------------------------------------
    def _prep_queries(self, queries: Any) -> np.ndarray:
        q = as_matrix(queries, name="queries", dim=self.dim)
        return normalize_rows(q) if self.metric == "cosine" else q

    def search(self, queries: Any, k: int, *, filter: Any = None) -> SearchResult:
        """Exact top-``k`` for each row of ``queries`` (nq, d).

        Args:
            queries: (nq, d) float32 (a 1-D vector is a batch of one).
            k: results per query; rows hold fewer (padded -1/-inf) only when fewer
                items exist or pass the filter.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared
                or per-query.
        """
        q = self._prep_queries(queries)
        k = check_k(k)
        nq = q.shape[0]
        if self.ntotal == 0:
            return SearchResult.empty(nq, k)
        cf = self.compile_filter(filter, nq)  # the filter less removed rows; None: every row
        if cf is None:
            return self._search_rows(q, k, None)
        if cf.shared:
            rows = cf.rows
            m = rows.shape[0]
            if m == 0:
                return SearchResult.empty(nq, k)
            if m == self.ntotal:
                return self._search_rows(q, k, None)
            if m >= _DENSE_FRACTION * self.ntotal:
                # most rows allowed: score everything with BLAS and mask the rest
                return self._search_rows(q, k, None, mask=cf.mask())
            if nq < _GATHER_BATCH:
                # a few queries: score allowed rows in place (no copy of the allowed vectors)
                starts, ends = cf.bounds(nq)
                return self._search_gather(q, k, starts, ends, rows)
            return self._search_rows(q, k, rows)
        starts, ends = cf.bounds(nq)
        return self._search_gather(q, k, starts, ends, cf.rows)

    def _search_rows(self, q: np.ndarray, k: int, rows: np.ndarray | None, mask: np.ndarray | None = None) -> SearchResult:
        """BLAS scores against all rows (or the gathered ``rows``), optional row ``mask``, then top-k."""
        if self.device is not None:
            return self._search_torch(q, k, rows, mask)
        x = self._x if rows is None else self._x[rows]
        nq = q.shape[0]
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        counts = np.zeros(nq, np.int64)
        for s in range(0, nq, self.block_size):
            sc = q[s : s + self.block_size] @ x.T
            _kernels.dense_topk(
                sc, k, out_r[s : s + self.block_size], out_s[s : s + self.block_size], counts[s : s + self.block_size],
                _NO_MASK if mask is None else mask,
            )
        if rows is not None:
            out_r = np.where(out_r >= 0, rows[np.maximum(out_r, 0)], -1)
        return SearchResult(self._idmap.to_ids(out_r), out_s, counts)

    def _search_torch(self, q: np.ndarray, k: int, rows: np.ndarray | None, mask: np.ndarray | None) -> SearchResult:
        import torch

        if self._dev_x is None:
            self._dev_x = torch.from_numpy(np.ascontiguousarray(self._x)).to(self.device)
        allowed = None
        if rows is not None:
            mask = np.zeros(self.ntotal, dtype=bool)
            mask[rows] = True
        if mask is not None:
            allowed = torch.from_numpy(mask).to(self.device)
        kk = min(k, self.ntotal)
        nq = q.shape[0]
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        with torch.no_grad():
            for s in range(0, nq, self.block_size):
                qt = torch.from_numpy(q[s : s + self.block_size]).to(self.device)
                sc = qt @ self._dev_x.T
                if allowed is not None:
                    sc = sc.masked_fill(~allowed, float("-inf"))
                # torch.topk's tie order is unspecified: order ties by row on the host
                vals, idx = torch.topk(sc, kk, dim=1, sorted=True)
                vals, idx = vals.cpu().numpy(), idx.cpu().numpy().astype(np.int64)
                order = _lexsort_rows(-vals, idx)
                idx = np.take_along_axis(idx, order, axis=1)
                vals = np.take_along_axis(vals, order, axis=1)
                idx[vals == -np.inf] = -1
                out_r[s : s + self.block_size, :kk] = idx
                out_s[s : s + self.block_size, :kk] = vals
        counts = (out_r >= 0).sum(axis=1).astype(np.int64)
        return SearchResult(self._idmap.to_ids(out_r), out_s, counts)

    def _search_gather(self, q: np.ndarray, k: int, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> SearchResult:
        nq = q.shape[0]
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        counts = np.zeros(nq, np.int64)
        _kernels.gather_topk_ip(q, self._x, starts, ends, rows, k, out_r, out_s, counts)
        return SearchResult(self._idmap.to_ids(out_r), out_s, counts)

    def _compact_rows(self, live: np.ndarray) -> None:
        self._x = np.ascontiguousarray(self._x[live])
        self._dev_x = None
        self._idmap = IdMap(self._idmap.ids[live])

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"dim": self.dim, "metric": self.metric}
        arrays = {"vectors": self._x, "ids": self._idmap.ids}
        self._tomb_state(config, arrays)
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "FlatIndex":
        idx = cls(int(config["dim"]), config["metric"])
        x = arrays["vectors"]
        if x.ndim != 2 or x.shape[1] != idx.dim or arrays["ids"].shape != (x.shape[0],):
            raise ValueError(f"vectors {x.shape} / ids {arrays['ids'].shape} do not match dim {idx.dim}")
        idx._x = x
        idx._idmap = IdMap(arrays["ids"])
        idx._tomb_load(config, arrays)
        return idx

    def __repr__(self) -> str:
        return f"FlatIndex(dim={self.dim}, metric={self.metric!r}, ntotal={self.ntotal})"
