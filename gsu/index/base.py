"""The index contract shared by every gsu index.

```
idx.add(vectors, ids=None)
res = idx.search(queries, k, *, filter=None, **search_params)
res.ids (nq, k) int64 (-1 padded) · res.scores (nq, k) float32 (-inf padded) · res.counts (nq,) int64
idx.save(path);  gsu.index.load(path, mmap=False)
```

Subclasses implement ``_state()`` (config + arrays) and ``_from_state()``; the base
class provides persistence through :mod:`gsu._format` and a registry so that
:func:`load` reloads any index with no extra arguments.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gsu._format import read_container, read_header, write_container
from gsu.errors import IndexFileError

__all__ = ["SearchResult", "Index", "register_index", "load", "topk_rows", "INDEX_KINDS"]

INDEX_KINDS: dict[str, type["Index"]] = {}


def register_index(kind: str):
    """Class decorator: register an :class:`Index` subclass under ``kind`` for :func:`load`."""

    def deco(cls: type["Index"]) -> type["Index"]:
        if kind in INDEX_KINDS and INDEX_KINDS[kind] is not cls:
            raise ValueError(f"index kind {kind!r} registered twice")
        cls.KIND = kind
        INDEX_KINDS[kind] = cls
        return cls

    return deco


@dataclass(frozen=True)
class SearchResult:
    """Top-k results of a batch of queries.

    Attributes:
        ids: (nq, k) int64 external ids, best first; -1 where fewer than k results exist.
        scores: (nq, k) float32, higher is better (inner product, cosine, or
            ``-hamming`` distance); -inf where ``ids == -1``.
        counts: (nq,) int64, number of valid entries in each row.
    """

    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.shape != self.scores.shape or self.ids.ndim != 2 or self.counts.shape != (self.ids.shape[0],):
            raise ValueError(
                f"inconsistent SearchResult shapes: ids {self.ids.shape}, scores {self.scores.shape}, counts {self.counts.shape}"
            )

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def empty(cls, nq: int, k: int) -> "SearchResult":
        return cls(
            np.full((nq, k), -1, dtype=np.int64),
            np.full((nq, k), -np.inf, dtype=np.float32),
            np.zeros(nq, dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: list["SearchResult"]) -> "SearchResult":
        return cls(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.counts for p in parts]),
        )


def topk_rows(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a dense ``scores`` (nq, m) matrix.

    Returns ``(cols, vals)`` each (nq, k): column indices (mapped through ``rows`` when
    given) and their scores, best first; ties broken by smaller column. Rows with
    fewer than k columns are padded with -1 / -inf. NaN scores are never selected.
    """
    nq, m = scores.shape
    cols = np.full((nq, k), -1, dtype=np.int64)
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    if m == 0 or nq == 0:
        return cols, vals
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(m), (nq, m))
    pv = np.take_along_axis(scores, part, axis=1)
    # sort by (-score, col) for deterministic ties
    order = _lexsort_rows(-pv, part)
    sel = np.take_along_axis(part, order, axis=1)
    sv = np.take_along_axis(pv, order, axis=1)
    cols[:, :kk] = sel if rows is None else rows[sel]
    vals[:, :kk] = sv
    cols[vals == -np.inf] = -1  # excluded entries (scored -inf) are not results
    return cols, vals


def _lexsort_rows(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per-row argsort by ``primary`` then ``secondary`` (both (nq, m))."""
    o = np.argsort(secondary, axis=1, kind="stable")
    p = np.take_along_axis(primary, o, axis=1)
    o2 = np.argsort(p, axis=1, kind="stable")
    return np.take_along_axis(o, o2, axis=1)


class Index(abc.ABC):
    """Base class of every gsu index. See the module docstring for the contract."""

    KIND: ClassVar[str] = ""

    # -- what each index provides -------------------------------------------
    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(config, arrays)``: the build settings (JSON) and the data to save."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Index":
        """Rebuild an index from what :meth:`_state` returned (arrays may be memory-mapped)."""

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of items in the index."""

    def __len__(self) -> int:
        return self.ntotal

    # -- persistence -------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index (build config + data) to ``path`` atomically."""
        if not self.KIND:
            raise TypeError(f"{type(self).__name__} is not registered and cannot be saved")
        config, arrays = self._state()
        write_container(path, self.KIND, config, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> "Index":
        idx = load(path, mmap=mmap, verify=verify)
        if not isinstance(idx, cls):
            raise IndexFileError(f"{path}: holds a {type(idx).__name__}, not a {cls.__name__}")
        return idx


def load(path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> Index:
    """Load any gsu index saved with ``save``; ``mmap=True`` maps the arrays read-only."""
    import gsu.index  # noqa: F401  (registers every index kind)

    header, _ = read_header(path)
    kind = header.get("kind")
    cls = INDEX_KINDS.get(kind)
    if cls is None:
        raise IndexFileError(f"{path}: unknown index kind {kind!r} (known: {sorted(INDEX_KINDS)})")
    _, config, arrays = read_container(path, mmap=mmap, verify=verify)
    try:
        return cls._from_state(config, arrays)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, IndexFileError):
            raise
        raise IndexFileError(f"{path}: inconsistent {kind} index ({e})") from e


def info(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a saved file: kind, config, version, array shapes (no data read)."""
    header, _ = read_header(path)
    return header
