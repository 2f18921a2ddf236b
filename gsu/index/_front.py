"""The public ``FilteredIndex.search``: a front that answers the request of a GSU itself.

:func:`filtered_front` builds it from the locked general ``search`` (``Index.__init_subclass__``
calls ``FilteredIndex._fused_search``, which returns it). It lives in a module of its own so
that a call it hands on — front, then the locked wrapper in :mod:`gsu.index.base`, then
``FilteredIndex.search`` — never re-enters a file it came from (``tests/test_layers.py``).
"""

from __future__ import annotations

import functools
import math
from _thread import get_ident
from typing import Any

import numpy as np

from gsu._rwlock import _GIL
from gsu.index import _request as _rq
from gsu.index import planner as _planner
from gsu.index._mutable import BITMAP_FIRST_SHARE
from gsu.index.base import _LIMITS, _NO_K, _SLOT
from gsu.index.filtered import _within_exact
from gsu.index.result import SearchResult
from gsu.index.vectors import normalize_rows

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_empty = np.empty
_new = object.__new__


def filtered_front(locked: Any) -> Any:
    """The public ``search`` of :class:`~gsu.index.FilteredIndex`. It answers the request of a
    GSU: one float32 query (``(d,)`` or ``(1, d)``, C-contiguous, writeable) under a plain
    int64 id array (1-D, C-contiguous, writeable, aligned), with at most ``target_recall=``
    of an operating point already fitted. It makes the request's one compiled call, as the
    lean path (``FilteredIndex._lean_search``) makes it:

    - within the exact limit, the exact route's (:func:`gsu.index._request.exact_view_request`);
    - from ``1/BITMAP_FIRST_SHARE`` of the rows, the plan and list scan's
      (:func:`gsu.index._request.view_request`), continued by ``FilteredIndex._request_rest``
      where it stops.

    Every other call goes to ``locked``, the locked general ``search`` with its lean hook,
    which answers it or raises the precise error: no filter, a ``Filter``, an id array
    between the two limits, a batch, other keywords, an index with removed rows or without an
    offset id map, a query with NaN or inf.

    The read side of the index's lock is taken inline as
    :func:`gsu.index.base._locked_search` takes it: register the thread, look at the writer
    flag, under the GIL only. A nested read, a read inside this thread's write and a file
    still being verified go to ``locked``.

    It saves three Python calls, a keyword dictionary and a second set of checks against the
    locked wrapper, the lean hook and ``_request_ivf``: ~1 µs a request. Old and new front
    alternating in one process, on three unseen sets at 1 %, 10 % and 50 %: 1.0–1.16×
    (one thread, Intel Xeon VM; ``results/filtered_ab67/ab_front.py``)."""

    @functools.wraps(locked)
    def search(self: Any, queries: Any, k: Any = _NO_K, *args: Any, filter: Any = None,
               target_recall: Any = None, **kw: Any) -> Any:
        if (args or kw or queries.__class__ is not np.ndarray or filter.__class__ is not np.ndarray
                or k.__class__ is not int or k < 1 or k > _LIMITS.max_k or k * _SLOT > _LIMITS.max_result_bytes
                or not _GIL or (target_recall is not None and target_recall.__class__ is not float)
                or queries.dtype is not _F32 or filter.dtype is not _I64 or filter.ndim != 1):
            return locked(self, queries, k, *args, filter=filter, target_recall=target_recall, **kw)
        d = self.dim
        shp = queries.shape
        fq = queries.flags
        fi = filter.flags
        mf = shp[0] if len(shp) == 1 else (shp[1] if len(shp) == 2 and shp[0] == 1 else -1)
        if (mf != d or not fq.c_contiguous or not fq.writeable or not fq.aligned or not fi.c_contiguous
                or not fi.writeable or not fi.aligned):
            return locked(self, queries, k, filter=filter, target_recall=target_recall)
        lock = self._gsu_lock
        tid = get_ident()
        held = lock._held
        pend = self._gsu_pending
        if tid in held or lock._writer_tid == tid or (pend is not None and not pend.done):
            return locked(self, queries, k, filter=filter, target_recall=target_recall)
        held[tid] = 1
        if lock._flag:  # a writer wants in: wait for it under the mutex
            lock._read_slow(tid, registered=True)
        res = None
        try:
            fit = self._fits.get(target_recall)
            mf = filter.shape[0]
            v = queries.reshape(-1)
            hnsw = self.hnsw
            if (fit is not None and mf > 0 and hnsw._n > 0 and hnsw._dead is None and math.isfinite(v.dot(v))
                    and (a := self._request_args()) is not None):
                view, entry, n, l2, xentry = a
                q = queries if len(shp) == 2 else v.reshape(1, d)
                if self.metric == "cosine":
                    q = normalize_rows(q)
                st = fit.settings
                if _within_exact(filter, st, k):  # the lean path's exact limit
                    out_r = _empty((1, k), _I64)
                    out_s = _empty((1, k), _F32)
                    counts = _empty(1, _I64)
                    res = (SearchResult.empty(1, k) if _rq.request_exact(xentry, view, q, filter, k, out_r, out_s, counts) == 0
                           else 1)
                elif mf * BITMAP_FIRST_SHARE >= n and entry is not None and st.plan_consts is not None \
                        and _planner.BAND_INTERP:
                    out_r = _empty((1, k), _I64)
                    out_s = _empty((1, k), _F32)
                    counts = _empty(1, _I64)
                    info = _empty(_rq.INFO_LEN, _F64)
                    bm = _rq.request(entry, view, st.plan_consts, q, filter, k, _planner.AWAY_SHARE, out_r, out_s, counts, info)
                    status = info[0]
                    if status == _rq.DONE:  # (rescored in the call for l2)
                        res = 1
                    elif status == _rq.EMPTY:
                        res = SearchResult.empty(1, k)
                    else:
                        out_r, out_s, counts = self._request_rest(q, k, st, bm, info, out_r, out_s, counts, n, l2)
                        res = 1
                if res == 1:
                    idmap = hnsw._idmap
                    res = _new(SearchResult)  # SearchResult.trusted, inlined
                    rd = res.__dict__
                    rd["ids"] = out_r if idmap.identity else idmap.to_ids(out_r)
                    rd["scores"] = out_s
                    rd["counts"] = counts
        finally:
            del held[tid]
            if lock._flag:
                lock._notify()
        if res is None:
            return locked(self, queries, k, filter=filter, target_recall=target_recall)
        return res

    search.__gsu_locked__ = "read"  # type: ignore[attr-defined]
    return search
