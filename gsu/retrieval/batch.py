"""The batch form: many users and requests at once.

Rows are (user, target[, time]) — e.g. the training samples of
:func:`gsu.datasets.behavior_dataset` or the requests of a serving batch. Rows are
grouped by user so each user's history is prepared once (one ``retrieve`` call with
all that user's targets and times), user groups run on ``n_threads`` threads (the
numba kernels release the GIL, BLAS does too), and results are scattered back in the
input row order.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gsu._validate import as_ids, as_ints, check_positive_int
from gsu.retrieval.result import RetrievalResult, SDIMResult
from gsu.retrieval.store import BehaviorStore

log = logging.getLogger(__name__)

__all__ = ["retrieve_batch", "group_rows_by_user"]


def group_rows_by_user(users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(uniq_users (G,), order (S,), bounds (G+1,))``: rows ``order[bounds[g]:bounds[g+1]]`` belong to ``uniq_users[g]``."""
    order = np.argsort(users, kind="stable")
    su = users[order]
    new = np.ones(su.shape[0], bool)
    if su.shape[0] > 1:
        new[1:] = su[1:] != su[:-1]
    starts = np.flatnonzero(new)
    bounds = np.append(starts, su.shape[0]).astype(np.int64)
    return su[starts], order, bounds


def retrieve_batch(
    method: Any,
    store: BehaviorStore,
    users: Any,
    targets: Any,
    *,
    target_time: Any = None,
    k: int | None = None,
    n_threads: int = 1,
) -> RetrievalResult | SDIMResult:
    """Retrieve for many (user, target[, time]) rows at once.

    Args:
        method: any gsu.retrieval method (``Exact``, ``SoftSearch``, ..., ``SDIM``).
        store: the :class:`BehaviorStore` holding the users' histories.
        users: (S,) int64 external user ids (every one must be in the store and have a
            non-empty history).
        targets: (S,) int64 target item ids.
        target_time: ``None`` or (S,) int64 — each row sees only its user's behaviors
            with ``timestamp < target_time`` (the time cut for training samples).
        k: overrides the method's k.
        n_threads: threads over user groups (a method with ``device=`` batches the users
            into device calls instead).

    Returns:
        :class:`RetrievalResult` with (S, k) arrays aligned with the input rows —
        positions are into that row's user's history (``store.gather(users, positions)``
        gives item ids / timestamps) — or an :class:`SDIMResult` with (S, d) vectors.
    """
    if not isinstance(store, BehaviorStore):
        raise TypeError(f"store: expected a gsu.retrieval.BehaviorStore, got {type(store).__name__}")
    u = as_ids(np.asarray(users).reshape(-1) if np.ndim(users) == 1 else users, name="users")
    S = u.shape[0]
    t = as_ids(targets, name="targets", n=S)
    tt = None if target_time is None else as_ints(target_time, name="target_time", n=S)
    n_threads = check_positive_int(n_threads, name="n_threads")
    if S == 0:
        raise ValueError("users: empty batch (expected at least one row)")
    store.compact()
    store.rows(u)  # raises on unknown users, naming them
    uniq, order, bounds = group_rows_by_user(u)
    if getattr(method, "device", None) is not None:
        from gsu.retrieval import device as device_retrieval

        if device_retrieval.supports(method):  # many users per device call
            return device_retrieval.retrieve_groups(method, store, uniq, order, bounds, t, tt, k)

    def one(g: int) -> tuple[np.ndarray, Any]:
        rows = order[bounds[g] : bounds[g + 1]]
        h = store.history(int(uniq[g]))
        res = method.retrieve(h, t[rows], k=k, target_time=None if tt is None else tt[rows])
        return rows, res

    G = uniq.shape[0]
    if n_threads == 1 or G == 1:
        parts = [one(g) for g in range(G)]
    else:
        with ThreadPoolExecutor(max_workers=n_threads) as ex:
            parts = list(ex.map(one, range(G)))
    first = parts[0][1]
    if isinstance(first, SDIMResult):
        d = first.vectors.shape[1]
        nb = first.bucket_mask.shape[1]
        vec = np.zeros((S, d), np.float32)
        mask = np.zeros(S, bool)
        bmask = np.zeros((S, nb), bool)
        for rows, r in parts:
            vec[rows] = r.vectors
            mask[rows] = r.mask
            bmask[rows] = r.bucket_mask
        return SDIMResult(vec, mask, bmask)
    kk = first.k
    pos = np.full((S, kk), -1, np.int64)
    sc = np.full((S, kk), -np.inf, np.float32)
    for rows, r in parts:
        pos[rows] = r.positions
        sc[rows] = r.scores
    return RetrievalResult.from_positions(pos, sc)
