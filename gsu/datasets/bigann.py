"""big-ann-benchmarks binary files: dense ``.fbin`` / ``.u8bin`` / ``.i8bin`` / ``.ibin``,
sparse ``.csr`` / ``.spmat`` and ground-truth files.

Layouts (little-endian, no padding):

=====================  =================================================================
suffix                 layout
=====================  =================================================================
``.fbin``              uint32 ``n``, uint32 ``d``, then ``n × d`` float32 (row-major)
``.u8bin``             the same header, ``n × d`` uint8
``.i8bin``             the same header, ``n × d`` int8
``.ibin``              the same header, ``n × d`` int32 (neighbour ids)
``.csr`` / ``.spmat``  int64 ``nrow``, int64 ``ncol``, int64 ``nnz``, then int64 ``indptr``
                       (``nrow + 1``), int32 ``indices`` (``nnz``), float32 ``data`` (``nnz``)
ground truth (any)     uint32 ``nq``, uint32 ``k``, ``nq × k`` int32 ids, ``nq × k`` float32
                       distances (:func:`read_bigann_truth`)
=====================  =================================================================

Every reader checks the file size against its header before reading a byte of the
body, so a truncated or padded file is one :class:`gsu.errors.DataFormatError` line
naming the file, never a short array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from gsu.errors import DataFormatError

__all__ = ["BIN_DTYPES", "SPARSE_BIN_SUFFIXES", "read_bin", "write_bin", "read_csr_bin", "write_csr_bin",
           "read_bigann_truth", "write_bigann_truth"]

BIN_DTYPES = {".fbin": np.dtype("<f4"), ".u8bin": np.dtype("u1"), ".i8bin": np.dtype("i1"), ".ibin": np.dtype("<i4")}
SPARSE_BIN_SUFFIXES = (".csr", ".spmat")
_MAX_DIM = 1 << 24


def _header(p: Path, n_words: int, dtype: str) -> np.ndarray:
    size = p.stat().st_size
    hb = n_words * np.dtype(dtype).itemsize
    if size < hb:
        raise DataFormatError(f"{p}: truncated: {size} bytes is shorter than the {hb}-byte header")
    return np.fromfile(p, dtype=dtype, count=n_words)


def read_bin(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """Read a big-ann ``.fbin`` / ``.u8bin`` / ``.i8bin`` / ``.ibin`` file as an (n, d) array.

    Returns float32 / uint8 / int8 / int32 (the file's element type). ``mmap``: map the
    body read-only instead of reading it. Raises :class:`DataFormatError` for a header
    of zero rows or columns or a size that disagrees with ``8 + n·d·itemsize`` bytes.
    """
    p = Path(path)
    dt = BIN_DTYPES.get(p.suffix.lower())
    if dt is None:
        raise DataFormatError(f"{p}: unknown big-ann suffix {p.suffix!r}; expected one of {', '.join(BIN_DTYPES)}")
    n, d = (int(v) for v in _header(p, 2, "<u4"))
    if n == 0 or d == 0 or d > _MAX_DIM:
        raise DataFormatError(f"{p}: header declares {n} rows of dimension {d}; expected at least one row and 1 <= d <= {_MAX_DIM}")
    want = 8 + n * d * dt.itemsize
    size = p.stat().st_size
    if size != want:
        what = "truncated" if size < want else "longer than its header says"
        raise DataFormatError(f"{p}: {what}: {size} bytes, the header ({n} x {d} {dt}) needs {want}")
    if mmap:
        return np.memmap(p, dtype=dt, mode="r", offset=8, shape=(n, d))
    return np.fromfile(p, dtype=dt, count=n * d, offset=8).reshape(n, d)


def write_bin(path: Path, arr: np.ndarray, dtype: np.dtype) -> None:
    """Write ``arr`` (n, d), already checked and cast to ``dtype``, to ``path`` (the
    caller's temporary file) in the big-ann layout."""
    dt = np.dtype(dtype)
    n, d = arr.shape
    with open(path, "wb") as f:
        np.asarray([n, d], dtype="<u4").tofile(f)
        np.ascontiguousarray(arr, dtype=dt).tofile(f)


def read_csr_bin(path: str | Path) -> sp.csr_matrix:
    """Read a big-ann sparse ``.csr`` / ``.spmat`` file: (nrow, ncol) CSR, float32 data.

    Checks the size against the header, ``indptr`` (starts at 0, never decreases, ends
    at ``nnz``) and ``indices`` (inside ``[0, ncol)``) before building the matrix.
    """
    p = Path(path)
    nrow, ncol, nnz = (int(v) for v in _header(p, 3, "<i8"))
    if nrow <= 0 or ncol <= 0 or nnz < 0 or ncol > 2**31 - 1:
        raise DataFormatError(f"{p}: header declares nrow={nrow}, ncol={ncol}, nnz={nnz}; expected positive sizes")
    want = 24 + 8 * (nrow + 1) + 4 * nnz + 4 * nnz
    size = p.stat().st_size
    if size != want:
        what = "truncated" if size < want else "longer than its header says"
        raise DataFormatError(f"{p}: {what}: {size} bytes, the header (nrow={nrow}, nnz={nnz}) needs {want}")
    with open(p, "rb") as f:
        f.seek(24)
        indptr = np.fromfile(f, dtype="<i8", count=nrow + 1)
        indices = np.fromfile(f, dtype="<i4", count=nnz)
        data = np.fromfile(f, dtype="<f4", count=nnz)
    if indptr[0] != 0 or indptr[-1] != nnz or (np.diff(indptr) < 0).any():
        raise DataFormatError(f"{p}: indptr must start at 0, never decrease and end at nnz={nnz}")
    if nnz and (indices.min() < 0 or indices.max() >= ncol):
        raise DataFormatError(f"{p}: column indices outside [0, {ncol})")
    return sp.csr_matrix((data, indices, indptr), shape=(nrow, ncol))


def write_csr_bin(path: Path, m: sp.csr_matrix) -> None:
    """Write a canonical CSR matrix to ``path`` in the big-ann ``.csr`` layout."""
    with open(path, "wb") as f:
        np.asarray([m.shape[0], m.shape[1], m.nnz], dtype="<i8").tofile(f)
        np.asarray(m.indptr, dtype="<i8").tofile(f)
        np.asarray(m.indices, dtype="<i4").tofile(f)
        np.asarray(m.data, dtype="<f4").tofile(f)


def read_bigann_truth(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a big-ann ground-truth file: ``(ids (nq, k) int64, distances (nq, k) float32)``."""
    p = Path(path)
    nq, k = (int(v) for v in _header(p, 2, "<u4"))
    if nq == 0 or k == 0:
        raise DataFormatError(f"{p}: header declares {nq} queries x {k} neighbours; expected at least one of each")
    want = 8 + nq * k * 8
    size = p.stat().st_size
    if size != want:
        what = "truncated" if size < want else "longer than its header says"
        raise DataFormatError(f"{p}: {what}: {size} bytes, the header ({nq} x {k}) needs {want}")
    ids = np.fromfile(p, dtype="<i4", count=nq * k, offset=8).reshape(nq, k).astype(np.int64)
    dist = np.fromfile(p, dtype="<f4", count=nq * k, offset=8 + 4 * nq * k).reshape(nq, k)
    if not np.isfinite(dist).all():
        raise DataFormatError(f"{p}: distances hold NaN or inf")
    return ids, dist


def write_bigann_truth(path: str | Path, ids: Any, distances: Any) -> None:
    """Write a big-ann ground-truth file (atomically)."""
    from gsu.datasets.io import atomic_path

    ids = np.asarray(ids)
    distances = np.asarray(distances, dtype=np.float32)
    if ids.ndim != 2 or ids.shape != distances.shape:
        raise ValueError(f"ids {ids.shape} and distances {distances.shape}: expected two (nq, k) arrays")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.asarray(ids.shape, dtype="<u4").tofile(f)
        ids.astype("<i4").tofile(f)
        distances.astype("<f4").tofile(f)
