"""``FlatIndex``: exact dense search — the ground truth every approximate index is held to."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gsu._format import aligned, aligned_empty
from gsu._validate import as_ids, as_matrix, check_choice, check_k, check_positive_int
from gsu.index import _filter_kernels as _fk
from gsu.index import _l2, topk
from gsu.index._mutable import MutableIndex
from gsu.index.base import register_index
from gsu.index.result import SearchResult
from gsu.index.vectors import DENSE_METRICS, normalize_rows
from gsu.index.filters import Filter, IdMap

log = logging.getLogger(__name__)

__all__ = ["FlatIndex", "METRICS", "DENSE_METRICS"]

METRICS = ("ip", "cosine")

# From this allowed fraction on, a shared filter scores every row with BLAS and masks.
_DENSE_FRACTION = 0.2
_NO_MASK = np.zeros(0, dtype=bool)
# Below this many queries a shared filter is served by the gather kernel (reads only the
# allowed rows, no copy); from it on, copying the allowed rows once and using BLAS wins.
_GATHER_BATCH = 8



@register_index("flat")
class FlatIndex(MutableIndex):
    """Exact inner-product / cosine / euclidean search over dense float32 vectors.

    Args:
        dim: vector dimension d.
        metric: ``"ip"`` (inner product), ``"cosine"`` (vectors and queries are
            L2-normalised; scores are cosines) or ``"l2"`` (nearest by euclidean
            distance; scores are ``-|q - x|²``, computed exactly).
        block_size: queries scored per matrix product (bounds memory: block × n floats).
        device: ``None`` (numpy/BLAS + numba kernels) or a torch device string such as
            ``"cuda"``/``"cuda:0"``/``"cpu"``: every search (unfiltered, shared and
            per-query filters) then runs on that device through :mod:`gsu.index.device`
            (fused scores + top-k, the vectors copied there once, lazily) with the same
            results as the CPU path (metric ``"l2"`` keeps the CPU path). A runtime
            setting: not saved; set ``idx.device`` after ``load``.
        device_backend: ``"auto"``, ``"torch"`` or ``"faiss"`` — unfiltered device searches
            by gsu's fused kernel or by faiss's brute force (faiss-gpu on CUDA) as a
            candidate generator; ``"auto"`` takes faiss when it sees a GPU.
        device_precision: scoring format of the device path's first pass (``"auto"``,
            ``"fp32"``, ``"bf16"``, ``"fp16"``; see :func:`gsu.device.choose_precision`);
            results are rescored in float32 either way.

    Unfiltered batches use one BLAS matrix product per block of queries; filtered
    queries gather the allowed rows (a numba kernel for per-query filters), so a
    filtered search equals a search over an index holding only the allowed items.
    Ties are broken by the smaller row (insertion order).
    """

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        block_size: int = 1024,
        device: Any = None,
        device_backend: str = "auto",
        device_precision: str = "auto",
    ):
        self.dim = check_positive_int(dim, name="dim")
        self.metric = check_choice(metric, name="metric", choices=DENSE_METRICS)
        self.block_size = check_positive_int(block_size, name="block_size")
        self.device = device
        self.device_backend = check_choice(device_backend, name="device_backend", choices=("auto", "torch", "faiss"))
        self.device_precision = check_choice(device_precision, name="device_precision", choices=("auto", "fp32", "bf16", "fp16"))
        self._dev: Any = None  # gsu.index.device.DeviceVectors on `device`, built on first use
        self._x = np.zeros((0, self.dim), dtype=np.float32)
        self._idmap = IdMap(np.zeros(0, np.int64))

    # -- data --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._x.shape[0])

    @property
    def vectors(self) -> np.ndarray:
        """(n, d) float32 stored vectors (normalised for cosine)."""
        return self._x

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append ``vectors`` (n, d) float32 with external ``ids`` (n,) int64.

        Default ids continue ``0..n-1`` from the current size. Ids must be unique
        across the whole index.
        """
        x = as_matrix(vectors, name="vectors", dim=self.dim)
        new_ids = self._new_ids(x.shape[0], ids)
        if self.metric == "cosine":
            x = normalize_rows(x)
        # rows on cache lines (the filtered scans read them row by row), in one copy
        if self.ntotal:
            out = aligned_empty((self.ntotal + x.shape[0], self.dim), np.float32)
            self._x = np.concatenate([self._x, x], out=out)
        else:
            self._x = aligned(x)
        self._dev = None
        self.__dict__.pop("_xa", None)
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
        if not q.flags.writeable:  # one kernel specialisation: writable arrays (gsu.index.vectors.prep_queries)
            q = q.copy()
        return normalize_rows(q) if self.metric == "cosine" else q

    @property
    def _sx(self) -> np.ndarray:
        """The matrix the kernels score: the vectors, or for l2 their augmented form."""
        if self.metric != "l2":
            return self._x
        xa = self.__dict__.get("_xa")
        if xa is None or xa.shape[0] != self._x.shape[0]:
            xa = self._xa = _l2.augment_base(self._x)
        return xa

    def _finish(self, q: np.ndarray, out_r: np.ndarray, out_s: np.ndarray) -> None:
        """l2: exact ``-|q - x|²`` for the returned rows, re-sorted (``q`` augmented)."""
        if self.metric == "l2":
            _l2.finish(q[:, : self.dim], self._x, out_r, out_s)

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
        if self.metric == "l2":
            q = _l2.augment_queries(q)
        k = check_k(k)
        nq = q.shape[0]
        if self.ntotal == 0:
            return SearchResult.empty(nq, k)
        f = Filter.coerce(filter)
        if self.device is not None and self.metric != "l2" and self._dead is None:  # l2 / tombstones: the CPU path
            from gsu.index.device import flat_search

            return flat_search(self, q, k, f, backend=self.device_backend, precision=self.device_precision)
        cf = self.compile_filter(f, nq)  # the filter less removed rows; None: every row
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
        x = self._sx if rows is None else self._sx[rows]
        nq = q.shape[0]
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        counts = np.zeros(nq, np.int64)
        for s in range(0, nq, self.block_size):
            sc = q[s : s + self.block_size] @ x.T
            topk.dense_topk(
                sc, k, out_r[s : s + self.block_size], out_s[s : s + self.block_size], counts[s : s + self.block_size],
                _NO_MASK if mask is None else mask,
            )
        if rows is not None:
            out_r = np.where(out_r >= 0, rows[np.maximum(out_r, 0)], -1)
        self._finish(q, out_r, out_s)
        return SearchResult(self._idmap.to_ids(out_r), out_s, counts)

    def _search_gather(self, q: np.ndarray, k: int, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> SearchResult:
        """Exact top-k over each query's allowed rows, reading only those rows (a serial
        kernel for one query: no thread-pool launch on the one-query-per-call path)."""
        nq = q.shape[0]
        out_r = np.empty((nq, k), np.int64)  # the kernel writes every slot (-1 / -inf padding)
        out_s = np.empty((nq, k), np.float32)
        counts = np.zeros(nq, np.int64)
        _fk.gather_topk_ip_sel(q, self._sx, np.arange(nq, dtype=np.int64), starts, ends, rows, k, out_r, out_s, counts)
        self._finish(q, out_r, out_s)
        ids = out_r if self._idmap.identity else self._idmap.to_ids(out_r)
        return SearchResult(ids, out_s, counts)

    def _compact_rows(self, live: np.ndarray) -> None:
        self._x = np.ascontiguousarray(self._x[live])
        self._dev = None
        self.__dict__.pop("_xa", None)
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
