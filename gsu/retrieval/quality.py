"""Quality of a retrieval against exact target attention.

- :func:`recall_rows` (from :mod:`gsu.index.topk`, the one recall of the project) — share
  of the exact top-k positions a method found, per target, with ann-benchmarks' tie
  tolerance (a found position whose *exact* score is within ``eps`` of the exact k-th
  score counts as a hit: a history often holds the same item several times, and those
  positions tie); :func:`exact_recall` computes the truth and the scores for it.
- :func:`attention_mass` — share of the exact softmax-attention weight over the whole
  (visible) history that the retrieved positions carry: 1.0 means the ESU attending
  over the subset loses nothing of full attention.
- :func:`attention_vectors` / :func:`cosine` — the exact softmax-attention output over
  the full history, to compare SDIM's aggregated vectors against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gsu.index.topk import recall_rows
from gsu.retrieval.methods import Exact
from gsu.retrieval.store import History

__all__ = ["recall_rows", "exact_recall", "attention_mass", "attention_mass_many", "attention_vectors", "cosine"]


def exact_recall(exact: Exact, history: Any, targets: Any, positions: Any, *, target_time: Any = None, truth: Any = None, eps: float = 1e-3) -> np.ndarray:
    """Recall@k (T,) of ``positions`` (T, k) against ``exact``'s top-k, tie-tolerant.

    ``truth`` may pass a precomputed ``exact.retrieve(...)`` result of the same k.
    """
    pos = np.asarray(positions, dtype=np.int64)
    if truth is None:
        truth = exact.retrieve(history, targets, k=pos.shape[1], target_time=target_time)
    fs = exact.score_positions(history, targets, pos)
    return recall_rows(pos, truth.positions, found_scores=fs, true_scores=truth.scores, eps=eps)


def attention_mass(
    exact: Exact,
    history: Any,
    targets: Any,
    positions: Any,
    *,
    target_time: Any = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Share (T,) of exact softmax attention captured by the retrieved ``positions``.

    Weights are softmax_i(score(target, behavior_i) / temperature) over the behaviors
    visible to the target (``exact``'s score: inner product, optionally projected,
    scaled, multi-head); the share is the sum of the weights of the (distinct, valid)
    retrieved positions (T, k). A target with no visible behavior gets 1.0.
    """
    return attention_mass_many(exact, history, targets, {"p": positions}, target_time=target_time, temperature=temperature)["p"]


def attention_mass_many(
    exact: Exact,
    history: Any,
    targets: Any,
    positions: dict[str, Any],
    *,
    target_time: Any = None,
    temperature: float = 1.0,
) -> dict[str, np.ndarray]:
    """:func:`attention_mass` for several methods' positions in one pass over the scores.

    ``positions`` maps a name to (T, k_name) positions; returns name → (T,) shares.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    h = History.coerce(history)
    pos = {name: np.asarray(p, dtype=np.int64) for name, p in positions.items()}
    T = np.atleast_1d(np.asarray(targets)).shape[0]
    for name, p in pos.items():
        if p.ndim != 2 or p.shape[0] != T:
            raise ValueError(f"positions[{name!r}]: expected shape ({T}, k), got {p.shape}")
    out = {name: np.ones(T, dtype=np.float64) for name in pos}
    for rows, W, ok in _softmax_blocks(exact, h, targets, target_time, temperature):
        Z = W.sum(axis=1)
        for name, p in pos.items():
            ps = np.sort(p[rows], axis=1)
            dup = np.zeros(ps.shape, bool)
            dup[:, 1:] = ps[:, 1:] == ps[:, :-1]
            valid = (ps >= 0) & ~dup
            got = np.where(valid, np.take_along_axis(W, np.maximum(ps, 0), axis=1), 0.0).sum(axis=1)
            out[name][rows] = np.where(ok & (Z > 0), got / np.where(Z > 0, Z, 1.0), 1.0)
    return out


def _softmax_blocks(exact: Exact, h: History, targets: Any, target_time: Any, temperature: float):
    """Per block of targets: ``(rows, W, ok)`` — the unnormalised softmax weights
    ``exp(score / temperature - max)`` (float64, 0 past each target's time cut) and whether
    the target sees any behavior at all."""
    for rows, S in exact.score_blocks(h, targets, target_time=target_time):
        S = S.astype(np.float64) / temperature
        mx = S.max(axis=1, keepdims=True)
        ok = np.isfinite(mx[:, 0])
        mx[~ok] = 0.0
        yield rows, np.exp(S - mx), ok


def attention_vectors(exact: Exact, history: Any, targets: Any, *, target_time: Any = None, temperature: float = 1.0) -> np.ndarray:
    """(T, d) float32 exact softmax-attention output over the whole visible history:
    Σ_i softmax_i(score_i / temperature) · e_i with e_i the behaviors' ``embeddings``
    (zero where nothing is visible)."""
    h = History.coerce(history)
    E = exact.items.embeddings[exact.items.rows(h.items, name="history items")].astype(np.float64)
    T = np.atleast_1d(np.asarray(targets)).shape[0]
    out = np.zeros((T, E.shape[1]), dtype=np.float64)
    for rows, W, ok in _softmax_blocks(exact, h, targets, target_time, temperature):
        Z = W.sum(axis=1, keepdims=True)
        out[rows] = np.where(ok[:, None], (W @ E) / np.where(Z > 0, Z, 1.0), 0.0)
    return out.astype(np.float32)


def cosine(a: Any, b: Any) -> np.ndarray:
    """Row-wise cosine (T,) of two (T, d) arrays; 0 where either row is zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine: expected two (T, d) arrays of the same shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    den = na * nb
    return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
