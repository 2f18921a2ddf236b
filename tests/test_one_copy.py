"""FilteredIndex keeps one float32 copy of its vectors (faiss's HNSW storage, which the IVF
lists read through their row numbers), and answers exactly as the layout with a
list-ordered IVF copy (``lists_copy=True``) does, on every route, filter form and metric,
after save/load, mutation and compaction; files from before the one-copy layout load
into it."""

from __future__ import annotations

import numpy as np
import pytest

from gsu.errors import IndexFileError
from gsu.index import Filter, FilteredIndex, load

N, D, K = 3_000, 24, 10


def _data(metric: str):
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((30, D)).astype(np.float32)
    x = (centers[rng.integers(0, 30, N)] + 0.4 * rng.standard_normal((N, D))).astype(np.float32)
    q = (centers[rng.integers(0, 30, 12)] + 0.4 * rng.standard_normal((12, D))).astype(np.float32)
    return x, q


def _pair(metric: str):
    x, q = _data(metric)
    one = FilteredIndex(D, metric, M=12, ef_construction=60, calibrate=False, seed=1)
    two = FilteredIndex(D, metric, M=12, ef_construction=60, calibrate=False, seed=1, lists_copy=True)
    one.add(x)
    two.add(x)
    return one, two, x, q


def _filters(rng):
    return [
        None,
        Filter(np.sort(rng.choice(N, 30, replace=False))),  # 1 %
        Filter(np.sort(rng.choice(N, 900, replace=False))),  # 30 %
        Filter.range(200, 1_700),
        Filter.per_query([np.sort(rng.choice(N, m, replace=False)) for m in (5, 40, 300, 1_200, 2_500, 60) * 2]),
    ]


def _same(a, b, q, rng):
    for f in _filters(rng):
        for route in ("exact", "ivf", "hnsw", "auto"):
            ra = a.search(q, K, filter=f, route=route)
            rb = b.search(q, K, filter=f, route=route)
            np.testing.assert_array_equal(ra.ids, rb.ids, err_msg=f"{route} {f!r}")
            np.testing.assert_array_equal(ra.scores, rb.scores, err_msg=f"{route} {f!r}")


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_one_copy_answers_as_the_list_ordered_copy(metric, tmp_path):
    one, two, x, q = _pair(metric)
    assert not one.lists_copy and two.lists_copy
    assert one.ivf._xl.shape[0] == 0 and two.ivf._xl.shape == (N, D)
    _same(one, two, q, np.random.default_rng(0))
    # the IVF route alone scores every allowed row of the lists it opens: all lists = exact
    every = one.search(q, K, route="ivf", ivf_candidates=1e9, ivf_min_lists=1e9)
    exact = one.search(q, K, route="exact")
    np.testing.assert_array_equal(every.ids, exact.ids)
    # saved once: the file holds no list-ordered copy, and loads (read or mapped) the same
    one.save(tmp_path / "one.gsu")
    two.save(tmp_path / "two.gsu")
    s1, s2 = (tmp_path / "one.gsu").stat().st_size, (tmp_path / "two.gsu").stat().st_size
    assert s2 - s1 >= N * D * 4  # exactly one copy of the vectors less
    for mmap in (False, True):
        back = load(tmp_path / "one.gsu", mmap=mmap)
        assert not back.lists_copy and back.ivf._xl.shape[0] == 0
        _same(back, two, q, np.random.default_rng(0))
        back2 = load(tmp_path / "two.gsu", mmap=mmap)
        assert back2.lists_copy
        _same(back2, one, q, np.random.default_rng(0))


def test_one_copy_after_remove_upsert_compact(tmp_path):
    one, two, x, q = _pair("ip")
    rng = np.random.default_rng(3)
    gone = rng.choice(N, 400, replace=False)
    new = rng.standard_normal((50, D)).astype(np.float32)
    for idx in (one, two):
        idx.remove(gone)
        idx.upsert(new, np.arange(10, 60))  # 50 ids replaced (some of them already removed)
        idx.add(new[:20] * 0.5, np.arange(N, N + 20))
    _same(one, two, q, np.random.default_rng(1))
    one.save(tmp_path / "m.gsu")
    back = load(tmp_path / "m.gsu", mmap=True)
    _same(back, two, q, np.random.default_rng(1))
    for idx in (one, two, back):
        idx.compact()
    assert one.n_dead == 0 and one.ivf._xl.shape[0] == 0
    _same(one, two, q, np.random.default_rng(2))
    _same(back, two, q, np.random.default_rng(2))


def test_files_from_before_the_one_copy_layout_load_into_it():
    one, two, x, q = _pair("ip")
    config, arrays = two._state()
    config.pop("lists_copy")  # what the older files held: no key, the IVF copy in the file
    old = FilteredIndex._from_state(config, arrays)
    assert not old.lists_copy and old.ivf._xl.shape[0] == 0
    _same(old, one, q, np.random.default_rng(4))


def test_graph_is_read_in_place_and_file_holds_no_second_copy(tmp_path):
    one, _, x, q = _pair("ip")
    nbr, off = one.hnsw._graph()[:2]
    assert not nbr.flags.owndata and not off.flags.owndata  # views of faiss's arrays, not copies
    config, arrays = one._state()
    raw = x.nbytes
    blob = arrays["hnsw.faiss_index"].nbytes  # faiss: the vectors + the graph
    rest = sum(a.nbytes for name, a in arrays.items() if name != "hnsw.faiss_index")
    assert rest < 0.8 * raw  # ids, list layout and centroids only (int64 ids/rows: 16 bytes a row here)
    assert "ivf.list_vectors" not in arrays and blob > raw


def test_inconsistent_copy_flags_are_refused(tmp_path):
    one, _, _, _ = _pair("ip")
    one.save(tmp_path / "a.gsu")
    from gsu.index._checks import check_state
    from gsu.errors import FieldError

    config, arrays = one._state()
    config["lists_copy"] = True  # claims an IVF copy the file does not hold
    with pytest.raises(FieldError, match="lists_copy"):
        check_state("filtered", config, arrays)
    config, arrays = one._state()
    config["ivf"] = dict(config["ivf"], external_vectors="yes")
    with pytest.raises(FieldError, match="external_vectors"):
        check_state("filtered", config, arrays)
    ic, ia = one.ivf._state()  # a bare IVF file may not go without vectors
    with pytest.raises(FieldError, match="external_vectors"):
        check_state("ivf", ic, ia)
    assert isinstance(load(tmp_path / "a.gsu"), FilteredIndex)
    with pytest.raises(TypeError, match="no vectors"):
        one.ivf.search(np.zeros((1, D), np.float32), K)
    with pytest.raises(IndexFileError):
        (tmp_path / "b.gsu").write_bytes((tmp_path / "a.gsu").read_bytes()[:-100])
        load(tmp_path / "b.gsu")
