"""A new retrieval method is one Retriever subclass and one registry line; the CLI, hybrid
search and the CTR layer then all name it."""

from __future__ import annotations

import numpy as np
import pytest

from gsu.datasets import behavior_dataset
from gsu.retrieval import BehaviorStore, ItemTable, Retriever, RetrievalResult, make_method, method_names, register_method
from gsu.retrieval import registry


class LastK(Retriever):
    """The k most recent behaviors before the target's time cut, newest first."""

    name = "last_k"

    def _retrieve(self, h, trows, k, cuts):
        pos = np.full((trows.shape[0], k), -1, np.int64)
        for t, cut in enumerate(cuts):
            got = np.arange(cut - 1, max(cut - k, 0) - 1, -1)
            pos[t, : got.shape[0]] = got
        return RetrievalResult.from_positions(pos, np.where(pos >= 0, pos, -np.inf).astype(np.float32))


@pytest.fixture()
def last_k():
    register_method("last_k", LastK)  # the one line a newcomer writes
    yield
    registry._REGISTRY.pop("last_k", None)


@pytest.fixture(scope="module")
def world():
    data = behavior_dataset(5, n_items=300, dim=8, n_categories=10, seq_len=(40, 90), seed=3)
    store = BehaviorStore.from_behavior_data(data)
    items = ItemTable(embeddings=data.item_emb, category=data.item_category)
    return store, items


def test_registered_method_is_built_by_name_and_answers_exactly(last_k, world):
    store, items = world
    assert "last_k" in method_names()
    m = make_method("last_k", items, k=6)
    assert isinstance(m, LastK) and m.k == 6
    h = store.history(int(store.user_ids[0]))
    ts = np.asarray(h.timestamps)
    cut_time = int(ts[20])
    res = m.retrieve(h, np.array([1, 2]), target_time=np.array([cut_time, ts.max() + 1]))
    cut = int(np.searchsorted(ts, cut_time))
    np.testing.assert_array_equal(res.positions[0], np.arange(cut - 1, cut - 7, -1))
    np.testing.assert_array_equal(res.positions[1], np.arange(len(ts) - 1, len(ts) - 7, -1))
    # a component of a hybrid by name, like the built-ins
    hy = make_method("hybrid:last_k+hard", items, k=6)
    assert [type(c).__name__ for c in hy.methods] == ["LastK", "HardSearch"]


def test_registered_method_runs_from_the_cli(last_k, world, tmp_path):
    from gsu.cli import main

    store, items = world
    store.save(tmp_path / "store.gsu")
    items.save(tmp_path / "items.gsu")
    u = int(store.user_ids[1])
    (tmp_path / "req.csv").write_text(f"user,target\n{u},3\n{u},4\n")
    rc = main(["retrieve", str(tmp_path / "store.gsu"), str(tmp_path / "items.gsu"), str(tmp_path / "req.csv"),
               str(tmp_path / "out.npz"), "--method", "last_k", "-k", "4"])
    assert rc in (0, None)
    z = np.load(tmp_path / "out.npz")
    n = store.history(u).items.shape[0]
    np.testing.assert_array_equal(z["positions"], np.tile(np.arange(n - 1, n - 5, -1), (2, 1)))


def test_registered_method_is_a_ctr_method(last_k):
    from gsu.ctr.data import synthetic_task
    from gsu.ctr.pipeline import method_views

    task = synthetic_task(n_users=6, seq_len=(30, 60), n_items=200, n_categories=8, n_targets_per_user=4, seed=1)
    views, info = method_views(task, "last_k", k=5, splits=("test",))
    assert info["label"] == "last_k k=5"
    assert views["test"].mean_behaviors() <= 5


def test_registry_refuses_bad_entries(last_k):
    with pytest.raises(ValueError, match="already registered"):
        register_method("last_k", LastK)
    with pytest.raises(TypeError, match="Retriever subclass"):
        register_method("not_a_method", dict)
    with pytest.raises(ValueError, match="identifier"):
        register_method("has space", LastK)
    with pytest.raises(ValueError, match="unknown name"):
        make_method("never_registered", ItemTable(embeddings=np.eye(3, dtype=np.float32)))


def test_gsu_train_refuses_an_unknown_method_before_building_data(capsys):
    from gsu.cli import main

    rc = main(["train", "--method", "no_such_method"])
    assert rc != 0
    assert "no_such_method" in capsys.readouterr().err


def test_built_in_methods_default_what_they_can_and_name_what_they_cannot(world):
    _, items = world  # 8-d embeddings
    c = make_method("cascade", items, k=5)
    assert c.draft_dim == 8  # min(16, d)
    with pytest.raises(TypeError, match=r"method 'twin'.*query_proj.*--param"):
        make_method("twin", items, k=5)
