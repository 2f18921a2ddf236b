"""The graph of a bulk build is constructed over float16 copies (faiss ``IndexHNSWSQ``
fp16) and moved into the ``IndexHNSWFlat`` that stores the float32 rows."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from gsu.index import FilteredIndex, HNSWIndex
from gsu.index import hnsw as H

D, N = 24, 3000


def _data(scale: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cen = rng.standard_normal((16, D)).astype(np.float32)
    x = cen[rng.integers(0, 16, N)] + 0.7 * rng.standard_normal((N, D)).astype(np.float32)
    q = x[rng.choice(N, 60, replace=False)] + 0.05 * rng.standard_normal((60, D)).astype(np.float32)
    return (x * scale).astype(np.float32), (q * scale).astype(np.float32)


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(ids, truth)]))


def _truth(x: np.ndarray, q: np.ndarray, metric: str, k: int = 10) -> np.ndarray:
    s = q @ x.T if metric == "ip" else -((q[:, None, :] - x[None]) ** 2).sum(-1)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _flat_build(monkeypatch: pytest.MonkeyPatch, metric: str, x: np.ndarray) -> HNSWIndex:
    with monkeypatch.context() as m:
        m.setattr(H, "_half_ok", lambda a: False)
        h = HNSWIndex(D, metric, M=12, ef_construction=80)
        h.add(x)
    return h


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_half_build_gives_a_float32_index_with_the_same_levels_and_recall(metric, monkeypatch):
    x, q = _data()
    calls = []
    real = H._build_half
    monkeypatch.setattr(H, "_build_half", lambda fi, a: (calls.append(a.shape[0]), real(fi, a)))
    h = HNSWIndex(D, metric, M=12, ef_construction=80)
    h.add(x)
    assert calls == [N]
    fi = h.faiss_index
    assert isinstance(fi, faiss.IndexHNSWFlat) and fi.ntotal == N
    # the float32 rows are stored, bit for bit
    np.testing.assert_array_equal(h.vectors, x)
    ref = _flat_build(monkeypatch, metric, x)
    lev = faiss.vector_to_array(fi.hnsw.levels)
    np.testing.assert_array_equal(lev, faiss.vector_to_array(ref.faiss_index.hnsw.levels))  # the same random draws
    nbr = faiss.vector_to_array(fi.hnsw.neighbors)
    ref_nbr = faiss.vector_to_array(ref.faiss_index.hnsw.neighbors)
    assert nbr.shape == ref_nbr.shape and nbr.max() < N
    filled, ref_filled = int((nbr >= 0).sum()), int((ref_nbr >= 0).sum())
    assert abs(filled - ref_filled) <= 0.05 * ref_filled  # as many links as the float32 build keeps
    truth = _truth(x, q, metric)
    for ef in (16, 64):
        a = _recall(h.search(q, 10, ef=ef).ids, truth)
        b = _recall(ref.search(q, 10, ef=ef).ids, truth)
        assert a >= b - 0.02, (ef, a, b)
    assert _recall(h.search(q, 10, ef=64).ids, truth) >= 0.97


def test_later_inserts_extend_the_half_built_graph_in_float32():
    x, _ = _data()
    h = HNSWIndex(D, "ip", M=12, ef_construction=80)
    h.add(x[:2000])
    h.add(x[2000:], ids=np.arange(2000, N, dtype=np.int64) + 10_000)
    assert h.ntotal == N
    np.testing.assert_array_equal(h.vectors, x)
    r = h.search(x[2000:2100], 1, ef=64)
    # each new row is its own best inner product on this data or very near it
    exact = np.argmax(x[2000:2100] @ x.T, axis=1)
    want = np.where(exact >= 2000, exact + 10_000, exact)
    assert np.mean(r.ids[:, 0] == want) >= 0.97


@pytest.mark.parametrize("scale", [1e-4, 1e6])
def test_data_outside_the_half_range_is_built_in_float32(scale, monkeypatch):
    x, q = _data(scale)
    assert not H._half_ok(x)
    monkeypatch.setattr(H, "_build_half", lambda fi, a: pytest.fail("float16 build of out-of-range data"))
    h = HNSWIndex(D, "ip", M=12, ef_construction=80)
    h.add(x)
    assert _recall(h.search(q, 10, ef=64).ids, _truth(x, q, "ip")) >= 0.97


def test_half_range_bounds():
    lo, hi = H.HALF_BUILD_RANGE
    assert H._half_ok(np.array([[lo, 0.0], [0.0, -lo]], np.float32))
    assert H._half_ok(np.array([[0.0, hi], [-hi, 0.0]], np.float32))
    assert not H._half_ok(np.array([[0.0, 2 * hi], [0.0, 0.0]], np.float32))
    assert not H._half_ok(np.array([[0.0, -lo / 2], [0.0, 0.0]], np.float32))
    assert not H._half_ok(np.ones((1, 3), np.float32))  # a single row: faiss's own add


def test_filtered_index_compact_rebuilds_through_the_half_build(tmp_path):
    x, q = _data()
    idx = FilteredIndex(D, "ip", nlist=16, M=12, ef_construction=80, calibrate=False)
    idx.add(x)
    idx.compact_threshold = 1.0  # compacted below, by hand
    idx.remove(np.arange(0, N, 3, dtype=np.int64))
    assert idx.compact() == len(range(0, N, 3))
    live = np.setdiff1d(np.arange(N), np.arange(0, N, 3))
    np.testing.assert_array_equal(idx.hnsw.vectors, x[live])
    truth = live[_truth(x[live], q, "ip")]
    assert _recall(idx.hnsw.search(q, 10, ef=64).ids, truth) >= 0.97
    p = tmp_path / "f.gsu"
    idx.save(p)
    back = FilteredIndex.load(p)
    np.testing.assert_array_equal(back.hnsw.search(q, 10, ef=64).ids, idx.hnsw.search(q, 10, ef=64).ids)
