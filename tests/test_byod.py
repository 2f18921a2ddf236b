"""Bring your own data: file formats, the data-set registry and SPECs, filters, the l2
metric, the shared runner, the ann-benchmarks adapter and ``gsu bench --data``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gsu.datasets import read_embeddings, read_sparse, write_ann_hdf5, write_embeddings, write_sparse
from gsu.datasets.bigann import read_bigann_truth, write_bigann_truth
from gsu.datasets.filters import attribute_filters, read_attribute, read_filters, write_filters
from gsu.datasets.registry import SpecError, load_dataset, load_filters, parse_spec
from gsu.errors import DataFormatError


def _brute(x: np.ndarray, q: np.ndarray, k: int, metric: str, allowed: np.ndarray | None = None):
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        s = -((q64[:, None, :] - x64[None]) ** 2).sum(-1)
    elif metric == "cosine":
        s = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (x64 / np.linalg.norm(x64, axis=1, keepdims=True)).T
    else:
        s = q64 @ x64.T
    if allowed is not None:
        mask = np.zeros(x.shape[0], bool)
        mask[allowed] = True
        s = np.where(mask[None], s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("suffix,dtype", [(".npy", np.float32), (".fvecs", np.float32), (".hdf5", np.float32),
                                          (".parquet", np.float32), (".fbin", np.float32), (".u8bin", np.uint8),
                                          (".i8bin", np.int8), (".ibin", np.int32), (".ivecs", np.int32), (".bvecs", np.uint8)])
def test_dense_formats_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(3)
    if np.issubdtype(dtype, np.floating):
        a = rng.standard_normal((37, 9)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, -100), min(info.max, 200), (37, 9)).astype(dtype)
    p = tmp_path / f"x{suffix}"
    write_embeddings(p, a)
    b = read_embeddings(p)
    assert b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    if suffix in (".fbin", ".u8bin", ".i8bin", ".ibin"):
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(read_embeddings(p, mmap=True), a)


def test_bigann_files_are_validated(tmp_path):
    a = np.arange(40, dtype=np.float32).reshape(10, 4)
    p = tmp_path / "x.fbin"
    write_embeddings(p, a)
    raw = p.read_bytes()
    (tmp_path / "short.fbin").write_bytes(raw[:-3])
    with pytest.raises(DataFormatError, match="truncated"):
        read_embeddings(tmp_path / "short.fbin")
    (tmp_path / "long.fbin").write_bytes(raw + b"\0\0\0\0")
    with pytest.raises(DataFormatError, match="longer than its header"):
        read_embeddings(tmp_path / "long.fbin")
    (tmp_path / "hdr.fbin").write_bytes(raw[:5])
    with pytest.raises(DataFormatError, match="header"):
        read_embeddings(tmp_path / "hdr.fbin")
    bad = a.copy()
    bad[3, 1] = np.nan
    (tmp_path / "nan.fbin").write_bytes(np.asarray([10, 4], "<u4").tobytes() + bad.tobytes())
    with pytest.raises(DataFormatError, match="NaN or inf.*first bad row: 3"):
        read_embeddings(tmp_path / "nan.fbin")
    with pytest.raises(ValueError, match="fractional"):
        write_embeddings(tmp_path / "x.u8bin", a + 0.5)
    with pytest.raises(ValueError, match="int8"):
        write_embeddings(tmp_path / "x.i8bin", a * 10)


@pytest.mark.parametrize("suffix", [".npz", ".jsonl", ".csr", ".spmat"])
def test_sparse_formats_round_trip(tmp_path, suffix):
    m = sp.random(30, 50, density=0.1, format="csr", random_state=1, dtype=np.float32)
    m.data += 0.1
    p = tmp_path / f"d{suffix}"
    write_sparse(p, m)
    got, ids = read_sparse(p)
    np.testing.assert_array_equal(ids, np.arange(30))
    want = m.toarray()
    have = got.toarray()
    if suffix == ".jsonl":  # columns are renumbered by first appearance: compare through the vocabulary
        from gsu.datasets import read_sparse_jsonl

        _, _, vocab = read_sparse_jsonl(p)
        perm = np.array([vocab[str(c)] if str(c) in vocab else -1 for c in range(50)])
        used = perm >= 0
        np.testing.assert_array_equal(have[:, perm[used]], want[:, used])
        assert not want[:, ~used].any()
    else:
        np.testing.assert_array_equal(have, want)


def test_bigann_csr_is_validated(tmp_path):
    m = sp.random(8, 20, density=0.3, format="csr", random_state=2, dtype=np.float32)
    p = tmp_path / "d.csr"
    write_sparse(p, m)
    raw = p.read_bytes()
    (tmp_path / "t.csr").write_bytes(raw[:-4])
    with pytest.raises(DataFormatError, match="truncated"):
        read_sparse(tmp_path / "t.csr")
    body = bytearray(raw)
    bad_col = np.asarray([99], "<i4").tobytes()  # first column index -> outside [0, 20)
    off = 24 + 8 * 9
    body[off: off + 4] = bad_col
    (tmp_path / "c.csr").write_bytes(bytes(body))
    with pytest.raises(DataFormatError, match="column indices outside"):
        read_sparse(tmp_path / "c.csr")
    with pytest.raises(ValueError, match="no ids"):
        write_sparse(tmp_path / "x.csr", m, ids=np.arange(8) + 5)


def test_bigann_truth_round_trip(tmp_path):
    ids = np.arange(12).reshape(3, 4)
    dist = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    write_bigann_truth(tmp_path / "gt.bin", ids, dist)
    a, b = read_bigann_truth(tmp_path / "gt.bin")
    np.testing.assert_array_equal(a, ids)
    np.testing.assert_array_equal(b, dist)


@pytest.mark.parametrize("suffix", [".jsonl", ".npz", ".parquet"])
def test_filter_files_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    sets = [np.sort(rng.choice(100, int(rng.integers(0, 20)), replace=False)) for _ in range(7)]
    p = tmp_path / f"f{suffix}"
    write_filters(p, sets, n_items=100)
    got = read_filters(p, n_queries=7, n_items=100)
    assert len(got) == 7
    for a, b in zip(sets, got):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.int64
    with pytest.raises(DataFormatError, match="expected one per query \\(8\\)"):
        read_filters(p, n_queries=8)


def test_filter_files_are_validated(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('[1, 2, 3]\n{"ids": [4]}\n[1, "x"]\n')
    with pytest.raises(DataFormatError, match="line 3: 'x' is not an int64 item id"):
        read_filters(p)
    p.write_text("[1, 2\n")
    with pytest.raises(DataFormatError, match="line 1: malformed JSON"):
        read_filters(p)
    p.write_text("[1, 2]\n[5, 500]\n")
    with pytest.raises(DataFormatError, match="line 2: id 500 is outside \\[0, 100\\)"):
        read_filters(p, n_items=100)
    p.write_text('{"allowed": [1]}\n')
    with pytest.raises(DataFormatError, match='needs an "ids" list'):
        read_filters(p)
    (tmp_path / "f.csv").write_text("1\n")
    with pytest.raises(DataFormatError, match="unknown filter file suffix"):
        read_filters(tmp_path / "f.csv")


def test_attribute_filters_hit_their_selectivity():
    years = np.repeat(np.arange(1000), 10)  # 10,000 items, 1,000 distinct values
    grid = attribute_filters(years, (0.01, 0.1), 5, seed=0)
    for sel, sets in grid.items():
        for rows in sets:
            v = years[rows]
            assert rows.shape[0] >= sel * 10_000  # whole values: never less than asked
            assert rows.shape[0] <= sel * 10_000 + 20
            assert np.array_equal(rows, np.flatnonzero((years >= v.min()) & (years <= v.max())))  # a contiguous range
    cats = np.array(["a", "b", "c", "d"] * 250)
    sets = attribute_filters(cats, (0.5,), 3, seed=1)[0.5]
    for rows in sets:
        assert set(np.unique(cats[rows])).__len__() == 2 and rows.shape[0] == 500  # two whole categories


def test_read_attribute_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.save(tmp_path / "a.npy", np.arange(5))
    np.testing.assert_array_equal(read_attribute(tmp_path / "a.npy"), np.arange(5))
    pq.write_table(pa.table({"year": [3, 1, 2]}), tmp_path / "a.parquet")
    np.testing.assert_array_equal(read_attribute(tmp_path / "a.parquet", column="year"), [3, 1, 2])
    (tmp_path / "a.csv").write_text("year,name\n1,x\n2,y\n")
    np.testing.assert_array_equal(read_attribute(tmp_path / "a.csv", column="year"), [1, 2])
    with pytest.raises(DataFormatError, match="no column 'nope'"):
        read_attribute(tmp_path / "a.csv", column="nope")
    with pytest.raises(DataFormatError, match="expected one per item \\(4\\)"):
        read_attribute(tmp_path / "a.npy", n_items=4)


# ------------------------------------------------------------------------------ specs


def test_parse_spec():
    s = parse_spec("gen:clustered?n=100&d=8")
    assert (s.scheme, s.target, s.params) == ("gen", "clustered", {"n": "100", "d": "8"})
    s = parse_spec("items.fbin?queries=q.fbin&metric=l2")
    assert (s.scheme, s.target, s.params) == ("file", "items.fbin", {"queries": "q.fbin", "metric": "l2"})
    assert parse_spec("file:/a/b.hdf5").target == "/a/b.hdf5"
    for bad, msg in [("", "empty"), ("zip:x.npy", "unknown scheme 'zip'"), ("x.npy?n", "not key=value"),
                     ("x.npy?n=1&n=2", "given twice"), ("x.npy?", "empty settings")]:
        with pytest.raises(SpecError, match=msg):
            parse_spec(bad)
    with pytest.raises(SpecError, match="unknown generator 'nope'"):
        load_dataset("gen:nope")
    with pytest.raises(SpecError, match="unknown setting\\(s\\) \\['size'\\]"):
        load_dataset("gen:clustered?size=3")
    with pytest.raises(SpecError, match="n='-3'.*positive"):
        load_dataset("gen:clustered?n=-3")


def test_dataset_from_hdf5_uses_file_queries_and_truth(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 12)).astype(np.float32)
    q = rng.standard_normal((15, 12)).astype(np.float32)
    for dist, metric in (("euclidean", "l2"), ("angular", "cosine")):
        nb, _ = _brute(x, q, 20, metric)
        p = tmp_path / f"d-{dist}.hdf5"
        write_ann_hdf5(p, train=x, test=q, neighbors=nb, distance=dist)
        ds = load_dataset(str(p))
        assert (ds.metric, ds.n, ds.nq, ds.dim, ds.kind) == (metric, 500, 15, 12, "dense")
        assert ds.info["truth_from"].endswith(":neighbors")
        assert ds.info["truth_check"] == 1.0
        rows, scores = ds.truth(10)
        want_r, want_s = _brute(x, q, 10, metric)
        np.testing.assert_array_equal(rows, want_r)
        np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)
        # without the file's neighbours the exact twin computes the same answer
        write_ann_hdf5(tmp_path / "nn.hdf5", train=x, test=q, distance=dist)
        r2, s2 = load_dataset(str(tmp_path / "nn.hdf5")).truth(10)
        np.testing.assert_array_equal(r2, want_r)
        np.testing.assert_allclose(s2, want_s, rtol=1e-4, atol=1e-4)


def test_dataset_draws_and_holds_out_queries(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(f"{tmp_path / 'x.npy'}?nq=20&seed=4&metric=l2")
    assert (ds.n, ds.nq, ds.metric) == (280, 20, "l2")
    held = np.setdiff1d(np.arange(300), ds.ids)
    np.testing.assert_array_equal(ds.queries, x[held])  # the drawn queries are file rows left out of the base
    np.testing.assert_array_equal(ds.base, x[ds.ids])
    rows, scores = ds.truth(5)
    want_r, want_s = _brute(ds.base, ds.queries, 5, "l2")
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)
    # filters name file rows; held-out rows drop out, the rest map to base rows
    sets = [np.array([held[0], ds.ids[3], ds.ids[7]])] * 20
    write_filters(tmp_path / "f.jsonl", sets)
    (cell,) = load_filters(str(tmp_path / "f.jsonl"), ds)
    assert cell.info["ids_not_in_base"] == 20
    assert all(np.array_equal(r, [3, 7]) for r in cell.rows)
    frows, _ = ds.truth(2, filters=cell.rows)
    assert set(frows[0]) == {3, 7}
    with pytest.raises(SpecError, match="cannot be held out"):
        load_dataset(f"{tmp_path / 'x.npy'}?nq=300")
    with pytest.raises(SpecError, match="key= applies to HDF5"):
        load_dataset(f"{tmp_path / 'x.npy'}?key=train")


def test_dataset_queries_file_and_truth_file(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    q = rng.standard_normal((7, 5)).astype(np.float32)
    write_embeddings(tmp_path / "x.fbin", x)
    write_embeddings(tmp_path / "q.fbin", q)
    nb, _ = _brute(x, q, 10, "ip")
    write_embeddings(tmp_path / "gt.ibin", nb.astype(np.int32))
    ds = load_dataset(f"{tmp_path / 'x.fbin'}?queries={tmp_path / 'q.fbin'}&truth={tmp_path / 'gt.ibin'}")
    assert ds.info["truth_check"] == 1.0
    np.testing.assert_array_equal(ds.truth(10)[0], nb)
    write_embeddings(tmp_path / "q3.fbin", q[:, :3])
    with pytest.raises(DataFormatError, match="dimension 3; expected 5"):
        load_dataset(f"{tmp_path / 'x.fbin'}?queries={tmp_path / 'q3.fbin'}")


def test_sparse_dataset_and_generators(tmp_path):
    m = sp.random(120, 40, density=0.2, format="csr", random_state=3, dtype=np.float32)
    m.data += 0.1
    qm = sp.random(9, 30, density=0.3, format="csr", random_state=4, dtype=np.float32)  # narrower: padded
    write_sparse(tmp_path / "d.npz", m)
    write_sparse(tmp_path / "q.npz", qm)
    ds = load_dataset(f"{tmp_path / 'd.npz'}?queries={tmp_path / 'q.npz'}")
    assert (ds.kind, ds.n, ds.nq, ds.dim) == ("sparse", 120, 9, 40)
    rows, scores = ds.truth(5)
    s = (qm.toarray() @ m.toarray()[:, :30].T)
    for i in range(9):
        np.testing.assert_allclose(scores[i][rows[i] >= 0], np.sort(s[i][s[i] > 0])[::-1][:5], rtol=1e-5)
    ds = load_dataset("gen:splade?n=300&nq=5&vocab=2000&nnz=20")
    assert (ds.kind, ds.n, ds.nq) == ("sparse", 300, 5)
    ds = load_dataset("gen:gaussian?n=400&d=8&nq=6")
    assert (ds.metric, ds.n, ds.nq, ds.dim) == ("l2", 400, 6, 8)
    ds = load_dataset("gen:clustered?n=500&d=16&nq=4")
    (cell1, cell2) = load_filters("attr:time?sel=0.01,0.1", ds)
    assert [c.selectivity for c in (cell1, cell2)] == [0.01, 0.1]
    assert all(r.shape[0] == 50 for r in cell2.rows)
    with pytest.raises(SpecError, match="neither an attribute"):
        load_filters("attr:price?sel=0.1", ds)


# ------------------------------------------------------------------------------ l2



def test_named_sets_come_from_the_registry():
    """The filtered suite's named sets are registry SPECs: `clustered` is the generator
    `gen:clustered` at its size, the others `gen:NAME?...`; the suite's view of a set is the
    registry's data, attributes included."""
    from gsu.bench.filtered_data import load_dataset as suite_set
    from gsu.datasets.named import NAMED_SETS, load_named_set

    named = load_named_set("clustered", nq=20, quick=True)
    gen = load_dataset("gen:clustered?n=20000&d=64&clusters=64&nq=20&seed=0")
    np.testing.assert_array_equal(named.base, gen.base)
    np.testing.assert_array_equal(named.queries, gen.queries)
    np.testing.assert_array_equal(named.attributes["cluster"], gen.attributes["cluster"])
    ds = load_dataset("gen:powerlaw-d32?quick=1&nq=12&seed=3")
    assert (ds.n, ds.dim, ds.nq, ds.metric, ds.name) == (20_000, 32, 12, "ip", "powerlaw-d32")
    assert ds.info["description"] == NAMED_SETS["powerlaw-d32"] and ds.info["params"]["seed"] == 103
    assert set(ds.attributes) == {"time", "cluster"} and ds.info["_centers"].shape == (1024, 32)
    view = suite_set("powerlaw-d32", Path("unused"), quick=True, nq=12, seed=3)
    np.testing.assert_array_equal(view.x, ds.base)
    np.testing.assert_array_equal(view.labels, ds.attributes["cluster"])
    np.testing.assert_array_equal(view.centers, ds.info["_centers"])
    assert view.description == NAMED_SETS["powerlaw-d32"] and view.metric == "ip"
    with pytest.raises(SpecError, match="unknown setting"):
        load_dataset("gen:aniso-d128?n=5")
    with pytest.raises(SpecError, match="named set"):
        load_dataset("gen:nope-d3")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_l2_metric_is_exact(tmp_path, kind):
    from gsu.index import Filter, FlatIndex, HNSWIndex, IVFIndex, load

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2000, 16)) * rng.uniform(0.2, 4, (2000, 1))).astype(np.float32)  # norms vary: ip != l2
    q = (rng.standard_normal((25, 16)) * 2).astype(np.float32)
    cls, kw = {"flat": (FlatIndex, {}), "hnsw": (HNSWIndex, {"ef": 400}), "ivf": (IVFIndex, {"nprobe": 10_000})}[kind]
    idx = cls(16, "l2")
    idx.add(x)
    want_r, want_s = _brute(x, q, 10, "l2")
    ip_r, _ = _brute(x, q, 10, "ip")
    assert not np.array_equal(ip_r, want_r)  # the data tells l2 and ip apart
    res = idx.search(q, 10, **kw)
    if kind == "hnsw":
        assert np.mean([len(set(a) & set(b)) for a, b in zip(res.ids, want_r)]) / 10 >= 0.98
        np.testing.assert_allclose(res.scores, -((q[:, None, :].astype(np.float64) - x[res.ids]) ** 2).sum(-1), rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(res.ids, want_r)
        np.testing.assert_allclose(res.scores, want_s, rtol=1e-5, atol=1e-5)
    allowed = np.sort(rng.choice(2000, 150, replace=False))
    per = [np.sort(rng.choice(2000, 40, replace=False)) for _ in range(25)]
    for f, truth, ok in ((Filter.from_ids(allowed), _brute(x, q, 10, "l2", allowed)[0], [allowed] * 25),
                         (Filter.per_query(per), np.stack([_brute(x, q[i:i + 1], 10, "l2", per[i])[0][0] for i in range(25)]), per)):
        res = idx.search(q, 10, filter=f, **kw)
        assert all(np.isin(r, a).all() for r, a in zip(res.ids, ok))
        if kind == "hnsw":
            assert np.mean([len(set(a) & set(b)) for a, b in zip(res.ids, truth)]) / 10 >= 0.98
        else:
            np.testing.assert_array_equal(res.ids, truth)
    idx.save(tmp_path / "i.gsu")
    back = load(tmp_path / "i.gsu")
    assert back.metric == "l2"
    np.testing.assert_array_equal(back.search(q, 10, **kw).ids, idx.search(q, 10, **kw).ids)


@pytest.mark.parametrize("route", ["exact", "ivf", "hnsw", "auto"])
def test_filtered_index_l2_matches_exact(tmp_path, route):
    """FilteredIndex(metric="l2") on every route, against the brute-force l2 answer: the exact
    route equal ids and scores, the approximate routes high recall; scores are -|q - x|²."""
    from gsu.index import Filter, FilteredIndex, load

    rng = np.random.default_rng(8)
    x = (rng.standard_normal((3000, 16)) * rng.uniform(0.2, 4, (3000, 1))).astype(np.float32)  # norms vary: ip != l2
    q = (rng.standard_normal((25, 16)) * 2).astype(np.float32)
    idx = FilteredIndex(16, "l2", M=16, ef_construction=100, nlist=16, calibrate=False)
    idx.add(x)
    kw = {"route": route, "effort": 4.0}
    allowed = np.sort(rng.choice(3000, 900, replace=False))
    per = [np.sort(rng.choice(3000, 300, replace=False)) for _ in range(25)]
    cases = ((None, _brute(x, q, 10, "l2")), (Filter.from_ids(allowed), _brute(x, q, 10, "l2", allowed)),
             (Filter.per_query(per), tuple(np.concatenate(t) for t in zip(*[_brute(x, q[i:i + 1], 10, "l2", per[i]) for i in range(25)]))))
    assert not np.array_equal(_brute(x, q, 10, "ip")[0], cases[0][1][0])  # the data tells l2 and ip apart
    for f, (want_r, want_s) in cases:
        res = idx.search(q, 10, filter=f, **kw)
        got = res.ids
        exact = -((q[:, None, :].astype(np.float64) - x[np.maximum(got, 0)]) ** 2).sum(-1)
        np.testing.assert_allclose(res.scores[got >= 0], exact[got >= 0], rtol=1e-5, atol=1e-4)  # scores are -|q - x|²
        assert (np.diff(res.scores, axis=1) <= 0).all()
        if route == "exact":
            np.testing.assert_array_equal(got, want_r)
            np.testing.assert_allclose(res.scores, want_s, rtol=1e-5, atol=1e-4)
        else:
            assert np.mean([len(set(a) & set(b)) for a, b in zip(got, want_r)]) / 10 >= 0.95, route
        for i in range(2):  # one query per call
            np.testing.assert_array_equal(idx.search(q[i:i + 1], 10, filter=f if f is None or not f.is_per_query
                                                     else Filter.from_ids(per[i]), **kw).ids[0], got[i])
    idx.save(tmp_path / "l2.gsu")
    back = load(tmp_path / "l2.gsu")
    assert back.metric == "l2"
    np.testing.assert_array_equal(back.search(q, 10, **kw).ids, idx.search(q, 10, **kw).ids)


def test_filtered_index_l2_calibrates_on_euclidean_ranks():
    from gsu.index import Filter, FilteredIndex

    rng = np.random.default_rng(9)
    centers = rng.standard_normal((20, 16)) * 3
    x = (centers[rng.integers(0, 20, 4000)] + rng.standard_normal((4000, 16)) * rng.uniform(0.3, 2, (4000, 1))).astype(np.float32)
    idx = FilteredIndex(16, "l2", M=16, ef_construction=100, nlist=16, calibrate=False)
    idx.add(x)
    cal = idx.calibrate(max_seconds=20, n_queries=60, progress=False)
    assert cal.target_recall == pytest.approx(0.95)
    q = (centers[rng.integers(0, 20, 40)] + rng.standard_normal((40, 16))).astype(np.float32)
    rec = []
    for sel in (0.02, 0.2, 0.8):
        allowed = np.sort(rng.choice(4000, int(4000 * sel), replace=False))
        want = _brute(x, q, 10, "l2", allowed)[0]
        got = idx.search(q, 10, filter=Filter.from_ids(allowed)).ids
        rec.append(np.mean([len(set(a) & set(b)) for a, b in zip(got, want)]) / 10)
    assert min(rec) >= 0.9, rec


# ------------------------------------------------------------------------------ runner


def test_runner_interleaves_and_warms():
    from gsu.bench import runner

    log: list[str] = []
    res = runner.time_interleaved({"a": lambda: log.append("a"), "b": runner.Calls(lambda i: log.append(f"b{i}"), 2)},
                                  rounds=3, warm="once")
    assert log == ["a", "b0", "b1"] + ["a", "b0", "b1"] * 3  # one warm pass each, then rounds alternating
    assert res["a"].timing.repeats == 3 and res["b"].timing.repeats == 3 and res["b"].calls == 2
    log.clear()
    runner.time_interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, rounds=2, warm="each")
    assert log == ["a", "a", "b", "b"] * 2  # an untimed pass right before every timed pass
    log.clear()
    runner.time_interleaved({"a": lambda: log.append("a")}, rounds=2, fast_s=10.0, fast_rounds=5)
    assert len(log) == 1 + 5
    log.clear()
    res = runner.time_interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, rounds=1, warm="each",
                                  cold=lambda: log.append("flush"))
    assert log == ["flush", "a", "flush", "b", "a", "a", "b", "b"]  # a cold pass each first, in no median
    assert res["a"].cold_s is not None and res["a"].timing.repeats == 1
    p = runner.provenance(x=1)
    assert p["x"] == 1 and p["peak_rss_mb"] > 0 and p["command"] and "commit" in p
    assert isinstance(p["cpu"], str) and p["cpu"] and p["cores"] >= 1


# ------------------------------------------------------------------------------ ann-benchmarks


@pytest.mark.parametrize("distance,kind,arg", [("euclidean", "hnsw", 200), ("euclidean", "ivf", 64), ("angular", "filtered", 1.0),
                                               ("euclidean", "filtered", 1.0), ("angular", "flat", None)])
def test_annb_adapter_as_the_runner_calls_it(tmp_path, distance, kind, arg):
    from gsu.bench.annb import CONFIG_YML, GsuANN

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 20)).astype(np.float32)
    q = rng.standard_normal((30, 20)).astype(np.float32)
    nb, _ = _brute(x, q, 10, "l2" if distance == "euclidean" else "cosine")
    p = tmp_path / "d.hdf5"
    write_ann_hdf5(p, train=x, test=q, neighbors=nb, distance=distance)
    # what ann-benchmarks' runner does: read the file, construct with '@metric', fit, set arguments, query
    import h5py

    with h5py.File(p, "r") as f:
        metric = f.attrs["distance"]
        X_train, X_test, neighbors = np.array(f["train"]), np.array(f["test"]), np.array(f["neighbors"])
    algo = GsuANN(metric, kind, {"M": 16} if kind in ("hnsw", "filtered") else None)
    before = algo.get_memory_usage()
    algo.fit(X_train)
    assert algo.get_memory_usage() - before >= 0
    algo.set_query_arguments(arg)
    found = [algo.query(v, 10) for v in X_test]

    def dist(a, b):
        if metric == "euclidean":
            return float(np.linalg.norm(a - b))
        return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    recall = []
    for v, cand, true in zip(X_test, found, neighbors):
        d = [dist(v, X_train[i]) for i in cand]
        assert all(a <= b + 1e-5 for a, b in zip(d, d[1:]))  # nearest first
        kth = dist(v, X_train[true[9]])
        recall.append(sum(di <= kth + 1e-5 for di in d) / 10)
    assert np.mean(recall) >= (1.0 if kind == "flat" else 0.9)
    algo.batch_query(X_test, 10)
    batch = algo.get_batch_results()
    assert all(np.array_equal(a, b) for a, b in zip(batch, found))
    allowed = [np.sort(rng.choice(3000, 100, replace=False)) for _ in range(30)]
    algo.batch_query_filtered(X_test, 10, allowed)
    for i, row in enumerate(algo.get_batch_results()):
        one = algo.query_filtered(X_test[i], 10, allowed[i])
        assert np.isin(row, allowed[i]).all() and row.shape[0] == 10 and np.isin(one, allowed[i]).all() and one.shape[0] == 10
        if kind == "flat":  # exact: the batched per-query filter and the single shared filter agree
            assert np.array_equal(row, one)
    assert "gsu" in str(algo) and algo.get_additional()["kind"] == kind
    algo.done()
    assert "constructor: GsuANN" in CONFIG_YML and "['@metric']" in CONFIG_YML


def test_annb_adapter_refuses_what_it_cannot_do():
    from gsu.bench.annb import GsuANN

    with pytest.raises(ValueError, match="jaccard"):
        GsuANN("jaccard")
    with pytest.raises(ValueError, match="kind"):
        GsuANN("euclidean", "lsh")


# ------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("distance", ["angular", "euclidean"])
def test_cli_bench_with_outside_data(tmp_path, capsys, distance):
    """An ann-benchmarks file and a filter file through `gsu bench filtered`; euclidean data
    is searched in L2 by every method (gsu and each peer), recall against the exact l2 answer."""
    from gsu.bench import harness
    from gsu.cli import main

    rng = np.random.default_rng(8)
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    if distance == "euclidean":
        x *= rng.uniform(0.2, 4, (1500, 1)).astype(np.float32)  # norms vary: the inner-product order differs
    q = rng.standard_normal((8, 16)).astype(np.float32)
    write_ann_hdf5(tmp_path / "mine.hdf5", train=x, test=q, distance=distance)
    sets = [np.sort(rng.choice(1500, 30, replace=False)) for _ in range(8)]
    write_filters(tmp_path / "allowed.jsonl", sets)
    out = tmp_path / "out"
    rc = main(["bench", "filtered", "--quick", "--data", str(tmp_path / "mine.hdf5"), "--filters", str(tmp_path / "allowed.jsonl"),
               "--out", str(out)])
    assert rc == 0
    recs = harness.read_jsonl(out / "filtered.jsonl")
    metric, searched = ("cosine", "ip") if distance == "angular" else ("l2", "l2")
    assert {r["filter"] for r in recs} == {"file:allowed"}
    assert all(r["dataset"] == "mine" and r["data"]["metric"] == metric and r["metric"] == searched and r["data"]["nq"] == 8
               for r in recs)
    assert all(r["command"] and "commit" in r and r["peak_rss_mb"] > 0 and r["data"]["filter_spec"] == str(tmp_path / "allowed.jsonl")
               for r in recs)
    assert all(r["index_bytes"] > 0 and "build_s" in r for r in recs)  # every method's index size on disk and build time
    exact = [r for r in recs if r["method"] in ("numpy-prefilter", "faiss-flat+sel")]
    assert {r["method"] for r in exact} == {"numpy-prefilter", "faiss-flat+sel"} and all(r["recall"] == 1.0 for r in exact)
    for method in ("faiss-hnsw+sel", "faiss-ivf+sel", "hnswlib+callback"):  # each approximate peer reaches the target
        assert max(r["recall"] for r in recs if r["method"] == method) >= 0.95, method
    default = [r for r in recs if r["method"] == "gsu-filtered" and r["params"]["default"]]
    assert len(default) == 1 and default[0]["recall"] >= 0.95
    if distance == "euclidean":  # the inner-product answer is not the euclidean one here
        want = np.stack([_brute(x, q[i:i + 1], 10, "l2", sets[i])[0][0] for i in range(8)])
        assert not np.array_equal(want, np.stack([_brute(x, q[i:i + 1], 10, "ip", sets[i])[0][0] for i in range(8)]))
    assert list(out.glob("filtered_mine*.png"))
    # a bad spec is one clean line and status 2
    assert main(["bench", "filtered", "--data", "gen:nope"]) == 2
    assert "unknown generator 'nope'" in capsys.readouterr().err
    assert main(["bench", "lsh", "--data", "gen:clustered"]) == 2
    assert "does not take --data" in capsys.readouterr().err


def test_cli_bench_flat_with_euclidean_data(tmp_path):
    """`gsu bench flat --data FILE`: every exact method searches the file's metric (l2 here)
    natively and finds the exact euclidean answer."""
    from gsu.bench import harness
    from gsu.cli import main

    rng = np.random.default_rng(12)
    x = (rng.standard_normal((2000, 12)) * rng.uniform(0.2, 4, (2000, 1))).astype(np.float32)
    q = rng.standard_normal((10, 12)).astype(np.float32)
    write_ann_hdf5(tmp_path / "e.hdf5", train=x, test=q, distance="euclidean")
    out = tmp_path / "out"
    assert main(["bench", "flat", "--quick", "--data", str(tmp_path / "e.hdf5"), "--out", str(out)]) == 0
    recs = harness.read_jsonl(out / "flat.jsonl")
    assert {r["method"] for r in recs} >= {"gsu-flat", "gsu-flat (cached filter)", "faiss-flat", "numpy-prefilter"}
    assert all(r["metric"] == "l2" and r["n"] == 2000 and r["nq"] == 10 and r["data"]["metric"] == "l2" and "commit" in r for r in recs)
    assert all(r["recall"] == 1.0 for r in recs if r["recall"] is not None)
    assert (out / "flat.png").stat().st_size > 1000


@pytest.mark.slow
def test_cli_bench_sparse_with_outside_data(tmp_path):
    from gsu.bench import harness
    from gsu.cli import main
    from gsu.datasets import sparse_collection

    c = sparse_collection(2000, 12, vocab_size=3000, avg_nnz=30, query_nnz=10, seed=3)
    write_sparse(tmp_path / "docs.npz", c.docs)
    write_sparse(tmp_path / "q.npz", c.queries)
    out = tmp_path / "out"
    assert main(["bench", "sparse", "--quick", "--data", f"{tmp_path / 'docs.npz'}?queries={tmp_path / 'q.npz'}", "--out", str(out)]) == 0
    recs = harness.read_jsonl(out / "sparse.jsonl")
    sweep = [r for r in recs if r.get("kind") == "sweep"]
    assert {r["data"] for r in sweep} == {"docs"} and {r["n_queries"] for r in sweep} == {12}
    assert all(r["data_set"]["truth_from"] == "exact twin" and r["command"] for r in sweep)
    assert [r["recall"] for r in sweep if r["method"] == "exact"] == [1.0]
    assert (out / "sparse_docs.png").exists()


def test_filtered_build_time_alternates_repeats_and_reports_the_medians():
    """`gsu bench filtered --build-time` builds faiss IndexHNSWFlat and FilteredIndex
    `repeats` times each, alternating, and reports the two medians' ratio with every
    build's times; the index handed back is the last gsu build, calibrated and searchable."""
    from gsu.bench.filtered import build_time
    from gsu.bench.filtered_data import from_registry

    ds = from_registry("gen:clustered?n=3000&d=16&clusters=16&nq=5&seed=0", nq=5, seed=0)
    rec, idx = build_time(ds, quick=True, seed=0, repeats=3)
    assert rec["repeats"] == 3
    for key in ("faiss_hnsw_s_each", "gsu_s_each", "gsu_calibration_s_each", "ratio_each"):
        assert len(rec[key]) == 3
    assert rec["faiss_hnsw_s"] == float(np.median(rec["faiss_hnsw_s_each"]))
    assert rec["gsu_s"] == float(np.median(rec["gsu_s_each"]))
    assert rec["ratio"] == rec["gsu_s"] / rec["faiss_hnsw_s"]
    assert rec["ratio_each"] == [g / f for g, f in zip(rec["gsu_s_each"], rec["faiss_hnsw_s_each"])]
    assert idx.ntotal == 3000 and idx.calibration is not None
    assert rec["gsu_calibration_s"] == float(np.median(rec["gsu_calibration_s_each"]))
    got = idx.search(ds.q[0], 10, route="exact").ids[0]
    np.testing.assert_array_equal(got, np.argsort(-(ds.x @ ds.q[0]), kind="stable")[:10])
