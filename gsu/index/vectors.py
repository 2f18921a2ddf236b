"""Dense vectors in the form every dense index (exact, HNSW, IVF, filtered) searches:
the metrics, row normalisation for cosine, and the one query check of the hot path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gsu._validate import as_matrix

__all__ = ["DENSE_METRICS", "normalize_rows", "prep_queries"]

#: metrics of the dense indexes (exact, HNSW, IVF, filtered): "l2" ranks by squared
#: euclidean distance and scores -|q - x|² (gsu.index._l2)
DENSE_METRICS = ("ip", "cosine", "l2")


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32); zero rows stay zero."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return (x / n).astype(np.float32, copy=False)


def prep_queries(queries: Any, dim: int, metric: str) -> np.ndarray:
    """Dense queries as a C-contiguous (nq, d) float32 matrix, L2-normalised for cosine.

    A float32 C-contiguous writable array of the right shape passes with only the
    finiteness check (the one-query-per-call hot path); anything else goes through
    :func:`gsu._validate.as_matrix`, which raises the error messages. A read-only array
    (``np.frombuffer`` of a request body) is copied: the kernels are compiled for
    writable arrays, and a read-only one would compile a second specialisation of
    each on its first search.
    """
    if (type(queries) is np.ndarray and queries.dtype == np.float32 and queries.flags.c_contiguous
            and queries.flags.writeable and queries.size):
        if queries.ndim == 1 and queries.shape[0] == dim:
            q = queries.reshape(1, dim)
        elif queries.ndim == 2 and queries.shape[1] == dim:
            q = queries
        else:
            q = None
        if q is not None and math.isfinite(q.reshape(-1).dot(q.reshape(-1))):  # a NaN/inf makes it non-finite (an overflow
            # only sends the query to the full check below)
            return normalize_rows(q) if metric == "cosine" else q
    q = as_matrix(queries, name="queries", dim=dim)
    if not q.flags.writeable:
        q = q.copy()
    return normalize_rows(q) if metric == "cosine" else q
