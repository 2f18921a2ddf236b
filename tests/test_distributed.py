"""Offline batch retrieval on a Dask LocalCluster equals the single-process batch form."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the `dist` extra (dask[distributed]) is not installed")

from gsu.retrieval import BehaviorStore, Exact, HardSearch, ItemTable, retrieve_batch  # noqa: E402
from gsu.retrieval.distributed import partition_users, retrieve_distributed  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(4)
    n_items, n_users = 500, 12
    E = rng.standard_normal((n_items, 16)).astype(np.float32)
    items = ItemTable(embeddings=E, category=rng.integers(0, 10, n_items))
    lengths = rng.integers(50, 400, n_users)
    users = np.repeat(np.arange(n_users) * 10 + 3, lengths)
    beh = rng.integers(0, n_items, users.shape[0])
    ts = rng.integers(0, 10_000, users.shape[0])
    store = BehaviorStore.from_arrays(users, beh, ts, category=items.categories(beh))
    path = tmp_path_factory.mktemp("dist") / "store.gsu"
    store.save(path)
    S = 300
    ru = rng.choice(np.unique(users), S)
    rt = rng.integers(0, n_items, S)
    rtime = rng.integers(2_000, 12_000, S)
    return items, store, path, ru, rt, rtime


def test_partition_users_keeps_users_whole():
    users = np.array([5, 1, 5, 2, 2, 2, 9, 1])
    parts = partition_users(users, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))
    for p in parts:
        for u in np.unique(users[p]):
            assert set(np.flatnonzero(users == u)) <= set(p.tolist())


def test_local_cluster_equals_batch(setup):
    items, store, path, ru, rt, rtime = setup
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            for method in (Exact(items, k=20), HardSearch(items, k=10)):
                want = retrieve_batch(method, store, ru, rt, target_time=rtime)
                got = retrieve_distributed(method, path, ru, rt, target_time=rtime, client=client, n_partitions=5)
                np.testing.assert_array_equal(got.positions, want.positions)
                np.testing.assert_array_equal(got.scores, want.scores)
                np.testing.assert_array_equal(got.mask, want.mask)
            with pytest.raises(FileNotFoundError):
                retrieve_distributed(Exact(items, k=5), path.with_name("missing.gsu"), ru, rt, client=client)
