"""Per-query filters from files, and attribute filters on a selectivity grid.

A *filter set* is one sorted int64 array of allowed item ids per query (a user's
behavior set differs per request). Files (:func:`read_filters` / :func:`write_filters`):

==================  ===================================================================
suffix              layout
==================  ===================================================================
``.jsonl``          one line per query: a JSON list of ids ``[3, 17, 42]`` or an object
                    ``{"ids": [...]}`` (other keys ignored); blank lines are skipped
``.npz``            a SciPy sparse matrix (``save_npz``), one row per query, one column
                    per item id: the stored (non-zero) columns of row ``i`` are query
                    ``i``'s allowed ids
``.parquet``        a list column of integers (``column``; may be omitted when the file
                    has exactly one list column), one row per query
==================  ===================================================================

Attribute filters (:func:`attribute_filters`): from one value per item (a year, a price,
a category) and a grid of selectivities, draw per query either a contiguous *range* of
the attribute holding that share of the items (numbers) or a random set of whole
*categories* adding up to it (strings / few distinct values).

Every problem is a :class:`gsu.errors.DataFormatError` (a ``ValueError``) naming the file
and, for JSON lines, the line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gsu.errors import DataFormatError

__all__ = ["FILTER_SUFFIXES", "read_filters", "write_filters", "read_attribute", "attribute_filters"]

log = logging.getLogger(__name__)

FILTER_SUFFIXES = (".jsonl", ".npz", ".parquet")
_I64 = (-(2**63), 2**63 - 1)


def _existing(path: str | os.PathLike) -> Path:
    from gsu.datasets.io import _existing as ex

    return ex(path)


def _clean(p: Path, where: str, ids: np.ndarray, n_items: int | None) -> np.ndarray:
    """Sorted unique int64 ids; out-of-range ids are an error naming ``where``."""
    if ids.size and n_items is not None and (ids.min() < 0 or ids.max() >= n_items):
        bad = ids[(ids < 0) | (ids >= n_items)][0]
        raise DataFormatError(f"{p}: {where}: id {int(bad)} is outside [0, {n_items}) (the data set's item ids)")
    return np.unique(ids.astype(np.int64, copy=False))


def read_filters(path: str | os.PathLike, *, n_queries: int | None = None, n_items: int | None = None,
                 column: str | None = None) -> list[np.ndarray]:
    """Read one allowed-id list per query.

    Args:
        path: ``.jsonl``, ``.npz`` or ``.parquet`` (see the module docstring).
        n_queries: when given, the number of lists the file must hold (one per query).
        n_items: when given, ids must lie in ``[0, n_items)``.
        column: Parquet only — the list column.

    Returns:
        one sorted, duplicate-free (m_i,) int64 array per query (an empty list allows nothing).
    """
    p = _existing(path)
    suf = p.suffix.lower()
    if suf not in FILTER_SUFFIXES:
        raise DataFormatError(f"{p}: unknown filter file suffix {p.suffix!r}; expected one of {', '.join(FILTER_SUFFIXES)}")
    if column is not None and suf != ".parquet":
        raise ValueError(f"{p}: column= applies to Parquet filter files only")
    if suf == ".jsonl":
        out = _read_jsonl(p, n_items)
    elif suf == ".npz":
        out = _read_npz(p, n_items)
    else:
        out = _read_parquet(p, column, n_items)
    if not out:
        raise DataFormatError(f"{p}: no filters (expected one id list per query)")
    if n_queries is not None and len(out) != n_queries:
        raise DataFormatError(f"{p}: holds {len(out)} filters; expected one per query ({n_queries})")
    return out


def _read_jsonl(p: Path, n_items: int | None) -> list[np.ndarray]:
    out = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{p}: line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if isinstance(obj, dict):
                if "ids" not in obj:
                    raise DataFormatError(f'{p}: line {lineno}: an object needs an "ids" list')
                obj = obj["ids"]
            if not isinstance(obj, list):
                raise DataFormatError(f"{p}: line {lineno}: expected a JSON list of item ids, got {type(obj).__name__}")
            if not all(type(v) is int and _I64[0] <= v <= _I64[1] for v in obj):
                bad = next(v for v in obj if not (type(v) is int and _I64[0] <= v <= _I64[1]))
                raise DataFormatError(f"{p}: line {lineno}: {bad!r:.40} is not an int64 item id")
            out.append(_clean(p, f"line {lineno}", np.asarray(obj, dtype=np.int64).reshape(-1), n_items))
    return out


def _read_npz(p: Path, n_items: int | None) -> list[np.ndarray]:
    import zipfile

    import scipy.sparse as sp

    try:
        with open(p, "rb") as fh:
            m = sp.load_npz(fh).tocsr()
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataFormatError(f"{p}: not a readable SciPy sparse .npz file ({type(e).__name__}: {e})") from None
    if n_items is not None and m.shape[1] > n_items:
        m.eliminate_zeros()
        if m.nnz and m.indices.max() >= n_items:
            raise DataFormatError(f"{p}: column {int(m.indices.max())} is outside [0, {n_items}) (the data set's item ids)")
    m.eliminate_zeros()
    return [np.unique(m.indices[m.indptr[i]: m.indptr[i + 1]].astype(np.int64)) for i in range(m.shape[0])]


def _read_parquet(p: Path, column: str | None, n_items: int | None) -> list[np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(p)
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{p}: not a readable Parquet file ({e})") from None
    lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)]
    if column is None:
        if len(lists) != 1:
            raise DataFormatError(f"{p}: has {len(lists)} list columns {lists}; name the filter column (column=...)")
        column = lists[0]
    if column not in lists:
        raise DataFormatError(f"{p}: no list column {column!r}; list columns are {lists}")
    col = pq.read_table(p, columns=[column]).column(column).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        col = col.cast(pa.list_(col.type.value_type))
    if not pa.types.is_integer(col.type.value_type):
        raise DataFormatError(f"{p}: column {column!r} holds {col.type.value_type}; expected integer item ids")
    if col.null_count:
        raise DataFormatError(f"{p}: column {column!r} has {col.null_count} null row(s); write an empty list to allow nothing")
    values = col.flatten()
    if values.null_count:
        raise DataFormatError(f"{p}: column {column!r} holds null ids")
    vals = values.to_numpy(zero_copy_only=False).astype(np.int64)
    off = col.offsets.to_numpy()
    off = off - off[0]
    return [_clean(p, f"row {i}", vals[off[i]: off[i + 1]], n_items) for i in range(len(col))]


def write_filters(path: str | os.PathLike, filters: Sequence[Any], *, n_items: int | None = None, column: str = "allowed") -> None:
    """Write one allowed-id list per query (atomically) in the format of ``path``'s suffix.

    ``n_items``: ``.npz`` only — the matrix width (default: the largest id + 1).
    """
    from gsu.datasets.io import atomic_path

    p = Path(path)
    suf = p.suffix.lower()
    if suf not in FILTER_SUFFIXES:
        raise DataFormatError(f"{p}: unknown filter file suffix {p.suffix!r}; expected one of {', '.join(FILTER_SUFFIXES)}")
    sets = []
    for i, f in enumerate(filters):
        a = np.asarray(f)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise ValueError(f"filters[{i}]: expected a 1-D array of integer ids, got shape {a.shape} dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"filters[{i}]: negative id {int(a.min())}")
        sets.append(np.unique(a.astype(np.int64)))
    if not sets:
        raise ValueError("filters: refusing to write an empty filter set")
    with atomic_path(p) as tmp:
        if suf == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for a in sets:
                    fh.write(json.dumps(a.tolist()) + "\n")
        elif suf == ".npz":
            import scipy.sparse as sp

            width = n_items if n_items is not None else int(max((a.max() for a in sets if a.size), default=-1)) + 1
            indptr = np.zeros(len(sets) + 1, np.int64)
            np.cumsum([a.size for a in sets], out=indptr[1:])
            idx = np.concatenate(sets) if indptr[-1] else np.zeros(0, np.int64)
            m = sp.csr_matrix((np.ones(idx.size, np.int8), idx, indptr), shape=(len(sets), max(width, 1)))
            with open(tmp, "wb") as fh:
                sp.save_npz(fh, m)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({column: pa.array([a.tolist() for a in sets], type=pa.list_(pa.int64()))}), tmp)


def read_attribute(path: str | os.PathLike, *, column: str | None = None, n_items: int | None = None) -> np.ndarray:
    """One attribute value per item: a 1-D ``.npy``, or a column of a ``.parquet`` / ``.csv``
    file (``column`` required there). Returns an (n,) array (numbers or strings)."""
    p = _existing(path)
    suf = p.suffix.lower()
    if suf == ".npy":
        from gsu.datasets.io import _read_npy

        a = np.asarray(_read_npy(p, mmap=False))
        if a.ndim != 1:
            raise DataFormatError(f"{p}: attribute array has shape {a.shape}; expected one value per item (n,)")
    elif suf in (".parquet", ".csv"):
        if column is None:
            raise ValueError(f"{p}: name the attribute column (column=...)")
        import pyarrow as pa

        try:
            if suf == ".parquet":
                import pyarrow.parquet as pq

                t = pq.read_table(p)
            else:
                import pyarrow.csv as pcsv

                t = pcsv.read_csv(p)
        except (pa.ArrowException, OSError) as e:
            raise DataFormatError(f"{p}: not a readable {suf[1:]} file ({e})") from None
        if column not in t.column_names:
            raise DataFormatError(f"{p}: no column {column!r}; columns are {t.column_names}")
        c = t.column(column)
        if c.null_count:
            raise DataFormatError(f"{p}: column {column!r} has {c.null_count} empty value(s); expected one value per item")
        a = np.asarray(c.to_pylist() if pa.types.is_string(c.type) or pa.types.is_large_string(c.type) else c.to_numpy())
    else:
        raise DataFormatError(f"{p}: unknown attribute file suffix {p.suffix!r}; expected .npy, .parquet or .csv")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataFormatError(f"{p}: attribute holds NaN or inf")
    if n_items is not None and a.shape[0] != n_items:
        raise DataFormatError(f"{p}: {a.shape[0]} attribute values; expected one per item ({n_items})")
    return a


def attribute_filters(values: Any, selectivities: Sequence[float], n_queries: int, *, mode: str = "auto",
                      seed: int = 0) -> dict[float, list[np.ndarray]]:
    """Per-query filters drawn from an attribute at each selectivity.

    Args:
        values: (n,) one attribute value per item (numbers or strings).
        selectivities: shares of the items to allow, each in (0, 1].
        n_queries: filters to draw per selectivity.
        mode: ``"range"`` — the items whose value lies in a window ``[lo, hi]`` around a
            random point that holds the share (whole values: ties at the edges come
            along, so the real share can be higher); ``"category"`` — whole values drawn
            at random until the share is reached; ``"auto"`` — ``range`` for numbers
            with more than 64 distinct values, else ``category``.
        seed: random seed.

    Returns:
        ``{selectivity: [one sorted (m_i,) int64 row array per query]}``.
    """
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"values: expected one attribute value per item (n,), got shape {v.shape}")
    n = v.shape[0]
    uniq, inv = np.unique(v, return_inverse=True)
    if mode == "auto":
        mode = "range" if v.dtype.kind in "iuf" and uniq.shape[0] > 64 else "category"
    if mode not in ("range", "category"):
        raise ValueError(f"mode: expected 'auto', 'range' or 'category', got {mode!r}")
    if mode == "range" and v.dtype.kind not in "iuf":
        raise ValueError("mode='range' needs numeric attribute values")
    rng = np.random.default_rng(seed)
    out: dict[float, list[np.ndarray]] = {}
    order = np.argsort(v, kind="stable")
    sv = v[order]
    members = None
    for sel in selectivities:
        sel = float(sel)
        if not 0 < sel <= 1:
            raise ValueError(f"selectivity: expected a share in (0, 1], got {sel}")
        m = max(1, int(round(sel * n)))
        sets = []
        for _ in range(n_queries):
            if mode == "range":
                start = int(rng.integers(0, n - m + 1))
                lo, hi = sv[start], sv[start + m - 1]
                sets.append(np.flatnonzero((v >= lo) & (v <= hi)).astype(np.int64))
            else:
                if members is None:
                    members = np.split(order, np.cumsum(np.bincount(inv, minlength=uniq.shape[0]))[:-1])
                picked, tot = [], 0
                for c in rng.permutation(uniq.shape[0]):
                    picked.append(members[c])
                    tot += members[c].shape[0]
                    if tot >= m:
                        break
                sets.append(np.sort(np.concatenate(picked)).astype(np.int64))
        out[sel] = sets
    return out
