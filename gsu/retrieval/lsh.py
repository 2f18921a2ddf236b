"""Hashing GSUs: ETA's SimHash Hamming top-k and SDIM's bucket aggregation.

Both wrap the LSH primitives of :mod:`gsu.index.simhash` and
:mod:`gsu.retrieval.bse`; the per-item codes / hyperplanes are computed once, so a
request only gathers codes (ETA) or looks up per-user bucket tables (SDIM).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gsu.retrieval.items import ItemTable
from gsu.retrieval.methods import Retriever
from gsu.retrieval.result import RetrievalResult, SDIMResult
from gsu.retrieval.store import BehaviorStore, History

log = logging.getLogger(__name__)

__all__ = ["SimHashTopK", "SDIM"]


class SimHashTopK(Retriever):
    """ETA (Chen et al. 2021): the k behaviors whose SimHash code is nearest the
    target's in Hamming distance.

    Every item's code is computed once at construction (ETA's offline hashing of the
    embedding table); a request gathers the history's codes and runs the exact
    Hamming top-k kernel of :func:`gsu.index.simhash.hamming_topk` (counting selection,
    no sort). Scores are ``-distance`` (float32); ties go to the more recent behavior.

    Args:
        items: ItemTable with ``embeddings`` (n, d).
        k: behaviors per target (ETA's k).
        n_bits: m, hash functions (bits per code), 1..256 (ETA uses m = 64..128);
            more bits estimate the angle more finely (recall ↑, cost ∝ words).
        seed: seed of the random hyperplanes.
        device: ``None`` (numba) or a torch device: the Hamming top-k runs there as a
            product of ±1 bit vectors (:mod:`gsu.retrieval.device`, same results).
    """

    name = "simhash"

    def __init__(self, items: ItemTable, *, k: int = 100, n_bits: int = 64, seed: int = 0, device: Any = None):
        super().__init__(items, k=k)
        self.device = device
        from gsu.index.simhash import SimHashIndex

        E = items.need("embeddings")
        self.hasher = SimHashIndex(E.shape[1], n_bits, seed=seed)
        self.n_bits = self.hasher.n_bits
        self.codes = self.hasher.encode(E)  # (n, n_words) uint64, one per item

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:
        if self.device is not None:
            from gsu.retrieval.device import retrieve_one

            return retrieve_one(self, h, trows, k, cuts)
        from gsu.index.simhash import hamming_topk

        rows = self.items.rows(h.items, name="history items")
        L = rows.shape[0]
        # reversed order: index i is position L-1-i, so the kernel's "smaller row wins"
        # tie rule prefers the more recent behavior, and the visible prefix [0, c) is
        # the contiguous tail [L-c, L) of the reversed codes.
        rev = self.codes[rows[::-1]]
        q = self.codes[trows]
        T = trows.shape[0]
        pos = np.full((T, k), -1, np.int64)
        sc = np.full((T, k), -np.inf, np.float32)
        for c in np.unique(cuts):
            if c == 0:
                continue
            sel = np.flatnonzero(cuts == c)
            p, dist = hamming_topk(q[sel], rev[L - c :], k, n_bits=self.n_bits)
            ok = p >= 0
            pos[sel] = np.where(ok, c - 1 - p, -1)
            sc[sel] = np.where(ok, -dist.astype(np.float32), -np.inf)
        return RetrievalResult.from_positions(pos, sc)

    def __repr__(self) -> str:
        return f"SimHashTopK(k={self.k}, n_bits={self.n_bits})"


class SDIM(Retriever):
    """SDIM (Cao et al. 2022): per target, the average over m/τ signatures of the sum of
    the behaviors sharing the target's τ-bit bucket — no top-k, no positions.

    With :meth:`fit` the per-user bucket tables are built offline for every user of a
    store (SDIM's BSE, :class:`gsu.retrieval.BehaviorSequenceEncoder`), and a request
    whose history is the fitted one (no time cut) is served by table lookup: O(m·d)
    per target, independent of L. Otherwise (time cut, unfitted user, or a history
    that grew since) the tables of the visible prefix are built on the fly, one
    incremental pass over the history for all cuts of the request.

    Args:
        items: ItemTable with ``embeddings`` (n, d).
        n_hashes: m, hash functions (SDIM §3), 1..256.
        tau: τ, bits per signature (must divide m; SDIM uses 2..3).
        seed: hyperplane seed (same hash functions as ``SimHashIndex(d, m, seed)``).
        normalize: L2-normalise each signature's bucket sum before averaging (the paper).

    ``retrieve(history, targets, *, k=None, target_time=None)`` returns an
    :class:`SDIMResult` (``k`` is accepted for a uniform call and ignored).
    """

    name = "sdim"
    output = "vectors"
    fit_serves_time_cuts = False

    def __init__(self, items: ItemTable, *, n_hashes: int = 48, tau: int = 3, seed: int = 0, normalize: bool = True):
        super().__init__(items, k=1)
        from gsu.retrieval.bse import BehaviorSequenceEncoder

        E = items.need("embeddings")
        self._params = {"n_hashes": n_hashes, "tau": tau, "seed": seed, "normalize": normalize}
        self.encoder = BehaviorSequenceEncoder(E.shape[1], **self._params)
        self._lengths: dict[int, int] = {}

    @property
    def n_signatures(self) -> int:
        return self.encoder.n_signatures

    def fit(self, store: BehaviorStore) -> "SDIM":
        """Build every store user's bucket tables offline (SDIM's BSE). Returns ``self``."""
        if not isinstance(store, BehaviorStore):
            raise TypeError(f"store: expected a BehaviorStore, got {type(store).__name__}")
        items = store.column("items")
        rows = self.items.rows(items, name="store items")
        self.encoder.fit_items(self.items.embeddings, rows, store.indptr, user_ids=store.user_ids, allow_empty=True)
        self._lengths = dict(zip(store.user_ids.tolist(), store.lengths.tolist()))
        return self

    def append(self, user: int, items: Any) -> None:
        """Add new behaviors (item ids) of a fitted ``user`` to its tables (mirror of
        ``BehaviorStore.append``); the tables equal a rebuild."""
        rows = self.items.rows(items, name="items")
        u = int(user)
        if u not in self._lengths:
            raise ValueError(f"user {u}: not fitted; call fit(store) first")
        self.encoder.append(u, self.items.embeddings[rows])
        self._lengths[u] += rows.shape[0]

    def retrieve(self, history: Any, targets: Any, *, k: int | None = None, target_time: Any = None) -> SDIMResult:  # type: ignore[override]
        """SDIM vectors (T, d) for each target; see the class docstring."""
        h, trows, _, cuts = self._prepare(history, targets, None, target_time)
        return self._retrieve(h, trows, 1, cuts)

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> SDIMResult:  # type: ignore[override]
        E = self.items.embeddings
        tv = E[trows]
        L = len(h)
        T = trows.shape[0]
        fitted = h.user >= 0 and self._lengths.get(h.user) == L
        if fitted and np.all(cuts == L):
            vec, bmask = self.encoder.aggregate(h.user, tv)
            return SDIMResult(vec, bmask.any(axis=1), bmask)
        from gsu.retrieval.bse import BehaviorSequenceEncoder

        rows = self.items.rows(h.items, name="history items")
        vec = np.zeros((T, E.shape[1]), np.float32)
        bmask = np.zeros((T, self.encoder.n_signatures), bool)
        tmp = BehaviorSequenceEncoder(E.shape[1], **self._params)
        done = 0
        for c in np.unique(cuts):
            c = int(c)
            if c == 0:
                continue
            sel = np.flatnonzero(cuts == c)
            if done == 0:
                tmp.fit_items(E, rows[:c], np.array([0, c], np.int64))
            else:
                tmp.append(0, E[rows[done:c]])
            done = c
            v, m = tmp.aggregate(0, tv[sel])
            vec[sel] = v
            bmask[sel] = m
        return SDIMResult(vec, bmask.any(axis=1), bmask)

    def __repr__(self) -> str:
        p = self._params
        return f"SDIM(n_hashes={p['n_hashes']}, tau={p['tau']}, normalize={p['normalize']}, fitted_users={len(self._lengths)})"
