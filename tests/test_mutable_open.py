"""Instant open (per-array checksums checked on first use) and mutable indexes
(remove / upsert / compact through tombstones), against exact answers."""

from __future__ import annotations

import hashlib
import json
import struct
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import _fuzz as F
from gsu import _format
from gsu.cli import main as cli_main
from gsu.errors import IndexFileError
from gsu.datasets import sparse_collection
from gsu.index import Filter, FilteredIndex, FlatIndex, HNSWIndex, IVFIndex, SeismicIndex, SimHashIndex, SparseFlatIndex, load

D = 16


def _data(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 7 + 5
    q = rng.standard_normal((12, D)).astype(np.float32)
    return x, ids, q


def _flip(path, name: str, byte: int = 3) -> None:
    """Flip one bit inside array ``name`` of a saved file (its checksums no longer match)."""
    raw = bytearray(path.read_bytes())
    _, _, _, hlen = struct.unpack_from("<8sIIQ", raw, 0)
    header = json.loads(raw[24 : 24 + hlen])
    start = 24 + hlen
    start += (-start) % 64
    m = next(m for m in header["arrays"] if m["name"] == name)
    raw[start + m["offset"] + byte] ^= 0x10
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------
# instant open
# ---------------------------------------------------------------------------


def test_saved_file_has_per_array_checksums_and_header_crc(tmp_path):
    x, ids, _ = _data(300)
    idx = FlatIndex(D)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    with _format.ContainerReader(p) as r:
        assert r.per_array
        r.verify()  # the whole-file checksum is still written (older readers check it)
        got = {m["name"]: m["sha256"] for m in r.metas}
    assert got["vectors"] == hashlib.sha256(x.tobytes()).hexdigest()
    assert got["ids"] == hashlib.sha256(ids.tobytes()).hexdigest()


def test_mmap_open_defers_checksums_to_first_use(tmp_path):
    x, ids, q = _data()
    idx = FlatIndex(D)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    good = load(p, mmap=True)
    assert good._gsu_pending is not None and not good._gsu_pending.done
    res = good.search(q, 5)
    assert good._gsu_pending.done
    assert np.array_equal(res.ids, idx.search(q, 5).ids)
    good.verify()  # an explicit verify re-hashes and passes

    _flip(p, "vectors", byte=4 * D * 1000 + 2)
    bad = load(p, mmap=True)  # O(header): the damage is not seen yet
    with pytest.raises(IndexFileError, match=r"a\.gsu: array 'vectors': checksum mismatch"):
        bad.search(q, 5)
    with pytest.raises(IndexFileError, match="array 'vectors'"):  # and every later call
        bad.search(q, 5)
    bad2 = load(p, mmap=True)
    with pytest.raises(IndexFileError, match="array 'vectors': checksum mismatch"):
        bad2.verify()
    with pytest.raises(IndexFileError, match="array 'vectors': checksum mismatch"):
        load(p, mmap=False)  # read into memory: checked at once, one pass
    with pytest.raises(IndexFileError, match="checksum mismatch"):
        bad2.save(tmp_path / "resaved.gsu")  # never re-saved under fresh checksums
    assert not (tmp_path / "resaved.gsu").exists()


@pytest.mark.slow
def test_first_use_check_runs_once_under_concurrent_searches(tmp_path):
    x, ids, q = _data()
    idx = IVFIndex(D, nlist=16)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    j = load(p, mmap=True)
    want = idx.search(q, 5, nprobe=4).ids
    out, errs = [], []

    def go():
        try:
            out.append(j.search(q, 5, nprobe=4).ids)
        except Exception as e:  # pragma: no cover - reported below
            errs.append(e)

    ts = [threading.Thread(target=go) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs and len(out) == 6 and all(np.array_equal(o, want) for o in out)


def test_structural_checks_still_run_at_open(tmp_path):
    x, ids, _ = _data(200)
    idx = FlatIndex(D)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == "ids")
    buf = bytearray(payload)
    struct.pack_into("<q", buf, m["offset"] + 8, int(ids[0]))  # a repeated id, checksums recomputed
    p.write_bytes(F.join(header, bytes(buf)))
    with pytest.raises(IndexFileError, match="array 'ids': ids repeat"):
        load(p, mmap=True)


def test_nan_values_with_valid_checksums_are_refused_on_first_use(tmp_path):
    x, ids, q = _data(200)
    idx = FlatIndex(D)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == "vectors")
    buf = bytearray(payload)
    struct.pack_into("<f", buf, m["offset"] + 40, float("nan"))
    p.write_bytes(F.join(header, bytes(buf)))
    j = load(p, mmap=True)
    with pytest.raises(IndexFileError, match="array 'vectors': holds NaN"):
        j.search(q, 3)
    with pytest.raises(IndexFileError, match="holds NaN"):
        load(p, mmap=False)


@pytest.mark.parametrize("name, pos, value", [("fwd_comps", 9, 60000), ("post_docs", 3, 10**8), ("sum_comp", 2, 60000)])
def test_sparse_index_damage_with_valid_checksums_is_refused_on_first_use(tmp_path, name, pos, value):
    """A mapped open of a SeismicIndex skips the passes over every non-zero and posting
    (O(rows + vocabulary)); they run on first use, before any kernel reads an offset; a
    read open runs them at once."""
    c = sparse_collection(600, 4, vocab_size=V, avg_nnz=30, query_nnz=12, seed=2)
    idx = SeismicIndex(V, n_postings=200, seed=1, auto_calibrate=False)
    idx.add(c.docs)
    p = tmp_path / "s.gsu"
    idx.save(p)
    good = load(p, mmap=True)
    want = idx.search(c.queries, 5)
    np.testing.assert_array_equal(good.search(c.queries, 5).ids, want.ids)
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == name)
    buf = bytearray(payload)
    fmt = {"uint16": "<H", "int32": "<i", "int64": "<q"}[np.dtype(m["dtype"]).name]
    struct.pack_into(fmt, buf, m["offset"] + pos * struct.calcsize(fmt), value)
    p.write_bytes(F.join(header, bytes(buf)))
    bad = load(p, mmap=True)  # the damage is not seen yet
    with pytest.raises(IndexFileError, match=f"array '{name}': values span"):
        bad.search(c.queries, 5)
    with pytest.raises(IndexFileError, match=f"array '{name}': values span"):
        bad.search(c.queries, 5)  # and the index stays unusable
    with pytest.raises(IndexFileError, match=f"array '{name}': values span"):
        load(p, mmap=False)
    with pytest.raises(IndexFileError, match=f"array '{name}': values span"):
        load(p, mmap=True, verify=False)


def test_sparse_first_searches_from_threads_run_the_deferred_checks_first(tmp_path):
    """Six threads make the first searches of a mapped SeismicIndex at once: on a good file
    all get the answer of the built index; on a file whose postings point past the rows
    (valid checksums), every thread gets the error and no kernel reads the bad offset."""
    c = sparse_collection(600, 4, vocab_size=V, avg_nnz=30, query_nnz=12, seed=2)
    idx = SeismicIndex(V, n_postings=200, seed=1, auto_calibrate=False)
    idx.add(c.docs)
    p = tmp_path / "s.gsu"
    idx.save(p)
    want = idx.search(c.queries, 5).ids
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == "post_docs")
    buf = bytearray(payload)
    struct.pack_into("<i", buf, m["offset"] + 4 * 3, 10**8)
    bad_p = tmp_path / "bad.gsu"
    bad_p.write_bytes(F.join(header, bytes(buf)))
    for path, ok in ((p, True), (bad_p, False)):
        j = load(path, mmap=True)
        out, errs = [], []

        def go():
            try:
                out.append(j.search(c.queries, 5).ids)
            except IndexFileError as e:
                errs.append(e)

        ts = [threading.Thread(target=go) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if ok:
            assert not errs and len(out) == 6 and all(np.array_equal(o, want) for o in out)
        else:
            assert not out and len(errs) == 6 and all("post_docs" in str(e) for e in errs)


def test_files_without_per_array_checksums_load_with_the_full_check(tmp_path):
    x, ids, q = _data(300)
    idx = HNSWIndex(D, M=8)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    header, payload = F.split(p.read_bytes())
    old = F.join(header, payload, per_array=False)  # the layout written before per-array checksums
    p.write_bytes(old)
    with _format.ContainerReader(p) as r:
        assert not r.per_array
    j = load(p, mmap=True)
    assert j._gsu_pending is None  # checked at open
    assert np.array_equal(j.search(q, 5, ef=64).ids, idx.search(q, 5, ef=64).ids)
    raw = bytearray(old)
    raw[-200] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="checksum mismatch"):
        load(p, mmap=True)


def test_header_damage_is_caught_by_its_crc(tmp_path):
    x, ids, _ = _data(100)
    idx = FlatIndex(D)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    raw = p.read_bytes()
    raw = raw.replace(b'"metric": "ip"', b'"metric": "iq"')  # JSON stays valid
    p.write_bytes(raw)
    with pytest.raises(IndexFileError, match="header checksum mismatch"):
        load(p, mmap=True)


def test_bad_sha256_entry_is_refused(tmp_path):
    x, ids, _ = _data(100)
    idx = FlatIndex(D)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    header, payload = F.split(p.read_bytes())
    hb = json.dumps(header).replace(header["arrays"][0]["sha256"], "xyz").encode()
    head = F._PREFIX.pack(F.MAGIC, 1, 0, len(hb)) + hb
    head += b"\x00" * ((-len(head)) % 64)
    body = head + payload
    p.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(IndexFileError, match="sha256 'xyz' is not 64 lowercase hex digits"):
        load(p, mmap=True)


def test_cli_verify(tmp_path, capsys):
    x, ids, _ = _data(300)
    idx = IVFIndex(D, nlist=8)
    idx.add(x, ids)
    p = tmp_path / "a.gsu"
    idx.save(p)
    assert cli_main(["verify", str(p)]) == 0
    out = capsys.readouterr().out
    assert "ok (ivf" in out and "array sha256" in out and "values" in out
    _flip(p, "list_vectors", byte=100)
    assert cli_main(["verify", str(p)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# mutable indexes
# ---------------------------------------------------------------------------

KINDS = [
    ("flat", lambda: FlatIndex(D), {}),
    ("ivf", lambda: IVFIndex(D, nlist=16), {"nprobe": 16}),  # every list: exact
    ("hnsw", lambda: HNSWIndex(D, M=16, ef_construction=200), {"ef": 1024}),
    ("filtered", lambda: FilteredIndex(D, M=16, ef_construction=100, nlist=16, calibrate=False), {"route": "exact"}),
    ("filtered-ivf", lambda: FilteredIndex(D, M=16, ef_construction=100, nlist=16, calibrate=False),
     {"route": "ivf", "effort": 4.0}),
    ("filtered-auto", lambda: FilteredIndex(D, M=16, ef_construction=100, nlist=16, calibrate=False), {"effort": 4.0}),
]
APPROX = ("hnsw", "filtered-ivf", "filtered-auto")  # compared by recall against the exact twin


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(r1[r1 >= 0]) & set(r2[r2 >= 0])) / max(1, int((r2 >= 0).sum())) for r1, r2 in zip(a, b)]))


def _mutate(idx, x, ids, seed=1):
    """Remove 400 items, upsert 150 existing and 50 new ones; return the exact twin
    rebuilt from the surviving items and the removed ids."""
    rng = np.random.default_rng(seed)
    removed = rng.choice(ids, 400, replace=False)
    assert idx.remove(removed) == 400
    survivors = np.setdiff1d(ids, removed)
    up_old = rng.choice(survivors, 150, replace=False)
    up_new = np.arange(50, dtype=np.int64) * 7 + 6  # ids not in the index
    up = np.concatenate([up_old, up_new])
    upv = rng.standard_normal((200, D)).astype(np.float32)
    idx.upsert(upv, up)
    keep = ~np.isin(ids, removed) & ~np.isin(ids, up_old)
    exact = FlatIndex(D)
    exact.add(np.concatenate([x[keep], upv]), np.concatenate([ids[keep], up]))
    return exact, removed


def _filters(ids, nq, seed=2):
    rng = np.random.default_rng(seed)
    allowed = rng.choice(np.concatenate([ids, np.arange(50) * 7 + 6]), 700, replace=False)
    per = Filter.per_query([rng.choice(ids, 300, replace=False) for _ in range(nq)])
    return [None, Filter.from_ids(allowed), ~Filter.from_ids(allowed[:300]), per]


def _check_against(idx, exact, q, removed, params, *, exact_route: bool):
    for f in _filters(exact.ids, q.shape[0]):
        got = idx.search(q, 10, filter=f, **params)
        want = exact.search(q, 10, filter=f)
        assert not np.isin(got.ids, removed).any(), "a removed id was returned"
        if exact_route:
            assert np.array_equal(got.ids, want.ids)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        else:
            assert _recall(got.ids, want.ids) >= 0.98
        assert np.array_equal(got.counts, want.counts)


@pytest.mark.parametrize("name, make, params", KINDS, ids=[k[0] for k in KINDS])
def test_remove_upsert_save_load_compact_match_exact_rebuild(tmp_path, name, make, params):
    x, ids, q = _data()
    idx = make()
    idx.compact_threshold = 1.0  # keep the tombstones for this test
    idx.add(x, ids)
    exact, removed = _mutate(idx, x, ids)
    assert idx.n_dead == 550 and idx.n_live == len(idx) == exact.ntotal
    assert set(idx.live_ids.tolist()) == set(exact.ids.tolist())
    exact_route = name not in APPROX
    _check_against(idx, exact, q, removed, params, exact_route=exact_route)
    with pytest.raises(KeyError):
        idx.remove(removed[:3])
    assert idx.remove(removed[:3], missing_ok=True) == 0

    p = tmp_path / f"{name}.gsu"
    idx.save(p)
    for mmap in (False, True):
        j = load(p, mmap=mmap)
        assert j.n_dead == 550 and j.compact_threshold == 1.0
        for f in _filters(exact.ids, q.shape[0]):
            assert np.array_equal(j.search(q, 10, filter=f, **params).ids, idx.search(q, 10, filter=f, **params).ids)
    j = load(p, mmap=True)
    assert j.compact() == 550
    assert j.n_dead == 0 and j.ntotal == exact.ntotal
    _check_against(j, exact, q, removed, params, exact_route=exact_route)
    j.save(p)
    k = load(p)
    assert k.n_dead == 0 and k.ntotal == exact.ntotal
    _check_against(k, exact, q, removed, params, exact_route=exact_route)


@pytest.mark.parametrize("name, make, params", KINDS, ids=[k[0] for k in KINDS])
def test_compaction_runs_past_the_threshold(name, make, params):
    x, ids, q = _data(1000)
    idx = make()
    idx.compact_threshold = 0.3
    idx.add(x, ids)
    idx.remove(ids[:250])  # 25 %: kept as tombstones
    assert idx.n_dead == 250 and idx.ntotal == 1000
    idx.remove(ids[250:320])  # 32 %: compacted
    assert idx.n_dead == 0 and idx.ntotal == 680
    exact = FlatIndex(D)
    exact.add(x[320:], ids[320:])
    got = idx.search(q, 10, **params)
    assert not np.isin(got.ids, ids[:320]).any()
    if name not in APPROX:
        assert np.array_equal(got.ids, exact.search(q, 10).ids)
    else:
        assert _recall(got.ids, exact.search(q, 10).ids) >= 0.98


def test_remove_everything_and_readd():
    x, ids, q = _data(300)
    idx = FlatIndex(D)
    idx.compact_threshold = 1.0
    idx.add(x, ids)
    idx.remove(ids)
    res = idx.search(q, 5)
    assert (res.counts == 0).all() and (res.ids == -1).all()
    idx.add(x[:10], ids[:10])  # removed ids may be added again
    assert np.array_equal(np.sort(idx.search(q, 10).ids[0]), np.sort(ids[:10]))
    with pytest.raises(KeyError):
        idx.reconstruct(ids[20:21])


def test_tombstones_in_a_crafted_file_are_validated(tmp_path):
    x, ids, _ = _data(200)
    idx = FlatIndex(D)
    idx.compact_threshold = 1.0
    idx.add(x, ids)
    idx.upsert(x[:5] + 1, ids[:5])  # ids 0..4 now appear twice (dead and live rows)
    p = tmp_path / "a.gsu"
    idx.save(p)
    assert load(p).n_dead == 5
    header, payload = F.split(p.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == "tombstones")
    buf = bytearray(payload)
    buf[m["offset"] + 0] = 0  # revive a dead row: its id repeats a live one
    p.write_bytes(F.join(header, bytes(buf)))
    with pytest.raises(IndexFileError, match="array 'ids': ids repeat"):
        load(p, mmap=True)


# -- the sparse and Hamming kinds: the same contract, against a twin rebuilt from the survivors

V = 600


def _other_kind_data(name: str, n: int, seed: int):
    """(vectors, queries, vectors for upserts) of the kind's input type."""
    if name == "simhash":
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((n, D)).astype(np.float32), rng.standard_normal((12, D)).astype(np.float32),
                rng.standard_normal((130, D)).astype(np.float32))
    c = sparse_collection(n + 130, 12, vocab_size=V, avg_nnz=30, query_nnz=12, seed=seed)
    return c.docs[:n], c.queries, c.docs[n:]


OTHER_KINDS = [
    # (name, the index under test, its exact twin built from scratch, search settings)
    ("sparse_flat", lambda: SparseFlatIndex(V), lambda: SparseFlatIndex(V), {}),
    # no pruning and a search that opens every list and skips no block: exact
    ("seismic", lambda: SeismicIndex(V, n_postings=10**6, summary_energy=1.0, centroid_fraction=0.2, seed=1, auto_calibrate=False),
     lambda: SparseFlatIndex(V), {"query_cut": 10**4, "heap_factor": 1e-6}),
    ("simhash", lambda: SimHashIndex(D, 64, seed=3), lambda: SimHashIndex(D, 64, seed=3), {}),
]


def _take(v, rows):
    return v[rows]


def _stack(a, b):
    return sp.vstack([a, b]).tocsr() if sp.issparse(a) else np.concatenate([a, b])


@pytest.mark.parametrize("name, make, make_twin, params", OTHER_KINDS, ids=[k[0] for k in OTHER_KINDS])
def test_sparse_and_hamming_kinds_remove_upsert_save_load_compact(tmp_path, name, make, make_twin, params):
    n = 1500
    x, q, upv = _other_kind_data(name, n, seed=4)
    ids = np.arange(n, dtype=np.int64) * 7 + 5
    idx = make()
    idx.compact_threshold = 1.0
    idx.add(x, ids)
    rng = np.random.default_rng(1)
    removed = rng.choice(ids, 300, replace=False)
    assert idx.remove(removed) == 300
    up_old = rng.choice(np.setdiff1d(ids, removed), 100, replace=False)
    up = np.concatenate([up_old, np.arange(30, dtype=np.int64) * 7 + 6])
    idx.upsert(upv, up)
    keep = np.flatnonzero(~np.isin(ids, removed) & ~np.isin(ids, up_old))
    twin = make_twin()
    twin.add(_stack(_take(x, keep), upv), np.concatenate([ids[keep], up]))
    assert idx.n_dead == 400 and idx.n_live == len(idx) == twin.ntotal
    assert set(idx.live_ids.tolist()) == set(twin.ids.tolist())

    def check(j):
        for f in _filters(twin.ids, q.shape[0]) + [Filter.from_ids(removed)]:
            got, want = j.search(q, 10, filter=f, **params), twin.search(q, 10, filter=f)
            assert not np.isin(got.ids, removed).any(), "a removed id was returned"
            assert np.array_equal(got.ids, want.ids)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
            assert np.array_equal(got.counts, want.counts)
            if f is None or not f.is_per_query:
                for i in range(3):  # one query per call: the kernels' single-query paths
                    assert np.array_equal(j.search(q[i : i + 1], 10, filter=f, **params).ids[0], want.ids[i])

    check(idx)
    with pytest.raises(KeyError):
        idx.remove(removed[:2])
    p = tmp_path / f"{name}.gsu"
    idx.save(p)
    for mmap in (False, True):
        j = load(p, mmap=mmap)
        assert j.n_dead == 400 and j.compact_threshold == 1.0
        check(j)
    j = load(p, mmap=True)
    assert j.compact() == 400 and j.n_dead == 0 and j.ntotal == twin.ntotal
    check(j)
    j.save(p)
    check(load(p))
    # past the threshold, remove compacts by itself
    j.compact_threshold = 0.2
    j.remove(j.live_ids[: int(0.25 * j.ntotal)])
    assert j.n_dead == 0 and j.ntotal == twin.ntotal - int(0.25 * twin.ntotal)


@pytest.mark.slow
def test_bench_scale_quick_with_a_relative_out(tmp_path, monkeypatch):
    """`gsu bench scale --quick --out rel`: the open benchmark's child process (started in
    "/") finds the file, every part writes its records, the sharded answers equal the single
    index's."""
    import json

    monkeypatch.chdir(tmp_path)
    assert cli_main(["bench", "scale", "--quick", "--out", "rel"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "rel" / "scale.jsonl").read_text().splitlines()]
    assert {r["bench"] for r in recs} == {"open", "mutable", "sharded"}
    assert all(r["equal_to_single"] for r in recs if r["bench"] == "sharded")
    assert all("command" in r and "commit" in r for r in recs)
    assert (tmp_path / "rel" / "scale.png").stat().st_size > 1000
