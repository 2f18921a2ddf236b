"""Filtered ANN: HNSWIndex, IVFIndex, FilteredIndex against the exact twin FlatIndex.

Invariants checked for every index, route and filter shape: never an excluded id,
never fewer than min(k, allowed) results, unique ids, scores equal to the recomputed
inner products, -1/-inf padding; recall against FlatIndex; save/load (+ mmap).
"""

from __future__ import annotations

import dataclasses
import math

import faiss
import numpy as np
import pytest

from gsu.errors import IndexFileError
from gsu.index import Filter, FilteredIndex, FlatIndex, HNSWIndex, IVFIndex, SearchResult, load
from gsu.index import _filter_kernels as fk
from gsu.index import _l2
from gsu.index.filtered import ROUTES, PlannerSettings
from gsu.index.hnsw import faiss_selector

K = 10
N, D, NQ = 3000, 16, 30


@pytest.fixture(scope="module")
def data():
    """3,000 × 16 clustered unit vectors (24 clusters), 30 queries, external ids 7 + 3·row."""
    rng = np.random.default_rng(42)
    centers = rng.standard_normal((24, D)).astype(np.float32)
    lab = rng.integers(0, 24, N)
    x = centers[lab] + 0.5 * rng.standard_normal((N, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lq = rng.integers(0, 24, NQ)
    q = centers[lq] + 0.5 * rng.standard_normal((NQ, D)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = 7 + 3 * np.arange(N, dtype=np.int64)
    return x.astype(np.float32), q.astype(np.float32), ids, lab, centers


@pytest.fixture(scope="module")
def indexes(data):
    x, _, ids, _, _ = data
    flat = FlatIndex(D, "ip")
    flat.add(x, ids)
    hnsw = HNSWIndex(D, "ip", M=16, ef_construction=100)
    hnsw.add(x, ids)
    ivf = IVFIndex(D, "ip", nlist=32, seed=0)
    ivf.add(x, ids)
    # planned with the fixed defaults: a calibrated planner depends on this machine's timings,
    # and these tests assert routes (calibration has its own tests below)
    fi = FilteredIndex(D, "ip", M=16, ef_construction=100, nlist=32, seed=0, calibrate=False)
    fi.add(x[:2000], ids[:2000])  # two adds: the second is assigned to the trained lists
    fi.add(x[2000:], ids[2000:])
    return {"flat": flat, "hnsw": hnsw, "ivf": ivf, "filtered": fi}


def _allowed_sets(data, kind: str, sel: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per-query allowed *external ids*: random subsets, or query-correlated ones."""
    x, q, ids, lab, centers = data
    m = max(1, int(round(sel * N)))
    out = []
    for i in range(NQ):
        if kind == "random":
            rows = rng.choice(N, m, replace=False)
        else:  # 80 % from the clusters nearest the query, topped up at random
            order = np.argsort(-(centers @ q[i]))
            pool = np.concatenate([np.flatnonzero(lab == c) for c in order[:4]])
            near = rng.choice(pool, min(int(0.8 * m), pool.size), replace=False)
            rest = np.setdiff1d(np.arange(N), near)
            rows = np.concatenate([near, rng.choice(rest, m - near.size, replace=False)])
        out.append(np.sort(ids[rows]))
    return out


def _check(res: SearchResult, truth: SearchResult, allowed: list[np.ndarray] | None, x, ids, q, k: int) -> float:
    """Assert the invariants; return recall@k (tie-tolerant on scores)."""
    assert res.ids.shape == (q.shape[0], k) and res.ids.dtype == np.int64
    assert res.scores.shape == (q.shape[0], k) and res.scores.dtype == np.float32
    assert res.counts.dtype == np.int64
    row_of = {int(e): r for r, e in enumerate(ids)}
    hits, total = 0, 0
    for i in range(q.shape[0]):
        c = int(res.counts[i])
        expect = int(truth.counts[i])  # = min(k, number allowed)
        assert c == expect, f"query {i}: {c} results, {expect} items pass the filter (k={k})"
        row = res.ids[i]
        assert np.all(row[:c] >= 0) and np.all(row[c:] == -1)
        assert np.all(np.isneginf(res.scores[i, c:]))
        assert np.unique(row[:c]).size == c
        if allowed is not None:
            assert np.all(np.isin(row[:c], allowed[i])), f"query {i}: an excluded id was returned"
        rows = np.array([row_of[int(e)] for e in row[:c]], dtype=np.int64)
        np.testing.assert_allclose(res.scores[i, :c], x[rows] @ q[i], rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(res.scores[i, :c]) <= 1e-6), "scores must be sorted best first"
        if expect:
            kth = truth.scores[i, expect - 1]
            hits += int(np.sum(res.scores[i, :c] >= kth - 1e-4))
            total += expect
    return hits / total if total else 1.0


def _search(name: str, idx, q, k, f, route: str | None = None):
    if name == "hnsw":
        return idx.search(q, k, filter=f, ef=128)
    if name == "ivf":
        return idx.search(q, k, filter=f, nprobe=8)
    if route is not None:
        return idx.search(q, k, filter=f, route=route)
    return idx.search(q, k, filter=f)


CASES = [("hnsw", None), ("ivf", None), ("filtered", None), ("filtered", "exact"), ("filtered", "ivf"), ("filtered", "hnsw")]


@pytest.mark.parametrize("name,route", CASES)
@pytest.mark.parametrize("kind", ["random", "correlated"])
@pytest.mark.parametrize("sel", [0.01, 0.1, 0.5])
def test_per_query_filters_against_flat(indexes, data, name, route, kind, sel):
    x, q, ids, _, _ = data
    allowed = _allowed_sets(data, kind, sel, np.random.default_rng(int(sel * 1000) + len(kind)))
    f = Filter.per_query(allowed)
    truth = indexes["flat"].search(q, K, filter=f)
    res = _search(name, indexes[name], q, K, f, route)
    rec = _check(res, truth, allowed, x, ids, q, K)
    floor = 1.0 if route == "exact" else 0.85
    assert rec >= floor, f"{name}/{route} {kind} {sel}: recall {rec:.3f}"


@pytest.mark.parametrize("name,route", CASES)
@pytest.mark.parametrize("m", [0, 1, K - 1, K, 40])
def test_tiny_filters_shared_and_per_query(indexes, data, name, route, m):
    """Filters allowing 0, 1, k-1, k and a few items: exactly min(k, m) results."""
    x, q, ids, _, _ = data
    rng = np.random.default_rng(m)
    shared = np.sort(rng.choice(ids, m, replace=False))
    per_q = [np.sort(rng.choice(ids, m, replace=False)) for _ in range(NQ)]
    for f, allowed in ((Filter.from_ids(shared), [shared] * NQ), (Filter.per_query(per_q), per_q)):
        truth = indexes["flat"].search(q, K, filter=f)
        res = _search(name, indexes[name], q, K, f, route)
        rec = _check(res, truth, allowed, x, ids, q, K)
        # the planner's exact route (and the exact fallback) makes tiny filters exact
        assert rec == 1.0 or (route in ("ivf", "hnsw") or name in ("hnsw", "ivf")) and rec >= 0.85


@pytest.mark.parametrize("name,route", CASES)
def test_unfiltered_and_shared_filters(indexes, data, name, route):
    x, q, ids, _, _ = data
    rng = np.random.default_rng(3)
    filters = [
        (None, None),
        (Filter.from_ids(rng.choice(ids, 300, replace=False)), None),
        (Filter.range(int(ids[100]), int(ids[1100])), None),  # a contiguous id range → IDSelectorRange
        (Filter.from_mask(np.isin(np.arange(ids[-1] + 1), ids[::3])), None),
        (~Filter.from_ids(ids[:2900]), None),  # "not": only the last 100 items
    ]
    for f, _ in filters:
        truth = indexes["flat"].search(q, K, filter=f)
        allowed_ids = None if f is None else [ids[Filter.coerce(f).allows(ids)]] * NQ
        res = _search(name, indexes[name], q, K, f, route)
        rec = _check(res, truth, allowed_ids, x, ids, q, K)
        # plain HNSW + selector (no planner) is the known weak spot at 3 % selectivity
        floor = 1.0 if route == "exact" else (0.7 if name == "hnsw" else 0.85)
        assert rec >= floor, f"{name}/{route} {f!r}: recall {rec:.3f}"


def test_filtered_default_recall_and_effort(indexes, data):
    """Default budgets: recall ≥ 0.95 at 1/10/50 % selectivity; more effort never loses recall here."""
    x, q, ids, _, _ = data
    fi = indexes["filtered"]
    for sel in (0.01, 0.1, 0.5):
        for kind in ("random", "correlated"):
            allowed = _allowed_sets(data, kind, sel, np.random.default_rng(11))
            f = Filter.per_query(allowed)
            truth = indexes["flat"].search(q, K, filter=f)
            # a 3,000-item index is all below the exact threshold: lower it so IVF and HNSW plan
            r1 = _check(fi.search(q, K, filter=f, exact_max_rows=25), truth, allowed, x, ids, q, K)
            r4 = _check(fi.search(q, K, filter=f, exact_max_rows=25, effort=4.0), truth, allowed, x, ids, q, K)
            assert r1 >= 0.95, f"{kind} {sel}: default recall {r1:.3f}"
            assert r4 >= r1 - 0.02


def test_planner_routes(indexes, data):
    """The planner's rules with explicit settings (the calibrated ones depend on the machine)."""
    fi = indexes["filtered"]
    _, _, ids, _, _ = data
    assert ROUTES == ("exact", "ivf", "hnsw")
    st = {"exact_max_rows": 2200, "exact_run_factor": 1.4, "hnsw_min_selectivity": 0.4}
    # 3,000 items: all below exact_max_rows → exact; with it lowered to 100:
    # 20 allowed → exact, 600 (20 %) → IVF, all → HNSW
    assert fi.plan(2, K, filter=Filter.from_ids(ids[:20]), **st).tolist() == [0, 0]
    assert fi.plan(1, K, filter=None, **st).tolist() == [0]
    st["exact_max_rows"] = 100
    assert fi.plan(1, K, filter=Filter.from_ids(ids[:600]), **st).tolist() == [1]
    assert fi.plan(1, K, filter=None, **st).tolist() == [2]
    pq = Filter.per_query([ids[:5], ids[:600], ids])
    assert fi.plan(3, K, filter=pq, **st).tolist() == [0, 1, 2]
    # effort scales the exact threshold
    assert fi.plan(1, K, filter=Filter.from_ids(ids[:600]), effort=2.0, **dict(st, exact_max_rows=400)).tolist() == [0]
    # one contiguous run of rows gets exact_run_factor (1.4) times the limit; scattered rows do not
    st["exact_max_rows"] = 500
    scattered = ids[::5]  # 600 rows, every fifth
    assert fi.plan(1, K, filter=Filter.from_ids(ids[:600]), **st).tolist() == [0]
    assert fi.plan(1, K, filter=Filter.from_ids(scattered), **st).tolist() == [1]
    assert fi.plan(2, K, filter=Filter.per_query([ids[:600], scattered]), **st).tolist() == [0, 1]
    assert fi.plan(1, K, filter=Filter.from_ids(ids[:800]), **st).tolist() == [1]  # 800 > 700
    # a range of ids is a run of rows too (ids are 7 + 3·row here)
    assert fi.plan(1, K, filter=Filter.range(int(ids[0]), int(ids[600])), **st).tolist() == [0]
    assert fi.plan(1, K, filter=Filter.range(int(ids[0]), int(ids[800])), **st).tolist() == [1]
    with pytest.raises(TypeError, match="planner settings"):
        fi.plan(1, K, filter=None, nprobe=3)


def test_ivf_skips_lists_without_allowed_rows(indexes, data):
    ivf = indexes["ivf"]
    _, q, ids, _, _ = data
    lists = ivf.row_list
    big = int(np.argmax(ivf.list_sizes))
    allowed_rows = np.flatnonzero(lists == big)
    f = Filter.from_ids(ids[allowed_rows])
    cf = f.compile(ivf.idmap, NQ)
    out_r = np.full((NQ, K), -1, np.int64)
    out_s = np.full((NQ, K), -np.inf, np.float32)
    counts = np.zeros(NQ, np.int64)
    scored = np.zeros(NQ, np.int64)
    ivf.search_compiled(q, K, cf, np.arange(NQ, dtype=np.int64), out_r, out_s, counts, target=K, min_lists=5, scored=scored)
    # only one list holds allowed rows: it alone is opened, whatever nprobe asks
    assert np.all(scored == allowed_rows.size)
    assert np.all(counts == min(K, allowed_rows.size))
    assert np.all(np.isin(out_r[out_r >= 0], allowed_rows))


@pytest.mark.parametrize("d", [24, 80])  # float32 rows; 8-bit codes first (d >= 64)
@pytest.mark.parametrize("nlist", [4, 24])  # lists longer / shorter than a scoring chunk
def test_ivf_opening_every_list_scores_every_allowed_row_in_chunks(d, nlist):
    # the IVF kernel collects the opened lists' allowed rows and scores them a chunk at a
    # time (fk._CHUNK rows, or a longest list): opening every list must give the exact
    # answer for every filter form, in either layout (lists_copy: positions collected)
    n = 6_000
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((40, d)).astype(np.float32)
    x = (centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    q = (centers[rng.integers(0, 40, 6)] + 0.5 * rng.standard_normal((6, d))).astype(np.float32)
    assert n > 2 * fk._CHUNK and (n // nlist > fk._CHUNK) == (nlist == 4)
    one = FilteredIndex(d, "ip", M=8, ef_construction=40, nlist=nlist, calibrate=False, seed=2)
    two = FilteredIndex(d, "ip", M=8, ef_construction=40, nlist=nlist, calibrate=False, seed=2, lists_copy=True)
    one.add(x)
    two.add(x)
    filters = [None,
               Filter(np.sort(rng.choice(n, n // 2, replace=False))),  # dense: the lists scanned against a bitmap
               Filter(np.sort(rng.choice(n, 90, replace=False))),  # sparse: grouped by list
               Filter.range(700, 5_100),  # a run: spans of positions
               Filter.per_query([np.sort(rng.choice(n, m, replace=False)) for m in (40, 3_000, 5_900, 1_100, 2_500, 300)])]
    every = dict(route="ivf", ivf_candidates=1e9, ivf_min_lists=1e9)
    for f in filters:
        want = one.search(q, K, filter=f, route="exact")
        for idx in (one, two):
            got = idx.search(q, K, filter=f, **every)
            np.testing.assert_array_equal(got.ids, want.ids, err_msg=f"{f!r} lists_copy={idx.lists_copy}")
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        # a partial probe: both layouts score the same rows in the same order
        part = dict(route="ivf", ivf_candidates=2 * K, ivf_min_lists=2)
        a, b = one.search(q, K, filter=f, **part), two.search(q, K, filter=f, **part)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_faiss_selector_shapes():
    n = 100_000
    sel, keep = faiss_selector(np.arange(10, 500, dtype=np.int64), n)
    assert isinstance(sel, faiss.IDSelectorRange) and sel.is_member(10) and sel.is_member(499) and not sel.is_member(500)
    sel, keep = faiss_selector(np.array([3, 77, 90_000], dtype=np.int64), n)
    assert isinstance(sel, faiss.IDSelectorBatch) and sel.is_member(77) and not sel.is_member(78)
    rows = np.sort(np.random.default_rng(0).choice(n, 5000, replace=False)).astype(np.int64)
    sel, keep = faiss_selector(rows, n)
    assert isinstance(sel, faiss.IDSelectorBitmap)
    member = np.array([sel.is_member(int(i)) for i in range(0, n, 7)])
    np.testing.assert_array_equal(member, np.isin(np.arange(0, n, 7), rows))


@pytest.mark.parametrize("name", ["hnsw", "ivf", "filtered"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(indexes, data, tmp_path, name, mmap):
    x, q, ids, _, _ = data
    idx = indexes[name]
    path = tmp_path / f"{name}.gsu"
    idx.save(path)
    back = load(path, mmap=mmap)
    assert type(back) is type(idx) and back.ntotal == idx.ntotal
    np.testing.assert_array_equal(back.ids, idx.ids)
    f = Filter.per_query(_allowed_sets(data, "random", 0.1, np.random.default_rng(5)))
    a = _search(name, idx, q, K, f)
    b = _search(name, back, q, K, f)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert type(idx).load(path).ntotal == N
    # a changed byte is caught, naming the file
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.gsu"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="bad.gsu"):
        load(bad)


def test_cosine_metric_matches_flat(data):
    x, q, ids, _, _ = data
    xs = x * np.linspace(0.5, 2.0, N, dtype=np.float32)[:, None]  # unnormalised input
    flat = FlatIndex(D, "cosine")
    flat.add(xs)
    fi = FilteredIndex(D, "cosine", M=16, ef_construction=100, nlist=16, calibrate=False)
    fi.add(xs)
    allowed = [np.sort(np.random.default_rng(i).choice(N, 200, replace=False)) for i in range(NQ)]
    f = Filter.per_query(allowed)
    t = flat.search(q * 3.0, K, filter=f)
    r = fi.search(q * 3.0, K, filter=f)
    xn = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    assert _check(r, t, allowed, xn, np.arange(N), q, K) == 1.0  # 200 allowed → exact route


def test_bad_input(indexes, data):
    x, q, ids, _, _ = data
    fi = indexes["filtered"]
    with pytest.raises(ValueError, match="dimension"):
        fi.search(q[:, :5], K)
    with pytest.raises(ValueError, match="k"):
        fi.search(q, 0)
    with pytest.raises(TypeError, match="k"):
        fi.search(q, 2.5)
    with pytest.raises(ValueError, match="effort"):
        fi.search(q, K, effort=0)
    with pytest.raises(ValueError, match="route"):
        fi.search(q, K, route="graph")
    with pytest.raises(ValueError, match="hnsw_ef"):
        fi.search(q, K, hnsw_ef=-1)
    with pytest.raises(ValueError, match="NaN"):
        fi.search(np.full((2, D), np.nan, np.float32), K)
    with pytest.raises(ValueError, match="per-query"):
        fi.search(q, K, filter=Filter.per_query([ids[:5]] * 3))
    with pytest.raises(ValueError, match="already in the index"):
        fi.add(x[:2], ids[:2])
    with pytest.raises(ValueError, match="nlist=64"):
        IVFIndex(D, nlist=64).add(x[:10])
    with pytest.raises(ValueError, match="metric"):
        HNSWIndex(D, "hamming")  # ip, cosine and l2 exist
    with pytest.raises(TypeError, match="M"):
        HNSWIndex(D, M=2.5)
    with pytest.raises(ValueError, match="nprobe"):
        indexes["ivf"].search(q, K, nprobe=0)


def test_empty_index_and_single_query(data):
    x, q, _, _, _ = data
    for idx in (HNSWIndex(D), IVFIndex(D, nlist=4), FilteredIndex(D, nlist=4)):
        r = idx.search(q, K)
        assert r.counts.tolist() == [0] * NQ and np.all(r.ids == -1)
    fi = FilteredIndex(D, M=8, nlist=4)
    fi.add(x[:200])
    r = fi.search(q[0], 5, filter=np.arange(50, 60))  # 1-D query = a batch of one; id array filter
    assert r.ids.shape == (1, 5) and np.all((r.ids >= 50) & (r.ids < 60))


@pytest.mark.parametrize("kind", ["random", "correlated"])
def test_shared_filter_local_selectivity_planning(indexes, data, kind):
    """One query per call with its own shared filter: the planner walks the graph where the
    filter is dense near the query and falls back to IVF where it is not; invariants and
    recall hold either way."""
    x, q, ids, _, _ = data
    fi = indexes["filtered"]
    allowed = _allowed_sets(data, kind, 0.2, np.random.default_rng(21))
    truth = indexes["flat"].search(q, K, filter=Filter.per_query(allowed))
    parts = [fi.search(q[i], K, filter=Filter.from_ids(allowed[i]), exact_max_rows=25) for i in range(NQ)]
    res = SearchResult.concat(parts)
    rec = _check(res, truth, allowed, x, ids, q, K)
    assert rec >= 0.95, f"{kind}: recall {rec:.3f}"
    # the graph walk's density probe: a correlated set is dense where the query lands, so the
    # walk goes ahead; a random 20 % set is not, so the walk gives up (count -1) for IVF
    h = fi.hnsw
    gave_up = 0
    for i in range(NQ):
        cf = Filter.from_ids(allowed[i]).compile(fi.idmap, 1)
        r, s, c = np.full((1, K), -7, np.int64), np.zeros((1, K), np.float32), np.zeros(1, np.int64)
        h.beam_search(q[i : i + 1], K, cf, np.zeros(1, np.int64), r, s, c, 32, probe=0.4)
        if c[0] < 0:
            gave_up += 1
            assert np.all(r == -7)  # nothing written
        else:
            assert c[0] == K and np.isin(r, np.flatnonzero(np.isin(fi.ids, allowed[i]))).all()
    if kind == "correlated":
        assert gave_up <= NQ // 4, gave_up
    else:
        assert gave_up >= 3 * NQ // 4, gave_up
    # the probe's threshold is a planner setting: above 1 no walk is tried (IVF answers),
    # 0 makes none give up (the graph walk answers), each exactly as the forced route
    for i in range(4):
        f = Filter.from_ids(allowed[i])
        for share, route in ((1.01, "ivf"), (0.0, "hnsw")):
            a = fi.search(q[i], K, filter=f, exact_max_rows=25, hnsw_min_selectivity=0.99, probe_min_selectivity=0.0,
                          probe_min_share=share)
            b = fi.search(q[i], K, filter=f, route=route)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
    # explain() reports the route each query takes, and search answers exactly as that route
    from gsu.index.filtered import ROUTES, PlannerSettings

    taken: dict[str, int] = {}
    planned = {"exact_max_rows": 25, "hnsw_min_selectivity": 0.4, "probe_min_selectivity": 0.0, "probe_min_share": 0.4}
    for i in range(NQ):
        f = Filter.from_ids(allowed[i])
        route = fi.explain(q[i], K, filter=f, **planned).route_names()[0]
        taken[route] = taken.get(route, 0) + 1
        a = fi.search(q[i], K, filter=f, **planned)
        b = fi.search(q[i], K, filter=f, route=route)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert taken.get("hnsw" if kind == "correlated" else "ivf", 0) >= 3 * NQ // 4, taken
    with pytest.raises(TypeError, match="planner settings"):
        fi.explain(q[0], K, filter=Filter.from_ids(allowed[0]), nprobe=3)
    # with no probe the walk always answers
    cf = Filter.from_ids(allowed[0]).compile(fi.idmap, 1)
    c = np.zeros(1, np.int64)
    h.beam_search(q[:1], K, cf, np.zeros(1, np.int64), np.empty((1, K), np.int64), np.empty((1, K), np.float32), c, 32)
    assert c[0] == K


@pytest.mark.parametrize("noise", [1e-2, 1e-6, 0.0])  # well separated, near ties below half precision, exact ties
def test_half_precision_first_pass_gives_the_float32_answer(noise):
    """The gather kernels' half-precision option scores a half-precision copy first and
    rescores the rows within the error bound: ids and scores equal the float32-only
    kernel's, bit for bit, also when near-ties are far below half precision."""
    from gsu.index import _filter_kernels as fk

    _half_copy = fk.half_copy
    rng = np.random.default_rng(4)
    d, n, nq = 128, 4000, 30
    base = rng.standard_normal((40, d)).astype(np.float32)
    X = (base[rng.integers(0, 40, n)] + noise * rng.standard_normal((n, d))).astype(np.float32)
    Q = rng.standard_normal((nq, d)).astype(np.float32)
    half = _half_copy(X)
    assert half is not False and half[1] > 0
    sets = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for m in rng.integers(1, 3000, nq)]
    starts = np.cumsum([0] + [a.shape[0] for a in sets[:-1]]).astype(np.int64)
    ends = starts + np.array([a.shape[0] for a in sets], np.int64)
    rows = np.concatenate(sets)
    which = np.arange(nq, dtype=np.int64)
    out = []
    for h in (None, half):
        r = np.full((nq, K), -1, np.int64)
        s = np.full((nq, K), -np.inf, np.float32)
        c = np.zeros(nq, np.int64)
        fk.gather_topk_ip_sel(Q, X, which, starts, ends, rows, K, r, s, c, h)
        out.append((r, s, c))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    assert _half_copy(np.full((3, d), 1e6, np.float32)) is False  # beyond half precision: float32 only


@pytest.mark.parametrize("noise,scale", [(1e-2, 1.0), (1e-6, 1.0), (0.0, 1.0), (1e-2, 1e4), (1e-3, 1e-4)])
def test_sq8_first_pass_gives_the_float32_answer(noise, scale):
    """The exact route's 8-bit first pass (the graph walk's codes) rescores every row within
    its error bound: ids and scores equal the float32-only kernel's, bit for bit, with
    well-separated rows, near-ties far below the code step, exact ties, and large or tiny
    magnitudes; and the shared-filter kernel agrees with the per-query one."""
    from gsu.index import _filter_kernels as fk
    from gsu.index import _graph_kernels as gk

    rng = np.random.default_rng(8)
    for d in (64, 200):
        n, nq = 4000, 30
        base = rng.standard_normal((40, d)).astype(np.float32)
        X = (scale * (base[rng.integers(0, 40, n)] + noise * rng.standard_normal((n, d)))).astype(np.float32)
        Q = rng.standard_normal((nq, d)).astype(np.float32)
        codes, step = gk.sq8_encode(X)
        sq8 = (codes, step, float(fk.max_row_norm(X)))
        sets = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for m in rng.integers(1, 3000, nq)]
        starts = np.cumsum([0] + [a.shape[0] for a in sets[:-1]]).astype(np.int64)
        ends = starts + np.array([a.shape[0] for a in sets], np.int64)
        rows = np.concatenate(sets)
        which = np.arange(nq, dtype=np.int64)
        out = []
        for a in (None, sq8):
            r = np.full((nq, K), -1, np.int64)
            s = np.full((nq, K), -np.inf, np.float32)
            c = np.zeros(nq, np.int64)
            fk.gather_topk_ip_sel(Q, X, which, starts, ends, rows, K, r, s, c, None, a)
            out.append((r, s, c))
        for a, b in zip(*out):
            np.testing.assert_array_equal(a, b)
        r, s, c = (np.empty((nq, K), np.int64), np.empty((nq, K), np.float32), np.empty(nq, np.int64))
        fk.gather_topk_ip_shared(Q, X, sets[0], K, r, s, c, None, sq8)
        r0, s0, c0 = (np.empty((nq, K), np.int64), np.empty((nq, K), np.float32), np.empty(nq, np.int64))
        fk.gather_topk_ip_shared(Q, X, sets[0], K, r0, s0, c0)
        np.testing.assert_array_equal(r, r0)
        np.testing.assert_array_equal(s, s0)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_filtered_index_reads_the_codes_first_from_dim_64(metric):
    """From SQ8_MIN_DIM the exact route reads the walk's codes first and answers as the exact
    index does; an add refreshes the codes and the norm bound it uses."""
    from gsu.index.filtered import SQ8_MIN_DIM

    rng = np.random.default_rng(5)
    d = SQ8_MIN_DIM
    x = rng.standard_normal((3000, d)).astype(np.float32)
    q = rng.standard_normal((8, d)).astype(np.float32)
    fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=16, calibrate=False)
    fi.add(x)
    half, sq8 = fi._approx()
    assert half is None and sq8 is not None and sq8[0].shape == (3000, d + (metric == "l2"))
    flat = FlatIndex(d, metric)
    flat.add(x)
    allowed = [np.sort(rng.choice(3000, 500, replace=False)) for _ in range(8)]
    f = Filter.per_query(allowed)
    a, b = fi.search(q, K, filter=f, route="exact"), flat.search(q, K, filter=f)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
    big = 50 * rng.standard_normal((10, d)).astype(np.float32)  # beyond the old codes' range and norm
    fi.add(big)
    flat.add(big)
    assert fi._approx()[1][0].shape[0] == 3010  # rebuilt after add
    for i in range(8):
        one = np.concatenate([allowed[i], np.arange(3000, 3010)])
        a, b = fi.search(q[i], K, filter=one, route="exact"), flat.search(q[i], K, filter=one)
        np.testing.assert_array_equal(a.ids, b.ids)
    assert FilteredIndex(32, "ip", calibrate=False)._approx() == (None, None)


def test_the_codes_norm_bound_is_saved_and_checked_on_load(tmp_path):
    """The largest row norm the codes' error bound uses is saved with the index (a mapped
    open does not rescan the rows for it); a bad value in the file is refused."""
    from gsu.errors import FieldError

    rng = np.random.default_rng(6)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    fi = FilteredIndex(64, "ip", M=8, ef_construction=40, nlist=8, calibrate=False)
    fi.add(x)
    want = float(np.sqrt((x.astype(np.float64) ** 2).sum(1).max()))
    p = tmp_path / "f.gsu"
    fi.save(p)
    back = load(p, mmap=True)
    assert back.__dict__["_nmax"] == (500, pytest.approx(want, rel=1e-12))
    np.testing.assert_array_equal(back.search(x[:3], K, filter=np.arange(0, 500, 7), route="exact").ids,
                                  fi.search(x[:3], K, filter=np.arange(0, 500, 7), route="exact").ids)
    config, arrays = fi._state()
    for bad in (-1.0, float("nan"), "2", True):
        with pytest.raises(FieldError, match="row_norm_max"):
            FilteredIndex._from_state({**config, "row_norm_max": bad}, arrays)


def test_graph_beam_bitmap_and_binary_search_membership_agree(indexes, data):
    """The HNSW beam kernel tests membership by bitmap (sparse filters) or by binary
    search in the sorted rows (dense ones): the two give the same search, and only allowed
    rows, with exact float32 scores (the 8-bit codes only steer the walk)."""
    from gsu.index import _graph_kernels as gk

    x, q, ids, _, _ = data
    h = indexes["hnsw"]
    nbr, off, cum, ep, maxl = h._graph()
    X = h.vectors
    C, step = h._codes()
    n = X.shape[0]
    rng = np.random.default_rng(8)
    vis, touched = np.zeros((n + 63) >> 6, np.uint64), np.empty(n, np.int32)
    cs, cr = np.empty(8192, np.float32), np.empty(8192, np.int64)
    ts, tr = np.empty(64, np.float32), np.empty(64, np.int64)
    buf = np.empty(int(cum[1] - cum[0]), np.int64)
    qv = h.prep_queries(q)
    qp = qv * step
    for i, m in enumerate((1, K - 1, 300, 1500, n)):
        rows = np.sort(rng.choice(n, m, replace=False)).astype(np.int64)
        bm = np.zeros((n + 63) >> 6, np.uint64)
        for r in rows:
            bm[r >> 6] |= np.uint64(1) << np.uint64(r & 63)
        out = []
        # extra entry points (rows of the best IVF lists in the index; here: any rows, a
        # repeat, the descent's own node and -1 padding) change where the walk starts, not
        # what it may return
        seeds = np.array([[rows[0], rows[-1], rows[0], ep, -1]], np.int64)
        for sd in (np.zeros((0, 0), np.int64), seeds):
            for mode in (gk.BITMAP, gk.SORTED):
                s, r = np.empty(K, np.float32), np.empty(K, np.int64)
                c = gk._beam_one(qv[i], qp[i], C, X, nbr, off, cum, ep, maxl, mode, bm, rows, 0, m, 48, K, vis, touched,
                                 cs, cr, ts, tr, buf, s, r, 0.0, sd, 0)
                assert not vis.any()  # the visited bitset is cleared on return
                out.append((c, r.copy(), s.copy()))
            assert out[-2][0] == out[-1][0] == min(m, K)
            np.testing.assert_array_equal(out[-2][1], out[-1][1])
        assert out[0][0] == out[1][0] == min(m, K)
        np.testing.assert_array_equal(out[0][1], out[1][1])
        np.testing.assert_array_equal(out[0][2], out[1][2])
        got = out[0][1][: out[0][0]]
        assert np.isin(got, rows).all()
        np.testing.assert_allclose(out[0][2][: out[0][0]], X[got] @ qv[i], rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(out[0][2][: out[0][0]]) <= 0)


def test_sq8_codes_reconstruct_within_half_a_step():
    from gsu.index._graph_kernels import sq8_encode

    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    x[:, 5] = 0.25  # a constant column: step 1, code 0
    codes, step = sq8_encode(x)
    assert codes.dtype == np.uint8 and codes.shape == x.shape and step.shape == (24,)
    vmin = x.min(axis=0)
    rec = vmin + step * codes.astype(np.float32)
    assert np.all(np.abs(rec - x) <= step / 2 * (1 + 1e-5) + 1e-7)
    assert step[5] == 1.0 and np.all(codes[:, 5] == 0)
    assert codes.min(axis=0)[0] == 0 and codes.max(axis=0)[0] == 255
    c0, s0 = sq8_encode(np.zeros((0, 4), np.float32))
    assert c0.shape == (0, 4) and np.all(s0 == 1)
    # the parallel kernel is the float64 formula exactly, with values on half steps (round
    # half to even) and scales far apart
    y = (rng.standard_normal((1000, 40)) * rng.uniform(1e-3, 1e3, 40)).astype(np.float32)
    y[:, 0] = np.round(y[:, 0])
    y[:, 1] = -7.0
    codes, step = sq8_encode(y)
    vmin = y.min(axis=0).astype(np.float64)
    span = y.max(axis=0).astype(np.float64) - vmin
    ref_step = np.where(span > 0, span / 255.0, 1.0)
    ref = np.clip(np.rint((y.astype(np.float64) - vmin) / ref_step), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(codes, ref)
    np.testing.assert_array_equal(step, ref_step.astype(np.float32))

# -- filter construction, fresh vs cached, calibration ------------------------------------
def test_filter_constructors_reject_ids_beyond_int64_and_bad_input():
    ok = Filter.from_ids(np.array([3, 2**63 - 1], dtype=np.uint64))
    assert ok.allows(np.array([3, 2**63 - 1], dtype=np.int64)).all()
    for bad in (np.array([2**63], dtype=np.uint64), np.array([1e20]), np.array([-1e19]), [2**64], [-(2**63) - 1]):
        with pytest.raises(ValueError, match="int64"):
            Filter.from_ids(bad)
    with pytest.raises(ValueError, match="NaN"):
        Filter.from_ids(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="integer"):
        Filter.from_ids(np.array([1.5]))
    with pytest.raises(ValueError, match="from_mask"):
        Filter.from_ids(np.array([True, False]))
    with pytest.raises(ValueError, match="1-D"):
        Filter.from_ids(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="int64"):
        Filter.from_csr([0, 1], np.array([2**63], dtype=np.uint64))
    with pytest.raises(ValueError, match="indptr"):
        Filter.from_csr([0, 3], [1, 2])
    with pytest.raises(ValueError):
        Filter.range(0, 1.5)
    assert Filter.range(-(2**70), 2**70).allows(np.array([-(2**63), 2**63 - 1])).all()  # bounds clamp to int64


def test_from_ids_sorts_dedups_and_copies():
    rng = np.random.default_rng(1)
    raw = rng.integers(-50, 500, 2000)
    f = Filter.from_ids(raw)
    np.testing.assert_array_equal(f._data, np.unique(raw))
    srt = np.unique(raw).astype(np.int64)
    g = Filter.from_ids(srt)
    srt[:] = -7  # the filter holds its own copy
    np.testing.assert_array_equal(g._data, np.unique(raw))
    dup = np.array([1, 1, 2, 5, 5, 5], np.int64)  # sorted with duplicates
    np.testing.assert_array_equal(Filter.from_ids(dup)._data, [1, 2, 5])
    assert Filter.from_ids([]).allows(np.arange(3)).sum() == 0
    from pyroaring import BitMap, BitMap64

    np.testing.assert_array_equal(Filter.from_ids(BitMap([9, 2, 4]))._data, [2, 4, 9])
    np.testing.assert_array_equal(Filter.from_ids(BitMap64([2**40, 3]))._data, [3, 2**40])
    p, ids = [0, 3, 3, 5], [9, 1, 1, 4, 2]  # unsorted, duplicates, an empty set
    c = Filter.from_csr(p, ids)
    assert len(c) == 3
    assert [c.for_query(i)._data.tolist() for i in range(3)] == [[1, 9], [], [2, 4]]


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf", "filtered"])
def test_masks_must_cover_the_index_id_space(indexes, data, name):
    x, q, ids, _, _ = data
    idx = indexes[name]
    span = int(ids[-1]) + 1  # ids are 7 + 3·row: a mask over ids 0..max
    good = np.zeros(span, bool)
    good[ids[::4]] = True
    res = _search(name, idx, q[:3], K, Filter.from_mask(good))
    assert np.isin(res.ids[res.ids >= 0], ids[::4]).all()
    for length in (span - 1, span + 1, N):
        bad = np.ones(length, bool)
        for f in (Filter.from_mask(bad), Filter.from_mask(bad) & Filter.from_ids(ids[:50]),
                  Filter.per_query([Filter.from_mask(bad)] * 3)):
            with pytest.raises(ValueError, match="mask"):
                _search(name, idx, q[:3], K, f)


def test_mask_on_default_ids_must_have_length_n():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    flat = FlatIndex(8)
    flat.add(x)
    m = np.zeros(500, bool)
    m[::7] = True
    assert np.isin(flat.search(x[:2], 5, filter=m).ids, np.flatnonzero(m)).all()
    with pytest.raises(ValueError, match="n = 500"):
        flat.search(x[:2], 5, filter=np.ones(499, bool))


@pytest.mark.parametrize("ids_kind", ["offset", "scattered", "sparse"])
def test_id_maps_compile_filters_to_the_right_rows(ids_kind):
    from gsu.index import IdMap

    rng = np.random.default_rng(3)
    n = 3000
    ids = {"offset": 1000 + np.arange(n), "scattered": rng.permutation(4 * n)[:n],
           "sparse": rng.choice(2**50, n, replace=False)}[ids_kind].astype(np.int64)
    im = IdMap(ids)
    assert im.identity is False
    want = rng.choice(n, 400, replace=False)
    extra = rng.integers(-(2**62), 2**62, 50)  # ids not in the index: never allowed
    f = Filter.from_ids(np.concatenate([ids[want], extra]))
    cf = f.compile(im, 1)
    np.testing.assert_array_equal(cf.rows, np.sort(want))
    assert cf.count == 400
    np.testing.assert_array_equal(im.rows(ids[want]), want)
    # per-query sets: the same rows per query, sorted
    pq = Filter.per_query([ids[want[:10]], ids[want[10:30]]]).compile(im, 2)
    np.testing.assert_array_equal(pq.query_rows(0), np.sort(want[:10]))
    np.testing.assert_array_equal(pq.query_rows(1), np.sort(want[10:30]))


@pytest.mark.parametrize("spacing", ["random", "strided", "clustered"])
def test_spread_out_ids_are_looked_up_through_the_id_table(spacing):
    """Ids too spread out for the dense table (hashed item ids) go through the
    open-addressing id table: the same rows as a binary search of the sorted ids, absent
    ids dropped, rows ascending, for ids in any row order and spacings that crowd the
    table's slots (multiples of 2^40, runs of consecutive ids)."""
    from gsu.index import IdMap
    from gsu.index import _filter_kernels as fk

    rng = np.random.default_rng(8)
    n = 5000
    ids = {"random": rng.choice(2**62, n, replace=False),
           "strided": (rng.permutation(n) + 1) << 40,
           "clustered": np.concatenate([b * 2**45 + np.arange(n // 5) for b in range(5)])}[spacing].astype(np.int64)
    rng.shuffle(ids)  # rows in any id order
    im = IdMap(ids)
    assert im.offset is None and im._lookup_table() is None
    srt = np.sort(ids)
    order = np.argsort(ids)
    for m in (0, 1, 37, n // 2, n):
        want_rows = np.sort(rng.choice(n, m, replace=False))
        absent = srt[:-1][np.diff(srt) > 1] + 1  # ids between two present ones
        q = np.unique(np.concatenate([ids[want_rows], absent[: m // 3], [np.iinfo(np.int64).min, np.iinfo(np.int64).max]]))
        got = im.rows_of_sorted(q)
        np.testing.assert_array_equal(got, want_rows)
        pos = np.searchsorted(srt, q)
        ok = (pos < n) & (srt[np.minimum(pos, n - 1)] == q)
        np.testing.assert_array_equal(np.sort(order[pos[ok]]), got)  # the binary search's answer
    # IdMap.rows (any order and shape, -1 for absent ids) through the table, as the search gives
    look = np.concatenate([ids[rng.choice(n, 300)], srt[:-1][np.diff(srt) > 1][:100] + 1, [-5, np.iinfo(np.int64).max]])
    rng.shuffle(look)
    pos = np.searchsorted(srt, look)
    want_r = np.where((pos < n) & (srt[np.minimum(pos, n - 1)] == look), order[np.minimum(pos, n - 1)], -1)
    np.testing.assert_array_equal(im.rows(look.reshape(2, -1)), want_r.reshape(2, -1))
    np.testing.assert_array_equal(im.rows(look[:5]), want_r[:5])  # a few ids, the table already built
    near = IdMap(np.sort(rng.choice(3 * n, n, replace=False)).astype(np.int64))  # within 8 n: the dense table
    ln = np.concatenate([near.ids[rng.choice(n, 200)], [-1, 3 * n + 5, near.ids[0] + 0]])
    np.testing.assert_array_equal(near.rows(ln), np.searchsorted(near.ids, np.where(np.isin(ln, near.ids), ln, -1))
                                  * np.isin(ln, near.ids) - (~np.isin(ln, near.ids)))
    # a dense map at the top of int64: ids far below it must not wrap into its span
    top = IdMap(np.iinfo(np.int64).max - np.arange(100, dtype=np.int64)[::-1] * 2)
    far = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).min + 2, top.ids[3]], np.int64)
    np.testing.assert_array_equal(top.rows(np.tile(far, 30)), np.tile([-1, -1, 3], 30))  # >= 64 ids: the table
    np.testing.assert_array_equal(top.rows_of_sorted(far), [3])
    tab, bits = im._hash_table()
    assert tab.shape == (2 << bits,) and n < 0.7 * (1 << bits) + 1 and (tab[1::2] >= 0).sum() == n
    import pickle

    im2 = pickle.loads(pickle.dumps(im))  # the table stays behind and is rebuilt on first use
    assert "_hash" not in im2.__dict__
    np.testing.assert_array_equal(im2.rows_of_sorted(np.sort(ids[:100])), np.sort(np.arange(100)))
    out = np.empty(3, np.int64)
    assert fk.id_hash_rows(np.array([ids[5], ids[3], ids[9]]), tab, bits, out) == (3, False)
    np.testing.assert_array_equal(out, [5, 3, 9])


def test_large_filters_on_spread_out_ids_compile_straight_to_the_bitmap():
    """On a graph index whose ids are hashed item ids, a large plain id array (any order,
    repeats, absent ids) compiles to the bitmap through the id table: the same rows, count
    and bounds as the sorted path, and the same search results as the exact index."""
    from gsu.index import _filter_kernels as fk
    from gsu.index.hnsw import HNSWIndex

    rng = np.random.default_rng(12)
    n, d = 3000, 16
    x = rng.standard_normal((n, d)).astype(np.float32)
    ids = rng.choice(2**60, n, replace=False).astype(np.int64)  # rows in no id order
    h = HNSWIndex(d, M=8, ef_construction=40)
    h.add(x, ids)
    flat = FlatIndex(d)
    flat.add(x, ids)
    want = np.sort(rng.choice(n, n // 3, replace=False))
    arr = np.concatenate([ids[want], ids[want[:50]], rng.integers(-(2**62), 2**62, 40)])
    rng.shuffle(arr)
    cf = h.compile_filter(arr, 1)
    assert "bitmap64" in cf._masks and cf.count == want.shape[0]
    np.testing.assert_array_equal(cf.rows, want)
    mask = np.zeros(((n + 63) >> 6) * 64, bool)
    mask[want] = True
    np.testing.assert_array_equal(cf.bitmap64(), np.packbits(mask, bitorder="little").view(np.uint64))
    tab, bits = h.idmap._hash_table()
    assert fk.id_hash_bitmap(np.zeros(0, np.int64), tab, bits, n)[1:] == (0, n, -1)
    q = rng.standard_normal((5, d)).astype(np.float32)
    got = h.search(q, 10, filter=arr, ef=400)
    ref = flat.search(q, 10, filter=Filter.from_ids(arr))
    assert np.isin(got.ids, ids[want]).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.ids, ref.ids)]) >= 0.95


def _fresh_and_cached(search, q, filters):
    """Results with a new Filter per call, and with the same Filter object reused after a warm-up."""
    fresh = [search(q[i : i + 1], make()) for i, make in enumerate(filters)]
    objs = [make() for make in filters]
    for i, f in enumerate(objs):
        search(q[i : i + 1], f)  # compiles and caches the derived forms
    cached = [search(q[i : i + 1], f) for i, f in enumerate(objs)]
    return fresh, cached


def test_a_plain_id_array_within_the_exact_limit_compiles_to_its_rows(indexes, data, calibrated, monkeypatch):
    """A request's plain id array no longer than the exact limit is compiled to its sorted
    rows (the exact scan reads them), not to the bitmap a large array compiles to first
    (past its n/16 share): sorted, unsorted with repeats or with ids the index lacks, on an
    index whose id map is the identity and on one whose is not (ids 7 + 3·row); the answer
    is the exact top-k of the filter, as the same ids in a Filter give; a window of ids is
    its run of rows. Under the identity (an offset id map) the exact route's one compiled
    call takes it instead, with no compiled filter at all."""
    import gsu.index._mutable as mut

    x, q, ids, lab, centers = data
    cfi, _, cflat, cat, cq = calibrated
    forms = []
    orig = mut.MutableIndex._compile_ids

    def spy(self, a, distinct, rows=False):
        cf = orig(self, a, distinct, rows)
        forms.append((rows, "bitmap64" in cf._masks))
        return cf

    monkeypatch.setattr(mut.MutableIndex, "_compile_ids", spy)
    from gsu.index import _request as rq

    one_call = []
    real = rq.request_exact
    monkeypatch.setattr(rq, "request_exact", lambda *a: one_call.append(1) or real(*a))
    rng = np.random.default_rng(5)
    for fi, flat, pool, qs in ((indexes["filtered"], indexes["flat"], ids, q), (cfi, cflat, np.arange(cfi.ntotal), cq)):
        st = fi._fit(None).settings
        lim = int(max(st.exact_max_rows * min(st.exact_run_factor, 1.0), 10))
        assert 50 < lim and (lim - 50) * mut.BITMAP_FIRST_SHARE >= fi.ntotal  # past the share that compiles to a bitmap first
        for i in range(8):
            a = rng.choice(pool, lim - 50, replace=False)
            j = int(rng.integers(0, pool.shape[0] - lim))
            a = (np.sort(a), np.concatenate([a, a[:40]]), np.concatenate([np.sort(a), [10**12, -5]]),
                 pool[j : j + lim - 50])[i % 4].astype(np.int64)  # the last: a window (a run of rows under the identity)
            forms.clear()
            one_call.clear()
            got = fi.search(qs[i], 10, filter=a)
            # the rows, no bitmap; under an offset id map (the identity) the exact route's one
            # compiled call (_request.exact_view_request: its sorted rows, no compiled filter)
            assert (forms, one_call) == (([], [1]) if fi.idmap.offset is not None else ([(True, False)], []))
            want = flat.search(qs[i : i + 1], 10, filter=Filter.from_ids(a))
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
            assert fi.explain(qs[i], 10, filter=a).routes[0] == 0  # the exact scan


@pytest.mark.parametrize("route", ["auto", "exact", "ivf", "hnsw", "probe"])
def test_fresh_and_cached_filters_give_identical_results(indexes, data, route):
    """A filter built anew for every request and one reused (its compiled form, bitmap, IVF
    grouping and plan cached) give the same ids and scores, on every route and filter shape."""
    x, q, ids, lab, centers = data
    fi = indexes["filtered"]
    rng = np.random.default_rng(17)
    kw: dict = {}
    if route == "probe":  # every IVF-band filter walks the graph first with the density probe
        kw = {"exact_max_rows": 25, "hnsw_min_selectivity": 0.9, "probe_min_selectivity": 0.0, "probe_min_share": 0.4}
    elif route != "auto":
        kw = {"route": route}
    makers = []
    id_sets: dict[int, np.ndarray] = {}
    for i in range(NQ):
        m = [15, 90, 600, 1500, 2400][i % 5]
        sel_ids = np.sort(rng.choice(ids, m, replace=False))
        lo = int(rng.integers(0, N - m))
        shape = i % 3
        if shape == 0:
            makers.append(lambda a=sel_ids: Filter.from_ids(a))
            id_sets[i] = sel_ids
        elif shape == 1:
            makers.append(lambda lo=lo, m=m: Filter.range(int(ids[lo]), int(ids[lo + m])))
        else:
            mask = np.zeros(int(ids[-1]) + 1, bool)
            mask[sel_ids] = True
            makers.append(lambda mk=mask: Filter.from_mask(mk) & ~Filter.from_ids(ids[:3]))
    searchers = {"filtered": lambda qq, f: fi.search(qq, K, filter=f, **kw)}
    if route == "auto":
        searchers.update({"hnsw": lambda qq, f: indexes["hnsw"].search(qq, K, filter=f, ef=64),
                          "ivf": lambda qq, f: indexes["ivf"].search(qq, K, filter=f, nprobe=8, candidates=100),
                          "flat": lambda qq, f: indexes["flat"].search(qq, K, filter=f)})
    for name, search in searchers.items():
        fresh, cached = _fresh_and_cached(search, q, makers)
        for a, b in zip(fresh, cached):
            np.testing.assert_array_equal(a.ids, b.ids, err_msg=name)
            np.testing.assert_array_equal(a.scores, b.scores, err_msg=name)
            np.testing.assert_array_equal(a.counts, b.counts, err_msg=name)
    # a plain id array (compiled straight to rows, no Filter object), unsorted and with
    # repeats, gives what the Filter of the same ids gives
    for i, sel_ids in id_sets.items():
        plain = rng.permutation(np.concatenate([sel_ids, sel_ids[:2]]))
        a = fi.search(q[i : i + 1], K, filter=plain, **kw)
        b = fi.search(q[i : i + 1], K, filter=Filter.from_ids(sel_ids), **kw)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    # a per-query batch built in one go equals the same filters one query per call
    batch = fi.search(q, K, filter=Filter.per_query([make() for make in makers]), **kw)
    single = SearchResult.concat([fi.search(q[i], K, filter=make(), **kw) for i, make in enumerate(makers)])
    if route in ("exact", "ivf", "hnsw"):
        np.testing.assert_array_equal(batch.ids, single.ids)
        np.testing.assert_allclose(batch.scores, single.scores, rtol=1e-6)


def test_ivf_scan_and_grouped_probing_agree(indexes, data, monkeypatch):
    """The IVF route finds a shared filter's allowed rows either grouped by list first or by
    scanning the opened lists against the filter's bitmap: the same lists, rows and results."""
    _, q, ids, _, _ = data
    ivf = indexes["ivf"]
    rng = np.random.default_rng(5)
    out = {}
    for mode in (True, False):
        monkeypatch.setattr(IVFIndex, "scan_pays", lambda self, *a, mode=mode, **kw: mode)
        res = []
        for i in range(NQ):
            f = Filter.from_ids(np.sort(np.random.default_rng(i).choice(ids, [40, 300, 1500][i % 3], replace=False)))
            res.append(ivf.search(q[i], K, filter=f, nprobe=4, candidates=60))
        out[mode] = SearchResult.concat(res)
    np.testing.assert_array_equal(out[True].ids, out[False].ids)
    np.testing.assert_array_equal(out[True].scores, out[False].scores)


def test_planner_settings_are_validated_once():
    import dataclasses

    from gsu.index.filtered import PLANNER_DEFAULTS, PlannerSettings

    assert isinstance(PLANNER_DEFAULTS, PlannerSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PLANNER_DEFAULTS.hnsw_ef = 3.0
    for bad in ({"hnsw_ef": -1}, {"hnsw_ef": 0}, {"exact_max_rows": float("nan")}, {"ivf_candidates": "20"},
                {"bands": (0.1, 0.05), "band_hnsw_ef": (2, 2)}, {"bands": (0.1, 0.5), "band_ivf": (1.0,)},
                {"bands": (0.5, 1.5)}):
        with pytest.raises(ValueError):
            PlannerSettings(**bad)
    with pytest.raises(TypeError, match="planner settings"):
        PLANNER_DEFAULTS.with_overrides({"nprobe": 3})
    st = PlannerSettings(bands=(0.01, 0.1, 0.5), band_hnsw_ef=(2.0, 4.0, 3.0), band_ivf=(1.0, 0.5, 0.25))
    # between two grid points the budget is interpolated geometrically in the selectivity
    # (planner.BAND_INTERP; else the larger of the two); outside, the nearest point's
    geo = lambda a, b, lo, hi, s: math.exp(math.log(a) + math.log(s / lo) / math.log(hi / lo) * (math.log(b) - math.log(a)))  # noqa: E731
    want = [2.0, geo(2.0, 4.0, 0.01, 0.1, 0.05), 4.0, geo(4.0, 3.0, 0.1, 0.5, 0.2), 3.0]
    got = [st.ef_mult(s) for s in (0.001, 0.05, 0.1, 0.2, 0.9)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(st.ef_mults(np.array([0.001, 0.05, 0.1, 0.2, 0.9])), want, rtol=1e-12)
    assert 2.0 < got[1] < 4.0 and 3.0 < got[3] < 4.0
    import gsu.index.planner as planner_mod

    planner_mod.BAND_INTERP = False
    try:
        assert st.ef_mult(0.05) == 4.0 and st.ef_mult(0.2) == 4.0
        np.testing.assert_array_equal(st.ef_mults(np.array([0.001, 0.05, 0.1, 0.2, 0.9])), [2.0, 4.0, 4.0, 4.0, 3.0])
        # within GRID_SNAP (2 %) of a grid point, that point's: a 10 % filter of round(0.1 n)
        # rows is a hair off 0.1 either way; one 3 % off is between the points
        for s, ef, ivf in ((0.0999, 4.0, 0.5), (0.1019, 4.0, 0.5), (0.4925, 3.0, 0.25), (0.0102, 2.0, 1.0), (0.103, 4.0, 0.5),
                           (0.097, 4.0, 1.0), (0.485, 4.0, 0.5)):
            assert st.ef_mult(s) == ef and st.ivf_mult(s) == ivf, s
            assert st.ef_mults(np.array([s]))[0] == ef and st.ivf_mults(np.array([s]))[0] == ivf, s
    finally:
        planner_mod.BAND_INTERP = True
    for s in (0.0999, 0.1019, 0.4925, 0.0102):  # snapped: the point's own, interpolation or not
        assert st.ef_mult(s) in (2.0, 4.0, 3.0) and st.ef_mults(np.array([s]))[0] == st.ef_mult(s)
    assert st.with_overrides({"hnsw_ef": 5.0}).ef_mult(0.05) == 5.0  # a fixed beam drops the bands
    assert PlannerSettings.from_dict(st.to_dict()) == st


@pytest.fixture(scope="module")
def calibrated():
    """A generated catalog unlike the test fixture (128 power-law clusters, 32-d), indexed
    and calibrated; held-out queries drawn afresh from the same mixture."""
    from gsu.datasets import catalog_queries, clustered_catalog

    cat = clustered_catalog(12_000, 32, n_clusters=128, size_skew=1.2, spread=0.5, seed=11)
    fi = FilteredIndex(32, "ip", M=16, ef_construction=80, calibrate=False, seed=3)
    fi.add(cat.vectors)
    cal = fi.calibrate(target_recall=0.95, n_queries=40)
    flat = FlatIndex(32, "ip")
    flat.add(cat.vectors)
    return fi, cal, flat, cat, catalog_queries(cat, 60, seed=12)


def _held_out_filters(cat, q, kind: str, sel: float, rng) -> list[np.ndarray]:
    n = cat.vectors.shape[0]
    m = int(sel * n)
    out = []
    for i in range(q.shape[0]):
        if kind == "random":
            out.append(np.sort(rng.choice(n, m, replace=False)))
        elif kind == "range":
            a = int(rng.integers(0, n - m))
            out.append(np.arange(a, a + m))
        else:  # 80 % from the mixture components nearest the query
            pool = np.concatenate([np.flatnonzero(cat.labels == c) for c in np.argsort(-(cat.centers @ q[i]))[:12]])
            near = rng.choice(pool, min(int(0.8 * m), pool.size), replace=False)
            rest = rng.choice(np.setdiff1d(np.arange(n), near), m - near.size, replace=False)
            out.append(np.sort(np.concatenate([near, rest])))
    return out


def test_calibration_reaches_its_target_on_held_out_queries(calibrated):
    fi, cal, flat, cat, q = calibrated
    assert cal.k == 10 and cal.target_recall == 0.95 and cal.complete and len(cal.points) >= 8
    st = fi.settings
    assert st == cal.settings and st.bands and len(st.band_hnsw_ef) == len(st.bands)
    rng = np.random.default_rng(13)
    routes_seen = set()
    for kind in ("random", "correlated", "range"):
        for sel in (0.005, 0.03, 0.15, 0.5):
            allowed = _held_out_filters(cat, q, kind, sel, rng)
            truth = flat.search(q, K, filter=Filter.per_query(allowed))
            res = SearchResult.concat([fi.search(q[i], K, filter=allowed[i]) for i in range(q.shape[0])])
            rec = _check(res, truth, allowed, cat.vectors, np.arange(cat.vectors.shape[0]), q, K)
            assert rec >= 0.95, f"{kind} {sel}: recall {rec:.3f} below the calibrated target"
            ex = fi.explain(q, K, filter=Filter.per_query(allowed))
            routes_seen.update(ex.route_names())
            approx = ex.routes != 0
            assert np.all(ex.expected_recall[~approx] == 1.0)
            assert np.all(ex.expected_recall[approx] >= 0.95), ex.expected_recall[approx]
    assert len(routes_seen) >= 2, routes_seen


def test_calibration_measures_the_search_without_a_filter(calibrated):
    """The grid holds the unfiltered point (``s`` 1.0, every row but the held-out
    query's own), measured once and standing for every kind; a search without a filter
    plans with its budgets (the walk counts its beam in allowed nodes, so a 50 % filter's
    beam explores about twice the nodes it does without one) and reaches the target on
    held-out queries."""
    from gsu.index import _calibrate as cm

    fi, cal, flat, cat, q = calibrated
    n = cat.vectors.shape[0]
    full = next(p for p in cal.points if p["s"] == 1.0)  # (points are kept in the order measured)
    assert full["m"] == n and "away" not in full
    for fam in ("ivf", "hnsw"):
        assert full[fam], fam
        for e in full[fam]:
            nk = len(cm.KINDS)
            assert e[1] == [e[1][0]] * nk and e[2] == [e[2][0]] * nk and e[3] == [e[3][0]] * nk
    assert full["exact"] == [full["exact"][0]] * len(cm.KINDS)
    st = fi.settings
    assert st.bands[-1] == 1.0
    ex = fi.explain(q, K)
    route = int(ex.routes[0])
    assert np.all(ex.routes == route) and route in (1, 2)
    if route == 2:  # the walk: the beam fitted at the unfiltered point
        assert np.all(ex.ef == fi._ef(st.ef_mult(1.0, True), K, 1.0, st))
    truth = flat.search(q, K)
    res = fi.search(q, K)
    rec = np.mean([len(set(truth.ids[i]) & set(res.ids[i])) / K for i in range(q.shape[0])])
    assert rec >= 0.95, rec
    # the unfiltered point's rows: every row but the query's own, for every kind
    Q = np.ascontiguousarray(cat.vectors[[5, 900]])
    for kind in cm.KINDS:
        got = list(cm.draw_filters(fi, kind, n, Q, np.array([5, 900]), np.random.default_rng(0)))
        for r, own in zip(got, (5, 900)):
            np.testing.assert_array_equal(r, np.delete(np.arange(n), own))


def test_the_compiled_plan_is_the_python_planners(calibrated, monkeypatch):
    """``FilteredIndex._plan_one`` (one compiled call, :mod:`gsu.index._plan_kernel`) plans
    every filter as the Python planner (``_plan_one_py``) does, case by case: the calibrated
    settings at three targets, settings whose even budgets pay (granted to spread filters)
    and settings whose IVF budget opens more lists than a concentrated filter lies in (the
    exact scan instead); every filter form (a plain id array sorted or not, a Filter, one
    with its bitmap built, a mask, a window: a run), k and effort, and no filter."""
    import gsu.index._plan_kernel as pk
    from gsu.index.filtered import EXACT, IVF

    fi, cal, _, cat, _ = calibrated
    n = fi.ntotal
    rng = np.random.default_rng(17)
    need = []
    entry = pk.plan_entry()

    def spy(*a):
        r = entry(*a)
        assert r == pk.plan_shared(*a)  # the entry point answers as the dispatcher does
        need.append(r[0] == pk.NEED_BITMAP)
        return r

    monkeypatch.setattr(pk, "plan_entry", lambda: spy)
    st0 = fi._fit(None).settings
    assert st0.bands and st0.plan_consts is not None
    even_st = dataclasses.replace(st0, band_even_ivf=tuple(0.5 * v for v in (st0.band_ivf or (1.0,) * len(st0.bands))),
                                  ivf_min_lists=1.0)
    few_st = dataclasses.replace(st0, ivf_min_lists=float(fi.ivf.nlist), probe_min_selectivity=2.0, hnsw_min_selectivity=2.0,
                                 exact_max_rows=4.0)
    rl = fi.ivf.row_list
    seen = {"even": 0, "few": 0, "cases": 0}
    for st in (st0, fi._fit(0.9).settings, fi._fit(0.99).settings, even_st, few_st):
        for m in np.unique(np.geomspace(1, n, 40).astype(np.int64)).tolist():
            for run in (False, True):
                for k, eff in ((10, 1.0), (1, 0.5), (50, 2.0)):
                    assert fi._plan_one(m, run, k, eff, st, None) == fi._plan_one_py(m, run, k, eff, st, None)
                    seen["cases"] += 1
        for sel in (0.004, 0.03, 0.1, 0.3, 0.7):
            c = int(sel * n)
            sets = [np.sort(rng.choice(n, c, replace=False)), np.arange(c) + int(rng.integers(0, n - c)),
                    np.flatnonzero(np.isin(rl, rng.choice(fi.ivf.nlist, 4, replace=False)))]
            for ids in sets:
                ids = ids.astype(np.int64)
                mk = np.zeros(n, bool)
                mk[ids] = True
                for form in ("ids", "unsorted", "Filter", "bitmap", "mask"):
                    cfs = []
                    for _ in range(2):  # one for each planner (a filter keeps what a plan derives)
                        if form == "mask":
                            f = Filter.from_mask(mk)
                        elif form == "unsorted":
                            f = rng.permutation(ids)
                        else:
                            f = ids.copy() if form == "ids" else Filter(ids)
                        cf = fi.hnsw.compile_filter(f, 1)
                        if form == "bitmap":
                            cf.bitmap64()
                        cfs.append(cf)
                    for k, eff in ((10, 1.0), (5, 0.7)):
                        a = fi._plan_one(cfs[0].count, cfs[0].run is not None, k, eff, st, cfs[0])
                        b = fi._plan_one_py(cfs[1].count, cfs[1].run is not None, k, eff, st, cfs[1])
                        assert a == b, (sel, form, k, eff, a, b)
                        seen["cases"] += 1
                        if st is few_st and a[0] == EXACT and cfs[0].count > max(st.exact_max_rows * eff * st.exact_run_factor, k):
                            seen["few"] += 1
                        if st is even_st and a[0] == IVF and a[3] == fi._ivf_budget(
                                st.even.ivf_mult(cfs[0].count / n, cfs[0].run is not None), k, eff, st)[0] < fi._ivf_budget(
                                st.ivf_mult(cfs[0].count / n, cfs[0].run is not None), k, eff, st)[0]:
                            seen["even"] += 1
    assert seen["even"] and seen["few"] and any(need), (seen, any(need))


def test_calibration_is_saved_and_target_recall_picks_the_operating_point(calibrated, tmp_path):
    fi, cal, flat, cat, q = calibrated
    fi.save(tmp_path / "cal.gsu")
    back = load(tmp_path / "cal.gsu")
    assert back.calibration == cal and back.settings == fi.settings
    rng = np.random.default_rng(14)
    allowed = _held_out_filters(cat, q, "random", 0.15, rng)
    f = Filter.per_query(allowed)
    np.testing.assert_array_equal(back.search(q, K, filter=f).ids, fi.search(q, K, filter=f).ids)
    lo, hi = fi.explain(q, K, filter=f, target_recall=0.8), fi.explain(q, K, filter=f, target_recall=0.99)
    budget = lambda e: np.where(e.routes == 2, e.ef, e.candidates)  # noqa: E731
    same = lo.routes == hi.routes
    assert np.all(budget(hi)[same] >= budget(lo)[same])
    truth = flat.search(q, K, filter=f)
    ids_ = np.arange(cat.vectors.shape[0])
    r_hi = _check(fi.search(q, K, filter=f, target_recall=0.99), truth, allowed, cat.vectors, ids_, q, K)
    r_lo = _check(fi.search(q, K, filter=f, target_recall=0.8), truth, allowed, cat.vectors, ids_, q, K)
    assert r_hi >= 0.97 and r_hi >= r_lo
    with pytest.raises(ValueError, match="target_recall"):
        fi.search(q, K, target_recall=1.5)
    # an index built with calibrate=False plans with the defaults until calibrated
    assert FilteredIndex(8, calibrate=False).settings == PlannerSettings()


def test_build_calibrates_and_a_time_limit_cuts_calibration_short():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=32)
    fi.add(x)  # calibrates by default
    assert fi.calibration is not None and fi.calibration.n == 4000
    cal = fi.calibrate(max_seconds=0.0)  # the main decades and the unfiltered point only, the rest filled from them
    assert not cal.complete and [p["s"] for p in cal.points] == [0.01, 0.1, 0.5, 1.0]
    st = cal.settings
    assert len(st.bands) == 4 and len(st.band_ivf) == 4
    r = fi.search(x[:5], K, filter=np.arange(0, 4000, 3))
    assert np.all(r.counts == K)


def test_a_cut_short_calibration_extrapolates_the_exact_limit_and_keeps_the_default_threshold():
    from gsu.index.planner import fit_planner

    # one measured point (1 % of 100,000 rows) where the exact scan still won: the scan's
    # cost (proportional from one point) meets the approximate one at 4 x 1,000 rows
    pt = {"s": 0.01, "m": 1000, "exact": [10.0, 10.0, 10.0],
          "ivf": [[1.0, [0.99, 0.99, 0.99], [40.0, 40.0, 40.0]]], "hnsw": [], "probe": []}
    raw = {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 8, "kinds": ["random", "correlated", "range"],
           "points": [pt], "complete": False}
    st = fit_planner(raw, 0.95).settings
    assert st.exact_max_rows == pytest.approx(4000.0)
    assert st.hnsw_min_selectivity == PlannerSettings().hnsw_min_selectivity
    # the same measurement from a complete grid: the scan wins wherever it was measured
    st_full = fit_planner({**raw, "complete": True}, 0.95).settings
    assert st_full.exact_max_rows == 100_000 and st_full.hnsw_min_selectivity == 2.0


def test_the_runs_exact_limit_may_lie_below_the_scattered_filters():
    """The range kind's own crossover (exact scan against its cheapest approximate route)
    sets the runs' exact limit, also where it comes before the scattered filters' crossover:
    ``exact_run_factor`` below 1 (it was clamped at 1, and the windows of an unseen set at
    10 % took the exact scan at twice IVF's cost). A plain id array between the two limits
    takes the exact scan when it is scattered and IVF when it is a window."""
    from gsu.index.planner import RUN_FACTOR_MIN, SPLIT_TIE, fit_planner

    # kinds: random, correlated, range; 1 % and 10 % of 100,000 rows. The exact scan costs the
    # same for every kind; IVF costs 40 us for the scattered kinds but 10 us for a window
    pts = [{"s": s, "m": int(s * 100_000), "exact": [c, c, c], "hnsw": [], "probe": [],
            "ivf": [[1.0, [0.99, 0.99, 0.99], [40.0, 40.0, 10.0], [0.98, 0.98, 0.98]]]} for s, c in ((0.01, 5.0), (0.1, 50.0))]
    raw = {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
           "points": pts, "complete": True}
    st = fit_planner(raw, 0.95).settings
    e0, e1 = 5.0 * (1 + SPLIT_TIE), 50.0 * (1 + SPLIT_TIE)  # (a tie within the timing's spread goes to IVF)
    # scattered: 5 - 40 < 0 at 1,000 rows, 50 - 40 > 0 at 10,000: the crossover at 1,000 + 9,000 * 35/45
    assert st.exact_max_rows == pytest.approx(1000 + 9000 * (40 - e0) / (e1 - e0))
    # runs: 5 - 10 < 0 at 1,000, 50 - 10 > 0 at 10,000: at 1,000 + 9,000 * 5/45, about 2,000
    assert st.exact_max_rows * st.exact_run_factor == pytest.approx(1000 + 9000 * (10 - e0) / (e1 - e0))
    assert RUN_FACTOR_MIN < st.exact_run_factor < 1.0
    rng = np.random.default_rng(31)
    x = rng.standard_normal((6000, 16)).astype(np.float32)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=32, calibrate=False)
    fi.add(x, 7 + np.arange(6000, dtype=np.int64))
    from gsu.index.planner import Fit

    fi._fits = {None: Fit(dataclasses.replace(st, exact_max_rows=1500.0, exact_run_factor=0.2), (), (), False)}
    window = 7 + np.arange(100, 1100, dtype=np.int64)  # 1,000 ids: past the window limit (300), within the scattered one
    scattered = 7 + np.sort(rng.choice(6000, 1000, replace=False)).astype(np.int64)
    assert fi.explain(x[0], K, filter=window).route_names()[0] != "exact"
    assert fi.explain(x[0], K, filter=scattered).route_names()[0] == "exact"
    for f in (window, scattered, rng.permutation(scattered)):
        a = fi.search(x[0], K, filter=f)
        b = fi.search(x[0], K, filter=f, effort=1.0)  # the step-by-step path
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_the_exact_limit_is_the_median_of_the_scattered_kinds_crossovers():
    """The scattered filters' exact limit is the median of each kind's own crossover (the exact
    scan against the cheapest family at that kind's cost), a tie within ``SPLIT_TIE`` going to
    the approximate route: one dear kind (the region kind, 89 us on IVF at 10 % where the scan
    costs 50) no longer sends the others (35 and 47 us) to the scan. Where no budget reached
    the goal at a point, the exact scan answers there."""
    from gsu.index import planner
    from gsu.index.planner import SPLIT_TIE, fit_planner

    kinds = ["random", "correlated", "range", "region"]

    def pt(s, ex, costs, rec=0.99, low=0.98):
        return {"s": s, "m": int(s * 100_000), "exact": [ex] * 4, "hnsw": [], "probe": [],
                "ivf": [[1.0, [rec] * 4, costs, [low] * 4]]}

    raw = {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": kinds, "complete": True,
           "points": [pt(0.01, 5.0, [20.0, 20.0, 10.0, 20.0]), pt(0.1, 50.0, [35.0, 47.0, 25.0, 89.0])]}
    st = fit_planner(raw, 0.95).settings
    e0, e1 = 5.0 * (1 + SPLIT_TIE), 50.0 * (1 + SPLIT_TIE)
    # the correlated kind's crossover is the median: 1,000 + 9,000 * (20 - e0) / ((20 - e0) + (e1 - 47))
    assert st.exact_max_rows == pytest.approx(1000 + 9000 * (20 - e0) / ((20 - e0) + (e1 - 47)))
    assert st.exact_max_rows < 10_000
    old = planner.EXACT_LIMIT_MEDIAN
    try:
        planner.EXACT_LIMIT_MEDIAN = False  # the mean over the kinds: the scan wins at 10 % (50 < 57)
        assert fit_planner(raw, 0.95).settings.exact_max_rows == 100_000
    finally:
        planner.EXACT_LIMIT_MEDIAN = old
    # at 10 % no budget reaches the goal (lower bound 0.93): the exact scan answers there, its
    # recall confirmed, whatever the unconfirmed budget's cost
    raw2 = {**raw, "points": [raw["points"][0], pt(0.1, 50.0, [30.0, 30.0, 30.0, 30.0], rec=0.96, low=0.93)]}
    assert fit_planner(raw2, 0.95).settings.exact_max_rows == 100_000


def test_the_fit_needs_the_recall_lower_bound_to_reach_the_target():
    from gsu.index.planner import fit_planner, reaches, recall_low

    # 24 per-query recalls with mean 0.971 and a wide spread: the mean passes the goal
    # (0.97) but the lower 95 % bound (0.971 - 1.645 * sd / sqrt(24)) does not reach 0.95
    r = np.array([1.0] * 20 + [0.9, 0.8, 0.8, 0.8], float)
    assert r.mean() == pytest.approx(0.9708, abs=1e-4)
    lo = recall_low(r)
    assert lo == pytest.approx(r.mean() - 1.645 * r.std(ddof=1) / np.sqrt(24))
    assert 0.94 < lo < 0.95
    assert recall_low(np.ones(24)) == 1.0 and recall_low(np.array([0.5])) == 0.5
    three = lambda v: [v, v, v]  # noqa: E731
    wide = [4.6, three(0.971), three(50.0), three(lo)]
    tight = [6.0, three(0.99), three(60.0), three(0.98)]
    assert not reaches(wide, 0.95) and reaches(tight, 0.95)
    assert reaches(wide[:3], 0.95)  # a calibration saved without bounds fits on the mean alone
    pt = {"s": 0.5, "m": 1_000_000, "exact": three(1e6), "ivf": [], "probe": [], "hnsw": [wide, tight]}
    raw = {"k": 10, "target_recall": 0.95, "n": 2_000_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
           "points": [pt], "complete": True}
    fit = fit_planner(raw, 0.95)
    assert fit.settings.band_hnsw_ef == (6.0,) and fit.recall_hnsw == (0.99,)
    old = {**raw, "points": [{**pt, "hnsw": [wide[:3], tight[:3]]}]}
    assert fit_planner(old, 0.95).settings.band_hnsw_ef == (4.6,)


def test_a_search_without_a_filter_plans_with_the_unfiltered_points_beam():
    """Fitted from a grid whose unfiltered point (s 1.0) needed a wider beam than its 50 %
    point (the walk's beam counts allowed nodes only): a search without a filter walks with
    the unfiltered beam, a 50 % filter with its own, a 75 % one in between."""
    from gsu.index.planner import fit_planner

    three = lambda v: [v, v, v]  # noqa: E731
    n = 100_000

    def point(s, steps):
        return {"s": s, "m": int(s * n), "exact": three(1e5 * s), "probe": [],
                "ivf": [[1.0, three(0.99), three(1e4), three(0.98)]],
                "hnsw": [[st, three(r), three(30.0 * st), three(r - 0.01)] for st, r in steps]}

    pts = [point(0.01, [(2.2, 0.99)]), point(0.1, [(2.2, 0.99)]), point(0.5, [(1.7, 0.95), (2.2, 0.98)]),
           point(1.0, [(2.2, 0.93), (3.6, 0.96), (4.6, 0.985)])]
    # at 50 %, queries away from their filter's rows were scanned for less than their IVF budget
    pts[2]["away"] = [[4.0, [0.98], [2e4], [0.97]]]
    pts[2]["away_exact"] = 1.5e4
    raw = {"k": 10, "target_recall": 0.95, "n": n, "n_queries": 24, "kinds": ["random", "correlated", "range"],
           "points": pts, "complete": True}
    st = fit_planner(raw, 0.95).settings
    assert st.bands == (0.01, 0.1, 0.5, 1.0) and st.band_hnsw_ef[-2:] == (2.2, 4.6)
    # no query is away from an unfiltered search: the point keeps the flag of the one below,
    # so such queries of a 70 % filter are still scanned as the 50 % point measured
    assert st.band_away_exact == pytest.approx((0.0, 0.0, 0.8 * 2e4 / 1.5e4, 0.8 * 2e4 / 1.5e4))  # each its reach
    assert st.away_exact(0.7) and not st.away_exact(0.2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    fi = FilteredIndex(8, M=8, ef_construction=40, nlist=16, calibrate=False)
    fi.add(x)
    n2 = fi.ntotal
    st = dataclasses.replace(st, exact_max_rows=0.0, hnsw_min_selectivity=0.0, probe_min_selectivity=2.0)
    plan = lambda m, run: fi._plan_one(m, run, K, 1.0, st)  # noqa: E731
    assert plan(n2, True)[0] == 2 and plan(n2, True)[2] == fi._ef(4.6, K, 1.0, st) == 46
    assert plan(n2 // 2, False)[2] == 22
    assert 22 < plan(3 * n2 // 4, False)[2] < 46


def test_route_costs_within_the_timing_spread_take_the_split_that_walks_least(monkeypatch):
    """Two splits whose summed costs differ by less than ``SPLIT_TIE`` of the cheapest count
    as tied (a calibration's timing noise re-drew such thresholds), and the one that walks
    least is taken: the density probe at 50 % where the plain walk measured 1 % cheaper;
    a walk cheaper by more than the spread keeps the walk."""
    from gsu.index import planner

    three = lambda v: [v, v, v]  # noqa: E731
    n = 100_000

    def fit(walk_cost):
        pts = []
        for s_ in (0.01, 0.1, 0.5):
            hn = walk_cost if s_ == 0.5 else 200.0
            pts.append({"s": s_, "m": int(s_ * n), "exact": three(1e4), "ivf": [[1.0, three(0.99), three(150.0), three(0.98)]],
                        "probe": [[2.2, three(0.99), three(100.0), three(0.98)]] if s_ >= 0.1 else [],
                        "hnsw": [[2.2, three(0.99), three(hn), three(0.98)]]})
        raw = {"k": 10, "target_recall": 0.95, "n": n, "n_queries": 24, "kinds": ["random", "correlated", "range"],
               "points": pts, "complete": True}
        return planner.fit_planner(raw, 0.95).settings

    near, far = fit(99.0), fit(80.0)
    assert near.hnsw_min_selectivity == 2.0 and near.probe_min_selectivity == pytest.approx(math.sqrt(0.01 * 0.1))
    assert far.hnsw_min_selectivity == pytest.approx(math.sqrt(0.1 * 0.5))
    monkeypatch.setattr(planner, "SPLIT_TIE", 0.0)
    assert fit(99.0).hnsw_min_selectivity == pytest.approx(math.sqrt(0.1 * 0.5))


def test_time_windows_skip_the_probe_where_the_calibration_found_it_wasted(indexes, data):
    """Per grid point, a contiguous run of rows keeps the walk's density probe only where the
    range kind's own measurements found the probe no dearer than IVF; scattered filters are
    planned as before; between grid points the probe stays if either neighbour keeps it."""
    from gsu.index.planner import fit_planner

    three = lambda v: [v, v, v]  # noqa: E731
    # kinds: random, correlated, range; IVF reaches the target everywhere, the probe too
    ivf = [[1.0, three(0.99), [60.0, 200.0, 60.0], three(0.98)]]
    probe_cheap_for_runs = [[2.8, three(0.99), [90.0, 80.0, 50.0], three(0.98)]]
    probe_dear_for_runs = [[2.8, three(0.99), [90.0, 80.0, 95.0], three(0.98)]]
    pts = [{"s": 0.1, "m": 10_000, "exact": three(1e4), "ivf": ivf, "probe": probe_dear_for_runs, "hnsw": []},
           {"s": 0.3, "m": 30_000, "exact": three(3e4), "ivf": ivf, "probe": probe_cheap_for_runs, "hnsw": []}]
    raw = {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
           "points": pts, "complete": True}
    st = fit_planner(raw, 0.95).settings
    assert st.probe_min_selectivity < 0.1 and st.hnsw_min_selectivity > 0.3  # both points in the probe band
    assert st.band_run_probe == (0.0, 1.0)
    assert not st.run_probe(0.1) and st.run_probe(0.3) and st.run_probe(0.2)
    assert list(st.run_probes(np.array([0.05, 0.1, 0.2, 0.3]))) == [False, False, True, True]
    assert PlannerSettings.from_dict(st.to_dict()) == st
    assert PlannerSettings().run_probe(0.1)  # settings saved without it: the probe, as before
    # the index plans a run and a scattered filter of the same size differently under them
    fi = indexes["filtered"]
    import dataclasses

    fit = fi._fit(None)
    try:
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(
            fit.settings, exact_max_rows=25.0, exact_run_factor=1.0, probe_min_selectivity=0.0, hnsw_min_selectivity=0.99,
            bands=(0.1, 0.9), band_hnsw_ef=(3.0, 3.0), band_ivf=(1.0, 1.0), band_run_probe=(0.0, 0.0)))
        n = fi.ntotal
        window = fi.ids[: n // 5].copy()
        scattered = np.sort(np.random.default_rng(3).choice(fi.ids, n // 5, replace=False))
        q = data[1]
        st = fi._fits[None].settings
        m = window.shape[0]
        assert fi._plan_one(m, True, K, 1.0, st)[:2] == (1, 0.0)  # IVF, no probe, for the window
        assert fi._plan_one(m, False, K, 1.0, st)[:2] == (1, st.probe_min_share)  # the scattered one probes
        routes, probe, *_ = fi._plan_many(np.array([m, m]), np.array([True, False]), K, 1.0, st)
        assert list(routes) == [1, 1] and list(probe) == [False, True]
        ew = fi.explain(q[:1], K, filter=window)
        assert ew.route_names() == ["ivf"] and ew.ef[0] == 0
        a = fi.search(q[0], K, filter=window)
        b = fi.search(q[0], K, filter=window, route="ivf")
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    finally:
        fi._fits[None] = fit


def _two_point_calibration(ivf: list, hnsw: list, n: int) -> dict:
    """Calibration measurements at 10 % and 50 % of ``n`` rows for the kinds random,
    correlated, range: the same IVF and HNSW ladder entries at both points, no probe."""
    pts = [{"s": s_, "m": int(s_ * n), "exact": [s_ * 1e5] * 3, "ivf": ivf, "probe": [], "hnsw": hnsw} for s_ in (0.1, 0.5)]
    return {"k": 10, "target_recall": 0.95, "n": n, "n_queries": 24, "kinds": ["random", "correlated", "range"],
            "points": pts, "complete": True}


def test_scattered_filters_ivf_budget_is_fitted_on_the_kinds_they_can_be(monkeypatch):
    """planner.SCATTERED_KINDS: a scattered filter (neither one run nor found even) takes the
    IVF budget reaching the target for the correlated kind, without the range kind (runs have
    their own) and, from the selectivity where the evenness test applies (``even_from``),
    without the random kind, whose mean must still reach the target there; below it, and
    with the switch off, every kind's. An even filter takes the random kind's own budget,
    here the larger."""
    from gsu.index import planner
    from gsu.index.planner import fit_planner

    # IVF: correlated reaches the goal at 1.0; random at 2.0 (at 1.0 its mean, 0.96, reaches
    # only the target); range at 4.0
    ivf = [[1.0, [0.96, 0.99, 0.9], [60.0, 70.0, 40.0], [0.94, 0.98, 0.85]],
           [2.0, [0.985, 0.995, 0.94], [75.0, 85.0, 50.0], [0.97, 0.99, 0.9]],
           [4.0, [0.99, 0.995, 0.985], [95.0, 99.0, 60.0], [0.98, 0.99, 0.97]]]
    hnsw = [[3.6, [0.99, 0.985, 0.995], [170.0, 170.0, 180.0], [0.98, 0.97, 0.99]]]
    raw = _two_point_calibration(ivf, hnsw, 100_000)
    st = fit_planner(raw, 0.95, even_from=0.3).settings
    assert st.band_ivf == (2.0, 1.0)  # 10 %: below even_from, the random kind counts; 50 %: not
    assert st.band_run_ivf == (4.0, 4.0) and st.band_even_ivf == (2.0, 2.0)
    assert st.even.ivf_mult(0.5) == 2.0 and st.even_pays(0.5) and not st.even_pays(0.1)
    # the random kind's mean under the target at 1.0: its floor holds the budget at 2.0
    low = [[1.0, [0.94, 0.99, 0.9], [60.0, 70.0, 40.0], [0.92, 0.98, 0.85]]] + ivf[1:]
    assert fit_planner(_two_point_calibration(low, hnsw, 100_000), 0.95, even_from=0.3).settings.band_ivf == (2.0, 2.0)
    monkeypatch.setattr(planner, "SCATTERED_KINDS", False)  # every kind, the range kind included
    assert fit_planner(raw, 0.95, even_from=0.3).settings.band_ivf == (4.0, 4.0)


def test_runs_get_the_budgets_the_range_kind_needs(indexes, data):
    """A filter that is one contiguous run of rows is budgeted on the calibration's range
    kind alone, a scattered filter's walk on every kind and its IVF budget on the kinds it
    can be (``planner.SCATTERED_KINDS``): the fit gives each its own budgets, the index
    plans each with them, explain reports each group's recall, a fixed budget drops both,
    and settings saved without run budgets plan runs as before."""
    from gsu.index.planner import fit_planner

    # kinds: random, correlated, range. IVF: the random and range kinds reach the target at
    # 1.0, the correlated kind at 1.6 only; the beam: the scattered kinds need 3.6, the range kind 1.3
    ivf = [[1.0, [0.985, 0.95, 0.98], [60.0, 70.0, 40.0], [0.97, 0.93, 0.965]],
           [1.6, [0.995, 0.99, 0.985], [75.0, 85.0, 50.0], [0.985, 0.98, 0.97]]]
    hnsw = [[1.3, [0.93, 0.9, 0.99], [40.0, 40.0, 45.0], [0.91, 0.88, 0.98]],
            [3.6, [0.99, 0.985, 0.995], [70.0, 70.0, 80.0], [0.98, 0.97, 0.99]]]
    raw = _two_point_calibration(ivf, hnsw, 100_000)
    pts = raw["points"]
    fit = fit_planner(raw, 0.95)
    st = fit.settings
    assert st.band_ivf == (1.6, 1.6) and st.band_run_ivf == (1.0, 1.0)
    assert st.band_hnsw_ef == (3.6, 3.6) and st.band_run_hnsw_ef == (1.3, 1.3)
    assert st.ivf_mult(0.1) == 1.6 and st.ivf_mult(0.1, run=True) == 1.0
    assert st.ef_mult(0.5) == 3.6 and st.ef_mult(0.5, run=True) == 1.3
    np.testing.assert_array_equal(st.ivf_mults(np.array([0.1, 0.1]), np.array([False, True])), [1.6, 1.0])
    np.testing.assert_array_equal(st.ef_mults(np.array([0.5, 0.5]), np.array([True, False])), [1.3, 3.6])
    # a scattered filter's IVF recall: of the kinds it can be (planner.SCATTERED_KINDS: not the
    # range kind, nor the random one where the evenness test applies, from 0 here)
    assert fit.recall_ivf == (0.99, 0.99) and fit.recall_run_ivf == (0.98, 0.98)
    np.testing.assert_allclose(fit.expected(1, np.array([0.1, 0.1]), np.array([False, True])), [0.99, 0.98])
    np.testing.assert_allclose(fit.expected(2, np.array([0.5, 0.5]), np.array([False, True])), [0.985, 0.99])
    assert PlannerSettings.from_dict(st.to_dict()) == st
    fixed = st.with_overrides({"hnsw_ef": 5.0, "ivf_candidates": 30.0})
    assert fixed.band_run_hnsw_ef == () and fixed.band_run_ivf == () and fixed.ef_mult(0.5, run=True) == 5.0
    # a calibration without the range kind: no run budgets, runs planned with the scattered ones
    solo = fit_planner({**raw, "kinds": ["random", "correlated"],
                        "points": [{**p, "exact": p["exact"][:2],
                                    **{f: [[e[0], e[1][:2], e[2][:2], e[3][:2]] for e in p[f]] for f in ("ivf", "hnsw")}}
                                   for p in pts]}, 0.95).settings
    assert solo.band_run_ivf == () and solo.ivf_mult(0.1, run=True) == solo.ivf_mult(0.1) == 1.6
    # the index: a window and a scattered filter of the same size get their own budgets
    # (an even filter's budgets, from the random kind, have their own test: off here; so has
    # the exact scan of a filter held by fewer lists than IVF opens: one list asked here)
    fi = indexes["filtered"]
    import dataclasses

    old = fi._fit(None)
    try:
        fi._fits[None] = dataclasses.replace(old, settings=dataclasses.replace(
            st, exact_max_rows=25.0, exact_run_factor=1.0, probe_min_selectivity=2.0, hnsw_min_selectivity=0.3,
            band_even_ivf=(), band_even_hnsw_ef=(), ivf_min_lists=0.5))
        n = fi.ntotal
        q = data[1][:1]
        for sel, route, budget in ((0.1, 1, "candidates"), (0.5, 2, "ef")):
            m = int(sel * n)
            window = fi.ids[:m].copy()
            scattered = np.sort(np.random.default_rng(4).choice(fi.ids, m, replace=False))
            ew, es = fi.explain(q, K, filter=window), fi.explain(q, K, filter=scattered)
            assert ew.routes[0] == es.routes[0] == route
            want_w, want_s = ((1.0, 1.6) if route == 1 else (1.3, 3.6))
            got_w, got_s = getattr(ew, budget)[0], getattr(es, budget)[0]
            if route == 1:
                assert got_w == max(K, int(np.ceil(st.ivf_candidates * want_w * K)))
                assert got_s == max(K, int(np.ceil(st.ivf_candidates * want_s * K)))
            else:
                assert got_w == max(K, int(np.ceil(want_w * K))) and got_s == int(np.ceil(want_s * K))
        # a batch with one filter per query plans each by its own shape: the answers of each
        # query alone, and the run's budget differs from the scattered filter's
        m = int(0.5 * n)
        window = fi.ids[:m].copy()
        scattered = np.sort(np.random.default_rng(5).choice(fi.ids, m, replace=False))
        qq = data[1][:2]
        both = fi.search(qq, K, filter=Filter.per_query([window, scattered]))
        for i, f in enumerate((window, scattered)):
            one = fi.search(qq[i], K, filter=f)
            np.testing.assert_array_equal(both.ids[i], one.ids[0])
            np.testing.assert_array_equal(both.scores[i], one.scores[0])
        eb = fi.explain(qq, K, filter=Filter.per_query([window, scattered]))
        assert list(eb.routes) == [2, 2] and eb.ef[0] == max(K, int(np.ceil(1.3 * K))) and eb.ef[1] == int(np.ceil(3.6 * K))
        # settings saved before run budgets existed: a run is planned with the scattered budgets
        fi._fits[None] = dataclasses.replace(fi._fits[None], settings=dataclasses.replace(
            fi._fits[None].settings, band_run_ivf=(), band_run_hnsw_ef=()))
        m = int(0.1 * n)
        assert fi.explain(q, K, filter=fi.ids[:m].copy()).candidates[0] == max(K, int(np.ceil(st.ivf_candidates * 1.6 * K)))
    finally:
        fi._fits[None] = old


def test_an_even_filter_gets_the_budgets_of_the_random_kind(indexes, data):
    """The fit keeps, per band, the budgets that the calibration's random kind reached on
    its own; the index grants them to a filter its evenness test finds spread over the
    data (a random subset, a window of rows in random order), never to a concentrated one
    or below the test's power; alone, in a batch and in explain alike, and the answers are
    those of the same budgets set by hand."""
    import dataclasses

    from gsu.index.filtered import EVEN_MIN_HITS
    from gsu.index.planner import fit_planner

    # kinds: random, correlated, range. IVF: random reaches at 1.0, the others at 2.5; the
    # beam: random at 1.3, the others at 3.6
    ivf = [[1.0, [0.985, 0.95, 0.9], [60.0, 70.0, 40.0], [0.97, 0.93, 0.88]],
           [2.5, [0.995, 0.99, 0.985], [75.0, 85.0, 50.0], [0.985, 0.98, 0.97]]]
    hnsw = [[1.3, [0.99, 0.9, 0.9], [40.0, 40.0, 45.0], [0.98, 0.88, 0.88]],
            [3.6, [0.99, 0.985, 0.995], [70.0, 70.0, 80.0], [0.98, 0.97, 0.99]]]
    raw = _two_point_calibration(ivf, hnsw, 3000)
    pts = raw["points"]
    fit = fit_planner(raw, 0.95)
    st = fit.settings
    assert st.band_ivf == (2.5, 2.5) and st.band_even_ivf == (1.0, 1.0)
    assert st.band_hnsw_ef == (3.6, 3.6) and st.band_even_hnsw_ef == (1.3, 1.3)
    assert fit.recall_even_ivf == (0.985, 0.985) and fit.recall_even_hnsw == (0.99, 0.99)
    # routes: every kind is cheapest on IVF at 0.1 (the beam needs 3.6 there), the random kind
    # alone on the walk (1.3, 40 µs against IVF's 60): its own thresholds send even filters there
    assert st.hnsw_min_selectivity > 0.1 and st.even_hnsw_min_selectivity == 0.0
    assert st.even.hnsw_min_selectivity == 0.0 and st.even_pays(0.1)
    ev = st.even
    assert ev.band_ivf == (1.0, 1.0) and ev.band_hnsw_ef == (1.3, 1.3) and ev.band_run_ivf == (1.0, 1.0)
    assert st.has_even and not ev.has_even and st.even_pays(0.1) and st.even_pays(0.5, run=True)
    # (a scattered filter: IVF recall of the kinds it can be, planner.SCATTERED_KINDS)
    np.testing.assert_allclose(fit.expected(1, np.array([0.1, 0.1]), None, np.array([True, False])), [0.985, 0.99])
    np.testing.assert_allclose(fit.expected(2, np.array([0.5, 0.5]), None, np.array([True, False])), [0.99, 0.985])
    assert PlannerSettings.from_dict(st.to_dict()) == st
    fixed = st.with_overrides({"ivf_candidates": 30.0})
    assert fixed.band_even_ivf == () and fixed.band_even_hnsw_ef == (1.3, 1.3)
    assert st.with_overrides({"hnsw_min_selectivity": 0.3}).even_hnsw_min_selectivity is None
    # a calibration without the random kind: no even budgets
    nr = fit_planner({**raw, "kinds": ["correlated", "range"],
                      "points": [{**p, "exact": p["exact"][1:], **{f: [[e[0], e[1][1:], e[2][1:], e[3][1:]] for e in p[f]]
                                                                 for f in ("ivf", "hnsw")}} for p in pts]}, 0.95).settings
    assert nr.band_even_ivf == () and not nr.has_even

    fi = indexes["filtered"]
    x, q, ids, lab, centers = data
    old = fi._fit(None)
    try:
        # budgets first (the routes of every kind for even filters too); one IVF list asked at
        # least, so the concentrated filters stay on IVF (a filter held by fewer lists than IVF
        # opens takes the exact scan: its own test)
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(
            st, exact_max_rows=25.0, exact_run_factor=1.0, probe_min_selectivity=2.0, hnsw_min_selectivity=0.3,
            even_hnsw_min_selectivity=None, even_probe_min_selectivity=None, ivf_min_lists=0.3))
        n = fi.ntotal
        assert fi._even_min_share() == EVEN_MIN_HITS / fi._uniform_design()[0].shape[0] < 0.1
        rng = np.random.default_rng(3)
        m = int(0.1 * n)
        spread = np.sort(rng.choice(fi.ids, m, replace=False))
        # concentrated: the rows of the clusters nearest the first query
        near = np.argsort(-(centers @ q[0]))
        conc = np.sort(ids[np.isin(lab, near[:3])][:m])
        few = np.sort(rng.choice(fi.ids, int(0.02 * n), replace=False))  # below the test's power
        cand = lambda mult: max(K, int(np.ceil(st.ivf_candidates * mult * K)))  # noqa: E731
        assert fi.explain(q[0], K, filter=spread).candidates[0] == cand(1.0)
        assert fi.explain(q[0], K, filter=conc).candidates[0] == cand(2.5)
        assert fi.explain(q[0], K, filter=few).candidates[0] == cand(2.5)
        # the answers are those of the even budget set by hand
        for f, mult in ((spread, 1.0), (conc, 2.5)):
            a = fi.search(q[0], K, filter=f)
            b = fi.search(q[0], K, filter=f, ivf_candidates=st.ivf_candidates * mult, ivf_min_lists=0.3 * mult)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
        # the beam at 50 %: an even window of rows (ids in random order over the rows)
        half = np.sort(rng.choice(fi.ids, n // 2, replace=False))
        assert fi.explain(q[0], K, filter=half).ef[0] == 13
        conc_half = np.sort(ids[np.isin(lab, near[:12])][: n // 2])
        assert fi.explain(q[0], K, filter=conc_half).ef[0] == 36
        # a batch with one filter per query decides per query, as each alone
        fs = [spread, conc, few, half, conc_half]
        qq = q[: len(fs)]
        both = fi.search(qq, K, filter=Filter.per_query(fs))
        eb = fi.explain(qq, K, filter=Filter.per_query(fs))
        assert list(eb.candidates[:3]) == [cand(1.0), cand(2.5), cand(2.5)] and list(eb.ef[3:]) == [13, 36]
        for i, f in enumerate(fs):
            one = fi.search(qq[i], K, filter=f)
            np.testing.assert_array_equal(both.ids[i], one.ids[0])
            np.testing.assert_array_equal(both.scores[i], one.scores[0])
        # the random kind's own thresholds: an even 10 % filter walks with its beam, a
        # concentrated one stays on IVF; alone, in a batch and in explain alike
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(
            st, exact_max_rows=25.0, exact_run_factor=1.0, probe_min_selectivity=2.0, hnsw_min_selectivity=0.3,
            even_hnsw_min_selectivity=0.05, even_probe_min_selectivity=2.0, ivf_min_lists=0.3))
        es, ec = fi.explain(q[0], K, filter=spread), fi.explain(q[0], K, filter=conc)
        assert (es.routes[0], es.ef[0], es.candidates[0]) == (2, 13, 0) and (ec.routes[0], ec.candidates[0]) == (1, cand(2.5))
        fs2 = [spread, conc, few]
        both = fi.search(q[:3], K, filter=Filter.per_query(fs2))
        eb = fi.explain(q[:3], K, filter=Filter.per_query(fs2))
        assert list(eb.routes) == [2, 1, 1] and eb.ef[0] == 13
        for i, f in enumerate(fs2):
            one = fi.search(q[i], K, filter=f)
            np.testing.assert_array_equal(both.ids[i], one.ids[0])
            np.testing.assert_array_equal(both.scores[i], one.scores[0])
        a = fi.search(q[0], K, filter=spread)
        b = fi.search(q[0], K, filter=spread, route="hnsw", hnsw_ef=1.3)
        np.testing.assert_array_equal(a.ids, b.ids)
        # the verdict is kept on a filter object searched again
        flt = Filter(spread)
        assert fi.search(q[1], K, filter=flt).ids.shape == (1, K)
        np.testing.assert_array_equal(fi.search(q[1], K, filter=flt).ids, fi.search(q[1], K, filter=spread).ids)
    finally:
        fi._fits[None] = old


def test_the_probe_threshold_is_priced_on_the_kinds_that_take_it(monkeypatch):
    """Where contiguous runs take route thresholds of their own, the probe's threshold of
    every kind is fitted on the other kinds' costs (the range kind's dear probe no longer
    keeps the correlated kind off it); the plain walk's threshold stays where every kind's
    costs put it."""
    import gsu.index.planner as planner
    from gsu.index.planner import NEVER, fit_planner

    def entry(costs: list[float]) -> list:
        return [1.0, [0.99, 0.99, 0.99], costs, [0.98, 0.98, 0.98]]

    # every kind: IVF 220, probe 400, walk 430 (IVF); the range kind alone walks (30);
    # random + correlated: IVF 180, probe 100, walk 400 -> the probe, the walk's threshold kept
    pts = [{"s": s_, "m": int(s_ * 100_000), "exact": [s_ * 1e5] * 3, "ivf": [entry([60.0, 120.0, 40.0])],
            "probe": [entry([60.0, 40.0, 300.0])], "hnsw": [entry([200.0, 200.0, 30.0])]} for s_ in (0.1, 0.5)]
    raw = {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
           "points": pts, "complete": True}
    st = fit_planner(raw, 0.95).settings
    assert st.probe_min_selectivity == 0.0 and st.hnsw_min_selectivity == NEVER
    assert st.run_hnsw_min_selectivity == 0.0 and st.probe_min(True) == NEVER
    monkeypatch.setattr(planner, "SPLIT_BY_USERS", False)
    old = fit_planner(raw, 0.95).settings
    assert old.probe_min_selectivity == NEVER and old.hnsw_min_selectivity == NEVER and old.run_hnsw_min_selectivity == 0.0
    # every kind's split stands where no kind takes thresholds of its own
    monkeypatch.setattr(planner, "SPLIT_BY_USERS", True)
    monkeypatch.setattr(planner, "RUN_ROUTES", False)
    assert fit_planner(raw, 0.95).settings.probe_min_selectivity == NEVER


def test_an_even_filter_stays_on_ivf_where_the_random_kind_does(indexes, data, monkeypatch):
    """Where every kind's split walks the graph but the random kind's own costs keep IVF
    (its rows spread over the lists: a walk finds few of them), the fit sends even filters
    to IVF with the random kind's budgets, from the selectivity the evenness test can tell
    them (``even_from``) — never below it, and not with the rule off; the index plans an even
    10 % filter on IVF and a concentrated one on the walk, alone, in a batch and in explain
    alike, with the answers of the same budgets set by hand."""
    import dataclasses

    from gsu.index import planner
    from gsu.index.planner import NEVER, fit_planner

    # kinds: random, correlated, range. IVF: random reaches at 1.0 (50 µs), correlated only at
    # 2.5 (400 µs); the walk reaches at 1.3 for every kind, cheap for correlated and range
    # (40, 30 µs), dear for random (120 µs): every kind together walks (63 against 173 µs)
    ivf = [[1.0, [0.985, 0.9, 0.98], [50.0, 300.0, 40.0], [0.97, 0.88, 0.965]],
           [2.5, [0.99, 0.985, 0.99], [70.0, 400.0, 50.0], [0.98, 0.97, 0.98]]]
    hnsw = [[1.3, [0.99, 0.99, 0.99], [120.0, 40.0, 30.0], [0.98, 0.98, 0.98]]]
    raw = _two_point_calibration(ivf, hnsw, 100_000)
    fit = fit_planner(raw, 0.95)
    st = fit.settings
    assert st.hnsw_min_selectivity == 0.0 and st.run_hnsw_min_selectivity is None
    assert st.even_hnsw_min_selectivity == NEVER and st.even_probe_min_selectivity == NEVER
    ev = st.even
    assert ev.hnsw_min_selectivity == NEVER and ev.band_ivf == (1.0, 1.0) and st.even_pays(0.1) and st.even_pays(0.5)
    assert fit_planner(raw, 0.95, even_from=0.3).settings.even_hnsw_min_selectivity == NEVER  # the 50 % point
    assert fit_planner(raw, 0.95, even_from=0.6).settings.even_hnsw_min_selectivity is None  # no point the test tells
    monkeypatch.setattr(planner, "EVEN_IVF_LONGER", False)
    assert fit_planner(raw, 0.95).settings.even_hnsw_min_selectivity is None
    monkeypatch.setattr(planner, "EVEN_IVF_LONGER", True)

    fi = indexes["filtered"]
    x, q, ids, lab, centers = data
    old = fi._fit(None)
    try:
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(st, exact_max_rows=25.0, exact_run_factor=1.0))
        n = fi.ntotal
        rng = np.random.default_rng(5)
        m = int(0.1 * n)
        spread = np.sort(rng.choice(fi.ids, m, replace=False))
        near = np.argsort(-(centers @ q[0]))
        conc = np.sort(ids[np.isin(lab, near[:3])][:m])
        cand = max(K, int(np.ceil(st.ivf_candidates * 1.0 * K)))
        es, ec = fi.explain(q[0], K, filter=spread), fi.explain(q[0], K, filter=conc)
        assert (es.routes[0], es.candidates[0]) == (1, cand) and ec.routes[0] == 2
        a = fi.search(q[0], K, filter=spread)
        b = fi.search(q[0], K, filter=spread, route="ivf", ivf_candidates=st.ivf_candidates, ivf_min_lists=st.ivf_min_lists)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        fs = [spread, conc]
        both = fi.search(q[:2], K, filter=Filter.per_query(fs))
        assert list(fi.explain(q[:2], K, filter=Filter.per_query(fs)).routes) == [1, 2]
        for i, f in enumerate(fs):
            one = fi.search(q[i], K, filter=f)
            np.testing.assert_array_equal(both.ids[i], one.ids[0])
            np.testing.assert_array_equal(both.scores[i], one.scores[0])
    finally:
        fi._fits[None] = old


def test_runs_take_the_route_thresholds_of_the_range_kind(indexes, data, monkeypatch):
    """Where the calibration's range kind is cheapest on another route than every kind
    together, the fit gives contiguous runs their own thresholds (the cheapest split of the
    range kind's own costs); the index plans a run by them and a scattered filter by every
    kind's, alone, in a batch and in explain alike; an explicit threshold drops them; a fit
    with run routes off keeps one set of thresholds."""
    import dataclasses

    from gsu.index import planner
    from gsu.index.planner import NEVER, fit_planner

    # kinds: random, correlated, range; every kind reaches the target at the first step of
    # each family. The walk is cheap for the scattered kinds and dear for the range kind,
    # IVF the other way round; over every kind the walk is cheaper (70 against 80 µs)
    ivf = [[1.0, [0.99, 0.99, 0.99], [100.0, 100.0, 40.0], [0.98, 0.98, 0.98]]]
    hnsw = [[1.3, [0.99, 0.99, 0.99], [30.0, 30.0, 150.0], [0.98, 0.98, 0.98]]]
    raw = _two_point_calibration(ivf, hnsw, 3000)
    st = fit_planner(raw, 0.95).settings
    assert st.hnsw_min_selectivity == 0.0 and st.run_hnsw_min_selectivity == NEVER and st.run_probe_min_selectivity == NEVER
    assert st.hnsw_min(False) == 0.0 and st.hnsw_min(True) == NEVER and st.probe_min(True) == NEVER
    np.testing.assert_array_equal(st.hnsw_mins(np.array([True, False])), [NEVER, 0.0])
    assert PlannerSettings.from_dict(st.to_dict()) == st
    assert st.with_overrides({"hnsw_min_selectivity": 0.3}).run_hnsw_min_selectivity is None
    # the same costs for every kind: one set of thresholds
    same = [[1.3, [0.99, 0.99, 0.99], [30.0, 30.0, 30.0], [0.98, 0.98, 0.98]]]
    assert fit_planner(_two_point_calibration(ivf, same, 3000), 0.95).settings.run_hnsw_min_selectivity is None
    monkeypatch.setattr(planner, "RUN_ROUTES", False)
    assert fit_planner(raw, 0.95).settings.run_hnsw_min_selectivity is None
    monkeypatch.setattr(planner, "RUN_ROUTES", True)

    fi = indexes["filtered"]
    x, q, ids, lab, centers = data
    fit = fit_planner(raw, 0.95)
    old = fi._fit(None)
    try:
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(
            fit.settings, exact_max_rows=25.0, exact_run_factor=1.0, band_even_hnsw_ef=(), band_even_ivf=()))
        n = fi.ntotal
        rows_ids = fi.hnsw._idmap.ids
        run = np.sort(rows_ids[n // 4: n // 4 + n // 2])  # the ids of a contiguous run of rows
        scat = np.sort(np.random.default_rng(5).choice(fi.ids, n // 2, replace=False))
        assert fi.hnsw.compile_filter(run, 1).run is not None
        er, es = fi.explain(q[0], K, filter=run), fi.explain(q[0], K, filter=scat)
        assert er.routes[0] == 1 and es.routes[0] == 2
        assert list(fi.plan(2, K, filter=Filter.per_query([run, scat]))) == [1, 2]
        both = fi.search(q[:2], K, filter=Filter.per_query([run, scat]))
        eb = fi.explain(q[:2], K, filter=Filter.per_query([run, scat]))
        assert list(eb.routes) == [1, 2]
        for i, f in enumerate((run, scat)):
            one = fi.search(q[i], K, filter=f)
            np.testing.assert_array_equal(both.ids[i], one.ids[0])
            np.testing.assert_array_equal(both.scores[i], one.scores[0])
        forced = fi.search(q[0], K, filter=run, route="ivf")
        np.testing.assert_array_equal(fi.search(q[0], K, filter=run).ids, forced.ids)
    finally:
        fi._fits[None] = old


def test_an_even_filter_walks_with_the_smaller_beam_of_probe_and_walk_above_the_probe_share():
    """Where an even filter allows at least ``probe_min_share`` of the rows the probe never
    gives up on it, so the smaller beam the random kind reached with the probe or the plain
    walk is its beam; below that share the route's own family decides."""
    from gsu.index.planner import fit_planner

    three = lambda v: [v, v, v]  # noqa: E731
    ivf = [[4.0, three(0.99), three(300.0), three(0.98)]]
    probe = [[1.3, [0.985, 0.9, 0.9], three(50.0), [0.975, 0.88, 0.88]], [3.6, three(0.99), three(80.0), three(0.98)]]
    hnsw = [[2.8, [0.985, 0.9, 0.9], three(60.0), [0.975, 0.88, 0.88]], [3.6, three(0.99), three(70.0), three(0.98)]]
    pts = [{"s": s_, "m": int(s_ * 100_000), "exact": three(1e5), "ivf": ivf, "probe": probe, "hnsw": hnsw} for s_ in (0.1, 0.5)]
    st = fit_planner({"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
                      "points": pts, "complete": True}, 0.95).settings
    assert st.band_hnsw_ef == (3.6, 3.6)  # every kind: 3.6 on either walk
    # the random kind: the walk's 2.8 at 0.1 (HNSW band), the probe's 1.3 at 0.5 (>= 0.4)
    assert st.hnsw_min_selectivity <= 0.1 and st.band_even_hnsw_ef == (2.8, 1.3)
    assert st.even.ef_mult(0.5) == 1.3 and st.even.ef_mult(0.1) == 2.8


def test_calibration_times_the_density_probe_as_search_runs_it(monkeypatch):
    """The probe family is the IVF route with the walk's density probe first: a walk that
    gives up is answered by IVF (not by the exact fallback of a short graph answer)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6000, 16)).astype(np.float32)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=48, calibrate=False)
    fi.add(x)
    calls = []
    real = FilteredIndex._search_one

    def spy(self, q, k, cf, code, probe, ef, cand, lists):
        calls.append((code, probe, cand))
        return real(self, q, k, cf, code, probe, ef, cand, lists)

    monkeypatch.setattr(FilteredIndex, "_search_one", spy)
    cal = fi.calibrate(n_queries=24)
    probed = [c for c in calls if c[1] > 0]
    assert probed, "the calibration measured no probe step"
    assert {(code, cand > 0) for code, _, cand in probed} == {(1, True)}, {(code, cand > 0) for code, _, cand in probed}  # IVF, with the IVF budget for a give-up
    # on random vectors a random 10 % filter is sparse near every query: each walk gives up,
    # so the probe's recall is IVF's at the budget it falls back to, not the exact scan's 1.0
    pt = next(p for p in cal.points if p["s"] == 0.1)
    if pt["probe"]:
        ivf = {e[0]: e[1][0] for e in pt["ivf"]}
        assert min(e[1][0] for e in pt["probe"]) <= max(ivf.values())


def test_calibration_stops_climbing_a_ladder_whose_steps_change_no_recall(monkeypatch):
    """A family whose larger budgets leave every kind's recall unchanged (here: every
    approximate measurement returns the same recall, below the target) stops after two
    such steps instead of climbing its whole ladder; the exact scan is still timed."""
    import gsu.index._calibrate as calmod
    from gsu.index.planner import HNSW_LADDER, IVF_LADDER

    rng = np.random.default_rng(9)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=32, calibrate=False)
    fi.add(x)
    real = calmod._Timer.run

    def flat_recall(self, id_sets, truth, code, **kw):
        r = real(self, id_sets, truth, code, **kw)
        return r if code == calmod._EXACT else (0.5, r[1], 0.4)

    monkeypatch.setattr(calmod._Timer, "run", flat_recall)
    cal = fi.calibrate(n_queries=16)
    assert len(cal.points) >= 3
    full = {"ivf": 0, "hnsw": 0}
    for p in cal.points:
        for fam in full:
            # the first step and two that changed nothing (fewer where the cost bound
            # abandons the family first)
            assert len(p[fam]) <= 3, (p["s"], fam, [e[0] for e in p[fam]])
            full[fam] += len(p[fam]) == 3
        assert len(p["exact"]) == len(calmod.KINDS)
    assert min(full.values()) >= 1, full
    assert len(IVF_LADDER) > 3 and len(HNSW_LADDER) > 3


def test_serial_and_parallel_twins_keep_separate_cache_files():
    """numba keys its on-disk cache by function name and bytecode, not by compile flags:
    twins compiled from one body must not share cache files, or the parallel one loads
    the serial machine code on the next run."""
    from gsu.index import _filter_kernels as fk
    from gsu.index import _seismic_kernels as sk

    pairs = [(fk._ivf_search_shared_ser, fk._ivf_search_shared_par), (fk._gather_topk_ip_sel_ser, fk._gather_topk_ip_sel_par),
             (fk._gather_topk_ip_shared_ser, fk._gather_topk_ip_shared_par), (sk.search_serial, sk.search_parallel)]
    for ser, par in pairs:
        assert ser.targetoptions.get("parallel") is not True and par.targetoptions["parallel"] is True
        assert ser._cache._cache_file._index_name != par._cache._cache_file._index_name, ser.py_func.__qualname__
        assert par.py_func.__code__ is ser.py_func.__code__  # one body


def test_ids_bitmap64_and_bitmap64_rows_match_numpy():
    """The one-pass id → bitmap kernel (any order — shuffled, ascending, descending, sorted
    stretches —, repeats, ids outside dropped), the sorted rows → bitmap kernel and the
    bitmap → rows extraction against numpy, for sizes on and off a word boundary; both ways
    of setting the bits (a word in registers; a byte per row, packed, for dense spread-out
    sets) are exercised, and the read-modify-write streams of sparse or spread-out ids, with
    and without a remainder past the streams."""
    from gsu.index import _filter_kernels as fk

    def packed(rows, n):  # numpy's answer, the faiss IDSelectorBitmap layout
        mask = np.zeros(((n + 63) >> 6) * 64, bool)
        mask[rows] = True
        return np.packbits(mask, bitorder="little").view(np.uint64)

    rng = np.random.default_rng(5)
    ways = set()
    for n in (1, 63, 64, 65, 1000, 4096):
        for lo in (0, 11, -7):  # an id map whose first id is negative too
            for m in (0, 1, n // 20 + 5, n // 3, n, 3 * n):  # n // 20 + 5: the read-modify-write streams
                for order in ("shuffled", "ascending", "descending", "sorted runs"):
                    ids = rng.integers(lo - 50, lo + n + 50, m).astype(np.int64)
                    ids = np.concatenate([ids, ids[: m // 4], [np.iinfo(np.int64).min, np.iinfo(np.int64).max]])
                    if order == "shuffled":
                        rng.shuffle(ids)
                    elif order == "ascending":
                        ids.sort()
                    elif order == "descending":
                        ids = np.sort(ids)[::-1].copy()
                    else:  # ascending stretches one after another (word changes back and forth)
                        ids = np.concatenate([np.sort(c) for c in np.array_split(rng.permutation(ids), 5)])
                    want = np.unique(ids[(ids >= lo) & (ids < lo + n)]) - lo
                    ways.add(bool(fk._bytes_pay(ids, n)))
                    bm, cnt, rmin, rmax = fk.ids_bitmap64(ids, lo, n)
                    assert bm.shape == ((n + 63) >> 6,) and cnt == want.shape[0]
                    np.testing.assert_array_equal(bm, packed(want, n))
                    np.testing.assert_array_equal(fk.rows_bitmap64(want, n), packed(want, n))
                    assert (rmin, rmax) == ((int(want[0]), int(want[-1])) if cnt else (n, -1))
                    np.testing.assert_array_equal(fk.bitmap64_rows(bm, cnt), want)
    # a dense window (the register way) and the same number of rows spread out (bytes)
    for n in (1000, 4097):
        win = np.arange(100, 100 + n // 2, dtype=np.int64)
        spread = np.sort(rng.choice(n, n // 2, replace=False)).astype(np.int64)
        assert not fk._bytes_pay(win, n) and fk._bytes_pay(spread, n)
        for rows in (win, spread):
            np.testing.assert_array_equal(fk.ids_bitmap64(rows, 0, n)[0], packed(rows, n))
            np.testing.assert_array_equal(fk.rows_bitmap64(rows, n), packed(rows, n))
    assert ways == {False, True}
    full = np.full(3, np.iinfo(np.uint64).max, np.uint64)  # every bit, bit 63 included
    np.testing.assert_array_equal(fk.bitmap64_rows(full, 192), np.arange(192))
    np.testing.assert_array_equal(fk.bitmap64_rows(full, 70), np.arange(70))  # stops at m rows


@pytest.mark.parametrize("offset", [0, 1000])
def test_large_plain_id_arrays_compile_to_a_bitmap_and_match_the_filter_on_every_route(data, offset):
    """Under identity or offset ids, a plain id array of at least 1/16 of the rows compiles
    straight to a bitmap (rows extracted only when a route asks for them), or, when it is one
    ascending run of consecutive ids, to that run (clipped to the index; no bitmap until a
    route asks); unsorted, with repeats, ids outside the index and a contiguous window, it
    gives on every route what ``Filter.from_ids`` of the same ids gives."""
    from gsu.index._mutable import BITMAP_FIRST_SHARE

    x, q, _, _, _ = data
    ids = offset + np.arange(N, dtype=np.int64)
    fi = FilteredIndex(D, "ip", M=16, ef_construction=100, nlist=32, seed=0, calibrate=False)
    fi.add(x, ids)
    rng = np.random.default_rng(23)
    routes = (("auto", {}), ("exact", {"route": "exact"}), ("ivf", {"route": "ivf"}), ("hnsw", {"route": "hnsw"}),
              ("probe", {"exact_max_rows": 25, "hnsw_min_selectivity": 1.0, "probe_min_selectivity": 0.0}))

    def same_as_the_filter(qv, plain, s):
        """``plain`` (a plain array) answers on every route as ``Filter.from_ids(s)``."""
        for route, kw in routes:
            a = fi.search(qv, K, filter=plain, **kw)
            b = fi.search(qv, K, filter=Filter.from_ids(s), **kw)
            np.testing.assert_array_equal(a.ids, b.ids, err_msg=route)
            np.testing.assert_array_equal(a.scores, b.scores, err_msg=route)
            assert np.isin(a.ids[a.ids >= 0], s).all()

    sets = [rng.choice(ids, m, replace=False) for m in (-(-N // BITMAP_FIRST_SHARE), 600, 1500, 2900)]
    sets.append(ids[400:1400].copy())  # one contiguous run
    for i, s in enumerate(sets):
        cf = fi.hnsw.compile_filter(s, 1)
        if i == len(sets) - 1:  # the run: its bounds, no bitmap yet
            assert cf._rows is None and "bitmap64" not in cf._masks and cf.run == (400, 1400)
        else:
            assert cf._rows is None and "bitmap64" in cf._masks and cf.run is None  # the bitmap-first form
        assert cf.count == np.unique(s).shape[0]
        np.testing.assert_array_equal(cf.rows, np.unique(s) - offset)
        same_as_the_filter(q[i], s, s)
        same_as_the_filter(q[i], rng.permutation(np.concatenate([s, s[:5], [offset - 1, offset + N, -(2**62)]])), s)
    # runs reaching past the index's ids are clipped; a run of the right length with a repeat
    # (not strictly increasing) is not a run
    for s, run in ((np.arange(offset - 300, offset + 700, dtype=np.int64), (0, 700)),
                   (np.arange(offset + N - 200, offset + N + 800, dtype=np.int64), (N - 200, N)),
                   (np.arange(offset + N + 5, offset + N + 1005, dtype=np.int64), (N, N)),
                   (np.concatenate([np.arange(offset + 10, offset + 1010), [offset + 1010]]).astype(np.int64), None)):
        if run is None:
            s[5] = s[4]  # a repeat, one id short of the span
            s = np.sort(s)
        cf = fi.hnsw.compile_filter(s, 1)
        assert cf.run == run or (run is None and cf.run is None), (cf.run, run)
        inside = np.unique(s[(s >= offset) & (s < offset + N)])
        assert cf.count == inside.shape[0]
        np.testing.assert_array_equal(cf.rows, inside - offset)
        same_as_the_filter(q[1], s, s)
    # below 1/16: a sorted array compiles by a copy, an unsorted one from 1/64 of the rows to
    # the bitmap (cheaper than sorting it), below that by a sort; the same answers everywhere
    from gsu.index._mutable import UNSORTED_BITMAP_SHARE

    for m, bitmap in ((-(-N // UNSORTED_BITMAP_SHARE), True), (N // BITMAP_FIRST_SHARE - 1, True),
                      (N // UNSORTED_BITMAP_SHARE - 4, False)):  # (3 repeats are appended below)
        s = np.sort(rng.choice(ids, m, replace=False))
        assert fi.hnsw.compile_filter(s, 1)._rows is not None  # sorted: rows straight away
        u = rng.permutation(np.concatenate([s, s[:3]]))
        cf = fi.hnsw.compile_filter(u, 1)
        assert (cf._rows is None and "bitmap64" in cf._masks) is bitmap, m
        np.testing.assert_array_equal(cf.rows, s - offset)
        same_as_the_filter(q[0], u, s)
        c = fi.hnsw.search(q[0], K, filter=u)  # HNSWIndex takes a plain array the same way
        np.testing.assert_array_equal(c.ids, fi.hnsw.search(q[0], K, filter=Filter.from_ids(s)).ids)


@pytest.mark.parametrize("noise", [1e-2, 1e-6])
def test_ivf_route_reading_codes_first_gives_the_float32_answer(noise):
    """The filter-aware IVF route with the rows' 8-bit codes read first scores the same rows
    (the stop rule counts rows) and returns the same ids, scores, counts and scored-row
    counts, bit for bit, as from float32 rows: shared filters grouped by list and scanned
    against a bitmap, per-query filters, several budgets, near-ties far below the code step."""
    from gsu.index.filters import CompiledFilter

    rng = np.random.default_rng(12)
    d, n, nq = 64, 4000, 20
    base = rng.standard_normal((30, d)).astype(np.float32)
    x = (base[rng.integers(0, 30, n)] + noise * rng.standard_normal((n, d))).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    fi = FilteredIndex(d, "ip", M=8, ef_construction=40, nlist=24, seed=0, calibrate=False)
    fi.add(x)
    assert fi.ivf._external
    sq8 = fi._approx()[1]
    X = fi._scoring()
    which = np.arange(nq, dtype=np.int64)
    cases = []
    for m in (40, 400, 3000):
        rows = np.sort(rng.choice(n, m, replace=False)).astype(np.int64)
        cases.append((CompiledFilter.from_rows(rows, n), False))
        cf = CompiledFilter.from_rows(rows, n)
        cf.bitmap64()  # the scan mode (rows tested against the bitmap in the opened lists)
        cases.append((cf, True))
    per = Filter.per_query([np.sort(rng.choice(n, int(rng.integers(5, 2000)), replace=False)) for _ in range(nq)])
    cases.append((per.compile(fi.idmap, nq), False))
    for cf, _ in cases:
        for target, lists in ((10, 1), (100, 4), (1000, 12)):
            outs = []
            for codes in (None, sq8):
                r = np.empty((nq, K), np.int64)
                s = np.empty((nq, K), np.float32)
                c = np.empty(nq, np.int64)
                sc = np.zeros(nq, np.int64)
                fi.ivf.search_compiled(q, K, cf, which, r, s, c, target=target, min_lists=lists, scored=sc, vectors=X, sq8=codes)
                outs.append((r, s, c, sc))
            for a, b in zip(*outs):
                np.testing.assert_array_equal(a, b)


def test_list_scan_rescores_within_five_deviations_of_the_codes_error():
    """The IVF list scan's rescoring bound: five standard deviations of the codes' rounding
    error, sqrt(sum (q_t step_t)^2 / 12), where the query weighs many coordinates (far below
    the worst case, sum |q_t| step_t / 2); the worst case where that is smaller (one
    coordinate); the exact route's bound stays the worst case. Float rounding terms on top
    of either (about 1 % at d = 128)."""
    rng = np.random.default_rng(5)
    d = 128
    step = rng.uniform(0.01, 0.02, d).astype(np.float32)
    q = rng.standard_normal(d).astype(np.float32)
    qp_a = np.empty(d, np.float32)
    qp_b = np.empty(d, np.float32)
    worst = float(fk._sq8_query(q, step, 3.0, qp_a))
    scan = float(fk._sq8_query_scan(q, step, 3.0, qp_b))
    np.testing.assert_array_equal(qp_a, qp_b)
    p = q.astype(np.float64) * step
    sd = math.sqrt(float((p * p).sum()) / 12)
    l1 = float(np.abs(p).sum()) / 2
    assert fk.SCAN_RESCORE_Z == 5.0
    assert worst == pytest.approx(l1, rel=0.02) and scan == pytest.approx(5 * sd, rel=0.02)
    assert scan < 0.5 * worst
    one = np.zeros(d, np.float32)
    one[7] = 2.0  # one coordinate: five deviations (1.44 |q| step) exceed its worst case (0.5 |q| step)
    assert float(fk._sq8_query_scan(one, step, 3.0, qp_b)) == float(fk._sq8_query(one, step, 3.0, qp_a))


def test_calibration_filter_sets_decode_to_their_rows(monkeypatch):
    """Calibration keeps its wide filter sets as bitmaps and its windows as bounds; each
    decodes back to exactly its sorted rows (external ids when given), also past the
    decoded-rows cache budget."""
    from gsu.index._calibrate import _Sets

    rng = np.random.default_rng(2)
    n = 5000
    sets = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for m in (3, 40, 100, 2500, 4999)]
    sets.append(np.arange(700, 1900, dtype=np.int64))
    ids = 10 + 2 * np.arange(n, dtype=np.int64)
    for budget in (_Sets.DECODED_CACHE_BYTES, 8 * 200):
        monkeypatch.setattr(_Sets, "DECODED_CACHE_BYTES", budget)
        s = _Sets(sets, n, ids)
        for _ in range(2):  # the second pass reads the cache where it was kept
            for i, want in enumerate(sets):
                np.testing.assert_array_equal(s.rows(i), want)
                np.testing.assert_array_equal(s[i], ids[want])
        assert s._decoded_bytes <= budget
    # one budget shared by the kinds of a grid point: the second set caches only what is left
    shared = [8 * 3000]
    a, b = _Sets(sets, n, None, shared), _Sets(sets, n, None, shared)
    for s in (a, b):
        for i, want in enumerate(sets):
            np.testing.assert_array_equal(s.rows(i), want)
    assert a._decoded_bytes + b._decoded_bytes <= 8 * 3000 and shared[0] == 8 * 3000 - a._decoded_bytes - b._decoded_bytes


def test_calibration_releases_each_grid_points_filter_sets_before_the_next_draws(monkeypatch):
    """A grid point's filter sets (and their decoded rows) are gone when the next point starts
    drawing, the unfiltered point's included (its sets once outlived it in a closure: 64 MB
    of decoded rows through the rest of a 10^6-row calibration, at its peak); and the
    correlated kind, whose draw holds a block of exact scores, is drawn before any other set
    of its point is kept."""
    import gc
    import weakref

    from gsu.index import _calibrate as cm

    born: list[tuple[float, weakref.ref]] = []
    point = [None]
    init = cm._Sets.__init__

    def tracked_init(self, *a, **kw):
        init(self, *a, **kw)
        born.append((point[0], weakref.ref(self)))

    draw = cm.draw_filters
    seen: list[tuple[int, str, list]] = []

    def tracked_draw(idx, kind, m, *a, **kw):
        if kind != cm.AWAY_KIND:
            if point[0] != m:
                gc.collect()
                alive = [pm for pm, ref in born if ref() is not None]
                seen.append((m, kind, alive))
                point[0] = m
        return draw(idx, kind, m, *a, **kw)

    timer_run = cm._Timer.run
    unfiltered_alive: list[int] = []
    kept_rows: list[int] = []

    def tracked_run(self, id_sets, *a, **kw):
        if isinstance(id_sets, cm._Compiled):  # the unfiltered point, timed on its compiled filters
            gc.collect()
            unfiltered_alive.append(sum(ref() is not None for _, ref in born))
            out = timer_run(self, id_sets, *a, **kw)
            # what the routes derived from them (the exact scan's rows) went with each call
            kept_rows.append(sum(cf._rows is not None for cf in id_sets))
            return out
        return timer_run(self, id_sets, *a, **kw)

    monkeypatch.setattr(cm._Sets, "__init__", tracked_init)
    monkeypatch.setattr(cm, "draw_filters", tracked_draw)
    monkeypatch.setattr(cm._Timer, "run", tracked_run)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=32, calibrate=False)
    fi.add(x)
    fi.calibrate(max_seconds=None, n_queries=24)
    ms = [m for m, _, _ in seen]
    assert len(ms) >= 8 and 3000 in ms  # every grid point, the unfiltered one among them
    for m, kind, alive in seen:
        assert alive == [], (m, alive)  # nothing of the points before
        assert kind == ("random" if m == 3000 else "correlated")  # first drawn at its point
    assert unfiltered_alive and set(unfiltered_alive) == {0}  # its sets gone once compiled
    assert kept_rows and set(kept_rows) == {0}


def test_a_filter_from_ids_compiles_as_the_plain_array_does_and_is_kept(data):
    """``Filter.from_ids(ids)`` takes the plain array's way on an index whose routes read a
    bitmap (large: the bitmap, a run: its bounds, small: the sorted rows), is compiled once
    per index (the compiled form is kept on the filter), and answers on every route as the
    plain array and as the exact scan of the same rows do; on an index of another id map
    the same filter object is compiled anew."""
    from gsu.index._mutable import BITMAP_FIRST_SHARE

    x, q, _, _, _ = data
    fi = FilteredIndex(D, "ip", M=16, ef_construction=100, nlist=32, seed=0, calibrate=False)
    fi.add(x)
    flat = FlatIndex(D, "ip")
    flat.add(x)
    rng = np.random.default_rng(31)
    big = np.sort(rng.choice(N, N // 4, replace=False)).astype(np.int64)
    run = np.arange(300, 300 + N // 8, dtype=np.int64)
    small = np.sort(rng.choice(N, N // BITMAP_FIRST_SHARE // 3, replace=False)).astype(np.int64)
    for s, form in ((big, "bitmap"), (run, "run"), (small, "rows")):
        f = Filter.from_ids(s)
        cf = fi.hnsw.compile_filter(f, 1)
        assert fi.hnsw.compile_filter(f, 1) is cf  # kept on the filter
        if form == "bitmap":
            assert cf._rows is None and "bitmap64" in cf._masks and cf.run is None
        elif form == "run":
            assert cf.run == (300, 300 + N // 8)
        else:
            assert cf._rows is not None
        assert cf.count == s.shape[0]
        np.testing.assert_array_equal(cf.rows, s)
        for route in ("auto", "exact", "ivf", "hnsw"):
            a = fi.search(q[:3], K, filter=f, route=route)
            b = fi.search(q[:3], K, filter=s, route=route)
            np.testing.assert_array_equal(a.ids, b.ids, err_msg=route)
            np.testing.assert_array_equal(a.scores, b.scores, err_msg=route)
        ref = flat.search(q[:3], K, filter=f)  # another id map: compiled anew (rows)
        assert f._cache[0] is flat.idmap and f._cache[1]._rows is not None
        np.testing.assert_array_equal(fi.search(q[:3], K, filter=f, route="exact").ids, ref.ids)
        again = fi.hnsw.compile_filter(f, 1)
        assert again is not cf and again.count == s.shape[0] and fi.hnsw.compile_filter(f, 1) is again


def test_sorted_ids_equals_np_unique_on_any_order():
    """The compile's sorted distinct copy of a request's id array: unsorted with repeats,
    already sorted, descending, int64 extremes, strided input; never the input itself."""
    from gsu.index.filters import sorted_ids

    rng = np.random.default_rng(11)
    cases = [rng.integers(-50, 50, 1000), np.arange(10, 5000, 3), np.arange(5000, 0, -7), rng.choice(10**12, 3000),
             np.array([2**63 - 1, -(2**63), 0, 2**63 - 1, 5]), np.array([7]), np.zeros(0), rng.integers(0, 99, 4000)[::3],
             np.array([5, 3])]
    ro = np.arange(0, 3000, 2, dtype=np.int64)  # read-only, sorted
    ro.flags.writeable = False
    cases.append(ro)
    for a in cases:
        a = np.asarray(a).astype(np.int64, copy=False)
        got = sorted_ids(a)
        np.testing.assert_array_equal(got, np.unique(a))
        assert got.dtype == np.int64 and got.flags.c_contiguous and not np.shares_memory(got, a)
    # both ways of sort_distinct: dense in their span (the bitmap over the span) and sparse
    # (the sort), at the edges of its rule and of int64
    from gsu.index.filters import SORT_BITMAP_MIN, SORT_BITMAP_SPAN, sort_distinct

    m = SORT_BITMAP_MIN
    for a in (rng.integers(-(2**40), -(2**40) + SORT_BITMAP_SPAN * m, m),  # span just within: bitmap
              rng.integers(0, SORT_BITMAP_SPAN * m + 10**6, m),  # too sparse: sort
              rng.integers(0, 50, m - 1),  # too few: sort
              np.concatenate([np.full(m, 2**63 - 1), np.arange(2**63 - 2000, 2**63 - 1)]),  # dense at the top
              rng.permutation(200_000)[:100_000], rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64)):
        a = np.asarray(a, np.int64)
        got = sort_distinct(a.copy())
        np.testing.assert_array_equal(got, np.unique(a))
        assert got.dtype == np.int64


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_calibration_correlated_filters_follow_the_rows_nearest_the_query(metric, monkeypatch):
    """The calibration's query-correlated filter: m distinct sorted rows, never the query's
    own row, 80 % of them among the spread·near rows nearest the query by the exact score
    (the geometry, not the IVF lists), the spreads 1 and 2 cycled over the queries; the
    same rows whether the scores come precomputed or in blocks of queries."""
    from gsu.index._calibrate import _SPREADS, draw_filters

    rng = np.random.default_rng(21)
    x = rng.standard_normal((4000, 12)).astype(np.float32)
    fi = FilteredIndex(12, metric=metric, M=8, ef_construction=40, nlist=40, calibrate=False)
    fi.add(x)
    qrows = np.sort(rng.choice(4000, 9, replace=False))
    Q = fi._scoring_queries(np.ascontiguousarray(x[qrows]))
    S = Q @ fi._scoring().T
    m = 200
    near = int(round(0.8 * m))
    a = list(draw_filters(fi, "correlated", m, Q, qrows, np.random.default_rng(3), S))
    monkeypatch.setattr("gsu.index._calibrate._SCORES_MAX", 4000 * 4)  # scored in blocks of 4 queries
    b = list(draw_filters(fi, "correlated", m, Q, qrows, np.random.default_rng(3)))
    assert _SPREADS == (1, 2)
    for i, (r, r2) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(r, r2)
        assert r.dtype == np.int64 and r.shape == (m,) and np.all(np.diff(r) > 0)
        assert qrows[i] not in r
        sc = S[i].copy()
        sc[qrows[i]] = -np.inf
        pool = np.argsort(-sc, kind="stable")[: _SPREADS[i % 2] * near]
        assert np.isin(r, pool).sum() >= near
        if metric == "l2":  # the ranking is by euclidean distance
            d = ((x - x[qrows[i]]) ** 2).sum(1)
            d[qrows[i]] = np.inf
            assert set(pool[:50]) == set(np.argsort(d, kind="stable")[:50])



def test_graph_walk_seeds_reach_a_region_the_descent_cannot():
    """A level-0 graph of two components (rows 0-3 point one way, rows 4-7 the other; no
    edge between them), entered at row 0: the walk alone returns only the first component;
    with a seed in the second (as FilteredIndex passes rows of the best IVF lists) it
    returns the query's true best rows."""
    from gsu.index import _graph_kernels as gk

    X = np.array([[1, 0.1 * i] for i in range(4)] + [[0.1 * i, 1] for i in range(4)], np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    n, deg = 8, 3
    nbr = np.array([[u for u in range(4) if u != v] if v < 4 else [u for u in range(4, 8) if u != v] for v in range(n)],
                   np.int32).reshape(-1)
    off = np.arange(0, n * deg + 1, deg, dtype=np.int64)
    cum = np.array([0, deg, deg], np.int64)
    C, step = gk.sq8_encode(X)
    q = np.array([0.05, 1.0], np.float32)
    vis, touched = np.zeros(1, np.uint64), np.empty(n, np.int32)
    cs, cr = np.empty(64, np.float32), np.empty(64, np.int64)
    ts, tr = np.empty(8, np.float32), np.empty(8, np.int64)
    buf = np.empty(deg, np.int64)
    best = np.argsort(-(X @ q), kind="stable")[:2]
    assert set(best) <= {4, 5, 6, 7}
    for sd, want_b in ((np.zeros((0, 0), np.int64), False), (np.array([[-1, 6]], np.int64), True)):
        s, r = np.empty(2, np.float32), np.empty(2, np.int64)
        c = gk._beam_one(q, q * step, C, X, nbr, off, cum, 0, 0, gk.ALL, np.zeros(1, np.uint64), np.zeros(0, np.int64), 0, 0,
                         4, 2, vis, touched, cs, cr, ts, tr, buf, s, r, 0.0, sd, 0)
        assert c == 2 and not vis.any()
        if want_b:
            np.testing.assert_array_equal(np.sort(r), np.sort(best))
        else:
            assert set(r) <= {0, 1, 2, 3}


def test_filtered_walk_seeds_are_rows_of_the_best_lists(data, monkeypatch):
    """FilteredIndex seeds its graph walk with one row of each of the WALK_SEEDS lists whose
    centroids score best; with or without them the walk's answers are allowed rows in
    score order, and the seeds do not lower recall on queries off the data."""
    import gsu.index.filtered as F

    x, q = data[0], data[1]
    idx = FilteredIndex(x.shape[1], M=16, ef_construction=64, calibrate=False)
    idx.add(x)
    assert idx._walk_seeds(q) is None  # a small index: no seeds (below WALK_SEEDS_MIN_ROWS)
    monkeypatch.setattr(F, "WALK_SEEDS_MIN_ROWS", 0)
    qs = (q + 0.3 * np.random.default_rng(5).standard_normal(q.shape)).astype(np.float32)
    seeds = idx._walk_seeds(qs)
    cs = qs.astype(np.float64) @ idx.ivf.centroids.T.astype(np.float64)
    assert seeds.shape == (qs.shape[0], F.WALK_SEEDS)
    lists, sizes = idx.ivf._row_list, np.diff(idx.ivf._list_off)
    for i in range(qs.shape[0]):
        order = [int(l) for l in np.argsort(-cs[i], kind="stable") if sizes[l] > 0][: F.WALK_SEEDS]
        assert [int(lists[r]) for r in seeds[i]] == order  # best list first
    part = idx._walk_seeds(qs, np.array([2, 0], np.int64))  # only those queries; the others -1
    np.testing.assert_array_equal(part[[0, 2]], seeds[[0, 2]])
    assert (np.delete(part, [0, 2], axis=0) == -1).all()
    allowed = np.sort(np.random.default_rng(6).choice(x.shape[0], x.shape[0] // 2, replace=False))
    exact = FlatIndex(x.shape[1])
    exact.add(x)
    truth = exact.search(qs, 10, filter=Filter(allowed)).ids
    rec = {}
    n_seeds = F.WALK_SEEDS
    for s in (0, n_seeds):
        monkeypatch.setattr(F, "WALK_SEEDS", s)
        res = idx.search(qs, 10, filter=Filter(allowed), route="hnsw", effort=0.25)
        assert np.isin(res.ids[res.ids >= 0], allowed).all()
        assert np.all(np.diff(res.scores, axis=1)[np.isfinite(res.scores[:, 1:])] <= 0)
        rec[s] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, truth)])
    assert rec[n_seeds] >= rec[0] - 0.01


def test_calibration_queries_have_no_near_copy_in_the_index():
    """Calibration samples index rows as held-out queries; a row with a near-copy left in
    the index is an easier query than a fresh vector, so such rows are swapped for rows
    without one (:func:`gsu.index._calibrate.twin_free_rows`), drawn apart so that a set
    without copies calibrates exactly as before."""
    from gsu.index import _calibrate as cm

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d1, dk = cm.neighbour_distances(x, np.array([0, 1, 2], np.int64), 10)
    d2 = ((x[[0, 1, 2], None, :] - x[None, :, :]) ** 2).sum(-1)
    d2[[0, 1, 2], [0, 1, 2]] = np.inf
    ref = np.sort(np.sqrt(d2), axis=1)
    np.testing.assert_allclose(d1, ref[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dk, ref[:, 9], rtol=1e-4, atol=1e-4)
    pick = np.sort(rng.choice(np.arange(1, 3000), 40, replace=False)).astype(np.int64)
    np.testing.assert_array_equal(cm.twin_free_rows(x, pick, 10, 0, 5), pick)  # no copies: unchanged
    y = x.copy()
    dup = np.setdiff1d(np.arange(1, 3000), pick)[:8]
    y[dup] = x[pick[:8]] + 1e-4  # near-copies of eight of the picked rows
    copies = {int(r) for r in dup}
    out = cm.twin_free_rows(y, pick, 10, 0, 5)
    assert out.shape == pick.shape and len(set(out.tolist())) == 40 and 0 not in out
    np.testing.assert_array_equal(out[8:], pick[8:])
    assert not set(out[:8].tolist()) & set(pick.tolist())
    d1o, _ = cm.neighbour_distances(y, out, 10)
    assert np.all(d1o > 0.05) and not set(out.tolist()) & copies
    # a calibrated index samples its queries so (the held-out rows are those queries)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=24, calibrate=False, seed=4)
    fi.add(y)
    cal = fi.calibrate(max_seconds=0.0, n_queries=40, seed=9)
    assert cal.n_queries == 40


def test_calibration_samples_are_sorted_distinct_and_leave_out_what_they_must():
    """The calibration's row samples (:func:`gsu.index._calibrate._sample`), sparse and dense
    (the dense ones sorted through a bitmap over the span): ``m`` sorted distinct rows, never
    the query's own row nor a row already taken, the same rows numpy's sort gives."""
    from gsu.index import _calibrate as cm

    n = 5000
    taken = np.zeros(n, bool)
    taken[np.random.default_rng(1).choice(n, 400, replace=False)] = True
    for m in (1, 50, 1500, 4000, 4599):
        for tk in (None, taken):
            r = cm._sample(n, m, np.random.default_rng(m), exclude=17, taken=tk)
            assert r.dtype == np.int64 and r.shape[0] == min(m, n - 1 - (0 if tk is None else int(tk.sum()) - int(tk[17])))
            assert np.all(np.diff(r) > 0) and 17 not in r and r.min() >= 0 and r.max() < n
            if tk is not None:
                assert not tk[r].any()
    a = np.random.default_rng(2).choice(10**6, 300_000, replace=False)
    np.testing.assert_array_equal(cm._distinct(np.concatenate([a, a[:1000]])), np.unique(a))


def test_past_its_time_limit_calibration_climbs_only_to_its_own_target():
    """Under a time limit (a build-time calibration) the main decades' budget ladders, and
    every ladder once the limit has passed, stop at the first step reaching the
    calibration's target instead of climbing on to the 0.99 operating point; without a
    limit they climb on. The fitted settings for the target come from the same first steps
    either way."""
    from gsu.index import _calibrate as cm
    from gsu.index.planner import HNSW_LADDER, IVF_LADDER, reaches

    rng = np.random.default_rng(21)
    x = rng.standard_normal((5000, 16)).astype(np.float32)
    fi = FilteredIndex(16, M=8, ef_construction=40, nlist=40, calibrate=False, seed=2)
    fi.add(x)

    def past_first(cal, main=None):
        """Steps measured above both the first step reaching the target and the step the
        ladder started from (one below the first reaching step at the nearest selectivity
        measured before; a start that reaches is walked down, so the steps between the
        first reaching one and the start are measured without climbing)."""
        extra = 0
        for j, p in enumerate(cal.points):
            if main is not None and (p["s"] in (0.01, 0.1, 0.5, 1.0)) != main:
                continue
            for fam in ("ivf", "hnsw", "probe"):
                ladder = IVF_LADDER if fam == "ivf" else HNSW_LADDER
                steps = sorted(p[fam], key=lambda e: e[0])
                hit = next((i for i, e in enumerate(steps) if reaches(e, cal.target_recall)), None)
                if hit is not None:
                    start = ladder[cm._start_step(list(cal.points[:j]), fam, ladder, p["s"], cal.target_recall)]
                    extra += sum(1 for e in steps[hit + 1:] if e[0] > start)
        return extra

    short = fi.calibrate(max_seconds=0.0, n_queries=24, seed=5)
    assert [p["s"] for p in short.points] == [0.01, 0.1, 0.5, 1.0]
    assert past_first(short) == 0
    full = fi.calibrate(n_queries=24, seed=5)
    assert past_first(full) > 0
    # under a limit not reached, the main decades still stop at the target; the
    # selectivities measured after them climb on to the 0.99 operating point
    roomy = fi.calibrate(max_seconds=1e6, n_queries=24, seed=5)
    assert len(roomy.points) > 4 and roomy.complete
    assert past_first(roomy, main=True) == 0 and past_first(roomy, main=False) > 0


def test_ivf_answers_a_permutation_of_the_queries_query_by_query(indexes, data):
    """IVF's compiled search handed every query in another order (as a batch whose walks
    gave up hands them over) answers each query for itself: per-query filters stay with
    their queries."""
    x, q, ids, _, _ = data
    fi = indexes["filtered"]
    rng = np.random.default_rng(12)
    allowed = [np.sort(rng.choice(ids, 400, replace=False)) for _ in range(NQ)]
    cf = fi.hnsw.compile_filter(Filter.per_query(allowed), NQ)
    qs = fi._scoring_queries(q)
    outs = []
    for which in (np.arange(NQ), np.roll(np.arange(NQ), 7)):
        r = np.full((NQ, K), -1, np.int64)
        s = np.full((NQ, K), -np.inf, np.float32)
        c = np.zeros(NQ, np.int64)
        fi.ivf.search_compiled(qs, K, cf, which.astype(np.int64), r, s, c, target=60, min_lists=4, vectors=fi._scoring(),
                               sq8=fi._approx()[1])
        outs.append((r, s))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_a_batch_mixing_windows_and_walks_that_give_up_answers_each_query_as_alone(indexes, data):
    """In the probe band a time window goes straight to IVF (its probe found wasted) while a
    scattered filter walks first and gives up to IVF: a batch of both, interleaved, hands IVF
    the windows before the give-ups; each answer is the query's own, as searched alone."""
    import dataclasses

    fi = indexes["filtered"]
    fit = fi._fit(None)
    try:
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(
            fit.settings, exact_max_rows=25.0, exact_run_factor=1.0, probe_min_selectivity=0.0, hnsw_min_selectivity=0.99,
            probe_min_share=0.4, bands=(0.1, 0.9), band_hnsw_ef=(3.0, 3.0), band_ivf=(1.0, 1.0), band_run_probe=(0.0, 0.0),
            band_run_hnsw_ef=(), band_run_ivf=()))
        n = fi.ntotal
        m = n // 10
        rng = np.random.default_rng(17)
        q = data[1]
        filters = []
        for i in range(NQ):
            if i % 2:
                lo = int(rng.integers(0, n - m))
                filters.append(fi.ids[lo : lo + m].copy())  # a window: IVF without the walk
            else:
                filters.append(np.sort(rng.choice(fi.ids, m, replace=False)))  # scattered: the walk gives up
        ex = fi.explain(q, K, filter=Filter.per_query(filters))
        assert set(ex.route_names()) == {"ivf"}
        batch = fi.search(q, K, filter=Filter.per_query(filters))
        for i in range(NQ):
            alone = fi.search(q[i], K, filter=filters[i])
            np.testing.assert_array_equal(batch.ids[i], alone.ids[0])
            np.testing.assert_array_equal(batch.scores[i], alone.scores[0])
    finally:
        fi._fits[None] = fit


def test_the_walk_is_not_tried_for_an_even_filter_too_sparse_for_it(indexes, data, monkeypatch):
    """In the probe band a filter spread evenly over the IVF lists and allowing less than
    ``PROBE_GATE · probe_min_share`` of the rows is answered by IVF without the graph walk —
    the answer of the forced IVF route; a filter concentrated in a few lists still walks;
    alone and in a batch with one filter per query alike."""
    import dataclasses

    import gsu.index.filtered as fmod

    _, q, ids, _, _ = data
    fi = indexes["filtered"]
    fit = fi._fit(None)
    rng = np.random.default_rng(5)
    n = fi.ntotal
    m = n // 10
    even = [np.sort(rng.choice(ids, m, replace=False)) for _ in range(NQ)]
    cs = fi.ivf.centroid_scores(fi._scoring_queries(q))
    dense = []
    for i in range(NQ):  # every row of the query's three best lists, topped up at random
        near = np.flatnonzero(np.isin(fi.ivf.row_list, np.argsort(-cs[i])[:3]))[:m]
        rest = rng.choice(np.setdiff1d(np.arange(n), near), m - near.shape[0], replace=False)
        dense.append(np.sort(ids[np.concatenate([near, rest])]))
    walks = []
    real = fi.hnsw.beam_search

    def spy(qq, k, cf, which, *a, **kw):
        walks.append(int(which.shape[0]))
        return real(qq, k, cf, which, *a, **kw)

    monkeypatch.setattr(fi.hnsw, "beam_search", spy)
    try:
        fi._fits[None] = dataclasses.replace(fit, settings=dataclasses.replace(
            fit.settings, exact_max_rows=25.0, exact_run_factor=1.0, probe_min_selectivity=0.0, hnsw_min_selectivity=0.99,
            probe_min_share=0.4, bands=(), band_hnsw_ef=(), band_ivf=(), band_run_probe=(), band_run_hnsw_ef=(), band_run_ivf=()))
        skipped = 0
        for i in range(NQ):
            walks.clear()
            a = fi.search(q[i], K, filter=even[i])
            skipped += walks == []
            if walks == []:
                b = fi.search(q[i], K, filter=even[i], route="ivf")
                assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
        assert skipped >= NQ - 2, skipped  # a 3-sigma test: an even filter is rarely taken for a concentrated one
        walks.clear()
        monkeypatch.setattr(fmod, "PROBE_GATE", 0.0)  # without the test the walk is tried, and gives up
        fi.search(q[0], K, filter=even[0])
        assert walks == [1] and fi.explain(q[:1], K, filter=even[0]).route_names() == ["ivf"]
        monkeypatch.setattr(fmod, "PROBE_GATE", 0.5)
        walks.clear()
        walked = sum(fi.explain(q[i : i + 1], K, filter=dense[i]).route_names() == ["hnsw"] for i in range(NQ))
        assert len(walks) == NQ and walked >= 0.8 * NQ, (len(walks), walked)
        mixed = [even[i] if i % 2 else dense[i] for i in range(NQ)]
        batch = fi.search(q, K, filter=Filter.per_query(mixed))
        for i in range(NQ):
            alone = fi.search(q[i], K, filter=mixed[i])
            assert np.array_equal(batch.ids[i], alone.ids[0]) and np.array_equal(batch.scores[i], alone.scores[0]), i
    finally:
        fi._fits[None] = fit


def test_filter_uniform_counts_alike_in_every_form_and_tells_even_from_concentrated(indexes):
    """The evenness test reads the same allowed samples from a bitmap, a run and sorted rows
    (galloping), matches a numpy count, passes even random filters and fails filters
    concentrated in a few lists."""
    from gsu.index import _filter_kernels as fk

    fi = indexes["filtered"]
    R, G, ng = fi._uniform_design()
    n = fi.ntotal
    assert np.all(np.diff(R) > 0) and ng.sum() == R.shape[0] and G.max() == ng.shape[0] - 1
    rng = np.random.default_rng(3)

    def verdicts(allowed):
        s = allowed.shape[0] / n
        a = bool(fk.filter_uniform_one(R, G, ng, fk.rows_bitmap64(allowed, n), 0, 0, s))
        out = np.empty(1, bool)
        fk.filter_uniform(R, G, ng, allowed, np.zeros(1, np.int64), np.full(1, allowed.shape[0], np.int64),
                          np.zeros(1, np.int64), np.array([s]), out)
        return a, bool(out[0])

    evens = [verdicts(np.sort(rng.choice(n, n // 10, replace=False)).astype(np.int64)) for _ in range(40)]
    assert all(a == b for a, b in evens) and sum(a for a, _ in evens) >= 36
    lists = fi.ivf.row_list
    for t in range(10):  # 80 % of the rows from three lists, the rest at random
        near = np.flatnonzero(np.isin(lists, rng.choice(fi.ivf.nlist, 3, replace=False)))
        rest = rng.choice(np.setdiff1d(np.arange(n), near), n // 10, replace=False)
        a, b = verdicts(np.sort(np.concatenate([near, rest])).astype(np.int64))
        assert a == b and not a
    lo, hi = 400, 700  # a run: the same verdict from its bounds as from its rows
    s = (hi - lo) / n
    out = np.empty(1, bool)
    fk.filter_uniform(R, G, ng, np.arange(lo, hi, dtype=np.int64), np.zeros(1, np.int64), np.full(1, hi - lo, np.int64),
                      np.zeros(1, np.int64), np.array([s]), out)
    assert bool(fk.filter_uniform_one(R, G, ng, np.zeros(0, np.uint64), lo, hi, s)) == bool(out[0])


def _coded_centroids_ivf(rng, metric: str, d: int, n: int, nlist: int, nq: int):
    """``(ivf, x, q)``: an ``IVFIndex`` of ``n`` random ``d``-dim rows in ``nlist`` lists, enough
    centroid entries that its lists are ordered from 8-bit codes, and ``nq`` random queries."""
    from gsu.index import ivf as ivf_mod

    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    ivf = IVFIndex(d, metric, nlist=nlist, seed=0)
    ivf.add(x)
    assert ivf._centroid_codes() is not None and ivf.nlist * d >= ivf_mod.CENTROID_I8_MIN
    return ivf, x, q


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_orders_a_large_centroid_set_from_8bit_codes(metric):
    """From CENTROID_I8_MIN centroid entries up, IVF orders its lists by scores read from
    8-bit codes: each within ``scale · ‖q‖₁ / 2`` of the float32 score (l2: the norm term
    exact), bit for bit the same for a query alone and in a batch, and a search that opens
    every list is still exact."""
    rng = np.random.default_rng(11)
    d = 64
    ivf, x, q = _coded_centroids_ivf(rng, metric, d, 6000, 300, 7)
    qp = ivf.prep_queries(q)
    if metric == "l2":
        qp = _l2.augment_queries(qp)
    cs = ivf.centroid_scores(qp)
    ref = qp.astype(np.float64) @ ivf._centroids_t.astype(np.float64)
    _, codes, scale, extra, _ = ivf._centroid_codes()
    assert codes.dtype == np.int8 and codes.shape == (300, d) and extra.shape == ((300,) if metric == "l2" else (0,))
    bound = np.abs(qp[:, :d]).sum(1)[:, None] * scale[None, :] / 2 + 1e-3 * (1 + np.abs(ref))
    assert (np.abs(cs - ref) <= bound).all()
    assert np.abs(cs - ref).max() > 0  # the codes are read, not the float32 centroids
    for i in range(q.shape[0]):
        np.testing.assert_array_equal(ivf.centroid_scores(qp[i : i + 1])[0], cs[i])
    flat = FlatIndex(d, metric)
    flat.add(x)
    a = ivf.search(q, K, nprobe=ivf.nlist)
    b = flat.search(q, K)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("nl,d,aug", [(5, 7, False), (64, 16, True), (130, 33, False), (300, 100, True)])
def test_centroid_codes_scored_column_by_column_in_groups(nl, d, aug):
    """The 8-bit centroid scan (:func:`gsu._simd.dot_i8_groups` through
    ``_centroid_row``): list counts that are not a multiple of a call's 64 rows, odd
    widths, the l2 norm term; each score equals the float64 dot product of the query with
    the codes times the scale (to float32 rounding), a query alone and in a batch give the
    same bits, and the IVF kernel that scores the centroids itself opens the same lists
    (same answer) as when it is handed the scores."""
    from gsu._simd import DOT_GROUPS, LANES

    rng = np.random.default_rng(nl + d)
    c = rng.standard_normal((nl, d)).astype(np.float32)
    amax = np.abs(c).max(axis=1)
    scale = (amax / 127.0).astype(np.float32)
    codes = np.clip(np.rint(c / scale[:, None]), -127, 127).astype(np.int8)
    span = DOT_GROUPS * LANES
    pad = np.zeros((-(-nl // span) * span, d), np.int8)
    pad[:nl] = codes
    blk = np.ascontiguousarray(pad.reshape(-1, LANES, d).transpose(0, 2, 1)).reshape(-1)
    extra = rng.standard_normal(nl).astype(np.float32) if aug else np.zeros(0, np.float32)
    Q = rng.standard_normal((6, d + (1 if aug else 0))).astype(np.float32)
    out = np.empty((6, nl), np.float32)
    fk.centroid_scores_i8(Q, blk, scale, extra, out)
    ref = (Q[:, :d].astype(np.float64) @ codes.T.astype(np.float64)) * scale[None, :]
    if aug:
        ref += Q[:, d : d + 1].astype(np.float64) * extra[None, :]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    for i in range(6):
        one = np.empty((1, nl), np.float32)
        fk.centroid_scores_i8(Q[i : i + 1], blk, scale, extra, one)
        np.testing.assert_array_equal(one[0], out[i])
    with pytest.raises(IndexError):  # fewer scales than lists: refused, nothing read past them
        fk.centroid_scores_i8(Q, blk, scale[:-1], extra, out)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_kernel_scoring_its_own_centroids_answers_as_when_handed_them(metric):
    """The shared IVF kernel given the centroid codes scores each query's centroids itself:
    the same answers, bit for bit, as the same kernel handed ``centroid_scores``' output,
    for a query alone and for a batch, partial probes included."""
    rng = np.random.default_rng(5)
    n = 8000
    ivf, x, q = _coded_centroids_ivf(rng, metric, 48, n, 400, 9)
    allowed = np.flatnonzero(rng.random(n) < 0.2).astype(np.int64)
    cf = ivf.compile_filter(allowed, 1)
    qp = ivf.prep_queries(q)
    if metric == "l2":
        qp = _l2.augment_queries(qp)
    for target, lists in ((40, 3), (200, 12)):
        outs = []
        for given in (True, False):
            r = np.empty((9, K), np.int64)
            s = np.empty((9, K), np.float32)
            c = np.empty(9, np.int64)
            ivf.search_compiled(qp, K, cf, np.arange(9, dtype=np.int64), r, s, c, target=target, min_lists=lists,
                                centroid_scores=ivf.centroid_scores(qp) if given else None)
            outs.append((r, s, c))
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)
        for i in range(9):
            r1, s1, c1 = ivf.search_one(qp[i : i + 1], K, cf, target=target, min_lists=lists)
            np.testing.assert_array_equal(r1[0], outs[0][0][i])
            np.testing.assert_array_equal(s1[0], outs[0][1][i])


def _category_filters(cat, q, sel: float, rng) -> list[np.ndarray]:
    """Per query: the items of whole mixture components drawn at random, independently of
    the query, until ``sel`` of the items (a catalog's categories following its geometry)."""
    n = cat.vectors.shape[0]
    sizes = np.bincount(cat.labels)
    out = []
    for _ in range(q.shape[0]):
        chosen, tot = [], 0
        for c in rng.permutation(sizes.shape[0]):
            if sizes[c] == 0 or tot + sizes[c] > 2 * sel * n:
                continue
            chosen.append(c)
            tot += int(sizes[c])
            if tot >= sel * n:
                break
        out.append(np.flatnonzero(np.isin(cat.labels, chosen)))
    return out


def test_calibration_reaches_its_target_on_category_filters_away_from_the_query(calibrated):
    """Filters made of whole clusters chosen independently of the query (most leave the
    query's own cluster out, so its answers lie on the edges of other clusters, in lists
    the centroid order ranks late): the calibration's cluster kind fits the budget of
    such queries, which the search finds by the allowed share of their nearest lists; the
    default reaches the target on held-out queries, alone and in a batch of per-query
    filters alike, and queries away from their filter take a larger IVF budget."""
    fi, cal, flat, cat, q = calibrated
    st = fi.settings
    assert st.has_away and len(st.band_away_ivf) == len(st.bands)
    assert all(a >= b for a, b in zip(st.band_away_ivf, st.band_ivf))
    assert any(p.get("away") for p in cal.points)
    # the exact scan of the away queries, timed beside their IVF ladder
    assert all(p.get("away_exact", 0.0) > 0.0 for p in cal.points if p.get("away"))
    rng = np.random.default_rng(15)
    ids_ = np.arange(cat.vectors.shape[0])
    for sel in (0.15, 0.5):
        allowed = _category_filters(cat, q, sel, rng)
        f = Filter.per_query(allowed)
        truth = flat.search(q, K, filter=f)
        res = SearchResult.concat([fi.search(q[i], K, filter=allowed[i]) for i in range(q.shape[0])])
        rec = _check(res, truth, allowed, cat.vectors, ids_, q, K)
        assert rec >= 0.95, f"category {sel}: recall {rec:.3f} below the calibrated target"
        batch = fi.search(q, K, filter=f)
        np.testing.assert_array_equal(batch.ids, res.ids)
        ex = fi.explain(q, K, filter=f)
        assert set(ex.route_names()) <= {"exact", "ivf", "hnsw"}


def test_local_share_counts_the_allowed_rows_of_the_nearest_lists(indexes, data):
    """The kernel's test of a query's neighbourhood: the allowed share of the rows of its
    _LOCAL_LISTS best lists by centroid score, the same from a bitmap and from rows grouped
    by list."""
    x, q, ids, lab, centers = data
    fi = indexes["filtered"]
    ivf = fi.ivf
    Q = fi._scoring_queries(q)
    CS = ivf.centroid_scores(Q)
    loff = np.asarray(ivf._list_off, np.int64)
    rng = np.random.default_rng(3)
    for rows in (np.sort(rng.choice(N, 300, replace=False)), np.flatnonzero(lab < 6), np.arange(0)):
        rows = rows.astype(np.int64)
        bm = fk.rows_bitmap64(rows, N)
        boff, _ = fk.bucket_rows(rows, ivf._row_list, ivf._row_pos, ivf.nlist)
        allowed = np.zeros(N, bool)
        allowed[rows] = True
        for i in range(Q.shape[0]):
            top = np.argsort(-np.where(np.diff(loff) > 0, CS[i], -np.inf), kind="stable")[: fk._LOCAL_LISTS]
            members = np.concatenate([ivf._pos_row[loff[l]:loff[l + 1]] for l in top])
            want = allowed[members].mean()
            got_bm = fk.local_share(CS, np.int64(i), loff, loff, bm, ivf._pos_row)
            got_grp = fk.local_share(CS, np.int64(i), loff, boff, np.zeros(0, np.uint64), ivf._pos_row)
            assert got_bm == pytest.approx(want) and got_grp == pytest.approx(want)


def _ivf_forms(ivf, cf):
    """The shared filter ``cf`` (a run) in each form the IVF kernel reads: the run's bounds,
    the opened lists' rows tested against its bitmap, and its rows grouped by list."""
    n = ivf.ntotal
    boff, bpos = fk.bucket_rows(cf.rows, ivf._row_list, ivf._row_pos, ivf.nlist)
    no_bm = np.zeros(0, np.uint64)
    return {"run": (ivf._list_off, ivf._all_pos, no_bm, tuple(cf.run)),
            "scan": (ivf._list_off, ivf._all_pos, fk.rows_bitmap64(cf.rows, n), None),
            "grouped": (boff, bpos, no_bm, None)}


@pytest.mark.parametrize("which", ["ivf", "filtered", "filtered-sq8"])
def test_ivf_run_mode_scores_what_the_bitmap_scan_scores(indexes, data, which):
    """A time window (one run of rows) is probed as the binary-searched span of each opened
    list: the same rows as the bitmap scan and as the grouped rows, so the same answers,
    scores, result and scored counts bit for bit, with and without the away budget and
    the 8-bit codes; search_one and search_compiled take that form for a run."""
    from gsu.index.filters import CompiledFilter

    x, q, ids, _, _ = data
    if which == "filtered-sq8":
        rng = np.random.default_rng(21)
        d = 64
        xs = rng.standard_normal((N, d)).astype(np.float32)
        q = rng.standard_normal((NQ, d)).astype(np.float32)
        fi = FilteredIndex(d, "ip", M=8, ef_construction=40, nlist=24, seed=0, calibrate=False)
        fi.add(xs)
        owner = fi
    else:
        owner = indexes[which]
    ivf = owner if which == "ivf" else owner.ivf
    Q = ivf.prep_queries(q) if which == "ivf" else owner._scoring_queries(q)
    CS = ivf.centroid_scores(Q)
    n = ivf.ntotal
    if which == "ivf":
        xl, ind, sq8 = ivf._xl, False, None
    else:
        xl, ind, sq8 = owner._scoring(), True, owner._approx()[1]
        assert (sq8 is not None) == (which == "filtered-sq8")
    loff = np.asarray(ivf._list_off, np.int64)
    for lo, hi in ((0, 60), (n // 3, n // 3 + 400), (n - 700, n), (17, 18), (5, n - 5)):
        cf = CompiledFilter(None, None, n, True, run=(lo, hi))
        assert cf.run == (lo, hi) and cf.count == hi - lo
        for target, lists in ((10, 1), (100, 4), (1000, 12)):
            for away in (None, (loff, 4.0, 3 * target, 3 * lists)):
                outs = {}
                for form, (boff, bpos, bm, run) in _ivf_forms(ivf, cf).items():
                    r = np.empty((NQ, K), np.int64)
                    s_ = np.empty((NQ, K), np.float32)
                    c = np.empty(NQ, np.int64)
                    sc = np.zeros(NQ, np.int64)
                    fk.ivf_search_shared(Q, CS, xl, ivf._pos_row, boff, bpos, bm, hi - lo, K, target, lists, r, s_, c, sc,
                                         ind, sq8, away, run)
                    outs[form] = (r, s_, c, sc)
                assert np.all(outs["run"][0][outs["run"][0] >= 0] >= lo) and np.all(outs["run"][0] < hi)
                assert np.all(outs["run"][3] > 0)
                for form in ("scan", "grouped"):
                    for a, b in zip(outs["run"], outs[form]):
                        np.testing.assert_array_equal(a, b)
        # the index's own calls take the run form for it: search_one and search_compiled agree
        m_all, boff, bpos, bm, run = ivf._shared_form(cf, 100, 4)
        assert run == (lo, hi) and bm.shape[0] == 0 and "bitmap64" not in cf._masks
        vec = None if which == "ivf" else xl
        for i in range(3):
            r1, s1, c1 = ivf.search_one(Q[i : i + 1], K, cf, target=100, min_lists=4, vectors=vec, sq8=sq8)
            r2 = np.empty((1, K), np.int64)
            s2 = np.empty((1, K), np.float32)
            c2 = np.empty(1, np.int64)
            ivf.search_compiled(Q[i : i + 1], K, cf, np.zeros(1, np.int64), r2, s2, c2, target=100, min_lists=4, vectors=vec,
                                sq8=sq8)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(s1, s2)


def test_local_share_of_a_run_counts_its_rows_in_the_nearest_lists(indexes, data):
    """The away test of a time window counts the window's rows in the nearest lists by
    binary search: the same share as from its bitmap."""
    fi = indexes["filtered"]
    ivf = fi.ivf
    Q = fi._scoring_queries(data[1])
    CS = ivf.centroid_scores(Q)
    loff = np.asarray(ivf._list_off, np.int64)
    for lo, hi in ((0, 100), (N // 2, N // 2 + 900), (N - 1, N)):
        bm = fk.range_bitmap64(lo, hi, N)
        for i in range(Q.shape[0]):
            want = fk.local_share(CS, np.int64(i), loff, loff, bm, ivf._pos_row)
            got = fk.local_share(CS, np.int64(i), loff, loff, np.zeros(0, np.uint64), ivf._pos_row, np.int64(lo), np.int64(hi))
            assert got == pytest.approx(want)


def test_ivf_gives_queries_away_from_their_filter_the_away_budget(indexes, data):
    """IVF with an away budget: a query whose nearest lists hold fewer allowed rows than
    the ratio times the selectivity scores (at least) the away budget's rows; one inside
    its filter's rows keeps the plain budget, with the very same answer."""
    x, q, ids, lab, centers = data
    fi = indexes["filtered"]
    Q = fi._scoring_queries(q)
    for i in range(6):
        sc = x @ q[i]
        away_rows = np.flatnonzero(sc < np.quantile(sc, 0.5)).astype(np.int64)  # the half farthest from the query
        near_rows = np.flatnonzero(sc >= np.quantile(sc, 0.9)).astype(np.int64)  # the tenth nearest it
        for rows, is_away in ((away_rows, True), (near_rows, False)):
            out = {}
            for aw in (None, (0.25, 4000, fi.ivf.nlist)):
                cf = fi.hnsw.compile_filter(ids[rows], 1)
                r = np.empty((1, K), np.int64)
                s = np.empty((1, K), np.float32)
                c = np.empty(1, np.int64)
                scored = np.zeros(1, np.int64)
                fi.ivf.search_compiled(Q[i:i + 1], K, cf, np.zeros(1, np.int64), r, s, c, target=20, min_lists=1,
                                       scored=scored, vectors=fi._scoring(), sq8=fi._approx()[1], away=aw)
                out[aw is not None] = (r.copy(), int(scored[0]))
            if is_away:
                assert out[True][1] >= min(4000, rows.shape[0]) > out[False][1]
            else:
                assert out[True][1] == out[False][1]
                np.testing.assert_array_equal(out[True][0], out[False][0])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_calibration_cluster_filters_leave_the_query_region_out(metric):
    """The calibration's cluster kind: m distinct sorted rows, never the query's own row
    nor a row of its nearest lists, made of regions (the rows nearest a point), so that a
    search finds every query away from its filter's rows."""
    from gsu.index import _calibrate as C

    rng = np.random.default_rng(22)
    x = rng.standard_normal((6000, 12)).astype(np.float32)
    fi = FilteredIndex(12, metric=metric, M=8, ef_construction=40, nlist=60, calibrate=False)
    fi.add(x)
    qrows = np.sort(rng.choice(6000, 9, replace=False))
    Q = fi._scoring_queries(np.ascontiguousarray(x[qrows]))
    reg = C._Regions(fi)
    for m in (300, 3000):
        sets = C._Sets(C.draw_filters(fi, "cluster", m, Q, qrows, np.random.default_rng(3)), 6000)
        for i in range(len(sets)):
            r = sets.rows(i)
            assert r.dtype == np.int64 and r.shape == (m,) and np.all(np.diff(r) > 0)
            assert qrows[i] not in r
            for lst in reg.near_lists(Q[i]):
                assert not np.isin(fi.ivf._pos_row[reg.off[lst]:reg.off[lst + 1]], r).any()
        assert C._away_flags(fi, Q, sets).all()
        if m == 300:
            # regions, not scattered rows: most allowed rows have an allowed row among their
            # 5 nearest (a random 5 % subset: about 23 %)
            r = sets.rows(0)
            d = ((x[r][:200, None, :] - x[None, :, :]) ** 2).sum(-1)
            nn = np.argsort(d, axis=1)[:, 1:6]
            assert np.isin(nn, r).any(axis=1).mean() > 0.6


def test_fit_planner_takes_the_away_budget_from_the_cluster_ladder():
    """``band_away_ivf``: the cluster kind's first reaching step per point, the largest
    measured where it never reached, a neighbour's where not measured, at least the
    scattered filters' own; saved with the settings; a fixed IVF budget drops it."""
    from gsu.index.planner import fit_planner

    def entry(step, rec, cost):
        return [step, [rec] * 3, [cost] * 3, [rec - 0.01] * 3]

    pts = []
    for s, away in ((0.01, []), (0.1, [[2.0, [0.9], [300.0], [0.88]], [3.2, [0.99], [400.0], [0.98]]]),
                    (0.5, [[2.0, [0.8], [300.0], [0.7]], [16.0, [0.9], [900.0], [0.85]]])):
        pts.append({"s": s, "m": int(s * 100_000), "nq": 24, "exact": [50.0 + 5000 * s] * 3,
                    "ivf": [entry(1.0, 0.99, 100.0)], "hnsw": [entry(2.0, 0.99, 120.0)], "probe": [], "away": away})
    raw = {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
           "points": pts, "seconds": 1.0, "complete": True}
    st = fit_planner(raw, 0.95).settings
    assert st.band_away_ivf == (3.2, 3.2, 16.0)
    assert st.away_mult(0.1) == 3.2 and st.away_mult(0.5) == 16.0 and st.ivf_mult(0.1) == 1.0
    assert PlannerSettings.from_dict(st.to_dict()) == st
    assert st.with_overrides({"ivf_candidates": 30.0}).band_away_ivf == ()
    no_away = fit_planner({**raw, "points": [{k: v for k, v in p.items() if k != "away"} for p in pts]}, 0.95).settings
    assert no_away.band_away_ivf == () and not no_away.has_away and no_away.away_mult(0.1) == no_away.ivf_mult(0.1)


def test_fit_planner_scans_away_queries_where_the_exact_scan_costs_less():
    """``band_away_exact``: the grid points where the calibration timed the exact scan of
    the cluster kind's away queries below their IVF step (reaching, else the largest
    measured), also where that step is the filter's own budget, and with them the points
    whose filters the exact scan answers whole; none without such timings. The planner then
    gives such queries the exact scan as their away budget — at a flagged point, between two
    points only if both are flagged, outside the grid as the nearest point — and their own
    IVF budget elsewhere. A scan within ``AWAY_EXACT_MARGIN`` of the budget's cost (a tie
    that timing noise decides) is not flagged, unless the budget's recall was barely confirmed
    (``AWAY_EXACT_BARELY``: its lower bound under the goal, or never reached)."""
    from gsu.index.planner import fit_planner

    def entry(step, rec, cost):
        return [step, [rec] * 3, [cost] * 3, [rec - 0.01] * 3]

    def raw_of(ex10, ex50):
        pts = []
        for s, away, ex in ((0.01, [], None), (0.1, [[2.0, [0.9], [300.0], [0.88]], [3.2, [0.99], [400.0], [0.98]]], ex10),
                            (0.5, [[2.0, [0.8], [300.0], [0.7]], [16.0, [0.9], [900.0], [0.85]]], ex50)):
            p = {"s": s, "m": int(s * 100_000), "nq": 24, "exact": [45.0 + 5000 * s] * 3,
                 "ivf": [entry(1.0, 0.99, 100.0)], "hnsw": [entry(2.0, 0.99, 120.0)], "probe": [], "away": away}
            if ex is not None:
                p["away_exact"] = ex
            pts.append(p)
        return {"k": 10, "target_recall": 0.95, "n": 100_000, "n_queries": 24, "kinds": ["random", "correlated", "range"],
                "points": pts, "seconds": 1.0, "complete": True}

    st = fit_planner(raw_of(250.0, 1200.0), 0.95).settings  # cheaper at 10 % (250 < 400 µs), not at 50 %
    # the 1 % point (no away queries drawn: its 1,000 rows are within the exact limit, which
    # scans every filter there) is flagged with it, so filters between 1 % and 10 % scan them
    # (at 10 % its value is its reach: 0.8 · 400 / 250 = 1.28, the scan kept up to 12.8 %)
    assert st.exact_max_rows >= 1000 and st.band_away_exact == (1.0, 1.28, 0.0)
    assert [st.away_exact(s) for s in (0.005, 0.01, 0.05, 0.1, 0.101, 0.12, 0.128, 0.13, 0.3, 0.5, 0.9)] == [True] * 7 + [False] * 4
    np.testing.assert_array_equal(st.away_exacts(np.array([0.005, 0.05, 0.1, 0.101, 0.12, 0.13, 0.3, 0.9])),
                                  [True, True, True, True, True, False, False, False])
    assert PlannerSettings.from_dict(st.to_dict()) == st
    assert st.with_overrides({"ivf_candidates": 30.0}).band_away_exact == ()
    # a low point above the exact limit (its scan dearer: the limit falls to 500 rows) is not
    high = raw_of(250.0, 1200.0)
    high["points"][0]["exact"] = [150.0] * 3
    hs = fit_planner(high, 0.95).settings
    assert hs.exact_max_rows < 1000 and hs.band_away_exact == (0.0, 1.28, 0.0)
    assert [hs.away_exact(s) for s in (0.005, 0.05, 0.1, 0.12, 0.2)] == [False, False, True, True, False]
    # 600 < 900 µs, the largest step measured at 50 %, which never reached the target: a margin
    # of 1 there (AWAY_EXACT_BARELY), reach 900 / 600
    both = fit_planner(raw_of(250.0, 600.0), 0.95).settings
    assert both.band_away_exact == (1.0, 1.28, 1.5)
    assert [both.away_exact(s) for s in (0.05, 0.3, 0.9)] == [True, True, True]
    assert fit_planner(raw_of(500.0, 1200.0), 0.95).settings.band_away_exact == ()  # never cheaper where measured
    # a near tie (the scan 0.95x the budget at 10 %, within timing noise) keeps the IVF budget
    assert fit_planner(raw_of(380.0, 1200.0), 0.95).settings.band_away_exact == ()
    assert fit_planner(raw_of(None, None), 0.95).settings.band_away_exact == ()  # calibrations before it
    # where the away budget is the filter's own the point is flagged all the same (the search
    # tells away queries apart by its own test): here the 10 % one
    same = raw_of(250.0, 600.0)
    same["points"][1]["ivf"] = [entry(3.2, 0.99, 100.0)]
    assert fit_planner(same, 0.95).settings.band_away_exact == (1.0, 1.28, 1.5)
    # a budget barely confirmed (its lower bound 0.955, under the goal 0.97) loses a near tie to
    # the exact scan: reach 400 / 380; with the bound at the goal the margin holds
    barely = raw_of(380.0, 1200.0)
    barely["points"][1]["away"][1] = [3.2, [0.975], [400.0], [0.955]]
    got = fit_planner(barely, 0.95).settings.band_away_exact
    assert got[1] == pytest.approx(400 / 380) and got[2] == 0.0
    import gsu.index.planner as _pl
    old_flag = _pl.AWAY_EXACT_BARELY
    try:
        _pl.AWAY_EXACT_BARELY = False
        assert fit_planner(barely, 0.95).settings.band_away_exact == ()
    finally:
        _pl.AWAY_EXACT_BARELY = old_flag
    fi = FilteredIndex(8, "ip", M=8, ef_construction=20, nlist=4, calibrate=False)
    fi.add(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32))
    fi.hnsw._n = 100_000  # the planner reads the row count only
    try:
        assert fi._plan_one(10_000, False, 10, 1.0, st)[5] == (0.25, -1, -1)
        assert fi._plan_one(30_000, False, 10, 1.0, st)[5][1] > 0
        many = fi._plan_many(np.array([10_000, 30_000]), np.zeros(2, bool), 10, 1.0, st)
        assert many[5].tolist()[0] == -1 and many[6].tolist()[0] == -1 and many[5][1] > 0
        own = PlannerSettings.from_dict({**st.to_dict(), "band_away_ivf": list(st.band_ivf)})  # no larger away budget
        assert fi._plan_one(10_000, False, 10, 1.0, own)[5] == (0.25, -1, -1)  # the flag still scans them
        assert fi._plan_many(np.array([10_000]), np.zeros(1, bool), 10, 1.0, own)[5][0] == -1
        unflagged = PlannerSettings.from_dict({**own.to_dict(), "band_away_exact": []})
        assert fi._plan_one(10_000, False, 10, 1.0, unflagged)[5][1] > 0
    finally:
        fi.hnsw._n = 200
    with pytest.raises(ValueError, match="band_away_exact"):
        PlannerSettings(bands=(0.1,), band_away_exact=(-1.0,))


def _away_index(seed: int = 5):
    """A 4,000 × 16 clustered index, and queries with filters away
    from them (the half of the rows farthest from each) and near them (the nearest tenth)."""
    rng = np.random.default_rng(seed)
    n, d = 4000, 16
    centers = rng.standard_normal((20, d)).astype(np.float32)
    x = centers[rng.integers(0, 20, n)] + 0.4 * rng.standard_normal((n, d)).astype(np.float32)
    fi = FilteredIndex(d, "ip", M=12, ef_construction=60, nlist=40, seed=0, calibrate=False)
    fi.add(x.astype(np.float32))
    q = (centers[rng.integers(0, 20, 8)] + 0.4 * rng.standard_normal((8, d))).astype(np.float32)
    away, near = [], []
    for i in range(q.shape[0]):
        sc = x @ q[i]
        away.append(np.flatnonzero(sc < np.quantile(sc, 0.5)).astype(np.int64))
        near.append(np.flatnonzero(sc >= np.quantile(sc, 0.9)).astype(np.int64))
    return fi, q, away, near


@pytest.mark.parametrize("walk", [False, True])
def test_queries_away_from_their_filter_take_the_exact_scan_where_it_costs_less(walk):
    """With ``band_away_exact`` flagging the filter's band: the IVF kernel flags a query away
    from its filter's rows (``AWAY_ELSEWHERE``, nothing scanned) and the search answers it
    with the exact scan — the exact route's ids and scores, one query per call and in a
    batch of per-query filters alike; a query inside its filter's rows keeps IVF's answer
    (bit for bit that of the search without the exact away budget). With the walk
    planned (``walk``), a walk that gives up for an away query hands it to the exact scan.
    ``explain`` reports the exact scan for the away queries, on either route, and not for
    the near ones."""
    from gsu.index.planner import Fit

    fi, q, away, near = _away_index()
    # a small IVF budget (20 allowed rows, one list; away: 30 in two), which misses answers of the away queries
    common = dict(bands=(0.1, 0.5), band_ivf=(1.0, 1.0), band_hnsw_ef=(2.0, 2.0), band_away_ivf=(1.5, 1.5),
                  ivf_candidates=2.0, ivf_min_lists=1.0, exact_max_rows=50.0, probe_min_selectivity=2.0,
                  hnsw_min_selectivity=0.0 if walk else 2.0)
    scan = PlannerSettings(**common, band_away_exact=(1.0, 1.0))
    ivf_away = PlannerSettings(**common)
    Q = fi._scoring_queries(q)
    flagged = 0
    for i in range(q.shape[0]):
        cf = fi.hnsw.compile_filter(away[i], 1)
        r = fi.ivf.search_one(Q[i:i + 1], K, cf, target=200, min_lists=4, vectors=fi._scoring(), sq8=fi._approx()[1],
                              away=(0.25, -1, -1))
        flagged += int(r[2][0] == fk.AWAY_ELSEWHERE)
        cf = fi.hnsw.compile_filter(near[i], 1)
        r = fi.ivf.search_one(Q[i:i + 1], K, cf, target=200, min_lists=4, vectors=fi._scoring(), sq8=fi._approx()[1],
                              away=(0.25, -1, -1))
        assert r[2][0] == K  # inside its filter's rows: scanned
    assert flagged == q.shape[0]
    out = {}
    for name, st in (("scan", scan), ("ivf", ivf_away)):
        fi._fits = {None: Fit(st, (), (), False)}  # the operating point search plans with
        one = {kind: SearchResult.concat([fi.search(q[i], K, filter=sets[i]) for i in range(q.shape[0])])
               for kind, sets in (("away", away), ("near", near))}
        for kind, sets in (("away", away), ("near", near)):
            batch = fi.search(q, K, filter=Filter.per_query(sets))
            np.testing.assert_array_equal(batch.ids, one[kind].ids)
            np.testing.assert_array_equal(batch.scores, one[kind].scores)
        out[name] = one
        ex = fi.explain(q, K, filter=Filter.per_query(away))
        assert (set(ex.route_names()) == {"exact"}) == (name == "scan")  # as the search answered them
        assert "exact" not in fi.explain(q, K, filter=Filter.per_query(near)).route_names()
    exact = SearchResult.concat([fi.search(q[i], K, filter=away[i], route="exact") for i in range(q.shape[0])])
    np.testing.assert_array_equal(out["scan"]["away"].ids, exact.ids)
    np.testing.assert_array_equal(out["scan"]["away"].scores, exact.scores)
    np.testing.assert_array_equal(out["scan"]["near"].ids, out["ivf"]["near"].ids)
    np.testing.assert_array_equal(out["scan"]["near"].scores, out["ivf"]["near"].scores)
    assert not np.array_equal(out["ivf"]["away"].ids, exact.ids)  # the IVF budget misses some: the scan answered


@pytest.mark.parametrize("lists_copy,metric", [(False, "ip"), (True, "ip"), (False, "l2")])
def test_a_request_in_one_compiled_call_answers_as_the_step_by_step_path(monkeypatch, lists_copy, metric):
    """A plain id array of at least 1/16 of the rows takes ``_request.ivf_request`` on the
    lean path (through ``_request.request``, the index's side as one view): its bitmap (or a window's run), its plan and, on IVF without the walk, its
    search in one compiled call; what it leaves — the away query's exact scan, the walk, the
    grouped form, a bitmap whose rows form one run — goes on in Python from the filter and
    plan it built. Every status is reached, and every answer is the step-by-step path's
    (``effort=1.0`` forces it) bit for bit: ids, scores and counts."""
    from gsu.index import _request as rq
    from gsu.index import ivf as ivf_mod
    from gsu.index.planner import Fit

    rng = np.random.default_rng(17)
    d, n, off = 64, 6000, 100
    centers = rng.standard_normal((30, d)).astype(np.float32)
    x = (centers[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    q = (centers[rng.integers(0, 30, 8)] + 0.5 * rng.standard_normal((8, d))).astype(np.float32)
    fi = FilteredIndex(d, metric, M=12, ef_construction=60, nlist=300, seed=0, calibrate=False, lists_copy=lists_copy)
    fi.add(x, off + np.arange(n, dtype=np.int64))
    assert fi.ivf.nlist * d >= ivf_mod.CENTROID_I8_MIN
    seen: list = []
    real = rq.request

    def spy(*a):
        r = real(*a)
        info = a[-1]  # (status, run flag, ...)
        seen.append((int(info[0]), bool(info[1])))
        return r

    monkeypatch.setattr(rq, "request", spy)
    filters = []
    for i in range(q.shape[0]):
        sc = x @ q[i] if metric == "ip" else -((x - q[i]) ** 2).sum(1)
        per = [off + np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for m in (600, 2400)]
        per.append(off + np.flatnonzero(sc >= np.quantile(sc, 0.85)).astype(np.int64))  # near the query
        per.append(off + np.flatnonzero(sc < np.quantile(sc, 0.5)).astype(np.int64))  # away from it
        a = int(rng.integers(0, n - 900))
        per.append(off + np.arange(a, a + 900, dtype=np.int64))  # a window
        per.append(rng.permutation(per[-1]))  # the same rows, unordered: a bitmap whose rows form one run
        per.append(10**9 + np.arange(500, dtype=np.int64))  # ids of no item: a window
        per.append(10**9 + 2 * np.arange(500, dtype=np.int64))  # and scattered ones
        filters.append(per)
    common = dict(bands=(0.1, 0.5), band_ivf=(1.0, 1.0), band_hnsw_ef=(2.0, 2.0), band_away_ivf=(1.5, 1.5),
                  ivf_min_lists=1.0, exact_max_rows=50.0, probe_min_selectivity=2.0)
    variants = [PlannerSettings(**common, ivf_candidates=2.0, hnsw_min_selectivity=2.0, band_away_exact=(1.0, 1.0)),
                PlannerSettings(**common, ivf_candidates=2.0, hnsw_min_selectivity=0.3),  # the walk from 30 %
                PlannerSettings(**common, ivf_candidates=40.0, hnsw_min_selectivity=2.0)]  # the grouped form pays
    for st in variants:
        assert st.plan_consts is not None
        fi._fits = {None: Fit(st, (), (), False)}
        for i in range(q.shape[0]):
            for f in filters[i]:
                a = fi.search(q[i], K, filter=f)
                b = fi.search(q[i], K, filter=f, effort=1.0)
                np.testing.assert_array_equal(a.ids, b.ids)
                np.testing.assert_array_equal(a.scores, b.scores)
                np.testing.assert_array_equal(a.counts, b.counts)
    got = set(seen)
    assert {(rq.DONE, False), (rq.DONE, True), (rq.AWAY, False), (rq.PLANNED, False), (rq.EMPTY, False), (rq.EMPTY, True)} <= got, got


@pytest.mark.parametrize("metric,d", [("ip", 64), ("l2", 64), ("cosine", 16), ("l2", 16)])
def test_a_request_within_the_exact_limit_in_one_compiled_call_answers_as_the_step_by_step_path(monkeypatch, metric, d):
    """A plain id array within the exact limit takes ``_request.exact_view_request`` on the
    lean path: its sorted distinct rows, their exact top-k (8-bit codes first at d = 64) and,
    for ``l2``, the rescoring, in one compiled call. Every answer — ids in order, unordered
    with repeats, partly or wholly outside the id map, a window, one id, none — is the
    step-by-step path's (``effort=1.0`` forces it) bit for bit: ids, scores and counts; and
    the rows it scans are those of ``sorted_ids`` then ``IdMap.rows_of_sorted``."""
    from gsu.index import _request as rq
    from gsu.index.filters import IdMap, sorted_ids
    from gsu.index.planner import Fit

    rng = np.random.default_rng(23)
    n, off = 3000, 100
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((6, d)).astype(np.float32)
    fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=60, seed=0, calibrate=False)
    fi.add(x, off + np.arange(n, dtype=np.int64))
    st = PlannerSettings(bands=(0.1, 0.5), band_ivf=(1.0, 1.0), band_hnsw_ef=(2.0, 2.0), ivf_min_lists=1.0,
                         exact_max_rows=400.0, probe_min_selectivity=2.0, ivf_candidates=2.0, hnsw_min_selectivity=2.0)
    fi._fits = {None: Fit(st, (), (), False)}
    calls: list = []
    real = rq.request_exact

    def spy(*a):
        r = real(*a)
        calls.append(r)
        return r

    monkeypatch.setattr(rq, "request_exact", spy)
    idmap = IdMap(off + np.arange(n, dtype=np.int64))
    for i in range(q.shape[0]):
        some = off + np.sort(rng.choice(n, 300, replace=False)).astype(np.int64)
        mixed = np.concatenate([some[::2], some[:50], [5, -7, off + n, off + n + 40, 2**62]]).astype(np.int64)
        rng.shuffle(mixed)
        a0 = int(rng.integers(0, n - 200))
        filters = [some, mixed, off + np.arange(a0, a0 + 200, dtype=np.int64), np.array([off + 7], np.int64),
                   np.array([1, 2, 10**12], np.int64), np.zeros(0, np.int64),
                   np.concatenate([off + np.arange(n - 30, n, dtype=np.int64), off + n + np.arange(30, dtype=np.int64)])]
        for f in filters:
            before = len(calls)
            a = fi.search(q[i], K, filter=f)
            assert len(calls) == before + 1  # the one-call exact request answered
            b = fi.search(q[i], K, filter=f, effort=1.0)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(a.counts, b.counts)
            rows, c = rq.sorted_rows(f, off, n)
            np.testing.assert_array_equal(rows[:c], idmap.rows_of_sorted(sorted_ids(f)))
            assert calls[-1] == c


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_the_calibration_times_the_request_a_search_makes_with_the_step_by_step_answers(metric):
    """The calibration's timer prices every route on the path a request takes
    (``FilteredIndex._request_forced``: ``_request.forced_view_request``'s one compiled call —
    the filter and, for IVF without the walk, its list scan — then, for the walk, the density
    probe or the grouped form, the continuation a request runs), at a plan it sets. Its
    answers are the step-by-step path's for that plan (``_search_one`` on the compiled
    filter) bit for bit, with the routes' scores (``[q, 1]`` for ``l2``): a scattered filter
    (bitmap scan, and the grouped form where the budget is large), a window, bits forming
    one run, on IVF, the walk and the density probe; a narrow array (below 1/16 of the rows:
    not this path) gives ``None``."""
    from gsu.index import _request as rq
    from gsu.index import ivf as ivf_mod
    from gsu.index.filtered import HNSW, IVF
    from gsu.index.vectors import normalize_rows

    rng = np.random.default_rng(29)
    d, n, off = 64, 6000, 50
    centers = rng.standard_normal((20, d)).astype(np.float32)
    x = (centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    q = (centers[rng.integers(0, 20, 5)] + 0.5 * rng.standard_normal((5, d))).astype(np.float32)
    fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=300, seed=0, calibrate=False)
    fi.add(x, off + np.arange(n, dtype=np.int64))
    assert fi.ivf.nlist * d >= ivf_mod.CENTROID_I8_MIN and fi._request_args()[1] is not None
    statuses: list = []
    plans = [(IVF, 0.0, 0, 20, 1), (IVF, 0.0, 0, 200, 8), (IVF, 0.0, 0, 3000, 150), (HNSW, 0.0, 24, 20, 1),
             (IVF, 0.4, 24, 200, 8)]
    for i in range(q.shape[0]):
        qs = fi._scoring_queries(normalize_rows(q[i:i + 1]) if metric == "cosine" else q[i:i + 1].copy())
        qr = np.ascontiguousarray(qs[:, :d]) if metric == "l2" else qs
        a0 = int(rng.integers(0, n - 1500))
        window = off + np.arange(a0, a0 + 1500, dtype=np.int64)
        for f in (off + np.sort(rng.choice(n, 2000, replace=False)).astype(np.int64), window, rng.permutation(window)):
            for plan in plans:
                got = fi._request_forced(qr, qs, f.copy(), K, *plan)
                info = np.empty(rq.INFO_LEN)
                view = fi._request_args()[0]
                rq.forced_view_request(view, qr, f.copy(), K, plan[0] == IVF and plan[1] == 0.0, plan[3], plan[4],
                                       np.empty((1, K), np.int64), np.empty((1, K), np.float32), info)
                statuses.append(int(info[0]))
                cf = fi.hnsw.compile_filter(f, 1)
                want = fi._search_one(qs, K, cf, *plan)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                np.testing.assert_array_equal(got[2], want[2])
        assert fi._request_forced(qr, qs, off + np.arange(100, dtype=np.int64) * 3, K, *plans[0]) is None  # narrow
    assert {rq.DONE, rq.PLANNED} <= set(statuses)


def test_the_away_ladder_starts_where_no_ivf_step_reached_the_target():
    """Where no IVF step reached the target for every kind at a grid point, the away budget is
    still measured, from the largest IVF step measured there (``_calibrate._away_from``);
    unmeasured, a band the walk took had no away budget and walked a filter whose rows lie
    away from the query to its end."""
    from gsu.index._calibrate import _away_from

    assert _away_from({"ivf": [[2.5, [0.9], [1.0], [0.8]], [4.0, [0.94], [2.0], [0.9]]]}, None) == 4.0
    assert _away_from({"ivf": [[2.5, [0.97], [1.0], [0.96]]]}, 2.5) == 2.5
    assert _away_from({"ivf": []}, None) is None


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_warm_up_runs_every_route_and_changes_no_answer(metric):
    """``FilteredIndex.warm_up`` runs every route's kernels (the away paths included) on any
    index — empty, without IVF geometry to speak of, with removed rows — and leaves its
    answers as they were; the server's warm-up calls it."""
    from gsu.serve import registry

    rng = np.random.default_rng(37)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    q = rng.standard_normal((4, 24)).astype(np.float32)
    empty = FilteredIndex(24, metric, calibrate=False)
    empty.warm_up()  # nothing to warm
    fi = FilteredIndex(24, metric, M=8, ef_construction=40, nlist=40, seed=0, calibrate=False)
    fi.add(x, 5 + np.arange(3000, dtype=np.int64))
    f = 5 + np.sort(rng.choice(3000, 900, replace=False)).astype(np.int64)
    before = [fi.search(q[i], K, filter=f) for i in range(4)]
    fi.warm_up()
    for i in range(4):
        after = fi.search(q[i], K, filter=f)
        np.testing.assert_array_equal(after.ids, before[i].ids)
        np.testing.assert_array_equal(after.scores, before[i].scores)
    fi.remove(5 + np.arange(0, 3000, 7, dtype=np.int64))
    fi.warm_up(k=3)
    tiny = FilteredIndex(24, metric, calibrate=False)
    tiny.add(x[:5])
    tiny.warm_up(k=50)
    calls = []
    real = FilteredIndex.warm_up
    try:
        FilteredIndex.warm_up = lambda self, k=10: calls.append(k) or real(self, k)
        registry._warm_up(fi, frozenset())
    finally:
        FilteredIndex.warm_up = real
    assert calls == [10]


def test_ivf_search_one_answers_as_search_compiled():
    """The one-query IVF call (a request's query under a shared filter) gives the ids,
    scores and counts of the batch call for that query: every row, a filter grouped by
    list, one scanned against its bitmap, an away budget, 8-bit codes read first or not."""
    from gsu.index.filters import CompiledFilter

    rng = np.random.default_rng(21)
    d, n = 64, 5000
    base = rng.standard_normal((40, d)).astype(np.float32)
    x = (base[rng.integers(0, 40, n)] + 0.4 * rng.standard_normal((n, d))).astype(np.float32)
    q = rng.standard_normal((6, d)).astype(np.float32)
    fi = FilteredIndex(d, "ip", M=8, ef_construction=40, nlist=30, seed=0, calibrate=False)
    fi.add(x)
    X, sq8 = fi._scoring(), fi._approx()[1]
    cases: list = [None]
    for m in (60, 700, 4000):
        rows = np.sort(rng.choice(n, m, replace=False)).astype(np.int64)
        cases.append(CompiledFilter.from_rows(rows, n))
        cf = CompiledFilter.from_rows(rows, n)
        cf.bitmap64()  # the scan mode
        cases.append(cf)
    for cf in cases:
        for target, lists, away in ((10, 1, None), (200, 6, None), (50, 2, (0.25, 900, 12))):
            for codes in (None, sq8):
                for i in range(q.shape[0]):
                    r = np.empty((1, K), np.int64)
                    s = np.empty((1, K), np.float32)
                    c = np.empty(1, np.int64)
                    fi.ivf.search_compiled(q[i:i + 1], K, cf, np.zeros(1, np.int64), r, s, c, target=target, min_lists=lists,
                                           vectors=X, sq8=codes, away=away)
                    r1, s1, c1 = fi.ivf.search_one(q[i:i + 1], K, cf, target=target, min_lists=lists, vectors=X, sq8=codes,
                                                   away=away)
                    np.testing.assert_array_equal(r1, r)
                    np.testing.assert_array_equal(s1, s)
                    np.testing.assert_array_equal(c1, c)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_the_lean_one_query_path_answers_as_search_does(metric):
    """``search(q, k, filter=ids)`` for one query takes the lean path (a plain int64 id
    array, ``Filter.from_ids``, no filter; an operating point already fitted) and gives what
    the general path gives (forced here by passing ``effort=1.0``, the default), on every
    metric (l2 rescored as the general path rescores); anything else (a batch, a per-query
    filter, overrides) is left to the general path."""
    rng = np.random.default_rng(5)
    d, n = 64, 4000
    base = rng.standard_normal((30, d)).astype(np.float32)
    x = (base[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    q = rng.standard_normal((12, d)).astype(np.float32)
    fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=24, seed=0, calibrate=False)
    fi.add(x, 100 + np.arange(n, dtype=np.int64))
    fi.search(q[0], K)  # fits the default operating point
    filters: list = [None]
    for m in (30, 300, 1500, 3500):
        filters.append(100 + np.sort(rng.choice(n, m, replace=False)).astype(np.int64))
    filters.append(Filter.from_ids(filters[2]))
    filters.append(100 + np.arange(500, 1700, dtype=np.int64))  # a contiguous run
    filters.append(np.zeros(0, np.int64))  # allows nothing
    for f in filters:
        for i in range(q.shape[0]):
            for qq in (q[i], q[i:i + 1]):
                lean = fi._lean_search(qq, K, {} if f is None else {"filter": f})
                assert lean is not None
                a = fi.search(qq, K, filter=f)
                b = fi.search(qq, K, filter=f, effort=1.0)
                for r in (a, lean):
                    np.testing.assert_array_equal(r.ids, b.ids)
                    np.testing.assert_array_equal(r.scores, b.scores)
                    np.testing.assert_array_equal(r.counts, b.counts)
    # not the lean path's calls
    assert fi._lean_search(q[:2], K, {}) is None
    assert fi._lean_search(q[0], K, {"filter": Filter.per_query([filters[1]])}) is None
    assert fi._lean_search(q[0], K, {"filter": filters[1], "hnsw_ef": 3.0}) is None
    assert fi._lean_search(q[0], K, {"target_recall": 0.9}) is None  # not fitted yet
    assert fi._lean_search(q[0].astype(np.float64), K, {}) is None
    bad = q[0].copy()
    bad[3] = np.nan
    assert fi._lean_search(bad, K, {}) is None
    with pytest.raises(ValueError):
        fi.search(bad, K)


def test_the_exact_routes_codes_follow_add_upsert_and_compaction():
    """What the exact and IVF routes read first (the graph's 8-bit codes, ``_approx()``) is
    kept between requests; after ``add``, ``upsert`` and ``compact`` a search reads the codes
    of the rows as they are then: a filter of the new rows alone gives the exact answer."""
    rng = np.random.default_rng(11)
    d, n = 64, 3000
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal(d).astype(np.float32)
    fi = FilteredIndex(d, "ip", M=8, ef_construction=40, nlist=16, seed=0, calibrate=False)
    fi.add(x, np.arange(n, dtype=np.int64))

    def check(ids: np.ndarray, vecs: np.ndarray) -> None:
        r = fi.search(q, K, filter=ids)  # a few rows: the exact route, codes first
        assert fi._approx()[1][0].shape[0] == fi.ntotal
        want = np.argsort(-(vecs @ q), kind="stable")[:K]
        np.testing.assert_array_equal(np.sort(r.ids[0]), np.sort(ids[want]))
        np.testing.assert_allclose(np.sort(r.scores[0]), np.sort((vecs @ q)[want]), rtol=1e-5, atol=1e-5)

    check(np.arange(0, 40, dtype=np.int64), x[:40])
    y = (3.0 * rng.standard_normal((500, d))).astype(np.float32)  # larger norms: codes must follow
    fi.add(y, n + np.arange(500, dtype=np.int64))
    check(n + np.arange(0, 40, dtype=np.int64), y[:40])
    z = (2.0 * rng.standard_normal((20, d))).astype(np.float32)
    fi.upsert(z, np.arange(5, 25, dtype=np.int64))  # replaces ids 5..24
    check(np.arange(5, 25, dtype=np.int64), z)
    fi.remove(np.arange(100, 1600, dtype=np.int64))
    fi.compact()
    check(n + np.arange(100, 140, dtype=np.int64), y[100:140])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_the_one_call_requests_kept_arguments_follow_the_index(metric):
    """What a request's one compiled call reads of the index (``_request_args``) is kept
    between requests and follows ``add``, ``remove`` and ``compact``: a large plain id array
    (the one-call path) over the new rows gives the answers of the same filter searched
    through the step-by-step path (``effort=1.0``), and the kept arguments do not travel in
    a pickle (a copy searches as the original)."""
    import pickle

    from gsu.index.planner import Fit

    rng = np.random.default_rng(12)
    d, n = 64, 4000
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((4, d)).astype(np.float32)
    fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=40, seed=0, calibrate=False)
    fi.add(x, np.arange(n, dtype=np.int64))
    # banded settings (a calibration's kind): the one-call request plans with them
    st = PlannerSettings(bands=(0.1, 0.5), band_ivf=(1.0, 1.0), band_hnsw_ef=(2.0, 2.0), ivf_min_lists=1.0,
                         exact_max_rows=50.0, probe_min_selectivity=2.0, ivf_candidates=2.0, hnsw_min_selectivity=2.0)
    assert st.plan_consts is not None
    fi._fits = {None: Fit(st, (), (), False)}

    def check(ids: np.ndarray) -> None:
        for i in range(q.shape[0]):
            a = fi.search(q[i], K, filter=ids)
            b = fi.search(q[i], K, filter=ids, effort=1.0)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
            assert np.isin(a.ids[0][a.ids[0] >= 0], ids).all()

    check(np.arange(0, n, 2, dtype=np.int64))
    kept = fi.__dict__["_req_args"]
    check(np.arange(1, n, 2, dtype=np.int64))
    assert fi.__dict__["_req_args"] is kept  # the same objects: kept
    y = (3.0 * rng.standard_normal((1500, d))).astype(np.float32)
    fi.add(y, n + np.arange(1500, dtype=np.int64))
    check(n + np.arange(0, 1500, dtype=np.int64))  # only the new rows
    assert fi.__dict__["_req_args"] is not kept
    fi.remove(np.arange(0, 3000, dtype=np.int64))
    fi.compact()
    check(np.arange(3000, n + 1500, dtype=np.int64))
    clone = pickle.loads(pickle.dumps(fi))
    assert "_req_args" not in clone.__dict__
    ids = np.arange(3000, n + 1500, dtype=np.int64)
    np.testing.assert_array_equal(clone.search(q[1], K, filter=ids).ids, fi.search(q[1], K, filter=ids).ids)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_the_public_search_front_answers_a_request_as_the_general_path_does(metric):
    """``FilteredIndex.search`` answers the request of a GSU itself (``_front.filtered_front``: one
    float32 query, a plain int64 id array within the exact limit or of at least 1/16 of the
    rows, no other keyword) with the ids, scores and counts of the general path
    (``effort=1.0``): an exact scan, IVF in the one call, the continuation of a plan the call
    leaves (bits forming one run), ids that are all unknown, an away budget. Every other call
    goes to the locked general ``search`` (counted here through the front's closure), which
    answers or raises: a filter between the limits, an empty array, a batch, a float64
    query or id array, a read-only id array, NaN, an operating point not yet fitted, a
    search inside the index's own read lock, other keywords."""
    from gsu.index.planner import Fit

    rng = np.random.default_rng(13)
    d, n = 128, 4000  # nlist * d >= ivf.CENTROID_I8_MIN: the one call's 8-bit centroid codes
    base = rng.standard_normal((30, d)).astype(np.float32)
    lab = rng.integers(0, 30, n)
    x = (base[lab] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    q = rng.standard_normal((6, d)).astype(np.float32)
    fi = FilteredIndex(d, metric, M=8, ef_construction=40, nlist=128, seed=0, calibrate=False)
    fi.add(x, 100 + np.arange(n, dtype=np.int64))
    st = PlannerSettings(bands=(0.1, 0.5), band_ivf=(1.0, 1.0), band_hnsw_ef=(2.0, 2.0), ivf_min_lists=1.0,
                         exact_max_rows=50.0, probe_min_selectivity=2.0, ivf_candidates=2.0, hnsw_min_selectivity=2.0,
                         band_away_ivf=(4.0, 4.0), band_away_exact=(1.0, 1.0))  # away queries: the exact scan
    assert fi._request_args()[1] is not None
    assert st.plan_consts is not None
    fi._fits = {None: Fit(st, (), (), False)}
    front = FilteredIndex.search
    cell = next(c for c in front.__closure__ if c.cell_contents is front.__wrapped__)
    general = []

    def spy(*a, **kw):
        general.append(1)
        return front.__wrapped__(*a, **kw)

    def same(a, b):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.counts, b.counts)

    cell.cell_contents = spy
    try:
        answered = [100 + np.sort(rng.choice(n, 30, replace=False)).astype(np.int64),  # the exact limit
                    100 + np.sort(rng.choice(n, 400, replace=False)).astype(np.int64),  # 1/10: IVF
                    100 + np.sort(rng.choice(n, 3000, replace=False)).astype(np.int64),
                    100 + rng.permutation(n)[:1000].astype(np.int64),  # any order
                    100 + np.arange(0, 2000, 2, dtype=np.int64),
                    np.concatenate([100 + np.arange(1000, 1300, dtype=np.int64), [100 + 1302]]),  # nearly one run
                    100 + np.arange(1000, 1400, dtype=np.int64),  # one run (a window)
                    100 + rng.permutation(np.arange(1000, 1400, dtype=np.int64)),  # bits forming one run: the plan goes on
                    100 + np.flatnonzero(lab < 3).astype(np.int64),  # three clusters: queries away from them
                    np.arange(10**6, 10**6 + 500, dtype=np.int64)]  # unknown ids: nothing allowed
        for f in answered:
            for i in range(q.shape[0]):
                for qq in (q[i], q[i:i + 1]):
                    a = fi.search(qq, K, filter=f)
                    assert not general, f.shape
                    cell.cell_contents = front.__wrapped__
                    same(a, fi.search(qq, K, filter=f, effort=1.0))
                    cell.cell_contents = spy
        assert (fi.search(q[0], K, filter=answered[-1]).ids == -1).all()
        ids = answered[2]
        ro = ids.copy()
        ro.flags.writeable = False
        bad = q[0].copy()
        bad[5] = np.nan
        others = [lambda: fi.search(q[0], K, filter=ids[:200]),  # between the limits: compiled by the lean path
                  lambda: fi.search(q[0], K, filter=np.zeros(0, np.int64)),
                  lambda: fi.search(q[:2], K, filter=ids),
                  lambda: fi.search(q[0].astype(np.float64), K, filter=ids),
                  lambda: fi.search(q[0], K, filter=ids.astype(np.int32)),
                  lambda: fi.search(q[0], K, filter=ro),
                  lambda: fi.search(q[0], K, filter=Filter.from_ids(ids)),
                  lambda: fi.search(q[0], K),
                  lambda: fi.search(q[0], K, filter=ids, target_recall=0.9),
                  lambda: fi.search(q[0], K, filter=ids, route="ivf")]
        for call in others:
            general.clear()
            r = call()
            assert general, "the general path answers"
            assert r.ids.shape[1] == K
        general.clear()
        with fi.lock.read():  # a nested read
            same(fi.search(q[0], K, filter=ids), fi.search(q[0], K, filter=ids, effort=1.0))
        assert general
        general.clear()
        with pytest.raises(ValueError):
            fi.search(bad, K, filter=ids)
        assert general
    finally:
        cell.cell_contents = front.__wrapped__


def test_at_reads_the_bands_once_as_the_per_budget_methods_do():
    """``PlannerSettings.at(s, run)`` (the single filter's planner) equals, bit for bit,
    ``(ivf_mult, away factor, ef_mult, away_exact, hnsw_min, probe_min)`` at every
    selectivity, on and between the bands, for runs and scattered filters, with and without
    away, run or even budgets (``None`` where the settings have no such bands); and
    ``even_pays`` from two ``at`` tuples answers as the per-band comparison does (another
    IVF budget, larger or smaller; a smaller beam)."""
    bands = (0.003, 0.01, 0.1, 0.5)
    full = PlannerSettings(bands=bands, band_hnsw_ef=(1.3, 2.2, 3.6, 6.0), band_ivf=(0.4, 1.0, 2.5, 4.0),
                           band_run_hnsw_ef=(1.0, 1.7, 2.2, 2.8), band_run_ivf=(0.6, 0.8, 2.0, 3.2),
                           band_away_ivf=(1.0, 4.0, 8.0, 16.0), band_away_exact=(1.0, 1.0, 0.0, 1.0),
                           band_even_ivf=(0.4, 0.7, 2.6, 1.0), run_hnsw_min_selectivity=0.3)
    for st in (full, PlannerSettings(bands=bands, band_ivf=(0.4, 1.0, 2.5, 4.0)), PlannerSettings()):
        ev = st.even
        for s in np.concatenate([np.geomspace(1e-4, 1.0, 57), np.asarray(bands) * 1.01, np.asarray(bands) * 0.99]):
            s = float(s)
            for run in (False, True):
                ivf, away, ef, ax, hmin, pmin = st.at(s, run)
                assert (1.0 if ivf is None else ivf) == st.ivf_mult(s, run)
                assert (st.hnsw_ef if ef is None else ef) == st.ef_mult(s, run)
                if st.has_away:
                    assert max(ivf, away) == st.away_mult(s, run)
                else:
                    assert away is None
                assert ax == st.away_exact(s) and hmin == st.hnsw_min(run) and pmin == st.probe_min(run)
                # even_pays, from the per-band methods
                want = ev is not st and (
                    (s >= ev.hnsw_min(run)) != (s >= st.hnsw_min(run)) or (s >= ev.probe_min(run)) != (s >= st.probe_min(run))
                    or bool(st._ivf_vals(run) and ev._ivf_vals(run) and ev.ivf_mult(s, run) != st.ivf_mult(s, run))
                    or bool(st._ef_vals(run) and ev._ef_vals(run) and ev.ef_mult(s, run) < st.ef_mult(s, run)))
                assert st.even_pays(s, run) == want
    # the even IVF budget is the random kind's own, also where larger (at 0.1: 2.6 against 2.5)
    assert full.has_even and full.even_pays(0.5) and full.even_pays(0.1) and not full.even_pays(0.003)
    assert full.even.ivf_mult(0.1) == 2.6 and full.even.ivf_mult(0.1, run=True) == 2.6


def test_calibration_covers_filters_of_whole_clusters_on_rows_in_random_order():
    """Filters made of whole clusters of the data (a user's categories), the rows stored
    in random order (so the range kind is no stand-in for them): at 50 % the query's own
    cluster is left out about half the time, and the allowed rows nearest it lie in the
    clusters around it. Calibration measures such filters (its ``region`` kind) and the
    default search reaches the target on them; fitted on random, correlated and range
    filters alone, IVF's 50 % budget read three lists and reached 0.73 here."""
    from gsu.index import _calibrate as cm

    assert "region" in cm.KINDS
    rng = np.random.default_rng(3)
    n, d, c, nq = 20_000, 48, 300, 100
    C = 3 * rng.standard_normal((c, d)).astype(np.float32)
    lab = rng.integers(0, c, n + nq)
    x = (C[lab] + rng.standard_normal((n + nq, d))).astype(np.float32)
    q, x, lab = x[n:], x[:n], lab[:n]
    fi = FilteredIndex(d, "l2")
    fi.add(x)
    region = [p for p in fi.calibration.points if p["s"] == 0.5][0]
    assert region.get("region_measured", 0) >= cm._MIN_REGION, region.get("region_measured")
    flat = FlatIndex(d, "l2")
    flat.add(x)
    for sel in (0.1, 0.5):
        rec = []
        for i in range(nq):
            keep, tot = [], 0
            for cl in np.random.default_rng(i).permutation(c):
                keep.append(cl)
                tot += int((lab == cl).sum())
                if tot >= sel * n:
                    break
            ids = np.flatnonzero(np.isin(lab, keep))
            truth = flat.search(q[i], K, filter=ids).ids[0]
            got = fi.search(q[i], K, filter=Filter(ids)).ids[0]
            rec.append(len(set(truth) & set(got)) / K)
        assert np.mean(rec) >= 0.95, (sel, np.mean(rec))


def test_in_fewer_lists_counts_the_lists_of_rows_runs_and_bitmaps():
    """``in_fewer_lists`` answers ``len(set(row_list[allowed])) < want`` for sorted rows, a
    run and a bitmap, filters spread over many lists and held by few, and ``False`` for a
    row outside the list table or a table entry outside the lists."""
    rng = np.random.default_rng(11)
    n, nlist = 5000, 64
    row_list = np.repeat(np.arange(nlist, dtype=np.int32), n // nlist + 1)[:n]  # rows stored list by list
    rng.shuffle(row_list[: n // 2])  # half of them scattered
    empty_rows, empty_bm = np.zeros(0, np.int64), np.zeros(0, np.uint64)
    cases = [np.sort(rng.choice(n, m, replace=False)) for m in (1, 3, 40, 400, 2500)]
    cases += [np.flatnonzero(np.isin(row_list, rng.choice(nlist, c, replace=False))) for c in (1, 5, 12)]
    cases += [np.arange(lo, hi, dtype=np.int64) for lo, hi in ((3000, 3100), (2600, 4900), (0, 1))]
    for rows in cases:
        rows = rows.astype(np.int64)
        lists = np.unique(row_list[rows]).shape[0]
        bm = np.zeros((n + 63) // 64, np.uint64)
        np.bitwise_or.at(bm, rows >> 6, np.left_shift(np.uint64(1), (rows & 63).astype(np.uint64)))
        for want in (1, 2, lists, lists + 1, nlist, nlist + 5):
            expect = lists < want
            assert fk.in_fewer_lists(row_list, rows, 0, 0, empty_bm, nlist, want) == expect
            assert fk.in_fewer_lists(row_list, empty_rows, 0, 0, bm, nlist, want) == expect
            if rows[-1] - rows[0] + 1 == rows.shape[0]:
                assert fk.in_fewer_lists(row_list, empty_rows, int(rows[0]), int(rows[-1]) + 1, empty_bm, nlist, want) == expect
    assert not fk.in_fewer_lists(row_list, np.array([3, n], np.int64), 0, 0, empty_bm, nlist, 50)
    bad = row_list.copy()
    bad[7] = nlist  # a table entry past the lists (a damaged layout): no read past `seen`
    assert not fk.in_fewer_lists(bad, np.array([3, 7], np.int64), 0, 0, empty_bm, nlist, 50)


def test_a_filter_held_by_fewer_lists_than_the_ivf_budget_takes_the_exact_scan():
    """A filter planned onto IVF whose rows lie in fewer lists than the budget opens (IVF
    would open every list and score every allowed row) is answered by the exact scan: the
    exact answer, ``explain`` reporting that route, in every form of the filter (ids, a
    reused ``Filter``, a run); a filter spread over more lists keeps IVF."""
    rng = np.random.default_rng(12)
    d, n = 16, 6000
    centers = 4 * rng.standard_normal((30, d)).astype(np.float32)
    lab = rng.integers(0, 30, n)
    x = (centers[lab] + rng.standard_normal((n, d))).astype(np.float32)
    order = np.argsort(lab, kind="stable")  # rows stored cluster by cluster: a run is a few clusters
    x, lab = x[order], lab[order]
    fi = FilteredIndex(d, M=8, ef_construction=40, nlist=40, calibrate=False)
    fi.add(x)
    flat = FlatIndex(d)
    flat.add(x)
    row_list = fi.ivf.row_list
    kw = dict(exact_max_rows=0.0, hnsw_min_selectivity=2.0, probe_min_selectivity=2.0, ivf_min_lists=12.0)
    q = (centers[3] + rng.standard_normal(d)).astype(np.float32)
    few = np.flatnonzero(np.isin(lab, [3, 4])).astype(np.int64)  # two clusters: a few lists
    many = np.sort(rng.choice(n, 400, replace=False)).astype(np.int64)
    window = np.arange(int(few[0]), int(few[0]) + 150, dtype=np.int64)
    assert np.unique(row_list[few]).shape[0] < 12 <= np.unique(row_list[many]).shape[0]
    for raw, ids, route in ((few, few, "exact"), (few, Filter(few), "exact"), (window, window, "exact"), (many, many, "ivf")):
        assert fi.explain(q, 10, filter=ids, **kw).route_names() == [route]
        got = fi.search(q, 10, filter=ids, **kw)
        want = flat.search(q, 10, filter=raw)
        if route == "exact":
            np.testing.assert_array_equal(got.ids, want.ids)
        assert set(got.ids[0].tolist()) <= set(raw.tolist())
    # IVF, forced, opens every list for it: the same answer
    np.testing.assert_array_equal(fi.search(q, 10, filter=few, route="ivf", **kw).ids, flat.search(q, 10, filter=few).ids)


def _rolled_sheet(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unnormalised rows on a rolled 2-d sheet in 32-d (norms 0.5–38) and each row's
    position along the roll, in random order; queries drawn the same way."""
    rng = np.random.default_rng(seed)
    N = n + 60
    u = rng.uniform(0, 4 * np.pi, N)
    v = rng.uniform(-1, 1, N)
    base = np.stack([u * np.cos(u), u * np.sin(u), 3 * v], 1)
    R = np.linalg.qr(rng.standard_normal((32, 32)))[0][:3]
    x = (base @ R + 0.05 * rng.standard_normal((N, 32))).astype(np.float32)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:]), u[:n]


def test_ivf_lists_take_each_row_by_its_nearest_centroid():
    """Rows go to the list of their nearest centroid (euclidean) for every metric, the cells
    the k-means was trained for. By largest inner product (the former rule), unnormalised
    rows on a rolled sheet collapse into the lists of the longest centroids — most lists
    empty — and a filter cut along the sheet loses its answers on the IVF route."""
    x, Q, u = _rolled_sheet(12_000, seed=4)
    for metric in ("ip", "l2", "cosine"):
        ivf = IVFIndex(32, metric, nlist=100, seed=1)
        ivf.add(x)
        xp = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
        c = ivf.centroids
        d2 = (xp * xp).sum(1)[:, None] - 2 * xp @ c.T + (c * c).sum(1)[None, :]
        got = ivf.row_list  # rows in the order added (ids 0..n-1)
        # the nearest centroid, up to float ties between two centroids
        np.testing.assert_array_less(d2[np.arange(x.shape[0]), got] - d2.min(1), 1e-3 * (1 + d2.min(1)))
    # the filtered index's IVF route, forced, on a band of the roll
    fi = FilteredIndex(32, "ip", M=12, ef_construction=60, calibrate=False, seed=3)
    fi.add(x)
    sizes = np.diff(fi.ivf._list_off)
    assert (sizes == 0).sum() <= sizes.shape[0] // 20
    band = np.flatnonzero((u > 2.0) & (u < 4.0)).astype(np.int64)  # ~16 % of the rows, an inner turn
    hits = 0
    for q in Q:  # a small IVF budget: 40 rows, 4 lists (inner-product lists: 0.893)
        r = fi.search(q, 10, filter=band, route="ivf", ivf_candidates=4, ivf_min_lists=4)
        top = band[np.argsort(-(x[band] @ q))[:10]]
        hits += np.isin(r.ids[0], top).sum()
    assert hits / (10 * Q.shape[0]) >= 0.95


def test_ivf_files_saved_before_the_assignment_rule_keep_assigning_by_inner_product(tmp_path):
    """A file without the recorded rule (saved before it) assigns its later rows as it
    assigned its first: by largest inner product (l2: by distance); an unknown rule is
    refused with a clean error naming the file."""
    import _fuzz as F

    x, _, _ = _rolled_sheet(3_000, seed=5)
    ivf = IVFIndex(32, "ip", nlist=30, seed=1)
    ivf.add(x[:2_000])
    path = tmp_path / "ivf.gsu"
    ivf.save(path)
    header, payload = F.split(path.read_bytes())
    assert header["config"]["assign"] == "l2"
    del header["config"]["assign"]
    old = tmp_path / "old.gsu"
    old.write_bytes(F.join(header, payload))
    o = load(old)
    o.add(x[2_000:], np.arange(2_000, 3_000, dtype=np.int64))
    c = o.centroids
    got = o.row_list[o._idmap.rows(np.arange(2_000, 3_000, dtype=np.int64))]
    ip = x[2_000:] @ c.T
    np.testing.assert_array_equal(ip[np.arange(1_000), got], ip.max(1))
    header["config"]["assign"] = "cosine"
    bad = tmp_path / "bad.gsu"
    bad.write_bytes(F.join(header, payload))
    with pytest.raises(IndexFileError) as e:
        load(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_calibration_covers_queries_whose_own_category_is_most_of_the_catalog():
    """A cosine catalog of 400 categories with Zipf 1.5 sizes (the largest 40 % of the
    rows, ten broad ones, the rest tight) under whole-category filters allowing half the
    rows: a query of the largest category, left out, finds its answers scattered over
    most lists at cosine ~0.2. The calibration's cluster kind draws such holes (up to half
    the rows around the query), so the default search reaches the target there
    (0.926 with holes up to 1/8 of the rows, the former range)."""
    rng = np.random.default_rng(0)
    d, c, n = 256, 400, 30_000
    C = rng.standard_normal((c, d)).astype(np.float32)
    w = 1.0 / np.arange(1, c + 1) ** 1.5
    lab = rng.choice(c, n + 80, p=w / w.sum())
    width = np.where(np.arange(c) < 10, 1.2, 0.3)[lab][:, None].astype(np.float32)
    x = C[lab] + width * rng.standard_normal((n + 80, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x, Q, lab = x[:n], x[n:], lab[:n]
    fi = FilteredIndex(d, "cosine", seed=0)
    fi.add(x)
    frng = np.random.default_rng(9)
    hits = []
    for q in Q:
        parts, tot = [], 0
        for cat in frng.permutation(c):
            r = np.flatnonzero(lab == cat)
            parts.append(r)
            tot += r.size
            if tot >= n // 2:
                break
        allowed = np.sort(np.concatenate(parts)).astype(np.int64)
        got = fi.search(q, 10, filter=allowed).ids[0]
        top = allowed[np.argsort(-(x[allowed] @ q))[:10]]
        hits.append(np.isin(got, top).mean())
    assert np.mean(hits) >= 0.95
