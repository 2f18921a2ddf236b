"""Served indexes by name, with hot swap.

Each name holds one :class:`Served` — an index loaded memory-mapped from its file plus
the file's identity. :meth:`IndexRegistry.check` compares the file's ``(inode, mtime,
size)`` with the served one; ``gsu build`` (and every ``save``) writes a new file under a
temporary name and renames it over the old one, so a new identity means a complete new
file. The new index is loaded and warmed up beside the old one, then the name's
reference is swapped in one assignment. A micro-batch takes the reference once, before
it runs, so every request sees the old or the new index, never a mix; the old index
(and its memory map of the now unlinked file) is freed when the last batch holding it
ends. A file that fails to load (truncated, altered) is logged and counted, and the old
index keeps serving.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gsu.index import Filter, Index, load
from gsu.serve.config import IndexConfig

log = logging.getLogger(__name__)

__all__ = ["Served", "IndexRegistry", "UnknownIndex", "file_key"]

SPARSE_KINDS = ("seismic", "sparse_flat")


class UnknownIndex(KeyError):
    """No index is served under this name."""


def file_key(path: str) -> tuple[int, int, int, int]:
    """``(inode, mtime_ns, size, ctime_ns)`` of ``path``: changes whenever a new file is renamed over it."""
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)


@dataclass(frozen=True)
class Served:
    """One loaded version of a named index.

    Attributes:
        name: the served name.
        index: the gsu index (arrays memory-mapped read-only).
        version: the file's modification time in ns (reported with every answer).
        key: the file identity it was loaded from (see :func:`file_key`).
        generation: 1 for the index loaded at start, +1 per swap in this process.
        search_params: names of the keyword settings its ``search`` accepts.
    """

    name: str
    index: Index
    version: int
    key: tuple[int, int, int, int]
    generation: int
    search_params: frozenset[str]
    loaded_at: float = field(default_factory=time.time)

    @property
    def dim(self) -> int:
        return int(self.index.dim)


def _search_params(idx: Index) -> frozenset[str]:
    sig = inspect.signature(idx.search)
    return frozenset(n for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY and n != "filter")


def _warm_up(idx: Index, params: frozenset[str]) -> None:
    """Run a few small searches so that compiled kernels and lazily built structures
    (e.g. the graph walk's 8-bit codes) exist before the index takes traffic."""
    n = idx.ntotal
    if n == 0:
        return
    warm = getattr(idx, "warm_up", None)
    if callable(warm):  # every route's kernels, the paths a few searches do not reach included
        warm()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, idx.dim)).astype(np.float32)
    all_ids = np.asarray(getattr(idx, "ids", np.arange(n, dtype=np.int64)))
    ids = all_ids[: min(n, 64)]
    wide = all_ids[:: 3]  # a third of the rows: the planner's dense-filter routes (bitmaps, graph walk)
    filters = [None, Filter.from_ids(ids), Filter.from_ids(wide), Filter.per_query([ids, ids[: max(1, ids.shape[0] // 2)]]),
               Filter.per_query([wide, ids])]
    routes: tuple[Any, ...] = (None,)
    if "route" in params:
        routes = (None, "exact", "ivf", "hnsw")
    for route in routes:
        for f in filters:
            try:
                idx.search(q, 10, filter=f, **({} if route is None else {"route": route}))
            except (ValueError, TypeError) as e:  # a route this index cannot take: not an error
                log.debug("warm-up of %s (route %s) skipped: %s", type(idx).__name__, route, e)


class _Slot:
    def __init__(self, name: str, config: IndexConfig):
        self.name = name
        self.config = config
        self.current: Served | None = None
        self.failed_key: tuple[int, int, int, int] | None = None
        self.lock = threading.Lock()


class IndexRegistry:
    """The served indexes (see the module docstring).

    Args:
        configs: name -> :class:`~gsu.serve.config.IndexConfig`.
        warm: run warm-up searches on every index before it serves.
        on_swap: called as ``on_swap(served)`` after every load (the first included).
        on_load_error: called as ``on_load_error(name, exc)`` when a new file fails to load.
    """

    def __init__(self, configs: dict[str, IndexConfig], *, warm: bool = True, on_swap: Any = None, on_load_error: Any = None):
        self._slots = {name: _Slot(name, c) for name, c in configs.items()}
        self.warm = warm
        self.on_swap = on_swap
        self.on_load_error = on_load_error

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def config(self, name: str) -> IndexConfig:
        slot = self._slots.get(name)
        if slot is None:
            raise UnknownIndex(name)
        return slot.config

    def get(self, name: str) -> Served:
        """The index served under ``name`` now (raises :class:`UnknownIndex`)."""
        slot = self._slots.get(name)
        if slot is None or slot.current is None:
            raise UnknownIndex(name)
        return slot.current

    def _load(self, slot: _Slot) -> Served:
        """Load ``slot``'s file; the identity is taken before and after, so the index
        returned is exactly the file of the key recorded (a rename in between: retry)."""
        path = slot.config.path
        for _ in range(10):
            before = file_key(path)
            idx = load(path, mmap=True)
            if file_key(path) == before:
                break
        else:  # pragma: no cover - a file replaced ten times during one load
            raise OSError(f"{path}: kept changing while it was being loaded")
        if idx.KIND in SPARSE_KINDS:
            raise ValueError(f"{path}: a {idx.KIND} index takes sparse queries; gsu serve serves dense indexes")
        params = _search_params(idx)
        if self.warm:
            _warm_up(idx, params)
        gen = 1 if slot.current is None else slot.current.generation + 1
        return Served(slot.name, idx, before[1], before, gen, params)

    def load_all(self) -> None:
        """Load every configured index (at start; errors propagate)."""
        for slot in self._slots.values():
            with slot.lock:
                t0 = time.perf_counter()
                slot.current = self._load(slot)
                log.info("serving %s from %s (%d items, %.2fs)", slot.name, slot.config.path, slot.current.index.ntotal,
                         time.perf_counter() - t0)
            if self.on_swap is not None:
                self.on_swap(slot.current)

    def check(self, name: str) -> bool:
        """Swap in a new file for ``name`` if there is one; True when a swap happened.

        Blocking (loads and warms the new index): call it from a worker thread."""
        slot = self._slots[name]
        if not slot.lock.acquire(blocking=False):
            return False  # a check of this name is already loading
        try:
            try:
                key = file_key(slot.config.path)
            except FileNotFoundError:
                return False  # between an unlink and a rename: keep serving
            cur = slot.current
            if cur is not None and key == cur.key or key == slot.failed_key:
                return False
            try:
                new = self._load(slot)
            except Exception as e:  # noqa: BLE001 - any failure keeps the old index serving
                slot.failed_key = key
                log.error("index %s: new file %s failed to load; still serving the old one: %s", name, slot.config.path, e)
                if self.on_load_error is not None:
                    self.on_load_error(name, e)
                return False
            slot.current = new  # the swap: one reference assignment
            slot.failed_key = None
            log.info("index %s: swapped in version %d (generation %d, %d items)", name, new.version, new.generation,
                     new.index.ntotal)
        finally:
            slot.lock.release()
        if self.on_swap is not None:
            self.on_swap(new)
        return True

    def check_all(self) -> list[str]:
        """Check every name; the names swapped."""
        return [n for n in self._slots if self.check(n)]
