"""Offline batch retrieval on Dask distributed, partitioned by user.

The same code runs on a laptop's ``LocalCluster`` and on a real cluster: the
behavior store is read by each worker from a saved file (memory-mapped, so a
partition touches only its users' rows), the retrieval method is shipped once per
worker (``client.scatter(..., broadcast=True)``), and each task runs
:func:`gsu.retrieval.retrieve_batch` over one partition of users. Results come back
aligned with the input rows, exactly as the single-process batch form returns them.

Requires the ``dist`` extra (``dask[distributed]``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from gsu._validate import as_ids, as_ints, check_positive_int
from gsu.retrieval.batch import group_rows_by_user, retrieve_batch
from gsu.retrieval.result import RetrievalResult, SDIMResult
from gsu.retrieval.store import BehaviorStore

log = logging.getLogger(__name__)

__all__ = ["retrieve_distributed", "partition_users"]

_STORES: dict[str, BehaviorStore] = {}  # per-worker cache of memory-mapped stores


def partition_users(users: np.ndarray, n_partitions: int) -> list[np.ndarray]:
    """Split request rows into ``n_partitions`` groups of whole users, balanced by row count.

    Returns a list of row-index arrays (each user's rows land in exactly one group).
    """
    uniq, order, bounds = group_rows_by_user(users)
    sizes = np.diff(bounds)
    n_partitions = max(1, min(n_partitions, uniq.shape[0]))
    # greedy: largest users first into the currently lightest partition
    load = np.zeros(n_partitions, np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_partitions)]
    for g in np.argsort(-sizes, kind="stable"):
        p = int(np.argmin(load))
        parts[p].append(order[bounds[g] : bounds[g + 1]])
        load[p] += sizes[g]
    return [np.sort(np.concatenate(p)) for p in parts if p]


def _load_store(path: str) -> BehaviorStore:
    key = os.path.abspath(path)
    st = _STORES.get(key)
    if st is None:
        st = BehaviorStore.load(path, mmap=True)
        _STORES[key] = st
    return st


def _run_partition(method: Any, store_path: str, users: np.ndarray, targets: np.ndarray, times: np.ndarray | None, k: int | None):
    store = _load_store(store_path)
    return retrieve_batch(method, store, users, targets, target_time=times, k=k)


def retrieve_distributed(
    method: Any,
    store_path: str | os.PathLike,
    users: Any,
    targets: Any,
    *,
    client: Any,
    target_time: Any = None,
    k: int | None = None,
    n_partitions: int | None = None,
) -> RetrievalResult | SDIMResult:
    """:func:`retrieve_batch` over a Dask cluster, partitioned by user.

    Args:
        method: a gsu.retrieval method (picklable; shipped once to every worker).
        store_path: a :class:`BehaviorStore` saved with ``save`` and readable by every
            worker (shared storage); workers memory-map it.
        users, targets, target_time, k: as in :func:`retrieve_batch` ((S,) rows).
        client: a ``dask.distributed.Client``.
        n_partitions: number of tasks (default: 2 × the cluster's worker threads).

    Returns:
        The same result :func:`retrieve_batch` returns, rows in input order.
    """
    u = as_ids(users, name="users")
    S = u.shape[0]
    if S == 0:
        raise ValueError("users: empty batch (expected at least one row)")
    t = as_ids(targets, name="targets", n=S)
    tt = None if target_time is None else as_ints(target_time, name="target_time", n=S)
    store_path = os.fspath(store_path)
    if not os.path.exists(store_path):
        raise FileNotFoundError(f"{store_path}: no such behavior store file")
    if n_partitions is None:
        n_partitions = 2 * max(1, sum(client.nthreads().values()))
    n_partitions = check_positive_int(n_partitions, name="n_partitions")
    parts = partition_users(u, n_partitions)
    m = client.scatter(method, broadcast=True)
    futures = [
        client.submit(_run_partition, m, store_path, u[rows], t[rows], None if tt is None else tt[rows], k, pure=False)
        for rows in parts
    ]
    results = client.gather(futures)
    first = results[0]
    if isinstance(first, SDIMResult):
        vec = np.zeros((S, first.vectors.shape[1]), np.float32)
        mask = np.zeros(S, bool)
        bmask = np.zeros((S, first.bucket_mask.shape[1]), bool)
        for rows, r in zip(parts, results):
            vec[rows], mask[rows], bmask[rows] = r.vectors, r.mask, r.bucket_mask
        return SDIMResult(vec, mask, bmask)
    kk = first.positions.shape[1]
    pos = np.full((S, kk), -1, np.int64)
    sc = np.full((S, kk), -np.inf, np.float32)
    for rows, r in zip(parts, results):
        pos[rows], sc[rows] = r.positions, r.scores
    return RetrievalResult.from_positions(pos, sc)
