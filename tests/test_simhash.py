"""SimHashIndex, hamming_topk and τ-bit signatures, checked against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from gsu.errors import IndexFileError
from gsu.index import Filter, SimHashIndex, hamming_topk, load
from gsu.index.simhash import gaussian_hyperplanes


def _bits(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """(n, n_bits) uint8 bits of packed uint64 codes (bit j in word j // 64, bit j % 64)."""
    c = np.ascontiguousarray(codes, dtype=np.uint64)
    return np.unpackbits(c.view(np.uint8), axis=1, bitorder="little")[:, :n_bits]


def _hamming_ref(qc: np.ndarray, c: np.ndarray, n_bits: int) -> np.ndarray:
    qb = _bits(qc, n_bits).astype(np.int32)
    cb = _bits(c, n_bits).astype(np.int32)
    return qb.sum(1)[:, None] + cb.sum(1)[None, :] - 2 * (qb @ cb.T)


def _topk_ref(dist: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: sort each row by (distance, position); -1 padding."""
    nq, n = dist.shape
    pos = np.full((nq, k), -1, np.int64)
    out = np.full((nq, k), -1, np.int32)
    cols = np.arange(n) if allowed is None else np.asarray(allowed)
    for i in range(nq):
        d = dist[i, cols]
        order = np.lexsort((cols, d))[:k]
        pos[i, : order.size] = cols[order]
        out[i, : order.size] = d[order]
    return pos, out


def _random_codes(rng, n: int, n_bits: int) -> np.ndarray:
    w = (n_bits + 63) // 64
    bits = rng.integers(0, 2, size=(n, w * 64), dtype=np.uint8)
    bits[:, n_bits:] = 0
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64).reshape(n, w)


@pytest.mark.parametrize("n_bits", [1, 5, 64, 65, 150, 256])
@pytest.mark.parametrize("n", [7, 300, 20_000])
def test_hamming_topk_equals_brute_force(n_bits, n):
    rng = np.random.default_rng(n_bits * 1000 + n)
    c = _random_codes(rng, n, n_bits)
    qc = _random_codes(rng, 6, n_bits)
    qc[0] = c[3]  # an exact match: distance 0
    dist = _hamming_ref(qc, c, n_bits)
    for k in (1, 10, 100):
        pos, d = hamming_topk(qc, c, k, n_bits=n_bits)
        rp, rd = _topk_ref(dist, k)
        np.testing.assert_array_equal(pos, rp)
        np.testing.assert_array_equal(d, rd)
    assert d[0, 0] == 0 and pos[0, 0] <= 3  # row 3 is at distance 0; ties go to smaller rows


def test_hamming_topk_ties_go_to_smaller_position():
    # 4 bits on 20,000 codes: thousands of rows share every distance
    rng = np.random.default_rng(0)
    c = _random_codes(rng, 20_000, 4)
    qc = _random_codes(rng, 3, 4)
    pos, d = hamming_topk(qc, c, 500, n_bits=4)
    rp, rd = _topk_ref(_hamming_ref(qc, c, 4), 500)
    np.testing.assert_array_equal(pos, rp)
    np.testing.assert_array_equal(d, rd)
    # within a distance, positions ascend
    for i in range(3):
        for v in np.unique(d[i]):
            assert np.all(np.diff(pos[i][d[i] == v]) > 0)


def test_hamming_topk_rows_subset_and_padding():
    rng = np.random.default_rng(1)
    c = _random_codes(rng, 9000, 64)
    qc = _random_codes(rng, 4, 64)
    rows = rng.choice(9000, size=5000, replace=False)
    pos, d = hamming_topk(qc, c, 50, rows=rows)
    rp, rd = _topk_ref(_hamming_ref(qc, c, 64), 50, allowed=np.sort(rows))
    np.testing.assert_array_equal(pos, rp)
    np.testing.assert_array_equal(d, rd)
    pos, d = hamming_topk(qc, c[:5], 8)
    assert (pos[:, 5:] == -1).all() and (d[:, 5:] == -1).all() and (pos[:, :5] >= 0).all()
    pos, d = hamming_topk(qc, c, 3, rows=np.zeros(0, np.int64))
    assert (pos == -1).all()


def test_encode_matches_signs_and_is_batch_independent():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 24)).astype(np.float32)
    idx = SimHashIndex(24, 130, seed=5)
    codes = idx.encode(x)
    assert codes.shape == (2000, 3) and codes.dtype == np.uint64
    proj = x.astype(np.float64) @ idx.hyperplanes.T.astype(np.float64)
    bits = _bits(codes, 130)
    clear = np.abs(proj) > 1e-4  # a float32 rounding could flip only a projection this close to 0
    np.testing.assert_array_equal(bits[clear], (proj > 0)[clear])
    assert np.all(codes[:, 2] >> np.uint64(2) == 0)  # padding bits past n_bits are 0
    for i in (0, 17, 1999):
        np.testing.assert_array_equal(idx.encode(x[i]), codes[i : i + 1])
    np.testing.assert_array_equal(idx.encode(x[100:357]), codes[100:357])
    np.testing.assert_array_equal(idx.hyperplanes, gaussian_hyperplanes(24, 130, seed=5))


def test_signatures_group_consecutive_bits():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    idx = SimHashIndex(16, 48, seed=0)
    bits = _bits(idx.encode(x), 48).astype(np.int64)
    for tau in (1, 3, 4, 6, 16, 48):
        sig = idx.signatures(x, tau)
        assert sig.shape == (500, 48 // tau) and sig.dtype == np.int64
        ref = (bits.reshape(500, 48 // tau, tau) << np.arange(tau)).sum(-1)
        np.testing.assert_array_equal(sig, ref)
        assert sig.min() >= 0 and sig.max() < 2**tau


def test_search_matches_reference_with_ids_and_filters():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6000, 32)).astype(np.float32)
    q = rng.standard_normal((5, 32)).astype(np.float32)
    ids = rng.permutation(100_000)[:6000].astype(np.int64)
    idx = SimHashIndex(32, 96, seed=1)
    idx.add(x[:4000], ids[:4000])
    idx.add(x[4000:], ids[4000:])
    dist = _hamming_ref(idx.encode(q), idx.encode(x), 96)

    res = idx.search(q, 40)
    rp, rd = _topk_ref(dist, 40)
    np.testing.assert_array_equal(res.ids, ids[rp])
    np.testing.assert_array_equal(res.scores, -rd.astype(np.float32))
    assert res.scores.dtype == np.float32 and (res.counts == 40).all()

    allowed = np.sort(rng.choice(6000, 700, replace=False))
    res = idx.search(q, 40, filter=Filter.from_ids(ids[allowed]))
    rp, rd = _topk_ref(dist, 40, allowed)
    np.testing.assert_array_equal(res.ids, ids[rp])

    per_q = [np.sort(rng.choice(6000, s, replace=False)) for s in (0, 3, 50, 1000, 6000)]
    res = idx.search(q, 10, filter=Filter.per_query([ids[a] for a in per_q]))
    for i, a in enumerate(per_q):
        rp, rd = _topk_ref(dist[i : i + 1], 10, a)
        np.testing.assert_array_equal(res.ids[i], np.where(rp[0] >= 0, ids[np.maximum(rp[0], 0)], -1))
        np.testing.assert_array_equal(res.scores[i], np.where(rd[0] >= 0, -rd[0].astype(np.float32), -np.inf))
        assert res.counts[i] == min(10, a.size)

    np.testing.assert_array_equal(idx.search_codes(idx.encode(q), 40).ids, idx.search(q, 40).ids)


def test_add_codes_and_save_load(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    a = SimHashIndex(8, 70, seed=9)
    a.add(x)
    b = SimHashIndex(8, 70, seed=9)
    b.add_codes(a.encode(x))
    q = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(a.search(q, 25).ids, b.search(q, 25).ids)

    path = tmp_path / "sh.gsu"
    a.save(path)
    for mm in (False, True):
        c = load(path, mmap=mm)
        assert isinstance(c, SimHashIndex) and (c.dim, c.n_bits, c.seed, c.ntotal) == (8, 70, 9, 1000)
        r1, r2 = a.search(q, 25), c.search(q, 25)
        np.testing.assert_array_equal(r1.ids, r2.ids)
        np.testing.assert_array_equal(r1.scores, r2.scores)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(IndexFileError):
        load(path)


def test_bad_input():
    with pytest.raises(ValueError, match="n_bits"):
        SimHashIndex(8, 0)
    with pytest.raises(ValueError, match="n_bits"):
        SimHashIndex(8, 257)
    with pytest.raises(TypeError):
        SimHashIndex(8, 64.0)
    idx = SimHashIndex(8, 48, seed=0)
    with pytest.raises(ValueError, match="dimension 8"):
        idx.add(np.zeros((3, 9), np.float32))
    with pytest.raises(ValueError, match="dimension 8"):
        idx.search(np.zeros((3, 7), np.float32), 5)
    with pytest.raises(ValueError, match="does not divide"):
        idx.signatures(np.ones((2, 8), np.float32), 5)
    with pytest.raises(ValueError, match="padding"):
        idx.add_codes(np.full((2, 1), 2**60, np.uint64))
    with pytest.raises(ValueError, match="word"):
        idx.add_codes(np.zeros((2, 2), np.uint64))
    with pytest.raises(ValueError):
        idx.add(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="padding"):
        hamming_topk(np.full((1, 1), 2**40, np.uint64), np.zeros((5, 1), np.uint64), 2, n_bits=10)
    with pytest.raises(ValueError, match="word"):
        hamming_topk(np.zeros((1, 2), np.uint64), np.zeros((5, 1), np.uint64), 2)
    with pytest.raises(ValueError, match="rows"):
        hamming_topk(np.zeros((1, 1), np.uint64), np.zeros((5, 1), np.uint64), 2, rows=[7])
    with pytest.raises(ValueError):
        hamming_topk(np.zeros((1, 1), np.uint64), np.zeros((5, 1), np.uint64), 0)
    assert idx.search(np.ones((2, 8), np.float32), 3).counts.tolist() == [0, 0]


def _pairs_at_angle(rng, n_pairs: int, dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs of unit vectors at exactly angle θ (uniformly oriented)."""
    u = rng.standard_normal((n_pairs, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = rng.standard_normal((n_pairs, dim))
    w -= (w * u).sum(1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    v = np.cos(theta) * u + np.sin(theta) * w
    return u.astype(np.float32), v.astype(np.float32)


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_signature_collision_frequency_matches_theory(tau):
    """P(two vectors at angle θ share a τ-bit bucket) = (1 − θ/π)^τ (SimHash, SDIM §3).

    Pairs are drawn independently of the hyperplanes; each (pair, signature) is one
    Bernoulli trial. Eight hyperplane sets (seeds) of 240 bits give 8·240/τ signatures,
    so trials mix over many hyperplane draws. Tolerance: 4.5 binomial standard
    deviations sqrt(p(1−p)/trials) (two-sided false alarm ≈ 7e-6 per check).
    """
    rng = np.random.default_rng(100 + tau)
    n_pairs, dim = 1500, 32
    for theta in (np.pi / 10, np.pi / 4, np.pi / 2, 2 * np.pi / 3):
        u, v = _pairs_at_angle(rng, n_pairs, dim, theta)
        hits = trials = 0
        for seed in range(8):
            idx = SimHashIndex(dim, 240, seed=1000 * tau + seed)
            su, sv = idx.signatures(u, tau), idx.signatures(v, tau)
            hits += int((su == sv).sum())
            trials += su.size
        p = (1 - theta / np.pi) ** tau
        freq = hits / trials
        std = np.sqrt(p * (1 - p) / trials)
        assert abs(freq - p) < 4.5 * std, f"tau={tau} theta={theta:.3f}: measured {freq:.4f}, theory {p:.4f} ± {std:.4f}"


def test_serial_and_parallel_kernels_agree():
    import numba

    rng = np.random.default_rng(6)
    c = _random_codes(rng, 12_000, 128)
    qc = _random_codes(rng, 9, 128)
    before = numba.get_num_threads()
    if before < 2:
        pytest.skip("one numba thread available: no parallel kernel to compare with the serial one")
    try:
        numba.set_num_threads(1)
        serial = hamming_topk(qc, c, 64)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(serial[0], hamming_topk(qc, c, 64)[0])
    rp, rd = _topk_ref(_hamming_ref(qc, c, 128), 64)
    np.testing.assert_array_equal(serial[0], rp)
    np.testing.assert_array_equal(serial[1], rd)


@pytest.mark.parametrize("tau", [1, 3, 4])
def test_bucket_signatures_compiled_equals_numpy_twin(tau):
    from gsu.index import _hamming

    P = np.random.default_rng(tau).standard_normal((40, 12 * tau)).astype(np.float32)
    P[0, :] = 0.0  # zero projections give bit 0
    a = np.zeros((40, 12), np.uint16)
    b = np.zeros((40, 12), np.uint16)
    _hamming.bucket_signatures(P, tau, a)
    _hamming._bucket_rows(P, (0,) * tau, b)
    np.testing.assert_array_equal(a, b)
    assert a[0].max() == 0 and a.max() < 2**tau
