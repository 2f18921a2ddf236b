"""``Filter``: which item ids a search may return.

A filter is *data*, never a Python callback: an id set, a boolean mask over the id
space, an id range, a combination of those, or one filter per query row. Indexes
turn a filter into row numbers (:meth:`Filter.compile`) and hand those to compiled
kernels or faiss selectors.

Semantics: ids that are not in the index are simply never returned; a filter that
allows nothing yields rows with ``counts == 0`` (all ids -1), not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from gsu._validate import as_ids

try:  # pyroaring is a hard dependency, but keep the import local to what needs it
    from pyroaring import BitMap
except ImportError:  # pragma: no cover - dependency declared in pyproject
    BitMap = None  # type: ignore[assignment,misc]

__all__ = ["Filter", "CompiledFilter", "IdMap"]


class IdMap:
    """Maps external int64 ids to row numbers ``0..n-1`` of an index.

    When the ids are exactly ``0..n-1`` (the default) the map is the identity and
    costs nothing. Otherwise lookups go through a sorted copy (binary search).

    ``dead``: optional (n,) bool tombstones of an index with removed rows: those rows
    keep their id in :attr:`ids` (so :meth:`to_ids` still names them) but :meth:`rows`
    never returns them, and a live row may reuse a dead row's id.
    """

    def __init__(self, ids: np.ndarray, dead: np.ndarray | None = None):
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        n = self.ids.shape[0]
        self.dead = None if dead is None or not dead.any() else np.ascontiguousarray(dead, dtype=bool)
        if self.dead is None:
            self.identity = bool(n == 0 or (self.ids[0] == 0 and self.ids[-1] == n - 1 and np.array_equal(self.ids, np.arange(n))))
        else:
            self.identity = False
        if self.identity:
            self._order = None
            self._sorted = None
        elif self.dead is None:
            self._order = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._order]
        else:
            live = np.flatnonzero(~self.dead)
            self._order = live[np.argsort(self.ids[live], kind="stable")]
            self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids`` (int64), ``-1`` for ids not present."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(self)
        if self.identity:
            return np.where((ids >= 0) & (ids < n), ids, -1)
        n = self._sorted.shape[0]
        pos = np.searchsorted(self._sorted, ids)
        pos_c = np.minimum(pos, max(n - 1, 0))
        if n == 0:
            return np.full(ids.shape, -1, np.int64)
        hit = (pos < n) & (self._sorted[pos_c] == ids)
        return np.where(hit, self._order[pos_c], -1)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.rows(ids) >= 0

    def to_ids(self, rows: np.ndarray) -> np.ndarray:
        """External ids of ``rows``; ``-1`` rows stay ``-1``."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.identity:
            return rows.copy()
        out = np.full(rows.shape, -1, dtype=np.int64)
        ok = rows >= 0
        out[ok] = self.ids[rows[ok]]
        return out


@dataclass(frozen=True)
class CompiledFilter:
    """A filter resolved against one index: allowed *row numbers*, sorted, per query.

    ``indptr`` (nq+1,) and ``rows`` form a CSR structure: the allowed rows of query
    ``q`` are ``rows[indptr[q]:indptr[q+1]]``, sorted ascending. A shared filter
    (one for all queries) has ``shared=True``, ``indptr == [0, m]`` and is valid for
    any number of queries. ``n`` is the number of rows in the index.
    """

    indptr: np.ndarray
    rows: np.ndarray
    n: int
    shared: bool
    _masks: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_queries(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def query_rows(self, q: int) -> np.ndarray:
        if self.shared:
            q = 0
        return self.rows[self.indptr[q] : self.indptr[q + 1]]

    def counts(self, nq: int) -> np.ndarray:
        """Allowed-row count for each of ``nq`` queries, (nq,) int64."""
        c = np.diff(self.indptr)
        return np.full(nq, int(c[0]), dtype=np.int64) if self.shared else c.astype(np.int64)

    def mask(self, q: int = 0) -> np.ndarray:
        """Boolean mask over the index rows for query ``q`` (cached for shared filters)."""
        key = 0 if self.shared else q
        m = self._masks.get(key)
        if m is None:
            m = np.zeros(self.n, dtype=bool)
            m[self.query_rows(q)] = True
            if self.shared:
                self._masks[key] = m
        return m

    def bounds(self, nq: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-query ``(starts, ends)`` into :attr:`rows`, each (nq,) int64."""
        if self.shared:
            return np.zeros(nq, np.int64), np.full(nq, self.rows.shape[0], np.int64)
        if nq != self.n_queries:
            raise ValueError(f"filter has {self.n_queries} per-query entries but there are {nq} queries")
        return self.indptr[:-1].astype(np.int64), self.indptr[1:].astype(np.int64)


class Filter:
    """Which ids a search may return.

    Build with one of the constructors:

    - ``Filter.from_ids(ids)`` — an id array, list or ``pyroaring.BitMap``
    - ``Filter.from_mask(mask)`` — boolean mask over ids ``0..len(mask)-1``
    - ``Filter.range(lo, hi)`` — ids in ``[lo, hi)``
    - ``Filter.time_range(times, lo, hi, ids=None)`` — items whose attribute (e.g. a
      timestamp, one value per item) lies in ``[lo, hi)``
    - ``Filter.per_query([f0, f1, ...])`` — one filter (or id array) per query row
    - ``Filter.all()`` — everything

    Combine with ``&`` (and), ``|`` (or), ``~`` (not). ``Filter(x)`` accepts any of
    an id array, a boolean mask, a BitMap, a list of per-query filters or a Filter.
    """

    __slots__ = ("_kind", "_data", "_cache")

    def __init__(self, spec: Any = None, *, _kind: str | None = None, _data: Any = None):
        self._cache: tuple[IdMap, CompiledFilter] | None = None
        if _kind is not None:
            self._kind, self._data = _kind, _data
            return
        f = Filter.coerce(spec)
        self._kind, self._data = f._kind, f._data

    # -- constructors ------------------------------------------------------
    @classmethod
    def from_ids(cls, ids: Any) -> "Filter":
        if BitMap is not None and isinstance(ids, BitMap):
            arr = np.fromiter(ids, dtype=np.int64, count=len(ids)) if len(ids) else np.zeros(0, np.int64)
        elif type(ids).__name__ == "BitMap64":
            arr = np.fromiter(iter(ids), dtype=np.int64, count=len(ids))
        else:
            arr = as_ids(np.asarray(ids).reshape(-1) if np.ndim(ids) else np.asarray([ids]), name="filter ids")
        arr = np.unique(arr)  # sorted, unique
        return cls(_kind="ids", _data=arr)

    @classmethod
    def from_mask(cls, mask: Any) -> "Filter":
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.ndim != 1:
            raise ValueError(f"filter mask: expected a 1-D boolean array, got dtype {m.dtype} shape {m.shape}")
        return cls(_kind="mask", _data=np.ascontiguousarray(m))

    @classmethod
    def range(cls, lo: int, hi: int) -> "Filter":
        lo, hi = int(lo), int(hi)
        if hi < lo:
            raise ValueError(f"filter range: hi ({hi}) < lo ({lo})")
        return cls(_kind="range", _data=(lo, hi))

    @classmethod
    def time_range(cls, values: Any, lo: float, hi: float, ids: Any = None) -> "Filter":
        """Items whose attribute ``values[i]`` (e.g. first-seen time) is in ``[lo, hi)``.

        ``ids`` gives the item id of each value (default ``0..len(values)-1``).
        """
        v = np.asarray(values)
        if v.ndim != 1:
            raise ValueError(f"time_range: expected 1-D values, got shape {v.shape}")
        ids_arr = np.arange(v.shape[0], dtype=np.int64) if ids is None else as_ids(ids, name="time_range ids", n=v.shape[0])
        return cls.from_ids(ids_arr[(v >= lo) & (v < hi)])

    @classmethod
    def all(cls) -> "Filter":
        return cls(_kind="all", _data=None)

    @classmethod
    def per_query(cls, filters: Sequence[Any]) -> "Filter":
        fs = [Filter.coerce(f) for f in filters]
        if any(f.is_per_query for f in fs):
            raise ValueError("per_query: entries must be single filters, not per-query filters")
        if not fs:
            raise ValueError("per_query: empty list of filters")
        return cls(_kind="per_query", _data=fs)

    @classmethod
    def coerce(cls, spec: Any) -> "Filter":
        """Turn any accepted filter spec into a ``Filter``."""
        if isinstance(spec, Filter):
            return spec
        if spec is None:
            return cls.all()
        if BitMap is not None and isinstance(spec, BitMap):
            return cls.from_ids(spec)
        if type(spec).__name__ == "BitMap64":
            return cls.from_ids(spec)
        if isinstance(spec, (list, tuple)) and spec and all(
            isinstance(f, (Filter, np.ndarray, list, tuple)) or (BitMap is not None and isinstance(f, BitMap)) for f in spec
        ):
            return cls.per_query(spec)
        arr = np.asarray(spec)
        if arr.dtype == np.bool_:
            return cls.from_mask(arr)
        return cls.from_ids(arr)

    # -- combinators -------------------------------------------------------
    def __and__(self, other: Any) -> "Filter":
        return Filter(_kind="and", _data=(self, Filter.coerce(other)))

    def __or__(self, other: Any) -> "Filter":
        return Filter(_kind="or", _data=(self, Filter.coerce(other)))

    def __invert__(self) -> "Filter":
        return Filter(_kind="not", _data=self)

    # -- inspection --------------------------------------------------------
    @property
    def kind(self) -> str:
        return self._kind

    @property
    def is_per_query(self) -> bool:
        if self._kind == "per_query":
            return True
        if self._kind in ("and", "or"):
            return self._data[0].is_per_query or self._data[1].is_per_query
        if self._kind == "not":
            return self._data.is_per_query
        return False

    @property
    def is_all(self) -> bool:
        return self._kind == "all"

    def __len__(self) -> int:
        if self._kind != "per_query":
            raise TypeError("len() is defined for per-query filters only")
        return len(self._data)

    def __repr__(self) -> str:
        if self._kind == "ids":
            return f"Filter.from_ids(<{self._data.size} ids>)"
        if self._kind == "mask":
            return f"Filter.from_mask(<{int(self._data.sum())}/{self._data.size}>)"
        if self._kind == "range":
            return f"Filter.range({self._data[0]}, {self._data[1]})"
        if self._kind == "per_query":
            return f"Filter.per_query(<{len(self._data)} filters>)"
        if self._kind == "not":
            return f"~{self._data!r}"
        if self._kind in ("and", "or"):
            op = "&" if self._kind == "and" else "|"
            return f"({self._data[0]!r} {op} {self._data[1]!r})"
        return "Filter.all()"

    # -- evaluation --------------------------------------------------------
    def for_query(self, q: int) -> "Filter":
        """The single filter that applies to query ``q``."""
        k = self._kind
        if k == "per_query":
            return self._data[q]
        if k in ("and", "or"):
            return Filter(_kind=k, _data=(self._data[0].for_query(q), self._data[1].for_query(q)))
        if k == "not":
            return Filter(_kind="not", _data=self._data.for_query(q))
        return self

    def n_queries(self) -> int | None:
        """Number of per-query entries, or ``None`` for a filter shared by all queries."""
        k = self._kind
        if k == "per_query":
            return len(self._data)
        if k in ("and", "or"):
            a, b = self._data[0].n_queries(), self._data[1].n_queries()
            if a is not None and b is not None and a != b:
                raise ValueError(f"combined per-query filters disagree on the number of queries ({a} vs {b})")
            return a if a is not None else b
        if k == "not":
            return self._data.n_queries()
        return None

    def allows(self, ids: Any) -> np.ndarray:
        """Boolean array: is each id in ``ids`` allowed? (single filters only)."""
        ids = np.asarray(ids, dtype=np.int64)
        k = self._kind
        if k == "all":
            return np.ones(ids.shape, dtype=bool)
        if k == "ids":
            d = self._data
            if d.size == 0:
                return np.zeros(ids.shape, dtype=bool)
            pos = np.minimum(np.searchsorted(d, ids), d.size - 1)
            return d[pos] == ids
        if k == "mask":
            m = self._data
            ok = (ids >= 0) & (ids < m.shape[0])
            out = np.zeros(ids.shape, dtype=bool)
            out[ok] = m[ids[ok]]
            return out
        if k == "range":
            lo, hi = self._data
            return (ids >= lo) & (ids < hi)
        if k == "and":
            return self._data[0].allows(ids) & self._data[1].allows(ids)
        if k == "or":
            return self._data[0].allows(ids) | self._data[1].allows(ids)
        if k == "not":
            return ~self._data.allows(ids)
        raise TypeError("allows() needs a single filter; call for_query(q) on a per-query filter first")

    def _rows(self, idmap: IdMap) -> np.ndarray:
        """Sorted allowed rows of a single filter against ``idmap``."""
        k = self._kind
        n = len(idmap)
        if k == "all":
            return np.arange(n, dtype=np.int64)
        if k == "ids":
            r = idmap.rows(self._data)
            r = r[r >= 0]
            if not idmap.identity:
                r.sort()
            return r
        if k == "range" and idmap.identity:
            lo, hi = self._data
            return np.arange(max(lo, 0), max(min(hi, n), max(lo, 0)), dtype=np.int64)
        if k == "mask" and idmap.identity:
            m = self._data
            return np.flatnonzero(m[:n]).astype(np.int64)
        if k == "and":
            a, b = self._data
            # intersect the cheaper side's rows with the other's membership
            ra = a._rows(idmap)
            return ra[b.allows(idmap.ids[ra])] if ra.size else ra
        return np.flatnonzero(self.allows(idmap.ids)).astype(np.int64)

    def compile(self, idmap: IdMap, nq: int) -> CompiledFilter:
        """Resolve against an index's ids for ``nq`` queries (see :class:`CompiledFilter`)."""
        n = len(idmap)
        m = self.n_queries()
        if m is None:
            # a shared filter is often reused across calls (one query at a time): cache it
            if self._cache is not None and self._cache[0] is idmap:
                return self._cache[1]
            rows = self._rows(idmap)
            cf = CompiledFilter(np.array([0, rows.shape[0]], dtype=np.int64), rows, n, True)
            self._cache = (idmap, cf)
            return cf
        if m != nq:
            raise ValueError(f"per-query filter has {m} entries but there are {nq} queries")
        if self._kind == "per_query" and all(f._kind == "ids" for f in self._data):
            return self._compile_id_sets(idmap, nq)
        parts = [self.for_query(q)._rows(idmap) for q in range(nq)]
        indptr = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum([p.shape[0] for p in parts], out=indptr[1:])
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return CompiledFilter(indptr, rows.astype(np.int64, copy=False), n, False)

    def _compile_id_sets(self, idmap: IdMap, nq: int) -> CompiledFilter:
        """Vectorised compile of per-query id sets (the common case: one behavior set per query)."""
        sets = [f._data for f in self._data]
        lens = np.fromiter((a.shape[0] for a in sets), dtype=np.int64, count=nq)
        all_ids = np.concatenate(sets) if nq else np.zeros(0, np.int64)
        if idmap.identity:  # ids are rows: one pass dropping ids outside 0..n-1
            from gsu.index._filter_kernels import compact_id_sets

            indptr = np.empty(nq + 1, np.int64)
            w = compact_id_sets(all_ids, lens, len(idmap), all_ids, indptr)  # in place (a fresh concatenation): writes trail reads
            return CompiledFilter(indptr, all_ids[:w], len(idmap), False)
        rows = idmap.rows(all_ids)
        seg = np.repeat(np.arange(nq, dtype=np.int64), lens)
        keep = rows >= 0
        rows, seg = rows[keep], seg[keep]
        if not idmap.identity:  # ids were sorted per query; rows need sorting within each query
            order = np.lexsort((rows, seg))
            rows, seg = rows[order], seg[order]
        indptr = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.bincount(seg, minlength=nq), out=indptr[1:])
        return CompiledFilter(indptr, rows, len(idmap), False)

    @classmethod
    def from_csr(cls, indptr: Any, ids: Any) -> "Filter":
        """Per-query id sets given in CSR form: query ``q`` allows ``ids[indptr[q]:indptr[q+1]]``."""
        indptr = as_ids(indptr, name="filter indptr")
        ids = as_ids(ids, name="filter ids")
        return cls.per_query([ids[indptr[q] : indptr[q + 1]] for q in range(indptr.shape[0] - 1)])


def iter_filters(f: Filter | None, nq: int) -> Iterable[Filter]:
    """Yield the single filter of each of ``nq`` queries."""
    f = Filter.coerce(f)
    for q in range(nq):
        yield f.for_query(q)
