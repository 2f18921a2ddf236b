"""``FilteredIndex``: filtered ANN that stays fast and accurate at every selectivity.

It owns three search structures over the same rows and a planner that picks one
*per query* from that query's allowed-row count ``m`` (known exactly and for free
once the filter is compiled — the selectivity is ``s = m / n``):

- small ``m``                   → exact pre-filtered scan (numba gather over the allowed
  rows; recall 1), streamed when the rows form one contiguous run (a time window);
- low ``s``                     → filter-aware IVF (:class:`~gsu.index.IVFIndex`: lists
  with no allowed row are never opened; lists are opened in centroid order until
  enough allowed rows were scored in enough lists);
- high ``s``                    → HNSW: gsu's beam search over the graph faiss built
  (:meth:`HNSWIndex.beam_search <gsu.index.HNSWIndex.beam_search>`: 8-bit codes steer
  the walk, the results are rescored in float32) keeping ``ef`` *allowed* results.

In between, a filter that is sparse overall may be dense exactly where the query looks
(a query-correlated filter: a user's behavior set near the candidate): those queries
walk the graph first with a *density probe*, which gives up after its first ~100
level-0 nodes if too few are allowed, and IVF answers. The reverse case — a filter whose
rows lie away from the query (the items of categories other than the candidate's) —
has its own IVF budget where calibration measured one: a query whose four nearest IVF
lists hold fewer than a quarter of the filter's selectivity takes it, and a graph walk
that lands in such a neighbourhood gives up for IVF (``planner.AWAY_SHARE``).

**Calibration.** The thresholds between the routes and every route's budget are not
constants: :meth:`FilteredIndex.calibrate` (run by default when the index is built)
measures them on the index's own data — queries sampled from the indexed vectors (or
the caller's), filters of the shapes GSU uses (random, query-correlated, time windows)
at a grid of selectivities, exact answers, and the recall and cost of every route at a
ladder of budgets, each query with a fresh filter as a request brings — and fits
:class:`~gsu.index.planner.PlannerSettings` that reach the target recall at the lowest
measured cost on this machine (:mod:`gsu.index.planner`). The result is saved in the
index file and shown by :meth:`FilteredIndex.explain`; ``search(..., target_recall=…)``
picks another operating point from the same measurements; ``effort`` scales the budgets
by hand.

Queries are grouped by route; each group is one kernel call: no Python loop per query,
for shared or per-query filters. Any query that comes back with fewer than
``min(k, m)`` results is recomputed exactly, so a row is short of k only when fewer
than k items pass its filter.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsu._validate import as_ids, as_matrix, check_choice, check_k, check_positive_int
from gsu.errors import FieldError
from gsu.index import _filter_kernels as fk
from gsu.index import _graph_kernels as gk
from gsu.index import _l2
from gsu.index.base import Index, register_index
from gsu.index.result import SearchResult
from gsu.index.vectors import DENSE_METRICS, normalize_rows, prep_queries
from gsu.index.filters import CompiledFilter, Filter, IdMap
from gsu.index.hnsw import HNSWIndex
from gsu.index._mutable import BITMAP_FIRST_SHARE, DEFAULT_COMPACT_THRESHOLD
from gsu.index.ivf import _NO_BM, SCAN_COST, IVFIndex
from gsu.index import _request as _rq
from gsu.index import planner as _planner
from gsu.index import _plan_kernel as _pk
from gsu.index.planner import PLANNER_DEFAULTS, Calibration, Fit, PlannerSettings, fit_planner

log = logging.getLogger(__name__)

__all__ = ["FilteredIndex", "PLANNER_DEFAULTS", "PlannerSettings", "Calibration", "Explanation", "ROUTES"]

#: route codes returned by :meth:`FilteredIndex.plan` and :meth:`FilteredIndex.explain`
ROUTES = ("exact", "ivf", "hnsw")
#: from this dimension up the exact route reads the graph walk's 8-bit codes first (then
#: rescores in float32 only the rows within the error bound of the k-th score: the same ids
#: and scores, bit for bit): a quarter of the float32 bytes, one 64-byte line per row at
#: d = 64; measured 1.3-1.8x faster than the float32 read and than a half-precision copy
#: at d = 64-768 on cold rows, slower at d = 32 (below, rows are read in float32)
SQ8_MIN_DIM = 64
#: extra entry points of the graph walk: one row from each of this many best-scoring IVF
#: lists (see ``FilteredIndex._walk_seeds``); 0 turns them off
WALK_SEEDS = 4
#: ... on indexes of at least this many rows. Below it the walk is short: the centroid scan
#: cost 5-16 % of a search on three of the filtered suite's sets (30k-200k rows) and changed
#: no recall there; at 10^6 and 2·10^6 rows it cost 6-11 % and lifted the 50 % cell of
#: off-data queries from 0.973 / 0.954 to 0.991 / 0.984 (descents that ended in the wrong
#: region; results/scale/walk_seeds_*)
WALK_SEEDS_MIN_ROWS = 1 << 19
#: the graph walk's density probe is not tried for a filter spread evenly over the IVF lists
#: (:meth:`FilteredIndex._worth_walking`) allowing less than this fraction of ``probe_min_share`` of
#: the rows: around any query it allows about its overall share, so the walk, which needs
#: ``probe_min_share`` among the ~100 nodes it visits, would give up and IVF answer anyway
PROBE_GATE = 0.5
#: rows of the fixed sample that tells an even filter from a concentrated one, over at most
#: ``UNIFORM_LISTS`` evenly spaced lists
UNIFORM_SAMPLES = 512
UNIFORM_LISTS = 128
#: a filter the evenness test finds spread evenly over the data is searched with the budgets
#: the calibration fitted on its random kind alone (``PlannerSettings.even``), where the test
#: expects at least this many allowed rows among its samples: below, a filter concentrated in
#: lists the sample misses can pass for an even one (no allowed sample is within 3 σ of a few)
EVEN_MIN_HITS = 40
EXACT, IVF, HNSW = 0, 1, 2
_ONE = np.zeros(1, np.int64)
_NO_ROWS = np.zeros(0, np.int64)  # no row array (in_fewer_lists reads a run or a bitmap)
_NO_X = np.zeros((0, 1), np.float32)  # no raw vectors (the one-call request of an ip or cosine index)
_NO_ROWL = np.zeros(0, np.int32)  # no row-to-list table (an index without lists)
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_U64 = np.dtype(np.uint64)
_PLAN = "gsu.filtered.plan"  # cache key of a shared filter's plan on its compiled form
_UNIFORM = "gsu.filtered.uniform"  # ... and of its evenness verdict (:meth:`FilteredIndex._walk_shared`)
#: share of the build time the calibration run at build time may take (at least
#: ``_CAL_MIN_SECONDS``); the HNSW graph dominates a build, so this keeps a calibrated
#: build within ~1.1x of the graph alone
_CAL_SHARE = 0.08
_CAL_MIN_SECONDS = 1.0
#: the away budget (candidates and lists; see :meth:`FilteredIndex._plan_one`) of a query
#: the exact scan answers when it lies away from its filter's rows: the IVF kernel flags it
_AWAY_SCAN = -1
#: IVF k-means for the filtered index: training points per list and iterations (faiss's
#: defaults are 256 and 25); the planner is calibrated on whatever lists result
_KMEANS_PER_LIST = 40
_KMEANS_ITER = 10


@dataclass(frozen=True)
class Explanation:
    """What :meth:`FilteredIndex.explain` reports per query (all (nq,) arrays).

    Attributes:
        routes: int8 codes into :data:`ROUTES` of the route each query takes.
        expected_recall: float64 recall@k the calibration measured for that route and
            budget at that selectivity (minimum over the filter kinds measured; 1.0 for
            the exact scan; NaN when unknown: no calibration, or settings/effort changed
            by the caller).
        selectivity: float64 allowed share ``m / n``.
        allowed: int64 allowed rows ``m``.
        ef: int64 beam width of the HNSW route (0 elsewhere).
        candidates: int64 IVF candidates (0 elsewhere).
        target_recall: the recall target of the settings used (NaN for uncalibrated ones).
    """

    routes: np.ndarray
    expected_recall: np.ndarray
    selectivity: np.ndarray
    allowed: np.ndarray
    ef: np.ndarray
    candidates: np.ndarray
    target_recall: float

    def route_names(self) -> list[str]:
        return [ROUTES[int(c)] for c in self.routes]


def _contiguous(cf: CompiledFilter, nq: int, m: np.ndarray) -> np.ndarray:
    """(nq,) bool: the query's allowed rows (sorted, unique) form one contiguous run."""
    if cf.shared:
        return np.full(nq, cf.run is not None)
    starts, ends = cf.bounds(nq)
    nz = m > 0
    run = np.zeros(nq, bool)
    run[nz] = cf.rows[ends[nz] - 1] - cf.rows[starts[nz]] + 1 == m[nz]
    return run


def _request_filter(bm: np.ndarray, r: list[float], n: int) -> CompiledFilter:
    """The compiled filter of a request's one compiled call (:mod:`gsu.index._request`) from
    the bitmap it returned and its ``info`` (as a list: run flag, count, bounds), as the
    step-by-step path compiles it: a window as its run (``_mutable._window``), bits forming
    one run with that run noted."""
    m, lo, hi = int(r[2]), int(r[3]), int(r[4])
    if r[1]:
        return CompiledFilter(None, None, n, True, run=(lo, hi + 1))
    return CompiledFilter.from_bitmap(bm, m, n, (lo, hi + 1) if hi - lo + 1 == m else None)


def _within_exact(ids: np.ndarray, st: PlannerSettings, k: int) -> bool:
    """Whether a request's plain id array (1-D int64) takes the exact route's one call: no
    longer than the exact limit, or than a window's own limit where that is lower (an array
    that may be a window, its ends that far apart, takes the step-by-step path between the
    two, which compiles it as a run). The lean path's and the public front's rule."""
    mf = ids.shape[0]
    lim = st.exact_max_rows
    return mf <= max(lim * min(st.exact_run_factor, 1.0), k) or (
        mf <= max(lim, k) and (mf < 2 or ids[mf - 1] - ids[0] + 1 != mf))


def _check_effort(effort: Any) -> float:
    if isinstance(effort, bool) or not isinstance(effort, (int, float, np.floating, np.integer)) or not effort > 0 \
            or not math.isfinite(effort):
        raise ValueError(f"effort: expected a positive number (1.0 = the calibrated operating point), got {effort!r}")
    return float(effort)


def _check_target(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not 0.0 < float(t) < 1.0:
        raise ValueError(f"target_recall: expected a number in (0, 1), got {t!r}")
    return float(t)


@register_index("filtered")
class FilteredIndex(Index):
    """The filtered ANN index users reach for: exact scan + filter-aware IVF + HNSW, planned per query.

    Args:
        dim: vector dimension d.
        metric: ``"ip"``, ``"cosine"`` (vectors and queries L2-normalised) or ``"l2"``
            (squared euclidean distance, scores ``-|q - x|²``: every route ranks on the
            exact inner-product reduction of :mod:`gsu.index._l2` and the returned rows are
            rescored in float64).
        M: HNSW out-degree (``M``); 16–64.
        ef_construction: HNSW insertion beam (``efConstruction``); 100–400.
        nlist: IVF lists (``nlist``); ``None`` = ``2·sqrt(n)`` of the first add.
        seed: IVF k-means and calibration seed.
        calibrate: run :meth:`calibrate` after every :meth:`add` (bounded to ~8 % of
            the build time, at least 1 s; a progress bar on a terminal). ``False``: plan
            with :data:`PLANNER_DEFAULTS` until :meth:`calibrate` is called.
        lists_copy: also keep a copy of the vectors in IVF list order, which the IVF
            route streams instead of reading each list's rows from the row-ordered
            storage: one more float32 copy of the vectors (memory and file). Below
            ``SQ8_MIN_DIM`` it pays: IVF probes 1.3× faster (100,000 × 32, forced IVF at
            16 and 40 lists, fresh 10 % and 50 % filters, stop 61's kernel). From
            ``SQ8_MIN_DIM`` on it does not: the one-copy layout reads the 8-bit codes
            first and probed 1.10–1.23× faster than the copy (the same at 100,000 × 64).

    Mutable: ``remove(ids)``, ``upsert(vectors, ids)`` and ``compact()`` (tombstones in
    both parts, honoured by every route like a filter; see :mod:`gsu.index._mutable`).

    Memory: one float32 copy of the vectors (unless ``lists_copy``) — faiss's HNSW
    storage, in row order, which the exact route and the graph walk read by row and the
    IVF lists read through each list position's row (the lists keep only their
    layout) — plus the graph (~``2·M``
    int32 per vector at level 0, read in place from faiss), the HNSW walk's 8-bit codes
    (``d`` bytes per vector; saved with the index) and, built on first use and never
    saved, for ``dim >= 128`` the exact route's half-precision copy (``2·d`` bytes). ``l2`` adds the
    augmented rows ``[x, -|x|²/2]`` the kernels score (``d + 1`` floats per vector).
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
        calibrate: bool = True,
        lists_copy: bool = False,
    ):
        self.dim = check_positive_int(dim, name="dim")
        self.metric = check_choice(metric, name="metric", choices=DENSE_METRICS)
        for name, v in (("calibrate", calibrate), ("lists_copy", lists_copy)):
            if not isinstance(v, bool):
                raise TypeError(f"{name}: expected a bool, got {v!r}")
        self.hnsw = HNSWIndex(dim, metric, M=M, ef_construction=ef_construction)
        self.ivf = IVFIndex(dim, metric, nlist=nlist, seed=seed, niter=_KMEANS_ITER, max_train=_KMEANS_PER_LIST)
        if not lists_copy:  # the lists keep their layout only and read the HNSW storage
            self.ivf.without_vectors()
        self.compact_threshold = DEFAULT_COMPACT_THRESHOLD  # the parts themselves never compact alone
        self.seed = int(seed)
        self.auto_calibrate = calibrate
        self._calibration: Calibration | None = None
        self._fits: dict[float, Fit] = {}
        self.build_seconds = 0.0

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

    @property
    def lists_copy(self) -> bool:
        """Whether the IVF lists keep their own list-ordered copy of the vectors."""
        return not self.ivf._external

    @property
    def calibration(self) -> Calibration | None:
        """What the last :meth:`calibrate` measured and fitted (``None``: not calibrated)."""
        return self._calibration

    @property
    def settings(self) -> PlannerSettings:
        """The planner settings :meth:`search` uses by default (the calibrated ones, or
        :data:`PLANNER_DEFAULTS`)."""
        return self._fit(None).settings

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append ``vectors`` (n, d) float32 with unique external ``ids`` (n,) int64.

        The first call trains the IVF lists (it must hold at least ``nlist`` vectors).
        Builds use every core (faiss's OpenMP threads, BLAS). With ``calibrate=True`` the
        planner is then recalibrated on the whole index.
        """
        self._add(as_matrix(vectors, name="vectors", dim=self.dim), ids, calibrate=self.auto_calibrate)

    def _add(self, x: np.ndarray, ids: Any, *, calibrate: bool) -> None:
        t0 = time.perf_counter()
        n0 = self.ntotal
        if self.metric == "cosine":
            x = normalize_rows(x)
        self.__dict__.pop("_sq8_args", None)
        self.__dict__.pop("_nmax", None)
        if self.ivf._external:
            self.ivf.append_rows(self.ivf.lists_of(x), ids)
        else:
            self.ivf.add(x, ids)
        try:
            self.hnsw.add(x, self.ivf.ids[n0:])
        except BaseException:
            log.error("FilteredIndex.add: the HNSW insert failed after the IVF insert; the index is inconsistent")
            raise
        self.build_seconds += time.perf_counter() - t0
        if calibrate:
            self.calibrate(max_seconds=max(_CAL_MIN_SECONDS, _CAL_SHARE * self.build_seconds))

    def _scoring(self) -> np.ndarray:
        """What the exact route scores: the vectors, or for ``l2`` the augmented
        ``[x, -|x|²/2]`` (queries ``[q, 1]``; :mod:`gsu.index._l2`)."""
        h = self.hnsw
        return h.vectors if self.metric != "l2" else h._scoring_vectors()

    def _scoring_queries(self, q: np.ndarray) -> np.ndarray:
        return _l2.augment_queries(q) if self.metric == "l2" else q

    def _approx(self) -> tuple[None, tuple[np.ndarray, np.ndarray, float] | None]:
        """What the exact route reads first, as the gather kernels' ``(half, sq8)``: for
        ``dim >= SQ8_MIN_DIM`` the graph walk's 8-bit codes with their steps and the rows'
        largest norm (computed on first use, dropped by :meth:`add` and compaction), else
        nothing (float32 rows). Kept with the graph's codes it was made from while they are
        the same object over the same rows (every request's exact or IVF route asks for it)."""
        if self.dim < SQ8_MIN_DIM:
            return None, None
        h = self.hnsw
        c = self.__dict__.get("_sq8_args")  # (the graph's codes tuple, what this returns)
        if c is not None:
            src = h.__dict__.get("_sq8")
            if src is c[0] and src is not None and src[0].shape[0] == h._n:
                return c[1]
        if self.ntotal == 0:
            return None, None
        codes, step = h._codes()
        out = None, (codes, step, self._row_norm_max())
        self._sq8_args = (h.__dict__.get("_sq8"), out)
        return out

    def _row_norm_max(self) -> float:
        """The largest norm of a scored row (:meth:`_scoring`), the codes' error bound needs
        it: saved with the index, computed in O(n d) when not known (after an add)."""
        v = self.__dict__.get("_nmax")
        if v is None or v[0] != self.ntotal:
            v = self._nmax = (self.ntotal, float(fk.max_row_norm(self._scoring())))
        return v[1]

    # -- mutation ----------------------------------------------------------
    # The HNSW and IVF parts hold the same rows in the same order; a removed item gets a
    # tombstone in both (the parts never compact by themselves: compact_threshold 1.0),
    # and every route searches through ``hnsw.compile_filter``, which drops dead rows
    # from the call's filter before any kernel sees it.
    @property
    def compact_threshold(self) -> float:
        """Share of dead rows past which ``remove``/``upsert`` compact by themselves
        (saved with the index; ``1.0``: never)."""
        return self.__dict__.get("_compact_threshold", DEFAULT_COMPACT_THRESHOLD)

    @compact_threshold.setter
    def compact_threshold(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"compact_threshold: expected a number in [0, 1], got {value!r}")
        self._compact_threshold = float(value)
        self.hnsw.compact_threshold = self.ivf.compact_threshold = 1.0

    @property
    def n_live(self) -> int:
        """Items that searches can return (rows less tombstones)."""
        return self.hnsw.n_live

    @property
    def n_dead(self) -> int:
        """Rows marked removed and not yet reclaimed by :meth:`compact`."""
        return self.hnsw.n_dead

    @property
    def live_ids(self) -> np.ndarray:
        """(n_live,) int64 ids of the live rows, in row order."""
        return self.hnsw.live_ids

    def __len__(self) -> int:
        return self.n_live

    def remove(self, ids: Any, *, missing_ok: bool = False) -> int:
        """Mark the items ``ids`` removed: no route returns them from now on. Unknown
        (or already removed) ids raise ``KeyError`` unless ``missing_ok``. Returns the
        number removed; compacts past :attr:`compact_threshold`."""
        n = self.hnsw.remove(ids, missing_ok=missing_ok)  # checks every id before any change
        if n:
            self.ivf.remove(ids, missing_ok=True)
        self._maybe_compact()
        return n

    def upsert(self, vectors: Any, ids: Any) -> None:
        """Insert ``vectors`` (n, d) float32 under ``ids`` (n,) int64 (unique), replacing
        the items that already hold any of these ids. The planner keeps its calibration
        (an upsert does not recalibrate; :meth:`calibrate` or :meth:`compact` do)."""
        x = as_matrix(vectors, name="vectors", dim=self.dim)
        new_ids = as_ids(ids, name="ids", unique=True)
        if new_ids.shape[0] != x.shape[0]:
            raise ValueError(f"ids: expected {x.shape[0]} ids (one per vector), got {new_ids.shape[0]}")
        present = new_ids[self.hnsw.idmap.rows(new_ids) >= 0]
        if present.shape[0]:
            self.hnsw.remove(present)
            self.ivf.remove(present)
        self._add(x, new_ids, calibrate=False)
        self._maybe_compact()

    def compact(self) -> int:
        """Drop the dead rows for good: the IVF lists are re-laid out and the graph is
        rebuilt over the live rows (a build's cost); recalibrates when the index
        calibrates itself. Returns the number of rows reclaimed."""
        n = self.hnsw.n_dead
        if n == 0:
            return 0
        t0 = time.perf_counter()
        self.__dict__.pop("_sq8_args", None)
        self.__dict__.pop("_nmax", None)
        self.ivf.compact()
        self.hnsw.compact()
        if not np.array_equal(self.hnsw.ids, self.ivf.ids):  # pragma: no cover - both keep row order
            raise RuntimeError("FilteredIndex.compact: the HNSW and IVF parts disagree on the live rows")
        if self.auto_calibrate and self.ntotal:
            self.calibrate(max_seconds=max(_CAL_MIN_SECONDS, _CAL_SHARE * (time.perf_counter() - t0)))
        log.info("FilteredIndex: compacted %d dead rows", n)
        return n

    def _maybe_compact(self) -> None:
        if self.hnsw.n_dead and self.hnsw.n_dead > self.compact_threshold * self.ntotal:
            self.compact()

    # -- calibration -------------------------------------------------------
    @property
    def _base_settings(self) -> PlannerSettings:
        return PLANNER_DEFAULTS

    def warm_up(self, k: int = 10) -> None:
        """Run every route's kernels once — the exact scan (and its one-call request), IVF
        scanned and grouped, the walk with and without the density probe, each with no away
        budget, an IVF one and the exact scan's — so that a process's first request on a path
        does not load them: on the suite's power-law set a correlated 10 % request whose
        density probe gave up and whose away query took the exact scan cost 29.8 ms the first
        time in a process, then 0.1-0.3 ms. Answers nothing; safe on an empty index. The
        server warms every index this way before it serves (``gsu.serve.registry``)."""
        n = self.hnsw._n
        if n == 0:
            return
        k = max(1, min(int(k), n))
        X = self.hnsw.vectors
        q = self._scoring_queries(np.ascontiguousarray(X[:1], dtype=np.float32))
        ids = np.ascontiguousarray(self.ids, dtype=np.int64)
        narrow, wide = ids[: max(1, min(ids.shape[0], 64))], ids[:: 3]
        away_ex = (_planner.AWAY_SHARE, _AWAY_SCAN, _AWAY_SCAN)
        aways = (None, away_ex, (_planner.AWAY_SHARE, 4 * k, 2)) if self.ivf.centroids is not None else (None,)
        for f in (narrow, wide):
            for scan in (False, True):
                cf = self.hnsw.compile_filter(f, 1)
                if scan:
                    cf.bitmap64()
                m = cf.count
                if m == 0:
                    continue
                for code, probe, ef in ((EXACT, 0.0, 0), (IVF, 0.0, 0), (HNSW, 0.0, k), (IVF, 0.4, k), (HNSW, 0.4, k)):
                    for away in aways:
                        self._search_one(q, k, cf, code, probe, ef, 4 * k, 2, away)
                self._exact_rows(q, k, cf, _ONE, np.empty((1, k), np.int64), np.empty((1, k), np.float32),
                                 np.empty(1, np.int64))
        for f in (narrow, wide):  # the lean path's one-call requests
            self._lean_search(np.array(X[:1], dtype=np.float32), k, {"filter": np.array(f, np.int64)})

    def calibrate(
        self,
        queries: Any = None,
        *,
        target_recall: float = 0.95,
        k: int = 10,
        n_queries: int = 48,
        max_seconds: float | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> Calibration:
        """Measure the planner's thresholds and budgets on this index's own data.

        Draws filters of three shapes — uniform random subsets, query-correlated subsets
        (80 % drawn from the rows nearest the query by exact score: all of the nearest, or
        half of twice as many), contiguous row ranges (time windows) — and, for the IVF
        budget of queries away from their filter's rows, a fourth (regions of rows that
        leave the query's own region out: categories other than the candidate's) at a grid of
        selectivities from 0.1 % to 70 % and without a filter (the unfiltered point, one
        measurement for every shape), computes the exact top-``k``, times every route
        at a ladder of budgets (one query per call, a fresh ``Filter`` from an id array
        each time) and fits :class:`PlannerSettings` reaching
        ``target_recall`` for every kind at the lowest measured cost
        (:func:`gsu.index.planner.fit_planner`). The settings are used by :meth:`search`
        from then on and saved with the index.

        Args:
            queries: (nq, d) float32 queries typical of the workload; ``None`` samples
                ``n_queries`` rows of the index (each query's own row is then excluded
                from its filters, so the queries are held out; a row with a near-copy in
                the index is swapped for one without: :func:`gsu.index._calibrate.twin_free_rows`).
            target_recall: recall@k of the default operating point (in (0, 1)).
            k: results per query measured (budgets are in units of k).
            n_queries: queries per (selectivity, kind) cell.
            max_seconds: wall-time limit, checked after each selectivity once the main
                decades (1 %, 10 %, 50 %) and the unfiltered point are measured; the selectivities not reached in
                time take the budgets of their measured neighbours, the exact limit is
                extrapolated from the measured scans and, above the measured range, the
                default graph threshold applies (``Calibration.complete`` is then False).
                Under a limit the main decades' budget ladders stop at the first step
                reaching ``target_recall``, so higher targets (``search(target_recall=0.99)``)
                are planned from fewer measurements (the selectivities measured after
                them; see :func:`gsu.index.planner.fit_planner` for the rest). ``None``: no
                limit (every ladder also climbs on to recall 0.99).
            seed: filter sampling seed (default: the index's).
            progress: progress bar (``None``: on a terminal only).

        Returns:
            the :class:`Calibration` (also :attr:`calibration`).
        """
        target = _check_target(target_recall)
        k = check_k(k)
        n_queries = check_positive_int(n_queries, name="n_queries")
        n = self.ntotal
        if n == 0:
            raise ValueError("calibrate: the index is empty")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        if queries is None:
            # rows of the index, held out from every route while calibrating (the graph's
            # entry point is never one: the walk starts there)
            ep = self.hnsw.entry_point
            pick = rng.choice(n - 1, min(n_queries, n - 1), replace=False) if n > 1 else np.zeros(0, np.int64)
            pick = (pick + (pick >= ep)).astype(np.int64)
            from gsu.index import _calibrate as cm

            if cm.TWIN_FREE and pick.shape[0]:
                # rows with a near-copy in the index swapped for rows without one: a held-out row
                # whose copy stays finds its neighbours through the copy, an easier query than a
                # fresh vector (the near-duplicate set's held-out rows reached 0.97 with a beam that
                # gave its fresh queries 0.952 without a filter and ~0.92 under category filters)
                pick = cm.twin_free_rows(self.hnsw.vectors, pick, k, ep, [self.seed if seed is None else seed, 1])
            qrows = np.sort(pick).astype(np.int64)
            if qrows.shape[0] == 0:
                qrows = np.zeros(1, np.int64)
            Q = np.ascontiguousarray(self.hnsw.vectors[qrows])
        else:
            Q = prep_queries(queries, self.dim, self.metric)
            if Q.shape[0] > n_queries:
                Q = np.ascontiguousarray(Q[np.sort(rng.choice(Q.shape[0], n_queries, replace=False))])
            qrows = None
        Q = self._scoring_queries(Q)  # the calibration times and scores the routes as search runs them
        from gsu.index._calibrate import run_calibration

        limit = math.inf if max_seconds is None else float(max_seconds)
        cal = run_calibration(self, Q, qrows, k=k, target=target, max_seconds=limit,
                              seed=int(rng.integers(2**31)), progress=progress)
        self._calibration = cal
        self._fits = {}
        st = cal.settings
        log.info("calibrated in %.1fs: exact <= %.0f rows (x%.2f for runs), probe from s=%.3g, HNSW from s=%.3g%s",
                 cal.seconds, st.exact_max_rows, st.exact_run_factor, st.probe_min_selectivity, st.hnsw_min_selectivity,
                 "" if st.run_hnsw_min_selectivity is None else
                 f" (runs: probe from s={st.probe_min(True):.3g}, HNSW from s={st.hnsw_min(True):.3g})")
        return cal

    def _fit(self, target_recall: float | None) -> Fit:
        """The planner for ``target_recall`` (None: the calibrated target), cached."""
        f = self._fits.get(target_recall)
        if f is not None:
            return f
        cal = self._calibration
        if cal is None:
            f = Fit(self._base_settings, (), (), False)
        else:
            t = cal.target_recall if target_recall is None else _check_target(target_recall)
            f = fit_planner(cal, t, self._base_settings, even_from=self._even_min_share())
            if not f.reached:
                log.info("filtered: recall %.3f was not reached at every calibrated selectivity; the largest budgets measured apply there", t)
        if len(self._fits) < 64:
            self._fits[target_recall] = f
        return f

    def _budget_kw(self, fam: str, step: float, ivf_step: float | None, k: int, st: PlannerSettings) -> dict[str, Any]:
        """Arguments of :meth:`_search_one` for a calibration ladder step."""
        if fam == "ivf":
            return {"cand": max(k, int(math.ceil(st.ivf_candidates * step * k))), "lists": max(1, int(math.ceil(st.ivf_min_lists * step)))}
        ef = max(k, int(math.ceil(step * k)))
        if fam == "hnsw":
            return {"ef": ef}
        return {"ef": ef, "probe": st.probe_min_share, "cand": max(k, int(math.ceil(st.ivf_candidates * ivf_step * k))),
                "lists": max(1, int(math.ceil(st.ivf_min_lists * ivf_step)))}

    # -- planning ----------------------------------------------------------
    def _settings_for(self, effort: float, target_recall: float | None, overrides: dict[str, Any]) -> tuple[Fit, PlannerSettings]:
        fit = self._fit(None if target_recall is None else _check_target(target_recall))
        st = fit.settings.with_overrides(overrides)
        return fit, st

    def _ef(self, mult: float, k: int, effort: float, st: PlannerSettings) -> int:
        hi = max(st.hnsw_ef_max, k)
        lo = min(max(k, math.ceil(st.hnsw_ef_min * k * effort)), hi)
        return int(min(max(math.ceil(mult * k * effort), lo), hi))

    def _ivf_budget(self, mult: float, k: int, effort: float, st: PlannerSettings) -> tuple[int, int]:
        """(candidates, nprobe) of the IVF route."""
        return (max(k, int(math.ceil(st.ivf_candidates * mult * k * effort))),
                max(1, int(math.ceil(st.ivf_min_lists * mult * effort))))

    def _plan_one(self, m: int, run: bool, k: int, effort: float, st: PlannerSettings, cf: CompiledFilter | None = None
                  ) -> tuple[int, float, int, int, int, tuple[float, int, int] | None]:
        """:meth:`_plan_one_py`'s plan in one compiled call (:func:`gsu.index._plan_kernel.plan_shared`:
        the same plans, tested case by case; a fresh filter's plan ran cold in Python after
        each search kernel, 9–39 µs): the evenness test's verdict is kept on ``cf`` as
        :meth:`_uniform_shared` keeps it. Python's planner answers where the compiled one
        does not apply (:func:`gsu.index._plan_kernel.supports`)."""
        lim = st.exact_max_rows * effort  # the exact route first, as _plan_one_py (a few steps)
        if run:
            lim *= st.exact_run_factor
        if m <= max(lim, k):
            return EXACT, 0.0, 0, 0, 0, None
        P = st.plan_consts
        if P is None or not _planner.BAND_INTERP:
            return self._plan_one_py(m, run, k, effort, st, cf)
        design, even_min, row_list, top = self._plan_ctx()
        n = self.hnsw._n
        plan = _pk.plan_entry()
        if cf is None:
            r = plan(P, design, even_min, row_list, top, m, n, run, k, effort, False, -1, _NO_BM, 0, 0, _NO_ROWS)
        else:
            key = (_UNIFORM, id(self), n)
            u = cf._masks.get(key)
            uni = -1 if u is None else int(u)
            rn = cf.run
            lo, hi = (0, 0) if rn is None else rn
            rows = cf._rows
            if rows is None:
                rows = _NO_ROWS
            bm = cf._masks.get("bitmap64")
            if bm is None:
                bm = _NO_BM
            if ((rows.dtype is not _I64 and rows.dtype != _I64) or (bm.dtype is not _U64 and bm.dtype != _U64)
                    or rows.ndim != 1 or bm.ndim != 1):  # never: a compiled filter holds them so (the entry's types)
                raise TypeError("compiled filter rows or bitmap of an unexpected type")
            r = plan(P, design, even_min, row_list, top, m, n, run, k, effort, True, uni, bm, lo, hi, rows)
            if r[0] == _pk.NEED_BITMAP:
                r = plan(P, design, even_min, row_list, top, m, n, run, k, effort, True, uni, cf.bitmap64(), lo, hi, rows)
        return self._plan_of(cf, r)

    def _plan_of(self, cf: CompiledFilter | None, r: tuple
                 ) -> tuple[int, float, int, int, int, tuple[float, int, int] | None]:
        """:meth:`_plan_one`'s plan from :func:`gsu.index._plan_kernel.plan_shared`'s answer ``r``
        (its evenness verdict, when it tested one, kept on ``cf`` as :meth:`_uniform_shared` keeps it)."""
        if cf is not None and r[8] >= 0:
            cf._masks.setdefault((_UNIFORM, id(self), self.hnsw._n), r[8] == 1)
        return r[0], r[1], r[2], r[3], r[4], ((_planner.AWAY_SHARE, r[6], r[7]) if r[5] else None)

    def _plan_ctx(self) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """What :func:`gsu.index._plan_kernel.plan_shared` reads of the index, kept per IVF
        layout: ``(design, even_min, row_list, top)`` — the evenness sample
        (:meth:`_uniform_design` as one int64 array ``[N, L, rows, lists, samples per list]``),
        :meth:`_even_min_share`, the row-to-list table and the rows of the ``i + 1`` largest
        lists (:meth:`_few_lists`; both empty without lists)."""
        ivf = self.ivf
        off = ivf._list_off
        pr = ivf.__dict__.get("_pos_row")
        ctx = self.__dict__.get("_plan_ctx_v")
        if ctx is not None and ctx[4] is off and ctx[5] is pr:
            return ctx[:4]
        if off is None or pr is None:  # no lists yet: no evenness test, no list count
            design, even_min, row_list, top = np.zeros(2, np.int64), math.inf, _NO_ROWL, _NO_ROWS
        else:
            R, G, ng = self._uniform_design()
            design = np.concatenate([np.array([R.shape[0], ng.shape[0]], np.int64), R, G, ng]).astype(np.int64)
            even_min = float(self._even_min_share())
            if off.shape[0] < 2:
                row_list, top = _NO_ROWL, _NO_ROWS
            else:
                row_list = ivf._row_list
                top = np.cumsum(np.sort(np.diff(off))[::-1]).astype(np.int64)
        self._plan_ctx_v = (design, even_min, row_list, top, off, pr)
        return self._plan_ctx_v[:4]

    def _plan_one_py(self, m: int, run: bool, k: int, effort: float, st: PlannerSettings, cf: CompiledFilter | None = None
                     ) -> tuple[int, float, int, int, int, tuple[float, int, int] | None]:
        """``(route, probe share, ef, candidates, lists, away)`` for a filter allowing ``m``
        rows (``run``: one contiguous run, planned with the runs' budgets). ``route == IVF``
        with ``probe > 0``: walk the graph first with the density probe. ``away``:
        ``(share, candidates, lists)``, the IVF budget of a query away from the filter's
        rows (``None``: the same budget); a walk (``route == HNSW``) then runs with a
        density probe of ``AWAY_SHARE`` times the selectivity and hands such a query to IVF.
        ``cf``: the filter, shared by the batch; off the exact route (which the evenness
        never changes) a filter spread evenly over the data plans with the random kind's
        budgets (:meth:`_even_at`)."""
        lim = st.exact_max_rows * effort
        if run:
            lim *= st.exact_run_factor
        if m <= max(lim, k):
            return EXACT, 0.0, 0, 0, 0, None
        n = max(self.hnsw._n, 1)
        s = m / n
        pt = st.at(s, run)  # one look-up of the bands for everything below
        if cf is not None and st.has_even:
            st, pt = self._even_at(cf, s, run, st, pt)
        ivf_m, away_m, ef_m, away_exact, hmin, pmin = pt
        if ivf_m is None:
            ivf_m = 1.0
        if ef_m is None:
            ef_m = st.hnsw_ef
        cand, lists = self._ivf_budget(ivf_m, k, effort, st)
        away = None
        if away_m is not None and m < n:
            if away_exact:  # such a query costs less by the exact scan
                away = (_planner.AWAY_SHARE, _AWAY_SCAN, _AWAY_SCAN)
            else:
                ac, al = self._ivf_budget(max(ivf_m, away_m), k, effort, st)
                away = (_planner.AWAY_SHARE, ac, al)
        if s >= hmin or (s >= pmin and st.probe_min_share <= 0.0):
            # the walk (a probe that never gives up is the plain walk); with budgets for
            # queries away from the filter's rows, it gives up for them
            bail = _planner.AWAY_SHARE * s if away is not None else 0.0
            return HNSW, bail, self._ef(ef_m, k, effort, st), cand, lists, away
        if s >= pmin and st.probe_min_share <= 1.0 and not (run and not st.run_probe(s)):
            # (not a time window where the calibration found the walk's probe wasted)
            return IVF, st.probe_min_share, self._ef(ef_m, k, effort, st), cand, lists, away
        if cf is not None and self._few_lists(cf, m, lists):
            return EXACT, 0.0, 0, 0, 0, None
        return IVF, 0.0, 0, cand, lists, away

    def _few_lists(self, cf: CompiledFilter, m: int, lists: int) -> bool:
        """Whether the ``m`` allowed rows of the shared filter ``cf`` lie in fewer than
        ``lists`` IVF lists: IVF with that budget then opens every list and scores every
        allowed row, and the exact scan scores the same rows without the list scan (the
        wide mixture's one-category filters, 4.6 % of its rows in 16 of 346 lists, where the
        budget asks for 20: IVF ~310 µs, the scan ~220). Not asked where the ``lists - 1``
        largest lists cannot hold ``m`` rows (one look-up); else
        :func:`_filter_kernels.in_fewer_lists`, which answers after a few dozen rows for a
        filter spread over many lists."""
        if lists <= 1:
            return False
        _, _, row_list, top = self._plan_ctx()  # (the compiled planner's: kept per layout)
        if top.shape[0] == 0:  # no lists
            return False
        if lists - 2 < top.shape[0] and m > top[lists - 2]:
            return False
        nl = top.shape[0]  # the layout's lists: every entry of the row-to-list table is below it
        r = cf._rows
        if r is not None and r.shape[0]:
            return bool(fk.in_fewer_lists(row_list, r, 0, 0, _NO_BM, nl, lists))
        run = cf.run
        if run is not None:
            return bool(fk.in_fewer_lists(row_list, _NO_ROWS, run[0], run[1], _NO_BM, nl, lists))
        return bool(fk.in_fewer_lists(row_list, _NO_ROWS, 0, 0, cf.bitmap64(), nl, lists))

    def _plan_kept(self, cf: CompiledFilter, m: int, run: bool, k: int, effort: float, st: PlannerSettings
                   ) -> tuple[int, float, int, int, int, tuple[float, int, int] | None]:
        """:meth:`_plan_one` for a reused shared filter: a filter's plan is fixed by its rows,
        so it is planned once and cached on its compiled form (keyed by the settings'
        identity: hashing the settings dataclass costs ~0.8 µs; the entry holds them, so
        that identity is not reused meanwhile)."""
        key = (_PLAN, id(self), self.hnsw._n, k, effort, id(st))
        hit = cf._masks.get(key)
        if hit is not None and hit[0] is st:
            return hit[1]
        plan = self._plan_one(m, run, k, effort, st, cf)
        cf._masks[key] = (st, plan)
        return plan

    def _plan_many(self, m: np.ndarray, run: np.ndarray, k: int, effort: float, st: PlannerSettings
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_plan_one` for arrays: (routes int8, probe bool, ef, candidates, lists,
        away candidates, away lists) (the away budgets equal the others' without
        ``band_away_ivf``; with it, the walks hand queries away from their filter's rows
        to IVF: :meth:`_plan_one`)."""
        n = max(self.hnsw._n, 1)
        s = m / n
        lim = st.exact_max_rows * effort * np.where(run, st.exact_run_factor, 1.0)
        routes = np.where(s >= st.hnsw_mins(run), HNSW, IVF).astype(np.int8)
        routes[m <= np.maximum(lim, k)] = EXACT
        probe = (routes == IVF) & (s >= st.probe_mins(run)) & (st.probe_min_share <= 1.0)
        if st.probe_min_share <= 0.0:  # a probe that never gives up is the plain walk
            routes[probe] = HNSW
            probe[:] = False
        elif st.band_run_probe:
            probe &= ~(run & ~st.run_probes(s))
        hi = max(st.hnsw_ef_max, k)
        lo = min(max(k, math.ceil(st.hnsw_ef_min * k * effort)), hi)
        ef = np.clip(np.ceil(st.ef_mults(s, run) * k * effort), lo, hi).astype(np.int64)
        im = st.ivf_mults(s, run)
        cand = np.maximum(k, np.ceil(st.ivf_candidates * im * k * effort)).astype(np.int64)
        lists = np.maximum(1, np.ceil(st.ivf_min_lists * im * effort)).astype(np.int64)
        if st.has_away:
            am = st.away_mults(s, run)
            acand = np.maximum(k, np.ceil(st.ivf_candidates * am * k * effort)).astype(np.int64)
            alists = np.maximum(1, np.ceil(st.ivf_min_lists * am * effort)).astype(np.int64)
            ex_away = st.away_exacts(s)  # answered by the exact scan (see _plan_one)
            acand[ex_away] = _AWAY_SCAN
            alists[ex_away] = _AWAY_SCAN
        else:
            acand, alists = cand.copy(), lists.copy()
        return routes, probe, ef, cand, lists, acand, alists

    def plan(
        self,
        n_queries: int,
        k: int,
        *,
        filter: Any = None,
        effort: float = 1.0,
        target_recall: float | None = None,
        **settings: float | None,
    ) -> np.ndarray:
        """The route the planner picks for each query from the allowed-row counts alone:
        (nq,) int8 codes into :data:`ROUTES`. Queries planned onto IVF may still be
        answered by the graph walk (density probe), or by the exact scan where a shared
        filter's rows lie in fewer lists than IVF's budget opens; :meth:`explain` runs the
        probe, looks at the filter's lists and reports the route each query actually takes."""
        k = check_k(k)
        effort = _check_effort(effort)
        _, st = self._settings_for(effort, target_recall, settings)
        cf = self.hnsw.compile_filter(filter, n_queries)
        if cf is None:
            m = np.full(n_queries, self.ntotal, np.int64)
            return self._plan_many(m, np.ones(n_queries, bool), k, effort, st)[0]
        m = cf.counts(n_queries)
        return self._plan_many(m, _contiguous(cf, n_queries, m), k, effort, st)[0]

    def explain(self, queries: Any, k: int, *, filter: Any = None, effort: float = 1.0, target_recall: float | None = None,
                **settings: float | None) -> Explanation:
        """What :meth:`search` does for each query with the same arguments (planner
        ``settings`` as keywords): the route it takes, its budget and the recall the
        calibration measured for it (see :class:`Explanation`). Unlike :meth:`plan` it
        sees the queries, so it runs the graph walk's density probe (a query whose walk
        gives up is answered by IVF) and, where the planner sends queries away from their
        filter's rows to the exact scan (``band_away_exact``), IVF's away test."""
        q = prep_queries(queries, self.dim, self.metric)
        k = check_k(k)
        effort = _check_effort(effort)
        fit, st = self._settings_for(effort, target_recall, settings)
        nq = q.shape[0]
        n = self.ntotal
        cf = self.hnsw.compile_filter(filter, nq)  # the filter less the removed rows
        if cf is None:
            m = np.full(nq, n, np.int64)
            run = np.ones(nq, bool)
        else:
            m = cf.counts(nq)
            run = _contiguous(cf, nq, m)
        routes, probe, ef, cand, lists, acand, alists = self._plan_many(m, run, k, effort, st)
        uni = np.full(nq, -1, np.int8)
        even = np.zeros(nq, bool)
        if cf is not None and st.has_even:  # as search: an even filter plans with the random kind's budgets
            if cf.shared:
                even[:] = m[0] > 0 and routes[0] != EXACT and self._settings_shared(cf, int(m[0]), bool(run[0]), st) is not st
            else:
                even = self._even_many(cf, m, run, routes, st, uni)
            ev = np.flatnonzero(even)
            if ev.shape[0]:
                routes[ev], probe[ev], ef[ev], cand[ev], lists[ev], acand[ev], alists[ev] = self._plan_many(
                    m[ev], run[ev], k, effort, st.even)
        if (cf is not None and cf.shared and nq and routes[0] == IVF and not probe[0] and m[0] > 0
                and self._few_lists(cf, int(m[0]), int(lists[0]))):
            routes[:] = EXACT  # as search: rows in fewer lists than IVF's budget opens are scanned
        if st.has_away:  # as search: a walk gives up where its filter's rows lie away from the query
            bw = np.flatnonzero((routes == HNSW) & (m > 0) & (m < n)).astype(np.int64)
            if bw.shape[0]:
                counts = np.full(nq, 0, np.int64)
                self._walk(q, k, cf, bw, np.empty((nq, k), np.int64), np.empty((nq, k), np.float32), counts, ef,
                           _planner.AWAY_SHARE, self._walk_seeds(self._scoring_queries(q), bw))
                gave = bw[counts[bw] < 0]
                routes[gave] = IVF
                cand[gave] = acand[gave]
                routes[gave[acand[gave] < 0]] = EXACT  # where the exact scan costs less than their away budget
        ef[(routes != HNSW) & ~probe] = 0
        cand[routes != IVF] = 0
        routes[m == 0] = EXACT
        w = np.flatnonzero(probe & (m > 0)).astype(np.int64)
        if w.shape[0]:
            counts = np.full(nq, -1, np.int64)
            tried = w if cf is None else w[self._worth_walking(cf, w, m, st.probe_min_share, None if cf.shared else uni)]
            if tried.shape[0]:
                self.hnsw.beam_search(q, k, cf, tried, np.empty((nq, k), np.int64), np.empty((nq, k), np.float32), counts,
                                      ef, st.probe_min_share, self._walk_seeds(self._scoring_queries(q), tried))
            walked = w[counts[w] >= 0]
            routes[walked] = HNSW
            cand[walked] = 0
            ef[w[counts[w] < 0]] = 0
        if st.has_away:  # as search: IVF leaves a query away from its filter's rows to the exact scan where so planned
            iv = np.flatnonzero((routes == IVF) & (acand < 0) & (m > 0)).astype(np.int64)
            if iv.shape[0]:
                counts = np.zeros(nq, np.int64)
                qs = self._scoring_queries(q)
                for c, l in np.unique(np.stack([cand[iv], lists[iv]], axis=1), axis=0):
                    grp = iv[(cand[iv] == c) & (lists[iv] == l)]
                    self.ivf.search_compiled(qs, k, cf, grp, np.empty((nq, k), np.int64), np.empty((nq, k), np.float32), counts,
                                             target=int(c), min_lists=int(l), vectors=self._scoring(), sq8=self._approx()[1],
                                             away=(_planner.AWAY_SHARE, _AWAY_SCAN, _AWAY_SCAN))
                left = iv[counts[iv] < 0]
                routes[left] = EXACT
                cand[left] = 0
        s = m / max(n, 1)
        exp = np.full(nq, np.nan)
        if self._calibration is not None and effort == 1.0 and not any(v is not None for v in settings.values()):
            exp = np.where(routes == IVF, fit.expected(IVF, s, run, even), fit.expected(HNSW, s, run, even))
        exp[routes == EXACT] = 1.0
        tr = self._calibration.target_recall if (self._calibration is not None and target_recall is None) else (
            float(target_recall) if target_recall is not None and self._calibration is not None else float("nan"))
        return Explanation(routes.astype(np.int8), exp, s, m, ef, cand, tr)

    # -- search ------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int,
        *,
        filter: Any = None,
        effort: float = 1.0,
        target_recall: float | None = None,
        route: str = "auto",
        exact_max_rows: float | None = None,
        exact_run_factor: float | None = None,
        hnsw_min_selectivity: float | None = None,
        probe_min_selectivity: float | None = None,
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
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts: an id
                array, a mask, a BitMap), shared or one per query (``Filter.per_query``).
            effort: the manual recall/speed knob: multiplies the budgets of the chosen
                operating point and the exact-scan limit; 0.3–4.
            target_recall: the operating point: recall@k the calibration's measurements
                must reach (default: the calibrated target, 0.95); ignored when the index
                is not calibrated.
            route: ``"auto"`` (the planner) or force ``"exact"``, ``"ivf"``, ``"hnsw"``.
            exact_max_rows, exact_run_factor, hnsw_min_selectivity, probe_min_selectivity,
                probe_min_share, ivf_candidates, ivf_min_lists, hnsw_ef, hnsw_ef_min,
                hnsw_ef_max: planner settings overriding the operating point's
                (:class:`~gsu.index.planner.PlannerSettings`).
        """
        q = prep_queries(queries, self.dim, self.metric)
        if type(k) is not int or k < 1:
            k = check_k(k)
        if route != "auto":
            check_choice(route, name="route", choices=("auto",) + ROUTES)
        if type(effort) is not float or not effort > 0 or effort == math.inf:
            effort = _check_effort(effort)
        if (exact_max_rows is None and exact_run_factor is None and hnsw_min_selectivity is None and probe_min_selectivity is None
                and probe_min_share is None and ivf_candidates is None and ivf_min_lists is None and hnsw_ef is None
                and hnsw_ef_min is None and hnsw_ef_max is None):
            fit = self._fits.get(target_recall)
            st = (fit if fit is not None else self._fit(None if target_recall is None else _check_target(target_recall))).settings
            cacheable = True
        else:
            _, st = self._settings_for(effort, target_recall, {
                "exact_max_rows": exact_max_rows, "exact_run_factor": exact_run_factor, "hnsw_min_selectivity": hnsw_min_selectivity,
                "probe_min_selectivity": probe_min_selectivity, "probe_min_share": probe_min_share, "ivf_candidates": ivf_candidates,
                "ivf_min_lists": ivf_min_lists, "hnsw_ef": hnsw_ef, "hnsw_ef_min": hnsw_ef_min, "hnsw_ef_max": hnsw_ef_max})
            cacheable = False
        nq = q.shape[0]
        n = self.hnsw._n
        if n == 0:
            return SearchResult.empty(nq, k)
        cf = self.hnsw.compile_filter(filter, nq)  # the filter less the removed rows (None: every row)
        if cf is None or cf.shared:
            # one filter for the batch: one plan, decided on scalars
            m = n if cf is None else cf.count
            if m == 0:
                return SearchResult.empty(nq, k)
            if route == "auto":
                run = cf is None or cf.run is not None
                if cacheable and cf is not None and type(filter) is not np.ndarray:
                    # (not for a plain id array: its compiled form is new in every call)
                    plan = self._plan_kept(cf, m, run, k, effort, st)
                else:
                    plan = self._plan_one(m, run, k, effort, st, cf)
            else:
                plan = self._forced(ROUTES.index(route), m, k, effort, st)
            out_r, out_s, counts = self._search_one(self._scoring_queries(q), k, cf, *plan)
        else:
            out_r, out_s, counts = self._search_per_query(self._scoring_queries(q), k, cf, route, effort, st)
        if self.metric == "l2":  # scores -|q - x|², exact in float64
            _l2.finish(q, self.hnsw.vectors, out_r, out_s)
        idmap = self.hnsw._idmap
        ids = out_r if idmap.identity else idmap.to_ids(out_r)
        return SearchResult.trusted(ids, out_s, counts)

    def _lean_search(self, queries: Any, k: int, kw: dict[str, Any]) -> SearchResult | None:
        """The lean path of the common call, tried by the locked ``search`` wrapper before
        :meth:`search` (:func:`gsu.index.base._locked_search`): one float32 query (``(d,)``
        or ``(1, d)``, C-contiguous, writeable) on an index without removed rows (any metric:
        an ``l2`` query is searched as ``[q, 1]`` and its answers rescored as :meth:`search`
        rescores them, :func:`gsu.index._l2.finish`), with at most ``filter=`` (``None``, a plain int64 id array — a
        request's fresh filter — or ``Filter.from_ids``) and ``target_recall=`` (``None`` or a
        float whose operating point is already fitted). The same compile, plan and kernels
        as :meth:`search`, without binding its fifteen parameters and checking the
        overrides; ``None`` for anything else (:meth:`search` answers or raises)."""
        f = None
        tr = None
        if kw:
            for name, v in kw.items():
                if name == "filter":
                    f = v
                elif name == "target_recall":
                    tr = v
                else:
                    return None
            if tr is not None and tr.__class__ is not float:
                return None
            if f is not None:
                tf = f.__class__
                if tf is np.ndarray:
                    if f.dtype is not _I64 or f.ndim != 1:
                        return None
                elif tf is not Filter or f._kind != "ids":
                    return None
        if queries.__class__ is not np.ndarray or queries.dtype is not _F32:
            return None
        d = self.dim
        shp = queries.shape
        if not (shp == (d,) or shp == (1, d)) or not queries.flags.c_contiguous or not queries.flags.writeable:
            return None
        v = queries.reshape(-1)
        if not math.isfinite(v.dot(v)):
            return None  # NaN/inf: the general path raises the error
        q = queries if len(shp) == 2 else queries.reshape(1, d)
        fit = self._fits.get(tr)
        hnsw = self.hnsw
        n = hnsw._n
        if fit is None or n == 0 or hnsw._dead is not None:
            return None
        metric = self.metric
        if metric == "cosine":
            q = normalize_rows(q)
        st = fit.settings
        plain = f is not None and tf is np.ndarray  # a request's plain id array
        within = plain and _within_exact(f, st, k)
        if plain and (res := (self._request_exact(q, f, k) if within else
                              self._request_ivf(q, f, k, st) if f.shape[0] * BITMAP_FIRST_SHARE >= n else None)) is not None:
            # the request in one compiled call (the exact route; the IVF route, or continued
            # from it) (an l2 query: its [q, 1] built and its answers rescored there)
            if res.__class__ is SearchResult:  # allows nothing
                return res
            out_r, out_s, counts = res
            idmap = hnsw._idmap
            return SearchResult.trusted(out_r if idmap.identity else idmap.to_ids(out_r), out_s, counts)
        if metric == "l2":  # scored as [q, 1] against [x, -|x|²/2], rescored below (as search does)
            q_l2, q = q, _l2.augment_queries(q)
        if f is None:
            cf = None
            m = n
            plan = self._plan_one(m, True, k, 1.0, st, None)
        else:
            if within:
                # within the exact limit whatever its rows: the exact scan reads its sorted
                # rows, not the bitmap a large id array compiles to first
                cf = hnsw._compile_ids(f, False, rows=True)
            else:
                cf = hnsw.compile_filter(f, 1)
            m = cf.count
            if m == 0:
                return SearchResult.empty(1, k)
            if tf is np.ndarray:  # compiled anew in every call: planned anew
                plan = self._plan_one(m, cf.run is not None, k, 1.0, st, cf)
            else:  # a reused filter: planned once, cached on it (as in search)
                plan = self._plan_kept(cf, m, cf.run is not None, k, 1.0, st)
        out_r, out_s, counts = self._search_one(q, k, cf, *plan)
        if metric == "l2":
            _l2.finish(q_l2, hnsw.vectors, out_r, out_s)
        idmap = hnsw._idmap
        return SearchResult.trusted(out_r if idmap.identity else idmap.to_ids(out_r), out_s, counts)

    @staticmethod
    def _fused_search(locked: Any) -> Any:
        """The public ``search``: :func:`gsu.index._front.filtered_front` — the request of a
        GSU (one float32 query under a plain int64 id array) answered by the request's one
        compiled call itself, everything else handed to ``locked``, the locked general
        :meth:`search` with its lean hook. Installed by :meth:`Index.__init_subclass__
        <gsu.index.base.Index.__init_subclass__>`. (In a module of its own: a front defined
        here would call ``locked`` in ``base`` and come back here, re-entering this file.)"""
        from gsu.index._front import filtered_front

        return filtered_front(locked)

    def _request_ivf(self, q: np.ndarray, ids: np.ndarray, k: int, st: PlannerSettings
                     ) -> SearchResult | tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The lean path's request under a plain id array of at least ``1/BITMAP_FIRST_SHARE``
        of the rows, beyond the exact limit (effort 1): :func:`gsu.index._request.ivf_request`
        builds its bitmap, plans it and, on the IVF route without the walk, searches it in one
        compiled call; whatever it leaves (the away query's exact scan, the other routes and
        forms) goes on here from the filter and plan it built, as :meth:`search` would have
        gone on. ``None`` where it does not apply (nothing done: the caller compiles the
        filter itself) — no offset id map, removed rows, the Python planner, no 8-bit centroid
        codes, an id array that is not C-contiguous and writeable (numba would compile another
        specialisation). ``q``: the query (1, d) as the caller has it (normalised for
        ``cosine``; for ``l2`` the raw query, whose ``[q, 1]`` the call builds and whose
        answers are rescored as :meth:`search` rescores them). Returns the empty result where
        the filter allows nothing, else ``(rows (1, k), scores (1, k), counts)`` (row
        numbers)."""
        P = st.plan_consts
        fl = ids.flags
        if (P is None or not _planner.BAND_INTERP or self.hnsw._dead is not None or not fl.c_contiguous or not fl.writeable
                or not fl.aligned or ids.shape[0] == 0 or not q.flags.aligned):
            return None
        a = self._request_args()
        if a is None or a[1] is None:
            return None
        view, entry, n, l2, _ = a
        out_r = np.empty((1, k), np.int64)
        out_s = np.empty((1, k), np.float32)
        counts = np.empty(1, np.int64)
        info = np.empty(_rq.INFO_LEN, np.float64)
        bm = _rq.request(entry, view, P, q, ids, k, _planner.AWAY_SHARE, out_r, out_s, counts, info)
        status = info[0]
        if status == _rq.EMPTY:
            return SearchResult.empty(1, k)
        if status == _rq.DONE:  # (rescored in the call for l2)
            return out_r, out_s, counts
        return self._request_rest(q, k, st, bm, info, out_r, out_s, counts, n, l2)

    def _request_rest(self, q: np.ndarray, k: int, st: PlannerSettings, bm: np.ndarray, info: np.ndarray,
                      out_r: np.ndarray, out_s: np.ndarray, counts: np.ndarray, n: int, l2: bool
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a request's one compiled call (:func:`gsu.index._request.view_request`) left
        (status :data:`~gsu.index._request.AWAY` or :data:`~gsu.index._request.PLANNED`),
        gone on from the filter's bitmap ``bm`` and its ``info`` as :meth:`search` would go on:
        the away query's exact scan, or the plan (made here when the call did not make it)
        and :meth:`_search_one`; ``l2`` answers rescored. ``(rows (1, k), scores (1, k),
        counts)`` (row numbers)."""
        status = info[0]
        r = info.tolist()
        qs = _l2.augment_queries(q) if l2 else q  # the query as the routes score it
        cf = _request_filter(bm, r, n)
        m = cf.count
        if status == _rq.AWAY:  # left to the exact scan, as _search_one leaves it (counts holds its mark)
            self._exact_rows(qs, k, cf, _ONE, out_r, out_s, counts)
        else:  # PLANNED: the plan (when made) as _plan_one hands it on, the rest as search goes on
            if r[5] < 0:
                plan = self._plan_one(m, cf.run is not None, k, 1.0, st, cf)
            else:  # (route, probe share, beam, candidates, lists, away flag, away candidates, away lists, verdict)
                plan = self._plan_of(cf, (int(r[5]), r[6], int(r[7]), int(r[8]), int(r[9]), bool(r[10]), int(r[11]),
                                          int(r[12]), int(r[13])))
            out_r, out_s, counts = self._search_one(qs, k, cf, *plan)
        if l2:
            _l2.finish(q, self.hnsw.vectors, out_r, out_s)
        return out_r, out_s, counts

    def _request_forced(self, q: np.ndarray, qs: np.ndarray, ids: np.ndarray, k: int, code: int, probe: float, ef: int,
                        cand: int, lists: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """A request with the plan ``(code, probe, ef, cand, lists)`` instead of its own, as the
        calibration times it (``_calibrate._Timer``): the path :meth:`_request_ivf` takes under
        a plain id array this wide — its one compiled call
        (:func:`gsu.index._request.forced_view_request`: the filter and, for IVF without the
        walk, the list scan), and where that leaves the request (the walk, the density probe,
        the grouped form) its continuation: the compiled filter from the call's bitmap, then
        :meth:`_search_one`. The scores are the routes' (``qs``: the query as they score it;
        an ``l2`` answer is rescored on a copy, its cost paid as a request's). ``None`` where
        the call does not apply (:meth:`_request_ivf`'s conditions; the caller times the
        step-by-step path) or the filter allows nothing."""
        fl = ids.flags
        if (self.hnsw._dead is not None or not fl.c_contiguous or not fl.writeable or not fl.aligned or ids.shape[0] == 0
                or not q.flags.aligned or ids.shape[0] * BITMAP_FIRST_SHARE < self.hnsw._n):
            return None
        a = self._request_args()
        if a is None or a[1] is None:
            return None
        view, _, n, l2, _ = a
        out_r = np.empty((1, k), np.int64)
        out_s = np.empty((1, k), np.float32)
        info = np.empty(_rq.INFO_LEN, np.float64)
        scan = code == IVF and probe <= 0.0
        bm = _rq.forced_entry_for(view)(view, q, ids, k, scan, cand, lists, out_r, out_s, info)
        if info[0] == _rq.DONE:
            return out_r, out_s, info[14:15].astype(np.int64)
        if info[0] != _rq.PLANNED:  # nothing allowed (the forced budget has no away share: no AWAY)
            return None
        cf = _request_filter(bm, info.tolist(), n)
        out_r, out_s, counts = self._search_one(qs, k, cf, code, probe, ef, cand, lists)
        if l2:
            _l2.finish(q, self.hnsw.vectors, out_r.copy(), out_s.copy())
        return out_r, out_s, counts

    def _request_exact(self, q: np.ndarray, ids: np.ndarray, k: int) -> SearchResult | tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The lean path's request under a plain id array within the exact limit (effort 1)
        in one compiled call (:func:`gsu.index._request.exact_view_request`): its sorted
        distinct rows, their exact top-k as :meth:`_search_one`'s exact route scores them
        and, for ``l2``, the rescoring of :meth:`search` — the same steps, in Python, cost
        ~9 µs around ~4 µs of kernels for 500 ids (an unseen ``l2`` set, 50,000 × 48, one
        thread). ``None`` where it does not apply (as :meth:`_request_ivf`: no offset id map,
        removed rows, an id array or query that is not C-contiguous, aligned and writeable).
        ``q``: the query (1, d) as the caller has it. Returns the empty result where the
        filter allows nothing, else ``(rows (1, k), scores (1, k), counts)`` (row numbers)."""
        fl = ids.flags
        if (self.hnsw._dead is not None or not fl.c_contiguous or not fl.writeable or not fl.aligned
                or not q.flags.aligned):
            return None
        a = self._request_args()
        if a is None:
            return None
        out_r = np.empty((1, k), np.int64)
        out_s = np.empty((1, k), np.float32)
        counts = np.empty(1, np.int64)
        if _rq.request_exact(a[4], a[0], q, ids, k, out_r, out_s, counts) == 0:
            return SearchResult.empty(1, k)
        return out_r, out_s, counts

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_req_args", None)  # views of this process's arrays (a pickle would copy the vectors into it)
        return state

    def _request_args(self) -> tuple[Any, ...] | None:
        """The index's side of :func:`gsu.index._request.ivf_request`'s arguments as one
        :class:`gsu.index._request.RequestView` (``offset, n, design, even_min, row_list, top,
        nlist, xl, pos_row, list_off, all_pos, ind, C, step, cnmax, cblk, cscale, cextra, l2,
        X`` and ``SCAN_COST``), with the compiled entry point that takes it
        (:func:`gsu.index._request.entry_for`) and the exact route's
        (:func:`gsu.index._request.exact_entry_for`): ``(view, entry, n, l2, exact entry)``
        (``X`` and the exact route's rows and codes, ``_scoring`` and ``_approx``, inside;
        ``entry`` ``None`` where the IVF call does not apply: a walk that reads no bitmap, no
        8-bit centroid codes, no lists); or ``None`` where no one-call request applies to
        this index (no offset id map). Kept while the objects it derives from —
        the id map, the lists' layout, the centroids, the graph's 8-bit codes, the row count —
        are the same (gathered anew, a dozen look-ups and calls, for every request before)."""
        hnsw, ivf = self.hnsw, self.ivf
        d = ivf.__dict__
        c = self.__dict__.get("_req_args")
        if c is not None:
            key = c[0]
            if (key[0] is hnsw._idmap and key[1] is d.get("_list_off") and key[2] is d.get("_pos_row")
                    and key[3] is ivf._centroids and key[4] is hnsw.__dict__.get("_sq8") and key[5] is hnsw._n):
                return c[1]
        off = hnsw._idmap.offset
        c8 = ivf._centroid_codes()
        pos_row, loff = d.get("_pos_row"), d.get("_list_off")
        if off is None:
            args = None
        else:
            l2 = self.metric == "l2"
            sq8 = self._approx()[1]
            Cs, steps, cnmaxs = fk._NO_SQ8 if sq8 is None else sq8
            ivf_ok = hnsw._bitmap_first and c8 is not None and pos_row is not None and loff is not None
            if ivf_ok:
                xl, ind, C, step, cnmax = ivf.lists_source(self._scoring(), sq8, "search_one")
                design, even_min, row_list, top = self._plan_ctx()
                lists = (ivf.nlist, xl, pos_row, loff, ivf._all_pos, ind, C, step, float(cnmax), c8[4], c8[2], c8[3])
            else:  # the exact route's call only: the IVF side's fields hold empty arrays of their types
                design, even_min, row_list, top = _NO_ROWS, 0.0, _NO_ROWL, _NO_ROWS
                lists = (0, _NO_X, _NO_ROWS, _NO_ROWS, _NO_ROWS, True, fk._NO_SQ8[0], fk._NO_SQ8[1], 0.0, fk._NO_C8[0],
                         fk._NO_C8[1], fk._NO_C8[2])
            view = _rq.make_view(off, hnsw._n, design, even_min, row_list, top, *lists, l2, hnsw.vectors if l2 else _NO_X,
                                 *(float(c) for c in SCAN_COST), self._scoring(), Cs, steps, float(cnmaxs))
            args = (view, _rq.entry_for(view) if ivf_ok else None, hnsw._n, l2, _rq.exact_entry_for(view))
        # the key read after the arguments were built: building them may make the graph's codes (_approx)
        self._req_args = ((hnsw._idmap, d.get("_list_off"), d.get("_pos_row"), ivf._centroids, hnsw.__dict__.get("_sq8"),
                           hnsw._n), args)
        return args

    def _forced(self, code: int, m: int, k: int, effort: float, st: PlannerSettings
                ) -> tuple[int, float, int, int, int, tuple[float, int, int] | None]:
        """The plan of a forced route with the budgets of its selectivity."""
        s = m / max(self.hnsw._n, 1)
        if code == HNSW:
            return HNSW, 0.0, self._ef(st.ef_mult(s), k, effort, st), 0, 0, None
        if code == IVF:
            cand, lists = self._ivf_budget(st.ivf_mult(s), k, effort, st)
            return IVF, 0.0, 0, cand, lists, None
        return EXACT, 0.0, 0, 0, 0, None

    def _search_one(self, q: np.ndarray, k: int, cf: CompiledFilter | None, code: int, probe: float, ef: int, cand: int,
                    lists: int, away: tuple[float, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every query under one filter (``None``: all rows) by one plan: (rows, scores, counts).

        ``code == IVF`` with ``probe > 0``: the graph walk with its density probe first
        (:meth:`HNSWIndex.beam_search`), IVF for the queries whose walk gives up; the same
        for ``code == HNSW`` with ``probe > 0`` (a walk that gives up where the filter's
        rows lie away from the query). ``away``: the IVF budget of such queries
        (:meth:`_plan_one`).
        """
        nq = q.shape[0]
        n = self.hnsw._n
        m = n if cf is None else cf.count
        # the graph walk: planned, or the density probe first where the filter may pay it
        walk = m > 0 and (code == HNSW or (code == IVF and probe > 0 and (cf is None or self._walk_shared(cf, m, probe))))
        if nq == 1 and m > 0 and code == IVF and not walk:
            # a request's one query on IVF: its own call, which allocates the result
            # (without the batch bookkeeping)
            res = self.ivf.search_one(q, k, cf, target=cand, min_lists=lists, vectors=self._scoring(), sq8=self._approx()[1],
                                      away=away)
            if res[2][0] < 0:  # away from its filter's rows, where the exact scan costs less
                self._exact_rows(q, k, cf, _ONE, *res)
            return res
        counts = np.empty(nq, np.int64)
        out_r = np.empty((nq, k), np.int64)  # the kernels pad rows short of k
        out_s = np.empty((nq, k), np.float32)
        if m == 0:
            out_r.fill(-1)
            out_s.fill(-np.inf)
            counts.fill(0)
            return out_r, out_s, counts
        which = _ONE if nq == 1 else np.arange(nq, dtype=np.int64)
        if code == EXACT:
            rows = cf.rows if cf is not None else np.arange(n, dtype=np.int64)
            fk.gather_topk_ip_shared(q, self._scoring(), rows, k, out_r, out_s, counts, *self._approx())
            return out_r, out_s, counts
        if walk:
            self.hnsw.beam_search(q, k, cf, which, out_r, out_s, counts, ef, probe, self._walk_seeds(q))
            if probe <= 0 or ((counts[0] >= 0) if nq == 1 else (counts.min() >= 0)):
                self._recompute_short(q, k, cf, m, out_r, out_s, counts)
                return out_r, out_s, counts
            w = np.flatnonzero(counts < 0).astype(np.int64)
            if code == HNSW and away is not None and away[1] < 0:
                # the walk found them away from the filter's rows, where the exact scan costs less
                self._exact_rows(q, k, cf, w, out_r, out_s, counts)
            else:
                self.ivf.search_compiled(q, k, cf, w, out_r, out_s, counts, target=cand, min_lists=lists,
                                         vectors=self._scoring(), sq8=self._approx()[1], away=away)
                if away is not None and away[1] < 0:
                    self._exact_away(q, k, cf, w, out_r, out_s, counts)
            self._recompute_short(q, k, cf, m, out_r, out_s, counts)
            return out_r, out_s, counts
        # IVF: planned so, or (probe > 0) an even filter too sparse for the walk to pay
        self.ivf.search_compiled(q, k, cf, which, out_r, out_s, counts, target=cand, min_lists=lists,
                                 vectors=self._scoring(), sq8=self._approx()[1], away=away)
        if away is not None and away[1] < 0:
            self._exact_away(q, k, cf, which, out_r, out_s, counts)
        return out_r, out_s, counts

    def _exact_rows(self, q: np.ndarray, k: int, cf: CompiledFilter, which: np.ndarray, out_r: np.ndarray,
                    out_s: np.ndarray, counts: np.ndarray) -> None:
        """The exact scan of queries ``which`` (int64) over their allowed rows, in place."""
        starts, ends = cf.bounds(q.shape[0])
        fk.gather_topk_ip_sel(q, self._scoring(), which, starts, ends, cf.rows, k, out_r, out_s, counts, *self._approx())

    def _exact_away(self, q: np.ndarray, k: int, cf: CompiledFilter, which: np.ndarray, out_r: np.ndarray,
                    out_s: np.ndarray, counts: np.ndarray) -> None:
        """After an IVF search of queries ``which`` with an exact away budget (the callers
        check: with any other budget IVF leaves no query, and the look costs ~1 µs a call): the
        queries it left for the exact scan (count ``AWAY_ELSEWHERE``: away from their filter's rows)."""
        left = which[counts[which] < 0]
        if left.shape[0]:
            self._exact_rows(q, k, cf, left.astype(np.int64), out_r, out_s, counts)

    def _walk(self, q: np.ndarray, k: int, cf: CompiledFilter | None, which: np.ndarray, out_r: np.ndarray,
              out_s: np.ndarray, counts: np.ndarray, ef: Any, bail: float, seeds: np.ndarray | None) -> None:
        """The graph walk of queries ``which`` whose density probe gives up (count -1) where
        fewer than ``bail`` times the query's filter's selectivity of the first level-0
        nodes are allowed (queries away from their filter's rows; ``bail`` 0: the plain walk)."""
        n = max(self.hnsw._n, 1)
        if cf is None or cf.shared:
            m = n if cf is None else cf.count
            self.hnsw.beam_search(q, k, cf, which, out_r, out_s, counts, ef, bail * m / n, seeds)
        else:
            self.hnsw.beam_search(q, k, cf, which, out_r, out_s, counts, ef, 0.0, seeds, bail=bail)

    def _walk_seeds(self, q: np.ndarray, which: np.ndarray | None = None) -> np.ndarray | None:
        """Extra entry points of the graph walk: for each query (``which``: only those rows;
        the others get -1), one row of each of the ``WALK_SEEDS`` IVF lists whose centroids
        score best (the list's first row in the list layout: a member of the centroid's
        cell). The greedy descent through the upper levels can end in the wrong region for
        a query far off the data; the walk then starts there and near the best cells too.
        One numba scan of the centroids per query (:func:`_graph_kernels.list_seeds`: about
        nlist·d multiply-adds, ~20 µs at 2,828 lists × 96 d). Only on indexes of at least
        ``WALK_SEEDS_MIN_ROWS`` rows. Returns (nq, S) int64, or ``None``."""
        ivf = self.ivf
        S = min(WALK_SEEDS, ivf.nlist)
        if S <= 0 or ivf.centroids is None or self.hnsw._n < WALK_SEEDS_MIN_ROWS:
            return None
        ctx = self.__dict__.get("_seed_ctx")
        off = ivf._list_off
        if ctx is None or ctx[2] is not off:
            rows = np.where(np.diff(off) > 0, ivf._pos_row[np.minimum(off[:-1], max(ivf._pos_row.shape[0] - 1, 0))], -1)
            c = _l2.augment_base(ivf.centroids) if self.metric == "l2" else ivf.centroids
            ctx = self._seed_ctx = (np.ascontiguousarray(c, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.int64), off)
        if q.shape[1] != ctx[0].shape[1]:
            return None
        q = np.ascontiguousarray(q, dtype=np.float32)  # no copy for the prepared queries
        out = np.full((q.shape[0], S), -1, np.int64)
        w = np.arange(q.shape[0], dtype=np.int64) if which is None else np.ascontiguousarray(which, dtype=np.int64)
        gk.list_seeds(q, w, ctx[0], ctx[1], out)
        return out

    def _uniform_design(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed sample of :meth:`_worth_walking`'s evenness test, built on first use
        and cached (not saved; rebuilt when the lists change): ``(rows sorted (N,), their list
        0..L-1 (N,), samples per list (L,))`` — about ``UNIFORM_SAMPLES`` rows, evenly spaced within at most
        ``UNIFORM_LISTS`` evenly spaced non-empty lists."""
        ivf = self.ivf
        off = ivf._list_off
        d = self.__dict__.get("_uniform_ctx")
        if d is not None and d[3] is off:
            return d[:3]
        sizes = np.diff(off)
        ne = np.flatnonzero(sizes > 0)
        L = min(ne.shape[0], UNIFORM_LISTS)
        pick = ne[(np.arange(L) * ne.shape[0]) // max(L, 1)]
        per = max(1, -(-UNIFORM_SAMPLES // max(L, 1)))
        rows, grp = [], []
        for g, l in enumerate(pick):
            sz = int(sizes[l])
            t = min(per, sz)
            pos = int(off[l]) + ((2 * np.arange(t) + 1) * sz) // (2 * t)
            rows.append(ivf._pos_row[pos])
            grp.append(np.full(t, g, np.int64))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        gg = np.concatenate(grp) if grp else np.zeros(0, np.int64)
        o = np.argsort(r, kind="stable")
        ng = np.bincount(gg, minlength=L).astype(np.int64)
        self._uniform_ctx = (np.ascontiguousarray(r[o], dtype=np.int64), np.ascontiguousarray(gg[o]), ng, off)
        return self._uniform_ctx[:3]

    def _worth_walking(self, cf: CompiledFilter, which: np.ndarray, m: np.ndarray, share: float,
                       uni: np.ndarray | None = None) -> np.ndarray:
        """For the queries ``which`` planned onto the walk's density probe (``m``: their
        allowed-row counts, (nq,)): whether to try the walk (bool per entry of ``which``).
        Not for a filter spread evenly over the IVF lists (the fixed sample of
        :meth:`_uniform_design`, :func:`_filter_kernels.filter_uniform`; no look at the
        query) that allows less than ``PROBE_GATE · share`` of the rows: near any query it
        allows about that share, and the walk would give up after its descent and first
        expansions. The counts are exact whichever form of the filter is read, so a query
        planned alone and in a batch decides alike. ``uni``: per-query verdicts already
        known (int8 (nq,), -1: unknown; :meth:`_uniform_many`)."""
        if cf.shared:
            return np.full(which.shape[0], self._walk_shared(cf, int(m[which[0]]), share))
        n = max(self.hnsw._n, 1)
        sh = m[which] / n
        go = np.ones(which.shape[0], bool)
        low = sh < PROBE_GATE * share
        if PROBE_GATE <= 0 or not low.any():
            return go
        if uni is None:
            uni = np.full(m.shape[0], -1, np.int8)
        w = which[low].astype(np.int64)
        self._uniform_many(cf, w, m / n, uni)
        go[low] = uni[w] != 1
        return go

    def _walk_shared(self, cf: CompiledFilter, m: int, share: float) -> bool:
        """:meth:`_worth_walking` for a shared filter allowing ``m`` rows (one answer for
        every query; kept on the compiled filter)."""
        s = m / max(self.hnsw._n, 1)
        if PROBE_GATE <= 0 or s >= PROBE_GATE * share:
            return True
        return not self._uniform_shared(cf, s)

    def _uniform_shared(self, cf: CompiledFilter, s: float) -> bool:
        """The evenness test (:func:`_filter_kernels.filter_uniform_one`) of a shared filter
        allowing a share ``s`` of the rows, kept on the compiled filter."""
        key = (_UNIFORM, id(self), self.hnsw._n)
        u = cf._masks.get(key)
        if u is None:
            R, G, ng = self._uniform_design()
            if cf.run is not None and "bitmap64" not in cf._masks:
                u = fk.filter_uniform_one(R, G, ng, _NO_BM, cf.run[0], cf.run[1], s)
            else:  # what the walk and IVF's scan read as well
                u = fk.filter_uniform_one(R, G, ng, cf.bitmap64(), 0, 0, s)
            cf._masks[key] = u
        return bool(u)

    def _even_min_share(self) -> float:
        """The smallest selectivity at which the evenness test may grant the even budgets
        (``EVEN_MIN_HITS`` allowed samples expected)."""
        N = self._uniform_design()[0].shape[0]
        return EVEN_MIN_HITS / N if N else math.inf

    def _settings_shared(self, cf: CompiledFilter, m: int, run: bool, st: PlannerSettings) -> PlannerSettings:
        """``st.even`` for a shared filter allowing ``m`` rows that is spread evenly over the
        data, where that plans another route or lowers a budget; else ``st``."""
        s = m / max(self.hnsw._n, 1)
        return self._even_at(cf, s, run, st, st.at(s, run))[0]

    def _even_at(self, cf: CompiledFilter, s: float, run: bool, st: PlannerSettings, pt: tuple[Any, ...]
                 ) -> tuple[PlannerSettings, tuple[Any, ...]]:
        """:meth:`_settings_shared` at selectivity ``s`` with ``pt``, ``st.at(s, run)``:
        ``(settings, their at tuple)`` — ``st.even`` and its tuple where the even settings
        pay there and the filter is spread evenly, else ``(st, pt)``."""
        if st.has_even and s >= self._even_min_share():
            ev = st.even
            ept = ev.at(s, run)
            if st.even_pays_at(s, pt, ept) and self._uniform_shared(cf, s):
                return ev, ept
        return st, pt

    def _even_many(self, cf: CompiledFilter, m: np.ndarray, run: np.ndarray, routes: np.ndarray, st: PlannerSettings,
                   uni: np.ndarray) -> np.ndarray:
        """Per-query filters: which queries plan with ``st.even`` (bool (nq,)): those off the
        exact route, where the even settings plan another route or a smaller budget, whose
        filter is spread evenly (the test's verdicts are written into ``uni``, int8 -1 unknown
        / 0 / 1, for :meth:`_worth_walking`)."""
        nq = m.shape[0]
        s = m / max(self.hnsw._n, 1)
        ev = st.even
        cand = (routes != EXACT) & (s >= self._even_min_share())
        if not cand.any():
            return np.zeros(nq, bool)
        cand &= ((ev.ivf_mults(s, run) < st.ivf_mults(s, run)) | (ev.ef_mults(s, run) < st.ef_mults(s, run))
                 | ((s >= ev.hnsw_mins(run)) != (s >= st.hnsw_mins(run)))
                 | ((s >= ev.probe_mins(run)) != (s >= st.probe_mins(run))))
        w = np.flatnonzero(cand).astype(np.int64)
        if w.shape[0]:
            self._uniform_many(cf, w, s, uni)
        return cand & (uni == 1)

    def _uniform_many(self, cf: CompiledFilter, w: np.ndarray, s: np.ndarray, uni: np.ndarray) -> None:
        """The evenness test of the per-query filters of queries ``w`` whose verdict in ``uni``
        (int8 (nq,), -1: unknown) is not known yet, written into it."""
        w = w[uni[w] < 0]
        if w.shape[0] == 0:
            return
        R, G, ng = self._uniform_design()
        starts, ends = cf.bounds(cf.n_queries)
        out = np.empty(w.shape[0], bool)
        fk.filter_uniform(R, G, ng, cf.rows, starts, ends, w, np.ascontiguousarray(s[w]), out)
        uni[w] = out

    def _recompute_short(self, q: np.ndarray, k: int, cf: CompiledFilter | None, m: int, out_r: np.ndarray,
                         out_s: np.ndarray, counts: np.ndarray) -> None:
        """Recompute exactly, in place, the queries of a shared filter allowing ``m`` rows
        whose graph walk came back with fewer than ``min(k, m)`` results."""
        need = min(m, k)
        if cf is None or ((counts[0] >= need) if q.shape[0] == 1 else (counts.min() >= need)):
            return
        short = np.flatnonzero(counts < need).astype(np.int64)
        log.debug("filtered: %d queries short of k results, recomputed exactly", short.shape[0])
        self._exact_rows(q, k, cf, short, out_r, out_s, counts)

    def _search_per_query(self, q: np.ndarray, k: int, cf: CompiledFilter, route: str, effort: float, st: PlannerSettings
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Queries with one filter each, grouped by route (one kernel call per group)."""
        nq = q.shape[0]
        m_all = cf.counts(nq)
        run = _contiguous(cf, nq, m_all)
        routes, probe, ef, cand, lists, acand, alists = self._plan_many(m_all, run, k, effort, st)
        uni = np.full(nq, -1, np.int8)  # evenness verdicts, computed where needed
        if route != "auto":
            routes = np.full(nq, ROUTES.index(route), np.int8)
            probe = np.zeros(nq, bool)
        elif st.has_even:
            ev = np.flatnonzero(self._even_many(cf, m_all, run, routes, st, uni))
            if ev.shape[0]:
                routes[ev], probe[ev], ef[ev], cand[ev], lists[ev], acand[ev], alists[ev] = self._plan_many(
                    m_all[ev], run[ev], k, effort, st.even)
        away = route == "auto" and st.has_away
        if not away:
            acand, alists = cand, lists
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        counts = np.zeros(nq, np.int64)
        starts, ends = cf.bounds(nq)
        X = self._scoring()
        ex = np.flatnonzero(routes == EXACT).astype(np.int64)
        if ex.shape[0]:
            fk.gather_topk_ip_sel(q, X, ex, starts, ends, cf.rows, k, out_r, out_s, counts, *self._approx())
        walk = np.flatnonzero((routes == HNSW) & (m_all > 0)).astype(np.int64)
        pw = np.flatnonzero(probe & (m_all > 0)).astype(np.int64)
        bailed = walk[:0]
        if walk.shape[0]:
            # with away budgets, the walks of queries away from their filter's rows give up (IVF answers)
            self._walk(q, k, cf, walk, out_r, out_s, counts, ef, _planner.AWAY_SHARE if away else 0.0, self._walk_seeds(q, walk))
            if away:
                bailed, walk = walk[counts[walk] < 0], walk[counts[walk] >= 0]
                scan = bailed[acand[bailed] < 0]  # where the exact scan costs less than their away budget
                if scan.shape[0]:
                    self._exact_rows(q, k, cf, scan.astype(np.int64), out_r, out_s, counts)
                    bailed = bailed[acand[bailed] >= 0]
        if pw.shape[0]:
            go = self._worth_walking(cf, pw, m_all, st.probe_min_share, uni)
            skip, pw = pw[~go], pw[go]
            if pw.shape[0]:
                self.hnsw.beam_search(q, k, cf, pw, out_r, out_s, counts, ef, st.probe_min_share, self._walk_seeds(q, pw))
            gave_up = np.concatenate([skip, pw[counts[pw] < 0]])
            walk = np.concatenate([walk, pw[counts[pw] >= 0]])
        else:
            gave_up = pw
        # ascending: IVF then runs every query of a full batch in one block as it is
        iv = np.sort(np.concatenate([np.flatnonzero((routes == IVF) & ~probe & (m_all > 0)), gave_up, bailed])).astype(np.int64)
        if iv.shape[0]:
            pairs = np.stack([cand[iv], lists[iv], acand[iv], alists[iv]], axis=1)
            for c, l, ac, al in np.unique(pairs, axis=0):
                grp = iv[(pairs[:, 0] == c) & (pairs[:, 1] == l) & (pairs[:, 2] == ac) & (pairs[:, 3] == al)]
                self.ivf.search_compiled(q, k, cf, grp, out_r, out_s, counts, target=int(c), min_lists=int(l), vectors=X,
                                         sq8=self._approx()[1],
                                         away=(_planner.AWAY_SHARE, int(ac), int(al)) if away else None)
                if away and ac < 0:
                    self._exact_away(q, k, cf, grp, out_r, out_s, counts)
        if walk.shape[0]:
            short = walk[counts[walk] < np.minimum(m_all[walk], k)]
            if short.shape[0]:
                log.debug("filtered: %d queries short of k results, recomputed exactly", short.shape[0])
                self._exact_rows(q, k, cf, short.astype(np.int64), out_r, out_s, counts)
        return out_r, out_s, counts

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        hc, ha = self.hnsw._state()
        ic, ia = self.ivf._state()
        config = {"dim": self.dim, "metric": self.metric, "hnsw": hc, "ivf": ic, "seed": self.seed,
                  "lists_copy": self.lists_copy,
                  "calibrate": self.auto_calibrate, "build_seconds": self.build_seconds,
                  "compact_threshold": self.compact_threshold,
                  "row_norm_max": self._row_norm_max() if self.ntotal and self.dim >= SQ8_MIN_DIM else None,
                  "calibration": None if self._calibration is None else self._calibration.to_dict()}
        arrays = {f"hnsw.{a}": v for a, v in ha.items()}
        arrays.update({f"ivf.{a}": v for a, v in ia.items()})
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "FilteredIndex":
        idx = cls.__new__(cls)
        idx.dim = int(config["dim"])
        idx.metric = check_choice(config["metric"], name="metric", choices=DENSE_METRICS)
        idx.hnsw = HNSWIndex._from_state(config["hnsw"], {a[5:]: v for a, v in arrays.items() if a.startswith("hnsw.")})
        idx.ivf = IVFIndex._from_state(config["ivf"], {a[4:]: v for a, v in arrays.items() if a.startswith("ivf.")})
        if not idx.ivf._external and not config.get("lists_copy", False):
            idx.ivf.without_vectors()  # a file from before the one-copy layout: its IVF copy is dropped
        if not np.array_equal(idx.hnsw.ids, idx.ivf.ids):
            raise ValueError("the HNSW and IVF parts hold different ids")
        idx.seed = int(config.get("seed", idx.ivf.seed))
        idx.auto_calibrate = bool(config.get("calibrate", True))
        idx.build_seconds = float(config.get("build_seconds", 0.0))
        ct = config.get("compact_threshold", DEFAULT_COMPACT_THRESHOLD)
        if isinstance(ct, bool) or not isinstance(ct, (int, float)) or not 0.0 <= ct <= 1.0:
            raise FieldError("config 'compact_threshold'", f"expected a number in [0, 1], got {ct!r:.60}")
        idx.compact_threshold = float(ct)
        nm = config.get("row_norm_max")
        if nm is not None:
            if isinstance(nm, bool) or not isinstance(nm, (int, float)) or not 0.0 <= nm < math.inf:
                raise FieldError("config 'row_norm_max'", f"expected a finite number >= 0, got {nm!r:.60}")
            idx._nmax = (idx.ntotal, float(nm))
        if not np.array_equal(idx.hnsw._dead if idx.hnsw._dead is not None else np.zeros(0, bool),
                              idx.ivf._dead if idx.ivf._dead is not None else np.zeros(0, bool)):
            raise FieldError("array 'ivf.tombstones'", "the HNSW and IVF parts mark different rows removed")
        cal = config.get("calibration")
        idx._fits = {}
        try:  # fitted once now: a calibration that cannot give settings is refused on load
            idx._calibration = None if cal is None else Calibration.from_dict(cal)
            if idx._calibration is not None and idx._calibration.n < 1:
                raise ValueError(f"n: expected a positive row count, got {idx._calibration.n}")
            idx._fit(None)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise FieldError("config 'calibration'", f"{type(e).__name__}: {e}"[:200]) from None
        return idx

    def __repr__(self) -> str:
        cal = "uncalibrated" if self._calibration is None else f"calibrated for recall {self._calibration.target_recall:g}"
        return (f"FilteredIndex(dim={self.dim}, metric={self.metric!r}, M={self.hnsw.M}, "
                f"ef_construction={self.hnsw.ef_construction}, nlist={self.ivf.nlist}, ntotal={self.ntotal}, {cal})")
