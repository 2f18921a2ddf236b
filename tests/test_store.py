"""BehaviorStore and ItemTable: construction, append, gather, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gsu.errors import IndexFileError
from gsu.retrieval import BehaviorStore, History, ItemTable
from gsu.retrieval.methods import group_positions


def _flat(seed=0, n_users=7, n=600, n_items=50):
    rng = np.random.default_rng(seed)
    users = rng.choice(np.array([3, 10, 11, 40, 41, 90, 1000]), n)
    items = rng.integers(0, n_items, n)
    ts = rng.integers(0, 50, n)  # many equal timestamps: order must be stable
    bt = rng.integers(0, 4, n).astype(np.int8)
    cat = items % 5
    return users, items, ts, bt, cat


def _reference(users, items, ts, bt, cat):
    out = {}
    for u in np.unique(users):
        idx = np.flatnonzero(users == u)
        idx = idx[np.argsort(ts[idx], kind="stable")]
        out[int(u)] = (items[idx], ts[idx], bt[idx], cat[idx])
    return out


def _assert_same(store, ref):
    assert store.n_users == len(ref)
    for u, (it, ts, bt, cat) in ref.items():
        h = store.history(u)
        np.testing.assert_array_equal(h.items, it)
        np.testing.assert_array_equal(h.timestamps, ts)
        np.testing.assert_array_equal(h.behavior_type, bt)
        np.testing.assert_array_equal(h.category, cat)
        assert h.items.dtype == np.int64 and h.behavior_type.dtype == np.int8


def test_from_arrays_groups_and_sorts_stably():
    users, items, ts, bt, cat = _flat()
    store = BehaviorStore.from_arrays(users, items, ts, behavior_type=bt, category=cat)
    _assert_same(store, _reference(users, items, ts, bt, cat))
    np.testing.assert_array_equal(store.user_ids, np.unique(users))
    assert store.n_behaviors == users.shape[0]
    assert store.lengths.sum() == users.shape[0]


def test_from_log_and_behavior_data():
    from gsu.datasets import behavior_dataset
    from gsu.datasets.logs import BehaviorLog

    users, items, ts, bt, cat = _flat(1)
    order = np.lexsort((ts, users))
    log = BehaviorLog(users[order], items[order], cat[order], bt[order], ts[order])
    store = BehaviorStore.from_log(log)
    _assert_same(store, _reference(users, items, ts, bt, cat))

    data = behavior_dataset(3, n_items=300, dim=8, n_categories=10, seq_len=(50, 80), seed=2)
    s2 = BehaviorStore.from_behavior_data(data)
    h = s2.history(1)
    a, b = data.indptr[1], data.indptr[2]
    np.testing.assert_array_equal(h.items, data.items[a:b])
    np.testing.assert_array_equal(h.category, data.item_category[data.items[a:b]])


def test_append_equals_rebuild_and_positions_are_stable():
    users, items, ts, bt, cat = _flat(2)
    half = users.shape[0] // 2
    # first half builds the store; the second half (later times) is appended per user
    ts2 = ts.copy()
    ts2[half:] += 100
    store = BehaviorStore.from_arrays(users[:half], items[:half], ts2[:half], behavior_type=bt[:half], category=cat[:half])
    before = {int(u): store.history(u).items.copy() for u in store.user_ids}
    rest = _reference(users[half:], items[half:], ts2[half:], bt[half:], cat[half:])
    for u, (it, t, b, c) in rest.items():
        store.append(u, it[:3], t[:3], behavior_type=b[:3], category=c[:3])
        store.append(u, it[3:], t[3:], behavior_type=b[3:], category=c[3:])
    store.append(5555, [1, 2], [7, 8], behavior_type=[0, 1], category=[1, 2])  # a new user
    assert store.has_user(5555)
    assert store.history(5555).items.tolist() == [1, 2]
    full_u = np.concatenate([users, [5555, 5555]])
    full = _reference(full_u, np.concatenate([items, [1, 2]]), np.concatenate([ts2, [7, 8]]), np.concatenate([bt, [0, 1]]).astype(np.int8), np.concatenate([cat, [1, 2]]))
    _assert_same(store, full)  # through the pending tail
    store.compact()
    _assert_same(store, full)  # after folding into the CSR
    for u, it in before.items():
        np.testing.assert_array_equal(store.history(u).items[: it.shape[0]], it)


def test_gather_positions():
    users, items, ts, bt, cat = _flat(3)
    store = BehaviorStore.from_arrays(users, items, ts, behavior_type=bt, category=cat)
    us = np.array([3, 1000, 3])
    pos = np.array([[0, 2, -1], [1, -1, -1], [5, 4, 3]])
    got = store.gather(us, pos, "items")
    for r, u in enumerate(us):
        h = store.history(u)
        for c in range(3):
            assert got[r, c] == (h.items[pos[r, c]] if pos[r, c] >= 0 else -1)
    np.testing.assert_array_equal(store.gather(us, pos, "timestamps")[2], store.history(3).timestamps[[5, 4, 3]])
    np.testing.assert_array_equal(History.gather(store.history(3), pos[2], "category"), store.history(3).category[[5, 4, 3]])
    with pytest.raises(ValueError, match="valid position"):
        store.gather(us, np.array([[0], [10**6], [0]]))
    with pytest.raises(ValueError, match="unknown user"):
        store.gather(np.array([12345]), np.array([[0]]))
    with pytest.raises(ValueError, match="expected shape"):
        store.gather(us, np.array([0, 1, 2]))


def test_save_load_mmap_append_roundtrip(tmp_path):
    users, items, ts, bt, cat = _flat(4)
    store = BehaviorStore.from_arrays(users, items, ts, behavior_type=bt, category=cat)
    p = tmp_path / "s.gsu"
    store.save(p)
    for mm in (False, True):
        s2 = BehaviorStore.load(p, mmap=mm)
        _assert_same(s2, _reference(users, items, ts, bt, cat))
    # append to a memory-mapped store, save, reload: equals the rebuilt store
    s2 = BehaviorStore.load(p, mmap=True)
    s2.append(10, [7, 8, 9], [500, 501, 501], behavior_type=[1, 1, 2], category=[2, 3, 4])
    p2 = tmp_path / "s2.gsu"
    s2.save(p2)
    s3 = BehaviorStore.load(p2)
    ref = _reference(
        np.concatenate([users, [10, 10, 10]]),
        np.concatenate([items, [7, 8, 9]]),
        np.concatenate([ts, [500, 501, 501]]),
        np.concatenate([bt, [1, 1, 2]]).astype(np.int8),
        np.concatenate([cat, [2, 3, 4]]),
    )
    _assert_same(s3, ref)
    # a changed byte is refused, naming the file
    raw = bytearray(p2.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.gsu"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="bad.gsu"):
        BehaviorStore.load(bad)


def test_store_without_optional_columns():
    store = BehaviorStore.from_arrays([1, 1, 2], [5, 6, 7], [2, 1, 3])
    h = store.history(1)
    assert h.items.tolist() == [6, 5] and h.behavior_type is None and h.category is None
    with pytest.raises(ValueError, match="no category column"):
        store.append(1, [3], [9], category=[1])
    with pytest.raises(ValueError, match="no category"):
        store.build_category_index()


def test_category_index_matches_grouping():
    users, items, ts, bt, cat = _flat(5)
    store = BehaviorStore.from_arrays(users, items, ts, behavior_type=bt, category=cat)
    store.build_category_index()
    for u in store.user_ids:
        h = store.history(u)
        cats, ptr, pos = h.category_index
        c2, p2, pos2, _ = group_positions(h.category)
        np.testing.assert_array_equal(cats, c2)
        np.testing.assert_array_equal(ptr, p2)
        np.testing.assert_array_equal(pos, pos2)


def test_store_bad_input():
    with pytest.raises(ValueError, match="expected 3 ids"):
        BehaviorStore.from_arrays([1, 2, 3], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="integer ids"):
        BehaviorStore.from_arrays([1, 2], [1.5, 2], [1, 2])
    with pytest.raises(ValueError, match="non-decreasing within each user"):
        BehaviorStore([0, 3], [1, 2, 3], [5, 4, 6])
    with pytest.raises(ValueError, match="last entry"):
        BehaviorStore([0, 2], [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="one per behavior"):
        BehaviorStore([0, 2], [1, 2], [1, 2], behavior_type=[1])
    with pytest.raises(ValueError, match="int8"):
        BehaviorStore([0, 2], [1, 2], [1, 2], behavior_type=[1, 300])
    store = BehaviorStore.from_arrays([1, 1], [5, 6], [10, 20])
    with pytest.raises(ValueError, match="not in the store"):
        store.history(2)
    with pytest.raises(ValueError, match="must not be earlier"):
        store.append(1, [7], [15])
    with pytest.raises(ValueError, match="non-decreasing"):
        store.append(1, [7, 8], [30, 25])
    with pytest.raises(ValueError, match="non-decreasing"):
        History.from_arrays([1, 2], [5, 4])


def test_item_table_lookup_persistence_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([100, 7, 55, 3])
    E = rng.standard_normal((4, 6)).astype(np.float32)
    R = rng.standard_normal((4, 3)).astype(np.float32)
    S = sp.random(4, 20, density=0.3, format="csr", random_state=1, dtype=np.float32)
    t = ItemTable(ids=ids, embeddings=E, retrieval_embeddings=R, category=[1, 2, 3, 4], sparse=S)
    np.testing.assert_array_equal(t.embedding([55, 100]), E[[2, 0]])
    np.testing.assert_array_equal(t.categories([3]), [4])
    with pytest.raises(ValueError, match=r"unknown item id.*\[8\]"):
        t.rows([7, 8])
    p = tmp_path / "items.gsu"
    t.save(p)
    for mm in (False, True):
        t2 = ItemTable.load(p, mmap=mm)
        np.testing.assert_array_equal(t2.retrieval_embedding([7]), R[[1]])
        assert (t2.sparse != S).nnz == 0
        np.testing.assert_array_equal(t2.rows([3, 100]), [3, 0])
    with pytest.raises(ValueError, match="rows but other features"):
        ItemTable(embeddings=E, category=[1, 2])
    with pytest.raises(ValueError, match="unique"):
        ItemTable(ids=[1, 1, 2, 3], embeddings=E)
    with pytest.raises(ValueError, match="has no category"):
        ItemTable(embeddings=E).need("category")
    with pytest.raises(ValueError, match="at least one feature"):
        ItemTable()
