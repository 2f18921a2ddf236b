"""Lifelong-sequence methods: Clustered, Cascade, MultiInterest; the clustered store layout
(save / mmap / append); calibration; the planted-interest generator."""

from __future__ import annotations

import numpy as np
import pytest

from gsu.datasets.lifelong import lifelong_users, lifelong_users_cached, planted_relevant
from gsu.retrieval import BehaviorStore, Exact, History, ItemTable, make_method, retrieve_batch
from gsu.retrieval import quality as M
from gsu.retrieval.cascade import Cascade, calibrate
from gsu.retrieval.clustered import Clustered, SequenceClusters, append_sequence, cluster_sequence
from gsu.retrieval.interests import MultiInterest, extract_interests, interest_coverage, largest_remainder, nnls_weights
from _kinds import is_mapped

N_ITEMS, DIM, L, T, K = 600, 16, 3000, 48, 20


@pytest.fixture(scope="module")
def data():
    """Clustered items with exact duplicates (ties), a history with repeats, targets and
    cut times (target 0 sees nothing)."""
    rng = np.random.default_rng(0)
    cent = rng.standard_normal((12, DIM))
    E = cent[rng.integers(0, 12, N_ITEMS)] + 0.4 * rng.standard_normal((N_ITEMS, DIM))
    E = np.round(E * 4) / 4  # a coarse grid: many exactly equal scores
    E[1::7] = E[0::7][: E[1::7].shape[0]]  # identical embeddings under different ids
    items = ItemTable(embeddings=E.astype(np.float32))
    hitems = rng.integers(0, N_ITEMS, L)
    hts = np.sort(rng.integers(0, 10_000, L))
    hist = History.from_arrays(hitems, hts)
    targets = rng.integers(0, N_ITEMS, T)
    ttime = rng.integers(-10, 10_500, T)
    ttime[0] = -100
    return items, hist, targets, ttime


def _brute(items, hist, targets, cuts, k, mult=1.0):
    """Reference: exact scores, score desc then most recent first, positions < cut."""
    S = (items.embeddings[targets] @ items.embeddings[hist.items].T) * mult
    out = np.full((targets.shape[0], k), -1, np.int64)
    for t in range(targets.shape[0]):
        c = cuts[t]
        o = np.lexsort((-np.arange(c), -S[t, :c]))[:k]
        out[t, : o.size] = o
    return out, S


def _cuts(hist, ttime):
    return np.searchsorted(hist.timestamps, ttime, side="left")


def _check_invariants(res, hist, targets, cuts, items, k, *, exact_scores=True):
    """Shapes, padding, no duplicates, the time cut, exact scores, and the tie rule: a
    returned position implies every more recent visible position of the same item."""
    P = res.positions
    assert P.shape == (targets.shape[0], k) and P.dtype == np.int64
    np.testing.assert_array_equal(res.mask, P >= 0)
    S = items.embeddings[targets] @ items.embeddings[hist.items].T
    for t in range(P.shape[0]):
        row = P[t][P[t] >= 0]
        assert np.unique(row).size == row.size
        assert np.all(P[t][row.size :] == -1)
        assert np.all(row < cuts[t]), "a behavior at or after the cut was returned"
        if exact_scores:
            np.testing.assert_allclose(res.scores[t, : row.size], S[t, row], rtol=1e-5, atol=1e-5)
        got = set(row.tolist())
        for p in row:
            same = np.flatnonzero(hist.items[: cuts[t]] == hist.items[p])
            assert set(same[same > p].tolist()) <= got, "tie rule: a more recent copy of a returned item is missing"


# ----------------------------------------------------------------------------- Clustered
@pytest.mark.parametrize("segment", [None, 700])
@pytest.mark.parametrize("with_time", [False, True])
def test_clustered_opening_everything_equals_brute_force(data, segment, with_time):
    items, hist, targets, ttime = data
    m = Clustered(items, k=K, candidates=10_000, cluster_size=16, segment=segment)
    tt = ttime if with_time else None
    cuts = _cuts(hist, ttime) if with_time else np.full(T, L)
    res = m.retrieve(hist, targets, target_time=tt)
    ref, S = _brute(items, hist, targets, cuts, K)
    np.testing.assert_array_equal(res.positions, ref)
    _check_invariants(res, hist, targets, cuts, items, K)


@pytest.mark.parametrize("c", [1.0, 3.0])
def test_clustered_approximate_keeps_cut_ties_and_exact_scores(data, c):
    items, hist, targets, ttime = data
    cuts = _cuts(hist, ttime)
    m = Clustered(items, k=K, candidates=c, cluster_size=16, scale=True)
    res = m.retrieve(hist, targets, target_time=ttime)
    ex = Exact(items, k=K, scale=True)
    np.testing.assert_allclose(res.scores[res.mask], ex.score_positions(hist, targets, res.positions)[res.mask], rtol=1e-5, atol=1e-6)
    res1 = Clustered(items, k=K, candidates=c, cluster_size=16).retrieve(hist, targets, target_time=ttime)
    _check_invariants(res1, hist, targets, cuts, items, K)
    assert res.counts[0] == 0  # nothing visible


def test_clustered_recall_grows_with_candidates(data):
    items, hist, targets, _ = data
    ex = Exact(items, k=K)
    truth = ex.retrieve(hist, targets)
    recs = []
    for c in (1.0, 4.0, 16.0, 10_000.0):
        m = Clustered(items, k=K, candidates=c, cluster_size=16)  # clustered on the fly, the same seed each time
        recs.append(M.exact_recall(ex, hist, targets, m.retrieve(hist, targets).positions, truth=truth).mean())
    assert recs == sorted(recs)
    assert recs[-1] == 1.0 and recs[0] < 1.0


def test_clustered_unclustered_tail_is_scanned(data):
    """Behaviors appended to the store after clustering are found (scanned exactly)."""
    items, hist, targets, _ = data
    n0 = 2000
    store = BehaviorStore.from_arrays(np.zeros(n0, np.int64), hist.items[:n0], hist.timestamps[:n0])
    sc = SequenceClusters.build(store, items, cluster_size=16)
    store.append(0, hist.items[n0:], hist.timestamps[n0:])
    h = store.history(0)
    m = Clustered(items, k=K, candidates=10_000, clusters=sc)
    res = m.retrieve(h, targets)
    ref, _ = _brute(items, h, targets, np.full(T, L), K)
    np.testing.assert_array_equal(res.positions, ref)
    assert sc.user(0).length == n0


def test_layout_in_store_file_roundtrip_and_mmap(tmp_path, data):
    items, hist, targets, ttime = data
    rng = np.random.default_rng(5)
    users = np.repeat([3, 7, 11], L)
    store = BehaviorStore.from_arrays(users, np.concatenate([hist.items, rng.permutation(hist.items), hist.items[::-1]]),
                                      np.tile(hist.timestamps, 3))
    sc = SequenceClusters.build(store, items, cluster_size=16, segment=1000)
    sc.attach(store)
    path = tmp_path / "store.gsu"
    store.save(path)
    loaded = BehaviorStore.load(path, mmap=True)
    assert loaded.layouts == ("clusters",)
    sc2 = SequenceClusters.from_store(loaded)
    assert is_mapped(sc2._base["pos"]) or not sc2._base["pos"].flags.writeable
    np.testing.assert_array_equal(sc2.user_ids, [3, 7, 11])
    m_mem = Clustered(items, k=K, candidates=2.0, clusters=sc)
    m_file = Clustered(items, k=K, candidates=2.0)  # finds the layout through the history's store
    for u in (3, 7, 11):
        a = m_mem.retrieve(store.history(u), targets, target_time=ttime)
        b = m_file.retrieve(loaded.history(u), targets, target_time=ttime)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.scores, b.scores)
    batch = retrieve_batch(m_file, loaded, np.repeat([3, 7, 11], T), np.tile(targets, 3), target_time=np.tile(ttime, 3))
    np.testing.assert_array_equal(batch.positions[T : 2 * T], m_mem.retrieve(store.history(7), targets, target_time=ttime).positions)
    # a store written without layouts still loads, and has none
    plain = BehaviorStore.from_arrays(users, np.tile(hist.items, 3), np.tile(hist.timestamps, 3))
    plain.save(tmp_path / "plain.gsu")
    assert BehaviorStore.load(tmp_path / "plain.gsu").layouts == ()
    with pytest.raises(ValueError, match="no clustered layout"):
        SequenceClusters.from_store(BehaviorStore.load(tmp_path / "plain.gsu"))


def test_layout_that_does_not_match_the_history_is_refused(data):
    items, hist, targets, _ = data
    store = BehaviorStore.from_arrays(np.zeros(L, np.int64), hist.items, hist.timestamps)
    sc = SequenceClusters.build(store, items, cluster_size=16)
    other = BehaviorStore.from_arrays(np.zeros(L, np.int64), hist.items[::-1], hist.timestamps)
    with pytest.raises(ValueError, match="does not match"):
        Clustered(items, k=K, clusters=sc).retrieve(other.history(0), targets)
    short = BehaviorStore.from_arrays(np.zeros(100, np.int64), hist.items[:100], hist.timestamps[:100])
    with pytest.raises(ValueError, match="cover"):
        Clustered(items, k=K, clusters=sc).retrieve(short.history(0), targets)


def test_malformed_layout_raises_instead_of_crashing(data):
    items, hist, targets, _ = data
    store = BehaviorStore.from_arrays(np.zeros(L, np.int64), hist.items, hist.timestamps)
    SequenceClusters.build(store, items, cluster_size=16).attach(store)
    cfg, arr = store.layout("clusters")
    for name, edit in [("pos", lambda a: a + L), ("grp_ptr", lambda a: a[::-1].copy()), ("cl_ptr", lambda a: a * 1000),
                       ("centroids", lambda a: np.full_like(a, np.nan))]:
        bad = dict(arr)
        bad[name] = edit(np.array(arr[name]))
        s2 = BehaviorStore.from_arrays(np.zeros(L, np.int64), hist.items, hist.timestamps)
        s2.set_layout("clusters", cfg, bad)
        with pytest.raises(ValueError, match="clustered layout"):
            Clustered(items, k=K).retrieve(s2.history(0), targets)
    s3 = BehaviorStore.from_arrays(np.zeros(L, np.int64), hist.items, hist.timestamps)
    s3.set_layout("clusters", cfg, {a: v for a, v in arr.items() if a != "grp_item"})
    with pytest.raises(ValueError, match="missing arrays"):
        Clustered(items, k=K).retrieve(s3.history(0), targets)
    with pytest.raises(ValueError, match="identifier"):
        s3.set_layout("bad name", {}, {})


def _planted(n_users=3, length=6000, seed=0, **kw):
    d = lifelong_users(n_users, length=length, n_items=4000, dim=DIM, n_topics=24, n_interests=5, n_facet_targets=16,
                       seed=seed, **kw)
    return d, ItemTable(embeddings=d.item_emb)


@pytest.mark.parametrize("segment", [None, 1500])
def test_append_matches_reclustering_within_tolerance(segment):
    """Stated tolerance: after appending the last 40 % of every history (in 3 appends),
    mean recall@k against Exact is at most 0.03 below that of clustering the whole
    histories from scratch, at every candidate factor tried; opening every cluster, both
    return exactly Exact's behaviors."""
    d, items = _planted(length=6000, seed=1)
    full = d.store()
    n0 = 3600
    users = np.repeat(np.arange(3), n0)
    part = BehaviorStore.from_arrays(users, np.concatenate([d.items[d.user_slice(u)][:n0] for u in range(3)]),
                                     np.concatenate([d.timestamps[d.user_slice(u)][:n0] for u in range(3)]))
    sc = SequenceClusters.build(part, items, cluster_size=24, segment=segment)
    for u in range(3):
        h = full.history(u)
        for s in range(n0, 6000, 800):
            part.append(u, h.items[s : s + 800], h.timestamps[s : s + 800])
            sc.update(part, items, users=[u])
    scratch = SequenceClusters.build(full, items, cluster_size=24, segment=segment)
    ex = Exact(items, k=K)
    rng = np.random.default_rng(2)
    reqs = []
    for u in range(3):
        h = part.history(u)
        uc = sc.user(u)
        assert uc.length == 6000
        np.testing.assert_array_equal(np.sort(uc.pos), np.arange(6000))  # every behavior exactly once
        np.testing.assert_array_equal(h.items[uc.pos], np.repeat(uc.grp_item, np.diff(uc.grp_ptr)))
        targets = np.concatenate([rng.integers(0, d.n_regular, 32), d.items[d.user_slice(u)][rng.integers(0, 6000, 32)]])
        reqs.append((u, h, targets, ex.retrieve(h, targets)))
    for c in (2.0, 8.0, 1e6):
        ra, rs = [], []
        for u, h, targets, truth in reqs:
            a = Clustered(items, k=K, candidates=c, clusters=sc).retrieve(h, targets)
            b = Clustered(items, k=K, candidates=c, clusters=scratch).retrieve(full.history(u), targets)
            ra.append(M.exact_recall(ex, h, targets, a.positions, truth=truth))
            rs.append(M.exact_recall(ex, h, targets, b.positions, truth=truth))
            if c == 1e6:
                np.testing.assert_array_equal(a.positions, truth.positions)
                np.testing.assert_array_equal(b.positions, truth.positions)
        ra, rs = float(np.mean(np.concatenate(ra))), float(np.mean(np.concatenate(rs)))
        assert ra >= rs - 0.03, (c, ra, rs)


def test_append_places_new_items_and_splits():
    """New items join the nearest centroid (which moves to the new mean), far ones form
    clusters of their own, an over-full cluster is split; nothing else moves."""
    E = np.zeros((40, 4), np.float32)
    E[:20, 0] = 1.0
    E[:20, 1] = np.linspace(-0.1, 0.1, 20)
    E[20:39, 2] = 1.0
    E[20:39, 3] = np.linspace(-0.1, 0.1, 19)
    E[39] = [0, 0, 0, -1.0]  # far from everything
    items = ItemTable(embeddings=E)
    h0 = History.from_arrays(np.array([0, 10, 19, 20, 29, 38]))
    uc = cluster_sequence(h0, items, cluster_size=3)
    assert uc.n_clusters == 2
    h1 = History.from_arrays(np.array([0, 10, 19, 20, 29, 38, 3, 0, 39]))
    uc1 = append_sequence(uc, h1, items, split_factor=2.0)
    assert uc1.length == 9 and uc1.n_clusters == 3
    g = {int(i): j for j, i in enumerate(uc1.grp_item)}
    cl = np.repeat(np.arange(uc1.n_clusters), np.diff(uc1.cl_ptr))
    assert cl[g[3]] == cl[g[0]] and cl[g[39]] not in (cl[g[0]], cl[g[20]])
    np.testing.assert_allclose(uc1.centroids[cl[g[0]]], E[[0, 10, 19, 3]].mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(uc1.pos[uc1.grp_ptr[g[0]] : uc1.grp_ptr[g[0] + 1]], [0, 7])
    before = uc1.centroids[cl[g[20]]].copy()
    h2 = History.from_arrays(np.concatenate([h1.items, [4, 5, 6, 7, 8, 9, 11, 12]]))
    uc2 = append_sequence(uc1, h2, items, split_factor=2.0)
    assert np.diff(uc2.cl_ptr).max() <= 6 and uc2.n_clusters >= 4  # the over-full cluster was split
    g2 = {int(i): j for j, i in enumerate(uc2.grp_item)}
    cl2 = np.repeat(np.arange(uc2.n_clusters), np.diff(uc2.cl_ptr))
    np.testing.assert_array_equal(uc2.centroids[cl2[g2[20]]], before)  # untouched cluster did not move


# ----------------------------------------------------------------------------- Cascade
@pytest.mark.parametrize("draft", ["proj", "simhash"])
def test_cascade_large_c_equals_brute_force_and_keeps_the_rules(data, draft):
    items, hist, targets, ttime = data
    cuts = _cuts(hist, ttime)
    res = Cascade(items, k=K, draft=draft, candidates=L / K, draft_dim=4).retrieve(hist, targets, target_time=ttime)
    ref, _ = _brute(items, hist, targets, cuts, K)
    np.testing.assert_array_equal(res.positions, ref)
    small = Cascade(items, k=K, draft=draft, candidates=2.0, draft_dim=4).retrieve(hist, targets, target_time=ttime)
    _check_invariants(small, hist, targets, cuts, items, K)


def test_calibrate_picks_the_smallest_candidate_factor(data):
    items, hist, targets, _ = data
    m = Cascade(items, k=K, draft="proj", draft_dim=3)
    cal = calibrate(m, [(hist, targets[:24])], target_recall=0.95, grid=(1, 2, 4, 8, 16, 64, 150))
    assert cal.reached and m.candidates == cal.candidates
    assert cal.curve[-1][1] >= 0.95 and all(r < 0.95 for _, r in cal.curve[:-1])
    ex = Exact(items, k=K)
    rec = M.exact_recall(ex, hist, targets[:24], m.retrieve(hist, targets[:24]).positions).mean()
    assert rec == pytest.approx(cal.curve[-1][1])
    cal2 = calibrate(Clustered(items, k=K, cluster_size=16), [(hist, targets[:24])], target_recall=1.0, grid=(1, 2))
    assert not cal2.reached and cal2.candidates == 2
    with pytest.raises(ValueError):
        calibrate(m, [], target_recall=0.9)
    with pytest.raises(ValueError):
        calibrate(m, [(hist, targets)], target_recall=1.5)


def test_calibrate_with_confidence_tests_the_lower_bound(data):
    """With ``confidence``, a c counts only when mean - z·sd/√n of the per-target recalls
    reaches the target: never a smaller c than the plain mean picks, and the reported
    bounds are recomputed from the per-target recalls."""
    from statistics import NormalDist

    items, hist, targets, _ = data
    grid = (1, 2, 4, 8, 16, 64, 150)
    ex = Exact(items, k=K)
    plain = calibrate(Cascade(items, k=K, draft="proj", draft_dim=3), [(hist, targets[:24])], target_recall=0.9, grid=grid)
    m = Cascade(items, k=K, draft="proj", draft_dim=3)
    cal = calibrate(m, [(hist, targets[:24])], target_recall=0.9, grid=grid, confidence=0.95)
    assert cal.candidates >= plain.candidates and cal.confidence == 0.95 and len(cal.lower_bounds) == len(cal.curve)
    z = NormalDist().inv_cdf(0.95)
    for (c, mean), lb in zip(cal.curve, cal.lower_bounds):
        m.candidates = c
        r = M.exact_recall(ex, hist, targets[:24], m.retrieve(hist, targets[:24]).positions)
        assert mean == pytest.approx(r.mean()) and lb == pytest.approx(r.mean() - z * r.std(ddof=1) / np.sqrt(r.size))
        assert lb <= mean
    assert cal.lower_bounds[-1] >= 0.9 if cal.reached else True
    assert all(lb < 0.9 for lb in cal.lower_bounds[:-1])
    with pytest.raises(ValueError, match="confidence"):
        calibrate(m, [(hist, targets[:24])], target_recall=0.9, confidence=1.0)


# ----------------------------------------------------------------------------- MultiInterest
def test_quota_merge_against_a_python_reference():
    from gsu.retrieval._lifelong_kernels import quota_merge

    rng = np.random.default_rng(4)
    R, m, kk, k, Lh = 30, 4, 12, 10, 40
    P = np.stack([np.stack([rng.permutation(Lh)[:kk] for _ in range(m)]) for _ in range(R)])
    P[:, 1, 8:] = -1
    quotas = largest_remainder(rng.random((R, m)), k)
    out = np.full((R, k), -1, np.int64)
    counts = quota_merge(P, quotas, k, Lh, out)
    for r in range(R):
        ref, used = [], [0] * m
        for phase in (0, 1):
            for rank in range(kk):
                for j in range(m):
                    if len(ref) >= k or (phase == 0 and used[j] >= quotas[r, j]):
                        continue
                    p = P[r, j, rank]
                    if p >= 0 and p not in ref:
                        ref.append(p)
                        used[j] += phase == 0
        np.testing.assert_array_equal(out[r, : len(ref)], ref)
        assert counts[r] == len(ref)


def test_largest_remainder_and_nnls():
    q = largest_remainder(np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 0.0], [1, 1, 1], [-1, 2, 2]]), 10)
    np.testing.assert_array_equal(q, [[5, 3, 2], [0, 0, 0], [4, 3, 3], [0, 5, 5]])
    C = np.eye(4, dtype=np.float32)[:3] * 2
    w = nnls_weights(np.array([[1.0, 0.5, 0.0, 0.3], [-1.0, 0, 0, 0]]), C)
    np.testing.assert_allclose(w, [[1.0, 0.5, 0.0], [0, 0, 0]], atol=1e-9)


def test_multi_interest_rules_and_given_probes(data):
    items, hist, targets, ttime = data
    cuts = _cuts(hist, ttime)
    for weighting in ("nnls", "mass"):
        m = MultiInterest(items, k=K, n_interests=4, weighting=weighting)
        res = m.retrieve(hist, targets, target_time=ttime)
        _check_invariants(res, hist, targets, cuts, items, K)
        assert np.all(res.scores[:, :-1] >= res.scores[:, 1:])  # ranked by the exact score
    # probes given by a model: one probe equal to each target -> the exact top-k
    probes = items.embeddings[targets][:, None, :]
    res = MultiInterest(items, k=K).retrieve(hist, targets, target_time=ttime, probes=probes, weights=np.ones((T, 1)))
    ref, _ = _brute(items, hist, targets, cuts, K)
    np.testing.assert_array_equal(res.positions, ref)
    # per-user probes: two probes with weights 3:1 -> 15 + 5 of 20 slots, no duplicates
    pu = items.embeddings[[0, 300]]
    res = MultiInterest(items, k=K).retrieve(hist, targets[:4], probes=pu, weights=[3.0, 1.0])
    ex = Exact(items, k=40)
    top0 = set(ex.retrieve(hist, np.array([0])).positions[0, :15].tolist())
    for row in res.positions:
        assert top0 <= set(row.tolist())
    with pytest.raises(ValueError, match="probes"):
        MultiInterest(items, k=K).retrieve(hist, targets, probes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="weights"):
        MultiInterest(items, k=K).retrieve(hist, targets, probes=pu, weights=[1.0, -1.0])


def test_multi_interest_through_clusters_matches_exact_scan_when_everything_is_opened(data):
    items, hist, targets, ttime = data
    a = MultiInterest(items, k=K, n_interests=4).retrieve(hist, targets, target_time=ttime)
    b = MultiInterest(items, k=K, n_interests=4, search=Clustered(items, k=K, candidates=10_000, cluster_size=16)).retrieve(
        hist, targets, target_time=ttime)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_interest_coverage():
    lab = np.array([0, 0, 1, 2, -1, 3])
    pos = np.array([[0, 1, -1], [2, 3, 4], [5, -1, -1]])
    np.testing.assert_allclose(interest_coverage(pos, lab, [0, 1, 2, 3]), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(interest_coverage(pos, lab, np.array([[0, -1], [1, 3], [-1, -1]])), [1.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        interest_coverage(np.array([[9]]), lab, [0])


def test_multi_interest_covers_planted_interests_better_than_one_query():
    """The issue's claim at small scale: on users with planted interests, per-interest
    retrieval covers more of the request's interests and recalls more of the planted
    relevant behaviors than single-query retrieval at equal k — for multi-facet targets
    (single query = the target: Exact) and for user-level requests (single query = the
    mean of the history)."""
    d, items = _planted(n_users=3, length=8000, seed=7, noise_rate=0.1)
    store = d.store()
    k = 30
    cov_m, cov_s, rec_m, rec_s = [], [], [], []
    for u in range(3):
        h = store.history(u)
        lab = d.labels(u)
        # multi-facet targets
        tg = d.facet_items[u]
        multi = MultiInterest(items, k=k, n_interests=8, weighting="nnls").retrieve(h, tg)
        single = Exact(items, k=k).retrieve(h, tg)
        facets = d.facet_interests[u]
        rel = np.stack([planted_relevant(d, u, facets[f], d.facet_weights[u, f], k) for f in range(tg.shape[0])])
        cov_m.append(interest_coverage(multi.positions, lab, facets))
        cov_s.append(interest_coverage(single.positions, lab, facets))
        rec_m.append(M.recall_rows(multi.positions, rel))
        rec_s.append(M.recall_rows(single.positions, rel))
    cm, cs, rm, rs = (float(np.mean(np.concatenate(x))) for x in (cov_m, cov_s, rec_m, rec_s))
    assert cm > cs and rm > rs, (cm, cs, rm, rs)
    # user level: every planted interest, weighted by its share of the history
    from gsu.datasets.lifelong import interest_shares

    cm, cs, rm, rs = [], [], [], []
    for u in range(3):
        h = store.history(u)
        lab = d.labels(u)
        w = interest_shares(lab, 5)
        rel = planted_relevant(d, u, np.arange(5), w, k)[None, :]
        tg = np.array([0])
        mi = MultiInterest(items, k=k, n_interests=8, weighting="mass").retrieve(h, tg)
        one = MultiInterest(items, k=k, n_interests=1, weighting="mass").retrieve(h, tg)
        cm.append(interest_coverage(mi.positions, lab, np.arange(5))[0])
        cs.append(interest_coverage(one.positions, lab, np.arange(5))[0])
        rm.append(M.recall_rows(mi.positions, rel)[0])
        rs.append(M.recall_rows(one.positions, rel)[0])
    assert np.mean(cm) > np.mean(cs) and np.mean(rm) > np.mean(rs), (cm, cs, rm, rs)


# ----------------------------------------------------------------------------- the rest
def test_factory_and_batch(data):
    items, hist, targets, ttime = data
    store = BehaviorStore.from_arrays(np.zeros(L, np.int64), hist.items, hist.timestamps)
    for name, params in [("clustered", {"candidates": 10_000, "cluster_size": 16}), ("cascade", {"candidates": L / K}),
                         ("multi_interest", {"n_interests": 3})]:
        m = make_method(name, items, k=K, **params)
        res = retrieve_batch(m, store, np.zeros(T, np.int64), targets, target_time=ttime)
        direct = m.retrieve(store.history(0), targets, target_time=ttime)
        np.testing.assert_array_equal(res.positions, direct.positions)
        if name != "multi_interest":
            ref, _ = _brute(items, hist, targets, _cuts(hist, ttime), K)
            np.testing.assert_array_equal(res.positions, ref)


def test_bad_arguments(data):
    items, hist, targets, _ = data
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            Clustered(items, candidates=bad)
    with pytest.raises(ValueError):
        Cascade(items, candidates=0.5)
    with pytest.raises(ValueError):
        Cascade(items, draft="int4")
    with pytest.raises(ValueError):
        Cascade(items, draft_dim=DIM + 1)
    with pytest.raises(TypeError):
        Clustered(items, clusters="nope")
    with pytest.raises(ValueError):
        MultiInterest(items, weighting="max")
    with pytest.raises(ValueError, match="empty"):
        Clustered(items).retrieve(np.zeros(0, np.int64), targets)


def test_lifelong_generator(tmp_path):
    a = lifelong_users(2, length=[3000, 5000], n_items=2000, dim=8, n_topics=16, n_interests=4, n_facet_targets=5, seed=3)
    b = lifelong_users(2, length=[3000, 5000], n_items=2000, dim=8, n_topics=16, n_interests=4, n_facet_targets=5, seed=3)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.item_emb, b.item_emb)
    assert a.indptr.tolist() == [0, 3000, 8000]
    for u in range(2):
        sl = a.user_slice(u)
        assert np.all(np.diff(a.timestamps[sl]) > 0)
        lab = a.interest[sl]
        it = a.items[sl]
        ok = lab >= 0
        np.testing.assert_array_equal(a.item_topic[it[ok]], a.user_topics[u][lab[ok]])  # interest items are of its topic
        assert 0.05 < (~ok).mean() < 0.15
        rel = planted_relevant(a, u, a.facet_interests[u, 0], a.facet_weights[u, 0], 20, cut=2000)
        assert np.all(rel[rel >= 0] < 2000) and set(lab[rel[rel >= 0]].tolist()) <= set(a.facet_interests[u, 0].tolist())
    assert np.allclose(np.linalg.norm(a.item_emb, axis=1), 1.0, atol=1e-5)
    u = lifelong_users(1, length=2000, n_items=500, dim=8, n_topics=8, n_interests=3, n_facet_targets=2, unique_items=True, seed=0)
    ins = u.items[u.interest >= 0]
    assert np.unique(ins).size == ins.size and ins.min() >= u.n_regular
    c1 = lifelong_users_cached(tmp_path, n_users=1, length=1000, n_items=500, dim=8, n_topics=8, n_interests=3, seed=0)
    c2 = lifelong_users_cached(tmp_path, n_users=1, length=1000, n_items=500, dim=8, n_topics=8, n_interests=3, seed=0)
    np.testing.assert_array_equal(c1.items, c2.items)
    assert c2.params == c1.params
    with pytest.raises(ValueError):
        lifelong_users(1, length=100, n_topics=4, n_interests=5)


def test_extract_interests_finds_planted_centers():
    d, items = _planted(n_users=1, length=8000, seed=11, noise_rate=0.0, drift=0.0)
    h = d.store().history(0)
    it = extract_interests(h, items, n_interests=10, seed=0)
    assert abs(it.weights.sum() - 1.0) < 1e-9
    true_c = d.topic_centers[d.user_topics[0]]
    cos = (it.centers / np.linalg.norm(it.centers, axis=1, keepdims=True)) @ true_c.T
    assert np.all(cos.max(axis=0) > 0.6)  # every planted interest has a center pointing at it
    with pytest.raises(ValueError):
        extract_interests(h, items, cut=0)


def test_kernels_skip_out_of_range_indices():
    """The numba kernels follow only in-range indices: garbage offsets, rows, targets and
    positions are skipped instead of read or written out of bounds."""
    from gsu.retrieval import _lifelong_kernels as LK

    rng = np.random.default_rng(9)
    E = rng.standard_normal((10, 4)).astype(np.float32)
    Q = rng.standard_normal((3, 4)).astype(np.float32)
    cl_ptr = np.array([0, 2, 99], np.int64)  # the second cluster runs past the groups
    grp_rows = np.array([1, 50, 3], np.int64)  # row 50 does not exist
    grp_ptr = np.array([0, 2, 3, 1000], np.int64)  # the last group runs past the positions
    pos = np.array([0, 1, 2, 3], np.int64)
    cl_tptr = np.array([0, 3, 5], np.int64)
    cl_t = np.array([0, 7, -1, 2, 1], np.int32)  # targets 7 and -1 do not exist
    for cl_last in (np.array([3, 3], np.int64), np.array([0, 0], np.int64)):  # groups searched for the cut, or whole
        # (group lists: scores, ends, counts of k + 2 slots; starts, sizes, totals)
        for k in (5, 1):
            lists = [np.empty((3, k + 2), t) for t in (np.float32, np.int64, np.int64)] + [np.zeros(3, np.int64) for _ in range(3)]
            LK.score_clusters(E, grp_rows, cl_ptr, grp_ptr, cl_last, pos, cl_tptr, cl_t, Q, np.full(3, 4, np.int64), k, *lists,
                              np.empty((4, 4), np.float32))
            sizes, tots = lists[4], lists[5]
            assert tots.max() <= min(k, 4) and np.all(lists[1][sizes > 0, 0] <= 4)
            out, out_s = np.full((3, k), -1, np.int64), np.full((3, k), -np.inf, np.float32)
            LK.groups_finish(*lists, pos, out, out_s)
            assert np.all((out >= -1) & (out < 4)) and np.array_equal(out >= 0, np.isfinite(out_s))
            assert tots[1] == 1 and out[1, 0] == 3  # the group running past the positions is cut at their end
        # lists too small for k are refused, not overrun
        lists = [np.empty((3, 6), t) for t in (np.float32, np.int64, np.int64)] + [np.zeros(3, np.int64) for _ in range(3)]
        LK.score_clusters(E, grp_rows, cl_ptr, grp_ptr, cl_last, pos, cl_tptr, cl_t, Q, np.full(3, 4, np.int64), 5, *lists,
                          np.empty((4, 4), np.float32))
        assert lists[5].max() == 0
        # a list state out of range (not one score_clusters leaves) is skipped, not followed
        lists = [np.empty((3, 7), t) for t in (np.float32, np.int64, np.int64)] + [np.full(3, 6, np.int64), np.full(3, 5, np.int64),
                                                                                     np.zeros(3, np.int64)]
        LK.score_clusters(E, grp_rows, cl_ptr, grp_ptr, cl_last, pos, cl_tptr, cl_t, Q, np.full(3, 4, np.int64), 5, *lists,
                          np.empty((4, 4), np.float32))
        assert lists[5].max() == 0
    sizes = np.zeros(3, np.int64)
    hs = np.empty((3, 5), np.float32)
    hr = np.empty((3, 5), np.int64)
    cand = np.array([[0, 3, 99, -5], [2, 2, 1, 0], [9, 1, 1, 1]], np.int64)
    sizes[:] = 0
    LK.rescore_candidates(Q, E, np.array([0, 1, 2, 30], np.int64), cand, np.array([4, 4, 100], np.int64), 5, hs, hr, sizes)
    assert sizes[0] == 1  # position 3 maps to a missing row, 99 and -5 are out of range
    out = np.full((1, 3), -1, np.int64)
    LK.quota_merge(np.array([[[5, 70, -3, 1]]], np.int64), np.array([[3]], np.int64), 3, 6, out)
    np.testing.assert_array_equal(out, [[5, 1, -1]])


def test_route_opens_the_fewest_best_clusters_reaching_the_budget():
    """Against a sort-based reference: per row the opened set is the best-first prefix
    (score desc, cluster id asc) of the visible clusters with as few clusters as reach the
    budget (a small first heap, so that the rescans are exercised)."""
    from gsu.retrieval import _lifelong_kernels as LK

    rng = np.random.default_rng(12)
    T, C = 60, 300
    Sc = np.round(rng.standard_normal((T, C)), 1).astype(np.float32)  # many ties
    counts = rng.integers(1, 50, C).astype(np.int64)
    first = rng.integers(0, 500, C).astype(np.int64)
    last = first + rng.integers(0, 500, C)
    cuts = rng.integers(0, 1200, T).astype(np.int64)
    for budget, min_probe in ((0.0, 1), (300.0, 1), (300.0, 20), (1e9, 1)):
        optr = np.empty(T + 1, np.int64)
        ocl = np.empty(T * C, np.int32)
        LK.route(Sc, counts, first, last, cuts, budget, min_probe, 4, optr, ocl)
        for t in range(T):
            got = ocl[optr[t] : optr[t + 1]]
            vis = np.flatnonzero(first < cuts[t])
            w = np.where(last[vis] < cuts[t], counts[vis], counts[vis] * (cuts[t] - first[vis]) / (last[vis] + 1 - first[vis]))
            o = np.argsort(-Sc[t, vis], kind="stable")
            acc = np.cumsum(w[o])
            need = np.flatnonzero((acc >= budget) & (np.arange(1, vis.size + 1) >= min_probe))
            n_ref = int(need[0]) + 1 if need.size else vis.size
            assert got.size == n_ref and np.unique(got).size == got.size and np.all(first[got] < cuts[t])
            if n_ref:
                thr = Sc[t, vis[o[n_ref - 1]]]
                assert Sc[t, got].min() == thr and np.all(Sc[t, np.setdiff1d(vis, got)] <= thr)


def test_readme_lifelong_example_runs(tmp_path, monkeypatch, capsys):
    import re
    import runpy
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if b.startswith("# Lifelong sequences")]
    assert len(blocks) == 1
    script = tmp_path / "lifelong_example.py"
    script.write_text(blocks[0])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    cov = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(single query|multi-interest)\s+covers ([0-9.]+)", out, flags=re.M)}
    assert cov["multi-interest"] > cov["single query"]
    assert re.search(r"^Clustered\s+c = \S+\s+recall@100 0\.(9|8)", out, flags=re.M)
    assert (tmp_path / "lifelong.gsu").exists()


def test_bench_planted_part_writes_records(tmp_path, monkeypatch):
    """The ``planted`` part of ``gsu bench gsu`` (quick sizes) writes its records into the
    named JSON-lines file; multi-interest covers more planted interests than one query."""
    import json

    from gsu.bench import gsu_bench

    monkeypatch.setenv("GSU_BENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="parts"):
        gsu_bench.run(out_dir=tmp_path, quick=True, parts=("nope",))
    assert gsu_bench.main(["--quick", "--parts", "planted", "--out", str(tmp_path), "--jsonl", "ll.jsonl"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "ll.jsonl").read_text().splitlines()]
    assert recs and all(r["kind"] == "planted" for r in recs)
    by = {(r["setting"], r["method"]): r for r in recs}
    assert by[("facet targets", "multi-interest")]["interest_coverage"] > by[("facet targets", "exact (single query)")]["interest_coverage"]
    assert by[("user level", "multi-interest")]["interest_coverage"] > by[("user level", "user mean (single query)")]["interest_coverage"]
    assert not (tmp_path / "gsu.jsonl").exists()


def test_group_lists_keep_the_best_positions_under_ties_and_repeats():
    """score_clusters' group lists against a sort of every visible position: items repeated
    1-6 times, scores on a coarse grid (ties across items), every cut, k from 1 to 9, one or
    two clusters per target in either order (single offers and merged batches alike)."""
    from gsu.retrieval import _lifelong_kernels as LK

    rng = np.random.default_rng(21)
    for trial in range(40):
        G = int(rng.integers(1, 14))
        sizes_g = rng.integers(1, 7, G)
        grp_ptr = np.concatenate(([0], np.cumsum(sizes_g))).astype(np.int64)
        L = int(grp_ptr[-1])
        pos = np.empty(L, np.int64)  # each group's positions ascending, groups interleaved in time
        perm = rng.permutation(L)
        for g in range(G):
            pos[grp_ptr[g] : grp_ptr[g + 1]] = np.sort(perm[grp_ptr[g] : grp_ptr[g + 1]])
        E = np.round(rng.standard_normal((G, 2)), 0).astype(np.float32)  # few distinct scores
        split = int(rng.integers(0, G + 1))
        cl_ptr = np.array([0, split, G], np.int64)
        cl_last = np.array([pos[: grp_ptr[split]].max(initial=-1), pos[grp_ptr[split] :].max(initial=-1)], np.int64)
        T = 6
        Q = np.round(rng.standard_normal((T, 2)), 0).astype(np.float32)
        cuts = rng.integers(0, L + 2, T).astype(np.int64)
        k = int(rng.integers(1, 10))
        lists = [np.empty((T, k + 2), t) for t in (np.float32, np.int64, np.int64)] + [np.zeros(T, np.int64) for _ in range(3)]
        scratch = np.empty((G, 2), np.float32)
        order = [(0, 1), (1, 0)][trial % 2]
        for c in order:  # one cluster per call: every target opens both, in this order
            cl_tptr = np.array([0, T, T] if c == 0 else [0, 0, T], np.int64)
            LK.score_clusters(E, np.arange(G, dtype=np.int64), cl_ptr, grp_ptr, cl_last, pos, cl_tptr, np.arange(T, dtype=np.int32), Q,
                              cuts, k, *lists, scratch)
        out = np.full((T, k), -1, np.int64)
        out_s = np.full((T, k), -np.inf, np.float32)
        LK.groups_finish(*lists, pos, out, out_s)
        item_of = np.repeat(np.arange(G), sizes_g)
        for t in range(T):
            vis = np.flatnonzero(pos < cuts[t])
            sc = (E[item_of[vis]] @ Q[t]).astype(np.float32)
            o = np.lexsort((-pos[vis], -sc))[:k]
            ref = pos[vis][o]
            np.testing.assert_array_equal(out[t, : ref.size], ref)
            np.testing.assert_array_equal(out_s[t, : ref.size], sc[o])
            assert np.all(out[t, ref.size :] == -1)
