"""Input checks shared by every layer.

Each function raises :class:`ValueError` (or :class:`TypeError` for a wrong kind of
object) with a message that says what was wrong and what was expected. No ``assert``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: the id that pads search results (``SearchResult.ids``); never a valid item id
PADDING_ID = -1


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
    Raises ``ValueError`` on wrong rank, wrong dimension, a dtype that is not real
    numbers (complex numbers would lose their imaginary part, booleans are flags, not
    coordinates), NaN/inf (when ``finite``) or an empty batch (unless ``allow_empty``).
    """
    if hasattr(x, "toarray") and not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a dense array, got a sparse matrix ({type(x).__name__})")
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind == "c":
        raise ValueError(f"{name}: expected real numbers, got complex dtype {arr.dtype} (the imaginary part would be lost)")
    if kind == "b":
        raise ValueError(f"{name}: expected real numbers, got a boolean array (convert it explicitly, e.g. x.astype(np.float32))")
    if kind not in "iuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, d), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: expected dimension {dim}, got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: empty input (0 rows)")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if finite and np.issubdtype(out.dtype, np.floating) and out.size and not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
        what = "contain NaN or inf" if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all() else f"overflow {np.dtype(dtype).name}"
        raise ValueError(f"{name}: {bad} row(s) {what}")
    return out


def as_ints(x: Any, *, name: str, n: int | None = None, what: str = "integers") -> np.ndarray:
    """Return ``x`` as a 1-D C-contiguous int64 array, refusing anything that would not
    survive the conversion exactly.

    Accepted: integer arrays whose values fit in int64 (unsigned ones included while
    below 2**63), float arrays of finite whole numbers in the int64 range, Python
    integers in the int64 range. Refused with ``ValueError`` naming ``name``: values
    outside int64 (they would wrap to other numbers), fractions, NaN/inf, booleans,
    complex numbers, strings, arrays that are not 1-D, and a length other than ``n``.
    """
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {what}, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "i":
        out = np.ascontiguousarray(arr, dtype=np.int64)
    elif kind == "u":
        if arr.dtype.itemsize >= 8 and arr.size and int(arr.max()) > _INT64_MAX:
            bad = arr[arr > np.uint64(_INT64_MAX)]
            raise ValueError(f"{name}: expected {what}, got {bad.size} value(s) above the int64 maximum 2**63-1, e.g. {int(bad[0])}")
        out = np.ascontiguousarray(arr, dtype=np.int64)
    elif kind == "b" and arr.size:
        raise ValueError(f"{name}: expected {what}, got booleans (a boolean array is a mask, not a list of ids)")
    elif kind == "c" and arr.size:
        raise ValueError(f"{name}: expected {what}, got complex dtype {arr.dtype}")
    elif kind == "f" or arr.size == 0:
        if arr.size:
            a64 = arr.astype(np.float64, copy=False)
            ok = np.isfinite(a64) & (a64 == np.round(a64)) & (a64 >= -(2.0**63)) & (a64 < 2.0**63)
            if not ok.all():
                bad = a64[~ok]
                raise ValueError(
                    f"{name}: expected {what}, got {bad.size} value(s) that are not whole numbers in the int64 "
                    f"range (fractions, NaN/inf, or beyond ±2**63), e.g. {float(bad[0])!r}"
                )
        out = np.ascontiguousarray(arr, dtype=np.int64)
    elif kind == "O":
        vals = arr.tolist()
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name}: expected {what}, got {type(v).__name__} {v!r:.60}")
            if not _INT64_MIN <= int(v) <= _INT64_MAX:
                raise ValueError(f"{name}: expected {what}, got {int(v)}, outside the int64 range [-2**63, 2**63-1]")
        out = np.asarray([int(v) for v in vals], dtype=np.int64)
    else:
        raise ValueError(f"{name}: expected {what}, got dtype {arr.dtype}")
    if n is not None and out.shape[0] != n:
        raise ValueError(f"{name}: expected {n} values, got {out.shape[0]}")
    return out


def as_ids(x: Any, *, name: str, n: int | None = None, unique: bool = False) -> np.ndarray:
    """Return ``x`` as a 1-D int64 array of item ids (see :func:`as_ints` for what is refused).

    Ids may be any int64 except ``-1`` (:data:`PADDING_ID`), which marks the empty slots
    of a search result and so can never name an item. ``n``: the expected length;
    ``unique``: refuse repeated ids.
    """
    out = as_ints(x, name=name, what="integer ids")
    if n is not None and out.shape[0] != n:
        raise ValueError(f"{name}: expected {n} ids, got {out.shape[0]}")
    if out.size and (out == PADDING_ID).any():
        raise ValueError(f"{name}: id -1 is reserved (it pads search results) and cannot name an item")
    if unique and out.size > 1:
        s = np.sort(out)
        dup = s[1:][s[1:] == s[:-1]]
        if dup.size:
            raise ValueError(f"{name}: ids must be unique ({dup.size} duplicates, e.g. {int(dup[0])})")
    return out


# -- limits ------------------------------------------------------------------


def _available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; physical memory as a fallback)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


#: bytes of one result slot: an int64 id and a float32 score
RESULT_SLOT_BYTES = 12
#: share of the memory available at import that one call's results may take by default
#: (search kernels hold a few times the result size in heaps and temporaries)
RESULT_MEMORY_SHARE = 1 / 8


class Limits:
    """Per-call caps (see :func:`set_limits`): ``max_k`` results per query and
    ``max_result_bytes`` for the ``(nq, k)`` id and score arrays of one call."""

    __slots__ = ("max_k", "max_result_bytes")

    def __init__(self, max_k: int, max_result_bytes: int):
        self.max_k = max_k
        self.max_result_bytes = max_result_bytes

    def __repr__(self) -> str:
        return f"Limits(max_k={self.max_k}, max_result_bytes={self.max_result_bytes})"


def _env_int(var: str) -> int | None:
    v = os.environ.get(var)
    if v is None or not v.strip():
        return None
    try:
        out = int(v)
    except ValueError:
        out = 0
    if out < 1:
        log.warning("environment variable %s=%r is not a positive integer: ignored", var, v)
        return None
    return out


def _default_limits() -> Limits:
    mem = max(int(_available_memory() * RESULT_MEMORY_SHARE), 1 << 20)
    max_bytes = _env_int("GSU_MAX_RESULT_BYTES") or mem
    max_k = _env_int("GSU_MAX_K") or max(1, max_bytes // RESULT_SLOT_BYTES)
    return Limits(max_k, max_bytes)


LIMITS = _default_limits()


def set_limits(*, max_k: int | None = None, max_result_bytes: int | None = None) -> Limits:
    """Change the per-call caps for the whole process; returns the previous ones.

    Args:
        max_k: the largest ``k`` (results per query) any search accepts.
        max_result_bytes: the largest ``nq * k * 12`` bytes (ids + scores) one call may
            return.

    Defaults: ``max_result_bytes`` is 1/8 of the memory available when gsu is
    imported (``MemAvailable``), ``max_k`` what fits in it for one query;
    ``GSU_MAX_RESULT_BYTES`` / ``GSU_MAX_K`` in the environment override both. A call
    over a cap raises :class:`gsu.errors.LimitError` before allocating anything.
    """
    prev = Limits(LIMITS.max_k, LIMITS.max_result_bytes)
    if max_k is not None:
        LIMITS.max_k = check_positive_int(max_k, name="max_k")
    if max_result_bytes is not None:
        LIMITS.max_result_bytes = check_positive_int(max_result_bytes, name="max_result_bytes")
    return prev


def get_limits() -> Limits:
    """The per-call caps in force (a copy)."""
    return Limits(LIMITS.max_k, LIMITS.max_result_bytes)


def check_result_size(k: int, nq: int, *, name: str = "k") -> None:
    """Raise :class:`gsu.errors.LimitError` when ``k`` or an ``(nq, k)`` result is over the caps."""
    from gsu.errors import LimitError

    lim = LIMITS
    if k > lim.max_k:
        raise LimitError(
            f"{name}={k} is over the limit of {lim.max_k} results per query "
            "(gsu.set_limits(max_k=...) or GSU_MAX_K raise it)"
        )
    need = int(nq) * k * RESULT_SLOT_BYTES
    if need > lim.max_result_bytes:
        raise LimitError(
            f"{nq} queries x {name}={k} need {need:,} bytes of results, over the limit of "
            f"{lim.max_result_bytes:,} bytes per call (split the batch, lower {name}, or "
            "gsu.set_limits(max_result_bytes=...) / GSU_MAX_RESULT_BYTES)"
        )


def check_k(k: Any, *, name: str = "k", nq: int | None = None) -> int:
    """Return ``k`` as a positive ``int``; reject bools, non-integers, k <= 0 and a ``k``
    over the per-call caps (:func:`set_limits`; with ``nq``, the result size too)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"{name}: must be >= 1, got {k}")
    k = int(k)
    if k > LIMITS.max_k or (nq is not None and nq * k * RESULT_SLOT_BYTES > LIMITS.max_result_bytes):
        check_result_size(k, 1 if nq is None else nq, name=name)
    return k


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


# -- validation of saved state (load) -----------------------------------------


class StateCheck:
    """Checks of the config and arrays read from a saved file, before any kernel sees them.

    Every failed check raises :class:`gsu.errors.FieldError` naming the field
    (``config 'dim'``, ``array 'list_offsets'``); the loader adds the file name. ``prefix``
    qualifies names for nested parts (``"hnsw."``); ``values``: also check contents that
    cost a full pass over the large float arrays (finite values); ``deep``: run the
    structural checks that read a whole large array (graph links, permutations) — a mapped
    open defers them, with the values, to the first use, before any kernel runs.
    """

    def __init__(self, config: Any, arrays: dict[str, np.ndarray], *, prefix: str = "", values: bool = True,
                 deep: bool = True):
        from gsu.errors import FieldError

        if not isinstance(config, dict):
            raise FieldError(f"config {prefix.rstrip('.') or 'section'}", f"expected a JSON object, got {type(config).__name__}")
        self.config = config
        self.arrays = arrays
        self.prefix = prefix
        self.values = values
        self.deep = deep or values
        self._err = FieldError

    def fail(self, field: str, reason: str) -> "Exception":
        return self._err(field, reason)

    def _cf(self, key: str) -> str:
        return f"config '{self.prefix}{key}'"

    def _af(self, name: str) -> str:
        return f"array '{self.prefix}{name}'"

    # -- config --------------------------------------------------------------
    def cfg(self, key: str) -> Any:
        if key not in self.config:
            raise self.fail(self._cf(key), "missing")
        return self.config[key]

    def cfg_int(self, key: str, *, lo: int | None = None, hi: int | None = None, none: bool = False) -> int | None:
        v = self.cfg(key)
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(self._cf(key), f"expected an integer, got {v!r:.60}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(self._cf(key), f"{v} is outside [{lo}, {hi}]")
        return v

    def cfg_number(self, key: str, *, lo: float, hi: float) -> float:
        v = self.cfg(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise self.fail(self._cf(key), f"expected a number in [{lo}, {hi}], got {v!r:.60}")
        return float(v)

    def cfg_bool(self, key: str) -> bool:
        v = self.cfg(key)
        if not isinstance(v, bool):
            raise self.fail(self._cf(key), f"expected true or false, got {v!r:.60}")
        return v

    def cfg_choice(self, key: str, choices: tuple[Any, ...]) -> Any:
        v = self.cfg(key)
        if not isinstance(v, (str, int, float, type(None))) or v not in choices:
            raise self.fail(self._cf(key), f"expected one of {choices}, got {v!r:.60}")
        return v

    # -- arrays --------------------------------------------------------------
    def array(self, name: str, dtype: Any, shape: tuple[int | None, ...]) -> np.ndarray:
        """The array ``name`` with exactly ``dtype`` and ``shape`` (``None`` = any length there)."""
        a = self.arrays.get(self.prefix + name)
        if a is None:
            raise self.fail(self._af(name), "missing")
        dts = dtype if isinstance(dtype, tuple) else (dtype,)
        if a.dtype not in [np.dtype(d) for d in dts]:
            want = " or ".join(str(np.dtype(d)) for d in dts)
            raise self.fail(self._af(name), f"dtype {a.dtype.str}, expected {want}")
        if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise self.fail(self._af(name), f"shape {a.shape}, expected {want}")
        return a

    def offsets(self, name: str, a: np.ndarray, *, end: int | None = None) -> None:
        """``a`` starts at 0, never decreases and (given ``end``) ends at ``end``."""
        if a.shape[0] == 0:
            raise self.fail(self._af(name), "empty; expected at least one offset")
        if int(a[0]) != 0:
            raise self.fail(self._af(name), f"starts at {int(a[0])}, expected 0")
        if a.shape[0] > 1:
            d = np.diff(a.astype(np.int64, copy=False))
            if (d < 0).any():
                raise self.fail(self._af(name), f"decreases at position {int(np.argmax(d < 0)) + 1}")
        if end is not None and int(a[-1]) != end:
            raise self.fail(self._af(name), f"ends at {int(a[-1])}, expected {end}")

    def in_range(self, name: str, a: np.ndarray, lo: int, hi: int) -> None:
        """Every value of ``a`` lies in ``[lo, hi)``."""
        if a.size:
            mn, mx = int(a.min()), int(a.max())
            if mn < lo or mx >= hi:
                raise self.fail(self._af(name), f"values span [{mn}, {mx}], outside [{lo}, {hi})")

    def ids(self, name: str, a: np.ndarray) -> None:
        """``a`` holds distinct ids, none of them the padding id -1."""
        if a.size == 0:
            return
        if (a == PADDING_ID).any():
            raise self.fail(self._af(name), "holds id -1, which is reserved for padding")
        if a.shape[0] > 1 and not (int(a[0]) == 0 and int(a[-1]) == a.shape[0] - 1 and (np.diff(a) == 1).all()):
            s = np.sort(a)
            if (s[1:] == s[:-1]).any():
                raise self.fail(self._af(name), f"ids repeat (e.g. {int(s[1:][s[1:] == s[:-1]][0])})")

    def permutation(self, name: str, a: np.ndarray, n: int) -> None:
        """``a`` is a permutation of ``0..n-1``."""
        self.in_range(name, a, 0, max(n, 1))
        if a.shape[0] != n or (n and np.bincount(a, minlength=n).max() != 1):
            raise self.fail(self._af(name), f"is not a permutation of 0..{n - 1}")

    def finite(self, name: str, a: np.ndarray, *, nonnegative: bool = False, chunk: int = 1 << 22) -> None:
        """Every value of the float array ``a`` is finite (and ``>= 0``); skipped when not ``values``."""
        if not self.values or a.size == 0:
            return
        flat = a.reshape(-1)
        for s in range(0, flat.shape[0], chunk):
            c = flat[s : s + chunk]
            if not np.isfinite(c).all():
                raise self.fail(self._af(name), "holds NaN or inf")
            if nonnegative and (c < 0).any():
                raise self.fail(self._af(name), "holds negative values")

    def sorted_rows(self, name: str, indptr: np.ndarray, indices: np.ndarray) -> None:
        """Within each CSR row ``indptr`` of ``indices``, the components strictly increase."""
        if indices.shape[0] < 2:
            return
        d = np.diff(indices.astype(np.int64, copy=False))
        bad = d <= 0
        inner = indptr[1:-1]
        bad[inner[(inner > 0) & (inner < indices.shape[0])] - 1] = False
        if bad.any():
            raise self.fail(self._af(name), "components repeat or are out of order within a row")
