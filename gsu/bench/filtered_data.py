"""Dense data sets of the ``filtered`` and ``flat`` suites, each with the attributes filters need.

A data set is a :class:`DenseSet`: item vectors, held-out queries, a time attribute (time
windows are ranges of it), a cluster label per item (query-correlated filters draw from
the clusters nearest the query) and, for real text, a real category per item (category
filters). Kinds:

- synthetic catalogs (:func:`gsu.datasets.clustered_catalog`) of several dimensions (32 to
  768) and structures: power-law cluster sizes, strong anisotropy, near-duplicates, a
  high-dimensional isotropic mixture;
- ``movielens-minilm``: all-MiniLM-L6-v2 embeddings of the MovieLens movie texts
  "Title (year) — genres" (``../shared/datasets/movielens-latest-small``); time = release year;
- ``pydocs-minilm``: all-MiniLM-L6-v2 embeddings of the docstrings of the Python libraries
  installed next to gsu (numpy, scipy, torch, sympy, scikit-learn, ... — read from their
  source files with ``ast``, nothing imported, nothing downloaded); category = the
  module (e.g. ``scipy.sparse``), time = the order the files were read in (a window is a
  run of neighbouring modules).

Text embeddings are cached as ``.npy`` under the given cache folder (embedding runs
once, on the CPU, offline). Synthetic sets are regenerated from their seed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gsu.datasets.samples import movielens_dir

log = logging.getLogger(__name__)

__all__ = ["DenseSet", "DATASETS", "QUICK_DATASETS", "load_dataset", "pydocs_corpus"]

MOVIELENS = movielens_dir()
#: libraries whose docstrings make the ``pydocs`` text set (those installed are used)
PYDOCS_PACKAGES = ("numpy", "scipy", "torch", "sympy", "sklearn", "pandas", "matplotlib", "networkx", "dask", "distributed",
                   "numba", "transformers", "sentence_transformers", "huggingface_hub", "PIL", "fsspec", "jinja2", "faiss")


@dataclass
class DenseSet:
    """One data set: ``x`` (n, d) float32 items, ``q`` (nq, d) float32 held-out queries,
    ``time`` (n,) int64 attribute of time windows, ``labels`` (n,) int64 cluster of each
    item and ``centers`` (c, d) float32 their centres (query-correlated filters),
    ``categories`` (n,) int64 real category ids or None, ``category_names``."""

    name: str
    x: np.ndarray
    q: np.ndarray
    time: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    description: str
    categories: np.ndarray | None = None
    category_names: list[str] | None = None
    #: a user's own filters (``gsu bench filtered --data ... --filters ...``): the cells
    #: (filter kind, selectivity) and one sorted row array per query for each
    cells: list[tuple[str, float]] | None = None
    filter_sets: dict[tuple[str, float], list[np.ndarray]] | None = None
    #: what the data set is (spec, file, metric, sizes) for the records, when it came from a SPEC
    info: dict | None = None
    #: ``"ip"`` (inner product; cosine data arrives normalised) or ``"l2"``: every method searches in it
    metric: str = "ip"


def _synthetic(name: str, n: int, dim: int, nq: int, seed: int, description: str, **kw: Any) -> DenseSet:
    from gsu.datasets import catalog_queries, clustered_catalog

    cat = clustered_catalog(n, dim, seed=seed, **kw)
    q = catalog_queries(cat, nq, seed=seed + 1)
    return DenseSet(name, np.ascontiguousarray(cat.vectors, np.float32), np.ascontiguousarray(q, np.float32),
                    np.arange(n, dtype=np.int64), np.asarray(cat.labels, np.int64), np.asarray(cat.centers, np.float32), description)


def _kmeans_labels(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=15, seed=seed, spherical=True, verbose=False)
    km.train(np.ascontiguousarray(x))
    _, lab = km.index.search(x, 1)
    return lab[:, 0].astype(np.int64), np.ascontiguousarray(km.centroids, np.float32)


def _embed_cached(path: Path, texts: list[str]) -> np.ndarray | None:
    """MiniLM embeddings of ``texts``, cached at ``path`` (with a text-count check)."""
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            return emb
        log.warning("%s holds %d rows for %d texts: re-embedding", path, emb.shape[0], len(texts))
    from gsu.datasets.text import embed_texts

    try:
        t0 = time.perf_counter()
        emb = embed_texts(texts, batch_size=128, progress=None)
    except ImportError as e:
        print(f"[filtered] skipping text embeddings: {e}")
        return None
    log.info("embedded %d texts in %.1fs", len(texts), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def _movielens(cache: Path, nq: int, seed: int) -> DenseSet | None:
    folder = MOVIELENS.resolve()
    if not (folder / "movies.csv").exists():
        print(f"[filtered] skipping movielens-minilm: {folder}/movies.csv not found")
        return None
    from gsu.datasets import read_movielens_movies
    from gsu.datasets.text import movielens_item_texts

    movies = read_movielens_movies(folder / "movies.csv")
    texts = movielens_item_texts(movies)
    emb = _embed_cached(cache / f"movielens_minilm_{len(texts)}.npy", texts)
    if emb is None:
        return None
    rng = np.random.default_rng(seed)
    perm = rng.permutation(emb.shape[0])
    qi, xi = np.sort(perm[:nq]), np.sort(perm[nq:])
    x = np.ascontiguousarray(emb[xi], dtype=np.float32)
    lab, cen = _kmeans_labels(x, 32, seed)
    year = np.asarray(movies["year"])[xi].astype(np.int64)
    year = np.where(year < 0, int(np.median(year[year >= 0])), year)
    return DenseSet("movielens-minilm", x, np.ascontiguousarray(emb[qi], dtype=np.float32), year, lab, cen,
                    f"MiniLM embeddings of {x.shape[0]:,} MovieLens titles with genres (real, 384-d); time = release year")


def pydocs_corpus(packages: tuple[str, ...] = PYDOCS_PACKAGES, *, max_chars: int = 300, per_package: int = 12_000
                  ) -> tuple[list[str], list[str]]:
    """``(texts, modules)``: one text per documented function/class of the installed
    ``packages`` (``"qualified.name: first paragraph of its docstring"``, at most
    ``max_chars``; duplicates dropped; at most ``per_package`` per package, files in
    sorted order) and the module of each (``package.subpackage``, the category)."""
    texts: list[str] = []
    mods: list[str] = []
    seen: set[str] = set()
    for pkg in packages:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        count = 0
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root.parent).with_suffix("")
            parts = rel.parts
            if any(p in ("tests", "test", "testing", "_vendor", "vendored") for p in parts):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except (SyntaxError, ValueError, OSError):
                continue
            module = ".".join(parts[:2]) if len(parts) > 1 else parts[0]
            if module.endswith("__init__"):
                module = parts[0]
            stack: list[tuple[ast.AST, str]] = [(tree, ".".join(p for p in parts if p != "__init__"))]
            while stack:
                node, prefix = stack.pop()
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        name = f"{prefix}.{child.name}"
                        doc = ast.get_docstring(child, clean=True)
                        if doc:
                            para = " ".join(doc.strip().split("\n\n")[0].split())
                            text = f"{name}: {para}"[:max_chars]
                            if len(para) >= 20 and text not in seen:
                                seen.add(text)
                                texts.append(text)
                                mods.append(module)
                                count += 1
                        if isinstance(child, ast.ClassDef):
                            stack.append((child, name))
            if count >= per_package:
                break
    return texts, mods


def _pydocs(cache: Path, nq: int, seed: int) -> DenseSet | None:
    meta_path = cache / "pydocs_corpus.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        texts, mods = meta["texts"], meta["modules"]
    else:
        texts, mods = pydocs_corpus()
        cache.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps({"texts": texts, "modules": mods}))
    if len(texts) < 1000:
        print(f"[filtered] skipping pydocs-minilm: only {len(texts)} docstrings found")
        return None
    emb = _embed_cached(cache / f"pydocs_minilm_{len(texts)}.npy", texts)
    if emb is None:
        return None
    names = sorted(set(mods))
    cat = np.searchsorted(np.asarray(names), np.asarray(mods)).astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(emb.shape[0])
    qi, xi = np.sort(perm[:nq]), np.sort(perm[nq:])
    x = np.ascontiguousarray(emb[xi], dtype=np.float32)
    lab, cen = _kmeans_labels(x, 64, seed)
    return DenseSet("pydocs-minilm", x, np.ascontiguousarray(emb[qi], dtype=np.float32), np.arange(x.shape[0], dtype=np.int64),
                    lab, cen, f"MiniLM embeddings of {x.shape[0]:,} docstrings of installed Python libraries (real, 384-d); "
                    f"category = module ({len(names)}), time = reading order", categories=cat[xi], category_names=names)


#: name → builder(cache, quick, nq, seed)
DATASETS: dict[str, Callable[[Path, bool, int, int], DenseSet | None]] = {
    "clustered": lambda c, quick, nq, s: _synthetic(
        "clustered", 20_000 if quick else 200_000, 64, nq, s, "clustered catalog, 64 Zipf(0.8) clusters, 64-d"),
    "powerlaw-d32": lambda c, quick, nq, s: _synthetic(
        "powerlaw-d32", 20_000 if quick else 150_000, 32, nq, s + 100,
        "1,024 clusters with power-law sizes (Zipf 1.6), narrow, 32-d", n_clusters=1024, size_skew=1.6, spread=0.45),
    "aniso-d128": lambda c, quick, nq, s: _synthetic(
        "aniso-d128", 20_000 if quick else 100_000, 128, nq, s + 200,
        "strongly anisotropic clusters (log-scale sd 1.3), 128-d", n_clusters=48, anisotropy=1.3, spread=0.8),
    "neardup-d256": lambda c, quick, nq, s: _synthetic(
        "neardup-d256", 10_000 if quick else 60_000, 256, nq, s + 300,
        "30 % near-duplicates (noise 2 %), 256-d", n_clusters=128, duplicate_share=0.3, duplicate_noise=0.02),
    "gauss-d768": lambda c, quick, nq, s: _synthetic(
        "gauss-d768", 5_000 if quick else 30_000, 768, nq, s + 400,
        "wide, weakly clustered mixture (spread 1.2), 768-d", n_clusters=16, spread=1.2, size_skew=0.3),
    "movielens-minilm": lambda c, quick, nq, s: _movielens(c, max(nq, 500), s),
    "pydocs-minilm": lambda c, quick, nq, s: _pydocs(c, max(nq, 500), s),
}
QUICK_DATASETS = ("clustered", "powerlaw-d32")


def from_registry(spec: str, filters: str | None = None, *, nq: int, seed: int) -> DenseSet:
    """A data set named by a SPEC (:mod:`gsu.datasets.registry`: a file or a generator) as a
    :class:`DenseSet` in its own metric (:func:`gsu.bench.runner.dense_suite_data`: cosine
    normalised to inner products, l2 kept), queries cut to ``nq`` unless ``filters`` gives
    one filter per query."""
    import json

    from gsu.bench import runner
    from gsu.datasets.registry import load_dataset as load_spec

    d = runner.dense_suite_data(load_spec(spec), filters, seed=seed)
    q = d["q"] if filters else np.ascontiguousarray(d["q"][:nq])
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(d["name"]))[:80]
    return DenseSet(name, d["x"], q, d["time"], d["labels"], d["centers"],
                    json.dumps(d.get("describe", {}), default=str, sort_keys=True),
                    cells=d.get("cells"), filter_sets=d.get("filter_sets"),
                    info={**d.get("describe", {}), "nq": int(q.shape[0])}, metric=d["metric"])


def load_dataset(name: str, cache: Path, *, quick: bool, nq: int, seed: int) -> DenseSet | None:
    """Build (or load the cached embeddings of) data set ``name``; None when unavailable."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    ds = DATASETS[name](Path(cache), quick, nq, seed)
    if ds is not None:
        ds.q = np.ascontiguousarray(ds.q[:nq])
    return ds
