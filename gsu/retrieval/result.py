"""Result types of the retrieval layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RetrievalResult", "SDIMResult"]


@dataclass(frozen=True)
class RetrievalResult:
    """The behaviors retrieved for each target.

    Attributes:
        positions: (T, k) int64 positions into the user's history (0 = oldest), best
            first; -1 where fewer than k behaviors were retrieved.
        scores: (T, k) float32 the method's retrieval score (higher is better; its
            scale depends on the method, see each class); -inf where ``positions == -1``.
        mask: (T, k) bool, True where the entry is a real retrieved behavior
            (``positions >= 0``); the CTR layer attends only where ``mask`` is True.
    """

    positions: np.ndarray
    scores: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        p, s, m = self.positions, self.scores, self.mask
        if p.ndim != 2 or s.shape != p.shape or m.shape != p.shape:
            raise ValueError(f"inconsistent RetrievalResult shapes: positions {p.shape}, scores {s.shape}, mask {m.shape}")

    @classmethod
    def from_positions(cls, positions: np.ndarray, scores: np.ndarray) -> "RetrievalResult":
        """Build from -1 padded positions; scores at padded slots are forced to -inf."""
        mask = positions >= 0
        scores = np.where(mask, scores, np.float32(-np.inf)).astype(np.float32, copy=False)
        return cls(positions.astype(np.int64, copy=False), scores, mask)

    @classmethod
    def empty(cls, n: int, k: int) -> "RetrievalResult":
        return cls(np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32), np.zeros((n, k), bool))

    @property
    def k(self) -> int:
        return int(self.positions.shape[1])

    @property
    def counts(self) -> np.ndarray:
        """(T,) int64 number of retrieved behaviors per target."""
        return self.mask.sum(axis=1).astype(np.int64)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


@dataclass(frozen=True)
class SDIMResult:
    """SDIM's output: one aggregated behavior vector per target (no positions).

    Attributes:
        vectors: (T, d) float32 — for each target, the sum of the behaviors sharing its
            bucket in each signature (optionally L2-normalised per signature), averaged
            over the m/τ signatures (SDIM §3); zero when nothing collided.
        mask: (T,) bool — True when at least one signature's bucket held a behavior.
        bucket_mask: (T, n_signatures) bool — True where that signature's bucket was non-empty.
    """

    vectors: np.ndarray
    mask: np.ndarray
    bucket_mask: np.ndarray

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.mask.shape != (self.vectors.shape[0],) or self.bucket_mask.shape[0] != self.vectors.shape[0]:
            raise ValueError(
                f"inconsistent SDIMResult shapes: vectors {self.vectors.shape}, mask {self.mask.shape}, bucket_mask {self.bucket_mask.shape}"
            )

    def __len__(self) -> int:
        return int(self.vectors.shape[0])
