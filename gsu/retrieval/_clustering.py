"""Seeded k-means for behavior sequences: Lloyd iterations on a sample, and a
radius-bounded bisecting variant for the fine clusters of long sequences.

Used offline by :class:`gsu.retrieval.clustered.SequenceClusters` (fine clusters of a
user's distinct items, TWIN-V2's hierarchical clustering of the lifelong sequence) and
by :mod:`gsu.retrieval.interests` (a few coarse interest centers, HCN's interest
centers). Squared Euclidean distance; centroids are plain means of their members.

Every function draws from ``np.random.default_rng(seed)`` in a fixed order, so equal
inputs give equal outputs.
"""

from __future__ import annotations

import logging
import math

import numba as nb
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["kmeans", "assign_nearest", "bisecting_kmeans", "split_to_size", "cluster_means"]

_ASSIGN_BLOCK = 8192  # points per assignment block (bounds the (block, C) score tile)


@nb.njit(cache=True, nogil=True)
def _accumulate(X, assign, w, sums, counts):
    """sums[c] += w[i] * X[i], counts[c] += w[i] for every point i with c = assign[i] >= 0.

    X (n, d) float32; assign (n,) int64 in [-1, C); w (n,) float64; sums (C, d) float64;
    counts (C,) float64. Out-of-range labels are skipped (never written).
    """
    n, d = X.shape
    C = sums.shape[0]
    for i in range(n):
        c = assign[i]
        if c < 0 or c >= C:
            continue
        wi = w[i]
        counts[c] += wi
        for j in range(d):
            sums[c, j] += wi * X[i, j]


def assign_nearest(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n,) int64 index of the nearest centroid (squared L2) of each row of ``X`` (n, d).

    Computed as ``argmax(x·c - |c|²/2)`` in blocks (BLAS); ties go to the smaller index.
    """
    n = X.shape[0]
    out = np.empty(n, np.int64)
    if n == 0:
        return out
    Cm = np.ascontiguousarray(centroids, dtype=np.float32)
    half = 0.5 * np.einsum("cd,cd->c", Cm, Cm, dtype=np.float64).astype(np.float32)
    for s in range(0, n, _ASSIGN_BLOCK):
        S = X[s : s + _ASSIGN_BLOCK] @ Cm.T
        S -= half
        out[s : s + _ASSIGN_BLOCK] = np.argmax(S, axis=1)
    return out


def cluster_means(X: np.ndarray, assign: np.ndarray, n_clusters: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(means (C, d) float32, mass (C,) float64)`` of the rows of ``X`` per label
    (weighted when ``weights`` (n,) is given). Empty clusters get a zero mean and mass 0."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    w = np.ones(X.shape[0], np.float64) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    sums = np.zeros((n_clusters, X.shape[1]), np.float64)
    mass = np.zeros(n_clusters, np.float64)
    _accumulate(X, np.ascontiguousarray(assign, dtype=np.int64), w, sums, mass)
    means = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], 0.0)
    return means.astype(np.float32), mass


def kmeans(
    X: np.ndarray,
    n_clusters: int,
    *,
    n_iter: int = 8,
    seed: int = 0,
    weights: np.ndarray | None = None,
    sample_per_cluster: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on ``X`` (n, d) float32.

    Iterations run on a seeded sample of at most ``sample_per_cluster · n_clusters``
    points (faiss' ``max_points_per_centroid`` idea), starting from distinct sampled
    points; then every point is assigned once and the centroids are set to the exact
    (weighted) means of their members. Clusters left empty are dropped.

    Args:
        X: (n, d) float32 points, n >= 1.
        n_clusters: C, clipped to the number of distinct points available.
        n_iter: Lloyd iterations on the sample.
        seed: seed of the sample and the initial centroids.
        weights: optional (n,) non-negative point weights (e.g. behavior counts or
            recency); ``None`` = 1 each.

    Returns:
        ``(centroids (C', d) float32, assign (n,) int64)`` with C' <= C non-empty
        clusters, labels ``0..C'-1``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        raise ValueError("kmeans: no points")
    C = int(max(1, min(n_clusters, n)))
    rng = np.random.default_rng(seed)
    w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    m = min(n, max(C, sample_per_cluster * C))
    sidx = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    Xs = X[sidx]
    ws = None if w is None else w[sidx]
    cent = Xs[rng.choice(m, C, replace=False)].copy()
    for _ in range(n_iter):
        a = assign_nearest(Xs, cent)
        means, mass = cluster_means(Xs, a, C, ws)
        keep = mass > 0
        cent = np.where(keep[:, None], means, cent).astype(np.float32)
    a = assign_nearest(X, cent)
    means, mass = cluster_means(X, a, C, w if w is not None else None)
    used = np.bincount(a, minlength=C) > 0
    remap = np.cumsum(used) - 1
    return np.ascontiguousarray(means[used]), remap[a].astype(np.int64)


def split_to_size(X: np.ndarray, max_size: int, *, n_iter: int = 8, seed: int = 0) -> np.ndarray:
    """(n,) int64 labels ``0..m-1``: ``X`` halved by 2-means, recursively, until no part
    holds more than ``max_size`` points (identical points that cannot be separated stay
    together)."""
    n = X.shape[0]
    cap = max(1, int(max_size))
    labels = np.zeros(n, np.int64)
    todo = [np.arange(n, dtype=np.int64)]
    done: list[np.ndarray] = []
    i = 0
    while todo:
        p = todo.pop()
        if p.size <= cap:
            done.append(p)
            continue
        _, a = kmeans(X[p], 2, n_iter=n_iter, seed=seed + i)
        i += 1
        if a.min() == a.max():
            done.append(p)
            continue
        todo.extend([p[a == 0], p[a == 1]])
    done.sort(key=lambda p: int(p[0]))
    for lab, p in enumerate(done):
        labels[p] = lab
    return labels


def _split_far(X: np.ndarray, sq: np.ndarray, n_iter: int) -> np.ndarray:
    """2-means of ``X`` seeded with the point farthest from the mean and the point
    farthest from that one (so that an outlying group is cut off first); Lloyd steps
    until the assignment stops changing (at most ``n_iter``). Returns (n,) labels 0/1."""
    mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    c1 = X[int(np.argmax(sq - 2.0 * (X @ mu)))]
    c2 = X[int(np.argmax(sq - 2.0 * (X @ c1)))]
    cent = np.stack([c1, c2]).astype(np.float32)
    a = assign_nearest(X, cent)
    for _ in range(max(n_iter, 1)):
        m, mass = cluster_means(X, a, 2)
        if (mass == 0).any():
            break
        b = assign_nearest(X, m)
        if np.array_equal(a, b):
            break
        a = b
    return a


def bisecting_kmeans(
    X: np.ndarray,
    n_clusters: int,
    *,
    max_size: int | None = None,
    max_radius2: float | None = None,
    n_iter: int = 8,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Clusters that bound every member's distance to its centroid, then their size.

    1. A k-means into ⌈√C⌉ coarse clusters (C = ``n_clusters``; skipped when C <= 16).
    2. Radius-greedy bisection: the cluster whose farthest member lies farthest from its
       centroid is split in two (a 2-means seeded with that member), until there are C
       clusters and (with ``max_radius2``) no member lies farther than √max_radius2 from
       its centroid. The routing error of a member — ``⟨q, x⟩ - ⟨q, μ⟩ = ⟨q, x - μ⟩`` — is
       bounded by ``|q|·|x - μ|``, so this spends clusters where a member would be badly
       represented: a user's occasional behaviors across many topics end up in small
       clusters whose centroids point at them, instead of hiding inside the centroid of a
       dense interest.
    3. Every cluster larger than ``max_size`` is halved (2-means) until none is.

    Returns ``(centroids (C', d) float32, assign (n,) int64, r2)``: centroids are member
    means and r2 the largest squared member-to-centroid distance of the result.
    """
    import heapq

    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        raise ValueError("bisecting_kmeans: no points")
    target = int(max(1, min(n_clusters, n)))
    cap = n if max_size is None else max(1, int(max_size))
    sq = np.einsum("nd,nd->n", X, X, dtype=np.float64).astype(np.float32)

    def radius(idx: np.ndarray) -> float:
        mu = X[idx].mean(axis=0, dtype=np.float64).astype(np.float32)
        return float((sq[idx] - 2.0 * (X[idx] @ mu)).max() + float(mu @ mu))

    if target > 16:
        _, a0 = kmeans(X, int(math.ceil(math.sqrt(target))), n_iter=n_iter, seed=seed)
        o = np.argsort(a0, kind="stable")
        b = np.searchsorted(a0[o], np.arange(int(a0.max()) + 2))
        parts: list[np.ndarray | None] = [o[b[i] : b[i + 1]] for i in range(b.shape[0] - 1) if b[i + 1] > b[i]]
    else:
        parts = [np.arange(n, dtype=np.int64)]
    heap = [(-radius(p), i) for i, p in enumerate(parts)]
    heapq.heapify(heap)
    n_live = len(parts)
    while heap and (n_live < target or (max_radius2 is not None and -heap[0][0] > max_radius2)):
        neg, c = heapq.heappop(heap)
        idx = parts[c]
        if idx.size < 2 or neg >= 0.0:
            continue
        a = _split_far(X[idx], sq[idx], n_iter)
        if a.min() == a.max():
            continue
        parts[c] = None
        for lab in (0, 1):
            sub = idx[a == lab]
            parts.append(sub)
            heapq.heappush(heap, (-radius(sub), len(parts) - 1))
        n_live += 1
    out: list[np.ndarray] = []
    for p in parts:
        if p is None:
            continue
        if p.size <= cap:
            out.append(p)
            continue
        a = split_to_size(X[p], cap, n_iter=n_iter, seed=seed + 1 + len(out))
        out.extend(p[a == lab] for lab in range(int(a.max()) + 1))
    out.sort(key=lambda p: int(p[0]))
    assign = np.empty(n, np.int64)
    for i, p in enumerate(out):
        assign[p] = i
    cent, _ = cluster_means(X, assign, len(out))
    d2 = sq - 2.0 * np.einsum("nd,nd->n", X, cent[assign]) + np.einsum("nd,nd->n", cent, cent)[assign]
    return cent, assign, float(max(d2.max(), 0.0))
