"""Index input files -> indexes and query batches: what ``gsu build`` / ``gsu search`` (and
the demo) read, dispatched on the file type, with errors that name the file and line.

- :func:`build_index` — an embedding file (dense: every format of :mod:`gsu.datasets.io`;
  sparse: SciPy CSR ``.npz`` or Seismic JSON lines, whose token vocabulary is stored inside
  the index) -> an index of any registered kind, ids from the file or from an id file;
- :func:`read_queries` — a query file in the form the index takes (tokens mapped through
  the index's vocabulary);
- :func:`read_ids_file` — an ``.npy`` of int64 ids, checked.

Every refusal is a :class:`gsu.errors.DataFormatError` (a ``ValueError``) naming the file,
and the line for JSON lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gsu.errors import DataFormatError

__all__ = ["SPARSE_KINDS", "SPARSE_SUFFIXES", "build_index", "read_queries", "read_ids_file", "read_vectors",
           "legacy_vocab_path"]

#: index kinds that take sparse vectors
SPARSE_KINDS = ("seismic", "sparse_flat")
#: file suffixes that hold sparse vectors
SPARSE_SUFFIXES = (".npz", ".jsonl")


def read_vectors(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Dense vectors of ``path``; ``key`` names the HDF5 data set or the Parquet list column."""
    from gsu.datasets.io import read_embeddings

    if not key:
        return read_embeddings(path)
    return read_embeddings(path, **({"column": key} if Path(path).suffix.lower() == ".parquet" else {"key": key}))


def legacy_vocab_path(index_path: str | os.PathLike) -> Path:
    """Where older versions of ``gsu build`` kept the token vocabulary of an index built
    from JSON lines (it now lives inside the index file; this sidecar is only read)."""
    return Path(str(index_path) + ".vocab.json")


def read_ids_file(path: str | os.PathLike, what: str, n: int | None = None) -> np.ndarray:
    """An ``.npy`` of int64 ids, checked (int64 range, -1 reserved, length ``n``), errors naming the file."""
    from gsu._format import open_regular
    from gsu._validate import as_ids

    fd, _ = open_regular(path)  # a missing path or a folder: one clear line
    try:
        with os.fdopen(fd, "rb") as f:
            arr = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(f"{path}: {what}: not a readable .npy array ({type(e).__name__}: {e})") from None
    try:
        return as_ids(arr, name=f"{path}: {what}", n=n)
    except ValueError as e:
        raise DataFormatError(str(e)) from None


def _jsonl_line_numbers(path: str | os.PathLike) -> list[int]:
    """The line number of each document (non-blank line) of a JSON-lines file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [i for i, line in enumerate(f, start=1) if line.strip()]


def _check_unique_ids(path: str | os.PathLike, ids: np.ndarray, *, lines: list[int] | None) -> None:
    """Refuse repeated document ids, naming the file and the two lines (or rows)."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    rep = np.flatnonzero(s[1:] == s[:-1])
    if rep.size:
        first, second = int(order[rep[0]]), int(order[rep[0] + 1])
        where = (lambda r: f"line {lines[r]}") if lines is not None else (lambda r: f"row {r}")
        raise DataFormatError(f"{path}: {where(second)}: id {int(s[rep[0]])} repeats {where(first)} (document ids must be unique)")


def _check_nonnegative(path: str | os.PathLike, csr: Any, vocab: dict[str, int] | None, kind: str, *,
                       lines: list[int] | None) -> None:
    """Refuse negative weights for an index kind that needs non-negative ones, naming file, line and token."""
    neg = np.flatnonzero(csr.data < 0)
    if not neg.size:
        return
    j = int(neg[0])
    row = int(np.searchsorted(csr.indptr, j, side="right") - 1)
    col = int(csr.indices[j])
    tok = next((t for t, c in vocab.items() if c == col), None) if vocab else None
    where = f"line {lines[row]}" if lines is not None else f"row {row}"
    what = f"token {tok!r}" if tok is not None else f"component {col}"
    raise DataFormatError(f"{path}: {where}: {what} has negative weight {float(csr.data[j])!r} "
                          f"(a {kind} index needs non-negative weights; {neg.size} negative in all)")


def build_index(path: str | os.PathLike, kind: str, *, params: dict[str, Any] | None = None,
                ids: str | os.PathLike | None = None, key: str | None = None, metric: str | None = None) -> Any:
    """An index of ``kind`` (any registered kind) over the vectors of ``path``.

    ``params`` go to the index's constructor; ``ids``: an ``.npy`` id file (default: the
    file's own ids, or 0..n-1); ``key``: the HDF5 data set or Parquet column; ``metric``
    applies to dense kinds unless ``params`` sets one. Sparse kinds read ``.npz`` or JSON
    lines (the vocabulary of JSON lines is stored with the index). All validation happens
    before the index exists, so a refused file leaves nothing behind.
    """
    from gsu.index import INDEX_KINDS

    params = dict(params or {})
    cls = INDEX_KINDS.get(kind)
    if cls is None:
        raise DataFormatError(f"unknown index kind {kind!r}; known: {', '.join(sorted(INDEX_KINDS))}")
    suffix = Path(path).suffix.lower()
    if kind in SPARSE_KINDS:
        from gsu.datasets.io import read_sparse, read_sparse_jsonl

        vocab = None
        if suffix == ".jsonl":
            csr, file_ids, vocab = read_sparse_jsonl(path)
        else:
            csr, file_ids = read_sparse(path)
        lines = _jsonl_line_numbers(path) if suffix == ".jsonl" else None
        if ids is not None:
            row_ids = read_ids_file(ids, "--ids", n=csr.shape[0])
            _check_unique_ids(ids, row_ids, lines=None)
        else:
            row_ids = file_ids
            _check_unique_ids(path, row_ids, lines=lines)
        if kind == "seismic":
            _check_nonnegative(path, csr, vocab, kind, lines=lines)
        idx = cls(csr.shape[1], **params)
        idx.add(csr, row_ids)
        if vocab is not None:
            idx.vocabulary = vocab
        return idx
    if suffix in SPARSE_SUFFIXES and suffix != ".npz":
        raise DataFormatError(f"{path} holds sparse vectors; use a sparse index kind ({', '.join(SPARSE_KINDS)})")
    x = read_vectors(path, key)
    row_ids = None
    if ids is not None:
        row_ids = read_ids_file(ids, "--ids", n=x.shape[0])
        _check_unique_ids(ids, row_ids, lines=None)
    if "metric" not in params and metric:
        params["metric"] = metric
    idx = cls(x.shape[1], **params)
    idx.add(x, row_ids)
    return idx


def read_queries(path: str | os.PathLike, index: Any, *, key: str | None = None,
                 index_path: str | os.PathLike | None = None) -> Any:
    """The queries of ``path`` in the form ``index`` searches: dense rows, or sparse rows
    (CSR ``.npz``, or JSON lines mapped through the index's vocabulary; an index built by an
    older gsu keeps it in a sidecar next to ``index_path``)."""
    if getattr(index, "KIND", None) not in SPARSE_KINDS:
        return read_vectors(path, key)
    from gsu.datasets.io import read_sparse, read_vocabulary

    vocab = None
    if Path(path).suffix.lower() == ".jsonl":
        vocab = index.vocabulary
        if vocab is None:
            vp = legacy_vocab_path(index_path) if index_path is not None else None
            if vp is None or not vp.is_file():
                raise DataFormatError(f"{path} holds tokens but the index {index_path or ''} has no vocabulary "
                                      "(build it with `gsu build` from a .jsonl file)")
            vocab = read_vocabulary(vp)
    q, _ = read_sparse(path, vocabulary=vocab)
    if q.shape[1] < index.dim:  # the queries' vocabulary may stop short of the index's
        import scipy.sparse as sp

        q = sp.csr_matrix((q.data, q.indices, q.indptr), shape=(q.shape[0], index.dim))
    return q
