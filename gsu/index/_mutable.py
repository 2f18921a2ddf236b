"""``MutableIndex``: ``remove`` / ``upsert`` / ``compact`` through tombstones.

A removed item keeps its row (and its place in faiss's graph or an inverted list) and
gets a *tombstone*: a (n,) bool mark saved with the index (array ``tombstones``).
Every search route honours tombstones exactly as it honours a filter: the compiled
filter of each call (or the live rows, when there is no filter) loses its dead rows
before any kernel or faiss selector sees it (:meth:`MutableIndex.compile_filter`), so
a dead item is never returned and a filtered search over the live items stays exact
where it was. ``upsert`` removes the ids it names (when present) and adds the new
vectors as new rows. :meth:`MutableIndex.compact` drops the dead rows for good
(each index kind knows how: a slice of the vectors, a re-layout of the inverted lists,
a rebuild of the graph); it runs by itself when the dead rows pass
``compact_threshold`` of all rows.

Subclasses keep ``self._idmap`` (an :class:`~gsu.index.filters.IdMap` built with the
tombstones) and implement ``_compact_rows(live)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gsu._validate import as_ids
from gsu.errors import FieldError
from gsu.index.base import Index
from gsu.index import _filter_kernels as fk
from gsu.index.filters import CompiledFilter, Filter, IdMap, copy_checked, sort_distinct, sorted_ids

log = logging.getLogger(__name__)

__all__ = ["MutableIndex", "DEFAULT_COMPACT_THRESHOLD"]

#: share of dead rows past which ``remove``/``upsert`` compact the index by themselves
DEFAULT_COMPACT_THRESHOLD = 0.25
_LIVE = "gsu.index.live"  # cache key of a filter's tombstone-free form, on its compiled form
#: a plain id array holding at least 1/BITMAP_FIRST_SHARE of an index's rows compiles
#: straight to a bitmap on indexes whose routes read one (``_bitmap_first``): setting its
#: bits costs about what a sorted copy of the ids costs, and the walk needs the bitmap
BITMAP_FIRST_SHARE = 16
#: the same for an array that is not sorted (found while copying it), from 1/40 of the rows:
#: setting bits costs ~1 ns per id plus a pass over n/64 words (and the rows, if a route asks,
#: another), sorting ~0.34 ns × m·log2 m. Searched end to end (200,000 × 64, one thread),
#: the bitmap lost 6-12 µs of 55-115 at 1/64-1/48 of the rows and won 24-50 µs at 1/40-1/20
UNSORTED_BITMAP_SHARE = 40


def _bitmap_filter(bm: np.ndarray, m: int, rmin: int, rmax: int, n: int) -> CompiledFilter:
    """A shared compiled filter from a bitmap kernel's ``(bm, m, rmin, rmax)`` over ``n``
    rows (one contiguous run when its set rows fill ``rmin..rmax``)."""
    return CompiledFilter.from_bitmap(bm, m, n, (rmin, rmax + 1) if m and rmax - rmin + 1 == m else None)


def _window(ids: np.ndarray, distinct: bool, offset: int, n: int) -> CompiledFilter | None:
    """The shared filter of the non-empty int64 ``ids`` as one run of rows when they are
    consecutive ascending ids (a time window over items stored in time order; an offset id
    map of ``n`` rows), checked by one compare pass unless ``distinct``; else ``None``."""
    m = ids.shape[0]
    a = int(ids[0])
    if int(ids[m - 1]) - a + 1 == m and (distinct or fk.strictly_increasing(ids)):
        lo = min(max(a - offset, 0), n)
        return CompiledFilter(None, None, n, True, run=(lo, min(max(a - offset + m, lo), n)))
    return None


class MutableIndex(Index):
    """An index with ``remove(ids)``, ``upsert(vectors, ids)`` and ``compact()``
    (see the module docstring). ``compact_threshold`` (a float in [0, 1], saved with
    the index): compact automatically once ``dead rows > compact_threshold × rows``;
    ``1.0`` never compacts by itself."""

    _dead: np.ndarray | None = None  # (n,) bool tombstones, None when no row is dead
    _n_dead: int = 0
    _tomb_gen: int = 0  # bumped by every change of the tombstones
    compact_threshold: float = DEFAULT_COMPACT_THRESHOLD
    #: large plain id arrays compile straight to a bitmap (see BITMAP_FIRST_SHARE)
    _bitmap_first: bool = False

    # -- what subclasses provide ------------------------------------------------
    def _compact_rows(self, live: np.ndarray) -> None:  # pragma: no cover - abstract
        """Keep only rows ``live`` (sorted int64): rewrite the stored data and ``_idmap``.

        Every mutable index kind (Flat, IVF, HNSW) overrides this hook."""
        raise TypeError(f"{type(self).__name__} does not implement compaction (_compact_rows)")

    # -- state ------------------------------------------------------------------
    @property
    def n_live(self) -> int:
        """Items that searches can return (rows less tombstones)."""
        return self.ntotal - self._n_dead

    @property
    def n_dead(self) -> int:
        """Rows marked removed and not yet reclaimed by :meth:`compact`."""
        return self._n_dead

    @property
    def live_ids(self) -> np.ndarray:
        """(n_live,) int64 ids of the live rows, in row order."""
        ids = self._idmap.ids
        return ids if self._dead is None else ids[~self._dead]

    def __len__(self) -> int:
        return self.n_live

    def _set_dead(self, dead: np.ndarray | None) -> None:
        """Install tombstones (None or all False: none) and rebuild the id map."""
        if dead is not None and not dead.any():
            dead = None
        self._dead = dead
        self._n_dead = 0 if dead is None else int(np.count_nonzero(dead))
        self._tomb_gen += 1
        self.__dict__.pop("_live_cf", None)
        self._idmap = IdMap(self._idmap.ids, dead)

    def _appended(self, new_ids: np.ndarray) -> None:
        """``new_ids`` (live rows) were appended to the stored data: extend the id map
        and the tombstones."""
        ids = np.concatenate([self._idmap.ids, new_ids])
        if self._dead is not None:
            self._dead = np.concatenate([self._dead, np.zeros(new_ids.shape[0], bool)])
            self.__dict__.pop("_live_cf", None)
            self._tomb_gen += 1
        self._idmap = IdMap(ids, self._dead)

    # -- filters ----------------------------------------------------------------
    def compile_filter(self, filter: Any, nq: int) -> CompiledFilter | None:
        """The compiled form of ``filter`` (anything ``Filter.coerce`` accepts) for ``nq``
        queries with the dead rows dropped; ``None`` when every row may be returned (no
        filter, no tombstone). A shared filter's tombstone-free form is cached on its
        compiled form (and the live rows on the index), so a reused filter pays once."""
        dead = self._dead
        if filter is None and dead is None:
            return None
        if dead is None:
            if type(filter) is np.ndarray and filter.dtype == np.int64 and filter.ndim == 1:
                # a plain id array (a request's fresh filter): compiled as Filter.from_ids(filter)
                # would be, without the Filter object
                return self._compile_ids(filter, False)
            if type(filter) is Filter and filter._kind == "ids":
                # Filter.from_ids(ids) (sorted, distinct, its own copy): the same way, cached on it
                c = filter._cache
                if c is not None and c[0] is self._idmap:
                    return c[1]
                cf = self._compile_ids(filter._data, True)
                filter._cache = (self._idmap, cf)
                return cf
        f = filter if type(filter) is Filter else Filter.coerce(filter)
        if f.is_all:
            if dead is None:
                return None
            cf = self.__dict__.get("_live_cf")
            if cf is None:
                rows = np.flatnonzero(~dead).astype(np.int64)
                cf = self._live_cf = CompiledFilter(np.array([0, rows.shape[0]], np.int64), rows, self.ntotal, True)
            return cf
        cf = f.compile(self._idmap, nq)
        if dead is None:
            return cf
        key = (_LIVE, id(self), self._tomb_gen)
        hit = cf._masks.get(key) if cf.shared else None
        if hit is not None:
            return hit
        keep = ~dead[cf.rows]
        if keep.all():
            out = cf
        elif cf.shared:
            rows = cf.rows[keep]
            out = CompiledFilter(np.array([0, rows.shape[0]], np.int64), rows, cf.n, True)
        else:
            c = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
            out = CompiledFilter(c[cf.indptr], cf.rows[keep], cf.n, False)
        if cf.shared:
            cf._masks[key] = out
        return out

    def _compile_ids(self, ids: np.ndarray, distinct: bool, rows: bool = False) -> CompiledFilter:
        """The shared compiled filter of the int64 id array ``ids`` (``distinct``: sorted and
        distinct already, as ``Filter.from_ids`` keeps them) on an index without tombstones:
        straight to the bitmap on indexes whose routes read one when the ids are many, else
        the sorted rows (the array is never modified). ``rows``: the sorted rows in any case
        (the caller knows the route reads them: the exact scan of a filter within its limit)."""
        idmap = self._idmap
        n = len(idmap)
        m = ids.shape[0]
        if rows:
            if idmap.offset is not None and m and n > 0:
                win = _window(ids, distinct, idmap.offset, n)  # a window: its run
                if win is not None:
                    return win
            b = ids if distinct else sorted_ids(ids)
            return CompiledFilter(None, idmap.rows_of_sorted(b), n, True)
        if (self._bitmap_first and idmap.offset is None and n > 0 and ids.shape[0] * BITMAP_FIRST_SHARE >= n
                and idmap._lookup_table() is None):
            # spread-out ids (hashed item ids): straight to the bitmap through the id
            # table, in any order, with no sorted copy (rows extracted only if a route asks)
            return _bitmap_filter(*fk.id_hash_bitmap(ids, *idmap._hash_table(), n), n)
        bitmap_ok = self._bitmap_first and idmap.offset is not None and n > 0
        if bitmap_ok and ids.shape[0] * BITMAP_FIRST_SHARE >= n:
            # one contiguous run of ids (a time window over items stored in time order):
            # the run itself, checked by one compare pass (a sixth of setting its bits)
            win = _window(ids, distinct, idmap.offset, n)
            if win is not None:
                return win
            # a large one straight to the bitmap the walk and the list scan read: one
            # pass over the ids, no sorted copy (rows extracted only if a route asks);
            # _bitmap_of_ids written out (a request's path: each Python call costs ~1 µs
            # here, cold after the previous search's kernel)
            bm, cnt, rmin, rmax = fk.ids_bitmap64(ids, idmap.offset, n)
            return CompiledFilter.from_bitmap(bm, cnt, n, (rmin, rmax + 1) if cnt and rmax - rmin + 1 == cnt else None)
        if distinct:
            b = ids
        else:
            b, done = copy_checked(ids)  # sorted_ids, with the bitmap as a third way
            if not done:
                if bitmap_ok and b.shape[0] * UNSORTED_BITMAP_SHARE >= n:
                    return self._bitmap_of_ids(b)  # cheaper than sorting it (see UNSORTED_BITMAP_SHARE)
                b = sort_distinct(b)
        return CompiledFilter(None, idmap.rows_of_sorted(b), n, True)

    def _bitmap_of_ids(self, ids: np.ndarray) -> CompiledFilter:
        """A shared filter of the plain int64 ``ids`` (any order, repeats, ids outside
        dropped) as its bitmap, for an index with an offset id map and no tombstones."""
        idmap = self._idmap
        n = len(idmap)
        return _bitmap_filter(*fk.ids_bitmap64(ids, idmap.offset, n), n)

    # -- mutation ---------------------------------------------------------------
    def remove(self, ids: Any, *, missing_ok: bool = False) -> int:
        """Mark the items ``ids`` (int64) removed: no search returns them from now on.

        Unknown (or already removed) ids raise ``KeyError`` unless ``missing_ok``.
        Returns the number of items removed. Compacts the index when the dead rows pass
        ``compact_threshold``.
        """
        want = as_ids(ids, name="ids")
        if want.size == 0:
            return 0
        rows = self._idmap.rows(want)
        if not missing_ok and (rows < 0).any():
            raise KeyError(f"ids not in the index: {want[rows < 0][:5].tolist()}")
        rows = np.unique(rows[rows >= 0])
        if rows.size == 0:
            return 0
        dead = np.zeros(self.ntotal, bool) if self._dead is None else self._dead.copy()
        dead[rows] = True
        self._set_dead(dead)
        self._maybe_compact()
        return int(rows.size)

    def upsert(self, vectors: Any, ids: Any) -> None:
        """Insert ``vectors`` (n, d) float32 under ``ids`` (n,) int64 (unique), replacing
        the items that already hold any of these ids."""
        new_ids = as_ids(ids, name="ids", unique=True)
        rows = self._idmap.rows(new_ids)
        rows = rows[rows >= 0]
        if rows.size:
            dead = np.zeros(self.ntotal, bool) if self._dead is None else self._dead.copy()
            dead[rows] = True
            self._set_dead(dead)
        self.add(vectors, new_ids)
        self._maybe_compact()

    def compact(self) -> int:
        """Drop the dead rows for good (rewrites the stored data; a graph index rebuilds
        its graph over the live rows). Returns the number of rows reclaimed."""
        if self._dead is None:
            return 0
        n = self._n_dead
        live = np.flatnonzero(~self._dead).astype(np.int64)
        self._compact_rows(live)
        self._set_dead(None)
        log.info("%s: compacted %d dead rows", type(self).__name__, n)
        return n

    def _maybe_compact(self) -> None:
        if self._dead is not None and self._n_dead > self.compact_threshold * self.ntotal:
            self.compact()

    # -- persistence helpers ----------------------------------------------------
    def _tomb_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        config["compact_threshold"] = float(self.compact_threshold)
        if self._dead is not None:
            arrays["tombstones"] = self._dead

    def _tomb_load(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        ct = config.get("compact_threshold", DEFAULT_COMPACT_THRESHOLD)
        if isinstance(ct, bool) or not isinstance(ct, (int, float)) or not 0.0 <= ct <= 1.0:
            raise FieldError("config 'compact_threshold'", f"expected a number in [0, 1], got {ct!r:.60}")
        self.compact_threshold = float(ct)
        t = arrays.get("tombstones")
        if t is not None:
            self._set_dead(np.asarray(t).view(np.uint8) != 0)
