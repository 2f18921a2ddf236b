"""Suite ``flat``: gsu's exact ``FlatIndex`` against faiss ``IndexFlat`` + selector and numpy.

A clustered catalog (or ``--data SPEC``: any dense data set, searched in its own metric), random filters at several selectivities (shared by the batch)
and per-query filters (each query its own random set). Every method is exact, so
recall must be 1.0 — the suite checks it — and the interest is QPS side by side.

Every method builds its filter from the plain id array inside the timed call, as a
request does (gsu: ``search(q, k, filter=ids)``; faiss: its selector from the ids; numpy:
the gathered rows); ``gsu-flat (cached filter)`` times gsu with the ``Filter`` built
beforehand and reused, labelled as such.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gsu.bench import harness
from gsu.bench.peers import FaissFlatPeer, NumpyPrefilterPeer
from gsu.index import Filter, FlatIndex

log = logging.getLogger(__name__)

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5, 1.0)


def _catalog(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from gsu.datasets.synthetic import catalog_queries, clustered_catalog

    cat = clustered_catalog(n, dim, seed=seed)
    return cat.vectors, catalog_queries(cat, 256, seed=seed + 1)


def _outside(spec: str) -> tuple[np.ndarray, np.ndarray, str, dict[str, Any]]:
    """``(x, queries, metric, info)`` of a dense data-set SPEC; cosine data normalised and
    searched by inner product, ``ip`` and ``l2`` as they are."""
    from gsu.bench.runner import dense_vectors
    from gsu.datasets.registry import load_dataset

    ds = load_dataset(spec)
    return (*dense_vectors(ds, "flat"), ds.describe())


def _scores(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 scores (len(q),) of row pairs: ``q·x`` or ``-|q - x|²``."""
    if metric == "ip":
        return np.einsum("ij,ij->i", q.astype(np.float64), x.astype(np.float64))
    return -((q.astype(np.float64) - x.astype(np.float64)) ** 2).sum(1)


def run(*, out_dir: Path, quick: bool = False, threads: int = 1, n: int | None = None, dim: int = 64, k: int = 10, seed: int = 0,
        data: str | None = None) -> list[dict[str, Any]]:
    """Run the suite; write ``flat.jsonl`` and ``flat.png`` into ``out_dir``; return the records.

    ``data``: a dense data-set SPEC (:mod:`gsu.datasets.registry`: a file or ``gen:NAME?...``)
    instead of the built-in clustered catalog; every method searches in its metric natively.
    """
    out_dir = Path(out_dir)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    nq = 32 if quick else 128
    repeats = 3 if quick else 5
    info: dict[str, Any] | None = None
    if data:
        x, queries, metric, info = _outside(data)
        n, dim = x.shape
    else:
        n = n or (20_000 if quick else 200_000)
        x, queries = _catalog(n, dim, seed)
        metric = "ip"
    queries = np.ascontiguousarray(queries[:nq])
    nq = queries.shape[0]
    rng = np.random.default_rng(seed + 7)

    idx = FlatIndex(dim, metric)
    idx.add(x)
    peers = [FaissFlatPeer(x, metric), NumpyPrefilterPeer(x, metric)]
    records: list[dict[str, Any]] = []

    for sel in SELECTIVITIES:
        m = max(1, int(round(sel * n)))
        allowed = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
        f = Filter.from_ids(allowed) if sel < 1.0 else None
        ids_or_none = allowed if sel < 1.0 else None
        truth = idx.search(queries, k, filter=f)
        allowed_set = Filter.from_ids(allowed)

        def recompute(qi: np.ndarray, ids: np.ndarray) -> np.ndarray:
            return _scores(x[ids], queries[qi], metric)

        cases = [("gsu-flat", {}, lambda qs: idx.search(qs, k, filter=ids_or_none), True),
                 ("gsu-flat (cached filter)", {}, lambda qs: idx.search(qs, k, filter=f), True)]
        for p in peers:
            cases.append((p.name, p.params, (lambda qs, p=p: p.search(qs, k, allowed_rows=None if sel >= 1.0 else allowed)), False))
        for name, params, fn, is_gsu in cases:
            out = fn(queries)
            ids, scores = (out.ids, out.scores) if is_gsu else out
            true_scores = harness.check_results(
                ids, scores, recompute=recompute, allowed=lambda q, r: allowed_set.allows(r), name=name
            )
            rec = harness.recall_at_k(ids, truth.ids, found_scores=true_scores, true_scores=truth.scores)
            t = harness.time_queries(fn, queries, batch=1, repeats=repeats)
            tb = harness.time_queries(fn, queries, batch=nq, repeats=repeats)
            records.append(
                {
                    "suite": "flat",
                    "method": name,
                    "params": params,
                    "filter": "shared-random",
                    "selectivity": sel,
                    "n": n,
                    "dim": dim,
                    "metric": metric,
                    "k": k,
                    "nq": nq,
                    "recall": rec,
                    "qps": t.qps,
                    "p50_ms": t.p50_ms,
                    "p99_ms": t.p99_ms,
                    "batch_qps": tb.qps,
                    "repeats": t.repeats,
                    "threads": pinned["threads"],
                    "fresh_filter": "cached" not in name,
                }
            )
    # per-query filters: each query its own random 1% set
    m = max(k, n // 100)
    per_q = [np.sort(rng.choice(n, size=m, replace=False)) for _ in range(nq)]
    fq = Filter.per_query(per_q)  # for the checks; the timed call builds its own
    exact_rows = []
    for qi in range(nq):
        sc = _scores(x[per_q[qi]], np.broadcast_to(queries[qi], (per_q[qi].shape[0], dim)), metric)
        top = np.argsort(-sc, kind="stable")[:k]
        exact_rows.append(per_q[qi][top])
    exact_ids = np.stack(exact_rows)
    out = idx.search(queries, k, filter=fq)
    harness.check_results(out.ids, out.scores, allowed=lambda q, r: np.isin(r, per_q[q]), name="gsu-flat per-query")
    rec = harness.recall_at_k(out.ids, exact_ids)
    t = harness.time_call(lambda: idx.search(queries, k, filter=Filter.per_query(per_q)), repeats=repeats)

    def faiss_loop() -> None:
        for qi in range(nq):
            peers[0].search(queries[qi : qi + 1], k, allowed_rows=per_q[qi])

    tf = harness.time_call(faiss_loop, repeats=repeats)
    for name, tt, r in (("gsu-flat", t, rec), ("faiss-flat", tf, None)):
        records.append(
            {"suite": "flat", "method": name, "filter": "per-query-random", "selectivity": m / n, "n": n, "dim": dim, "metric": metric, "k": k,
             "nq": nq, "recall": r, "qps": nq / tt.median_s, "repeats": tt.repeats, "threads": pinned["threads"], "params": {}}
        )
    for r in records:
        r["machine"] = machine
        if info is not None:
            r["data"] = info
    harness.write_jsonl(out_dir / "flat.jsonl", records)
    harness.line_plot(
        [r for r in records if r["filter"] == "shared-random"], out_dir / "flat.png", x="selectivity", y="qps",
        xlabel="selectivity (share of the items the filter allows)", ylabel="queries / s (one query per call)",
        title=f"exact filtered search, n={n}, d={dim}, k={k}, {threads} thread(s), one query per call, filter from ids per call",
    )
    print(harness.format_table(records, ["method", "filter", "selectivity", "recall", "qps", "p50_ms", "p99_ms", "batch_qps"]))
    return records
