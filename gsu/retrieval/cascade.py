"""Draft-then-exact cascades and the calibration of their candidate factor.

:class:`Cascade` scores every visible behavior with a cheap *draft* score, keeps the
c·k best, and ranks those by the exact target attention score (DARE's small attention
dimension for retrieval; draft-based approximate inference). Drafts:

- ``"proj"``: the inner product in a low-dimensional projection of the embeddings
  (DARE's reduced attention dimension): the top ``draft_dim`` right singular vectors of
  the item table, so that the draft is the best rank-``draft_dim`` approximation of the
  exact score in the least-squares sense over the catalog.
- ``"simhash"``: ETA's SimHash code, Hamming distance (``n_bits`` bits per item).

:func:`calibrate` chooses the candidate factor c — of a ``Cascade`` or of a
:class:`~gsu.retrieval.clustered.Clustered` method — as the smallest value of a grid
whose mean recall@k against ``Exact`` reaches a target on calibration requests (use
requests other than the ones you evaluate on).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gsu._validate import check_choice, check_positive_int
from gsu.retrieval import _kernels as K_
from gsu.retrieval import _lifelong_kernels as LK
from gsu.retrieval.items import ItemTable
from gsu.retrieval.methods import Exact, Retriever
from gsu.retrieval.result import RetrievalResult
from gsu.retrieval.store import History

log = logging.getLogger(__name__)

__all__ = ["Cascade", "Calibration", "calibrate", "draft_topm", "DEFAULT_GRID"]

#: candidate factors tried by :func:`calibrate`, ascending
DEFAULT_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0)


def _check_candidates(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"candidates: expected a number >= 1, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 1.0:
        raise ValueError(f"candidates: expected a finite number >= 1 (c·k candidates per target), got {value!r}")
    return v


class Cascade(Retriever):
    """Draft score over every visible behavior → c·k candidates → exact attention score.

    score(target, behavior) = ⟨e_target, e_behavior⟩ (· 1/√d with ``scale``), the
    default ``Exact`` score, for every behavior returned; ties go to the more recent
    behavior; the time cut applies to the draft and to the rescoring.

    Args:
        items: ItemTable with ``embeddings`` (n, d) float32.
        k: behaviors per target.
        draft: ``"proj"`` (low-dimensional projection) or ``"simhash"`` (ETA's Hamming
            distance of SimHash codes).
        candidates: c — the draft keeps ⌈c·k⌉ candidates per target (c >= 1); set it by
            :func:`calibrate` for a target recall against ``Exact``.
        draft_dim: r, the projection width of ``"proj"`` (1..d): DARE's small attention
            dimension; cost of the draft ∝ r (default: min(16, d)).
        n_bits: m, SimHash bits of ``"simhash"`` (1..256).
        seed: SimHash hyperplane seed.
        scale: divide the exact scores by √d (``Exact(scale=True)``).

    The per-item draft keys (projections or codes) are computed once at construction;
    a request gathers them for the history (O(L·r)), runs the draft top-c·k (O(T·L·r)),
    and rescores T·c·k candidates exactly (O(T·c·k·d)).
    """

    name = "cascade"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        draft: str = "proj",
        candidates: float = 4.0,
        draft_dim: int | None = None,
        n_bits: int = 64,
        seed: int = 0,
        scale: bool = False,
    ):
        super().__init__(items, k=k)
        E = items.need("embeddings")
        d = E.shape[1]
        self.draft = check_choice(draft, name="draft", choices=("proj", "simhash"))
        self.candidates = _check_candidates(candidates)
        self.scale = bool(scale)
        self._mult = np.float32(1.0 / math.sqrt(d)) if self.scale else np.float32(1.0)
        self.draft_dim = min(16, d) if draft_dim is None else check_positive_int(draft_dim, name="draft_dim")
        if self.draft_dim > d:
            raise ValueError(f"draft_dim: at most the embedding dimension {d}, got {draft_dim}")
        self.n_bits = check_positive_int(n_bits, name="n_bits")
        self.seed = check_positive_int(seed, name="seed", minimum=0)
        if self.draft == "proj":
            self.projection = _principal_directions(E, self.draft_dim)  # (d, r)
            self._draft_keys = np.ascontiguousarray(E @ self.projection, dtype=np.float32)
        else:
            from gsu.index.simhash import SimHashIndex

            self.hasher = SimHashIndex(d, self.n_bits, seed=self.seed)
            self._codes = self.hasher.encode(E)

    def n_candidates(self, k: int) -> int:
        """⌈c·k⌉, the draft's candidates per target."""
        return int(math.ceil(self.candidates * k - 1e-9))

    def _draft(self, rows: np.ndarray, trows: np.ndarray, cuts: np.ndarray, m: int) -> np.ndarray:
        """(T, m) int64 candidate positions (-1 padded) by the draft score."""
        if self.draft == "proj":
            return draft_topm(self._draft_keys[trows], self._draft_keys[rows], m, cuts)
        from gsu.index.simhash import hamming_topk

        L = rows.shape[0]
        rev = self._codes[rows[::-1]]  # reversed: ties in Hamming distance go to the more recent behavior
        q = self._codes[trows]
        cand = np.full((trows.shape[0], m), -1, np.int64)
        for c in np.unique(cuts):
            if c == 0:
                continue
            sel = np.flatnonzero(cuts == c)
            p, _ = hamming_topk(q[sel], rev[L - c :], m, n_bits=self.hasher.n_bits)
            cand[sel] = np.where(p >= 0, c - 1 - p, -1)
        return cand

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:
        rows = self.items.rows(h.items, name="history items")
        m = max(self.n_candidates(k), k)
        cand = self._draft(rows, trows, cuts, m)
        return _rescore(self.items.embeddings, self.items.embeddings[trows] * self._mult, rows, cand, cuts, k)

    def __repr__(self) -> str:
        extra = f"draft_dim={self.draft_dim}" if self.draft == "proj" else f"n_bits={self.n_bits}"
        return f"Cascade(k={self.k}, draft={self.draft!r}, candidates={self.candidates:g}, {extra}, scale={self.scale})"


_DRAFT_ROWS = 128  # targets per draft block
_DRAFT_COLS = 8192  # positions per draft tile


def draft_topm(Qd: np.ndarray, Kd: np.ndarray, m: int, cuts: np.ndarray) -> np.ndarray:
    """(T, m) int64 positions of the m best draft scores ``Qd @ Kd.T`` per row among
    positions ``< cuts[t]`` (-1 padded), best first, ties to the more recent position.

    Blocked BLAS tiles of (128, 8192) scores; the selection is a per-row candidate
    buffer of 4·m keys compacted by a partition when full (O(L) per row whatever m, where
    a heap would pay O(log m) per admitted candidate).
    """
    Qd = np.ascontiguousarray(Qd, dtype=np.float32)
    Kd = np.ascontiguousarray(Kd, dtype=np.float32)
    T, L = Qd.shape[0], Kd.shape[0]
    out = np.full((T, m), -1, np.int64)
    order = np.argsort(cuts, kind="stable")
    sc = np.asarray(cuts, dtype=np.int64)[order]
    cap = 4 * m
    for s in range(0, T, _DRAFT_ROWS):
        e = min(T, s + _DRAFT_ROWS)
        B = e - s
        qb = Qd[order[s:e]]
        cb = sc[s:e]
        keys = np.empty((B, cap), np.uint64)
        nkeys = np.zeros(B, np.int64)
        bound = np.full(B, np.iinfo(np.uint64).max, np.uint64)
        limit = int(min(L, cb.max()))
        for a in range(0, limit, _DRAFT_COLS):
            w = min(_DRAFT_COLS, limit - a)
            LK.buffer_topm(qb @ Kd[a : a + w].T, a, cb, m, keys, nkeys, bound)
        ob = np.empty((B, m), np.int64)
        LK.buffer_finish(keys, nkeys, m, ob)
        out[order[s:e]] = ob
    return out


def _principal_directions(E: np.ndarray, r: int, *, max_rows: int = 200_000, seed: int = 0) -> np.ndarray:
    """(d, r) float32: the top-r right singular vectors of the item table (uncentered:
    inner products, not distances, are approximated). Computed from at most
    ``max_rows`` seeded rows."""
    X = E
    if X.shape[0] > max_rows:
        X = E[np.sort(np.random.default_rng(seed).choice(E.shape[0], max_rows, replace=False))]
    G = X.astype(np.float64).T @ X.astype(np.float64)  # (d, d)
    w, V = np.linalg.eigh(G)
    V = V[:, np.argsort(-w, kind="stable")[:r]]
    return np.ascontiguousarray(V, dtype=np.float32)


def _rescore(E: np.ndarray, Q: np.ndarray, rows: np.ndarray, cand: np.ndarray, cuts: np.ndarray, k: int) -> RetrievalResult:
    """Exact scores of the candidates, top-k per row, ties to the more recent behavior."""
    T = Q.shape[0]
    hs = np.empty((T, k), np.float32)
    hr = np.empty((T, k), np.int64)
    sizes = np.zeros(T, np.int64)
    LK.rescore_candidates(np.ascontiguousarray(Q, dtype=np.float32), E, rows, np.ascontiguousarray(cand, dtype=np.int64),
                          np.asarray(cuts, dtype=np.int64), k, hs, hr, sizes)
    pos = np.full((T, k), -1, np.int64)
    sc = np.full((T, k), -np.inf, np.float32)
    K_.heaps_finish(hs, hr, sizes, pos, sc)
    return RetrievalResult.from_positions(pos, sc)


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate`.

    Attributes:
        candidates: the chosen c (the smallest grid value reaching ``target_recall``, or
            the largest tried when none does; ``reached`` says which).
        target_recall: the recall@k asked for.
        reached: whether ``candidates`` reaches it on the calibration requests.
        curve: ``[(c, mean recall@k), ...]`` for every grid value tried, ascending.
        confidence: the one-sided confidence level of the test (``None``: the plain mean).
        lower_bounds: the lower confidence bound of the mean recall per grid value tried
            (equal to the means when ``confidence`` is ``None``).
    """

    candidates: float
    target_recall: float
    reached: bool
    curve: list[tuple[float, float]] = field(default_factory=list)
    confidence: float | None = None
    lower_bounds: list[float] = field(default_factory=list)


def calibrate(
    method: Any,
    requests: Sequence[tuple[Any, Any] | tuple[Any, Any, Any]],
    *,
    target_recall: float = 0.9,
    k: int | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    exact: Exact | None = None,
    apply: bool = True,
    confidence: float | None = None,
) -> Calibration:
    """Choose the candidate factor c of ``method`` (a :class:`Cascade` or
    :class:`~gsu.retrieval.clustered.Clustered`) for a target recall against ``Exact``.

    Args:
        method: has a ``candidates`` attribute and ``retrieve``.
        requests: calibration requests ``(history, targets[, target_time])`` — use other
            targets (and ideally other users) than the ones you evaluate on.
        target_recall: mean recall@k (tie-tolerant, :func:`gsu.retrieval.quality.exact_recall`)
            to reach, in (0, 1].
        k: behaviors per target (default: the method's k).
        grid: candidate factors to try, ascending; the search stops at the first that
            reaches ``target_recall``.
        exact: the reference (default ``Exact(items, scale=method.scale)``).
        apply: set ``method.candidates`` to the result.
        confidence: when given (e.g. 0.95), a c counts as reaching ``target_recall`` only
            when the one-sided lower confidence bound of the mean recall over the
            calibration targets (normal approximation: mean - z·sd/√n) does, so that
            the chosen c still reaches the target on other targets despite the sampling
            noise of a finite calibration set. ``None``: the plain mean.

    Returns a :class:`Calibration` (the exact top-k of each request is computed once).
    """
    from gsu.retrieval import quality as M

    if not hasattr(method, "candidates") or not hasattr(method, "retrieve"):
        raise TypeError(f"method: expected a Cascade or Clustered retriever, got {type(method).__name__}")
    tr = float(target_recall)
    if not 0.0 < tr <= 1.0:
        raise ValueError(f"target_recall: expected a value in (0, 1], got {target_recall!r}")
    g = sorted(float(x) for x in grid)
    if not g or g[0] <= 0 or not all(math.isfinite(x) for x in g):
        raise ValueError(f"grid: expected positive candidate factors, got {list(grid)}")
    reqs = list(requests)
    if not reqs:
        raise ValueError("requests: expected at least one (history, targets[, target_time]) request")
    if confidence is not None and not 0.5 <= float(confidence) < 1.0:
        raise ValueError(f"confidence: expected a level in [0.5, 1) or None, got {confidence!r}")
    z = 0.0 if confidence is None else statistics.NormalDist().inv_cdf(float(confidence))
    k = method.k if k is None else int(k)
    ex = exact if exact is not None else Exact(method.items, k=k, scale=bool(getattr(method, "scale", False)))
    prepared = []
    for r in reqs:
        if len(r) not in (2, 3):
            raise ValueError("requests: each request is (history, targets) or (history, targets, target_time)")
        h, t = r[0], np.asarray(r[1])
        tt = r[2] if len(r) == 3 else None
        prepared.append((h, t, tt, ex.retrieve(h, t, k=k, target_time=tt)))
    old = method.candidates
    curve: list[tuple[float, float]] = []
    lower: list[float] = []
    chosen, reached = g[-1], False
    try:
        for c in g:
            method.candidates = c
            rec = [M.exact_recall(ex, h, t, method.retrieve(h, t, k=k, target_time=tt).positions, target_time=tt, truth=truth)
                   for h, t, tt, truth in prepared]
            allr = np.concatenate(rec)
            mean = float(np.mean(allr))
            lb = mean - z * float(np.std(allr, ddof=1)) / math.sqrt(allr.size) if z > 0 and allr.size > 1 else mean
            curve.append((c, mean))
            lower.append(lb)
            log.debug("calibrate %s: c=%g recall@%d=%.4f (lower bound %.4f)", type(method).__name__, c, k, mean, lb)
            if lb >= tr:
                chosen, reached = c, True
                break
    finally:
        method.candidates = chosen if apply else old
    if not reached:
        log.warning("calibrate: %s reaches recall %.3f at most (c=%g), below the target %.3f", type(method).__name__,
                    max(r for _, r in curve), chosen, tr)
    return Calibration(chosen, tr, reached, curve, None if confidence is None else float(confidence), lower)
