"""The one place where a data set is named: a SPEC string -> :class:`Dataset`.

SPEC syntax (parsed by :func:`parse_spec` alone, so every command reads it the same way)::

    gen:NAME[?key=value&key=value...]     a built-in generator (see GENERATORS) or a named set of the suites (gsu.datasets.named)
    file:PATH[?key=value...]              a file (the suffix picks the reader)
    PATH[?key=value...]                   the same, without the scheme

Examples: ``gen:clustered?n=100000&d=64``, ``gen:splade?n=20000&nq=200``,
``file:glove-25-angular.hdf5``, ``items.fbin?queries=queries.fbin&metric=l2``,
``docs.npz?queries=q.npz``, ``docs.jsonl?queries=q.jsonl``.

File settings (every key is checked; an unknown key is an error naming the spec):

- ``queries=PATH`` — a second file with the queries (same kind as the data);
- ``key`` / ``query_key`` — HDF5 datasets (default ``train`` / ``test``);
- ``column`` / ``query_column`` — Parquet list columns;
- ``metric`` — ``ip``, ``cosine`` or ``l2`` (default: the HDF5 ``distance`` attribute —
  ``angular`` -> ``cosine``, ``euclidean`` -> ``l2``, ``ip``/``dot`` -> ``ip`` — else ``ip``);
- ``truth=PATH`` — neighbour ids: ``.ivecs`` / ``.ibin`` / ``.npy`` (nq, k) or a big-ann
  ground-truth file (``.gt``, any other suffix); an HDF5 file's ``neighbors`` are used
  without this;
- ``nq`` — queries to draw when the file has none (default 100): drawn at random
  (``seed``) from the data and *held out* of the base (ids keep their file row numbers);
- ``n`` — use only the first ``n`` rows of the base (a quick run on a big file);
- ``seed`` — the draw's seed (default 0).

Queries and ground truth come from the file when present; otherwise queries are drawn
and the truth is computed exactly by the exact twin (``FlatIndex`` / ``SparseFlatIndex``
with the data set's metric). Truth from a file is spot-checked against the exact twin on
the first queries (``Dataset.info['truth_check']``, tie-tolerant recall).

Filters: :func:`load_filters` reads ``--filters`` SPECs: a filter file (``.jsonl``,
``.npz``, ``.parquet[?column=...]``: one id list per query) or
``attr:SOURCE?sel=0.001,0.01,0.1[&column=...][&mode=range|category]`` where SOURCE is an
attribute of the data set (``time``, ``cluster`` for the generators) or a file with one
value per item (``.npy``, ``.parquet`` / ``.csv`` with ``column``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from gsu.errors import DataFormatError

__all__ = ["Spec", "SpecError", "Dataset", "FilterCell", "GENERATORS", "parse_spec", "load_dataset", "load_filters",
           "exact_scores"]

log = logging.getLogger(__name__)

METRICS = ("ip", "cosine", "l2")
_ANN_METRICS = {"angular": "cosine", "cosine": "cosine", "euclidean": "l2", "l2": "l2", "ip": "ip", "dot": "ip", "inner_product": "ip"}


class SpecError(ValueError):
    """A data-set or filter SPEC that cannot be parsed or names an unknown setting."""


@dataclass(frozen=True)
class Spec:
    """A parsed SPEC: ``scheme`` (``gen``, ``file`` or ``attr``), ``target`` (generator
    name, path or attribute source) and ``params`` (the ``?key=value`` settings, strings)."""

    scheme: str
    target: str
    params: dict[str, str]
    text: str


def parse_spec(text: str, *, schemes: tuple[str, ...] = ("gen", "file")) -> Spec:
    """Parse ``SCHEME:TARGET?k=v&k=v`` (a plain path means ``file:``). Raises :class:`SpecError`."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty data spec; expected gen:NAME?key=value..., file:PATH or a path")
    s = text.strip()
    scheme = "file"
    head, sep, tail = s.partition(":")
    if sep and head.isidentifier() and len(head) > 1:
        if head not in schemes:
            raise SpecError(f"{text!r}: unknown scheme {head!r}; expected one of {', '.join(schemes)} (or a plain path)")
        scheme, s = head, tail
    target, q, query = s.partition("?")
    if not target:
        raise SpecError(f"{text!r}: nothing before '?'; expected a generator name or a path")
    params: dict[str, str] = {}
    if q:
        if not query:
            raise SpecError(f"{text!r}: empty settings after '?'")
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if not eq or not key or not value:
                raise SpecError(f"{text!r}: setting {part!r} is not key=value")
            if key in params:
                raise SpecError(f"{text!r}: setting {key!r} given twice")
            params[key] = value
    return Spec(scheme, target, params, text)


def _take(spec: Spec, allowed: dict[str, Callable[[str], Any]], defaults: dict[str, Any]) -> dict[str, Any]:
    """Convert ``spec.params`` with ``allowed`` converters; unknown keys and bad values are errors."""
    unknown = sorted(set(spec.params) - set(allowed))
    if unknown:
        raise SpecError(f"{spec.text!r}: unknown setting(s) {unknown}; expected some of {sorted(allowed)}")
    out = dict(defaults)
    for key, raw in spec.params.items():
        try:
            out[key] = allowed[key](raw)
        except (TypeError, ValueError) as e:
            raise SpecError(f"{spec.text!r}: setting {key}={raw!r}: {e}") from None
    return out


def _pos_int(v: str) -> int:
    x = int(v)
    if x < 1:
        raise ValueError("expected a positive integer")
    return x


def _metric(v: str) -> str:
    if v not in METRICS:
        raise ValueError(f"expected one of {', '.join(METRICS)}")
    return v


def _floats(v: str) -> tuple[float, ...]:
    out = tuple(float(x) for x in v.split(","))
    if not out or any(not 0 < x <= 1 for x in out):
        raise ValueError("expected comma-separated shares in (0, 1]")
    return out


# ------------------------------------------------------------------------- data set


@dataclass
class Dataset:
    """A benchmark data set: base vectors, queries, metric, and (lazily) the exact truth.

    Attributes:
        name: short name for records and plots.
        spec: the SPEC it came from (goes into every record).
        kind: ``"dense"`` or ``"sparse"``.
        metric: ``"ip"``, ``"cosine"`` or ``"l2"`` (sparse: ``"ip"``). Scores are higher-is-
            better: inner product, cosine, or the negative squared euclidean distance.
        base: (n, d) float32 array, or (n, V) float32 CSR.
        queries: (nq, d) float32, or (nq, V) float32 CSR.
        ids: (n,) int64 item id of each base row (the file's row numbers, or the ids a
            sparse ``.npz`` / JSON-lines file holds); filters name these ids.
        neighbors: (nq, k) int64 base *rows* of the true neighbours from the file, or None.
        attributes: per-item attributes ``{name: (n,) array}`` (generators: ``time``, ``cluster``).
        info: provenance: sizes, where queries and truth came from, the truth check.
    """

    name: str
    spec: str
    kind: str
    metric: str
    base: Any
    queries: Any
    ids: np.ndarray
    neighbors: np.ndarray | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    _truth: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    @property
    def nq(self) -> int:
        return int(self.queries.shape[0])

    def describe(self) -> dict[str, Any]:
        """What a benchmark record says about the data: name, spec, sizes, metric, sources."""
        return {"dataset": self.name, "data_spec": self.spec, "kind": self.kind, "metric": self.metric,
                "n": self.n, "dim": self.dim, "nq": self.nq, **{k: v for k, v in self.info.items() if not k.startswith("_")}}

    def scores(self, qrows: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact scores of base ``rows`` for queries ``qrows`` (same shape, any ints): the
        recomputation a benchmark checks every returned score against."""
        return exact_scores(self.base, self.queries, qrows, rows, self.metric)

    def truth(self, k: int, *, filters: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` ``(rows (nq, k) int64 -1 padded, scores (nq, k) float32 -inf padded)``.

        Without ``filters`` and with file neighbours at least ``k`` wide, those are used
        (their scores recomputed); otherwise the exact twin computes them. ``filters``: one
        row array per query (rows, not ids).
        """
        if filters is None and k in self._truth:
            return self._truth[k]
        if filters is None and self.neighbors is not None and self.neighbors.shape[1] >= k:
            rows = self.neighbors[:, :k].copy()
            valid = rows >= 0
            sc = np.where(valid, self.scores(np.broadcast_to(np.arange(self.nq)[:, None], rows.shape), np.maximum(rows, 0)), -np.inf)
            # re-rank by our recomputed scores (files round distances); ties by row
            from gsu.index.base import lexsort_rows

            order = lexsort_rows(-sc, np.where(valid, rows, np.iinfo(np.int64).max))
            out = (np.take_along_axis(rows, order, 1), np.take_along_axis(sc, order, 1).astype(np.float32))
        else:
            out = self._exact(k, filters)
        if filters is None:
            self._truth[k] = out
        return out

    def exact_index(self) -> Any:
        """The exact twin over the base rows (ids = rows): ``FlatIndex`` or ``SparseFlatIndex``."""
        idx = self.__dict__.get("_exact_index")
        if idx is None:
            if self.kind == "sparse":
                from gsu.index import SparseFlatIndex

                idx = SparseFlatIndex(self.dim)
            else:
                from gsu.index import FlatIndex

                idx = FlatIndex(self.dim, self.metric)
            idx.add(self.base)
            self.__dict__["_exact_index"] = idx
        return idx

    def _exact(self, k: int, filters: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        from gsu.index import Filter

        f = None if filters is None else Filter.per_query(filters)
        res = self.exact_index().search(self.queries, k, filter=f)
        return res.ids.astype(np.int64), res.scores.astype(np.float32)

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Base rows of item ``ids`` (sorted), and how many ids are not in the base."""
        ids = np.asarray(ids, dtype=np.int64)
        order = self.__dict__.get("_id_order")
        if order is None:
            order = self.__dict__["_id_order"] = np.argsort(self.ids, kind="stable")
        sid = self.ids[order]
        pos = np.searchsorted(sid, ids)
        pos_c = np.minimum(pos, sid.shape[0] - 1)
        hit = sid[pos_c] == ids
        return np.sort(order[pos_c[hit]]), int((~hit).sum())


def exact_scores(base: Any, queries: Any, qrows: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """Scores (higher is better) of ``base[rows]`` against ``queries[qrows]`` (equal shapes)."""
    qrows = np.asarray(qrows)
    rows = np.asarray(rows)
    shape = rows.shape
    qr, rr = qrows.reshape(-1), rows.reshape(-1)
    if sp.issparse(base):
        out = np.asarray(base[rr].multiply(queries[qr]).sum(axis=1)).ravel()
        return out.reshape(shape).astype(np.float32)
    out = np.empty(rr.shape[0], np.float64)
    for s in range(0, rr.shape[0], 65536):
        x = base[rr[s: s + 65536]].astype(np.float64)
        q = queries[qr[s: s + 65536]].astype(np.float64)
        if metric == "l2":
            out[s: s + 65536] = -((x - q) ** 2).sum(axis=1)
        elif metric == "cosine":
            nx = np.linalg.norm(x, axis=1)
            nq = np.linalg.norm(q, axis=1)
            out[s: s + 65536] = (x * q).sum(axis=1) / np.where(nx * nq > 0, nx * nq, 1.0)
        else:
            out[s: s + 65536] = (x * q).sum(axis=1)
    return out.reshape(shape).astype(np.float32)


# ------------------------------------------------------------------------- generators


def _gen_clustered(spec: Spec) -> Dataset:
    from gsu.datasets.synthetic import catalog_queries, clustered_catalog

    p = _take(spec, {"n": _pos_int, "d": _pos_int, "nq": _pos_int, "seed": int, "clusters": _pos_int},
              {"n": 20_000, "d": 64, "nq": 100, "seed": 0, "clusters": 64})
    cat = clustered_catalog(p["n"], p["d"], n_clusters=p["clusters"], seed=p["seed"])
    q = catalog_queries(cat, p["nq"], seed=p["seed"] + 1)
    return Dataset(name="clustered", spec=spec.text, kind="dense", metric="ip",
                   base=np.ascontiguousarray(cat.vectors, np.float32), queries=np.ascontiguousarray(q, np.float32),
                   ids=np.arange(p["n"], dtype=np.int64),
                   attributes={"time": np.arange(p["n"], dtype=np.int64), "cluster": np.asarray(cat.labels, np.int64)},
                   info={"queries_from": "generator", "params": p, "_centers": np.asarray(cat.centers, np.float32)})


def _gen_gaussian(spec: Spec) -> Dataset:
    p = _take(spec, {"n": _pos_int, "d": _pos_int, "nq": _pos_int, "seed": int, "clusters": _pos_int, "metric": _metric},
              {"n": 20_000, "d": 32, "nq": 100, "seed": 0, "clusters": 32, "metric": "l2"})
    rng = np.random.default_rng(p["seed"])
    centers = rng.standard_normal((p["clusters"], p["d"])).astype(np.float32) * 3.0
    lab = rng.integers(0, p["clusters"], p["n"] + p["nq"])
    pts = (centers[lab] + rng.standard_normal((lab.shape[0], p["d"])).astype(np.float32)).astype(np.float32)
    return Dataset(name=f"gaussian-{p['metric']}", spec=spec.text, kind="dense", metric=p["metric"],
                   base=np.ascontiguousarray(pts[: p["n"]]), queries=np.ascontiguousarray(pts[p["n"]:]),
                   ids=np.arange(p["n"], dtype=np.int64),
                   attributes={"time": np.arange(p["n"], dtype=np.int64), "cluster": lab[: p["n"]].astype(np.int64)},
                   info={"queries_from": "generator", "params": p})


def _gen_splade(spec: Spec) -> Dataset:
    from gsu.datasets.synthetic import sparse_collection

    p = _take(spec, {"n": _pos_int, "nq": _pos_int, "vocab": _pos_int, "seed": int, "nnz": _pos_int},
              {"n": 10_000, "nq": 100, "vocab": 30_000, "seed": 0, "nnz": 150})
    c = sparse_collection(p["n"], p["nq"], vocab_size=p["vocab"], avg_nnz=p["nnz"], seed=p["seed"])
    return Dataset(name=f"splade-{p['n']}", spec=spec.text, kind="sparse", metric="ip", base=c.docs.tocsr(),
                   queries=c.queries.tocsr(), ids=np.arange(p["n"], dtype=np.int64),
                   attributes={"time": np.arange(p["n"], dtype=np.int64)}, info={"queries_from": "generator", "params": p})


GENERATORS: dict[str, tuple[Callable[[Spec], Dataset], str]] = {
    "clustered": (_gen_clustered, "unit vectors from an anisotropic Gaussian mixture (n, d, nq, clusters, seed); metric ip"),
    "gaussian": (_gen_gaussian, "Gaussian clusters, not normalised (n, d, nq, clusters, seed, metric=l2|ip|cosine)"),
    "splade": (_gen_splade, "SPLADE-like sparse documents and queries (n, nq, vocab, nnz, seed); sparse, ip"),
}


# ------------------------------------------------------------------------- files


_FILE_KEYS: dict[str, Callable[[str], Any]] = {
    "queries": str, "key": str, "query_key": str, "column": str, "query_column": str, "metric": _metric,
    "truth": str, "nq": _pos_int, "n": _pos_int, "seed": int,
}


def load_dataset(text: str) -> Dataset:
    """The data set a SPEC names (see the module docstring). Raises :class:`SpecError` for
    a bad spec, :class:`gsu.errors.DataFormatError` / ``FileNotFoundError`` for a bad file."""
    spec = parse_spec(text)
    if spec.scheme == "gen":
        from gsu.datasets.named import NAMED_SETS, load_named

        gen = GENERATORS.get(spec.target)
        if gen is not None:
            ds = gen[0](spec)
        elif spec.target in NAMED_SETS:  # the benchmark suites' named sets
            ds = load_named(spec)
        else:
            raise SpecError(f"{text!r}: unknown generator {spec.target!r}; expected one of {', '.join(GENERATORS)} "
                            f"or a named set: {', '.join(NAMED_SETS)}")
    else:
        ds = _load_file(spec)
    log.info("data set %s: %d x %d (%s, %s), %d queries", ds.name, ds.n, ds.dim, ds.kind, ds.metric, ds.nq)
    return ds


def _kind_of(p: Path) -> str:
    from gsu.datasets.io import DENSE_SUFFIXES, SPARSE_SUFFIXES

    suf = p.suffix.lower()
    if suf in DENSE_SUFFIXES:
        return "dense"
    if suf in SPARSE_SUFFIXES:
        return "sparse"
    raise DataFormatError(f"{p}: unknown data file suffix {p.suffix!r}; expected dense {', '.join(DENSE_SUFFIXES)} "
                          f"or sparse {', '.join(SPARSE_SUFFIXES)}")


def _load_file(spec: Spec) -> Dataset:
    from gsu.datasets.io import _existing, read_embeddings, read_sparse, read_sparse_jsonl

    p = _take(spec, _FILE_KEYS, {"nq": 100, "seed": 0})
    path = _existing(spec.target)
    kind = _kind_of(path)
    is_h5 = path.suffix.lower() in (".hdf5", ".h5")
    for k in ("key", "query_key"):
        if k in p and not is_h5:
            raise SpecError(f"{spec.text!r}: {k}= applies to HDF5 files only")
    name = path.name.split(".")[0]
    info: dict[str, Any] = {"file": str(path)}
    neighbors = None
    queries = None
    vocab: dict[str, int] | None = None
    if kind == "dense":
        base = read_embeddings(path, key=p.get("key") if is_h5 else None, column=p.get("column"))
        metric = p.get("metric")
        if is_h5:
            import h5py

            with h5py.File(path, "r") as f:
                have = set(f.keys())
                dist = f.attrs.get("distance", "")
            dist = dist.decode() if isinstance(dist, bytes) else str(dist)
            if dist and metric is None:
                if dist.lower() not in _ANN_METRICS:
                    raise DataFormatError(f"{path}: distance {dist!r} is not supported; expected one of {sorted(_ANN_METRICS)} "
                                          "(or give metric=)")
                metric = _ANN_METRICS[dist.lower()]
            info["file_distance"] = dist or None
            qkey = p.get("query_key", "test")
            if "queries" not in p and qkey in have:
                queries = read_embeddings(path, key=qkey, dim=base.shape[1])
                info["queries_from"] = f"{path.name}:{qkey}"
                if "neighbors" in have and "truth" not in p:
                    neighbors = read_embeddings(path, key="neighbors").astype(np.int64)
                    info["truth_from"] = f"{path.name}:neighbors"
        if "queries" in p:
            qp = _existing(p["queries"])
            if _kind_of(qp) != "dense":
                raise SpecError(f"{spec.text!r}: queries file {qp} is sparse but the data is dense")
            queries = read_embeddings(qp, column=p.get("query_column"), dim=base.shape[1])
            info["queries_from"] = str(qp)
        metric = metric or "ip"
        if base.dtype != np.float32:
            base = base.astype(np.float32)
        base = np.ascontiguousarray(base)
        ids = np.arange(base.shape[0], dtype=np.int64)
    else:
        if p.get("column") or p.get("query_column"):
            raise SpecError(f"{spec.text!r}: column= applies to dense Parquet files only")
        if path.suffix.lower() == ".jsonl":
            base, ids, vocab = read_sparse_jsonl(path)
            info["vocabulary"] = len(vocab)
        else:
            base, ids = read_sparse(path)
        metric = p.get("metric", "ip")
        if metric != "ip":
            raise SpecError(f"{spec.text!r}: sparse data supports metric=ip only")
        if "queries" in p:
            qp = _existing(p["queries"])
            if _kind_of(qp) != "sparse":
                raise SpecError(f"{spec.text!r}: queries file {qp} is dense but the data is sparse")
            if qp.suffix.lower() == ".jsonl":
                if vocab is None:
                    raise SpecError(f"{spec.text!r}: JSON-lines queries need JSON-lines documents (the token vocabulary)")
                queries, _, _ = read_sparse_jsonl(qp, vocabulary=dict(vocab), unknown="drop")
            else:
                queries, _ = read_sparse(qp)
            info["queries_from"] = str(qp)
            queries = _match_width(queries, base.shape[1], qp)
    if "n" in p and p["n"] < base.shape[0]:
        if queries is None or neighbors is not None:
            neighbors = None  # the file's truth is over the whole base
        base, ids = base[: p["n"]], ids[: p["n"]]
        info["truncated_to"] = p["n"]
    if "truth" in p:
        neighbors = _read_truth(Path(p["truth"]))
        info["truth_from"] = str(p["truth"])
    if queries is None:
        if "truth" in p:
            raise SpecError(f"{spec.text!r}: truth= needs the queries it was computed for (queries=...)")
        nq = p["nq"]
        if nq >= base.shape[0]:
            raise SpecError(f"{spec.text!r}: nq={nq} queries cannot be held out of {base.shape[0]} rows")
        rng = np.random.default_rng(p["seed"])
        pick = np.sort(rng.choice(base.shape[0], nq, replace=False))
        keep = np.ones(base.shape[0], bool)
        keep[pick] = False
        queries = base[pick]
        base, ids = base[keep], ids[keep]
        info["queries_from"] = f"drawn: {nq} rows held out (seed {p['seed']})"
    if neighbors is not None:
        if neighbors.shape[0] != queries.shape[0]:
            raise DataFormatError(f"{path}: the truth holds {neighbors.shape[0]} rows but there are {queries.shape[0]} queries")
        if neighbors.size and (neighbors.min() < -1 or neighbors.max() >= base.shape[0]):
            raise DataFormatError(f"{path}: the truth names rows outside [0, {base.shape[0]})")
    if kind == "dense":
        queries = np.ascontiguousarray(queries, dtype=np.float32)
    info.setdefault("truth_from", "exact twin")
    ds = Dataset(name=name, spec=spec.text, kind=kind, metric=metric, base=base, queries=queries, ids=ids,
                 neighbors=neighbors, info=info)
    if neighbors is not None:
        ds.info["truth_check"] = _check_truth(ds)
    return ds


def _match_width(q: sp.csr_matrix, width: int, qp: Path) -> sp.csr_matrix:
    if q.shape[1] == width:
        return q
    if q.shape[1] < width:
        q = q.copy()
        q.resize((q.shape[0], width))
        return q
    if q.nnz and q.indices.max() >= width:
        raise DataFormatError(f"{qp}: queries use column {int(q.indices.max())}, the documents have {width} columns")
    q = q.copy()
    q.resize((q.shape[0], width))
    return q


def _read_truth(p: Path) -> np.ndarray:
    from gsu.datasets.io import _existing, read_embeddings

    p = _existing(p)
    suf = p.suffix.lower()
    if suf in (".ivecs", ".ibin", ".npy"):
        a = read_embeddings(p)
        if a.dtype.kind not in "iu":
            raise DataFormatError(f"{p}: neighbour ids have dtype {a.dtype}; expected integers")
        return a.astype(np.int64)
    from gsu.datasets.bigann import read_bigann_truth

    return read_bigann_truth(p)[0]


def _check_truth(ds: Dataset, n_check: int = 20) -> float:
    """Tie-tolerant recall of the file's neighbours against the exact twin on the first queries."""
    from gsu.index.topk import recall_at_k

    k = min(10, ds.neighbors.shape[1])
    m = min(n_check, ds.nq)
    fr, fs = ds.truth(k)
    sub = Dataset(name=ds.name, spec=ds.spec, kind=ds.kind, metric=ds.metric, base=ds.base, queries=ds.queries[:m], ids=ds.ids)
    er, es = sub._exact(k, None)
    r = recall_at_k(fr[:m], er, found_scores=fs[:m], true_scores=es, eps=1e-3 * max(1.0, float(np.abs(es[np.isfinite(es)]).max(initial=1.0))))
    if r < 0.99:
        log.warning("%s: the file's neighbours agree with the exact %s twin on only %.3f of the top-%d (first %d queries)",
                    ds.spec, ds.metric, r, k, m)
    ds.__dict__["_exact_index"] = sub.__dict__.get("_exact_index")
    return float(r)


# ------------------------------------------------------------------------- filters


@dataclass
class FilterCell:
    """One benchmark cell of filters: ``kind`` (e.g. ``file:allowed`` or ``attr:year``),
    ``selectivity`` (requested share, or the measured mean share for a file) and ``rows``
    (one sorted int64 array of *base rows* per query)."""

    kind: str
    selectivity: float
    rows: list[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def load_filters(text: str, ds: Dataset) -> list[FilterCell]:
    """Filters for ``ds`` from a ``--filters`` SPEC (see the module docstring)."""
    from gsu.datasets.filters import FILTER_SUFFIXES, attribute_filters, read_attribute, read_filters

    spec = parse_spec(text, schemes=("attr", "file"))
    if spec.scheme == "attr":
        p = _take(spec, {"sel": _floats, "column": str, "mode": str, "seed": int},
                  {"sel": (0.001, 0.01, 0.1, 0.5), "mode": "auto", "seed": 0})
        if spec.target in ds.attributes:
            values = ds.attributes[spec.target]
            src = spec.target
        else:
            if not os.path.exists(spec.target):
                raise SpecError(f"{text!r}: {spec.target!r} is neither an attribute of {ds.name} "
                                f"({', '.join(ds.attributes) or 'none'}) nor a file")
            values = read_attribute(spec.target, column=p.get("column"))
            if values.shape[0] != ds.n:
                if values.shape[0] == ds.ids.max() + 1:  # one value per file row; some rows are held-out queries
                    values = values[ds.ids]
                else:
                    raise DataFormatError(f"{spec.target}: {values.shape[0]} attribute values; expected one per item ({ds.n})")
            src = Path(spec.target).stem + (f".{p['column']}" if p.get("column") else "")
        grid = attribute_filters(values, p["sel"], ds.nq, mode=p["mode"], seed=p["seed"])
        return [FilterCell(kind=f"attr:{src}", selectivity=sel, rows=rows,
                           info={"filter_spec": text, "selectivity_real": float(np.mean([r.shape[0] for r in rows]) / ds.n)})
                for sel, rows in grid.items()]
    p = _take(spec, {"column": str}, {})
    path = Path(spec.target)
    if path.suffix.lower() not in FILTER_SUFFIXES:
        raise SpecError(f"{text!r}: a filter file is {', '.join(FILTER_SUFFIXES)}, or use attr:SOURCE?sel=...")
    sets = read_filters(path, n_queries=ds.nq, column=p.get("column"))
    rows, missing = [], 0
    for s in sets:
        r, miss = ds.rows_of(s)
        rows.append(r)
        missing += miss
    if missing:
        log.warning("%s: %d filter ids are not in the base (held-out queries or unknown ids); ignored", path, missing)
    share = float(np.mean([r.shape[0] for r in rows]) / ds.n)
    return [FilterCell(kind=f"file:{path.stem}", selectivity=share, rows=rows,
                       info={"filter_spec": text, "selectivity_real": share, "ids_not_in_base": missing})]
