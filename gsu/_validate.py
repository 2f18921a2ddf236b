"""Input checks shared by every layer.

Each function raises :class:`ValueError` (or :class:`TypeError` for a wrong kind of
object) with a message that says what was wrong and what was expected. No ``assert``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_matrix(
    x: Any,
    *,
    name: str,
    dim: int | None = None,
    dtype: type = np.float32,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous 2-D array of ``dtype``.

    A 1-D input of length ``dim`` is treated as a single row (a batch of one).
    Raises ``ValueError`` on wrong rank, wrong dimension, non-numeric dtype, NaN/inf
    (when ``finite``) or an empty batch (unless ``allow_empty``).
    """
    if hasattr(x, "toarray") and not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a dense array, got a sparse matrix ({type(x).__name__})")
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, d), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: expected dimension {dim}, got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: empty input (0 rows)")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if finite and np.issubdtype(out.dtype, np.floating) and out.size and not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf")
    return out


def as_ids(x: Any, *, name: str, n: int | None = None, unique: bool = False) -> np.ndarray:
    """Return ``x`` as a 1-D int64 array; optionally check its length and uniqueness."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of integer ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            pass
        else:
            raise ValueError(f"{name}: expected integer ids, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if n is not None and out.shape[0] != n:
        raise ValueError(f"{name}: expected {n} ids, got {out.shape[0]}")
    if unique and out.size and np.unique(out).size != out.size:
        raise ValueError(f"{name}: ids must be unique ({out.size - np.unique(out).size} duplicates)")
    return out


def check_k(k: Any, *, name: str = "k") -> int:
    """Return ``k`` as a positive ``int``; reject bools, non-integers and k <= 0."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"{name}: must be >= 1, got {k}")
    return int(k)


def check_choice(value: Any, *, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return str(value)


def check_positive_int(value: Any, *, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)
