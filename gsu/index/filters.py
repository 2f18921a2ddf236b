"""``Filter``: which item ids a search may return.

A filter is *data*, never a Python callback: an id set, a boolean mask over the id
space, an id range, a combination of those, or one filter per query row. Indexes
turn a filter into row numbers (:meth:`Filter.compile`) and hand those to compiled
kernels or faiss selectors.

Semantics: ids that are not in the index are simply never returned; a filter that
allows nothing yields rows with ``counts == 0`` (all ids -1), not an error.

Cost: a GSU request brings a new filter (this user's behavior set, this time window),
so building and compiling one is on the request path and costs time in the allowed
ids with a small constant. ``Filter.from_ids`` checks in one vectorised pass that the
ids are already sorted and distinct (the usual case) and only sorts when they are not;
compiling a shared filter against an index is lazy: the allowed rows of an id array
under the default ids ``0..n-1`` are a view of the array itself, and what a search
route needs beyond them (a bitmap for the graph walk, the count per IVF list) is built
on first use by the route that needs it and cached on the compiled filter
(:meth:`CompiledFilter.derived` / :meth:`CompiledFilter.keep`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from gsu.index import _filter_kernels as fk

from pyroaring import BitMap

__all__ = ["Filter", "CompiledFilter", "IdMap"]

_I64_LIMIT = 2**63  # ids must lie in [-2**63, 2**63)
_EMPTY = np.zeros(0, np.int64)
#: a non-identity id map uses a dense lookup table (``table[id - min]``) when the ids span
#: at most this many times their number (4 bytes per spanned id); else binary search
_TABLE_SPAN = 8


def _id_array(ids: Any, name: str) -> np.ndarray:
    """``ids`` as a 1-D int64 array (the input itself when it already is one).

    Rejects what does not denote int64 ids exactly: booleans (a mask: use
    ``Filter.from_mask``), non-integral or non-finite floats, and values outside
    ``[-2**63, 2**63)`` (uint64 above ``2**63 - 1``, floats such as ``1e20``, Python
    ints beyond int64) — never wrapped or rounded.
    """
    a = ids if type(ids) is np.ndarray else np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    elif a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of integer ids, got shape {a.shape}")
    dt = a.dtype
    if dt == np.int64:
        return a
    kind = dt.kind
    if kind == "b":
        raise ValueError(f"{name}: got a boolean array; a boolean mask is Filter.from_mask(mask)")
    if kind == "i":
        return a.astype(np.int64)
    if kind == "u":
        if dt.itemsize == 8 and a.size and int(a.max()) >= _I64_LIMIT:
            raise ValueError(f"{name}: id {int(a.max())} does not fit in int64 (ids must lie in [-2**63, 2**63))")
        return a.astype(np.int64)
    if kind == "f":
        if a.size:
            if not np.isfinite(a).all():
                raise ValueError(f"{name}: NaN or inf among the ids")
            if not (a == np.trunc(a)).all():
                raise ValueError(f"{name}: expected integer ids, got non-integral values of dtype {dt}")
            lo, hi = float(a.min()), float(a.max())
            if lo < -float(_I64_LIMIT) or hi >= float(_I64_LIMIT):
                bad = hi if hi >= float(_I64_LIMIT) else lo
                raise ValueError(f"{name}: id {bad:g} does not fit in int64 (ids must lie in [-2**63, 2**63))")
        return a.astype(np.int64)
    if kind == "O" and a.size and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in a.tolist()):
        bad = next(int(v) for v in a.tolist() if not -_I64_LIMIT <= int(v) < _I64_LIMIT)
        raise ValueError(f"{name}: id {bad} does not fit in int64 (ids must lie in [-2**63, 2**63))")
    if a.size == 0:
        return _EMPTY
    raise ValueError(f"{name}: expected integer ids, got dtype {dt}")


def _int_bound(v: Any, name: str) -> int:
    """A range bound as a Python int (integral numbers only), clamped to the int64 range
    (no id lies beyond it, so clamping does not change which ids a range allows)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected an integer, got {v!r}")
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v) or v != math.floor(v):
            raise ValueError(f"{name}: expected an integer, got {v!r}")
    return min(max(int(v), -_I64_LIMIT), _I64_LIMIT)


def sorted_ids(a: np.ndarray) -> np.ndarray:
    """Sorted distinct copy of a 1-D int64 array: a copy and one pass over it when it is
    already strictly increasing, a sort plus one pass otherwise."""
    b, done = copy_checked(a)
    return b if done else sort_distinct(b)


def copy_checked(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """A C-order copy of the 1-D int64 array ``a`` and whether it is strictly increasing
    (then it is already :func:`sorted_ids`' answer), in one compiled pass that copies and
    checks (:func:`fk.copy_increasing`): a request's id array is usually cold (just built
    from a user's behaviors), so it is read from memory once, not twice."""
    b = np.empty(a.shape[0], np.int64)
    return b, bool(fk.copy_increasing(a, b))


#: :func:`sort_distinct` sorts through a bitmap over the values' span from this many values
#: on, when they cover at least 1/SORT_BITMAP_SPAN of that span
SORT_BITMAP_MIN = 1024
SORT_BITMAP_SPAN = 64


def sort_distinct(b: np.ndarray) -> np.ndarray:
    """The distinct values of the int64 array ``b`` ascending (``b`` may be reordered).

    Values dense in their span (at least ``SORT_BITMAP_MIN`` of them, covering at least
    1/``SORT_BITMAP_SPAN`` of ``max - min + 1``: a user's item ids, a time window) are set
    in a bitmap over the span and read back in order, O(span/64 + m), duplicates gone; the
    others are sorted in place (introsort, then one pass). Random ids, one thread, this VM
    (where numpy's sort of int64 takes ~38 ns a value at 10^5): 10,000 of 200,000 260 →
    34 µs, 100,000 of 200,000 3.9 → 0.25 ms."""
    m = b.shape[0]
    if m >= SORT_BITMAP_MIN:
        lo, hi = fk.min_max(b)
        span = int(hi) - int(lo) + 1
        if 0 < span <= SORT_BITMAP_SPAN * m:
            bm, cnt, _, _ = fk.ids_bitmap64(b, lo, span)
            out = fk.bitmap64_rows(bm, cnt)
            out += lo
            return out
    b.sort()
    return fk.dedup_sorted(b)


class IdMap:
    """Maps external int64 ids to row numbers ``0..n-1`` of an index.

    When the ids are exactly ``0..n-1`` (the default) the map is the identity and
    costs nothing; ids ``b..b+n-1`` are an offset. Otherwise lookups use a dense table
    (``table[id - min]``, built on first use) when the ids span at most
    ``8·n`` values, or binary search in a sorted copy.

    ``dead``: optional (n,) bool tombstones of an index with removed rows: those rows
    keep their id in :attr:`ids` (so :meth:`to_ids` still names them) but :meth:`rows`
    never returns them, and a live row may reuse a dead row's id (lookups then go through
    a sorted copy of the live ids).
    """

    def __init__(self, ids: np.ndarray, dead: np.ndarray | None = None):
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        n = self.ids.shape[0]
        self.dead = None if dead is None or not dead.any() else np.ascontiguousarray(dead, dtype=bool)
        if self.dead is not None:  # tombstones: binary search over the live rows only
            live = np.flatnonzero(~self.dead)
            self.increasing = False
            self.offset = None
            self.identity = False
            self._order = live[np.argsort(self.ids[live], kind="stable")]
            self._sorted = self.ids[self._order]
            self._table = (np.zeros(0, np.int32), 0)  # no dense table
            return
        inc = n < 2 or bool(fk.strictly_increasing(self.ids))
        self.increasing = inc
        self.offset: int | None = None
        if n == 0:
            self.offset = 0
        elif inc and int(self.ids[-1]) - int(self.ids[0]) == n - 1:
            self.offset = int(self.ids[0])
        self.identity = self.offset == 0
        self._order: np.ndarray | None = None
        self._sorted: np.ndarray | None = None
        self._table: tuple[np.ndarray, int] | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def id_span(self) -> int:
        """``max(id) + 1`` (0 for an empty map): the length a boolean mask over the ids
        must have to cover them."""
        n = len(self)
        if n == 0:
            return 0
        return int(self.ids[-1] if self.increasing else self.ids.max()) + 1

    def _sorted_view(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(sorted ids, order)`` with ``ids[order] == sorted`` (order None: already sorted)."""
        if self.increasing:
            return self.ids, None
        if self._sorted is None:
            self._order = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._order]
        return self._sorted, self._order

    def _lookup_table(self) -> tuple[np.ndarray, int] | None:
        """The dense table ``(table, base)`` with ``table[id - base] = row`` (-1 = absent),
        or None when the ids are too spread out for one."""
        if self._table is None:
            n = len(self)
            lo = int(self.ids.min())
            span = int(self.ids.max()) - lo + 1
            if span > _TABLE_SPAN * max(n, 1):
                self._table = (np.zeros(0, np.int32), 0)
            else:
                t = np.full(span, -1, np.int64 if n >= 2**31 else np.int32)
                t[self.ids - lo] = np.arange(n, dtype=t.dtype)
                self._table = (t, lo)
        return self._table if self._table[0].shape[0] else None

    def __getstate__(self) -> dict[str, Any]:
        # the id table is derived and rebuilt on first use: it does not travel with a
        # pickled index (Dask workers)
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def _hash_table(self) -> tuple[np.ndarray, int]:
        """``(table, bits)`` of :func:`gsu.index._filter_kernels.id_hash_build` over the ids
        (a map without tombstones whose ids are too spread out for the dense table), built
        on first use: ``2^bits`` slots of 16 bytes, at most 0.7 full (23-46 bytes per id).
        Two threads building it at once build the same table; either is kept."""
        h = self.__dict__.get("_hash")
        if h is None:
            n = len(self)
            bits = max(4, int(math.ceil(math.log2(max(n, 1) / 0.7))))
            h = self._hash = (fk.id_hash_build(self.ids, bits), bits)
        return h

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids`` (int64), ``-1`` for ids not present."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(self)
        if self.offset is not None:
            r = ids - self.offset if self.offset else ids
            return np.where((r >= 0) & (r < n), r, -1)
        if self.dead is None and ids.size and (ids.size >= 64 or not self.increasing or "_hash" in self.__dict__):
            # a lookup table (dense over the id span, else the id table) rather than a binary
            # search (~20 ns an id in a map past the cache); a few ids in sorted ids: the search
            tab = self._lookup_table()
            if tab is not None:
                t, base = tab
                with np.errstate(over="ignore"):
                    i = ids - base  # wraps only for ids outside the span (ok excludes them)
                ok = (ids >= base) & (i >= 0) & (i < t.shape[0])
                return np.where(ok, t[np.where(ok, i, 0)], -1).astype(np.int64, copy=False)
            tab_h, bits = self._hash_table()
            flat = np.ascontiguousarray(ids.reshape(-1))
            out = np.empty(flat.shape[0], np.int64)
            fk.id_hash_lookup(flat, tab_h, bits, out)
            return out.reshape(ids.shape)
        srt, order = self._sorted_view()
        ns = srt.shape[0]  # fewer than n when rows are dead
        pos = np.searchsorted(srt, ids)
        pos_c = np.minimum(pos, max(ns - 1, 0))
        if ns == 0:
            return np.full(ids.shape, -1, np.int64)
        hit = (pos < ns) & (srt[pos_c] == ids)
        return np.where(hit, pos_c if order is None else order[pos_c], -1)

    def rows_of_sorted(self, ids: np.ndarray) -> np.ndarray:
        """Sorted rows of the sorted distinct ``ids`` that are in the map (absent ids
        dropped). Under the identity map this is a view of ``ids`` (O(log m))."""
        m = ids.shape[0]
        n = len(self)
        if m == 0 or n == 0:
            return _EMPTY
        off = self.offset
        if off is not None:
            lo = 0 if ids[0] >= off else int(np.searchsorted(ids, off))
            hi = m if ids[m - 1] < off + n else int(np.searchsorted(ids, off + n))
            r = ids[lo:hi]
            return r - off if off else r
        tab = self._lookup_table()
        if tab is not None:
            out = np.empty(m, np.int64)
            w, inc = fk.table_rows(ids, tab[0], tab[1], out)
            out = out[:w]
            if not inc:
                out.sort()
            return out
        if self.dead is None:  # spread-out ids (hashed item ids): the id table, one line per id
            tab_h, bits = self._hash_table()
            out = np.empty(m, np.int64)
            w, inc = fk.id_hash_rows(ids, tab_h, bits, out)
            out = out[:w]
            if not inc:
                out.sort()
            return out
        r = self.rows(ids)
        r = r[r >= 0]
        if not self.increasing:
            r.sort()
        return r

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


class CompiledFilter:
    """A filter resolved against one index: allowed *row numbers*, sorted, per query.

    ``indptr`` (nq+1,) and ``rows`` form a CSR structure: the allowed rows of query
    ``q`` are ``rows[indptr[q]:indptr[q+1]]``, sorted ascending. A shared filter
    (one for all queries) has ``shared=True``, ``indptr == [0, m]`` and is valid for
    any number of queries. ``n`` is the number of rows in the index.

    A shared filter is compiled lazily: :attr:`count` and :attr:`run` are known at
    once (O(1) for an id array or a range), :attr:`rows` is materialised on first use
    (a view for an id array under the default ids; O(m) for a range, O(n) for a mask),
    and :meth:`bitmap64` (what the graph walk tests) is built from whichever of rows,
    run or mask is at hand. Indexes cache what they derive from it on it
    (:meth:`CompiledFilter.derived` / :meth:`CompiledFilter.keep`), so a filter reused across calls pays each only once.
    """

    __slots__ = ("n", "shared", "_rows", "_indptr", "_count", "_run", "_mask", "_masks")

    def __init__(self, indptr: np.ndarray | None, rows: np.ndarray | None, n: int, shared: bool, *,
                 count: int | None = None, run: tuple[int, int] | None = None, mask: np.ndarray | None = None):
        self.n = int(n)
        self.shared = bool(shared)
        self._rows = rows
        self._indptr = indptr
        self._run = run
        self._mask = mask
        if count is None:
            count = int(rows.shape[0]) if rows is not None else (run[1] - run[0] if run is not None else None)
        self._count = count
        self._masks: dict = {}

    @classmethod
    def from_rows(cls, rows: np.ndarray, n: int) -> "CompiledFilter":
        """A shared filter allowing the sorted distinct ``rows`` of ``n``."""
        return cls(None, rows, n, True)

    @classmethod
    def from_bitmap(cls, bm: np.ndarray, m: int, n: int, run: tuple[int, int] | None = None) -> "CompiledFilter":
        """A shared filter given as its bitmap (:meth:`bitmap64`'s form) with ``m`` rows set
        (``run``: they are exactly ``lo..hi-1``); :attr:`rows` is extracted from the
        bitmap only if a route asks for it."""
        cf = cls(None, None, n, True, count=int(m), run=run)
        cf._masks["bitmap64"] = bm
        return cf

    # -- what every route reads ---------------------------------------------
    @property
    def rows(self) -> np.ndarray:
        r = self._rows
        if r is None:
            if self._run is not None:
                r = np.arange(self._run[0], self._run[1], dtype=np.int64)
            elif self._mask is None:  # given as a bitmap (from_bitmap)
                r = fk.bitmap64_rows(self._masks["bitmap64"], self._count)
            else:
                r = np.flatnonzero(self._mask).astype(np.int64, copy=False)
            self._rows = r
        return r

    @property
    def indptr(self) -> np.ndarray:
        p = self._indptr
        if p is None:
            p = self._indptr = np.array([0, self.count], dtype=np.int64)
        return p

    @property
    def count(self) -> int:
        """Allowed rows of a shared filter (``m``)."""
        c = self._count
        if c is None:
            c = self._count = int(np.count_nonzero(self._mask)) if self._rows is None else int(self._rows.shape[0])
        return c

    @property
    def run(self) -> tuple[int, int] | None:
        """``(lo, hi)`` when the allowed rows of a shared filter are exactly
        ``lo..hi-1`` (one contiguous run: a time window over rows in time order), else None."""
        if self._run is None and self.shared and self._rows is not None:
            r = self._rows
            m = r.shape[0]
            if m and int(r[m - 1]) - int(r[0]) + 1 == m:
                self._run = (int(r[0]), int(r[m - 1]) + 1)
        return self._run

    def derived(self, key: Any) -> Any:
        """What an index derived from this filter under ``key`` (its faiss selector, IVF
        grouping, ...) and cached with :meth:`keep`; ``None`` when not derived yet. The
        cache goes when the filter goes, so a shared filter reused across calls (one
        user's behavior set for many candidate queries) pays each derivation once."""
        return self._masks.get(("gsu.index.derived", key))

    def keep(self, key: Any, value: Any) -> Any:
        """Cache ``value`` as what was derived from this filter under ``key``; returns it."""
        self._masks[("gsu.index.derived", key)] = value
        return value

    def cached_state(self) -> tuple[Any, frozenset[Any]]:
        """What this filter holds now beyond its definition (its row array, the keys of its
        cached forms), for :meth:`drop_cached_since`."""
        return self._rows, frozenset(self._masks)

    def drop_cached_since(self, state: tuple[Any, frozenset[Any]]) -> None:
        """Forget what was cached after :meth:`cached_state` returned ``state`` (rows a
        route extracted, forms and derivations it kept): a kept filter searched as if fresh."""
        self._rows = state[0]
        for key in [key for key in self._masks if key not in state[1]]:
            del self._masks[key]

    def bitmap64(self) -> np.ndarray:
        """The shared filter's rows as a bitmap, (ceil(n/64),) uint64 (bit ``r & 63`` of word
        ``r >> 6``; its bytes are faiss's ``IDSelectorBitmap`` layout), cached: O(n/64)
        for a run, O(n/64 + m) for rows, O(n/8) for a mask."""
        bm = self._masks.get("bitmap64")
        if bm is None:
            n = self.n
            if self.run is not None:
                bm = fk.range_bitmap64(self._run[0], self._run[1], n)
            elif self._rows is None and self._mask is not None:
                packed = np.packbits(self._mask, bitorder="little")
                bm = np.zeros((n + 63) >> 6, np.uint64)
                bm.view(np.uint8)[: packed.shape[0]] = packed
            else:
                bm = fk.rows_bitmap64(self.rows, n)
            self._masks["bitmap64"] = bm
        return bm

    # -- per query ------------------------------------------------------------
    @property
    def n_queries(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def query_rows(self, q: int) -> np.ndarray:
        if self.shared:
            return self.rows
        return self.rows[self._indptr[q] : self._indptr[q + 1]]

    def counts(self, nq: int) -> np.ndarray:
        """Allowed-row count for each of ``nq`` queries, (nq,) int64."""
        if self.shared:
            return np.full(nq, self.count, dtype=np.int64)
        return np.diff(self._indptr).astype(np.int64, copy=False)

    def mask(self, q: int = 0) -> np.ndarray:
        """Boolean mask over the index rows for query ``q`` (cached for shared filters)."""
        key = ("mask", 0 if self.shared else q)
        m = self._masks.get(key)
        if m is None:
            if self.shared and self._mask is not None and self._rows is None:
                m = self._mask
            else:
                m = np.zeros(self.n, dtype=bool)
                if self.shared and self.run is not None:
                    m[self._run[0] : self._run[1]] = True
                else:
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
        return self._indptr[:-1].astype(np.int64), self._indptr[1:].astype(np.int64)

    def __repr__(self) -> str:
        if self.shared:
            return f"CompiledFilter(shared, {self.count} of {self.n} rows)"
        return f"CompiledFilter({self.n_queries} queries, {self.rows.shape[0]} rows in all, n={self.n})"


class Filter:
    """Which ids a search may return.

    Build with one of the constructors:

    - ``Filter.from_ids(ids)`` — an id array, list or ``pyroaring.BitMap``
    - ``Filter.from_mask(mask)`` — boolean mask over ids ``0..len(mask)-1``
    - ``Filter.range(lo, hi)`` — ids in ``[lo, hi)``
    - ``Filter.time_range(times, lo, hi, ids=None)`` — items whose attribute (e.g. a
      timestamp, one value per item) lies in ``[lo, hi)``
    - ``Filter.per_query([f0, f1, ...])`` — one filter (or id array) per query row
    - ``Filter.from_csr(indptr, ids)`` — one id set per query row, in CSR form
    - ``Filter.all()`` — everything

    Combine with ``&`` (and), ``|`` (or), ``~`` (not). ``Filter(x)`` accepts any of
    an id array, a boolean mask, a BitMap, a list of per-query filters or a Filter.

    Ids must fit in int64: uint64 values from ``2**63`` on and floats beyond the int64
    range (``1e20``) raise ``ValueError`` instead of wrapping. A mask compiled against an
    index must cover exactly that index's ids (length ``max(id) + 1``, i.e. ``n`` for the
    default ids ``0..n-1``); another length raises ``ValueError``.
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
        """The ids of ``ids``: a 1-D integer array or list (any order, duplicates allowed)
        or a ``pyroaring.BitMap``/``BitMap64``. O(m) when the ids come sorted and distinct
        (one vectorised check plus a copy), O(m log m) otherwise."""
        if isinstance(ids, BitMap):
            arr = np.frombuffer(ids.to_array(), dtype=np.uint32).astype(np.int64) if len(ids) else _EMPTY
            return cls(_kind="ids", _data=arr)
        if type(ids).__name__ in ("BitMap64", "FrozenBitMap64"):
            raw = np.frombuffer(ids.to_array(), dtype=np.uint64) if len(ids) else np.zeros(0, np.uint64)
            return cls(_kind="ids", _data=sorted_ids(_id_array(raw, "filter ids")))
        arr = _id_array(ids, "filter ids")
        return cls(_kind="ids", _data=sorted_ids(arr))

    @classmethod
    def from_mask(cls, mask: Any) -> "Filter":
        """Ids ``i`` with ``mask[i]`` (a 1-D boolean array, copied)."""
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.ndim != 1:
            raise ValueError(f"filter mask: expected a 1-D boolean array, got dtype {m.dtype} shape {m.shape}")
        return cls(_kind="mask", _data=np.array(m, dtype=bool, order="C", copy=True))

    @classmethod
    def range(cls, lo: int, hi: int) -> "Filter":
        """Ids in ``[lo, hi)`` (integers; bounds beyond int64 clamp to its range)."""
        lo, hi = _int_bound(lo, "filter range lo"), _int_bound(hi, "filter range hi")
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
        sel = (v >= lo) & (v < hi)
        if ids is None:
            return cls(_kind="ids", _data=np.flatnonzero(sel).astype(np.int64, copy=False))
        ids_arr = _id_array(ids, "time_range ids")
        if ids_arr.shape[0] != v.shape[0]:
            raise ValueError(f"time_range ids: expected {v.shape[0]} ids (one per value), got {ids_arr.shape[0]}")
        return cls(_kind="ids", _data=sorted_ids(ids_arr[sel]))

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
    def from_csr(cls, indptr: Any, ids: Any) -> "Filter":
        """Per-query id sets in CSR form: query ``q`` allows ``ids[indptr[q]:indptr[q+1]]``.

        Checked and stored in one pass (no per-query objects): sets that come sorted and
        distinct are kept as they are; others are sorted per query.
        """
        p = _id_array(indptr, "filter indptr")
        a = np.ascontiguousarray(_id_array(ids, "filter ids"))
        if p.shape[0] < 2 or p[0] != 0 or p[-1] != a.shape[0] or (np.diff(p) < 0).any():
            raise ValueError(f"filter indptr: expected non-decreasing offsets from 0 to {a.shape[0]} (at least 2 entries)")
        p = np.ascontiguousarray(p)
        if fk.segments_increasing(p, a):
            return cls(_kind="csr", _data=(p.copy(), a.copy()))
        parts = [sorted_ids(a[p[q] : p[q + 1]]) for q in range(p.shape[0] - 1)]
        lens = np.fromiter((x.shape[0] for x in parts), dtype=np.int64, count=len(parts))
        p2 = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(lens, out=p2[1:])
        return cls(_kind="csr", _data=(p2, np.concatenate(parts) if parts else _EMPTY))

    @classmethod
    def coerce(cls, spec: Any) -> "Filter":
        """Turn any accepted filter spec into a ``Filter``."""
        if isinstance(spec, Filter):
            return spec
        if spec is None:
            return cls.all()
        if type(spec) is np.ndarray:
            return cls.from_mask(spec) if spec.dtype == np.bool_ else cls.from_ids(spec)
        if isinstance(spec, BitMap):
            return cls.from_ids(spec)
        if type(spec).__name__ in ("BitMap64", "FrozenBitMap64"):
            return cls.from_ids(spec)
        if isinstance(spec, (list, tuple)) and spec and all(
            isinstance(f, (Filter, np.ndarray, list, tuple)) or (isinstance(f, BitMap)) for f in spec
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
        k = self._kind
        if k in ("per_query", "csr"):
            return True
        if k in ("and", "or"):
            return self._data[0].is_per_query or self._data[1].is_per_query
        if k == "not":
            return self._data.is_per_query
        return False

    @property
    def is_all(self) -> bool:
        return self._kind == "all"

    def __len__(self) -> int:
        if self._kind == "csr":
            return int(self._data[0].shape[0] - 1)
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
        if self._kind == "csr":
            return f"Filter.from_csr(<{len(self)} queries, {self._data[1].size} ids>)"
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
        if k == "csr":
            p, a = self._data
            return Filter(_kind="ids", _data=a[p[q] : p[q + 1]])
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
        if k == "csr":
            return len(self)
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

    def _check_masks(self, idmap: IdMap) -> None:
        """Every mask in this filter covers exactly ``idmap``'s ids (length ``max(id)+1``)."""
        k = self._kind
        if k == "mask":
            span = idmap.id_span
            if self._data.shape[0] != span:
                what = f"n = {span} rows (ids 0..{span - 1})" if idmap.identity else f"ids up to {span - 1} (length {span})"
                raise ValueError(f"filter mask has length {self._data.shape[0]} but the index's id space needs {what}")
        elif k in ("and", "or"):
            self._data[0]._check_masks(idmap)
            self._data[1]._check_masks(idmap)
        elif k == "not":
            self._data._check_masks(idmap)
        elif k == "per_query":
            for f in self._data:
                f._check_masks(idmap)

    def _rows(self, idmap: IdMap) -> np.ndarray:
        """Sorted allowed rows of a single filter against ``idmap``."""
        k = self._kind
        n = len(idmap)
        if k == "all":
            return np.arange(n, dtype=np.int64)
        if k == "ids":
            return idmap.rows_of_sorted(self._data)
        if k == "range" and idmap.offset is not None:
            lo, hi = self._data
            a, b = max(lo - idmap.offset, 0), min(hi - idmap.offset, n)
            return np.arange(a, max(a, b), dtype=np.int64)
        if k == "mask" and idmap.identity:
            return np.flatnonzero(self._data[:n]).astype(np.int64)
        if k == "and":
            a, b = self._data
            # intersect the cheaper side's rows with the other's membership
            ra = a._rows(idmap)
            return ra[b.allows(idmap.ids[ra])] if ra.size else ra
        return np.flatnonzero(self.allows(idmap.ids)).astype(np.int64)

    def _compile_shared(self, idmap: IdMap) -> CompiledFilter:
        """Lazy compiled form of a single filter (see :class:`CompiledFilter`)."""
        n = len(idmap)
        k = self._kind
        if k == "ids":
            return CompiledFilter(None, idmap.rows_of_sorted(self._data), n, True)
        if k == "range" and idmap.offset is not None:
            lo, hi = self._data
            a, b = max(lo - idmap.offset, 0), min(hi - idmap.offset, n)
            return CompiledFilter(None, None, n, True, run=(a, max(a, b)))
        if k == "mask" and idmap.identity:
            return CompiledFilter(None, None, n, True, mask=self._data)
        if k == "all":
            return CompiledFilter(None, None, n, True, run=(0, n))
        return CompiledFilter(None, self._rows(idmap), n, True)

    def compile(self, idmap: IdMap, nq: int) -> CompiledFilter:
        """Resolve against an index's ids for ``nq`` queries (see :class:`CompiledFilter`).

        Raises ``ValueError`` when a mask's length differs from the index's id space or a
        per-query filter's number of entries from ``nq``.
        """
        m = self.n_queries()
        if m is None:
            # a shared filter is often reused across calls (one query at a time): cache it
            c = self._cache
            if c is not None and c[0] is idmap:
                return c[1]
            if self._kind != "ids":
                self._check_masks(idmap)
            cf = self._compile_shared(idmap)
            self._cache = (idmap, cf)
            return cf
        if m != nq:
            raise ValueError(f"per-query filter has {m} entries but there are {nq} queries")
        self._check_masks(idmap)
        n = len(idmap)
        if self._kind == "csr":
            p, a = self._data
            return self._compile_csr(idmap, nq, p, a)
        if self._kind == "per_query" and all(f._kind == "ids" for f in self._data):
            sets = [f._data for f in self._data]
            lens = np.fromiter((s.shape[0] for s in sets), dtype=np.int64, count=nq)
            p = np.zeros(nq + 1, np.int64)
            np.cumsum(lens, out=p[1:])
            return self._compile_csr(idmap, nq, p, np.concatenate(sets) if nq else _EMPTY, fresh=True)
        parts = [self.for_query(q)._rows(idmap) for q in range(nq)]
        indptr = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum([p.shape[0] for p in parts], out=indptr[1:])
        rows = np.concatenate(parts) if parts else _EMPTY
        return CompiledFilter(indptr, rows.astype(np.int64, copy=False), n, False)

    @staticmethod
    def _compile_csr(idmap: IdMap, nq: int, p: np.ndarray, ids: np.ndarray, *, fresh: bool = False) -> CompiledFilter:
        """Per-query sorted id sets in CSR form (``p``, ``ids``) → compiled rows, in one pass
        under an offset (or identity) map; ``fresh``: ``ids`` is a new array that may be
        overwritten in place."""
        n = len(idmap)
        if idmap.offset is not None:
            src = ids - idmap.offset if idmap.offset else ids
            out = src if (fresh or idmap.offset) else np.empty_like(ids)
            indptr = np.empty(nq + 1, np.int64)
            lens = np.diff(p)
            w = fk.compact_id_sets(src, lens, n, out, indptr)  # in place allowed: writes trail reads
            return CompiledFilter(indptr, out[:w], n, False)
        rows = idmap.rows(ids)
        seg = np.repeat(np.arange(nq, dtype=np.int64), np.diff(p))
        keep = rows >= 0
        rows, seg = rows[keep], seg[keep]
        if not idmap.increasing:  # ids were sorted per query; rows need sorting within each query
            order = np.lexsort((rows, seg))
            rows, seg = rows[order], seg[order]
        indptr = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.bincount(seg, minlength=nq), out=indptr[1:])
        return CompiledFilter(indptr, rows, n, False)

