"""Multi-interest probes: several query vectors per user or per target, retrieved in
proportion to their weights and merged without duplicates.

A user's lifelong history mixes many interests. One query — the target's embedding, or
a single user vector — retrieves the behaviors of whichever interest dominates it; a
mixture of queries covers them all (kNN-Embed: query the user's interest clusters in
proportion to the mixture weights; HCN: hierarchical interest centers; ActQKV: several
probe queries per target; multi-interest networks such as MIND, DESMIL, DiffuMIN give
the interest vectors directly).

- :func:`extract_interests` finds m interest centers and their weights in a history (a
  k-means of the visible behaviors' embeddings, optionally recency-weighted).
- :class:`MultiInterest` retrieves k behaviors per target from m probes: the extracted
  centers or probes given by a model, per user (m, d) or per target (T, m, d). Probe j
  gets ``q_j`` of the k slots (largest-remainder split of its weight) and contributes its
  best not-yet-taken behaviors; free slots are filled by rank, round-robin. The merged
  set is ranked by the exact target attention score.
- :func:`interest_coverage` — the share of a request's interests represented among the
  retrieved behaviors (a diversity measure reported beside recall).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsu._validate import as_matrix, check_choice, check_positive_int
from gsu.retrieval import _lifelong_kernels as LK
from gsu.retrieval._clustering import kmeans
from gsu.retrieval.cascade import _rescore
from gsu.retrieval.items import ItemTable
from gsu.retrieval.methods import Retriever, distinct_rows, history_topk
from gsu.retrieval.result import RetrievalResult
from gsu.retrieval.store import History

log = logging.getLogger(__name__)

__all__ = ["Interests", "extract_interests", "MultiInterest", "interest_coverage", "largest_remainder", "nnls_weights"]


def largest_remainder(weights: Any, k: int) -> np.ndarray:
    """Split ``k`` into non-negative integers proportional to ``weights`` (..., m)
    (largest remainder; ties to the lower index). Negative weights count as 0; rows whose
    weights sum to 0 get all zeros. Returns int64 of the same shape."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    s = w.sum(axis=-1, keepdims=True)
    share = np.where(s > 0, w / np.where(s > 0, s, 1.0), 0.0) * k
    base = np.floor(share + 1e-9).astype(np.int64)
    rem = k - base.sum(axis=-1, keepdims=True)
    frac = share - base
    rank = np.argsort(np.argsort(-frac, axis=-1, kind="stable"), axis=-1, kind="stable")
    return base + ((rank < rem) & (s > 0)).astype(np.int64)


@dataclass(frozen=True)
class Interests:
    """m interest centers of a user.

    Attributes:
        centers: (m, d) float32 interest vectors (cluster means of behavior embeddings).
        weights: (m,) float64 share of the (recency-weighted) behaviors each holds; sum 1.
    """

    centers: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return int(self.centers.shape[0])


def extract_interests(
    history: Any,
    items: ItemTable,
    *,
    n_interests: int = 8,
    cut: int | None = None,
    sample: int = 4096,
    n_iter: int = 10,
    half_life: float | None = None,
    seed: int = 0,
) -> Interests:
    """Interest centers of the behaviors before ``cut`` (default: all): a k-means of the
    embeddings of a seeded sample of at most ``sample`` visible behaviors.

    Args:
        n_interests: m, the number of centers (fewer when the sample has fewer points).
        half_life: with a value h (in behaviors), a behavior i positions before the end
            weighs 2^(-i/h) (recent interests count more); ``None`` = all equal.
        n_iter / seed: k-means iterations and seed.

    Returns :class:`Interests` with weights = each center's share of the (weighted) sample.
    """
    h = History.coerce(history)
    E = items.need("embeddings")
    L = len(h) if cut is None else int(cut)
    if not 0 < L <= len(h):
        raise ValueError(f"cut: expected 1..{len(h)} visible behaviors, got {cut}")
    m = check_positive_int(n_interests, name="n_interests")
    sample = check_positive_int(sample, name="sample")
    rng = np.random.default_rng(seed)
    p = np.arange(L) if L <= sample else np.sort(rng.choice(L, sample, replace=False))
    X = E[items.rows(h.items[p], name="history items")]
    w = None
    if half_life is not None:
        hl = float(half_life)
        if not (math.isfinite(hl) and hl > 0):
            raise ValueError(f"half_life: expected a positive number of behaviors, got {half_life!r}")
        w = np.exp2(-(L - 1 - p) / hl)
    cent, a = kmeans(X, m, n_iter=n_iter, seed=seed, weights=w)
    mass = np.bincount(a, weights=w, minlength=cent.shape[0]).astype(np.float64)
    return Interests(cent, mass / max(mass.sum(), 1e-300))


def nnls_weights(targets: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(T, m) float64: each target decomposed over the interest centers, ``e_t ≈ Σ_j β_j c_j``
    with β >= 0 (non-negative least squares), weighted ``β_j · |c_j|`` — the part of the
    target each interest explains. targets (T, d), centers (m, d)."""
    from scipy.optimize import nnls

    C = np.asarray(centers, dtype=np.float64)
    A = C.T  # (d, m)
    nrm = np.linalg.norm(C, axis=1)
    out = np.zeros((targets.shape[0], C.shape[0]), np.float64)
    for t in range(targets.shape[0]):
        beta, _ = nnls(A, np.asarray(targets[t], dtype=np.float64))
        out[t] = beta * nrm
    return out


def interest_coverage(positions: Any, labels: Any, interests: Any) -> np.ndarray:
    """Share of each request's interests represented among its retrieved behaviors.

    Args:
        positions: (T, k) int64 retrieved positions (-1 padded).
        labels: (L,) int64 interest label of every history position (-1 = none).
        interests: (J,) the interests that count for every row, or (T, J) per row
            (-1 padded).

    Returns (T,) float64: |{labels of retrieved} ∩ interests| / |interests| (1.0 for a row
    with no interest to cover).
    """
    pos = np.asarray(positions, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    if pos.ndim != 2:
        raise ValueError(f"positions: expected (T, k), got shape {pos.shape}")
    if pos.size and (pos.max() >= lab.shape[0] or pos.min() < -1):
        raise ValueError(f"positions: expected values in [-1, {lab.shape[0]}) (the labelled history)")
    J = np.asarray(interests, dtype=np.int64)
    if J.ndim == 1:
        J = np.broadcast_to(J, (pos.shape[0], J.shape[0]))
    if J.ndim != 2 or J.shape[0] != pos.shape[0]:
        raise ValueError(f"interests: expected (J,) or ({pos.shape[0]}, J), got shape {np.shape(interests)}")
    got = np.where(pos >= 0, lab[np.maximum(pos, 0)], -2)
    hit = ((J[:, :, None] == got[:, None, :]) & (J[:, :, None] >= 0)).any(axis=2)
    n = (J >= 0).sum(axis=1)
    return np.where(n > 0, hit.sum(axis=1) / np.maximum(n, 1), 1.0)


class MultiInterest(Retriever):
    """Retrieve per interest, in proportion to its weight (see the module docstring).

    Args:
        items: ItemTable with ``embeddings`` (n, d) float32.
        k: behaviors per target.
        n_interests: m centers extracted per request when no probes are given.
        weighting: how the k slots are split among the probes for each target —
            ``"nnls"``: by the part of the target each center explains (non-negative
            least squares, :func:`nnls_weights`; per target); ``"mass"``: by each
            interest's share of the history (per user, the same for every target).
        half_life, sample, n_iter, seed: settings of :func:`extract_interests`.
        search: how each probe's behaviors are found — ``None``: an exact scan of the
            visible history; a :class:`~gsu.retrieval.clustered.Clustered`: through its
            clusters (use it for long histories).
        scale: divide the reported exact scores by √d.

    ``retrieve(history, targets, *, k=None, target_time=None, probes=None, weights=None)``:
    ``probes`` (m, d) per user or (T, m, d) per target replace the extracted centers
    (interest vectors given by a model); ``weights`` (m,) or (T, m) replace the
    ``weighting`` rule (given probes without weights: ``"nnls"`` as above, ``"mass"``
    equal shares). Interests are extracted from the behaviors each target may see
    (one extraction per distinct cut), so the time cut holds for the probes too.
    """

    name = "multi_interest"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        n_interests: int = 8,
        weighting: str = "nnls",
        half_life: float | None = None,
        sample: int = 4096,
        n_iter: int = 10,
        seed: int = 0,
        search: Any = None,
        scale: bool = False,
    ):
        super().__init__(items, k=k)
        E = items.need("embeddings")
        self.n_interests = check_positive_int(n_interests, name="n_interests")
        self.weighting = check_choice(weighting, name="weighting", choices=("nnls", "mass"))
        self.half_life = half_life
        self.sample = check_positive_int(sample, name="sample")
        self.n_iter = check_positive_int(n_iter, name="n_iter", minimum=0)
        self.seed = check_positive_int(seed, name="seed", minimum=0)
        if search is not None:
            from gsu.retrieval.clustered import Clustered

            if not isinstance(search, Clustered):
                raise TypeError(f"search: expected None or a Clustered retriever, got {type(search).__name__}")
            if search.items is not items:
                raise ValueError("search: the Clustered retriever must use the same ItemTable")
        self.search = search
        self.scale = bool(scale)
        self._mult = np.float32(1.0 / math.sqrt(E.shape[1])) if self.scale else np.float32(1.0)

    def retrieve(self, history: Any, targets: Any, *, k: int | None = None, target_time: Any = None,  # type: ignore[override]
                 probes: Any = None, weights: Any = None) -> RetrievalResult:
        """Top-k behaviors per target from several probes (see the class docstring)."""
        h, trows, k, cuts = self._prepare(history, targets, k, target_time)
        return self._retrieve(h, trows, k, cuts, probes=probes, weights=weights)

    def _probe_arrays(self, h: History, trows: np.ndarray, cuts: np.ndarray, probes: Any, weights: Any):
        """(Qrows (R, d), row_cut (R,), P index (T, m) of query rows (-1 none), W (T, m))."""
        E = self.items.embeddings
        d = E.shape[1]
        T = trows.shape[0]
        if probes is not None:
            pr = np.asarray(probes)
            if pr.ndim == 2:
                Pm = as_matrix(pr, name="probes", dim=d)
                m = Pm.shape[0]
                uc, inv = np.unique(cuts, return_inverse=True)
                Q = np.tile(Pm, (uc.shape[0], 1))
                rc = np.repeat(uc, m)
                idx = inv[:, None] * m + np.arange(m)[None, :]
            elif pr.ndim == 3:
                if pr.shape[0] != T or pr.shape[2] != d:
                    raise ValueError(f"probes: expected (m, {d}) or ({T}, m, {d}), got shape {pr.shape}")
                m = pr.shape[1]
                Q = as_matrix(pr.reshape(T * m, d), name="probes", dim=d)
                rc = np.repeat(cuts, m)
                idx = np.arange(T * m).reshape(T, m)
            else:
                raise ValueError(f"probes: expected (m, {d}) or ({T}, m, {d}), got shape {pr.shape}")
            if weights is not None:
                W = self._weights(weights, T, m)
            elif self.weighting == "mass":
                W = np.ones((T, m))  # given probes carry no mass: equal shares
            elif pr.ndim == 2:
                W = nnls_weights(E[trows], Pm)
            else:
                W = np.stack([nnls_weights(E[trows[t : t + 1]], pr[t])[0] for t in range(T)])
            return np.ascontiguousarray(Q, dtype=np.float32), rc.astype(np.int64), idx.astype(np.int64), W
        uc, inv = np.unique(cuts, return_inverse=True)
        blocks, rcs = [], []
        n = 0
        W = np.zeros((T, self.n_interests))
        idx = np.full((T, self.n_interests), -1, np.int64)
        for j, c in enumerate(uc.tolist()):
            sel = np.flatnonzero(inv == j)
            if c == 0:
                continue
            it = extract_interests(h, self.items, n_interests=self.n_interests, cut=c, sample=self.sample, n_iter=self.n_iter,
                                   half_life=self.half_life, seed=self.seed)
            m = len(it)
            blocks.append(it.centers)
            rcs.append(np.full(m, c, np.int64))
            idx[sel, :m] = n + np.arange(m)[None, :]
            if weights is not None:
                W[sel, :m] = self._weights(weights, T, self.n_interests)[sel, :m]
            elif self.weighting == "mass":
                W[sel, :m] = it.weights[None, :]
            else:
                W[sel, :m] = nnls_weights(E[trows[sel]], it.centers)
            n += m
        if not blocks:
            return np.zeros((0, d), np.float32), np.zeros(0, np.int64), idx, W
        return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32), np.concatenate(rcs), idx, W

    @staticmethod
    def _weights(weights: Any, T: int, m: int) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 1 and w.shape[0] == m:
            w = np.broadcast_to(w, (T, m))
        if w.shape != (T, m) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights: expected ({m},) or ({T}, {m}) finite non-negative weights, got shape {w.shape}")
        return np.array(w)

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray, *, probes: Any = None,  # type: ignore[override]
                  weights: Any = None) -> RetrievalResult:
        E = self.items.embeddings
        T = trows.shape[0]
        Q, rc, idx, W = self._probe_arrays(h, trows, cuts, probes, weights)
        kk = k
        if Q.shape[0] == 0:
            return RetrievalResult.empty(T, k)
        rows = self.items.rows(h.items, name="history items")
        if self.search is None:
            dist = distinct_rows(rows, E.shape[0])  # an item seen more than once scored once (exact ties)
            if dist is None:
                ppos, _ = history_topk(Q, np.ascontiguousarray(E[rows]), kk, rc)
            else:
                ppos, _ = history_topk(Q, np.ascontiguousarray(E[dist[0]]), kk, rc, col_rows=dist[1])
        else:
            from gsu.retrieval.clustered import search_clusters

            uc = self.search.user_clusters(h)
            ppos, _ = search_clusters(uc, h, self.items, Q, rc, kk, self.search.candidates * kk, min_probe=self.search.min_probe)
        P = np.where(idx[:, :, None] >= 0, ppos[np.maximum(idx, 0)], -1)  # (T, m, kk)
        quotas = largest_remainder(np.where(idx >= 0, W, 0.0), k)
        merged = np.full((T, k), -1, np.int64)
        LK.quota_merge(np.ascontiguousarray(P), np.ascontiguousarray(quotas), k, len(h), merged)
        return _rescore(E, E[trows] * self._mult, rows, merged, cuts, k)

    def __repr__(self) -> str:
        return (f"MultiInterest(k={self.k}, n_interests={self.n_interests}, weighting={self.weighting!r}, "
                f"search={'clustered' if self.search is not None else 'exact'})")
