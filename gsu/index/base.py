"""The index contract shared by every gsu index.

```
idx.add(vectors, ids=None)
res = idx.search(queries, k, *, filter=None, **search_params)
res.ids (nq, k) int64 (-1 padded) · res.scores (nq, k) float32 (-inf padded) · res.counts (nq,) int64
idx.save(path);  gsu.index.load(path, mmap=False)
```

Subclasses implement ``_state()`` (config + arrays) and ``_from_state()``; the base
class provides persistence through :mod:`gsu._format` and a registry so that
:func:`load` reloads any index with no extra arguments. :func:`load` validates the
file (:mod:`gsu.index._checks`) before ``_from_state`` sees the arrays.

Concurrency contract (enforced here, for every subclass): any number of threads may
call the read methods (:data:`READ_METHODS`: ``search``, ``search_codes``, ``explain``,
``plan``, ``reconstruct``, ``stats``) of one index at once, and the write methods
(:data:`WRITE_METHODS`: ``add``, ``add_codes``, ``remove``, ``upsert``, ``delete``,
``rebuild``, ``train``, ``calibrate``) may run beside them: each call sees the index entirely before
or entirely after a change, never a mix. ``__init_subclass__`` wraps those methods
with the read or write side of a per-index :class:`~gsu._rwlock.RWLock`. faiss, BLAS
and numpy release the GIL in the middle of adds and searches (as numba kernels do when
compiled ``nogil``), and an ``add`` replaces several attributes one after another, so
the lock, not the GIL, is what keeps a search from seeing half an ``add``. ``save`` holds the read side. Lower-level
helpers (``search_compiled``, ``beam_search``, ``search_params``) run under the lock
of the index that calls them and are not locked themselves.

Limits: every ``search`` refuses a ``k`` or an ``(nq, k)`` result over the per-call
caps of :func:`gsu.set_limits` (:class:`gsu.errors.LimitError`) before allocating.
"""

from __future__ import annotations

import abc
import functools
import os
import threading
from _thread import get_ident
from typing import Any, Callable, ClassVar

import numpy as np

from gsu import _validate
from gsu._format import ContainerReader, PendingCheck, load_container, write_container
from gsu._rwlock import _GIL, RWLock
from gsu.errors import FieldError, IndexFileError
from gsu.index.filters import IdMap
from gsu.index.result import SearchResult

__all__ = ["SearchResult", "Index", "register_index", "load", "topk_rows", "INDEX_KINDS", "READ_METHODS", "WRITE_METHODS"]

#: methods that run under the read side of an index's lock (many at once)
READ_METHODS = ("search", "search_codes", "explain", "plan", "reconstruct", "stats", "warm_up")
#: methods that run under the write side (alone)
WRITE_METHODS = ("add", "add_codes", "remove", "upsert", "delete", "compact", "rebuild", "train", "calibrate")
_SEARCH_METHODS = ("search", "search_codes")
_LOCK_ATTR = "_gsu_lock"
_VOCAB = "_gsu.vocab."
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_LIMITS = _validate.LIMITS
_NO_K = object()
_SLOT = _validate.RESULT_SLOT_BYTES


def _n_queries(queries: Any) -> int:
    """Rows of a query batch, cheaply (an over-estimate for odd inputs is harmless)."""
    sh = getattr(queries, "shape", None)
    if sh is not None:
        return int(sh[0]) if len(sh) == 2 else 1
    if isinstance(queries, (list, tuple)):
        return len(queries)
    return 1


def _check_result_size(queries: Any, k: int) -> None:
    """Raise when a batch's results would pass the result cap (before anything is searched)."""
    sh = getattr(queries, "shape", None)
    nq = (sh[0] if len(sh) == 2 else 1) if sh is not None else _n_queries(queries)
    if nq * k * _SLOT > _LIMITS.max_result_bytes:
        _validate.check_result_size(k, nq)


def _locked_search(fn: Callable[..., Any], lean: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``fn`` (a ``search(queries, k, ...)``) under the read lock, after the per-call caps.

    The uncontended read side of :class:`~gsu._rwlock.RWLock` is inlined here (register
    the thread, look at the writer flag; see that module for why this is safe under the
    GIL): a search pays a few dictionary operations, not two more Python calls.

    ``lean``: the class's ``_lean_search(self, queries, k, kwargs)``, tried first under the
    lock when only keywords follow ``k``: the result of the common call (one query, no
    filter), or ``None`` and ``fn`` answers. It saves binding ``fn``'s parameters and the
    second call on the path where they cost as much as the search.
    """

    import inspect

    params = list(inspect.signature(fn).parameters.values())
    k_default = params[2].default if len(params) > 2 and params[2].default is not inspect.Parameter.empty else _NO_K

    @functools.wraps(fn)
    def search(self: "Index", queries: Any, k: Any = k_default, *args: Any, **kwargs: Any) -> Any:
        if k is _NO_K:
            raise TypeError(f"{type(self).__name__}.{fn.__name__}() missing the argument 'k' (results per query)")
        if k.__class__ is not int or k > _LIMITS.max_k:
            _validate.check_k(k)
        pend = self._gsu_pending
        if pend is not None and not pend.done:
            pend.run()
        lock = self._gsu_lock
        tid = get_ident()
        held = lock._held
        inline = _GIL and tid not in held and lock._writer_tid != tid
        if inline:
            held[tid] = 1
            if lock._flag:  # a writer wants in: wait for it under the mutex
                lock._read_slow(tid, registered=True)
        else:
            lock.acquire_read()
        try:
            # the lean path answers one query (k results at most: within the result cap)
            if lean is not None and not args and k * _SLOT <= _LIMITS.max_result_bytes:
                r = lean(self, queries, k, kwargs)
                if r is not None:
                    return r
            _check_result_size(queries, k)
            return fn(self, queries, k, *args, **kwargs)
        finally:
            if inline:
                del held[tid]
                if lock._flag:
                    lock._notify()
            else:
                lock.release_read()

    search.__gsu_locked__ = "read"  # type: ignore[attr-defined]
    return search


def _locked(fn: Callable[..., Any], side: str) -> Callable[..., Any]:
    """``fn`` under the ``side`` (``"read"``/``"write"``) of the instance's lock."""
    if side not in ("read", "write"):
        raise ValueError(f"side: expected 'read' or 'write', got {side!r}")
    acquire, release = f"acquire_{side}", f"release_{side}"

    @functools.wraps(fn)
    def call(self: "Index", *args: Any, **kwargs: Any) -> Any:
        pend = self._gsu_pending
        if pend is not None and not pend.done:
            pend.run()
        lock = self._gsu_lock
        getattr(lock, acquire)()
        try:
            return fn(self, *args, **kwargs)
        finally:
            getattr(lock, release)()

    call.__gsu_locked__ = side  # type: ignore[attr-defined]
    return call


INDEX_KINDS: dict[str, type["Index"]] = {}


def register_index(kind: str):
    """Class decorator: register an :class:`Index` subclass under ``kind`` for :func:`load`."""

    def deco(cls: type["Index"]) -> type["Index"]:
        if kind in INDEX_KINDS and INDEX_KINDS[kind] is not cls:
            raise ValueError(f"index kind {kind!r} registered twice")
        cls.KIND = kind
        INDEX_KINDS[kind] = cls
        return cls

    return deco


def topk_rows(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a dense ``scores`` (nq, m) matrix.

    Returns ``(cols, vals)`` each (nq, k): column indices (mapped through ``rows`` when
    given) and their scores, best first; ties broken by smaller column. Rows with
    fewer than k columns are padded with -1 / -inf. NaN scores are never selected.
    """
    nq, m = scores.shape
    cols = np.full((nq, k), -1, dtype=np.int64)
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    if m == 0 or nq == 0:
        return cols, vals
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(m), (nq, m))
    pv = np.take_along_axis(scores, part, axis=1)
    # sort by (-score, col) for deterministic ties
    order = lexsort_rows(-pv, part)
    sel = np.take_along_axis(part, order, axis=1)
    sv = np.take_along_axis(pv, order, axis=1)
    cols[:, :kk] = sel if rows is None else rows[sel]
    vals[:, :kk] = sv
    cols[vals == -np.inf] = -1  # excluded entries (scored -inf) are not results
    return cols, vals


def lexsort_rows(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per-row argsort by ``primary`` then ``secondary`` (both (nq, m))."""
    o = np.argsort(secondary, axis=1, kind="stable")
    p = np.take_along_axis(primary, o, axis=1)
    o2 = np.argsort(p, axis=1, kind="stable")
    return np.take_along_axis(o, o2, axis=1)


class Index(abc.ABC):
    """Base class of every gsu index. See the module docstring for the contract.

    ``vocabulary``: optional ``{token: column}`` map of a sparse index built from token
    weights (``gsu build`` from JSON lines sets it); saved inside the index file.
    """

    KIND: ClassVar[str] = ""
    vocabulary: dict[str, int] | None = None
    #: checks still owed by an index opened with ``mmap=True`` (run on first use, see :meth:`verify`)
    _gsu_pending: PendingCheck | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "Index":
        obj = super().__new__(cls)
        obj._gsu_lock = RWLock()  # before __init__, and for `cls.__new__(cls)` in _from_state too
        return obj

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in READ_METHODS + WRITE_METHODS:
            fn = cls.__dict__.get(name)
            if fn is None or not callable(fn) or getattr(fn, "__gsu_locked__", None):
                continue
            if name in _SEARCH_METHODS:
                locked = _locked_search(fn, getattr(cls, "_lean_" + name, None))
                # a class may put its own front before the locked method: ``_fused_<name>(locked)``
                # returns the public method, which answers its common call itself (taking the
                # read side inline, as _locked_search does) and passes every other call to
                # ``locked`` (one Python call fewer on a path of a few microseconds)
                fuse = getattr(cls, "_fused_" + name, None)
                setattr(cls, name, locked if fuse is None else fuse(locked))
            else:
                setattr(cls, name, _locked(fn, "read" if name in READ_METHODS else "write"))

    def __getstate__(self) -> dict[str, Any]:
        # locks are per process: drop them (pickling for Dask workers, copy.copy);
        # unverified arrays are verified before they travel
        pend = self._gsu_pending
        if pend is not None and not pend.done:
            pend.run()
        return {k: (None if isinstance(v, _LOCK_TYPES) else v) for k, v in self.__dict__.items() if k not in (_LOCK_ATTR, "_gsu_pending")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            if v is None and k.endswith("lock"):
                state[k] = threading.Lock()
        self.__dict__.update(state)
        self._gsu_lock = RWLock()

    @property
    def lock(self) -> RWLock:
        """The index's readers-writer lock (``with idx.lock.read(): ...`` groups several
        calls into one consistent view; the locked methods take it themselves)."""
        return self._gsu_lock

    # -- what each index provides -------------------------------------------
    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)``: the build settings (JSON) and the data to save."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Index":
        """Rebuild an index from what :meth:`_state` returned (arrays may be memory-mapped)."""

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of items in the index."""

    def __len__(self) -> int:
        return self.ntotal

    # -- ids ------------------------------------------------------------------
    _idmap: IdMap  # every index keeps its external ids here, row-aligned with its data

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 external ids in row order (removed rows included until ``compact``)."""
        return self._idmap.ids

    @property
    def idmap(self) -> IdMap:
        """The id <-> row map (:class:`~gsu.index.filters.IdMap`) that filters compile against."""
        return self._idmap

    def _new_ids(self, n_new: int, ids: Any) -> np.ndarray:
        """Validated external ids for ``n_new`` added items: ``ids`` checked (int64, unique,
        ``n_new`` of them, none already in the index), or by default ``ntotal..ntotal+n_new-1``."""
        n = self.ntotal
        if ids is None:
            new_ids = np.arange(n, n + n_new, dtype=np.int64)
        else:
            new_ids = _validate.as_ids(ids, name="ids", n=n_new, unique=True)
        if n and new_ids.size and np.any(self._idmap.contains(new_ids)):
            raise ValueError("ids: some ids are already in the index")
        return new_ids

    # -- persistence -------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index (build config + data, and its ``vocabulary`` if set) to ``path``
        atomically (see :mod:`gsu._format`); searches may run meanwhile, adds wait."""
        if not self.KIND:
            raise TypeError(f"{type(self).__name__} is not registered and cannot be saved")
        pend = self._gsu_pending
        if pend is not None and not pend.done:
            pend.run()  # never re-save unverified arrays under fresh checksums
        lock = self._gsu_lock
        lock.acquire_read()
        try:
            config, arrays = self._state()
            if self.vocabulary is not None:
                arrays = {**arrays, **vocabulary_arrays(self.vocabulary, dim=getattr(self, "dim", None))}
            write_container(path, self.KIND, config, arrays)
        finally:
            lock.release_read()

    def verify(self) -> None:
        """Check the arrays of an index opened from a file against the file's per-array
        SHA-256 checksums, and their values (finite floats), now.

        An index opened with ``mmap=True`` defers these checks to its first search (or
        other method call); ``verify()`` runs them at a time of the caller's choosing and
        runs them again on every call. A mismatch raises
        :class:`~gsu.errors.IndexFileError` naming the file and the array, and the index
        refuses every later call. An index built in memory, read with ``mmap=False``, or
        loaded with ``verify=False`` has nothing deferred: this is a no-op.
        """
        pend = self._gsu_pending
        if pend is None:
            return
        lock = self._gsu_lock
        lock.acquire_read()
        try:
            pend.run(force=True)
        finally:
            lock.release_read()

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> "Index":
        idx = load(path, mmap=mmap, verify=verify)
        if not isinstance(idx, cls):
            raise IndexFileError(f"{path}: holds a {type(idx).__name__}, not a {cls.__name__}")
        return idx


def load(path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> Index:
    """Load any gsu index saved with ``save``; ``mmap=True`` maps the arrays copy-on-write
    (never written back to the file).

    The file is read through one descriptor (a concurrent save cannot tear it), its
    header is checked, then its arrays are validated for its kind
    (:mod:`gsu.index._checks`: offsets, ids, row numbers, graph links) before the index
    is built. With ``verify`` (default) the checksums and the values (stored floats are
    finite) are checked too: at once for ``mmap=False`` or for a file written before
    per-array checksums; on first use (any search or other method call, or an explicit
    :meth:`Index.verify`) for ``mmap=True``, so that opening a memory-mapped index costs
    O(header), not O(file). Any inconsistency raises one
    :class:`~gsu.errors.IndexFileError` line naming the file and the field.
    """
    import gsu.index  # noqa: F401  (registers every index kind)
    from gsu.index._checks import check_state

    def build(kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray], pending: PendingCheck | None) -> Index:
        cls = INDEX_KINDS.get(kind)
        if cls is None:
            raise IndexFileError(f"{path}: unknown index kind {kind!r} (known: {sorted(INDEX_KINDS)})")
        extra = {name: arrays.pop(name) for name in [a for a in arrays if a.startswith(_VOCAB)]}
        check_state(kind, config, arrays, values=verify and pending is None, deep=pending is None)
        vocab = read_vocabulary_arrays(extra, dim=config.get("dim")) if extra else None
        if pending is not None:
            state = dict(arrays)
            pending.then = lambda: check_state(kind, config, state, values=True)
        idx = cls._from_state(config, arrays)
        if vocab is not None:
            idx.vocabulary = vocab
        if pending is not None:
            idx._gsu_pending = pending
            for part in list(vars(idx).values()):  # a FilteredIndex's parts: their first use runs it too
                if isinstance(part, Index):
                    part._gsu_pending = pending
        return idx

    return load_container(path, build, mmap=mmap, verify=verify, what="index", lazy=True)


def info(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a saved file: kind, config, version, array shapes (no data read)."""
    with ContainerReader(path) as r:
        return r.header


def vocabulary_arrays(vocab: Any, *, dim: int | None) -> dict[str, np.ndarray]:
    """A ``{token: column}`` vocabulary as container arrays: UTF-8 token bytes, token
    offsets (V+1,) int64 and columns (V,) int64 (tokens unique, columns distinct, in
    ``[0, dim)``)."""
    if not isinstance(vocab, dict):
        raise TypeError(f"vocabulary: expected a dict mapping token -> column, got {type(vocab).__name__}")
    toks = list(vocab)
    if not all(isinstance(t, str) for t in toks):
        raise TypeError("vocabulary: tokens must be strings")
    cols = _validate.as_ints(list(vocab.values()), name="vocabulary columns") if toks else np.zeros(0, np.int64)
    if cols.size and (cols.min() < 0 or (dim is not None and cols.max() >= dim)):
        raise ValueError(f"vocabulary: columns must lie in [0, {dim}), got [{int(cols.min())}, {int(cols.max())}]")
    if np.unique(cols).size != cols.size:
        raise ValueError("vocabulary: two tokens map to the same column")
    enc = [t.encode("utf-8") for t in toks]
    offsets = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(e) for e in enc], out=offsets[1:])
    blob = np.frombuffer(b"".join(enc), np.uint8) if enc else np.zeros(0, np.uint8)
    return {_VOCAB + "tokens": blob, _VOCAB + "offsets": offsets, _VOCAB + "columns": cols}


def read_vocabulary_arrays(arrays: dict[str, np.ndarray], *, dim: Any) -> dict[str, int]:
    """The vocabulary stored by :func:`vocabulary_arrays` (validated; ``FieldError`` naming the array)."""
    c = _validate.StateCheck({}, arrays, prefix=_VOCAB)
    blob = c.array("tokens", np.uint8, (None,))
    offsets = c.array("offsets", np.int64, (None,))
    cols = c.array("columns", np.int64, (max(offsets.shape[0] - 1, 0),))
    c.offsets("offsets", offsets, end=blob.shape[0])
    c.in_range("columns", cols, 0, dim if isinstance(dim, int) and not isinstance(dim, bool) else 2**62)
    if np.unique(cols).size != cols.size:
        raise FieldError(f"array '{_VOCAB}columns'", "two tokens map to the same column")
    raw = bytes(blob)
    try:
        toks = [raw[int(a) : int(b)].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
    except UnicodeDecodeError as e:
        raise FieldError(f"array '{_VOCAB}tokens'", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    vocab = dict(zip(toks, cols.tolist()))
    if len(vocab) != len(toks):
        raise FieldError(f"array '{_VOCAB}tokens'", "a token appears twice")
    return vocab
