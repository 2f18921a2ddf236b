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
"""

from __future__ import annotations

import numba as nb
import numpy as np

from gsu.index import _filter_kernels as fk
from gsu.index._l2 import _finish_kernel
from gsu.index._plan_kernel import IVF, plan_shared

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
    if l2:
        d = q.shape[1]
        qs = np.empty((1, d + 1), np.float32)
        for t in range(d):
            qs[0, t] = q[0, t]
        qs[0, d] = 1.0
    else:
        qs = np.ascontiguousarray(q)
    m_ids = ids.shape[0]
    a = ids[0]
    is_run = ids[m_ids - 1] - a + 1 == m_ids and fk.strictly_increasing(ids)
    if is_run:  # consecutive ascending ids (a time window): the run form, no bitmap (_mutable._window)
        lo = min(max(a - offset, 0), n)
        hi = min(max(a - offset + m_ids, lo), n)
        bm = np.zeros(0, np.uint64)
        m, rmin, rmax = hi - lo, lo, hi - 1
    else:
        bm, m, rmin, rmax = fk.ids_bitmap64(ids, offset, n)
        lo, hi = 0, 0
    if m == 0:
        return EMPTY, is_run, bm, m, rmin, rmax, -1, 0.0, 0, 0, 0, False, 0, 0, -1, np.int64(0), qs
    if not is_run and rmax - rmin + 1 == m:  # bits forming one run: the caller's (its run form)
        return PLANNED, is_run, bm, m, rmin, rmax, -1, 0.0, 0, 0, 0, False, 0, 0, -1, np.int64(0), qs
    route, probe, ef, cand, lists, has_away, ac, al, uni = plan_shared(P, design, even_min, row_list, top, m, n, is_run, k,
                                                                         effort, True, -1, bm, lo, hi, _NO_ROWS)
    if route != IVF or probe > 0.0 or m >= n:
        return PLANNED, is_run, bm, m, rmin, rmax, route, probe, ef, cand, lists, has_away, ac, al, uni, np.int64(0), qs
    # IVFIndex.scan_pays(m, cand, lists, has_bitmap=True) for a filter held as its bitmap: else
    # the grouped form, the caller's (a run is read by its own form, as _shared_form reads it)
    if not is_run and not c_scan * max(cand * n / max(m, 1), lists * n / max(nlist, 1)) < c_group * m:
        return PLANNED, is_run, bm, m, rmin, rmax, route, probe, ef, cand, lists, has_away, ac, al, uni, np.int64(0), qs
    if has_away:
        share_lo, target_hi, lists_hi = away_share, ac, al
    else:
        share_lo, target_hi, lists_hi = 0.0, 0, 0
    counts = np.empty(1, np.int64)
    # IVFIndex.search_one's kernel, the centroids scored inside it from their codes
    fk._ivf_search_shared_ser(qs, np.zeros((0, 0), np.float32), Xl, pos_row, list_off, all_pos, bm, m, k, cand, lists, out_r,
                              out_s, counts, np.empty(1, np.int64), ind, C, step, cnmax, list_off, share_lo, target_hi,
                              lists_hi, lo, hi, cblk, cscale, cextra)
    status = AWAY if counts[0] < 0 else DONE
    if l2 and status == DONE:
        _finish_kernel(q, X, _NO_POS, False, out_r, out_s)
    return status, is_run, bm, m, rmin, rmax, route, probe, ef, cand, lists, has_away, ac, al, uni, counts[0], qs
