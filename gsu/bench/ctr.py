"""Suite ``ctr``: the compact ESU over every GSU method vs full-sequence exact attention.

Data
    - synthetic (the record task): :func:`gsu.datasets.behavior_dataset` with 2,400 users,
      sequences of 1,000-10,000 behaviors (log-uniform; 9.4 M behaviors), 125 samples per user
      (300,000 samples, split 70/15/15 by time), 20,000 items in 200 categories, 32-d
      embeddings; clicks come from a planted softmax target-attention model (temperature 0.1)
      over the whole visible sequence, so the **oracle** AUC (the true click probability) is
      known (on 1,200 users, the earlier record, full attention stayed 0.0128 below it);
    - MovieLens latest-small and the Taobao sample, built from their logs by the same
      schema-driven task builder ``gsu train --data LOG --schema S`` uses
      (:func:`gsu.ctr.logtask.log_task`); skipped with a note when absent;
    - your own log: ``gsu bench ctr --data LOG --schema S`` (or ``run(log={...})``) runs the
      whole suite on the task ``gsu train --data LOG --schema S`` builds (same settings, same
      task), instead of the record data sets; its files are named ``ctr_log*``.

Rows: full-sequence attention; last-k; SIM-hard; SIM-soft; MUSE-cosine; ETA; SDIM; TWIN-style;
each at k = 16, 64, 256 (full and SDIM have no k; MovieLens at k = 64), 3 seeds; a base-rate baseline (logistic
regression on the user's past like rate) and, for synthetic, the oracle. Columns: test AUC
(mean ± std), AUC lost against full attention (per seed, mean ± std), GAUC, logloss, recall
of the exact top-k and share of the planted attention mass (synthetic), attention FLOPs per
sample and the ratio to full attention, measured inference time per request (T = 1,024
targets of one user: retrieval + batch assembly + ESU forward, median of repeats, one
thread) and the TorchScript-exported ESU's latency at k = 64 with its largest score
difference to the eager model.

Phases (``phase``): "train" (CPU-heavy: trains everything, resumable — records go to
``ctr_runs.jsonl`` as they finish, retrieved positions and models to the cache folder
``GSU_CTR_CACHE`` or ``~/.cache/gsu/ctr``), "timing" (short; run it alone on the machine),
"report" (table, ``ctr.jsonl``, ``ctr.png``); "all" runs the three.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gsu.bench import harness
from gsu.ctr.defaults import SYNTHETIC, SYNTHETIC_QUICK, train_config
from gsu.datasets.samples import movielens_dir, taobao_csv

log = logging.getLogger(__name__)

MOVIELENS = movielens_dir()
TAOBAO = taobao_csv()

METHODS = ("full", "last", "hard", "soft", "muse", "eta", "sdim", "twin")


def _cache_dir() -> Path:
    return Path(os.environ.get("GSU_CTR_CACHE", Path.home() / ".cache" / "gsu" / "ctr"))


def _train_key(cfg: Any) -> str:
    from gsu.ctr.data import fingerprint

    d = cfg.to_dict()
    d.pop("progress", None)
    d.pop("seed", None)
    return fingerprint(d)


def tasks(quick: bool) -> list[tuple[Any, tuple[str, ...], tuple[int, ...]]]:
    """(task, methods, ks) for each data set of the suite."""
    from gsu.ctr.data import synthetic_task
    from gsu.ctr.logtask import movielens_task

    out = []
    spec = SYNTHETIC_QUICK if quick else SYNTHETIC
    syn = synthetic_task(**spec, cache_dir=None if quick else _cache_dir())
    out.append((syn, METHODS, (16,) if quick else (64, 16, 256)))
    if quick:
        return out
    if (MOVIELENS / "ratings.csv").is_file():
        ml = movielens_task(MOVIELENS, titles=True, cache_dir=_cache_dir())
        methods = METHODS if "content" in ml.item_tables else tuple(m for m in METHODS if m != "muse")
        out.append((ml, methods, (64,)))
    else:
        print(f"movielens: skipped, {MOVIELENS} not found (expected MovieLens latest-small)")
    return out


def log_tasks(quick: bool, log: dict[str, Any]) -> list[tuple[Any, tuple[str, ...], tuple[int, ...]]]:
    """(task, methods, ks) for the suite on a user's own log: ``log`` holds
    :func:`gsu.ctr.pipeline.build_task`'s data settings (``data``, ``schema``,
    ``item_embeddings``, ``negatives``, ``sample_rate``, ``min_history``, ``data_seed``), so
    the task is the one ``gsu train`` builds with the same settings. Every method (MUSE only
    with a content table) at k = 64, 16, 256 (quick: 16)."""
    from gsu.ctr.pipeline import build_task

    t = build_task(**log, cache_dir=None if quick else _cache_dir())
    methods = METHODS if "content" in t.item_tables else tuple(m for m in METHODS if m != "muse")
    return [(t, methods, (16,) if quick else (64, 16, 256))]


def _latency(task: Any, records_dir: Path, *, quick: bool, methods: tuple[str, ...] = METHODS,
             ks: tuple[int, ...] = (16, 64, 256), T: int = 1024, repeats: int = 7) -> list[dict[str, Any]]:
    """Per (method, k): median wall time of one request (one user, T targets at the end of a
    long history): retrieval + batch assembly + ESU forward, one thread; plus the exported
    TorchScript ESU at k = 64."""
    import torch

    from gsu.ctr.checkpoint import load_checkpoint
    from gsu.ctr.data import BehaviorView, fingerprint, make_batch, make_shared_batch
    from gsu.ctr.experiment import task_key, new_model
    from gsu.ctr.export import export_torchscript, serving_inputs
    from gsu.ctr.pipeline import build_retriever, needs_reference
    from gsu.retrieval.result import SDIMResult

    store = task.store
    lens = store.lengths
    row = int(np.argmax(lens))
    user = int(store.user_ids[row])
    h = store.history(user)
    L = int(lens[row])
    rng = np.random.default_rng(5)
    targets = rng.choice(task.n_items, size=T, replace=True).astype(np.int64)
    now = int(h.timestamps[-1]) + 1
    # a request as samples of the task, so the training batch code assembles it
    base = {k: v for k, v in task.samples.items()}
    S0 = base["user"].shape[0]
    task.samples = {**base, "user": np.r_[base["user"], np.full(T, user)], "target": np.r_[base["target"], targets],
                    "time": np.r_[base["time"], np.full(T, now)], "label": np.r_[base["label"], np.zeros(T, np.int8)]}
    for k2 in base:
        if k2 not in task.samples or task.samples[k2].shape[0] != S0 + T:
            task.samples[k2] = np.r_[base[k2], np.zeros(T, base[k2].dtype)]
    idx = np.arange(S0, S0 + T)
    rows = np.full(T, row, np.int64)
    vis = np.full(T, L, np.int64)
    tc = train_config(quick).to_dict()
    tc.pop("progress", None)
    tc.pop("seed", None)
    ckey = fingerprint(tc)
    tkey = task_key(task)
    mdir = _cache_dir() / "models"
    out = []
    torch.set_num_threads(1)

    def model_for(method: str, k: int | None) -> Any:
        p = mdir / (f"{tkey}-{ckey}-full-s0.pt" if method == "full" else f"{tkey}-{ckey}-{method}-{'' if k is None else k}-s0.pt")
        if p.is_file():
            return load_checkpoint(p)[0]
        return new_model(task, method, seed=0)

    try:
        for method in methods:
            for k in ([None] if method in ("full", "sdim") else sorted(ks)):
                model = model_for(method, k)
                cfg = model.config
                ref = model_for("full", None) if needs_reference(task, method) else None
                retr = None if method in ("full", "last") else build_retriever(task, method, k or 64, reference=ref, seed=0)

                def once() -> np.ndarray:
                    with torch.no_grad():
                        if method == "full":
                            view = BehaviorView(idx, rows, vis, "prefix", cap=10_000)
                            sb = make_shared_batch(task, view, np.arange(T), temporal=cfg.temporal,
                                                   n_time_buckets=cfg.n_time_buckets)
                            return model.forward_shared(sb.target, sb.history, sb.mask).numpy()
                        if method == "last":
                            view = BehaviorView(idx, rows, vis, "prefix", cap=int(k))
                        else:
                            res = retr.retrieve(h, targets, k=None if method == "sdim" else k, target_time=now)
                            if isinstance(res, SDIMResult):
                                view = BehaviorView(idx, rows, vis, "sdim", vectors=res.vectors, vector_mask=res.mask)
                            else:
                                view = BehaviorView(idx, rows, vis, "positions", positions=res.positions, mask=res.mask)
                        b = make_batch(task, view, np.arange(T), temporal=cfg.temporal, n_time_buckets=cfg.n_time_buckets)
                        return model(*b.model_inputs()).numpy()

                once()
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    once()
                    ts.append(time.perf_counter() - t0)
                rec = {"kind": "latency", "dataset": task.name, "method": method, "k": k, "T": T, "history": L,
                       "ms_per_request": 1e3 * float(np.median(ts)), "repeats": repeats}
                if method == "soft" and k == (16 if quick else 64 if 64 in ks else min(ks)):
                    # the exported ESU on the same request's retrieved behaviors
                    res = retr.retrieve(h, targets, k=k, target_time=now)
                    view = BehaviorView(idx, rows, vis, "positions", positions=res.positions, mask=res.mask)
                    b = make_batch(task, view, np.arange(T), temporal=cfg.temporal, n_time_buckets=cfg.n_time_buckets)
                    path = _cache_dir() / "ctr_esu_soft.ts"   # a 2.6 MB model: kept out of results/
                    scripted = export_torchscript(model, path, example=b)
                    inputs = serving_inputs(b)
                    with torch.no_grad():
                        eager = torch.sigmoid(model(*b.model_inputs())).numpy()
                        exp = scripted(*inputs).numpy()
                        scripted(*inputs)
                        ets = []
                        for _ in range(repeats):
                            t0 = time.perf_counter()
                            scripted(*inputs)
                            ets.append(time.perf_counter() - t0)
                        ets_e = []
                        for _ in range(repeats):
                            t0 = time.perf_counter()
                            model(*b.model_inputs())
                            ets_e.append(time.perf_counter() - t0)
                    rec.update({"export": "torchscript", "export_ms_esu": 1e3 * float(np.median(ets)),
                                "eager_ms_esu": 1e3 * float(np.median(ets_e)),
                                "export_max_abs_diff": float(np.abs(exp - eager).max())})
                out.append(rec)
                print(f"  latency {method:<5} k={k}: {rec['ms_per_request']:.1f} ms/request"
                      + (f"; TorchScript ESU {rec['export_ms_esu']:.2f} ms vs eager {rec['eager_ms_esu']:.2f} ms, "
                         f"max |diff| {rec['export_max_abs_diff']:.2e}" if "export" in rec else ""), flush=True)
    finally:
        task.samples = base
    return out


def run(*, out_dir: Path, quick: bool = False, threads: int = 1, seeds: tuple[int, ...] | None = None,
        phase: str = "all", log: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run the suite (see the module docstring); write ``ctr.jsonl``, ``ctr_table.md`` and
    ``ctr.png`` into ``out_dir`` (``ctr_quick*`` with ``quick``); return the report records.

    log: run on a user's own log instead of the record data sets: the settings of
    :func:`gsu.ctr.pipeline.build_task` (``{"data": "clicks.parquet", "schema": "s.json"}``,
    optionally ``item_embeddings``, ``negatives``, ``sample_rate``, ``min_history``,
    ``data_seed``); files ``ctr_log*`` (``ctr_log_quick*``)."""
    from gsu.ctr.baseline import base_rate_baseline
    from gsu.ctr.experiment import (load_records, aggregate, best_possible_auc, done_when, format_markdown,
                                    format_rows, plot_rows, run_comparison)

    if phase not in ("all", "train", "timing", "report"):
        raise ValueError(f"phase: expected 'all', 'train', 'timing' or 'report', got {phase!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    seeds = tuple(seeds) if seeds is not None else ((0,) if quick else (0, 1, 2))
    tcfg = train_config(quick)
    name = ("ctr_log" if log is not None else "ctr") + ("_quick" if quick else "")
    runs_path = out_dir / f"{name}_runs.jsonl"
    lat_path = out_dir / f"{name}_latency.jsonl"
    if quick:
        for p in (runs_path, lat_path):
            p.unlink(missing_ok=True)
    extra: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    all_tasks = tasks(quick) if log is None else log_tasks(quick, dict(log))
    for task, methods, ks in all_tasks:
        oracle = best_possible_auc(task)
        base = base_rate_baseline(task)
        extra[task.name] = {"oracle": oracle, "base_rate": base, "info": {k: v for k, v in task.info.items()
                                                                          if isinstance(v, (int, float, str, list))}}
        print(f"{task.name}: {task.info['n_samples']} samples (train {len(task.splits['train'])}, val "
              f"{len(task.splits['val'])}, test {len(task.splits['test'])}), {task.info['n_behaviors']} behaviors"
              + (f", oracle test AUC {oracle:.4f}" if oracle is not None else "")
              + f", base-rate test AUC {base['auc']:.4f}", flush=True)
        if phase in ("all", "train"):
            records += run_comparison(task, methods=methods, ks=ks, seeds=seeds, train_config=tcfg,
                                      cache_dir=None if quick else _cache_dir(), records_path=runs_path)
    if phase in ("all", "timing"):
        lat = _latency(all_tasks[0][0], out_dir, quick=quick, methods=all_tasks[0][1], ks=all_tasks[0][2])
        with open(lat_path, "w") as f:
            for r in lat:
                f.write(json.dumps(r) + "\n")
    if phase == "train":
        return records
    records = [r for p in sorted(out_dir.glob(f"{name}_runs*.jsonl"))
               for r in load_records(p) if r.get("kind") == "run"]
    known = {t.info.get("fingerprint") for t, _, _ in all_tasks}
    records = [r for r in records if r.get("task") in known and r.get("train_key") == _train_key(tcfg)]
    lat_recs = load_records(lat_path)
    latency = {(r["dataset"], r["method"], r["k"]): r["ms_per_request"] for r in lat_recs}
    rows = aggregate(records)
    print(format_rows(rows, extra=extra, latency=latency))
    checks = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        c = done_when(rows, dataset=ds, k=16 if quick else 64, oracle=extra.get(ds, {}).get("oracle"))
        if c is not None:
            checks.append(c)
            print(f"Done-when ({ds}, k={c['k']}): full attention AUC {c['full_auc']:.4f}"
                  + (f" vs oracle {c['oracle_auc']:.4f} (gap {c['oracle_gap']:+.4f}, need <= 0.01)"
                     if c["oracle_auc"] is not None else "")
                  + f"; best GSU {c['best_method']} AUC {c['best_auc']:.4f}, lost {c['best_delta']:+.4f} ± "
                    f"{c['best_delta_std']:.4f} (need <= 0.005) at {c['flops_ratio']:.1f}x fewer attention FLOPs "
                    f"(need >= 10x): {'PASS' if c['passed'] else 'MISS'}"
                  + (" [quick mode: smoke sizes, not a measurement]" if quick else ""))
    for r in lat_recs:
        if "export" in r:
            print(f"TorchScript ESU (k={r['k']}, T={r['T']}): {r['export_ms_esu']:.2f} ms per request vs eager "
                  f"{r['eager_ms_esu']:.2f} ms; max |score diff| {r['export_max_abs_diff']:.1e}")
    common = {"suite": "ctr", "threads": threads, "pinned": pinned, "machine": machine, "quick": quick,
              "train_config": tcfg.to_dict()}
    out = [{**common, **r, "history": None} for r in records]
    out += [{**common, "kind": "row", **r} for r in rows]
    out += [{**common, "kind": "check", **c} for c in checks]
    out += [{**common, "kind": "reference", "dataset": ds, **e} for ds, e in extra.items()]
    out += [{**common, **r} for r in lat_recs]
    harness.write_jsonl(out_dir / f"{name}.jsonl", out)
    (out_dir / f"{name}_table.md").write_text(format_markdown(rows, extra=extra, latency=latency))
    plot_rows(rows, out_dir / f"{name}.png", extra=extra, title="ESU over each GSU vs full attention")
    print(f"wrote {out_dir / (name + '.jsonl')} and {out_dir / (name + '.png')}")
    return out
