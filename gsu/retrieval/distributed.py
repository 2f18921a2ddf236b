"""Offline batch retrieval on Dask distributed, partitioned by user.

The same code runs on a laptop's ``LocalCluster`` and on a real cluster: the
behavior store is read by each worker from a saved file (memory-mapped, so a
partition touches only its users' rows), the retrieval method is shipped once per
worker (``client.scatter(..., broadcast=True)``), and each task runs
:func:`gsu.retrieval.retrieve_batch` over one partition of users. Results come back
aligned with the input rows, exactly as the single-process batch form returns them.

For request sets too large to gather on the driver,
:func:`retrieve_distributed_parquet` has every task write its partition as one Parquet
file (``part-00000.parquet`` …, written atomically by the worker) into a folder on
shared storage; only the file names and row counts come back.
:func:`read_retrieval_parquet` reads such a folder back (or read it with
``pyarrow.dataset`` / ``dask.dataframe.read_parquet``).

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

__all__ = ["retrieve_distributed", "retrieve_distributed_parquet", "read_retrieval_parquet", "partition_users"]

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


def _write_partition(
    method: Any, store_path: str, rows: np.ndarray, users: np.ndarray, targets: np.ndarray, times: np.ndarray | None,
    k: int | None, path: str,
) -> tuple[str, int]:
    """Retrieve one partition and write it to ``path`` as Parquet (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gsu._format import atomic_path

    res = _run_partition(method, store_path, users, targets, times, k)
    cols: dict[str, Any] = {"row": pa.array(rows, pa.int64()), "user": pa.array(users, pa.int64()),
                            "target": pa.array(targets, pa.int64())}
    if times is not None:
        cols["target_time"] = pa.array(times, pa.int64())
    if isinstance(res, SDIMResult):
        d, b = res.vectors.shape[1], res.bucket_mask.shape[1]
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(res.vectors.reshape(-1), pa.float32()), d)
        cols["mask"] = pa.array(res.mask, pa.bool_())
        cols["bucket_mask"] = pa.FixedSizeListArray.from_arrays(pa.array(res.bucket_mask.reshape(-1), pa.bool_()), b)
    else:
        kk = res.positions.shape[1]
        cols["positions"] = pa.FixedSizeListArray.from_arrays(pa.array(res.positions.reshape(-1), pa.int64()), kk)
        cols["scores"] = pa.FixedSizeListArray.from_arrays(pa.array(res.scores.reshape(-1), pa.float32()), kk)
    with atomic_path(path) as (tmp, _fd):
        pq.write_table(pa.table(cols), str(tmp))
    return path, int(rows.shape[0])


def retrieve_distributed_parquet(
    method: Any,
    store_path: str | os.PathLike,
    users: Any,
    targets: Any,
    out: str | os.PathLike,
    *,
    client: Any,
    target_time: Any = None,
    k: int | None = None,
    n_partitions: int | None = None,
) -> list[tuple[str, int]]:
    """:func:`retrieve_distributed` that writes instead of gathering: each task writes
    its partition of users to ``out/part-NNNNN.parquet`` (``out`` must be reachable by
    every worker at this path), nothing else returns to the driver.

    Columns: ``row`` (int64, the request's row in the input), ``user``, ``target``,
    ``target_time`` (when given), then ``positions`` (fixed-size list of k int64,
    -1 padded) and ``scores`` (k float32, -inf padded), or for SDIM ``vector`` (d
    float32), ``mask`` and ``bucket_mask``. Parquet files already in ``out`` named
    ``part-*.parquet`` are removed first (a rerun never mixes two runs).

    Returns ``[(file path, rows written), ...]`` in partition order.
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
    from gsu._format import check_output_path

    folder = os.path.abspath(os.fspath(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: is a file, expected a folder for the Parquet parts")
    check_output_path(os.path.join(folder, "part-00000.parquet"))
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith("part-") and name.endswith(".parquet"):
            os.unlink(os.path.join(folder, name))
    if n_partitions is None:
        n_partitions = 2 * max(1, sum(client.nthreads().values()))
    n_partitions = check_positive_int(n_partitions, name="n_partitions")
    parts = partition_users(u, n_partitions)
    m = client.scatter(method, broadcast=True)
    futures = [
        client.submit(_write_partition, m, store_path, rows, u[rows], t[rows], None if tt is None else tt[rows], k,
                      os.path.join(folder, f"part-{i:05d}.parquet"), pure=False)
        for i, rows in enumerate(parts)
    ]
    return client.gather(futures)


def read_retrieval_parquet(folder: str | os.PathLike) -> RetrievalResult | SDIMResult:
    """Read the parts written by :func:`retrieve_distributed_parquet` back into one result,
    rows in input order (every input row must be present once)."""
    import pyarrow.parquet as pq

    files = sorted(p for p in os.listdir(folder) if p.startswith("part-") and p.endswith(".parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no part-*.parquet files")
    tabs = [pq.read_table(os.path.join(folder, f)) for f in files]
    rows = np.concatenate([t.column("row").to_numpy() for t in tabs])
    S = rows.shape[0]
    if not np.array_equal(np.sort(rows), np.arange(S)):
        raise ValueError(f"{folder}: the parts do not hold rows 0..{S - 1} exactly once")

    def fixed(name: str, dtype: Any) -> np.ndarray:
        parts = []
        for t in tabs:
            col = t.column(name).combine_chunks()
            parts.append(col.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(col), col.type.list_size))
        out = np.concatenate(parts)
        res = np.empty_like(out)
        res[rows] = out
        return res

    if "positions" in tabs[0].column_names:
        return RetrievalResult.from_positions(fixed("positions", np.int64), fixed("scores", np.float32))
    mask = np.empty(S, bool)
    mask[rows] = np.concatenate([t.column("mask").to_numpy(zero_copy_only=False) for t in tabs])
    return SDIMResult(fixed("vector", np.float32), mask, fixed("bucket_mask", bool))
