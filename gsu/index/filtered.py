"""``FilteredIndex``: filtered ANN that stays fast and accurate at every selectivity.

It owns three search structures over the same rows and a planner that picks one
*per query* from that query's allowed-row count ``m`` (known exactly and for free
once the filter is compiled — the selectivity estimate is ``s = m / n``):

- ``m <= exact_max_rows · effort``  → exact pre-filtered scan (numba gather over the
  allowed rows; recall 1); ``exact_run_factor`` times more when the allowed rows
  form one contiguous run (a time window: streamed, not gathered);
- ``s <  hnsw_min_selectivity``     → filter-aware IVF (:class:`~gsu.index.IVFIndex`:
  lists with no allowed row are never opened; lists are opened in centroid order
  until ``ivf_candidates · k · effort`` allowed rows were scored and at least
  ``ivf_min_lists · effort`` lists were opened);
- otherwise                          → HNSW: gsu's beam search over the graph faiss
  built (:meth:`HNSWIndex.beam_search <gsu.index.HNSWIndex.beam_search>`: 8-bit codes
  steer the walk, the results are rescored in float32) with ``ef = hnsw_ef · k · effort``
  *allowed* results — the beam walks past excluded nodes without counting them, so a
  sparser filter needs no wider beam.

A filter shared by the batch that is IVF-bound by its count but has an IVF list at
least ``hnsw_min_selectivity`` allowed (per-list counts, cached on the filter) may be
dense exactly where the query looks — a query-correlated filter, a user's behavior set
near the candidate. Those queries walk the graph first with a *density probe*: if fewer
than ``hnsw_min_selectivity`` of the first ~100 level-0 nodes the walk visits are
allowed, it gives up after those two expansions and the query goes to IVF.

The default thresholds were measured on this machine (see :data:`PLANNER_DEFAULTS`
and the parameter guide); all can be overridden per call. ``effort`` is the one
knob trading recall for speed (1.0 gives recall@10 ≥ 0.95 on the benchmark data).

Queries are grouped by route; each group is one kernel call: no Python loop per query,
for shared or per-query filters. Any query that
comes back with fewer than ``min(k, m)`` results is recomputed exactly, so a row is
short of k only when fewer than k items pass its filter.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from gsu._validate import check_choice, check_k, check_positive_int
from gsu.index import _filter_kernels as fk
from gsu.index.base import Index, SearchResult, register_index
from gsu.index.filters import CompiledFilter, Filter, IdMap
from gsu.index.flat import METRICS
from gsu.index.hnsw import HNSWIndex, derived, prep_queries
from gsu.index.ivf import IVFIndex

log = logging.getLogger(__name__)

__all__ = ["FilteredIndex", "PLANNER_DEFAULTS", "ROUTES"]

#: route codes returned by :meth:`FilteredIndex.plan`
ROUTES = ("exact", "ivf", "hnsw")
#: the exact route reads a half-precision copy first (then rescores a few rows in float32,
#: same results) from this dimension up: measured 1.4x faster at d = 384 (bandwidth-bound),
#: 6 % at d = 64 (compute-bound; not worth the memory there)
HALF_MIN_DIM = 128
EXACT, IVF, HNSW = 0, 1, 2
_ONE = np.zeros(1, np.int64)
_PLAN = "gsu.filtered.plan"  # cache key of a shared filter's route on its compiled form
_EF_DEFAULT: dict[tuple[int, float], int] = {}  # the default settings' beam per (k, effort)

#: planner settings at ``effort=1``, measured on this 2-core machine (200k × 64 clustered
#: catalog, k=10, one thread, random and query-correlated filters, side by side in one
#: process; noisy, shared machine):
#:
#: - exact vs IVF: exact costs ~0.1 µs per allowed row (2,000 rows ≈ 220 µs, 6,000 ≈
#:   490–690 µs); the IVF route costs ~200–400 µs almost independently of m → crossover
#:   near m ≈ 4,000 (2 % of 200k). Re-measured with the one-query kernels serial (no
#:   numba thread-pool launch, which had inflated both): exact 110 µs at m = 2,000,
#:   210 µs at 4,000, 500 µs at 8,000; IVF 130–195 µs flat → crossover m ≈ 3,000.
#:   Re-measured after the IVF kernel lost its heap (bucketed list order, prefetch):
#:   forced routes, 100 queries interleaved, random rows: exact/IVF time 0.59 at
#:   m = 1,000, 0.76 at 1,500, 0.91 at 2,000, 1.33 at 3,000 → ``exact_max_rows = 2200``;
#:   one contiguous run of rows (a time window): 0.44 / 0.58 / 0.73 / 1.00 at the
#:   same m → runs get ``exact_run_factor = 1.4`` times the limit (3,080 rows).
#: - IVF vs HNSW: at 30 % IVF(20·k, 16 lists) 290–440 µs vs HNSW(ef=2·k/s) 350–725 µs;
#:   at 50 % they tie (≈ 300–400 µs both) → ``hnsw_min_selectivity = 0.4``. Re-measured
#:   with gsu's beam search (8-bit codes): forced routes, 100 random-filter queries
#:   interleaved: s = 0.2 IVF 71 µs / HNSW 153 µs, 0.3 91 / 141, 0.4 108 / 126 (time
#:   range 0.3: 74 / 142), at 0.5 the beam is ahead → keep 0.4, also as the density
#:   probe's threshold.
#: - IVF budget: 16 lists → recall 0.947–0.979, 24 → 0.977–0.995; candidates 20·k
#:   fixes the 1–3 % random cells (5·k: 0.84–0.94) → ``ivf_candidates = 20``,
#:   ``ivf_min_lists = 20``.
#: - HNSW beam (gsu's beam search, ef counts allowed results): recall@10 on the benchmark's
#:   filters, both data sets, s ≥ 0.4 and 10 % correlated: ef 20 → 0.925–0.986, ef 24 →
#:   0.946–0.992, ef 28 → 0.961–0.996 → ``hnsw_ef = 2.8`` (ef 28 at k = 10), ``hnsw_ef_min
#:   = 1`` (never below k). At 10 % random filters ef 12 already gives 0.98–0.99, but
#:   those stay on IVF (71 µs vs 153 µs at 20 %).
PLANNER_DEFAULTS: dict[str, float] = {
    "exact_max_rows": 2200,
    "exact_run_factor": 1.4,
    "hnsw_min_selectivity": 0.4,
    "probe_min_share": 0.4,
    "ivf_candidates": 20,
    "ivf_min_lists": 20,
    "hnsw_ef": 2.8,
    "hnsw_ef_min": 1.0,
    "hnsw_ef_max": 2048,
}


def _half_copy(X: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, float, float] | bool:
    """``X`` rounded to IEEE half precision as uint16 bits, with ``rmax`` (largest
    element-wise rounding error) and ``nmax`` (largest row norm), both rounded up; or
    ``False`` when some value does not fit half precision."""
    n, d = X.shape
    H = np.empty((n, d), np.uint16)
    rmax = nmax = 0.0
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            x = np.asarray(X[s : s + chunk], dtype=np.float64)
            h = x.astype(np.float16)
            if not np.isfinite(h).all():
                log.info("filtered: values beyond the half-precision range; the exact route reads float32 only")
                return False
            H[s : s + chunk] = h.view(np.uint16)
            rmax = max(rmax, float(np.abs(x - h.astype(np.float64)).max()))
            nmax = max(nmax, float(np.sqrt((x * x).sum(axis=1)).max()))
    return H, rmax * (1 + 2.0**-20), nmax * (1 + 2.0**-20)


def _contiguous(cf: CompiledFilter, nq: int, m: np.ndarray) -> np.ndarray:
    """(nq,) bool: the query's allowed rows (sorted, unique) form one contiguous run."""
    starts, ends = cf.bounds(nq)
    nz = m > 0
    run = np.zeros(nq, bool)
    run[nz] = cf.rows[ends[nz] - 1] - cf.rows[starts[nz]] + 1 == m[nz]
    return run


@register_index("filtered")
class FilteredIndex(Index):
    """The filtered ANN index users reach for: exact scan + filter-aware IVF + HNSW, planned per query.

    Args:
        dim: vector dimension d.
        metric: ``"ip"`` or ``"cosine"`` (vectors and queries L2-normalised).
        M: HNSW out-degree (``M``); 16–64.
        ef_construction: HNSW insertion beam (``efConstruction``); 100–400.
        nlist: IVF lists (``nlist``); ``None`` = ``2·sqrt(n)`` of the first add.
        seed: IVF k-means seed.

    Memory: the vectors are held twice (faiss HNSW storage in row order, IVF
    list-ordered copy) plus the graph (~``2·M`` int32 per vector at level 0), and,
    built on first use and never saved, the HNSW walk's 8-bit codes (``d`` bytes per
    vector) and for ``dim >= 128`` the exact route's half-precision copy (``2·d`` bytes).
    """

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        M: int = 32,
        ef_construction: int = 200,
        nlist: int | None = None,
        seed: int = 0,
    ):
        self.dim = check_positive_int(dim, name="dim")
        self.metric = check_choice(metric, name="metric", choices=METRICS)
        self.hnsw = HNSWIndex(dim, metric, M=M, ef_construction=ef_construction)
        self.ivf = IVFIndex(dim, metric, nlist=nlist, seed=seed)

    # -- data --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self.hnsw.ntotal

    @property
    def ids(self) -> np.ndarray:
        return self.hnsw.ids

    @property
    def idmap(self) -> IdMap:
        return self.hnsw.idmap

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append ``vectors`` (n, d) float32 with unique external ``ids`` (n,) int64.

        The first call trains the IVF lists (it must hold at least ``nlist`` vectors).
        """
        n0 = self.ntotal
        self.__dict__.pop("_half_copy", None)
        self.ivf.add(vectors, ids)
        try:
            self.hnsw.add(vectors, self.ivf.ids[n0:])
        except BaseException:
            log.error("FilteredIndex.add: the HNSW insert failed after the IVF insert; the index is inconsistent")
            raise

    def _half(self) -> tuple[np.ndarray, float, float] | None:
        """The exact route's half-precision copy ``(H (n, d) uint16, rmax, nmax)`` for
        ``dim >= HALF_MIN_DIM`` (built on first use, dropped by :meth:`add`; never saved),
        or ``None``: short rows, or values beyond the half-precision range."""
        if self.dim < HALF_MIN_DIM or self.ntotal == 0:
            return None
        h = self.__dict__.get("_half_copy")
        if h is None or (h is not False and h[0].shape[0] != self.ntotal):
            h = self._half_copy = _half_copy(self.hnsw.vectors)
        return h or None

    # -- planning ----------------------------------------------------------
    def _settings(self, effort: float, overrides: dict[str, float | None]) -> dict[str, float]:
        if isinstance(effort, bool) or not isinstance(effort, (int, float, np.floating, np.integer)) or not effort > 0:
            raise ValueError(f"effort: expected a positive number (1.0 = default recall ≥ 0.95), got {effort!r}")
        if all(v is None for v in overrides.values()):
            return PLANNER_DEFAULTS
        s = dict(PLANNER_DEFAULTS)
        for key, v in overrides.items():
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or v < 0:
                    raise ValueError(f"{key}: expected a non-negative number, got {v!r}")
                s[key] = float(v)
        return s

    def _routes(self, m: np.ndarray, k: int, effort: float, st: dict[str, float], run: np.ndarray | None = None) -> np.ndarray:
        """Per-query routes for allowed-row counts ``m``; ``run`` (nq,) bool marks filters
        whose rows form one contiguous run (scanned ``exact_run_factor`` times cheaper)."""
        n = max(self.ntotal, 1)
        sel = m / n
        routes = np.where(sel >= st["hnsw_min_selectivity"], HNSW, IVF).astype(np.int8)
        lim = max(st["exact_max_rows"] * effort, k)
        if run is None:
            routes[m <= lim] = EXACT
        else:
            routes[m <= np.where(run, max(lim * st["exact_run_factor"], k), lim)] = EXACT
        return routes

    def plan(
        self,
        n_queries: int,
        k: int,
        *,
        filter: Any = None,
        effort: float = 1.0,
        exact_max_rows: float | None = None,
        hnsw_min_selectivity: float | None = None,
    ) -> np.ndarray:
        """The route the planner picks for each query from the allowed-row counts alone:
        (nq,) int8 codes into :data:`ROUTES`. For a shared filter, queries planned onto IVF
        may still be answered by the graph walk (density probe); :meth:`explain` runs the
        probe and reports the route each query actually takes."""
        k = check_k(k)
        st = self._settings(effort, {"exact_max_rows": exact_max_rows, "hnsw_min_selectivity": hnsw_min_selectivity})
        f = Filter.coerce(filter)
        if f.is_all:
            return self._routes(np.full(n_queries, self.ntotal, np.int64), k, effort, st, np.ones(n_queries, bool))
        cf = f.compile(self.idmap, n_queries)
        m = cf.counts(n_queries)
        return self._routes(m, k, effort, st, _contiguous(cf, n_queries, m))

    def explain(self, queries: Any, k: int, *, filter: Any = None, effort: float = 1.0, **settings: float | None) -> np.ndarray:
        """The route :meth:`search` takes for each query with the same arguments (planner
        ``settings`` as keywords): (nq,) int8 codes into :data:`ROUTES`. Unlike :meth:`plan`
        it sees the queries, so for a shared filter it runs the density probe of the graph
        walk (a query whose walk gives up is answered by IVF)."""
        q = prep_queries(queries, self.dim, self.metric)
        k = check_k(k)
        unknown = set(settings) - set(PLANNER_DEFAULTS)
        if unknown:
            raise TypeError(f"explain: unknown planner settings {sorted(unknown)}; expected some of {sorted(PLANNER_DEFAULTS)}")
        st = self._settings(effort, settings)
        nq = q.shape[0]
        f = Filter.coerce(filter)
        cf = None if f.is_all else f.compile(self.idmap, nq)
        n = self.ntotal
        if cf is not None and not cf.shared:
            m = cf.counts(nq)
            return self._routes(m, k, effort, st, _contiguous(cf, nq, m))
        m = n if cf is None else int(cf.rows.shape[0])
        if m == 0 or n == 0:
            return np.full(nq, EXACT, np.int8)
        code, probe = self._shared_plan(cf, m, k, effort, st)
        if not probe:
            return np.full(nq, code, np.int8)
        counts = np.empty(nq, np.int64)
        self.hnsw.beam_search(q, k, cf, np.arange(nq, dtype=np.int64), np.empty((nq, k), np.int64),
                              np.empty((nq, k), np.float32), counts, self._ef(m, k, effort, st), st["probe_min_share"])
        return np.where(counts < 0, IVF, HNSW).astype(np.int8)

    # -- search ------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int,
        *,
        filter: Any = None,
        effort: float = 1.0,
        route: str = "auto",
        exact_max_rows: float | None = None,
        hnsw_min_selectivity: float | None = None,
        probe_min_share: float | None = None,
        ivf_candidates: float | None = None,
        ivf_min_lists: float | None = None,
        hnsw_ef: float | None = None,
        hnsw_ef_min: float | None = None,
        hnsw_ef_max: float | None = None,
    ) -> SearchResult:
        """Filtered top-``k`` for each row of ``queries`` (nq, d), planned per query.

        Args:
            queries: (nq, d) float32 (a 1-D vector is a batch of one).
            k: results per query.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared or
                one per query (``Filter.per_query``).
            effort: the recall/speed knob (default 1.0 → recall@10 ≥ 0.95 on the
                benchmark data). Scales the HNSW beam, the IVF candidates and lists,
                and the exact-scan threshold; 0.3–4.
            route: ``"auto"`` (the planner) or force ``"exact"``, ``"ivf"``, ``"hnsw"``.
            exact_max_rows, hnsw_min_selectivity, probe_min_share, ivf_candidates, ivf_min_lists,
                hnsw_ef, hnsw_ef_min, hnsw_ef_max: planner settings overriding
                :data:`PLANNER_DEFAULTS` (see the module docstring).
        """
        q = prep_queries(queries, self.dim, self.metric)
        if type(k) is not int or k < 1:
            k = check_k(k)
        if route != "auto":
            check_choice(route, name="route", choices=("auto",) + ROUTES)
        if (exact_max_rows is None and hnsw_min_selectivity is None and probe_min_share is None and ivf_candidates is None
                and ivf_min_lists is None
                and hnsw_ef is None and hnsw_ef_min is None and hnsw_ef_max is None
                and (type(effort) is float or type(effort) is int) and effort > 0):
            st = PLANNER_DEFAULTS  # the one-query-per-call hot path: nothing to validate or merge
        else:
            overrides = {"exact_max_rows": exact_max_rows, "hnsw_min_selectivity": hnsw_min_selectivity,
                         "probe_min_share": probe_min_share, "ivf_candidates": ivf_candidates, "ivf_min_lists": ivf_min_lists, "hnsw_ef": hnsw_ef,
                         "hnsw_ef_min": hnsw_ef_min, "hnsw_ef_max": hnsw_ef_max}
            st = self._settings(effort, overrides)
        nq = q.shape[0]
        n = self.hnsw._n
        if n == 0:
            return SearchResult.empty(nq, k)
        f = filter if type(filter) is Filter else Filter.coerce(filter)
        cf = None if f.is_all else f.compile(self.idmap, nq)
        if cf is None or cf.shared:
            # one filter for the batch: one route, decided on scalars
            m = n if cf is None else int(cf.rows.shape[0])
            if m == 0:
                return SearchResult.empty(nq, k)
            if route != "auto":
                code, probe = ROUTES.index(route), False
            elif st is PLANNER_DEFAULTS and cf is not None:
                # a shared filter's route is fixed by its rows: planned once, cached on it
                key = (_PLAN, id(self), n, k, effort)
                plan = cf._masks.get(key)
                if plan is None:
                    plan = cf._masks[key] = self._shared_plan(cf, m, k, effort, st)
                code, probe = plan
            else:
                code, probe = self._shared_plan(cf, m, k, effort, st)
            if probe:
                # the filter may be dense near the query though sparse overall (query-correlated
                # behavior sets): walk the graph, giving up (density probe) where the nodes the
                # descent lands among are mostly excluded; those queries go to IVF
                out_r, out_s, counts = self._search_shared(HNSW, q, k, cf, m, effort, st, probe=st["probe_min_share"])
                if (counts[0] < 0) if nq == 1 else (counts.min() < 0):
                    w = np.flatnonzero(counts < 0)
                    qw = q if nq == 1 else q[w]
                    r, sc, cn = self._search_shared(IVF, qw, k, cf, m, effort, st)
                    out_r[w], out_s[w], counts[w] = r, sc, cn
            else:
                out_r, out_s, counts = self._search_shared(code, q, k, cf, m, effort, st)
        else:
            m_all = cf.counts(nq)
            if route == "auto":
                routes = self._routes(m_all, k, effort, st, _contiguous(cf, nq, m_all))
            else:
                routes = np.full(nq, ROUTES.index(route), np.int8)
            out_r = np.full((nq, k), -1, np.int64)
            out_s = np.full((nq, k), -np.inf, np.float32)
            counts = np.zeros(nq, np.int64)
            for code in np.unique(routes):
                which = np.flatnonzero(routes == code).astype(np.int64)
                self._run_route(int(code), q, k, cf, which, m_all, out_r, out_s, counts, effort, st)
        idmap = self.hnsw._idmap
        ids = out_r if idmap.identity else idmap.to_ids(out_r)
        return SearchResult(ids, out_s, counts)

    def _shared_plan(self, cf: CompiledFilter | None, m: int, k: int, effort: float, st: dict[str, float]) -> tuple[int, bool]:
        """``(route, probe)`` of a filter shared by the batch (``None``: every row) allowing
        ``m`` rows. ``probe``: an IVF-bound filter with an IVF list as dense as the HNSW
        threshold may be dense near the query (query-correlated behavior sets), so the
        graph walk is tried first with its density probe; with no list that dense, no
        query's neighbourhood is, and the walk is not tried."""
        run = cf is None or int(cf.rows[m - 1]) - int(cf.rows[0]) + 1 == m
        code = self._route_of(m, k, effort, st, run)
        probe = code == IVF and self._max_list_share(cf) >= st["probe_min_share"]
        return code, probe

    def _ivf_budget(self, k: int, effort: float, st: dict[str, float]) -> tuple[int, int]:
        """(candidates, nprobe) of the IVF route."""
        return int(math.ceil(st["ivf_candidates"] * k * effort)), max(1, int(math.ceil(st["ivf_min_lists"] * effort)))

    def _ef(self, m: np.ndarray | int, k: int, effort: float, st: dict[str, float]) -> np.ndarray | int:
        """HNSW beam: ``hnsw_ef · k · effort`` clamped to ``[max(k, hnsw_ef_min · k · effort),
        hnsw_ef_max]``, the same for every allowed-row count ``m`` (an int, or an array for
        per-query filters).

        The beam counts allowed results only, so a sparser filter walks further on its own
        and needs no wider beam (faiss's filtered beam, which keeps the excluded nodes it
        meets, needs ``1/s`` wider). Measured on both benchmark data sets (k = 10, one query
        per call, the benchmark's filters): at s ≥ 0.4, and at 10 % query-correlated filters
        (local selectivity 0.4–1), ef = 20 gives recall@10 0.925–0.986, ef = 24 0.946–0.992,
        ef = 28 0.961–0.996; at s = 0.1 ef = 12 already gives 0.98–0.99.
        """
        ef = _EF_DEFAULT.get((k, effort)) if st is PLANNER_DEFAULTS else None
        if ef is None:
            hi = max(st["hnsw_ef_max"], k)
            lo = min(max(k, math.ceil(st["hnsw_ef_min"] * k * effort)), hi)
            ef = int(min(max(math.ceil(st["hnsw_ef"] * k * effort), lo), hi))
            if st is PLANNER_DEFAULTS and len(_EF_DEFAULT) < 1024:
                _EF_DEFAULT[(k, effort)] = ef
        return np.full(m.shape[0], ef, np.int64) if isinstance(m, np.ndarray) else ef

    def _route_of(self, m: int, k: int, effort: float, st: dict[str, float], run: bool = False) -> int:
        """The route for ``m`` allowed rows (the scalar twin of :meth:`_routes`)."""
        lim = st["exact_max_rows"] * effort
        if m <= max(lim * st["exact_run_factor"] if run else lim, k):
            return EXACT
        return HNSW if m >= st["hnsw_min_selectivity"] * self.hnsw._n else IVF

    def _list_counts(self, cf: CompiledFilter) -> tuple[np.ndarray, np.ndarray]:
        """(allowed rows per IVF list, rows per list) of a shared filter, cached on it."""
        ivf = self.ivf

        def counts() -> tuple[np.ndarray, np.ndarray]:
            boff, _ = derived(cf, ("ivf-buckets", id(ivf)), lambda: fk.bucket_rows(cf.rows, ivf.row_list, ivf._row_pos, ivf.nlist))
            return np.diff(boff), ivf.list_sizes

        return derived(cf, ("ivf-list-counts", id(ivf)), counts)

    def _max_list_share(self, cf: CompiledFilter) -> float:
        """The largest allowed share of any one IVF list (cached on the filter). The share in
        any group of lists is at most this, so below ``hnsw_min_selectivity`` no query's
        local selectivity can reach it and computing it can be skipped."""
        def share() -> float:
            cnt, sizes = self._list_counts(cf)
            return float((cnt / np.maximum(sizes, 1)).max()) if cnt.shape[0] else 0.0

        return derived(cf, ("ivf-max-share", id(self.ivf)), share)

    def _search_shared(
        self, code: int, q: np.ndarray, k: int, cf: CompiledFilter | None, m: int, effort: float, st: dict[str, float],
        *, probe: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every query under one filter (``None``: all rows) by route ``code``: (rows, scores, counts).

        ``probe`` > 0 (HNSW): the graph walk's density probe
        (:meth:`HNSWIndex.beam_search`); a query that gives up comes back with count -1.
        """
        nq = q.shape[0]
        n = self.hnsw._n
        if code == EXACT:
            counts = np.empty(nq, np.int64)
            rows = cf.rows if cf is not None else np.arange(n, dtype=np.int64)
            out_r = np.empty((nq, k), np.int64)
            out_s = np.empty((nq, k), np.float32)
            fk.gather_topk_ip_shared(q, self.hnsw.vectors, rows, k, out_r, out_s, counts, self._half())
        elif code == IVF:
            counts = np.empty(nq, np.int64)
            out_r = np.empty((nq, k), np.int64)  # the kernel pads rows short of k
            out_s = np.empty((nq, k), np.float32)
            cand, nprobe = self._ivf_budget(k, effort, st)
            self.ivf.search_compiled(q, k, cf, _ONE if nq == 1 else np.arange(nq, dtype=np.int64), out_r, out_s, counts,
                                     target=cand, min_lists=nprobe)
        else:
            ef = self._ef(m, k, effort, st)
            counts = np.empty(nq, np.int64)
            out_r = np.empty((nq, k), np.int64)  # the kernel pads rows short of k
            out_s = np.empty((nq, k), np.float32)
            which = _ONE if nq == 1 else np.arange(nq, dtype=np.int64)
            self.hnsw.beam_search(q, k, cf, which, out_r, out_s, counts, ef, probe)
            if cf is not None and (0 <= counts[0] < min(m, k) if nq == 1 else ((counts >= 0) & (counts < min(m, k))).any()):
                self._recompute_short(q, k, cf, m, out_r, out_s, counts)
        return out_r, out_s, counts

    def _recompute_short(self, q: np.ndarray, k: int, cf: CompiledFilter, m: int, out_r: np.ndarray, out_s: np.ndarray,
                         counts: np.ndarray) -> None:
        """Recompute exactly, in place, the queries of a shared filter allowing ``m`` rows
        whose graph walk came back with fewer than ``min(k, m)`` results (count -1 marks
        a walk that gave up: left alone)."""
        short = np.flatnonzero((counts >= 0) & (counts < min(m, k))).astype(np.int64)
        if short.shape[0]:
            log.debug("filtered: %d queries short of k results, recomputed exactly", short.shape[0])
            starts, ends = cf.bounds(q.shape[0])
            fk.gather_topk_ip_sel(q, self.hnsw.vectors, short, starts, ends, cf.rows, k, out_r, out_s, counts, self._half())

    def _run_route(
        self, code: int, q: np.ndarray, k: int, cf: CompiledFilter, which: np.ndarray, m: np.ndarray,
        out_r: np.ndarray, out_s: np.ndarray, counts: np.ndarray, effort: float, st: dict[str, float],
    ) -> None:
        """Answer queries ``which`` (per-query filter ``cf``) by route ``code``, in place.

        Exact and IVF never come back short of ``min(k, m)`` (IVF probes until ``k``
        allowed rows were scored or the filter is exhausted); HNSW queries that do are
        recomputed exactly.
        """
        nq = q.shape[0]
        if code == EXACT:
            starts, ends = cf.bounds(nq)
            fk.gather_topk_ip_sel(q, self.hnsw.vectors, which, starts, ends, cf.rows, k, out_r, out_s, counts, self._half())
        elif code == IVF:
            cand, nprobe = self._ivf_budget(k, effort, st)
            self.ivf.search_compiled(q, k, cf, which, out_r, out_s, counts, target=cand, min_lists=nprobe)
        else:
            self.hnsw.search_compiled(q, k, cf, which, out_r, out_s, ef=self._ef(m, k, effort, st))
            counts[which] = (out_r[which] >= 0).sum(axis=1)

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        hc, ha = self.hnsw._state()
        ic, ia = self.ivf._state()
        config = {"dim": self.dim, "metric": self.metric, "hnsw": hc, "ivf": ic}
        arrays = {f"hnsw.{a}": v for a, v in ha.items()}
        arrays.update({f"ivf.{a}": v for a, v in ia.items()})
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "FilteredIndex":
        idx = cls.__new__(cls)
        idx.dim = int(config["dim"])
        idx.metric = check_choice(config["metric"], name="metric", choices=METRICS)
        idx.hnsw = HNSWIndex._from_state(config["hnsw"], {a[5:]: v for a, v in arrays.items() if a.startswith("hnsw.")})
        idx.ivf = IVFIndex._from_state(config["ivf"], {a[4:]: v for a, v in arrays.items() if a.startswith("ivf.")})
        if not np.array_equal(idx.hnsw.ids, idx.ivf.ids):
            raise ValueError("the HNSW and IVF parts hold different ids")
        return idx

    def __repr__(self) -> str:
        return (f"FilteredIndex(dim={self.dim}, metric={self.metric!r}, M={self.hnsw.M}, "
                f"ef_construction={self.hnsw.ef_construction}, nlist={self.ivf.nlist}, ntotal={self.ntotal})")
