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

import numba as nb
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


def finish(q: np.ndarray, x: np.ndarray, rows: np.ndarray, scores: np.ndarray, pos: np.ndarray | None = None) -> None:
    """Rescore result ``rows`` (nq, k) int64 (-1 padded) in place with ``-|q - x[row]|²``
    (float64, stored float32) and re-sort each row best-first (ties: smaller row).

    ``x`` (m, d): the raw vectors; ``pos`` (n,) int64, when given, maps a row to its
    position in ``x`` (IVF keeps its vectors in list order). Padding stays -1 / -inf.
    """
    q = np.ascontiguousarray(q, dtype=np.float32)
    if pos is None:
        _finish_kernel(q, x, _NO_POS, False, rows, scores)
    else:
        _finish_kernel(q, x, pos, True, rows, scores)


_NO_POS = np.zeros(0, np.int64)


@nb.njit(cache=True)
def _finish_kernel(q, x, pos, use_pos, rows, scores):  # pragma: no cover - compiled
    nq, k = rows.shape
    d = q.shape[1]
    sc = np.empty(k, np.float64)
    rr = np.empty(k, np.int64)
    for i in range(nq):
        m = 0
        for j in range(k):
            r = rows[i, j]
            if r < 0:
                continue
            p = pos[r] if use_pos else r
            acc = 0.0
            for t in range(d):
                diff = np.float64(x[p, t]) - np.float64(q[i, t])
                acc += diff * diff
            s = -acc
            h = m  # insertion: score descending, then row ascending
            while h > 0 and (sc[h - 1] < s or (sc[h - 1] == s and rr[h - 1] > r)):
                sc[h] = sc[h - 1]
                rr[h] = rr[h - 1]
                h -= 1
            sc[h] = s
            rr[h] = r
            m += 1
        for j in range(m):
            rows[i, j] = rr[j]
            scores[i, j] = np.float32(sc[j])
        for j in range(m, k):
            rows[i, j] = -1
            scores[i, j] = -np.inf
