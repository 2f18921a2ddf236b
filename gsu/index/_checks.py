"""Structural validation of saved indexes: what :func:`gsu.index.load` checks before
any kernel (numba, faiss, SciPy) sees the arrays of a file.

A checksum guards against damage, not against a file that lies: a crafted file with a
valid checksum reaches these checks, which make sure that every offset, row number,
component id and graph link the kernels follow stays inside the arrays it indexes,
that lengths agree with each other and with the config, that ids are distinct and
never -1, and (``values=True``, the default when the checksum is verified) that stored
floats are finite. One validator per index kind (:func:`validator`); each raises
:class:`gsu.errors.FieldError` naming the field, which the loader turns into an
:class:`gsu.errors.IndexFileError` naming the file too.

HNSW files hold faiss's serialised ``IndexHNSWFlat``; :func:`check_hnsw_blob` parses that
byte layout itself (every length against the bytes left, every link against the node
count, every node's level layout against ``cum_nneighbor_per_level``) before faiss
reads it, so faiss never allocates from a crafted length nor follows a crafted link.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable

import numpy as np

from gsu._validate import StateCheck

log = logging.getLogger(__name__)

__all__ = ["VALIDATORS", "validator", "check_state", "check_hnsw_blob", "MAX_DIM"]

#: the largest vector dimension a file may declare (faiss's own limit)
MAX_DIM = 1 << 20
_I64_MAX = 2**63 - 1
_DENSE_METRICS = ("ip", "cosine", "l2")  # every dense kind

VALIDATORS: dict[str, Callable[[StateCheck], None]] = {}


def validator(kind: str) -> Callable[[Callable[[StateCheck], None]], Callable[[StateCheck], None]]:
    """Register the load validator of index ``kind`` (a function of a :class:`StateCheck`)."""

    def deco(fn: Callable[[StateCheck], None]) -> Callable[[StateCheck], None]:
        VALIDATORS[kind] = fn
        return fn

    return deco


def check_state(kind: str, config: Any, arrays: dict[str, np.ndarray], *, values: bool = True, deep: bool = True) -> None:
    """Run the validator of ``kind`` over a file's config and arrays (raises ``FieldError``);
    ``values`` / ``deep`` as :class:`~gsu._validate.StateCheck`."""
    fn = VALIDATORS.get(kind)
    if fn is None:
        log.warning("index kind %r has no load validator: its arrays reach the kernels unchecked", kind)
        return
    fn(StateCheck(config, arrays, values=values, deep=deep))


def _ids(c: StateCheck) -> np.ndarray:
    ids = c.array("ids", np.int64, (None,))
    if c.prefix + "tombstones" in c.arrays:  # removed rows: distinct ids among the live rows only
        dead = c.array("tombstones", np.bool_, (ids.shape[0],)).view(np.uint8) != 0
        c.ids("ids", ids[~dead])
        if (ids == -1).any():
            raise c.fail(c._af("ids"), "holds id -1, which is reserved for padding")
    else:
        c.ids("ids", ids)
    return ids


@validator("flat")
def _flat(c: StateCheck) -> None:
    dim = c.cfg_int("dim", lo=1, hi=MAX_DIM)
    c.cfg_choice("metric", _DENSE_METRICS)
    ids = _ids(c)
    x = c.array("vectors", np.float32, (ids.shape[0], dim))
    c.finite("vectors", x)


@validator("simhash")
def _simhash(c: StateCheck) -> None:
    dim = c.cfg_int("dim", lo=1, hi=MAX_DIM)
    n_bits = c.cfg_int("n_bits", lo=1, hi=256)
    c.cfg_int("seed", lo=0, hi=_I64_MAX)
    c.array("hyperplanes", np.float32, (n_bits, dim))  # before the loader regenerates them: sizes bounded by the file
    ids = _ids(c)
    n_words = (n_bits + 63) // 64
    ct = c.array("codes_word_major", np.uint64, (n_words, ids.shape[0]))
    if n_bits % 64 and ct.shape[1]:
        pad = ~np.uint64((1 << (n_bits % 64)) - 1)
        if np.any(ct[-1] & pad):
            raise c.fail("array 'codes_word_major'", f"codes have bits set past n_bits={n_bits} (distances would exceed n_bits)")


@validator("sparse_flat")
def _sparse_flat(c: StateCheck) -> None:
    dim = c.cfg_int("dim", lo=1, hi=2**31 - 1)
    indptr = c.array("indptr", np.int64, (None,))
    if indptr.shape[0] == 0:
        raise c.fail("array 'indptr'", "empty; expected n + 1 offsets")
    n = indptr.shape[0] - 1
    c.array("ids", np.int64, (n,))
    _ids(c)
    indices = c.array("indices", np.int32, (None,))
    data = c.array("data", np.float32, (indices.shape[0],))
    c.offsets("indptr", indptr, end=indices.shape[0])
    c.in_range("indices", indices, 0, dim)
    c.finite("data", data)


def _ivf_part(c: StateCheck, *, owned: bool = False) -> np.ndarray:
    """``owned``: the part of an index that keeps the vectors itself (``FilteredIndex``),
    so the lists may hold none (config ``external_vectors``)."""
    dim = c.cfg_int("dim", lo=1, hi=MAX_DIM)
    c.cfg_choice("metric", _DENSE_METRICS)
    trained = c.cfg_bool("trained")
    nlist = c.cfg_int("nlist", lo=1, hi=2**31 - 1, none=True)
    c.cfg_int("niter", lo=1, hi=2**31 - 1)
    c.cfg_int("max_train", lo=1, hi=2**31 - 1)
    c.cfg_int("seed", lo=-(2**63), hi=_I64_MAX)
    external = c.config.get("external_vectors", False)
    if not isinstance(external, bool) or (external and not owned):
        raise c.fail(c._cf("external_vectors"), f"{external!r:.60} (only a FilteredIndex's lists may hold no vectors)")
    ids = _ids(c)
    n = ids.shape[0]
    xl = None if external else c.array("list_vectors", np.float32, (n, dim))
    pos_row = c.array("list_rows", np.int64, (n,))
    if trained:
        if nlist is None:
            raise c.fail(c._cf("nlist"), "missing for a trained index")
        cent = c.array("centroids", np.float32, (nlist, dim))
        c.finite("centroids", cent)
        off = c.array("list_offsets", np.int64, (nlist + 1,))
    else:
        if n:
            raise c.fail(c._cf("trained"), f"false, but the file holds {n} vectors")
        off = c.array("list_offsets", np.int64, (1,))
    c.offsets("list_offsets", off, end=n)
    if c.deep:  # a pass over n rows: with the values on a mapped open (before any kernel)
        c.permutation("list_rows", pos_row, n)
        # rows ascend inside each list (a time window's rows in a list are then one span)
        c.sorted_rows("list_rows", off, pos_row)
    if xl is not None:
        c.finite("list_vectors", xl)
    return ids


@validator("ivf")
def _ivf(c: StateCheck) -> None:
    _ivf_part(c)


def _hnsw_part(c: StateCheck) -> np.ndarray:
    dim = c.cfg_int("dim", lo=1, hi=MAX_DIM)
    metric = c.cfg_choice("metric", _DENSE_METRICS)
    c.cfg_int("M", lo=2, hi=1 << 16)
    c.cfg_int("ef_construction", lo=1, hi=1 << 24)
    ids = _ids(c)
    n = ids.shape[0]
    if c.prefix + "faiss_index" in c.arrays:  # a file of faiss's serialisation (before the array layout)
        blob = c.array("faiss_index", np.uint8, (None,))
        try:
            check_hnsw_blob(np.ascontiguousarray(blob), dim=dim, n=n, values=c.values, l2=metric == "l2")
        except _BlobError as e:
            raise c.fail(c._af("faiss_index"), str(e)) from None
        return ids
    # the array layout: every array memory-mapped as saved; O(levels) checks at open, the
    # pass over the graph with the values (first use of a memory-mapped index)
    X = c.array("vectors", np.float32, (n, dim))
    nbr = c.array("neighbors", np.int32, (None,))
    off = c.array("offsets", np.int64, (n + 1,))
    lev = c.array("levels", np.int32, (n,))
    cum = c.array("cum_nneighbor_per_level", np.int64, (None,))
    probas = c.array("assign_probas", np.float64, (None,))
    ep = c.cfg_int("entry_point", lo=-1, hi=max(n - 1, -1))
    max_level = c.cfg_int("max_level", lo=-1, hi=max(probas.shape[0] - 1, -1))
    c.cfg_int("ef_search", lo=1, hi=(1 << 24) - 1)
    try:
        check_graph(probas, cum, lev, off, nbr, ep, max_level, n, deep=c.deep)
    except _BlobError as e:
        raise c.fail(c._af("neighbors"), str(e)) from None
    if c.prefix + "codes" in c.arrays:  # the walk's 8-bit codes, saved with the graph
        width = dim + (metric == "l2")
        c.array("codes", np.uint8, (n, width))
        step = c.array("code_step", np.float32, (width,))
        c.finite("code_step", step)
        if step.size and not (step > 0).all():
            raise c.fail(c._af("code_step"), "expected positive steps")
    if c.values:
        c.finite("vectors", X)
    return ids


@validator("hnsw")
def _hnsw(c: StateCheck) -> None:
    _hnsw_part(c)


@validator("filtered")
def _filtered(c: StateCheck) -> None:
    dim = c.cfg_int("dim", lo=1, hi=MAX_DIM)
    metric = c.cfg_choice("metric", _DENSE_METRICS)
    lists_copy = c.config.get("lists_copy", None)  # None: a file from before the one-copy layout
    if lists_copy is not None and not isinstance(lists_copy, bool):
        raise c.fail("config 'lists_copy'", f"expected true or false, got {lists_copy!r:.60}")
    ivf_cfg = c.cfg("ivf")
    if lists_copy is not None and isinstance(ivf_cfg, dict) and lists_copy == (ivf_cfg.get("external_vectors", False) is True):
        raise c.fail("config 'lists_copy'", f"{lists_copy} contradicts the IVF part's 'external_vectors'")
    parts = {}
    for name, check in (("hnsw", _hnsw_part), ("ivf", lambda sub: _ivf_part(sub, owned=True))):
        sub = StateCheck(c.cfg(name), c.arrays, prefix=f"{name}.", values=c.values, deep=c.deep)
        parts[name] = check(sub)
        if sub.config.get("dim") != dim or sub.config.get("metric") != metric:
            raise c.fail(f"config '{name}'", f"dim/metric {sub.config.get('dim')}/{sub.config.get('metric')!r} differ from the index's {dim}/{metric!r}")
    if not np.array_equal(parts["hnsw"], parts["ivf"]):
        raise c.fail("array 'ivf.ids'", "differs from 'hnsw.ids' (the two parts must hold the same rows)")


@validator("seismic")
def _seismic(c: StateCheck) -> None:
    dim = c.cfg_int("dim", lo=1, hi=2**31 - 2)
    for key in ("n_postings", "doc_cut"):
        c.cfg_int(key, lo=1, hi=_I64_MAX)
    c.cfg_int("min_cluster_size", lo=0, hi=_I64_MAX)
    c.cfg_int("seed", lo=0, hi=_I64_MAX)
    c.cfg_number("max_fraction", lo=0.0, hi=1e9)
    c.cfg_number("centroid_fraction", lo=0.0, hi=1.0)
    c.cfg_number("summary_energy", lo=0.0, hi=1.0)
    c.cfg_number("rebuild_fraction", lo=0.0, hi=1e9)
    vd = c.cfg_choice("value_dtype", ("float16", "float32"))
    cd = np.uint16 if dim <= 65536 else np.int32
    fwd_indptr = c.array("fwd_indptr", np.int64, (None,))
    if fwd_indptr.shape[0] == 0:
        raise c.fail("array 'fwd_indptr'", "empty; expected n + 1 offsets")
    n = fwd_indptr.shape[0] - 1
    c.array("ids", np.int64, (n,))
    _ids(c)
    fwd_comps = c.array("fwd_comps", cd, (None,))
    nnz = fwd_comps.shape[0]
    fwd_vals = c.array("fwd_vals", np.uint16 if vd == "float16" else np.float32, (nnz,))
    c.offsets("fwd_indptr", fwd_indptr, end=nnz)
    # passes over every non-zero and posting: with the values on a mapped open (first use,
    # before any kernel), so that opening a multi-GB index costs O(rows + vocabulary)
    if c.deep:
        c.in_range("fwd_comps", fwd_comps, 0, dim)
    c.finite("fwd_vals", fwd_vals.view(np.float16) if vd == "float16" else fwd_vals, nonnegative=True)
    n_indexed = c.cfg_int("n_indexed", lo=0, hi=n)
    list_blk = c.array("list_blk", np.int64, (dim + 1,))
    blk_scale = c.array("blk_scale", np.float32, (None,))
    n_blocks = blk_scale.shape[0]
    blk_min = c.array("blk_min", np.float32, (n_blocks,))
    c.offsets("list_blk", list_blk, end=n_blocks)
    blocks_per_list = np.diff(list_blk)
    max_blocks = int(blocks_per_list.max()) if dim else 0
    if c.cfg_int("max_blocks", lo=0, hi=_I64_MAX) != max_blocks:
        raise c.fail("config 'max_blocks'", f"{c.config['max_blocks']} differs from the largest list's {max_blocks} blocks")
    blk_ptr = c.array("blk_ptr", np.int64, (n_blocks + 1,))
    post_docs = c.array("post_docs", np.int32, (None,))
    c.offsets("blk_ptr", blk_ptr, end=post_docs.shape[0])
    if c.deep:
        c.in_range("post_docs", post_docs, 0, n_indexed)
    c.finite("blk_scale", blk_scale)
    c.finite("blk_min", blk_min)
    c.finite("list_max", c.array("list_max", np.float32, (dim,)))
    # the compact summaries: dtypes and ranges here; their offsets and the bit-packed layout
    # are checked by SeismicIndex._from_state (check_summary_layout) before any kernel runs
    sum_comp = c.array("sum_comp", cd, (None,))
    if c.deep:
        c.in_range("sum_comp", sum_comp, 0, dim)
    for name, dt in (("sum_ent", np.int64), ("sum_bit", np.int64), ("sum_dir", np.int64), ("sum_bmp", np.int64),
                     ("sum_sptr", np.int64)):
        c.offsets(name, c.array(name, dt, (dim + 1,)), end=None)
    for name, dt in (("sum_pack", np.uint8), ("sum_start", np.uint8), ("sum_bm", np.uint32), ("sum_samp", np.uint32)):
        c.array(name, dt, (None,))


# ---------------------------------------------------------------------------
# faiss IndexHNSWFlat byte layout
# ---------------------------------------------------------------------------


class _BlobError(ValueError):
    pass


class _Cursor:
    def __init__(self, blob: np.ndarray):
        self.b = blob
        self.buf = memoryview(blob)
        self.p = 0

    def left(self) -> int:
        return self.b.shape[0] - self.p

    def take(self, fmt: str, what: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if size > self.left():
            raise _BlobError(f"faiss index is truncated at {what} (offset {self.p})")
        v = struct.unpack_from(fmt, self.buf, self.p)
        self.p += size
        return v

    def vector(self, dtype: str, what: str, *, scale: int = 1) -> np.ndarray:
        (size,) = self.take("<Q", f"{what} length")
        dt = np.dtype(dtype)
        count = size * scale
        if count * dt.itemsize > self.left():
            raise _BlobError(f"faiss index: {what} claims {size} entries, more than the {self.left()} bytes left")
        a = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.p)
        self.p += count * dt.itemsize
        return a

    def header(self, what: str, *, d: int, n: int, metric_type: int = 0) -> None:
        d_, n_, _, _, trained, metric = self.take("<iqqqBi", f"{what} header")
        if d_ != d:
            raise _BlobError(f"faiss {what}: dimension {d_}, expected {d}")
        if n_ != n:
            raise _BlobError(f"faiss {what}: {n_} vectors, expected {n} (one per id)")
        if trained not in (0, 1):
            raise _BlobError(f"faiss {what}: is_trained byte {trained}")
        if metric != metric_type:
            raise _BlobError(f"faiss {what}: metric {metric}, expected {metric_type} ({'L2' if metric_type else 'inner product'})")


def check_hnsw_blob(blob: np.ndarray, *, dim: int, n: int, values: bool = True, l2: bool = False) -> None:
    """Validate faiss's serialisation of an inner-product (``l2``: an L2) ``IndexHNSWFlat``
    over ``n`` vectors of dimension ``dim`` (raises ``ValueError`` naming what is wrong).

    Checked: the fourcc codes, both index headers, every vector length against the
    bytes left and the exact end; ``assign_probas`` in [0, 1]; ``cum_nneighbor_per_level``
    starts at 0, increases, and no upper level is wider than level 0; each node's
    ``levels`` entry in [1, number of levels] and its ``offsets`` span equal to
    ``cum[levels]``; every neighbour link in [-1, n) and a level-l link only to a node
    that has level l; the entry point in range at the top level; ``efConstruction`` and
    ``efSearch`` positive; the stored vectors ``n * dim`` floats (finite when ``values``).
    """
    cur = _Cursor(blob)
    if cur.take("4s", "fourcc")[0] != b"IHNf":
        raise _BlobError("faiss index is not an IndexHNSWFlat (fourcc 'IHNf')")
    cur.header("HNSW index", d=dim, n=n, metric_type=int(l2))
    probas = cur.vector("<f8", "assign_probas")
    cum = cur.vector("<i4", "cum_nneighbor_per_level").astype(np.int64)
    levels = cur.vector("<i4", "levels").astype(np.int64)
    offsets = cur.vector("<u8", "offsets")
    nbr = cur.vector("<i4", "neighbors")
    ep, max_level, ef_c, ef_s, _ = cur.take("<5i", "graph settings")
    want = b"IxF2" if l2 else b"IxFI"
    if cur.take("4s", "storage fourcc")[0] != want:
        raise _BlobError(f"faiss storage is not an IndexFlat{'L2' if l2 else 'IP'} (fourcc {want.decode()!r})")
    cur.header("storage", d=dim, n=n, metric_type=int(l2))
    codes = cur.vector("<f4", "stored vectors", scale=1)  # READXBVECTOR: size counts float32 values
    if cur.left():
        raise _BlobError(f"faiss index has {cur.left()} unexpected bytes after its end")
    if codes.shape[0] != n * dim:
        raise _BlobError(f"faiss storage holds {codes.shape[0]} floats, expected {n} x {dim}")
    check_graph(probas, cum, levels, offsets, nbr, ep, max_level, n, deep=True)
    if not (0 < ef_c < 1 << 24 and 0 < ef_s < 1 << 24):
        raise _BlobError(f"faiss HNSW efConstruction/efSearch {ef_c}/{ef_s}: expected positive values")
    if values and codes.size and not np.isfinite(codes).all():
        raise _BlobError("faiss storage holds NaN or inf")


def check_graph(probas: np.ndarray, cum: np.ndarray, levels: np.ndarray, offsets: np.ndarray, nbr: np.ndarray, ep: int,
                max_level: int, n: int, *, deep: bool) -> None:
    """The HNSW graph's level layout, offsets, links and entry point (raises ``ValueError``).

    Always (O(levels) and O(1) reads): ``assign_probas`` in [0, 1]; ``cum_nneighbor_per_level``
    from 0, increasing, no upper level wider than level 0; ``offsets`` n + 1 long, from 0,
    ending at the number of links; the entry point in range at the top level. ``deep``
    (a pass over the whole graph): every node's level in [1, L] and its span equal to
    ``cum[level]``; every link in [-1, n) and a level-l link only to a node that has level l.
    """
    cum = np.asarray(cum, dtype=np.int64)
    L = probas.shape[0]
    if L == 0 or not (np.isfinite(probas).all() and (probas >= 0).all() and (probas <= 1).all()):
        raise _BlobError("faiss HNSW assign_probas: empty or outside [0, 1]")
    if cum.shape[0] != L + 1 or cum[0] != 0 or (np.diff(cum) < 0).any() or cum[1] <= 0:
        raise _BlobError("faiss HNSW cum_nneighbor_per_level: not an increasing table of L + 1 entries from 0")
    widths = np.diff(cum)
    if (widths[1:] > widths[0]).any():
        raise _BlobError("faiss HNSW cum_nneighbor_per_level: an upper level is wider than level 0")
    if levels.shape[0] != n:
        raise _BlobError(f"faiss HNSW levels: {levels.shape[0]} entries, expected {n}")
    if offsets.shape[0] != n + 1 or offsets[0] != 0:
        raise _BlobError("faiss HNSW offsets: expected n + 1 offsets from 0")
    if int(offsets[-1]) != nbr.shape[0]:
        raise _BlobError(f"faiss HNSW neighbors: {nbr.shape[0]} links, offsets end at {int(offsets[-1])}")
    if n == 0:
        if ep != -1 or max_level != -1:
            raise _BlobError("faiss HNSW entry point: set in an empty graph")
    else:
        if not 0 <= ep < n:
            raise _BlobError(f"faiss HNSW entry point {ep} outside [0, {n})")
        if not 1 <= int(levels[ep]) <= L or int(levels[ep]) - 1 != max_level:
            raise _BlobError(f"faiss HNSW max_level {max_level} does not match the entry point's level")
    if not deep:
        return
    levels = np.asarray(levels, dtype=np.int64)
    if n and (levels.min() < 1 or levels.max() > L):
        raise _BlobError(f"faiss HNSW levels: values outside [1, {L}]")
    off = offsets.astype(np.int64)
    if (off < 0).any() or (n and not np.array_equal(np.diff(off), cum[levels])):
        raise _BlobError("faiss HNSW offsets: a node's span differs from its level table")
    if nbr.size and (int(nbr.min()) < -1 or int(nbr.max()) >= n):
        raise _BlobError(f"faiss HNSW neighbors: links outside [-1, {n})")
    step = 1 << 16
    for a in range(0, n, step):  # the level of every link slot: its place in its node's span, through cum
        b = min(n, a + step)
        lo, hi = int(off[a]), int(off[b])
        if hi == lo:
            continue
        owner = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(off[a : b + 1]))
        slot_level = np.searchsorted(cum, np.arange(lo, hi, dtype=np.int64) - off[owner], side="right") - 1
        links = nbr[lo:hi]
        linked = links >= 0
        if (levels[links[linked]] <= slot_level[linked]).any():
            raise _BlobError("faiss HNSW neighbors: a link at level l points to a node below level l")
    if n and max_level != int(levels.max()) - 1:
        raise _BlobError(f"faiss HNSW max_level {max_level} does not match the levels")
