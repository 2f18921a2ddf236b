"""FlatIndex: exact answers, the filter oracle, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from pyroaring import BitMap

from gsu.errors import IndexFileError
from gsu.index import Filter, FlatIndex, SearchResult, info, load
from _kinds import is_mapped


def brute(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """Reference top-k by numpy: (ids, scores) sorted by score desc, then id order of rows."""
    out_i = np.full((q.shape[0], k), -1, np.int64)
    out_s = np.full((q.shape[0], k), -np.inf, np.float32)
    rows = np.arange(x.shape[0]) if allowed is None else np.flatnonzero(np.isin(ids, allowed))
    for i in range(q.shape[0]):
        sc = x[rows] @ q[i]
        o = np.lexsort((rows, -sc))[:k]
        out_i[i, : o.size] = ids[rows[o]]
        out_s[i, : o.size] = sc[o]
    return out_i, out_s


@pytest.fixture()
def index(small_catalog):
    x, _ = small_catalog
    ids = np.arange(x.shape[0], dtype=np.int64) * 5 + 11  # non-trivial external ids
    idx = FlatIndex(x.shape[1], "ip")
    idx.add(x, ids)
    return idx, x, ids


def test_unfiltered_matches_brute_force(index, small_catalog):
    idx, x, ids = index
    q = small_catalog[1]
    res = idx.search(q, 7)
    bi, bs = brute(x, ids, q, 7)
    assert isinstance(res, SearchResult)
    assert res.ids.dtype == np.int64 and res.scores.dtype == np.float32 and res.counts.dtype == np.int64
    np.testing.assert_array_equal(res.ids, bi)
    np.testing.assert_allclose(res.scores, bs, rtol=1e-5, atol=1e-5)
    assert (res.counts == 7).all()


@pytest.mark.parametrize("frac", [0.002, 0.05, 0.3, 0.9])
@pytest.mark.parametrize("nq", [1, 40])
def test_filter_equals_index_of_allowed_items(index, small_catalog, frac, nq):
    """The oracle: a filtered search equals a search over an index holding only the allowed items."""
    idx, x, ids = index
    q = small_catalog[1][:nq]
    rng = np.random.default_rng(3)
    m = max(1, int(frac * x.shape[0]))
    rows = np.sort(rng.choice(x.shape[0], m, replace=False))
    sub = FlatIndex(x.shape[1])
    sub.add(x[rows], ids[rows])
    want = sub.search(q, 10)
    for spec in (ids[rows], Filter.from_ids(ids[rows]), BitMap(ids[rows].tolist())):
        got = idx.search(q, 10, filter=spec)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got.counts, want.counts)


def test_per_query_filters(index, small_catalog):
    idx, x, ids = index
    q = small_catalog[1]
    rng = np.random.default_rng(5)
    sets = [ids[rng.choice(x.shape[0], int(rng.integers(0, 60)), replace=False)] for _ in range(q.shape[0])]
    res = idx.search(q, 10, filter=Filter.per_query(sets))
    for i, s in enumerate(sets):
        bi, bs = brute(x, ids, q[i : i + 1], 10, allowed=s)
        np.testing.assert_array_equal(res.ids[i], bi[0])
        np.testing.assert_allclose(res.scores[i], bs[0], rtol=1e-5, atol=1e-5)
        assert res.counts[i] == min(10, len(s))
        assert np.all(np.isin(res.ids[i][res.ids[i] >= 0], s))


@pytest.mark.parametrize("m", [0, 1, 9])
def test_small_filters_pad_with_minus_one(index, small_catalog, m):
    idx, x, ids = index
    q = small_catalog[1][:3]
    allowed = ids[:m]
    res = idx.search(q, 10, filter=allowed)
    assert (res.counts == m).all()
    assert (res.ids[:, m:] == -1).all() and np.isneginf(res.scores[:, m:]).all()
    assert set(res.ids[:, :m].ravel().tolist()) <= set(allowed.tolist())


def test_filter_combinations(index, small_catalog):
    idx, x, ids = index
    q = small_catalog[1][:5]
    a = Filter.range(ids[100], ids[900])
    b = Filter.from_ids(ids[::3])
    for f, allowed in (
        (a & b, ids[100:900][np.isin(ids[100:900], ids[::3])]),
        (a | b, np.union1d(ids[100:900], ids[::3])),
        (~b, np.setdiff1d(ids, ids[::3])),
        (Filter.from_mask(np.isin(np.arange(ids.max() + 1), ids[:50])), ids[:50]),
        (Filter.time_range(np.arange(x.shape[0]), 10, 20, ids=ids), ids[10:20]),
    ):
        res = idx.search(q, 8, filter=f)
        bi, _ = brute(x, ids, q, 8, allowed=allowed)
        np.testing.assert_array_equal(res.ids, bi)


def test_cosine_metric_normalises():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8)).astype(np.float32) * rng.uniform(0.1, 10, (300, 1)).astype(np.float32)
    q = rng.standard_normal((4, 8)).astype(np.float32)
    idx = FlatIndex(8, "cosine")
    idx.add(x)
    res = idx.search(q * 3.0, 5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    bi, bs = brute(xn, np.arange(300), qn, 5)
    np.testing.assert_array_equal(res.ids, bi)
    assert np.all(res.scores <= 1.0 + 1e-5)


def test_k_larger_than_index_and_empty_index():
    idx = FlatIndex(4)
    res = idx.search(np.ones((2, 4), np.float32), 3)
    assert (res.ids == -1).all() and (res.counts == 0).all()
    idx.add(np.eye(4, dtype=np.float32)[:2])
    res = idx.search(np.ones((2, 4), np.float32), 5)
    assert res.counts.tolist() == [2, 2] and (res.ids[:, 2:] == -1).all()


@pytest.mark.parametrize(
    "queries, k, exc",
    [
        (np.ones((2, 5), np.float32), 3, ValueError),  # wrong dim
        (np.ones((0, 4), np.float32), 3, ValueError),  # empty
        (np.array([[np.nan, 0, 0, 0]], np.float32), 3, ValueError),
        (np.array([[np.inf, 0, 0, 0]], np.float32), 3, ValueError),
        (np.array([["a", "b", "c", "d"]]), 3, ValueError),
        (np.ones((1, 4), np.float32), 0, ValueError),
        (np.ones((1, 4), np.float32), 2.5, TypeError),
        (np.ones((1, 1, 4), np.float32), 3, ValueError),
    ],
)
def test_bad_queries(queries, k, exc):
    idx = FlatIndex(4)
    idx.add(np.eye(4, dtype=np.float32))
    with pytest.raises(exc):
        idx.search(queries, k)


def test_bad_add_keeps_index_intact():
    idx = FlatIndex(4)
    idx.add(np.eye(4, dtype=np.float32), ids=[10, 11, 12, 13])
    with pytest.raises(ValueError, match="already"):
        idx.add(np.eye(4, dtype=np.float32)[:1], ids=[12])
    with pytest.raises(ValueError, match="unique"):
        idx.add(np.eye(4, dtype=np.float32)[:2], ids=[1, 1])
    with pytest.raises(ValueError, match="NaN"):
        idx.add(np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError):
        idx.search(np.ones((1, 4), np.float32), 2, filter=Filter.per_query([[10], [11]]))
    assert idx.ntotal == 4 and idx.ids.tolist() == [10, 11, 12, 13]


def test_save_load_roundtrip_and_mmap(index, small_catalog, tmp_path):
    idx, x, ids = index
    q = small_catalog[1]
    p = tmp_path / "flat.gsu"
    idx.save(p)
    want = idx.search(q, 10, filter=ids[::7])
    for mm in (False, True):
        idx2 = load(p, mmap=mm)
        assert isinstance(idx2, FlatIndex) and idx2.metric == "ip" and idx2.ntotal == idx.ntotal
        got = idx2.search(q, 10, filter=ids[::7])
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
    assert is_mapped(load(p, mmap=True).vectors)
    hdr = info(p)
    assert hdr["kind"] == "flat" and {k: hdr["config"][k] for k in ("dim", "metric")} == {"dim": 24, "metric": "ip"}
    assert FlatIndex.load(p).ntotal == idx.ntotal
    assert not list(tmp_path.glob(".*tmp")), "atomic save leaves no temporary file behind"


def test_truncated_and_altered_files_are_refused(index, tmp_path):
    idx, _, _ = index
    p = tmp_path / "flat.gsu"
    idx.save(p)
    data = p.read_bytes()
    cut = tmp_path / "cut.gsu"
    for n in (10, 100, len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:n])
        with pytest.raises(IndexFileError, match="cut.gsu"):
            load(cut)
    bad = tmp_path / "bad.gsu"
    for pos in (len(data) // 2, len(data) - 40, len(data) - 5):
        b = bytearray(data)
        b[pos] ^= 0x01
        bad.write_bytes(bytes(b))
        try:
            got = load(bad)
            got.search(np.ones((1, idx.dim), np.float32), 3)  # first use runs the deferred array checks
        except IndexFileError as e:
            assert "bad.gsu" in str(e)
            continue
        # accepted only when the flipped byte is not array data (the whole-file digest):
        # the arrays are intact, and the full check refuses the file
        np.testing.assert_array_equal(got.ids, idx.ids)
        from gsu._format import ContainerReader

        with pytest.raises(IndexFileError, match="bad.gsu"):
            with ContainerReader(bad) as r:
                r.verify()
    magic = tmp_path / "magic.gsu"
    magic.write_bytes(b"NOTAGSU!" + data[8:])
    with pytest.raises(IndexFileError, match="magic.gsu"):
        load(magic)


def test_failed_save_keeps_previous_file(index, tmp_path, monkeypatch):
    idx, _, _ = index
    p = tmp_path / "flat.gsu"
    idx.save(p)
    before = p.read_bytes()
    import gsu._format as fmt

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.os, "fsync", boom)
    with pytest.raises(OSError):
        idx.save(p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["flat.gsu"]


def test_torch_device_backend_matches_numpy(index, small_catalog):
    """The torch path (used for GPUs) gives the same answers; checked here on the CPU device."""
    idx, x, ids = index
    q = small_catalog[1]
    tidx = FlatIndex(x.shape[1], device="cpu")
    tidx.add(x, ids)
    for f in (None, ids[::3], ids[:5]):
        want, got = idx.search(q, 10, filter=f), tidx.search(q, 10, filter=f)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got.counts, want.counts)
