"""Hostile inputs and interrupted writes: ids, vectors and k at their limits, atomic
saves that a killed process cannot leave half-done (nor leak temporaries), file modes,
folders given as files, and the CLI's one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import _kinds as K
import gsu
from gsu._format import TMP_SUFFIX, read_container, remove_stale_temps, write_container
from gsu._validate import as_ids, as_matrix, get_limits, set_limits
from gsu.cli import main as cli_main
from gsu.errors import IndexFileError, LimitError
from gsu.index import Filter, FlatIndex, hamming_topk, load

ROOT = Path(__file__).resolve().parents[1]


# -- ids and vectors ----------------------------------------------------------


@pytest.mark.parametrize(
    "ids, match",
    [
        (np.array([1, 2**63], dtype=np.uint64), "above the int64 maximum"),
        (np.array([1.0, 1e20]), "not whole numbers in the int64"),
        (np.array([1.0, 2.5]), "not whole numbers"),
        (np.array([1.0, np.nan]), "not whole numbers"),
        ([1, 2**64], "outside the int64 range"),
        ([3, -1], "id -1 is reserved"),
        (np.array([True, False]), "booleans"),
        (np.array([1 + 2j, 3]), "complex"),
        (np.array(["1", "2"]), "dtype <U1"),
    ],
)
def test_ids_outside_int64_or_reserved_are_refused(ids, match):
    with pytest.raises(ValueError, match=match):
        as_ids(ids, name="ids")
    idx = FlatIndex(2)
    with pytest.raises(ValueError, match=match):
        idx.add(np.ones((2, 2), np.float32), ids)
    assert idx.ntotal == 0  # nothing half-added
    if match != "id -1 is reserved":  # a filter may name -1: no index holds it, so it allows nothing more
        with pytest.raises(ValueError, match=f"{match}|filter ids"):
            Filter.from_ids(ids)


def test_large_valid_ids_round_trip(tmp_path):
    ids = np.array([2**63 - 1, -(2**63), -2, 0], dtype=np.int64)
    idx = FlatIndex(2)
    idx.add(np.eye(4, 2, dtype=np.float32) + 0.1, ids)
    idx.save(tmp_path / "i.gsu")
    back = load(tmp_path / "i.gsu")
    np.testing.assert_array_equal(back.ids, ids)
    res = back.search(np.array([1.0, 0.0], np.float32), 4)
    assert set(res.ids[0].tolist()) == set(ids.tolist())
    assert as_ids(np.array([5, 2**62], dtype=np.uint64), name="x").tolist() == [5, 2**62]
    assert as_ids(np.array([3.0, -7.0]), name="x").tolist() == [3, -7]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "filtered", "simhash"])
def test_complex_and_boolean_vectors_are_refused(kind):
    idx = K.make(kind)
    x = K.data(kind, 400, seed=0)
    with pytest.raises(ValueError, match="complex"):
        idx.add(x.astype(np.complex64))
    with pytest.raises(ValueError, match="boolean"):
        idx.add(x > 0)
    assert idx.ntotal == 0
    idx.add(x)
    with pytest.raises(ValueError, match="complex"):
        idx.search(x[:2].astype(np.complex128), 3)
    with pytest.raises(ValueError, match="boolean"):
        as_matrix(np.ones((2, 3), bool), name="q")


def test_sparse_complex_vectors_are_refused():
    import scipy.sparse as sp

    idx = K.make("sparse_flat")
    m = K.data("sparse_flat", 10, seed=0).astype(np.complex64)
    with pytest.raises(TypeError, match="real numeric"):
        idx.add(sp.csr_matrix(m))


# -- limits --------------------------------------------------------------------


@pytest.mark.parametrize("kind", K.KINDS)
def test_a_huge_k_is_refused_before_allocating(kind):
    idx = K.make(kind)
    idx.add(K.data(kind, 300, seed=0))
    q = K.queries(kind, 1, seed=1)
    t0 = time.perf_counter()
    with pytest.raises(LimitError, match="over the limit"):
        idx.search(q, 10**12, **K.PARAMS[kind])
    assert time.perf_counter() - t0 < 5.0
    prev = set_limits(max_k=50)
    try:
        with pytest.raises(LimitError, match="k=51 is over the limit of 50"):
            idx.search(q, 51, **K.PARAMS[kind])
        assert idx.search(q, 50, **K.PARAMS[kind]).ids.shape == (1, 50)
        set_limits(max_k=prev.max_k, max_result_bytes=12 * 40 * 10)  # 40 queries x k=10
        qq = K.queries(kind, 41, seed=2)
        with pytest.raises(LimitError, match="41 queries x k=10 need"):
            idx.search(qq, 10, **K.PARAMS[kind])
        assert idx.search(K.queries(kind, 40, seed=2), 10, **K.PARAMS[kind]).ids.shape == (40, 10)
    finally:
        set_limits(max_k=prev.max_k, max_result_bytes=prev.max_result_bytes)
    assert get_limits().max_k == prev.max_k


def test_limits_defaults_and_module_functions():
    lim = gsu.get_limits()
    assert lim.max_k >= 10**6 and lim.max_result_bytes >= 1 << 20
    codes = np.zeros((3, 1), np.uint64)
    with pytest.raises(LimitError):
        hamming_topk(codes, codes, 10**15)
    with pytest.raises(ValueError):
        set_limits(max_k=0)


# -- atomic writes ---------------------------------------------------------------

_HANGING_SAVER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import gsu._format as fmt
    from gsu.index import FlatIndex

    def hang(fd):
        print("writing", flush=True)
        time.sleep(600)

    idx = FlatIndex(4)
    idx.add(np.ones((50, 4), np.float32))
    fmt.os.fsync = hang  # stop inside save, after the data is written, before the rename
    idx.save(sys.argv[1])
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


def test_killed_save_leaves_old_file_and_next_save_removes_its_temporary(tmp_path):
    path = tmp_path / "idx.gsu"
    old = FlatIndex(4)
    old.add(np.full((3, 4), 2.0, np.float32))
    old.save(path)
    before = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", _HANGING_SAVER, str(path)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        live = _temps(tmp_path)
        assert len(live) == 1
        # a save beside a live writer leaves its temporary alone
        old.save(path)
        assert _temps(tmp_path) == live
        assert remove_stale_temps(path) == []
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert path.read_bytes() == before  # the killed save changed nothing
    assert _temps(tmp_path) == live  # ... but leaked its temporary
    old.save(path)  # the next save finds and removes it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.gsu"]
    assert load(path).ntotal == 3


def test_written_files_respect_the_umask_and_keep_a_replaced_mode(tmp_path):
    idx = FlatIndex(2)
    idx.add(np.ones((2, 2), np.float32))
    prev = os.umask(0o027)
    try:
        idx.save(tmp_path / "a.gsu")
        assert stat.S_IMODE(os.stat(tmp_path / "a.gsu").st_mode) == 0o640
        os.umask(0o022)
        idx.save(tmp_path / "b.gsu")
        assert stat.S_IMODE(os.stat(tmp_path / "b.gsu").st_mode) == 0o644
        os.chmod(tmp_path / "b.gsu", 0o600)
        idx.save(tmp_path / "b.gsu")  # a rebuilt file keeps its mode
        assert stat.S_IMODE(os.stat(tmp_path / "b.gsu").st_mode) == 0o600
        os.chmod(tmp_path / "b.gsu", 0o664)
        np.save(tmp_path / "x.npy", np.ones((3, 2), np.float32))
        assert cli_main(["build", str(tmp_path / "x.npy"), str(tmp_path / "b.gsu")]) == 0
        assert stat.S_IMODE(os.stat(tmp_path / "b.gsu").st_mode) == 0o664
    finally:
        os.umask(prev)


def test_folders_given_as_files_get_a_clear_error(tmp_path):
    idx = FlatIndex(2)
    idx.add(np.ones((2, 2), np.float32))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        idx.save(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_container(tmp_path, "t", {}, {})
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_container(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        idx.save(tmp_path / "f" / "idx.gsu")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "missing.gsu")


def test_vocabulary_lives_inside_the_index_and_pickling_keeps_the_contract(tmp_path):
    idx = K.make("sparse_flat")
    idx.add(K.data("sparse_flat", 20, seed=1))
    idx.vocabulary = {f"w{j}": j for j in range(K.VOCAB)}
    idx.save(tmp_path / "s.gsu")
    back = load(tmp_path / "s.gsu", mmap=True)
    assert back.vocabulary == idx.vocabulary
    idx.vocabulary = {"a": 0, "b": 0}
    with pytest.raises(ValueError, match="same column"):
        idx.save(tmp_path / "t.gsu")
    assert not (tmp_path / "t.gsu").exists()
    clone = pickle.loads(pickle.dumps(back))
    q = K.queries("sparse_flat", 2, seed=3)
    np.testing.assert_array_equal(clone.search(q, 5).ids, back.search(q, 5).ids)
    assert clone.lock is not back.lock


# -- command line ----------------------------------------------------------------


def _cli(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli_main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, err


def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _docs(n: int, seed: int, words: list[str]) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": 100 + i, "vector": {w: round(float(rng.uniform(0.1, 2)), 3) for w in rng.choice(words, 4, replace=False)}}
            for i in range(n)]


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    words = [f"w{j}" for j in range(30)]
    good = _jsonl(tmp_path / "docs.jsonl", _docs(40, 0, words))
    out = tmp_path / "idx.gsu"
    rc, err = _cli(["build", good, out, "--kind", "seismic"], capsys)
    assert rc == 0
    cases = []
    neg = _docs(5, 1, words)
    neg[3]["vector"]["w7"] = -0.5
    cases.append((["build", _jsonl(tmp_path / "neg.jsonl", neg), tmp_path / "n.gsu", "--kind", "seismic"], ["neg.jsonl", "line 4", "'w7'", "negative"]))
    dup = _docs(6, 2, words)
    dup[5]["id"] = dup[1]["id"]
    cases.append((["build", _jsonl(tmp_path / "dup.jsonl", dup), tmp_path / "d.gsu", "--kind", "sparse_flat"], ["dup.jsonl", "line 6", "repeats line 2"]))
    big = _docs(3, 3, words)
    big[2]["id"] = 2**64
    cases.append((["build", _jsonl(tmp_path / "big.jsonl", big), tmp_path / "b.gsu", "--kind", "sparse_flat"], ["big.jsonl", "line 3", "int64"]))
    cases.append((["build", good, tmp_path, "--kind", "seismic"], [str(tmp_path), "is a folder"]))
    cases.append((["build", tmp_path, out, "--kind", "flat"], [str(tmp_path), "folder"]))
    cases.append((["build", tmp_path / "nope.npy", out], ["nope.npy", "no such file"]))
    cases.append((["build", good, out, "--kind", "nope"], ["unknown --kind"]))
    cases.append((["search", tmp_path, good], [str(tmp_path), "is a folder"]))
    cases.append((["info", good], ["docs.jsonl", "not a gsu file"]))
    np.save(tmp_path / "x.npy", np.ones((5, 3), np.float32))
    assert _cli(["build", tmp_path / "x.npy", tmp_path / "flat.gsu"], capsys)[0] == 0
    cases.append((["search", tmp_path / "flat.gsu", tmp_path / "x.npy", "-k", str(10**15)], ["over the limit"]))
    for args, words_in in cases:
        rc, err = _cli(args, capsys)
        assert rc == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith(f"gsu {args[0]}: error: "), err
        for w in words_in:
            assert w in err, (w, err)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries, no sidecars


def test_failed_rebuild_from_json_lines_keeps_the_old_index_and_its_vocabulary(tmp_path, capsys):
    """A rejected rebuild used to write the new vocabulary sidecar first: the old index
    then searched with the new token columns and returned wrong documents."""
    words = [f"w{j}" for j in range(30)]
    docs = _jsonl(tmp_path / "docs.jsonl", _docs(40, 0, words))
    out = tmp_path / "idx.gsu"
    assert _cli(["build", docs, out, "--kind", "sparse_flat"], capsys)[0] == 0
    q = _jsonl(tmp_path / "q.jsonl", [{"id": 0, "vector": d["vector"]} for d in _docs(40, 0, words)[:3]])
    assert _cli(["search", out, q, "-k", "1", "--out", tmp_path / "r1.npz"], capsys)[0] == 0
    before = np.load(tmp_path / "r1.npz")["ids"][:, 0].tolist()
    assert len(before) == 3 and all(100 <= b < 140 for b in before)
    other = [f"z{j}" for j in range(30)]  # a new vocabulary, and a duplicate id: rejected
    bad = _docs(10, 5, other)
    bad[7]["id"] = bad[0]["id"]
    rc, err = _cli(["build", _jsonl(tmp_path / "bad.jsonl", bad), out, "--kind", "sparse_flat"], capsys)
    assert rc == 2 and "line 8" in err
    assert _cli(["search", out, q, "-k", "1", "--out", tmp_path / "r2.npz"], capsys)[0] == 0
    assert np.load(tmp_path / "r2.npz")["ids"][:, 0].tolist() == before


def test_request_files_name_file_and_line(tmp_path):
    from gsu.errors import DataFormatError
    from gsu.retrieval.requests import read_requests

    p = tmp_path / "r.csv"
    p.write_text("user,target,time\n1,2,3\n4,5,6\n7,99999999999999999999999,8\n")
    with pytest.raises(DataFormatError, match=r"r.csv: line 4: column 'target': .* outside int64"):
        read_requests(p)
    p.write_text("user,target,time\n1,2,3\n\n4,5,-6\n")
    with pytest.raises(DataFormatError, match=r"r.csv: line 4: column 'time': -6 is negative"):
        read_requests(p)
    p.write_text("user,target\n1,-1\n")
    with pytest.raises(DataFormatError, match=r"line 2: column 'target': id -1 is reserved"):
        read_requests(p)
    p.write_text("user,target\n1,x\n")
    with pytest.raises(DataFormatError, match=r"line 2: column 'target': 'x' is not an integer"):
        read_requests(p)
    np.savez(tmp_path / "r.npz", user=np.array([1, 2]), target=np.array([3, 4]), time=np.array([5, -1]))
    with pytest.raises(DataFormatError, match=r"r.npz: time: 1 negative"):
        read_requests(tmp_path / "r.npz")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_requests(tmp_path)


def test_crafted_index_file_gives_one_line_on_the_command_line(tmp_path, capsys):
    import _fuzz as F

    path = F.make_original("seismic", tmp_path)
    header, payload = F.split(path.read_bytes())
    m = next(m for m in header["arrays"] if m["name"] == "fwd_indptr")
    buf = bytearray(payload)
    np.frombuffer(buf, np.int64, count=m["nbytes"] // 8, offset=m["offset"])  # the array is there
    buf[m["offset"] + 8 * 3 : m["offset"] + 8 * 4] = np.int64(10**12).tobytes()
    path.write_bytes(F.join(header, bytes(buf)))
    import scipy.sparse as sp

    sp.save_npz(tmp_path / "q.npz", K.queries("seismic", 2, seed=0))
    rc, err = _cli(["search", path, tmp_path / "q.npz"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert str(path) in err and "array 'fwd_indptr'" in err
    with pytest.raises(IndexFileError, match="fwd_indptr"):
        load(path)
