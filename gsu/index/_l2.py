"""Euclidean search on the inner-product kernels: the exact reduction and the final rescoring.

``metric="l2"`` ranks items by the squared euclidean distance ``|q - x|²`` (smaller is
nearer) and reports the score ``-|q - x|²`` (higher is better, like every gsu score).
The kernels of the indexes compute inner products, so they run on the augmented vectors
``x' = [x, -|x|²/2]`` and queries ``q' = [q, 1]``: ``q'·x' = (|q|² - |q - x|²)/2``, which
orders every query's items exactly as ``-|q - x|²`` does. The returned rows are then
rescored exactly in float64 (``-|q - x|²``, no cancellation) and re-sorted (ties: smaller
row first), so the scores a caller sees are the distances themselves.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment_base", "augment_queries", "finish"]


def augment_base(x: np.ndarray) -> np.ndarray:
    """(n, d) float32 -> (n, d + 1) float32 ``[x, -|x|²/2]`` (C-contiguous)."""
    n, d = x.shape
    out = np.empty((n, d + 1), np.float32)
    out[:, :d] = x
    x64 = x.astype(np.float64)
    out[:, d] = -0.5 * np.einsum("ij,ij->i", x64, x64)
    return out


def augment_queries(q: np.ndarray) -> np.ndarray:
    """(nq, d) float32 -> (nq, d + 1) float32 ``[q, 1]`` (C-contiguous)."""
    nq, d = q.shape
    out = np.empty((nq, d + 1), np.float32)
    out[:, :d] = q
    out[:, d] = 1.0
    return out


def finish(q: np.ndarray, x: np.ndarray, rows: np.ndarray, scores: np.ndarray, pos: np.ndarray | None = None,
           block: int = 1024) -> None:
    """Rescore result ``rows`` (nq, k) int64 (-1 padded) in place with ``-|q - x[row]|²``
    (float64, stored float32) and re-sort each row best-first (ties: smaller row).

    ``x`` (m, d): the raw vectors; ``pos`` (n,) int64, when given, maps a row to its
    position in ``x`` (IVF keeps its vectors in list order). Padding stays -1 / -inf.
    """
    nq, k = rows.shape
    for s in range(0, nq, block):
        r = rows[s: s + block]
        valid = r >= 0
        rr = np.maximum(r, 0)
        xv = x[rr if pos is None else pos[rr]].astype(np.float64)
        diff = xv - q[s: s + block, None, :].astype(np.float64)
        sc = np.where(valid, -np.einsum("qkd,qkd->qk", diff, diff), -np.inf)
        key_r = np.where(valid, r, np.iinfo(np.int64).max)
        o = np.argsort(key_r, axis=1, kind="stable")
        o = np.take_along_axis(o, np.argsort(-np.take_along_axis(sc, o, 1), axis=1, kind="stable"), 1)
        rows[s: s + block] = np.take_along_axis(r, o, 1)
        scores[s: s + block] = np.take_along_axis(sc, o, 1).astype(np.float32)
