"""The base-rate baseline: logistic regression on the user's past like rate.

For every sample the features use only the same user's *impressions* strictly before the
sample's time (sampled negatives are not impressions and are never counted):

- ``rate`` = (clicks + m * p0) / (impressions + m), the user's past click (like) rate shrunk
  towards the training prior ``p0`` with ``m`` = 5 pseudo-impressions;
- ``log1p(impressions)``;
- ``is_impression``: whether the sample is a logged impression (1) or a sampled negative (0)
  is *not* a feature (it would give the label away); nothing about the target item is either.

A model that cannot beat this baseline only ranks users by their base rates. The regression
(three coefficients) is fit by Newton's method on the training split.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gsu.ctr.data import CTRTask
from gsu.ctr.metrics import auc, gauc, logloss

logger = logging.getLogger(__name__)

__all__ = ["base_rate_features", "fit_logistic", "base_rate_baseline"]


def base_rate_features(task: CTRTask, *, prior: float | None = None, strength: float = 5.0) -> np.ndarray:
    """``(S, 2)`` float64 features ``[rate, log1p(past impressions)]`` per sample (see the
    module docstring). ``prior`` defaults to the training split's click rate."""
    s = task.samples
    user, time, label = s["user"], s["time"], s["label"].astype(np.float64)
    imp = s.get("impression")
    imp = np.ones(label.shape[0], bool) if imp is None else np.asarray(imp, bool)
    if prior is None:
        tr = task.split("train")
        prior = float(label[tr].mean())
    n = label.shape[0]
    order = np.lexsort((time, user))
    u, t, y, m = user[order], time[order], label[order], imp[order]
    cnt = np.zeros(n)
    pos = np.zeros(n)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], n]
    for a, b in zip(starts, ends):
        tt, yy, mm = t[a:b], y[a:b] * m[a:b], m[a:b].astype(np.float64)
        ccnt = np.concatenate([[0.0], np.cumsum(mm)])
        cpos = np.concatenate([[0.0], np.cumsum(yy)])
        before = np.searchsorted(tt, tt, side="left")  # impressions strictly earlier in time
        cnt[a:b] = ccnt[before]
        pos[a:b] = cpos[before]
    out = np.empty((n, 2))
    out[order, 0] = (pos + strength * prior) / (cnt + strength)
    out[order, 1] = np.log1p(cnt)
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-4, iters: int = 50) -> np.ndarray:
    """Coefficients ``(d + 1,)`` (intercept last) of an L2-regularised logistic regression fit
    by Newton's method; ``x (n, d)`` float, ``y (n,)`` 0/1."""
    X = np.column_stack([x, np.ones(x.shape[0])])
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -30, 30)))
        g = X.T @ (p - y) + l2 * w
        h = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(X.shape[1])
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def base_rate_baseline(task: CTRTask) -> dict[str, Any]:
    """Fit on train, report test ``{"auc", "gauc", "logloss", "coef"}`` of the baseline."""
    f = base_rate_features(task)
    tr, te = task.split("train"), task.split("test")
    y = task.samples["label"].astype(np.float64)
    w = fit_logistic(f[tr], y[tr])
    p = 1.0 / (1.0 + np.exp(-(np.column_stack([f[te], np.ones(te.size)]) @ w)))
    return {"auc": auc(y[te], p), "gauc": gauc(y[te], p, task.samples["user"][te]), "logloss": logloss(y[te], p),
            "coef": [float(c) for c in w]}
