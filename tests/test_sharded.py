"""ShardedIndex on Dask (threaded scheduler and a 2-worker LocalCluster) equals one
index over all items on the exact route; distributed retrieval written as Parquet
parts equals the single-process batch form."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from gsu.index import Filter, FlatIndex, IVFIndex, ShardedIndex, build_shards, shard_of
from gsu.retrieval import BehaviorStore, Exact, HardSearch, ItemTable, retrieve_batch

D = 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, D)).astype(np.float32)
    ids = rng.choice(10**9, 3000, replace=False).astype(np.int64)
    q = rng.standard_normal((25, D)).astype(np.float32)
    single = FlatIndex(D)
    single.add(x, ids)
    return x, ids, q, single


def _filters(ids, nq):
    rng = np.random.default_rng(3)
    allowed = rng.choice(ids, 200, replace=False)
    per = Filter.per_query([rng.choice(ids, 50, replace=False) for _ in range(nq)])
    return [None, Filter.from_ids(allowed), ~Filter.from_ids(allowed), per]


def test_shard_of_is_balanced_and_stable():
    s = shard_of(np.arange(100_000), 7)
    assert s.min() == 0 and s.max() == 6
    counts = np.bincount(s)
    assert counts.min() > 0.9 * 100_000 / 7
    assert np.array_equal(s, shard_of(np.arange(100_000), 7))


def test_threaded_sharded_search_equals_single_index(tmp_path, data):
    x, ids, q, single = data
    sharded = build_shards(functools.partial(FlatIndex, D), x, ids, n_shards=4, folder=tmp_path)
    assert sharded.n_shards == 4
    for f in _filters(ids, q.shape[0]):
        got = sharded.search(q, 10, filter=f)
        want = single.search(q, 10, filter=f)
        assert np.array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)  # BLAS or gather kernel per route
        assert np.array_equal(got.counts, want.counts)
    # shards given by path (no hash split of the filters): the same answer
    plain = ShardedIndex(sharded.paths)
    for f in _filters(ids, q.shape[0]):
        assert np.array_equal(plain.search(q, 10, filter=f).ids, single.search(q, 10, filter=f).ids)
    big = sharded.search(q, 5000)  # k past every shard's size: everything, padded
    assert (big.counts == 3000).all() and (big.ids[:, 3000:] == -1).all()


def test_local_cluster_sharded_search_equals_single_index(tmp_path, data):
    distributed = pytest.importorskip("distributed")
    x, ids, q, single = data
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            sharded = build_shards(functools.partial(FlatIndex, D), x, ids, n_shards=3, folder=tmp_path, client=client)
            for f in _filters(ids, q.shape[0]):
                got = sharded.search(q, 10, filter=f)
                want = single.search(q, 10, filter=f)
                assert np.array_equal(got.ids, want.ids)
                np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)
            # approximate shards: search settings reach every shard
            ivf = build_shards(functools.partial(IVFIndex, D, nlist=8), x, ids, n_shards=2, folder=tmp_path / "ivf", client=client)
            got = ivf.search(q, 10, nprobe=8)  # every list of every shard: exact
            assert np.array_equal(got.ids, single.search(q, 10).ids)


def test_distributed_retrieval_writes_parquet_parts(tmp_path):
    distributed = pytest.importorskip("distributed")
    from gsu.retrieval.distributed import read_retrieval_parquet, retrieve_distributed_parquet

    rng = np.random.default_rng(4)
    n_items, n_users = 400, 10
    items = ItemTable(embeddings=rng.standard_normal((n_items, 16)).astype(np.float32), category=rng.integers(0, 8, n_items))
    lengths = rng.integers(50, 300, n_users)
    users = np.repeat(np.arange(n_users) * 10 + 3, lengths)
    beh = rng.integers(0, n_items, users.shape[0])
    ts = rng.integers(0, 10_000, users.shape[0])
    store = BehaviorStore.from_arrays(users, beh, ts, category=items.categories(beh))
    path = tmp_path / "store.gsu"
    store.save(path)
    S = 200
    ru = rng.choice(np.unique(users), S)
    rt = rng.integers(0, n_items, S)
    rtime = rng.integers(2_000, 12_000, S)
    out = tmp_path / "parts"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            for method in (Exact(items, k=20), HardSearch(items, k=10)):
                written = retrieve_distributed_parquet(method, path, ru, rt, out, target_time=rtime, client=client, n_partitions=4)
                assert len(written) == 4 and sum(n for _, n in written) == S
                got = read_retrieval_parquet(out)
                want = retrieve_batch(method, store, ru, rt, target_time=rtime)
                np.testing.assert_array_equal(got.positions, want.positions)
                np.testing.assert_array_equal(got.scores, want.scores)
                np.testing.assert_array_equal(got.mask, want.mask)
    import pyarrow.dataset as ds

    t = ds.dataset(str(out), format="parquet").to_table()
    assert t.num_rows == S and set(t.column_names) >= {"row", "user", "target", "target_time", "positions", "scores"}
