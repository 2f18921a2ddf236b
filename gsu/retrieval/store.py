"""``BehaviorStore``: every user's behavior sequence stored once, in CSR form.

A user's *history* is the time-ordered list of their behaviors (item id, timestamp,
optional behavior type, optional per-behavior category). Retrieval methods return
*positions* into a history (0 = oldest); :meth:`BehaviorStore.gather` turns positions
back into item ids or timestamps. Item features (embeddings, sparse vectors,
categories) are *not* stored here: they live once per item in
:class:`gsu.retrieval.ItemTable` and are looked up by item id.

The store is persistent (:mod:`gsu._format` container of kind ``"behavior_store"``),
memory-mappable (``load(path, mmap=True)``: histories are then views into the
copy-on-write map of the file) and appendable (:meth:`BehaviorStore.append`; appended behaviors are
kept in a small per-user tail until :meth:`compact`, which ``save`` and ``gather`` call).

A store may also carry named *layouts*: extra per-user structures over the same
behaviors (e.g. the clusters of :class:`gsu.retrieval.clustered.SequenceClusters`),
saved in the same file as arrays named ``layout.<name>.<array>`` with their config in
the header, and memory-mapped with the rest. Files without layouts load as before, and
readers that do not know a layout ignore its arrays.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsu._format import load_container, write_container
from gsu._validate import StateCheck, as_ids, as_ints

log = logging.getLogger(__name__)

__all__ = ["History", "BehaviorStore", "FIELDS"]

FIELDS = ("items", "timestamps", "behavior_type", "category")
_KIND = "behavior_store"


def _opt(x: Any, *, name: str, n: int, dtype: type) -> np.ndarray | None:
    if x is None:
        return None
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected a 1-D array of length {n} (one per behavior), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integers, got dtype {arr.dtype}")
    if dtype is np.int8 and arr.size and (arr.min() < -128 or arr.max() > 127):
        raise ValueError(f"{name}: values must fit in int8 (-128..127), got range [{arr.min()}, {arr.max()}]")
    return np.ascontiguousarray(arr, dtype=dtype)


@dataclass(frozen=True, eq=False)
class History:
    """One user's behavior sequence, oldest first.

    Attributes:
        items: (L,) int64 item ids.
        timestamps: (L,) int64, non-decreasing, or ``None`` (then no time cut is possible).
        behavior_type: (L,) int8 (e.g. 0 = view/pv, 1 = click, ...) or ``None``.
        category: (L,) int64 per-behavior category or ``None`` (methods then look the
            category up in the :class:`~gsu.retrieval.ItemTable`).
        user: the external user id, ``-1`` for an ad-hoc history.
        category_index: optional precomputed per-user category index
            ``(cats (C,) sorted unique, offsets (C+1,), positions (L,))`` — positions
            grouped by category, ascending (time order) inside each group. Built lazily
            by :class:`~gsu.retrieval.HardSearch` when absent.
        source: the :class:`BehaviorStore` this history was read from (``None`` for an
            ad-hoc history); methods use it to find the store's layouts.
    """

    items: np.ndarray
    timestamps: np.ndarray | None = None
    behavior_type: np.ndarray | None = None
    category: np.ndarray | None = None
    user: int = -1
    category_index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    source: Any = None

    @classmethod
    def from_arrays(
        cls,
        items: Any,
        timestamps: Any = None,
        *,
        behavior_type: Any = None,
        category: Any = None,
        user: int = -1,
    ) -> "History":
        """Validate and wrap arrays (they must already be in time order)."""
        it = as_ids(items, name="history items")
        n = it.shape[0]
        ts = None if timestamps is None else as_ints(timestamps, name="history timestamps", n=n)
        if ts is not None and n > 1 and np.any(np.diff(ts) < 0):
            raise ValueError("history timestamps: must be non-decreasing (a history is ordered oldest first)")
        return cls(
            it,
            ts,
            _opt(behavior_type, name="history behavior_type", n=n, dtype=np.int8),
            _opt(category, name="history category", n=n, dtype=np.int64),
            int(user),
        )

    @classmethod
    def coerce(cls, history: Any) -> "History":
        """A ``History`` as is; a 1-D array of item ids becomes a history without timestamps."""
        if isinstance(history, History):
            return history
        if isinstance(history, BehaviorStore):
            raise TypeError("history: got a BehaviorStore; pass store.history(user) or use retrieve_batch")
        return cls.from_arrays(history)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def visible(self, t: Any) -> np.ndarray | int:
        """Number of behaviors with timestamp strictly before ``t`` (scalar or array of times)."""
        if self.timestamps is None:
            raise ValueError("target_time given but the history has no timestamps")
        r = np.searchsorted(self.timestamps, np.asarray(t, dtype=np.int64), side="left")
        return int(r) if np.ndim(r) == 0 else r.astype(np.int64)

    def field(self, name: str) -> np.ndarray:
        if name not in FIELDS:
            raise ValueError(f"field: expected one of {FIELDS}, got {name!r}")
        v = getattr(self, name)
        if v is None:
            raise ValueError(f"field {name!r}: this history has no {name}")
        return v

    def gather(self, positions: Any, field: str = "items", *, fill: int = -1) -> np.ndarray:
        """Values of ``field`` at ``positions`` (any shape, int64, -1 = padding → ``fill``)."""
        vals = self.field(field)
        pos = np.asarray(positions, dtype=np.int64)
        L = len(self)
        if pos.size and (pos.max() >= L or pos.min() < -1):
            raise ValueError(f"positions: expected values in [-1, {L}) for a history of length {L}")
        out = np.where(pos >= 0, vals[np.maximum(pos, 0)] if L else fill, fill)
        return out.astype(vals.dtype if field != "behavior_type" else np.int64, copy=False)

    def prefix(self, n: int) -> "History":
        """The first ``n`` behaviors (a view)."""
        n = int(n)
        return History(
            self.items[:n],
            None if self.timestamps is None else self.timestamps[:n],
            None if self.behavior_type is None else self.behavior_type[:n],
            None if self.category is None else self.category[:n],
            self.user,
            None,
            self.source,
        )


class BehaviorStore:
    """Behavior sequences of many users in CSR form.

    Args:
        indptr: (U+1,) int64; user ``u``'s behaviors are ``items[indptr[u]:indptr[u+1]]``.
        items: (N,) int64 item ids.
        timestamps: (N,) int64, non-decreasing within each user.
        user_ids: (U,) int64 external user ids, sorted and unique (default ``0..U-1``).
        behavior_type: (N,) int8 or ``None``.
        category: (N,) int64 per-behavior category or ``None``.

    Use :meth:`from_arrays` for unsorted per-behavior arrays and :meth:`from_log` for a
    :mod:`gsu.datasets` ``BehaviorLog``.
    """

    def __init__(
        self,
        indptr: Any,
        items: Any,
        timestamps: Any,
        *,
        user_ids: Any = None,
        behavior_type: Any = None,
        category: Any = None,
        _trusted: bool = False,
    ):
        if _trusted:
            self._indptr, self._items, self._ts = indptr, items, timestamps
            self._user_ids, self._bt, self._cat = user_ids, behavior_type, category
        else:
            ip = as_ints(indptr, name="indptr")
            if ip.shape[0] < 1 or ip[0] != 0 or np.any(np.diff(ip) < 0):
                raise ValueError("indptr: expected a non-decreasing (U+1,) array starting at 0")
            it = as_ids(items, name="items")
            n = it.shape[0]
            if ip[-1] != n:
                raise ValueError(f"indptr: last entry ({ip[-1]}) must equal the number of behaviors ({n})")
            ts = as_ints(timestamps, name="timestamps", n=n)
            nu = ip.shape[0] - 1
            if user_ids is None:
                uid = np.arange(nu, dtype=np.int64)
            else:
                uid = as_ids(user_ids, name="user_ids", n=nu)
                if nu > 1 and np.any(np.diff(uid) <= 0):
                    raise ValueError("user_ids: must be sorted ascending and unique")
            if n > 1:
                d = np.diff(ts)
                starts = np.zeros(n - 1, dtype=bool)
                inner = ip[1:-1]
                starts[inner[(inner > 0) & (inner < n)] - 1] = True
                if np.any((d < 0) & ~starts):
                    raise ValueError("timestamps: must be non-decreasing within each user (sort each sequence by time)")
            self._indptr, self._items, self._ts, self._user_ids = ip, it, ts, uid
            self._bt = _opt(behavior_type, name="behavior_type", n=n, dtype=np.int8)
            self._cat = _opt(category, name="category", n=n, dtype=np.int64)
        self._pending: dict[int, list[dict[str, np.ndarray]]] = {}
        self._new_users: list[int] = []
        self._cat_index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._layouts: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}

    # -- constructors ----------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        users: Any,
        items: Any,
        timestamps: Any,
        *,
        behavior_type: Any = None,
        category: Any = None,
    ) -> "BehaviorStore":
        """Build from flat per-behavior arrays in any order.

        Args:
            users, items, timestamps: (N,) integer arrays of equal length.
            behavior_type: (N,) int8-compatible or ``None``; category: (N,) int or ``None``.

        Behaviors are grouped by user (ascending user id) and stably sorted by time, so
        equal timestamps keep their input order.
        """
        u = as_ids(users, name="users")
        n = u.shape[0]
        it = as_ids(items, name="items", n=n)
        ts = as_ints(timestamps, name="timestamps", n=n)
        bt = _opt(behavior_type, name="behavior_type", n=n, dtype=np.int8)
        cat = _opt(category, name="category", n=n, dtype=np.int64)
        order = np.lexsort((np.arange(n), ts, u))
        us = u[order]
        uid, counts = np.unique(us, return_counts=True)
        indptr = np.zeros(uid.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(
            indptr,
            it[order],
            ts[order],
            user_ids=uid,
            behavior_type=None if bt is None else bt[order],
            category=None if cat is None else cat[order],
            _trusted=True,
        )

    @classmethod
    def from_log(cls, log: Any) -> "BehaviorStore":
        """Build from a :mod:`gsu.datasets` ``BehaviorLog`` (fields ``user, item, category, behavior, timestamp``).

        ``category`` and ``behavior`` may be ``None`` on the log.
        """
        for f in ("user", "item", "timestamp"):
            if not hasattr(log, f):
                raise TypeError(f"from_log: expected a BehaviorLog with fields user, item, timestamp; missing {f!r}")
        return cls.from_arrays(
            log.user,
            log.item,
            log.timestamp,
            behavior_type=getattr(log, "behavior", None),
            category=getattr(log, "category", None),
        )

    @classmethod
    def from_behavior_data(cls, data: Any, *, with_category: bool = True) -> "BehaviorStore":
        """Build from :func:`gsu.datasets.behavior_dataset` output (CSR already in time order).

        With ``with_category`` the per-behavior category is ``data.item_category[items]``.
        """
        items = np.asarray(data.items, dtype=np.int64)
        cat = np.asarray(data.item_category, dtype=np.int64)[items] if with_category else None
        return cls(
            data.indptr,
            items,
            data.timestamps,
            behavior_type=getattr(data, "behavior_type", None),
            category=cat,
        )

    # -- access ------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return int(self._user_ids.shape[0]) + len(self._new_users)

    def __len__(self) -> int:
        return self.n_users

    @property
    def n_behaviors(self) -> int:
        return int(self._items.shape[0]) + sum(p["items"].shape[0] for ps in self._pending.values() for p in ps)

    @property
    def user_ids(self) -> np.ndarray:
        """(U,) int64 external user ids (sorted after :meth:`compact`)."""
        if self._new_users:
            return np.concatenate([self._user_ids, np.asarray(self._new_users, dtype=np.int64)])
        return self._user_ids

    @property
    def lengths(self) -> np.ndarray:
        """(U,) int64 history length of each user, aligned with :attr:`user_ids`."""
        self.compact()
        return np.diff(self._indptr)

    @property
    def indptr(self) -> np.ndarray:
        self.compact()
        return self._indptr

    def column(self, field: str) -> np.ndarray | None:
        """The flat (N,) array of ``field`` (after :meth:`compact`), ``None`` if absent."""
        if field not in FIELDS:
            raise ValueError(f"field: expected one of {FIELDS}, got {field!r}")
        self.compact()
        return {"items": self._items, "timestamps": self._ts, "behavior_type": self._bt, "category": self._cat}[field]

    @property
    def has_behavior_type(self) -> bool:
        return self._bt is not None

    @property
    def has_category(self) -> bool:
        return self._cat is not None

    def _row(self, user: Any) -> int:
        """CSR row of an external user id, -1 if absent from the compacted part."""
        u = int(user)
        ids = self._user_ids
        r = int(np.searchsorted(ids, u))
        return r if r < ids.shape[0] and ids[r] == u else -1

    def rows(self, users: Any) -> np.ndarray:
        """CSR rows of ``users`` (S,) int64; unknown users raise ``ValueError``."""
        self.compact()
        u = as_ids(users, name="users")
        ids = self._user_ids
        r = np.searchsorted(ids, u)
        rc = np.minimum(r, max(ids.shape[0] - 1, 0))
        ok = (r < ids.shape[0]) & (ids[rc] == u) if ids.shape[0] else np.zeros(u.shape, bool)
        if not np.all(ok):
            raise ValueError(f"users: unknown user ids {u[~ok][:5].tolist()} (the store has {self.n_users} users)")
        return rc.astype(np.int64)

    def has_user(self, user: Any) -> bool:
        u = int(user)
        return self._row(u) >= 0 or u in self._pending

    def history(self, user: Any) -> History:
        """The time-ordered :class:`History` of external user id ``user`` (views, no copy)."""
        u = int(user)
        r = self._row(u)
        pend = self._pending.get(u)
        if r < 0 and pend is None:
            raise ValueError(f"user {u}: not in the store ({self.n_users} users)")
        if r >= 0:
            a, b = int(self._indptr[r]), int(self._indptr[r + 1])
            parts = {
                "items": self._items[a:b],
                "timestamps": self._ts[a:b],
                "behavior_type": None if self._bt is None else self._bt[a:b],
                "category": None if self._cat is None else self._cat[a:b],
            }
        else:
            parts = {
                "items": np.zeros(0, np.int64),
                "timestamps": np.zeros(0, np.int64),
                "behavior_type": None if self._bt is None else np.zeros(0, np.int8),
                "category": None if self._cat is None else np.zeros(0, np.int64),
            }
        cidx = None
        if pend:
            for f in FIELDS:
                if parts[f] is not None:
                    parts[f] = np.concatenate([parts[f]] + [p[f] for p in pend])
        elif r >= 0 and self._cat_index is not None:
            ci_ptr, ci_cats, ci_off, ci_pos = self._cat_index
            c0, c1 = int(ci_ptr[r]), int(ci_ptr[r + 1])
            cidx = (ci_cats[c0:c1], ci_off[c0 : c1 + 1] - ci_off[c0], ci_pos[int(self._indptr[r]) : int(self._indptr[r + 1])])
        return History(parts["items"], parts["timestamps"], parts["behavior_type"], parts["category"], u, cidx, self)

    # -- per-user category index (SIM-hard) --------------------------------------
    def build_category_index(self) -> None:
        """Precompute every user's category index (positions grouped by category, time order).

        Needs a per-behavior ``category`` column. One ``lexsort`` over all N behaviors;
        afterwards :meth:`history` hands each user's slice to :class:`HardSearch`, which then
        answers a target in O(log L + k).
        """
        self.compact()
        if self._cat is None:
            raise ValueError("build_category_index: the store has no category column")
        n = self._items.shape[0]
        nu = self._indptr.shape[0] - 1
        urow = np.repeat(np.arange(nu, dtype=np.int64), np.diff(self._indptr))
        local = np.arange(n, dtype=np.int64) - self._indptr[urow]
        order = np.lexsort((local, self._cat, urow))
        pos = local[order]
        sc = self._cat[order]
        su = urow[order]
        new = np.ones(n, dtype=bool)
        if n > 1:
            new[1:] = (sc[1:] != sc[:-1]) | (su[1:] != su[:-1])
        starts = np.flatnonzero(new)
        cats = sc[starts]
        group_user = su[starts]
        ci_ptr = np.zeros(nu + 1, dtype=np.int64)
        np.cumsum(np.bincount(group_user, minlength=nu), out=ci_ptr[1:])
        # offsets are global into `pos` (which is aligned with the CSR layout, user by user)
        off = np.append(starts, n).astype(np.int64)
        # per user we need offsets relative to the user's first group: history() subtracts off[c0]
        self._cat_index = (ci_ptr, cats, off, pos)

    # -- layouts ------------------------------------------------------------------------
    @property
    def layouts(self) -> tuple[str, ...]:
        """Names of the layouts this store carries (sorted)."""
        return tuple(sorted(self._layouts))

    def layout(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(config, arrays)`` of layout ``name``, or ``None`` when the store has none."""
        return self._layouts.get(name)

    def set_layout(self, name: str, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Attach (or replace) layout ``name``: a JSON-serialisable ``config`` and named
        arrays, saved with the store and memory-mapped by ``load(mmap=True)``.

        ``name`` and the array names are identifiers (letters, digits, ``_``). The store
        does not interpret a layout; its owner (e.g. ``SequenceClusters``) does.
        """
        for n, what in [(name, "layout name")] + [(a, "layout array name") for a in arrays]:
            if not isinstance(n, str) or not n.isidentifier():
                raise ValueError(f"{what}: expected an identifier (letters, digits, _), got {n!r}")
        import json

        try:
            json.dumps(config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"layout {name!r}: config must be JSON-serialisable ({e})") from None
        arrs = {}
        for a, v in arrays.items():
            arr = np.asarray(v)
            if arr.dtype == object:
                raise ValueError(f"layout {name!r}: array {a!r} has dtype object")
            arrs[a] = arr
        self._layouts[name] = (dict(config), arrs)

    def drop_layout(self, name: str) -> None:
        """Remove layout ``name`` (no error when absent)."""
        self._layouts.pop(name, None)

    # -- mutation -------------------------------------------------------------------
    def append(
        self,
        user: Any,
        items: Any,
        timestamps: Any,
        *,
        behavior_type: Any = None,
        category: Any = None,
    ) -> None:
        """Append new behaviors to the end of ``user``'s sequence (a new user is created).

        Args:
            items, timestamps: (n,) int64; timestamps non-decreasing and ``>=`` the user's
                last timestamp (sequences stay time-ordered; positions never move).
            behavior_type / category: (n,) arrays; required exactly when the store has
                that column.
        """
        u = int(user)
        it = as_ids(np.atleast_1d(items), name="items")
        n = it.shape[0]
        ts = as_ints(np.atleast_1d(timestamps), name="timestamps", n=n)
        if n > 1 and np.any(np.diff(ts) < 0):
            raise ValueError("append: timestamps must be non-decreasing")
        for name, have, val in (("behavior_type", self._bt is not None, behavior_type), ("category", self._cat is not None, category)):
            if have and val is None:
                raise ValueError(f"append: the store has a {name} column; pass {name}= for the new behaviors")
            if not have and val is not None:
                raise ValueError(f"append: the store has no {name} column; do not pass {name}=")
        bt = _opt(None if behavior_type is None else np.atleast_1d(behavior_type), name="behavior_type", n=n, dtype=np.int8)
        cat = _opt(None if category is None else np.atleast_1d(category), name="category", n=n, dtype=np.int64)
        if n == 0:
            return
        known = self._row(u) >= 0 or u in self._pending
        if known:
            h = self.history(u)
            if len(h) and ts[0] < h.timestamps[-1]:
                raise ValueError(
                    f"append: user {u}'s last behavior is at t={int(h.timestamps[-1])}; new timestamps must not be earlier (got {int(ts[0])})"
                )
        if self._row(u) < 0 and u not in self._pending:
            self._new_users.append(u)
        self._pending.setdefault(u, []).append({"items": it, "timestamps": ts, "behavior_type": bt, "category": cat})
        self._cat_index = None

    def compact(self) -> None:
        """Fold pending appends into the CSR arrays (one pass over N)."""
        if not self._pending:
            return
        old_ids = self._user_ids
        all_ids = np.union1d(old_ids, np.asarray(list(self._pending), dtype=np.int64))
        nu = all_ids.shape[0]
        lens = np.zeros(nu, dtype=np.int64)
        old_rows = np.searchsorted(all_ids, old_ids)
        lens[old_rows] = np.diff(self._indptr)
        extra = {u: sum(p["items"].shape[0] for p in ps) for u, ps in self._pending.items()}
        for u, e in extra.items():
            lens[np.searchsorted(all_ids, u)] += e
        indptr = np.zeros(nu + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        cols = {"items": self._items, "timestamps": self._ts, "behavior_type": self._bt, "category": self._cat}
        new_cols: dict[str, np.ndarray | None] = {}
        for f, col in cols.items():
            if col is None:
                new_cols[f] = None
                continue
            out = np.empty(indptr[-1], dtype=col.dtype)
            # old behaviors: each old user's block moves to its new start
            old_ptr = self._indptr
            if old_ids.shape[0]:
                new_start = indptr[old_rows]
                shift = np.repeat(new_start - old_ptr[:-1], np.diff(old_ptr))
                out[np.arange(col.shape[0]) + shift] = col
            for u, ps in self._pending.items():
                r = int(np.searchsorted(all_ids, u))
                end = int(indptr[r + 1])
                tail = np.concatenate([p[f] for p in ps])
                out[end - tail.shape[0] : end] = tail
            new_cols[f] = out
        self._indptr, self._user_ids = indptr, all_ids
        self._items, self._ts = new_cols["items"], new_cols["timestamps"]
        self._bt, self._cat = new_cols["behavior_type"], new_cols["category"]
        self._pending = {}
        self._new_users = []
        self._cat_index = None

    # -- positions -> values ------------------------------------------------------------
    def gather(self, users: Any, positions: Any, field: str = "items", *, fill: int = -1) -> np.ndarray:
        """Values of ``field`` at retrieved ``positions``.

        Args:
            users: (S,) external user ids, one per row of ``positions``.
            positions: (S, k) int64 positions into each user's history; -1 = padding.
            field: ``"items"``, ``"timestamps"``, ``"behavior_type"`` or ``"category"``.
            fill: value written where ``positions == -1``.

        Returns:
            (S, k) array (int64; int8 for ``behavior_type`` is widened to int64).
        """
        col = self.column(field)
        if col is None:
            raise ValueError(f"gather: the store has no {field} column")
        rows = self.rows(users)
        pos = np.asarray(positions)
        if pos.ndim != 2 or pos.shape[0] != rows.shape[0]:
            raise ValueError(f"positions: expected shape ({rows.shape[0]}, k), got {pos.shape}")
        pos = pos.astype(np.int64, copy=False)
        lens = np.diff(self._indptr)[rows]
        if pos.size and (np.any(pos < -1) or np.any(pos >= lens[:, None])):
            raise ValueError("positions: every entry must be -1 or a valid position in its user's history")
        flat = self._indptr[rows][:, None] + np.maximum(pos, 0)
        vals = col[flat] if col.shape[0] else np.zeros(pos.shape, dtype=col.dtype)
        return np.where(pos >= 0, vals.astype(np.int64), fill)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the store (after :meth:`compact`) to ``path`` atomically."""
        self.compact()
        arrays = {"indptr": self._indptr, "user_ids": self._user_ids, "items": self._items, "timestamps": self._ts}
        if self._bt is not None:
            arrays["behavior_type"] = self._bt
        if self._cat is not None:
            arrays["category"] = self._cat
        cfg: dict[str, Any] = {"n_users": self.n_users, "n_behaviors": int(self._items.shape[0]), "columns": sorted(arrays)}
        if self._layouts:
            cfg["layouts"] = {}
            for name, (lcfg, larr) in sorted(self._layouts.items()):
                cfg["layouts"][name] = {"config": lcfg, "arrays": sorted(larr)}
                for a, v in larr.items():
                    arrays[f"layout.{name}.{a}"] = v
        write_container(path, _KIND, cfg, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> "BehaviorStore":
        """Load a saved store; ``mmap=True`` maps the arrays copy-on-write (appends still work; the file is never written).

        The file is validated before use (one :class:`~gsu.errors.IndexFileError` line
        naming the file and the field otherwise): ``indptr`` starts at 0, never decreases
        and ends at the number of behaviors; ``user_ids`` strictly increase; every column
        has one entry per behavior with its dtype; item ids are never -1; timestamps
        never decrease within a user.
        """

        def build(kind: str, cfg: dict[str, Any], arrays: dict[str, np.ndarray]) -> "BehaviorStore":
            c = StateCheck(cfg, arrays)
            indptr = c.array("indptr", np.int64, (None,))
            if indptr.shape[0] == 0:
                raise c.fail("array 'indptr'", "empty; expected n_users + 1 offsets")
            nu = indptr.shape[0] - 1
            items = c.array("items", np.int64, (None,))
            n = items.shape[0]
            c.offsets("indptr", indptr, end=n)
            uid = c.array("user_ids", np.int64, (nu,))
            if nu > 1 and (np.diff(uid) <= 0).any():
                raise c.fail("array 'user_ids'", "not strictly increasing (sorted, unique user ids expected)")
            c.ids("user_ids", uid)
            ts = c.array("timestamps", np.int64, (n,))
            if n and (items == -1).any():
                raise c.fail("array 'items'", "holds item id -1, which is reserved for padding")
            if n > 1:
                d = np.diff(ts)
                first = np.zeros(n - 1, dtype=bool)
                inner = indptr[1:-1]
                first[inner[(inner > 0) & (inner < n)] - 1] = True
                if ((d < 0) & ~first).any():
                    raise c.fail("array 'timestamps'", "decrease within a user's history")
            bt = c.array("behavior_type", np.int8, (n,)) if "behavior_type" in arrays else None
            cat = c.array("category", np.int64, (n,)) if "category" in arrays else None
            if c.cfg_int("n_users", lo=0) != nu or c.cfg_int("n_behaviors", lo=0) != n:
                raise c.fail("config 'n_users'/'n_behaviors'", f"{cfg.get('n_users')}/{cfg.get('n_behaviors')} do not match the arrays ({nu}/{n})")
            store = cls(indptr, items, ts, user_ids=uid, behavior_type=bt, category=cat, _trusted=True)
            # optional layouts (e.g. the clustered lifelong layout); their contents are
            # checked by their reader (SequenceClusters.from_store) before any kernel uses them
            layouts = cfg.get("layouts") or {}
            if not isinstance(layouts, dict):
                raise c.fail("config 'layouts'", "malformed (expected a mapping)")
            for name, meta in layouts.items():
                try:
                    names = [str(x) for x in meta["arrays"]]
                    larr = {x: arrays[f"layout.{name}.{x}"] for x in names}
                    store._layouts[str(name)] = (dict(meta["config"]), larr)
                except (KeyError, TypeError, ValueError) as err:
                    raise c.fail(f"layout {name!r}", f"incomplete or malformed (missing {err})") from None
            return store

        return load_container(path, build, mmap=mmap, verify=verify, kind=_KIND, what="behavior store")

    def __repr__(self) -> str:
        cols = [f for f in ("behavior_type", "category") if getattr(self, f"has_{f}")]
        return f"BehaviorStore(n_users={self.n_users}, n_behaviors={self.n_behaviors}, extra={cols})"
