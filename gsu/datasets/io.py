"""Embedding and sparse-vector files: readers, writers and the checks they share.

Dense formats (one entry point each way, chosen by the file suffix):

========================  ==========================================================
suffix                    layout
========================  ==========================================================
``.npy``                  a 2-D numeric NumPy array (``np.save``; no pickles)
``.fvecs``                per row: int32 ``d``, then ``d`` float32 (TEXMEX / ann-benchmarks)
``.ivecs``                per row: int32 ``d``, then ``d`` int32 (ground-truth neighbour ids)
``.bvecs``                per row: int32 ``d``, then ``d`` uint8 (SIFT1B)
``.hdf5`` / ``.h5``       ann-benchmarks layout: datasets ``train``, ``test``, ``neighbors``,
                          ``distances``; pick one with ``key`` (default ``train``)
``.parquet``              one list / fixed-size-list column of numbers per row (``column``)
========================  ==========================================================

Sparse formats (:func:`read_sparse` / :func:`write_sparse`):

``.npz``
    a SciPy CSR matrix written by :func:`scipy.sparse.save_npz` (so
    :func:`scipy.sparse.load_npz` reads it too) plus an ``ids.npy`` member holding
    the int64 row ids.
``.jsonl``
    JSON lines in Seismic's format, one document per line:
    ``{"id": 17, "vector": {"token": 0.53, ...}}``; tokens are mapped to column ids
    through a vocabulary ``dict[str, int]`` (built while reading, or given — for
    queries, give the documents' vocabulary).

Every problem with a file — unknown suffix, empty file, truncated or ragged
rows, NaN/inf, a non-numeric or wrong-width column, malformed JSON — raises
:class:`gsu.errors.DataFormatError` (a ``ValueError``) whose message starts with
the file's path and says what was wrong and what was expected.

All writers are atomic: they write a temporary file in the target's folder and
rename it over the target only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from gsu.errors import DataFormatError

__all__ = [
    "DENSE_SUFFIXES",
    "SPARSE_SUFFIXES",
    "AnnDataset",
    "read_embeddings",
    "write_embeddings",
    "read_ann_hdf5",
    "write_ann_hdf5",
    "read_sparse",
    "read_sparse_jsonl",
    "write_sparse",
    "read_vocabulary",
    "write_vocabulary",
    "check_sparse",
    "sparse_stats",
    "atomic_path",
]

logger = logging.getLogger(__name__)

DENSE_SUFFIXES = (".npy", ".fvecs", ".ivecs", ".bvecs", ".hdf5", ".h5", ".parquet")
SPARSE_SUFFIXES = (".npz", ".jsonl")
_VECS_DTYPES = {".fvecs": np.dtype("<f4"), ".ivecs": np.dtype("<i4"), ".bvecs": np.dtype("u1")}
_ANN_KEYS = ("train", "test", "neighbors", "distances")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- helpers


def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suf = path.suffix.lower()
    if suf not in allowed:
        raise DataFormatError(f"{path}: unknown {what} file suffix {path.suffix!r}; expected one of {', '.join(allowed)}")
    return suf


def _existing(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{p}: is a folder, expected a file")
    if p.stat().st_size == 0:
        raise DataFormatError(f"{p}: file is empty (0 bytes)")
    return p


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. The
    one atomic-write mechanism of gsu (:func:`gsu._format.atomic_path`: stale
    temporaries of dead writers removed, umask / replaced file's mode kept, folder
    fsync'ed, a folder as ``path`` refused).
    """
    from gsu._format import atomic_path as _atomic

    with _atomic(path) as (tmp, _fd):
        yield tmp


def _check_dense(arr: np.ndarray, *, path: Path, dim: int | None, finite: bool, what: str = "array") -> np.ndarray:
    """Shared checks of a dense 2-D array read from ``path``."""
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataFormatError(f"{path}: {what} has dtype {arr.dtype}; expected a numeric (float or integer) array")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataFormatError(f"{path}: {what} has complex dtype {arr.dtype}; expected real numbers")
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: {what} has shape {arr.shape}; expected a 2-D array (n, d)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataFormatError(f"{path}: {what} is empty (shape {arr.shape}); expected at least one row and column")
    if dim is not None and arr.shape[1] != dim:
        raise DataFormatError(f"{path}: {what} has dimension {arr.shape[1]}; expected {dim}")
    if finite and np.issubdtype(arr.dtype, np.floating):
        bad_rows = ~np.isfinite(arr).all(axis=1)
        if bad_rows.any():
            first = int(np.flatnonzero(bad_rows)[0])
            raise DataFormatError(
                f"{path}: {int(bad_rows.sum())} row(s) contain NaN or inf (first bad row: {first}); expected finite values"
            )
    return arr


def _float32(arr: np.ndarray) -> np.ndarray:
    """Floating arrays become float32; integer arrays keep their dtype."""
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


# --------------------------------------------------------------------------- dense readers


def read_embeddings(
    path: PathLike,
    *,
    key: str | None = None,
    column: str | None = None,
    dim: int | None = None,
    mmap: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Read a dense 2-D array from ``path``, choosing the format by the suffix.

    Args:
        path: a ``.npy``, ``.fvecs``, ``.ivecs``, ``.bvecs``, ``.hdf5``/``.h5`` or
            ``.parquet`` file (see the module docstring for the layouts).
        key: HDF5 only — the dataset to read (``train`` (default), ``test``,
            ``neighbors``, ``distances`` or any other 2-D dataset in the file).
        column: Parquet only — the list column to read; may be omitted when the file
            has exactly one list column.
        dim: when given, the expected number of columns ``d``; any other width raises.
        mmap: ``.npy``/``.fvecs``/``.ivecs``/``.bvecs`` only — map the file read-only
            instead of reading it (``.fvecs`` etc. give a strided view that skips the
            per-row length words). Other formats ignore it.
        finite: reject NaN/inf in floating data (default ``True``).

    Returns:
        ``(n, d)`` array: float32 for floating data (float64 files are converted),
        int32 for ``.ivecs``, uint8 for ``.bvecs``, the stored integer dtype otherwise.

    Raises:
        DataFormatError: unknown suffix, empty or truncated file, ragged rows, a
            non-numeric or complex dtype, a wrong dimension, NaN/inf, a missing key
            or column — the message names the file.
        FileNotFoundError: ``path`` does not exist.
    """
    p = _existing(path)
    suf = _suffix(p, DENSE_SUFFIXES, "embedding")
    if key is not None and suf not in (".hdf5", ".h5"):
        raise ValueError(f"{p}: key= applies to HDF5 files only (got key={key!r} for a {suf} file)")
    if column is not None and suf != ".parquet":
        raise ValueError(f"{p}: column= applies to Parquet files only (got column={column!r} for a {suf} file)")
    if suf == ".npy":
        arr = _read_npy(p, mmap=mmap)
    elif suf in _VECS_DTYPES:
        arr = _read_vecs(p, _VECS_DTYPES[suf], mmap=mmap)
    elif suf in (".hdf5", ".h5"):
        arr = _read_hdf5(p, key or "train")
    else:
        arr = _read_parquet(p, column)
    arr = _check_dense(arr, path=p, dim=dim, finite=finite)
    return _float32(arr)


def _read_npy(p: Path, *, mmap: bool) -> np.ndarray:
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        # NumPy raises ValueError both for object arrays (pickles) and for bad headers.
        raise DataFormatError(f"{p}: not a readable numeric .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataFormatError(f"{p}: truncated or corrupted .npy file ({e})") from None


def _read_vecs(p: Path, dtype: np.dtype, *, mmap: bool) -> np.ndarray:
    size = p.stat().st_size
    if size < 4:
        raise DataFormatError(f"{p}: truncated: {size} bytes is shorter than one row's 4-byte dimension header")
    d = int(np.fromfile(p, dtype="<i4", count=1)[0])
    if d <= 0 or d > 1 << 24:
        raise DataFormatError(f"{p}: first row declares dimension {d}; expected a positive dimension")
    row_bytes = 4 + d * dtype.itemsize
    if size % row_bytes:
        raise DataFormatError(
            f"{p}: file size {size} bytes is not a multiple of the row size {row_bytes} bytes (d={d}): "
            f"truncated, ragged rows, or not a {p.suffix} file"
        )
    n = size // row_bytes
    raw = np.memmap(p, dtype=np.uint8, mode="r", shape=(n, row_bytes)) if mmap else np.fromfile(p, dtype=np.uint8).reshape(n, row_bytes)
    dims = np.ascontiguousarray(raw[:, :4]).view("<i4").ravel()
    if (dims != d).any():
        bad = int(np.flatnonzero(dims != d)[0])
        raise DataFormatError(f"{p}: ragged rows: row {bad} declares dimension {int(dims[bad])}, row 0 declares {d}")
    body = raw[:, 4:]
    if mmap:
        return body.view(dtype) if dtype.itemsize == 1 else np.ndarray((n, d), dtype=dtype, buffer=raw, offset=4, strides=(row_bytes, dtype.itemsize))
    return np.ascontiguousarray(body).view(dtype).reshape(n, d)


def _read_hdf5(p: Path, key: str) -> np.ndarray:
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DataFormatError(f"{p}: not a readable HDF5 file ({e})") from None
    with f:
        if key not in f:
            keys = sorted(f.keys())
            raise DataFormatError(f"{p}: no dataset {key!r} in this HDF5 file; it holds {keys}")
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise DataFormatError(f"{p}: {key!r} is a group, expected a 2-D dataset")
        if ds.dtype.kind not in "fiub":
            raise DataFormatError(f"{p}: dataset {key!r} has dtype {ds.dtype}; expected numbers")
        return ds[()]


def _read_parquet(p: Path, column: str | None) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(p)
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{p}: not a readable Parquet file ({e})") from None
    list_cols = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)]
    if column is None:
        if len(list_cols) != 1:
            raise DataFormatError(
                f"{p}: has {len(list_cols)} list columns {list_cols}; pass column= to choose the embedding column"
            )
        column = list_cols[0]
    if column not in schema.names:
        raise DataFormatError(f"{p}: no column {column!r}; columns are {schema.names}")
    if column not in list_cols:
        raise DataFormatError(f"{p}: column {column!r} has type {schema.field(column).type}; expected a list of numbers per row")
    try:
        col = pq.read_table(p, columns=[column]).column(column).combine_chunks()
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{p}: cannot read column {column!r} ({e})") from None
    n = len(col)
    if n == 0:
        raise DataFormatError(f"{p}: column {column!r} has no rows")
    if col.null_count:
        raise DataFormatError(f"{p}: column {column!r} has {col.null_count} null row(s); expected a vector in every row")
    value_type = col.type.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise DataFormatError(f"{p}: column {column!r} holds {value_type} values; expected numbers")
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    else:
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        d = int(lengths[0])
        if (lengths != d).any():
            bad = int(np.flatnonzero(lengths != d)[0])
            raise DataFormatError(f"{p}: ragged rows in column {column!r}: row {bad} has {int(lengths[bad])} values, row 0 has {d}")
    values = col.flatten()
    if values.null_count:
        raise DataFormatError(f"{p}: column {column!r} contains {values.null_count} null value(s)")
    return values.to_numpy(zero_copy_only=False).reshape(n, d)


@dataclass(frozen=True)
class AnnDataset:
    """An ann-benchmarks HDF5 file.

    Attributes:
        train: (n, d) float32 base vectors.
        test: (nq, d) float32 queries.
        neighbors: (nq, k) int64 true neighbour ids (row numbers of ``train``), or None.
        distances: (nq, k) float32 true distances, or None.
        distance: the file's ``distance`` attribute (``angular``, ``euclidean``, ``ip`` ...) or "".
    """

    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray | None
    distances: np.ndarray | None
    distance: str


def read_ann_hdf5(path: PathLike) -> AnnDataset:
    """Read all four datasets of an ann-benchmarks file (``neighbors``/``distances`` optional)."""
    import h5py

    p = _existing(path)
    _suffix(p, (".hdf5", ".h5"), "HDF5")
    train = read_embeddings(p, key="train")
    test = read_embeddings(p, key="test", dim=train.shape[1])
    with h5py.File(p, "r") as f:
        have = set(f.keys())
        distance = f.attrs.get("distance", "")
    distance = distance.decode() if isinstance(distance, bytes) else str(distance)
    neighbors = read_embeddings(p, key="neighbors").astype(np.int64) if "neighbors" in have else None
    distances = read_embeddings(p, key="distances") if "distances" in have else None
    for name, arr in (("neighbors", neighbors), ("distances", distances)):
        if arr is not None and arr.shape[0] != test.shape[0]:
            raise DataFormatError(f"{p}: {name} has {arr.shape[0]} rows but test has {test.shape[0]}")
    if neighbors is not None and neighbors.size and (neighbors.max() >= train.shape[0] or neighbors.min() < -1):
        raise DataFormatError(f"{p}: neighbors hold ids outside [0, {train.shape[0]}) (and -1 for padding)")
    return AnnDataset(train=train, test=test, neighbors=neighbors, distances=distances, distance=distance)


# --------------------------------------------------------------------------- dense writers


def _check_for_write(array: Any, *, what: str = "array") -> np.ndarray:
    if hasattr(array, "toarray") and not isinstance(array, np.ndarray):
        raise TypeError(f"{what}: expected a dense array, got a sparse matrix ({type(array).__name__}); use write_sparse")
    arr = np.asarray(array)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{what}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what}: refusing to write an empty array of shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{what}: {int((~np.isfinite(arr).all(axis=1)).sum())} row(s) contain NaN or inf")
    return arr


def _cast_exact(arr: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    """Cast to an integer dtype, refusing fractions and out-of-range values."""
    info = np.iinfo(dtype)
    if np.issubdtype(arr.dtype, np.floating) and (arr != np.round(arr)).any():
        raise ValueError(f"{path}: {path.suffix} stores integers; the array holds fractional values")
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(f"{path}: {path.suffix} stores {dtype} in [{info.min}, {info.max}]; values range over [{arr.min()}, {arr.max()}]")
    return arr.astype(dtype)


def write_embeddings(path: PathLike, array: Any, *, key: str = "train", column: str = "embedding") -> None:
    """Write a dense 2-D array to ``path`` in the format its suffix names (atomically).

    Args:
        path: target file; the suffix picks the format (see the module docstring).
        array: (n, d) real numbers, finite, non-empty. ``.fvecs`` stores float32,
            ``.ivecs`` int32 and ``.bvecs`` uint8 (integers must fit; no fractions);
            ``.npy``/``.hdf5``/``.parquet`` keep float32 for floats and the integer dtype
            for integers (float64 is stored as float32).
        key: HDF5 only — dataset name (one dataset per file; use :func:`write_ann_hdf5`
            for a full ann-benchmarks file).
        column: Parquet only — name of the fixed-size-list column.

    Raises:
        DataFormatError: unknown suffix.  ValueError/TypeError: an array that the
        readers would refuse (ragged, NaN/inf, empty, not 2-D, non-numeric).
    """
    p = Path(path)
    suf = _suffix(p, DENSE_SUFFIXES, "embedding")
    arr = _float32(_check_for_write(array, what=str(p)))
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    with atomic_path(p) as tmp:
        if suf == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        elif suf in _VECS_DTYPES:
            dt = _VECS_DTYPES[suf]
            body = arr.astype(dt) if suf == ".fvecs" else _cast_exact(arr, dt, p)
            n, d = body.shape
            out = np.empty((n, 4 + d * dt.itemsize), dtype=np.uint8)
            out[:, :4] = np.full((n, 1), d, dtype="<i4").view(np.uint8)
            out[:, 4:] = np.ascontiguousarray(body).view(np.uint8).reshape(n, -1)
            out.tofile(tmp)
        elif suf in (".hdf5", ".h5"):
            import h5py

            with h5py.File(tmp, "w") as f:
                f.create_dataset(key, data=arr)
        else:
            _write_parquet(tmp, arr, column)


def _write_parquet(tmp: Path, arr: np.ndarray, column: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, d = arr.shape
    values = pa.array(np.ascontiguousarray(arr).ravel())
    col = pa.FixedSizeListArray.from_arrays(values, d)
    pq.write_table(pa.table({column: col}), tmp)


def write_ann_hdf5(
    path: PathLike,
    *,
    train: Any,
    test: Any,
    neighbors: Any | None = None,
    distances: Any | None = None,
    distance: str = "angular",
) -> None:
    """Write an ann-benchmarks HDF5 file (atomically).

    Args:
        train: (n, d) base vectors;  test: (nq, d) queries (same ``d``).
        neighbors: optional (nq, k) int true neighbour row ids;  distances: optional (nq, k).
        distance: stored as the file attribute ``distance`` (ann-benchmarks uses
            ``angular``, ``euclidean``, ``jaccard``, ``hamming``).
    """
    import h5py

    p = Path(path)
    _suffix(p, (".hdf5", ".h5"), "HDF5")
    data = {"train": _float32(_check_for_write(train, what="train")), "test": _float32(_check_for_write(test, what="test"))}
    if data["test"].shape[1] != data["train"].shape[1]:
        raise ValueError(f"test: dimension {data['test'].shape[1]} differs from train's {data['train'].shape[1]}")
    nq = data["test"].shape[0]
    if neighbors is not None:
        data["neighbors"] = _cast_exact(_check_for_write(neighbors, what="neighbors"), np.dtype(np.int32), p)
    if distances is not None:
        data["distances"] = _check_for_write(distances, what="distances").astype(np.float32)
    for name in ("neighbors", "distances"):
        if name in data and data[name].shape[0] != nq:
            raise ValueError(f"{name}: {data[name].shape[0]} rows, expected one per test query ({nq})")
    with atomic_path(p) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["distance"] = distance
        for name, arr in data.items():
            f.create_dataset(name, data=arr)


# --------------------------------------------------------------------------- sparse checks


def check_sparse(
    x: Any,
    *,
    name: str = "matrix",
    nonnegative: bool = False,
    n_cols: int | None = None,
    sum_duplicates: bool = False,
    allow_empty_rows: bool = True,
    error: type[ValueError] = ValueError,
) -> sp.csr_matrix:
    """Check a sparse matrix and return it as canonical float32 CSR.

    Canonical means: ``csr_matrix`` with float32 ``data``, int32/int64 indices sorted
    within each row, no duplicate column in a row, no explicit zeros. Indices that are
    merely unsorted are sorted and explicit zeros dropped (both lossless); everything
    else is an error.

    Args:
        x: any SciPy sparse matrix or array (COO/CSC are converted).
        name: what to call ``x`` in error messages (a reader passes the file path).
        nonnegative: reject negative weights (learned sparse retrieval and the
            Seismic-style index assume weights >= 0). Negative weights are allowed
            when False (the file readers' default).
        n_cols: when given, the expected number of columns (vocabulary size).
        sum_duplicates: add up repeated (row, column) entries instead of rejecting them.
        allow_empty_rows: when False, rows without any non-zero are rejected.
        error: the exception class to raise (readers pass ``DataFormatError``).

    Raises:
        TypeError: ``x`` is not a SciPy sparse matrix.
        ``error``: NaN/inf weights, duplicates, negative weights when ``nonnegative``,
        wrong column count, empty rows when not allowed.
    """
    if not sp.issparse(x):
        raise TypeError(f"{name}: expected a scipy.sparse matrix (CSR), got {type(x).__name__}")
    if x.ndim != 2:
        raise error(f"{name}: expected a 2-D sparse matrix, got {x.ndim}-D")
    if x.dtype.kind not in "fiub":
        raise error(f"{name}: sparse weights have dtype {x.dtype}; expected real numbers")
    m = sp.csr_matrix(x, dtype=np.float32, copy=True) if not (sp.isspmatrix_csr(x) and x.dtype == np.float32) else x.copy()
    if n_cols is not None and m.shape[1] != n_cols:
        raise error(f"{name}: has {m.shape[1]} columns; expected {n_cols} (the vocabulary size)")
    if m.nnz and not np.isfinite(m.data).all():
        raise error(f"{name}: {int((~np.isfinite(m.data)).sum())} weight(s) are NaN or inf; expected finite weights")
    if m.nnz and (m.indices.min() < 0 or m.indices.max() >= m.shape[1]):
        raise error(f"{name}: column indices outside [0, {m.shape[1]})")
    if not m.has_sorted_indices:
        m.sort_indices()
    if m.nnz:
        row_of = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        dup = (np.diff(m.indices) == 0) & (row_of[1:] == row_of[:-1])
        if dup.any():
            if not sum_duplicates:
                first = int(row_of[1:][dup][0])
                raise error(f"{name}: {int(dup.sum())} duplicate (row, column) entries (first in row {first}); expected each term once per row")
            m.sum_duplicates()
    m.eliminate_zeros()
    if nonnegative and m.nnz and (m.data < 0).any():
        rows = np.unique(np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))[m.data < 0])
        raise error(f"{name}: {int((m.data < 0).sum())} negative weight(s) in {rows.size} row(s) (first row {int(rows[0])}); expected weights >= 0")
    if not allow_empty_rows:
        empty = np.flatnonzero(np.diff(m.indptr) == 0)
        if empty.size:
            raise error(f"{name}: {empty.size} empty row(s) (first: {int(empty[0])}); expected at least one non-zero per row")
    m.has_sorted_indices = True
    return m


def sparse_stats(x: sp.csr_matrix) -> dict[str, float]:
    """Summary of a CSR matrix: rows, cols, nnz, nnz per row (min/mean/max), empty rows, negative weights."""
    x = sp.csr_matrix(x)
    per_row = np.diff(x.indptr)
    return {
        "rows": int(x.shape[0]),
        "cols": int(x.shape[1]),
        "nnz": int(x.nnz),
        "nnz_per_row_min": int(per_row.min()) if per_row.size else 0,
        "nnz_per_row_mean": float(per_row.mean()) if per_row.size else 0.0,
        "nnz_per_row_max": int(per_row.max()) if per_row.size else 0,
        "empty_rows": int((per_row == 0).sum()),
        "negative_weights": int((x.data < 0).sum()),
    }


# --------------------------------------------------------------------------- sparse readers


def read_sparse(
    path: PathLike,
    *,
    vocabulary: dict[str, int] | None = None,
    unknown: Literal["add", "drop", "error"] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Read a sparse collection: ``(csr, ids)``.

    Args:
        path: ``.npz`` (SciPy CSR + ids) or ``.jsonl`` (Seismic format).
        vocabulary: ``.jsonl`` only — the token-to-column map. It is **extended in
            place** with unseen tokens when ``unknown="add"`` (pass an empty dict to
            receive the vocabulary built from the file); when ``None`` a fresh
            vocabulary is built and discarded — use :func:`read_sparse_jsonl` to get it.
        unknown: ``.jsonl`` only — what to do with a token missing from
            ``vocabulary``: ``"add"`` gives it the next free id, ``"drop"`` skips it
            (queries against a fixed document vocabulary: such a token matches no
            document anyway), ``"error"`` raises. ``None`` (default) means ``"drop"``
            when a non-empty ``vocabulary`` is given and ``"add"`` otherwise, so a
            documents' vocabulary handed in for queries is never altered.

    Returns:
        csr: ``(n, V)`` float32 CSR, canonical (sorted indices, no duplicates, no
            explicit zeros). For ``.jsonl``, ``V`` is one more than the largest id
            in ``vocabulary``. Negative weights are kept (see :func:`check_sparse`).
        ids: ``(n,)`` int64 document ids (``0..n-1`` when an ``.npz`` has none).

    Raises:
        DataFormatError naming the file: unknown suffix, empty file, malformed JSON,
        missing ``id``/``vector``, non-numeric or NaN/inf weights, duplicate entries.
    """
    p = _existing(path)
    suf = _suffix(p, SPARSE_SUFFIXES, "sparse")
    if suf == ".npz":
        if vocabulary is not None:
            raise ValueError(f"{p}: vocabulary= applies to .jsonl files only")
        return _read_npz(p)
    csr, ids, _ = read_sparse_jsonl(p, vocabulary=vocabulary, unknown=unknown)
    return csr, ids


def _read_npz(p: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    try:
        with open(p, "rb") as fh:  # our own handle: np.load leaks its file on a bad zip
            with np.load(fh, allow_pickle=False) as z:
                ids = z["ids"] if "ids" in z.files else None
            fh.seek(0)
            m = sp.load_npz(fh)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataFormatError(f"{p}: not a readable SciPy sparse .npz file ({type(e).__name__}: {e})") from None
    m = check_sparse(m, name=str(p), error=DataFormatError)
    if ids is None:
        ids = np.arange(m.shape[0], dtype=np.int64)
    else:
        if ids.ndim != 1 or ids.shape[0] != m.shape[0]:
            raise DataFormatError(f"{p}: ids has shape {ids.shape}; expected ({m.shape[0]},), one per row")
        if ids.dtype.kind not in "iu":
            raise DataFormatError(f"{p}: ids have dtype {ids.dtype}; expected integers")
        ids = ids.astype(np.int64)
    return m, ids


def _dup_check_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


class _DuplicateKey(Exception):
    pass


_NUMBER_TYPES = {float, int}  # JSON numbers; bool (true/false) is refused as a weight


def read_sparse_jsonl(
    path: PathLike,
    *,
    vocabulary: dict[str, int] | None = None,
    unknown: Literal["add", "drop", "error"] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, dict[str, int]]:
    """Read Seismic-format JSON lines: ``(csr, ids, vocabulary)``.

    Each non-blank line is ``{"id": <int>, "vector": {<token>: <weight>, ...}, ...}``
    (other keys such as ``"content"`` are ignored). A token repeated within one
    vector is an error. See :func:`read_sparse` for ``vocabulary`` and ``unknown``.
    The returned vocabulary is the given dict (extended when ``unknown="add"``) or
    a new one, with ids assigned in order of first appearance.
    """
    p = _existing(path)
    vocab: dict[str, int] = {} if vocabulary is None else vocabulary
    if not isinstance(vocab, dict):
        raise TypeError(f"vocabulary: expected a dict mapping token -> column id, got {type(vocab).__name__}")
    if unknown is None:
        unknown = "drop" if vocab else "add"
    if unknown not in ("add", "drop", "error"):
        raise ValueError(f"unknown: expected 'add', 'drop', 'error' or None, got {unknown!r}")
    next_id = (max(vocab.values()) + 1) if vocab else 0
    ids: list[int] = []
    indptr = [0]
    cols: list[int] = []
    vals: list[float] = []
    n_dropped = 0
    vget = vocab.get
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line, object_pairs_hook=_dup_check_hook)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{p}: line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            except _DuplicateKey as e:
                raise DataFormatError(f"{p}: line {lineno}: token or key {e.args[0]!r} appears twice in one object") from None
            if not isinstance(doc, dict) or "vector" not in doc or "id" not in doc:
                raise DataFormatError(f'{p}: line {lineno}: expected an object with "id" and "vector" keys')
            did = doc["id"]
            if isinstance(did, bool) or not isinstance(did, int):
                raise DataFormatError(f'{p}: line {lineno}: "id" is {did!r:.60}; expected an integer')
            if not -(2**63) <= did < 2**63 or did == -1:
                raise DataFormatError(f'{p}: line {lineno}: "id" {did} is outside int64 or the reserved -1; expected an int64 id')
            vec = doc["vector"]
            if not isinstance(vec, dict):
                raise DataFormatError(f'{p}: line {lineno}: "vector" is a {type(vec).__name__}; expected an object {{token: weight}}')
            toks = list(vec)
            ws = list(vec.values())
            if not set(map(type, ws)) <= _NUMBER_TYPES:
                bad = next(t for t, w in zip(toks, ws) if type(w) not in _NUMBER_TYPES)
                raise DataFormatError(f"{p}: line {lineno}: weight of token {bad!r} is {vec[bad]!r}; expected a number")
            c = list(map(vget, toks))
            if None in c:  # tokens outside the vocabulary (rare once it is built)
                for j, tok in enumerate(toks):
                    if c[j] is not None:
                        continue
                    if unknown == "add":
                        c[j] = vocab[tok] = next_id
                        next_id += 1
                    elif unknown == "error":
                        raise DataFormatError(f"{p}: line {lineno}: token {tok!r} is not in the vocabulary")
                if unknown == "drop":
                    keep = [j for j, cj in enumerate(c) if cj is not None]
                    n_dropped += len(c) - len(keep)
                    c = [c[j] for j in keep]
                    ws = [ws[j] for j in keep]
            cols.extend(c)
            vals.extend(ws)
            ids.append(did)
            indptr.append(len(cols))
    if not ids:
        raise DataFormatError(f"{p}: no documents (only blank lines)")
    if n_dropped:
        logger.info("%s: dropped %d entries with tokens outside the vocabulary", p, n_dropped)
    with np.errstate(over="ignore"):
        data = np.asarray(vals, dtype=np.float64).astype(np.float32)
    if data.size and not np.isfinite(data).all():
        raise DataFormatError(f"{p}: {int((~np.isfinite(data)).sum())} weight(s) are NaN/inf or overflow float32")
    m = sp.csr_matrix(
        (data, np.asarray(cols, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(ids), next_id),
    )
    m = check_sparse(m, name=str(p), error=DataFormatError)
    return m, np.asarray(ids, dtype=np.int64), vocab


# --------------------------------------------------------------------------- sparse writers


def write_sparse(
    path: PathLike,
    matrix: Any,
    *,
    ids: Any | None = None,
    vocabulary: Mapping[str, int] | None = None,
    compressed: bool = True,
) -> None:
    """Write a sparse collection (atomically).

    Args:
        path: ``.npz`` or ``.jsonl``.
        matrix: (n, V) SciPy sparse matrix; canonicalised with :func:`check_sparse`
            (negative weights allowed, duplicates rejected).
        ids: optional (n,) int64 row ids (default ``0..n-1``).
        vocabulary: ``.jsonl`` only — token-to-column map; columns without a token are
            written as their decimal column number. Must be one-to-one.
        compressed: ``.npz`` only — zip-deflate the arrays (smaller, slower).
    """
    p = Path(path)
    suf = _suffix(p, SPARSE_SUFFIXES, "sparse")
    m = check_sparse(matrix, name="matrix")
    n = m.shape[0]
    if n == 0:
        raise ValueError("matrix: refusing to write a collection with 0 rows")
    if ids is None:
        id_arr = np.arange(n, dtype=np.int64)
    else:
        id_arr = np.asarray(ids)
        if id_arr.ndim != 1 or id_arr.shape[0] != n or (id_arr.size and id_arr.dtype.kind not in "iu"):
            raise ValueError(f"ids: expected {n} integer ids, got shape {id_arr.shape} dtype {id_arr.dtype}")
        id_arr = id_arr.astype(np.int64)
    if suf == ".npz":
        if vocabulary is not None:
            raise ValueError(f"{p}: vocabulary= applies to .jsonl files only (store it with write_vocabulary)")
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                sp.save_npz(f, m, compressed=compressed)
            with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as z:
                with z.open("ids.npy", "w") as member:
                    np.lib.format.write_array(member, id_arr, allow_pickle=False)
        return
    tokens = np.array([str(c) for c in range(m.shape[1])], dtype=object)
    if vocabulary is not None:
        inv: dict[int, str] = {}
        for tok, c in vocabulary.items():
            if c in inv:
                raise ValueError(f"vocabulary: tokens {inv[c]!r} and {tok!r} both map to column {c}")
            inv[c] = tok
        for c, tok in inv.items():
            if 0 <= c < m.shape[1]:
                tokens[c] = tok
        if len(set(tokens.tolist())) != tokens.size:
            raise ValueError("vocabulary: a token equals the decimal name of an unmapped column; give every column a token")
    with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i in range(n):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            vec = dict(zip(tokens[m.indices[lo:hi]].tolist(), m.data[lo:hi].tolist()))
            f.write(json.dumps({"id": int(id_arr[i]), "vector": vec}, ensure_ascii=False))
            f.write("\n")


# --------------------------------------------------------------------------- vocabularies


def write_vocabulary(path: PathLike, vocabulary: Mapping[str, int]) -> None:
    """Write a token-to-id vocabulary as a JSON object (atomically)."""
    p = Path(path)
    vals = list(vocabulary.values())
    if len(set(vals)) != len(vals):
        raise ValueError("vocabulary: two tokens map to the same id")
    with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({str(k): int(v) for k, v in vocabulary.items()}, f, ensure_ascii=False)


def read_vocabulary(path: PathLike) -> dict[str, int]:
    """Read a vocabulary: a JSON object ``{token: id}`` or a ``.txt`` file with one token per line (id = line number)."""
    p = _existing(path)
    if p.suffix.lower() == ".txt":
        with open(p, encoding="utf-8") as f:
            toks = [line.rstrip("\n") for line in f]
        vocab = {t: i for i, t in enumerate(toks)}
        if len(vocab) != len(toks):
            raise DataFormatError(f"{p}: {len(toks) - len(vocab)} repeated token(s); expected each token once")
        return vocab
    try:
        with open(p, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{p}: malformed JSON vocabulary ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in obj.values()):
        raise DataFormatError(f"{p}: expected a JSON object mapping token -> non-negative integer id")
    if len(set(obj.values())) != len(obj):
        raise DataFormatError(f"{p}: two tokens map to the same id")
    return obj
