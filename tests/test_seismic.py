"""SeismicIndex (blocked inverted index over sparse vectors) against its exact twin SparseFlatIndex."""

from __future__ import annotations

import dataclasses
import logging

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from gsu.datasets import sparse_collection
from gsu.errors import IndexFileError
from gsu.index import Filter, SeismicIndex, SeismicSettings, SparseFlatIndex, load
from gsu.index.base import SearchResult
from gsu.index._seismic_kernels import _energy_threshold
from _kinds import is_mapped

N, V, K = 2000, 1500, 10
NO_PRUNING = dict(n_postings=10**6, summary_energy=1.0)
EXACT_SEARCH = dict(query_cut=10**4, heap_factor=1e-6)


@pytest.fixture(scope="module")
def coll():
    c = sparse_collection(N, 40, vocab_size=V, avg_nnz=40, query_nnz=15, seed=3)
    return c.docs, c.queries


@pytest.fixture(scope="module")
def flat(coll):
    docs, _ = coll
    f = SparseFlatIndex(V)
    f.add(docs)
    return f


@pytest.fixture(scope="module")
def exact_seismic(coll):
    docs, _ = coll
    return SeismicIndex.build(docs, **NO_PRUNING, centroid_fraction=0.2, seed=1)


def _assert_same(res, ref, *, rtol=1e-5):
    """Same top-k: equal counts, scores equal position by position (within rtol), and equal
    ids wherever a row's scores are all distinct (tied scores may come in either order)."""
    np.testing.assert_array_equal(res.counts, ref.counts)
    ok = ref.ids >= 0
    np.testing.assert_array_equal(res.ids >= 0, ok)
    np.testing.assert_allclose(res.scores[ok], ref.scores[ok], rtol=rtol, atol=1e-6)
    for i in range(ref.ids.shape[0]):
        s = ref.scores[i][ok[i]]
        if s.size < 2 or np.min(np.diff(np.sort(s))) > 4 * rtol * np.abs(s).max():
            np.testing.assert_array_equal(res.ids[i][ok[i]], ref.ids[i][ok[i]])


def test_sparse_flat_matches_dense_brute_force(coll, flat):
    docs, queries = coll
    dense = (queries @ docs.T).toarray()
    res = flat.search(queries, K)
    for i in range(queries.shape[0]):
        nz = np.flatnonzero(dense[i])
        want = nz[np.lexsort((nz, -dense[i][nz]))][:K]
        np.testing.assert_array_equal(res.ids[i][: want.size], want)
        np.testing.assert_allclose(res.scores[i][: want.size], dense[i][want], rtol=1e-5)
        assert res.counts[i] == want.size and np.all(res.ids[i][want.size :] == -1)


def test_sparse_flat_allows_negative_weights_and_returns_only_nonzero_scores():
    x = sp.csr_matrix(np.array([[1.0, -2.0, 0.0], [0.0, 0.0, 3.0], [0.5, 0.0, 0.0]], np.float32))
    f = SparseFlatIndex(3)
    f.add(x, ids=[10, 20, 30])
    res = f.search(np.array([[1.0, 1.0, 0.0]], np.float32), 5)
    assert res.ids[0].tolist() == [30, 10, -1, -1, -1]  # doc 20 shares nothing: never returned
    np.testing.assert_allclose(res.scores[0][:2], [0.5, -1.0])
    assert res.counts.tolist() == [2]


def test_no_pruning_equals_exact_twin(coll, flat, exact_seismic):
    _, queries = coll
    res = exact_seismic.search(queries, K, **EXACT_SEARCH)
    _assert_same(res, flat.search(queries, K))


def test_default_settings_reach_high_recall(coll, flat):
    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=15, centroid_fraction=0.1, summary_energy=0.4)
    st = idx.stats()
    assert 0 < st["n_postings_kept"] <= 15 * V and st["n_blocks"] > 0
    ref = flat.search(queries, K)
    stats: dict = {}
    res = idx.search(queries, K, query_cut=10, heap_factor=0.8, stats=stats)
    recall = np.mean([len(set(res.ids[i]) & set(ref.ids[i][ref.ids[i] >= 0])) / max(ref.counts[i], 1) for i in range(len(ref))])
    assert recall >= 0.8
    assert stats["scored"].mean() < N / 2  # it is a pruned search, not a scan
    # returned scores are true inner products
    dense = (queries @ docs.T).toarray()
    ok = res.ids >= 0
    np.testing.assert_allclose(res.scores[ok], np.take_along_axis(dense, np.maximum(res.ids, 0), 1)[ok], rtol=1e-5)


def test_pruning_keeps_the_global_budget_and_list_cap(coll):
    docs, _ = coll
    idx = SeismicIndex.build(docs, n_postings=5, max_fraction=2.0, summary_energy=0.5)
    a = idx._a
    assert a["post_docs"].shape[0] <= 5 * V < docs.nnz
    list_len = a["blk_ptr"][a["list_blk"][1:]] - a["blk_ptr"][a["list_blk"][:-1]]
    assert list_len.max() == 10  # max_fraction * n_postings
    # list c holds documents with component c, none lighter than a dropped one
    csc = docs.tocsc()
    for c in np.flatnonzero(list_len)[:100]:
        kept = a["post_docs"][a["blk_ptr"][a["list_blk"][c]] : a["blk_ptr"][a["list_blk"][c + 1]]]
        col = csc[:, c].toarray().ravel()
        assert np.unique(kept).size == kept.size and np.all(col[kept] > 0)
        dropped = np.setdiff1d(np.flatnonzero(col), kept)
        if dropped.size:
            assert col[kept].min() >= col[dropped].max()


@pytest.mark.parametrize("frac", [0.005, 0.05, 0.5])
@pytest.mark.parametrize("exact_max", [0, None])
def test_shared_filter_matches_exact_filtered_answer(coll, flat, exact_seismic, frac, exact_max):
    _, queries = coll
    rng = np.random.default_rng(7)
    allowed = np.flatnonzero(rng.random(N) < frac)
    res = exact_seismic.search(queries, K, filter=allowed, filter_exact_max=exact_max, **EXACT_SEARCH)
    assert np.isin(res.ids[res.ids >= 0], allowed).all()
    _assert_same(res, flat.search(queries, K, filter=allowed))


def test_filters_on_a_pruned_index_never_return_excluded_ids(coll):
    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=10, summary_energy=0.4)
    rng = np.random.default_rng(8)
    for frac in (0.02, 0.2, 0.9):
        allowed = np.flatnonzero(rng.random(N) < frac)
        for exact_max in (0, None):
            res = idx.search(queries, K, filter=allowed, filter_exact_max=exact_max, query_cut=5, heap_factor=0.9)
            assert np.isin(res.ids[res.ids >= 0], allowed).all()
    per = [rng.choice(N, 300, replace=False) for _ in range(queries.shape[0])]
    res = idx.search(queries, K, filter=Filter.per_query(per), filter_exact_max=0, query_cut=5)
    for i in range(len(per)):
        assert np.isin(res.ids[i][res.ids[i] >= 0], per[i]).all()


def test_per_query_filter_matches_exact_filtered_answer(coll, flat, exact_seismic):
    _, queries = coll
    rng = np.random.default_rng(9)
    per = [rng.choice(N, int(rng.integers(1, 600)), replace=False) for _ in range(queries.shape[0])]
    f = Filter.per_query(per)
    ref = flat.search(queries, K, filter=f)
    for exact_max in (0, None):
        _assert_same(exact_seismic.search(queries, K, filter=f, filter_exact_max=exact_max, **EXACT_SEARCH), ref)


def test_filter_allowing_nothing_returns_empty_rows(coll, exact_seismic):
    _, queries = coll
    res = exact_seismic.search(queries, K, filter=np.zeros(0, np.int64))
    assert res.counts.sum() == 0 and np.all(res.ids == -1) and np.all(np.isneginf(res.scores))


def test_save_load_and_mmap_round_trip(tmp_path, coll, flat):
    docs, queries = coll
    ids = np.arange(N, dtype=np.int64) * 3 + 100
    idx = SeismicIndex.build(docs, ids=ids, n_postings=20, summary_energy=0.5, value_dtype="float16", seed=5)
    before = idx.search(queries, K, query_cut=8, heap_factor=0.8)
    path = tmp_path / "s.gsu"
    idx.save(path)
    for mmap in (False, True):
        back = load(path, mmap=mmap)
        assert isinstance(back, SeismicIndex) and back.value_dtype == "float16" and back.n_postings == 20
        after = back.search(queries, K, query_cut=8, heap_factor=0.8)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.scores, before.scores)
    assert is_mapped(back._a["fwd_vals"]) and type(back._a["fwd_vals"]) is np.ndarray
    back.add(docs[:3], ids=[1, 2, 4])  # a memory-mapped index still accepts insertions (copies)
    assert back.ntotal == N + 3
    f = SparseFlatIndex(V)
    f.add(docs, ids)
    f.save(tmp_path / "f.gsu")
    np.testing.assert_array_equal(load(tmp_path / "f.gsu", mmap=True).search(queries, K).ids, f.search(queries, K).ids)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.gsu").write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="bad.gsu"):
        load(tmp_path / "bad.gsu")


def test_float16_storage_equals_exact_twin_on_rounded_weights(coll):
    docs, queries = coll
    rounded = docs.copy()
    rounded.data = rounded.data.astype(np.float16).astype(np.float32)
    f = SparseFlatIndex(V)
    f.add(rounded)
    idx = SeismicIndex.build(docs, **NO_PRUNING, value_dtype="float16")
    _assert_same(idx.search(queries, K, **EXACT_SEARCH), f.search(queries, K), rtol=1e-4)
    assert idx.stats()["bytes_forward"] < SeismicIndex.build(docs, **NO_PRUNING).stats()["bytes_forward"]
    big = sp.csr_matrix(np.array([[0.0, 7e4]], np.float32))
    with pytest.raises(ValueError, match="float16"):
        SeismicIndex(2, value_dtype="float16").add(big)


def test_insertions_are_searched_exactly_then_rebuilt(coll, flat):
    docs, queries = coll
    idx = SeismicIndex(V, **NO_PRUNING, rebuild_fraction=0.5)
    idx.add(docs[:1500])
    assert idx.n_indexed == 1500
    idx.add(docs[1500:])  # 500 <= 0.5 * 1500: kept as exactly-scored rows
    assert idx.n_indexed == 1500 and idx.ntotal == N
    _assert_same(idx.search(queries, K, **EXACT_SEARCH), flat.search(queries, K))
    more = sparse_collection(900, 1, vocab_size=V, avg_nnz=40, seed=11).docs
    idx.add(more)  # 1400 > 0.5 * 1500: rebuild
    assert idx.n_indexed == idx.ntotal == N + 900
    f2 = SparseFlatIndex(V)
    f2.add(sp.vstack([docs, more]).tocsr())
    _assert_same(idx.search(queries, K, **EXACT_SEARCH), f2.search(queries, K))
    with pytest.raises(ValueError, match="already"):
        idx.add(docs[:1], ids=[5])


def test_build_is_deterministic(coll):
    docs, _ = coll
    a = SeismicIndex.build(docs, n_postings=10, seed=4)
    b = SeismicIndex.build(docs, n_postings=10, seed=4)
    for name in SeismicIndex._ARRAYS:
        np.testing.assert_array_equal(a._a[name], b._a[name])


def test_bad_input_is_rejected_with_clear_errors(coll, caplog):
    docs, queries = coll
    idx = SeismicIndex(4)
    dup = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([1, 1]), np.array([0, 2])), shape=(1, 4))
    with pytest.raises(ValueError, match="duplicate"):
        idx.add(dup)
    with pytest.raises(ValueError, match="negative"):
        idx.add(sp.csr_matrix(np.array([[1.0, -1.0, 0, 0]], np.float32)))
    with pytest.raises(ValueError, match="NaN"):
        idx.add(sp.csr_matrix(np.array([[1.0, np.nan, 0, 0]], np.float32)))
    with pytest.raises(ValueError, match="vocabulary size"):
        idx.add(sp.csr_matrix(np.ones((1, 5), np.float32)))
    with pytest.raises(TypeError):
        idx.add(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(ValueError, match="n_postings"):
        SeismicIndex(4, n_postings=0)
    with pytest.raises(ValueError, match="summary_energy"):
        SeismicIndex(4, summary_energy=1.5)
    with pytest.raises(ValueError, match="centroid_fraction"):
        SeismicIndex(4, centroid_fraction=0.0)
    # unsorted components are sorted (documented), explicit zeros dropped
    unsorted = sp.csr_matrix((np.array([2.0, 1.0, 0.0], np.float32), np.array([3, 0, 2]), np.array([0, 3])), shape=(1, 4))
    with caplog.at_level(logging.WARNING, logger="gsu.index.seismic"):
        idx.add(sp.vstack([unsorted, sp.csr_matrix((1, 4), dtype=np.float32)]).tocsr(), ids=[7, 8])
    assert idx.n_empty == 1 and "never be returned" in caplog.text
    res = idx.search(sp.csr_matrix(np.array([[1.0, 0, 0, 1.0]], np.float32)), 3)
    assert res.ids[0].tolist() == [7, -1, -1] and res.scores[0][0] == pytest.approx(3.0)
    # empty query: no result, no error; negative query weights are rejected
    assert idx.search(sp.csr_matrix((2, 4), dtype=np.float32), 3).counts.tolist() == [0, 0]
    with pytest.raises(ValueError, match="negative"):
        idx.search(sp.csr_matrix(np.array([[1.0, -1.0, 0, 0]], np.float32)), 3)
    with pytest.raises(ValueError, match="vocabulary size"):
        idx.search(queries, 3)
    with pytest.raises(ValueError):
        idx.search(np.ones(4, np.float32), 0)
    with pytest.raises(ValueError, match="heap_factor"):
        idx.search(np.ones(4, np.float32), 3, heap_factor=-1.0)


def test_energy_threshold_matches_sorted_reference():
    rng = np.random.default_rng(0)
    hsum = np.zeros(512)
    for m in (1, 2, 7, 100, 3000):
        v = rng.gamma(0.7, 1.0, m).astype(np.float32) + np.float32(1e-3)
        for energy in (0.01, 0.4, 0.9, 0.999):
            target = energy * float(v.sum(dtype=np.float64))
            s = np.sort(v)[::-1]
            want = s[min(int(np.searchsorted(np.cumsum(s, dtype=np.float64), target)), m - 1)]
            assert _energy_threshold(v.copy(), m, target, hsum, np.empty(m, np.float32)) == want


def _summary_arrays(idx):
    a = idx._a
    return (a["sum_ent"], a["sum_bit"], a["sum_pack"], a["sum_start"], a["sum_dir"], a["sum_comp"], a["sum_bmp"], a["sum_bm"])


def _reference_summaries(docs, idx, l, energy):
    """Block summaries of list ``l`` recomputed from the documents: coordinate-wise max,
    energy cut (the crossing entry kept), 8-bit codes ``round((v - min) / scale)`` with
    the block's stored scale/min. Returns sorted (comp, blk, code) int64 arrays."""
    a = idx._a
    b0, b1 = int(a["list_blk"][l]), int(a["list_blk"][l + 1])
    out = []
    for b in range(b0, b1):
        rows = a["post_docs"][a["blk_ptr"][b]:a["blk_ptr"][b + 1]]
        mx = np.asarray(docs[rows].max(axis=0).todense()).ravel().astype(np.float32)
        comps = np.flatnonzero(mx)
        v = mx[comps]
        if energy < 1.0:
            s_ = np.sort(v)[::-1]
            cut = s_[min(int(np.searchsorted(np.cumsum(s_, dtype=np.float64), energy * float(v.sum(dtype=np.float64)))), s_.size - 1)]
            keep = v >= cut
            comps, v = comps[keep], v[keep]
        scale, mn = np.float32(a["blk_scale"][b]), np.float32(a["blk_min"][b])
        code = np.zeros(v.size, np.int64) if scale == 0 else np.minimum(np.floor((v - mn) / scale + np.float32(0.5)), 255).astype(np.int64)
        out.append(np.stack([comps, np.full(v.size, b - b0), code], axis=1))
    ref = np.concatenate(out)
    return ref[np.lexsort((ref[:, 1], ref[:, 0]))]


@pytest.mark.parametrize("energy", [1.0, 0.4])
def test_compact_summaries_decode_to_the_block_summaries(coll, energy):
    """The bit-packed, component-major summaries are lossless: decoding every list gives back
    exactly the (component, block, 8-bit code) triples of the per-block summaries, for both
    directory kinds (sorted component ids and vocabulary bitmaps)."""
    from gsu.index._seismic_kernels import summary_list_entries

    docs, _ = coll
    docs = docs.tocsr()
    idx = SeismicIndex.build(docs, n_postings=40, summary_energy=energy, centroid_fraction=0.2, seed=2)
    a = idx._a
    bitmap = np.diff(a["sum_bmp"]) > 0
    nonempty = np.diff(a["list_blk"]) > 0
    assert bitmap[nonempty].any() and (~bitmap[nonempty]).any()  # both directory kinds occur
    rng = np.random.default_rng(0)
    kinds = [np.flatnonzero(nonempty & bitmap), np.flatnonzero(nonempty & ~bitmap)]
    lists = np.concatenate([rng.choice(x, min(6, x.size), replace=False) for x in kinds])
    total = 0
    for l in lists:
        comp, blk, code = summary_list_entries(int(l), a["list_blk"], *_summary_arrays(idx))
        got = np.stack([comp, blk, code], axis=1)
        np.testing.assert_array_equal(got, _reference_summaries(docs, idx, int(l), energy))
        total += got.shape[0]
    assert total > 0
    assert idx.stats()["n_summary_entries"] == sum(
        summary_list_entries(l, a["list_blk"], *_summary_arrays(idx))[0].shape[0] for l in range(V))


@pytest.mark.parametrize("vocab", [V, 30_000])
def test_summary_dots_match_decoded_summaries(coll, vocab):
    """All three summary lookup paths (bitmap rank — the small vocabulary —, binary search in
    sorted ids, sorted ids walked against the dense query — the large one) give the
    dequantised dot of every block; with ``summary_energy=1`` that dot bounds every
    document of the block up to the 8-bit rounding."""
    from gsu.index._seismic_kernels import _list_summary_dots, summary_list_entries

    docs = coll[0] if vocab == V else sparse_collection(1000, 1, vocab_size=vocab, avg_nnz=40, seed=5).docs
    docs = docs.tocsr()
    idx = SeismicIndex.build(docs, n_postings=60, summary_energy=1.0, centroid_fraction=0.2, seed=1)
    a = idx._a
    rng = np.random.default_rng(7)
    nonempty = np.flatnonzero(np.diff(a["list_blk"]) > 0)
    bitmap = (np.diff(a["sum_bmp"]) > 0)[nonempty]
    kind = nonempty[bitmap] if vocab == V else nonempty[~bitmap]
    assert kind.size >= 8
    lists = rng.choice(kind, 8, replace=False)
    for l in lists:
        l = int(l)
        b0, b1 = int(a["list_blk"][l]), int(a["list_blk"][l + 1])
        nb_ = b1 - b0
        comp, blk, code = summary_list_entries(l, a["list_blk"], *_summary_arrays(idx))
        vals = code * a["blk_scale"][b0 + blk] + a["blk_min"][b0 + blk]
        for n_terms in (2, vocab):  # few terms: lookups; all terms: a sorted directory is walked
            qc = np.sort(rng.choice(vocab, size=n_terms, replace=False)).astype(np.int32)
            if n_terms == 2:
                qc[0] = comp[len(comp) // 2]
                qc = np.unique(qc).astype(np.int32)
            qv = rng.random(qc.shape[0]).astype(np.float32) + 0.1
            qdense = np.zeros(vocab, np.float32)
            qdense[qc] = qv
            acc, aq, dots = (np.empty(2 * nb_ + 2, np.float32) for _ in range(3))
            _list_summary_dots(l, b0, nb_, 0, qc.shape[0], qc, qdense, a["sum_ent"], a["sum_bit"], a["sum_pack"],
                               a["sum_start"], a["sum_dir"], a["sum_comp"], a["sum_bmp"], a["sum_bm"], a["sum_sptr"],
                               a["sum_samp"], a["blk_scale"], a["blk_min"], acc, aq, dots)
            ref = np.zeros(nb_, np.float64)
            np.add.at(ref, blk, vals * qdense[comp])
            np.testing.assert_allclose(dots[:nb_], ref, rtol=1e-4, atol=1e-4)
            for b in range(nb_):
                rows = a["post_docs"][a["blk_ptr"][b0 + b]:a["blk_ptr"][b0 + b + 1]]
                best = float((docs[rows] @ qdense).max())
                slack = float(a["blk_scale"][b0 + b]) * 0.5 * float(qdense.sum()) + 1e-4
                assert dots[b] >= best - slack


def _reference_search(idx, q_row, k, query_cut, heap_factor):
    """Seismic search written plainly over the decoded summaries (the algorithm of the
    module docstring): the query's ``query_cut`` heaviest terms in order (ties: lower
    component first); the first list's blocks by decreasing summary dot, later lists in
    block order; a block is skipped once the heap is full and its dot is below
    ``heap_factor`` × the k-th score; every document is scored once, exactly."""
    from gsu.index._seismic_kernels import summary_list_entries

    a = idx._a
    comps, vals = q_row.indices, q_row.data.astype(np.float32)
    qd = np.zeros(idx.dim, np.float32)
    qd[comps] = vals
    order = sorted(range(comps.size), key=lambda j: (-vals[j], comps[j]))[:query_cut]
    heap: list[tuple[float, int]] = []  # (score, -row) min-heap by score then larger row first out
    seen = set()
    fv = idx._values_f32()
    for ti, j in enumerate(order):
        l = int(comps[j])
        b0, b1 = int(a["list_blk"][l]), int(a["list_blk"][l + 1])
        if b1 == b0:
            continue
        c, blk, code = summary_list_entries(l, a["list_blk"], *_summary_arrays(idx))
        dots = np.zeros(b1 - b0, np.float64)
        np.add.at(dots, blk, (code * a["blk_scale"][b0 + blk] + a["blk_min"][b0 + blk]) * qd[c])
        blocks = np.argsort(-dots, kind="stable") if ti == 0 else np.arange(b1 - b0)
        for b in blocks:
            if len(heap) == k and dots[b] < heap_factor * min(heap)[0] * (1 - 1e-5):
                continue
            for d in a["post_docs"][a["blk_ptr"][b0 + b]:a["blk_ptr"][b0 + b + 1]]:
                d = int(d)
                if d in seen:
                    continue
                seen.add(d)
                s, e = a["fwd_indptr"][d], a["fwd_indptr"][d + 1]
                sc = float(np.dot(qd[a["fwd_comps"][s:e].astype(np.int64)].astype(np.float64), fv[s:e].astype(np.float64)))
                if sc > 0:
                    heap.append((sc, -d))
                    heap.sort(reverse=True)
                    heap = heap[:k]
                    heap.sort()
    heap.sort(reverse=True)
    return [(-r, s) for s, r in heap]


def test_kernel_search_equals_the_plain_reference(coll):
    """The compiled search (compact summaries, per-query scratch, prefetching) returns what the
    plain-Python Seismic search over the decoded summaries returns, at several operating points."""
    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3, auto_calibrate=False)
    checked = 0
    for qc, hf in ((2, 1.0), (5, 0.8), (10, 0.6)):
        res = idx.search(queries, K, query_cut=qc, heap_factor=hf)
        for i in range(queries.shape[0]):
            ref = _reference_search(idx, queries[i], K, qc, hf)
            got = [(int(r), float(s)) for r, s in zip(res.ids[i], res.scores[i]) if r >= 0]
            assert len(got) == len(ref)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in ref], rtol=1e-5)
            sc = np.array([s for _, s in ref])
            if sc.size < 2 or np.min(np.abs(np.diff(sc))) > 1e-4 * sc.max():
                assert [r for r, _ in got] == [r for r, _ in ref]
                checked += 1
    assert checked > 60


@numba.njit
def _view_visited(v):
    return v.visited


def _visited(idx):
    """The kernel view's per-thread visited bitmaps (numba reads the view's fields)."""
    return _view_visited(idx._view)


def test_the_visited_bitmap_is_clear_after_every_search_and_repeats_answer_alike(coll):
    """A search marks the documents it has seen in its thread's bitmap and clears them
    before it returns: after one-row calls, batches on every thread and filtered searches
    the bitmap is all-zero, and searching the same queries again (in another grouping over
    the threads) gives the same answers bit for bit."""
    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3, auto_calibrate=False)
    q = queries.tocsr()
    first = idx.search(q, K, query_cut=6, heap_factor=0.8)
    assert int(first.counts.min()) > 0
    allowed = np.sort(np.random.default_rng(5).choice(N, N // 3, replace=False))
    ff = idx.search(q, K, query_cut=6, heap_factor=0.8, filter=Filter.from_ids(allowed), filter_exact_max=0)
    for rnd in range(2):
        one = SearchResult.concat([idx.search(q[i], K, query_cut=6, heap_factor=0.8) for i in range(q.shape[0])])
        assert not _visited(idx).any()
        again = idx.search(q[::-1], K, query_cut=6, heap_factor=0.8)
        assert not _visited(idx).any()
        fa = idx.search(q, K, query_cut=6, heap_factor=0.8, filter=Filter.from_ids(allowed.copy()), filter_exact_max=0)
        assert not _visited(idx).any()
        for res in (one, SearchResult(again.ids[::-1], again.scores[::-1], again.counts[::-1])):
            np.testing.assert_array_equal(res.ids, first.ids)
            np.testing.assert_array_equal(res.scores, first.scores)
        np.testing.assert_array_equal(fa.ids, ff.ids)
        assert np.isin(fa.ids[fa.ids >= 0], allowed).all()
    assert _visited(idx).shape[1] == (N + 63) // 64


@numba.njit
def _view_amask(v):
    return v.amask


@pytest.mark.parametrize("share", [3, 100])
def test_per_query_filters_leave_no_allowed_rows_behind(coll, flat, exact_seismic, share):
    """A per-query filter sets its rows in the thread's allowed mask and clears them after
    the query: one-row calls whose filters change from call to call, and a batch with a
    filter per query on both threads, return only each query's own allowed rows (a row left
    behind would let the previous filter's rows through), leave the mask all-zero, agree
    with each other, and on the unpruned index equal the exact per-query filtered product.
    A third of the rows: the mask cleared as one span; a hundredth: row by row."""
    _, queries = coll
    q = queries.tocsr()
    rng = np.random.default_rng(21)
    per = [np.sort(rng.choice(N, N // share, replace=False)) for _ in range(q.shape[0])]
    for idx, kw in ((SeismicIndex.build(coll[0], n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3,
                                        auto_calibrate=False), dict(query_cut=6, heap_factor=0.8)),
                    (exact_seismic, EXACT_SEARCH)):
        one = []
        for i in range(q.shape[0]):
            r = idx.search(q[i], K, filter=Filter.from_ids(per[i].copy()), filter_exact_max=0, **kw)
            assert np.isin(r.ids[r.ids >= 0], per[i]).all()
            assert not _view_amask(idx._view).any()
            one.append(r)
        one = SearchResult.concat(one)
        assert int(one.counts.min()) > 0 or share > 3  # (a hundredth: a pruned search may meet none)
        batch = idx.search(q, K, filter=Filter.per_query(per), filter_exact_max=0, **kw)
        assert not _view_amask(idx._view).any()
        np.testing.assert_array_equal(batch.ids, one.ids)
        np.testing.assert_array_equal(batch.scores, one.scores)
        assert _view_amask(idx._view).shape[1] == N
    _assert_same(one, flat.search(queries, K, filter=Filter.per_query(per)))


@pytest.mark.parametrize("exact_max", [0, None])
def test_one_query_calls_with_fresh_filters_equal_the_batch(coll, flat, exact_seismic, exact_max):
    """One query per call with a new Filter built from a plain id array each time (the
    per-query byte mask, mode 2) gives what the batch with a shared filter (the shared mask,
    mode 1) gives, and on the
    unpruned index what the exact filtered product gives."""
    _, queries = coll
    rng = np.random.default_rng(11)
    for frac in (0.01, 0.2):
        allowed = np.sort(rng.choice(N, int(frac * N), replace=False))
        batch = exact_seismic.search(queries, K, filter=Filter.from_ids(allowed), filter_exact_max=exact_max, **EXACT_SEARCH)
        rows = [exact_seismic.search(queries[i], K, filter=Filter.from_ids(allowed.copy()), filter_exact_max=exact_max, **EXACT_SEARCH)
                for i in range(queries.shape[0])]
        one = SearchResult.concat(rows)
        np.testing.assert_array_equal(one.ids, batch.ids)
        np.testing.assert_array_equal(one.scores, batch.scores)
        _assert_same(one, flat.search(queries, K, filter=allowed))


def test_query_rows_in_any_accepted_form_give_the_same_answer(coll, exact_seismic):
    """The lean path takes canonical float32 CSR rows as they are; unsorted components,
    explicit zeros, 64-bit index arrays, other dtypes and dense rows are normalised first."""
    _, queries = coll
    ref = exact_seismic.search(queries, K, query_cut=6, heap_factor=0.8)
    q = queries.tocsr()
    variants = []
    v = q.copy()
    v.indptr = v.indptr.astype(np.int64)
    v.indices = v.indices.astype(np.int64)
    variants.append(v)
    variants.append(q.astype(np.float64))
    variants.append(q.toarray())
    rev = q.copy()  # reverse each row's components
    for i in range(rev.shape[0]):
        s, e = rev.indptr[i], rev.indptr[i + 1]
        rev.indices[s:e] = rev.indices[s:e][::-1].copy()
        rev.data[s:e] = rev.data[s:e][::-1].copy()
    rev.has_sorted_indices = False
    variants.append(rev)
    z = sp.csr_matrix((np.concatenate([q.data, np.zeros(1, np.float32)]), np.concatenate([q.indices, [V - 1]]),
                       np.concatenate([q.indptr[:-1], [q.indptr[-1] + 1]])), shape=q.shape)  # an explicit zero in the last row
    z.has_sorted_indices = False
    variants.append(z)
    for x in variants:
        res = exact_seismic.search(x, K, query_cut=6, heap_factor=0.8)
        np.testing.assert_array_equal(res.ids, ref.ids)
    for i in range(5):
        np.testing.assert_array_equal(exact_seismic.search(rev[i], K, query_cut=6, heap_factor=0.8).ids[0], ref.ids[i])


def test_one_row_calls_equal_the_batch_on_the_lean_path(coll):
    """One unfiltered CSR row per call (the lean one-query path: a direct call of the
    compiled kernel, no shape check of the result) returns exactly the batch's rows, under
    external ids, at several operating points, also after an add remade the kernel view;
    read-only and strided rows take the lean path too; rows it does not take (int64
    indptr, unsorted or zero weights, a component array of another rank, a removed row in
    the index) and calls with other keywords give the general path's answer or error."""
    docs, queries = coll
    ids = np.arange(N, dtype=np.int64) * 7 + 3
    idx = SeismicIndex.build(docs, ids=ids, n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3,
                             auto_calibrate=False)
    q = queries.tocsr()
    for qc, hf in ((2, 1.0), (6, 0.8)):
        batch = idx.search(q, K, query_cut=qc, heap_factor=hf)
        one = SearchResult.concat([idx.search(q[i], K, query_cut=qc, heap_factor=hf) for i in range(q.shape[0])])
        np.testing.assert_array_equal(one.ids, batch.ids)
        np.testing.assert_array_equal(one.scores, batch.scores)
        np.testing.assert_array_equal(one.counts, batch.counts)
        assert set(one.ids[one.ids >= 0].tolist()) <= set(ids.tolist())
    ref = idx.search(q, K, query_cut=6, heap_factor=0.8)
    ro = q[0].copy()
    for a in (ro.indptr, ro.indices, ro.data):
        a.flags.writeable = False
    idx._one = None  # set again by the lean path only
    np.testing.assert_array_equal(idx.search(ro, K, query_cut=6, heap_factor=0.8).ids[0], ref.ids[0])
    assert idx._one is not None
    for name in ("indptr", "indices", "data"):  # an array of the right dtype but every other element of a buffer
        st = q[0].copy()
        a = getattr(st, name)
        buf = np.zeros(2 * a.shape[0], a.dtype)
        buf[::2] = a
        setattr(st, name, buf[::2])
        assert not getattr(st, name).flags.c_contiguous
        idx._one = None
        np.testing.assert_array_equal(idx.search(st, K, query_cut=6, heap_factor=0.8).ids[0], ref.ids[0])
        assert idx._one is not None
    wide = q[0].copy()  # int64 indptr: the general path
    wide.indptr = wide.indptr.astype(np.int64)
    np.testing.assert_array_equal(idx.search(wide, K, query_cut=6, heap_factor=0.8).ids[0], ref.ids[0])
    rev = q[0].copy()  # components in reverse order and an explicit zero: the kernel refuses, the general path normalises
    m = rev.indices.shape[0]
    rev = sp.csr_matrix((np.concatenate([rev.data[::-1], [np.float32(0)]]).astype(np.float32),
                         np.concatenate([rev.indices[::-1], [V - 1 if rev.indices.max() < V - 1 else 0]]).astype(np.int32),
                         np.array([0, m + 1], np.int32)), shape=(1, V))
    np.testing.assert_array_equal(idx.search(rev, K, query_cut=6, heap_factor=0.8).ids[0], ref.ids[0])
    for kw in ({"heap_factor": 0.8, "query_cut": 6}, {"query_cut": 6, "heap_factor": 0.8, "stats": {}},
               {"query_cut": 6, "heap_factor": 0.8, "filter": None, "settings": None}):
        np.testing.assert_array_equal(idx.search(q[0], K, **kw).ids[0], ref.ids[0])
    with pytest.raises(TypeError):
        idx.search(q[0], K, query_cut=6, heap_factro=0.8)
    with pytest.raises(ValueError):
        idx.search(q[0], 0, query_cut=6, heap_factor=0.8)
    with pytest.raises(ValueError):
        idx.search(q[0], K, query_cut=0, heap_factor=0.8)
    # a value equal to a cached one but of a type the checks refuse (6.0 == 6, True == 1) is refused
    # on the lean path and on the general one alike, after the valid one was cached
    for rows in (q[0], q[:2]):
        idx.search(rows, K, query_cut=6, heap_factor=0.8)
        idx.search(rows, K, query_cut=1, heap_factor=0.8)
        with pytest.raises(TypeError, match="query_cut"):
            idx.search(rows, K, query_cut=6.0, heap_factor=0.8)
        with pytest.raises(TypeError, match="query_cut"):
            idx.search(rows, K, query_cut=True, heap_factor=0.8)
        for bad in (np.float64(6.0), np.True_):
            with pytest.raises(TypeError, match="query_cut"):
                idx.search(rows, K, query_cut=bad, heap_factor=0.8)
    idx._one = None  # numpy scalars of the right kinds take the lean path and answer the same
    np.testing.assert_array_equal(idx.search(q[0], K, query_cut=np.int64(6), heap_factor=np.float64(0.8)).ids[0], ref.ids[0])
    assert idx._one is not None
    two = q[:2]  # two rows of the lean form: the kernel's one-row check sends them the general way
    np.testing.assert_array_equal(idx.search(two, K, query_cut=6, heap_factor=0.8).ids, ref.ids[:2])
    odd = q[0].copy()  # a component array of another rank never reaches the direct call
    odd.indices = odd.indices.reshape(1, -1)
    with pytest.raises(ValueError, match="malformed CSR"):
        idx.search(odd, K, query_cut=6, heap_factor=0.8)
    empty = sp.csr_matrix((1, V), dtype=np.float32)
    res = idx.search(empty, K)
    assert res.counts[0] == 0 and np.all(res.ids == -1)
    extra = docs[:40].tocsr() * np.float32(2.0)  # added documents (scored exactly): the view is made anew
    idx.add(extra, ids=np.arange(40, dtype=np.int64) + 10 * N)
    batch = idx.search(q, K, query_cut=6, heap_factor=0.8)
    one = SearchResult.concat([idx.search(q[i], K, query_cut=6, heap_factor=0.8) for i in range(q.shape[0])])
    np.testing.assert_array_equal(one.ids, batch.ids)
    np.testing.assert_array_equal(one.scores, batch.scores)
    assert np.any(one.ids >= 10 * N)
    ref = batch
    idx.remove(ref.ids[0][:1])
    after = idx.search(q[0], K, query_cut=6, heap_factor=0.8)
    assert ref.ids[0][0] not in after.ids[0]
    np.testing.assert_array_equal(after.ids[0], idx.search(q, K, query_cut=6, heap_factor=0.8).ids[0])


def _recall(res, ref):
    return float(np.mean([len(set(res.ids[i][res.ids[i] >= 0]) & set(ref.ids[i][ref.ids[i] >= 0])) / max(int(ref.counts[i]), 1)
                          for i in range(len(ref))]))


@pytest.fixture(scope="module")
def rarity():
    from gsu.datasets.sparse import rarity_collection

    c = rarity_collection(4000, 240, vocab_size=6000, avg_nnz=50, query_nnz=12, n_topics=60, seed=21)
    f = SparseFlatIndex(6000)
    f.add(c.docs)
    return c.docs, c.queries, f.search(c.queries, K)


def test_calibration_reaches_its_target_on_held_out_queries(rarity):
    """Calibrated on queries sampled from the documents (never on the generator's queries):
    every measured operating point whose recall lower bound reaches the target reaches it on
    the held-out queries too, so the default search does, whatever the timings chose."""
    docs, queries, ref = rarity
    idx = SeismicIndex.build(docs, n_postings=400, auto_calibrate=False, seed=1)
    assert idx.calibration is None and idx.operating_point()["calibrated"] is False
    cal = idx.calibrate(target_recall=0.95, max_seconds=None, seed=3)
    assert cal["source"] == "sampled" and cal["n_queries"] == 400 and cal["points"]
    eligible = [p for p in cal["grid"] if p[3] >= 0.95]
    assert eligible and len(eligible) < len(cal["grid"])  # the target is neither free nor out of reach
    for qc, hf, *_ in eligible:
        assert _recall(idx.search(queries, K, query_cut=qc, heap_factor=hf), ref) >= 0.95, (qc, hf)
    op = idx.operating_point()
    assert [op["query_cut"], op["heap_factor"]] in [p[:2] for p in eligible]
    assert _recall(idx.search(queries, K), ref) >= 0.95
    # a lower target picks a point at least as fast, never slower
    assert idx.operating_point(0.8)["ms_per_query"] <= op["ms_per_query"]
    # calibrated on the user's own queries (first half), checked on the other half
    idx.calibrate(queries[:120], target_recall=0.9, max_seconds=None)
    assert idx.calibration["source"] == "given"
    held = queries[120:]
    sub = SparseFlatIndex(6000)
    sub.add(docs)
    assert _recall(idx.search(held, K), sub.search(held, K)) >= 0.9


def _sampled_recalls(idx, flat, q, src, **kw):
    """Per-query recall@K of ``idx.search`` on sampled queries, their source document left
    out of both answers, a found row counted when its score reaches the true K-th score."""
    ref = flat.search(q, K + 1)
    res = idx.search(q, K + 1, **kw)
    out = np.empty(len(src))
    for i in range(len(src)):
        keep = ref.ids[i] != src[i]
        true = ref.scores[i][keep][:K]
        found = res.scores[i][(res.ids[i] != src[i]) & (res.ids[i] >= 0)][:K]
        kth = true[-1]
        out[i] = min(int((found >= kth - 1e-5 * abs(kth) - 1e-7).sum()), true.size) / true.size
    return out


def test_calibration_bounds_every_query_style_on_its_own(rarity):
    """The sampled calibration queries come in four styles (query i: style i % 4); a
    point's stored lower bound is the hardest style's, so the default reaches the target
    on each style of a fresh sample, both keyword styles (uniform weights; terms drawn by
    weight or by its square root) included."""
    docs, _, _ = rarity
    flat = SparseFlatIndex(6000)
    flat.add(docs)
    idx = SeismicIndex.build(docs, n_postings=400, auto_calibrate=False, seed=1)
    cal = idx.calibrate(target_recall=0.9, max_seconds=None, seed=3)
    assert cal["n_queries"] == 400
    q, src = idx.sample_queries(400, seed=3)
    q = q.to_scipy()
    style = np.arange(400) % 4
    # the keyword styles carry weight 1 on every term, the others the documents' weights
    ones = [np.allclose(q[np.flatnonzero(style == s_)].data, 1.0) for s_ in range(4)]
    assert ones == [False, True, False, True]
    z = 1.6448536269514722
    for qc, hf, mean, lcb, _ms in cal["grid"][::7]:
        r = _sampled_recalls(idx, flat, q, src, query_cut=qc, heap_factor=hf)
        bounds = [r[style == s].mean() - z * r[style == s].std(ddof=1) / np.sqrt(100) for s in range(4)]
        assert mean == pytest.approx(r.mean(), abs=2e-3)
        assert lcb == pytest.approx(min(bounds), abs=2e-3), (qc, hf)
        assert lcb < r.mean() - z * r.std(ddof=1) / np.sqrt(400) + 1e-9  # stricter than the pooled bound
    fresh, fsrc = idx.sample_queries(400, seed=11)
    r = _sampled_recalls(idx, flat, fresh.to_scipy(), fsrc)
    assert min(r[style == s].mean() for s in range(4)) >= 0.9


def test_the_tempered_keyword_style_reaches_a_documents_common_terms(rarity):
    """Style 3 draws its terms by the square root of the weight, style 1 by the weight:
    on the same documents style 3 picks terms of lower weight (more of a user's common
    words) on average."""
    docs, _, _ = rarity
    idx = SeismicIndex.build(docs, n_postings=400, auto_calibrate=False, seed=1)
    q, src = idx.sample_queries(2000, seed=5)
    q = q.to_scipy()
    d = docs.tocsr()
    style = np.arange(2000) % 4

    def mean_rank(s_):  # the rank of a picked term's weight in its document (0 = heaviest), over style s_
        out = []
        for i in np.flatnonzero(style == s_):
            row = d[int(src[i])]
            order = row.indices[np.argsort(-row.data)]
            rank = {int(c): j / max(order.size - 1, 1) for j, c in enumerate(order)}
            out += [rank[int(c)] for c in q[i].indices if int(c) in rank]
        return float(np.mean(out))

    assert mean_rank(3) > mean_rank(1) + 0.03  # 0.428 vs 0.378 here; ~0.005 is the sampling error


def test_build_calibrates_and_the_calibration_is_saved(tmp_path, rarity):
    docs, queries, ref = rarity
    idx = SeismicIndex.build(docs, n_postings=400, seed=1)
    cal = idx.calibration
    assert cal is not None and cal["target_recall"] == 0.95
    before = idx.search(queries, K)
    idx.save(tmp_path / "c.gsu")
    for mmap in (False, True):
        back = load(tmp_path / "c.gsu", mmap=mmap)
        assert back.calibration == cal and back.operating_point() == idx.operating_point()
        after = back.search(queries, K)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.scores, before.scores)
        for name in SeismicIndex._ARRAYS:
            np.testing.assert_array_equal(back._a[name], idx._a[name])
    with pytest.raises(ValueError, match="target_recall"):
        idx.search(queries, K, target_recall=1.5)
    with pytest.raises(ValueError, match="not both"):
        idx.search(queries, K, target_recall=0.9, query_cut=3, heap_factor=0.5)


def _score_recall(res, ref):
    """Tie-tolerant recall@K per query: a found row counts when its score reaches the true
    K-th score (the exact route and the flat index may break ties differently)."""
    out = []
    for i in range(len(ref)):
        c = int(ref.counts[i])
        if c == 0:
            out.append(1.0)
            continue
        kth = ref.scores[i][c - 1]
        found = res.scores[i][res.ids[i] >= 0]
        out.append(min(int((found >= kth - 1e-5 * abs(kth) - 1e-7).sum()), c) / c)
    return float(np.mean(out))


def test_filtered_calibration_plans_each_selectivity_and_reaches_the_target(rarity):
    """``calibrate`` also measures filtered searches: per selectivity of ``FILTER_BANDS``, a
    random filter per calibration query, the exact route's cost and the blocked route's
    recall on a staircase of settings. The plan (``filter_plan``) takes the exact route where
    no blocked setting reaches the target below the exact cost, else the cheapest that does;
    on the generator's held-out queries, with fresh random filters of each planned
    selectivity, the default filtered search reaches the target (one call per query and a
    batch of per-query filters alike), where the unfiltered operating point alone does not
    at the narrow ones. A filter whose selectivity's entry is exact is scanned exactly (every
    allowed row scored); an explicit ``filter_exact_max`` or ``query_cut`` bypasses the plan."""
    from gsu.index.seismic import FILTER_BANDS

    docs, queries, _ = rarity
    n = docs.shape[0]
    flat = SparseFlatIndex(6000)
    flat.add(docs)
    idx = SeismicIndex.build(docs, n_postings=400, auto_calibrate=False, seed=1)
    assert idx.filter_plan() == []  # not calibrated: the fixed rule
    cal = idx.calibrate(target_recall=0.95, max_seconds=None, seed=3)
    fc = cal["filtered"]
    assert fc["kind"] == "random" and fc["n_queries"] == 400 and fc["complete"]
    plan = idx.filter_plan()
    sels = [e["selectivity"] for e in plan]
    assert sels == sorted(sels) and set(sels) <= set(FILTER_BANDS) and len(sels) >= 5
    routes = [e["route"] for e in plan]
    assert "exact" in routes and "blocked" in routes and routes[0] == "exact"
    for e, (sel, m, exact_ms, pts) in zip(plan, fc["bands"]):
        ok = [p for p in pts if p[3] >= 0.95 and p[4] < exact_ms]
        if e["route"] == "exact":
            assert not ok and e["ms_per_query"] == exact_ms
        else:
            best = min(ok, key=lambda p: p[4])
            assert [e["query_cut"], e["heap_factor"]] == best[:2] and e["expected_recall"] == best[2]
    q = queries.tocsr()[:120]
    rng = np.random.default_rng(5)
    op = idx.operating_point()
    below = []
    for e in plan:
        m = int(round(e["selectivity"] * n))
        fs = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for _ in range(q.shape[0])]
        ref = flat.search(q, K, filter=Filter.per_query(fs))
        one = SearchResult.concat([idx.search(q[i], K, filter=fs[i]) for i in range(q.shape[0])])
        batch = idx.search(q, K, filter=Filter.per_query(fs))
        assert _score_recall(one, ref) >= 0.95 and _score_recall(batch, ref) >= 0.95, e
        below.append(_score_recall(idx.search(q, K, filter=Filter.per_query(fs), filter_exact_max=0), ref))
        st = {}
        idx.search(q[0], K, filter=fs[0], stats=st)
        if e["route"] == "exact":
            assert st["scored"][0] == m
            np.testing.assert_allclose(idx.search(q[0], K, filter=fs[0]).scores, ref.scores[:1], rtol=1e-6)
        else:  # the entry's blocked settings, exactly
            same = idx.search(q, K, filter=Filter.per_query(fs), query_cut=e["query_cut"], heap_factor=e["heap_factor"],
                              filter_exact_max=0)
            np.testing.assert_array_equal(batch.ids, same.ids)
            np.testing.assert_array_equal(one.ids, same.ids)
        st = {}  # explicit settings bypass the plan: the blocked route at the operating point
        idx.search(q[0], K, filter=fs[0], filter_exact_max=0, stats=st)
        st2 = {}
        idx.search(q[0], K, filter=fs[0], query_cut=op["query_cut"], heap_factor=op["heap_factor"], filter_exact_max=0, stats=st2)
        assert st["scored"][0] == st2["scored"][0]
    assert min(below) < 0.9  # the blocked route at the unfiltered operating point misses narrow filters
    # a lower target plans no dearer route at any selectivity
    for lo, hi in zip(idx.filter_plan(0.8), plan):
        assert lo["ms_per_query"] <= hi["ms_per_query"] + 1e-12


def test_a_batch_of_filters_of_several_selectivities_follows_the_plan(rarity):
    """Per-query filters of different selectivities in one call: the ones whose entry is
    exact are scanned exactly (every allowed row scored), the others searched with the
    strongest blocked entry among them. The plan is set by hand from a record of the
    calibration's form (exact at 20 %, two blocked settings at 30 % and 50 %), so the
    routes do not depend on timings; every answer reaches what a call of its own does."""
    docs, queries, _ = rarity
    n = docs.shape[0]
    flat = SparseFlatIndex(6000)
    flat.add(docs)
    idx = SeismicIndex.build(docs, n_postings=400, auto_calibrate=False, seed=1)
    cal = idx.calibrate(target_recall=0.95, max_seconds=None, seed=3, filtered=False)
    assert "filtered" not in cal and idx.filter_plan() == []
    strong, weak = [64, 0.5, 0.999, 0.99, 0.05], [32, 0.6, 0.99, 0.96, 0.02]
    cal["filtered"] = {"n": n, "k": K, "n_queries": 100, "kind": "random", "complete": True, "seconds": 0.0,
                       "bands": [[0.2, int(0.2 * n), 0.01, [[2, 1.0, 0.5, 0.4, 0.001]]],  # blocked misses: exact
                                 [0.3, int(0.3 * n), 1.0, [weak]], [0.5, int(0.5 * n), 1.0, [weak, strong]]]}
    idx.__dict__.pop("_filter_fits", None)  # (fits are cached per record; this one was edited in place)
    plan = idx.filter_plan()
    assert [e["route"] for e in plan] == ["exact", "blocked", "blocked"]
    assert [plan[1]["query_cut"], plan[2]["query_cut"]] == [32, 32]  # the cheapest reaching 0.95
    assert idx.filter_plan(0.98)[2]["query_cut"] == 64
    q = queries.tocsr()[:60]
    rng = np.random.default_rng(8)
    sizes = [(int(0.2 * n), int(0.3 * n), int(0.6 * n))[i % 3] for i in range(q.shape[0])]
    fs = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for m in sizes]
    st = {}
    res = idx.search(q, K, filter=Filter.per_query(fs), stats=st)
    ref = flat.search(q, K, filter=Filter.per_query(fs))
    exact_rows = np.array(sizes) == int(0.2 * n)
    np.testing.assert_array_equal(st["scored"][exact_rows], np.array(sizes)[exact_rows])
    assert np.all(st["scored"][~exact_rows] < np.array(sizes)[~exact_rows])
    one = SearchResult.concat([idx.search(q[i], K, filter=fs[i]) for i in range(q.shape[0])])
    assert _score_recall(res, ref) >= 0.95 and _score_recall(one, ref) >= 0.95
    # the blocked ones at the blocked entries' settings exactly (both entries are (32, 0.6) at 0.95)
    same = idx.search(q[~exact_rows], K, filter=Filter.per_query([f for f, e in zip(fs, exact_rows) if not e]),
                      query_cut=32, heap_factor=0.6, filter_exact_max=0)
    np.testing.assert_array_equal(res.ids[~exact_rows], same.ids)
    np.testing.assert_array_equal(one.ids[~exact_rows], same.ids)
    # at a higher target the 30 % entry turns exact (its only setting's bound is 0.96) and the
    # 60 % filters take the 50 % entry's stronger setting
    st98 = {}
    res98 = idx.search(q, K, filter=Filter.per_query(fs), target_recall=0.98, stats=st98)
    wide = np.array(sizes) == int(0.6 * n)
    np.testing.assert_array_equal(st98["scored"][~wide], np.array(sizes)[~wide])
    same98 = idx.search(q[wide], K, filter=Filter.per_query([f for f, w in zip(fs, wide) if w]),
                        query_cut=64, heap_factor=0.5, filter_exact_max=0)
    np.testing.assert_array_equal(res98.ids[wide], same98.ids)


def test_a_filtered_calibration_cut_short_plans_what_it_measured(rarity):
    """Under a time limit the filtered phase measures at least two selectivities, then stops
    (``complete`` False); filters past twice the last measured selectivity take the
    unfiltered operating point, the others the entry at or below theirs, and every search
    answers."""
    docs, queries, _ = rarity
    n = docs.shape[0]
    idx = SeismicIndex.build(docs, n_postings=400, auto_calibrate=False, seed=1)
    cal = idx.calibrate(target_recall=0.95, max_seconds=1e-4, seed=3)
    fc = cal["filtered"]
    assert not fc["complete"] and len(fc["bands"]) == 2
    plan = idx.filter_plan()
    assert [e["selectivity"] for e in plan] == [b[0] for b in fc["bands"]]
    op = idx.operating_point()
    last = plan[-1]["selectivity"]
    wide = np.sort(np.random.default_rng(1).choice(n, int(0.5 * n), replace=False)).astype(np.int64)
    assert 0.5 >= 2 * last
    same = idx.search(queries[:5], K, filter=wide, filter_exact_max=0)  # the operating point's blocked search
    np.testing.assert_array_equal(idx.search(queries[:5], K, filter=wide).ids, same.ids)
    assert same.ids.shape == (5, K) and op["calibrated"]


def test_the_filtered_calibration_is_saved_and_checked(tmp_path, rarity):
    from gsu.index.seismic import _check_calibration

    docs, queries, _ = rarity
    idx = SeismicIndex.build(docs, n_postings=400, seed=1)  # the build's calibration measures filters too
    assert idx.calibration["filtered"]["bands"] and idx.filter_plan()
    idx.save(tmp_path / "f.gsu")
    back = load(tmp_path / "f.gsu")
    assert back.filter_plan() == idx.filter_plan() and back.calibration == idx.calibration
    ids = np.sort(np.random.default_rng(2).choice(docs.shape[0], 60, replace=False)).astype(np.int64)
    np.testing.assert_array_equal(back.search(queries[:5], K, filter=ids).ids, idx.search(queries[:5], K, filter=ids).ids)
    # the plan stays cached however many operating points the calls named before
    for qc in range(1, 41):
        for hf in (0.6, 0.9):
            idx.search(queries[:1], K, query_cut=qc, heap_factor=hf)
    assert len(idx._op_cache) > 64
    idx.search(queries[:1], K, filter=ids)
    assert idx._filter_fits[0] is idx.calibration and (None, type(None)) in idx._filter_fits[1]
    good = idx.calibration
    assert _check_calibration(good) is good
    for bad_bands in ([], [[0.5, 10, 1.0, []], [0.1, 10, 1.0, []]], [[0.1, 10, float("nan"), []]],
                      [[0.1, 10, 1.0, [[0, 0.5, 1.0, 1.0, 1.0]]]], [[0.1, 10, 1.0, [[3, 0.5, 1.0]]]], [[1.5, 10, 1.0, []]]):
        bad = dict(good, filtered=dict(good["filtered"], bands=bad_bands))
        with pytest.raises(ValueError, match="calibration"):
            _check_calibration(bad)


def test_block_heap_gives_the_stable_argsort_order():
    """A first list's blocks are taken in bound order from a heap in scratch (``_block_heap``
    / ``_block_pop``) instead of sorted by ``np.argsort(-dots)``: popped one by one they come
    by decreasing dots, ties by position — numpy's stable order, and numba's own up to its
    insertion threshold (15) — at every length, on values with many ties and on distinct
    ones; nothing past ``n`` is written."""
    from gsu.index import _seismic_kernels as sk

    @numba.njit
    def numba_order(d):
        return np.argsort(-d)

    @numba.njit
    def popped(d, n, heap):
        sk._block_heap(d, n, heap)
        out = np.empty(n, np.int64)
        for i in range(n):
            out[i] = sk._block_pop(d, heap, n - i)
        return out

    rng = np.random.default_rng(5)
    for n in [*range(1, 34), 45, 64, 65, 300, 1000]:
        for rep in range(25 if n <= 33 else 6):
            if rep % 2:
                d = rng.standard_normal(n).astype(np.float32)
            else:
                d = (rng.integers(0, 4, n) * np.float32(0.5)).astype(np.float32)
            heap = np.full(n + 2, -1, np.int64)
            got = popped(d, n, heap)
            np.testing.assert_array_equal(got, np.argsort(-d, kind="stable"))
            if n <= 15:
                np.testing.assert_array_equal(got, numba_order(d))
            assert (heap[n:] == -1).all()


def test_the_fused_front_takes_the_read_side_and_hands_other_calls_on(coll):
    """``SeismicIndex.search`` answers a one-row call itself under an inline read
    registration: it leaves no registration behind (after answers, refusals and errors);
    a read nested in a read, a read inside the thread's own write and calls it does not
    take (extra positional arguments, a missing ``k``, a ``k`` of another type) go to the
    locked general search, with the same answers and errors as before."""
    from _thread import get_ident

    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3, auto_calibrate=False)
    q = queries.tocsr()
    ref = idx.search(q, K, query_cut=6, heap_factor=0.8)
    lock = idx._gsu_lock
    me = get_ident()
    got = idx.search(q[0], K, query_cut=6, heap_factor=0.8)
    np.testing.assert_array_equal(got.ids, ref.ids[:1])
    assert me not in lock._held and idx._one is not None
    lock.acquire_read()  # nested in a read
    try:
        np.testing.assert_array_equal(idx.search(q[1], K, query_cut=6, heap_factor=0.8).ids, ref.ids[1:2])
        assert lock._held[me] == 1
    finally:
        lock.release_read()
    lock.acquire_write()  # inside this thread's write
    try:
        np.testing.assert_array_equal(idx.search(q[2], K, query_cut=6, heap_factor=0.8).ids, ref.ids[2:3])
    finally:
        lock.release_write()
    assert me not in lock._held
    with pytest.raises(TypeError, match="missing the argument 'k'"):
        idx.search(q[0])
    with pytest.raises(TypeError):
        idx.search(q[0], K, None)  # extra positional arguments: the general signature refuses them
    with pytest.raises(TypeError, match="query_cut"):
        idx.search(q[0], K, query_cut=6.0, heap_factor=0.8)
    with pytest.raises(TypeError):
        idx.search(q[0], K, query_cut=6, heap_factro=0.8)
    np.testing.assert_array_equal(idx.search(q[0], np.int64(K), query_cut=6, heap_factor=0.8).ids, ref.ids[:1])
    assert me not in lock._held
    assert SeismicIndex.search.__gsu_locked__ == "read"


def test_one_row_calls_from_threads_while_the_view_is_remade(coll):
    """The lean one-query path calls the compiled kernel without the index's mutex under the
    GIL (the kernel holds the GIL from its call to its return and leaves its scratch as it
    found it): four threads searching single rows while a fifth remakes the kernel view
    again and again (new scratch, the same arrays) get exactly the answers of serial calls."""
    import threading

    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3, auto_calibrate=False)
    q = queries.tocsr()
    rows = [q[i] for i in range(q.shape[0])]
    ref = [idx.search(r, K, query_cut=6, heap_factor=0.8) for r in rows]
    assert idx._one is not None  # the lean path answered them
    stop = threading.Event()
    errors: list = []
    remakes = [0]

    def reader(t):
        try:
            for _ in range(100):
                for i in range(t, len(rows), 4):
                    got = idx.search(rows[i], K, query_cut=6, heap_factor=0.8)
                    if not (np.array_equal(got.ids, ref[i].ids) and np.array_equal(got.scores, ref[i].scores)):
                        raise AssertionError(f"row {i}: {got.ids} != {ref[i].ids}")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def remaker():
        while not stop.is_set():
            with idx._lock:
                idx._make_view(1)
            remakes[0] += 1

    threads = [threading.Thread(target=reader, args=(t,), daemon=True) for t in range(4)]
    rm = threading.Thread(target=remaker, daemon=True)
    rm.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    stop.set()
    rm.join(10)
    assert not any(th.is_alive() for th in threads + [rm])
    if errors:
        raise errors[0]
    assert remakes[0] > 10



def test_search_settings_are_one_checked_dataclass_saved_with_the_index(tmp_path, coll):
    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=30, summary_energy=0.5, seed=2, auto_calibrate=False)
    # the defaults an uncalibrated index uses
    assert idx.search_settings == SeismicSettings() and idx.operating_point()["settings"] == SeismicSettings()
    st = SeismicSettings(query_cut=6, heap_factor=0.9, first_sorted=False, filter_exact_max=0)
    by_kw = idx.search(queries, K, query_cut=6, heap_factor=0.9, first_sorted=False, filter_exact_max=0)
    by_obj = idx.search(queries, K, settings=st)
    np.testing.assert_array_equal(by_obj.ids, by_kw.ids)
    np.testing.assert_array_equal(by_obj.scores, by_kw.scores)
    # one field over a settings object; the index default changes what a plain search does
    np.testing.assert_array_equal(idx.search(queries, K, settings=SeismicSettings(query_cut=6, heap_factor=0.5), heap_factor=0.9,
                                             first_sorted=False, filter_exact_max=0).ids, by_kw.ids)
    idx.search_settings = st
    np.testing.assert_array_equal(idx.search(queries, K).ids, by_kw.ids)
    idx.save(tmp_path / "s.gsu")
    back = load(tmp_path / "s.gsu")
    assert back.search_settings == st
    np.testing.assert_array_equal(back.search(queries, K).ids, by_kw.ids)
    # checked once, at construction, with the field named
    for bad, match in (({"query_cut": 0}, "query_cut"), ({"heap_factor": -1.0}, "heap_factor"), ({"heap_factor": float("nan")}, "heap_factor"),
                       ({"filter_exact_max": -2}, "filter_exact_max")):
        with pytest.raises(ValueError, match=match):
            SeismicSettings(**bad)
    with pytest.raises(TypeError, match="first_sorted"):
        SeismicSettings(first_sorted="yes")
    with pytest.raises(TypeError, match="SeismicSettings"):
        idx.search(queries, K, settings={"query_cut": 3})
    with pytest.raises(ValueError, match="target_recall"):
        idx.search(queries, K, settings=st, target_recall=0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.query_cut = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="search_settings"):
        SeismicSettings.from_dict({"query_cut": 5, "typo": 1})


def test_borrowed_view_arrays_keep_their_references(coll):
    """The search body reads the view's arrays borrowed (``_view_arrays``: no reference
    taken, none given back): after hundreds of one-row, serial and two-thread batch and
    filtered searches every array the view holds has the Python reference count it had
    (a borrowed array given back would free it early; one taken and not given back would
    keep it), and the answers are those of the first searches."""
    import sys

    docs, queries = coll
    idx = SeismicIndex.build(docs, n_postings=30, summary_energy=0.4, centroid_fraction=0.15, seed=3, auto_calibrate=False)
    q = queries.tocsr()
    rows = [q[i] for i in range(q.shape[0])]
    allow = Filter(np.arange(0, N, 3))
    one_ref = [idx.search(r, K, query_cut=6, heap_factor=0.8) for r in rows]
    batch_ref = idx.search(q, K, query_cut=6, heap_factor=0.8)
    filt_ref = idx.search(q, K, query_cut=6, heap_factor=0.8, filter=allow)
    from gsu.index import _seismic_kernels as sk

    held = {name: idx._a[name] for name in sk.VIEW_FIELDS[:19]}
    threads = numba.get_num_threads()

    def rounds(n):
        for rep in range(n):
            numba.set_num_threads(1 + rep % min(2, threads))
            for r, ref in zip(rows, one_ref):
                _assert_same(idx.search(r, K, query_cut=6, heap_factor=0.8), ref)
            _assert_same(idx.search(q, K, query_cut=6, heap_factor=0.8), batch_ref)
            _assert_same(idx.search(q, K, query_cut=6, heap_factor=0.8, filter=allow), filt_ref)

    try:
        rounds(2)  # every path once, with its views and caches made
        view = idx._view
        before = {name: sys.getrefcount(a) for name, a in held.items()}
        rounds(20)
    finally:
        numba.set_num_threads(threads)
    assert idx._view is view
    after = {name: sys.getrefcount(a) for name, a in held.items()}
    assert after == before, {n: (before[n], after[n]) for n in before if before[n] != after[n]}
