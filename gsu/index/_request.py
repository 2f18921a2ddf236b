"""A request's IVF search in one compiled call: :func:`ivf_request`.

The common request of a GSU — one candidate's vector, the user's items as a plain id array
of at least 1/16 of the catalog (``_mutable.BITMAP_FIRST_SHARE``) — takes the same steps in
:meth:`FilteredIndex.search <gsu.index.FilteredIndex.search>` every time: the ids to a
bitmap (:func:`gsu.index._filter_kernels.ids_bitmap64`), the compiled plan
(:func:`gsu.index._plan_kernel.plan_shared`), and when that plan is IVF without the walk,
the list scan against the bitmap (:func:`gsu.index._filter_kernels._probe_lists`, the
centroids scored in the same call). Between those kernels Python built the compiled
filter, unpacked the plan and chose the filter's form, some forty calls and attribute
look-ups a request: profiled with ``perf`` on the filtered suite's anisotropic set (random
10 % filters, one thread), 43 % of a 34 µs search ran outside compiled code.

:func:`ivf_request` runs those steps in order with the same decisions, and hands back
whatever it did not finish — the filter as its bitmap and, once planned, the plan — so
the caller goes on where it stopped without doing anything twice
(:meth:`FilteredIndex._request_ivf <gsu.index.FilteredIndex._request_ivf>`). Answers are
those of the step-by-step path, bit for bit (tested route by route).

The index's side of its arguments travels as one :class:`RequestView` through the
compiled entry point of :func:`view_request` (:func:`entry_for`, :func:`request`): passed
one by one, the dispatcher's unboxing and typing of ~30 arguments and boxing of the answer
cost 2.3 µs of a 16 µs request.
"""

from __future__ import annotations

from typing import Any, Callable

import numba as nb
import numpy as np
from numba.core import types as _nbt
from numba.experimental import structref

from gsu.index import _filter_kernels as fk
from gsu.index._direct import direct_entry
from gsu.index._l2 import _finish_kernel
from gsu.index._plan_kernel import IVF, plan_shared
from gsu.index._structview import borrowed_fields

#: :func:`ivf_request`'s status: the answer is in the outputs
DONE = 0
#: the filter allows no row
EMPTY = 2
#: the filter is built (its bitmap, or its run, count and bounds returned), the rest is the
#: caller's: a bitmap whose rows form one run, another route than IVF without the walk, the
#: grouped form, or every row (the plan is then returned)
PLANNED = 3
#: IVF was searched and left the query to the exact scan (away from its filter's rows): the
#: caller scans it (the outputs hold the kernel's padding)
AWAY = 4

_NO_ROWS = np.zeros(0, np.int64)
_NO_POS = np.zeros(0, np.int64)


@nb.njit(cache=True, inline="always")
def _scored_query(q, l2):
    """The query (1, d) as the routes score it: ``[q, 1]`` for ``l2``
    (:func:`gsu.index._l2.augment_queries`), else ``q`` itself."""
    if l2:
        d = q.shape[1]
        qs = np.empty((1, d + 1), np.float32)
        for t in range(d):
            qs[0, t] = q[0, t]
        qs[0, d] = 1.0
        return qs
    return np.ascontiguousarray(q)


@nb.njit(cache=True)
def ivf_request(q, ids, offset, n, P, design, even_min, row_list, top, k, effort, c_group, c_scan, c_bits, nlist, Xl,
                pos_row, list_off, all_pos, ind, C, step, cnmax, away_share, cblk, cscale, cextra, l2, X, out_r, out_s):
    """One query ``q`` (1, d) float32 under the plain int64 id array ``ids`` (any order; the
    caller has checked ``len(ids) * BITMAP_FIRST_SHARE >= n``) of an index with an offset id
    map (``offset``, ``n`` rows, no removed rows).

    ``l2``: an ``l2`` index, ``q`` its raw query and ``X`` its raw (n, d) vectors: the routes
    score ``[q, 1]`` (:func:`gsu.index._l2.augment_queries`, built here) and a finished search
    is rescored here as ``search`` rescores it (:func:`gsu.index._l2.finish`); else ``q`` is
    the query as the routes score it and ``X`` is not read.

    Returns ``(status, is_run, bm, m, rmin, rmax, route, probe, ef, cand, lists, has_away,
    away_cand, away_lists, verdict, count, qs)``: the status (:data:`DONE`, :data:`EMPTY`,
    :data:`PLANNED`, :data:`AWAY`), the filter — the run ``rmin..rmax`` of consecutive ids
    (``is_run``, ``bm`` empty) or as :func:`ids_bitmap64` returns it —, the plan as
    :func:`plan_shared` returns it (``route`` -1 before it), the number of results written
    to ``out_r``/``out_s`` (1, k) and the query as the routes score it (``[q, 1]`` for
    ``l2``: the caller's continuation scores it; a :data:`DONE` answer is already rescored).

    The steps and decisions of the step-by-step path: the window test of
    ``_mutable._window`` (a window is planned and scanned as one run of rows); else the
    bitmap; the plan (``P`` the settings, ``design`` …
    ``top`` the index's side, as :meth:`FilteredIndex._plan_one` passes them); for IVF
    without the walk (``probe == 0``), the filter's form as ``IVFIndex._shared_form`` picks
    it for a filter that has its bitmap (``scan_pays`` with the costs ``c_group``, ``c_scan``,
    ``c_bits`` and ``nlist``): the bitmap scan of ``IVFIndex.search_one``, the centroids
    scored from their 8-bit codes ``cblk``/``cscale``/``cextra``, the away budget
    ``(away_share, away_cand, away_lists)`` when the plan has one; a window's run the same
    way in the run form. The grouped form and every other route are the caller's
    (:data:`PLANNED`).
    """
    qs = _scored_query(q, l2)
    is_run, bm, m, rmin, rmax, lo, hi = _request_filter(ids, offset, n)
    if m == 0:
        return EMPTY, is_run, bm, m, rmin, rmax, -1, 0.0, 0, 0, 0, False, 0, 0, -1, np.int64(0), qs
    if not is_run and rmax - rmin + 1 == m:  # bits forming one run: the caller's (its run form)
        return PLANNED, is_run, bm, m, rmin, rmax, -1, 0.0, 0, 0, 0, False, 0, 0, -1, np.int64(0), qs
    route, probe, ef, cand, lists, has_away, ac, al, uni = plan_shared(P, design, even_min, row_list, top, m, n, is_run, k,
                                                                         effort, True, -1, bm, lo, hi, _NO_ROWS)
    if route != IVF or probe > 0.0 or m >= n:
        return PLANNED, is_run, bm, m, rmin, rmax, route, probe, ef, cand, lists, has_away, ac, al, uni, np.int64(0), qs
    if has_away:
        share_lo, target_hi, lists_hi = away_share, ac, al
    else:
        share_lo, target_hi, lists_hi = 0.0, 0, 0
    status, count = _scan(q, qs, bm, m, lo, hi, is_run, n, k, cand, lists, share_lo, target_hi, lists_hi, c_group, c_scan,
                          nlist, Xl, pos_row, list_off, all_pos, ind, C, step, cnmax, cblk, cscale, cextra, l2, X, out_r, out_s)
    return status, is_run, bm, m, rmin, rmax, route, probe, ef, cand, lists, has_away, ac, al, uni, count, qs


@nb.njit(cache=True, inline="always")
def _request_filter(ids, offset, n):
    """A request's plain id array (int64, any order, at least one id) as the routes read it:
    ``(is_run, bm, m, rmin, rmax, lo, hi)`` — consecutive ascending ids (a time window) as the
    run ``lo..hi-1`` of rows, without a bitmap (``_mutable._window``), else the bitmap, count
    and bounds of :func:`gsu.index._filter_kernels.ids_bitmap64` (``lo = hi = 0``)."""
    m_ids = ids.shape[0]
    a = ids[0]
    is_run = ids[m_ids - 1] - a + 1 == m_ids and fk.strictly_increasing(ids)
    if is_run:
        lo = min(max(a - offset, 0), n)
        hi = min(max(a - offset + m_ids, lo), n)
        return is_run, np.zeros(0, np.uint64), hi - lo, lo, hi - 1, lo, hi
    bm, m, rmin, rmax = fk.ids_bitmap64(ids, offset, n)
    return is_run, bm, m, rmin, rmax, 0, 0


@nb.njit(cache=True)
def _scan(q, qs, bm, m, lo, hi, is_run, n, k, cand, lists, share_lo, target_hi, lists_hi, c_group, c_scan, nlist, Xl, pos_row,
          list_off, all_pos, ind, C, step, cnmax, cblk, cscale, cextra, l2, X, out_r, out_s):
    """The IVF route's list scan of a request's filter (:func:`_request_filter`) at the budget
    ``cand``/``lists`` (the away budget ``share_lo``, ``target_hi``, ``lists_hi``; ``share_lo``
    0: none), as ``IVFIndex.search_one`` runs it for a filter held as its bitmap or run, the
    centroids scored from their 8-bit codes, an ``l2`` answer rescored
    (:func:`gsu.index._l2.finish`): ``(status, count)`` — :data:`DONE`, :data:`AWAY` (left to
    the exact scan) or :data:`PLANNED` where ``IVFIndex.scan_pays`` picks the grouped form
    for the bitmap (nothing done: the caller's)."""
    if not is_run and not c_scan * max(cand * n / max(m, 1), lists * n / max(nlist, 1)) < c_group * m:
        return PLANNED, np.int64(0)
    counts = np.empty(1, np.int64)
    # IVFIndex.search_one's kernel, the centroids scored inside it from their codes
    fk._ivf_search_shared_ser(qs, np.zeros((0, 0), np.float32), Xl, pos_row, list_off, all_pos, bm, m, k, cand, lists, out_r,
                              out_s, counts, np.empty(1, np.int64), ind, C, step, cnmax, list_off, share_lo, target_hi,
                              lists_hi, lo, hi, cblk, cscale, cextra)
    status = AWAY if counts[0] < 0 else DONE
    if l2 and status == DONE:
        _finish_kernel(q, X, _NO_POS, False, out_r, out_s)
    return status, counts[0]


# ---------------------------------------------------------------------------
# the index's side as one argument
# ---------------------------------------------------------------------------
#: the fields of :class:`RequestView`, in order: :func:`ivf_request`'s arguments that belong to
#: the index (and the list scan's costs), as ``FilteredIndex._request_args`` gathers them
VIEW_FIELDS = ("offset", "n", "design", "even_min", "row_list", "top", "nlist", "Xl", "pos_row", "list_off", "all_pos",
               "ind", "C", "step", "cnmax", "cblk", "cscale", "cextra", "l2", "X", "c_group", "c_scan", "c_bits", "Xs", "Cs",
               "steps", "cnmaxs")
#: (``Xs``, ``Cs``, ``steps``, ``cnmaxs``: the exact route's rows as it scores them and their
#: 8-bit codes, ``FilteredIndex._scoring`` and ``_approx``, for :func:`exact_view_request`)
#: :func:`request`'s ``info`` holds, in order: the status, the run flag, the filter's count
#: and bounds, the plan (route, probe share, beam, candidates, lists, away flag, away
#: candidates, away lists, evenness verdict) and the result count — :func:`ivf_request`'s
#: answer but for the bitmap (returned) and the query as the routes score it
INFO_LEN = 15


@structref.register
class RequestViewType(_nbt.StructRef):
    """numba type of :class:`RequestView`."""

    def preprocess_fields(self, fields):
        return tuple((name, _nbt.unliteral(t)) for name, t in fields)


class RequestView(structref.StructRefProxy):
    """The index's side of a request's one compiled call, bundled (fields :data:`VIEW_FIELDS`).

    :func:`ivf_request` takes ~30 arguments, some twenty of them the index's arrays; the
    dispatcher unboxes each of them on every call. Measured on an unseen ``l2`` set
    (50,000 × 48, random 10 % filters, one thread): the call's 31 arguments and 17-value
    answer cost 2.3 µs per request around 9.0 µs of compiled work, of a 16.5 µs search.
    Passed as this one object, through the entry point of the compiled specialisation
    (:func:`gsu.index._direct.direct_entry`), the index's side unboxes as one pointer.
    Built once per index layout (``FilteredIndex._request_args``) by :func:`make_view`, a
    cached compiled constructor."""

    def __new__(cls, *fields):
        return structref.StructRefProxy.__new__(cls, *fields)


structref.define_proxy(RequestView, RequestViewType, list(VIEW_FIELDS))


@nb.njit(cache=True)
def make_view(offset, n, design, even_min, row_list, top, nlist, Xl, pos_row, list_off, all_pos, ind, C, step, cnmax, cblk,
              cscale, cextra, l2, X, c_group, c_scan, c_bits, Xs, Cs, steps, cnmaxs):
    """A :class:`RequestView` (compiled and cached: the proxy's own constructor compiles
    anew in every process)."""
    return RequestView(offset, n, design, even_min, row_list, top, nlist, Xl, pos_row, list_off, all_pos, ind, C, step,
                       cnmax, cblk, cscale, cextra, l2, X, c_group, c_scan, c_bits, Xs, Cs, steps, cnmaxs)


#: the view's fields (:data:`VIEW_FIELDS`, in order) as a tuple, its arrays borrowed
#: (:func:`gsu.index._structview.borrowed_fields`): only inside the call that holds the view
_view_fields = borrowed_fields(RequestViewType, VIEW_FIELDS)


@nb.njit(cache=True)
def view_request(v, P, q, ids, k, effort, away_share, out_r, out_s, counts, info):
    """:func:`ivf_request` with the index's side read from the view ``v``
    (:class:`RequestView`): returns the filter's bitmap (empty for a run) and writes the
    rest of the answer into ``info`` (float64, :data:`INFO_LEN`; see there) and its result
    count into ``counts`` (1,) int64 (a fresh array costs less than ``np.full``). The query
    as the routes score it is not returned: ``[q, 1]`` for ``l2``
    (:func:`gsu.index._l2.augment_queries`), ``q`` itself otherwise."""
    (offset, n, design, even_min, row_list, top, nlist, Xl, pos_row, list_off, all_pos, ind, C, step, cnmax, cblk, cscale,
     cextra, l2, X, c_group, c_scan, c_bits, Xs, Cs, steps, cnmaxs) = _view_fields(v)
    r = ivf_request(q, ids, offset, n, P, design, even_min, row_list, top, k, effort, c_group, c_scan, c_bits, nlist, Xl,
                    pos_row, list_off, all_pos, ind, C, step, cnmax, away_share, cblk, cscale, cextra, l2, X, out_r, out_s)
    info[0] = r[0]
    info[1] = 1.0 if r[1] else 0.0
    info[2] = r[3]
    info[3] = r[4]
    info[4] = r[5]
    info[5] = r[6]
    info[6] = r[7]
    info[7] = r[8]
    info[8] = r[9]
    info[9] = r[10]
    info[10] = 1.0 if r[11] else 0.0
    info[11] = r[12]
    info[12] = r[13]
    info[13] = r[14]
    info[14] = r[15]
    counts[0] = r[15]
    return r[2]


@nb.njit(cache=True)
def forced_view_request(v, q, ids, k, scan, cand, lists, out_r, out_s, info):
    """A request's call with the route and budget the calibration sets instead of its plan's
    (``_calibrate._Timer``: a request's cost is that of the path it takes, :func:`view_request`'s
    for a plain id array this wide): the filter (:func:`_request_filter`) and, for IVF without
    the walk (``scan``), the list scan at ``cand``/``lists`` where the bitmap or run form
    applies (:func:`_scan`, without an away budget). Returns the filter's bitmap and writes
    ``info`` as :func:`view_request` does (status, run flag, count, bounds; the result count
    last); :data:`PLANNED`: the caller goes on, as :meth:`FilteredIndex._request_ivf` goes on
    after a plan (the walk, the grouped form, bits forming one run).

    The scores written are the routes' (``[q, 1]`` against the scored rows for ``l2``, as
    the calibration's exact answers are): an ``l2`` answer is rescored as a request's is
    (:func:`gsu.index._l2.finish`), on a copy, so that its cost is paid and the recall
    still reads the routes' scores."""
    (offset, n, design, even_min, row_list, top, nlist, Xl, pos_row, list_off, all_pos, ind, C, step, cnmax, cblk, cscale,
     cextra, l2, X, c_group, c_scan, c_bits, Xs, Cs, steps, cnmaxs) = _view_fields(v)
    qs = _scored_query(q, l2)
    is_run, bm, m, rmin, rmax, lo, hi = _request_filter(ids, offset, n)
    info[1] = 1.0 if is_run else 0.0
    info[2] = m
    info[3] = rmin
    info[4] = rmax
    info[14] = 0
    if m == 0:
        info[0] = EMPTY
        return bm
    if not scan or (not is_run and rmax - rmin + 1 == m):
        info[0] = PLANNED
        return bm
    status, count = _scan(q, qs, bm, m, lo, hi, is_run, n, k, cand, lists, 0.0, 0, 0, c_group, c_scan, nlist, Xl, pos_row,
                          list_off, all_pos, ind, C, step, cnmax, cblk, cscale, cextra, False, X, out_r, out_s)
    if l2 and status == DONE:
        _finish_kernel(q, X, _NO_POS, False, out_r.copy(), out_s.copy())
    info[0] = status
    info[14] = count
    return bm


_NO_HALF = fk._NO_HALF[0]  # no half-precision copy (the exact route's gathers read none)


@nb.njit(cache=True)
def sorted_rows(ids, offset, n):
    """The rows ``ids - offset`` that lie in ``0..n-1``, sorted and distinct, from the int64
    ``ids`` in any order with repeats (ids outside dropped): ``(rows, count)``, the answer in
    ``rows[:count]``. One pass that maps and checks the order; a sort and one pass more only
    where they are not already strictly increasing. The rows of ``sorted_ids`` then
    ``IdMap.rows_of_sorted`` under an offset id map of ``n`` rows."""
    m = ids.shape[0]
    rows = np.empty(m, np.int64)
    c = 0
    last = np.int64(-1)
    inc = True
    for i in range(m):
        r = ids[i] - offset
        if r >= 0 and r < n:
            inc = inc and r > last
            last = r
            rows[c] = r
            c += 1
    if not inc:
        rows[:c].sort()
        w = 0
        for i in range(c):
            if w == 0 or rows[i] != rows[w - 1]:
                rows[w] = rows[i]
                w += 1
        c = w
    return rows, c


@nb.njit(cache=True)
def exact_view_request(v, q, ids, k, out_r, out_s, counts):
    """A request whose plain id array lies within the exact limit, in one compiled call: its
    sorted distinct rows (:func:`sorted_rows`), their exact top-k as the exact route scores
    them (``FilteredIndex._search_one``: ``[q, 1]`` for ``l2`` against the scored rows, 8-bit
    codes first where the index has them) and, for ``l2``, the rescoring of ``search``
    (:func:`gsu.index._l2.finish`). ``q`` (1, d) float32 as the caller has it (normalised for
    ``cosine``, raw for ``l2``). Returns the number of allowed rows (0: nothing written);
    ``counts[0]`` the result count."""
    (offset, n, design, even_min, row_list, top, nlist, Xl, pos_row, list_off, all_pos, ind, C, step, cnmax, cblk, cscale,
     cextra, l2, X, c_group, c_scan, c_bits, Xs, Cs, steps, cnmaxs) = _view_fields(v)
    rows, m = sorted_rows(ids, offset, n)
    if m == 0:
        return 0
    qs = _scored_query(q, l2)
    counts[0] = fk._gather_any(qs[0], Xs, _NO_HALF, 0.0, 0.0, Cs, steps, cnmaxs, rows, 0, m, k, out_s[0], out_r[0])
    if l2:
        _finish_kernel(q, X, _NO_POS, False, out_r, out_s)
    return m


#: the entry points of :func:`view_request`, one per view type (the fields' array types:
#: read-only arrays of a mapped index make another), and of :func:`exact_view_request`
_ENTRIES: dict = {}
_EXACT_ENTRIES: dict = {}


def _entry(table: dict, kernel: Any, view: RequestView, examples: tuple) -> Callable[..., Any]:
    """The compiled entry point of ``kernel`` for ``view``'s type and the other arguments'
    ``examples``, kept in ``table`` per view type (:func:`gsu.index._direct.direct_entry`)."""
    t = nb.typeof(view)
    ent = table.get(t)
    if ent is None:
        ent = table[t] = direct_entry(kernel, (view, *examples))
    return ent


def entry_for(view: RequestView) -> Callable[..., Any]:
    """The compiled entry point of :func:`view_request` for ``view``'s type and the argument
    types :meth:`FilteredIndex._request_ivf` passes — ``P`` float64 (C), the query (1, d)
    float32 and the ids int64, both C-contiguous and writeable (it checks them), ``k`` an
    int, ``effort`` and the away share floats, the outputs as it allocates them — without
    the dispatcher's typing per call (:func:`gsu.index._direct.direct_entry`)."""
    return _entry(_ENTRIES, view_request, view, (np.zeros(2, np.float64), np.zeros((1, 2), np.float32), np.zeros(2, np.int64),
                                                 1, 1.0, 1.0, np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32),
                                                 np.zeros(1, np.int64), np.zeros(INFO_LEN, np.float64)))


def request(entry: Callable[..., Any], view: RequestView, P: np.ndarray, q: np.ndarray, ids: np.ndarray, k: int,
            away_share: float, out_r: np.ndarray, out_s: np.ndarray, counts: np.ndarray, info: np.ndarray) -> np.ndarray:
    """One request through ``entry`` (:func:`entry_for`): the filter's bitmap, ``info`` and the
    outputs written (:func:`view_request`, effort 1)."""
    return entry(view, P, q, ids, k, 1.0, away_share, out_r, out_s, counts, info)


_FORCED_ENTRIES: dict = {}


def forced_entry_for(view: RequestView) -> Callable[..., Any]:
    """The compiled entry point of :func:`forced_view_request` for ``view``'s type (the
    arguments checked as for :func:`entry_for`; ``scan`` a bool, ``cand`` and ``lists`` ints)."""
    return _entry(_FORCED_ENTRIES, forced_view_request, view, (np.zeros((1, 2), np.float32), np.zeros(2, np.int64), 1, True, 1, 1,
                                                               np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32),
                                                               np.zeros(INFO_LEN, np.float64)))


def exact_entry_for(view: RequestView) -> Callable[..., Any]:
    """The compiled entry point of :func:`exact_view_request` for ``view``'s type (the
    arguments as :meth:`FilteredIndex._request_exact` passes them, checked as for
    :func:`entry_for`)."""
    return _entry(_EXACT_ENTRIES, exact_view_request, view, (np.zeros((1, 2), np.float32), np.zeros(2, np.int64), 1,
                                                             np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32),
                                                             np.zeros(1, np.int64)))


def request_exact(entry: Callable[..., Any], view: RequestView, q: np.ndarray, ids: np.ndarray, k: int, out_r: np.ndarray,
                  out_s: np.ndarray, counts: np.ndarray) -> int:
    """One request within the exact limit through ``entry`` (:func:`exact_entry_for`): the
    number of allowed rows, the outputs written (:func:`exact_view_request`)."""
    return entry(view, q, ids, k, out_r, out_s, counts)
