"""Crafted files with valid checksums, for every index kind and the retrieval files: a
clean one-line ``IndexFileError`` naming the file and the field, or a correct result;
never a crash. The in-suite run is seeded and bounded (``GSU_FUZZ_FILES`` raises it;
``python tests/_fuzz.py --files 2000`` is the report run)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import _fuzz as F
import _kinds as K
from gsu.errors import IndexFileError
from gsu.index import load

N_FILES = int(os.environ.get("GSU_FUZZ_FILES", "400"))


@pytest.mark.slow
def test_mutated_files_are_refused_cleanly_or_answer_correctly(tmp_path):
    counts = F.run(N_FILES, seed=20240, folder=tmp_path)
    refused = sum(v for (k, o), v in counts.items() if o == "refused")
    loaded = sum(v for (k, o), v in counts.items() if o == "loaded")
    assert refused + loaded == N_FILES
    for kind in F.ALL_KINDS:  # every kind was fuzzed, and both outcomes occur
        assert counts[(kind, "refused")] + counts[(kind, "loaded")] >= N_FILES // len(F.ALL_KINDS)
    assert refused > 0 and loaded > 0


def _rewrite(path, edit):
    header, payload = F.split(path.read_bytes())
    edit(header, payload)
    path.write_bytes(F.join(header, payload))


def _set_array(header, payload, name, values):
    m = next(m for m in header["arrays"] if m["name"] == name)
    buf = bytearray(payload)
    a = np.frombuffer(buf, dtype=np.dtype(m["dtype"]), count=m["nbytes"] // np.dtype(m["dtype"]).itemsize, offset=m["offset"])
    a.flags.writeable = True
    for i, v in values.items():
        a[i] = v
    return bytes(buf)


@pytest.mark.parametrize(
    "kind, array, index, value, field",
    [
        ("seismic", "fwd_indptr", 5, 10**9, "array 'fwd_indptr'"),  # an offset past the end: was a segfault
        ("seismic", "post_docs", 0, 10**6, "array 'post_docs'"),
        ("seismic", "sum_comp", 0, 65535, "array 'sum_comp'"),
        ("ivf", "list_rows", 0, 10**6, "array 'list_rows'"),
        ("ivf", "list_offsets", 1, -5, "array 'list_offsets'"),
        ("sparse_flat", "indices", 3, 10**6, "array 'indices'"),
        ("flat", "ids", 3, -1, "array 'ids'"),
        ("flat", "ids", 3, 14, "array 'ids'"),  # a repeated id
        ("simhash", "codes_word_major", 0, 2**63, "array 'codes_word_major'"),  # bits past n_bits
        ("hnsw", "neighbors", 9, 10**6, "array 'neighbors'"),  # a link past the node count: was a segfault in faiss
        ("hnsw", "offsets", 3, -7, "array 'neighbors'"),
        ("hnsw", "cum_nneighbor_per_level", 1, 10**6, "array 'neighbors'"),
    ],
)
def test_crafted_array_values_name_file_and_field(tmp_path, kind, array, index, value, field):
    _assert_refused(F.make_original(kind, tmp_path), array, {index: value}, field)


def _assert_refused(path, array, values, field) -> None:
    """Write ``values`` ({index: value}) into ``array`` of the file at ``path`` (checksums
    kept valid): loading it must raise one clean line naming the file and ``field``."""
    header, payload = F.split(path.read_bytes())
    path.write_bytes(F.join(header, _set_array(header, payload, array, values)))
    with pytest.raises(IndexFileError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and (field in msg or "faiss" in msg), msg


def test_ivf_list_rows_out_of_order_within_a_list_are_refused(tmp_path):
    """Rows ascend inside each IVF list (a time window's rows in a list are one span, found
    by binary search): a file whose list rows are still a permutation but out of order
    within a list is refused, naming the field."""
    path = F.make_original("ivf", tmp_path)
    ivf = load(path, mmap=False)  # read whole: the file is rewritten below
    off = np.asarray(ivf._list_off)
    l = int(np.argmax(np.diff(off) >= 2))
    a, b = int(off[l]), int(off[l] + 1)
    rows = np.asarray(ivf._pos_row)
    _assert_refused(path, "list_rows", {a: int(rows[b]), b: int(rows[a])}, "array 'list_rows'")


def test_big_endian_and_inconsistent_headers_are_refused(tmp_path):
    path = F.make_original("flat", tmp_path)
    header, payload = F.split(path.read_bytes())
    h = json.loads(json.dumps(header))
    vec = next(m for m in h["arrays"] if m["name"] == "vectors")
    vec["dtype"] = ">f4"  # the same bytes read big-endian: garbage scores before
    path.write_bytes(F.join(h, payload))
    with pytest.raises(IndexFileError, match=r"array 'vectors'.*big-endian"):
        load(path)
    h = json.loads(json.dumps(header))
    next(m for m in h["arrays"] if m["name"] == "ids")["shape"] = [10**12]
    path.write_bytes(F.join(h, payload))
    with pytest.raises(IndexFileError, match="array 'ids'"):
        load(path)
    h = json.loads(json.dumps(header))
    h["config"]["dim"] = 10**9  # must not allocate from the config
    path.write_bytes(F.join(h, payload))
    with pytest.raises(IndexFileError, match="config 'dim'"):
        load(path)


def test_hnsw_graph_links_are_checked_before_faiss_reads_them(tmp_path):
    """A neighbour link beyond the node count (checksum recomputed) was a segfault in faiss's search."""
    from gsu.index._checks import check_hnsw_blob

    path = F.make_original("hnsw", tmp_path)
    idx = load(path)
    n = idx.ntotal
    import faiss

    blob = faiss.serialize_index(idx.faiss_index)
    check_hnsw_blob(blob, dim=K.DIM, n=n)  # the real one passes
    nbr_start = None
    # find the neighbours vector: after the fourcc, the header (4+8+8+8+1+4) and four vectors
    pos = 4 + 33
    for width in (8, 4, 4, 8):
        (size,) = np.frombuffer(blob[pos : pos + 8].tobytes(), np.uint64)
        pos += 8 + int(size) * width
    (size,) = np.frombuffer(blob[pos : pos + 8].tobytes(), np.uint64)
    nbr_start = pos + 8
    bad = blob.copy()
    bad[nbr_start : nbr_start + 4] = np.frombuffer(np.int32(n + 5).tobytes(), np.uint8)
    with pytest.raises(ValueError, match="links outside"):
        check_hnsw_blob(bad, dim=K.DIM, n=n)
    assert size > 0
