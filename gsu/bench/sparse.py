"""Suite ``sparse``: gsu's ``SeismicIndex`` against pyseismic-lsr and the exact sparse product.

Data sets (queries are never used to build or tune anything):

- ``splade-100k``: :func:`gsu.datasets.sparse_collection` (the original SPLADE-like set);
- ``rarity-100k``: :func:`gsu.datasets.sparse.rarity_collection` — weights follow term
  rarity, queries mix a document's terms with topical and popular expansions;
- ``rarity-keyword-100k``: the same generator with a 10,000-term vocabulary, 60 terms
  per document, 8-term queries and a flatter Zipf exponent (0.8);
- ``movielens-bm25``: BM25 of the MovieLens movies' titles, genres and tags; queries are
  200 movies' titles (term counts as weights, the textbook BM25 query);
- ``docstrings-bm25``: BM25 of ~44,000 docstrings of the Python libraries installed
  beside gsu (numpy, scipy, sympy, torch, pandas, ... and the standard library);
  queries are the summary lines of 300 held-out docstrings.

Build: both libraries with the same settings, the defaults of both
(``n_postings=3500, centroid_fraction=0.1, summary_energy=0.4, max_fraction=1.5,
min_cluster_size=2, doc_cut=15``); gsu stores weights as float16 like pyseismic and
calibrates itself after the build (timed as part of its build).

Methods, one query per call unless stated:

- ``gsu`` — ``SeismicIndex.search(row, k, query_cut=, heap_factor=)`` swept over a grid;
- ``gsu-default`` — ``search(row, k, target_recall=t)`` for t = 0.90 and 0.95: the
  settings the index picked for itself (no sweep);
- ``gsu-batch`` — one ``search`` call over all queries (``threads`` threads);
- ``pyseismic`` — pyseismic-lsr's own ``search`` call (its result list is converted
  outside the timed loop), the same grid;
- ``exact`` — :class:`gsu.index.SparseFlatIndex`, one query per call and batched.

Filtered (synthetic sets): 1 %, 10 % and 50 % selectivity, ``random`` and
``correlated`` (the allowed set drawn from the query's own top ``5 × m`` documents)
filters; **every method builds each query's filter from a plain id array inside the
timed loop** (``Filter.from_ids(ids)`` per call for gsu and the exact index; a boolean
mask per call for pyseismic, which post-filters a ``k / selectivity`` deep answer).

Timing: each round runs every method once over all queries; rounds alternate the
methods (machine noise hits them alike) and the median round counts. Recall@10 is
tie-tolerant from recomputed scores. Writes ``sparse.jsonl``, ``sparse_<data>.png``
(recall vs queries/s per method with the 0.90/0.95 targets marked) and prints the
tables. ``python -m gsu.bench.sparse --scale 1000000`` runs the 1M-document step, each
library in its own process (see :func:`run_scale`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from gsu._validate import check_positive_int
from gsu.bench import harness
from gsu.datasets.samples import movielens_dir

log = logging.getLogger(__name__)

__all__ = ["run", "run_scale", "BUILD"]

MOVIELENS = movielens_dir()
TARGETS = (0.90, 0.95)
K = 10
BUILD = {"n_postings": 3500, "centroid_fraction": 0.1, "summary_energy": 0.4, "max_fraction": 1.5,
         "min_cluster_size": 2, "doc_cut": 15}
GRID_QC = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 32)
GRID_HF = (0.6, 0.7, 0.8, 0.9, 1.0)
QUICK_GRID = ((2, 0.9), (4, 0.8), (8, 0.7), (16, 0.6))


# -- data ---------------------------------------------------------------------------
def _datasets(quick: bool, nq: int, seed: int) -> list[tuple[str, Callable[[], tuple[sp.csr_matrix, sp.csr_matrix] | None], bool]]:
    """``(name, loader, synthetic)``; a loader returns (docs, queries) CSR or None (skipped)."""
    from gsu.datasets import sparse_collection
    from gsu.datasets.sparse import docstrings_bm25, movielens_bm25, rarity_collection

    def coll(c: Any) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return c.docs.tocsr(), c.queries.tocsr()

    if quick:
        return [
            ("splade-3k", lambda: coll(sparse_collection(3000, nq, vocab_size=5000, seed=seed)), True),
            ("rarity-3k", lambda: coll(rarity_collection(3000, nq, vocab_size=5000, avg_nnz=60, query_nnz=12, n_topics=40, seed=seed + 1)), True),
        ]

    def movielens() -> tuple[sp.csr_matrix, sp.csr_matrix] | None:
        if not (MOVIELENS / "movies.csv").exists():
            print(f"[sparse] skipping movielens-bm25: {MOVIELENS} not found")
            return None
        return coll(movielens_bm25(MOVIELENS, min(nq, 200), seed=seed))

    return [
        ("splade-100k", lambda: coll(sparse_collection(100_000, nq, vocab_size=30_000, seed=seed)), True),
        ("rarity-100k", lambda: coll(rarity_collection(100_000, nq, seed=seed + 1)), True),
        ("rarity-keyword-100k", lambda: coll(rarity_collection(100_000, nq, vocab_size=10_000, avg_nnz=60, query_nnz=8,
                                                               zipf_exponent=0.8, seed=seed + 2)), True),
        ("movielens-bm25", movielens, False),
        ("docstrings-bm25", lambda: coll(docstrings_bm25(nq, seed=seed)), False),
    ]


def _cached(cache: Path | None, name: str, make: Callable[[], Any]) -> Any:
    """``make()`` (docs, queries) or the copy cached under ``cache/name.npz``."""
    if cache is None:
        return make()
    p = cache / f"data_{name}.npz"
    if p.exists():
        z = np.load(p)
        return (sp.csr_matrix((z["dd"], z["di"], z["dp"]), shape=tuple(z["ds"])),
                sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"])))
    out = make()
    if out is not None:
        d, q = out
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, dd=d.data, di=d.indices, dp=d.indptr, ds=np.array(d.shape), qd=q.data, qi=q.indices, qp=q.indptr, qs=np.array(q.shape))
        os.replace(tmp, p)
    return out


def _recompute(docs: sp.csr_matrix, queries: sp.csr_matrix, ids: np.ndarray) -> np.ndarray:
    """Exact float64 scores of the (nq, k) row ids (``-1`` → -inf)."""
    nq, k = ids.shape
    flat = ids.ravel()
    ok = flat >= 0
    qrow = np.repeat(np.arange(nq), k)[ok]
    out = np.full(flat.shape, -np.inf)
    if ok.any():
        out[ok] = np.asarray(docs[flat[ok]].multiply(queries[qrow]).sum(axis=1), dtype=np.float64).ravel()
    return out.reshape(nq, k)


class _Truth:
    def __init__(self, docs: sp.csr_matrix, queries: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray):
        self.docs, self.queries, self.ids, self.scores = docs, queries, ids, scores.astype(np.float64)

    def recall(self, ids: np.ndarray, *, allowed: list[np.ndarray] | None = None, true: tuple[np.ndarray, np.ndarray] | None = None,
               queries: sp.csr_matrix | None = None) -> float:
        q = self.queries if queries is None else queries
        ti, ts = (self.ids, self.scores) if true is None else true
        found = _recompute(self.docs, q, ids)
        if allowed is not None:  # a result outside the filter is an error, not a miss
            for i, a in enumerate(allowed):
                row = ids[i][ids[i] >= 0]
                if row.size and not np.isin(row, a).all():
                    raise AssertionError("a filtered search returned an excluded id")
        if ids.shape[1] and np.any([len(set(r[r >= 0])) != int((r >= 0).sum()) for r in ids]):
            raise AssertionError("duplicate ids in a result row")
        eps = 1e-4 * np.maximum(1.0, np.abs(np.where(ti >= 0, ts, 0)).max(axis=1, initial=0.0))[:, None]
        return harness.recall_at_k(ids, ti, found_scores=found + eps, true_scores=ts, eps=0.0)


def _interleaved(fns: dict[str, Callable[[], Any]], *, rounds: int) -> dict[str, float]:
    """Median wall time of each no-argument pass, rounds alternating the methods after a
    warm-up pass (:func:`gsu.bench.runner.time_interleaved`)."""
    from gsu.bench import runner

    return {name: m.timing.median_s for name, m in runner.time_interleaved(fns, rounds=rounds).items()}


def _file_bytes(idx: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "i.gsu"
        idx.save(p)
        return p.stat().st_size


def _best_at(records: list[dict[str, Any]], method: str, target: float) -> dict[str, Any] | None:
    ok = [r for r in records if r.get("kind") == "sweep" and r["method"] == method and r["recall"] >= target - 1e-9]
    return min(ok, key=lambda r: r["ms_per_query"]) if ok else None


# -- one data set ---------------------------------------------------------------------
def _build_both(docs: sp.csr_matrix, name: str, cache: Path | None, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """gsu and pyseismic indexes with :data:`BUILD` (cached under ``cache`` with their build times)."""
    from gsu.bench.peers import PyseismicPeer
    from gsu.index import SeismicIndex, load

    info: dict[str, Any] = {}
    meta = cache / f"build_{name}.json" if cache else None
    if meta is not None and meta.exists():
        info = json.loads(meta.read_text())
        # read into memory, as pyseismic reads its whole index and as a fresh build leaves it
        # (like for like; on 100k-document sets the two ways measured within run-to-run spread)
        g = load(cache / f"gsu_{name}.gsu", mmap=False)
        peer = PyseismicPeer.open(str(cache / f"py_{name}"), n=docs.shape[0])
        info["loaded_from_cache"] = True
        return g, peer, info
    # every core for both builds (the suite pins one thread for its timed searches; before
    # 2026-12-05 gsu's build ran under that pin while pyseismic's threads were not pinned)
    with harness.all_threads() as threads:
        t = time.perf_counter()
        g = SeismicIndex.build(docs, **BUILD, value_dtype="float16", seed=seed)
        info["gsu_build_s"] = time.perf_counter() - t
        info["gsu_calibration_s"] = g.calibration["seconds"] if g.calibration else None
        t = time.perf_counter()
        peer = PyseismicPeer(docs, **BUILD, save_to=str(cache / f"py_{name}") if cache else None)
        info["pyseismic_build_s"] = time.perf_counter() - t
    info["build_threads"] = threads
    if cache is not None:
        g.save(cache / f"gsu_{name}.gsu")
        info["gsu_bytes"] = (cache / f"gsu_{name}.gsu").stat().st_size
    else:
        info["gsu_bytes"] = _file_bytes(g)
    info["pyseismic_bytes"] = peer.file_bytes
    if meta is not None:
        meta.write_text(json.dumps(info))
    return g, peer, info


def _run_dataset(name: str, docs: sp.csr_matrix, queries: sp.csr_matrix, *, synthetic: bool, base: dict[str, Any],
                 grid: list[tuple[int, float]], rounds: int, threads: int, quick: bool, seed: int,
                 cache: Path | None) -> list[dict[str, Any]]:
    from gsu.index import SparseFlatIndex

    n, vocab = docs.shape
    nq = queries.shape[0]
    b = {**base, "data": name, "n_docs": n, "vocab": vocab, "nnz_per_doc": docs.nnz / n,
         "query_nnz": queries.nnz / nq, "n_queries": nq, "build": BUILD}
    print(f"[sparse] {name}: {n} docs, vocab {vocab}, {docs.nnz / n:.1f} nnz/doc, {nq} queries "
          f"({queries.nnz / nq:.1f} terms), build {BUILD}", flush=True)
    recs: list[dict[str, Any]] = []
    flat = SparseFlatIndex(vocab)
    flat.add(docs)
    ex = flat.search(queries, K)
    truth = _Truth(docs, queries, ex.ids, ex.scores)
    rows = [queries[i] for i in range(nq)]
    g, peer, info = _build_both(docs, name, cache, seed)
    pq = peer.prepare(queries)
    print(f"[sparse] {name}: build {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in info.items()})}", flush=True)
    recs.append({**b, "kind": "build", **info, "structure": g.stats(), "calibration": g.calibration,
                 "size_ratio": info["gsu_bytes"] / info["pyseismic_bytes"],
                 "build_ratio": (info["gsu_build_s"] / info["pyseismic_build_s"]) if info.get("pyseismic_build_s") else None})
    # exact floor
    tex = _interleaved({"one": lambda: [flat.search(r, K) for r in rows], "batch": lambda: flat.search(queries, K)}, rounds=1)
    recs.append({**b, "kind": "sweep", "method": "exact", "recall": 1.0, "ms_per_query": tex["one"] / nq * 1e3,
                 "batch_ms_per_query": tex["batch"] / nq * 1e3})
    # the index's own operating points
    for t in TARGETS:
        op = g.operating_point(t)
        out: dict[str, Any] = {}
        tm = _interleaved({"d": lambda: out.__setitem__("r", [g.search(r, K, target_recall=t) for r in rows])}, rounds=rounds)
        ids = np.concatenate([r.ids for r in out["r"]])
        rec = truth.recall(ids)
        recs.append({**b, "kind": "default", "method": "gsu-default", "target_recall": t, "query_cut": op["query_cut"],
                     "heap_factor": op["heap_factor"], "expected_recall": op["expected_recall"], "recall": rec,
                     "ms_per_query": tm["d"] / nq * 1e3})
        print(f"[sparse] {name} default target {t}: qc={op['query_cut']} hf={op['heap_factor']} recall {rec:.3f} "
              f"{tm['d'] / nq * 1e3:.3f} ms", flush=True)
    # sweep
    for qc, hf in grid:
        out = {}

        def ours() -> None:
            out["gsu"] = [g.search(r, K, query_cut=qc, heap_factor=hf) for r in rows]

        def theirs() -> None:
            out["pyseismic"] = [peer.search_raw(p, K, query_cut=qc, heap_factor=hf) for p in pq]

        def batch() -> None:
            st: dict = {}
            out["gsu-batch"] = g.search(queries, K, query_cut=qc, heap_factor=hf, stats=st)
            out["scored"] = st["scored"]

        fns = {"pyseismic": theirs, "gsu": ours, "gsu-batch": batch}
        tm = _interleaved(fns, rounds=rounds)
        line = []
        for m in fns:
            if m == "pyseismic":
                ids = np.stack([peer.to_arrays(r, K)[0] for r in out[m]])
            elif m == "gsu-batch":
                ids = out[m].ids
            else:
                ids = np.concatenate([r.ids for r in out[m]])
            rec = truth.recall(ids)
            recs.append({**b, "kind": "sweep", "method": m, "query_cut": qc, "heap_factor": hf, "recall": rec,
                         "ms_per_query": tm[m] / nq * 1e3,
                         **({"scored_per_query": float(out["scored"].mean())} if m == "gsu-batch" else {})})
            line.append(f"{m} {tm[m] / nq * 1e3:.3f}ms r={rec:.3f}")
        print(f"[sparse] {name} qc={qc:<3d} hf={hf:<4}: " + "  ".join(line), flush=True)
    if synthetic:
        recs += _filtered(docs, queries, b, g, flat, peer, pq, truth, quick=quick, seed=seed, rounds=max(1, rounds - 1))
    for t in TARGETS:
        row = {**b, "kind": "done_when", "target_recall": t}
        for m in ("gsu", "gsu-batch", "pyseismic"):
            best = _best_at(recs, m, t)
            row[f"{m}_ms"] = best["ms_per_query"] if best else None
            row[f"{m}_params"] = (best["query_cut"], best["heap_factor"]) if best else None
        for m in ("gsu", "gsu-batch"):
            row[f"{m}_latency_ratio"] = (row[f"{m}_ms"] / row["pyseismic_ms"]) if row[f"{m}_ms"] and row["pyseismic_ms"] else None
        d = next(r for r in recs if r.get("kind") == "default" and r["target_recall"] == t)
        row["default_recall"], row["default_ms"] = d["recall"], d["ms_per_query"]
        row["size_ratio"] = info["gsu_bytes"] / info["pyseismic_bytes"]
        recs.append(row)
    return recs


def _filtered(docs: sp.csr_matrix, queries: sp.csr_matrix, b: dict[str, Any], idx: Any, flat: Any, peer: Any, pq: list,
              truth: _Truth, *, quick: bool, seed: int, rounds: int) -> list[dict[str, Any]]:
    from gsu.index import Filter

    n = docs.shape[0]
    rng = np.random.default_rng(seed + 17)
    nf = min(queries.shape[0], 30 if quick else 100)
    qsub = queries[:nf]
    rows = [qsub[i] for i in range(nf)]
    recs = []
    dense_scores = None
    for sel in (0.01, 0.1, 0.5):
        m = max(1, int(round(sel * n)))
        for kind in ("random", "correlated"):
            if kind == "random":
                per = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for _ in range(nf)]
            else:
                if dense_scores is None:
                    dense_scores = (qsub @ docs.T).tocsr()
                per = []
                for i in range(nf):  # the allowed set is drawn from the query's own top 5m documents
                    srow = dense_scores[i]
                    pos, val = srow.indices, srow.data
                    cand = pos[np.argsort(-val, kind="stable")[: 5 * m]]
                    pick = rng.choice(cand, min(m, cand.size), replace=False) if cand.size else np.zeros(0, np.int64)
                    if pick.size < m:  # top up at random
                        rest = np.setdiff1d(np.arange(n), pick)
                        pick = np.concatenate([pick, rng.choice(rest, m - pick.size, replace=False)])
                    per.append(np.sort(pick.astype(np.int64)))
            ex = flat.search(qsub, K, filter=Filter.per_query(per))
            out: dict[str, Any] = {}
            fns: dict[str, Callable[[], None]] = {}
            # every call builds its filter from the plain id array (what a GSU request brings)
            fns["gsu"] = lambda: out.__setitem__("gsu", [idx.search(rows[i], K, filter=Filter.from_ids(per[i])) for i in range(nf)])
            fns["gsu-noexact"] = lambda: out.__setitem__("gsu-noexact", [
                idx.search(rows[i], K, filter=Filter.from_ids(per[i]), filter_exact_max=0) for i in range(nf)])
            fns["exact"] = lambda: out.__setitem__("exact", [flat.search(rows[i], K, filter=Filter.from_ids(per[i])) for i in range(nf)])
            op = idx.operating_point()

            def theirs() -> None:
                res = []
                for i in range(nf):
                    mask = np.zeros(n, bool)
                    mask[per[i]] = True
                    res.append(peer.search_one(pq[i], K, query_cut=op["query_cut"], heap_factor=op["heap_factor"], allowed=mask, selectivity=sel))
                out["pyseismic-postfilter"] = res

            if sel >= 0.1:  # at 1 % the post-filter depth (1,000 × k) makes the peer's call meaningless
                fns["pyseismic-postfilter"] = theirs
            tm = _interleaved(fns, rounds=rounds)
            line = []
            for key in fns:
                res = out[key]
                ids = np.stack([r[0] for r in res]) if key.startswith("pyseismic") else np.concatenate([r.ids for r in res])
                rec = truth.recall(ids, allowed=per, true=(ex.ids, ex.scores.astype(np.float64)), queries=qsub)
                recs.append({**b, "kind": "filtered", "filter": kind, "selectivity": sel, "method": key,
                             "query_cut": op["query_cut"], "heap_factor": op["heap_factor"], "recall": rec,
                             "ms_per_query": tm[key] / nf * 1e3, "n_filter_queries": nf, "fresh_filter_per_call": True})
                line.append(f"{key} {tm[key] / nf * 1e3:.3f}ms r={rec:.3f}")
            print(f"[sparse] {b['data']} filter={kind} sel={sel}: " + "  ".join(line), flush=True)
    return recs


# -- plots and tables -------------------------------------------------------------------
def _plot(recs: list[dict[str, Any]], path: Path, title: str) -> None:
    """queries/s against recall@K: one panel for one query per call, one for batched calls
    (``gsu-batch``: one call over every query), each method's Pareto front over its sweep,
    the recall targets as lines, one legend beside the panels."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    groups: dict[str, list[tuple[float, float]]] = {}
    for r in recs:
        if r.get("kind") in ("sweep", "default") and r.get("ms_per_query"):
            groups.setdefault(r["method"], []).append((r["recall"], 1e3 / r["ms_per_query"]))
            if r.get("batch_ms_per_query"):
                groups.setdefault(f"{r['method']} (batched)", []).append((r["recall"], 1e3 / r["batch_ms_per_query"]))
    batched = {m for m in groups if m == "gsu-batch" or m.endswith("(batched)")}
    panels = [("one query per call, 1 thread", {m: p for m, p in groups.items() if m not in batched}),
              ("batched: one call over all queries", {m: p for m, p in groups.items() if m in batched})]
    panels = [pn for pn in panels if pn[1]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 2, 4.5), dpi=110, squeeze=False, layout="constrained")
    for ax, (what, gr) in zip(axes[0], panels):
        for m, pts in sorted(gr.items()):
            st = harness.method_style(m)
            if m == "gsu-default":
                ax.plot(*zip(*pts), "", ms=11, zorder=5, label="gsu default (target 0.90 / 0.95)", **st)
                continue
            ax.scatter(*zip(*pts), s=12, alpha=0.35, color=st["color"], marker=st["marker"])
            fr = harness.pareto_front(pts)
            ax.plot([pts[i][0] for i in fr], [pts[i][1] for i in fr], "-", ms=4, label=m, **st)
        for t in TARGETS:
            ax.axvline(t, color="grey", ls="--", lw=0.8, label=f"recall target {t:g}")
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{K}")
        ax.set_ylabel("queries / s")
        ax.set_title(what, fontsize=9)
        ax.grid(True, alpha=0.3)
    harness.legend_outside(fig)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    plt.close(fig)


def _print_tables(records: list[dict[str, Any]]) -> None:
    builds = [r for r in records if r.get("kind") == "build"]
    if builds:
        print("\nBuild time (gsu includes its calibration) and saved index size:")
        print(harness.format_table([{"data": r["data"], "gsu_s": r.get("gsu_build_s"), "pyseismic_s": r.get("pyseismic_build_s"),
                                     "gsu_MB": r["gsu_bytes"] / 1e6, "pyseismic_MB": r["pyseismic_bytes"] / 1e6,
                                     "size_ratio": r["size_ratio"]} for r in builds],
                                   ["data", "gsu_s", "pyseismic_s", "gsu_MB", "pyseismic_MB", "size_ratio"]))
    done = [r for r in records if r.get("kind") == "done_when"]
    if done:
        print("\nLatency at equal recall@10 (ms/query, one query per call, 1 thread; ratio = gsu / pyseismic, <= 1 wanted) "
              "and the index's own default:")
        print(harness.format_table([{
            "data": r["data"], "recall": r["target_recall"], "gsu_ms": r["gsu_ms"], "gsu_params": r["gsu_params"],
            "pyseismic_ms": r["pyseismic_ms"], "py_params": r["pyseismic_params"], "ratio": r["gsu_latency_ratio"],
            "batch_ms": r["gsu-batch_ms"], "default_recall": r["default_recall"], "default_ms": r["default_ms"],
        } for r in done], ["data", "recall", "gsu_ms", "gsu_params", "pyseismic_ms", "py_params", "ratio", "batch_ms",
                           "default_recall", "default_ms"]))
    filt = [r for r in records if r.get("kind") == "filtered"]
    if filt:
        print("\nFiltered search, a fresh filter from a plain id array in every call (recall@10 vs the exact filtered answer):")
        print(harness.format_table(filt, ["data", "filter", "selectivity", "method", "recall", "ms_per_query"]))


# -- suite --------------------------------------------------------------------------
def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    n_queries: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    only: tuple[str, ...] | None = None,
    build_only: bool = False,
    rounds: int | None = None,
    data: str | None = None,
) -> list[dict[str, Any]]:
    """Run the suite; returns the records (also written to ``out_dir/sparse.jsonl``).

    Args:
        out_dir: output folder.
        quick: two small synthetic sets and a 4-point grid (a smoke test, < ~1 min).
        threads: threads of ``gsu-batch`` and of the builds (one-query-per-call methods
            run on one thread by nature).
        n_queries: queries per data set (default 300; quick 40).
        seed: data seed.
        cache_dir: keep generated data, built indexes and their build times there and
            reuse them (a record run can then time searches alone).
        only: run only these data sets (names as in the module docstring).
        build_only: generate the data and build both indexes into ``cache_dir`` (with
            their build times and sizes), time nothing; a later run reuses them, so that
            the long builds can run beside other work and the timed run stays short.
        rounds: timed rounds per measurement after the warm-up pass (default 5; quick 2).
        data: a sparse data-set SPEC (:mod:`gsu.datasets.registry`: CSR ``.npz``, Seismic
            JSON lines, big-ann ``.csr``, ``gen:splade?...``) run instead of the built-in sets.
    """
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # pyseismic's build pool
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else None
    if build_only and cache is None:
        raise ValueError("build_only: needs cache_dir (the built indexes are kept there)")
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    nq = n_queries or (40 if quick else 300)
    rounds = (2 if quick else 5) if rounds is None else check_positive_int(rounds, name="rounds")
    grid = list(QUICK_GRID) if quick else [(qc, hf) for qc in GRID_QC for hf in GRID_HF]
    from gsu.bench import runner

    base = {"suite": "sparse", "k": K, "threads": threads, "pinned": pinned, "machine": machine["processor"],
            "versions": machine["versions"], **runner.provenance()}
    records: list[dict[str, Any]] = []
    sets = _datasets(quick, nq, seed)
    if data:
        from gsu.datasets.registry import load_dataset

        outside = runner.sparse_suite_data(load_dataset(data))
        base["data_set"] = outside["describe"]
        sets = [(str(outside["name"]), lambda: (outside["docs"], outside["queries"]), False)]
        cache = None  # never mix the user's data with the cached built-in sets
    for name, make, synthetic in sets:
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        data = _cached(cache, name, make)
        if data is None:
            continue
        docs, queries = data
        if build_only:
            _, _, info = _build_both(docs, name, cache, seed)
            print(f"[sparse] {name}: built {json.dumps(info)}", flush=True)
            continue
        recs = _run_dataset(name, docs, queries, synthetic=synthetic, base={**base, "data_s": time.perf_counter() - t0},
                            grid=grid, rounds=rounds, threads=threads, quick=quick, seed=seed, cache=cache)
        records += recs
        _plot(recs, out_dir / f"sparse_{name}.png", f"sparse {name}: recall@{K} vs queries/s (upper right is better)")
    if build_only:
        return records
    harness.write_jsonl(out_dir / "sparse.jsonl", records)
    _print_tables(records)
    return records


# -- the 1M-document step: each library in its own process -------------------------------------
def _rss_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _scale_data(n: int, nq: int, seed: int, cache: Path) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, np.ndarray]:
    """The ``n``-document rarity-weighted collection and its exact top-k (cached)."""
    from gsu.datasets.sparse import rarity_collection
    from gsu.index import SparseFlatIndex

    name = f"rarity-{n}"
    docs, queries = _cached(cache, name, lambda: (lambda c: (c.docs.tocsr(), c.queries.tocsr()))(rarity_collection(n, nq, seed=seed + 1)))
    tp = cache / f"truth_{name}.npz"
    if tp.exists():
        z = np.load(tp)
        return docs, queries, z["ids"], z["scores"]
    flat = SparseFlatIndex(docs.shape[1])
    flat.add(docs)
    ex = flat.search(queries, K)
    np.savez(tp, ids=ex.ids, scores=ex.scores)
    return docs, queries, ex.ids, ex.scores


def _scale_phase(phase: str, n: int, nq: int, seed: int, cache: Path, rounds: int) -> dict[str, Any]:
    """One phase of :func:`run_scale` in this process; returns its record."""
    harness.pin_threads(int(os.environ.get("GSU_BENCH_THREADS", "1")))
    name = f"rarity-{n}"
    if phase == "data":
        docs, queries, _, _ = _scale_data(n, nq, seed, cache)
        return {"phase": phase, "n_docs": docs.shape[0], "nnz": int(docs.nnz), "n_queries": queries.shape[0], "peak_rss_mb": _rss_peak_mb()}
    docs, queries, ti, ts = _scale_data(n, nq, seed, cache)
    if phase == "build-gsu":
        from gsu.index import SeismicIndex

        t = time.perf_counter()
        g = SeismicIndex.build(docs, **BUILD, value_dtype="float16", seed=seed)
        build_s = time.perf_counter() - t
        del docs
        p = cache / f"gsu_{name}.gsu"
        g.save(p)
        return {"phase": phase, "build_s": build_s, "calibration_s": g.calibration["seconds"], "bytes": p.stat().st_size,
                "structure": g.stats(), "calibration": g.calibration, "peak_rss_mb": _rss_peak_mb()}
    if phase == "build-py":
        from gsu.bench.peers import PyseismicPeer

        t = time.perf_counter()
        peer = PyseismicPeer(docs, **BUILD, save_to=str(cache / f"py_{name}"))
        return {"phase": phase, "build_s": time.perf_counter() - t, "bytes": peer.file_bytes, "peak_rss_mb": _rss_peak_mb()}
    truth = _Truth(docs, queries, ti, ts)
    rows = [queries[i] for i in range(queries.shape[0])]
    recs = []
    if phase == "search-gsu":
        from gsu.index import load

        t = time.perf_counter()
        g = load(cache / f"gsu_{name}.gsu", mmap=True)
        open_s = time.perf_counter() - t
        calls: dict[str, Callable[[], Any]] = {}
        for qc, hf in [(qc, hf) for qc in GRID_QC for hf in GRID_HF]:
            calls[f"{qc}|{hf}"] = (lambda qc, hf: lambda: [g.search(r, K, query_cut=qc, heap_factor=hf) for r in rows])(qc, hf)
        for t_ in TARGETS:
            calls[f"default|{t_}"] = (lambda t_: lambda: [g.search(r, K, target_recall=t_) for r in rows])(t_)
        for key, fn in calls.items():
            res = fn()
            tm = _interleaved({key: fn}, rounds=rounds)[key]
            rec = truth.recall(np.concatenate([r.ids for r in res]))
            a, c = key.split("|")
            recs.append({"method": "gsu-default" if a == "default" else "gsu", "query_cut": None if a == "default" else int(a),
                         "heap_factor": None if a == "default" else float(c), "target_recall": float(c) if a == "default" else None,
                         "recall": rec, "ms_per_query": tm / len(rows) * 1e3})
        return {"phase": phase, "open_s": open_s, "sweep": recs, "peak_rss_mb": _rss_peak_mb()}
    if phase == "search-py":
        from gsu.bench.peers import PyseismicPeer

        t = time.perf_counter()
        peer = PyseismicPeer.open(str(cache / f"py_{name}"), n=docs.shape[0])
        open_s = time.perf_counter() - t
        pq = peer.prepare(queries)
        for qc in GRID_QC:
            for hf in GRID_HF:
                fn = (lambda qc, hf: lambda: [peer.search_raw(p, K, query_cut=qc, heap_factor=hf) for p in pq])(qc, hf)
                res = fn()
                tm = _interleaved({"p": fn}, rounds=rounds)["p"]
                ids = np.stack([peer.to_arrays(r, K)[0] for r in res])
                recs.append({"method": "pyseismic", "query_cut": qc, "heap_factor": hf, "recall": truth.recall(ids),
                             "ms_per_query": tm / len(rows) * 1e3})
        return {"phase": phase, "open_s": open_s, "sweep": recs, "peak_rss_mb": _rss_peak_mb()}
    if phase == "side":
        return _side_phase(name, n, cache, queries, truth, rows, rounds)
    raise ValueError(f"unknown phase {phase!r}")


def _side_points(cache: Path, n: int) -> list[tuple[int, float]]:
    """The (query_cut, heap_factor) points where each library is fastest at each target,
    from the ``search-gsu`` / ``search-py`` phase records (a small default grid without them)."""
    pts: list[tuple[int, float]] = []
    sweep: list[dict[str, Any]] = []
    for ph in ("search-gsu", "search-py"):
        rp = cache / f"phase_{n}_{ph}.json"
        if rp.exists():
            sweep += [{**r, "kind": "sweep"} for r in json.loads(rp.read_text())["sweep"] if r["method"] != "gsu-default"]
    for t in TARGETS:
        for m in ("gsu", "pyseismic"):
            b = _best_at(sweep, m, t)
            if b is not None and (b["query_cut"], b["heap_factor"]) not in pts:
                pts.append((int(b["query_cut"]), float(b["heap_factor"])))
    return pts or [(2, 0.8), (3, 0.9), (4, 1.0)]


def _side_phase(name: str, n: int, cache: Path, queries: sp.csr_matrix, truth: "_Truth", rows: list, rounds: int) -> dict[str, Any]:
    """Both libraries in one process, timed alternately over the same queries at the same
    points: gsu mapped (``load(mmap=True)``), gsu read into memory (``mmap=False``) and
    pyseismic. The ratios of this phase are side by side; the sweeps' are not."""
    from gsu.bench.peers import PyseismicPeer
    from gsu.index import load

    peer = PyseismicPeer.open(str(cache / f"py_{name}"), n=n)
    pq = peer.prepare(queries)
    t = time.perf_counter()
    mapped = load(cache / f"gsu_{name}.gsu", mmap=True)
    open_mapped = time.perf_counter() - t
    t = time.perf_counter()
    memory = load(cache / f"gsu_{name}.gsu", mmap=False)
    open_memory = time.perf_counter() - t
    recs = []
    for qc, hf in _side_points(cache, n):
        out: dict[str, Any] = {}

        def gsu_call(idx: Any, key: str) -> Callable[[], None]:
            return lambda: out.__setitem__(key, [idx.search(r, K, query_cut=qc, heap_factor=hf) for r in rows])

        fns = {"gsu-mapped": gsu_call(mapped, "gsu-mapped"), "gsu-memory": gsu_call(memory, "gsu-memory"),
               "pyseismic": lambda: out.__setitem__("pyseismic", [peer.search_raw(p, K, query_cut=qc, heap_factor=hf) for p in pq])}
        tm = _interleaved(fns, rounds=rounds)
        ids_m = np.concatenate([r.ids for r in out["gsu-mapped"]])
        if not np.array_equal(ids_m, np.concatenate([r.ids for r in out["gsu-memory"]])):
            raise AssertionError(f"side: mapped and in-memory gsu answered differently at ({qc}, {hf})")
        ids_p = np.stack([peer.to_arrays(r, K)[0] for r in out["pyseismic"]])
        ms = {m: tm[m] / len(rows) * 1e3 for m in fns}
        recs.append({"query_cut": qc, "heap_factor": hf, "recall_gsu": truth.recall(ids_m), "recall_pyseismic": truth.recall(ids_p),
                     **{f"ms_{m}": v for m, v in ms.items()},
                     "ratio_mapped": ms["gsu-mapped"] / ms["pyseismic"], "ratio_memory": ms["gsu-memory"] / ms["pyseismic"]})
    return {"phase": "side", "open_mapped_s": open_mapped, "open_memory_s": open_memory, "points": recs, "rounds": rounds,
            "peak_rss_mb": _rss_peak_mb()}


def run_scale(*, out_dir: Path, n: int, cache_dir: Path, n_queries: int = 300, seed: int = 0, rounds: int = 3,
              phases: tuple[str, ...] = ("data", "build-gsu", "build-py", "search-gsu", "search-py", "side"),
              threads: int = 1) -> list[dict[str, Any]]:
    """The ``n``-document step of the sparse suite (rarity-weighted collection, :data:`BUILD`).

    Every phase runs in a fresh Python process (``python -m gsu.bench.sparse --phase``),
    so the two libraries are never in memory together and peak memory is per library:
    ``data`` (generate + exact answers, cached), ``build-gsu`` / ``build-py`` (build and
    save, timed, with peak resident memory), ``search-gsu`` / ``search-py`` (open the
    saved index, sweep the grid one query per call), ``side`` (both libraries in one
    process — they must fit in memory together — timed alternately at the points where
    each sweep reached the targets: gsu mapped, gsu read into memory, pyseismic; the
    sweeps' ratios carry the drift between two processes, these do not). Phases whose
    record exists in ``cache_dir`` are not run again. Writes ``sparse_scale.jsonl`` and a plot.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for ph in phases:
        rp = cache / f"phase_{n}_{ph}.json"
        if not rp.exists():
            env = {**os.environ, "GSU_BENCH_THREADS": str(threads), "RAYON_NUM_THREADS": str(threads),
                   "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))}
            cmd = [sys.executable, "-m", "gsu.bench.sparse", "--phase", ph, "--n", str(n), "--cache", str(cache),
                   "--n-queries", str(n_queries), "--seed", str(seed), "--rounds", str(rounds)]
            print(f"[sparse-scale] {' '.join(cmd)}", flush=True)
            subprocess.run(cmd, check=True, env=env)
        results[ph] = json.loads(rp.read_text())
        print(f"[sparse-scale] {ph}: " + json.dumps({k: v for k, v in results[ph].items() if k not in ("sweep", "structure", "calibration")}), flush=True)
    base = {"suite": "sparse-scale", "data": f"rarity-{n}", "n_docs": n, "k": K, "build": BUILD}
    records: list[dict[str, Any]] = []
    for ph in ("build-gsu", "build-py"):
        if ph in results:
            records.append({**base, "kind": "build", "method": "gsu" if ph == "build-gsu" else "pyseismic", **results[ph]})
    sweep = []
    for ph in ("search-gsu", "search-py"):
        if ph in results:
            sweep += [{**base, "kind": "default" if r["method"] == "gsu-default" else "sweep", **r} for r in results[ph]["sweep"]]
            records.append({**base, "kind": "open", "method": ph.split("-")[1], "open_s": results[ph]["open_s"],
                            "peak_rss_mb": results[ph]["peak_rss_mb"]})
    records += sweep
    if "side" in results:
        sd = results["side"]
        records.append({**base, "kind": "open", "method": "gsu-side", "open_mapped_s": sd["open_mapped_s"],
                        "open_memory_s": sd["open_memory_s"], "peak_rss_mb": sd["peak_rss_mb"]})
        records += [{**base, "kind": "side", "rounds": sd["rounds"], **r} for r in sd["points"]]
    for t in TARGETS:
        row = {**base, "kind": "done_when", "target_recall": t}
        for m in ("gsu", "pyseismic"):
            best = _best_at(sweep, m, t)
            row[f"{m}_ms"] = best["ms_per_query"] if best else None
            row[f"{m}_params"] = (best["query_cut"], best["heap_factor"]) if best else None
        row["gsu_latency_ratio"] = row["gsu_ms"] / row["pyseismic_ms"] if row["gsu_ms"] and row["pyseismic_ms"] else None
        if "build-gsu" in results and "build-py" in results:
            row["size_ratio"] = results["build-gsu"]["bytes"] / results["build-py"]["bytes"]
        d = [r for r in sweep if r["method"] == "gsu-default" and r["target_recall"] == t]
        if d:
            row["default_recall"], row["default_ms"] = d[0]["recall"], d[0]["ms_per_query"]
        records.append(row)
    harness.write_jsonl(out_dir / "sparse_scale.jsonl", records)
    if sweep:
        _plot(sweep, out_dir / f"sparse_rarity-{n}.png", f"sparse rarity-{n}: recall@{K} vs queries/s (each library in its own process)")
    side = [r for r in records if r["kind"] == "side"]
    if side:
        print(harness.format_table(side, ["query_cut", "heap_factor", "recall_gsu", "recall_pyseismic", "ms_gsu-mapped", "ms_gsu-memory",
                                          "ms_pyseismic", "ratio_mapped", "ratio_memory"]))
    done = [r for r in records if r["kind"] == "done_when"]
    print(harness.format_table(done, ["data", "target_recall", "gsu_ms", "gsu_params", "pyseismic_ms", "pyseismic_params",
                                      "gsu_latency_ratio", "size_ratio", "default_recall", "default_ms"]))
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gsu.bench.sparse", description="The sparse suite; --scale N for the N-document step.")
    p.add_argument("--out", default="results")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-queries", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="cache folder for data, indexes and phase records")
    p.add_argument("--only", nargs="*", default=None, help="data sets to run")
    p.add_argument("--build-only", action="store_true", help="build and cache the indexes (needs --cache), time nothing")
    p.add_argument("--scale", type=int, default=None, help="run the N-document step (each library in its own process)")
    p.add_argument("--phases", nargs="*", default=None)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per measurement (suite default 5, scale step 3)")
    p.add_argument("--data", default=None, metavar="SPEC", help="a sparse data-set SPEC instead of the built-in sets")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.phase:
        rec = _scale_phase(a.phase, a.n, a.n_queries or 300, a.seed, Path(a.cache), a.rounds or 3)
        rp = Path(a.cache) / f"phase_{a.n}_{a.phase}.json"
        tmp = rp.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, default=harness._json_default))
        os.replace(tmp, rp)
        return 0
    if a.scale:
        if not a.cache:
            raise SystemExit("--scale needs --cache")
        kw = {"phases": tuple(a.phases)} if a.phases else {}
        run_scale(out_dir=Path(a.out), n=a.scale, cache_dir=Path(a.cache), n_queries=a.n_queries or 300, seed=a.seed,
                  rounds=a.rounds or 3, threads=a.threads, **kw)
        return 0
    run(out_dir=Path(a.out), quick=a.quick, threads=a.threads, n_queries=a.n_queries, seed=a.seed,
        cache_dir=Path(a.cache) if a.cache else None, only=tuple(a.only) if a.only else None, build_only=a.build_only,
        rounds=a.rounds, data=a.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
