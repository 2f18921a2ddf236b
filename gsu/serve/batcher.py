"""Micro-batching of concurrent search requests, per index.

Requests for one index go into a queue; one task per index takes what is queued (up to
``max_batch`` query rows) and, while other search requests are still being read or
decoded (so more will arrive within moments), waits up to ``max_wait_s`` for them. With
no other request in flight it does not wait: a lone client pays no batching delay.

A batch is split into groups that one ``search`` call answers: the same ``k`` and search
settings, and the same kind of filter — none, a stored (named) filter object, or each
request its own. Request filters always go to the index as ``Filter.per_query`` (each
request's filter repeated for each of its query rows), even for a lone request, and a
stored filter always as one shared filter, so a request's answer never depends on
which other requests it was batched with. Each call runs in a worker
thread — or, by default, right on the event loop: gsu's numba kernels hold the GIL, so a
thread adds hand-offs but no parallelism, while requests arriving during a batch simply
wait in the socket buffers and form the next batch — on the index reference taken once
for the whole batch (see :mod:`gsu.serve.registry`). When a grouped call raises, its requests are answered one
by one, so a bad request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gsu.index import Filter, SearchResult
from gsu.serve.registry import IndexRegistry, Served

log = logging.getLogger(__name__)

__all__ = ["MicroBatcher", "SearchJob"]


@dataclass
class SearchJob:
    """One request: ``queries`` (nq, d) float32, ``k``, its filter (``None`` = all items),
    search settings, the future its answer goes to, and whether the filter is a stored
    filter object shared by many requests (``shared``) or the request's own."""

    queries: np.ndarray
    k: int
    filter: Filter | None
    params: dict[str, Any]
    future: asyncio.Future = field(repr=False)
    shared: bool = False

    @property
    def nq(self) -> int:
        return int(self.queries.shape[0])

    def group_key(self) -> tuple[Any, ...]:
        kind = None if self.filter is None else ("shared", id(self.filter)) if self.shared else "own"
        return (self.k, tuple(sorted(self.params.items())), kind)


def _run_group(served: Served, jobs: list[SearchJob]) -> list[SearchResult | BaseException]:
    """One search call for ``jobs`` (same group key); split the rows back per job."""
    idx = served.index
    first = jobs[0]
    q = first.queries if len(jobs) == 1 else np.concatenate([j.queries for j in jobs])
    if first.filter is None or first.shared:
        flt = first.filter
    else:
        per: list[Filter] = []
        for j in jobs:
            per.extend([j.filter] * j.nq)  # type: ignore[list-item]
        flt = Filter.per_query(per)
    try:
        res = idx.search(q, first.k, filter=flt, **first.params)
    except Exception as e:  # noqa: BLE001 - answer one by one so that a bad request fails alone
        if len(jobs) == 1:
            return [e]
        log.debug("batched search on %s failed; answering its %d requests one by one", served.name, len(jobs), exc_info=True)
        return [r for j in jobs for r in _run_group(served, [j])]
    out: list[SearchResult | BaseException] = []
    o = 0
    for j in jobs:
        out.append(SearchResult(res.ids[o : o + j.nq], res.scores[o : o + j.nq], res.counts[o : o + j.nq]))
        o += j.nq
    return out


def run_batch(served: Served, jobs: list[SearchJob]) -> list[SearchResult | BaseException]:
    """Answer ``jobs`` on ``served`` grouped as described in the module docstring; results in job order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, j in enumerate(jobs):
        groups.setdefault(j.group_key(), []).append(i)
    out: list[SearchResult | BaseException | None] = [None] * len(jobs)
    for members in groups.values():
        for i, r in zip(members, _run_group(served, [jobs[i] for i in members])):
            out[i] = r
    return out  # type: ignore[return-value]


class MicroBatcher:
    """The batching loop of one index name.

    Args:
        name: the index name in ``registry``.
        registry: where the current index is taken from, once per batch.
        executor: runs the search calls off the event loop; ``None`` runs them on it.
        max_batch: most query rows per batch (a single larger request runs alone).
        max_wait_s: longest wait for more requests while others are in flight.
        in_flight: callable returning how many search requests of this index are being
            received or decoded right now (they will join soon).
        on_batch: called as ``on_batch(served, n_requests, n_queries)`` per batch run.
    """

    def __init__(
        self,
        name: str,
        registry: IndexRegistry,
        executor: Executor | None,
        *,
        max_batch: int,
        max_wait_s: float,
        in_flight: Callable[[], int],
        on_batch: Callable[[Served, int, int], None] | None = None,
    ):
        self.name = name
        self.registry = registry
        self.executor = executor
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.in_flight = in_flight
        self.on_batch = on_batch
        self._queue: asyncio.Queue[SearchJob] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"gsu-batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict[str, Any], *,
                     shared: bool = False) -> tuple[SearchResult, Served]:
        """Queue one request (``shared``: ``flt`` is a stored filter object); returns its
        result and the index version that answered it."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(SearchJob(queries, k, flt, params, fut, shared))
        return await fut

    def _drain(self, batch: list[SearchJob], nq: int) -> int:
        q = self._queue
        while nq < self.max_batch and not q.empty():
            j = q.get_nowait()
            batch.append(j)
            nq += j.nq
        return nq

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            nq = self._drain(batch, first.nq)
            if nq < self.max_batch and self.max_wait_s > 0 and self.in_flight() > 0:
                deadline = loop.time() + self.max_wait_s
                while nq < self.max_batch and self.in_flight() > 0:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    await asyncio.sleep(min(left, 0.0002))
                    nq = self._drain(batch, nq)
            batch = [j for j in batch if not j.future.done()]  # cancelled (client gone)
            if not batch:
                continue
            try:
                served = self.registry.get(self.name)
                if self.executor is None:
                    results = run_batch(served, batch)
                else:
                    results = await loop.run_in_executor(self.executor, run_batch, served, batch)
            except Exception as e:  # noqa: BLE001 - never let the loop die
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(served, len(batch), nq)
            for j, r in zip(batch, results):
                if j.future.done():
                    continue
                if isinstance(r, BaseException):
                    j.future.set_exception(r)
                else:
                    j.future.set_result((r, served))
