"""The CTR comparison shared by ``gsu bench ctr``, ``gsu train --method all`` and ``gsu demo``:
every retrieval method feeds the same compact ESU, and each is compared with full-sequence
exact attention on the same samples.

:func:`run_comparison` trains one model per (method, k, seed) and returns one record per run
(appending each to a JSON-lines file as it finishes, and skipping runs already there, so an
interrupted experiment resumes); :func:`retrieval_quality` measures each method's recall of the
exact top-k and the share of the true attention mass it keeps (tasks with a planted model);
:func:`aggregate` turns the records into mean ± std rows with the AUC lost against full
attention per seed; :func:`format_rows` prints the table; :func:`plot_rows` draws AUC against
k and against retrieval recall; :func:`done_when` evaluates the acceptance check.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gsu.ctr.data import BehaviorView, CTRTask, _atomic_savez, fingerprint, positions_view, prefix_view, sdim_view
from gsu.ctr.pipeline import LABELS, build_retriever, method_label, attention_flops, model_config, needs_reference
from gsu.ctr.metrics import auc
from gsu.ctr.model import build_model
from gsu.ctr.train import TrainConfig, evaluate, fit

logger = logging.getLogger(__name__)

__all__ = ["retrieval_oracle_auc", "run_comparison", "aggregate", "format_rows", "format_markdown", "plot_rows", "done_when", "best_possible_auc",
           "new_model", "cached_views", "retrieval_quality", "RETRIEVAL_METHODS"]

RETRIEVAL_METHODS = ("last", "hard", "soft", "muse", "eta", "sdim", "twin")


def best_possible_auc(task: CTRTask, split: str = "test") -> float | None:
    """AUC of the true click probability on ``split`` (the oracle; synthetic tasks), else None."""
    if "prob" not in task.samples:
        return None
    idx = task.split(split)
    return auc(task.samples["label"][idx], task.samples["prob"][idx])


def new_model(task: CTRTask, method: str, *, seed: int, **overrides: Any) -> Any:
    """A fresh ESU for ``method`` on ``task`` (the task's content vectors and item features)."""
    return build_model(model_config(task, method, **overrides), item_vectors=task.item_vectors,
                       item_features=task.item_features, seed=int(seed))


def task_key(task: CTRTask) -> str:
    return task.info.get("fingerprint") or fingerprint({"name": task.name, **{k: v for k, v in task.info.items()
                                                                               if isinstance(v, (int, float, str))}})


def cached_views(task: CTRTask, method: str, k: int, *, reference: Any = None, reference_tag: str = "",
                 max_len: int = 10_000, cache_dir: str | Path | None = None,
                 splits: Sequence[str] = ("train", "val", "test")) -> tuple[dict[str, BehaviorView], float]:
    """Views of ``splits`` for ``method`` at ``k`` and the retrieval wall time (s). Retrieved
    positions are kept in ``cache_dir/views/`` (keyed by the task, method, k and — for TWIN —
    ``reference_tag``) and reused: retrieval runs once per split, not once per seed."""
    from gsu.retrieval.batch import retrieve_batch

    label = method_label(method) + ("" if method in ("full", "sdim") else f" k={k}")
    if method in ("full", "last"):
        cap = max_len if method == "full" else k
        return {s: prefix_view(task, s, cap=cap, label=label) for s in splits}, 0.0
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "views" / f"{task_key(task)}-{method}-{k}{reference_tag}.npz"
    if path is not None and path.is_file():
        z = np.load(path)
        views = {}
        for s in splits:
            if method == "sdim":
                views[s] = sdim_view(task, s, z[s + "_v"], z[s + "_m"], label=label)
            else:
                views[s] = positions_view(task, s, z[s + "_p"], z[s + "_m"], label=label)
        return views, float(z["seconds"])
    r = build_retriever(task, method, k, reference=reference, seed=0)
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    views = {}
    smp = task.samples
    for s in splits:
        idx = task.split(s)
        res = retrieve_batch(r, task.store, smp["user"][idx], smp["target"][idx], target_time=smp["time"][idx],
                             k=None if method == "sdim" else k)
        if method == "sdim":
            views[s] = sdim_view(task, s, res.vectors, res.mask, label=label)
            arrays[s + "_v"], arrays[s + "_m"] = res.vectors, res.mask
        else:
            views[s] = positions_view(task, s, res.positions, res.mask, label=label)
            # positions index one user's history: int32 halves the cache (read back as int64)
            arrays[s + "_p"], arrays[s + "_m"] = res.positions.astype(np.int32), res.mask
    dt = time.perf_counter() - t0
    if path is not None:
        _atomic_savez(path, seconds=np.float64(dt), **arrays)
    return views, dt


def _view_positions(view: BehaviorView, rows: np.ndarray) -> np.ndarray:
    """(n, K) positions (-1 padded) of the behaviors view rows ``rows`` attend to."""
    if view.kind == "positions":
        return np.where(view.mask[rows], view.positions[rows], -1)
    vis = view.visible[rows]
    n = np.minimum(vis, view.cap)
    K = max(int(n.max()) if n.size else 1, 1)
    ar = np.arange(K)
    pos = (vis - n)[:, None] + ar[None, :]
    return np.where(ar[None, :] < n[:, None], pos, -1)


def retrieval_quality(task: CTRTask, view: BehaviorView, *, k: int, n_samples: int = 2_000,
                      seed: int = 0) -> dict[str, float]:
    """Recall@k of the exact top-k (planted attention scores, tie-tolerant) and the share of
    the planted softmax attention mass that ``view``'s behaviors carry, averaged over up to
    ``n_samples`` samples of the view (seeded). NaN when the task has no planted model or the
    view holds no positions (SDIM)."""
    from gsu.retrieval.methods import Exact
    from gsu.retrieval.quality import attention_mass, recall_rows

    temp = task.info.get("attention_temperature")
    if temp is None or view.kind == "sdim":
        return {"recall": float("nan"), "attention_mass": float("nan")}
    rng = np.random.default_rng([seed, 99])
    rows = np.sort(rng.choice(len(view), size=min(n_samples, len(view)), replace=False))
    exact = Exact(task.item_tables["ctr"], k=k)
    smp = task.samples
    rec, mass = [], []
    sidx = view.samples[rows]
    users = smp["user"][sidx]
    for u in np.unique(users):
        sel = rows[users == u]
        si = view.samples[sel]
        h = task.store.history(int(u))
        tg, tt = smp["target"][si], smp["time"][si]
        pos = _view_positions(view, sel)
        truth = exact.retrieve(h, tg, k=k, target_time=tt)
        fs = exact.score_positions(h, tg, pos)
        r = recall_rows(pos, truth.positions, found_scores=fs, true_scores=truth.scores)
        # recall of a set of K >= k positions against the top-k: hits capped at k
        rec.append(r)
        mass.append(attention_mass(exact, h, tg, pos, target_time=tt, temperature=float(temp)))
    return {"recall": float(np.mean(np.concatenate(rec))), "attention_mass": float(np.mean(np.concatenate(mass)))}


def retrieval_oracle_auc(task: CTRTask, view: BehaviorView, *, scale: float = 10.0, bias: float = -7.0,
                         check: int = 32) -> float | None:
    """AUC of the **planted click model restricted to the behaviors ``view`` holds**: for each
    sample, ``sigmoid(a · Σ_i softmax_i(s_i/τ) s_i + b)`` over only the retrieved behaviors
    ``i`` (``s_i = <e_target, e_i>`` with the generator's embeddings ``task.item_vectors``,
    τ = ``task.info["attention_temperature"]``, ``a`` = ``scale``, ``b`` = ``bias``: the
    generator's label_scale and label_bias). This is the AUC the true model itself would reach
    if it could see only what the GSU retrieved: what retrieval costs before any training.
    On a view holding every visible behavior it equals :func:`best_possible_auc`.

    None for tasks without a planted model and for SDIM views (no positions). ``check``: that
    many samples are first recomputed over their whole visible history and compared with the
    task's recorded true probabilities (a ValueError if ``scale``/``bias`` are not the
    generator's).
    """
    from gsu.datasets import planted_attention_prob

    temp = task.info.get("attention_temperature")
    if temp is None or "prob" not in task.samples or view.kind == "sdim":
        return None
    emb = np.asarray(task.item_vectors, dtype=np.float32)
    smp = task.samples
    if check:
        rows = np.linspace(0, len(view) - 1, min(check, len(view))).astype(np.int64)
        for r in rows:
            si = int(view.samples[r])
            h = task.store.history(int(smp["user"][si]))
            vis = int(view.visible[r])
            p = planted_attention_prob(emb[h.items[:vis]], emb[smp["target"][si:si + 1]], temperature=float(temp),
                                       scale=scale, bias=bias)[0]
            if abs(float(p) - float(smp["prob"][si])) > 1e-3:
                raise ValueError(f"retrieval_oracle_auc: scale={scale}, bias={bias} do not reproduce the task's true "
                                 f"probabilities (sample {si}: {float(p):.5f} vs {float(smp['prob'][si]):.5f})")
    out = np.zeros(len(view), np.float32)
    users = smp["user"][view.samples]
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        sel = order[a:b]
        h = task.store.history(int(users[sel[0]]))
        pos = _view_positions(view, sel)                            # (n, K), -1 = pad
        mask = pos >= 0
        he = emb[h.items[np.where(mask, pos, 0)]]                   # (n, K, d)
        s = np.einsum("nkd,nd->nk", he, emb[smp["target"][view.samples[sel]]])
        z = np.where(mask, s / np.float32(temp), -np.inf)
        zmax = z.max(axis=1, keepdims=True)
        empty = ~np.isfinite(zmax[:, 0])
        zmax[empty] = 0.0
        e = np.exp(z - zmax)
        att = np.where(empty, 0.0, (e * np.where(mask, s, 0)).sum(axis=1) / np.where(empty, 1.0, e.sum(axis=1)))
        out[sel] = 1.0 / (1.0 + np.exp(-(scale * att + bias)))
    return auc(smp["label"][view.samples], out)


def load_records(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _append(path: Path | None, rec: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec, default=float) + "\n")
        f.flush()


def run_comparison(
    task: CTRTask,
    *,
    methods: Sequence[str] = ("full", *RETRIEVAL_METHODS),
    ks: Sequence[int] = (16, 64, 256),
    seeds: Sequence[int] = (0, 1, 2),
    train_config: TrainConfig = TrainConfig(progress=False),
    max_len: int = 10_000,
    cache_dir: str | Path | None = None,
    records_path: str | Path | None = None,
    quality_samples: int = 2_000,
    say: Callable[[str], None] = print,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Train and test one ESU per (method, k, seed) on ``task``; return one record per run.

    Each record: dataset, task key, method, label, k (None for full / sdim), seed, test auc /
    gauc / logloss, recall and attention_mass (test sample, planted tasks), attention_flops
    (per sample), mean_behaviors, train / inference samples per second, retrieval_seconds
    (all splits, once per method and k), best_epoch, epochs_run, n_train, n_test. ``twin``
    retrieves with the same seed's full-attention model, so ``full`` runs first. With
    ``records_path`` every record is appended as it finishes and runs already recorded (same
    task, training settings, method, k, seed) are skipped; with ``cache_dir`` retrieved
    positions and the trained models (``models/``) are kept there. ``device``: where training
    and evaluation run (a torch device string, default "cpu"; models end on the CPU).
    """
    import torch

    from gsu.ctr.checkpoint import load_checkpoint, save_checkpoint

    rpath = Path(records_path) if records_path is not None else None
    tkey = task_key(task)
    tc = train_config.to_dict()
    tc.pop("progress", None)
    tc.pop("seed", None)
    ckey = fingerprint(tc)
    done = {(r["method"], r["k"], r["seed"]): r for r in load_records(rpath)
            if r.get("kind") == "run" and r.get("task") == tkey and r.get("train_key") == ckey}
    records: list[dict[str, Any]] = []
    methods = list(methods)
    if any(needs_reference(task, m) for m in methods) and "full" not in methods:
        raise ValueError("run_comparison: TWIN (and, without item embeddings, SIM-soft / ETA / SDIM) needs 'full' "
                         "(its reference model) in methods")
    order = (["full"] if "full" in methods else []) + [m for m in methods if m != "full"]
    mdir = Path(cache_dir) / "models" if cache_dir is not None else None
    refs: dict[int, Any] = {}

    def ref_model(seed: int) -> Any:
        if seed not in refs and mdir is not None and (mdir / f"{tkey}-{ckey}-full-s{seed}.pt").is_file():
            refs[seed], _ = load_checkpoint(mdir / f"{tkey}-{ckey}-full-s{seed}.pt")
        return refs.get(seed)

    # full attention first (TWIN's reference), then every method k by k in the order given,
    # so an interrupted run has whole rows for the first k
    configs = [("full", max_len)] if "full" in order else []
    for k in ks:
        configs += [(m, k) for m in order if m not in ("full", "sdim")]
        if "sdim" in order and ("sdim", max_len) not in configs:
            configs.append(("sdim", max_len))
    prev_method = None
    for method, k in configs:
        if method != prev_method:
            shared = None
            quality = None
        prev_method = method
        kk = None if method in ("full", "sdim") else int(k)
        for seed in seeds:
            if (method, kk, int(seed)) in done:
                records.append(done[(method, kk, int(seed))])
                continue
            t0 = time.perf_counter()
            try:
                if needs_reference(task, method):
                    ref = ref_model(int(seed))
                    if ref is None:
                        raise ValueError(f"{method}: no full-attention reference model for seed {seed}")
                    views, rsec = cached_views(task, method, k, reference=ref, reference_tag=f"-{ckey}-s{seed}",
                                               max_len=max_len, cache_dir=cache_dir)
                else:
                    if shared is None:
                        shared = cached_views(task, method, k, max_len=max_len, cache_dir=cache_dir)
                    views, rsec = shared
            except ImportError as e:
                say(f"  {method_label(method)}: skipped, retrieval method not available in this build ({e})")
                break
            if quality is None or needs_reference(task, method):
                quality = retrieval_quality(task, views["test"], k=(64 if kk is None else kk),
                                            n_samples=quality_samples)
            cfg = TrainConfig(**{**train_config.to_dict(), "seed": int(seed)})
            model = new_model(task, method, seed=int(seed))
            res = fit(model, task, views["train"], views["val"], config=cfg,
                      on_epoch=lambda h: logger.info("    epoch %d: loss %.4f val auc %.4f logloss %.4f (%.0fs)",
                                                     h["epoch"], h["train_loss"], h["val_auc"], h["val_logloss"],
                                                     h["seconds"]), device=device)
            test = evaluate(model, task, views["test"], batch_size=cfg.eval_batch_size,
                            max_behaviors_per_chunk=cfg.max_behaviors_per_chunk, shared_min_cap=cfg.shared_min_cap,
                            device=device)
            model.to("cpu")
            if method == "full":
                refs[int(seed)] = model
            if mdir is not None and (method == "full" or int(seed) == int(seeds[0])):
                save_checkpoint(mdir / f"{tkey}-{ckey}-{method}-{'' if kk is None else kk}-s{seed}.pt"
                                if method != "full" else mdir / f"{tkey}-{ckey}-full-s{seed}.pt", model,
                                meta={"method": method, "k": kk, "seed": int(seed), "task": tkey})
            rec = {
                "kind": "run", "dataset": task.name, "task": tkey, "train_key": ckey, "method": method,
                "label": method_label(method), "k": kk, "seed": int(seed),
                "auc": test["auc"], "gauc": test["gauc"], "logloss": test["logloss"],
                "recall": quality["recall"], "attention_mass": quality["attention_mass"],
                "attention_flops": attention_flops(model, views["test"]),
                "mean_behaviors": views["test"].mean_behaviors(),
                "train_samples_per_s": res.train_samples_per_s, "infer_samples_per_s": test["infer_samples_per_s"],
                "retrieval_seconds": rsec, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
                "best_val": res.best_val, "history": res.history,
                "n_train": len(views["train"]), "n_test": len(views["test"]),
                "wall_seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
            }
            records.append(rec)
            _append(rpath, rec)
            say(f"  {views['test'].label:<24} seed {seed}: AUC {rec['auc']:.4f}  GAUC {rec['gauc']:.4f}  "
                f"logloss {rec['logloss']:.4f}  recall {rec['recall']:.3f}  mass {rec['attention_mass']:.3f}  "
                f"epochs {rec['epochs_run']} (best {rec['best_epoch']})  {rec['wall_seconds']:.0f}s")
    return records


def _ms(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))],
                   dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, method, k): mean and sample std (ddof=1) over seeds of AUC, GAUC,
    logloss; ``delta_auc`` = mean ± std over seeds of (full attention's AUC − this AUC) for the
    same seed; recall, attention mass, attention FLOPs and the FLOPs ratio to full attention;
    median throughputs; number of seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"], r["k"]), []).append(r)
    full = {(r["dataset"], r["seed"]): r for r in records if r["method"] == "full"}
    rows = []
    for (ds, method, k), rs in groups.items():
        row: dict[str, Any] = {"dataset": ds, "method": method, "label": rs[0]["label"], "k": k, "seeds": len(rs)}
        for m in ("auc", "gauc", "logloss"):
            row[m], row[m + "_std"] = _ms([r[m] for r in rs])
        deltas = [full[(ds, r["seed"])]["auc"] - r["auc"] for r in rs if (ds, r["seed"]) in full]
        row["delta_auc"], row["delta_auc_std"] = _ms(deltas)
        for m in ("recall", "attention_mass"):
            row[m] = _ms([r.get(m, float("nan")) for r in rs])[0]
        row["attention_flops"] = float(np.mean([r["attention_flops"] for r in rs]))
        f = [full[(ds, r["seed"])]["attention_flops"] for r in rs if (ds, r["seed"]) in full]
        row["flops_ratio"] = float(np.mean(f)) / row["attention_flops"] if f else float("nan")
        row["mean_behaviors"] = float(np.mean([r["mean_behaviors"] for r in rs]))
        row["train_samples_per_s"] = float(np.median([r["train_samples_per_s"] for r in rs]))
        row["infer_samples_per_s"] = float(np.median([r["infer_samples_per_s"] for r in rs]))
        row["retrieval_seconds"] = float(np.median([r["retrieval_seconds"] for r in rs]))
        row["epochs_run"] = float(np.mean([r["epochs_run"] for r in rs]))
        rows.append(row)
    ds_order = list(dict.fromkeys(r["dataset"] for r in records))
    m_order = list(LABELS)
    rows.sort(key=lambda r: (ds_order.index(r["dataset"]), m_order.index(r["method"]) if r["method"] in m_order
                             else len(m_order), r["k"] or 0))
    return rows


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_rows(rows: Sequence[dict[str, Any]], *, extra: dict[str, dict[str, Any]] | None = None,
                latency: dict[tuple, float] | None = None) -> str:
    """A fixed-width table: method, k, AUC, AUC lost vs full attention (mean ± std over seeds),
    GAUC, logloss, retrieval recall, attention mass, attention FLOPs per sample and the ratio to
    full attention, and (when ``latency`` maps (dataset, method, k) to ms) the measured
    inference time per request. ``extra`` adds per-dataset reference lines (``oracle`` AUC,
    ``base_rate`` metrics)."""
    head = (f"{'dataset':<10} {'method':<20} {'k':>4} {'AUC':>15} {'AUC lost vs full':>17} {'GAUC':>7} "
            f"{'logloss':>7} {'recall':>6} {'mass':>5} {'attn FLOPs':>10} {'x fewer':>7} {'ms/req':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        k = "-" if r["k"] is None else str(r["k"])
        lat = (latency or {}).get((r["dataset"], r["method"], r["k"]))
        delta = "-" if r["method"] == "full" else f"{r['delta_auc']:+.4f} ± {r['delta_auc_std']:.4f}"
        lines.append(
            f"{r['dataset']:<10} {r['label']:<20} {k:>4} {r['auc']:.4f} ± {r['auc_std']:.4f} {delta:>17} "
            f"{_f(r['gauc'], '.4f'):>7} {_f(r['logloss'], '.4f'):>7} {_f(r['recall'], '.3f'):>6} "
            f"{_f(r['attention_mass'], '.3f'):>5} {r['attention_flops']:>10.3g} {_f(r['flops_ratio'], '.1f'):>7} "
            f"{_f(lat, '.1f'):>7}")
    for ds, e in (extra or {}).items():
        if e.get("oracle") is not None:
            lines.append(f"{ds}: oracle (the generator's true click probability) test AUC = {e['oracle']:.4f}")
        b = e.get("base_rate")
        if b:
            lines.append(f"{ds}: base rate (logistic regression on the user's past like rate) test AUC "
                         f"{b['auc']:.4f}  GAUC {_f(b['gauc'], '.4f')}  logloss {b['logloss']:.4f}")
    return "\n".join(lines)


def done_when(rows: Sequence[dict[str, Any]], *, dataset: str = "synthetic", k: int = 64, oracle: float | None = None,
              tolerance: float = 0.005, oracle_tolerance: float = 0.01, flops_ratio: float = 10.0) -> dict[str, Any] | None:
    """The acceptance check: full attention within ``oracle_tolerance`` AUC of the oracle, and
    the best retrieval method at ``k`` within ``tolerance`` AUC of full attention (or better)
    with at least ``flops_ratio`` x fewer attention FLOPs. SDIM (no k) counts as a k-method;
    the oracle GSU ``exact`` is not a method. None when the rows lack full attention or a
    method at ``k``."""
    full = [r for r in rows if r["dataset"] == dataset and r["method"] == "full"]
    cands = [r for r in rows if r["dataset"] == dataset and r["method"] in RETRIEVAL_METHODS
             and (r["k"] == k or r["method"] == "sdim")]
    if not full or not cands:
        return None
    f = full[0]
    best = max(cands, key=lambda r: r["auc"])
    gap = f["auc"] - best["auc"]
    ratio = f["attention_flops"] / best["attention_flops"]
    oracle_gap = None if oracle is None else oracle - f["auc"]
    ok_oracle = oracle_gap is None or oracle_gap <= oracle_tolerance
    return {"dataset": dataset, "k": k, "best_method": best["label"], "best_auc": best["auc"],
            "best_delta": best["delta_auc"], "best_delta_std": best["delta_auc_std"], "full_auc": f["auc"],
            "oracle_auc": oracle, "oracle_gap": oracle_gap, "auc_gap": gap, "flops_ratio": ratio,
            "passed_oracle": bool(ok_oracle), "passed_method": bool(gap <= tolerance and ratio >= flops_ratio),
            "passed": bool(ok_oracle and gap <= tolerance and ratio >= flops_ratio)}


def plot_rows(rows: Sequence[dict[str, Any]], path: str | Path, *, extra: dict[str, dict[str, Any]] | None = None,
              title: str = "") -> Path:
    """Per dataset two panels: test AUC (mean ± std over seeds) against k (log x; full
    attention and the oracle as lines) and against retrieval recall of the exact top-k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(13, 4.8 * len(datasets)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "full"]
    for (ax_k, ax_r), ds in zip(axes, datasets):
        rs = [r for r in rows if r["dataset"] == ds]
        for i, m in enumerate(methods):
            pts = sorted([r for r in rs if r["method"] == m], key=lambda r: (r["k"] or 0))
            if not pts:
                continue
            c = cmap(i % 10)
            if pts[0]["k"] is None:
                ax_k.axhline(pts[0]["auc"], color=c, ls=":", lw=1.2, label=f"{pts[0]['label']} (no k)")
            else:
                ax_k.errorbar([r["k"] for r in pts], [r["auc"] for r in pts], yerr=[r["auc_std"] for r in pts],
                              marker="o", color=c, capsize=3, label=pts[0]["label"])
            ok = [r for r in pts if not math.isnan(r.get("recall", float("nan")))]
            if ok:
                ax_r.errorbar([r["recall"] for r in ok], [r["auc"] for r in ok], yerr=[r["auc_std"] for r in ok],
                              marker="o", color=c, capsize=3, label=pts[0]["label"])
                for r in ok:
                    ax_r.annotate(f"k={r['k']}", (r["recall"], r["auc"]), fontsize=6, xytext=(3, 3),
                                  textcoords="offset points")
        for ax in (ax_k, ax_r):
            f = [r for r in rs if r["method"] == "full"]
            if f:
                ax.axhline(f[0]["auc"], color="black", lw=1.2, label=f"full attention ({f[0]['auc']:.4f})")
                ax.axhspan(f[0]["auc"] - f[0]["auc_std"], f[0]["auc"] + f[0]["auc_std"], color="black", alpha=0.08)
            o = (extra or {}).get(ds, {}).get("oracle")
            if o is not None:
                ax.axhline(o, color="grey", ls="--", lw=1, label=f"oracle ({o:.4f})")
            ax.grid(True, alpha=0.3)
            ax.set_ylabel("test AUC (mean ± std, 3 seeds)")
        ax_k.set_xscale("log", base=2)
        ax_k.set_xlabel("k (retrieved behaviors)")
        ax_r.set_xlabel("retrieval recall of the exact top-k")
        ax_k.set_title(f"{ds}: AUC vs k{' — ' + title if title else ''}")
        ax_r.set_title(f"{ds}: AUC vs retrieval recall")
        ax_k.legend(fontsize=7, loc="lower right")
        ax_r.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_markdown(rows: Sequence[dict[str, Any]], *, extra: dict[str, dict[str, Any]] | None = None,
                    latency: dict[tuple, float] | None = None) -> str:
    """The table of :func:`format_rows` as GitHub markdown (one table per data set)."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        out.append(f"**{ds}**\n")
        out.append("| method | k | AUC | AUC lost vs full (per seed) | GAUC | logloss | recall@k | attention mass | "
                   "attention FLOPs / sample | × fewer | ms / request (T = 1,024) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r["dataset"] == ds):
            lat = (latency or {}).get((ds, r["method"], r["k"]))
            delta = "—" if r["method"] == "full" else f"{r['delta_auc']:+.4f} ± {r['delta_auc_std']:.4f}"
            out.append(f"| {r['label']} | {'—' if r['k'] is None else r['k']} | {r['auc']:.4f} ± {r['auc_std']:.4f} | "
                       f"{delta} | {_f(r['gauc'], '.4f')} | {_f(r['logloss'], '.4f')} | {_f(r['recall'], '.3f')} | "
                       f"{_f(r['attention_mass'], '.3f')} | {r['attention_flops']:.3g} | {_f(r['flops_ratio'], '.1f')} | "
                       f"{_f(lat, '.1f')} |")
        e = (extra or {}).get(ds, {})
        if e.get("oracle") is not None:
            out.append(f"| oracle (true click probability) | — | {e['oracle']:.4f} | | | | | | | | |")
        if e.get("base_rate"):
            b = e["base_rate"]
            out.append(f"| base rate (LR on past like rate) | — | {b['auc']:.4f} | | {_f(b['gauc'], '.4f')} | "
                       f"{b['logloss']:.4f} | | | | | |")
        out.append("")
    return "\n".join(out)
