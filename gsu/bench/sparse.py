"""Suite ``sparse``: gsu's ``SeismicIndex`` against pyseismic-lsr and the exact sparse product.

Data sets:

- ``splade-<n>``: :func:`gsu.datasets.sparse_collection` (SPLADE-like: Zipfian terms,
  weights growing with rarity, queries made from documents) at 100,000 documents by
  default (``sizes=`` adds e.g. 1,000,000; slow to build, meant for the record run);
- ``movielens-bm25``: BM25 vectors of the MovieLens movies' titles, genres and tags
  (``../shared/datasets/movielens-latest-small``); queries are 200 movies' titles plus
  one genre; ``n_postings`` is twice the average list length there (0.5 × on the
  synthetic sets). Skipped with a message when the folder is absent.

Methods, one query per call, single-threaded unless ``threads`` says otherwise:

- ``gsu`` — :class:`gsu.index.SeismicIndex` with ``value_dtype="float16"`` (the
  reference's storage precision); with ``float32=True`` also ``gsu-f32`` (the
  default float32 storage);
  ``gsu-batch`` times one ``search`` call over all queries (same index, same settings);
- ``pyseismic`` — pyseismic-lsr built with the same ``n_postings``,
  ``centroid_fraction``, ``summary_energy``, ``max_fraction``, ``min_cluster_size``,
  ``doc_cut``; ``search`` one query at a time (queries converted to its token format
  outside the timed call);
- ``exact`` — :class:`gsu.index.SparseFlatIndex` (scipy sparse product), the floor.

Sweep: ``query_cut`` × ``heap_factor``. Per configuration: ms/query (median pass),
recall@10 (tie-tolerant, from recomputed scores), documents scored per query (gsu).
Build time and index size (saved file bytes, both libraries) per data set.

Filtered (synthetic data): selectivity 1 % and 10 %, ``random`` (one random allowed
set shared by all queries) and ``correlated`` (per query: the allowed set is drawn
from the query's own top ``5 × m`` exact results, ``m`` the allowed count); gsu with
its default exact fallback and with ``filter_exact_max=0`` (pure blocked search);
pyseismic post-filtering a deeper result list; exact filtered product as ground truth.

Interleaved timing: every method's pass over the queries is timed once per round and
rounds alternate methods, so that machine noise hits all of them alike; the median
pass counts. Writes ``sparse.jsonl``, ``sparse_<data>.png`` (recall vs ms/query
Pareto fronts of queries/s) and prints the "Done when" table.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from gsu.bench import harness, runner

log = logging.getLogger(__name__)

__all__ = ["run"]

MOVIELENS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "movielens-latest-small"
TARGETS = (0.90, 0.95, 0.97)
K = 10


# -- data ---------------------------------------------------------------------------
def _splade(n: int, nq: int, seed: int, vocab_size: int = 30_000) -> dict[str, Any]:
    from gsu.datasets import sparse_collection

    c = sparse_collection(n, nq, vocab_size=vocab_size, seed=seed)
    return {"name": f"splade-{n // 1000}k", "docs": c.docs.tocsr(), "queries": c.queries.tocsr(), "synthetic": True}


_TOKEN = re.compile(r"[a-z0-9]+")


def _movielens(nq: int, seed: int) -> dict[str, Any] | None:
    import csv

    if not (MOVIELENS / "movies.csv").exists():
        print(f"[sparse] skipping movielens-bm25: {MOVIELENS} not found")
        return None
    texts: dict[int, list[str]] = {}
    titles: dict[int, list[str]] = {}
    genres: dict[int, list[str]] = {}
    with open(MOVIELENS / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            mid = int(row["movieId"])
            t = _TOKEN.findall(re.sub(r"\(\d{4}\)\s*$", "", row["title"]).lower())
            g = ["genre_" + x.lower().replace(" ", "_") for x in row["genres"].split("|") if x != "(no genres listed)"]
            titles[mid], genres[mid] = t, g
            texts[mid] = t + g
    if (MOVIELENS / "tags.csv").exists():
        with open(MOVIELENS / "tags.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                mid = int(row["movieId"])
                if mid in texts:
                    texts[mid] += _TOKEN.findall(row["tag"].lower())
    mids = sorted(texts)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, m in enumerate(mids):
        for tok in texts[m]:
            rows.append(i)
            cols.append(vocab.setdefault(tok, len(vocab)))
    n, v = len(mids), len(vocab)
    tf = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, v))
    tf.sum_duplicates()
    df = np.bincount(tf.indices, minlength=v).astype(np.float64)
    idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
    dl = np.diff(tf.indptr).astype(np.float64)
    k1, b = 1.2, 0.75
    norm = np.repeat(k1 * (1 - b + b * dl / dl.mean()), np.diff(tf.indptr))
    docs = tf.copy()
    docs.data = (tf.data * (k1 + 1) / (tf.data + norm) * idf[tf.indices]).astype(np.float32)
    rng = np.random.default_rng(seed)
    qr, qc, qv = [], [], []
    for qi, i in enumerate(rng.choice(n, nq, replace=False)):
        m = mids[i]
        toks = set(titles[m]) | ({str(rng.choice(genres[m]))} if genres[m] else set())
        for tok in toks:
            qr.append(qi)
            qc.append(vocab[tok])
            qv.append(idf[vocab[tok]])
    queries = sp.csr_matrix((np.asarray(qv, np.float32), (qr, qc)), shape=(nq, v))
    queries.sum_duplicates()
    keep = np.diff(queries.indptr) > 0
    return {"name": "movielens-bm25", "docs": docs.tocsr(), "queries": queries[keep].tocsr(), "synthetic": False, "prune": 2.0}


# -- helpers ------------------------------------------------------------------------
def _interleaved(fns: dict[str, Callable[[], Any]], *, rounds: int) -> dict[str, float]:
    """Median wall time of each no-argument pass, rounds alternating the methods (one warm-up
    pass each first): :func:`gsu.bench.runner.time_interleaved`."""
    return {name: m.timing.median_s for name, m in runner.time_interleaved(fns, rounds=rounds).items()}


def _file_bytes(idx: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "i.gsu"
        idx.save(p)
        return p.stat().st_size


class _Truth:
    """Exact answers and score recomputation for one data set."""

    def __init__(self, docs: sp.csr_matrix, queries: sp.csr_matrix):
        self.docs = docs
        self.queries = queries

    def recompute(self, qrows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        q = int(qrows[0])
        return np.asarray(self.docs[ids] @ self.queries[q].T.toarray()).ravel()

    def recall(self, ids: np.ndarray, scores: np.ndarray, true_ids: np.ndarray, true_scores: np.ndarray, *, allowed=None, name="") -> float:
        rs = harness.check_results(ids, scores, recompute=self.recompute, allowed=allowed, name=name, rtol=2e-3, atol=2e-3)
        return harness.recall_at_k(ids, true_ids, found_scores=rs, true_scores=true_scores, eps=1e-3)


def _best_at(records: list[dict[str, Any]], method: str, target: float) -> dict[str, Any] | None:
    ok = [r for r in records if r.get("kind") == "sweep" and r["method"] == method and r["recall"] >= target - 1e-9]
    return min(ok, key=lambda r: r["ms_per_query"]) if ok else None


# -- suite --------------------------------------------------------------------------
def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    sizes: tuple[int, ...] | None = None,
    n_queries: int | None = None,
    seed: int = 0,
    float32: bool = False,
    data: str | None = None,
) -> list[dict[str, Any]]:
    """Run the suite; returns the records (also written to ``out_dir/sparse.jsonl``).

    Args:
        out_dir: output folder.
        quick: small data and sweep (< ~30 s): a smoke test.
        threads: threads for builds and for ``gsu-batch`` (searches one query per
            call are single-threaded by nature).
        sizes: synthetic collection sizes (default ``(100_000,)``; add ``1_000_000``
            for the record run — it takes several minutes per library to build).
        n_queries: queries per data set (default 300; quick 50).
        seed: data seed.
        float32: also build and sweep ``gsu-f32`` (float32 forward index, the
            SeismicIndex default); off by default to keep the run short.
        data: a sparse data-set SPEC (:mod:`gsu.datasets.registry`: CSR ``.npz``, Seismic JSON
            lines, big-ann ``.csr``, ``gen:splade?...``) run instead of the built-in sets.
    """
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # pyseismic's build pool
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    sizes = ((3_000,) if quick else (100_000,)) if sizes is None else tuple(int(s) for s in sizes)
    nq = n_queries or (50 if quick else 300)
    rounds = 2 if quick else 3
    sweep = [(5, 0.9), (10, 0.7)] if quick else [(3, 0.9), (5, 0.9), (5, 0.7), (8, 0.8), (10, 0.7), (15, 0.6), (20, 0.5), (30, 0.4)]
    vocab_size = 5_000 if quick else 30_000
    datasets: list[Callable[[], dict[str, Any] | None]] = [lambda n=n: _splade(n, nq, seed, vocab_size) for n in sizes]
    if not quick:
        datasets.append(lambda: _movielens(min(nq, 200), seed))
    if data:
        from gsu.datasets.registry import load_dataset

        datasets = [lambda spec=data: runner.sparse_suite_data(load_dataset(spec))]
    base = {"suite": "sparse", "k": K, "threads": threads, "pinned": pinned, "machine": machine["processor"], **runner.provenance()}
    records: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for make in datasets:
        t0 = time.perf_counter()
        data = make()
        if data is None:
            continue
        recs, summ = _run_dataset(data, base={**base, "data_gen_s": time.perf_counter() - t0, **({"data_set": data["describe"]} if "describe" in data else {})}, sweep=sweep, rounds=rounds,
                                  threads=threads, quick=quick, seed=seed, float32=float32)
        records += recs
        summary += summ
        harness.pareto_plot(
            [{**r, "qps": 1e3 / r["ms_per_query"]} for r in recs if r.get("kind") == "sweep"], out_dir / f"sparse_{data['name']}.png",
            x="recall", y="qps", group="method", logy=True, ylabel="queries / s (1 thread)",
            title=f"sparse {data['name']}: recall@{K} vs throughput (upper right is better)",
        )
    peak = round(runner.peak_rss_mb(), 1)
    for r in records + summary:
        r["peak_rss_mb"] = peak
    harness.write_jsonl(out_dir / "sparse.jsonl", records + summary)
    _print_tables(records, summary)
    return records + summary


def _run_dataset(data: dict[str, Any], *, base: dict[str, Any], sweep: list[tuple[int, float]], rounds: int,
                 threads: int, quick: bool, seed: int, float32: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from gsu.bench.peers import PyseismicPeer
    from gsu.index import SeismicIndex, SparseFlatIndex

    docs, queries, name = data["docs"], data["queries"], data["name"]
    n, vocab = docs.shape
    nq = queries.shape[0]
    avg_list = docs.nnz / max(1, np.count_nonzero(np.bincount(docs.indices, minlength=vocab)))
    build = {
        "n_postings": max(16, int(round(data.get("prune", 0.5) * docs.nnz / vocab))),
        "centroid_fraction": 0.1,
        "summary_energy": 0.4,
        "max_fraction": 1.5,
        "min_cluster_size": 2,
        "doc_cut": 15,
    }
    b = {**base, "data": name, "n_docs": n, "vocab": vocab, "nnz_per_doc": docs.nnz / n, "n_queries": nq,
         "avg_list_len": avg_list, "build": build}
    print(f"[sparse] {name}: {n} docs, vocab {vocab}, {docs.nnz / n:.1f} nnz/doc, {nq} queries, build {build}")
    recs: list[dict[str, Any]] = []
    # exact
    t = time.perf_counter()
    flat = SparseFlatIndex(vocab)
    flat.add(docs)
    flat_build = time.perf_counter() - t
    ex = flat.search(queries, K)
    truth = _Truth(docs, queries)
    rows = [queries[i] for i in range(nq)]
    # builds
    t = time.perf_counter()
    g16 = SeismicIndex.build(docs, **build, value_dtype="float16", seed=seed)
    g16_build = time.perf_counter() - t
    g32 = None
    if float32:
        t = time.perf_counter()
        g32 = SeismicIndex.build(docs, **build, seed=seed)
        g32_build = time.perf_counter() - t
    t = time.perf_counter()
    peer = PyseismicPeer(docs, **build)
    peer_build = time.perf_counter() - t
    pq = peer.prepare(queries)
    sizes = {"gsu": _file_bytes(g16), "pyseismic": peer.file_bytes, "exact": _file_bytes(flat)}
    builds = {"gsu": g16_build, "pyseismic": peer_build, "exact": flat_build}
    if g32 is not None:
        sizes["gsu-f32"], builds["gsu-f32"] = _file_bytes(g32), g32_build
    print(f"[sparse] {name}: build s {', '.join(f'{k}={v:.1f}' for k, v in builds.items())}; "
          f"file MB {', '.join(f'{k}={v / 1e6:.1f}' for k, v in sizes.items())}")
    for m in builds:
        recs.append({**b, "kind": "build", "method": m, "build_s": builds[m], "index_bytes": sizes[m],
                     **({"structure": g16.stats()} if m == "gsu" else {})})
    # exact floor timing (one query per call and batched)
    tex = _interleaved({"one": lambda: [flat.search(r, K) for r in rows], "batch": lambda: flat.search(queries, K)}, rounds=1)
    recs.append({**b, "kind": "sweep", "method": "exact", "recall": 1.0, "ms_per_query": tex["one"] / nq * 1e3,
                 "batch_ms_per_query": tex["batch"] / nq * 1e3})
    # sweep
    for qc, hf in sweep:
        sp_ = {"query_cut": qc, "heap_factor": hf}
        out: dict[str, Any] = {}

        def ours(idx: Any, key: str) -> Callable[[], None]:
            def f() -> None:
                res = [idx.search(r, K, **sp_) for r in rows]
                out[key] = res
            return f

        def theirs() -> None:
            out["pyseismic"] = [peer.search_one(p, K, query_cut=qc, heap_factor=hf) for p in pq]

        def batch() -> None:
            st: dict = {}
            out["gsu-batch"] = g16.search(queries, K, stats=st, **sp_)
            out["scored"] = st["scored"]

        fns = {"pyseismic": theirs, "gsu": ours(g16, "gsu"), "gsu-batch": batch}
        if g32 is not None:
            fns["gsu-f32"] = ours(g32, "gsu-f32")
        tm = _interleaved(fns, rounds=rounds)
        methods = list(fns)
        for m in methods:
            if m == "pyseismic":
                ids = np.stack([r[0] for r in out[m]])
                sc = np.stack([r[1] for r in out[m]])
            elif m == "gsu-batch":
                ids, sc = out[m].ids, out[m].scores
            else:
                ids = np.concatenate([r.ids for r in out[m]])
                sc = np.concatenate([r.scores for r in out[m]])
            rec = truth.recall(ids, sc, ex.ids, ex.scores, name=f"{name}/{m}")
            recs.append({**b, "kind": "sweep", "method": m, "query_cut": qc, "heap_factor": hf, "recall": rec,
                         "ms_per_query": tm[m] / nq * 1e3,
                         **({"scored_per_query": float(out["scored"].mean())} if m == "gsu-batch" else {})})
        r = {x["method"]: x for x in recs[-len(methods):]}
        print(f"[sparse] {name} qc={qc:<3d} hf={hf:<4}: " + "  ".join(
            f"{m} {r[m]['ms_per_query']:.3f}ms r={r[m]['recall']:.3f}" for m in methods))
    summ = []
    if data.get("synthetic"):
        recs += _filtered(data, b, g16, flat, peer, pq, truth, quick=quick, seed=seed)
    for target in TARGETS:
        row = {**b, "kind": "done_when", "target_recall": target}
        for m in ("gsu", "gsu-f32", "gsu-batch", "pyseismic"):
            best = _best_at(recs, m, target)
            row[f"{m}_ms"] = best["ms_per_query"] if best else None
            row[f"{m}_params"] = (best["query_cut"], best["heap_factor"]) if best else None
        for m in ("gsu", "gsu-f32", "gsu-batch"):
            row[f"{m}_latency_ratio"] = (row[f"{m}_ms"] / row["pyseismic_ms"]) if row[f"{m}_ms"] and row["pyseismic_ms"] else None
        row["build_ratio"] = builds["gsu"] / builds["pyseismic"]
        row["size_ratio"] = sizes["gsu"] / sizes["pyseismic"]
        if "gsu-f32" in builds:
            row["build_ratio_f32"] = builds["gsu-f32"] / builds["pyseismic"]
            row["size_ratio_f32"] = sizes["gsu-f32"] / sizes["pyseismic"]
        summ.append(row)
    return recs, summ


def _filtered(data: dict[str, Any], b: dict[str, Any], idx: Any, flat: Any, peer: Any, pq: list, truth: _Truth,
              *, quick: bool, seed: int) -> list[dict[str, Any]]:
    from gsu.index import Filter

    docs, queries, name = data["docs"], data["queries"], data["name"]
    n = docs.shape[0]
    nq = queries.shape[0]
    rng = np.random.default_rng(seed + 17)
    nf = min(nq, 50 if quick else 100)
    qsub = queries[:nf]
    rows = [qsub[i] for i in range(nf)]
    recs = []
    for sel in (0.01, 0.1):
        m = max(1, int(round(sel * n)))
        for kind in ("random", "correlated"):
            if kind == "random":
                allowed = np.sort(rng.choice(n, m, replace=False))
                per = [allowed] * nf
                flt = Filter.from_ids(allowed)
            else:
                per = []
                for i in range(nf):  # the allowed set is drawn from the query's own top 5m documents
                    srow = np.asarray((qsub[i] @ docs.T).todense()).ravel()
                    pos = np.flatnonzero(srow > 0)
                    cand = pos[np.argsort(-srow[pos], kind="stable")[: 5 * m]]
                    pick = rng.choice(cand, min(m, cand.size), replace=False) if cand.size else np.zeros(0, np.int64)
                    if pick.size < m:  # top up at random
                        rest = np.setdiff1d(np.arange(n), pick)
                        pick = np.concatenate([pick, rng.choice(rest, m - pick.size, replace=False)])
                    per.append(np.sort(pick.astype(np.int64)))
                flt = Filter.per_query(per)
            masks = None
            ex = flat.search(qsub, K, filter=flt)

            def allowed_fn(q: int, ids: np.ndarray, per=per) -> np.ndarray:
                return np.isin(ids, per[q])

            flts = [Filter.from_ids(p) for p in per]
            out: dict[str, Any] = {}
            fns: dict[str, Callable[[], None]] = {}
            for qc, hf in ((10, 0.7), (20, 0.5)):
                for fem, label in ((None, "gsu"), (0, "gsu-noexact")):
                    key = f"{label}|{qc}|{hf}"

                    def f(key=key, qc=qc, hf=hf, fem=fem) -> None:
                        out[key] = [idx.search(rows[i], K, filter=flts[i], query_cut=qc, heap_factor=hf, filter_exact_max=fem) for i in range(nf)]

                    fns[key] = f
            if masks is None:
                masks = []
                for p in per:
                    mk = np.zeros(n, bool)
                    mk[p] = True
                    masks.append(mk)

            def theirs() -> None:
                out["pyseismic-postfilter|10|0.7"] = [peer.search_one(pq[i], K, query_cut=10, heap_factor=0.7, allowed=masks[i], selectivity=sel) for i in range(nf)]

            fns["pyseismic-postfilter|10|0.7"] = theirs
            fns["exact|-|-"] = lambda: out.__setitem__("exact|-|-", [flat.search(rows[i], K, filter=flts[i]) for i in range(nf)])
            tm = _interleaved(fns, rounds=1 if quick else 2)
            line = []
            for key, res in out.items():
                method, qc, hf = key.split("|")
                if method.startswith("pyseismic"):
                    ids = np.stack([r[0] for r in res])
                    sc = np.stack([r[1] for r in res])
                else:
                    ids = np.concatenate([r.ids for r in res])
                    sc = np.concatenate([r.scores for r in res])
                rec = truth.recall(ids, sc, ex.ids, ex.scores, allowed=allowed_fn, name=f"{name}/{key}/{kind}/{sel}")
                recs.append({**b, "kind": "filtered", "filter": kind, "selectivity": sel, "method": method,
                             "query_cut": None if qc == "-" else int(qc), "heap_factor": None if hf == "-" else float(hf),
                             "recall": rec, "ms_per_query": tm[key] / nf * 1e3, "n_filter_queries": nf})
                line.append(f"{key} {tm[key] / nf * 1e3:.3f}ms r={rec:.3f}")
            print(f"[sparse] {name} filter={kind} sel={sel}: " + "  ".join(line))
    return recs


def _print_tables(records: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    builds = [r for r in records if r.get("kind") == "build"]
    if builds:
        print("\nBuild time and index size (saved file bytes):")
        print(harness.format_table([{"data": r["data"], "method": r["method"], "build_s": r["build_s"], "MB": r["index_bytes"] / 1e6} for r in builds],
                                   ["data", "method", "build_s", "MB"]))
    filt = [r for r in records if r.get("kind") == "filtered"]
    if filt:
        print("\nFiltered search (recall@10 vs the exact filtered answer):")
        print(harness.format_table(filt, ["data", "filter", "selectivity", "method", "query_cut", "heap_factor", "recall", "ms_per_query"]))
    if summary:
        print("\nDone when — latency at equal recall@10 (ms/query, 1 thread; ratio = gsu / pyseismic, <= 1.0 wanted),"
              " build ratio (<= 2) and size ratio (<= 1.5):")
        rows = []
        for s in summary:
            rows.append({
                "data": s["data"], "recall": s["target_recall"],
                "gsu_ms": s["gsu_ms"], "gsu_batch_ms": s["gsu-batch_ms"], "pyseismic_ms": s["pyseismic_ms"],
                "ratio": s["gsu_latency_ratio"], "ratio_batch": s["gsu-batch_latency_ratio"],
                **({"gsu_f32_ms": s["gsu-f32_ms"], "ratio_f32": s["gsu-f32_latency_ratio"]} if s.get("gsu-f32_ms") is not None else {}),
                "build_ratio": s["build_ratio"], "size_ratio": s["size_ratio"],
            })
        print(harness.format_table(rows, list(rows[0].keys())))
        f1 = [r for r in filt if r["selectivity"] == 0.01 and r["method"] == "gsu"]
        if f1:
            print(f"filtered recall@10 at 1% selectivity (gsu, default exact fallback): min {min(r['recall'] for r in f1):.3f} (>= 0.95 wanted)")
