"""``IVFIndex``: filter-aware inverted-file search (lists never opened when they hold no allowed id).

faiss trains the coarse quantizer (``faiss.Kmeans``) and assigns vectors to lists;
gsu keeps a list-ordered copy of the vectors (what an ``IndexIVFFlat`` holds in its
inverted lists, in one contiguous array) so that a numba kernel can:

1. group each query's allowed rows by list (O(m); the per-list counts are the
   cheap selectivity estimate, and lists with no allowed row are never opened);
2. open the remaining lists in decreasing centroid score, reading and scoring only
   the allowed rows in them (no membership tests over excluded rows), until at least ``nprobe`` lists were opened *and* at least
   ``candidates`` (≥ k) allowed rows were scored, or the filter is exhausted.

So, unlike faiss's ``IndexIVF`` + selector, a query never returns fewer than k
results while at least k items pass its filter, and the work is proportional to
the allowed rows actually scored. Per-query filters run in one parallel kernel call
with no Python loop per query.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import faiss
import numpy as np

from gsu._simd import DOT_GROUPS, LANES
from gsu._format import aligned, aligned_take
from gsu._validate import as_matrix, check_choice, check_k, check_positive_int
from gsu.index import _filter_kernels as fk
from gsu.index import _l2
from gsu.index._mutable import MutableIndex
from gsu.index.base import register_index
from gsu.index.result import SearchResult
from gsu.index.vectors import DENSE_METRICS, normalize_rows, prep_queries
from gsu.index.filters import CompiledFilter, IdMap

log = logging.getLogger(__name__)

__all__ = ["IVFIndex", "default_nlist"]

_QUERY_BLOCK = 2048
_DERIVED = ("_row_pos", "_row_list", "_all_pos")
_NO_BM = np.zeros(0, np.uint64)
#: relative cost per row of (grouping allowed rows by list, testing a scanned row against
#: the bitmap, setting a bitmap bit), from the kernels' timings on 100,000 rows (10,000
#: allowed rows grouped in 32 µs, bitmap in 6 µs; a scanned row ~1 ns): see
#: :meth:`IVFIndex.scan_pays`
SCAN_COST = (3.2, 1.0, 0.6)
#: from this many centroid entries (nlist · d) up, a query scores the centroids from 8-bit
#: codes, one scale per centroid (the l2 norm term in float32): a quarter of the bytes, so
#: the scan that orders the lists mostly stays in the core's cache between searches (one
#: query against 476 × 384 centroids: 7 µs warm and 25 µs cold, against BLAS's 10 and 78;
#: inside a filtered search the float32 scan took 13-35 µs, 14-21 % of a 10 % search, on four
#: of the filtered suite's sets). A score is off by at most ``scale · ‖q‖₁ / 2``: lists that
#: near-tie may open in the other order
CENTROID_I8_MIN = 16384


def default_nlist(n: int) -> int:
    """``nlist`` used when none is given: ``2·sqrt(n)``, at most n/39 (faiss's minimum
    training points per centroid), at least 1. 200k vectors → 894 lists."""
    return int(max(1, min(round(2 * math.sqrt(max(n, 1))), n // 39)))


@register_index("ivf")
class IVFIndex(MutableIndex):
    """Filter-aware IVF-Flat search over dense float32 vectors.

    Args:
        dim: vector dimension d.
        metric: ``"ip"``, ``"cosine"`` (vectors and queries L2-normalised) or ``"l2"``
            (euclidean: k-means and list assignment by L2 distance, lists probed nearest
            centroid first, rows scored on the exact inner-product reduction of
            :mod:`gsu.index._l2`; results carry ``-|q - x|²`` recomputed exactly).
        nlist: number of inverted lists (k-means centroids, IVF's ``nlist``).
            ``None``: :func:`default_nlist` of the first batch added. More lists mean
            shorter lists (fewer rows scored per probe) and more centroid scoring
            per query; ~sqrt(n)…4·sqrt(n).
        niter: k-means iterations used to train the quantizer; 10–25.
        max_train: at most ``max_train`` points per centroid are sampled for
            training (faiss's ``max_points_per_centroid``); 64–256.
        seed: k-means / sampling seed.

    The quantizer is trained on the first :meth:`add`; later adds are assigned to
    the trained lists. Search settings (keywords of :meth:`search`): ``nprobe``
    and ``candidates``.

    An owner that already keeps the vectors in row order (``FilteredIndex``: faiss's HNSW
    storage) uses the lists *without vectors* (:meth:`without_vectors`): only the list
    layout is kept and saved, rows are appended with :meth:`lists_of` /
    :meth:`append_rows`, and :meth:`search_compiled` reads the owner's row-ordered matrix
    through each position's row.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        nlist: int | None = None,
        niter: int = 20,
        max_train: int = 128,
        seed: int = 0,
    ):
        self.dim = check_positive_int(dim, name="dim")
        self.metric = check_choice(metric, name="metric", choices=DENSE_METRICS)
        self.nlist = None if nlist is None else check_positive_int(nlist, name="nlist")
        self.niter = check_positive_int(niter, name="niter")
        self.max_train = check_positive_int(max_train, name="max_train")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an integer, got {seed!r}")
        self.seed = int(seed)
        self._centroids: np.ndarray | None = None
        #: how rows are assigned to lists: ``"l2"``, the nearest centroid (the k-means
        #: partition the centroids were trained for), or ``"ip"``, the centroid of largest
        #: inner product (files saved before this rule, metrics ``ip``/``cosine``; see :meth:`assign`)
        self._assign_rule = "l2"
        self._external = False  # True: no vectors here; the owner passes its row-ordered matrix
        self._set_lists(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(1, np.int64))
        self._idmap = IdMap(np.zeros(0, np.int64))

    # -- layout ------------------------------------------------------------
    def _set_lists(self, xl: np.ndarray, pos_row: np.ndarray, list_off: np.ndarray) -> None:
        for key in ("_xla", "_ct") + _DERIVED:
            self.__dict__.pop(key, None)
        self._xl = aligned(xl)  # rows on cache lines (the list scan reads them row by row)
        self._pos_row = np.ascontiguousarray(pos_row, dtype=np.int64)
        self._list_off = np.ascontiguousarray(list_off, dtype=np.int64)

    def __getattr__(self, name: str) -> Any:
        """``_row_pos`` (each row's list position), ``_row_list`` (each row's list) and
        ``_all_pos``, derived from the layout on first use (O(n): an opened file pays it
        at its first search, not at open), then plain attributes."""
        if name not in _DERIVED:
            raise AttributeError(name)
        d = self.__dict__
        if "_pos_row" not in d:
            raise AttributeError(name)
        pos_row, off = d["_pos_row"], d["_list_off"]
        n = pos_row.shape[0]
        row_pos = np.empty(n, np.int64)
        row_pos[pos_row] = np.arange(n, dtype=np.int64)
        row_list = np.empty(n, np.int32)
        row_list[pos_row] = np.repeat(np.arange(off.shape[0] - 1, dtype=np.int32), np.diff(off))
        d["_row_list"], d["_all_pos"], d["_row_pos"] = row_list, np.arange(n, dtype=np.int64), row_pos
        return d[name]

    @property
    def ntotal(self) -> int:
        return int(self._pos_row.shape[0])

    @property
    def centroids(self) -> np.ndarray | None:
        """(nlist, d) float32 trained centroids, ``None`` before the first add."""
        return self._centroids

    @property
    def list_sizes(self) -> np.ndarray:
        """(nlist,) int64 rows per list."""
        return np.diff(self._list_off)

    @property
    def row_list(self) -> np.ndarray:
        """(n,) int32 list of each row."""
        return self._row_list

    def _train(self, x: np.ndarray) -> None:
        n = x.shape[0]
        nlist = self.nlist if self.nlist is not None else default_nlist(n)
        if n < nlist:
            raise ValueError(f"IVFIndex: the first add must hold at least nlist={nlist} vectors to train the lists, got {n}")
        rng = np.random.default_rng(self.seed)
        cap = nlist * self.max_train
        sample = x if n <= cap else x[np.sort(rng.choice(n, cap, replace=False))]
        km = faiss.Kmeans(self.dim, nlist, niter=self.niter, seed=self.seed, spherical=self.metric == "cosine",
                          max_points_per_centroid=self.max_train, verbose=False)
        km.train(np.ascontiguousarray(sample))
        self.nlist = nlist
        self._centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        self._set_lists(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(nlist + 1, np.int64))

    def assign(self, x: np.ndarray) -> np.ndarray:
        """List of each prepared vector, (n,) int64: its nearest centroid (euclidean), the
        cell of the k-means partition the centroids were trained for, whatever the metric
        (searches still probe lists in decreasing ``q · c`` for ``ip``/``cosine``).

        Assigned by largest inner product instead (this index's rule before, kept for files
        saved with it), unnormalised rows collapse into the lists of the longest centroids:
        on a 50,000-row ``ip`` set with log-normal row norms 324 of 447 lists came out empty,
        on a rolled 2-d sheet 289 (one list of 3,606 rows), and whole-cluster filters cut along
        the sheet lost their answers on the IVF route (forced, at its calibrated budget: recall@10
        0.88 / 0.90 at 10 / 50 %; the default search with nearest-centroid lists: 0.97 / 0.98).
        For unit rows and unit (spherical) centroids the two rules agree."""
        quant = faiss.IndexFlatIP(self.dim) if self._assign_rule == "ip" else faiss.IndexFlatL2(self.dim)
        quant.add(self._centroids)
        _, lab = quant.search(x, 1)
        return lab[:, 0].astype(np.int64)

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append ``vectors`` (n, d) float32 with unique external ``ids`` (n,) int64.

        The first call trains the lists on (a sample of) its vectors.
        """
        self._check_vectors("add")
        x = as_matrix(vectors, name="vectors", dim=self.dim)
        new_ids = self._new_ids(x.shape[0], ids)
        if self.metric == "cosine":
            x = normalize_rows(x)
        order, off = self._layout(self.lists_of(x))
        xall = np.concatenate([self._xl[self._row_pos], x]) if self.ntotal else x
        self._set_lists(aligned_take(xall, order), order, off)
        self._appended(new_ids)

    # -- lists without vectors (an owner keeps them) -----------------------
    def without_vectors(self) -> "IVFIndex":
        """Drop this part's copy of the vectors for good: the owner keeps them in row
        order and passes them to :meth:`search_compiled` (returns ``self``)."""
        self._external = True
        self.__dict__.pop("_xla", None)
        self._xl = np.zeros((0, self.dim), np.float32)
        return self

    def _check_vectors(self, what: str) -> None:
        if self._external:
            raise TypeError(f"IVFIndex.{what}: these lists hold no vectors (a FilteredIndex part): use the owner's methods")

    def lists_of(self, x: np.ndarray) -> np.ndarray:
        """The list of each prepared vector of a batch to append, (n,) int64 (the first
        batch trains the lists on a sample of itself)."""
        if self._centroids is None:
            self._train(x)
        return self.assign(x)

    def append_rows(self, lists_new: np.ndarray, ids: Any = None) -> np.ndarray:
        """Lists without vectors: append rows in lists ``lists_new`` (from :meth:`lists_of`)
        under ``ids`` (default: continuing ``0..n-1``); returns their external ids."""
        new_ids = self._new_ids(lists_new.shape[0], ids)
        order, off = self._layout(lists_new)
        self._set_lists(self._xl, order, off)
        self._appended(new_ids)
        return new_ids

    def _layout(self, lists_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(order, offsets)`` after appending rows in lists ``lists_new``: ``order[p]`` is
        the row at position ``p`` (rows grouped by list, row order inside a list)."""
        lists = np.concatenate([self._row_list.astype(np.int64), lists_new])
        order = np.argsort(lists, kind="stable")
        counts = np.bincount(lists, minlength=self.nlist)
        off = np.zeros(self.nlist + 1, np.int64)
        np.cumsum(counts, out=off[1:])
        return order, off

    # -- search ------------------------------------------------------------
    def prep_queries(self, queries: Any) -> np.ndarray:
        """Queries as (nq, d) float32, normalised for cosine."""
        return prep_queries(queries, self.dim, self.metric)

    def search(
        self, queries: Any, k: int, *, filter: Any = None, nprobe: int = 16, candidates: int | None = None
    ) -> SearchResult:
        """Approximate top-``k`` for each row of ``queries`` (nq, d).

        Args:
            queries: (nq, d) float32 (a 1-D vector is a batch of one).
            k: results per query.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared or
                per-query.
            nprobe: lists to open at least, counting only lists that hold an allowed
                row (IVF's ``nprobe``); 1…nlist. More is higher recall, slower.
            candidates: allowed rows to score at least (default k; values below k are
                raised to k): probing continues past ``nprobe`` lists until this many
                allowed rows were scored or the filter is exhausted.
        """
        self._check_vectors("search")
        q = self.prep_queries(queries)
        k = check_k(k)
        nprobe = check_positive_int(nprobe, name="nprobe")
        cand = k if candidates is None else max(k, check_positive_int(candidates, name="candidates"))
        nq = q.shape[0]
        if self.ntotal == 0:
            return SearchResult.empty(nq, k)
        cf = self.compile_filter(filter, nq)  # the filter less removed rows; None: every row
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        which = np.arange(nq, dtype=np.int64)
        counts = np.zeros(nq, np.int64)
        if self.metric == "l2":
            self.search_compiled(_l2.augment_queries(q), k, cf, which, out_r, out_s, counts, target=cand, min_lists=nprobe)
            _l2.finish(q, self._xl, out_r, out_s, pos=self._row_pos)
        else:
            self.search_compiled(q, k, cf, which, out_r, out_s, counts, target=cand, min_lists=nprobe)
        return SearchResult(self._idmap.to_ids(out_r), out_s, counts)

    def _scoring_lists(self) -> np.ndarray:
        """The list-ordered matrix the kernels score: the vectors, or for l2 ``[x, -|x|²/2]``."""
        if self.metric != "l2":
            return self._xl
        xa = self.__dict__.get("_xla")
        if xa is None or xa.shape[0] != self._xl.shape[0]:
            xa = self._xla = _l2.augment_base(self._xl)
        return xa

    def centroid_scores(self, q: np.ndarray) -> np.ndarray:
        """(nq, nlist) float32 inner products of prepared queries with the centroids (l2:
        augmented queries against ``[c, -|c|²/2]``, which orders the lists nearest first);
        from ``CENTROID_I8_MIN`` entries up, read from 8-bit codes (the same codes and
        kernel for a query alone and in a batch)."""
        c8 = self._centroid_codes()
        if c8 is None:
            return q @ self._centroids_t
        out = np.empty((q.shape[0], c8[1].shape[0]), np.float32)
        fk.centroid_scores_i8(np.ascontiguousarray(q, dtype=np.float32), c8[4], c8[2], c8[3], out)
        return out

    def _centroid_codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """``(centroids, codes (nlist, d) int8, scale (nlist,), extra, blocked)`` of the 8-bit
        centroid scan, built on first use from the current centroids (``extra``: the l2 norm
        term, (nlist,) float32, or empty; ``blocked``: the codes as the scan reads them, flat,
        column-major in groups of ``LANES`` centroids, zero rows padding the list count to a
        multiple of ``DOT_GROUPS · LANES``, see :func:`gsu._simd.dot_i8_groups`); ``None``
        below ``CENTROID_I8_MIN`` entries."""
        c = self._centroids
        if c is None or c.shape[0] * c.shape[1] < CENTROID_I8_MIN:
            return None
        got = self.__dict__.get("_c8")
        if got is not None and got[0] is c:
            return got
        c32 = np.asarray(c, np.float32)
        nl, d = c32.shape
        amax = np.abs(c32).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.rint(c32 / scale[:, None]), -127, 127).astype(np.int8)
        span = DOT_GROUPS * LANES
        pad = np.zeros((-(-nl // span) * span, d), np.int8)
        pad[:nl] = codes
        blocked = np.ascontiguousarray(pad.reshape(-1, LANES, d).transpose(0, 2, 1)).reshape(-1)
        extra = _l2.augment_base(c32)[:, -1].copy() if self.metric == "l2" else np.zeros(0, np.float32)
        got = self._c8 = (c, np.ascontiguousarray(codes), scale, np.ascontiguousarray(extra, dtype=np.float32), blocked)
        return got

    @property
    def _centroids_t(self) -> np.ndarray:
        ct = self.__dict__.get("_ct")
        if ct is None or ct.shape[1] != self._centroids.shape[0]:
            c = _l2.augment_base(self._centroids) if self.metric == "l2" else self._centroids
            ct = self._ct = np.asfortranarray(c.T)  # (d, nlist) view-friendly for BLAS
        return ct

    def scan_pays(self, m: int, target: int, min_lists: int, *, has_bitmap: bool = False) -> bool:
        """Whether a shared filter allowing ``m`` rows is cheaper to probe by scanning the
        opened lists against its bitmap than by grouping its rows by list first.

        Grouping costs ~``SCAN_COST[0]`` per allowed row; scanning tests every row of the
        lists it opens — about ``max(target·n/m, min_lists·n/nlist)`` of them at
        ``SCAN_COST[1]`` each — plus the bitmap (``SCAN_COST[2]`` per allowed row, unless
        the filter already has one, e.g. from the graph walk's density probe).
        """
        n, nl = self.ntotal, max(self.nlist or 1, 1)
        c_group, c_scan, c_bits = SCAN_COST
        scan = c_scan * max(target * n / max(m, 1), min_lists * n / nl) + (0.0 if has_bitmap else c_bits * m)
        return scan < c_group * m

    def _shared_form(self, cf: CompiledFilter | None, target: int, min_lists: int
                     ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """``(m_all, boff, bpos, bm, run)``: how the list scan finds a shared filter's allowed
        rows (``None``: every row) — every list position; for one contiguous run of rows (a
        time window), each opened list's span of positions inside it (``run`` its bounds,
        found by binary search: a list's rows ascend with its positions, so neither a
        bitmap nor a grouping is built); the opened lists' rows tested against the filter's
        bitmap (:meth:`scan_pays`); or the allowed rows grouped by list (cached on the
        compiled filter). See :func:`gsu.index._filter_kernels._probe_lists`."""
        n = self._pos_row.shape[0]
        m_all = n if cf is None else cf.count
        if m_all == n:
            return m_all, self._list_off, self._all_pos, _NO_BM, fk._NO_RUN
        run = cf.run
        if run is not None and m_all > 0:
            return m_all, self._list_off, self._all_pos, _NO_BM, (int(run[0]), int(run[1]))
        if self.scan_pays(m_all, target, min_lists, has_bitmap="bitmap64" in cf._masks):
            return m_all, self._list_off, self._all_pos, cf.bitmap64(), fk._NO_RUN
        key = ("ivf-buckets", id(self))
        hit = cf.derived(key)
        if hit is None:
            hit = cf.keep(key, fk.bucket_rows(cf.rows, self._row_list, self._row_pos, self.nlist))
        return m_all, hit[0], hit[1], _NO_BM, fk._NO_RUN

    def lists_source(self, vectors: np.ndarray | None, sq8: tuple[np.ndarray, np.ndarray, float] | None, caller: str
                     ) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray, float]:
        """``(xl, ind, C, step, cnmax)``: what the list scan reads — the lists' own vectors, or
        for lists without vectors (``ind``) the owner's row-ordered ``vectors`` and its 8-bit
        codes ``sq8`` when given (``C`` empty otherwise); see :meth:`search_compiled`."""
        if self._external:
            if vectors is None or vectors.shape[0] != self._pos_row.shape[0]:
                raise ValueError(f"IVFIndex.{caller}: lists without vectors need the owner's row-ordered vectors")
            C, step, cnmax = fk._NO_SQ8 if sq8 is None else sq8
            return vectors, True, C, step, cnmax
        xl = self._xl if self.metric != "l2" else self._scoring_lists()
        return (xl, False, *fk._NO_SQ8)

    def search_one(self, q: np.ndarray, k: int, cf: CompiledFilter | None, *, target: int, min_lists: int,
                   vectors: np.ndarray | None = None, sq8: tuple[np.ndarray, np.ndarray, float] | None = None,
                   away: tuple[float, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search_compiled` for one prepared query ``q`` (1, d) under a shared
        compiled filter (``None``: all rows): ``(rows (1, k), scores (1, k), counts (1,))``.
        The same choice of the filter's form, the same kernel and arguments (its serial
        twin, as for one query there), without the batch bookkeeping: a fresh filter's
        search pays this once per request."""
        n = self._pos_row.shape[0]
        m_all, boff, bpos, bm, run = self._shared_form(cf, target, min_lists)
        xl, ind, C, step, cnmax = self.lists_source(vectors, sq8, "search_one")
        if away is None or away[0] <= 0:
            loff, share_lo, target_hi, lists_hi = fk._NO_AWAY
        else:
            loff, share_lo, target_hi, lists_hi = self._list_off, float(away[0]), int(away[1]), int(away[2])
        out_r = np.empty((1, k), np.int64)
        out_s = np.empty((1, k), np.float32)
        counts = np.empty(1, np.int64)
        c8 = self._centroid_codes()
        if c8 is None:
            cs, cb, csc, cex = self.centroid_scores(q), *fk._NO_C8
        else:  # scored inside the kernel: the same scores as centroid_scores', one call fewer
            cs, cb, csc, cex = fk._NO_CS, c8[4], c8[2], c8[3]
        fk._ivf_search_shared_ser(q, cs, xl, self._pos_row, boff, bpos, bm, m_all, k, int(target), int(min_lists), out_r, out_s,
                                  counts, np.empty(1, np.int64), bool(ind), C, step, float(cnmax), loff, share_lo, target_hi,
                                  lists_hi, run[0], run[1], cb, csc, cex)
        return out_r, out_s, counts

    def search_compiled(
        self,
        q: np.ndarray,
        k: int,
        cf: CompiledFilter | None,
        which: np.ndarray,
        out_r: np.ndarray,
        out_s: np.ndarray,
        counts: np.ndarray,
        *,
        target: int,
        min_lists: int,
        scored: np.ndarray | None = None,
        centroid_scores: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
        sq8: tuple[np.ndarray, np.ndarray, float] | None = None,
        away: tuple[float, int, int] | None = None,
    ) -> None:
        """Search prepared queries ``which`` (int64) under a compiled filter (``None``: all rows).

        ``target`` / ``min_lists`` are ``candidates`` / ``nprobe``. Writes rows (not
        external ids), scores and result counts into ``out_r`` / ``out_s`` (nq, k) and
        ``counts`` (nq,) in place; ``scored`` (nq,) int64, when given, receives the
        number of allowed rows in the opened lists. ``centroid_scores`` (nq, nlist)
        float32, when given, are the queries' centroid scores already computed.
        ``vectors``: lists without vectors (:meth:`without_vectors`) score the owner's
        (n, d') float32 matrix in row order (for l2 the augmented rows); ``sq8``:
        ``(codes (n, d') uint8, step, largest row norm)`` of those rows, read first
        (:func:`gsu.index._filter_kernels._probe_lists`: the same answer), lists without
        vectors only. ``away``: ``(ratio, candidates, nprobe)``, the budget of a query
        whose nearest lists' rows are allowed at less than ``ratio`` times the filter's
        selectivity (a filter whose rows lie away from it:
        :func:`gsu.index._filter_kernels._probe_lists`).
        """
        if which.shape[0] == 0:
            return
        aw = fk._NO_AWAY if away is None or away[0] <= 0 else (self._list_off, float(away[0]), int(away[1]), int(away[2]))
        nq = q.shape[0]
        target, min_lists = int(target), int(min_lists)
        shared = cf is None or cf.shared
        if shared:
            m_all, boff, bpos, bm, run = self._shared_form(cf, target, min_lists)
        else:
            starts, ends = cf.bounds(nq)
        # every query in order, one block: the kernels run on the inputs as they are (a
        # permutation of the queries takes the gathering path: ``starts``/``ends`` follow ``which``)
        full = which.shape[0] == nq and nq <= _QUERY_BLOCK and (nq == 1 or bool((which[1:] > which[:-1]).all()))
        xl, ind, C, step, cnmax = self.lists_source(vectors, sq8, "search_compiled")
        for b in range(0, which.shape[0], _QUERY_BLOCK):
            w = which[b : b + _QUERY_BLOCK]
            if full:  # every query, one block: write straight into the outputs
                qs, r, s, c = q, out_r, out_s, counts
                scw = np.zeros(nq, np.int64) if scored is None else scored
            else:
                qs = q[w]
                r = np.full((w.shape[0], k), -1, np.int64)
                s = np.full((w.shape[0], k), -np.inf, np.float32)
                c = np.zeros(w.shape[0], np.int64)
                scw = np.zeros(w.shape[0], np.int64)
            c8 = self._centroid_codes() if shared and centroid_scores is None else None
            if c8 is not None:  # scored inside the shared kernel (the same scores, one call fewer)
                cs = fk._NO_CS
            elif centroid_scores is None:
                cs = self.centroid_scores(qs)
            else:
                cs = centroid_scores if full else np.ascontiguousarray(centroid_scores[w])
            if shared:
                fk.ivf_search_shared(qs, cs, xl, self._pos_row, boff, bpos, bm, m_all, k, target, min_lists, r, s, c, scw, ind,
                                     (C, step, cnmax), aw, run, None if c8 is None else (c8[4], c8[2], c8[3]))
            else:
                fk.ivf_search_per_query(
                    qs, cs, xl, self._pos_row, self._row_list, self._row_pos,
                    starts[w], ends[w], cf.rows, k, target, min_lists, r, s, c, scw, ind, C, step, float(cnmax),
                    aw[0], float(aw[1]), int(aw[2]), int(aw[3]),
                )
            if not full:
                out_r[w], out_s[w], counts[w] = r, s, c
                if scored is not None:
                    scored[w] = scw

    def _compact_rows(self, live: np.ndarray) -> None:
        """Drop dead rows from the lists (no retraining: the centroids stay)."""
        n = self.ntotal
        newrow = np.full(n, -1, np.int64)
        newrow[live] = np.arange(live.shape[0], dtype=np.int64)
        keep = newrow[self._pos_row] >= 0  # positions (list order) whose row survives
        counts = np.bincount(self._row_list[live], minlength=self.nlist)
        off = np.zeros(self.nlist + 1, np.int64)
        np.cumsum(counts, out=off[1:])
        xl = self._xl if self._external else aligned_take(self._xl, np.flatnonzero(keep))
        self._set_lists(xl, newrow[self._pos_row[keep]], off)
        self._idmap = IdMap(self._idmap.ids[live])

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {"dim": self.dim, "metric": self.metric, "nlist": self.nlist, "niter": self.niter,
                  "max_train": self.max_train, "seed": self.seed, "trained": self._centroids is not None,
                  "assign": self._assign_rule}
        arrays = {"ids": self._idmap.ids, "list_rows": self._pos_row, "list_offsets": self._list_off}
        if self._external:
            config["external_vectors"] = True
        else:
            arrays["list_vectors"] = self._xl
        if self._centroids is not None:
            arrays["centroids"] = self._centroids
        self._tomb_state(config, arrays)
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "IVFIndex":
        idx = cls(int(config["dim"]), config["metric"], nlist=config["nlist"], niter=int(config["niter"]),
                  max_train=int(config["max_train"]), seed=int(config["seed"]))
        pos_row, off, ids = arrays["list_rows"], arrays["list_offsets"], arrays["ids"]
        n = ids.shape[0]
        external = bool(config.get("external_vectors", False))
        xl = np.zeros((0, idx.dim), np.float32) if external else arrays["list_vectors"]
        idx._external = external
        # files saved before the rule was recorded assigned by inner product (l2: by distance)
        rule = config.get("assign", "l2" if idx.metric == "l2" else "ip")
        if rule not in ("l2", "ip"):
            raise ValueError(f"unknown list assignment rule {rule!r}")
        idx._assign_rule = rule
        if (not external and xl.shape != (n, idx.dim)) or pos_row.shape != (n,) or (n and int(off[-1]) != n):
            raise ValueError(f"list arrays {xl.shape}/{pos_row.shape}/{off.shape} do not match {n} ids of dim {idx.dim}")
        if config["trained"]:
            c = arrays["centroids"]
            if c.shape != (idx.nlist, idx.dim) or off.shape != (idx.nlist + 1,):
                raise ValueError(f"centroids {c.shape} / offsets {off.shape} do not match nlist={idx.nlist}")
            idx._centroids = c
        idx._set_lists(xl, pos_row, off)
        idx._idmap = IdMap(ids)
        idx._tomb_load(config, arrays)
        return idx

    def __repr__(self) -> str:
        return f"IVFIndex(dim={self.dim}, metric={self.metric!r}, nlist={self.nlist}, ntotal={self.ntotal})"
