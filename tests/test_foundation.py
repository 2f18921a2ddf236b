"""Container format, Filter semantics, harness pieces and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyroaring import BitMap

from gsu._format import read_container, write_container
from gsu.bench import harness
from gsu.cli import main as cli_main
from gsu.errors import IndexFileError
from gsu.index import Filter, IdMap, load


def test_container_roundtrip_all_dtypes(tmp_path):
    arrays = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "i64": np.array([-1, 5, 2**40], np.int64),
        "u64": np.array([2**63 + 5], np.uint64),
        "b": np.array([True, False]),
        "empty": np.zeros((0, 7), np.float32),
        "i8": np.array([1, -2, 3], np.int8),
    }
    p = tmp_path / "c.gsu"
    write_container(p, "test", {"a": 1, "nested": {"x": [1, 2]}}, arrays)
    for mm in (False, True):
        kind, cfg, got = read_container(p, mmap=mm)
        assert kind == "test" and cfg == {"a": 1, "nested": {"x": [1, 2]}}
        for k, v in arrays.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)
    with pytest.raises(IndexFileError, match="expected a 'other'"):
        read_container(p, kind="other")


def test_arrays_start_on_cache_lines_read_or_built(tmp_path):
    """A container read into memory puts every array on a 64-byte boundary, as in the file
    (the buffer starts on a page; ``np.empty``'s started 16 bytes past one), with the saved
    values, writable; ``aligned_empty`` gives any shape and dtype on its boundary; a built
    index's 8-bit codes start on a page, a built FlatIndex's and IVFIndex's rows on a line."""
    from gsu import _format
    from gsu.index import FilteredIndex, FlatIndex, IVFIndex

    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3001, 64)).astype(np.float32), "b": np.arange(7, dtype=np.int8),
              "c": rng.integers(0, 255, (5000, 64)).astype(np.uint8), "d": np.arange(20_000, dtype=np.int64)}
    p = tmp_path / "al.gsu"
    write_container(p, "test", {}, arrays)
    _, _, got = read_container(p)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].ctypes.data % 64 == 0 and got[k].flags.writeable, k
    got["a"][0, 0] = 5.0
    assert read_container(p)[2]["a"][0, 0] == arrays["a"][0, 0]  # nothing reaches the file
    for shape, dt in ((0, np.uint8), (1, np.float32), ((1000, 64), np.uint8), ((17, 3), np.int64)):
        e = _format.aligned_empty(shape, dt)
        assert e.shape == ((shape,) if isinstance(shape, int) else shape) and e.dtype == dt and e.flags.writeable
        assert e.size == 0 or e.ctypes.data % 4096 == 0
    fi = FilteredIndex(64, "ip", M=8, ef_construction=20, calibrate=False)
    fi.add(rng.standard_normal((500, 64)).astype(np.float32))
    assert fi.hnsw._codes()[0].ctypes.data % 4096 == 0
    # a built FlatIndex's rows and IVFIndex's list-ordered rows, whatever the input's offset
    x = np.empty(600 * 64 + 4, np.float32)[1:600 * 64 + 1].reshape(600, 64)  # 4 bytes off
    x[...] = rng.standard_normal((600, 64))
    flat, ivf = FlatIndex(64, "ip"), IVFIndex(64, "ip", nlist=8, seed=0)
    flat.add(x[:100])
    flat.add(x[100:])
    ivf.add(x)
    assert flat._x.ctypes.data % 64 == 0 and ivf._xl.ctypes.data % 64 == 0
    np.testing.assert_array_equal(flat._x, x)
    assert _format.aligned(flat._x) is flat._x  # already aligned: no copy


def test_container_unknown_version(tmp_path):
    p = tmp_path / "v.gsu"
    write_container(p, "t", {}, {"a": np.ones(3)})
    b = bytearray(p.read_bytes())
    b[8] = 99  # version field
    p.write_bytes(bytes(b))
    with pytest.raises(IndexFileError, match="version 99"):
        read_container(p)


def test_idmap_lookups():
    m = IdMap(np.array([40, 10, 30], np.int64))
    assert not m.identity
    np.testing.assert_array_equal(m.rows(np.array([10, 40, 99, 30])), [1, 0, -1, 2])
    np.testing.assert_array_equal(m.to_ids(np.array([2, -1, 0])), [30, -1, 40])
    ident = IdMap(np.arange(5))
    assert ident.identity
    np.testing.assert_array_equal(ident.rows(np.array([4, 5, -3])), [4, -1, -1])


def test_filter_constructors_and_allows():
    ids = np.arange(20)
    assert Filter.from_ids([3, 1, 3]).allows(ids).nonzero()[0].tolist() == [1, 3]
    assert Filter(BitMap([2, 7])).allows(ids).nonzero()[0].tolist() == [2, 7]
    assert Filter.range(5, 8).allows(ids).nonzero()[0].tolist() == [5, 6, 7]
    mask = np.zeros(10, bool)
    mask[[0, 9]] = True
    assert Filter(mask).allows(ids).nonzero()[0].tolist() == [0, 9]  # ids beyond the mask: not allowed
    assert (~Filter.range(1, 19)).allows(ids).nonzero()[0].tolist() == [0, 19]
    f = Filter.per_query([[1], [2, 3]])
    assert f.is_per_query and f.n_queries() == 2 and len(f) == 2
    cf = (f & Filter.range(0, 3)).compile(IdMap(ids), 2)
    assert cf.query_rows(0).tolist() == [1] and cf.query_rows(1).tolist() == [2]
    with pytest.raises(ValueError, match="3 queries"):
        f.compile(IdMap(ids), 3)
    with pytest.raises(ValueError):
        Filter.from_mask(np.array([1, 0]))
    with pytest.raises(ValueError):
        Filter.range(5, 1)
    with pytest.raises(ValueError):
        Filter.from_ids(np.array([1.5]))


def test_recall_tie_tolerance():
    true_ids = np.array([[1, 2, 3]])
    true_scores = np.array([[0.9, 0.8, 0.5]])
    found = np.array([[1, 2, 7]])  # 7 ties with the 3rd score
    assert harness.recall_at_k(found, true_ids) == pytest.approx(2 / 3)
    assert harness.recall_at_k(found, true_ids, found_scores=np.array([[0.9, 0.8, 0.5]]), true_scores=true_scores) == 1.0
    assert harness.recall_at_k(found, true_ids, found_scores=np.array([[0.9, 0.8, 0.4]]), true_scores=true_scores) == pytest.approx(2 / 3)


def test_check_results_trusts_nothing():
    x = np.eye(3, dtype=np.float32)
    rec = lambda qi, ids: x[ids, 0]  # noqa: E731
    ok_ids, ok_sc = np.array([[0, -1]]), np.array([[1.0, -np.inf]], np.float32)
    harness.check_results(ok_ids, ok_sc, recompute=rec)
    with pytest.raises(RuntimeError, match="duplicate"):
        harness.check_results(np.array([[0, 0]]), np.array([[1.0, 1.0]]), recompute=rec)
    with pytest.raises(RuntimeError, match="recomputed"):
        harness.check_results(np.array([[1, -1]]), np.array([[1.0, -np.inf]]), recompute=rec)
    with pytest.raises(RuntimeError, match="excludes"):
        harness.check_results(ok_ids, ok_sc, allowed=lambda q, ids: ids != 0)
    with pytest.raises(RuntimeError, match="padding"):
        harness.check_results(np.array([[-1, 0]]), np.array([[-np.inf, 1.0]]))


def test_pareto_front():
    pts = [(0.5, 100.0), (0.9, 50.0), (0.8, 40.0), (0.95, 10.0), (0.4, 90.0)]
    assert harness.pareto_front(pts) == [0, 1, 3]


def test_pin_threads_and_machine_info():
    got = harness.pin_threads(1)
    assert got["threads"] == 1 and got["numba"] == 1 and got["torch"] == 1
    info = harness.machine_info()
    assert info["pinned"]["threads"] == 1 and info["versions"]["gsu"]
    # a build inside the suite takes every core, and the pin holds again after it
    import faiss
    import numba

    n = harness.machine_threads()
    with harness.all_threads() as got_n:
        assert got_n == n and faiss.omp_get_max_threads() == n
        assert numba.get_num_threads() == min(n, numba.config.NUMBA_NUM_THREADS)
    assert faiss.omp_get_max_threads() == 1 and numba.get_num_threads() == 1 and harness.machine_info()["pinned"]["threads"] == 1


def test_cli_build_search_info(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", x[:3])
    np.save(tmp_path / "allow.npy", np.arange(100, 200))
    assert cli_main(["build", str(tmp_path / "x.npy"), str(tmp_path / "i.gsu"), "--metric", "cosine"]) == 0
    assert cli_main(["info", str(tmp_path / "i.gsu")]) == 0
    out = capsys.readouterr().out
    assert "kind:     flat" in out and '"metric": "cosine"' in out
    assert cli_main(["search", str(tmp_path / "i.gsu"), str(tmp_path / "q.npy"), "-k", "4", "--filter", str(tmp_path / "allow.npy"),
                     "--out", str(tmp_path / "r.npz")]) == 0
    r = np.load(tmp_path / "r.npz")
    assert r["ids"].shape == (3, 4) and (r["ids"] >= 100).all()
    assert "wrote 3 result rows" in capsys.readouterr().out
    assert cli_main(["search", str(tmp_path / "i.gsu"), str(tmp_path / "q.npy"), "-k", "2"]) == 0
    assert capsys.readouterr().out.startswith("q0: 0:1.0000")
    # bad input: a clear error and exit code 2
    np.save(tmp_path / "bad.npy", x[:, :5])
    assert cli_main(["search", str(tmp_path / "i.gsu"), str(tmp_path / "bad.npy")]) == 2
    assert "dimension 8" in capsys.readouterr().err


def test_cli_bench_flat_quick(tmp_path):
    assert cli_main(["bench", "flat", "--quick", "--out", str(tmp_path)]) == 0
    recs = [json.loads(line) for line in (tmp_path / "flat.jsonl").read_text().splitlines()]
    assert {r["method"] for r in recs} >= {"gsu-flat", "faiss-flat", "numpy-prefilter"}
    assert all(r["recall"] == 1.0 for r in recs if r["recall"] is not None)
    assert (tmp_path / "flat.png").stat().st_size > 1000


def test_cli_sparse_and_lsh_kinds(tmp_path, capsys):
    import scipy.sparse as sp

    from gsu.datasets.io import write_sparse

    rng = np.random.default_rng(1)
    docs = sp.random(300, 50, density=0.1, format="csr", random_state=2, dtype=np.float32)
    docs = docs + sp.eye(300, 50, format="csr", dtype=np.float32)  # no empty rows
    vocab = {f"t{j}": j for j in range(50)}
    write_sparse(tmp_path / "docs.jsonl", docs.tocsr(), ids=np.arange(300) + 1000, vocabulary=vocab)
    write_sparse(tmp_path / "q.jsonl", docs[:2].tocsr(), vocabulary=vocab)
    for kind in ("sparse_flat", "seismic"):
        out = tmp_path / f"{kind}.gsu"
        assert cli_main(["build", str(tmp_path / "docs.jsonl"), str(out), "--kind", kind]) == 0
        assert not (tmp_path / f"{kind}.gsu.vocab.json").exists()  # no sidecar: the vocabulary is inside the index
        assert set(load(out).vocabulary) == set(vocab)
        assert cli_main(["search", str(out), str(tmp_path / "q.jsonl"), "-k", "3", "--out", str(tmp_path / "r.npz")]) == 0
        r = np.load(tmp_path / "r.npz")
        assert r["ids"][:, 0].tolist() == [1000, 1001]  # each query is a document: it finds itself first
    x = rng.standard_normal((100, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli_main(["build", str(tmp_path / "x.npy"), str(tmp_path / "s.gsu"), "--kind", "simhash", "--param", "n_bits=64"]) == 0
    assert cli_main(["search", str(tmp_path / "s.gsu"), str(tmp_path / "x.npy"), "-k", "1", "--out", str(tmp_path / "s.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["ids"][:, 0], np.arange(100))
    capsys.readouterr()
    assert cli_main(["build", str(tmp_path / "x.npy"), str(tmp_path / "z.gsu"), "--kind", "nope"]) == 2
    assert "unknown --kind" in capsys.readouterr().err


def test_cli_parquet_key_and_unknown_search_settings(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gsu.cli import main

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    pq.write_table(pa.table({"id": np.arange(300), "emb": pa.array(list(x), type=pa.list_(pa.float32(), 8))}),
                   tmp_path / "x.parquet")
    np.save(tmp_path / "q.npy", x[:2])
    assert main(["build", str(tmp_path / "x.parquet"), str(tmp_path / "a.gsu"), "--kind", "flat", "--key", "emb"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "a.gsu"), str(tmp_path / "q.npy"), "-k", "1"]) == 0
    s = x[:2] @ x.T
    top = s.argmax(1)
    assert capsys.readouterr().out.splitlines()[:2] == [f"q{i}: {top[i]}:{s[i, top[i]]:.4f}" for i in range(2)]
    assert main(["search", str(tmp_path / "a.gsu"), str(tmp_path / "q.npy"), "-k", "1", "--param", "ef=64"]) != 0
    err = capsys.readouterr().err
    assert "FlatIndex has no search setting 'ef'" in err and err.count("\n") == 1


def test_heap_push_keeps_the_k_best_with_ties_to_the_smaller_row():
    """``topk.heap_push`` (every kernel's bounded heap) keeps the k best offers, ties broken
    towards the smaller row, for streams with many ties, fewer offers than k, and k of 1;
    ``heap_sorted`` writes them best first — the answer of a full sort."""
    import numba as nb

    from gsu.index.topk import heap_push, heap_sorted

    @nb.njit
    def offer_all(ss, rs, k, out_s, out_r):
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        size = 0
        for j in range(ss.shape[0]):
            size = heap_push(hs, hr, size, k, ss[j], rs[j])
        heap_sorted(hs, hr, size, out_s, out_r)
        return size

    rng = np.random.default_rng(5)
    for n, k, levels in ((500, 10, 7), (500, 1, 3), (6, 10, 2), (2000, 64, 50), (300, 300, 4)):
        ss = rng.integers(0, levels, n).astype(np.float32)  # few distinct scores: ties everywhere
        rs = rng.permutation(n).astype(np.int64)
        out_s = np.full(k, np.nan, np.float32)
        out_r = np.full(k, -1, np.int64)
        size = offer_all(ss, rs, k, out_s, out_r)
        order = np.lexsort((rs, -ss))[:k]  # by score descending, then row ascending
        assert size == min(n, k)
        np.testing.assert_array_equal(out_r[:size], rs[order])
        np.testing.assert_array_equal(out_s[:size], ss[order])
