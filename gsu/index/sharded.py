"""``ShardedIndex``: index shards (saved files) searched on a Dask cluster, top-k merged exactly.

The items are split into ``n_shards`` disjoint shards by a hash of their id
(:func:`shard_of`); each shard is an ordinary gsu index saved to a file that every
worker can read (shared storage). A search sends the batch of queries to every shard
(one task per shard), each worker memory-maps its shard once (cached per worker
process, reloaded when the file changes) and returns its own top-k; the driver merges
the ``n_shards × k`` candidates of each query into the top-k by score. Because every
item lives in exactly one shard, the merged answer of exact shards (``FlatIndex``) is
the answer of one index over all items. A filter is split by shard before it travels:
an id set (shared or per query) sends each shard only the ids it holds; other filters
(ranges, masks, combinations) go whole, and a shard simply never returns an id it does
not hold.

Schedulers: a ``dask.distributed`` ``Client`` (a ``LocalCluster`` or a real cluster:
``Client("tcp://scheduler:8786")``), or, with ``client=None``, Dask's threaded
scheduler in this process (the shards then share the process's page cache).

Requires the ``dist`` extra (``dask[distributed]``) for a cluster; the threaded
scheduler needs only ``dask``.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gsu._format import read_header
from gsu._validate import as_ids, as_matrix, check_k, check_positive_int
from gsu.index.base import Index, load, topk_rows
from gsu.index.result import SearchResult
from gsu.index.filters import Filter

log = logging.getLogger(__name__)

__all__ = ["ShardedIndex", "shard_of", "build_shards"]

_SHARDS: dict[str, tuple[tuple[int, int], Index]] = {}  # per-process cache: path -> ((mtime_ns, size), index)
_SHARDS_LOCK = threading.Lock()
_MIX = np.uint64(0x9E3779B97F4A7C15)


def shard_of(ids: Any, n_shards: int) -> np.ndarray:
    """Shard of each id, (n,) int64 in ``[0, n_shards)``: a multiplicative hash of the
    id (Fibonacci hashing), so consecutive ids spread evenly over the shards."""
    a = np.asarray(ids, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = (a * _MIX) >> np.uint64(32)
    return (h % np.uint64(n_shards)).astype(np.int64)


def _open_shard(path: str) -> Index:
    """The shard at ``path`` memory-mapped, once per process (reloaded if the file was replaced)."""
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    with _SHARDS_LOCK:
        hit = _SHARDS.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
    idx = load(path, mmap=True)
    with _SHARDS_LOCK:
        _SHARDS[path] = (key, idx)
    return idx


def _search_shard(path: str, q: np.ndarray, k: int, filt: Any, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    res = _open_shard(path).search(q, k, filter=filt, **params)
    return res.ids, res.scores


def _build_shard(make: Callable[[], Index], x: np.ndarray, ids: np.ndarray, path: str) -> str:
    idx = make()
    if x.shape[0]:
        idx.add(x, ids)
    idx.save(path)
    return path


def build_shards(
    make: Callable[[], Index],
    vectors: Any,
    ids: Any = None,
    *,
    n_shards: int,
    folder: str | os.PathLike,
    client: Any = None,
) -> "ShardedIndex":
    """Split ``vectors`` (n, d) float32 with ``ids`` (n,) int64 (default ``0..n-1``) into
    ``n_shards`` shards by :func:`shard_of`, build each with ``make()`` (a picklable
    callable returning an empty index, e.g. ``functools.partial(FlatIndex, 96)``) and save
    it as ``folder/shard-00000.gsu`` …; with a ``client`` each shard is built on a worker.
    Returns the :class:`ShardedIndex` over the saved shards."""
    n_shards = check_positive_int(n_shards, name="n_shards")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors: expected a 2-D array, got shape {x.shape}")
    ids = np.arange(x.shape[0], dtype=np.int64) if ids is None else as_ids(ids, name="ids", n=x.shape[0], unique=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sh = shard_of(ids, n_shards)
    paths = [str(folder / f"shard-{s:05d}.gsu") for s in range(n_shards)]
    parts = [(np.ascontiguousarray(x[sh == s]), ids[sh == s], paths[s]) for s in range(n_shards)]
    if client is None:
        for xs, i, p in parts:
            _build_shard(make, xs, i, p)
    else:
        client.gather([client.submit(_build_shard, make, xs, i, p, pure=False) for xs, i, p in parts])
    return ShardedIndex(paths, client=client, n_shards_hashed=n_shards)


class ShardedIndex:
    """Top-k search over index shards saved as files, scattered to Dask workers.

    Args:
        paths: the shard files (any gsu index kind; every worker must be able to read
            them at these paths). Shards must hold disjoint ids.
        client: a ``dask.distributed.Client``, or ``None`` for Dask's threaded
            scheduler in this process.
        n_shards_hashed: set when shard ``s`` holds exactly the ids with
            ``shard_of(id, len(paths)) == s`` (what :func:`build_shards` writes); id-set
            filters are then split by shard before they travel.

    ``search`` takes the same arguments as the shards' own ``search`` (search settings
    such as ``ef`` or ``nprobe`` are passed to every shard) and returns a
    :class:`~gsu.index.SearchResult` with external ids.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], *, client: Any = None, n_shards_hashed: int | None = None):
        if not paths:
            raise ValueError("paths: expected at least one shard file")
        self.paths = [os.path.abspath(os.fspath(p)) for p in paths]
        headers = []
        for p in self.paths:
            h, _ = read_header(p)  # O(header): the kind and the dimension, without reading the shard
            headers.append(h)
        dims = {h["config"].get("dim") for h in headers}
        if len(dims) != 1:
            raise ValueError(f"shards disagree on the dimension: {sorted(map(str, dims))}")
        self.dim = int(dims.pop())
        self.kinds = [h["kind"] for h in headers]
        self.client = client
        if n_shards_hashed is not None and n_shards_hashed != len(self.paths):
            raise ValueError(f"n_shards_hashed={n_shards_hashed} but there are {len(self.paths)} shard files")
        self.hashed = n_shards_hashed is not None

    @property
    def n_shards(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        where = "threads" if self.client is None else "dask cluster"
        return f"ShardedIndex({self.n_shards} shards, dim={self.dim}, {where})"

    # -- filters ----------------------------------------------------------------
    def _split_filter(self, filter: Any, nq: int) -> list[Any]:
        """The filter each shard receives."""
        f = filter if isinstance(filter, Filter) else Filter.coerce(filter)
        S = self.n_shards
        if f.is_all:
            return [None] * S
        if not self.hashed:
            return [f] * S
        if f.kind == "ids":
            ids = f._data
            sh = shard_of(ids, S)
            return [Filter(_kind="ids", _data=ids[sh == s]) for s in range(S)]
        if f.kind == "per_query" and all(g.kind == "ids" for g in f._data):
            out: list[list[Filter]] = [[] for _ in range(S)]
            for g in f._data:
                ids = g._data
                sh = shard_of(ids, S)
                for s in range(S):
                    out[s].append(Filter(_kind="ids", _data=ids[sh == s]))
            return [Filter.per_query(o) for o in out]
        return [f] * S

    # -- search -----------------------------------------------------------------
    def search(self, queries: Any, k: int, *, filter: Any = None, **params: Any) -> SearchResult:
        """Top-``k`` of each row of ``queries`` (nq, d) float32 over every shard.

        ``filter``: as for the shards' ``search`` (id sets are split by shard);
        ``params``: search settings passed to every shard. Equal to one index over all
        items when the shards are exact.
        """
        q = as_matrix(queries, name="queries", dim=self.dim)
        k = check_k(k)
        nq = q.shape[0]
        filts = self._split_filter(filter, nq)
        if self.client is not None:
            qf = self.client.scatter(q, broadcast=True) if q.nbytes > (1 << 20) else q
            futures = [self.client.submit(_search_shard, p, qf, k, f, params, pure=False) for p, f in zip(self.paths, filts)]
            parts = self.client.gather(futures)
        else:
            import dask

            tasks = [dask.delayed(_search_shard, pure=False)(p, q, k, f, params) for p, f in zip(self.paths, filts)]
            parts = dask.compute(*tasks, scheduler="threads")
        return merge_topk(parts, k)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> SearchResult:
    """Merge per-shard ``(ids (nq, k), scores (nq, k))`` results into the top-``k`` by
    score (ties: the earlier shard, then its own order); -1 / -inf padded."""
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1).astype(np.float32, copy=True)
    scores[ids < 0] = -np.inf
    cols, vals = topk_rows(scores, k)
    nq = ids.shape[0]
    out = np.where(cols >= 0, np.take_along_axis(ids, np.maximum(cols, 0), axis=1), -1) if nq else cols
    return SearchResult(out.astype(np.int64, copy=False), vals, (out >= 0).sum(axis=1).astype(np.int64))
