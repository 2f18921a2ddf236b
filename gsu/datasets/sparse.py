"""Sparse collections for the blocked inverted index: a rarity-weighted generator and real BM25 vectors.

- :func:`rarity_collection` — seeded SPLADE-like documents and queries whose term
  weights follow term rarity (``idf^rarity_power``), with every structural property a
  setting (vocabulary, document length and its spread, Zipf exponent, topics, query
  length and make-up), so that benchmarks can vary the data widely.
- :class:`BM25Encoder` / :func:`bm25_collection` — Okapi BM25 as an inner product of
  sparse vectors: documents carry ``idf · tf·(k1+1) / (tf + k1·(1-b+b·dl/avgdl))``,
  queries their term counts (the textbook ranking function, not a re-weighting).
- Real text that is available offline: :func:`movielens_texts` (titles, genres and
  user tags of ``movielens-latest-small``) and :func:`docstring_texts` (docstrings of
  the Python modules installed beside gsu, e.g. numpy, scipy, torch, sympy and the
  standard library). :func:`docstrings_bm25` and :func:`movielens_bm25` turn them into
  document/query collections.

Every generator is deterministic given its ``seed``.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from gsu._validate import check_positive_int
from gsu.datasets.synthetic import SparseCollection

log = logging.getLogger(__name__)

__all__ = [
    "BM25Encoder",
    "TextCollection",
    "bm25_collection",
    "docstring_texts",
    "docstrings_bm25",
    "movielens_bm25",
    "movielens_texts",
    "rarity_collection",
    "tokenize",
]

_CHUNK_DOCS = 1 << 16  # documents generated per block (bounds temporary memory)


def _check_float(value: Any, *, name: str, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi:
        raise ValueError(f"{name}: expected a value in [{lo}, {hi}], got {value!r}")
    return v


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


def _rows_to_csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR from (row, col, value) triplets already unique per (row, col); sorted indices."""
    m = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.sort_indices()
    m.eliminate_zeros()
    return m


# ============================================================================ rarity-weighted generator


def rarity_collection(
    n_docs: int,
    n_queries: int,
    *,
    vocab_size: int = 30_000,
    avg_nnz: int = 120,
    nnz_sigma: float = 0.5,
    query_nnz: int = 25,
    query_doc_share: float = 0.6,
    zipf_exponent: float = 1.1,
    n_topics: int = 300,
    topic_size: int | None = None,
    topic_share: float = 0.6,
    rarity_power: float = 1.5,
    weight_noise: float = 0.35,
    seed: int = 0,
) -> SparseCollection:
    """Seeded SPLADE-like collection whose weights follow term rarity.

    Model:

    - Term popularity ``p_t ∝ rank^-zipf_exponent`` (ranks in random id order).
    - ``n_topics`` topics, each ``topic_size`` terms (default ``2·avg_nnz``) drawn from
      the whole vocabulary at random (so topics reach into frequent terms too), with
      Zipf(0.7) weights inside the topic.
    - Document length ``avg_nnz · exp(nnz_sigma · z)`` (log-normal, at least 1, at
      most ``min(6·avg_nnz, vocab/2)``); each term drawn from the document's topic with
      probability ``topic_share``, from the background otherwise; repeats give ``tf``.
    - Weight of a document term: ``w_t · (1 + 0.5·log tf) · exp(weight_noise · z)``
      with ``w_t = 0.02 + 2.98 · (idf_t / max idf)^rarity_power``, where
      ``idf_t = log(1/q_t)`` and ``q_t`` is the expected share of documents holding
      ``t``. So the order of a document's weights is mostly the order of its terms'
      rarity, as in learned sparse encoders.
    - A query comes from a random source document: ``query_doc_share · query_nnz``
      of its terms sampled without replacement ∝ weight, plus expansion terms that
      the source does not hold — half from its topic, half from the background by
      popularity. Every query weight is ``w_t · exp(weight_noise · z)``
      (the same scale as documents), so rare expansion terms weigh as much as rare
      document terms and common ones little.

    Args:
        n_docs, n_queries: sizes (>= 1).
        vocab_size: columns; at least ``max(2·avg_nnz, 64)``.
        avg_nnz: median non-zeros per document.
        nnz_sigma: log-normal spread of the document length (0: all equal).
        query_nnz: target non-zeros per query (>= 1).
        query_doc_share: share of the query's terms taken from its source document.
        zipf_exponent: Zipf exponent of background popularity (0.6 to 1.5 typical).
        n_topics, topic_size, topic_share: topical structure (``topic_share`` 0 gives
            documents of independent background terms).
        rarity_power: how steeply weights grow with rarity (0: flat weights).
        weight_noise: log-normal noise of every weight.
        seed: seed of ``np.random.default_rng``.

    Returns:
        :class:`gsu.datasets.SparseCollection`: ``docs`` (n_docs, vocab) and ``queries``
        (n_queries, vocab) float32 CSR with sorted indices and positive weights (no
        empty rows), ``query_source`` (n_queries,) int64, ``doc_topic`` (n_docs,)
        int64, ``term_prob`` (vocab,) float64 expected document frequency share.
    """
    n_docs = check_positive_int(n_docs, name="n_docs")
    n_queries = check_positive_int(n_queries, name="n_queries")
    avg_nnz = check_positive_int(avg_nnz, name="avg_nnz")
    query_nnz = check_positive_int(query_nnz, name="query_nnz")
    V = check_positive_int(vocab_size, name="vocab_size", minimum=max(2 * avg_nnz, 64))
    n_topics = check_positive_int(n_topics, name="n_topics")
    tsize = min(V, 2 * avg_nnz) if topic_size is None else check_positive_int(topic_size, name="topic_size")
    tsize = min(tsize, V)
    nnz_sigma = _check_float(nnz_sigma, name="nnz_sigma", lo=0.0, hi=3.0)
    query_doc_share = _check_float(query_doc_share, name="query_doc_share", lo=0.0, hi=1.0)
    zipf_exponent = _check_float(zipf_exponent, name="zipf_exponent", lo=0.0, hi=4.0)
    topic_share = _check_float(topic_share, name="topic_share", lo=0.0, hi=1.0)
    rarity_power = _check_float(rarity_power, name="rarity_power", lo=0.0, hi=8.0)
    weight_noise = _check_float(weight_noise, name="weight_noise", lo=0.0, hi=3.0)
    rng = np.random.default_rng(seed)

    rank = rng.permutation(V)
    bg = (rank + 1.0) ** -zipf_exponent
    bg /= bg.sum()
    bg_cdf = np.cumsum(bg)
    topic_terms = np.stack([rng.choice(V, size=tsize, replace=False) for _ in range(n_topics)])
    tp = np.arange(1, tsize + 1, dtype=np.float64) ** -0.7
    tp /= tp.sum()
    topic_cdf = np.cumsum(tp)
    # expected per-draw term probability, then the share of documents holding each term
    mix = (1.0 - topic_share) * bg
    np.add.at(mix, topic_terms.ravel(), np.tile(topic_share * tp / n_topics, n_topics))
    doc_share = 1.0 - np.exp(-avg_nnz * 1.3 * mix)
    idf = np.log(1.0 / np.maximum(doc_share, 1e-12))
    idf = np.maximum(idf, 1e-3)
    idf_n = idf / idf.max()
    base_w = 0.02 + 2.98 * idf_n**rarity_power  # (0.02, 3]: float16-safe at any rarity_power

    hi_len = max(1, min(6 * avg_nnz, V // 2))
    lens = np.clip(np.rint(avg_nnz * np.exp(nnz_sigma * rng.standard_normal(n_docs))), 1, hi_len).astype(np.int64)
    doc_topic = rng.integers(0, n_topics, size=n_docs).astype(np.int64)
    indptr = np.zeros(n_docs + 1, np.int64)
    parts_c: list[np.ndarray] = []
    parts_v: list[np.ndarray] = []
    row_len = np.zeros(n_docs, np.int64)
    for s in range(0, n_docs, _CHUNK_DOCS):
        e = min(n_docs, s + _CHUNK_DOCS)
        nd = e - s
        draws = np.ceil(lens[s:e] * 1.5).astype(np.int64) + 2
        rows = np.repeat(np.arange(nd, dtype=np.int64), draws)
        m = rows.shape[0]
        from_topic = rng.random(m) < topic_share
        terms = np.empty(m, np.int64)
        terms[~from_topic] = _sample_cdf(bg_cdf, rng.random(int((~from_topic).sum())))
        tpos = _sample_cdf(topic_cdf, rng.random(int(from_topic.sum())))
        terms[from_topic] = topic_terms[doc_topic[s + rows[from_topic]], tpos]
        keys, tf = np.unique(rows * V + terms, return_counts=True)
        r = keys // V
        # keep at most lens[row] distinct terms per row, at random
        order = np.argsort(r + rng.random(keys.shape[0]), kind="stable")
        start = np.zeros(nd + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=nd), out=start[1:])
        pos_in_row = np.empty(keys.shape[0], np.int64)
        pos_in_row[order] = np.arange(keys.shape[0]) - start[r[order]]
        keep = pos_in_row < lens[s + r]
        r, t, tf = r[keep], keys[keep] % V, tf[keep]
        w = base_w[t] * (1.0 + 0.5 * np.log(tf)) * np.exp(weight_noise * rng.standard_normal(t.shape[0]))
        parts_c.append(t.astype(np.int32))
        parts_v.append(w.astype(np.float32))
        row_len[s:e] = np.bincount(r, minlength=nd)
    np.cumsum(row_len, out=indptr[1:])
    docs = sp.csr_matrix((np.concatenate(parts_v), np.concatenate(parts_c), indptr), shape=(n_docs, V))
    docs.has_sorted_indices = True
    del parts_c, parts_v

    # queries
    src = rng.integers(0, n_docs, size=n_queries).astype(np.int64)
    n_from_doc = int(round(query_doc_share * query_nnz))
    n_exp = query_nnz - n_from_doc
    q_rows, q_terms = [], []
    for qi in range(n_queries):
        d = src[qi]
        s, e = docs.indptr[d], docs.indptr[d + 1]
        dt = docs.indices[s:e].astype(np.int64)
        dw = docs.data[s:e].astype(np.float64)
        take = min(n_from_doc, dt.shape[0])
        if take:
            key = np.log(dw) + rng.gumbel(size=dw.shape[0])
            chosen = dt[np.argsort(-key)[:take]]
        else:
            chosen = np.zeros(0, np.int64)
        n_t = (n_exp + 1) // 2
        n_b = n_exp - n_t
        tt = topic_terms[doc_topic[d], _sample_cdf(topic_cdf, rng.random(n_t))] if n_t else np.zeros(0, np.int64)
        bt = _sample_cdf(bg_cdf, rng.random(n_b)) if n_b else np.zeros(0, np.int64)
        extra = np.setdiff1d(np.concatenate([tt, bt]), dt)
        terms = np.unique(np.concatenate([chosen, extra]))
        if terms.shape[0] == 0:
            terms = dt[:1]
        q_rows.append(np.full(terms.shape[0], qi, np.int64))
        q_terms.append(terms)
    qr = np.concatenate(q_rows)
    qt = np.concatenate(q_terms)
    qv = base_w[qt] * np.exp(weight_noise * rng.standard_normal(qt.shape[0]))
    queries = _rows_to_csr(qr, qt, qv, (n_queries, V))
    return SparseCollection(docs=docs, queries=queries, query_source=src, doc_topic=doc_topic, term_prob=doc_share)


# ============================================================================ BM25 of real text

_TOKEN = re.compile(r"[a-z][a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with from this we you can which has have its also been may must should would this these".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens of length >= 2 starting with a letter, English stop words removed."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


@dataclass(frozen=True)
class TextCollection:
    """Real text turned into sparse vectors.

    Attributes:
        docs: (n_docs, vocab) float32 CSR, BM25 document weights (sorted indices, no
            empty rows).
        queries: (n_queries, vocab) float32 CSR, query term counts (no empty rows).
        vocabulary: token -> column.
        doc_names: (n_docs,) names of the documents (e.g. ``numpy.linalg.svd``).
        query_names: (n_queries,) names of the texts the queries came from.
    """

    docs: sp.csr_matrix
    queries: sp.csr_matrix
    vocabulary: dict[str, int]
    doc_names: list[str]
    query_names: list[str]


class BM25Encoder:
    """Okapi BM25 as a sparse inner product.

    ``fit`` learns the vocabulary, document frequencies and average length;
    ``encode_docs`` gives ``idf_t · tf·(k1+1) / (tf + k1·(1 - b + b·dl/avgdl))`` per term,
    ``idf_t = log(1 + (N - df + 0.5)/(df + 0.5))`` (always positive);
    ``encode_queries`` gives each known query term its count. Then
    ``queries @ docs.T`` is the BM25 score.

    Args:
        k1: term-frequency saturation (Robertson's ``k1``).
        b: length normalisation (Robertson's ``b``).
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75):
        self.k1 = _check_float(k1, name="k1", lo=0.0, hi=100.0)
        self.b = _check_float(b, name="b", lo=0.0, hi=1.0)
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0)
        self.avgdl = 0.0

    def _tf(self, token_lists: Sequence[Sequence[str]], *, grow: bool) -> sp.csr_matrix:
        rows, cols = [], []
        vocab = self.vocabulary
        for i, toks in enumerate(token_lists):
            for t in toks:
                c = vocab.get(t)
                if c is None:
                    if not grow:
                        continue
                    c = vocab[t] = len(vocab)
                rows.append(i)
                cols.append(c)
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
            shape=(len(token_lists), len(vocab)),
        )
        m.sum_duplicates()
        m.sort_indices()
        return m

    def fit(self, token_lists: Sequence[Sequence[str]]) -> "BM25Encoder":
        """Learn vocabulary (first-appearance order), idf and average length from tokenised documents."""
        self.vocabulary = {}
        tf = self._tf(token_lists, grow=True)
        n = tf.shape[0]
        df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float64)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        self.avgdl = float(np.asarray(tf.sum(axis=1)).mean()) if n else 0.0
        return self

    def encode_docs(self, token_lists: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """(n, vocab) float32 CSR BM25 document vectors (unknown tokens dropped)."""
        tf = self._tf(token_lists, grow=False)
        dl = np.asarray(tf.sum(axis=1)).ravel()
        norm = self.k1 * (1.0 - self.b + self.b * dl / max(self.avgdl, 1e-9))
        rep = np.repeat(norm, np.diff(tf.indptr))
        out = tf.copy()
        out.data = (tf.data * (self.k1 + 1.0) / (tf.data + rep) * self.idf[tf.indices]).astype(np.float32)
        return out

    def encode_queries(self, token_lists: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """(n, vocab) float32 CSR query term counts (unknown tokens dropped)."""
        return self._tf(token_lists, grow=False)


def bm25_collection(
    doc_tokens: Sequence[Sequence[str]],
    query_tokens: Sequence[Sequence[str]],
    *,
    doc_names: Sequence[str] | None = None,
    query_names: Sequence[str] | None = None,
    k1: float = 1.2,
    b: float = 0.75,
) -> TextCollection:
    """BM25 vectors of tokenised documents and queries; empty documents/queries are dropped."""
    enc = BM25Encoder(k1=k1, b=b).fit(doc_tokens)
    docs = enc.encode_docs(doc_tokens)
    queries = enc.encode_queries(query_tokens)
    dn = list(doc_names) if doc_names is not None else [str(i) for i in range(len(doc_tokens))]
    qn = list(query_names) if query_names is not None else [str(i) for i in range(len(query_tokens))]
    dk = np.flatnonzero(np.diff(docs.indptr) > 0)
    qk = np.flatnonzero(np.diff(queries.indptr) > 0)
    return TextCollection(
        docs=docs[dk].tocsr(), queries=queries[qk].tocsr(), vocabulary=enc.vocabulary,
        doc_names=[dn[i] for i in dk], query_names=[qn[i] for i in qk],
    )


def movielens_texts(folder: str | os.PathLike) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """MovieLens ``movies.csv`` (+ ``tags.csv``): per movie its id, title tokens, and all tokens (title, genres, tags).

    Returns ``(names, title_tokens, all_tokens)`` in ascending movie id; genres become
    tokens ``genre_<name>``.
    """
    import csv

    folder = Path(folder)
    titles: dict[int, list[str]] = {}
    full: dict[int, list[str]] = {}
    with open(folder / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            mid = int(row["movieId"])
            t = tokenize(re.sub(r"\(\d{4}\)\s*$", "", row["title"]))
            g = ["genre_" + x.lower().replace(" ", "_").replace("-", "_") for x in row["genres"].split("|") if x != "(no genres listed)"]
            titles[mid] = t
            full[mid] = t + g
    tags = folder / "tags.csv"
    if tags.exists():
        with open(tags, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                mid = int(row["movieId"])
                if mid in full:
                    full[mid] += tokenize(row["tag"])
    mids = sorted(full)
    return [str(m) for m in mids], [titles[m] for m in mids], [full[m] for m in mids]


def movielens_bm25(folder: str | os.PathLike, n_queries: int, *, seed: int = 0) -> TextCollection:
    """BM25 over MovieLens movies (title, genres, tags); queries are the titles of ``n_queries`` random movies."""
    names, titles, full = movielens_texts(folder)
    rng = np.random.default_rng(seed)
    have = [i for i, t in enumerate(titles) if t]
    pick = rng.choice(len(have), min(n_queries, len(have)), replace=False)
    qi = [have[i] for i in pick]
    return bm25_collection(full, [titles[i] for i in qi], doc_names=names, query_names=[names[i] for i in qi])


def _module_roots(packages: Iterable[str] | None) -> list[tuple[str, Path]]:
    import importlib.util
    import sysconfig

    roots: list[tuple[str, Path]] = []
    if packages is None:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        roots.append(("", stdlib))
        return roots
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            log.info("docstring_texts: package %r not installed, skipped", name)
            continue
        origin = Path(spec.origin)
        roots.append((name, origin.parent if origin.name == "__init__.py" else origin))
    return roots


def docstring_texts(
    packages: Iterable[str] | None = ("numpy", "scipy", "sympy", "torch", "pandas", "matplotlib", "networkx", "dask", "distributed"),
    *,
    min_tokens: int = 5,
    max_files: int | None = None,
) -> tuple[list[str], list[str]]:
    """Docstrings of installed Python code: ``(names, texts)``.

    Walks the ``.py`` files of each installed package in ``packages`` (``None``: the
    standard library; a missing package is skipped) in sorted path order and parses them
    with :mod:`ast` (never imports them); every module, class and function docstring of
    at least ``min_tokens`` tokens is one text, named ``path:qualified.name``. Identical
    texts are kept once.
    """
    min_tokens = check_positive_int(min_tokens, name="min_tokens")
    names: list[str] = []
    texts: list[str] = []
    seen: set[int] = set()
    n_files = 0
    for pkg, root in _module_roots(packages):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
        for path in files:
            if max_files is not None and n_files >= max_files:
                break
            n_files += 1
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError, OSError, UnicodeDecodeError, RecursionError):
                continue
            rel = f"{pkg}/{path.relative_to(root)}" if root.is_dir() else str(path.name)
            stack: list[tuple[ast.AST, str]] = [(tree, "")]
            while stack:
                node, qual = stack.pop()
                doc = ast.get_docstring(node, clean=True) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) else None
                if doc and len(tokenize(doc)) >= min_tokens:
                    h = hash(doc)
                    if h not in seen:
                        seen.add(h)
                        names.append(f"{rel}:{qual or '<module>'}")
                        texts.append(doc)
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                        stack.append((child, f"{qual}.{child.name}" if qual else child.name))
    return names, texts


def docstrings_bm25(
    n_queries: int,
    *,
    packages: Iterable[str] | None = ("numpy", "scipy", "sympy", "torch", "pandas", "matplotlib", "networkx", "dask", "distributed"),
    include_stdlib: bool = True,
    max_docs: int | None = None,
    seed: int = 0,
) -> TextCollection:
    """BM25 over docstrings of installed code; queries are held-out docstrings' summary lines.

    ``n_queries`` docstrings (with a summary line of at least 3 tokens) are drawn at
    random and removed from the collection; each query is the tokens of its first
    paragraph (the summary line, as a user would describe a function). ``max_docs``
    keeps a random subset of the remaining documents.
    """
    names, texts = docstring_texts(packages)
    if include_stdlib:
        n2, t2 = docstring_texts(None)
        names += n2
        texts += t2
    rng = np.random.default_rng(seed)
    summaries = [tokenize(t.split("\n\n", 1)[0]) for t in texts]
    cand = np.flatnonzero(np.array([len(s) >= 3 for s in summaries]))
    qsel = np.sort(rng.choice(cand, min(n_queries, cand.shape[0]), replace=False))
    is_q = np.zeros(len(texts), bool)
    is_q[qsel] = True
    rest = np.flatnonzero(~is_q)
    if max_docs is not None and rest.shape[0] > max_docs:
        rest = np.sort(rng.choice(rest, max_docs, replace=False))
    doc_tokens = [tokenize(texts[i]) for i in rest]
    return bm25_collection(
        doc_tokens, [summaries[i] for i in qsel], doc_names=[names[i] for i in rest], query_names=[names[i] for i in qsel],
    )
