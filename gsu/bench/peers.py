"""Peer libraries as small adapters for the benchmark runner.

An adapter is built once over the same data as the gsu index and answers
``search(queries, k, *, allowed_rows=None) -> (rows (nq, k) int64, scores (nq, k) float32)``
in *row* numbers (0..n-1 of the benchmark's catalog), -1 padded. Dense adapters take
``metric="ip"`` or ``"l2"`` and search in that metric natively (faiss ``METRIC_L2``, hnswlib
``"l2"``); scores are higher-is-better either way (``-|q - x|²`` for l2). ``allowed_rows``
is a sorted int64 array shared by all queries (or None). Each adapter states its
``name`` and ``params`` so that records say exactly what ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "faiss_bitmap_selector",
    "faiss_selector_from_ids",
    "FaissFlatPeer",
    "NumpyPrefilterPeer",
    # filtered-ANN peers (suite "filtered")
    "FaissFlatSelectorPeer",
    "FaissHNSWSelectorPeer",
    "FaissIVFSelectorPeer",
    "HnswlibFilterPeer",
    "NumpyPrefilterPreparedPeer",
    # sparse peers (suite "sparse")
    "PyseismicPeer",
]


def faiss_bitmap_selector(allowed_rows: np.ndarray, n: int) -> Any:
    """A ``faiss.IDSelectorBitmap`` over internal ids 0..n-1 (bit i set = row i allowed),
    built the way a faiss user does from an id array: a boolean mask, ``np.packbits``.

    Returns ``(selector, bitmap)``: keep the bitmap alive as long as the selector.
    """
    import faiss

    mask = np.zeros(n, dtype=bool)
    mask[allowed_rows] = True
    bitmap = np.packbits(mask, bitorder="little")
    sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
    return sel, bitmap


def _faiss_metric(metric: str) -> int:
    import faiss

    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def _faiss_flat(vectors: np.ndarray, metric: str) -> Any:
    import faiss

    d = vectors.shape[1]
    index = faiss.IndexFlat(d, _faiss_metric(metric))
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def faiss_selector_from_ids(ids: np.ndarray, n: int) -> tuple[Any, Any]:
    """The cheaper faiss selector to build from a sorted id array for one request:
    ``IDSelectorBatch`` (a hash set, ~36 ns per id on this machine) for few ids, else an
    ``IDSelectorBitmap`` (mask + ``packbits``, ~6 µs + 0.04 µs per 1,000 rows). Returns
    ``(selector, keep_alive)``."""
    import faiss

    m = int(ids.shape[0])
    if m * 0.036 < 6.0 + n * 0.00004:
        return faiss.IDSelectorBatch(ids), ids
    return faiss_bitmap_selector(ids, n)


class FaissFlatPeer:
    """faiss ``IndexFlatIP`` / ``IndexFlatL2`` (exact), filtered with a selector built from the allowed rows."""

    name = "faiss-flat"

    def __init__(self, vectors: np.ndarray, metric: str = "ip"):
        self.n = vectors.shape[0]
        self.index = _faiss_flat(vectors, metric)
        self.params: dict[str, Any] = {}

    def search(self, queries: np.ndarray, k: int, *, allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if allowed_rows is None:
            scores, rows = self.index.search(queries, k)
        else:
            sel, _keep = faiss_selector_from_ids(allowed_rows, self.n)
            scores, rows = self.index.search(queries, k, params=faiss.SearchParameters(sel=sel))
        return _faiss_out(scores, rows, self.index.metric_type)


class NumpyPrefilterPeer:
    """Exact pre-filtered scan in numpy: gather allowed rows, matmul, argpartition (l2:
    ``2 q·x - |x|² - |q|²`` with the rows' squared norms computed once)."""

    name = "numpy-prefilter"

    def __init__(self, vectors: np.ndarray, metric: str = "ip"):
        _faiss_metric(metric)
        self.x = np.ascontiguousarray(vectors, dtype=np.float32)
        self.metric = metric
        self.sq = np.einsum("ij,ij->i", self.x, self.x) if metric == "l2" else None
        self.params: dict[str, Any] = {}

    def search(self, queries: np.ndarray, k: int, *, allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        from gsu.index.base import topk_rows

        x = self.x if allowed_rows is None else self.x[allowed_rows]
        s = queries @ x.T
        if self.sq is not None:
            s *= 2.0
            s -= self.sq if allowed_rows is None else self.sq[allowed_rows]
            s -= np.einsum("ij,ij->i", queries, queries)[:, None]
        rows, scores = topk_rows(s, k, allowed_rows)
        return rows, scores


# --- filtered-ANN peers (suite ``filtered``) ------------------------------------------
#
# Every adapter answers ``search_ids(queries, k, ids)``: it builds its native filter from a
# plain sorted int64 id array (the rows of the benchmark's catalog) *inside* the call, as a
# request does — faiss a selector (:func:`faiss_selector_from_ids`), hnswlib its callback
# set, numpy its gathered rows. ``prepare(ids)`` + ``search_prepared(queries, k, prepared)``
# split the same work for a "cached filter" column reported beside it.


class _PreparedPeer:
    name = ""
    params: dict[str, Any] = {}

    def prepare(self, allowed_rows: np.ndarray | None) -> Any:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} does not implement prepare")

    def search_prepared(self, queries: np.ndarray, k: int, prepared: Any) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} does not implement search_prepared")

    def search_ids(self, queries: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The filter built from ``ids`` and the search, in one call (what a request pays)."""
        return self.search_prepared(queries, k, self.prepare(ids))

    def search(self, queries: np.ndarray, k: int, *, allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.search_ids(queries, k, allowed_rows)


def _faiss_out(scores: np.ndarray, rows: np.ndarray, metric_type: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's answer as (rows int64, higher-is-better float32 scores): L2 distances negated."""
    import faiss

    rows = rows.astype(np.int64)
    if metric_type == faiss.METRIC_L2:
        scores = -scores
    return rows, np.where(rows >= 0, scores, -np.inf).astype(np.float32)


class FaissFlatSelectorPeer(_PreparedPeer):
    """faiss ``IndexFlatIP`` / ``IndexFlatL2`` (exact) with a selector from the ids."""

    name = "faiss-flat+sel"

    def __init__(self, vectors: np.ndarray, metric: str = "ip"):
        self.n = vectors.shape[0]
        self.index = _faiss_flat(vectors, metric)
        self.params = {}

    def prepare(self, allowed_rows: np.ndarray | None) -> Any:
        return None if allowed_rows is None else faiss_selector_from_ids(allowed_rows, self.n)

    def search_prepared(self, queries: np.ndarray, k: int, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = faiss.SearchParameters(sel=prepared[0]) if prepared is not None else None
        return _faiss_out(*self.index.search(queries, k, params=params), self.index.metric_type)


class NumpyPrefilterPreparedPeer(_PreparedPeer):
    """Exact pre-filtered scan in numpy (gather the allowed rows, matmul, argpartition);
    its "filter" is the id array itself."""

    name = "numpy-prefilter"

    def __init__(self, vectors: np.ndarray, metric: str = "ip"):
        self.inner = NumpyPrefilterPeer(vectors, metric)
        self.params = {}

    def prepare(self, allowed_rows: np.ndarray | None) -> Any:
        return allowed_rows

    def search_prepared(self, queries: np.ndarray, k: int, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.search(queries, k, allowed_rows=prepared)


class FaissHNSWSelectorPeer(_PreparedPeer):
    """faiss ``IndexHNSWFlat`` with ``SearchParametersHNSW(sel=<selector from the ids>, efSearch=ef)``.

    ``index`` is an already built ``faiss.IndexHNSWFlat`` over the catalog rows (the
    suite passes the very graph gsu's HNSW route uses, so both search the same graph).
    """

    name = "faiss-hnsw+sel"

    def __init__(self, index: Any, *, ef: int):
        self.index = index
        self.n = int(index.ntotal)
        self.ef = int(ef)
        self.params = {"efSearch": self.ef}

    def prepare(self, allowed_rows: np.ndarray | None) -> Any:
        return None if allowed_rows is None else faiss_selector_from_ids(allowed_rows, self.n)

    def search_prepared(self, queries: np.ndarray, k: int, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        p = faiss.SearchParametersHNSW()
        p.efSearch = max(self.ef, k)
        if prepared is not None:
            p.sel = prepared[0]
        return _faiss_out(*self.index.search(queries, k, params=p), self.index.metric_type)


class FaissIVFSelectorPeer(_PreparedPeer):
    """faiss ``IndexIVFFlat`` with ``SearchParametersIVF(sel=<selector from the ids>, nprobe=nprobe)``.

    Built by faiss itself (``IndexIVFFlat.train`` on the vectors, faiss's k-means
    defaults) with ``nlist`` lists, or from given ``centroids`` (nlist, d); vectors are
    added in row order (faiss ids = rows); ``metric`` ``"ip"`` or ``"l2"``.
    """

    name = "faiss-ivf+sel"

    def __init__(self, vectors: np.ndarray | None, centroids: np.ndarray | None = None, *, nprobe: int, nlist: int | None = None,
                 index: Any = None, metric: str = "ip"):
        import faiss

        if index is None:
            x = np.ascontiguousarray(vectors, dtype=np.float32)
            d = x.shape[1]
            fm = _faiss_metric(metric)
            quant = faiss.IndexFlat(d, fm)
            if centroids is not None:
                quant.add(np.ascontiguousarray(centroids, dtype=np.float32))
                index = faiss.IndexIVFFlat(quant, d, centroids.shape[0], fm)
                index.is_trained = True
            else:
                index = faiss.IndexIVFFlat(quant, d, int(nlist), fm)
                index.train(x)
            index.add(x)  # faiss's Python wrapper keeps the quantizer alive with the index
        self.index = index
        self.n = int(index.ntotal)
        self.nprobe = int(nprobe)
        self.params = {"nprobe": self.nprobe, "nlist": int(index.nlist)}

    def with_nprobe(self, nprobe: int) -> "FaissIVFSelectorPeer":
        """The same faiss index searched with another ``nprobe``."""
        return FaissIVFSelectorPeer(None, nprobe=nprobe, index=self.index)

    def prepare(self, allowed_rows: np.ndarray | None) -> Any:
        return None if allowed_rows is None else faiss_selector_from_ids(allowed_rows, self.n)

    def search_prepared(self, queries: np.ndarray, k: int, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        p = faiss.SearchParametersIVF()
        p.nprobe = self.nprobe
        if prepared is not None:
            p.sel = prepared[0]
        return _faiss_out(*self.index.search(queries, k, params=p), self.index.metric_type)


class HnswlibFilterPeer(_PreparedPeer):
    """hnswlib ``knn_query(filter=callable, num_threads=1)`` — the Python-callback filter.

    The filter is the C-level ``frozenset.__contains__`` of the allowed rows, the cheapest
    Python callable there is. Build with :meth:`build` or pass a loaded ``hnswlib.Index``.
    """

    name = "hnswlib+callback"

    def __init__(self, index: Any, *, ef: int):
        self.index = index
        self.ef = int(ef)
        self.params = {"ef": self.ef, "M": int(index.M), "ef_construction": int(index.ef_construction)}

    @staticmethod
    def build(vectors: np.ndarray, *, M: int = 16, ef_construction: int = 200, threads: int = -1, seed: int = 0,
              metric: str = "ip") -> Any:
        import hnswlib

        _faiss_metric(metric)
        n, d = vectors.shape
        idx = hnswlib.Index(space=metric, dim=d)
        idx.init_index(max_elements=n, M=M, ef_construction=ef_construction, random_seed=seed)
        idx.add_items(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(n), num_threads=threads)
        return idx

    def prepare(self, allowed_rows: np.ndarray | None) -> Any:
        return None if allowed_rows is None else frozenset(allowed_rows.tolist()).__contains__

    def search_prepared(self, queries: np.ndarray, k: int, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        self.index.set_ef(max(self.ef, k))
        nq = queries.shape[0]
        rows = np.full((nq, k), -1, np.int64)
        scores = np.full((nq, k), -np.inf, np.float32)
        for i in range(nq):  # hnswlib raises when fewer than k pass the filter: query one by one
            try:
                lab, dist = self.index.knn_query(queries[i : i + 1], k=k, num_threads=1, filter=prepared)
                got = k
            except RuntimeError:
                lab, dist, got = None, None, 0
                for kk in range(k - 1, 0, -1):  # the most results hnswlib can return
                    try:
                        lab, dist = self.index.knn_query(queries[i : i + 1], k=kk, num_threads=1, filter=prepared)
                        got = kk
                        break
                    except RuntimeError:
                        continue
            if got:
                rows[i, :got] = lab[0].astype(np.int64)
                # hnswlib's "ip" distance is 1 - <q, x>, its "l2" distance |q - x|²
                scores[i, :got] = -dist[0] if self.index.space == "l2" else 1.0 - dist[0]
        return rows, scores


# -- sparse peers (suite "sparse") ---------------------------------------------------
class PyseismicPeer:
    """pyseismic-lsr (``import seismic``): the Rust reference Seismic index.

    Built from a CSR matrix with ``SeismicDataset.add_documents_by_id`` (component
    ``c`` is the token ``"c"``) and ``SeismicIndex.build_from_dataset`` with the given
    Seismic parameters; searched one query at a time with ``search`` (``batch_search``
    returns results out of order). Queries are turned into token arrays by
    :meth:`prepare` outside any timed call. Rows with no component are skipped by the
    library (never returned, as in gsu). No filters: :meth:`search_one` with
    ``allowed`` post-filters a deeper result list (``k / selectivity``), the usual
    workaround.
    """

    name = "pyseismic"

    def __init__(
        self,
        docs: Any,
        *,
        n_postings: int,
        centroid_fraction: float,
        summary_energy: float,
        min_cluster_size: int = 2,
        max_fraction: float = 1.5,
        doc_cut: int = 15,
        quiet: bool = True,
        save_to: str | None = None,
    ):
        import os
        import tempfile

        import seismic

        self._seismic = seismic
        csr = docs.tocsr()
        self.n = int(csr.shape[0])
        self.params = {
            "n_postings": int(n_postings), "centroid_fraction": float(centroid_fraction),
            "summary_energy": float(summary_energy), "min_cluster_size": int(min_cluster_size),
            "max_fraction": float(max_fraction), "doc_cut": int(doc_cut),
            "rayon_threads": os.environ.get("RAYON_NUM_THREADS"),
        }
        with _quiet_stdout(quiet):
            ds = seismic.SeismicDataset(dim=int(csr.shape[1]))
            ds.add_documents_by_id(
                [str(i) for i in range(self.n)], np.asarray(csr.indices, np.int64),
                np.asarray(csr.data, np.float32), np.asarray(csr.indptr, np.int64),
            )
            self.index = seismic.SeismicIndex.build_from_dataset(
                ds, n_postings=int(n_postings), centroid_fraction=float(centroid_fraction),
                min_cluster_size=int(min_cluster_size), summary_energy=float(summary_energy),
                max_fraction=float(max_fraction), doc_cut=int(doc_cut),
            )
            del ds
        self._dtype = seismic.get_seismic_string()
        if save_to is not None:
            with _quiet_stdout(quiet):
                self.index.save(str(save_to))
            self.file_bytes = os.path.getsize(str(save_to) + ".index.seismic")
        else:
            with tempfile.TemporaryDirectory() as tmp, _quiet_stdout(quiet):
                base = os.path.join(tmp, "peer")
                self.index.save(base)
                self.file_bytes = os.path.getsize(base + ".index.seismic")

    @classmethod
    def open(cls, path: str, *, n: int, quiet: bool = True) -> "PyseismicPeer":
        """Load an index saved with ``save_to=path`` (the file is ``path + ".index.seismic"``) over ``n`` documents."""
        import os

        import seismic

        self = cls.__new__(cls)
        self._seismic = seismic
        self.n = int(n)
        with _quiet_stdout(quiet):
            self.index = seismic.SeismicIndex.load(str(path) + ".index.seismic")
        self._dtype = seismic.get_seismic_string()
        self.params = {"loaded_from": str(path)}
        self.file_bytes = os.path.getsize(str(path) + ".index.seismic")
        return self

    def search_raw(self, prepared: tuple[str, np.ndarray, np.ndarray], k: int, *, query_cut: int, heap_factor: float) -> list:
        """The library's own call and answer (a list of ``(query id, score, doc id)``): what a user of it pays per query."""
        qid, toks, vals = prepared
        return self.index.search(qid, toks, vals, k, query_cut, heap_factor)

    def to_arrays(self, res: list, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search_raw``'s answer as ``(rows (k,) int64, scores (k,) float32)``, -1 / -inf padded."""
        rows = np.full(k, -1, np.int64)
        scores = np.full(k, -np.inf, np.float32)
        for j, (_, score, doc) in enumerate(res[:k]):
            rows[j] = int(doc)
            scores[j] = score
        return rows, scores

    def prepare(self, queries: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Per-query ``(id, token array, float32 values)`` in the library's input format."""
        q = queries.tocsr()
        out = []
        for i in range(q.shape[0]):
            s, e = int(q.indptr[i]), int(q.indptr[i + 1])
            toks = np.array([str(c) for c in q.indices[s:e]], dtype=self._dtype)
            out.append((str(i), toks, np.ascontiguousarray(q.data[s:e], dtype=np.float32)))
        return out

    def search_one(
        self, prepared: tuple[str, np.ndarray, np.ndarray], k: int, *, query_cut: int, heap_factor: float,
        allowed: np.ndarray | None = None, selectivity: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query: ``(rows (k,) int64, scores (k,) float32)``, -1 / -inf padded.

        With ``allowed`` (a boolean mask over rows) the library is asked for
        ``ceil(k / selectivity)`` results which are then filtered.
        """
        qid, toks, vals = prepared
        kk = k if allowed is None else min(self.n, int(np.ceil(k / max(selectivity, 1e-9))))
        res = self.index.search(qid, toks, vals, kk, query_cut, heap_factor)
        rows = np.full(k, -1, np.int64)
        scores = np.full(k, -np.inf, np.float32)
        j = 0
        for _, score, doc in res:
            r = int(doc)
            if allowed is not None and not allowed[r]:
                continue
            rows[j] = r
            scores[j] = score
            j += 1
            if j == k:
                break
        return rows, scores


class _quiet_stdout:
    """Silence the process-level stdout (the Rust library prints progress) while active."""

    def __init__(self, on: bool):
        self.on = on
        self._saved: int | None = None

    def __enter__(self) -> "_quiet_stdout":
        if self.on:
            import os
            import sys

            sys.stdout.flush()
            self._saved = os.dup(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            import os

            os.dup2(self._saved, 1)
            os.close(self._saved)
            self._saved = None
