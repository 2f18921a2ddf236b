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
scored or returned; blocks holding no allowed document are skipped; by the filter's
selectivity, the calibrated filter plan (:meth:`SeismicIndex.filter_plan`) answers it
exactly from the forward index or by the blocked search at settings measured to reach
the target under such filters; uncalibrated, a filter allowing at most
``filter_exact_max`` documents is answered exactly),
insertion after the build (new documents are scored exactly until they exceed
``rebuild_fraction`` of the indexed ones, then the lists are rebuilt), save/load with
memory mapping.
"""

from __future__ import annotations

import logging
import math
import sys
import bisect
import dataclasses
import functools
import threading
from _thread import get_ident
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from gsu._rwlock import _GIL
from gsu._validate import check_k, check_positive_int
from gsu.errors import FieldError
from gsu.index import _seismic_kernels as _sk
from gsu.index._direct import direct_entry
from gsu.index._mutable import MutableIndex
from gsu.index.base import _LIMITS, _NO_K, _SLOT, register_index
from gsu.index.planner import recall_low
from gsu.index.result import SearchResult
from gsu.index.filters import IdMap
from gsu.index.sparse_flat import SparseRows, as_csr

log = logging.getLogger(__name__)

__all__ = ["SeismicIndex", "SeismicSettings", "default_filter_exact_max"]

_EMPTY_U8 = np.zeros(0, np.uint8)
_I32 = np.dtype(np.int32)
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_CSR_M = sp.csr_matrix
_empty = np.empty
_new = object.__new__
_CSR_A = getattr(sp, "csr_array", sp.csr_matrix)
#: the keywords of a search that the lean path takes (the operating point's), with the types
#: of value that take the lean path's cache (others are checked on the general path)
_INTS = frozenset((int, np.int64, np.int32))
_FLOATS = frozenset((float, np.float64, np.float32))
_BOOLS = frozenset((bool, np.bool_))


def _kernel_rows(indptr: np.ndarray, comps: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query CSR arrays in the one form the search kernels are compiled for (int64
    ``indptr``, int32 component ids, float32 values, writable): any other combination
    (SciPy picks int32 or int64 indices by size; a request body is read-only) would
    compile another specialisation of each kernel, ~10 s serial and ~30 s parallel,
    on its first search. Arrays already in that form pass without a copy."""
    if indptr.dtype != np.int64 or not indptr.flags.writeable:
        indptr = indptr.astype(np.int64)
    if comps.dtype != np.int32 or not comps.flags.writeable:
        comps = comps.astype(np.int32)
    if vals.dtype != np.float32 or not vals.flags.writeable:
        vals = vals.astype(np.float32)
    return indptr, comps, vals
_EMPTY_I64 = np.zeros(0, np.int64)
_ZERO2_I64 = np.zeros(2, np.int64)
_CHUNK_ENTRIES = 8_000_000  # bound on the temporary summary buffer of one build chunk
_AUTO_CALIBRATION_SECONDS = 60.0  # budget of the calibration that follows every build


#: selectivities of the filtered calibration (:meth:`SeismicIndex._calibrate_filtered`), ascending
FILTER_BANDS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: calibration queries measured under filters (the first of the sample), and at a wide
#: selectivity at least ``_FILTER_MIN_QUERIES`` while their filters hold ``_FILTER_ROWS`` rows
_FILTER_QUERIES = 400
_FILTER_MIN_QUERIES = 100
_FILTER_ROWS = 1 << 24
#: the blocked route's ladder at a selectivity climbs until a point's lower bound reaches this
#: (the highest target a filtered search is then planned for from measurements)
_FILTER_HI = 0.99


def _filter_ladder(qc0: int, hf0: float, qcs: list[int], hfs: list[float]) -> list[tuple[int, float]]:
    """The filtered calibration's staircase from ``(qc0, hf0)``: each step the next larger
    ``query_cut`` of ``qcs`` (ascending), every second step also the next smaller
    ``heap_factor`` of ``hfs`` (descending: smaller prunes less), until both ends are
    reached."""
    qi = next((i for i, x in enumerate(qcs) if x >= qc0), len(qcs) - 1)
    hi = next((i for i, x in enumerate(hfs) if x <= hf0), len(hfs) - 1)
    out = [(qc0, hf0)]
    step = 0
    while qi < len(qcs) - 1 or hi < len(hfs) - 1:
        step += 1
        qi = min(qi + 1, len(qcs) - 1)
        if step % 2 == 0 or qi == len(qcs) - 1:
            hi = min(hi + 1, len(hfs) - 1)
        pt = (int(qcs[qi]), float(hfs[hi]))
        if pt != out[-1]:
            out.append(pt)
    return out


def default_filter_exact_max(n: int) -> int:
    """Default ``filter_exact_max`` of an index without a filtered calibration (a calibrated
    one plans filtered searches by :meth:`SeismicIndex.filter_plan`): filters allowing at
    most this many of ``n`` documents are answered exactly.

    ``max(4096, n // 50)`` — 2 % of the collection, at least 4,096 documents. Exact
    scoring costs one forward-index dot product per allowed document and has recall
    1.0; the blocked search loses recall when few documents are allowed, because the
    best allowed documents then lie far down the posting lists. Measured on the 100k
    SPLADE-like set (query_cut=10, heap_factor=0.7, one thread): at 1 % random
    selectivity exact 0.27 ms/query recall 1.0 vs blocked 0.25 ms recall 0.74; at 10 %
    exact 6.1 ms recall 1.0 vs blocked 0.64 ms recall 0.97.
    """
    return max(4096, n // 50)


@dataclass(frozen=True)
class SeismicSettings:
    """The search settings of :class:`SeismicIndex`, checked once at construction.

    - ``query_cut``: number of largest query terms whose posting lists are opened
      (Seismic ``query_cut``; 3 to 20 typical). Larger: higher recall, slower.
    - ``heap_factor``: a block is skipped when its summary score is below ``heap_factor``
      times the current k-th best score (Seismic ``heap_factor``, 0.5 to 1.0 typical).
      Larger: more skipping, faster, lower recall.
    - ``first_sorted``: visit the first list's blocks in decreasing summary score.
    - ``filter_exact_max``: a query whose filter allows at most this many documents is
      answered exactly from the forward index, the others by the blocked search at
      ``query_cut``/``heap_factor`` (``None``: the calibrated filter plan,
      :meth:`SeismicIndex.filter_plan`, where the call names no ``settings``,
      ``query_cut`` or ``heap_factor``; else :func:`default_filter_exact_max` of the
      index size; 0 disables the exact route).

    An index holds its defaults (``SeismicIndex.search_settings``, saved with it); a
    calibrated index replaces ``query_cut``/``heap_factor`` by the operating point that
    reaches the target recall; one search may pass ``settings=`` or override single fields.
    """

    query_cut: int = 10
    heap_factor: float = 0.7
    first_sorted: bool = True
    filter_exact_max: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "query_cut", check_positive_int(self.query_cut, name="query_cut"))
        object.__setattr__(self, "heap_factor", float(_check_fraction(self.heap_factor, name="heap_factor", lo=0.0, hi=1e9,
                                                                      lo_open=False)))
        if not isinstance(self.first_sorted, (bool, np.bool_)):
            raise TypeError(f"first_sorted: expected True or False, got {self.first_sorted!r}")
        object.__setattr__(self, "first_sorted", bool(self.first_sorted))
        if self.filter_exact_max is not None:
            object.__setattr__(self, "filter_exact_max",
                               check_positive_int(self.filter_exact_max, name="filter_exact_max", minimum=0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "SeismicSettings":
        """Settings from :meth:`to_dict` output (a saved index's config); unknown keys are refused."""
        if not isinstance(d, dict):
            raise FieldError("config 'search_settings'", f"expected an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise FieldError("config 'search_settings'", f"unknown setting {unknown[0]!r}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise FieldError("config 'search_settings'", str(e)) from None


_N_STYLES = 4  # query styles of :meth:`SeismicIndex.sample_queries` (query i has style i % 4)
#: the keyword style whose terms are drawn with probability proportional to weight ** this
_TEMPERED = 0.5


def _progress_bar(*, total: int, desc: str, show: bool | None) -> Any:
    """A tqdm bar on stderr (``show=None``: only when stderr is a terminal)."""
    from tqdm.auto import tqdm

    if show is None:
        show = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(total=total, desc=desc, disable=not show, unit="", unit_scale=True, leave=False)


def _check_calibration(cal: Any) -> dict[str, Any] | None:
    """A calibration read from a file: ``None`` or the dict :meth:`SeismicIndex.calibrate` stores."""
    if cal is None:
        return None
    ok = isinstance(cal, dict) and isinstance(cal.get("points"), list) and isinstance(cal.get("target_recall"), (int, float)) \
        and isinstance(cal.get("grid", []), list)
    if ok:
        for p in cal["points"] + cal.get("grid", []):
            ok = ok and isinstance(p, list) and len(p) == 5 and isinstance(p[0], int) and p[0] >= 1 \
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in p) and p[1] >= 0
    fc = cal.get("filtered") if ok else None
    if fc is not None:
        bands = fc.get("bands") if isinstance(fc, dict) else None
        ok = isinstance(bands, list) and len(bands) > 0
        prev = 0.0
        for b in bands if ok else ():
            ok = ok and isinstance(b, list) and len(b) == 4 and isinstance(b[0], float) and prev < b[0] < 1 \
                and isinstance(b[1], int) and b[1] >= 1 and isinstance(b[2], (int, float)) and math.isfinite(b[2]) and b[2] >= 0 \
                and isinstance(b[3], list)
            if ok:
                prev = b[0]
                for p in b[3]:
                    ok = ok and isinstance(p, list) and len(p) == 5 and isinstance(p[0], int) and p[0] >= 1 \
                        and all(isinstance(x, (int, float)) and math.isfinite(x) for x in p) and p[1] >= 0
    if not ok or not 0 < float(cal["target_recall"]) <= 1:
        raise ValueError("inconsistent calibration record")
    return cal


def _check_fraction(value: Any, *, name: str, lo: float, hi: float, lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise ValueError(f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return v


_DEFAULT_SETTINGS = SeismicSettings()


@register_index("seismic")
class SeismicIndex(MutableIndex):
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
        auto_calibrate: after every (re)build, fit the default search settings to the
            data with :meth:`calibrate` (sampled queries, recall@10 target 0.95 or the
            previous calibration's target; time-bounded).
        progress: show a progress bar while building (``None``: only when stderr is a
            terminal). Not saved with the index.

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
        auto_calibrate: bool = True,
        progress: bool | None = None,
        search_settings: SeismicSettings | None = None,
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
        if not isinstance(auto_calibrate, bool):
            raise TypeError(f"auto_calibrate: expected True or False, got {auto_calibrate!r}")
        self.auto_calibrate = auto_calibrate
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress: expected True, False or None, got {progress!r}")
        self.progress = progress
        if search_settings is not None and not isinstance(search_settings, SeismicSettings):
            raise TypeError(f"search_settings: expected a SeismicSettings, got {type(search_settings).__name__}")
        self._search_settings = search_settings or _DEFAULT_SETTINGS
        self._val_dtype = np.uint16 if value_dtype == "float16" else np.float32
        self._comp_dtype = np.uint16 if self.dim <= 65536 else np.int32
        self._set_empty()
        self._lock = threading.Lock()
        self._view: Any = None
        self._view_threads = 0
        self._one: Any = None  # (its own view, entry point, scratch) of the one-row front (_one_entry)
        self._term_order = 0
        self._calibration: dict[str, Any] | None = None
        self._op_cache: dict[Any, SeismicSettings] = {}

    # -- layout ------------------------------------------------------------
    _ARRAYS = (
        "fwd_indptr", "fwd_comps", "fwd_vals",
        "list_blk", "blk_ptr", "post_docs", "list_max", "blk_scale", "blk_min",
        "sum_ent", "sum_bit", "sum_pack", "sum_start", "sum_dir", "sum_comp", "sum_bmp", "sum_bm", "sum_sptr", "sum_samp",
    )
    _SUMMARY_ARRAYS = _ARRAYS[9:]

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
        self._dead, self._n_dead = None, 0

    def _set_empty_lists(self) -> None:
        cd = self._comp_dtype
        self._a.update(
            list_blk=np.zeros(self.dim + 1, np.int64),
            blk_ptr=np.zeros(1, np.int64),
            post_docs=np.zeros(0, np.int32),
            list_max=np.zeros(self.dim, np.float32),
            blk_scale=np.zeros(0, np.float32),
            blk_min=np.zeros(0, np.float32),
            sum_ent=np.zeros(self.dim + 1, np.int64),
            sum_bit=np.zeros(self.dim + 1, np.int64),
            sum_pack=np.zeros(_sk._PAD_BYTES, np.uint8),
            sum_start=np.array([1] + [0] * (_sk._PAD_BYTES - 1), np.uint8),
            sum_dir=np.zeros(self.dim + 1, np.int64),
            sum_comp=np.zeros(0, cd),
            sum_bmp=np.zeros(self.dim + 1, np.int64),
            sum_bm=np.zeros(0, np.uint32),
            sum_sptr=np.zeros(self.dim + 1, np.int64),
            sum_samp=np.zeros(0, np.uint32),
        )
        self._max_blocks = 0
        self._n_summary_entries = 0

    # -- properties --------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._a["fwd_indptr"].shape[0] - 1)

    @property
    def n_indexed(self) -> int:
        """Documents covered by the posting lists; the rest (added later) are scored exactly."""
        return int(self._n_indexed)

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
            "n_summary_entries": int(self._n_summary_entries),
            "n_bitmap_lists": int(np.count_nonzero(np.diff(a["sum_bmp"]))),
            "max_blocks_per_list": int(self._max_blocks),
            "bytes_forward": int(a["fwd_indptr"].nbytes + a["fwd_comps"].nbytes + a["fwd_vals"].nbytes),
            "bytes_postings": int(a["list_blk"].nbytes + a["blk_ptr"].nbytes + a["post_docs"].nbytes),
            "bytes_summaries": int(sum(a[x].nbytes for x in ("blk_scale", "blk_min", *self._SUMMARY_ARRAYS))),
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

    def add(self, vectors: Any, ids: Any = None) -> None:
        """Append sparse ``vectors`` (n, dim), non-negative, with external ``ids`` (n,) int64.

        The first call builds the posting lists. Later calls append to the forward index;
        those documents are scored exactly by every query until they exceed
        ``rebuild_fraction`` of the indexed documents, which triggers a rebuild.
        """
        rows = as_csr(vectors, name="vectors", dim=self.dim, allow_negative=False)
        new_ids = self._new_ids(rows.n, ids)
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
        self._appended(new_ids)
        self._drop_view()
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
            self._drop_view()
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
        list_ptr, list_docs, list_max = _sk.prune_lists(indptr, comps, vals, self.dim, thr, n_eq, cap, 0)
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
        bar = _progress_bar(total=int(cum[-1]) if cum.size else 0, desc="seismic: blocks + summaries", show=self.progress)
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
            blk_start, scale, bmin, bcnt, s_comp, s_code = _sk.compact_chunk(
                ch, list_ptr, o_counts, slot_off, ent_off, o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code)
            del o_blk_start, o_scale, o_min, o_bcnt, o_comp, o_code
            parts.append((blk_start, scale, bmin, *self._encode_chunk(o_counts[:, 0], bcnt, s_comp, s_code, n_threads)))
            counts_all[start:stop] = o_counts
            start = stop
            bar.update(int(cum[stop - 1]) - bar.n)
        bar.close()
        nblk = np.zeros(vocab, np.int64)
        nblk[lists] = counts_all[:, 0]
        list_blk = np.zeros(vocab + 1, np.int64)
        np.cumsum(nblk, out=list_blk[1:])

        def cat(i: int, dtype: Any) -> np.ndarray:
            return np.concatenate([p[i] for p in parts]).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        sizes = np.zeros((vocab, 6), np.int64)
        if parts:
            sizes[lists] = np.concatenate([p[3] for p in parts])
        offs = {}
        for name, col in (("sum_ent", None), ("sum_bit", 2), ("sum_dir", 3), ("sum_bmp", 4), ("sum_sptr", 5)):
            o = np.zeros(vocab + 1, np.int64)
            np.cumsum((sizes[:, 0] + 7) // 8 * 8 if col is None else sizes[:, col], out=o[1:])
            offs[name] = o
        pad = np.zeros(_sk._PAD_BYTES, np.uint8)
        start_bits = np.concatenate([cat(5, np.uint8), pad])
        start_bits[int(offs["sum_ent"][-1]) >> 3] |= 1  # sentinel: a component start after the last entry
        a.update(
            list_blk=list_blk,
            blk_ptr=np.concatenate([cat(0, np.int64), np.array([list_ptr[-1]], np.int64)]),
            post_docs=list_docs,
            list_max=list_max,
            blk_scale=cat(1, np.float32),
            blk_min=cat(2, np.float32),
            sum_pack=np.concatenate([cat(4, np.uint8), pad]),
            sum_start=start_bits,
            sum_comp=cat(6, self._comp_dtype),
            sum_bm=cat(7, np.uint32),
            sum_samp=cat(8, np.uint32),
            **offs,
        )
        self._max_blocks = int(nblk.max()) if vocab else 0
        self._n_summary_entries = int(sizes[:, 0].sum())
        self._n_indexed = n
        self._drop_view()
        log.debug("seismic build: %s", self.stats())
        if self.auto_calibrate:
            prev = self._calibration
            self.calibrate(target_recall=prev["target_recall"] if prev else 0.95,
                           k=prev["k"] if prev else 10, max_seconds=_AUTO_CALIBRATION_SECONDS)

    def _encode_chunk(self, nblk: np.ndarray, bcnt: np.ndarray, s_comp: np.ndarray, s_code: np.ndarray,
                      n_threads: int) -> tuple[np.ndarray, ...]:
        """Compact summaries of a run of lists (blocks per list ``nblk``, block-major entries):
        ``(sizes, pack, start, comp, bitmap, samples)``, offsets local to the run."""
        lb = np.zeros(nblk.shape[0] + 1, np.int64)
        np.cumsum(nblk, out=lb[1:])
        sp_ = np.zeros(bcnt.shape[0] + 1, np.int64)
        np.cumsum(bcnt, out=sp_[1:])
        comp_bits = 8 * np.dtype(self._comp_dtype).itemsize
        sizes = _sk.summary_sizes(lb, sp_, s_comp, self.dim, n_threads, comp_bits)
        offs = []
        for col in (None, 2, 3, 4, 5):
            o = np.zeros(nblk.shape[0] + 1, np.int64)
            np.cumsum((sizes[:, 0] + 7) // 8 * 8 if col is None else sizes[:, col], out=o[1:])
            offs.append(o)
        o_pack = np.zeros(int(offs[1][-1]) // 8, np.uint8)
        o_start = np.zeros(int(offs[0][-1]) // 8, np.uint8)
        o_comp = np.zeros(int(offs[2][-1]), self._comp_dtype)
        o_bm = np.zeros(int(offs[3][-1]), np.uint32)
        o_samp = np.zeros(int(offs[4][-1]), np.uint32)
        _sk.summary_encode(lb, sp_, s_comp, s_code, self.dim, n_threads, sizes, *offs, o_pack, o_start, o_comp, o_bm, o_samp)
        return sizes, o_pack, o_start, o_comp, o_bm, o_samp

    # -- search ------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int,
        *,
        filter: Any = None,
        settings: SeismicSettings | None = None,
        query_cut: int | None = None,
        heap_factor: float | None = None,
        target_recall: float | None = None,
        first_sorted: bool | None = None,
        filter_exact_max: int | None = None,
        stats: dict | None = None,
    ) -> SearchResult:
        """Approximate top-``k`` documents by inner product for each query.

        Args:
            queries: (nq, dim) scipy sparse matrix (or dense array), non-negative
                weights; a 1-D dense vector is a batch of one. Empty rows return nothing.
            k: results per query.
            filter: a :class:`Filter` (or anything ``Filter.coerce`` accepts), shared
                or one per query. Excluded documents are never scored or returned. By
                default its route and settings follow the calibrated filter plan for its
                selectivity (:meth:`filter_plan`; per-query filters of several
                selectivities: the exact route up to the largest one planned exact, the
                strongest planned blocked settings for the rest).
            settings: a :class:`SeismicSettings` for this search (default: the
                calibrated operating point for ``target_recall``, else the index's
                ``search_settings``).
            query_cut, heap_factor, first_sorted, filter_exact_max: override one field
                of those settings (see :class:`SeismicSettings`).
            target_recall: pick the calibrated operating point reaching this recall
                (not with explicit ``query_cut``/``heap_factor``).
            stats: optional dict, filled with ``"scored"``: (nq,) int64 documents
                scored exactly per query.

        Returns:
            :class:`SearchResult`: ids (nq, k) int64 (-1 padded), scores (nq, k) float32
            (-inf padded), counts (nq,) int64.
        """
        if type(k) is not int or k < 1:
            k = check_k(k)
        if settings is None:
            st = self._call_settings(query_cut, heap_factor, target_recall, first_sorted, filter_exact_max)
        else:
            st = self._resolve(settings, query_cut, heap_factor, target_recall, first_sorted, filter_exact_max)
        qc, hf, first_sorted = st.query_cut, st.heap_factor, st.first_sorted
        n = self.ntotal
        tq = type(queries)
        if ((tq is sp.csr_matrix or tq is sp.csr_array) and queries.data.dtype == np.float32 and queries.shape[1] == self.dim
                and queries.indices.ndim == 1 and queries.data.ndim == 1 and queries.indptr.ndim == 1):
            # lean path (one query per call is the common case): the kernel checks the rows
            q_indptr, q_comps, q_vals = _kernel_rows(queries.indptr, queries.indices, queries.data)
        else:
            r = as_csr(queries, name="queries", dim=self.dim, allow_negative=False)
            q_indptr, q_comps, q_vals = _kernel_rows(r.indptr, r.indices, r.data)
        nq = q_indptr.shape[0] - 1
        if n == 0 or nq == 0:
            if nq == 0:
                as_csr(queries, name="queries", dim=self.dim, allow_negative=False)  # raises on an empty batch
            if stats is not None:
                stats["scored"] = np.zeros(nq, np.int64)
            return SearchResult.empty(nq, k)
        a = self._a
        mode = 0
        allowed = blk_ok = _EMPTY_U8
        f_indptr = _ZERO2_I64
        f_rows = _EMPTY_I64
        exact_max = 0
        if filter is not None or self._dead is not None:
            cf = self.compile_filter(filter, nq)  # the filter less the removed rows; None: every row
            if cf is not None:
                fem = st.filter_exact_max
                exact_max = default_filter_exact_max(n) if fem is None else fem
                if cf is self.__dict__.get("_live_cf"):
                    # removed rows only: the live-row mask and the blocks holding a live row, cached per change
                    mode = 1
                    f_indptr, f_rows, allowed, blk_ok = self._live_masks(cf)
                else:
                    f_rows = cf.rows if cf.rows.dtype == np.int64 else cf.rows.astype(np.int64)
                    # the calibrated filter plan (a call that names no route setting of its own)
                    fit = (self._filter_fit(target_recall) if settings is None and query_cut is None and heap_factor is None
                           and fem is None and self._calibration is not None else None)
                    if fit is not None and (not cf.shared or f_rows.shape[0] < n):
                        counts_ = (f_rows.shape[0],) if cf.shared else np.unique(np.diff(cf.indptr)).tolist()
                        exact_max, qc, hf = self._filter_route(fit, counts_, n, st)
                    if cf.shared and nq > 1:
                        if f_rows.shape[0] < n:
                            mode = 1
                            f_indptr = np.array([0, f_rows.shape[0]], np.int64)
                            if f_rows.shape[0] > exact_max:
                                allowed = np.zeros(n, np.uint8)
                                allowed[f_rows] = 1
                                blk_ok = np.empty(a["blk_scale"].shape[0], np.uint8)
                                lists = _sk.lists_of_queries(q_indptr, q_comps, q_vals, qc, self.dim, a["list_max"], self._term_order)
                                _sk.block_any_allowed(lists, a["list_blk"], a["blk_ptr"], a["post_docs"], allowed, blk_ok)
                    elif cf.shared:
                        # one query: mark its allowed rows in the per-thread mask (O(allowed), cleared after it)
                        if f_rows.shape[0] < n:
                            mode = 2
                            f_indptr = np.array([0, f_rows.shape[0]], np.int64)
                    else:
                        mode = 2
                        f_indptr = cf.indptr if cf.indptr.dtype == np.int64 else cf.indptr.astype(np.int64)
        out_r = np.empty((nq, k), np.int64)
        out_s = np.empty((nq, k), np.float32)
        counts = np.empty(nq, np.int64)
        scored = np.empty(nq, np.int64)
        # one query: serial kernel, no thread-pool start (lean single-query path)
        n_threads = 1 if nq == 1 else min(numba.get_num_threads(), nq)
        kernel = _sk.search_serial if n_threads <= 1 else _sk.search_parallel
        for attempt in range(2):
            with self._lock:
                view = self._view if self._view_threads >= n_threads else self._make_view(n_threads)
                code, bad = kernel(
                    view, q_indptr, q_comps, q_vals, self.dim, k, qc, hf, first_sorted, self._term_order, self._n_indexed,
                    mode, allowed, blk_ok, f_indptr, f_rows, exact_max, n_threads, self._max_blocks,
                    out_r, out_s, counts, scored,
                )
            if code == 0:
                break
            if attempt:
                raise ValueError(f"queries: row {bad} cannot be searched (check code {code})")
            # not in the kernel's form (unsorted, zeros, ...): normalise (or raise the precise error), retry
            r = as_csr(queries, name="queries", dim=self.dim, allow_negative=False)
            q_indptr, q_comps, q_vals = _kernel_rows(r.indptr, r.indices, r.data)
        if stats is not None:
            stats["scored"] = scored
        ids = out_r if self._idmap.identity else self._idmap.to_ids(out_r)
        return SearchResult(ids, out_s, counts)

    def _call_settings(self, query_cut: Any, heap_factor: Any, target_recall: Any, first_sorted: Any,
                       filter_exact_max: Any) -> SeismicSettings:
        """The settings of a search without ``settings=``, resolved once per distinct set of
        arguments and cached (a search loop passes the same ones)."""
        args = (target_recall, query_cut, heap_factor, first_sorted, filter_exact_max)
        key = (args, tuple(map(type, args)))  # types too: 2 == 2.0 == ... but only one is valid
        st = self._op_cache.get(key)
        if st is None:
            st = self._resolve(None, query_cut, heap_factor, target_recall, first_sorted, filter_exact_max)
            if len(self._op_cache) < 256:
                self._op_cache[key] = st
        return st

    @staticmethod
    def _fused_search(locked: Any) -> Any:
        """The public ``search``: the common call — one unfiltered query as a one-row CSR
        matrix in the kernel's form (int32 indptr and components, float32 values, 1-D arrays
        of any strides) on an index without removed rows, with at most the keywords of the
        operating point — answered here by one direct call of the compiled
        :func:`_sk.search_one` (:mod:`gsu.index._direct`, resolved once per kernel view),
        which checks the row itself; every other call (and a row the kernel refuses:
        unsorted, zeros, ...) goes to ``locked``, the locked general :meth:`search`, which
        normalises it or raises the precise error. Installed by
        :meth:`Index.__init_subclass__ <gsu.index.base.Index.__init_subclass__>`.

        The read side of the index's lock is taken inline as
        :func:`gsu.index.base._locked_search` takes it (register the thread, look at the
        writer flag), under the GIL only: a nested read, a read inside this thread's write,
        a file still being verified or a free-threaded interpreter go to ``locked``. One
        Python call and its second set of checks fewer than the locked wrapper with a lean
        hook: ~0.45 µs of a ~3.3 µs MovieLens query on this project's AMD VM."""

        @functools.wraps(locked)
        def search(self: "SeismicIndex", queries: Any, k: Any = _NO_K, *args: Any, filter: Any = None, settings: Any = None,
                   query_cut: Any = None, heap_factor: Any = None, target_recall: Any = None, first_sorted: Any = None,
                   filter_exact_max: Any = None, stats: Any = None) -> Any:
            tq = queries.__class__
            if ((tq is not _CSR_M and tq is not _CSR_A) or args or k.__class__ is not int or k < 1 or k > _LIMITS.max_k
                    or k * _SLOT > _LIMITS.max_result_bytes or not _GIL or filter is not None or settings is not None
                    or stats is not None):
                return locked(self, queries, k, *args, filter=filter, settings=settings, query_cut=query_cut,
                              heap_factor=heap_factor, target_recall=target_recall, first_sorted=first_sorted,
                              filter_exact_max=filter_exact_max, stats=stats)
            lock = self._gsu_lock
            tid = get_ident()
            held = lock._held
            pend = self._gsu_pending
            if tid in held or lock._writer_tid == tid or (pend is not None and not pend.done):
                return locked(self, queries, k, query_cut=query_cut, heap_factor=heap_factor, target_recall=target_recall,
                              first_sorted=first_sorted, filter_exact_max=filter_exact_max)
            held[tid] = 1
            if lock._flag:  # a writer wants in: wait for it under the mutex
                lock._read_slow(tid, registered=True)
            try:
                r = None
                # the operating point's keywords of the kinds the lean path takes (others — 6.0 or
                # True for a query_cut, which equal 6 and 1 — go the general way, which checks them),
                # then the settings cached per their values
                if (self._dead is None and (query_cut is None or query_cut.__class__ in _INTS)
                        and (heap_factor is None or heap_factor.__class__ in _FLOATS)
                        and (target_recall is None or target_recall.__class__ in _FLOATS)
                        and (first_sorted is None or first_sorted.__class__ in _BOOLS)
                        and (filter_exact_max is None or filter_exact_max.__class__ in _INTS)):
                    key = (query_cut, heap_factor, target_recall, first_sorted, filter_exact_max)
                    cache = self._op_cache
                    st = cache.get(key)
                    if st is None:
                        st = self._call_settings(query_cut, heap_factor, target_recall, first_sorted, filter_exact_max)
                        if len(cache) < 256:
                            cache[key] = st
                else:
                    st = None
                ind = queries.indptr
                comps = queries.indices
                vals = queries.data
                # the entry point reads 1-D arrays of these dtypes (any strides): anything else goes the general way
                if (st is not None and ind.dtype is _I32 and comps.dtype is _I32 and vals.dtype is _F32 and ind.ndim == 1
                        and comps.ndim == 1 and vals.ndim == 1 and queries._shape[1] == self.dim
                        and (self._n_indexed or self.ntotal)):
                    out_r = _empty((1, k), _I64)
                    out_s = _empty((1, k), _F32)
                    counts = _empty(1, _I64)
                    one = self._one
                    if one is None:
                        with self._lock:
                            one = self._one_entry()
                    # no mutex: the entry point holds the GIL from its call to its return
                    # (search_one is compiled without nogil) and leaves the view's scratch as
                    # it found it, so no other front is inside it meanwhile, and the view is
                    # the front's own (_one_entry): the batch kernels, which release the GIL,
                    # never touch its scratch; writers, which drop it, are kept out by the
                    # read side
                    if one[1](one[0], ind, comps, vals, self.dim, k, st.query_cut, st.heap_factor, st.first_sorted,
                              self._term_order, self._n_indexed, self._max_blocks, out_r, out_s, counts, one[2]) == 0:
                        # SearchResult.trusted, inlined (a tenth of a microsecond on a call of a few)
                        r = _new(SearchResult)
                        d = r.__dict__
                        d["ids"] = out_r if self._idmap.identity else self._idmap.to_ids(out_r)
                        d["scores"] = out_s
                        d["counts"] = counts
            finally:
                del held[tid]
                if lock._flag:
                    lock._notify()
            if r is None:
                return locked(self, queries, k, query_cut=query_cut, heap_factor=heap_factor, target_recall=target_recall,
                              first_sorted=first_sorted, filter_exact_max=filter_exact_max)
            return r

        search.__gsu_locked__ = "read"  # type: ignore[attr-defined]
        return search

    def _one_entry(self) -> tuple[Any, Any, np.ndarray]:
        """``(view, entry, scored)``: a kernel view of the one-row front's own (one thread's
        scratch), the compiled entry point of :func:`_sk.search_one` for its types and its
        (1,) scratch of the documents scored (under ``self._lock``; kept until the arrays
        change, :meth:`_drop_view`).

        Its own view, not ``self._view``: the front calls the kernel without ``self._lock``
        (it holds the GIL throughout, so two fronts never overlap), but a batch search runs
        the parallel kernel on ``self._view`` under ``self._lock`` with the GIL released, and
        a front on the same scratch then overwrote that search's (and its own) bookkeeping
        (wrong and repeated ids in ~1 of 12 runs of the concurrency test under load, from
        stop 58 to stop 59)."""
        view = self._new_view(1)
        ex_r = np.empty((1, 1), np.int64)
        ex_s = np.empty((1, 1), np.float32)
        # the query arrays as strided (layout "A") 1-D arrays: the entry point then reads any strides
        args = (view, np.zeros(4, np.int32)[::2], np.zeros(2, np.int32)[::2], np.zeros(2, np.float32)[::2], self.dim, 1, 1,
                1.0, True, 0, 0, 0, ex_r, ex_s, np.empty(1, np.int64), np.empty(1, np.int64))
        self._one = (view, direct_entry(_sk.search_one, args), np.empty(1, np.int64))
        return self._one

    def _plain_search(self, q: SparseRows, k: int, qc: int, hf: float, n_threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unfiltered search of validated rows with ``n_threads`` threads: ``(rows, scores, scored)`` (row numbers)."""
        out_r, out_s, _, scored = self._rows_search(*_kernel_rows(q.indptr, q.indices, q.data), k, qc, hf, True, n_threads)
        return out_r, out_s, scored

    def _rows_search(self, qi: np.ndarray, qcomp: np.ndarray, qv: np.ndarray, k: int, qc: int, hf: float, first_sorted: bool,
                     n_threads: int, f_indptr: np.ndarray | None = None, f_rows: np.ndarray = _EMPTY_I64,
                     exact_max: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Kernel-form queries, unfiltered or (``f_indptr``) under per-query row filters
        (``f_indptr``/``f_rows``, the exact route up to ``exact_max`` rows), with
        ``n_threads`` threads: ``(rows, scores, counts, scored)`` (row numbers)."""
        nq = qi.shape[0] - 1
        out_r = np.empty((nq, k), np.int64)
        out_s = np.empty((nq, k), np.float32)
        counts = np.empty(nq, np.int64)
        scored = np.empty(nq, np.int64)
        kernel = _sk.search_serial if n_threads <= 1 else _sk.search_parallel
        mode = 0 if f_indptr is None else 2
        with self._lock:
            view = self._view if self._view_threads >= n_threads else self._make_view(n_threads)
            code, _ = kernel(
                view, qi, qcomp, qv, self.dim, k, qc, float(hf), first_sorted, self._term_order, self._n_indexed,
                mode, _EMPTY_U8, _EMPTY_U8, _ZERO2_I64 if f_indptr is None else f_indptr, f_rows, exact_max, n_threads,
                self._max_blocks, out_r, out_s, counts, scored,
            )
        if code != 0:
            raise ValueError(f"queries: check code {code}")
        return out_r, out_s, counts, scored

    # -- calibration ---------------------------------------------------------
    def calibrate(
        self,
        queries: Any = None,
        *,
        target_recall: float = 0.95,
        k: int = 10,
        n_queries: int = 400,
        query_cuts: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 26, 32, 48, 64),
        heap_factors: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        max_seconds: float | None = 60.0,
        seed: int = 0,
        filtered: bool = True,
    ) -> dict[str, Any]:
        """Fit the search settings (``query_cut``, ``heap_factor``) to this index's own data.

        Measures recall@``k`` (against the exact answer from the forward index) and the
        time per query (one thread, median of two passes) of every ``query_cut`` ×
        ``heap_factor`` pair on calibration queries, keeps the Pareto front (recall vs
        time), and stores it with the index (saved in its file). A later
        :meth:`search` without explicit settings takes the fastest point whose recall's
        lower 95 % confidence bound reaches its ``target_recall`` (default: this
        ``target_recall``); :meth:`operating_point` shows the choice.

        Sampled queries come in four styles (see :meth:`sample_queries`) and the bound
        is taken per style: a point's ``recall_lcb`` is the lowest of the four styles'
        bounds, so the default keeps its target for the hardest style, not only on
        average (the workload's style is unknown; given queries are one population).

        Args:
            queries: (nq, dim) sparse queries of the workload, or ``None`` to sample
                them from the documents (:meth:`sample_queries`: sub-vectors of random
                documents with their weights or uniform weights, some mixed with a
                neighbouring document's terms; the source document is left out of
                both the exact and the found answers).
            target_recall: the default recall@k target of later searches (0 < t <= 1).
            k: the ``k`` of the recall measured.
            n_queries: sampled queries (when ``queries`` is ``None``).
            query_cuts, heap_factors: the grid (Seismic ``query_cut``, ``heap_factor``).
            max_seconds: time budget of the grid walk (``None``: no limit); points are
                visited cheapest first and the walk stops when the budget is spent.
            seed: seed of the query sample.
            filtered: also measure filtered searches (:meth:`_calibrate_filtered`): at a
                ladder of selectivities, a random filter per query, the exact route's
                cost and the blocked route's recall and cost at the front's points from
                the default one up; a filtered search then takes, for its selectivity,
                the cheaper of the two that reaches its target (:meth:`filter_plan`).

        Returns:
            The stored calibration: ``{"target_recall", "k", "n_queries", "source",
            "points": [[query_cut, heap_factor, recall, recall_lcb, ms_per_query], ...]
            (the Pareto front, fastest first; ``recall`` the mean over all queries,
            ``recall_lcb`` the hardest style's lower bound), "grid": every measured
            point, "seconds"}``, with ``"filtered"`` (see :meth:`_calibrate_filtered`)
            when measured.
        """
        import time

        target_recall = _check_fraction(target_recall, name="target_recall", lo=0.0, hi=1.0)
        k = check_k(k)
        n_queries = check_positive_int(n_queries, name="n_queries")
        qcs = sorted({check_positive_int(x, name="query_cuts") for x in query_cuts})
        hfs = sorted({_check_fraction(x, name="heap_factors", lo=0.0, hi=1e9) for x in heap_factors}, reverse=True)
        if not qcs or not hfs:
            raise ValueError("calibrate: empty query_cuts or heap_factors")
        if self.n_indexed == 0:
            raise ValueError("calibrate: the index is empty")
        t_start = time.perf_counter()
        if queries is None:
            q, exclude = self.sample_queries(n_queries, seed=seed)
            style = np.arange(q.n) % _N_STYLES  # the sample's query styles, in turn
            source = "sampled"
        else:
            q = as_csr(queries, name="queries", dim=self.dim, allow_negative=False)
            exclude = np.full(q.n, -1, np.int64)
            style = np.zeros(q.n, np.int64)  # the workload's queries: one population
            source = "given"
        keep = np.diff(q.indptr) > 0
        if not keep.all():
            q = as_csr(q.to_scipy()[keep], name="queries", dim=self.dim, allow_negative=False)
            exclude = exclude[keep]
            style = style[keep]
        groups = [np.flatnonzero(style == s_) for s_ in np.unique(style)]
        if q.n == 0:
            raise ValueError("calibrate: no non-empty query")
        kk = k + 1 if np.any(exclude >= 0) else k
        a = self._a
        n_threads = max(1, numba.get_num_threads())
        t_rows = np.empty((q.n, k), np.int64)
        t_scores = np.empty((q.n, k), np.float32)
        t_counts = np.empty(q.n, np.int64)
        _sk.exact_topk_forward(a["fwd_indptr"], a["fwd_comps"], a["fwd_vals"], *_kernel_rows(q.indptr, q.indices, q.data), self.dim, k,
                               min(n_threads, max(1, self.ntotal // 1000)), exclude, t_rows, t_scores, t_counts)
        measured: list[list[float]] = []
        bar = _progress_bar(total=len(qcs) * len(hfs), desc="seismic: calibration", show=self.progress)
        saturated = set()  # heap factors whose recall already reached ~1 at a smaller query_cut
        for qc in qcs:
            for hf in hfs:
                bar.update(1)
                if hf in saturated:
                    continue
                if max_seconds is not None and time.perf_counter() - t_start > max_seconds and measured:
                    break
                times = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    rows, scores, _ = self._plain_search(q, kk, qc, hf, 1)
                    times.append(time.perf_counter() - t0)
                r = _sk.recall_per_query(rows, scores, t_scores, t_counts, k, exclude)
                mean = float(r.mean())
                lcb = min(recall_low(r[g]) for g in groups)
                measured.append([qc, hf, mean, lcb, float(np.median(times)) / q.n * 1e3])
                if mean >= 0.999:
                    saturated.add(hf)
        bar.close()
        # Pareto front: fastest first, each next point strictly better in recall (lower bound)
        front: list[list[float]] = []
        for pt in sorted(measured, key=lambda x: (x[4], -x[3])):
            if not front or pt[3] > front[-1][3]:
                front.append(pt)
        self._calibration = {
            "target_recall": target_recall, "k": k, "n_queries": int(q.n), "source": source,
            "points": [[int(p[0]), float(p[1]), round(p[2], 6), round(p[3], 6), round(p[4], 6)] for p in front],
            "grid": [[int(p[0]), float(p[1]), round(p[2], 6), round(p[3], 6), round(p[4], 6)] for p in measured],
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        self._op_cache = {}
        if filtered:
            fc = self._calibrate_filtered(q, exclude, style, k, target_recall, max_seconds, seed, qcs, hfs)
            if fc is not None:
                self._calibration["filtered"] = fc
                self._calibration["seconds"] = round(time.perf_counter() - t_start, 3)
            self._op_cache = {}
            self.__dict__.pop("_filter_fits", None)
        log.info("seismic calibration: %d points measured in %.1fs; default %s",
                 len(measured), self._calibration["seconds"], self.operating_point())
        return self._calibration

    def _calibrate_filtered(self, q: SparseRows, exclude: np.ndarray, style: np.ndarray, k: int, target: float,
                            max_seconds: float | None, seed: int, qcs: list[int], hfs: list[float]) -> dict[str, Any] | None:
        """The filtered part of :meth:`calibrate`: ``{"n", "k", "n_queries", "kind":
        "random", "bands": [[selectivity, rows, exact_ms, [[query_cut, heap_factor,
        recall, recall_lcb, ms], ...]], ...], "complete", "seconds"}`` (``None``: too few
        rows or queries to measure).

        At each selectivity of :data:`FILTER_BANDS` (ascending), every calibration query
        (the first :data:`_FILTER_QUERIES`) gets a uniform random set of that many rows
        (never its own source row). The exact route's pass over them, one thread, gives
        the true answers and the exact cost (``exact_ms``); then the blocked route is
        measured on a staircase of settings from the default point for ``target`` up
        (:func:`_filter_ladder`: each step the next larger ``query_cut`` of the grid,
        every second step the next smaller ``heap_factor``; a filter takes recall from
        the blocked route, its best allowed documents lying further down the posting
        lists and in the lists of lighter terms), until a point's lower bound reaches
        :data:`_FILTER_HI` or it costs more than the exact route. Uniform random filters
        are the blocked route's hard case (filters near the query, a user's items around
        the candidate, leave its best documents in the opened lists). The ladder stops
        after two selectivities in a row where the default point reached ``target``
        below the exact cost (wider filters only raise its recall), or once a quarter of
        ``max_seconds`` is spent (after two selectivities; ``complete`` False)."""
        import time

        from gsu.index._calibrate import _sample  # m distinct sorted rows but one, in O(m log m)

        n = self._n_indexed
        cal = self._calibration
        front = cal["points"] if cal else []
        nf = min(q.n, _FILTER_QUERIES)
        if n < 4 * k or nf < 8 or not front:
            return None
        t_start = time.perf_counter()
        budget = None if max_seconds is None else 0.25 * max_seconds
        sub = q.to_scipy()[:nf].tocsr()
        qi, qcomp, qv = _kernel_rows(sub.indptr.astype(np.int64), sub.indices.astype(np.int32), sub.data.astype(np.float32))
        src = exclude[:nf]
        groups = [np.flatnonzero(style[:nf] == s_) for s_ in np.unique(style[:nf])]
        no_ex = np.full(nf, -1, np.int64)
        j0 = next((j for j, p in enumerate(front) if p[3] >= target), len(front) - 1)
        ladder = _filter_ladder(int(front[j0][0]), float(front[j0][1]), qcs, hfs)
        rng = np.random.default_rng([seed, 7])
        bands: list[list[Any]] = []
        ok_run = 0
        complete = True
        for sel in FILTER_BANDS:
            m = int(round(sel * n))
            if m < 2 * k or m >= n:
                continue
            if len(bands) >= 2 and budget is not None and time.perf_counter() - t_start > budget:
                complete = False
                break
            # wide filters on a large index: fewer queries (their exact pass scores nb·m rows;
            # the lower bound prices the fewer)
            nb = min(nf, max(_FILTER_MIN_QUERIES, _FILTER_ROWS // m))
            f_indptr = np.arange(nb + 1, dtype=np.int64) * m
            f_rows = np.concatenate([_sample(n, m, rng, int(src[i])) for i in range(nb)])
            e = int(qi[nb])
            bq = (qi[: nb + 1], qcomp[:e], qv[:e])
            gb = [g[g < nb] for g in groups]
            t0 = time.perf_counter()
            fs = self._search_settings.first_sorted
            t_rows, t_scores, t_counts, _ = self._rows_search(*bq, k, 1, 1.0, fs, 1, f_indptr, f_rows, n)
            exact_ms = (time.perf_counter() - t0) / nb * 1e3
            pts: list[list[float]] = []
            for qc, hf in ladder:
                times = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    rows, scores, _, _ = self._rows_search(*bq, k, qc, hf, fs, 1, f_indptr, f_rows, 0)
                    times.append(time.perf_counter() - t0)
                r = _sk.recall_per_query(rows, scores, t_scores, t_counts, k, no_ex[:nb])
                ms = float(np.median(times)) / nb * 1e3
                lcb = min(recall_low(r[g]) for g in gb if g.size)
                pts.append([qc, hf, round(float(r.mean()), 6), round(lcb, 6), round(ms, 6)])
                if lcb >= _FILTER_HI or ms > exact_ms:
                    break
            bands.append([float(sel), m, round(exact_ms, 6), pts])
            d = pts[0]
            ok_run = ok_run + 1 if d[3] >= target and d[4] < exact_ms else 0
            if ok_run >= 2:
                break
        if not bands:
            return None
        return {"n": int(n), "k": int(k), "n_queries": int(nf), "kind": "random", "bands": bands, "complete": complete,
                "seconds": round(time.perf_counter() - t_start, 3)}

    def filter_plan(self, target_recall: float | None = None) -> list[dict[str, Any]]:
        """How a filtered search picks its route by the filter's selectivity, for
        ``target_recall`` (default: the calibrated target): one entry per measured
        selectivity, ascending — ``{"selectivity", "route": "exact" | "blocked",
        "query_cut", "heap_factor", "expected_recall", "ms_per_query", "exact_ms"}``. A
        filter allowing a share ``s`` of the documents takes the entry of the largest
        measured selectivity at most ``s`` (the exact route below the first; from twice
        the last on, the unfiltered operating point). Empty when the calibration measured no
        filtered searches (the rule of :func:`default_filter_exact_max` applies)."""
        plan = self._filter_fit(target_recall)
        return [] if plan is None else [dict(p) for p in plan[1]]

    def _filter_fit(self, target_recall: Any) -> tuple[tuple[float, ...], tuple[dict[str, Any], ...]] | None:
        """``(selectivities, entries)`` of :meth:`filter_plan`, cached per target; ``None``
        without a filtered calibration."""
        cal = self._calibration
        # cached per calibration record (a cache shared with the operating points filled up
        # in a sweep of many settings, and the fit then ran again in every call, ~0.1 ms)
        store = self.__dict__.get("_filter_fits")
        if store is None or store[0] is not cal:
            store = self._filter_fits = (cal, {})
        cache = store[1]
        ckey = (target_recall, type(target_recall))
        if ckey in cache:
            return cache[ckey]
        fc = cal.get("filtered") if cal else None
        out = None
        if fc:
            t = cal["target_recall"] if target_recall is None else _check_fraction(target_recall, name="target_recall", lo=0.0, hi=1.0)
            entries = []
            for sel, _m, exact_ms, pts in fc["bands"]:
                ok = [p for p in pts if p[3] >= t and p[4] < exact_ms]
                if ok:
                    p = min(ok, key=lambda x: x[4])
                    entries.append({"selectivity": sel, "route": "blocked", "query_cut": int(p[0]), "heap_factor": float(p[1]),
                                    "expected_recall": p[2], "ms_per_query": p[4], "exact_ms": exact_ms})
                else:
                    entries.append({"selectivity": sel, "route": "exact", "query_cut": None, "heap_factor": None,
                                    "expected_recall": 1.0, "ms_per_query": exact_ms, "exact_ms": exact_ms})
            out = (tuple(e["selectivity"] for e in entries), tuple(entries))
        if len(cache) < 64:
            cache[ckey] = out
        return out

    def _filter_route(self, fit: tuple[tuple[float, ...], tuple[dict[str, Any], ...]], counts: Any, n: int,
                      st: SeismicSettings) -> tuple[int, int, float]:
        """``(exact_max, query_cut, heap_factor)`` of a search whose filters allow
        ``counts`` rows each (of ``n``) by the filter plan ``fit``: filters whose
        selectivity's entry is exact are scanned exactly (``exact_max`` the largest of
        them), the others searched with the strongest blocked entry among them (the
        operating point ``st`` above the measured range)."""
        sels, entries = fit
        exact_max = 0
        qc, hf, cost = st.query_cut, st.heap_factor, -1.0
        last = len(entries) - 1
        for c in counts:
            s_ = c / max(n, 1)
            # (a filter of the measured size less a rounding, e.g. int(0.5 n) rows, takes its entry)
            i = bisect.bisect_right(sels, s_ * 1.001) - 1
            if i == last and s_ >= 2 * sels[-1]:
                continue  # well above the measured range: the unfiltered operating point
            if i < 0 or entries[i]["route"] == "exact":
                exact_max = max(exact_max, int(c))
            elif entries[i]["ms_per_query"] > cost:
                qc, hf, cost = entries[i]["query_cut"], entries[i]["heap_factor"], entries[i]["ms_per_query"]
        return exact_max, qc, hf

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The stored calibration (see :meth:`calibrate`), or ``None``."""
        return self._calibration

    def operating_point(self, target_recall: float | None = None) -> dict[str, Any]:
        """The settings a search without explicit ``query_cut``/``heap_factor`` uses for ``target_recall``.

        Returns ``{"query_cut", "heap_factor", "expected_recall", "ms_per_query",
        "calibrated", "settings"}`` — the fastest calibrated point whose recall lower bound
        reaches the target (the most accurate point when none does); uncalibrated indexes
        use :attr:`search_settings` (``query_cut=10, heap_factor=0.7`` unless set).
        ``settings`` is the whole :class:`SeismicSettings` a search would use.
        """
        st = self._calibrated_point(target_recall)
        qc, hf = st.query_cut, st.heap_factor
        cal = self._calibration
        pt = next((p for p in cal["points"] if p[0] == qc and p[1] == hf), None) if cal else None
        return {"query_cut": qc, "heap_factor": hf, "expected_recall": pt[2] if pt else None,
                "ms_per_query": pt[4] if pt else None, "calibrated": cal is not None, "settings": st}

    @property
    def search_settings(self) -> SeismicSettings:
        """The index's default :class:`SeismicSettings` (saved with it); a calibrated index
        takes ``query_cut``/``heap_factor`` from its calibration and the rest from here."""
        return self._search_settings

    @search_settings.setter
    def search_settings(self, value: SeismicSettings) -> None:
        if not isinstance(value, SeismicSettings):
            raise TypeError(f"search_settings: expected a SeismicSettings, got {type(value).__name__}")
        self._search_settings = value
        self._op_cache = {}

    def sample_queries(self, n: int, *, seed: int = 0) -> tuple[SparseRows, np.ndarray]:
        """Calibration queries drawn from the documents: ``(queries, source rows (n,) int64)``.

        Each query starts from a random non-empty document and takes ``m`` of its
        components (``m`` log-uniform in 3..48, at most the document's length), drawn
        without replacement with probability proportional to the weight. A quarter keep
        the document's weights (jittered by ``exp(0.3 z)``), a quarter get weight 1 on
        every term (keyword queries), a quarter replace half of their terms by terms
        of a document that shares their heaviest term (queries that no single
        document contains), and a quarter are keyword queries whose terms are drawn
        with probability proportional to the square root of the weight (more of the
        document's common terms: what a user's words look like against BM25 weights,
        which favour rare terms); query ``i`` is of style ``i % 4`` in that order (the
        calibration bounds each style's recall on its own). Searches evaluated on them
        leave the source out.
        """
        n = check_positive_int(n, name="n")
        rng = np.random.default_rng(seed)
        a = self._a
        indptr = a["fwd_indptr"][: self._n_indexed + 1]
        lens = np.diff(indptr)
        docs = np.flatnonzero(lens > 0)
        if docs.size == 0:
            raise ValueError("sample_queries: no document has a component")
        vals = a["fwd_vals"]
        src = rng.choice(docs, size=n, replace=docs.size < n)
        rows, cols, data = [], [], []
        for i, d in enumerate(src):
            s, e = int(indptr[d]), int(indptr[d + 1])
            c = a["fwd_comps"][s:e].astype(np.int64)
            w = vals[s:e].view(np.float16).astype(np.float64) if vals.dtype == np.uint16 else vals[s:e].astype(np.float64)
            m = int(min(c.size, max(1, round(math.exp(rng.uniform(math.log(3), math.log(48)))))))
            kind = i % _N_STYLES
            key = (_TEMPERED if kind == 3 else 1.0) * np.log(np.maximum(w, 1e-30)) + rng.gumbel(size=c.size)
            pick = np.argsort(-key)[:m]
            qc_, qw = c[pick], w[pick]
            if kind == 2 and m >= 2:
                heavy = int(qc_[np.argmax(qw)])
                # another document holding the heaviest term (from its posting list)
                lst = a["post_docs"][a["blk_ptr"][a["list_blk"][heavy]]:a["blk_ptr"][a["list_blk"][heavy + 1]]]
                if lst.size > 1:
                    o = int(lst[rng.integers(lst.size)])
                    if o != d:
                        s2, e2 = int(indptr[o]), int(indptr[o + 1])
                        c2 = a["fwd_comps"][s2:e2].astype(np.int64)
                        w2 = vals[s2:e2].view(np.float16).astype(np.float64) if vals.dtype == np.uint16 else vals[s2:e2].astype(np.float64)
                        new = ~np.isin(c2, qc_)
                        c2, w2 = c2[new], w2[new]
                        h = min(m // 2, c2.size)
                        if h:
                            k2 = np.argsort(-(np.log(np.maximum(w2, 1e-30)) + rng.gumbel(size=c2.size)))[:h]
                            keep_n = m - h
                            qc_ = np.concatenate([qc_[:keep_n], c2[k2]])
                            qw = np.concatenate([qw[:keep_n], w2[k2]])
            if kind == 1 or kind == 3:
                qw = np.ones_like(qw)
            else:
                qw = qw * np.exp(0.3 * rng.standard_normal(qw.size))
            rows.append(np.full(qc_.size, i, np.int64))
            cols.append(qc_)
            data.append(qw)
        m = sp.csr_matrix((np.concatenate(data).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n, self.dim))
        m.sum_duplicates()
        return as_csr(m, name="queries", dim=self.dim, allow_negative=False), src.astype(np.int64)

    def _resolve(self, settings: Any, query_cut: Any, heap_factor: Any, target_recall: Any, first_sorted: Any,
                 filter_exact_max: Any) -> SeismicSettings:
        """The settings of one search: ``settings`` (or the calibrated point for
        ``target_recall``) with the fields given one by one replaced (and checked)."""
        if settings is not None:
            if not isinstance(settings, SeismicSettings):
                raise TypeError(f"settings: expected a SeismicSettings, got {type(settings).__name__}")
            if target_recall is not None:
                raise ValueError("target_recall: pass it or settings, not both")
            base = settings
        else:
            if target_recall is not None and (query_cut is not None or heap_factor is not None):
                raise ValueError("target_recall: pass it alone, or query_cut and heap_factor, not both")
            base = self._calibrated_point(target_recall)
        over = {name: v for name, v in (("query_cut", query_cut), ("heap_factor", heap_factor), ("first_sorted", first_sorted),
                                        ("filter_exact_max", filter_exact_max)) if v is not None}
        return dataclasses.replace(base, **over) if over else base

    def _calibrated_point(self, target_recall: Any) -> SeismicSettings:
        cache = self._op_cache
        ckey = (target_recall, type(target_recall))
        hit = cache.get(ckey)
        if hit is not None:
            return hit
        cal = self._calibration
        if target_recall is not None:
            t = _check_fraction(target_recall, name="target_recall", lo=0.0, hi=1.0)
        else:
            t = cal["target_recall"] if cal else None
        if not cal or not cal["points"]:
            point = self._search_settings
        else:
            pts = cal["points"]
            ok = [p for p in pts if p[3] >= t]
            best = ok[0] if ok else max(pts, key=lambda p: (p[3], -p[4]))
            point = dataclasses.replace(self._search_settings, query_cut=int(best[0]), heap_factor=float(best[1]))
        if len(cache) < 64:
            cache[ckey] = point
        return point

    def _make_view(self, n_threads: int) -> Any:
        """(Re)create the kernel's view of the arrays with search scratch for ``n_threads`` threads."""
        t = max(n_threads, self._view_threads, 1)
        self._view = self._new_view(t)
        self._view_threads = t
        return self._view

    def _new_view(self, t: int) -> Any:
        """A kernel view of the arrays with search scratch for ``t`` threads."""
        a = self._a
        n = self.ntotal
        return _sk.IndexView(
            *(a[name] for name in _sk.VIEW_FIELDS[:19]),
            np.zeros((t, self.dim), np.float32), np.zeros((t, (n + 63) >> 6), np.uint64), np.zeros((t, n), np.uint8),
            np.zeros((t, 0), np.float32), np.zeros((t, 0), np.int64),
        )

    def _live_masks(self, cf: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(f_indptr, f_rows, allowed, blk_ok)`` of the live rows (the filter ``cf`` of an
        unfiltered search on an index with removed rows), built once per change of the
        tombstones: a mask over the rows and a flag per block that holds a live row."""
        key = self._tomb_gen
        hit = self.__dict__.get("_live_masks_cache")
        if hit is not None and hit[0] == key:
            return hit[1]
        a = self._a
        rows = cf.rows if cf.rows.dtype == np.int64 else cf.rows.astype(np.int64)
        allowed = np.zeros(self.ntotal, np.uint8)
        allowed[rows] = 1
        blk_ok = np.empty(a["blk_scale"].shape[0], np.uint8)
        _sk.block_any_allowed(np.arange(self.dim, dtype=np.int64), a["list_blk"], a["blk_ptr"], a["post_docs"], allowed, blk_ok)
        out = (np.array([0, rows.shape[0]], np.int64), rows, allowed, blk_ok)
        self._live_masks_cache = (key, out)
        return out

    def _compact_rows(self, live: np.ndarray) -> None:
        """Keep the documents of rows ``live``: slice the forward index, rebuild the lists."""
        a = self._a
        indptr = a["fwd_indptr"]
        lens = (indptr[live + 1] - indptr[live]).astype(np.int64)
        new_ptr = np.zeros(live.shape[0] + 1, np.int64)
        np.cumsum(lens, out=new_ptr[1:])
        take = np.repeat(indptr[live] - new_ptr[:-1], lens) + np.arange(int(new_ptr[-1]), dtype=np.int64)
        a["fwd_indptr"] = new_ptr
        a["fwd_comps"] = np.ascontiguousarray(a["fwd_comps"][take])
        a["fwd_vals"] = np.ascontiguousarray(a["fwd_vals"][take])
        self._idmap = IdMap(self._idmap.ids[live])
        self._dead, self._n_dead = None, 0
        self._n_indexed = 0
        self._drop_view()
        self.rebuild()

    def _drop_view(self) -> None:
        """Forget the kernel view and the live-row masks (after the arrays changed)."""
        self.__dict__.pop("_live_masks_cache", None)
        self._view = None
        self._view_threads = 0
        self._one = None
        self._op_cache = {}

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
            "auto_calibrate": self.auto_calibrate,
            "search_settings": self._search_settings.to_dict(),
        }

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = self._config()
        config["n_indexed"] = int(self._n_indexed)
        config["max_blocks"] = int(self._max_blocks)
        config["calibration"] = self._calibration
        arrays = {name: self._a[name] for name in self._ARRAYS}
        arrays["ids"] = self._idmap.ids
        self._tomb_state(config, arrays)
        return config, arrays

    @classmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SeismicIndex":
        if "sum_pack" not in arrays:
            raise ValueError("this SeismicIndex file predates the compact summary layout; rebuild the index from its vectors")
        settings = {k: config[k] for k in ("n_postings", "max_fraction", "centroid_fraction", "min_cluster_size", "summary_energy", "doc_cut", "seed", "rebuild_fraction", "value_dtype")}
        settings["auto_calibrate"] = bool(config.get("auto_calibrate", True))
        if "search_settings" in config:
            settings["search_settings"] = SeismicSettings.from_dict(config["search_settings"])
        idx = cls(int(config["dim"]), **settings)
        cd = idx._comp_dtype
        expect = {
            "fwd_indptr": np.int64, "fwd_comps": cd, "fwd_vals": idx._val_dtype,
            "list_blk": np.int64, "blk_ptr": np.int64, "post_docs": np.int32, "list_max": np.float32,
            "blk_scale": np.float32, "blk_min": np.float32, "sum_ent": np.int64, "sum_bit": np.int64, "sum_pack": np.uint8, "sum_start": np.uint8, "sum_dir": np.int64,
            "sum_comp": cd, "sum_bmp": np.int64, "sum_bm": np.uint32, "sum_sptr": np.int64, "sum_samp": np.uint32,
        }
        for name, dt in expect.items():
            arr = arrays[name]
            if arr.dtype != np.dtype(dt) or arr.ndim != 1:
                raise ValueError(f"array {name!r} has dtype {arr.dtype} / {arr.ndim} dims, expected 1-D {np.dtype(dt)}")
        n = arrays["fwd_indptr"].shape[0] - 1
        v = idx.dim
        n_blocks = arrays["blk_scale"].shape[0]
        pad = _sk._PAD_BYTES

        def offsets_ok(name: str, end: int, multiple: int = 1) -> bool:
            o = arrays[name]
            return bool(o.shape == (v + 1,) and o[0] == 0 and o[-1] == end and np.all(np.diff(o) >= 0) and np.all(o % multiple == 0))

        nblk = np.diff(arrays["list_blk"]) if arrays["list_blk"].shape == (v + 1,) else np.zeros(v, np.int64)
        checks = [
            (n >= 0 and int(arrays["fwd_indptr"][-1]) == arrays["fwd_comps"].shape[0] == arrays["fwd_vals"].shape[0], "forward index"),
            (arrays["ids"].shape == (n,), "ids"),
            (offsets_ok("list_blk", n_blocks) and int(config["max_blocks"]) == int(nblk.max(initial=0)) <= 65535, "list_blk"),
            (arrays["blk_ptr"].shape == (n_blocks + 1,) and int(arrays["blk_ptr"][-1]) == arrays["post_docs"].shape[0], "blk_ptr"),
            (arrays["blk_min"].shape == (n_blocks,), "blk_min"),
            (arrays["list_max"].shape == (v,), "list_max"),
            (offsets_ok("sum_ent", 8 * (arrays["sum_start"].shape[0] - pad), 8) and arrays["sum_start"].shape[0] >= pad
             and arrays["sum_start"][-pad] & 1 == 1, "sum_ent / sum_start"),
            (offsets_ok("sum_bit", 8 * (arrays["sum_pack"].shape[0] - pad), 8), "sum_bit / sum_pack"),
            (offsets_ok("sum_dir", arrays["sum_comp"].shape[0]), "sum_dir"),
            (offsets_ok("sum_bmp", arrays["sum_bm"].shape[0]), "sum_bmp"),
            (offsets_ok("sum_sptr", arrays["sum_samp"].shape[0]), "sum_sptr"),
            (0 <= int(config["n_indexed"]) <= n, "n_indexed"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"inconsistent arrays ({what})")
        code = _sk.check_summary_layout(
            arrays["list_blk"], arrays["sum_ent"], arrays["sum_bit"], arrays["sum_dir"], arrays["sum_bmp"], arrays["sum_sptr"], v)
        if code >= 0:
            raise ValueError(f"inconsistent arrays (summaries of list {code})")
        idx._a = {name: arrays[name] for name in cls._ARRAYS}
        idx._idmap = IdMap(arrays["ids"])
        idx._n_indexed = int(config["n_indexed"])
        idx._max_blocks = int(config["max_blocks"])
        idx._calibration = _check_calibration(config.get("calibration"))
        idx._tomb_load(config, arrays)
        idx._n_summary_entries = int(_sk.summary_entry_count(arrays["list_blk"], arrays["sum_bit"]))
        return idx

    def __repr__(self) -> str:
        return (
            f"SeismicIndex(dim={self.dim}, ntotal={self.ntotal}, n_postings={self.n_postings}, "
            f"centroid_fraction={self.centroid_fraction}, summary_energy={self.summary_energy})"
        )
