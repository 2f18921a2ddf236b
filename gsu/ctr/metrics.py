"""CTR metrics: AUC, GAUC and logloss, in numpy.

- **AUC** is rank based (Mann-Whitney U): tied scores get their average rank, so a tie
  between a positive and a negative counts one half — identical to scikit-learn's
  ``roc_auc_score``.
- **GAUC** (group AUC, as in DIN, Zhou et al. 2018, eq. 6) is the average of per-user AUCs
  **weighted by each user's number of impressions** (samples) in the evaluated set. Users
  whose samples are all clicks or all non-clicks have no AUC and are **excluded** from both
  the numerator and the weights.
- **logloss** is the mean binary cross-entropy with probabilities clipped to
  ``[eps, 1 - eps]``.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import rankdata

logger = logging.getLogger(__name__)

__all__ = ["auc", "gauc", "logloss", "ctr_metrics"]


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores must have the same length, got {y.shape[0]} and {s.shape[0]}")
    if y.size == 0:
        raise ValueError("labels: empty input")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected only 0 and 1 (non-click / click)")
    if not np.isfinite(s).all():
        raise ValueError("scores: contain NaN or inf")
    return y.astype(np.int8), s


def _auc_unchecked(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    ranks = rankdata(s, method="average")
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc(labels, scores) -> float:
    """Area under the ROC curve.

    labels: ``(n,)`` 0/1; scores: ``(n,)`` float (probabilities or logits — only the order
    matters). Ties are averaged. Raises ``ValueError`` when only one class is present.
    """
    y, s = _labels_scores(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        raise ValueError("auc: undefined when labels contain only one class")
    return _auc_unchecked(y, s)


def gauc(labels, scores, groups) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's number of impressions.

    ``sum_u n_u * AUC_u / sum_u n_u`` over users ``u`` that have both a click and a non-click
    among their ``n_u`` samples; single-class users are excluded. labels ``(n,)`` 0/1,
    scores ``(n,)`` float, groups ``(n,)`` int user ids. Returns ``nan`` when no user has both
    classes (GAUC is undefined then; callers decide how to report it).
    """
    y, s = _labels_scores(labels, scores)
    g = np.asarray(groups)
    if g.shape != y.shape:
        raise ValueError(f"groups must have the same shape as labels, got {g.shape} and {y.shape}")
    order = np.argsort(g, kind="stable")
    g_sorted = g[order]
    bounds = np.flatnonzero(np.diff(g_sorted)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [g_sorted.shape[0]]])
    num = 0.0
    den = 0
    for a, b in zip(starts, ends):
        idx = order[a:b]
        yy = y[idx]
        n_pos = int(yy.sum())
        if n_pos == 0 or n_pos == yy.shape[0]:
            continue
        num += yy.shape[0] * _auc_unchecked(yy, s[idx])
        den += yy.shape[0]
    return float(num / den) if den else float("nan")


def logloss(labels, probs, *, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs (n,)`` in [0, 1] against 0/1 ``labels``."""
    y, p = _labels_scores(labels, probs)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("logloss: probs must lie in [0, 1] (pass probabilities, not logits)")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ctr_metrics(labels, probs, groups) -> dict[str, float]:
    """``{"auc", "gauc", "logloss", "n"}`` for one evaluated set (probabilities in [0, 1])."""
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(labels, probs, groups),
        "logloss": logloss(labels, probs),
        "n": int(np.asarray(labels).shape[0]),
    }
