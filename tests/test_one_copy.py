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
    assert "ivf.list_vectors" not in arrays and arrays["hnsw.vectors"].nbytes == raw
    assert arrays["hnsw.codes"].nbytes == raw // 4  # the walk's 8-bit codes
    graph = arrays["hnsw.neighbors"].nbytes + arrays["hnsw.offsets"].nbytes + arrays["hnsw.levels"].nbytes
    rest = sum(a.nbytes for a in arrays.values()) - raw - raw // 4 - graph
    assert rest < 0.8 * raw  # ids, list layout and centroids only (int64 ids/rows: 16 bytes a row here)


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


# ---------------------------------------------------------------------------
# the HNSW graph saved as arrays: opened in place, faiss built on first need
# ---------------------------------------------------------------------------


def test_graph_saved_as_arrays_opens_in_place_and_builds_faiss_on_need(tmp_path):
    import faiss

    from gsu.index import HNSWIndex

    x, q = _data("ip")
    h = HNSWIndex(D, "ip", M=12, ef_construction=60)
    h.add(x, np.arange(N) * 3 + 1)
    h.save(tmp_path / "h.gsu")
    before = [h.search(q, K, filter=f, ef=40) for f in (None, Filter(np.arange(1, 3 * N, 6)))]
    blob = faiss.serialize_index(h.faiss_index)
    for mmap in (True, False):
        g = load(tmp_path / "h.gsu", mmap=mmap)
        assert g._index is None and g._file is not None  # nothing handed to faiss at open
        nbr, off = g._graph()[:2]
        np.testing.assert_array_equal(nbr, h._graph()[0])
        np.testing.assert_array_equal(g._codes()[0], h._codes()[0])  # the walk's codes were saved
        # per-query filters run gsu's walk on the file's arrays; faiss is still not built
        pq = Filter.per_query([np.arange(1, 3 * N, 3)[i::5] for i in range(q.shape[0])])
        np.testing.assert_array_equal(g.search(q, K, filter=pq).ids, h.search(q, K, filter=pq).ids)
        assert g._index is None
        # a shared filter goes to faiss's own search: built from the arrays, the same index
        after = [g.search(q, K, filter=f, ef=40) for f in (None, Filter(np.arange(1, 3 * N, 6)))]
        assert g._index is not None and g._file is None
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(faiss.serialize_index(g.faiss_index), blob)
        # and it still inserts: the graph grows as the original's does
        extra = np.random.default_rng(9).standard_normal((40, D)).astype(np.float32)
        g.add(extra, np.arange(40) + 10**6)
        h2 = load(tmp_path / "h.gsu")
        h2.faiss_index  # noqa: B018  (built, then insert)
        h2.add(extra, np.arange(40) + 10**6)
        np.testing.assert_array_equal(g.search(q, K).ids, h2.search(q, K).ids)


def test_files_with_faiss_serialisation_still_load(tmp_path):
    import faiss

    from gsu.index import HNSWIndex
    from gsu.index._checks import check_state

    one, _, x, q = _pair("ip")
    config, arrays = one._state()
    hc = {k: v for k, v in config["hnsw"].items() if k not in ("entry_point", "max_level", "ef_search")}
    ha = {"faiss_index": faiss.serialize_index(one.hnsw.faiss_index), "ids": arrays["hnsw.ids"]}
    legacy = {f"hnsw.{k}": v for k, v in ha.items()}
    legacy.update({k: v for k, v in arrays.items() if not k.startswith("hnsw.")})
    cfg = dict(config, hnsw=hc)
    check_state("filtered", cfg, legacy)
    old = FilteredIndex._from_state(cfg, legacy)
    assert old.hnsw._index is not None
    _same(old, one, q, np.random.default_rng(6))
    assert isinstance(HNSWIndex._from_state(hc, ha), HNSWIndex)


@pytest.mark.parametrize("name, pos, value", [("neighbors", 7, 10**6), ("offsets", 40, 10**9), ("levels", 11, 50)])
def test_graph_damage_with_valid_checksums_is_refused_before_any_kernel(tmp_path, name, pos, value):
    """A mapped open checks shapes and the level table only; the pass over the graph runs
    on first use, before the walk or faiss reads a link; a read open runs it at once."""
    import struct

    import _fuzz as F

    one, _, _, q = _pair("ip")
    p = tmp_path / "g.gsu"
    one.save(p)
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == f"hnsw.{name}")
    buf = bytearray(payload)
    fmt = {"int32": "<i", "int64": "<q"}[np.dtype(m["dtype"]).name]
    struct.pack_into(fmt, buf, m["offset"] + pos * struct.calcsize(fmt), value)
    p.write_bytes(F.join(header, bytes(buf)))
    g = load(p, mmap=True)
    with pytest.raises(IndexFileError, match="hnsw.neighbors"):
        g.search(q, K, route="hnsw")
    with pytest.raises(IndexFileError, match="hnsw.neighbors"):
        load(p)


def test_calibration_holds_queries_out_in_place_and_restores_the_graph():
    from gsu.index import _filter_kernels as fk
    from gsu.index import _graph_kernels as gk

    one, _, x, q = _pair("ip")
    h = one.hnsw
    nbr, off, cum = h._graph()[:3]
    before = nbr.copy()
    rows = np.sort(np.random.default_rng(2).choice(N, 40, replace=False)).astype(np.int64)
    drop = fk.rows_bitmap64(rows, N)
    want = gk.without_nodes(nbr, off, cum, drop, h._scoring_vectors(), np.int64(0))
    slots, saved = gk.hold_out_nodes(nbr, off, cum, drop, h._scoring_vectors(), np.int64(0))
    np.testing.assert_array_equal(nbr, want)  # the same repair, written in place
    assert 0 < slots.shape[0] < nbr.shape[0] // 10
    gk.restore_slots(nbr, slots, saved)
    np.testing.assert_array_equal(nbr, before)
    one.calibrate(n_queries=24, max_seconds=1.0)
    np.testing.assert_array_equal(h._graph()[0], before)  # calibration leaves the graph as it was


def test_a_part_of_a_mapped_index_runs_the_deferred_checks_first(tmp_path):
    import struct

    import _fuzz as F

    one, _, _, q = _pair("ip")
    p = tmp_path / "g.gsu"
    one.save(p)
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == "hnsw.neighbors")
    buf = bytearray(payload)
    struct.pack_into("<i", buf, m["offset"] + 4 * 5, 10**7)
    p.write_bytes(F.join(header, bytes(buf)))
    g = load(p, mmap=True)
    with pytest.raises(IndexFileError, match="hnsw.neighbors"):
        g.hnsw.search(q, K, filter=Filter.per_query([np.arange(0, N, 3)] * q.shape[0]))  # gsu's walk on the part
    # a read open without verification still checks the structure before any kernel
    with pytest.raises(IndexFileError, match="hnsw.neighbors"):
        load(p, mmap=True, verify=False)


# ---------------------------------------------------------------------------
# threads: calibration's in-place hold-out, faiss built on need, the lazy IVF layout
# ---------------------------------------------------------------------------


def _hammer(fn, n_threads: int = 4, rounds: int = 25) -> list:
    import threading

    errors: list = []

    def work() -> None:
        try:
            for _ in range(rounds):
                fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in ts:
        t.start()
    return ts, errors


def test_searches_beside_calibrate_see_the_whole_graph():
    """calibrate writes the held-out repair into the graph and undoes it, under the write
    lock: a graph walk running beside it (fixed beam, so the planner's refit does not
    matter) always answers as on the untouched graph."""
    one, _, x, _ = _pair("ip")
    q = x[::5]  # index rows: a row held out by calibration would lose itself from its answer
    want = one.search(q, K, route="hnsw", hnsw_ef=4.0)
    ts, errors = _hammer(lambda: np.testing.assert_array_equal(one.search(q, K, route="hnsw", hnsw_ef=4.0).ids, want.ids),
                         rounds=40)
    for s in range(6):
        one.calibrate(n_queries=48, max_seconds=0.3, seed=s)
    for t in ts:
        t.join()
    assert not errors, errors[0]


def test_first_searches_of_an_opened_file_from_many_threads(tmp_path):
    """The first use of a mapped file from several threads at once: the deferred checks, the
    IVF layout derived on first use, and (through the HNSW part) faiss rebuilt from the
    arrays — every thread gets the answer of the index that was saved."""
    from gsu.index import HNSWIndex

    one, _, x, q = _pair("ip")
    one.save(tmp_path / "f.gsu")
    h = HNSWIndex(D, "ip", M=12, ef_construction=60)
    h.add(x)
    h.save(tmp_path / "h.gsu")
    f = Filter(np.arange(0, N, 3))
    want_f = one.search(q, K, filter=f, route="ivf")
    want_h = h.search(q, K, filter=f, ef=40)
    g = load(tmp_path / "f.gsu", mmap=True)
    gh = load(tmp_path / "h.gsu", mmap=True)

    def both() -> None:
        np.testing.assert_array_equal(g.search(q, K, filter=f, route="ivf").ids, want_f.ids)
        np.testing.assert_array_equal(gh.search(q, K, filter=f, ef=40).ids, want_h.ids)

    ts, errors = _hammer(both, rounds=5)
    for t in ts:
        t.join()
    assert not errors, errors[0]
    assert gh._index is not None and gh._file is None  # built once, the arrays let go
