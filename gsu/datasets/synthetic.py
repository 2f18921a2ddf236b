"""Seeded synthetic data: dense catalogs, SPLADE-like sparse collections, long behavior sequences.

Every generator takes an explicit ``seed``, draws from one
``np.random.default_rng(seed)`` in a fixed order and is therefore deterministic:
the same arguments give bit-identical arrays. All work is vectorised NumPy.

- :func:`clustered_catalog` / :func:`catalog_queries` — an anisotropic Gaussian
  mixture on the unit sphere (item embeddings and queries).
- :func:`sparse_collection` — documents and queries shaped like learned sparse
  (SPLADE) output, for the blocked inverted index.
- :func:`behavior_dataset` — users with lifelong behavior sequences drawn from
  drifting latent interests, and click samples labelled by a *known*
  target-attention model, so that every retrieval method has a ground truth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from gsu._validate import check_positive_int

if TYPE_CHECKING:
    from gsu.datasets.logs import BehaviorLog

__all__ = [
    "Catalog",
    "clustered_catalog",
    "catalog_queries",
    "SparseCollection",
    "sparse_collection",
    "BehaviorData",
    "behavior_dataset",
    "planted_attention_prob",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 17  # rows generated per block (bounds temporary memory)


def _check_float(value: Any, *, name: str, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        raise ValueError(f"{name}: expected a value in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
    return v


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    x /= norms
    return x


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipfian probabilities ``(rank+1)^-exponent`` over ``n`` outcomes in a random order."""
    w = (np.arange(1, n + 1, dtype=np.float64)) ** -exponent
    w = w[rng.permutation(n)]
    return w / w.sum()


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: indices ``i`` with ``cdf[i-1] <= u < cdf[i]``."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


# ============================================================================ dense catalog


@dataclass(frozen=True)
class Catalog:
    """A clustered dense catalog (item embeddings).

    Attributes:
        vectors: (n, dim) float32 item vectors (unit norm when ``normalized``).
        labels: (n,) int64 mixture component (cluster) of each item.
        centers: (n_clusters, dim) float32 unit-norm cluster centres.
        scales: (n_clusters, dim) float32 per-axis standard deviation of each
            component's noise (anisotropic: the axes differ by up to ~10x).
        weights: (n_clusters,) float64 mixture weights (Zipf-like cluster sizes).
        normalized: whether vectors (and queries from :func:`catalog_queries`) are
            projected onto the unit sphere.
    """

    vectors: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    normalized: bool

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _draw_mixture(
    rng: np.random.Generator, n: int, centers: np.ndarray, scales: np.ndarray, weights: np.ndarray, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    labels = _sample_cdf(np.cumsum(weights), rng.random(n)).astype(np.int64)
    out = np.empty((n, centers.shape[1]), dtype=np.float32)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        lab = labels[lo:hi]
        block = rng.standard_normal((hi - lo, centers.shape[1]), dtype=np.float32)
        block *= scales[lab]
        block += centers[lab]
        out[lo:hi] = block
    if normalize:
        _normalize_rows(out)
    return out, labels


def clustered_catalog(
    n: int,
    dim: int,
    *,
    n_clusters: int = 64,
    seed: int = 0,
    normalize: bool = True,
    spread: float = 0.6,
    size_skew: float = 0.8,
    anisotropy: float = 0.6,
    duplicate_share: float = 0.0,
    duplicate_noise: float = 0.02,
) -> Catalog:
    """A clustered catalog of ``n`` item vectors in ``dim`` dimensions.

    Model (an anisotropic Gaussian mixture): cluster centres ``c_j`` are uniform
    on the unit sphere; component ``j`` has weight ``∝ rank^-size_skew`` (random
    rank order: a power law of cluster sizes) and diagonal noise with per-axis
    standard deviations ``σ_j · a_j / √dim``, where ``σ_j = spread · exp(0.3 z)``
    varies the cluster's width and ``a_j = exp(anisotropy · z')`` (rescaled to unit
    mean square) makes it anisotropic. Item ``i`` in cluster ``j`` is ``c_j + noise``,
    then normalised when ``normalize``. With ``spread ≈ 0.6`` a point's cosine to its
    own centre is ~0.85, so clusters overlap as real embedding catalogs do.

    Near-duplicates (``duplicate_share > 0``): that share of the items, chosen at
    random, is replaced by a copy of another random item plus isotropic noise of norm
    ``≈ duplicate_noise`` (relative to the item's norm) — re-uploads, variants, the
    same text embedded twice. Drawn after everything else, so the other items are
    those of the same call without duplicates.

    Args:
        n: number of items (>= 1).
        dim: dimension (>= 2).
        n_clusters: mixture components (>= 1).
        seed: seed of ``np.random.default_rng``.
        normalize: project rows onto the unit sphere (for inner-product/cosine search).
        spread: noise norm relative to the centre norm (0 gives exact copies of centres).
        size_skew: Zipf exponent of the cluster sizes (0 = equal sizes).
        anisotropy: standard deviation of the log per-axis scales (0 = isotropic clusters).
        duplicate_share: share of items that are near-duplicates of another item, in [0, 1).
        duplicate_noise: relative noise norm of a near-duplicate.

    Returns:
        :class:`Catalog`.
    """
    n = check_positive_int(n, name="n")
    dim = check_positive_int(dim, name="dim", minimum=2)
    n_clusters = check_positive_int(n_clusters, name="n_clusters")
    spread = _check_float(spread, name="spread", lo=0.0)
    size_skew = _check_float(size_skew, name="size_skew", lo=0.0)
    anisotropy = _check_float(anisotropy, name="anisotropy", lo=0.0)
    duplicate_share = _check_float(duplicate_share, name="duplicate_share", lo=0.0, hi=0.99)
    duplicate_noise = _check_float(duplicate_noise, name="duplicate_noise", lo=0.0)
    rng = np.random.default_rng(seed)
    centers = _normalize_rows(rng.standard_normal((n_clusters, dim)).astype(np.float32))
    width = spread * np.exp(0.3 * rng.standard_normal(n_clusters))
    aniso = np.exp(anisotropy * rng.standard_normal((n_clusters, dim)))
    aniso /= np.sqrt((aniso**2).mean(axis=1, keepdims=True))
    scales = (width[:, None] * aniso / math.sqrt(dim)).astype(np.float32)
    weights = _zipf_weights(n_clusters, size_skew, rng)
    vectors, labels = _draw_mixture(rng, n, centers, scales, weights, normalize)
    n_dup = int(round(duplicate_share * n))
    if n_dup and n > 1:
        dup = rng.choice(n, n_dup, replace=False)
        src = rng.integers(0, n - 1, n_dup)
        src += src >= dup  # another item (read before any duplicate is written)
        base = vectors[src].astype(np.float64)
        noise = rng.standard_normal((n_dup, dim))
        noise *= (duplicate_noise * np.linalg.norm(base, axis=1, keepdims=True) / math.sqrt(dim))
        vectors[dup] = (base + noise).astype(np.float32)
        labels[dup] = labels[src]
        if normalize:
            vectors[dup] = _normalize_rows(vectors[dup])
    return Catalog(vectors=vectors, labels=labels, centers=centers, scales=scales, weights=weights, normalized=bool(normalize))


def catalog_queries(catalog: Catalog, nq: int, *, seed: int = 1) -> np.ndarray:
    """``nq`` queries drawn afresh from the catalog's mixture (not copies of items).

    Returns:
        (nq, dim) float32, unit norm when the catalog is normalised.
    """
    if not isinstance(catalog, Catalog):
        raise TypeError(f"catalog: expected a Catalog from clustered_catalog, got {type(catalog).__name__}")
    nq = check_positive_int(nq, name="nq")
    rng = np.random.default_rng(seed)
    q, _ = _draw_mixture(rng, nq, catalog.centers, catalog.scales, catalog.weights, catalog.normalized)
    return q


# ============================================================================ sparse collection


@dataclass(frozen=True)
class SparseCollection:
    """A SPLADE-like sparse collection.

    Attributes:
        docs: (n_docs, vocab_size) float32 CSR; sorted indices, no explicit zeros,
            no empty rows, all weights > 0.
        queries: (n_queries, vocab_size) float32 CSR, same guarantees.
        query_source: (n_queries,) int64 — the document each query was made from
            (a relevant document, not necessarily the top inner product).
        doc_topic: (n_docs,) int64 topic of each document.
        term_prob: (vocab_size,) float64 expected term frequencies of the collection
            (Zipfian background mixed with the topics' terms).
    """

    docs: sp.csr_matrix
    queries: sp.csr_matrix
    query_source: np.ndarray
    doc_topic: np.ndarray
    term_prob: np.ndarray


def _dedup_truncate(
    rng: np.random.Generator, rows: np.ndarray, terms: np.ndarray, target: np.ndarray, vocab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse repeated (row, term) draws (returning their counts) and keep at most ``target[row]`` per row at random."""
    keys, counts = np.unique(rows.astype(np.int64) * vocab + terms, return_counts=True)
    r = keys // vocab  # non-decreasing
    order = np.argsort(r + rng.random(keys.shape[0]))  # a random order within each row
    row_start = np.zeros(target.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=target.shape[0]), out=row_start[1:])
    rank = np.arange(keys.shape[0]) - row_start[r]  # r[order] == r: rows keep their places
    keep = np.sort(order[rank < target[r]])  # back in (row, term) order
    return r[keep], (keys[keep] % vocab), counts[keep]


def sparse_collection(
    n_docs: int,
    n_queries: int,
    *,
    vocab_size: int = 30_000,
    avg_nnz: int = 150,
    query_nnz: int = 40,
    seed: int = 0,
    n_topics: int = 100,
    zipf_exponent: float = 1.0,
    topic_share: float = 0.5,
) -> SparseCollection:
    """A seeded SPLADE-like collection of sparse documents and queries.

    Model:

    - Terms have Zipfian background popularity ``p_t ∝ rank^-zipf_exponent`` (ranks
      in random id order, as in a WordPiece vocabulary).
    - Each document has a topic; a topic is ~``3·avg_nnz`` terms drawn from the
      less popular 95% of the vocabulary with its own Zipf weights.
    - A document's length target is ``avg_nnz · exp(0.25 z)`` (clipped to
      ``[avg_nnz/3, 3·avg_nnz]``); its terms are drawn (with replacement, then
      de-duplicated and cut to the target) from the topic with probability
      ``topic_share`` and from the background otherwise.
    - Weights grow with rarity, as learned sparse models weight informative terms
      up: ``w = 0.25 + 2 · idf_t/max(idf) · (1 + 0.3 log(count)) · exp(0.25 z)``
      with ``idf_t = log(1/q_t)`` min-max scaled to [0, 1], where ``q_t`` is the
      term's expected frequency in the collection (background and topics mixed,
      returned as ``term_prob``); so ~0.25-5, positive, never zero.
    - A query is made from a random source document: ~75% of ``query_nnz`` of its
      terms sampled without replacement with probability ∝ weight (weights
      jittered by ``exp(0.3 z)``), plus popular background terms with low weights
      (0.1-0.5), like the stop-word-ish expansions SPLADE adds.

    Args:
        n_docs, n_queries: collection and query-set sizes (>= 1).
        vocab_size: columns (V); must exceed ``3 · avg_nnz``.
        avg_nnz: target mean non-zeros per document (100-200 is SPLADE-like).
        query_nnz: target non-zeros per query.
        seed: seed of ``np.random.default_rng``.
        n_topics: number of document topics.
        zipf_exponent: Zipf exponent of background term popularity.
        topic_share: share of a document's terms drawn from its topic.

    Returns:
        :class:`SparseCollection` (canonical CSR: sorted indices, no empty rows).
    """
    n_docs = check_positive_int(n_docs, name="n_docs")
    n_queries = check_positive_int(n_queries, name="n_queries")
    avg_nnz = check_positive_int(avg_nnz, name="avg_nnz")
    query_nnz = check_positive_int(query_nnz, name="query_nnz")
    vocab_size = check_positive_int(vocab_size, name="vocab_size", minimum=max(3 * avg_nnz + 1, 20))
    n_topics = check_positive_int(n_topics, name="n_topics")
    zipf_exponent = _check_float(zipf_exponent, name="zipf_exponent", lo=0.0)
    topic_share = _check_float(topic_share, name="topic_share", lo=0.0, hi=1.0)
    rng = np.random.default_rng(seed)
    V = vocab_size

    # background popularity
    rank_of_term = rng.permutation(V)  # term t has popularity rank rank_of_term[t]
    term_prob = (rank_of_term + 1.0) ** -zipf_exponent
    term_prob /= term_prob.sum()
    bg_cdf = np.cumsum(term_prob)

    # topics: terms from the non-head of the vocabulary, each with Zipf weights
    topic_size = min(3 * avg_nnz, V // 2)
    tail_terms = np.flatnonzero(rank_of_term >= V // 20)
    topic_terms = np.stack([rng.choice(tail_terms, size=topic_size, replace=False) for _ in range(n_topics)])
    topic_p = np.arange(1, topic_size + 1, dtype=np.float64) ** -0.8
    topic_p /= topic_p.sum()
    topic_cdf = np.cumsum(topic_p)

    # expected term distribution of the collection (background + topics) and its idf
    mix_prob = (1.0 - topic_share) * term_prob
    np.add.at(mix_prob, topic_terms.ravel(), np.tile(topic_share * topic_p / n_topics, n_topics))
    idf = np.log(1.0 / np.maximum(mix_prob, 1e-12))
    idf_norm = (idf - idf.min()) / max(idf.max() - idf.min(), 1e-12)

    # documents
    target = np.clip(np.rint(avg_nnz * np.exp(0.25 * rng.standard_normal(n_docs))), max(1, avg_nnz // 3), 3 * avg_nnz)
    target = target.astype(np.int64)
    doc_topic = rng.integers(0, n_topics, size=n_docs).astype(np.int64)
    draws = np.ceil(target * 1.6).astype(np.int64)
    rows = np.repeat(np.arange(n_docs, dtype=np.int64), draws)
    m = rows.shape[0]
    from_topic = rng.random(m) < topic_share
    terms = np.empty(m, dtype=np.int64)
    terms[~from_topic] = _sample_cdf(bg_cdf, rng.random(int((~from_topic).sum())))
    tpos = _sample_cdf(topic_cdf, rng.random(int(from_topic.sum())))
    terms[from_topic] = topic_terms[doc_topic[rows[from_topic]], tpos]
    r, t, cnt = _dedup_truncate(rng, rows, terms, target, V)
    w = 0.25 + 2.0 * idf_norm[t] * (1.0 + 0.3 * np.log(cnt)) * np.exp(0.25 * rng.standard_normal(t.shape[0]))
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_docs), out=indptr[1:])
    docs = sp.csr_matrix((w.astype(np.float32), t.astype(np.int32), indptr), shape=(n_docs, V))
    docs.has_sorted_indices = True

    # queries: weighted subset of a source document's terms + popular terms
    src = rng.integers(0, n_docs, size=n_queries).astype(np.int64)
    n_doc_terms = max(1, round(0.75 * query_nnz))
    n_pop = max(0, query_nnz - n_doc_terms)
    lens = np.diff(docs.indptr)[src]
    qrow = np.repeat(np.arange(n_queries, dtype=np.int64), lens)
    pos = np.arange(qrow.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(docs.indptr[src], lens)
    dw = docs.data[pos].astype(np.float64)
    key = np.log(dw) + rng.gumbel(size=dw.shape[0])  # Gumbel top-k = sampling without replacement ∝ weight
    order = np.lexsort((-key, qrow))
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    keep = order[(np.arange(order.shape[0]) - starts) < n_doc_terms]
    q_rows = [qrow[keep]]
    q_terms = [docs.indices[pos[keep]].astype(np.int64)]
    q_w = [dw[keep] * np.exp(0.3 * rng.standard_normal(keep.shape[0]))]
    if n_pop:
        head = np.argsort(rank_of_term)[: max(n_pop * 5, 50)]
        q_rows.append(np.repeat(np.arange(n_queries, dtype=np.int64), n_pop))
        q_terms.append(head[rng.integers(0, head.shape[0], size=n_queries * n_pop)])
        q_w.append(rng.uniform(0.1, 0.5, size=n_queries * n_pop))
    queries = sp.coo_matrix(
        (np.concatenate(q_w).astype(np.float32), (np.concatenate(q_rows), np.concatenate(q_terms))), shape=(n_queries, V)
    ).tocsr()  # sums duplicate (row, term) pairs
    queries.sort_indices()
    queries.eliminate_zeros()
    return SparseCollection(docs=docs, queries=queries, query_source=src, doc_topic=doc_topic, term_prob=mix_prob)


# ============================================================================ behavior sequences


def planted_attention_prob(
    history_emb: np.ndarray,
    target_emb: np.ndarray,
    *,
    temperature: float,
    scale: float,
    bias: float,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Click probability of the planted target-attention model.

    ``p = sigmoid(scale · Σ_i softmax_i(s_i / temperature) · s_i + bias)`` with
    ``s_i = <target, e_i>`` over the visible behaviors ``i``.

    Args:
        history_emb: (L, d) float32 behavior embeddings ``e_i`` (one user's sequence).
        target_emb: (T, d) float32 target embeddings.
        temperature: softmax temperature τ (lower = sharper attention).
        scale, bias: the logistic head's ``a`` and ``b``.
        mask: optional (T, L) bool — True where behavior ``i`` is visible to target
            row ``t``; a row with no visible behavior gets ``sigmoid(bias)``.

    Returns:
        (T,) float32 probabilities.
    """
    s = target_emb.astype(np.float32, copy=False) @ history_emb.astype(np.float32, copy=False).T  # (T, L)
    z = s / np.float32(temperature)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    zmax = z.max(axis=1, keepdims=True) if z.shape[1] else np.zeros((z.shape[0], 1), np.float32)
    empty = ~np.isfinite(zmax[:, 0])
    zmax[empty] = 0.0
    e = np.exp(z - zmax)
    den = e.sum(axis=1)
    att = np.where(empty, 0.0, (e * s).sum(axis=1) / np.where(empty, 1.0, den))
    return (1.0 / (1.0 + np.exp(-(scale * att + bias)))).astype(np.float32)


@dataclass(frozen=True)
class BehaviorData:
    """Users' behavior sequences with click samples from a known attention model.

    Sequences are CSR over users: user ``u``'s behaviors are rows
    ``indptr[u]:indptr[u+1]`` of ``items``/``timestamps``/``behavior_type``, in
    time order (timestamps strictly increasing within a user).

    Attributes:
        item_emb: (n_items, dim) float32 unit-norm "true" item embeddings ``e`` of the
            planted model.
        item_category: (n_items,) int64 category of each item.
        indptr: (n_users+1,) int64 CSR offsets.
        items: (N,) int64 item ids of the behaviors.
        timestamps: (N,) int64 seconds, strictly increasing within each user.
        behavior_type: (N,) int8 — 0 = pv (view), 1 = cart, 2 = fav, 3 = buy (the Taobao
            codes of :data:`gsu.datasets.logs.BEHAVIOR_CODES`; drawn independently
            with probabilities 0.85/0.07/0.05/0.03; not used by the label model).
        samples: dict of (S,) arrays, sorted by user then time:
            ``user`` int64, ``target`` int64 item id, ``time`` int64 (the user's
            behaviors with ``timestamp < time`` are the visible history),
            ``n_history`` int64 (how many behaviors that is: positions
            ``0..n_history-1`` of the user's sequence), ``label`` int8 0/1,
            ``prob`` float32 true click probability, ``from_interest`` bool (target
            drawn from the user's interests rather than at random).
        attention_temperature: τ of the planted attention.
        params: all generator settings and the label model's ``scale`` (a),
            ``bias`` (b) and ``temperature`` (τ), plus ``interest_categories``
            (n_users, n_interests) int64 anchor categories.
    """

    item_emb: np.ndarray
    item_category: np.ndarray
    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    behavior_type: np.ndarray
    samples: dict[str, np.ndarray]
    attention_temperature: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def history(self, user: int) -> slice:
        """Rows of ``items``/``timestamps``/``behavior_type`` holding ``user``'s sequence."""
        if not 0 <= user < self.n_users:
            raise ValueError(f"user: expected 0 <= user < {self.n_users}, got {user}")
        return slice(int(self.indptr[user]), int(self.indptr[user + 1]))

    def true_prob(
        self, user: int, targets: np.ndarray, n_history: np.ndarray, *, positions: np.ndarray | None = None
    ) -> np.ndarray:
        """Click probability of the planted model for one user.

        Args:
            user: user index.
            targets: (T,) int64 target item ids.
            n_history: (T,) int64 — target ``t`` sees positions ``0..n_history[t]-1``.
            positions: optional (T, k) int64 positions into the user's sequence,
                -1 padded: restrict attention to these behaviors (e.g. the top-k a
                GSU retrieved) — the probability the ESU could reach from them.
                Positions at or beyond ``n_history`` are an error (future leakage).

        Returns:
            (T,) float32 probabilities; with ``positions=None`` equal to
            ``samples["prob"]`` for the user's samples.
        """
        sl = self.history(user)
        targets = np.asarray(targets, dtype=np.int64)
        n_history = np.asarray(n_history, dtype=np.int64)
        if targets.ndim != 1 or n_history.shape != targets.shape:
            raise ValueError(f"targets and n_history: expected equal 1-D shapes, got {targets.shape} and {n_history.shape}")
        length = sl.stop - sl.start
        if targets.size and (n_history.min() < 0 or n_history.max() > length):
            raise ValueError(f"n_history: expected values in [0, {length}] for user {user}")
        hist = self.item_emb[self.items[sl]]
        kw = dict(temperature=self.params["temperature"], scale=self.params["scale"], bias=self.params["bias"])
        if positions is None:
            mask = np.arange(length)[None, :] < n_history[:, None]
            return planted_attention_prob(hist, self.item_emb[targets], mask=mask, **kw)
        positions = np.asarray(positions, dtype=np.int64)
        if positions.ndim != 2 or positions.shape[0] != targets.shape[0]:
            raise ValueError(f"positions: expected shape ({targets.shape[0]}, k), got {positions.shape}")
        valid = positions >= 0
        if (positions[valid] >= np.broadcast_to(n_history[:, None], positions.shape)[valid]).any():
            raise ValueError("positions: a position at or after n_history (a future behavior) was given")
        out = np.empty(targets.shape[0], dtype=np.float32)
        for t in range(targets.shape[0]):
            p = positions[t][valid[t]]
            out[t] = planted_attention_prob(hist[p], self.item_emb[targets[t : t + 1]], **kw)[0]
        return out

    def to_log(self) -> "BehaviorLog":
        """The sequences as a :class:`gsu.datasets.logs.BehaviorLog` (user = user index)."""
        from gsu.datasets.logs import BehaviorLog

        user = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))
        return BehaviorLog(user, self.items, self.item_category[self.items], self.behavior_type, self.timestamps)


def _seq_lengths(seq_len: Any, n_users: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(seq_len, tuple):
        if len(seq_len) != 2:
            raise ValueError(f"seq_len: expected an int or a (min, max) pair, got {seq_len!r}")
        lo = check_positive_int(seq_len[0], name="seq_len[0]", minimum=2)
        hi = check_positive_int(seq_len[1], name="seq_len[1]", minimum=lo)
        # log-uniform lengths: many short-ish users, a few long ones
        return np.floor(np.exp(rng.uniform(math.log(lo), math.log(hi + 1), size=n_users))).clip(lo, hi).astype(np.int64)
    return np.full(n_users, check_positive_int(seq_len, name="seq_len", minimum=2), dtype=np.int64)


def behavior_dataset(
    n_users: int,
    *,
    n_items: int = 50_000,
    dim: int = 32,
    n_categories: int = 200,
    seq_len: int | tuple[int, int] = (1_000, 10_000),
    n_interests: int = 4,
    n_targets_per_user: int = 20,
    seed: int = 0,
    attention_temperature: float = 0.1,
    label_scale: float = 10.0,
    label_bias: float = -7.0,
    drift: float = 3.0,
    noise_rate: float = 0.15,
    item_spread: float = 0.6,
) -> BehaviorData:
    """Users with long behavior sequences and click samples from a planted attention model.

    The planted model (everything is recorded in the result's ``params``):

    1. **Items.** ``n_categories`` category centres are uniform on the unit sphere
       in ``dim`` dimensions; category sizes are Zipf-like (exponent 0.6), every
       category has at least one item. Item ``j`` of category ``c`` has embedding
       ``e_j = normalize(centre_c + item_spread · z / √dim)`` (cosine to its centre
       ~0.85 at the default spread). Within a category, item popularity falls with
       a random rank (draw ``⌊size · u^1.5⌋``).
    2. **Interests.** User ``u`` has ``n_interests`` anchor categories drawn by
       category size; an interest behavior picks a category among the anchor's 3
       nearest categories (itself 70%, then 20%, 10%) — so interests span related
       categories (SIM-hard's category match misses some; soft search finds them).
    3. **Drift.** At relative position ``τ = i/(L-1)`` in the sequence the interest
       weights are ``softmax(α_k + β_k τ)`` with ``α ~ N(0,1)``, ``β ~ N(0, drift²)``:
       old interests fade and new ones grow. A share ``noise_rate`` of behaviors are
       instead random popular items (global Zipf, exponent 0.8).
    4. **Time.** Gaps between behaviors are 1 s + Exp(60 s) within a session and
       1 s + Exp(1 day) between sessions (2% of gaps); starts spread over 30 days
       from 2017-11-25 (Taobao's epoch). Timestamps strictly increase within a user.
    5. **Samples.** Per user ``n_targets_per_user`` samples at times ``t`` chosen
       so that the visible history is the first ``n_history`` behaviors,
       ``n_history`` uniform in ``[⌈L/2⌉, L]``. Half of the targets (even sample
       slots) come from the user's interest weights at that time, half are random
       popular items.
    6. **Label.** With ``s_i = <e_target, e_i>`` over the visible behaviors,
       ``prob = sigmoid(a · Σ_i softmax_i(s_i/τ) s_i + b)`` (``a = label_scale``,
       ``b = label_bias``, ``τ = attention_temperature``), and
       ``label ~ Bernoulli(prob)``. ``samples["prob"]`` is the true probability,
       so the best achievable AUC is the AUC of ``prob`` itself;
       :meth:`BehaviorData.true_prob` recomputes it from any retrieved subset.

    Args:
        n_users: number of users (>= 1).
        n_items: catalog size (>= n_categories).
        dim: embedding dimension of the planted model (>= 2).
        n_categories: number of item categories.
        seq_len: a fixed length, or ``(min, max)`` for log-uniform lengths (>= 2;
            up to 100,000 and beyond — the work is vectorised).
        n_interests: latent interests per user (K).
        n_targets_per_user: samples per user.
        seed: seed of ``np.random.default_rng``.
        attention_temperature: τ of the planted softmax attention (0.05-0.5; lower
            concentrates the weight on fewer behaviors, so top-k retrieval loses less).
        label_scale, label_bias: ``a`` and ``b`` of the logistic head.
        drift: standard deviation of the interest-weight slopes β (0 = stationary).
        noise_rate: share of random (non-interest) behaviors.
        item_spread: item noise around its category centre.

    Returns:
        :class:`BehaviorData`.
    """
    n_users = check_positive_int(n_users, name="n_users")
    n_categories = check_positive_int(n_categories, name="n_categories")
    n_items = check_positive_int(n_items, name="n_items", minimum=n_categories)
    dim = check_positive_int(dim, name="dim", minimum=2)
    K = check_positive_int(n_interests, name="n_interests")
    T = check_positive_int(n_targets_per_user, name="n_targets_per_user")
    temperature = _check_float(attention_temperature, name="attention_temperature", lo=0.0, lo_open=True)
    a = _check_float(label_scale, name="label_scale", lo=-math.inf)
    b = _check_float(label_bias, name="label_bias", lo=-math.inf)
    drift = _check_float(drift, name="drift", lo=0.0)
    noise_rate = _check_float(noise_rate, name="noise_rate", lo=0.0, hi=1.0)
    item_spread = _check_float(item_spread, name="item_spread", lo=0.0)
    rng = np.random.default_rng(seed)
    C = n_categories

    # 1. items
    centers = _normalize_rows(rng.standard_normal((C, dim)))
    cat_w = _zipf_weights(C, 0.6, rng)
    item_category = np.concatenate([np.arange(C), _sample_cdf(np.cumsum(cat_w), rng.random(n_items - C))])
    item_category = item_category[rng.permutation(n_items)].astype(np.int64)
    item_emb = centers[item_category] + (item_spread / math.sqrt(dim)) * rng.standard_normal((n_items, dim))
    item_emb = _normalize_rows(item_emb).astype(np.float32)
    cat_items = np.argsort(item_category, kind="stable").astype(np.int64)  # items grouped by category
    cat_ptr = np.zeros(C + 1, dtype=np.int64)
    np.cumsum(np.bincount(item_category, minlength=C), out=cat_ptr[1:])
    cat_size = np.diff(cat_ptr)
    n_rel = min(3, C)
    related = np.argsort(-(centers @ centers.T), axis=1, kind="stable")[:, :n_rel]  # itself first
    rel_cdf = np.cumsum(np.array([0.7, 0.2, 0.1])[:n_rel])
    rel_cdf /= rel_cdf[-1]
    pop_cdf = np.cumsum(_zipf_weights(n_items, 0.8, rng))

    def items_of(cats: np.ndarray) -> np.ndarray:
        u = rng.random(cats.shape[0]) ** 1.5
        return cat_items[cat_ptr[cats] + np.minimum((u * cat_size[cats]).astype(np.int64), cat_size[cats] - 1)]

    def interest_items(users: np.ndarray, tau: np.ndarray) -> np.ndarray:
        logits = alpha[users] + beta[users] * tau[:, None]
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        cdf = np.cumsum(w, axis=1)
        u = rng.random(users.shape[0]) * cdf[:, -1]
        k = np.minimum((cdf <= u[:, None]).sum(axis=1), K - 1)
        anchor = anchors[users, k]
        j = _sample_cdf(rel_cdf, rng.random(users.shape[0]))
        return items_of(related[anchor, j])

    # 2-3. users, interests and drift
    lengths = _seq_lengths(seq_len, n_users, rng)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    N = int(indptr[-1])
    anchors = _sample_cdf(np.cumsum(cat_w), rng.random((n_users, K))).astype(np.int64)
    alpha = rng.standard_normal((n_users, K))
    beta = drift * rng.standard_normal((n_users, K))
    user_of = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    pos = np.arange(N, dtype=np.int64) - indptr[user_of]
    tau = pos / np.maximum(lengths[user_of] - 1, 1)
    items = np.empty(N, dtype=np.int64)
    for lo in range(0, N, _CHUNK):  # chunks bound the (chunk, K) temporaries
        hi = min(N, lo + _CHUNK)
        items[lo:hi] = interest_items(user_of[lo:hi], tau[lo:hi])
    noisy = rng.random(N) < noise_rate
    items[noisy] = _sample_cdf(pop_cdf, rng.random(int(noisy.sum())))

    # 4. time
    session_break = rng.random(N) < 0.02
    gaps = 1 + np.where(session_break, rng.exponential(86_400.0, N), rng.exponential(60.0, N)).astype(np.int64)
    gaps[indptr[:-1]] = 0
    start = 1_511_539_200 + rng.integers(0, 30 * 86_400, size=n_users)
    csum = np.cumsum(gaps)
    timestamps = start[user_of] + csum - csum[indptr[:-1]][user_of]
    behavior_type = _sample_cdf(np.cumsum([0.85, 0.07, 0.05, 0.03]), rng.random(N)).astype(np.int8)

    # 5. samples
    s_user = np.repeat(np.arange(n_users, dtype=np.int64), T)
    s_len = lengths[s_user]
    lo_hist = (s_len + 1) // 2
    n_hist = lo_hist + np.floor(rng.random(s_user.shape[0]) * (s_len - lo_hist + 1)).astype(np.int64)
    n_hist = np.minimum(n_hist, s_len)
    from_interest = np.tile(np.arange(T) % 2 == 0, n_users)
    targets = np.empty(s_user.shape[0], dtype=np.int64)
    fi = np.flatnonzero(from_interest)
    targets[fi] = interest_items(s_user[fi], (n_hist[fi] - 1) / np.maximum(s_len[fi] - 1, 1))
    ri = np.flatnonzero(~from_interest)
    targets[ri] = _sample_cdf(pop_cdf, rng.random(ri.shape[0]))
    s_time = timestamps[indptr[s_user] + n_hist - 1] + 1
    order = np.lexsort((np.arange(s_user.shape[0]), s_time, s_user))
    s_user, n_hist, targets, s_time, from_interest = (x[order] for x in (s_user, n_hist, targets, s_time, from_interest))

    # 6. labels from the planted attention model
    prob = np.empty(s_user.shape[0], dtype=np.float32)
    for u in range(n_users):
        rows = slice(u * T, (u + 1) * T)
        hist = item_emb[items[indptr[u] : indptr[u + 1]]]
        mask = np.arange(lengths[u])[None, :] < n_hist[rows, None]
        prob[rows] = planted_attention_prob(
            hist, item_emb[targets[rows]], temperature=temperature, scale=a, bias=b, mask=mask
        )
    label = (rng.random(prob.shape[0]) < prob).astype(np.int8)

    params = {
        "n_users": n_users,
        "n_items": n_items,
        "dim": dim,
        "n_categories": C,
        "seq_len": seq_len,
        "n_interests": K,
        "n_targets_per_user": T,
        "seed": seed,
        "temperature": temperature,
        "scale": a,
        "bias": b,
        "drift": drift,
        "noise_rate": noise_rate,
        "item_spread": item_spread,
        "interest_categories": anchors,
    }
    samples = {
        "user": s_user,
        "target": targets,
        "time": s_time.astype(np.int64),
        "n_history": n_hist,
        "label": label,
        "prob": prob,
        "from_interest": from_interest,
    }
    return BehaviorData(
        item_emb=item_emb,
        item_category=item_category,
        indptr=indptr,
        items=items,
        timestamps=timestamps.astype(np.int64),
        behavior_type=behavior_type,
        samples=samples,
        attention_temperature=temperature,
        params=params,
    )
