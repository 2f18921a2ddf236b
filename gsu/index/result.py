"""``SearchResult``: what every index's ``search`` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    """Top-k results of a batch of queries.

    Attributes:
        ids: (nq, k) int64 external ids, best first; -1 where fewer than k results exist.
        scores: (nq, k) float32, higher is better (inner product, cosine, or
            ``-hamming`` distance); -inf where ``ids == -1``.
        counts: (nq,) int64, number of valid entries in each row.
    """

    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.shape != self.scores.shape or self.ids.ndim != 2 or self.counts.shape != (self.ids.shape[0],):
            raise ValueError(
                f"inconsistent SearchResult shapes: ids {self.ids.shape}, scores {self.scores.shape}, counts {self.counts.shape}"
            )

    @classmethod
    def trusted(cls, ids: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> "SearchResult":
        """A result from arrays a kernel made in the right shapes, without the shape check
        (the lean one-query paths; everything else goes through the constructor)."""
        r = object.__new__(cls)
        d = r.__dict__
        d["ids"] = ids
        d["scores"] = scores
        d["counts"] = counts
        return r

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def empty(cls, nq: int, k: int) -> "SearchResult":
        return cls(
            np.full((nq, k), -1, dtype=np.int64),
            np.full((nq, k), -np.inf, dtype=np.float32),
            np.zeros(nq, dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: list["SearchResult"]) -> "SearchResult":
        return cls(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.counts for p in parts]),
        )
