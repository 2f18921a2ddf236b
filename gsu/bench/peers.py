"""Peer libraries as small adapters for the benchmark runner.

An adapter is built once over the same data as the gsu index and answers
``search(queries, k, *, allowed_rows=None) -> (rows (nq, k) int64, scores (nq, k) float32)``
in *row* numbers (0..n-1 of the benchmark's catalog), -1 padded. ``allowed_rows``
is a sorted int64 array shared by all queries (or None). Each adapter states its
``name`` and ``params`` so that records say exactly what ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["faiss_bitmap_selector", "FaissFlatPeer", "NumpyPrefilterPeer"]


def faiss_bitmap_selector(allowed_rows: np.ndarray, n: int) -> Any:
    """A ``faiss.IDSelectorBitmap`` over internal ids 0..n-1 (bit i set = row i allowed).

    Returns ``(selector, bitmap)``: keep the bitmap alive as long as the selector.
    """
    import faiss

    mask = np.zeros(n, dtype=bool)
    mask[allowed_rows] = True
    bitmap = np.packbits(mask, bitorder="little")
    sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
    return sel, bitmap


class FaissFlatPeer:
    """faiss ``IndexFlatIP`` (exact), filtered with ``SearchParameters(sel=IDSelectorBitmap)``."""

    name = "faiss-flat"

    def __init__(self, vectors: np.ndarray):
        import faiss

        self.n, d = vectors.shape
        self.index = faiss.IndexFlatIP(d)
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.params: dict[str, Any] = {}

    def search(self, queries: np.ndarray, k: int, *, allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if allowed_rows is None:
            scores, rows = self.index.search(queries, k)
        else:
            sel, _bitmap = faiss_bitmap_selector(allowed_rows, self.n)
            scores, rows = self.index.search(queries, k, params=faiss.SearchParameters(sel=sel))
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        return rows.astype(np.int64), scores


class NumpyPrefilterPeer:
    """Exact pre-filtered scan in numpy: gather allowed rows, matmul, argpartition."""

    name = "numpy-prefilter"

    def __init__(self, vectors: np.ndarray):
        self.x = np.ascontiguousarray(vectors, dtype=np.float32)
        self.params: dict[str, Any] = {}

    def search(self, queries: np.ndarray, k: int, *, allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        from gsu.index.base import topk_rows

        x = self.x if allowed_rows is None else self.x[allowed_rows]
        rows, scores = topk_rows(queries @ x.T, k, allowed_rows)
        return rows, scores
