"""Sparse data for the blocked index: the rarity-weighted generator and BM25 of real text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gsu.datasets.sparse import BM25Encoder, bm25_collection, docstring_texts, movielens_bm25, rarity_collection, tokenize

MOVIELENS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "movielens-latest-small"


def _canonical(m):
    assert m.has_sorted_indices
    for i in range(m.shape[0]):
        s, e = m.indptr[i], m.indptr[i + 1]
        assert e > s and np.all(np.diff(m.indices[s:e]) > 0)
    assert np.all(m.data > 0) and np.all(np.isfinite(m.data))


def test_rarity_collection_is_deterministic_canonical_and_rarity_weighted():
    c = rarity_collection(3000, 60, vocab_size=5000, avg_nnz=50, query_nnz=12, n_topics=40, seed=4)
    again = rarity_collection(3000, 60, vocab_size=5000, avg_nnz=50, query_nnz=12, n_topics=40, seed=4)
    assert (c.docs != again.docs).nnz == 0 and (c.queries != again.queries).nnz == 0
    assert (rarity_collection(3000, 60, vocab_size=5000, avg_nnz=50, query_nnz=12, n_topics=40, seed=5).docs != c.docs).nnz > 0
    _canonical(c.docs)
    _canonical(c.queries)
    assert c.docs.shape == (3000, 5000) and c.queries.shape == (60, 5000)
    assert 35 < c.docs.nnz / 3000 < 75 and 6 < c.queries.nnz / 60 <= 12
    # weights follow rarity: the mean weight of a term falls with its document frequency
    df = np.bincount(c.docs.indices, minlength=5000)
    wsum = np.bincount(c.docs.indices, weights=c.docs.data, minlength=5000)
    used = df >= 3
    mean_w = wsum[used] / df[used]
    r_df = np.argsort(np.argsort(df[used]))
    r_w = np.argsort(np.argsort(mean_w))
    rho = np.corrcoef(r_df, r_w)[0, 1]
    assert rho < -0.8
    # flat weights when rarity_power is 0 (only the noise and tf remain)
    flat = rarity_collection(2000, 10, vocab_size=5000, avg_nnz=50, rarity_power=0.0, weight_noise=0.0, seed=1)
    assert flat.docs.data.max() / flat.docs.data.min() < 1.0 + 0.5 * math.log(50) + 1e-3


@pytest.mark.parametrize("kw", [dict(vocab_size=800, avg_nnz=10, query_nnz=3, zipf_exponent=0.6),
                                dict(vocab_size=20_000, avg_nnz=200, nnz_sigma=0.0, query_nnz=60, topic_share=0.0, rarity_power=3.0)])
def test_rarity_collection_settings_shape_the_data(kw):
    c = rarity_collection(500, 20, seed=2, **kw)
    _canonical(c.docs)
    _canonical(c.queries)
    lens = np.diff(c.docs.indptr)
    if kw.get("nnz_sigma") == 0.0:
        # a fixed length target: no row is longer, and rows fall short of it only by the
        # repeats of popular terms (drawn again, they add tf, not a new component)
        assert lens.max() <= kw["avg_nnz"] and lens.std() < 0.1 * lens.mean() and lens.min() >= 0.6 * kw["avg_nnz"]
    assert np.diff(c.queries.indptr).max() <= kw["query_nnz"]
    assert c.docs.data.min() >= 1e-3  # float16-safe at any rarity_power (its normal range starts at 6.1e-5)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        rarity_collection(10, 1, vocab_size=50, avg_nnz=40)
    with pytest.raises(ValueError, match="query_doc_share"):
        rarity_collection(10, 1, query_doc_share=1.5)
    with pytest.raises(TypeError):
        rarity_collection(10, 1, rarity_power="steep")


def test_bm25_inner_product_is_the_textbook_score():
    docs = [["sparse", "index", "index", "block"], ["dense", "index"], ["block", "summary", "sparse", "sparse", "sparse"], ["other"]]
    enc = BM25Encoder(k1=1.2, b=0.75).fit(docs)
    D = enc.encode_docs(docs).toarray()
    Q = enc.encode_queries([["sparse", "block", "unknown"], ["index", "index"]]).toarray()
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    for qi, q in enumerate([["sparse", "block", "unknown"], ["index", "index"]]):
        for di, d in enumerate(docs):
            want = 0.0
            for t in q:
                if t not in enc.vocabulary:
                    continue
                df = sum(t in x for x in docs)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                tf = d.count(t)
                want += idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(d) / avgdl))
            assert Q[qi] @ D[di] == pytest.approx(want, rel=1e-5)
    coll = bm25_collection(docs, [["nothing", "known"], ["block"]])
    assert coll.queries.shape[0] == 1 and coll.query_names == ["1"]  # the empty query is dropped


def test_tokenize_and_docstrings_of_an_installed_package():
    assert tokenize("The Sparse-index of a block, x1 and 42") == ["sparse", "index", "block", "x1"]
    names, texts = docstring_texts(("json",), min_tokens=5)
    assert len(names) == len(texts) > 10
    assert any(n.startswith("json/__init__.py:") for n in names)
    assert all(len(tokenize(t)) >= 5 for t in texts) and len(set(texts)) == len(texts)
    assert docstring_texts(("no_such_package_here",)) == ([], [])


@pytest.mark.skipif(not (MOVIELENS / "movies.csv").exists(), reason="MovieLens sample not present")
def test_movielens_bm25_titles_find_their_movies():
    c = movielens_bm25(MOVIELENS, 50, seed=0)
    assert c.docs.shape[0] > 9000 and c.queries.shape[0] == 50
    top = np.asarray((c.queries @ c.docs.T).todense()).argmax(axis=1)
    # a title query scores its own movie at the top (or ties with it) for most queries
    own = np.array([c.doc_names.index(n) for n in c.query_names])
    s = (c.queries @ c.docs.T).toarray()
    assert np.mean(s[np.arange(50), own] >= s[np.arange(50), top] - 1e-6) > 0.6
