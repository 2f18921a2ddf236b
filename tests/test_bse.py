"""BehaviorSequenceEncoder (SDIM's BSE): tables, aggregation, append, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from gsu.errors import IndexFileError
from gsu.index import SimHashIndex
from gsu.retrieval import BehaviorSequenceEncoder
from gsu.retrieval import bse as bse_mod


def _sequences(rng, lengths, dim):
    x = rng.standard_normal((int(sum(lengths)), dim)).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return x, indptr


def _sdim_naive(behaviors, targets, sig_b, sig_t, normalize):
    """SDIM by definition: per signature, the sum of the behaviors in the target's bucket,
    optionally L2-normalised, averaged over all signatures (empty buckets count as zero)."""
    T, S = sig_t.shape
    out = np.zeros((T, behaviors.shape[1]), np.float64)
    mask = np.zeros((T, S), bool)
    for t in range(T):
        for s in range(S):
            hit = sig_b[:, s] == sig_t[t, s]
            if hit.any():
                mask[t, s] = True
                v = behaviors[hit].astype(np.float64).sum(0)
                if normalize:
                    n = np.linalg.norm(v)
                    v = v / n if n > 0 else v * 0
                out[t] += v
    return out / S, mask


@pytest.mark.parametrize("normalize", [True, False])
def test_aggregate_equals_naive_sdim(normalize):
    rng = np.random.default_rng(0)
    dim, m, tau = 16, 48, 3
    x, indptr = _sequences(rng, [1, 7, 300, 2000], dim)
    enc = BehaviorSequenceEncoder(dim, n_hashes=m, tau=tau, seed=3, normalize=normalize).fit(x, indptr)
    idx = SimHashIndex(dim, m, seed=3)  # same hash functions
    targets = rng.standard_normal((40, dim)).astype(np.float32)
    targets[0] = x[indptr[2] + 5]  # a target equal to a behavior: every bucket non-empty
    sig_t = idx.signatures(targets, tau)
    np.testing.assert_array_equal(enc.signatures(targets), sig_t)
    for u in range(4):
        beh = x[indptr[u] : indptr[u + 1]]
        vec, mask = enc.aggregate(u, targets)
        ref, ref_mask = _sdim_naive(beh, targets, idx.signatures(beh, tau), sig_t, normalize)
        assert vec.shape == (40, dim) and vec.dtype == np.float32 and mask.shape == (40, m // tau)
        np.testing.assert_array_equal(mask, ref_mask)
        np.testing.assert_allclose(vec, ref, rtol=2e-5, atol=2e-5)
        if u == 0:
            assert 0 < mask.mean() < 1  # one behavior: some buckets empty
    assert enc.aggregate(2, targets)[1][0].all()
    # tables hold exactly the bucket counts and sums
    beh = x[indptr[3] : indptr[4]]
    sig_b = idx.signatures(beh, tau)
    for s in (0, 9, 15):
        for b in range(8):
            hit = sig_b[:, s] == b
            assert enc.counts[3, s, b] == hit.sum()
            np.testing.assert_allclose(enc.sums[3, s, b], beh[hit].sum(0), rtol=1e-4, atol=1e-4)
    # the one-sequence forms agree with the table form
    v1, m1 = enc.aggregate_sequence(beh, targets)
    v2, m2 = enc.aggregate(3, targets)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(m1, m2)
    users = rng.integers(0, 4, 40)
    vm, mm = enc.aggregate_many(users, targets)
    for t in (0, 11, 39):
        np.testing.assert_array_equal(vm[t], enc.aggregate(int(users[t]), targets[t : t + 1])[0][0])


@pytest.mark.parametrize("dim", [24, 32])  # the scalar add and the 16-lane vector add
def test_append_equals_rebuild_bitwise(dim):
    rng = np.random.default_rng(1)
    x, indptr = _sequences(rng, [50, 900, 10], dim)
    extra = rng.standard_normal((333, dim)).astype(np.float32)
    enc = BehaviorSequenceEncoder(dim, n_hashes=60, tau=4, seed=7).fit(x, indptr, user_ids=[10, 20, 30])
    enc.append(20, extra[:100])
    enc.append(20, extra[100:])
    x2 = np.concatenate([x[:950], extra, x[950:]])
    indptr2 = np.array([0, 50, 950 + 333, 960 + 333])
    ref = BehaviorSequenceEncoder(dim, n_hashes=60, tau=4, seed=7).fit(x2, indptr2, user_ids=[10, 20, 30])
    np.testing.assert_array_equal(enc.sums, ref.sums)
    np.testing.assert_array_equal(enc.counts, ref.counts)
    assert enc.counts[1].sum(axis=1).tolist() == [1233] * 15


@pytest.mark.parametrize("dim", [8, 64])
def test_fit_items_and_batched_fit_equal_fit(monkeypatch, dim):
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((500, dim)).astype(np.float32)
    lengths = [3, 400, 1, 250, 77]
    items = rng.integers(0, 500, sum(lengths))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    a = BehaviorSequenceEncoder(dim, n_hashes=12, tau=2, seed=0).fit(emb[items], indptr)
    b = BehaviorSequenceEncoder(dim, n_hashes=12, tau=2, seed=0).fit_items(emb, items, indptr)
    monkeypatch.setattr(bse_mod, "_FIT_BATCH", 100)  # many small hashing batches
    c = BehaviorSequenceEncoder(dim, n_hashes=12, tau=2, seed=0).fit(emb[items], indptr)
    for o in (b, c):
        np.testing.assert_array_equal(a.sums, o.sums)
        np.testing.assert_array_equal(a.counts, o.counts)
    s, n = a.encode(emb[items[3:403]])
    np.testing.assert_array_equal(s, a.sums[1])
    np.testing.assert_array_equal(n, a.counts[1])


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x, indptr = _sequences(rng, [20, 30], 12)
    enc = BehaviorSequenceEncoder(12, n_hashes=36, tau=6, seed=11, normalize=False).fit(x, indptr, user_ids=[5, 9])
    path = tmp_path / "bse.gsu"
    enc.save(path)
    targets = rng.standard_normal((7, 12)).astype(np.float32)
    for mm in (False, True):
        got = BehaviorSequenceEncoder.load(path, mmap=mm)
        assert (got.dim, got.n_hashes, got.tau, got.seed, got.normalize) == (12, 36, 6, 11, False)
        np.testing.assert_array_equal(got.user_ids, [5, 9])
        np.testing.assert_array_equal(got.sums, enc.sums)
        np.testing.assert_array_equal(got.counts, enc.counts)
        for u in (5, 9):
            np.testing.assert_array_equal(got.aggregate(u, targets)[0], enc.aggregate(u, targets)[0])
    on_disk = path.read_bytes()
    got.append(5, x[:2])  # mmap'ed tables: copy-on-write, the file stays as saved
    assert path.read_bytes() == on_disk
    mem = BehaviorSequenceEncoder.load(path)
    mem.append(5, x[:2])
    enc.append(5, x[:2])
    np.testing.assert_array_equal(got.sums, enc.sums)
    np.testing.assert_array_equal(mem.sums, enc.sums)
    np.testing.assert_array_equal(mem.counts, enc.counts)
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError):
        BehaviorSequenceEncoder.load(path)


def test_bad_input():
    with pytest.raises(ValueError, match="does not divide"):
        BehaviorSequenceEncoder(8, n_hashes=48, tau=5)
    with pytest.raises(ValueError, match="n_hashes"):
        BehaviorSequenceEncoder(8, n_hashes=0, tau=1)
    with pytest.raises(ValueError, match="n_hashes"):
        BehaviorSequenceEncoder(8, n_hashes=300, tau=3)
    with pytest.raises(ValueError, match="at most 16"):
        BehaviorSequenceEncoder(8, n_hashes=40, tau=20)
    enc = BehaviorSequenceEncoder(8, n_hashes=12, tau=3, seed=0)
    x = np.ones((5, 8), np.float32)
    with pytest.raises(ValueError, match="dimension 8"):
        enc.fit(np.ones((5, 9), np.float32), [0, 5])
    with pytest.raises(ValueError, match="empty sequences"):
        enc.fit(x, [0, 2, 2, 5])
    with pytest.raises(ValueError, match="indptr"):
        enc.fit(x, [0, 4])
    with pytest.raises(ValueError, match="empty"):
        enc.encode(np.zeros((0, 8), np.float32))
    enc.fit(x, [0, 2, 2, 5], allow_empty=True)
    vec, mask = enc.aggregate(1, x[:3])
    assert not mask.any() and not vec.any()
    with pytest.raises(ValueError, match="dimension 8"):
        enc.aggregate(0, np.ones((2, 7), np.float32))
    with pytest.raises(ValueError, match="dimension 8"):
        enc.append(0, np.ones((2, 7), np.float32))
    with pytest.raises(ValueError, match="empty"):
        enc.append(0, np.zeros((0, 8), np.float32))
    with pytest.raises(KeyError):
        enc.aggregate(3, x)
    with pytest.raises(ValueError, match="items"):
        enc.fit_items(x, [0, 9], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        enc.aggregate(0, np.full((1, 8), np.nan, np.float32))


def test_fit_items_with_precomputed_item_signatures():
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((300, 8)).astype(np.float32)
    items = rng.integers(0, 300, 1000)
    indptr = [0, 600, 1000]
    enc = BehaviorSequenceEncoder(8, n_hashes=24, tau=3, seed=2)
    a = BehaviorSequenceEncoder(8, n_hashes=24, tau=3, seed=2).fit_items(emb, items, indptr)
    enc.fit_items(emb, items, indptr, item_signatures=enc.signatures(emb))
    np.testing.assert_array_equal(a.sums, enc.sums)
    np.testing.assert_array_equal(a.counts, enc.counts)
    with pytest.raises(ValueError, match="item_signatures"):
        enc.fit_items(emb, items, indptr, item_signatures=np.zeros((300, 7), np.int64))
    with pytest.raises(ValueError, match="item_signatures"):
        enc.fit_items(emb, items, indptr, item_signatures=np.full((300, 8), 8, np.int64))


@pytest.mark.parametrize("dim", [16, 20, 64])
def test_tables_are_the_sequential_float32_sums(dim):
    """Each bucket sum is the float32 sum of its behaviors added in sequence order
    (``np.add.at`` applies repeated indices one after another), bit for bit."""
    rng = np.random.default_rng(5)
    emb = (rng.standard_normal((200, dim)) * 10 ** rng.uniform(-3, 3, (200, 1))).astype(np.float32)
    items = rng.integers(0, 200, 3000)
    enc = BehaviorSequenceEncoder(dim, n_hashes=12, tau=3, seed=4).fit_items(emb, items, [0, 3000])
    sig = enc.signatures(emb)[items]
    for s in range(enc.n_signatures):
        ref = np.zeros((enc.n_buckets, dim), np.float32)
        np.add.at(ref, sig[:, s], emb[items])
        np.testing.assert_array_equal(enc.sums[0, s], ref)
        np.testing.assert_array_equal(enc.counts[0, s], np.bincount(sig[:, s], minlength=enc.n_buckets))
