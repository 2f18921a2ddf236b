"""``gsu demo``: the main job end to end on a built-in synthetic default, in stages.

1. **data** — synthetic users with long behavior sequences; clicks drawn from a planted
   target-attention model, so the best achievable AUC (the *oracle*) is known
   (:func:`gsu.ctr.data.synthetic_task`).
2. **embeddings** — the catalog's item embeddings written to ``items.npy``
   (:func:`gsu.datasets.write_embeddings`).
3. **build** — ``gsu build items.npy items.gsu --kind filtered --metric ip``, run through
   the command line's own code path (:func:`gsu.datasets.build.build_index`, what ``gsu build`` runs).
4. **search** — per user, top-10 items for candidate queries with a fresh per-request
   :class:`~gsu.index.Filter` built from the user's behavior items; every answer is checked
   against the exact filtered answer (:class:`~gsu.index.FlatIndex`, itself checked against
   a numpy brute force) and every returned id against the user's set.
5. **retrieve** — per (user, target) retrieval of k behaviors with every GSU method
   (``Exact``, SIM-hard, SIM-soft by exact scan and through the index of stage 3, MUSE-cosine,
   ETA, SDIM, a hard+soft ``Hybrid``), time-cut at each target's time.
6. **table** — recall@k against ``Exact``, the planted attention mass kept, median
   milliseconds per request.
7. **ctr** — the same compact ESU trained over full-sequence attention and over each
   method; test AUC, AUC lost against full attention (± a paired bootstrap standard error
   over test users: one seed has no seed spread), attention FLOPs per sample, the oracle.
8. **report** — ``demo.jsonl`` (every number above) and ``demo.png`` (two panels: recall
   against latency per retrieval method; AUC against attention FLOPs with full attention
   and the oracle as reference lines).

Progress: a bar on a terminal, one line per stage otherwise (logs stay readable).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["run_demo", "DemoSize", "FULL", "QUICK", "STAGES", "paired_bootstrap"]

STAGES = ("data", "embeddings", "build", "search", "retrieve", "table", "ctr", "report")


@dataclass(frozen=True)
class DemoSize:
    """The sizes of a demo run.

    n_users / seq_len (min, max behaviors, log-uniform) / n_items / n_targets_per_user: the
    synthetic task (samples split 70/15/15 by time). search_users / search_queries: users
    and candidate queries per user of the filtered-search stage (k = 10). retrieve_users:
    users (one request each: the user's test-split targets at their own times) of the
    retrieval stage. k: behaviors per target, for retrieval and the CTR comparison.
    ctr_methods: methods trained in the CTR stage besides full attention. epochs /
    batch_size / lr: the training recipe (:class:`gsu.ctr.train.TrainConfig`).
    bootstrap: resamples of test users for the paired standard errors.
    """

    n_users: int
    seq_len: tuple[int, int]
    n_items: int
    n_targets_per_user: int
    search_users: int
    search_queries: int
    retrieve_users: int
    k: int
    ctr_methods: tuple[str, ...]
    epochs: int
    batch_size: int
    lr: float
    bootstrap: int


FULL = DemoSize(n_users=100, seq_len=(300, 3_000), n_items=20_000, n_targets_per_user=300, search_users=50,
                search_queries=16, retrieve_users=16, k=32, ctr_methods=("last", "hard", "soft", "eta", "sdim", "twin"),
                epochs=5, batch_size=64, lr=1e-2, bootstrap=200)
QUICK = DemoSize(n_users=40, seq_len=(300, 1_000), n_items=5_000, n_targets_per_user=150, search_users=10,
                 search_queries=8, retrieve_users=4, k=16, ctr_methods=("hard", "soft", "eta", "sdim"),
                 epochs=4, batch_size=32, lr=1e-2, bootstrap=50)


# ----------------------------------------------------------------------------- progress


class _Progress:
    """A tqdm bar over the stages on a terminal; otherwise one plain line per stage."""

    def __init__(self, stages: Sequence[str], *, bar: bool | None, say: Callable[[str], None] | None) -> None:
        self.stages = list(stages)
        self.t0 = time.perf_counter()
        self._t = self.t0
        self._say = say
        self.seconds: dict[str, float] = {}
        use_bar = (sys.stdout.isatty() if bar is None else bar) and say is None
        self.bar = None
        if use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(self.stages), unit="stage", bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}]",
                            file=sys.stdout, leave=False)

    def write(self, text: str) -> None:
        if self._say is not None:
            self._say(text)
        elif self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def start(self, stage: str) -> None:
        self._t = time.perf_counter()
        if self.bar is not None:
            self.bar.set_description_str(f"[{self.stages.index(stage) + 1}/{len(self.stages)}] {stage}")

    def done(self, stage: str, line: str) -> None:
        dt = time.perf_counter() - self._t
        self.seconds[stage] = dt
        self.write(f"[{self.stages.index(stage) + 1}/{len(self.stages)}] {stage:<10} {line} ({dt:.1f}s)")
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- statistics


def paired_bootstrap(y: np.ndarray, p_ref: np.ndarray, p: np.ndarray, users: np.ndarray, *, n: int,
                     seed: int = 0) -> tuple[float, float, float]:
    """AUC(p_ref) − AUC(p) on the full sample and the standard errors of AUC(p) and of that
    difference over ``n`` resamples of *users* with replacement (samples of one user are
    correlated, so users are the unit). y (S,) 0/1; p_ref, p (S,) scores; users (S,) ids.
    Returns (difference, se of AUC(p), se of the difference)."""
    from gsu.ctr.metrics import auc

    y = np.asarray(y)
    uniq, inv = np.unique(np.asarray(users), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    ptr = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=len(uniq)))])
    rng = np.random.default_rng([seed, 17])
    a_s, d_s = [], []
    for _ in range(int(n)):
        pick = rng.integers(0, len(uniq), len(uniq))
        rows = np.concatenate([order[ptr[u]:ptr[u + 1]] for u in pick])
        yy = y[rows]
        if yy.min() == yy.max():
            continue
        a = auc(yy, p[rows])
        a_s.append(a)
        d_s.append(auc(yy, p_ref[rows]) - a)
    d = auc(y, p_ref) - auc(y, p)

    def sd(v: list[float]) -> float:
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    return float(d), sd(a_s), sd(d_s)


# ----------------------------------------------------------------------------- stages


def _search_stage(task: Any, index_path: Path, size: DemoSize, rng: np.random.Generator) -> dict[str, Any]:
    """Filtered top-10 per user with a fresh Filter per request, checked against the exact answer."""
    from gsu.index import Filter, FlatIndex, load

    emb = task.item_tables["ctr"].embeddings
    idx = load(index_path)
    flat = FlatIndex(emb.shape[1], "ip")
    flat.add(emb)
    store = task.store
    users = rng.choice(store.user_ids, size=min(size.search_users, store.n_users), replace=False)
    k = 10
    t_idx, t_flat, recall, sel = [], [], [], []
    checked = bad_ids = bad_exact = 0
    for i, u in enumerate(users):
        allowed = store.history(int(u)).items
        queries = emb[rng.choice(emb.shape[0], size=size.search_queries, replace=False)]
        t0 = time.perf_counter()
        res = idx.search(queries, k, filter=Filter.from_ids(allowed))  # the Filter is built per request, timed
        t1 = time.perf_counter()
        ex = flat.search(queries, k, filter=Filter.from_ids(allowed))
        t2 = time.perf_counter()
        if i > 0:  # the first request warms up (numba, faiss)
            t_idx.append((t1 - t0) * 1e3)
            t_flat.append((t2 - t1) * 1e3)
        uniq = np.unique(allowed)
        sel.append(len(uniq) / emb.shape[0])
        bad_ids += int((~np.isin(res.ids[res.ids >= 0], uniq)).sum())
        # the exact answer itself against a numpy brute force over the allowed rows
        S = queries.astype(np.float64) @ emb[uniq].astype(np.float64).T
        kk = min(k, len(uniq))
        top = -np.sort(-S, axis=1)[:, :kk]
        bad_exact += int((~np.isclose(ex.scores[:, :kk], top, atol=1e-4)).sum())
        checked += ex.ids.shape[0]
        for a, b in zip(res.ids, ex.ids):
            b = b[b >= 0]
            recall.append(len(set(a[a >= 0].tolist()) & set(b.tolist())) / max(len(b), 1))
    return {"index": type(idx).__name__, "queries": checked, "users": int(len(users)), "k": k,
            "selectivity_median": float(np.median(sel)), "recall": float(np.mean(recall)),
            "ms_per_request_index": float(np.median(t_idx)), "ms_per_request_exact": float(np.median(t_flat)),
            "ids_outside_filter": bad_ids, "exact_mismatches": bad_exact}


def _retrieval_methods(task: Any, index: Any, k: int) -> dict[str, Any]:
    from gsu.ctr.pipeline import ETA_BITS, SDIM_HASHES, SDIM_TAU
    from gsu.retrieval.lsh import SDIM, SimHashTopK
    from gsu.retrieval.methods import Exact, HardSearch, Hybrid, SoftSearch

    ctr, content = task.item_tables["ctr"], task.item_tables["content"]
    return {
        "Exact": Exact(ctr, k=k),
        "SIM-hard": HardSearch(ctr, k=k),
        "SIM-soft (scan)": SoftSearch(ctr, k=k, metric="ip"),
        "SIM-soft (index)": SoftSearch(ctr, k=k, metric="ip", index=index, exact_below=0),
        "MUSE-cosine": SoftSearch(content, k=k, metric="cosine"),
        f"ETA ({ETA_BITS} bits)": SimHashTopK(ctr, k=k, n_bits=ETA_BITS),
        "SDIM": SDIM(ctr, n_hashes=SDIM_HASHES, tau=SDIM_TAU),
        "Hybrid hard+soft": Hybrid([HardSearch(ctr, k=k), SoftSearch(ctr, k=k, metric="ip")], k=k),
    }


def _retrieve_stage(task: Any, index_path: Path, size: DemoSize) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every GSU method on the test requests of the longest users: recall@k and attention mass
    against ``Exact``, median ms per request; checks Exact against numpy and the time cut."""
    from gsu.index import load
    from gsu.retrieval.quality import attention_mass_many, attention_vectors, cosine, recall_rows

    k = size.k
    index = load(index_path)
    methods = _retrieval_methods(task, index, k)
    exact = methods["Exact"]
    temp = float(task.info["attention_temperature"])
    smp = task.samples
    test = task.split("test")
    users_all = smp["user"][test]
    lengths = {int(u): len(task.store.history(int(u))) for u in np.unique(users_all)}
    users = sorted(lengths, key=lambda u: -lengths[u])[: size.retrieve_users]
    times: dict[str, list[float]] = {m: [] for m in methods}
    rec: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    mass: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    sdim_cos: list[np.ndarray] = []
    n_targets = after_cut = exact_bad = 0
    for i, u in enumerate([users[0], *users]):  # the first pass warms up every method (numba)
        warm = i == 0
        h = task.store.history(u)
        rows = test[users_all == u]
        tg, tt = smp["target"][rows], smp["time"][rows]
        cut = np.searchsorted(h.timestamps, tt, side="left")  # behaviors strictly before each target
        out = {}
        for name, m in methods.items():
            t0 = time.perf_counter()
            out[name] = m.retrieve(h, tg, target_time=tt)
            if not warm:
                times[name].append((time.perf_counter() - t0) * 1e3)
        if warm:
            continue
        n_targets += len(tg)
        truth = out["Exact"]
        # Exact against numpy: scores of the k best visible behaviors, row by row
        E = task.item_tables["ctr"].embeddings
        for r in range(min(len(tg), 8)):
            s = E[h.items[: cut[r]]].astype(np.float64) @ E[tg[r]].astype(np.float64)
            top = -np.sort(-s)[: min(k, cut[r])]
            got = truth.scores[r][truth.mask[r]]
            exact_bad += int(len(got) != len(top) or not np.allclose(np.sort(got)[::-1], top, atol=1e-4))
        positions = {}
        for name, res in out.items():
            if name == "SDIM":
                sdim_cos.append(cosine(res.vectors, attention_vectors(exact, h, tg, target_time=tt, temperature=temp)))
                continue
            p = np.where(res.positions >= 0, res.positions, -1)
            after_cut += int(((p >= cut[:, None]) & (p >= 0)).sum())
            positions[name] = p
            fs = exact.score_positions(h, tg, p)
            rec[name].append(recall_rows(p, truth.positions, found_scores=fs, true_scores=truth.scores))
        for name, ms in attention_mass_many(exact, h, tg, positions, target_time=tt, temperature=temp).items():
            mass[name].append(ms)
    rows = []
    for name in methods:
        r = {"method": name, "k": None if name == "SDIM" else k, "ms_per_request": float(np.median(times[name])),
             "recall": float(np.mean(np.concatenate(rec[name]))) if rec[name] else float("nan"),
             "attention_mass": float(np.mean(np.concatenate(mass[name]))) if mass[name] else float("nan")}
        if name == "SDIM":
            r["cosine_to_exact_attention"] = float(np.mean(np.concatenate(sdim_cos)))
        rows.append(r)
    info = {"users": len(users), "targets": n_targets, "k": k,
            "mean_history": float(np.mean([lengths[u] for u in users])),
            "positions_after_cut": after_cut, "exact_mismatches": exact_bad, "temperature": temp}
    return rows, info


def _ctr_stage(task: Any, size: DemoSize, seed: int, progress: _Progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Full attention and each method over the same ESU; paired bootstrap SEs over test users."""
    from gsu.ctr.baseline import base_rate_baseline
    from gsu.ctr.experiment import best_possible_auc, cached_views, new_model, retrieval_quality
    from gsu.ctr.pipeline import attention_flops, method_label
    from gsu.ctr.metrics import auc, logloss
    from gsu.ctr.train import TrainConfig, fit, predict

    cfg = TrainConfig(epochs=size.epochs, batch_size=size.batch_size, lr=size.lr, seed=seed, progress=False)
    smp = task.samples
    results: list[dict[str, Any]] = []
    preds: dict[str, np.ndarray] = {}
    full_model = None
    y_test = users_test = ref_rows = None
    for method in ("full", *size.ctr_methods):
        t0 = time.perf_counter()
        views, rsec = cached_views(task, method, size.k, reference=full_model)
        model = new_model(task, method, seed=seed)
        fr = fit(model, task, views["train"], views["val"], config=cfg)
        p = predict(model, task, views["test"], batch_size=cfg.eval_batch_size)
        test_rows = views["test"].samples
        if ref_rows is None:
            ref_rows, y_test, users_test = test_rows, smp["label"][test_rows], smp["user"][test_rows]
        elif not np.array_equal(test_rows, ref_rows):
            raise RuntimeError("demo: the test views of the methods disagree on their rows")
        preds[method] = p
        if method == "full":
            full_model = model
        q = retrieval_quality(task, views["test"], k=size.k, n_samples=1_000, seed=seed) if method != "full" \
            else {"recall": 1.0, "attention_mass": 1.0}
        results.append({"method": method, "label": method_label(method), "k": None if method in ("full", "sdim") else size.k,
                        "auc": auc(y_test, p), "logloss": logloss(y_test, p),
                        "recall": q["recall"], "attention_mass": q["attention_mass"],
                        "attention_flops": attention_flops(model, views["test"]),
                        "epochs_run": len(fr.history), "best_epoch": fr.best_epoch, "retrieval_seconds": rsec,
                        "seconds": time.perf_counter() - t0})
        progress.write(f"    {method_label(method):<15} AUC {results[-1]['auc']:.4f}  epochs {len(fr.history)} "
                       f"(best {fr.best_epoch})  {results[-1]['seconds']:.1f}s")
    full_flops = results[0]["attention_flops"]
    for r in results:
        d, se_auc, se_d = paired_bootstrap(y_test, preds["full"], preds[r["method"]], users_test, n=size.bootstrap, seed=seed)
        r["auc_se"] = se_auc
        r["auc_lost"] = None if r["method"] == "full" else d
        r["auc_lost_se"] = None if r["method"] == "full" else se_d
        r["flops_ratio"] = full_flops / r["attention_flops"]
    oracle = best_possible_auc(task)
    base = base_rate_baseline(task)
    full = results[0]
    best = max(results, key=lambda r: r["auc"])
    info = {"oracle": oracle, "base_rate_auc": base["auc"], "full_auc": full["auc"], "full_gap_to_oracle": oracle - full["auc"],
            "n_train": int(len(task.split("train"))), "n_val": int(len(task.split("val"))), "n_test": int(len(y_test)),
            "test_users": int(len(np.unique(users_test))), "best_method": best["label"],
            # full attention is "within noise" of the best when its paired deficit is under two standard errors
            "full_is_best_within_noise": bool(best is full or (-best["auc_lost"]) <= 2 * best["auc_lost_se"]),
            "bootstrap": size.bootstrap, "train_config": cfg.to_dict()}
    return results, info


# ----------------------------------------------------------------------------- output


def _label(r: dict[str, Any]) -> str:
    return r["label"] + ("" if r["k"] is None else f" k={r['k']}")


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_retrieval(rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> str:
    """The retrieval table: method, k, recall@k and attention mass against Exact, ms per request."""
    head = f"  {'method':<18} {'k':>4} {'recall@k':>9} {'attn mass':>9} {'ms/request':>10}"
    lines = [head, "  " + "-" * (len(head) - 2)]
    for r in rows:
        note = f"   (cosine {r['cosine_to_exact_attention']:.3f} to exact attention output)" if "cosine_to_exact_attention" in r else ""
        lines.append(f"  {r['method']:<18} {_fmt(r['k'], 'd'):>4} {_fmt(r['recall'], '.3f'):>9} "
                     f"{_fmt(r['attention_mass'], '.3f'):>9} {r['ms_per_request']:>10.2f}{note}")
    return "\n".join(lines)


def format_ctr(rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> str:
    """The CTR table: method, k, test AUC ± bootstrap SE, AUC lost vs full attention ± paired SE,
    logloss, recall, attention mass, attention FLOPs and the ratio to full attention."""
    head = (f"  {'method':<15} {'k':>4} {'test AUC':>16} {'AUC lost vs full':>18} {'logloss':>7} {'recall':>6} "
            f"{'mass':>5} {'attn FLOPs':>10} {'x fewer':>7}")
    lines = [head, "  " + "-" * (len(head) - 2)]
    for r in rows:
        lost = "-" if r["auc_lost"] is None else f"{r['auc_lost']:+.4f} ± {r['auc_lost_se']:.4f}"
        lines.append(f"  {r['label']:<15} {_fmt(r['k'], 'd'):>4} {r['auc']:.4f} ± {r['auc_se']:.4f} {lost:>18} "
                     f"{r['logloss']:>7.4f} {_fmt(r['recall'], '.3f'):>6} {_fmt(r['attention_mass'], '.3f'):>5} "
                     f"{r['attention_flops']:>10.3g} {r['flops_ratio']:>7.1f}")
    lines.append(f"  {'oracle':<15} {'-':>4} {info['oracle']:.4f}            (the generator's true click probability)")
    lines.append(f"  {'base rate':<15} {'-':>4} {info['base_rate_auc']:.4f}            (logistic regression on the user's past like rate)")
    lines.append(f"  ± : standard error over {info['bootstrap']} resamples of test users (one seed; 'AUC lost' is paired)")
    return "\n".join(lines)


def plot_demo(retrieval: Sequence[dict[str, Any]], ctr: Sequence[dict[str, Any]], ctr_info: dict[str, Any],
              path: Path, *, title: str) -> Path:
    """Two panels: recall@k against ms per request (log axis) per retrieval method; test AUC
    against attention FLOPs per sample (log axis) with full attention and the oracle as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.6))
    cmap = plt.get_cmap("tab10")
    for i, r in enumerate(r for r in retrieval if not math.isnan(r["recall"])):
        ax1.plot(r["ms_per_request"], r["recall"], "o", ms=8, color=cmap(i % 10),
                 label=f"{r['method']}: {r['recall']:.2f} @ {r['ms_per_request']:.2f} ms")
    ax1.set_xscale("log")
    ax1.set_xlabel("milliseconds per request (one user, all its test targets; log scale)")
    ax1.set_ylabel(f"recall@{retrieval[0]['k']} against Exact")
    ax1.set_ylim(-0.05, 1.08)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.set_title("retrieval: recall against latency (SDIM returns no positions)", fontsize=10)
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    # methods with equal attention FLOPs (same k) are spread sideways so that no point hides another
    groups: dict[float, list[int]] = {}
    for i, r in enumerate(ctr):
        if r["method"] != "full":
            groups.setdefault(round(math.log10(r["attention_flops"]), 2), []).append(i)
    dodge = {i: 1.07 ** (j - (len(g) - 1) / 2) for g in groups.values() for j, i in enumerate(g)}
    for i, r in enumerate(ctr):
        if r["method"] == "full":
            continue
        lab = _label(r)
        ax2.errorbar(r["attention_flops"] * dodge[i], r["auc"], yerr=r["auc_se"], fmt="o", ms=7, capsize=3,
                     color=cmap(i % 10), label=f"{lab}: {r['auc']:.4f} (lost {r['auc_lost']:+.4f})")
    full = ctr[0]
    ax2.axhline(full["auc"], color="black", lw=1.2, label=f"full attention: {full['auc']:.4f} at {full['attention_flops']:.3g} FLOPs")
    ax2.plot(full["attention_flops"], full["auc"], "s", color="black", ms=7)
    ax2.axhline(ctr_info["oracle"], color="grey", ls="--", lw=1, label=f"oracle: {ctr_info['oracle']:.4f}")
    ax2.set_xscale("log")
    ax2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_xlabel("attention FLOPs per sample (log scale; equal-FLOPs points spread sideways)")
    ax2.set_ylabel("test AUC (± bootstrap SE over users)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.set_title("CTR: AUC against attention cost", fontsize=10)
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r, default=float) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the demo


def run_demo(*, out_dir: Path, quick: bool = False, seed: int = 0, threads: int = 1, progress: bool | None = None,
             say: Callable[[str], None] | None = None, size: DemoSize | None = None) -> dict[str, Any]:
    """Run the demo; returns ``{"size", "stages" (seconds per stage), "search", "retrieval",
    "retrieval_info", "ctr", "ctr_info", "files", "seconds"}``.

    out_dir: where ``items.npy``, ``items.gsu``, ``demo.jsonl`` and ``demo.png`` go.
    quick: the :data:`QUICK` sizes (a smoke run for CI) instead of :data:`FULL`.
    seed: seeds the data, the choice of users and queries, and training (same seed, same
    numbers, up to timings). threads: numba / BLAS / torch threads. progress: a bar (True),
    plain lines (False) or a bar only on a terminal (None). say: where lines go (default
    stdout). size: explicit sizes (overrides ``quick``).
    """
    import torch

    from gsu.ctr.data import synthetic_task
    from gsu.datasets import write_embeddings

    size = size or (QUICK if quick else FULL)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = int(threads)
    import numba

    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits

        limiter: Any = threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover
        limiter = None
    pg = _Progress(STAGES, bar=progress, say=say)
    rng = np.random.default_rng([seed, 2024])
    out: dict[str, Any] = {"size": asdict(size), "seed": seed, "threads": threads}
    try:
        pg.start("data")
        task = synthetic_task(n_users=size.n_users, seq_len=size.seq_len, n_items=size.n_items,
                              n_targets_per_user=size.n_targets_per_user, seed=seed)
        st = task.store
        pg.done("data", f"{st.n_users} users, {st.n_behaviors:,} behaviors ({size.seq_len[0]:,}-{size.seq_len[1]:,} per user), "
                        f"{size.n_items:,} items, {task.info['n_samples']:,} click samples")

        pg.start("embeddings")
        emb = task.item_tables["ctr"].embeddings
        items_path = out_dir / "items.npy"
        write_embeddings(items_path, emb)
        pg.done("embeddings", f"{emb.shape[0]:,} x {emb.shape[1]} float32 item embeddings -> {items_path}")

        pg.start("build")
        from gsu.datasets.build import build_index

        index_path = out_dir / "items.gsu"
        argv = ["build", str(items_path), str(index_path), "--kind", "filtered", "--metric", "ip"]
        # what `gsu build` runs (the command line's own function), then an atomic save
        idx = build_index(items_path, "filtered", metric="ip")
        idx.save(index_path)
        pg.done("build", f"gsu {' '.join(argv[:1] + [Path(a).name if '/' in a else a for a in argv[1:]])}: "
                         f"built {type(idx).__name__} with {idx.ntotal} items")
        del idx

        pg.start("search")
        s = _search_stage(task, index_path, size, rng)
        out["search"] = s
        pg.done("search", f"{s['users']} users x {s['queries'] // s['users']} queries, a new Filter from each user's "
                          f"behavior items (median {100 * s['selectivity_median']:.1f}% of the catalog): recall@10 "
                          f"{s['recall']:.3f} vs exact, {s['ms_per_request_index']:.2f} ms/request "
                          f"(exact {s['ms_per_request_exact']:.2f}); exact answer = numpy: "
                          f"{'yes' if s['exact_mismatches'] == 0 else 'NO'}; ids outside the filter: {s['ids_outside_filter']}")

        pg.start("retrieve")
        rrows, rinfo = _retrieve_stage(task, index_path, size)
        out["retrieval"], out["retrieval_info"] = rrows, rinfo
        pg.done("retrieve", f"{len(rrows)} methods, {rinfo['users']} users (mean history {rinfo['mean_history']:,.0f}), "
                            f"{rinfo['targets']:,} targets, k={rinfo['k']}; Exact = numpy: "
                            f"{'yes' if rinfo['exact_mismatches'] == 0 else 'NO'}; behaviors at or after a target's "
                            f"time: {rinfo['positions_after_cut']}")

        pg.start("table")
        pg.done("table", "recall@k and attention mass against Exact, median latency per request:\n"
                + format_retrieval(rrows, rinfo))

        pg.start("ctr")
        crows, cinfo = _ctr_stage(task, size, seed, pg)
        out["ctr"], out["ctr_info"] = crows, cinfo
        pg.done("ctr", f"ESU trained over full attention and {len(crows) - 1} methods on {cinfo['n_train']:,} samples, "
                       f"tested on {cinfo['n_test']:,} ({cinfo['test_users']} users):\n" + format_ctr(crows, cinfo))

        pg.start("report")
        jsonl, png = out_dir / "demo.jsonl", out_dir / "demo.png"
        recs = ([{"kind": "search", **out["search"]}]
                + [{"kind": "retrieval", **r} for r in rrows] + [{"kind": "retrieval_info", **rinfo}]
                + [{"kind": "ctr", **r} for r in crows] + [{"kind": "ctr_info", **cinfo}]
                + [{"kind": "run", "size": asdict(size), "seed": seed, "threads": threads, "stages": pg.seconds}])
        _write_jsonl(jsonl, recs)
        plot_demo(rrows, crows, cinfo, png, title=f"gsu demo: {st.n_users} users, {st.n_behaviors:,} behaviors, "
                                                  f"k = {size.k}, seed {seed}, {threads} thread(s)")
        out["files"] = {"embeddings": str(items_path), "index": str(index_path), "jsonl": str(jsonl), "figure": str(png)}
        pg.done("report", f"wrote {jsonl} and {png}")
    finally:
        pg.close()
        if limiter is not None:
            limiter.restore_original_limits()
        torch.set_num_threads(torch_before)  # a call from Python leaves the caller's thread settings as they were
        numba.set_num_threads(numba_before)
    out["stages"] = dict(pg.seconds)
    out["seconds"] = time.perf_counter() - pg.t0
    best_r = max((r for r in rrows if r["method"] != "Exact" and not math.isnan(r["recall"])),
                 key=lambda r: (r["recall"], -r["ms_per_request"]))
    fast = [r for r in rrows if r["method"] != "Exact" and not math.isnan(r["recall"])
            and r["ms_per_request"] < next(x for x in rrows if x["method"] == "Exact")["ms_per_request"]]
    best_fast = max(fast, key=lambda r: r["recall"]) if fast else best_r
    best_gsu = max(crows[1:], key=lambda r: r["auc"]) if len(crows) > 1 else None
    exact_ms = next(x for x in rrows if x["method"] == "Exact")["ms_per_request"]
    summary = [
        f"Summary ({out['seconds']:.0f}s): filtered search with a per-user filter returned only allowed items, recall@10 "
        f"{s['recall']:.3f} against the exact answer at {s['ms_per_request_index']:.2f} ms per request.",
        f"Retrieval: Exact takes {exact_ms:.1f} ms per request; {best_fast['method']} keeps recall@{size.k} "
        f"{best_fast['recall']:.2f} and {best_fast['attention_mass']:.2f} of the attention mass in "
        f"{best_fast['ms_per_request']:.1f} ms.",
        f"CTR: full attention AUC {cinfo['full_auc']:.4f}, {cinfo['full_gap_to_oracle']:.4f} below the oracle "
        f"({cinfo['n_train']:,} training samples, one seed); "
        + (f"best GSU {_label(best_gsu)} loses {best_gsu['auc_lost']:+.4f} ± {best_gsu['auc_lost_se']:.4f} "
           f"at {best_gsu['flops_ratio']:.0f}x fewer attention FLOPs" if best_gsu else "")
        + ("; full attention is the best within noise" if cinfo["full_is_best_within_noise"]
           else "; full attention is NOT the best beyond noise: too little training for a meaningful ordering") + ".",
        f"Files: {out_dir}/ (items.npy, items.gsu, demo.jsonl, demo.png).",
    ]
    out["summary"] = summary
    for line in summary:
        (say or print)(line)
    return out
