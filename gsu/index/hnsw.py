"""``HNSWIndex``: faiss HNSW graph search with gsu filters turned into faiss selectors.

faiss does the graph construction and traversal (``IndexHNSWFlat``); a gsu
:class:`~gsu.index.filters.Filter` becomes the cheapest ``faiss.IDSelector`` for its
shape (:func:`faiss_selector`), handed over through ``SearchParametersHNSW`` — never
a Python callback. A batch whose queries each carry their own filter (faiss takes one
selector per call) is searched in one call by gsu's numba beam search over the graph
faiss built (:mod:`gsu.index._graph_kernels`: 8-bit codes steer the walk, results are
rescored in float32), which :meth:`HNSWIndex.beam_search` also offers for shared
filters (``FilteredIndex``'s HNSW route uses it). faiss's internal ids are the index
rows; external ids go through an :class:`~gsu.index.filters.IdMap`.

Filtered HNSW can come back with fewer than k results at low selectivity (the
beam holds mostly excluded nodes). Every such query is recomputed exactly over its
allowed rows, so a row holds fewer than k results only when fewer than k items
pass the filter.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import faiss
import numba
import numpy as np

from gsu._validate import as_matrix, check_choice, check_k, check_positive_int
from gsu.index import _filter_kernels as fk
from gsu.index import _graph_kernels as gk
from gsu.index import _l2
from gsu.index._mutable import MutableIndex
from gsu.index.base import register_index
from gsu.index.result import SearchResult
from gsu.index.vectors import DENSE_METRICS, normalize_rows, prep_queries
from gsu.index.filters import CompiledFilter, Filter, IdMap

log = logging.getLogger(__name__)

__all__ = ["HNSWIndex", "faiss_selector"]

#: below ``n / BATCH_SELECTOR_RATIO`` allowed rows an ``IDSelectorBatch`` (hash set,
#: O(m) to build) is cheaper to build than a bitmap (O(n/8) bytes); lookups in both
#: are O(1) and far fewer than the build cost for a graph search.
BATCH_SELECTOR_RATIO = 4096


def faiss_selector(rows: np.ndarray, n: int, *, bitmap: np.ndarray | None = None) -> tuple[faiss.IDSelector, tuple[Any, ...]]:
    """The fastest faiss selector for one sorted array of allowed ``rows`` of ``n``.

    - a contiguous run ``[lo, hi)`` (id or time ranges over sorted ids) → ``IDSelectorRange``
    - very few rows (``m * 4096 < n``) → ``IDSelectorBatch`` (hash set)
    - otherwise → ``IDSelectorBitmap`` over a packed bitmap of the rows

    ``bitmap``: the rows' packed bitmap when the caller already has it.
    Returns ``(selector, keep_alive)``: the caller must hold ``keep_alive`` (the
    arrays faiss points into) for as long as the selector is used.
    """
    m = int(rows.shape[0])
    if m and int(rows[-1]) - int(rows[0]) + 1 == m:
        return faiss.IDSelectorRange(int(rows[0]), int(rows[-1]) + 1), ()
    if m * BATCH_SELECTOR_RATIO < n:
        r = np.ascontiguousarray(rows, dtype=np.int64)
        return faiss.IDSelectorBatch(r), (r,)
    bm = fk.rows_bitmap(np.ascontiguousarray(rows, dtype=np.int64), n) if bitmap is None else bitmap
    return faiss.IDSelectorBitmap(bm), (bm,)


_NO_ROWS = np.zeros(0, np.int64)
_NO_BITMAP = np.zeros(0, np.uint64)
_NO_SEEDS = np.zeros((0, 0), np.int64)
_ALL_ROWS = (True, _NO_BITMAP, _NO_ROWS, _NO_ROWS, _NO_ROWS)
_BEAM_FILTER = "gsu.hnsw.beam-filter"  # cache key of a shared filter's beam arguments on its compiled form


def filter_bitmap64(cf: CompiledFilter, n: int) -> np.ndarray:
    """The bitmap of a shared compiled filter as (ceil(n/64),) uint64 words (bit ``r & 63``
    of word ``r >> 6``), cached on ``cf`` (:meth:`CompiledFilter.bitmap64`)."""
    return cf.bitmap64()


def filter_bitmap(cf: CompiledFilter, n: int) -> np.ndarray:
    """The packed bitmap (ceil(n/8),) uint8 of a shared compiled filter (a byte view of
    :func:`filter_bitmap64`: the ``faiss.IDSelectorBitmap`` layout on a little-endian machine)."""
    return cf.bitmap64().view(np.uint8)[: (n + 7) >> 3]


def hnsw_params(cf: CompiledFilter | None, n: int, ef: int, cache: dict) -> faiss.SearchParametersHNSW:
    """Prebuilt ``SearchParametersHNSW`` (``efSearch=ef``, selector of the shared filter
    ``cf`` over ``n`` rows, none for ``cf=None`` or a filter allowing every row).

    Built once per (filter, index, ef) and cached on ``cf`` (or in ``cache`` for
    unfiltered searches): a reused filter pays neither the selector nor the SWIG
    parameter construction again.
    """
    if cf is None:
        store = cache
    else:
        store = cf.derived(("hnsw-params", n))
        if store is None:
            store = cf.keep(("hnsw-params", n), {})
    p = store.get(ef)
    if p is None:
        p = faiss.SearchParametersHNSW()
        p.efSearch = int(ef)
        if cf is not None and cf.count != n:
            sel = cf.derived(("faiss-sel", n))
            if sel is None:
                sel = cf.keep(("faiss-sel", n), _shared_selector(cf, n))
            p.sel = sel[0]
        store[ef] = p
    return p


def _faiss_view(vec: Any, dtype: Any) -> np.ndarray:
    """A numpy view of a faiss vector's memory, for reading (valid while the vector is
    not resized: callers drop it before the next insertion; left writeable so that the
    kernels see the same array type as for their own arrays, no extra compilation)."""
    n = int(vec.size())
    if n == 0:
        return np.zeros(0, dtype)
    a = faiss.rev_swig_ptr(vec.data(), n)
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"faiss vector holds {a.dtype}, expected {np.dtype(dtype)}")
    return a


_MATERIALISE = threading.Lock()


def _copy_into(vec: Any, a: np.ndarray) -> None:
    """Resize the faiss vector ``vec`` to ``a``'s length and copy ``a`` into it."""
    a = np.ascontiguousarray(a)
    vec.resize(a.shape[0])
    if a.shape[0]:
        faiss.memcpy(vec.data(), faiss.swig_ptr(a), a.nbytes)


def _faiss_from_arrays(fi: faiss.IndexHNSWFlat, f: dict[str, Any]) -> faiss.IndexHNSWFlat:
    """faiss's ``IndexHNSWFlat`` rebuilt from the array layout (the file's vectors into its
    storage, the graph into its vectors: the same index faiss serialised)."""
    x = np.ascontiguousarray(f["vectors"], dtype=np.float32)
    if x.shape[0]:
        fi.storage.add(x)
    h = fi.hnsw
    _copy_into(h.assign_probas, np.asarray(f["assign_probas"], dtype=np.float64))
    _copy_into(h.cum_nneighbor_per_level, np.asarray(f["cum_nneighbor_per_level"], dtype=np.int32))
    _copy_into(h.levels, np.asarray(f["levels"], dtype=np.int32))
    _copy_into(h.offsets, np.asarray(f["offsets"], dtype=np.int64).view(np.uint64))
    _copy_into(h.neighbors, np.asarray(f["neighbors"], dtype=np.int32))
    h.entry_point = int(f["entry_point"])
    h.max_level = int(f["max_level"])
    h.efSearch = int(f["ef_search"])
    fi.ntotal = x.shape[0]
    return fi


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


#: the vectors' largest magnitude for which a graph built over their half-precision copies
#: is built that way (:func:`_build_half`): well inside float16's range (65,504), and large
#: enough that the components that matter to a distance are normal float16 numbers
#: (relative error 2^-11); data outside it is built at full precision
HALF_BUILD_RANGE = (2.0**-6, 2.0**15)
_GRAPH_VECTORS = ("assign_probas", "cum_nneighbor_per_level", "levels", "offsets", "neighbors")


def _half_ok(x: np.ndarray) -> bool:
    """Whether the graph over ``x`` (finite, validated) may be built from half-precision copies."""
    if x.shape[0] < 2:
        return False
    hi = max(float(x.max()), -float(x.min()))  # two passes, no |x| temporary
    return HALF_BUILD_RANGE[0] <= hi <= HALF_BUILD_RANGE[1]


def _build_half(fi: faiss.IndexHNSWFlat, x: np.ndarray) -> None:
    """Insert ``x`` into the empty ``fi`` with its graph built over float16 copies.

    faiss builds the graph of an ``IndexHNSWSQ`` (``QT_fp16`` storage, the same ``M``,
    ``efConstruction`` and metric): its distance computations read half the bytes of
    float32 rows, which is what a build is bound by (faiss alone, this project's 2-core
    VM, M 32, efConstruction 200: 0.95x the float32 build's time at 32 dimensions, 0.84x
    at 64, 0.71x at 128, 0.74x at 256, 0.60x at 384; the graphs, searched in float32, give
    the same recall@10 within 0.003 on the filtered suite's data, and at 2·10^6 × 96 no
    less). The graph's arrays are then swapped (not copied) into ``fi``, the
    half-precision index is freed, and ``fi`` stores the float32 rows: the same
    ``IndexHNSWFlat`` a float32 build gives, whose later insertions and searches are
    faiss's float32 ones. The levels come from the same random draws (both indexes seed
    their generator alike). Peak memory: the codes (2 bytes a value) and the graph during
    the build, the float32 rows and the graph after it — not more than the float32 build.
    """
    h = fi.hnsw
    sq = faiss.IndexHNSWSQ(fi.d, faiss.ScalarQuantizer.QT_fp16, int(h.nb_neighbors(1)), fi.metric_type)
    sq.hnsw.efConstruction = h.efConstruction
    if not sq.is_trained:  # pragma: no cover - float16 needs no training
        sq.train(x[: min(x.shape[0], 1024)])
    sq.add(x)
    g = sq.hnsw
    for name in _GRAPH_VECTORS:
        _take_vector(getattr(h, name), getattr(g, name))
    h.entry_point = g.entry_point
    h.max_level = g.max_level
    h.rng = g.rng  # later insertions continue the level draws as the one index would
    del g, sq
    fi.storage.add(x)
    fi.ntotal = x.shape[0]


def _take_vector(dst: Any, src: Any) -> None:
    """Move the contents of the faiss vector ``src`` into ``dst`` (``src`` left empty):
    ``std::vector::swap``, or for faiss's ``MaybeOwnedVector`` (the graph's neighbour
    table) a swap of the owned vectors with the views re-pointed; a copy where neither
    applies (a view onto memory faiss does not own)."""
    if hasattr(dst, "swap"):
        dst.swap(src)
        return
    if getattr(dst, "is_owned", False) and getattr(src, "is_owned", False) and hasattr(dst, "owned_data"):
        a, b = dst.owned_data, src.owned_data
        a.swap(b)
        for v, o in ((dst, a), (src, b)):
            v.c_ptr = o.data()
            v.c_size = o.size()
        return
    _copy_into(dst, _faiss_view(src, np.int32 if "Int32" in type(src).__name__ else np.float64).copy())  # pragma: no cover


def _add_to_faiss(fi: faiss.IndexHNSWFlat, x: np.ndarray) -> None:
    """``fi.add(x)``; a bulk insertion into an empty index builds its graph over float16
    copies where the data's range allows (:func:`_build_half`)."""
    if fi.ntotal == 0 and _half_ok(x):
        _build_half(fi, x)
    else:
        fi.add(x)


@register_index("hnsw")
class HNSWIndex(MutableIndex):
    """Filtered HNSW graph search (faiss ``IndexHNSWFlat``) over dense float32 vectors.

    Args:
        dim: vector dimension d.
        metric: ``"ip"`` (inner product), ``"cosine"`` (vectors and queries are
            L2-normalised) or ``"l2"`` (euclidean: the graph is built on L2 distances,
            the walk scores the exact inner-product reduction of :mod:`gsu.index._l2`,
            and results carry ``-|q - x|²`` recomputed exactly).
        M: graph out-degree per node (HNSW paper's ``M``; level 0 keeps ``2*M``).
            More is higher recall per visited node and more memory; 16–64.
        ef_construction: beam width while inserting (``efConstruction``); higher
            builds a better graph more slowly; 100–400.

    Search setting (keyword of :meth:`search`): ``ef`` — the beam width
    (``efSearch``), raised to at least k.
    """

    _bitmap_first = True  # the graph walk reads a shared filter as a bitmap

    def __init__(self, dim: int, metric: str = "ip", *, M: int = 32, ef_construction: int = 200):
        self.dim = check_positive_int(dim, name="dim")
        self.metric = check_choice(metric, name="metric", choices=DENSE_METRICS)
        self.M = check_positive_int(M, name="M", minimum=2)
        self.ef_construction = check_positive_int(ef_construction, name="ef_construction")
        self._index: faiss.IndexHNSWFlat | None = self._new_faiss()
        #: a loaded file's arrays (vectors, graph, codes), read in place until faiss is needed
        self._file: dict[str, Any] | None = None
        self._idmap = IdMap(np.zeros(0, np.int64))
        self._n = 0
        self._xview: np.ndarray | None = None
        self._params: dict[int, faiss.SearchParametersHNSW] = {}
        self._scratch_pool: list[tuple[np.ndarray, ...]] = []  # (visited bitset, touched, zero bitmap) of serial searches

    def _new_faiss(self) -> faiss.IndexHNSWFlat:
        idx = faiss.IndexHNSWFlat(self.dim, self.M, _faiss_metric(self.metric))
        idx.hnsw.efConstruction = self.ef_construction
        return idx

    # -- data --------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._n

    @property
    def faiss_index(self) -> faiss.IndexHNSWFlat:
        """The underlying faiss index (internal ids are row numbers). An index opened from
        a file builds it from the file's arrays on first need (an insertion, faiss's own
        search): gsu's graph walk and exact kernels read the arrays in place."""
        return self._faiss()

    def _faiss(self) -> faiss.IndexHNSWFlat:
        fi = self._index
        if fi is None:
            with _MATERIALISE:
                fi = self._index
                if fi is None:
                    fi = self._index = _faiss_from_arrays(self._new_faiss(), self._file)
                    self._file = None
                    self._xview = None
                    self.__dict__.pop("_graph_arrays", None)
        return fi

    @property
    def entry_point(self) -> int:
        """The graph's entry point (a row; -1 when empty)."""
        return int(self._graph()[3])

    @property
    def vectors(self) -> np.ndarray:
        """(n, d) float32 view of the vectors stored by faiss, in row order (read-only use).

        The view is only valid until the next :meth:`add`.
        """
        if self._xview is None:
            n = self.ntotal
            if n == 0:
                return np.zeros((0, self.dim), np.float32)
            f = self._file
            if f is not None and self._index is None:
                return f["vectors"]
            flat = faiss.downcast_index(self._faiss().storage)
            self._xview = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
        return self._xview

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Insert ``vectors`` (n, d) float32 with external ``ids`` (n,) int64 (unique).

        Default ids continue ``0..n-1`` from the current size. faiss builds the graph
        with its own threads (``faiss.omp_set_num_threads``).
        """
        x = as_matrix(vectors, name="vectors", dim=self.dim)
        new_ids = self._new_ids(x.shape[0], ids)
        if self.metric == "cosine":
            x = normalize_rows(x)
        self._xview = None
        self.__dict__.pop("_graph_arrays", None)
        self.__dict__.pop("_sq8", None)
        self.__dict__.pop("_beam", None)
        self.__dict__.pop("_xa", None)
        fi = self._faiss()
        _add_to_faiss(fi, x)
        self._n = int(fi.ntotal)
        self._appended(new_ids)

    # -- search ------------------------------------------------------------
    def prep_queries(self, queries: Any) -> np.ndarray:
        """Queries as (nq, d) float32, normalised for cosine."""
        return prep_queries(queries, self.dim, self.metric)

    def search(self, queries: Any, k: int, *, filter: Any = None, ef: int = 64) -> SearchResult:
        """Approximate top-``k`` for each row of ``queries`` (nq, d).

        Args:
            queries: (nq, d) float32 (a 1-D vector is a batch of one).
            k: results per query.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared
                or per-query. A shared filter is one faiss call for the whole batch;
                per-query filters are one numba beam search over faiss's graph for the
                whole batch, parallel over queries (:mod:`gsu.index._graph_kernels`).
            ef: beam width ``efSearch`` (raised to at least k); 16–1024.
        """
        q = self.prep_queries(queries)
        if type(k) is not int or k < 1:
            k = check_k(k)
        if type(ef) is not int or ef < 1:
            ef = check_positive_int(ef, name="ef")
        nq = q.shape[0]
        n = self._n
        if n == 0:
            return SearchResult.empty(nq, k)
        if type(filter) is np.ndarray and filter.dtype == np.int64 and filter.ndim == 1:
            f = None  # a plain id array (a request's fresh filter): compiled without a Filter object
        else:
            f = filter if type(filter) is Filter else Filter.coerce(filter)
        if f is None or f.is_all or f.n_queries() is None:
            # one faiss call with prebuilt parameters (cached on a reused filter)
            if f is None:
                cf = self.compile_filter(filter, nq)
            else:
                cf = None if f.is_all and self._dead is None else self.compile_filter(f, nq)  # less removed rows
            m = n if cf is None else cf.count
            if m == 0:
                return SearchResult.empty(nq, k)
            rows, scores = self.search_params(q, k, hnsw_params(cf, n, max(ef, k), self._params))
            if self.metric == "l2":
                if cf is not None and ((rows >= 0).sum(axis=1) < min(m, k)).any():
                    self._fill_short(q, k, cf, np.arange(nq, dtype=np.int64), rows, scores)
                _l2.finish(q, self.vectors, rows, scores)
                return _result(self._idmap, rows, scores)
            if (rows[0, k - 1] >= 0) if nq == 1 else (rows[:, -1].min() >= 0):
                return SearchResult(rows if self._idmap.identity else self._idmap.to_ids(rows), scores, np.full(nq, k, np.int64))
            counts = (rows >= 0).sum(axis=1)
            if cf is not None and counts.min() < min(m, k):
                short = np.flatnonzero(counts < min(m, k)).astype(np.int64)
                log.debug("hnsw: %d queries short of k results, recomputed exactly", short.shape[0])
                starts, ends = cf.bounds(nq)
                counts = counts.astype(np.int64)
                fk.gather_topk_ip_sel(q, self.vectors, short, starts, ends, cf.rows, k, rows, scores, counts)
            return _result(self._idmap, rows, scores)
        cf = self.compile_filter(f, nq)
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)
        self.search_compiled(q, k, cf, np.arange(nq, dtype=np.int64), out_r, out_s, ef=np.full(nq, ef, np.int64))
        if self.metric == "l2":
            _l2.finish(q, self.vectors, out_r, out_s)
        return _result(self._idmap, out_r, out_s)

    def search_params(self, q: np.ndarray, k: int, params: faiss.SearchParametersHNSW) -> tuple[np.ndarray, np.ndarray]:
        """One faiss search of prepared queries ``q`` (nq, d) float32 with prebuilt
        ``params`` (from :func:`hnsw_params`), calling faiss's C++ search directly.

        Returns ``(rows (nq, k) int64 -1 padded, scores (nq, k) float32 -inf padded)``.
        """
        if not q.flags.c_contiguous:
            q = np.ascontiguousarray(q)
        nq = q.shape[0]
        D = np.empty((nq, k), np.float32)
        I = np.empty((nq, k), np.int64)
        sp = faiss.swig_ptr
        self._faiss().search_c(nq, sp(q), k, sp(D), sp(I), params)
        if self.metric == "l2":  # faiss's squared distances -> scores; padding -inf
            np.negative(D, out=D)
            D[I < 0] = -np.inf
            return I, D
        if (I[0, k - 1] < 0) if nq == 1 else (I[:, -1].min() < 0):  # faiss pads the tail with -1
            D[I < 0] = -np.inf
        return I, D

    def search_compiled(
        self,
        q: np.ndarray,
        k: int,
        cf: CompiledFilter,
        which: np.ndarray,
        out_r: np.ndarray,
        out_s: np.ndarray,
        *,
        ef: np.ndarray,
    ) -> None:
        """Search queries ``which`` under a compiled filter, writing rows/scores in place.

        ``ef`` (nq,) int64 gives each query's beam width. Queries sharing a filter and
        an ``ef`` go to faiss in one call. Queries that come back with fewer than
        ``min(k, allowed)`` results are recomputed exactly.
        """
        if which.shape[0] == 0:
            return
        n = self.ntotal
        if cf.shared:
            for e in np.unique(ef[which]):
                grp = which[ef[which] == e]
                r, s = self.search_params(q[grp], k, hnsw_params(cf, n, max(int(e), k), self._params))
                out_r[grp], out_s[grp] = r, s
        else:
            # every query its own filter: one numba call over faiss's graph for the batch
            # (faiss takes one selector per call, which would mean a Python loop per query)
            counts = np.zeros(q.shape[0], np.int64)
            self.beam_search(q, k, cf, which, out_r, out_s, counts, ef)
        self._fill_short(q, k, cf, which, out_r, out_s)

    def beam_search(
        self,
        q: np.ndarray,
        k: int,
        cf: CompiledFilter | None,
        which: np.ndarray,
        out_r: np.ndarray,
        out_s: np.ndarray,
        counts: np.ndarray,
        ef: int | np.ndarray,
        probe: float = 0.0,
        seeds: np.ndarray | None = None,
        bail: float = 0.0,
    ) -> None:
        """gsu's beam search over faiss's graph (:mod:`gsu.index._graph_kernels`: 8-bit codes
        steer the walk, the ``ef`` allowed results are rescored in float32) for prepared
        queries ``which`` (int64) under a compiled filter (``None``: every row).

        ``ef``: an int for every query or (nq,) int64 per query; it counts *allowed*
        results (hnswlib's filtered rule). Writes rows (not external ids), scores and
        counts into ``out_r``/``out_s`` (nq, k) and ``counts`` (nq,) in place; rows short
        of k are padded with -1 / -inf. A single query runs serially on cached scratch,
        batches in parallel chunks. ``probe`` > 0: a query gives up (count -1, its row not
        written) when fewer than that share of the first ~100 level-0 nodes it visits pass
        the filter (the filter is too sparse near it for a graph walk to pay). ``seeds``:
        (nq, S) int64 rows entered at level 0 beside the descent's node (-1: none).
        ``bail`` > 0 with one filter per query: each query's probe share is at least
        ``bail`` times its own filter's selectivity (a walk that lands where its filter
        is far sparser than on average gives up).
        """
        W = which.shape[0]
        if W == 0:
            return
        n = self._n
        ctx = self.__dict__.get("_beam")
        if ctx is None:
            ctx = self._beam = self._graph() + self._codes() + (self._scoring_vectors(),)
        if self.metric == "l2" and q.shape[1] == self.dim:
            q = _l2.augment_queries(q)
        nbr, off, cum, ep, maxl, codes, step, X = ctx
        if cf is None or (cf.shared and cf.count == n):
            fa = _ALL_ROWS
        elif cf.shared:  # (all rows?, shared bitmap, starts, ends, rows), cached on the filter
            key = (_BEAM_FILTER, n)
            fa = cf._masks.get(key)
            if fa is None:
                fa = cf._masks[key] = (False, cf.bitmap64(), _NO_ROWS, _NO_ROWS, _NO_ROWS)
        else:
            starts, ends = cf.bounds(q.shape[0])
            fa = (False, _NO_BITMAP, starts, ends, cf.rows)
        if type(ef) is int:
            efa, ef0 = _NO_ROWS, ef
        elif isinstance(ef, np.ndarray):
            efa, ef0 = np.ascontiguousarray(ef, dtype=np.int64), 0
        else:
            efa, ef0 = _NO_ROWS, int(ef)
        if which.dtype != np.int64 or not which.flags.c_contiguous:
            which = np.ascontiguousarray(which, dtype=np.int64)
        if seeds is None:
            seeds = _NO_SEEDS
        elif seeds.dtype != np.int64 or seeds.ndim != 2 or seeds.shape[0] != q.shape[0] or not seeds.flags.c_contiguous:
            raise ValueError(f"seeds: expected a C-contiguous (nq={q.shape[0]}, S) int64 array, got {seeds.shape} {seeds.dtype}")
        if W == 1 or numba.get_num_threads() == 1:
            pool = self._scratch_pool
            try:  # pop, not test-then-pop: concurrent searches share the pool
                sc = pool.pop()
            except IndexError:
                sc = None
            if sc is None or sc[1].shape[0] != n:
                w = (n + 63) >> 6
                sc = (np.zeros(w, np.uint64), np.empty(n, np.int32), np.zeros(w, np.uint64))
            try:
                gk.search_serial(q, step, codes, X, nbr, off, cum, ep, maxl, which, *fa, efa, ef0, k, out_r, out_s, counts,
                                 sc[0], sc[1], sc[2], float(probe), seeds, float(bail))
            finally:
                pool.append(sc)
        else:
            gk.search_batch(q, step, codes, X, nbr, off, cum, ep, maxl, which, *fa, efa, ef0, k, out_r, out_s, counts,
                            max(1, min(W, 4 * numba.get_num_threads())), float(probe), seeds, float(bail))

    def _codes(self) -> tuple[np.ndarray, np.ndarray]:
        """The traversal's 8-bit codes of the vectors and their per-dimension steps
        (:func:`gsu.index._graph_kernels.sq8_encode`), built on first use and dropped by
        :meth:`add`; never saved (a quarter of the vectors' size, rebuilt in O(n d))."""
        c = self.__dict__.get("_sq8")
        if c is None or c[0].shape[0] != self._n:
            f = self._file
            if f is not None and "codes" in f and f["codes"].shape[0] == self._n:
                c = self._sq8 = (f["codes"], f["code_step"])  # saved with the graph
            else:
                c = self._sq8 = gk.sq8_encode(self._scoring_vectors())
        return c

    def _scoring_vectors(self) -> np.ndarray:
        """What the walk and the exact fill-in score: the vectors, or for l2 the augmented
        ``[x, -|x|²/2]`` (:mod:`gsu.index._l2`; built on first use, dropped by :meth:`add`)."""
        if self.metric != "l2":
            return self.vectors
        xa = self.__dict__.get("_xa")
        if xa is None or xa.shape[0] != self._n:
            xa = self._xa = _l2.augment_base(self.vectors)
        return xa

    def _graph(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """faiss's HNSW graph as arrays ``(neighbors int32, offsets int64, cum_nneighbor_per_level
        int64, entry_point, max_level)``: views of faiss's own arrays (the level table
        copied), cached until the next :meth:`add` or compaction, which drop them."""
        g = self.__dict__.get("_graph_arrays")
        if g is None and self._index is None:  # a loaded file: its arrays as they are
            f = self._file
            g = self._graph_arrays = (f["neighbors"], f["offsets"], f["cum_nneighbor_per_level"], f["entry_point"],
                                      f["max_level"])
        if g is None:
            h = self._index.hnsw
            g = self._graph_arrays = (  # the links and offsets read in place (no second copy of the graph)
                _faiss_view(h.neighbors, np.int32),
                _faiss_view(h.offsets, np.uint64).view(np.int64),
                np.ascontiguousarray(faiss.vector_to_array(h.cum_nneighbor_per_level), dtype=np.int64),
                int(h.entry_point),
                int(h.max_level),
            )
        return g

    def _fill_short(self, q: np.ndarray, k: int, cf: CompiledFilter, which: np.ndarray, out_r: np.ndarray, out_s: np.ndarray) -> None:
        """Exact recomputation of queries that returned fewer than ``min(k, allowed)`` rows."""
        nq = q.shape[0]
        allowed = cf.counts(nq)[which]
        got = (out_r[which] >= 0).sum(axis=1)
        short = which[got < np.minimum(allowed, k)]
        if short.shape[0]:
            log.debug("hnsw: %d queries short of k results, recomputed exactly", short.shape[0])
            starts, ends = cf.bounds(nq)
            counts = np.zeros(nq, np.int64)
            if self.metric == "l2":
                fk.gather_topk_ip_sel(_l2.augment_queries(q[:, : self.dim]), self._scoring_vectors(), short, starts, ends, cf.rows, k,
                                      out_r, out_s, counts)
            else:
                fk.gather_topk_ip_sel(q, self.vectors, short, starts, ends, cf.rows, k, out_r, out_s, counts)

    def _compact_rows(self, live: np.ndarray) -> None:
        """Rebuild the graph over the live rows (faiss's HNSW cannot unlink a node)."""
        x = np.ascontiguousarray(self.vectors[live])
        ids = self._idmap.ids[live]
        for key in ("_xview", "_graph_arrays", "_sq8", "_beam", "_xa"):
            self.__dict__.pop(key, None)
        self._xview = None
        self._scratch_pool = []
        self._file = None
        self._index = self._new_faiss()
        if x.shape[0]:
            _add_to_faiss(self._index, x)
        self._n = int(self._index.ntotal)
        self._idmap = IdMap(ids)

    # -- persistence -------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The graph and the vectors as plain arrays (memory-mapped as they are on open; no
        faiss serialisation to parse and copy), with the walk's 8-bit codes."""
        nbr, off, cum, ep, maxl = self._graph()
        codes, step = self._codes()
        if self._index is None:
            lev, probas, ef_s = self._file["levels"], self._file["assign_probas"], self._file["ef_search"]
        else:
            h = self._index.hnsw
            lev = _faiss_view(h.levels, np.int32)
            probas = np.ascontiguousarray(faiss.vector_to_array(h.assign_probas), dtype=np.float64)
            ef_s = int(h.efSearch)
        config = {"dim": self.dim, "metric": self.metric, "M": self.M, "ef_construction": self.ef_construction,
                  "entry_point": int(ep), "max_level": int(maxl), "ef_search": int(ef_s)}
        arrays = {"ids": self._idmap.ids, "vectors": self.vectors, "neighbors": nbr, "offsets": off, "levels": lev,
                  "cum_nneighbor_per_level": cum, "assign_probas": probas, "codes": codes, "code_step": step}
        self._tomb_state(config, arrays)
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "HNSWIndex":
        idx = cls(int(config["dim"]), config["metric"], M=int(config["M"]), ef_construction=int(config["ef_construction"]))
        if "faiss_index" not in arrays:  # the array layout: nothing copied, faiss built on first need
            n = arrays["ids"].shape[0]
            idx._index = None
            idx._file = {"vectors": arrays["vectors"], "neighbors": arrays["neighbors"], "offsets": arrays["offsets"],
                         "levels": arrays["levels"], "cum_nneighbor_per_level": arrays["cum_nneighbor_per_level"],
                         "assign_probas": arrays["assign_probas"], "entry_point": int(config["entry_point"]),
                         "max_level": int(config["max_level"]), "ef_search": int(config["ef_search"])}
            if "codes" in arrays:
                idx._file.update(codes=arrays["codes"], code_step=arrays["code_step"])
            idx._n = n
            idx._idmap = IdMap(arrays["ids"])
            idx._tomb_load(config, arrays)
            return idx
        fi = faiss.deserialize_index(np.ascontiguousarray(arrays["faiss_index"], dtype=np.uint8))
        if fi.d != idx.dim or fi.ntotal != arrays["ids"].shape[0]:
            raise ValueError(f"faiss index (d={fi.d}, n={fi.ntotal}) does not match dim {idx.dim} / {arrays['ids'].shape[0]} ids")
        idx._index = fi
        idx._n = int(fi.ntotal)
        idx._idmap = IdMap(arrays["ids"])
        idx._tomb_load(config, arrays)
        return idx

    def __repr__(self) -> str:
        return f"HNSWIndex(dim={self.dim}, metric={self.metric!r}, M={self.M}, ef_construction={self.ef_construction}, ntotal={self.ntotal})"


def _shared_selector(cf: CompiledFilter, n: int) -> tuple[faiss.IDSelector, tuple[Any, ...]]:
    """faiss selector of a shared compiled filter: a range for a contiguous run, a hash
    set for very few rows, else a bitmap (the compiled filter's own, cached)."""
    run = cf.run
    if run is not None and run[1] > run[0]:
        return faiss.IDSelectorRange(run[0], run[1]), ()
    if cf.count * BATCH_SELECTOR_RATIO < n:
        return faiss_selector(cf.rows, n)
    bm = cf.bitmap64().view(np.uint8)
    return faiss.IDSelectorBitmap(bm), (bm,)


def _result(idmap: IdMap, rows: np.ndarray, scores: np.ndarray) -> SearchResult:
    rows = np.where(np.isfinite(scores), rows, -1)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32, copy=False)
    return SearchResult(idmap.to_ids(rows), scores, (rows >= 0).sum(axis=1).astype(np.int64))
