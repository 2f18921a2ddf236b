"""SDIM's behavior-sequence encoding (BSE): per-user bucket tables served by lookup.

SDIM (Cao et al. 2022, "Sampling Is All You Need on Modeling Long-Term User Behaviors
for CTR Prediction", §3) hashes every behavior embedding with m random hyperplanes
(SimHash) and groups the m sign bits into m/τ *signatures* of τ bits. For a target,
the behaviors that share the target's bucket in signature s are summed; the sums are
(optionally) L2-normalised per signature and averaged over the m/τ signatures. In
expectation this weights behavior i by (1 − θᵢ/π)^τ, θᵢ its angle to the target — a
soft attention with no top-k and no per-target pass over the sequence.

Because a behavior's bucket does not depend on the target, the per-bucket sums can be
computed offline, once per user (SDIM's BSE module): for each user, each signature s
and each of its 2^τ buckets, the sum of the embeddings of the behaviors in the bucket
and their count. Serving a target is then m/τ table lookups: O(m·d) per target,
whatever the sequence length.

This module never imports torch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numba
import numba as nb
import numpy as np

from gsu._format import load_container, write_container
from gsu._simd import LANES, add_f32x16, prefetch
from gsu._validate import StateCheck, as_ids, as_ints, as_matrix, check_positive_int
from gsu.index.filters import IdMap
from gsu.index.simhash import check_n_bits, check_seed, check_tau, gaussian_hyperplanes, hash_signatures

log = logging.getLogger(__name__)

__all__ = ["BehaviorSequenceEncoder", "BSE_KIND", "MAX_TAU"]

BSE_KIND = "bse"
MAX_TAU = 16
"""Largest τ: each signature keeps 2^τ buckets per user."""

_FIT_BATCH = 1 << 20  # behaviors hashed per batch in fit (bounds the signature scratch)


_PREFETCH = 12  # behaviors ahead whose item-table row (and signatures) are prefetched


@nb.njit(cache=True, parallel=True)
def _scatter_users(emb, items, use_items, sig, sig_base, indptr, user_rows, sums, counts, nchunk):
    """Add each user's behaviors into its bucket tables.

    emb (n, d) float32 embeddings; behavior i of the batch is ``emb[items[i]]`` when
    ``use_items`` else ``emb[i]``; its signatures are ``sig[items[i]]`` when ``use_items``
    else ``sig[i - sig_base]`` ((n', S) uint16). Users: ``indptr`` (U+1,) into the
    behaviors; user u's tables are ``sums[user_rows[u]]`` (S, B, d) float32 and
    ``counts[user_rows[u]]`` (S, B) int64. All arrays C-contiguous.

    Behaviors are added one after another in sequence order (no reassociation), so
    adding a suffix later gives bit-identical sums to adding the whole sequence at once.
    When 16 divides d the add is a run of explicit 16-lane vector adds (numba's own loop
    would re-check operand overlap for every (behavior, signature)); with ``use_items`` the
    item-table row and signatures of the behavior ``_PREFETCH`` steps ahead are
    prefetched, so that the random reads from the table overlap with the adds.
    """
    U = indptr.shape[0] - 1
    S = sig.shape[1]
    d = emb.shape[1]
    B = counts.shape[2]
    vec = d % LANES == 0
    line = 64 // 4  # floats per cache line
    ef = emb.reshape(-1)
    sf = sig.reshape(-1)
    tf = sums.reshape(-1)
    cf = counts.reshape(-1)
    for c in nb.prange(nchunk):
        for u in range(c * U // nchunk, (c + 1) * U // nchunk):
            ur = user_rows[u]
            base_u = ur * S * B * d
            lo = indptr[u]
            hi = indptr[u + 1]
            for i in range(lo, hi):
                if use_items:
                    if i + _PREFETCH < hi:
                        rn = items[i + _PREFETCH]
                        for t in range(0, d, line):
                            prefetch(ef, rn * d + t)
                        prefetch(sf, rn * S)
                    r = items[i]
                    sr = r
                else:
                    r = i
                    sr = i - sig_base
                src = r * d
                cbase = ur * S * B
                sbase = sr * S
                if d == 64:  # the common width, unrolled: four adds per (behavior, signature)
                    for s_ in range(S):
                        b = np.int64(sf[sbase + s_])
                        cf[cbase + s_ * B + b] += 1
                        dst = base_u + (s_ * B + b) * 64
                        add_f32x16(tf, dst, ef, src)
                        add_f32x16(tf, dst + 16, ef, src + 16)
                        add_f32x16(tf, dst + 32, ef, src + 32)
                        add_f32x16(tf, dst + 48, ef, src + 48)
                    continue
                for s_ in range(S):
                    b = np.int64(sf[sbase + s_])
                    cf[cbase + s_ * B + b] += 1
                    dst = base_u + (s_ * B + b) * d
                    if vec:
                        for t in range(0, d, LANES):
                            add_f32x16(tf, dst + t, ef, src + t)
                    else:
                        for t in range(d):
                            tf[dst + t] += ef[src + t]


@nb.njit(cache=True, parallel=True)
def _aggregate(tsig, urows, sums, counts, normalize, nchunk, out, mask):
    """SDIM aggregation: out[t] = mean over s of (normalised) sums[urows[t], s, tsig[t, s]].

    tsig (T, S) int64 target signatures; urows (T,) int64 table rows; sums (U, S, B, d)
    float32; counts (U, S, B) int64. An empty bucket contributes zero and sets
    mask[t, s] = False. A non-empty bucket whose sum has zero norm contributes zero.
    """
    T = tsig.shape[0]
    S = tsig.shape[1]
    d = sums.shape[3]
    inv_s = np.float32(1.0 / S)
    for c in nb.prange(nchunk):
        acc = np.empty(d, np.float32)
        for t in range(c * T // nchunk, (c + 1) * T // nchunk):
            u = urows[t]
            for j in range(d):
                acc[j] = 0.0
            for s in range(S):
                b = tsig[t, s]
                if counts[u, s, b] > 0:
                    mask[t, s] = True
                    if normalize:
                        nrm = np.float32(0.0)
                        for j in range(d):
                            v = sums[u, s, b, j]
                            nrm += v * v
                        if nrm > 0:
                            scale = np.float32(1.0) / np.sqrt(nrm)
                            for j in range(d):
                                acc[j] += sums[u, s, b, j] * scale
                    else:
                        for j in range(d):
                            acc[j] += sums[u, s, b, j]
                else:
                    mask[t, s] = False
            for j in range(d):
                out[t, j] = acc[j] * inv_s


def _nchunk(n: int) -> int:
    return max(1, min(n, 4 * numba.get_num_threads()))


class BehaviorSequenceEncoder:
    """Per-user SDIM bucket tables: built offline for many users, appendable, persistent.

    Args:
        dim: embedding dimension d.
        n_hashes: m, the number of hash functions (random hyperplanes), SDIM §3; 1..256.
            More signatures (m/τ) average out the hashing noise of the aggregate.
        tau: τ, bits per signature, SDIM §3; must divide m; 1..16. Larger τ narrows the
            kernel (1 − θ/π)^τ — sharper attention on close behaviors — but leaves more
            buckets empty (2^τ buckets per signature) and more memory per user.
        seed: seed of the hyperplanes. The same ``(dim, n_hashes, seed)`` gives the same
            hash functions as :class:`gsu.index.SimHashIndex`, so bucket ids equal
            ``SimHashIndex(dim, n_hashes, seed=seed).signatures(x, tau)``.
        normalize: L2-normalise each signature's bucket sum before averaging over the
            signatures (as in the SDIM paper); ``False`` averages raw sums.

    Storage: for each user (a table row), ``sums`` (m/τ, 2^τ, d) float32 and ``counts``
    (m/τ, 2^τ) int64 — a fixed-size block per user, so user rows are indexed directly
    (no CSR needed). Users are rows ``0..U-1`` or, with ``user_ids``, any unique int64 ids.

    Typical use::

        enc = BehaviorSequenceEncoder(64, n_hashes=48, tau=3, seed=0).fit(emb, indptr)
        vec, mask = enc.aggregate(user, target_embeddings)   # (T, d), (T, m/τ)
        enc.append(user, new_behavior_embeddings)
        enc.save("bse.gsu"); enc = BehaviorSequenceEncoder.load("bse.gsu", mmap=True)
    """

    def __init__(self, dim: int, *, n_hashes: int = 48, tau: int = 3, seed: int = 0, normalize: bool = True):
        self.dim = check_positive_int(dim, name="dim")
        self.n_hashes = check_n_bits(n_hashes, name="n_hashes")
        self.tau = check_tau(tau, self.n_hashes)
        if self.tau > MAX_TAU:
            raise ValueError(f"tau: at most {MAX_TAU} bits per signature (2^tau buckets per user table), got {self.tau}")
        self.seed = check_seed(seed)
        if not isinstance(normalize, (bool, np.bool_)):
            raise TypeError(f"normalize: expected a bool, got {normalize!r}")
        self.normalize = bool(normalize)
        self._h = gaussian_hyperplanes(self.dim, self.n_hashes, seed=self.seed)
        self._sums = np.zeros((0, self.n_signatures, self.n_buckets, self.dim), np.float32)
        self._counts = np.zeros((0, self.n_signatures, self.n_buckets), np.int64)
        self._users = IdMap(np.zeros(0, np.int64))

    # -- shapes and data ---------------------------------------------------
    @property
    def n_signatures(self) -> int:
        """m/τ, the number of signatures (hash rounds)."""
        return self.n_hashes // self.tau

    @property
    def n_buckets(self) -> int:
        """2^τ buckets per signature."""
        return 1 << self.tau

    @property
    def n_users(self) -> int:
        return int(self._sums.shape[0])

    @property
    def user_ids(self) -> np.ndarray:
        """(U,) int64 user ids in table-row order."""
        return self._users.ids

    @property
    def hyperplanes(self) -> np.ndarray:
        """(m, d) float32 hyperplanes (hash functions)."""
        return self._h

    @property
    def sums(self) -> np.ndarray:
        """(U, m/τ, 2^τ, d) float32 per-bucket sums of behavior embeddings."""
        return self._sums

    @property
    def counts(self) -> np.ndarray:
        """(U, m/τ, 2^τ) int64 per-bucket behavior counts."""
        return self._counts

    # -- hashing -----------------------------------------------------------
    def signatures(self, vectors: Any) -> np.ndarray:
        """Bucket ids of ``vectors`` (n, d) float32 → (n, m/τ) int64 in [0, 2^τ)."""
        x = as_matrix(vectors, name="vectors", dim=self.dim, allow_empty=True)
        return hash_signatures(x, self._h, self.tau, np.zeros((x.shape[0], self.n_signatures), np.int64))

    def _sig16(self, x: np.ndarray) -> np.ndarray:
        return hash_signatures(x, self._h, self.tau, np.zeros((x.shape[0], self.n_signatures), np.uint16))

    def encode(self, behaviors: Any) -> tuple[np.ndarray, np.ndarray]:
        """Bucket tables of one sequence, without storing them.

        Args:
            behaviors: (L, d) float32 behavior embeddings, L >= 1.
        Returns:
            ``(sums, counts)``: (m/τ, 2^τ, d) float32 and (m/τ, 2^τ) int64.
        """
        x = as_matrix(behaviors, name="behaviors", dim=self.dim)
        sums = np.zeros((1, self.n_signatures, self.n_buckets, self.dim), np.float32)
        counts = np.zeros((1, self.n_signatures, self.n_buckets), np.int64)
        sig = self._sig16(x)
        _scatter_users(x, np.zeros(0, np.int64), False, sig, 0, np.array([0, x.shape[0]], np.int64),
                       np.zeros(1, np.int64), sums, counts, 1)
        return sums[0], counts[0]

    # -- building ----------------------------------------------------------
    def _check_indptr(self, indptr: Any, n: int, allow_empty: bool) -> np.ndarray:
        ip = as_ints(indptr, name="indptr")
        if ip.shape[0] < 2:
            raise ValueError(f"indptr: expected (U+1,) offsets for at least one user, got shape {ip.shape}")
        if ip[0] != 0 or ip[-1] != n or np.any(np.diff(ip) < 0):
            raise ValueError(f"indptr: expected non-decreasing offsets from 0 to {n} (the number of behaviors), "
                             f"got [{ip[0]}, ..., {ip[-1]}]")
        if not allow_empty:
            empty = np.flatnonzero(np.diff(ip) == 0)
            if empty.size:
                raise ValueError(f"empty sequences: user rows {empty[:10].tolist()} have no behaviors "
                                 f"({empty.size} in all); drop them or pass allow_empty=True")
        return ip

    def _set_users(self, n_users: int, user_ids: Any) -> None:
        if user_ids is None:
            ids = np.arange(n_users, dtype=np.int64)
        else:
            ids = as_ids(user_ids, name="user_ids", n=n_users, unique=True)
        self._users = IdMap(ids)
        self._sums = np.zeros((n_users, self.n_signatures, self.n_buckets, self.dim), np.float32)
        self._counts = np.zeros((n_users, self.n_signatures, self.n_buckets), np.int64)

    def fit(self, behaviors: Any, indptr: Any, *, user_ids: Any = None, allow_empty: bool = False) -> "BehaviorSequenceEncoder":
        """Build the tables of many users at once (replaces any existing tables).

        Args:
            behaviors: (N, d) float32 embeddings of all users' behaviors, users
                concatenated (CSR order), each user's behaviors in sequence order.
            indptr: (U+1,) int64 offsets: user row u owns ``behaviors[indptr[u]:indptr[u+1]]``.
            user_ids: optional (U,) unique int64 ids (default ``0..U-1``).
            allow_empty: accept users with no behaviors (their buckets are all empty);
                by default an empty sequence is an error.
        Returns ``self``.
        """
        x = as_matrix(behaviors, name="behaviors", dim=self.dim)
        ip = self._check_indptr(indptr, x.shape[0], allow_empty)
        self._set_users(ip.shape[0] - 1, user_ids)
        self._fit_rows(x, ip, np.arange(ip.shape[0] - 1, dtype=np.int64))
        return self

    def fit_items(
        self,
        item_embeddings: Any,
        items: Any,
        indptr: Any,
        *,
        user_ids: Any = None,
        allow_empty: bool = False,
        item_signatures: Any = None,
    ) -> "BehaviorSequenceEncoder":
        """Like :meth:`fit` for behaviors given as item ids into an item embedding table.

        Each item is hashed once; behaviors are scattered from ``item_embeddings[items]``.

        Args:
            item_embeddings: (n_items, d) float32.
            items: (N,) int64 item id of each behavior, in [0, n_items).
            indptr: (U+1,) int64 offsets into ``items``.
            item_signatures: optional (n_items, m/τ) bucket ids of the items, i.e.
                ``self.signatures(item_embeddings)`` computed once and reused across
                calls (e.g. per batch of users); by default they are computed here.
        """
        emb = as_matrix(item_embeddings, name="item_embeddings", dim=self.dim)
        it = as_ids(items, name="items")
        if it.size and (it.min() < 0 or it.max() >= emb.shape[0]):
            raise ValueError(f"items: ids must lie in [0, {emb.shape[0]}) (rows of item_embeddings), "
                             f"got range [{it.min()}, {it.max()}]")
        ip = self._check_indptr(indptr, it.shape[0], allow_empty)
        self._set_users(ip.shape[0] - 1, user_ids)
        if item_signatures is None:
            sig = self._sig16(emb)
        else:
            sig = np.asarray(item_signatures)
            if sig.shape != (emb.shape[0], self.n_signatures) or not np.issubdtype(sig.dtype, np.integer):
                raise ValueError(f"item_signatures: expected ({emb.shape[0]}, {self.n_signatures}) integer bucket ids "
                                 f"(from signatures(item_embeddings)), got {sig.dtype} {sig.shape}")
            if sig.size and (sig.min() < 0 or sig.max() >= self.n_buckets):
                raise ValueError(f"item_signatures: bucket ids must lie in [0, {self.n_buckets})")
            sig = np.ascontiguousarray(sig, dtype=np.uint16)
        _scatter_users(emb, it, True, sig, 0, ip, np.arange(ip.shape[0] - 1, dtype=np.int64),
                       self._sums, self._counts, _nchunk(ip.shape[0] - 1))
        return self

    def _fit_rows(self, x: np.ndarray, ip: np.ndarray, user_rows: np.ndarray) -> None:
        """Hash and scatter in batches of whole users of about ``_FIT_BATCH`` behaviors."""
        U = ip.shape[0] - 1
        u0 = 0
        no_items = np.zeros(0, np.int64)
        while u0 < U:
            u1 = int(np.searchsorted(ip, ip[u0] + _FIT_BATCH, side="right")) - 1
            u1 = min(max(u1, u0 + 1), U)
            lo, hi = int(ip[u0]), int(ip[u1])
            sig = self._sig16(x[lo:hi])
            _scatter_users(x, no_items, False, sig, lo, ip[u0 : u1 + 1], user_rows[u0:u1],
                           self._sums, self._counts, _nchunk(u1 - u0))
            u0 = u1

    def _row(self, user: Any) -> int:
        if isinstance(user, bool) or not isinstance(user, (int, np.integer)):
            raise TypeError(f"user: expected an integer user id, got {user!r}")
        r = int(self._users.rows(np.array([user], np.int64))[0])
        if r < 0:
            raise KeyError(f"unknown user {user} (the encoder holds {self.n_users} users)")
        return r

    def append(self, user: int, behaviors: Any) -> None:
        """Add new behaviors (n, d) float32 at the end of ``user``'s sequence.

        The tables afterwards are identical (bit for bit) to rebuilding the user's tables
        from the whole, longer sequence.
        """
        r = self._row(user)
        x = as_matrix(behaviors, name="behaviors", dim=self.dim)
        if not (self._sums.flags.writeable and self._counts.flags.writeable):
            raise ValueError("append: the tables are read-only arrays; pass writable ones (or load the encoder from a file)")
        sig = self._sig16(x)
        _scatter_users(x, np.zeros(0, np.int64), False, sig, 0, np.array([0, x.shape[0]], np.int64),
                       np.array([r], np.int64), self._sums, self._counts, 1)

    # -- serving -----------------------------------------------------------
    def aggregate(self, user: int, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """SDIM's user-interest vector for each target, from ``user``'s tables.

        Args:
            user: user id.
            targets: (T, d) float32 target (candidate item) embeddings.
        Returns:
            ``(vectors, mask)``: vectors (T, d) float32 — the mean over the m/τ signatures
            of the sum of the behaviors sharing the target's bucket (L2-normalised per
            signature when ``normalize``); mask (T, m/τ) bool, True where the target's
            bucket in that signature holds at least one behavior (False buckets
            contribute zero to the mean).
        """
        r = self._row(user)
        t = as_matrix(targets, name="targets", dim=self.dim)
        return self._aggregate_rows(np.full(t.shape[0], r, np.int64), t)

    def aggregate_many(self, users: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`aggregate` for a batch of (user, target) pairs: users (T,) int64, targets (T, d)."""
        t = as_matrix(targets, name="targets", dim=self.dim)
        u = as_ids(users, name="users", n=t.shape[0])
        rows = self._users.rows(u)
        if np.any(rows < 0):
            raise KeyError(f"unknown users: {u[rows < 0][:5].tolist()}")
        return self._aggregate_rows(rows, t)

    def aggregate_sequence(self, behaviors: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`aggregate` over a sequence given directly (encoded on the fly, not stored)."""
        sums, counts = self.encode(behaviors)
        t = as_matrix(targets, name="targets", dim=self.dim)
        return self._aggregate_tables(sums[None], counts[None], np.zeros(t.shape[0], np.int64), t)

    def _aggregate_rows(self, rows: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._aggregate_tables(self._sums, self._counts, rows, t)

    def _aggregate_tables(self, sums, counts, rows, t) -> tuple[np.ndarray, np.ndarray]:
        T = t.shape[0]
        out = np.zeros((T, self.dim), np.float32)
        mask = np.zeros((T, self.n_signatures), bool)
        tsig = self.signatures(t)
        _aggregate(tsig, np.ascontiguousarray(rows, np.int64), sums, counts, self.normalize, _nchunk(T), out, mask)
        return out, mask

    # -- persistence -------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_hashes": self.n_hashes, "tau": self.tau, "seed": self.seed, "normalize": self.normalize}

    def save(self, path: str | os.PathLike) -> None:
        """Write the tables and the encoder settings to ``path`` (gsu container, kind ``"bse"``)."""
        write_container(path, BSE_KIND, self._config(), {
            "hyperplanes": self._h, "sums": self._sums, "counts": self._counts, "user_ids": self._users.ids,
        })

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> "BehaviorSequenceEncoder":
        """Reload a saved encoder; ``mmap=True`` maps the tables copy-on-write: ``append``
        then changes this process's pages only, never the file (``save`` writes them).

        Validated first (one :class:`~gsu.errors.IndexFileError` line naming the file and
        the field otherwise): settings in range, hyperplanes of the saved shape and equal
        to those the seed gives, tables of shape (U, m/τ, 2^τ, d) / (U, m/τ, 2^τ), counts
        non-negative, user ids distinct and never -1, sums finite when ``verify``.
        """

        def build(kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "BehaviorSequenceEncoder":
            c = StateCheck(config, arrays, values=verify)
            dim = c.cfg_int("dim", lo=1, hi=1 << 20)
            n_hashes = c.cfg_int("n_hashes", lo=1, hi=256)
            tau = c.cfg_int("tau", lo=1, hi=MAX_TAU)
            c.cfg_int("seed", lo=0, hi=2**63 - 1)
            c.cfg_bool("normalize")
            h = c.array("hyperplanes", np.float32, (n_hashes, dim))  # bounds what the constructor allocates
            uids = c.array("user_ids", np.int64, (None,))
            c.ids("user_ids", uids)
            U, S, B = uids.shape[0], n_hashes // max(tau, 1), 1 << tau
            sums = c.array("sums", np.float32, (U, S, B, dim))
            counts = c.array("counts", np.int64, (U, S, B))
            if counts.size and counts.min() < 0:
                raise c.fail("array 'counts'", "holds negative counts")
            c.finite("sums", sums)
            enc = cls(dim, n_hashes=n_hashes, tau=tau, seed=int(config["seed"]), normalize=bool(config["normalize"]))
            if not np.array_equal(h, enc._h):
                raise c.fail("array 'hyperplanes'", "differ from those (dim, n_hashes, seed) give")
            enc._sums, enc._counts, enc._users = sums, counts, IdMap(uids)
            return enc

        return load_container(path, build, mmap=mmap, verify=verify, kind=BSE_KIND, what="bse file")

    def __repr__(self) -> str:
        return (f"BehaviorSequenceEncoder(dim={self.dim}, n_hashes={self.n_hashes}, tau={self.tau}, "
                f"seed={self.seed}, normalize={self.normalize}, n_users={self.n_users})")
