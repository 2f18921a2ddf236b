"""Lifelong users with planted interests: sequences of 10^4 to 10^6 behaviors whose
interest structure is known, so that multi-interest retrieval can be scored against it.

The planted model (all settings are recorded in ``params``):

1. **Topics and items.** ``n_topics`` topic centres uniform on the unit sphere in ``dim``
   dimensions; topic sizes are Zipf-like (exponent 0.6). Each topic has ``n_subtopics``
   subtopic centres ``normalize(c_z + spread · g / √dim)``, g standard normal (cosine to
   the topic centre ≈ 1/√(1+spread²), 0.78 at the default 0.8), and an item of subtopic s
   has embedding ``normalize(c_s + item_spread · g / √dim)`` (≈ 0.94 to its subtopic at
   0.35): categories, sub-categories, items — the multi-scale structure of learned item
   embeddings. ``n_subtopics=1`` gives isotropic topics (items straight around the topic
   centre with spread ``spread``: no structure below the topic, the hard case for any
   index). Within a topic, item popularity falls with a random rank (draw
   ``⌊size · u^pop⌋``).
2. **Interests.** User u has ``n_interests`` interests: distinct topics drawn by topic
   size, with base weights from a symmetric Dirichlet(``concentration``) — a few strong
   interests and several weak ones.
3. **Drift.** At relative position τ ∈ [0, 1] the interest weights are
   ``softmax(log w_j + β_j (τ - 1))`` with ``β ~ N(0, drift²)``: at the end of the
   sequence they equal the base weights; earlier, some interests were stronger or weaker.
4. **Behaviors.** A share ``noise_rate`` of behaviors are random popular items (global
   Zipf, exponent 0.8; label -1); the others draw an interest j from the weights at their
   position and an item of its topic (label j). With ``unique_items`` every behavior is a
   fresh item of its topic (appended to the catalog: a lifelong sequence of distinct
   content, no repeats); otherwise items repeat as popularity dictates.
5. **Time.** Gaps of 1 s + Exp(60 s) inside a session, 1 s + Exp(1 day) between sessions
   (2% of gaps); timestamps strictly increase within a user.
6. **Facet targets.** Per user, ``n_facet_targets`` multi-facet items (a bundle, a movie of
   two genres): 2 or 3 of the user's interests (drawn by weight) with facet weights from a
   Dirichlet(2), embedding ``normalize(Σ_f a_f c_f / |Σ_f a_f c_f| + facet_spread · g / √dim)``,
   appended to the catalog; the facets and their weights are recorded.

Planted relevance (:func:`planted_relevant`): for a request whose relevant interests are
J with weights a_j (a facet target's facets; or all the user's interests weighted by
their share of the visible behaviors), the k relevant behaviors are, for every j ∈ J,
the ``n_j`` visible behaviors of interest j closest to its *planted* topic centre
(largest inner product; ties to the more recent), with n_j the largest-remainder split
of k by a_j. They do not depend on any method's estimate of the interests.

:func:`lifelong_users_cached` stores a generated set under a cache folder
(``np.savez``, keyed by the settings) and reloads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gsu._validate import check_positive_int
from gsu.datasets.synthetic import _check_float, _normalize_rows, _sample_cdf, _zipf_weights

log = logging.getLogger(__name__)

__all__ = ["LifelongUsers", "lifelong_users", "lifelong_users_cached", "planted_relevant", "interest_shares"]

_CHUNK = 1 << 18


@dataclass(frozen=True)
class LifelongUsers:
    """Lifelong sequences with planted interests (see the module docstring).

    Attributes:
        item_emb: (n, dim) float32 unit item embeddings (regular items, then fresh
            per-behavior items with ``unique_items``, then facet targets).
        item_topic: (n,) int64 topic of each item (-1 for facet targets).
        topic_centers: (n_topics, dim) float32 unit topic centres.
        n_regular: number of regular catalog items (ids ``0..n_regular-1``).
        indptr: (U+1,) int64 CSR offsets over users.
        items: (N,) int64 item id of each behavior.
        timestamps: (N,) int64, strictly increasing within a user.
        interest: (N,) int64 planted interest of each behavior (index into the user's
            interests, 0..m-1) or -1 (a random, non-interest behavior).
        user_topics: (U, m) int64 topic of each of the user's interests.
        user_weights: (U, m) float64 base interest weights (sum 1 per user).
        facet_items: (U, F) int64 item ids of each user's multi-facet targets.
        facet_interests: (U, F, 3) int64 the target's facets (the user's interest
            indices), -1 padded.
        facet_weights: (U, F, 3) float64 facet weights (sum 1 over the real facets).
        params: generator settings.
    """

    item_emb: np.ndarray
    item_topic: np.ndarray
    topic_centers: np.ndarray
    n_regular: int
    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    interest: np.ndarray
    user_topics: np.ndarray
    user_weights: np.ndarray
    facet_items: np.ndarray
    facet_interests: np.ndarray
    facet_weights: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def user_slice(self, user: int) -> slice:
        if not 0 <= user < self.n_users:
            raise ValueError(f"user: expected 0 <= user < {self.n_users}, got {user}")
        return slice(int(self.indptr[user]), int(self.indptr[user + 1]))

    def store(self):
        """The sequences as a :class:`gsu.retrieval.BehaviorStore` (user ids 0..U-1,
        per-behavior category = the item's topic, -1 for none)."""
        from gsu.retrieval import BehaviorStore

        return BehaviorStore(self.indptr, self.items, self.timestamps, category=self.item_topic[self.items])

    def labels(self, user: int) -> np.ndarray:
        """(L,) int64 planted interest of each of ``user``'s behaviors (-1 = none)."""
        return self.interest[self.user_slice(user)]


def interest_shares(labels: np.ndarray, m: int, cut: int | None = None) -> np.ndarray:
    """(m,) float64 share of each planted interest among the labelled (non-noise)
    behaviors before ``cut`` (all when ``None``)."""
    lab = np.asarray(labels)[: (None if cut is None else int(cut))]
    lab = lab[lab >= 0]
    cnt = np.bincount(lab, minlength=m)[:m].astype(np.float64)
    return cnt / max(cnt.sum(), 1.0)


def planted_relevant(
    data: LifelongUsers,
    user: int,
    interests: np.ndarray,
    weights: np.ndarray,
    k: int,
    *,
    cut: int | None = None,
) -> np.ndarray:
    """The k planted relevant behaviors of one request (see the module docstring).

    Args:
        user: user index.
        interests: (J,) int64 the relevant interests (user interest indices; -1 ignored).
        weights: (J,) float their weights.
        k: size of the relevant set (behaviors).
        cut: visible prefix length (default: the whole history).

    Returns:
        (k,) int64 positions, -1 padded (an interest with too few visible behaviors
        contributes what it has).
    """
    from gsu.retrieval.interests import largest_remainder

    sl = data.user_slice(user)
    lab = data.interest[sl]
    L = lab.shape[0] if cut is None else int(cut)
    J = np.asarray(interests, dtype=np.int64)
    w = np.where(J >= 0, np.asarray(weights, dtype=np.float64), 0.0)
    quota = largest_remainder(w, k)
    out = np.full(k, -1, np.int64)
    n = 0
    it = data.items[sl][:L]
    lab = lab[:L]
    for j, q in zip(J.tolist(), quota.tolist()):
        if j < 0 or q <= 0:
            continue
        p = np.flatnonzero(lab == j)
        if p.size == 0:
            continue
        c = data.topic_centers[data.user_topics[user, j]]
        s = data.item_emb[it[p]] @ c
        o = np.lexsort((-p, -s))[:q]  # score desc, then most recent
        out[n : n + o.size] = p[o]
        n += o.size
    return out


def _lengths(length: Any, n_users: int) -> np.ndarray:
    if isinstance(length, (list, tuple, np.ndarray)):
        ls = [check_positive_int(int(x), name="length", minimum=2) for x in length]
        if len(ls) != n_users:
            raise ValueError(f"length: expected {n_users} lengths (one per user), got {len(ls)}")
        return np.asarray(ls, np.int64)
    return np.full(n_users, check_positive_int(length, name="length", minimum=2), np.int64)


def lifelong_users(
    n_users: int = 1,
    *,
    length: int | list[int] = 100_000,
    n_items: int = 200_000,
    dim: int = 64,
    n_topics: int = 256,
    n_interests: int = 8,
    concentration: float = 1.0,
    noise_rate: float = 0.1,
    spread: float = 0.8,
    n_subtopics: int = 16,
    item_spread: float = 0.35,
    popularity: float = 1.5,
    drift: float = 1.0,
    unique_items: bool = False,
    n_facet_targets: int = 64,
    facet_spread: float = 0.3,
    seed: int = 0,
) -> LifelongUsers:
    """Generate lifelong users with planted interests (see the module docstring).

    Args:
        n_users: users (>= 1).
        length: behaviors per user (one int, or one per user), 10^4..10^6 typical.
        n_items: regular catalog items (>= n_topics).
        dim: embedding dimension.
        n_topics: topics (item clusters).
        n_interests: m, interests per user (<= n_topics).
        concentration: Dirichlet concentration of the base interest weights (lower =
            more uneven).
        noise_rate: share of random non-interest behaviors.
        spread: subtopic noise around the topic centre (item noise with ``n_subtopics=1``).
        n_subtopics: subtopics per topic (1 = isotropic topics).
        item_spread: item noise around its subtopic centre.
        popularity: within-topic popularity exponent (1 = uniform; larger = more repeats).
        drift: standard deviation of the interest-weight slopes over the sequence.
        unique_items: every behavior is a distinct fresh item (no repeats).
        n_facet_targets: multi-facet target items per user.
        facet_spread: noise of a facet target around its mixture direction.
        seed: seed of ``np.random.default_rng``.
    """
    U = check_positive_int(n_users, name="n_users")
    Z = check_positive_int(n_topics, name="n_topics")
    n = check_positive_int(n_items, name="n_items", minimum=Z)
    d = check_positive_int(dim, name="dim", minimum=2)
    m = check_positive_int(n_interests, name="n_interests")
    if m > Z:
        raise ValueError(f"n_interests: at most n_topics ({Z}), got {m}")
    F = check_positive_int(n_facet_targets, name="n_facet_targets", minimum=0)
    conc = _check_float(concentration, name="concentration", lo=0.0, lo_open=True)
    noise = _check_float(noise_rate, name="noise_rate", lo=0.0, hi=1.0)
    spread = _check_float(spread, name="spread", lo=0.0)
    S = check_positive_int(n_subtopics, name="n_subtopics")
    ispread = _check_float(item_spread, name="item_spread", lo=0.0)
    pop = _check_float(popularity, name="popularity", lo=1.0)
    drift = _check_float(drift, name="drift", lo=0.0)
    fspread = _check_float(facet_spread, name="facet_spread", lo=0.0)
    lengths = _lengths(length, U)
    rng = np.random.default_rng(seed)

    centers = _normalize_rows(rng.standard_normal((Z, d))).astype(np.float32)
    tw = _zipf_weights(Z, 0.6, rng)
    topic = np.concatenate([np.arange(Z), _sample_cdf(np.cumsum(tw), rng.random(n - Z))])
    topic = topic[rng.permutation(n)].astype(np.int64)

    if S == 1:
        sub_centers, noise_scale = centers, spread
    else:
        sub_centers = centers.repeat(S, axis=0) + np.float32(spread / math.sqrt(d)) * rng.standard_normal((Z * S, d), dtype=np.float32)
        sub_centers = _normalize_rows(sub_centers).astype(np.float32)
        noise_scale = ispread

    def embed(tp: np.ndarray) -> np.ndarray:
        out = np.empty((tp.shape[0], d), np.float32)
        for s in range(0, tp.shape[0], _CHUNK):
            e = min(tp.shape[0], s + _CHUNK)
            sub = tp[s:e] * S + rng.integers(0, S, e - s)
            x = sub_centers[sub] + np.float32(noise_scale / math.sqrt(d)) * rng.standard_normal((e - s, d), dtype=np.float32)
            out[s:e] = _normalize_rows(x)
        return out

    emb = [embed(topic)]
    topics = [topic]
    t_items = np.argsort(topic, kind="stable").astype(np.int64)
    t_ptr = np.zeros(Z + 1, np.int64)
    np.cumsum(np.bincount(topic, minlength=Z), out=t_ptr[1:])
    t_size = np.diff(t_ptr)
    pop_cdf = np.cumsum(_zipf_weights(n, 0.8, rng))

    user_topics = np.empty((U, m), np.int64)
    user_weights = np.empty((U, m), np.float64)
    for u in range(U):
        user_topics[u] = rng.choice(Z, m, replace=False, p=tw)
        user_weights[u] = rng.dirichlet(np.full(m, conc))
    beta = drift * rng.standard_normal((U, m))
    indptr = np.zeros(U + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    N = int(indptr[-1])
    items = np.empty(N, np.int64)
    interest = np.empty(N, np.int64)
    next_id = n
    for u in range(U):
        Lu = int(lengths[u])
        a, b = int(indptr[u]), int(indptr[u + 1])
        tau = np.arange(Lu) / max(Lu - 1, 1)
        logw = np.log(np.maximum(user_weights[u], 1e-12))
        lab = np.empty(Lu, np.int64)
        for s in range(0, Lu, _CHUNK):
            e = min(Lu, s + _CHUNK)
            lg = logw[None, :] + beta[u][None, :] * (tau[s:e, None] - 1.0)
            lg -= lg.max(axis=1, keepdims=True)
            cdf = np.cumsum(np.exp(lg), axis=1)
            r = rng.random(e - s) * cdf[:, -1]
            lab[s:e] = np.minimum((cdf <= r[:, None]).sum(axis=1), m - 1)
        is_noise = rng.random(Lu) < noise
        lab[is_noise] = -1
        tp = np.where(lab >= 0, user_topics[u][np.maximum(lab, 0)], -1)
        it = np.empty(Lu, np.int64)
        nz = np.flatnonzero(is_noise)
        it[nz] = _sample_cdf(pop_cdf, rng.random(nz.size))
        ii = np.flatnonzero(~is_noise)
        if unique_items:
            it[ii] = next_id + np.arange(ii.size)
            emb.append(embed(tp[ii]))
            topics.append(tp[ii])
            next_id += ii.size
        else:
            t = tp[ii]
            uu = rng.random(ii.size) ** pop
            it[ii] = t_items[t_ptr[t] + np.minimum((uu * t_size[t]).astype(np.int64), t_size[t] - 1)]
        items[a:b] = it
        interest[a:b] = lab
    # facet targets
    f_items = np.empty((U, F), np.int64)
    f_int = np.full((U, F, 3), -1, np.int64)
    f_w = np.zeros((U, F, 3), np.float64)
    f_emb = np.empty((U * F, d), np.float32)
    for u in range(U):
        for f in range(F):
            nf = int(rng.integers(2, 4))
            js = rng.choice(m, nf, replace=False, p=user_weights[u])
            a = rng.dirichlet(np.full(nf, 2.0))
            mix = (a[:, None] * centers[user_topics[u, js]]).sum(axis=0)
            mix /= max(np.linalg.norm(mix), 1e-12)
            x = mix + fspread / math.sqrt(d) * rng.standard_normal(d)
            f_emb[u * F + f] = x / max(np.linalg.norm(x), 1e-12)
            f_int[u, f, :nf] = js
            f_w[u, f, :nf] = a
            f_items[u, f] = next_id + u * F + f
    emb.append(f_emb)
    topics.append(np.full(U * F, -1, np.int64))
    # time
    gaps = 1 + np.where(rng.random(N) < 0.02, rng.exponential(86_400.0, N), rng.exponential(60.0, N)).astype(np.int64)
    gaps[indptr[:-1]] = 0
    start = 1_511_539_200 + rng.integers(0, 30 * 86_400, size=U)
    csum = np.cumsum(gaps)
    user_of = np.repeat(np.arange(U, dtype=np.int64), lengths)
    timestamps = start[user_of] + csum - csum[indptr[:-1]][user_of]
    params = {"n_users": U, "length": lengths.tolist(), "n_items": n, "dim": d, "n_topics": Z, "n_interests": m,
              "concentration": conc, "noise_rate": noise, "spread": spread, "n_subtopics": S,
              "item_spread": ispread, "popularity": pop, "drift": drift,
              "unique_items": bool(unique_items), "n_facet_targets": F, "facet_spread": fspread, "seed": seed}
    return LifelongUsers(
        item_emb=np.ascontiguousarray(np.concatenate(emb, axis=0)),
        item_topic=np.concatenate(topics).astype(np.int64),
        topic_centers=centers,
        n_regular=n,
        indptr=indptr,
        items=items,
        timestamps=timestamps.astype(np.int64),
        interest=interest,
        user_topics=user_topics,
        user_weights=user_weights,
        facet_items=f_items,
        facet_interests=f_int,
        facet_weights=f_w,
        params=params,
    )


_FIELDS = ("item_emb", "item_topic", "topic_centers", "indptr", "items", "timestamps", "interest", "user_topics",
           "user_weights", "facet_items", "facet_interests", "facet_weights")


def lifelong_users_cached(cache_dir: str | os.PathLike, **settings: Any) -> LifelongUsers:
    """:func:`lifelong_users` (same keyword settings), stored under ``cache_dir`` as an
    ``.npz`` named by a hash of the settings and reloaded on the next call."""
    key = json.dumps(settings, sort_keys=True, default=str)
    name = "lifelong-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".npz"
    path = Path(cache_dir) / name
    if path.exists():
        try:
            with np.load(path) as z:
                arrays = {f: z[f] for f in _FIELDS}
                meta = json.loads(str(z["meta"]))
            return LifelongUsers(n_regular=int(meta["n_regular"]), params=meta["params"], **arrays)
        except (KeyError, ValueError, OSError) as e:
            log.warning("lifelong cache %s unreadable (%s); regenerating", path, e)
    data = lifelong_users(**settings)
    from gsu._format import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        np.savez(f, meta=json.dumps({"n_regular": data.n_regular, "params": data.params}),
                 **{fld: getattr(data, fld) for fld in _FIELDS})
    return data
