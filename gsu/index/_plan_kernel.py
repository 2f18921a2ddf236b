"""The filtered planner of one shared filter, compiled: :func:`plan_shared`.

:meth:`FilteredIndex._plan_one <gsu.index.FilteredIndex._plan_one>` plans every request's
filter: the exact-scan limit, the band look-up of the settings (:meth:`PlannerSettings.at
<gsu.index.planner.PlannerSettings.at>`), the evenness test where the even settings pay
(:func:`gsu.index._filter_kernels.filter_uniform_one`), the route thresholds, the budgets
and the count of the filter's IVF lists (:func:`gsu.index._filter_kernels.in_fewer_lists`).
In Python that is ~90 bytecode-level steps and two kernel calls; right after a search
kernel has streamed its rows through the caches they run cold: a fresh filter's plan took
9 µs after a 200,000 × 64 search and 39 µs after a 30,000 × 768 one (one thread, the
filtered suite's cached indexes). This module is that plan in one compiled call (5–8 µs
in the same place, its evenness test and list count included, through its entry point:
:func:`plan_entry`); the Python planner
(:meth:`FilteredIndex._plan_one_py <gsu.index.FilteredIndex._plan_one_py>`) stays as
its reference (the same plans, tested case by case) and answers where this one does
not apply (``planner.BAND_INTERP`` off).

The settings travel as one float64 array (:func:`pack_settings`, kept per settings as
``PlannerSettings.plan_consts``), the index's side as a few arrays kept per IVF layout
(:meth:`FilteredIndex._plan_ctx`): the evenness sample design and the cumulative sizes
of the largest lists.

Layout of the settings array, ``nb`` the number of bands::

    [0] nb   [1] has_even (1: the even settings differ)
    two blocks of SBLK = 12 + 2 (4 + 4 nb) + 4 nb values, the settings' then the even
    settings':
        [0..7]  exact_max_rows, exact_run_factor, ivf_candidates, ivf_min_lists,
                hnsw_ef, hnsw_ef_min, hnsw_ef_max, probe_min_share
        [8..10] has away bands, has away-exact bands, has run-probe bands   [11] spare
        per run flag (0, then 1), 4 + 4 nb values: has IVF bands, has beam bands,
                hnsw_min, probe_min, then the IVF bands, their logs, the beam bands, their logs
        the away bands, their logs, the away-exact flags, the run-probe flags
    then the grid (nb) and the log of each adjacent ratio (nb; the last unused)
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from gsu.index import _filter_kernels as fk
from gsu.index._direct import direct_entry
from gsu.index.planner import AWAY_SHARE, GRID_SNAP

#: route codes (as FilteredIndex's)
EXACT, IVF, HNSW = 0, 1, 2
#: :func:`plan_shared`'s route when it needs the filter's bitmap first (a filter held as
#: rows only, where the evenness test or the list count reads a bitmap)
NEED_BITMAP = -1
_S = 12  # scalars per settings block


def _block(st: Any) -> list[float]:
    """One settings block (see the module docstring) from ``st._at_consts``."""
    b, lb, per_run, av, lav, ax = st._at_consts
    nbands = len(b)
    rp = st.band_run_probe
    out = [st.exact_max_rows, st.exact_run_factor, st.ivf_candidates, st.ivf_min_lists, st.hnsw_ef, st.hnsw_ef_min,
           st.hnsw_ef_max, st.probe_min_share, 1.0 if av else 0.0, 1.0 if ax else 0.0, 1.0 if rp else 0.0, 0.0]

    def vals(v: Any) -> list[float]:
        return [float(x) for x in v] if v else [0.0] * nbands

    for run in (0, 1):
        iv, liv, ev, lev, hmin, pmin = per_run[run]
        # a band tuple's logs are None only where a value is not positive (never for
        # validated budgets); the compiled planner is not used then (see supports)
        out += [1.0 if iv else 0.0, 1.0 if ev else 0.0, float(hmin), float(pmin)]
        out += vals(iv) + vals(liv) + vals(ev) + vals(lev)
    out += vals(av) + vals(lav) + vals(ax) + vals(rp)
    return out


def supports(st: Any) -> bool:
    """Whether :func:`plan_shared` can plan with ``st`` exactly as the Python planner does
    (with ``planner.BAND_INTERP`` on, which the caller checks per call): every budget band's
    log is defined (always so for validated settings) and the even settings share the grid."""
    for s in (st, st.even):
        b, lb, per_run, av, lav, ax = s._at_consts
        if b != st.bands:
            return False
        if not b:
            continue
        for iv, liv, ev, lev, _, _ in per_run:
            if (iv and liv is None) or (ev and lev is None):
                return False
        if av and lav is None:
            return False
    return True


def pack_settings(st: Any, even: Any) -> np.ndarray:
    """The float64 array :func:`plan_shared` reads (the module docstring's layout)."""
    b = st._at_consts[0]
    nbands = len(b)
    lb = list(st._at_consts[1]) + [0.0]
    out = [float(nbands), 0.0 if even is st else 1.0] + _block(st) + _block(even) + [float(x) for x in b]
    out += [float(x) for x in lb[:nbands]] if nbands else []
    return np.asarray(out, np.float64)


@nb.njit(cache=True, inline="always")
def _band_pos(P, g, nbands, s):
    """``(i, j)`` of :meth:`PlannerSettings._band_pos` on the grid ``P[g:g+nbands]``."""
    j = 0
    while j < nbands and P[g + j] < s:  # bisect_left (a dozen points: a linear scan)
        j += 1
    if j < nbands and P[g + j] <= s * (1.0 + GRID_SNAP):
        return j, j
    if j > 0 and P[g + j - 1] >= s * (1.0 - GRID_SNAP):
        return j - 1, j - 1
    if j >= nbands:
        return nbands - 1, nbands - 1
    if j == 0:
        return 0, 0
    return j - 1, j


@nb.njit(cache=True, inline="always")
def _at(P, blk, nbands, s, run):
    """:meth:`PlannerSettings.at` of the settings block at ``blk``: ``(has_ivf, ivf,
    has_away, away, has_ef, ef, away_exact, hnsw_min, probe_min)``."""
    rb = blk + _S + (4 + 4 * nbands) * (1 if run else 0)
    has_iv = P[rb] > 0.0
    has_ev = P[rb + 1] > 0.0
    hmin = P[rb + 2]
    pmin = P[rb + 3]
    has_av = P[blk + 8] > 0.0
    has_ax = P[blk + 9] > 0.0
    if nbands == 0:
        return False, 0.0, False, 0.0, False, 0.0, False, hmin, pmin
    iv = rb + 4
    liv = iv + nbands
    ev = liv + nbands
    lev = ev + nbands
    ab = blk + _S + 2 * (4 + 4 * nbands)
    lav = ab + nbands
    ax = lav + nbands
    g = 2 + 2 * (_S + 2 * (4 + 4 * nbands) + 4 * nbands)
    i, j = _band_pos(P, g, nbands, s)
    if i == j:
        return (has_iv, P[iv + j], has_av, P[ab + j], has_ev, P[ev + j], has_ax and P[ax + j] > 0.0, hmin, pmin)
    t = math.log(s / P[g + i]) / P[g + nbands + i]
    u = 1.0 - t
    return (has_iv, math.exp(u * P[liv + i] + t * P[liv + j]) if has_iv else 0.0,
            has_av, math.exp(u * P[lav + i] + t * P[lav + j]) if has_av else 0.0,
            has_ev, math.exp(u * P[lev + i] + t * P[lev + j]) if has_ev else 0.0,
            has_ax and P[ax + i] > 0.0 and (P[ax + j] > 0.0 or s <= P[g + i] * P[ax + i]), hmin, pmin)


@nb.njit(cache=True, inline="always")
def _run_probe(P, blk, nbands, s):
    """:meth:`PlannerSettings.run_probe` of the settings block at ``blk``."""
    if not P[blk + 10] > 0.0 or nbands == 0:
        return True
    rp = blk + _S + 2 * (4 + 4 * nbands) + 3 * nbands
    g = 2 + 2 * (_S + 2 * (4 + 4 * nbands) + 4 * nbands)
    i, j = _band_pos(P, g, nbands, s)
    v = P[rp + j] if i == j else max(P[rp + i], P[rp + j])
    return v > 0.0


@nb.njit(cache=True, inline="always")
def _ivf_budget(P, blk, mult, k, effort):
    """:meth:`FilteredIndex._ivf_budget` (the same products in the same order)."""
    return (max(k, np.int64(math.ceil(P[blk + 2] * mult * k * effort))),
            max(1, np.int64(math.ceil(P[blk + 3] * mult * effort))))


@nb.njit(cache=True, inline="always")
def _ef(P, blk, mult, k, effort):
    """:meth:`FilteredIndex._ef`."""
    hi = max(P[blk + 6], np.float64(k))
    lo = min(max(np.float64(k), np.float64(math.ceil(P[blk + 5] * k * effort))), hi)
    return np.int64(min(max(np.float64(math.ceil(mult * k * effort)), lo), hi))


@nb.njit(cache=True)
def plan_shared(P, design, even_min, row_list, top, m, n, run, k, effort, has_cf, uni, bm, run_lo, run_hi, rows):
    """The plan of one shared filter allowing ``m`` of ``n`` rows, as
    :meth:`FilteredIndex._plan_one_py <gsu.index.FilteredIndex._plan_one_py>` makes it.

    ``P``: :func:`pack_settings`; ``design``: the evenness sample (``[N, L, rows (N),
    lists (N), samples per list (L)]``, int64) and ``even_min`` the smallest selectivity
    it tests (:meth:`FilteredIndex._plan_ctx`); ``row_list`` (n,) int32 and ``top`` (the
    rows of the ``i + 1`` largest lists; empty: no lists) for the list count; ``has_cf``: a
    filter is given (else no evenness test and no count); ``uni``: its evenness verdict
    when known (-1 unknown, 0, 1); the filter as ``bm`` (its bitmap, or empty), the run
    ``run_lo..run_hi-1`` (non-empty when it is one) or its sorted ``rows`` (or empty);
    ``run`` whether the plan takes the runs' budgets.

    Returns ``(route, probe share, ef, candidates, lists, has_away, away candidates, away
    lists, verdict)``: ``verdict`` the evenness verdict (-1: not tested); ``route ==
    NEED_BITMAP`` when a test needs the bitmap of a filter given as rows only.
    """
    nbands = np.int64(P[0])
    sblk = _S + 2 * (4 + 4 * nbands) + 4 * nbands
    blk = np.int64(2)
    lim = P[blk] * effort
    if run:
        lim *= P[blk + 1]
    if m <= max(lim, np.float64(k)):
        return EXACT, 0.0, 0, 0, 0, False, 0, 0, uni
    n1 = max(n, 1)
    s = m / n1
    has_iv, iv, has_av, av, has_ev, ev, ax, hmin, pmin = _at(P, blk, nbands, s, run)
    if has_cf and P[1] > 0.0:
        N = design[0]
        if s >= even_min:
            eb = blk + sblk
            e_iv, e_ivv, e_av, e_avv, e_ev, e_evv, e_ax, e_hmin, e_pmin = _at(P, eb, nbands, s, run)
            pays = (s >= e_hmin) != (s >= hmin) or (s >= e_pmin) != (s >= pmin)
            if not pays and has_iv and e_iv and e_ivv != iv:  # the even IVF budget may be the larger (planner.SCATTERED_KINDS)
                pays = True
            if not pays and has_ev and e_ev and e_evv < ev:
                pays = True
            if pays:
                if uni < 0:
                    L = design[1]
                    R = design[2:2 + N]
                    G = design[2 + N:2 + 2 * N]
                    ng = design[2 + 2 * N:2 + 2 * N + L]
                    if bm.shape[0] > 0:
                        uni = 1 if fk.filter_uniform_one(R, G, ng, bm, 0, 0, s) else 0
                    elif run_hi > run_lo:
                        uni = 1 if fk.filter_uniform_one(R, G, ng, bm, run_lo, run_hi, s) else 0
                    else:
                        return NEED_BITMAP, 0.0, 0, 0, 0, False, 0, 0, uni
                if uni == 1:
                    blk = eb
                    has_iv, iv, has_av, av, has_ev, ev, ax, hmin, pmin = (e_iv, e_ivv, e_av, e_avv, e_ev, e_evv, e_ax,
                                                                          e_hmin, e_pmin)
    ivf_m = iv if has_iv else 1.0
    ef_m = ev if has_ev else P[blk + 4]
    cand, lists = _ivf_budget(P, blk, ivf_m, k, effort)
    has_away = False
    ac = 0
    al = 0
    if has_av and m < n1:
        has_away = True
        if ax:
            ac = -1
            al = -1
        else:
            ac, al = _ivf_budget(P, blk, max(ivf_m, av), k, effort)
    pms = P[blk + 7]
    if s >= hmin or (s >= pmin and pms <= 0.0):
        bail = AWAY_SHARE * s if has_away else 0.0
        return HNSW, bail, _ef(P, blk, ef_m, k, effort), cand, lists, has_away, ac, al, uni
    if s >= pmin and pms <= 1.0 and not (run and not _run_probe(P, blk, nbands, s)):
        return IVF, pms, _ef(P, blk, ef_m, k, effort), cand, lists, has_away, ac, al, uni
    if has_cf and lists > 1 and top.shape[0] > 0 and not (lists - 2 < top.shape[0] and m > top[lists - 2]):
        # FilteredIndex._few_lists: held by fewer lists than the budget opens -> the exact scan
        nl = top.shape[0]
        if rows.shape[0] > 0 or run_hi > run_lo or bm.shape[0] > 0:  # rows, else the run, else the bitmap
            few = fk.in_fewer_lists(row_list, rows, run_lo, run_hi, bm, nl, lists)
        else:
            return NEED_BITMAP, 0.0, 0, 0, 0, False, 0, 0, uni
        if few:
            return EXACT, 0.0, 0, 0, 0, False, 0, 0, uni
    return IVF, 0.0, 0, cand, lists, has_away, ac, al, uni


_ENTRY: list = []


def plan_entry() -> Any:
    """:func:`plan_shared`'s compiled entry point (:func:`gsu.index._direct.direct_entry`),
    resolved once: the dispatcher's typing of its sixteen arguments, run cold after a
    search kernel, costs 1.0-1.4 µs of a request's plan of 5-8 µs (the filtered suite's
    clustered and wide-mixture indexes, one thread, the two calls alternating). Its arrays are the planner's own (the settings' and the index's, C
    order) and the filter's bitmap and rows, passed as strided (layout ``"A"``) 1-D arrays
    of uint64 and int64: those are the only dtypes a compiled filter holds them in, and
    the kernel only reads them."""
    if not _ENTRY:
        a = np.zeros(2, np.float64)
        i64 = np.zeros(3, np.int64)
        _ENTRY.append(direct_entry(plan_shared, (a, i64, 1.0, np.zeros(2, np.int32), i64, 1, 2, False, 1, 1.0, True, -1,
                                                 np.zeros(4, np.uint64)[::2], 0, 0, np.zeros(4, np.int64)[::2])))
    return _ENTRY[0]
