"""Seeded generators of gsu.datasets.synthetic."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gsu.datasets import (
    BEHAVIOR_NAMES,
    BehaviorData,
    behavior_dataset,
    catalog_queries,
    check_sparse,
    clustered_catalog,
    planted_attention_prob,
    sparse_collection,
)


@pytest.fixture(scope="module")
def behaviors() -> BehaviorData:
    return behavior_dataset(40, n_items=5_000, n_categories=50, seq_len=(200, 3_000), n_targets_per_user=30, seed=11)


def _same(a, b) -> None:
    if sp.issparse(a):
        assert (a != b).nnz == 0 and a.shape == b.shape
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


# ----------------------------------------------------------------------------- dense catalog


def test_catalog_shapes_norms_and_determinism():
    c = clustered_catalog(3_000, 24, n_clusters=16, seed=5)
    assert c.vectors.shape == (3_000, 24) and c.vectors.dtype == np.float32
    assert c.labels.shape == (3_000,) and c.labels.dtype == np.int64
    assert c.centers.shape == (16, 24) and c.centers.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c.vectors, axis=1), 1.0, atol=1e-5)
    again = clustered_catalog(3_000, 24, n_clusters=16, seed=5)
    for name in ("vectors", "labels", "centers", "scales", "weights"):
        _same(getattr(c, name), getattr(again, name))
    other = clustered_catalog(3_000, 24, n_clusters=16, seed=6)
    assert not np.array_equal(c.vectors, other.vectors)
    raw = clustered_catalog(500, 24, n_clusters=16, seed=5, normalize=False)
    assert not np.allclose(np.linalg.norm(raw.vectors, axis=1), 1.0)


def test_catalog_is_clustered_and_anisotropic():
    c = clustered_catalog(4_000, 32, n_clusters=8, seed=0)
    # each item is closest to its own centre far more often than chance (1/8)
    nearest = np.argmax(c.vectors @ c.centers.T, axis=1)
    assert (nearest == c.labels).mean() > 0.9
    # cluster sizes are skewed (Zipf-like), every cluster used
    sizes = np.bincount(c.labels, minlength=8)
    assert sizes.min() > 0 and sizes.max() > 2 * sizes.min()
    # anisotropy: per-axis spreads within a cluster differ by a large factor
    ratio = c.scales.max(axis=1) / c.scales.min(axis=1)
    assert (ratio > 4).all()


def test_catalog_queries_from_same_mixture_not_copies():
    c = clustered_catalog(2_000, 16, n_clusters=8, seed=1)
    q = catalog_queries(c, 300, seed=2)
    assert q.shape == (300, 16) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    _same(q, catalog_queries(c, 300, seed=2))
    best = (q @ c.vectors.T).max(axis=1)
    assert best.max() < 1 - 1e-4, "a query is a copy of an item"
    # queries sit near the catalog's centres like items do
    assert np.median((q @ c.centers.T).max(axis=1)) > 0.7
    with pytest.raises(TypeError, match="expected a Catalog"):
        catalog_queries(c.vectors, 3)


def test_catalog_argument_checks():
    with pytest.raises(ValueError, match="n: expected an integer >= 1"):
        clustered_catalog(0, 8)
    with pytest.raises(ValueError, match="dim: expected an integer >= 2"):
        clustered_catalog(10, 1)
    with pytest.raises(TypeError, match="n_clusters"):
        clustered_catalog(10, 8, n_clusters=2.5)
    with pytest.raises(ValueError, match="spread"):
        clustered_catalog(10, 8, spread=-1.0)


# ----------------------------------------------------------------------------- sparse collection


def test_sparse_collection_structure_and_determinism():
    sc = sparse_collection(2_000, 50, vocab_size=8_000, avg_nnz=150, query_nnz=40, seed=3)
    for m, n in ((sc.docs, 2_000), (sc.queries, 50)):
        assert sp.isspmatrix_csr(m) and m.dtype == np.float32 and m.shape == (n, 8_000)
        assert m.has_sorted_indices
        assert (np.diff(m.indptr) > 0).all(), "empty row"
        assert (m.data > 0).all(), "explicit zero or negative weight"
        # strictly increasing indices within each row: sorted and no duplicates
        row = np.repeat(np.arange(n), np.diff(m.indptr))
        inc = np.diff(m.indices)
        assert (inc[row[1:] == row[:-1]] > 0).all()
        same = check_sparse(m, nonnegative=True, allow_empty_rows=False)
        assert (same != m).nnz == 0
    nnz = np.diff(sc.docs.indptr)
    assert 120 <= nnz.mean() <= 180 and nnz.min() >= 50
    assert 30 <= np.diff(sc.queries.indptr).mean() <= 45
    again = sparse_collection(2_000, 50, vocab_size=8_000, avg_nnz=150, query_nnz=40, seed=3)
    _same(sc.docs, again.docs)
    _same(sc.queries, again.queries)
    _same(sc.query_source, again.query_source)
    assert (sparse_collection(2_000, 50, vocab_size=8_000, seed=4).docs != sc.docs).nnz > 0


def test_sparse_weights_grow_with_rarity_and_queries_find_their_source():
    sc = sparse_collection(3_000, 100, vocab_size=10_000, seed=0)
    df = np.bincount(sc.docs.indices, minlength=sc.docs.shape[1])
    mean_w = np.bincount(sc.docs.indices, weights=sc.docs.data, minlength=sc.docs.shape[1]) / np.maximum(df, 1)
    used = df > 0
    # Spearman-like check: weight falls as document frequency rises
    r_df = np.argsort(np.argsort(df[used]))
    r_w = np.argsort(np.argsort(mean_w[used]))
    assert np.corrcoef(r_df, r_w)[0, 1] < -0.5
    # Zipfian popularity: the 1% most frequent terms hold a large share of postings
    top = np.sort(df)[::-1]
    assert top[: len(top) // 100].sum() > 0.1 * top.sum()
    scores = (sc.queries @ sc.docs.T).toarray()
    rank_of_source = (scores > scores[np.arange(100), sc.query_source][:, None]).sum(axis=1)
    assert (rank_of_source < 10).mean() > 0.9


# ----------------------------------------------------------------------------- behavior sequences


def test_behavior_shapes_dtypes(behaviors):
    d = behaviors
    n_users, N = 40, int(d.indptr[-1])
    assert d.item_emb.shape == (5_000, 32) and d.item_emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d.item_emb, axis=1), 1.0, atol=1e-5)
    assert d.item_category.shape == (5_000,) and d.item_category.dtype == np.int64
    assert set(np.unique(d.item_category)) == set(range(50))
    assert d.indptr.shape == (n_users + 1,) and d.indptr.dtype == np.int64 and d.indptr[0] == 0
    lengths = np.diff(d.indptr)
    assert lengths.min() >= 200 and lengths.max() <= 3_000 and lengths.std() > 0
    for name, dt in (("items", np.int64), ("timestamps", np.int64), ("behavior_type", np.int8)):
        arr = getattr(d, name)
        assert arr.shape == (N,) and arr.dtype == dt
    assert d.items.min() >= 0 and d.items.max() < 5_000
    assert set(np.unique(d.behavior_type)) <= set(range(len(BEHAVIOR_NAMES)))
    S = n_users * 30
    for name, dt in (("user", np.int64), ("target", np.int64), ("time", np.int64), ("n_history", np.int64),
                     ("label", np.int8), ("prob", np.float32), ("from_interest", np.bool_)):
        assert d.samples[name].shape == (S,) and d.samples[name].dtype == dt, name
    assert d.attention_temperature == d.params["temperature"] == 0.1
    assert d.n_users == n_users


def test_behavior_time_order_and_sample_history(behaviors):
    d = behaviors
    user = np.repeat(np.arange(d.n_users), np.diff(d.indptr))
    same = user[1:] == user[:-1]
    assert (np.diff(d.timestamps)[same] > 0).all(), "timestamps must strictly increase within a user"
    s = d.samples
    assert (np.diff(s["user"]) >= 0).all()
    assert (np.diff(s["time"])[s["user"][1:] == s["user"][:-1]] >= 0).all()
    for k in range(0, s["user"].shape[0], 97):
        u = s["user"][k]
        ts = d.timestamps[d.history(u)]
        # the visible history is exactly the behaviors strictly before the sample time
        assert (ts < s["time"][k]).sum() == s["n_history"][k]
        assert s["n_history"][k] >= (ts.shape[0] + 1) // 2
    log = d.to_log()
    np.testing.assert_array_equal(log.user, user)
    np.testing.assert_array_equal(log.category, d.item_category[d.items])


def test_behavior_labels_follow_planted_model(behaviors):
    d = behaviors
    s = d.samples
    assert ((s["prob"] > 0) & (s["prob"] < 1)).all()
    n = s["prob"].shape[0]
    # labels ~ Bernoulli(prob): the mean label is within 4 standard errors of the mean prob
    se = np.sqrt((s["prob"] * (1 - s["prob"])).sum()) / n
    assert abs(s["label"].mean() - s["prob"].mean()) < 4 * se
    assert 0.1 < s["prob"].mean() < 0.8
    # interest targets click more than random ones, and positives have higher prob
    assert s["prob"][s["from_interest"]].mean() > s["prob"][~s["from_interest"]].mean() + 0.15
    assert s["prob"][s["label"] == 1].mean() > s["prob"][s["label"] == 0].mean() + 0.1
    assert s["from_interest"].mean() == 0.5
    # prob recomputed by brute force for a few samples
    for k in (0, 17, 301, n - 1):
        u = s["user"][k]
        hist = d.item_emb[d.items[d.history(u)]][: s["n_history"][k]]
        sc = hist @ d.item_emb[s["target"][k]]
        w = np.exp((sc - sc.max()) / d.params["temperature"])
        att = (w / w.sum()) @ sc
        expected = 1 / (1 + np.exp(-(d.params["scale"] * att + d.params["bias"])))
        assert s["prob"][k] == pytest.approx(expected, rel=1e-4)


def test_true_prob_full_and_subset(behaviors):
    d = behaviors
    s = d.samples
    u = 7
    rows = s["user"] == u
    tgt, nh = s["target"][rows], s["n_history"][rows]
    full = d.true_prob(u, tgt, nh)
    np.testing.assert_allclose(full, s["prob"][rows], rtol=1e-6)
    hist = d.item_emb[d.items[d.history(u)]]
    scores = d.item_emb[tgt] @ hist.T
    scores[np.arange(hist.shape[0])[None, :] >= nh[:, None]] = -np.inf
    order = np.argsort(-scores, axis=1)
    # all visible positions, as a -1 padded list, reproduce the full probability
    allpos = np.where(np.arange(hist.shape[0])[None, :] < nh[:, None], np.arange(hist.shape[0])[None, :], -1)
    np.testing.assert_allclose(d.true_prob(u, tgt, nh, positions=allpos), full, rtol=1e-5)
    # top-k by attention score gets closer to the full probability as k grows
    order = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1)  # -1 pad past n_history
    err = [np.abs(d.true_prob(u, tgt, nh, positions=order[:, :k]) - full).mean() for k in (5, 50, 500)]
    assert err[0] > err[1] > err[2]
    bad = np.full((tgt.shape[0], 1), -1)
    k = int(np.flatnonzero(nh < hist.shape[0])[0])
    bad[k, 0] = nh[k]  # the first behavior the sample must not see
    with pytest.raises(ValueError, match="future behavior"):
        d.true_prob(u, tgt, nh, positions=bad)


def test_planted_attention_prob_edge_cases():
    e = np.eye(3, dtype=np.float32)
    t = np.array([[1.0, 0, 0]], np.float32)
    p = planted_attention_prob(e, t, temperature=1e-3, scale=2.0, bias=-1.0)
    assert p[0] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-5)  # attention picks s = 1
    none = planted_attention_prob(e, t, temperature=0.1, scale=2.0, bias=-1.0, mask=np.zeros((1, 3), bool))
    assert none[0] == pytest.approx(1 / (1 + np.exp(1.0)), rel=1e-5)  # empty history: sigmoid(b)


def test_behavior_determinism_and_seed():
    kw = dict(n_items=2_000, n_categories=30, seq_len=(50, 400), seed=3)
    a = behavior_dataset(15, **kw)
    b = behavior_dataset(15, **kw)
    for name in ("item_emb", "item_category", "indptr", "items", "timestamps", "behavior_type", "samples"):
        _same(getattr(a, name), getattr(b, name))
    c = behavior_dataset(15, **{**kw, "seed": 4})
    assert not np.array_equal(a.item_emb, c.item_emb)


def test_behavior_interests_drift():
    d = behavior_dataset(30, n_items=5_000, n_categories=100, seq_len=4_000, drift=4.0, noise_rate=0.0, seed=2)
    changes = []
    for u in range(d.n_users):
        cats = d.item_category[d.items[d.history(u)]]
        early = np.bincount(cats[:1_000], minlength=100) / 1_000
        late = np.bincount(cats[-1_000:], minlength=100) / 1_000
        changes.append(0.5 * np.abs(early - late).sum())  # total-variation distance
        # a few interests (each spans <= 3 related categories) dominate a user's history
        top = np.sort(np.bincount(cats, minlength=100))[::-1]
        assert top[:12].sum() == cats.shape[0]
    assert np.median(changes) > 0.25
    flat = behavior_dataset(30, n_items=5_000, n_categories=100, seq_len=4_000, drift=0.0, noise_rate=0.0, seed=2)
    flat_changes = []
    for u in range(flat.n_users):
        cats = flat.item_category[flat.items[flat.history(u)]]
        early = np.bincount(cats[:1_000], minlength=100) / 1_000
        late = np.bincount(cats[-1_000:], minlength=100) / 1_000
        flat_changes.append(0.5 * np.abs(early - late).sum())
    assert np.median(flat_changes) < 0.1 < np.median(changes)


def test_behavior_long_single_user():
    d = behavior_dataset(1, n_items=20_000, seq_len=100_000, n_targets_per_user=8, seed=1)
    assert d.indptr.tolist() == [0, 100_000]
    assert (np.diff(d.timestamps) > 0).all()
    assert d.samples["prob"].shape == (8,)
    assert (d.samples["n_history"] >= 50_000).all()


def test_behavior_argument_checks():
    with pytest.raises(ValueError, match="n_items: expected an integer >= 200"):
        behavior_dataset(2, n_items=100)
    with pytest.raises(ValueError, match="seq_len"):
        behavior_dataset(2, seq_len=1)
    with pytest.raises(ValueError, match=r"seq_len\[1\]: expected an integer >= 100"):
        behavior_dataset(2, seq_len=(100, 10))
    with pytest.raises(ValueError, match="attention_temperature"):
        behavior_dataset(2, attention_temperature=0.0)
    with pytest.raises(ValueError, match="noise_rate"):
        behavior_dataset(2, noise_rate=1.5)
