"""The named dense data sets of the benchmark suites, in the one registry.

``gsu bench filtered`` runs on these sets by default (:func:`load_named_set`); each is also
a SPEC of :func:`gsu.datasets.registry.load_dataset` — ``gen:NAME?nq=100&seed=0&quick=0&cache=DIR``,
and ``clustered`` is the generator ``gen:clustered?n=200000&d=64&clusters=64`` — so any
suite or script loads exactly the same data. Every set carries what filters need:
a ``time`` attribute (time windows are ranges of it), a ``cluster`` label per item with
the cluster centres (query-correlated filters draw from the clusters nearest the query)
and, for real text, a real ``category`` per item.

- synthetic catalogs (:func:`gsu.datasets.clustered_catalog`) of several dimensions (32 to
  768) and structures: ``clustered`` (the 200k × 64 catalog), ``powerlaw-d32`` (power-law
  cluster sizes), ``aniso-d128`` (strong anisotropy), ``neardup-d256`` (near-duplicates),
  ``gauss-d768`` (a wide, weakly clustered mixture); regenerated from their seed;
- ``movielens-minilm``: all-MiniLM-L6-v2 embeddings of the MovieLens movie texts
  "Title (year) — genres" (the sample in ``../shared/datasets``); time = release year;
- ``pydocs-minilm``: all-MiniLM-L6-v2 embeddings of the docstrings of the Python libraries
  installed next to gsu (numpy, scipy, torch, sympy, scikit-learn, ... — read from their
  source files with ``ast``, nothing imported, nothing downloaded); category = the module
  (e.g. ``scipy.sparse``), time = the order the files were read in.

Text embeddings are cached as ``.npy`` under ``cache`` (embedding runs once, on the CPU,
offline); a text set whose source or model is missing raises :class:`Unavailable`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsu.datasets.registry import Dataset, Spec, SpecError, _pos_int, _take
from gsu.datasets.samples import movielens_dir

log = logging.getLogger(__name__)

__all__ = ["NAMED_SETS", "QUICK_SETS", "Unavailable", "load_named", "load_named_set", "pydocs_corpus"]

#: libraries whose docstrings make the ``pydocs`` text set (those installed are used)
PYDOCS_PACKAGES = ("numpy", "scipy", "torch", "sympy", "sklearn", "pandas", "matplotlib", "networkx", "dask", "distributed",
                   "numba", "transformers", "sentence_transformers", "huggingface_hub", "PIL", "fsspec", "jinja2", "faiss")


class Unavailable(RuntimeError):
    """A named data set whose source (the MovieLens sample, the MiniLM model) is not on this machine."""


@dataclass(frozen=True)
class _Synthetic:
    n: int
    quick_n: int
    dim: int
    seed_offset: int
    description: str
    params: tuple[tuple[str, Any], ...] = ()


_SYNTHETIC = {
    "clustered": _Synthetic(200_000, 20_000, 64, 0, "clustered catalog, 64 Zipf(0.8) clusters, 64-d"),
    "powerlaw-d32": _Synthetic(150_000, 20_000, 32, 100, "1,024 clusters with power-law sizes (Zipf 1.6), narrow, 32-d",
                               (("n_clusters", 1024), ("size_skew", 1.6), ("spread", 0.45))),
    "aniso-d128": _Synthetic(100_000, 20_000, 128, 200, "strongly anisotropic clusters (log-scale sd 1.3), 128-d",
                             (("n_clusters", 48), ("anisotropy", 1.3), ("spread", 0.8))),
    "neardup-d256": _Synthetic(60_000, 10_000, 256, 300, "30 % near-duplicates (noise 2 %), 256-d",
                               (("n_clusters", 128), ("duplicate_share", 0.3), ("duplicate_noise", 0.02))),
    "gauss-d768": _Synthetic(30_000, 5_000, 768, 400, "wide, weakly clustered mixture (spread 1.2), 768-d",
                             (("n_clusters", 16), ("spread", 1.2), ("size_skew", 0.3))),
}

#: the sets of a ``--quick`` run
QUICK_SETS = ("clustered", "powerlaw-d32")


def _dense(name: str, spec: str, x: np.ndarray, q: np.ndarray, time_attr: np.ndarray, labels: np.ndarray, centers: np.ndarray,
           description: str, params: dict[str, Any], *, categories: np.ndarray | None = None,
           category_names: list[str] | None = None) -> Dataset:
    attrs = {"time": np.asarray(time_attr, np.int64), "cluster": np.asarray(labels, np.int64)}
    info: dict[str, Any] = {"queries_from": "generator", "params": params, "description": description,
                            "_centers": np.ascontiguousarray(centers, np.float32)}
    if categories is not None:
        attrs["category"] = np.asarray(categories, np.int64)
        info["_category_names"] = category_names
    return Dataset(name=name, spec=spec, kind="dense", metric="ip", base=np.ascontiguousarray(x, np.float32),
                   queries=np.ascontiguousarray(q, np.float32), ids=np.arange(x.shape[0], dtype=np.int64), attributes=attrs,
                   info=info)


def _synthetic(name: str, spec: str, quick: bool, nq: int, seed: int) -> Dataset:
    from gsu.datasets.synthetic import catalog_queries, clustered_catalog

    s = _SYNTHETIC[name]
    n = s.quick_n if quick else s.n
    cat = clustered_catalog(n, s.dim, seed=seed + s.seed_offset, **dict(s.params))
    q = catalog_queries(cat, nq, seed=seed + s.seed_offset + 1)
    return _dense(name, spec, cat.vectors, q, np.arange(n, dtype=np.int64), cat.labels, cat.centers, s.description,
                  {"n": n, "dim": s.dim, "nq": nq, "seed": seed + s.seed_offset, **dict(s.params)})


def _kmeans_labels(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=15, seed=seed, spherical=True, verbose=False)
    km.train(np.ascontiguousarray(x))
    _, lab = km.index.search(x, 1)
    return lab[:, 0].astype(np.int64), np.ascontiguousarray(km.centroids, np.float32)


def _embed_cached(path: Path, texts: list[str]) -> np.ndarray:
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
        raise Unavailable(f"text embeddings: {e}") from None
    log.info("embedded %d texts in %.1fs", len(texts), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def _holdout(n: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, base rows), both sorted: ``nq`` rows drawn at random are held out."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:nq]), np.sort(perm[nq:])


def _movielens(spec: str, cache: Path, nq: int, seed: int) -> Dataset:
    folder = movielens_dir().resolve()
    if not (folder / "movies.csv").exists():
        raise Unavailable(f"movielens-minilm: {folder}/movies.csv not found")
    from gsu.datasets import read_movielens_movies
    from gsu.datasets.text import movielens_item_texts

    movies = read_movielens_movies(folder / "movies.csv")
    texts = movielens_item_texts(movies)
    emb = _embed_cached(cache / f"movielens_minilm_{len(texts)}.npy", texts)
    qi, xi = _holdout(emb.shape[0], nq, seed)
    x = np.ascontiguousarray(emb[xi], dtype=np.float32)
    lab, cen = _kmeans_labels(x, 32, seed)
    year = np.asarray(movies["year"])[xi].astype(np.int64)
    year = np.where(year < 0, int(np.median(year[year >= 0])), year)
    return _dense("movielens-minilm", spec, x, emb[qi], year, lab, cen,
                  f"MiniLM embeddings of {x.shape[0]:,} MovieLens titles with genres (real, 384-d); time = release year",
                  {"nq": nq, "seed": seed})


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


def _pydocs(spec: str, cache: Path, nq: int, seed: int) -> Dataset:
    meta_path = cache / "pydocs_corpus.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        texts, mods = meta["texts"], meta["modules"]
    else:
        texts, mods = pydocs_corpus()
        cache.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps({"texts": texts, "modules": mods}))
    if len(texts) < 1000:
        raise Unavailable(f"pydocs-minilm: only {len(texts)} docstrings found")
    emb = _embed_cached(cache / f"pydocs_minilm_{len(texts)}.npy", texts)
    names = sorted(set(mods))
    cat = np.searchsorted(np.asarray(names), np.asarray(mods)).astype(np.int64)
    qi, xi = _holdout(emb.shape[0], nq, seed)
    x = np.ascontiguousarray(emb[xi], dtype=np.float32)
    lab, cen = _kmeans_labels(x, 64, seed)
    return _dense("pydocs-minilm", spec, x, emb[qi], np.arange(x.shape[0], dtype=np.int64), lab, cen,
                  f"MiniLM embeddings of {x.shape[0]:,} docstrings of installed Python libraries (real, 384-d); "
                  f"category = module ({len(names)}), time = reading order", {"nq": nq, "seed": seed},
                  categories=cat[xi], category_names=names)


#: name -> one-line description; every name is a generator SPEC ``gen:NAME?...``
NAMED_SETS: dict[str, str] = {
    **{name: s.description for name, s in _SYNTHETIC.items()},
    "movielens-minilm": "MiniLM embeddings of the MovieLens movie texts (real, 384-d); time = release year",
    "pydocs-minilm": "MiniLM embeddings of installed libraries' docstrings (real, 384-d); category = module",
}


def _bool01(v: str) -> bool:
    if v not in ("0", "1", "true", "false"):
        raise ValueError("expected 0 or 1")
    return v in ("1", "true")


def load_named_set(name: str, *, nq: int = 100, seed: int = 0, quick: bool = False, cache: str | Path = "results/cache",
                   spec: str | None = None) -> Dataset:
    """The named set ``name`` with ``nq`` queries (text sets hold out at least 500, the
    first ``nq`` of them are the queries a suite uses), ``seed``, the small synthetic sizes
    when ``quick``, text embeddings cached under ``cache``."""
    if name not in NAMED_SETS:
        raise SpecError(f"unknown named data set {name!r}; expected one of {', '.join(NAMED_SETS)}")
    spec = spec or f"gen:{name}?nq={nq}&seed={seed}&quick={int(quick)}"
    if name in _SYNTHETIC:
        return _synthetic(name, spec, quick, nq, seed)
    build: Callable[[str, Path, int, int], Dataset] = _movielens if name == "movielens-minilm" else _pydocs
    return build(spec, Path(cache), max(nq, 500), seed)


def load_named(spec: Spec) -> Dataset:
    """``gen:NAME?nq=&seed=&quick=0|1&cache=DIR`` (defaults 100, 0, 0, ``results/cache``) for
    a named set whose name is not a generator's (``clustered`` is the generator
    ``gen:clustered?n=200000&d=64&clusters=64``, the same data)."""
    p = _take(spec, {"nq": _pos_int, "seed": int, "quick": _bool01, "cache": str},
              {"nq": 100, "seed": 0, "quick": False, "cache": "results/cache"})
    return load_named_set(spec.target, nq=p["nq"], seed=p["seed"], quick=p["quick"], cache=p["cache"], spec=spec.text)
