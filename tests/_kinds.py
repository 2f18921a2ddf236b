"""Every index kind, small and seeded, with an oracle that checks a search result against
the index's own stored data: the helpers of the reliability, concurrency and fuzz tests.

``check_result`` asserts what must hold for any result of any kind: shapes and padding,
returned ids are ids of the index (and of the filter), no id twice in a row, scores
non-increasing and equal to the exact score of their id recomputed from the stored
vectors (unless stored values are so large that float32 scores overflow); for the exact kinds (and IVF opening every list) also that the scores are the
exact top-k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from gsu.index import (
    FilteredIndex,
    FlatIndex,
    HNSWIndex,
    IVFIndex,
    SeismicIndex,
    SimHashIndex,
    SparseFlatIndex,
)

DIM = 16
VOCAB = 300
KINDS = ("flat", "hnsw", "ivf", "filtered", "seismic", "sparse_flat", "simhash")
SPARSE = ("seismic", "sparse_flat")
#: kinds whose search (with :data:`PARAMS`) is exact
EXACT = ("flat", "ivf", "sparse_flat", "simhash")
PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"ef": 48},
    "ivf": {"nprobe": 64},  # every list: exact
    "filtered": {},
    "seismic": {"query_cut": 8, "heap_factor": 0.8},
    "sparse_flat": {},
    "simhash": {},
}


def make(kind: str) -> Any:
    """A fresh, empty index of ``kind`` with small settings."""
    if kind == "flat":
        return FlatIndex(DIM)
    if kind == "hnsw":
        return HNSWIndex(DIM, M=8, ef_construction=32)
    if kind == "ivf":
        return IVFIndex(DIM, nlist=8, niter=5)
    if kind == "filtered":
        return FilteredIndex(DIM, M=8, ef_construction=32, nlist=8)
    if kind == "seismic":
        return SeismicIndex(VOCAB, n_postings=40, centroid_fraction=0.2, rebuild_fraction=0.3, seed=1)
    if kind == "sparse_flat":
        return SparseFlatIndex(VOCAB)
    if kind == "simhash":
        return SimHashIndex(DIM, 40, seed=3)
    raise ValueError(kind)


def data(kind: str, n: int, seed: int) -> Any:
    """``n`` vectors for ``kind``: clustered dense float32, or sparse non-negative CSR."""
    rng = np.random.default_rng(seed)
    if kind in SPARSE:
        m = sp.random(n, VOCAB, density=0.04, format="csr", random_state=rng, dtype=np.float32)
        m.data = (m.data + 0.05).astype(np.float32)
        m = m + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, VOCAB, n))), shape=(n, VOCAB))
        return m.tocsr()
    centers = np.random.default_rng(12345).standard_normal((6, DIM))
    return (centers[rng.integers(0, 6, n)] + 0.5 * rng.standard_normal((n, DIM))).astype(np.float32)


def queries(kind: str, nq: int, seed: int) -> Any:
    if kind in SPARSE:
        rng = np.random.default_rng(seed)
        m = sp.random(nq, VOCAB, density=0.05, format="csr", random_state=rng, dtype=np.float32)
        m.data = (m.data + 0.1).astype(np.float32)
        m = m + sp.csr_matrix((np.ones(nq, np.float32), (np.arange(nq), rng.integers(0, VOCAB, nq))), shape=(nq, VOCAB))
        return m.tocsr()
    return data(kind, nq, seed)


def stored(idx: Any, kind: str) -> tuple[np.ndarray, Any]:
    """``(ids (n,), data)``: the index's ids and, in the same row order, what scores are
    computed from (dense (n, d) float, sparse CSR, or (n, w) uint64 codes)."""
    ids = np.asarray(idx.ids)
    if kind in ("flat", "hnsw"):
        return ids, np.asarray(idx.vectors, dtype=np.float64)
    if kind == "ivf":
        return ids, np.asarray(idx._xl, dtype=np.float64)[idx._row_pos]
    if kind == "filtered":
        return ids, np.asarray(idx.hnsw.vectors, dtype=np.float64)
    if kind == "seismic":
        a = idx._a
        n = a["fwd_indptr"].shape[0] - 1
        return ids, sp.csr_matrix((idx._values_f32().astype(np.float64), a["fwd_comps"].astype(np.int64), a["fwd_indptr"]), shape=(n, idx.dim))
    if kind == "sparse_flat":
        return ids, idx.matrix.astype(np.float64)
    if kind == "simhash":
        return ids, np.asarray(idx.codes)
    raise ValueError(kind)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8), axis=-1).sum(axis=-1)


def all_scores(idx: Any, kind: str, q: Any) -> np.ndarray:
    """(nq, n) float64 exact scores of every stored row for queries ``q`` (as the index scores them)."""
    _, X = stored(idx, kind)
    if kind == "simhash":
        qc = idx.encode(q)
        return -np.stack([_popcount(np.bitwise_xor(X, qc[i][None, :])) for i in range(qc.shape[0])]).astype(np.float64)
    if kind in SPARSE:
        return np.asarray((q.astype(np.float64) @ X.T).todense())
    qq = np.asarray(q, dtype=np.float64)
    if getattr(idx, "metric", "ip") == "cosine":
        qq = qq / np.maximum(np.linalg.norm(qq, axis=1, keepdims=True), 1e-30)
    return qq @ X.T


def check_result(idx: Any, kind: str, q: Any, res: Any, k: int, *, allowed: np.ndarray | None = None,
                 exact: bool | None = None, tol: float = 2e-4) -> None:
    """Assert that ``res`` is a correct answer of ``idx`` to ``q`` (see the module docstring).

    ``allowed``: the filter's ids (``None``: no filter). ``exact``: also compare with the
    exact top-k (default: for the kinds in :data:`EXACT`).
    """
    exact = kind in EXACT if exact is None else exact
    nq = q.shape[0]
    assert res.ids.shape == (nq, k) and res.scores.shape == (nq, k) and res.counts.shape == (nq,)
    ids, _ = stored(idx, kind)
    sc = all_scores(idx, kind, q)
    dead = (idx.hnsw if kind == "filtered" else idx)._dead  # removed rows (tombstones) are never results
    live = np.ones(ids.shape[0], bool) if dead is None else ~dead
    row_of = {int(v): r for r, v in enumerate(ids.tolist()) if live[r]}
    ok_rows = live if allowed is None else live & np.isin(ids, allowed)
    for i in range(nq):
        c = int(res.counts[i])
        got = res.ids[i]
        if not (np.abs(sc[i]) < 1e30).all():
            # stored values so large that float32 scores overflow (the add path accepts them
            # too): scores and their order mean nothing; the ids must still be real and allowed
            real = [row_of.get(int(v), -1) for v in got if v != -1]
            assert -1 not in real and len(set(real)) == len(real) and ok_rows[real].all(), f"row {i}: ids {got.tolist()}"
            continue
        assert 0 <= c <= k and (got[:c] != -1).all() and (got[c:] == -1).all(), f"row {i}: padding/counts {got.tolist()} {c}"
        assert np.isneginf(res.scores[i][c:]).all(), f"row {i}: padding scores"
        rows = [row_of.get(int(v), -1) for v in got[:c]]
        assert -1 not in rows, f"row {i}: ids {got[:c]} not all in the index"
        assert len(set(rows)) == c, f"row {i}: an id appears twice"
        assert ok_rows[rows].all(), f"row {i}: an id outside the filter"
        s = res.scores[i][:c].astype(np.float64)
        assert np.isfinite(s).all() and (np.diff(s) <= 1e-6 * max(1.0, np.abs(s).max(initial=0))).all(), f"row {i}: scores not sorted"
        want = sc[i][rows]
        assert np.allclose(s, want, rtol=tol, atol=tol), f"row {i}: scores {s} != exact {want}"
        if exact:
            cand = sc[i][ok_rows]
            if kind in SPARSE:
                cand = cand[cand > 0] if kind == "seismic" else cand[cand != 0]
            top = np.sort(cand)[::-1][:k]
            assert c == top.shape[0], f"row {i}: {c} results, exact top-k has {top.shape[0]}"
            assert np.allclose(s, top, rtol=tol, atol=tol), f"row {i}: scores {s} are not the exact top-k {top}"


def is_mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory map (mapped index arrays are plain ndarray
    views whose ``.base`` chain ends in the ``np.memmap``)."""
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = getattr(a, "base", None)
    return False
