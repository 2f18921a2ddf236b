"""The CTR comparison shared by ``gsu bench ctr`` and ``gsu demo``: every retrieval method
feeds the same compact ESU, and each is compared with full-sequence exact attention on the
same samples.

:func:`run_comparison` trains one model per (method, k, seed) and returns one record per
run; :func:`aggregate` turns them into mean ± std rows; :func:`format_rows` prints the
table; :func:`plot_rows` draws test AUC against attention FLOPs per sample;
:func:`done_when` evaluates the issue's acceptance check.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gsu.ctr.data import CTRTask
from gsu.ctr.methods import LABELS, attention_flops, method_views, model_config
from gsu.ctr.metrics import auc
from gsu.ctr.model import build_model
from gsu.ctr.train import TrainConfig, evaluate, fit

logger = logging.getLogger(__name__)

__all__ = ["run_comparison", "aggregate", "format_rows", "plot_rows", "done_when", "best_possible_auc"]

RETRIEVAL_METHODS = ("last", "hard", "soft", "muse", "eta", "sdim", "twin")


def best_possible_auc(task: CTRTask, split: str = "test") -> float | None:
    """AUC of the true click probability on ``split`` (synthetic tasks), else None."""
    if "prob" not in task.samples:
        return None
    idx = task.split(split)
    return auc(task.samples["label"][idx], task.samples["prob"][idx])


def run_comparison(
    task: CTRTask,
    *,
    methods: Sequence[str] = ("full", *RETRIEVAL_METHODS),
    ks: Sequence[int] = (16, 64),
    seeds: Sequence[int] = (0, 1, 2),
    train_config: TrainConfig = TrainConfig(progress=False),
    max_len: int = 10_000,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and test one ESU per (method, k, seed) on ``task``; return one record per run.

    Each record: dataset, method, label, k (None for full / sdim), seed, test auc / gauc /
    logloss, attention_flops (per sample), mean_behaviors, train_samples_per_s,
    infer_samples_per_s, retrieval_seconds (whole task, all splits), best_epoch, n_train,
    n_test. ``twin`` retrieves with the same seed's full-attention model, so ``full`` runs
    first. Methods whose retrieval class is missing from this build are skipped with a note.
    """
    records: list[dict[str, Any]] = []
    refs: dict[int, Any] = {}
    methods = list(methods)
    if "twin" in methods and "full" not in methods:
        raise ValueError("run_comparison: 'twin' needs 'full' (its reference attention) in methods")
    order = (["full"] if "full" in methods else []) + [m for m in methods if m != "full"]
    for method in order:
        for k in ([max_len] if method in ("full", "sdim") else list(ks)):
            shared = None
            for seed in seeds:
                t0 = time.perf_counter()
                try:
                    if method == "twin" or shared is None:
                        shared = method_views(task, method, k=k, reference=refs.get(seed), max_len=max_len, seed=0)
                except ImportError as e:
                    say(f"  {LABELS[method]}: skipped, retrieval method not available in this build ({e})")
                    break
                views, vinfo = shared
                cfg = train_config.__class__(**{**train_config.to_dict(), "seed": int(seed)})
                model = build_model(model_config(task, method), item_vectors=task.item_vectors, seed=int(seed))
                res = fit(model, task, views["train"], views["val"], config=cfg)
                test = evaluate(model, task, views["test"], batch_size=cfg.eval_batch_size,
                                max_behaviors_per_chunk=cfg.max_behaviors_per_chunk)
                if method == "full":
                    refs[int(seed)] = model
                rec = {
                    "dataset": task.name, "method": method, "label": LABELS[method],
                    "k": None if method in ("full", "sdim") else int(k), "seed": int(seed),
                    "auc": test["auc"], "gauc": test["gauc"], "logloss": test["logloss"],
                    "attention_flops": attention_flops(model, views["test"]),
                    "mean_behaviors": views["test"].mean_behaviors(),
                    "train_samples_per_s": res.train_samples_per_s, "infer_samples_per_s": test["infer_samples_per_s"],
                    "retrieval_seconds": vinfo["retrieval_seconds"], "best_epoch": res.best_epoch,
                    "epochs_run": len(res.history), "n_train": len(views["train"]), "n_test": len(views["test"]),
                    "wall_seconds": time.perf_counter() - t0,
                }
                records.append(rec)
                say(f"  {vinfo['label']:<28} seed {seed}: AUC {rec['auc']:.4f}  GAUC {rec['gauc']:.4f}  "
                    f"logloss {rec['logloss']:.4f}  ({rec['wall_seconds']:.1f}s)")
    return records


def _ms(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not (isinstance(x, float) and math.isnan(x))], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, method, k): mean and sample std (ddof=1) over seeds of AUC, GAUC,
    logloss; median throughputs; attention FLOPs; number of seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"], r["k"]), []).append(r)
    rows = []
    for (ds, method, k), rs in groups.items():
        row: dict[str, Any] = {"dataset": ds, "method": method, "label": rs[0]["label"], "k": k, "seeds": len(rs)}
        for m in ("auc", "gauc", "logloss"):
            row[m], row[m + "_std"] = _ms([r[m] for r in rs])
        row["attention_flops"] = float(np.mean([r["attention_flops"] for r in rs]))
        row["mean_behaviors"] = float(np.mean([r["mean_behaviors"] for r in rs]))
        row["train_samples_per_s"] = float(np.median([r["train_samples_per_s"] for r in rs]))
        row["infer_samples_per_s"] = float(np.median([r["infer_samples_per_s"] for r in rs]))
        row["retrieval_seconds"] = float(np.median([r["retrieval_seconds"] for r in rs]))
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict[str, Any]], *, best_auc: dict[str, float | None] | None = None) -> str:
    """A fixed-width table: method, k, AUC, GAUC, logloss (mean ± std), FLOPs/sample, samples/s."""
    head = (f"{'dataset':<10} {'method':<22} {'k':>5} {'AUC':>16} {'GAUC':>16} {'logloss':>16} "
            f"{'attn FLOPs':>11} {'behav.':>7} {'train/s':>8} {'infer/s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        k = "-" if r["k"] is None else str(r["k"])
        lines.append(
            f"{r['dataset']:<10} {r['label']:<22} {k:>5} {r['auc']:.4f} ± {r['auc_std']:.4f} "
            f"{r['gauc']:.4f} ± {r['gauc_std']:.4f} {r['logloss']:.4f} ± {r['logloss_std']:.4f} "
            f"{r['attention_flops']:>11.3g} {r['mean_behaviors']:>7.0f} {r['train_samples_per_s']:>8.0f} "
            f"{r['infer_samples_per_s']:>8.0f}")
    for ds, b in (best_auc or {}).items():
        if b is not None:
            lines.append(f"{ds}: best possible test AUC (true click probability) = {b:.4f}")
    return "\n".join(lines)


def done_when(rows: Sequence[dict[str, Any]], *, dataset: str = "synthetic", k: int = 64,
              tolerance: float = 0.002, flops_ratio: float = 10.0) -> dict[str, Any] | None:
    """The issue's check: the best retrieval method at ``k`` is within ``tolerance`` AUC of
    full-sequence attention (or better) with at least ``flops_ratio`` x fewer attention FLOPs.
    SDIM (no k) counts as a k-method. The oracle ``exact`` row is not a GSU method and is
    excluded. Returns None when the rows lack full attention or any method at ``k``."""
    full = [r for r in rows if r["dataset"] == dataset and r["method"] == "full"]
    cands = [r for r in rows if r["dataset"] == dataset and r["method"] in RETRIEVAL_METHODS
             and (r["k"] == k or r["method"] == "sdim")]
    if not full or not cands:
        return None
    f = full[0]
    best = max(cands, key=lambda r: r["auc"])
    gap = f["auc"] - best["auc"]
    ratio = f["attention_flops"] / best["attention_flops"]
    return {"dataset": dataset, "k": k, "best_method": best["label"], "best_auc": best["auc"], "full_auc": f["auc"],
            "auc_gap": gap, "flops_ratio": ratio, "passed": bool(gap <= tolerance and ratio >= flops_ratio)}


def plot_rows(rows: Sequence[dict[str, Any]], path: str | Path, *, best_auc: dict[str, float | None] | None = None,
              title: str = "") -> Path:
    """Test AUC (mean ± std over seeds) against attention FLOPs per sample (log x), one panel
    per dataset; the dashed line is the best possible AUC when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.8), squeeze=False)
    markers = {16: "o", 64: "s", None: "D"}
    cmap = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, ds in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == ds):
            c = cmap(methods.index(r["method"]) % 10)
            lab = r["label"] + ("" if r["k"] is None else f" k={r['k']}")
            ax.errorbar(r["attention_flops"], r["auc"], yerr=r["auc_std"], fmt=markers.get(r["k"], "^"), color=c,
                        label=lab, capsize=3, markersize=6)
        b = (best_auc or {}).get(ds)
        if b is not None:
            ax.axhline(b, ls="--", color="grey", lw=1, label="best possible (true prob)")
        ax.set_xscale("log")
        ax.set_xlabel("attention FLOPs per sample")
        ax.set_ylabel("test AUC (mean ± std over seeds)")
        ax.set_title(f"{ds}{': ' + title if title else ''}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
