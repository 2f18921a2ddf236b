"""``SeismicIndex``: a blocked inverted index for learned sparse vectors, with filters.

Algorithm and parameter names: Bruch, Nardini, Rulli, Venturini, "Efficient Inverted
Indexes for Approximate Retrieval over Learned Sparse Representations" (SIGIR 2024),
reference implementation TusKANNy/seismic (PyPI ``pyseismic-lsr``).

Build (settings fixed at construction and saved with the index):

1. **Static pruning** — the ``vocab * n_postings`` largest entries of the whole
   collection are kept (so ``n_postings`` is the average posting-list length, Seismic's
   ``GlobalThreshold``); each list then keeps at most ``max_fraction * n_postings``
   of its largest entries.
2. **Blocking** — each pruned list is clustered: ``centroid_fraction * len`` random
   documents of the list are centroids; every document joins the centroid of largest
   inner product, computed with the document's ``doc_cut`` largest components against
   the centroids' full vectors; clusters of at most ``min_cluster_size`` documents are
   dissolved and their documents reassigned. One block per cluster.
3. **Summaries** — per block, the coordinate-wise maximum of its documents, keeping the
   largest components until they hold ``summary_energy`` of its L1 mass, quantised to
   8 bits with a per-summary scale and minimum.
4. **Forward index** — every document in CSR form (uint16 components when the
   vocabulary fits, float32 weights) for exact scoring.

Search (settings are keyword arguments of :meth:`SeismicIndex.search`): the
``query_cut`` largest query terms open their lists; all block summaries of a list are
scored against the full query at once; a block is skipped when
``summary·q < heap_factor × (k-th best score so far)``; the documents of the other
blocks are scored exactly from the forward index, each at most once per query. With
``first_sorted`` the blocks of the first list are visited in decreasing summary score.

Beyond the reference: filters (shared or per query; excluded documents are never
scored or returned; blocks holding no allowed document are skipped; a filter allowing
at most ``filter_exact_max`` documents is answered exactly from the forward index),
insertion after the build (new documents are scored exactly until they exceed
``rebuild_fraction`` of the indexed ones, then the lists are rebuilt), save/load with
memory mapping.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any

import numba
import numpy as np

from gsu._validate import as_ids, check_k, check_positive_int
from gsu.index import _seismic_kernels as _sk
from gsu.index.base import Index, SearchResult, register_index
from gsu.index.filters import Filter, IdMap
from gsu.index.sparse_flat import SparseRows, as_csr

log = logging.getLogger(__name__)

__all__ = ["SeismicIndex", "default_filter_exact_max"]

_EMPTY_U8 = np.zeros(0, np.uint8)
_EMPTY_I64 = np.zeros(0, np.int64)
_ZERO2_I64 = np.zeros(2, np.int64)
_CHUNK_ENTRIES = 8_000_000  # bound on the temporary summary buffer of one build chunk
_STAMP_LIMIT = 2**31 - 2


def default_filter_exact_max(n: int) -> int:
    """Default ``filter_exact_max``: filters allowing at most this many of ``n`` documents are answered exactly.

    ``max(4096, n // 50)`` — 2 % of the collection, at least 4,096 documents. Exact
    scoring costs one forward-index dot product per allowed document and has recall
    1.0; the blocked search loses recall when few documents are allowed, because the
    best allowed documents then lie far down the posting lists. Measured on the 100k
    SPLADE-like set (query_cut=10, heap_factor=0.7, one thread): at 1 % random
    selectivity exact 0.27 ms/query recall 1.0 vs blocked 0.25 ms recall 0.74; at 10 %
    exact 6.1 ms recall 1.0 vs blocked 0.64 ms recall 0.97.
    """
    return max(4096, n // 50)


def _check_fraction(value: Any, *, name: str, lo: float, hi: float, lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise ValueError(f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return v


@register_index("seismic")
class SeismicIndex(Index):
    """Seismic blocked inverted index over non-negative sparse vectors (inner product).

    Args:
        dim: vocabulary size (number of components).
        n_postings: average number of postings kept per list by static pruning
            (Seismic ``n_postings``; the total budget is ``dim * n_postings``). Larger:
            better recall, bigger index, slower build. Set it to at least the average
            list length (``nnz / dim``) to prune little; ``>= nnz`` disables pruning.
        max_fraction: a list keeps at most ``max_fraction * n_postings`` entries
            (Seismic ``max_fraction``; the reference's guide suggests 1.5 to 6).
        centroid_fraction: centroids (hence blocks) per list as a fraction of its length
            (Seismic ``centroid_fraction``, 0.05 to 0.2). More blocks: tighter summaries,
            more summary work per query, bigger index.
        min_cluster_size: clusters with at most this many documents are dissolved and
            their documents reassigned (Seismic ``min_cluster_size``, as in the
            reference implementation).
        summary_energy: fraction of a block summary's L1 mass kept (Seismic
            ``summary_energy``, 0.4 to 0.6; 1.0 keeps the exact coordinate-wise max).
        doc_cut: number of a document's largest components used to assign it to a
            centroid during the build (Seismic ``doc_cut``).
        seed: seed of the random centroid choice.
        rebuild_fraction: documents added after the build are scored exactly by every
            query until they exceed this fraction of the indexed documents; then the
            posting lists are rebuilt over all documents.
        value_dtype: storage of the forward index weights: ``"float32"`` (exact
            weights; the default) or ``"float16"`` (as the reference implementation
            stores them: half the forward-index memory and faster scoring; weights
            must be <= 65504, weights below 6e-8 round to zero and are dropped with a
            warning; scores then carry float16 rounding, about 1e-3 relative).

    Weights must be non-negative (the block bounds assume it). Documents with no
    component are stored but can never be returned (a warning is logged; see
    :attr:`n_empty`). Queries may be empty (no result). Only documents with a positive
    score are returned.
    """

    def __init__(
        self,
        dim: int,
        *,
        n_postings: int = 3500,
        max_fraction: float = 1.5,
        centroid_fraction: float = 0.1,
        min_cluster_size: int = 2,
        summary_energy: float = 0.4,
        doc_cut: int = 15,
        seed: int = 0,
        rebuild_fraction: float = 0.1,
        value_dtype: str = "float32",
    ):
        self.dim = check_positive_int(dim, name="dim")
        self.n_postings = check_positive_int(n_postings, name="n_postings")
        self.max_fraction = _check_fraction(max_fraction, name="max_fraction", lo=0.0, hi=1e9)
        if int(np.float32(self.n_postings) * np.float32(self.max_fraction)) < 1:
            raise ValueError(f"n_postings * max_fraction must be >= 1, got {self.n_postings} * {self.max_fraction}")
        self.centroid_fraction = _check_fraction(centroid_fraction, name="centroid_fraction", lo=0.0, hi=1.0)
        self.min_cluster_size = check_positive_int(min_cluster_size, name="min_cluster_size", minimum=0)
        self.summary_energy = _check_fraction(summary_energy, name="summary_energy", lo=0.0, hi=1.0)
        self.doc_cut = check_positive_int(doc_cut, name="doc_cut")
        self.seed = check_positive_int(seed, name="seed", minimum=0)
        self.rebuild_fraction = _check_fraction(rebuild_fraction, name="rebuild_fraction", lo=0.0, hi=1e9, lo_open=False)
        if value_dtype not in ("float16", "float32"):
            raise ValueError(f"value_dtype: expected 'float16' or 'float32', got {value_dtype!r}")
        self.value_dtype = value_dtype
        self._val_dtype = np.uint16 if value_dtype == "float16" else np.float32
        self._comp_dtype = np.uint16 if self.dim <= 65536 else np.int32
        self._set_empty()
        self._lock = threading.Lock()
        self._scratch: dict[str, Any] = {}

    # -- layout ------------------------------------------------------------
    _ARRAYS = (
        "fwd_indptr", "fwd_comps", "fwd_vals",
        "list_blk", "blk_ptr", "post_docs", "blk_scale", "blk_min",
        "ls_ptr", "inv_comp", "inv_blk", "inv_code",
    )

    def _set_empty(self) -> None:
        cd = self._comp_dtype
        self._a: dict[str, np.ndarray] = {
            "fwd_indptr": np.zeros(1, np.int64),
            "fwd_comps": np.zeros(0, cd),
            "fwd_vals": np.zeros(0, self._val_dtype),
        }
        self._set_empty_lists()
        self._n_indexed = 0
        self._idmap = IdMap(np.zeros(0, np.int64))

    def _set_empty_lists(self) -> None:
        cd = self._comp_dtype
        self._a.update(
            list_blk=np.zeros(self.dim + 1, np.int64),
            blk_ptr=np.zeros(1, np.int64),
            post_docs=np.zeros(0, np.int32),
            blk_scale=np.zeros(0, np.float32),
            blk_min=np.zeros(0, np.float32),
            ls_ptr=np.zeros(self.dim + 1, np.int64),
            inv_comp=np.zeros(0, cd),
            inv_blk=np.zeros(0, np.uint8),
            inv_code=np.zeros(0, np.uint8),
        )
        self._max_blocks = 0

    # -- properties --------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._a["fwd_indptr"].shape[0] - 1)

    @property
    def n_indexed(self) -> int:
        """Documents covered by the posting lists; the rest (added later) are scored exactly."""
        return int(self._n_indexed)

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 external ids in row order."""
        return self._idmap.ids

    @property
    def idmap(self) -> IdMap:
        return self._idmap

    @property
    def n_empty(self) -> int:
        """Number of stored documents without components (never returned)."""
        return int(np.count_nonzero(np.diff(self._a["fwd_indptr"]) == 0))

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays (forward index, posting lists, summaries, ids)."""
        return int(sum(a.nbytes for a in self._a.values()) + self._idmap.ids.nbytes)

    def stats(self) -> dict[str, Any]:
        """Sizes of the structure: postings, blocks, summary entries, bytes per part."""
        a = self._a
        return {
            "n_docs": self.ntotal,
            "n_indexed": self.n_indexed,
            "nnz": int(a["fwd_vals"].shape[0]),
            "n_postings_kept": int(a["post_docs"].shape[0]),
            "n_blocks": int(a["blk_scale"].shape[0]),
            "n_summary_entries": int(a["inv_code"].shape[0]),
            "max_blocks_per_list": int(self._max_blocks),
            "bytes_forward": int(a["fwd_indptr"].nbytes + a["fwd_comps"].nbytes + a["fwd_vals"].nbytes),
            "bytes_postings": int(a["list_blk"].nbytes + a["blk_ptr"].nbytes + a["post_docs"].nbytes),
            "bytes_summaries": int(sum(a[x].nbytes for x in ("blk_scale", "blk_min", "ls_ptr", "inv_comp", "inv_blk", "inv_code"))),
            "bytes_total": self.nbytes,
        }

    # -- construction ------------------------------------------------------
    @classmethod
    def build(cls, vectors: Any, *, ids: Any = None, dim: int | None = None, **settings: Any) -> "SeismicIndex":
        """Build an index over ``vectors`` (n, dim) sparse in one call (``dim`` defaults to its columns)."""
        if dim is None:
            shape = getattr(vectors, "shape", None)
            if shape is None or len(shape) != 2:
                raise ValueError("build: pass dim= or a 2-D matrix whose columns give the vocabulary size")
            dim = int(shape[1])
        idx = cls(dim, **settings)
        idx.add(vectors, ids)
        return idx

    @classmethod
    def from_file(cls, path: str | os.PathLike, **settings: Any) -> "SeismicIndex":
        """Build from a sparse file read by :func:`gsu.datasets.read_sparse` (CSR ``.npz`` or
        Seismic JSON lines ``{"id", "vector": {token: weight}}``); ids come from the file.

        For JSON lines the token-to-column vocabulary is built from the file in order of
        first appearance; queries must use the same columns (read them with
        :func:`gsu.datasets.io.read_sparse_jsonl` and keep its vocabulary, as ``gsu build``
        does)."""
        from gsu.datasets import read_sparse

        matrix, ids = read_sparse(path)
        ids_arr = np.asarray(ids)
        if ids_arr.dtype.kind not in "iu":
            log.info("%s: non-integer document ids; using row numbers 0..n-1 as ids", path)
            ids_arr = None
        return cls.build(matrix, ids=ids_arr, **settings)

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append sparse ``vectors`` (n, dim), non-negative, with external ``ids`` (n,) int64.

        The first call builds the posting lists. Later calls append to the forward index;
        those documents are scored exactly by every query until they exceed
        ``rebuild_fraction`` of the indexed documents, which triggers a rebuild.
        """
        rows = as_csr(vectors, name="vectors", dim=self.dim, allow_negative=False)
        if ids is None:
            new_ids = np.arange(self.ntotal, self.ntotal + rows.n, dtype=np.int64)
        else:
            new_ids = as_ids(ids, name="ids", n=rows.n, unique=True)
        if self.ntotal and np.any(self._idmap.contains(new_ids)):
            raise ValueError("ids: some ids are already in the index")
        if self.ntotal + rows.n >= 2**31 - 1:
            raise ValueError(f"too many documents: at most {2**31 - 2} per index")
        rows, stored = self._encode_values(rows)
        n_empty = int(np.count_nonzero(np.diff(rows.indptr) == 0))
        if n_empty:
            log.warning("%d of %d added documents have no components: they can never be returned", n_empty, rows.n)
        a = self._a
        a["fwd_indptr"] = np.concatenate([a["fwd_indptr"], rows.indptr[1:] + a["fwd_indptr"][-1]])
        a["fwd_comps"] = np.concatenate([a["fwd_comps"], rows.indices.astype(self._comp_dtype)])
        a["fwd_vals"] = np.concatenate([a["fwd_vals"], stored])
        self._idmap = IdMap(np.concatenate([self._idmap.ids, new_ids]))
        self._scratch = {}
        delta = self.ntotal - self._n_indexed
        if self._n_indexed == 0 or delta > self.rebuild_fraction * self._n_indexed:
            self.rebuild()

    def _encode_values(self, rows: SparseRows) -> tuple[SparseRows, np.ndarray]:
        """Weights in storage form (float32, or float16 bits as uint16); drops float16 underflows."""
        if self.value_dtype == "float32":
            return rows, rows.data
        big = rows.data > 65504.0
        if np.any(big):
            r = int(np.searchsorted(rows.indptr, int(np.flatnonzero(big)[0]), side="right") - 1)
            raise ValueError(
                f"vectors: row {r} has a weight {float(rows.data[big][0])!r} above the float16 range (65504); "
                "rescale the vectors or use value_dtype='float32'"
            )
        half = rows.data.astype(np.float16)
        zero = half == 0
        if np.any(zero):
            log.warning("%d weights below the float16 range (6e-8) were dropped", int(zero.sum()))
            keep = ~zero
            cs = np.zeros(keep.shape[0] + 1, np.int64)
            np.cumsum(keep, out=cs[1:])
            rows = SparseRows(cs[rows.indptr], rows.indices[keep], rows.data[keep], rows.dim)
            half = half[keep]
        return rows, half.view(np.uint16)

    def _values_f32(self) -> np.ndarray:
        v = self._a["fwd_vals"]
        return v.view(np.float16).astype(np.float32) if v.dtype == np.uint16 else v

    def rebuild(self) -> None:
        """(Re)build the posting lists, blocks and summaries over every stored document."""
        a = self._a
        n = self.ntotal
        if n == 0:
            self._set_empty_lists()
            self._n_indexed = 0
            return
        indptr, comps, vals = a["fwd_indptr"], a["fwd_comps"], self._values_f32()
        nnz = int(vals.shape[0])
        budget = self.dim * self.n_postings
        if budget >= nnz:
            thr, n_eq = np.float32(-np.inf), 0
        else:
            kth = nnz - budget
            thr = np.float32(np.partition(vals, kth)[kth])
            n_eq = budget - int(np.count_nonzero(vals > thr))
        cap = int(np.float32(self.n_postings) * np.float32(self.max_fraction))
        list_ptr, list_docs = _sk.prune_lists(indptr, comps, vals, self.dim, thr, n_eq, cap, 0)
        lens = np.diff(list_ptr)
        n_cent = np.maximum(1, (np.float32(self.centroid_fraction) * lens.astype(np.float32)).astype(np.int64))
        n_cent[lens == 0] = 0
        if n_cent.size and int(n_cent.max()) > 65535:
            raise ValueError(
                f"a posting list would get {int(n_cent.max())} blocks (at most 65535): "
                "decrease centroid_fraction or n_postings * max_fraction"
            )
        dc_comps, dc_vals, dc_lens = _sk.doc_top_components(indptr, comps, vals, self.doc_cut, np.arange(n, dtype=np.int64))
        dc_row = np.arange(n, dtype=np.int64)
        lists = np.flatnonzero(lens).astype(np.int64)
        bounds = _sk.list_entry_bounds(list_ptr, list_docs, indptr, lists)
        n_threads = max(1, numba.get_num_threads())
        vocab = self.dim
        s_cstamp = np.zeros((n_threads, vocab), np.int64)
        s_coff = np.zeros((n_threads, vocab), np.int64)
        s_ccnt = np.zeros((n_threads, vocab), np.int64)
        s_maxv = np.zeros((n_threads, vocab), np.float32)
        parts: list[tuple[np.ndarray, ...]] = []
        counts_all = np.zeros((lists.shape[0], 2), np.int64)
        start = 0
        cum = np.cumsum(bounds)
        while start < lists.shape[0]:
            base_cum = cum[start - 1] if start else 0
            stop = int(np.searchsorted(cum, base_cum + _CHUNK_ENTRIES, side="right"))
            stop = max(stop, start + 1)
            ch = lists[start:stop]
            slots = n_cent[ch] + 1
            slot_off = np.zeros(ch.shape[0], np.int64)
            np.cumsum(slots[:-1], out=slot_off[1:])
            ent_off = np.zeros(ch.shape[0], np.int64)
            np.cumsum(bounds[start : stop - 1], out=ent_off[1:])
            n_slots = int(slots.sum())
            n_ent = int(bounds[start:stop].sum())
            o_blk_start = np.empty(n_slots, np.int64)
            o_scale = np.empty(n_slots, np.float32)
            o_min = np.empty(n_slots, np.float32)
            o_bcnt = np.empty(n_slots, np.int64)
            o_comp = np.empty(n_ent, np.int64)
            o_code = np.empty(n_ent, np.uint8)
            o_counts = np.zeros((ch.shape[0], 2), np.int64)
            _sk.build_lists_chunk(
                ch, list_ptr, list_docs, indptr, comps, vals, dc_comps, dc_vals, dc_lens, dc_row,
                self.centroid_fraction, self.min_cluster_size, self.summary_energy, self.seed,
                min(n_threads, ch.shape[0]),
                s_cstamp, s_coff, s_ccnt, s_maxv,
                slot_off, ent_off, int(lens[ch].max()),
                o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code, o_counts,
            )
            parts.append(_sk.compact_chunk(ch, list_ptr, o_counts, slot_off, ent_off, o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code))
            counts_all[start:stop] = o_counts
            start = stop
        nblk = np.zeros(vocab, np.int64)
        nblk[lists] = counts_all[:, 0]
        list_blk = np.zeros(vocab + 1, np.int64)
        np.cumsum(nblk, out=list_blk[1:])

        def cat(i: int, dtype: Any) -> np.ndarray:
            return np.concatenate([p[i] for p in parts]).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        blk_ptr = np.concatenate([cat(0, np.int64), np.array([list_ptr[-1]], np.int64)])
        bcnt = cat(3, np.int64)
        sum_ptr = np.zeros(bcnt.shape[0] + 1, np.int64)
        np.cumsum(bcnt, out=sum_ptr[1:])
        max_blocks = int(nblk.max()) if vocab else 0
        ls_ptr, inv_comp, inv_blk, inv_code = _sk.invert_summaries(
            list_blk, sum_ptr, cat(4, self._comp_dtype), cat(5, np.uint8), vocab,
            np.uint8 if max_blocks <= 256 else np.uint16,
        )
        a.update(
            list_blk=list_blk,
            blk_ptr=blk_ptr,
            post_docs=list_docs,
            blk_scale=cat(1, np.float32),
            blk_min=cat(2, np.float32),
            ls_ptr=ls_ptr,
            inv_comp=inv_comp,
            inv_blk=inv_blk,
            inv_code=inv_code,
        )
        self._max_blocks = int(nblk.max()) if vocab else 0
        self._n_indexed = n
        self._scratch = {}
        log.debug("seismic build: %s", self.stats())

    # -- search ------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int,
        *,
        filter: Any = None,
        query_cut: int = 10,
        heap_factor: float = 0.7,
        first_sorted: bool = True,
        filter_exact_max: int | None = None,
        stats: dict | None = None,
    ) -> SearchResult:
        """Approximate top-``k`` documents by inner product for each query.

        Args:
            queries: (nq, dim) scipy sparse matrix (or dense array), non-negative
                weights; a 1-D dense vector is a batch of one. Empty rows return nothing.
            k: results per query.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared
                or one per query. Excluded documents are never scored or returned.
            query_cut: number of largest query terms whose posting lists are opened
                (Seismic ``query_cut``; 3 to 20). Larger: higher recall, slower.
            heap_factor: a block is skipped when its summary score is below
                ``heap_factor`` times the current k-th best score (Seismic
                ``heap_factor``, 0.5 to 1.0). Larger: more skipping, faster, lower recall.
            first_sorted: visit the first list's blocks in decreasing summary score
                (Seismic ``sorted``/``first_sorted``).
            filter_exact_max: a query whose filter allows at most this many documents
                is answered exactly by scoring those documents from the forward index
                (default :func:`default_filter_exact_max`); 0 disables it.
            stats: optional dict, filled with ``"scored"``: (nq,) int64 documents
                scored exactly per query.

        Returns:
            :class:`SearchResult`: ids (nq, k) int64 (-1 padded), scores (nq, k) float32
            (-inf padded), counts (nq,) int64.
        """
        q = as_csr(queries, name="queries", dim=self.dim, allow_negative=False)
        k = check_k(k)
        query_cut = check_positive_int(query_cut, name="query_cut")
        hf = _check_fraction(heap_factor, name="heap_factor", lo=0.0, hi=1e9, lo_open=False)
        n = self.ntotal
        if filter_exact_max is None:
            exact_max = default_filter_exact_max(n)
        else:
            exact_max = check_positive_int(filter_exact_max, name="filter_exact_max", minimum=0)
        nq = q.n
        if n == 0 or nq == 0:
            if stats is not None:
                stats["scored"] = np.zeros(nq, np.int64)
            return SearchResult.empty(nq, k)
        a = self._a
        mode = 0
        allowed = blk_ok = _EMPTY_U8
        f_indptr = _ZERO2_I64
        f_rows = _EMPTY_I64
        if filter is not None:
            f = Filter.coerce(filter)
            if not f.is_all:
                cf = f.compile(self._idmap, nq)
                f_rows = np.ascontiguousarray(cf.rows, dtype=np.int64)
                if cf.shared:
                    if f_rows.shape[0] < n:
                        mode = 1
                        f_indptr = np.array([0, f_rows.shape[0]], np.int64)
                        if f_rows.shape[0] > exact_max:
                            allowed = np.zeros(n, np.uint8)
                            allowed[f_rows] = 1
                            blk_ok = np.empty(a["blk_scale"].shape[0], np.uint8)
                            lists = _sk.lists_of_queries(q.indptr, q.indices, q.data, query_cut, self.dim)
                            _sk.block_any_allowed(lists, a["list_blk"], a["blk_ptr"], a["post_docs"], allowed, blk_ok)
                else:
                    mode = 2
                    f_indptr = np.ascontiguousarray(cf.indptr, dtype=np.int64)
        out_r = np.empty((nq, k), np.int64)
        out_s = np.empty((nq, k), np.float32)
        counts = np.empty(nq, np.int64)
        scored = np.empty(nq, np.int64)
        # one query: serial kernel, no thread-pool query (lean single-query path)
        n_threads = 1 if nq == 1 else min(numba.get_num_threads(), nq)
        kernel = _sk.search_serial if n_threads <= 1 else _sk.search_parallel
        with self._lock:
            qd, vst, ast, base = self._get_scratch(max(n_threads, 1), nq, need_allowed=mode == 2)
            kernel(
                q.indptr, q.indices, q.data, k, query_cut, np.float32(hf), bool(first_sorted),
                a["fwd_indptr"], a["fwd_comps"], a["fwd_vals"],
                a["list_blk"], a["blk_ptr"], a["post_docs"], a["blk_scale"], a["blk_min"],
                a["ls_ptr"], a["inv_comp"], a["inv_blk"], a["inv_code"],
                self._n_indexed, mode, allowed, blk_ok, f_indptr, f_rows, exact_max,
                max(n_threads, 1), qd, vst, ast, base, max(self._max_blocks, 1),
                out_r, out_s, counts, scored,
            )
        if stats is not None:
            stats["scored"] = scored
        ids = out_r if self._idmap.identity else self._idmap.to_ids(out_r)
        return SearchResult(ids, out_s, counts)

    def _get_scratch(self, n_threads: int, nq: int, *, need_allowed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Per-thread scratch kept between calls: dense query rows and visited/allowed stamps."""
        s = self._scratch
        n = self.ntotal
        if s.get("threads", 0) < n_threads:
            s.clear()
            s["threads"] = n_threads
            s["qdense"] = np.zeros((n_threads, self.dim), np.float32)
            s["vstamp"] = np.zeros((n_threads, n), np.int32)
            s["astamp"] = np.zeros((n_threads, 0), np.int32)
            s["stamp"] = 0
        if need_allowed and s["astamp"].shape[1] != n:
            s["astamp"] = np.zeros((s["threads"], n), np.int32)
        base = s["stamp"]
        if base + nq + 1 >= _STAMP_LIMIT:
            s["vstamp"][:] = 0
            s["astamp"][:] = 0
            base = 0
        s["stamp"] = base + nq
        return s["qdense"], s["vstamp"], s["astamp"], base

    # -- persistence -------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "n_postings": self.n_postings,
            "max_fraction": self.max_fraction,
            "centroid_fraction": self.centroid_fraction,
            "min_cluster_size": self.min_cluster_size,
            "summary_energy": self.summary_energy,
            "doc_cut": self.doc_cut,
            "seed": self.seed,
            "rebuild_fraction": self.rebuild_fraction,
            "value_dtype": self.value_dtype,
        }

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = self._config()
        config["n_indexed"] = int(self._n_indexed)
        config["max_blocks"] = int(self._max_blocks)
        arrays = {name: self._a[name] for name in self._ARRAYS}
        arrays["ids"] = self._idmap.ids
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SeismicIndex":
        settings = {k: config[k] for k in ("n_postings", "max_fraction", "centroid_fraction", "min_cluster_size", "summary_energy", "doc_cut", "seed", "rebuild_fraction", "value_dtype")}
        idx = cls(int(config["dim"]), **settings)
        cd = idx._comp_dtype
        expect = {
            "fwd_indptr": np.int64, "fwd_comps": cd, "fwd_vals": idx._val_dtype,
            "list_blk": np.int64, "blk_ptr": np.int64, "post_docs": np.int32, "blk_scale": np.float32, "blk_min": np.float32,
            "ls_ptr": np.int64, "inv_comp": cd, "inv_code": np.uint8,
        }
        for name, dt in expect.items():
            arr = arrays[name]
            if arr.dtype != np.dtype(dt) or arr.ndim != 1:
                raise ValueError(f"array {name!r} has dtype {arr.dtype} / {arr.ndim} dims, expected 1-D {np.dtype(dt)}")
        n = arrays["fwd_indptr"].shape[0] - 1
        v = idx.dim
        n_blocks = arrays["blk_scale"].shape[0]
        checks = [
            (n >= 0 and int(arrays["fwd_indptr"][-1]) == arrays["fwd_comps"].shape[0] == arrays["fwd_vals"].shape[0], "forward index"),
            (arrays["ids"].shape == (n,), "ids"),
            (arrays["list_blk"].shape == (v + 1,) and int(arrays["list_blk"][-1]) == n_blocks, "list_blk"),
            (arrays["blk_ptr"].shape == (n_blocks + 1,) and int(arrays["blk_ptr"][-1]) == arrays["post_docs"].shape[0], "blk_ptr"),
            (arrays["blk_min"].shape == (n_blocks,), "blk_min"),
            (arrays["ls_ptr"].shape == (v + 1,)
             and int(arrays["ls_ptr"][-1]) == arrays["inv_comp"].shape[0] == arrays["inv_blk"].shape[0] == arrays["inv_code"].shape[0], "ls_ptr"),
            (arrays["inv_blk"].dtype in (np.dtype(np.uint8), np.dtype(np.uint16)) and arrays["inv_blk"].ndim == 1, "inv_blk dtype"),
            (0 <= int(config["n_indexed"]) <= n, "n_indexed"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"inconsistent arrays ({what})")
        idx._a = {name: arrays[name] for name in cls._ARRAYS}
        idx._idmap = IdMap(arrays["ids"])
        idx._n_indexed = int(config["n_indexed"])
        idx._max_blocks = int(config["max_blocks"])
        return idx

    def __repr__(self) -> str:
        return (
            f"SeismicIndex(dim={self.dim}, ntotal={self.ntotal}, n_postings={self.n_postings}, "
            f"centroid_fraction={self.centroid_fraction}, summary_energy={self.summary_energy})"
        )
