"""Measurements behind :meth:`FilteredIndex.calibrate <gsu.index.FilteredIndex.calibrate>`.

For each selectivity of a grid, draw one filter per calibration query of each kind GSU
uses — a uniform random subset, a query-correlated subset (80 % from the rows nearest
the query, all of them or half of twice as many, the rest at random: a user's behavior
set near the candidate), a
contiguous range of rows (a time window) — compute the exact top-k, then time every route
at a ladder of budgets, one query per call with a *fresh* filter built from its id array
each time (what a request pays), and record, per kind, the mean recall@k, its lower
confidence bound over the queries and the median cost. A fourth kind, ``cluster`` (regions
of rows — the rows nearest random points, of many sizes — that leave the query's own
region out: a user's items of other categories than the candidate's), is measured on the
IVF route alone, on its own ladder (the point's ``away`` entries), for the budget of queries
a search finds away from their filter's rows (``PlannerSettings.band_away_ivf``), and the
exact scan of the same queries beside it (``away_exact``: where it costs less, the planner
scans them, ``PlannerSettings.band_away_exact``). The grid's last main point is the
search without a filter (``FULL``: every row but a held-out query's own; the kinds' rows
coincide there, so one is measured and stands for all, timed without a filter compile).
:func:`gsu.index.planner.fit_planner` turns the table into planner settings.

Ladders stop at the first budget that reaches (:func:`gsu.index.planner.reaches`: mean
and lower confidence bound) the highest target the planner supports (0.99) for every
kind (only the calibration's own target once its time limit has passed: the main decades of
a build-time calibration then cost what its default operating point needs), or when a step
costs more than ``_PRUNE`` times the cheapest option already known to reach the
calibration's target at that selectivity (the exact scan included): a route that slow is
never chosen there, or after two steps in a row that changed no kind's recall.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numba as nb
import numpy as np

from gsu.index import _filter_kernels as fk
from gsu.index import _graph_kernels as gk
from gsu.index.filters import sort_distinct
from gsu.index.planner import (AWAY_LADDER, AWAY_SHARE, HNSW_LADDER, IVF_LADDER, Calibration, fit_planner, kind_groups, reaches,
                                reaches_kinds, recall_goal, recall_low)

if TYPE_CHECKING:
    from gsu.index.filtered import FilteredIndex

log = logging.getLogger(__name__)

#: selectivities measured, in the order they are measured (main decades first, so that a
#: calibration cut short by its time limit still spans the range)
GRID = (0.01, 0.1, 0.5, 1.0, 0.001, 0.3, 0.03, 0.003, 0.2, 0.05, 0.7, 0.02, 0.005, 0.002)
#: the grid point of a search without a filter (every row; for held-out queries every row
#: but the query's own): one kind measured, its entries standing for every kind (the kinds'
#: row sets coincide there). The graph walk counts its beam in *allowed* nodes, so without a
#: filter it explores the fewest nodes for a beam: the budget of a 50 % filter fell short here
#: (unfiltered recall@10 0.907-0.931 on four of the filtered suite's seven sets before this
#: point was measured)
FULL = 1.0
#: the filter kinds every ladder measures. ``region``: the items of a few categories, each a
#: coherent part of the embedding space (geometric regions at random rows, cut independently
#: of the index's lists, as the cluster kind's), with no hole around the query: its own
#: neighbourhood is allowed at about the filter's selectivity, and where it is not, the
#: allowed rows nearest it lie in the regions around it. Its queries that a search finds away
#: from their filter's rows take the away budget (the cluster kind's ladder) and are left out
#: of its measurement; the others must reach the target on the scattered filters' budgets.
#: Without it, clumped filters were measured only where rows are stored in space order (the
#: range kind): on unseen data stored in random order, whole generator clusters as filters,
#: recall@10 0.79 and 0.86 at 50 % (IVF's budget, fitted on random, correlated and range
#: filters, read 3 lists where the answers lay in the regions around the query's own)
KINDS = ("random", "correlated", "range", "region")
#: the region kind is measured where at least this many of its queries are not away from their
#: filter's rows; elsewhere (narrow filters, whose regions rarely hold a query's neighbourhood)
#: its entries repeat the random kind's
_MIN_REGION = 12
#: the kind measured on its own IVF ladder for the budget of queries away from their
#: filter's rows (``PlannerSettings.band_away_ivf``)
AWAY_KIND = "cluster"
_PRUNE = 3.0
#: a family's ladder stops climbing after this many consecutive steps that changed no kind's recall
_STALL_STEPS = 2
#: grid points measured whatever the time limit (the main decades 1 %, 10 %, 50 % and the
#: unfiltered point: a fit needs both ends of the range to place the exact limit and the
#: graph threshold, and a search without a filter its own budget)
_MIN_POINTS = 4
_HI_TARGET = 0.99
_EXACT, _IVF, _HNSW = 0, 1, 2
#: allowed rows per filter kind and grid point at most (their exact answers cost a pass over
#: them): on a large index the wide selectivities use fewer queries, at least ``_MIN_QUERIES``
#: — the default ``n_queries`` (48), so a calibration with the default sample measures every
#: point on all of it. Per-query recall at a wide filter on a large index spreads widely (at
#: 2·10^6 rows, random 50 %, the walk at ef 28 on 300 held-out rows: mean 0.949, sd 0.088,
#: 4 % of queries under 0.8), and the ladder keeps the first step whose sample passes: on 24
#: queries a beam whose mean is 0.949 passed the goal and the bound in 9 % of draws (one such
#: draw measured 0.983 and set the 2·10^6 index's 50 % budget; fresh queries then gave
#: 0.940–0.958), on 48 in 3 %
_CAL_ROWS = 1 << 24
_MIN_QUERIES = 48
#: queries of the cluster kind drawn per grid point under a time limit (each draw costs a
#: pass over ~1.5 m rows; the lower confidence bound prices the fewer)
_AWAY_QUERIES = 24


#: calibration queries sampled from the index swap rows with a near-copy in it (nearest
#: other row closer than ``TWIN_SHARE`` times the sample's median distance to its k-th
#: neighbour) for rows without one, drawn from ``TWIN_POOL`` times as many (:func:`twin_free_rows`)
TWIN_FREE = True
TWIN_SHARE = 0.1
TWIN_POOL = 3
#: pool rows scored against the index per block (their distance rows: block · n floats)
_TWIN_BLOCK = 16
#: the near-copy check's distance buffer, at most (fewer rows per block on larger indexes)
_TWIN_BYTES = 64 << 20


def _row_sq_norms(X: np.ndarray) -> np.ndarray:
    """(n,) float32 squared norms of the rows of ``X``, 65,536 rows at a time (no (n, d) temporary)."""
    return np.concatenate([np.einsum("ij,ij->i", X[a:a + 65536], X[a:a + 65536]) for a in range(0, X.shape[0], 65536)]
                          ).astype(np.float32)


def neighbour_distances(X: np.ndarray, rows: np.ndarray, k: int, sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(d1, dk)``, each (len(rows),): the euclidean distance of each of ``rows`` of ``X``
    (n, d) to its nearest and to its ``k``-th nearest other row. Exact, in blocks of
    ``_TWIN_BLOCK`` rows (``X`` read once per block, BLAS); ``sq``: the rows' squared norms
    when already known (:func:`_row_sq_norms`)."""
    n = X.shape[0]
    m = rows.shape[0]
    d1 = np.full(m, np.inf)
    dk = np.full(m, np.inf)
    if m == 0 or n < 2:
        return d1, dk
    kk = max(1, min(k, n - 1))
    if sq is None:
        sq = _row_sq_norms(X)
    Xf = np.asarray(X, np.float32)
    # one (b, n) float32 buffer of at most _TWIN_BYTES, filled in place (the expression form
    # held four such temporaries at once: ~0.5 GB at 2·10^6 rows, above a build's peak)
    b = max(1, min(_TWIN_BLOCK, _TWIN_BYTES // (4 * n)))
    buf = np.empty((min(b, m), n), np.float32)
    for a in range(0, m, b):
        r = rows[a:a + b]
        d2 = buf[: r.shape[0]]
        np.matmul(Xf[r], Xf.T, out=d2)
        d2 *= -2.0
        for i in range(r.shape[0]):  # (|r_i|² + |x_j|²) − 2 r_i·x_j, as the expression rounded it
            d2[i] += sq[r[i]] + sq
        d2[np.arange(r.shape[0]), r] = np.inf  # not the row itself
        d2.partition(kk - 1, axis=1)
        near = d2[:, :kk].copy()
        near.sort(axis=1)
        np.maximum(near, 0.0, out=near)
        d1[a:a + r.shape[0]] = np.sqrt(near[:, 0])
        dk[a:a + r.shape[0]] = np.sqrt(near[:, kk - 1])
    return d1, dk


def twin_free_rows(X: np.ndarray, pick: np.ndarray, k: int, exclude: int, seed: Any) -> np.ndarray:
    """The calibration's query rows ``pick`` (int64, distinct, never ``exclude``) with each row
    that has a near-copy in ``X`` — another row closer than ``TWIN_SHARE`` times the median,
    over ``pick``, of their distance to their ``k``-th nearest row — replaced by a row
    without one (drawn from a generator of its own, ``seed``: the caller's draws are not
    disturbed; ``pick`` comes back unchanged where no row has a copy). Where too few rows
    without a copy are found among ``TWIN_POOL`` times as many, the rest stay."""
    n = X.shape[0]
    sq = _row_sq_norms(X)
    d1, dk = neighbour_distances(X, pick, k, sq)
    lim = TWIN_SHARE * float(np.median(dk))
    twin = d1 < lim
    if not twin.any():
        return pick
    rng = np.random.default_rng(seed)
    c = rng.choice(n, min(n, TWIN_POOL * pick.shape[0]), replace=False).astype(np.int64)
    c = c[(c != exclude) & ~np.isin(c, pick)]
    c1, _ = neighbour_distances(X, c, k, sq)
    ok = c[c1 >= lim][: int(twin.sum())]
    out = pick.copy()
    out[np.flatnonzero(twin)[: ok.shape[0]]] = ok
    return out


class _Sets:
    """One filter kind's row sets for the calibration queries, held compactly — a run as
    its bounds, a wide set as a bitmap (n/8 bytes), a narrow one as its rows — and given
    back as a sorted int64 array per query (external ids when ``ids`` is given), decoded
    outside any timed call: memory O(queries · n/8), not O(queries · m · 8)."""

    #: decoded bitmaps kept for the ladder's next option while they take at most this many
    #: bytes, for all the filter kinds of a grid point together (``budget``, shared): at 10^6
    #: rows a budget per kind added 128 MB to a build's peak memory
    DECODED_CACHE_BYTES = 64 << 20

    def __init__(self, rows: Iterable[np.ndarray], n: int, ids: np.ndarray | None = None, budget: list[int] | None = None):
        self.n, self.ids = n, ids
        self.items: list[Any] = []
        self._decoded: dict[int, np.ndarray] = {}
        self._decoded_bytes = 0
        self._budget = budget if budget is not None else [self.DECODED_CACHE_BYTES]
        for r in rows:
            m = r.shape[0]
            if m and int(r[-1]) - int(r[0]) + 1 == m:
                self.items.append((int(r[0]), int(r[0]) + m))
            elif m * 64 > n:
                self.items.append((fk.rows_bitmap64(r, n), m, None))
            else:
                self.items.append(r)

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, i: int) -> np.ndarray:
        it = self.items[i]
        if isinstance(it, tuple):
            if len(it) == 3:  # a bitmap: O(n/64 + m) (np.unpackbits + flatnonzero took ~40 % of a calibration)
                r = self._decoded.get(i)
                if r is None:
                    r = fk.bitmap64_rows(it[0], it[1])
                    if r.nbytes <= self._budget[0]:  # every ladder option reads it again
                        self._decoded[i] = r
                        self._decoded_bytes += r.nbytes
                        self._budget[0] -= r.nbytes
                return r
            return np.arange(it[0], it[1], dtype=np.int64)
        return it

    def __getitem__(self, i: int) -> np.ndarray:
        r = self.rows(i)
        return r if self.ids is None else self.ids[r]


def draw_filters(idx: "FilteredIndex", kind: str, m: int, Q: np.ndarray, qrows: np.ndarray | None,
                 rng: np.random.Generator, scores: np.ndarray | None = None,
                 partition: "_Partition | None" = None) -> Iterator[np.ndarray]:
    """One sorted int64 *row* array of ``m`` rows per query, drawn one query at a time (the
    query's own row, when it is a row of the index, is never allowed: the calibration
    queries are then held out). ``Q`` are prepared queries (:meth:`FilteredIndex._scoring_queries`);
    ``scores`` (nq, n), when given, are ``Q @ idx._scoring().T`` already computed (the
    query-correlated kind ranks the rows by them; computed otherwise for blocks of queries
    of at most ``_SCORES_MAX`` scores, one pass over the rows per block). ``partition``: the
    region kind's regions (:meth:`_Regions.partition`; cut here when not given)."""
    n = idx.ntotal
    nq = Q.shape[0]
    X = idx._scoring() if kind == "correlated" and scores is None else None
    regions = _Regions(idx) if kind == "cluster" and idx.ivf.centroids is not None else None
    if kind == "region" and partition is None and idx.ivf.centroids is not None:
        partition = _Regions(idx).partition(rng)
    block = max(1, _SCORES_MAX // max(n, 1))
    # one score buffer for every block (a new product per block held two blocks at once,
    # 128 MB more at the peak of a 10^6-row build)
    buf = np.empty((min(block, nq), n), np.float32) if X is not None else None
    for i in range(nq):
        own = -1 if qrows is None else int(qrows[i])
        avail = n - (own >= 0)
        mm = min(m, avail)
        if mm == avail:  # every row (but the query's own): the same for every kind
            r = np.arange(n, dtype=np.int64) if own < 0 else np.delete(np.arange(n, dtype=np.int64), own)
        elif kind == "random":
            r = _sample(n, mm, rng, own)
        elif kind == "range":
            # starts whose window [a, a+mm) misses the own row: [0, own-mm] and [own+1, n-mm]
            left = max(own - mm + 1, 0) if own >= 0 else n - mm + 1
            right = max(n - mm - own, 0) if own >= 0 else 0
            if left + right > 0:
                u = int(rng.integers(0, left + right))
                a = u if u < left else own + 1 + (u - left)
                r = np.arange(a, a + mm)
            else:  # every window of this length holds the own row: drop it
                a = int(rng.integers(0, n - mm))
                r = np.arange(a, a + mm + 1)
                r = r[r != own][:mm]
        elif kind == "correlated":
            near = int(round(0.8 * mm))
            # the near rows are a 1/spread share of the spread·near rows nearest the query
            # (by the exact scores, not by IVF list: a pool cut along the index's own list
            # order ends where the IVF route stops reading and flatters it — a user's items
            # near the candidate, a category around it, follow the geometry, not the lists)
            spread = _SPREADS[i % len(_SPREADS)]
            if scores is None and i % block == 0:
                b = min(block, nq - i)
                scores_b = np.matmul(Q[i : i + b], X.T, out=buf[:b])
            sc = scores[i] if scores is not None else scores_b[i % block]
            if own >= 0:
                sc = sc.copy()
                sc[own] = -np.inf
            size = min(avail, spread * near)  # n only with no own row to leave out: every row
            pool_a = np.argpartition(-sc, size - 1)[:size] if 0 < size < n else np.arange(size, dtype=np.int64)
            first = rng.choice(pool_a, min(near, pool_a.shape[0]), replace=False)
            taken = np.zeros(n, bool)
            taken[first] = True
            # the rest at random (distinct from the near rows: ``taken``)
            r = sort_distinct(np.concatenate([first, _sample(n, mm - first.shape[0], rng, own, taken)]).astype(np.int64))
        elif kind == "cluster":
            r = _cluster_rows(idx, mm, rng, own, regions, None if regions is None else Q[i])
        elif kind == "region":
            r = _sample(n, mm, rng, own) if partition is None else partition.draw(mm, rng, own)
        else:
            raise ValueError(f"unknown filter kind {kind!r}")
        yield np.asarray(r, np.int64)


#: the cluster kind's regions: each the rows nearest a random row, about a share of the rows
#: drawn log-uniformly from this range (categories of many sizes, down to a few dozen items
#: in a catalog of 10^5); a filter of m rows is as many regions as it takes, a narrow one
#: part of one region
CLUSTER_REGION = (1 / 4096, 1 / 8)
#: the share of the rows around the query that a cluster-kind filter leaves out (the
#: query's own category), drawn log-uniformly from this range. Up to half the rows: a
#: catalog's largest category can be that large (the head of a Zipf law), and a candidate
#: from it with a user's items of the others has its answers scattered, barely nearer than
#: random rows, over most lists. With holes up to 1/8 of the rows, a generated 50,000 × 256
#: cosine set of 400 clusters with Zipf 1.5 sizes (the largest 39 % of the rows) measured
#: recall@10 0.920 under whole-cluster filters at 50 % (IVF's away budget read 800 rows
#: where the answers lay in lists ranked up to 240th); with holes up to 1/2 calibration
#: measures those queries, scans them exactly where that costs less, and the cell reaches 0.976-0.979
CLUSTER_HOLE = (1 / 256, 1 / 2)


@nb.njit(cache=True, fastmath=True)
def _ball_d2(X, xn, cand, x0, taken):
    """Squared euclidean distance (less the centre's norm) of rows ``cand`` to the point
    ``x0``; +inf for the rows ``taken``."""
    out = np.empty(cand.shape[0], np.float32)
    for i in range(cand.shape[0]):
        r = cand[i]
        if taken[r]:
            out[i] = np.inf
            continue
        acc = np.float32(0.0)
        xr = X[r]
        for t in range(X.shape[1]):
            acc += xr[t] * x0[t]
        out[i] = xn[r] - 2 * acc
    return out


class _Regions:
    """What the cluster kind reads of an index: each IVF list's rows and the lists in
    increasing centroid distance from a point (the candidates of a region). Regions are cut
    in the full dimension: cut in a 64-d random projection they came out looser (on the
    30,000 × 768 set at 50 % the answers' lists ranked 18th in the median instead of 38th)."""

    def __init__(self, idx: "FilteredIndex"):
        ivf = idx.ivf
        self.idx = idx
        self.X = idx._scoring()
        self.xn = np.einsum("ij,ij->i", self.X, self.X)  # squared row norms, float32
        self.off = np.asarray(ivf._list_off, np.int64)
        self.pos_row = np.asarray(ivf._pos_row, np.int64)
        c = np.asarray(ivf.centroids, np.float32)
        self.c, self.cn = c, (c.astype(np.float64) ** 2).sum(1)
        self.sizes = np.diff(self.off)

    def ball(self, x0: np.ndarray, size: int, taken: np.ndarray, nearest_first: bool = False) -> np.ndarray:
        """The ``size`` rows nearest the point ``x0`` (euclidean, in the scored space) not
        yet ``taken``, among the rows of the lists whose centroids are nearest it (1.5 times
        ``size`` rows of them); ``nearest_first``: in increasing distance from ``x0``."""
        if size <= 0:
            return np.zeros(0, np.int64)
        order = np.argsort(self.cn - 2.0 * (self.c @ x0[: self.c.shape[1]]).astype(np.float64), kind="stable")
        cum = np.cumsum(self.sizes[order])
        nl = int(np.searchsorted(cum, 1.5 * size)) + 1
        cand = np.concatenate([self.pos_row[self.off[l]:self.off[l + 1]] for l in order[:nl]])
        d2 = _ball_d2(self.X, self.xn, cand, np.ascontiguousarray(x0, dtype=np.float32), taken)
        free = int(np.isfinite(d2).sum())
        sel = np.flatnonzero(np.isfinite(d2)) if free <= size else np.argpartition(d2, size - 1)[:size]
        if nearest_first:
            sel = sel[np.argsort(d2[sel], kind="stable")]
        return cand[sel]

    def partition(self, rng: np.random.Generator) -> "_Partition":
        """Every row in one region, cut once per calibration: each region the free rows
        nearest a random free row, a share of the rows drawn log-uniformly from
        ``CLUSTER_REGION``, until fewer than ``1 / PARTITION_REST`` of the rows are left;
        those form regions of the same sizes in random order (the catalog's scattered rest)."""
        n = self.X.shape[0]
        dt = _Partition.dtype(n)
        lo, hi = math.log(CLUSTER_REGION[0]), math.log(CLUSTER_REGION[1])
        taken = np.zeros(n, bool)
        parts: list[np.ndarray] = []
        left = n
        for seed in rng.permutation(n):
            if left * PARTITION_REST <= n:
                break
            if taken[seed]:
                continue
            size = min(left, max(1, int(math.ceil(n * math.exp(rng.uniform(lo, hi))))))
            b = self.ball(self.X[seed], size, taken, nearest_first=True)
            if b.shape[0] == 0:
                continue
            taken[b] = True
            left -= b.shape[0]
            parts.append(b.astype(dt))
        rest = rng.permutation(np.flatnonzero(~taken)).astype(dt)
        i = 0
        while i < rest.shape[0]:
            size = max(1, int(math.ceil(n * math.exp(rng.uniform(lo, hi)))))
            parts.append(rest[i : i + size])
            i += size
        return _Partition(parts, n)

    def near_lists(self, q: np.ndarray) -> np.ndarray:
        """The lists a search of the prepared query ``q`` tests for being away from its
        filter (:func:`gsu.index._filter_kernels.local_share`): its best non-empty lists."""
        sc = self.idx.ivf.centroid_scores(np.ascontiguousarray(q[None, :], dtype=np.float32))[0]
        sc = np.where(self.sizes > 0, sc, -np.inf)
        L = min(fk._LOCAL_LISTS, sc.shape[0])
        return np.argpartition(-sc, L - 1)[:L]


#: the region kind's partition stops growing regions at random free rows once fewer than
#: 1 / PARTITION_REST of the rows are free (the last regions, cut from ever fewer free rows,
#: come out as scattered fragments at the cost of one centroid sort each)
PARTITION_REST = 64


class _Partition:
    """The region kind's regions (:meth:`_Regions.partition`): a filter of ``m`` rows is
    whole regions in random order, the last cut to its rows nearest its seed, with the
    query's own row left out. Cut once per calibration, so a draw costs O(m) (cut per query,
    the regions' distance passes took a fifth of a build's calibration on 768-d rows)."""

    def __init__(self, parts: list[np.ndarray], n: int):
        dt = self.dtype(n)
        self.off = np.zeros(len(parts) + 1, np.int64)
        self.off[1:] = np.cumsum([p.shape[0] for p in parts])
        self.rows = np.concatenate(parts).astype(dt, copy=False) if parts else np.zeros(0, dt)
        self.region_of = np.empty(n, dt)
        self.region_of[self.rows] = np.repeat(np.arange(len(parts), dtype=dt), np.diff(self.off))

    @staticmethod
    def dtype(n: int) -> type:
        """int32 where the rows fit (8 bytes a row for the rows and their regions: 8 MB at
        10^6 rows, where a build's peak memory is near its bar)."""
        return np.int32 if n < 2**31 else np.int64

    def draw(self, m: int, rng: np.random.Generator, own: int = -1) -> np.ndarray:
        out, tot = [], 0
        skip = int(self.region_of[own]) if own >= 0 else -1
        for j in rng.permutation(self.off.shape[0] - 1):
            seg = self.rows[self.off[j] : self.off[j + 1]]
            if j == skip:
                seg = seg[seg != own]
            take = min(m - tot, seg.shape[0])
            out.append(seg[:take])
            tot += take
            if tot >= m:
                break
        return _distinct(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _cluster_rows(idx: "FilteredIndex", m: int, rng: np.random.Generator, own: int, regions: "_Regions | None",
                  q: np.ndarray | None = None) -> np.ndarray:
    """``m`` rows made of geometric regions seeded at random rows: each region the rows
    nearest its seed, a share of the rows drawn log-uniformly from
    ``CLUSTER_REGION``; regions are added until ``m`` rows (the last one cut to fit). A
    category filter: the items of a few categories, each a coherent part of the embedding
    space, cut independently of the index's lists (regions made of whole lists would
    flatter the IVF route, whose lists then end where the filter does), none around the
    query ``q`` (prepared): the query's own region (the rows nearest it, a share of the
    rows drawn from the same range) and the rows of its nearest lists are never drawn —
    the case the budget is for: a candidate of one category, a user's items of others,
    which a search finds away from the query. Without IVF lists: a random subset."""
    n = idx.ntotal
    if regions is None:
        return _sample(n, m, rng, own)
    lo, hi = math.log(CLUSTER_REGION[0]), math.log(CLUSTER_REGION[1])
    taken = np.zeros(n, bool)
    if own >= 0:
        taken[own] = True
    if q is not None:
        for lst in regions.near_lists(q):
            taken[regions.pos_row[regions.off[lst]:regions.off[lst + 1]]] = True
        hole = max(1, int(math.ceil(n * math.exp(rng.uniform(math.log(CLUSTER_HOLE[0]), math.log(CLUSTER_HOLE[1]))))))
        taken[regions.ball(q, min(hole, max(n - m - int(taken.sum()), 0)), taken)] = True
        m = min(m, n - int(taken.sum()))
    parts, tot = [], 0
    for _ in range(4 * n):
        if tot >= m:
            break
        seed = int(rng.integers(0, n))
        if taken[seed]:
            continue
        size = min(m - tot, max(1, int(math.ceil(n * math.exp(rng.uniform(lo, hi))))))
        b = regions.ball(regions.X[seed], size, taken)
        if b.shape[0] == 0:
            continue
        taken[b] = True
        parts.append(b)
        tot += b.shape[0]
    r = _distinct(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    if r.shape[0] < m:  # regions exhausted the free rows near their seeds: the rest at random
        r = _distinct(np.concatenate([r, _sample(n, m - r.shape[0], rng, own, taken)]))
    return r


#: how loosely query-correlated filters hold their near rows (see draw_filters), cycled over
#: the queries: all of, or half of, the rows nearest the query. Measured against a
#: category-like filter (80 % from the generator clusters nearest the query, clusters that
#: overlap) on a clustered 200,000 × 64 index, one budget per route: 1 %, IVF: 0.937 here,
#: 0.908 there (pools of whole IVF lists nearest the query, the former model: 0.978);
#: 50 %, the graph walk: 0.931 when the near rows are the nearest rows themselves, 0.977
#: when they are a half, a quarter or an eighth of 2, 4 or 8 times as many, 0.937 there —
#: a filter dense around the query is the walk's hard case, so the tight pool stays
_SPREADS = (1, 2)

#: score matrices up to this many floats are computed once with BLAS for the exact answers
_SCORES_MAX = 1 << 24


def _truth(idx: "FilteredIndex", Q: np.ndarray, sets: "_Sets", k: int, S: np.ndarray | None) -> np.ndarray:
    """(nq, k) float32 exact top-k scores under each query's rows (-inf padded): from the
    precomputed score matrix ``S`` (nq, n) when given, else the gather kernel, one query
    at a time (its rows decoded one at a time)."""
    nq = Q.shape[0]
    out_s = np.full((nq, k), -np.inf, np.float32)
    if S is not None:
        for i in range(nq):
            rows = sets.rows(i)
            sc = S[i, rows]
            m = sc.shape[0]
            kk = min(k, m)
            if kk:
                top = np.partition(sc, m - kk)[m - kk :] if m > kk else sc
                out_s[i, :kk] = np.sort(top)[::-1]
        return out_s
    out_r = np.empty((nq, k), np.int64)
    counts = np.empty(nq, np.int64)
    X, approx = idx._scoring(), idx._approx()
    zero = np.zeros(nq, np.int64)
    for i in range(nq):
        rows = sets.rows(i)
        ends = np.zeros(nq, np.int64)
        ends[i] = rows.shape[0]
        fk.gather_topk_ip_sel(Q, X, np.array([i], np.int64), zero, ends, rows, k, out_r, out_s, counts, *approx)
    return out_s


def _recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Tie-tolerant recall@k per query from returned (exact) scores ``found`` (nq, k)
    against the exact top-k scores ``truth`` (nq, k), both -inf padded."""
    n_true = np.isfinite(truth).sum(axis=1)
    kth = truth[np.arange(truth.shape[0]), np.maximum(n_true - 1, 0)].astype(np.float64)
    hits = (found >= (kth - 1e-5 * np.maximum(1.0, np.abs(kth)))[:, None]).sum(axis=1)
    return np.where(n_true > 0, np.minimum(hits, n_true) / np.maximum(n_true, 1), 1.0)


def _distinct(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array (:func:`gsu.index.filters.sort_distinct`: a
    bitmap over the span for the dense draws of wide selectivities, where numpy's sort of
    int64 took a fifth of a calibration on this project's VM)."""
    return sort_distinct(np.asarray(a, np.int64))


def _sample(n: int, m: int, rng: np.random.Generator, exclude: int = -1, taken: np.ndarray | None = None) -> np.ndarray:
    """``m`` distinct rows of ``0..n-1`` other than ``exclude`` and those marked in the
    boolean ``taken`` (n,), sorted, in ~O(m log m) (no permutation of all ``n`` unless
    ``m`` is a large share of them)."""
    if taken is None:
        taken = np.zeros(n, bool)
    free = n - int(taken.sum()) - (1 if exclude >= 0 and not taken[exclude] else 0)
    m = min(m, free)
    if m * 3 > free:
        ok = ~taken
        if exclude >= 0:
            ok[exclude] = False
        pool = np.flatnonzero(ok)
        return _distinct(rng.choice(pool, m, replace=False))
    r = np.zeros(0, np.int64)
    while r.shape[0] < m:
        c = rng.integers(0, n, int((m - r.shape[0]) * 1.25) + 16)
        c = c[~taken[c] & (c != exclude)]
        r = _distinct(np.concatenate([r, c]))
    if r.shape[0] > m:
        r = _distinct(rng.choice(r, m, replace=False))
    return r.astype(np.int64)


class _Compiled(list):
    """The compiled filters of the unfiltered grid point, one per query (every row but the
    query's own): timed without a compile, as a search without a filter runs."""


def _compile_all(idx: "FilteredIndex", sets: "_Sets") -> _Compiled:
    """The unfiltered point's filters compiled (their bitmaps built) once; ``sets`` is not
    kept (its decoded rows go with it)."""
    cfs = _Compiled(idx.hnsw.compile_filter(sets.rows(i), 1) for i in range(len(sets)))
    for cf in cfs:
        cf.bitmap64()
    return cfs


def _as_compiled(cf: Any, nq: int) -> Any:
    return cf


class _Timer:
    """Times one option over the calibration queries of one kind as a request pays it: the
    query with its plain id array, on the path ``search(q, k, filter=ids)`` takes (the fit
    places the routes' thresholds by these costs). The exact route takes its one compiled
    call (:meth:`FilteredIndex._request_exact`); the other routes, for an id array of at
    least 1/16 of the rows, the request's call with the route and budget set here
    (:meth:`FilteredIndex._request_forced`: the filter and, for IVF without the walk, the
    list scan in one compiled call; the walk, the density probe and the grouped form then
    continue from its bitmap as a request does). Narrower arrays, and indexes where those
    calls do not apply, compile the id array (as ``search`` compiles it) and run the
    step-by-step path (:meth:`FilteredIndex._search_one`). Timing the step-by-step path
    everywhere priced IVF and the exact scan 4-33 µs a call above what requests pay, and the
    walk ~11 µs below (its compile stood for the request's call and continuation: the unseen
    l2gauss set, correlated 50 %, 42.8 µs timed against 53.6 served): four recalibrations in
    six sent its 50 % filters to the walk or the probe, 1.2-1.6x slower than IVF there."""

    def __init__(self, idx: "FilteredIndex", Q: np.ndarray, k: int):
        self.idx, self.Q, self.k = idx, Q, k
        self.found = np.empty((Q.shape[0], k), np.float32)
        d = idx.dim
        # the queries as a request brings them (raw for l2: Q holds [q, 1]), each row its own
        # C-contiguous array, made outside the timed calls
        self.raw = [np.ascontiguousarray(Q[i : i + 1, :d]) for i in range(Q.shape[0])] if idx.metric == "l2" else None

    def run(self, id_sets: Any, truth: np.ndarray, code: int, *, bound_us: float = math.inf, probe: float = 0.0,
            ef: int = 0, cand: int = 0, lists: int = 0, mask: np.ndarray | None = None) -> tuple[float, float, float]:
        """``(mean recall, median cost µs, recall's lower confidence bound)``; ``(nan,
        median cost, nan)`` when the first queries already cost more than ``bound_us``
        (the option is abandoned). ``mask``: the recall and cost of those queries only.
        ``id_sets``: the queries' id arrays (the filter built inside the timed call), or their
        compiled filters (:class:`_Compiled`: the unfiltered point, whose search compiles
        nothing)."""
        idx, Q, k = self.idx, self.Q, self.k
        kept = isinstance(id_sets, _Compiled)
        compile_ = _as_compiled if kept else idx.hnsw.compile_filter
        # the request's own calls (the exact route's; the others' from 1/16 of the rows, else
        # None: the step-by-step path below), where the index has them (an offset id map); the
        # scores read for recall are the routes'
        served = None
        if not kept and idx._request_args() is not None:
            served = idx._request_exact if code == _EXACT else idx._request_forced
        exact = code == _EXACT
        nq = len(id_sets)  # the first nq calibration queries (fewer at wide selectivities)
        # with a mask only its queries are searched (the others' answers would be dropped)
        which = range(nq) if mask is None else np.flatnonzero(mask[:nq])
        costs = np.empty(len(which))
        found = self.found[:nq]
        pc = time.perf_counter
        one = idx._search_one
        check = min(8, len(which))
        raw = self.raw
        for j, i in enumerate(which):
            ids = id_sets[i]
            q = Q[i : i + 1]
            qr = q if raw is None else raw[i]
            if kept:  # what a route derives from a kept filter (its rows: 8 bytes a row) goes with the
                # call, as a search without a filter's does (kept, the exact scan's timings held 8 MB
                # a query at 10^6 rows: +107 MB at the peak of a build's calibration on random vectors)
                state = ids.cached_state()
            t0 = pc()
            res = None
            if served is not None:
                res = served(qr, ids, k) if exact else served(qr, q, ids, k, code, probe, ef, cand, lists)
            if res is None or res.__class__ is not tuple:
                cf = compile_(ids, 1)  # as search compiles a plain id array
                res = one(q, k, cf, code, probe, ef, cand, lists)
            costs[j] = pc() - t0
            found[i] = res[1][0]  # (the exact route's recall is not read: l2 answers rescored there)
            if kept:
                cf.drop_cached_since(state)
            if j + 1 == check and np.median(costs[:check]) * 1e6 > bound_us:
                return math.nan, float(np.median(costs[:check]) * 1e6), math.nan
        r = _recalls(found, truth)
        if mask is not None:
            r = r[which]
        return float(r.mean()), float(np.median(costs) * 1e6), recall_low(r)


@contextmanager
def held_out(idx: "FilteredIndex", qrows: np.ndarray | None) -> Iterator[None]:
    """While active, the graph walk runs on the graph as if the nodes ``qrows`` had not
    been inserted (:func:`gsu.index._graph_kernels.hold_out_nodes`): index rows used as
    calibration queries are then held out from every route — excluded from the filters,
    and not reachable by the walk (a query that is its own graph node finds its
    neighbours by its own edges, which held-out queries do not have)."""
    h = idx.hnsw
    if qrows is None or qrows.shape[0] == 0 or h.ntotal == 0:
        yield
        return
    ctx = h.__dict__.get("_beam")
    if ctx is None:
        ctx = h._beam = h._graph() + h._codes() + (h._scoring_vectors(),)
    nbr, off, cum = ctx[0], ctx[1], ctx[2]
    drop = fk.rows_bitmap64(np.sort(qrows).astype(np.int64), h.ntotal)
    # the repair written into the graph in place (calibrate holds the index's write lock)
    # and undone after: no copy of the graph. l2: candidates ranked by euclidean distance
    slots, saved = gk.hold_out_nodes(nbr, off, cum, drop, h._scoring_vectors(), np.int64(h.metric == "l2"))
    try:
        yield
    finally:
        gk.restore_slots(nbr, slots, saved)


def run_calibration(idx: "FilteredIndex", Q: np.ndarray, qrows: np.ndarray | None, *, k: int, target: float,
                    max_seconds: float, seed: int, progress: bool | None) -> Calibration:
    """Measure the grid (see the module docstring) and fit the planner for ``target``."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    with held_out(idx, qrows):
        return _run(idx, Q, qrows, k=k, target=target, max_seconds=max_seconds, rng=rng, progress=progress, t_start=t_start)


def _run(idx: "FilteredIndex", Q: np.ndarray, qrows: np.ndarray | None, *, k: int, target: float, max_seconds: float,
         rng: np.random.Generator, progress: bool | None, t_start: float) -> Calibration:
    n = idx.ntotal
    goal = recall_goal(target)
    target_hi = max(target, _HI_TARGET)
    bounded = math.isfinite(max_seconds)
    base = idx._base_settings
    timer = _Timer(idx, Q, k)
    runs = kind_groups(KINDS)[1]
    # the lists' geometry of the cluster kind (IVF lists needed; none on a tiny index)
    has_away = idx.ivf.centroids is not None and idx.ivf.nlist > 2 * fk._LOCAL_LISTS

    def reaches_any(entry: list[Any], tgt: float) -> bool:
        """Reached for every kind (scattered filters' budget) or for the runs alone (theirs)."""
        return reaches(entry, tgt) or reaches_kinds(entry, tgt, runs)

    ids_of = idx.ids
    identity = idx.idmap.identity
    grid, seen = [], set()
    for s in GRID:
        m = n if s >= FULL else int(round(s * n))
        if m < max(2 * k, 8) or (m > n - 1 and s < FULL) or m in seen:
            continue
        seen.add(m)
        grid.append((s, m))
    _warm_up(idx, Q, k, rng)
    # the time limit counts measurements, not the warm-up: on a machine with a cold
    # numba cache, compiling the routes' kernels takes tens of seconds and would
    # otherwise leave the calibration with its minimum of selectivities
    t_start = time.perf_counter()
    S = Q @ idx._scoring().T if Q.shape[0] * n <= _SCORES_MAX else None
    bar = _progress(len(grid), progress)
    points: list[dict[str, Any]] = []
    exact_rate: list[tuple[int, float]] = []  # (m, µs) of the exact scans timed, to skip timing it where it cannot win
    complete = True
    partition: _Partition | None = None  # the region kind's regions, cut at its first draw
    for gi, (s, m) in enumerate(grid):
        if gi >= _MIN_POINTS and time.perf_counter() - t_start > max_seconds:
            complete = False
            log.info("calibration: time limit of %.1fs reached after %d of %d selectivities", max_seconds, gi, len(grid))
            break
        nq_m = min(Q.shape[0], max(_MIN_QUERIES, _CAL_ROWS // max(m, 1)))
        Qm, qm = Q[:nq_m], (None if qrows is None else qrows[:nq_m])
        # the previous point's last set and its decoded rows released before this point draws
        st = None
        idsets: dict[str, _Sets] = {}
        truths = {}
        cache_budget = [_Sets.DECODED_CACHE_BYTES]  # the decoded rows kept, for the kinds together
        full = s >= FULL
        # drawn, scored and packed one kind at a time; the correlated kind first: its score
        # buffer is freed before any set's decoded rows are kept (drawn after the random
        # kind, the two held 128 MB at once at the peak of a 10^6-row build)
        for kd in KINDS[:1] if full else sorted(KINDS, key=lambda kd: kd != "correlated"):
            if kd == "region" and partition is None and idx.ivf.centroids is not None:
                partition = _Regions(idx).partition(rng)
            st = _Sets(draw_filters(idx, kd, m, Qm, qm, rng, None if S is None else S[:nq_m], partition), n,
                       None if identity else ids_of,
                       cache_budget)
            truths[kd] = _truth(idx, Qm, st, k, None if S is None else S[:nq_m])
            idsets[kd] = st
        st = None  # (the unfiltered point's set goes with its compile)
        if full:  # compiled once, outside the timed calls (a search without a filter compiles nothing)
            idsets[KINDS[0]] = _compile_all(idx, idsets[KINDS[0]])
        point: dict[str, Any] = {"s": s, "m": m, "nq": nq_m, "exact": [], "ivf": [], "hnsw": [], "probe": []}
        # the region kind's queries measured: those a search does not find away from their rows
        masks: dict[str, np.ndarray] = {}
        same_as_random: set[str] = set()
        if "region" in idsets and has_away:
            near = ~_away_flags(idx, Qm, idsets["region"])
            point["region_measured"] = int(near.sum())
            if int(near.sum()) >= _MIN_REGION:
                masks["region"] = near
            else:
                same_as_random.add("region")
        away_mask = None
        if has_away and not full and m > max(base.exact_max_rows, 2 * k):
            # under a time limit (a build's calibration) on fewer queries: their draws cost a
            # pass over ~1.5 m rows each, and the lower confidence bound prices the fewer
            na = min(nq_m, _AWAY_QUERIES) if bounded else nq_m
            st = _Sets(draw_filters(idx, AWAY_KIND, m, Qm[:na], None if qm is None else qm[:na], rng), n,
                       None if identity else ids_of, cache_budget)
            # the queries a search finds away from their filter's rows (the budget measured
            # is theirs); the others take the scattered filters' budgets
            away_mask = _away_flags(idx, Qm[:na], st)
            if int(away_mask.sum()) >= _MIN_AWAY:
                truths[AWAY_KIND] = _truth(idx, Qm[:na], st, k, None if S is None else S[:na])
                idsets[AWAY_KIND] = st

        def measure(code: int, bound: float = math.inf, exact: bool = False, **kw: Any) -> list[Any]:
            """``[recalls, costs, lows]`` per kind; an option whose kind costs more than
            ``bound`` µs on its first queries is abandoned (recall NaN for it and the kinds
            after; for the exact scan, whose recall is 1, that median cost stands)."""
            recs, costs, lows = [], [], []
            if full:  # one measurement for every kind (their rows coincide)
                r, c, lo = timer.run(idsets[KINDS[0]], truths[KINDS[0]], code, bound_us=bound, **kw)
                return [[1.0 if exact else r] * len(KINDS), [c] * len(KINDS), [1.0 if exact else lo] * len(KINDS)]
            for kd in KINDS:
                if recs and not math.isfinite(recs[-1]) and not exact:
                    recs.append(math.nan)
                    costs.append(costs[-1])
                    lows.append(math.nan)
                    continue
                if kd in same_as_random:
                    recs.append(recs[0])
                    costs.append(costs[0])
                    lows.append(lows[0])
                    continue
                r, c, lo = timer.run(idsets[kd], truths[kd], code, bound_us=bound, mask=masks.get(kd), **kw)
                recs.append(1.0 if exact else r)
                costs.append(c)
                lows.append(1.0 if exact else lo)
            return [recs, costs, lows]

        predicted = _exact_model(exact_rate, m) if len(exact_rate) >= 2 else None
        best = math.inf if predicted is None else predicted
        best_approx = math.inf
        ivf_step = None
        for fam in ("ivf", "hnsw", "probe"):
            if fam == "probe" and (s >= 0.6 or ivf_step is None):
                continue
            ladder = IVF_LADDER if fam == "ivf" else HNSW_LADDER
            measured: dict[float, list[Any]] = {}

            def step_at(i: int) -> list[Any] | None:
                """Measure ladder step ``i``: ``[step, recalls, costs, lows]`` (None:
                abandoned as far too slow)."""
                step = ladder[i]
                kw = idx._budget_kw(fam, step, ivf_step, k, base)
                # the probe family is the IVF route with the walk's density probe first, as
                # search runs it: a walk that gives up is answered by IVF at ``ivf_step``
                recs, costs, lows = measure(_HNSW if fam == "hnsw" else _IVF, _PRUNE * best * len(KINDS), **kw)
                if not all(math.isfinite(r) for r in recs):
                    return None
                measured[step] = [step, recs, costs, lows]
                return measured[step]

            # start one step below what reached the target at the nearest selectivity
            # measured so far; walk down while it is still reached, for every kind or for the
            # runs alone (the planner budgets runs apart), then up to the high target
            i0 = _start_step(points, fam, ladder, s, target)
            got = step_at(i0)
            if got is not None and reaches_any(got, target):
                if reaches(got, target):
                    best = min(best, float(np.mean(got[2])))
                for i in range(i0 - 1, -1, -1):
                    lower = step_at(i)
                    if lower is None or not reaches_any(lower, target):
                        break
                    if reaches(lower, target):
                        best = min(best, float(np.mean(lower[2])))
            i = i0 + 1
            stalled = 0
            # under a time limit (the calibration a build runs) the main decades' ladders
            # climb only to the target's budget, and so does every ladder past the limit:
            # the default operating point first; the high one (``_HI_TARGET``) is measured
            # at the selectivities after them while time remains, and by a calibration
            # without a limit
            top = target if bounded and (gi < _MIN_POINTS or time.perf_counter() - t_start > max_seconds) else target_hi
            while (got is not None and i < len(ladder) and not reaches(got, top) and float(np.mean(got[2])) <= _PRUNE * best
                   and stalled < _STALL_STEPS):
                prev = got
                got = step_at(i)
                if got is not None and reaches(got, target):
                    best = min(best, float(np.mean(got[2])))
                # a larger budget that changes no kind's recall (the density probe gives up
                # and IVF answers at its own budget, whatever the beam) is not climbed further
                stalled = stalled + 1 if got is not None and all(abs(a - b) <= 1e-9 for a, b in zip(got[1], prev[1])) else 0
                i += 1
            for st in sorted(measured):
                entry = measured[st]
                point[fam].append(entry)
                costs = entry[2]
                if reaches(entry, target):
                    mc = float(np.mean(costs))
                    if fam == "ivf" and (ivf_step is None or st < ivf_step):
                        ivf_step = st
                    best = min(best, mc)
                    best_approx = min(best_approx, mc)
        if predicted is not None and predicted > 2 * _PRUNE * best_approx:
            ex = [predicted] * len(KINDS)  # far beyond the crossover: the linear model of the timed scans
            point["exact_predicted"] = True
        else:
            # an exact scan whose first queries cost far more than the best approximate route
            # is not timed further: the median of those queries is its cost
            ex = measure(_EXACT, _PRUNE * best_approx * len(KINDS), exact=True)[1]
            exact_rate.append((m, float(np.mean(ex))))
        point["exact"] = ex
        ivf_step = _away_from(point, ivf_step)
        if AWAY_KIND in idsets and ivf_step is not None:
            # the cluster kind on its own IVF ladder (the budget of queries away from their
            # filter's rows): from the scattered filters' step (``_away_from``: the largest
            # measured where none reached the target; or one below where it reached the
            # target at the nearest point measured) up to the target, while a
            # step costs less than twice the exact scan (the search decides per query,
            # inside the list scan, that a query is away: the exact route is not an option
            # for it, and the lists' budget tends to the exact scan as it grows)
            top = target if bounded and (gi < _MIN_POINTS or time.perf_counter() - t_start > max_seconds) else target_hi
            i = max(AWAY_LADDER.index(ivf_step), _start_step(points, "away", AWAY_LADDER, s, target, [0]))
            entries: list[Any] = []
            away_bound = max(_PRUNE * best * len(KINDS), 2 * float(np.mean(ex)))
            while i < len(AWAY_LADDER):
                kw = idx._budget_kw("ivf", AWAY_LADDER[i], None, k, base)
                r, c, lo = timer.run(idsets[AWAY_KIND], truths[AWAY_KIND], _IVF, bound_us=away_bound, mask=away_mask, **kw)
                if not math.isfinite(r):
                    break
                entries.append([AWAY_LADDER[i], [r], [c], [lo]])
                if reaches(entries[-1], top):
                    break
                i += 1
            point["away"] = entries
            if entries:
                # the exact scan of the same queries: where it costs less than their IVF
                # budget, the planner scans them (``PlannerSettings.band_away_exact``);
                # abandoned after its first queries when far dearer (their median stands)
                c_away = float(entries[-1][2][0])
                point["away_exact"] = timer.run(idsets[AWAY_KIND], truths[AWAY_KIND], _EXACT, bound_us=_PRUNE * c_away,
                                                mask=away_mask)[1]
        points.append(point)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    raw = {"k": k, "target_recall": target, "n": n, "n_queries": int(Q.shape[0]), "kinds": list(KINDS), "points": points,
           "complete": complete}
    fit = fit_planner(raw, target, base, even_from=idx._even_min_share())
    if not fit.reached:
        log.warning("calibration: no measured budget reached recall %.3f at some selectivities; those use the largest measured", goal)
    return Calibration(k=k, target_recall=target, n=n, n_queries=int(Q.shape[0]), kinds=KINDS, points=tuple(points),
                       seconds=seconds, complete=complete, settings=fit.settings)


#: cluster-kind queries a search must find away from their filter's rows for the away budget
#: to be measured at a grid point (fewer: it takes a neighbouring point's)
_MIN_AWAY = 12


def _away_flags(idx: "FilteredIndex", Q: np.ndarray, sets: "_Sets") -> np.ndarray:
    """(nq,) bool: whether a search finds query ``i`` away from the rows of its filter
    ``sets.rows(i)`` (the test of :func:`gsu.index._filter_kernels.local_share` against
    ``AWAY_SHARE`` times the filter's selectivity, as the IVF route runs it)."""
    ivf = idx.ivf
    n = idx.ntotal
    nq = len(sets)
    CS = ivf.centroid_scores(np.ascontiguousarray(Q[:nq], dtype=np.float32))
    loff = np.asarray(ivf._list_off, np.int64)
    out = np.zeros(nq, bool)
    for i in range(nq):
        rows = sets.rows(i)
        bm = fk.rows_bitmap64(rows, n)
        share = fk.local_share(CS, np.int64(i), loff, loff, bm, ivf._pos_row)
        out[i] = share < AWAY_SHARE * rows.shape[0] / max(int(loff[-1]), 1)
    return out


def _away_from(point: dict[str, Any], ivf_step: float | None) -> float | None:
    """The IVF step the away ladder starts from at a grid point: the lowest that reached the
    target for every kind there (``ivf_step``) or, where none did, the largest measured. With
    none reached it was not measured at all: such a band had no away budget, and where the
    walk took it a filter whose rows lie away from the query was walked to its end (4-7 ms a
    search at 10 % on the suite's power-law set, against ~260 µs with the away budget)."""
    if ivf_step is not None or not point.get("ivf"):
        return ivf_step
    return max(e[0] for e in point["ivf"])


def _start_step(points: list[dict[str, Any]], fam: str, ladder: tuple[float, ...], s: float, target: float,
                kinds: list[int] | None = None) -> int:
    """Ladder index to start at: one below the first step that reached ``target`` (for
    the ``kinds`` of its entries; default all) at the measured selectivity nearest to
    ``s`` (in log scale); the bottom when none did."""
    near = sorted(points, key=lambda p: abs(math.log(p["s"] / s)))
    for p in near:
        for e in p.get(fam, []):
            if (reaches(e, target) if kinds is None else reaches_kinds(e, target, kinds)) and e[0] in ladder:
                return max(ladder.index(e[0]) - 1, 0)
    return 0


def _exact_model(points: list[tuple[int, float]], m: int) -> float | None:
    """The exact scan's cost at ``m`` rows predicted from the timed ``(m, µs)`` points: a
    least-squares line ``a + b·m`` (a, b >= 0) through them; with one point, proportional."""
    if not points:
        return None
    ms = np.array([p[0] for p in points], float)
    cs = np.array([p[1] for p in points], float)
    if len(points) == 1 or np.ptp(ms) == 0:
        return float(cs.mean() / ms.mean() * m)
    b, a = np.polyfit(ms, cs, 1)
    b = max(b, 0.0)
    a = max(float(np.mean(cs - b * ms)), 0.0)
    return a + b * m


def _warm_up(idx: "FilteredIndex", Q: np.ndarray, k: int, rng: np.random.Generator) -> None:
    """Run every route once (exact; IVF grouped and scanned; the walk, with and without
    the density probe; each through the request's own calls too) so that lazily built
    structures (the walk's codes and graph arrays, the half-precision copy) and compiled
    kernels are ready before anything is timed."""
    n = idx.ntotal
    q = Q[:1]
    for m in {max(1, n // 100), max(1, n // 3)}:
        ids = idx.ids[_sample(n, m, rng)]
        for code, kw in ((_EXACT, {}), (_IVF, {"cand": 4 * k, "lists": 2}), (_HNSW, {"ef": k}),
                         (_IVF, {"ef": k, "probe": 0.4, "cand": 4 * k, "lists": 2})):
            for scan in (False, True):
                cf = idx.hnsw.compile_filter(ids, 1)
                if scan:
                    cf.bitmap64()
                idx._search_one(q, k, cf, code, kw.get("probe", 0.0), kw.get("ef", 0), kw.get("cand", k), kw.get("lists", 1))
        # the one compiled calls the timer makes (their entry points resolved)
        qr = np.ascontiguousarray(q[:, : idx.dim])
        if idx._request_args() is not None:
            idx._request_exact(qr, ids.copy(), k)
            for code, probe, ef in ((_IVF, 0.0, 0), (_HNSW, 0.0, k), (_IVF, 0.4, k)):
                idx._request_forced(qr, q, ids.copy(), k, code, probe, ef, 4 * k, 2)


def _progress(total: int, progress: bool | None) -> Any:
    """A tqdm bar on a terminal (``progress=None``), always (``True``) or never (``False``)."""
    show = (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()) if progress is None else bool(progress)
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the text extra
        return None
    return tqdm(total=total, desc="calibrating FilteredIndex", unit="selectivity", leave=False)
