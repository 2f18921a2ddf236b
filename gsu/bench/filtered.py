"""Suite ``filtered``: gsu's ``FilteredIndex`` against filtered-ANN peers, cell by cell.

Data sets:

- ``clustered``: a 200,000 × 64 clustered catalog (:func:`gsu.datasets.clustered_catalog`)
  with queries drawn from the same mixture; item ``i`` was "created" at time ``i``.
- ``movielens-minilm``: all-MiniLM-L6-v2 embeddings (384-d) of the MovieLens movie
  texts "Title (year) — genres" from ``../shared/datasets/movielens-latest-small``;
  500 held-out movies are the queries; the time attribute is the release year.
  Skipped (with a message) when the folder or the text model is absent.

Filters, one per query (a user's behavior set differs per request), at
selectivities 0.1 %, 1 %, 10 %, 50 %:

- ``random``: a uniform random subset;
- ``correlated``: 80 % drawn from the clusters nearest the query (k-means labels for
  MovieLens), topped up at random;
- ``time-range``: items whose time lies in a window of the given width around a
  random point (a contiguous row range on ``clustered``).

Methods, all single-threaded, one query per call, timed interleaved (one pass of
each method per round, so that load on a shared machine hits all alike, each timed
pass right after an untimed pass of the same method, so all are timed warm; ``qps``
is from the median pass, ``qps_best`` from the fastest): gsu ``FilteredIndex`` (effort
sweep), numpy exact pre-filter, faiss ``IndexFlatIP`` + selector, faiss
``IndexHNSWFlat`` + selector (efSearch sweep, the same graph gsu uses), faiss
``IndexIVFFlat`` + selector (nprobe sweep, gsu's centroids), hnswlib with a Python
filter callback (few queries; it is slow). Each method gets its filter prepared
outside the timed call (faiss: a bitmap selector; hnswlib: ``frozenset.__contains__``;
gsu: a ``Filter`` whose compiled form is cached after the warm-up pass). A separate
``gsu-batch`` record times one ``search`` call over all queries with a per-query
filter (``Filter.per_query`` of the prepared filters; resolving it is timed).

Every result is checked (unique ids, recomputed scores, filter respected); recall@k
is tie-tolerant against ``FlatIndex``. Writes ``filtered.jsonl``, one Pareto plot
per (data set, filter, selectivity) ``filtered_<data>_<filter>_<sel>.png`` and
prints the "Done when" table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gsu.bench import harness, runner
from gsu.bench.peers import (
    FaissFlatSelectorPeer,
    FaissHNSWSelectorPeer,
    FaissIVFSelectorPeer,
    HnswlibFilterPeer,
    NumpyPrefilterPreparedPeer,
)
from gsu.index import FilteredIndex, Filter, FlatIndex, load
from gsu.index.filtered import ROUTES

log = logging.getLogger(__name__)

__all__ = ["run"]

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
FILTER_KINDS = ("random", "correlated", "time-range")
MOVIELENS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "movielens-latest-small"


# -- data ---------------------------------------------------------------------------
def _clustered(n: int, dim: int, nq: int, seed: int) -> dict[str, Any]:
    from gsu.datasets import catalog_queries, clustered_catalog

    cat = clustered_catalog(n, dim, seed=seed)
    return {
        "name": "clustered",
        "x": np.ascontiguousarray(cat.vectors, dtype=np.float32),
        "q": np.ascontiguousarray(catalog_queries(cat, nq, seed=seed + 1), dtype=np.float32),
        "labels": np.asarray(cat.labels, dtype=np.int64),
        "centers": np.asarray(cat.centers, dtype=np.float32),
        "time": np.arange(n, dtype=np.int64),
    }


def _movielens(cache: Path, nq: int, seed: int) -> dict[str, Any] | None:
    folder = MOVIELENS.resolve()
    if not (folder / "movies.csv").exists():
        print(f"[filtered] skipping movielens-minilm: {folder}/movies.csv not found")
        return None
    from gsu.datasets import read_movielens_movies
    from gsu.datasets.text import embed_texts, movielens_item_texts

    movies = read_movielens_movies(folder / "movies.csv")
    emb_path = cache / f"movielens_minilm_{len(movies['movie_id'])}.npy"
    if emb_path.exists():
        emb = np.load(emb_path)
    else:
        try:
            t0 = time.perf_counter()
            emb = embed_texts(movielens_item_texts(movies), batch_size=128, progress=False)
        except ImportError as e:
            print(f"[filtered] skipping movielens-minilm: {e}")
            return None
        log.info("embedded %d movie texts in %.1fs", emb.shape[0], time.perf_counter() - t0)
        np.save(emb_path, emb)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(emb.shape[0])
    qi, xi = np.sort(perm[:nq]), np.sort(perm[nq:])
    x = np.ascontiguousarray(emb[xi], dtype=np.float32)
    # k-means labels for the "correlated" filters (clusters nearest the query)
    import faiss

    km = faiss.Kmeans(x.shape[1], 32, niter=15, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, lab = km.index.search(x, 1)
    year = np.asarray(movies["year"])[xi].astype(np.int64)
    year = np.where(year < 0, int(np.median(year[year >= 0])), year)
    return {"name": "movielens-minilm", "x": x, "q": np.ascontiguousarray(emb[qi], dtype=np.float32),
            "labels": lab[:, 0].astype(np.int64), "centers": np.ascontiguousarray(km.centroids), "time": year}


def _filters(data: dict[str, Any], kind: str, sel: float, rng: np.random.Generator, k: int) -> list[np.ndarray]:
    """One sorted int64 row array per query."""
    if "filter_sets" in data:  # --filters: read or drawn once by gsu.datasets.registry.load_filters
        return data["filter_sets"][(kind, sel)]
    x, q, lab, cen, t = data["x"], data["q"], data["labels"], data["centers"], data["time"]
    n, nq = x.shape[0], q.shape[0]
    m = max(1, int(round(sel * n)))
    out = []
    if kind == "random":
        for _ in range(nq):
            out.append(np.sort(rng.choice(n, m, replace=False)).astype(np.int64))
    elif kind == "correlated":
        members = [np.flatnonzero(lab == c) for c in range(cen.shape[0])]
        for i in range(nq):
            near = int(round(0.8 * m))
            pool, tot = [], 0
            for c in np.argsort(-(cen @ q[i])):
                pool.append(members[c])
                tot += members[c].shape[0]
                if tot >= near:
                    break
            pool_a = np.concatenate(pool)
            first = rng.choice(pool_a, min(near, pool_a.shape[0]), replace=False)
            rest_mask = np.ones(n, bool)
            rest_mask[first] = False
            rest = rng.choice(np.flatnonzero(rest_mask), m - first.shape[0], replace=False)
            out.append(np.sort(np.concatenate([first, rest])).astype(np.int64))
    elif kind == "time-range":
        order = np.argsort(t, kind="stable")
        ts = t[order]
        for _ in range(nq):
            start = int(rng.integers(0, n - m + 1))
            lo, hi = ts[start], ts[start + m - 1]
            rows = np.flatnonzero((t >= lo) & (t <= hi)).astype(np.int64)  # whole time units
            out.append(rows)
    else:
        raise ValueError(f"unknown filter kind {kind!r}")
    return out


# -- running one cell -----------------------------------------------------------------
def _truth(flat: FlatIndex, q: np.ndarray, allowed: list[np.ndarray], k: int):
    return flat.search(q, k, filter=Filter.per_query(allowed))


def _evaluate(name: str, rows: np.ndarray, scores: np.ndarray, x: np.ndarray, q: np.ndarray, allowed: list[np.ndarray], truth) -> float:
    def recompute(qi: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", q[qi], x[ids])

    def ok(qi: int, ids: np.ndarray) -> np.ndarray:
        return np.isin(ids, allowed[qi])

    true_scores = harness.check_results(rows, scores, recompute=recompute, allowed=ok, name=name)
    nq = rows.shape[0]
    return harness.recall_at_k(rows, truth.ids[:nq], found_scores=true_scores, true_scores=truth.scores[:nq])


def _time_interleaved(runners: list[dict[str, Any]], repeats: int, max_seconds: float) -> None:
    """Time every runner's ``fn(i)`` over its ``n`` queries, one call each, interleaved, each
    timed pass right after an untimed pass of the same runner (:func:`gsu.bench.runner.time_interleaved`
    with ``warm="each"``: without it two gsu efforts on the same route timed 14k vs 20k QPS).
    Stores ``runner["timing"]`` and ``runner["qps_best"]``."""
    res = runner.time_interleaved({str(i): runner.Calls(r["fn"], r["n"]) for i, r in enumerate(runners)}, rounds=repeats,
                                  warm="each", max_seconds_each=max_seconds)
    for i, r in enumerate(runners):
        r["timing"], r["qps_best"] = res[str(i)].timing, res[str(i)].qps_best


def _run_cell(ctx: dict[str, Any], kind: str, sel: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    data, k, idx, flat, peers, hnswlib_peers = ctx["data"], ctx["k"], ctx["idx"], ctx["flat"], ctx["peers"], ctx["hnswlib"]
    x, q = data["x"], data["q"]
    nq = q.shape[0]
    allowed = _filters(data, kind, sel, rng, k)
    truth = _truth(flat, q, allowed, k)
    sel_real = float(np.mean([a.shape[0] for a in allowed]) / x.shape[0])
    base = {"suite": "filtered", "dataset": data["name"], "filter": kind, "selectivity": sel, "selectivity_real": sel_real,
            "n": x.shape[0], "dim": x.shape[1], "k": k, "threads": ctx["threads"]}
    recs: list[dict[str, Any]] = []

    def record(method: str, params: dict[str, Any], rows: np.ndarray, scores: np.ndarray, t: harness.Timing, n_used: int, **extra: Any) -> None:
        rec = _evaluate(f"{method} {params}", rows, scores, x, q[:n_used], allowed[:n_used], truth)
        recs.append({**base, "method": method, "params": params, "nq": n_used, "recall": rec, "qps": t.qps,
                     "p50_ms": t.p50_ms, "p99_ms": t.p99_ms, "repeats": t.repeats, **extra})

    # one query per call, each with its own prepared filter; all methods interleaved
    fobj = [Filter.from_ids(a) for a in allowed]
    runners: list[dict[str, Any]] = []
    for effort in ctx["efforts"]:
        out_r = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), -np.inf, np.float32)

        def one(i: int, effort: float = effort, out_r: np.ndarray = out_r, out_s: np.ndarray = out_s) -> None:
            r = idx.search(q[i], k, filter=fobj[i], effort=effort)
            out_r[i], out_s[i] = r.ids[0], r.scores[0]

        taken = np.array([idx.explain(q[i], k, filter=fobj[i], effort=effort)[0] for i in range(nq)])
        routes = {ROUTES[c]: int((taken == c).sum()) for c in range(len(ROUTES))}
        runners.append({"method": "gsu-filtered", "params": {"effort": effort}, "fn": one, "n": nq, "out": (out_r, out_s),
                        "extra": {"routes": routes}})
    for peer in peers + hnswlib_peers:
        n_used = nq if peer not in hnswlib_peers else min(nq, ctx["hnswlib_nq"])
        prepared = [peer.prepare(a) for a in allowed[:n_used]]
        out_r = np.full((n_used, k), -1, np.int64)
        out_s = np.full((n_used, k), -np.inf, np.float32)

        def one_peer(i: int, peer: Any = peer, prepared: list = prepared, out_r: np.ndarray = out_r, out_s: np.ndarray = out_s) -> None:
            r, s = peer.search_prepared(q[i : i + 1], k, prepared[i])
            out_r[i], out_s[i] = r[0], s[0]

        runners.append({"method": peer.name, "params": peer.params, "fn": one_peer, "n": n_used, "out": (out_r, out_s), "extra": {}})
    _time_interleaved(runners, ctx["repeats"], ctx["max_seconds"])
    for r in runners:
        record(r["method"], r["params"], r["out"][0], r["out"][1], r["timing"], r["n"], qps_best=r["qps_best"], **r["extra"])

    # gsu batch: every query with its own filter in one call; the Filter objects exist
    # beforehand (as the peers' selectors do), resolving them against the index is timed
    fpq = Filter.per_query(fobj)
    t = harness.time_call(lambda: idx.search(q, k, filter=fpq), repeats=ctx["repeats"], warmup=1,
                          max_seconds=ctx["max_seconds"])
    res = idx.search(q, k, filter=fpq)
    tb = harness.Timing(t.median_s, t.p50_ms, t.p99_ms, nq / t.median_s, t.repeats)
    record("gsu-batch", {"effort": 1.0}, res.ids, res.scores, tb, nq)
    return recs


# -- summary ----------------------------------------------------------------------------
def _summary(records: list[dict[str, Any]], target: float = 0.95) -> list[dict[str, Any]]:
    """One row per cell: gsu (effort 1 and best ≥ target) vs the fastest peer ≥ target and hnswlib."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["dataset"], r["filter"], r["selectivity"]), []).append(r)
    rows = []
    for (ds, kind, sel), rs in cells.items():
        gsu = [r for r in rs if r["method"] == "gsu-filtered"]
        default = next((r for r in gsu if r["params"].get("effort") == 1.0), None)
        gsu_ok = [r for r in gsu if r["recall"] >= target]
        best_gsu = max(gsu_ok, key=lambda r: r["qps"]) if gsu_ok else None
        peers = [r for r in rs if not r["method"].startswith("gsu") and r["method"] != HnswlibFilterPeer.name]
        peers_ok = [r for r in peers if r["recall"] >= target]
        best_peer = max(peers_ok, key=lambda r: r["qps"]) if peers_ok else None
        hl = [r for r in rs if r["method"] == HnswlibFilterPeer.name]
        hl_ok = [r for r in hl if r["recall"] >= target]
        best_hl = max(hl_ok, key=lambda r: r["qps"]) if hl_ok else (max(hl, key=lambda r: r["recall"]) if hl else None)
        g = best_gsu
        need = 1.5 if sel in (0.001, 0.01, 0.1) else 0.95
        ratio = g["qps"] / best_peer["qps"] if g and best_peer else None
        ratio_hl = g["qps"] / best_hl["qps"] if g and best_hl else None
        batch = next((r for r in rs if r["method"] == "gsu-batch"), None)
        rows.append({
            "dataset": ds, "filter": kind, "sel": sel,
            "gsu_recall@1": default["recall"] if default else None, "gsu_qps@1": default["qps"] if default else None,
            "gsu_best": f"e={g['params']['effort']} r={g['recall']:.3f}" if g else "none>=0.95",
            "gsu_qps": g["qps"] if g else None,
            "best_peer": f"{best_peer['method']} {best_peer['params']} r={best_peer['recall']:.3f}" if best_peer else "none>=0.95",
            "peer_qps": best_peer["qps"] if best_peer else None,
            "ratio": ratio, "need": need, "ok": bool(ratio is not None and ratio >= need) if best_peer else bool(g),
            "hnswlib": f"r={best_hl['recall']:.3f} {best_hl['params'].get('ef')}" if best_hl else None,
            "x_hnswlib": ratio_hl, "batch_qps": batch["qps"] if batch else None,
        })
    return rows


# -- entry point --------------------------------------------------------------------
def _build_or_load(path: Path, build: Callable[[], Any], loader: Callable[[Path], Any], saver: Callable[[Any, Path], None]) -> Any:
    if path.exists():
        try:
            return loader(path)
        except Exception as e:  # a stale or broken cache is rebuilt
            log.warning("rebuilding %s (%s)", path, e)
    obj = build()
    saver(obj, path)
    return obj


def _context(data: dict[str, Any], cache: Path, *, k: int, quick: bool, threads: int, seed: int) -> dict[str, Any]:
    x = data["x"]
    n, dim = x.shape
    M, efc = (16, 100) if quick else (32, 200)
    tag = f"{data['name']}_{n}x{dim}_M{M}_efc{efc}_s{seed}"
    t0 = time.perf_counter()

    def build_gsu() -> FilteredIndex:
        idx = FilteredIndex(dim, "ip", M=M, ef_construction=efc, seed=seed)
        idx.add(x)
        return idx

    idx = _build_or_load(cache / f"{tag}.gsu", build_gsu, lambda p: load(p), lambda o, p: o.save(p))
    if not np.array_equal(idx.hnsw.vectors, x):
        log.warning("cached index does not hold this data; rebuilding")
        idx = build_gsu()
        idx.save(cache / f"{tag}.gsu")
    t_gsu = time.perf_counter() - t0

    import hnswlib

    hM = 16
    t0 = time.perf_counter()

    def load_hl(p: Path) -> Any:
        h = hnswlib.Index(space="ip", dim=dim)
        h.load_index(str(p), max_elements=n)
        return h

    hl = _build_or_load(cache / f"{tag}_hnswlib_M{hM}.bin", lambda: HnswlibFilterPeer.build(x, M=hM, ef_construction=efc, seed=seed),
                        load_hl, lambda o, p: o.save_index(str(p)))
    t_hl = time.perf_counter() - t0
    flat = FlatIndex(dim, "ip")
    flat.add(x)
    ivf0 = FaissIVFSelectorPeer(x, idx.ivf.centroids, nprobe=1)
    peers: list[Any] = [NumpyPrefilterPreparedPeer(x), FaissFlatSelectorPeer(x)]
    peers += [FaissHNSWSelectorPeer(idx.hnsw.faiss_index, ef=e) for e in ((32, 128, 512) if quick else (16, 20, 24, 32, 128, 512, 2048))]
    peers += [ivf0.with_nprobe(p) for p in ((8, 64) if quick else (8, 32, 128, 512))]
    hls = [HnswlibFilterPeer(hl, ef=e) for e in ((64,) if quick else (32, 64, 256))]
    return {"data": data, "k": k, "idx": idx, "flat": flat, "peers": peers, "hnswlib": hls, "threads": threads,
            "efforts": (0.5, 1.0) if quick else (0.5, 0.6, 0.75, 1.0, 2.0), "repeats": 2 if quick else 5,
            "max_seconds": 2.0 if quick else 6.0, "hnswlib_nq": 5 if quick else 20,
            "build_s": {"gsu": t_gsu, "hnswlib": t_hl}}


def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    n: int | None = None,
    dim: int = 64,
    nq: int | None = None,
    k: int = 10,
    seed: int = 0,
    movielens: bool | None = None,
    data: str | None = None,
    filters: str | None = None,
) -> list[dict[str, Any]]:
    """Run the suite; write ``filtered.jsonl`` and the Pareto PNGs into ``out_dir``; return the records.

    Args:
        out_dir: output folder; built indexes and text embeddings are cached in
            ``out_dir/cache`` and reused by later runs.
        quick: a ~30 s smoke run (20k items, fewer cells and settings, no MovieLens).
        threads: threads for the searches (1 = the single-thread numbers of the issue).
            Index builds use every core.
        n, dim: clustered catalog size (default 200,000 × 64; 20,000 when quick).
        nq: queries per cell (default 100; 30 when quick).
        k: results per query.
        movielens: include the MovieLens MiniLM data set (default: not when quick).
        data: a data-set SPEC (:mod:`gsu.datasets.registry`) run instead of the built-in
            sets; its queries (the first ``nq``) and metric (cosine and l2 mapped exactly to
            inner products, :func:`gsu.bench.runner.dense_suite_data`).
        filters: a filter SPEC for ``data`` (a file with one id list per query, or
            ``attr:...?sel=...``); default: the built-in random / correlated / time-range grid.
    """
    out_dir = Path(out_dir)
    cache = out_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    n = n or (20_000 if quick else 200_000)
    nq = nq or (30 if quick else 100)
    movielens = (not quick) if movielens is None else movielens
    t_start = time.perf_counter()
    if filters and not data:
        raise ValueError("--filters needs --data (the filters name the items of that data set)")
    if data:
        from gsu.datasets.registry import load_dataset

        outside = runner.dense_suite_data(load_dataset(data), filters, seed=seed)
        if filters is None:
            outside["q"] = outside["q"][:nq]
        datasets, movielens = [outside], False
    else:
        datasets = [_clustered(n, dim, nq, seed)]
    if movielens:
        ml = _movielens(cache, 500, seed)
        if ml is not None:
            ml["q"] = ml["q"][:nq]
            datasets.append(ml)
    sels = (0.01, 0.1, 0.5) if quick else SELECTIVITIES
    kinds = ("random", "correlated") if quick else FILTER_KINDS
    records: list[dict[str, Any]] = []
    builds = {}
    for data in datasets:
        ctx = _context(data, cache, k=k, quick=quick, threads=threads, seed=seed)  # builds with all cores
        builds[data["name"]] = ctx["build_s"]
        pinned = harness.pin_threads(threads)
        rng = np.random.default_rng(seed + 11)
        for kind, sel in data.get("cells") or [(kd, sl) for kd in kinds for sl in sels]:
            t0 = time.perf_counter()
            cell = _run_cell(ctx, kind, sel, rng)
            print(f"[filtered] {data['name']} {kind} {sel:g}: {len(cell)} records in {time.perf_counter() - t0:.1f}s", flush=True)
            records += cell
        del pinned
    machine = harness.machine_info()
    described = {d["name"]: d.get("describe", {}) for d in datasets}
    prov = runner.provenance()
    for r in records:
        r["machine"] = machine
        r["build_s"] = builds[r["dataset"]]
        r.update(prov)
        if described.get(r["dataset"]):
            r["data"] = described[r["dataset"]]
    harness.write_jsonl(out_dir / "filtered.jsonl", records)
    cells = sorted({(r["dataset"], r["filter"], r["selectivity"]) for r in records})
    for ds, kind, sel in cells:
        rs = [dict(r, label=f"{r['method']}") for r in records if (r["dataset"], r["filter"], r["selectivity"]) == (ds, kind, sel)]
        harness.pareto_plot(rs, out_dir / f"filtered_{ds}_{kind.replace(':', '-').replace('/', '-')}_{sel:g}.png", group="label",
                            title=f"{ds}, {kind} filter, selectivity {sel:g}, k={k}, {threads} thread(s), one query per call")
    summary = _summary(records)
    harness.write_jsonl(out_dir / "filtered_summary.jsonl", summary)
    print(harness.format_table(
        [r for r in records if r["method"] != "gsu-batch"],
        ["dataset", "filter", "selectivity", "method", "params", "recall", "qps", "p50_ms", "p99_ms"],
    ))
    print()
    print("Done when: gsu QPS at recall>=0.95 vs the fastest peer configuration with recall>=0.95 (need >=1.5x at 0.1/1/10%, >=0.95x"
          " at 50% and time-range), and vs hnswlib (need >=10x)")
    print(harness.format_table(summary, ["dataset", "filter", "sel", "gsu_recall@1", "gsu_qps@1", "gsu_best", "gsu_qps", "best_peer",
                                         "peer_qps", "ratio", "need", "ok", "hnswlib", "x_hnswlib", "batch_qps"]))
    print(f"[filtered] total {time.perf_counter() - t_start:.0f}s")
    return records
