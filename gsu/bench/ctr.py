"""Suite ``ctr``: the compact ESU over every GSU method vs full-sequence exact attention.

Data
    - synthetic: :func:`gsu.datasets.behavior_dataset` users with sequences of 1,000-10,000
      behaviors whose clicks come from a known target-attention model, so the best possible
      AUC (the AUC of the true click probability) is reported next to the table;
    - MovieLens latest-small (``../shared/datasets/movielens-latest-small``; skipped with a
      note when absent): rating >= 4 is a click, lower ratings and popularity-sampled unseen
      movies are negatives, genres are categories, MiniLM title embeddings drive MUSE-cosine.

Rows: full-sequence exact attention; last-k DIN; SIM-hard; SIM-soft; MUSE-cosine; ETA; SDIM;
TWIN-style; each at k = 16 and 64 (full and SDIM have no k). Columns: test AUC, GAUC,
logloss (mean ± std over 3 seeds), attention FLOPs per sample, training and inference
samples per second (one thread, batch assembly included, retrieval excluded — it is
precomputed per split; ``gsu bench gsu`` times retrieval).

Sizes (default run, about 9 minutes of one core on a quiet machine): synthetic 100 users
x 60 targets (6,000 samples split 70/15/15 by time, ~0.6 M behaviors, mean visible
history ~6,400, 20,000 items, dim 32); MovieLens 610 users x up to 8 rated targets + 1
sampled negative each (~9,800 samples); 3 seeds; at most 4 epochs (AdamW lr 1e-2, batch
64, early stopping on validation GAUC, patience 1). ``quick``: one seed, k = 16 only, 30
short synthetic users, 2 epochs, no MovieLens (~30 s).

Writes ``ctr.jsonl`` (one record per run, plus ``kind="row"`` aggregates and the check),
``ctr.png`` and prints the table and the issue's "Done when" check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from gsu.bench import harness

log = logging.getLogger(__name__)

MOVIELENS = Path("../shared/datasets/movielens-latest-small")


def _titles(folder: Path, cache_dir: Path) -> np.ndarray | None:
    """MiniLM embeddings of the movie titles (cached in the output folder)."""
    from gsu.datasets import read_movielens_movies

    titles = list(read_movielens_movies(folder / "movies.csv")["title"])
    cache = cache_dir / "movielens_title_minilm.npy"
    if cache.is_file():
        v = np.load(cache)
        if v.shape[0] == len(titles):
            return v
    try:
        from gsu.datasets.text import embed_texts
    except ImportError as e:  # sentence-transformers missing
        log.warning("MUSE-cosine on MovieLens skipped: %s", e)
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    v = embed_texts(titles, batch_size=128, progress=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache, v)
    return v


def run(*, out_dir: Path, quick: bool = False, threads: int = 1, seeds: tuple[int, ...] | None = None,
        movielens: Path | None = None) -> list[dict[str, Any]]:
    """Run the suite; write ``ctr.jsonl`` and ``ctr.png`` into ``out_dir``; return the records."""
    from gsu.ctr.data import movielens_task, synthetic_task
    from gsu.ctr.experiment import aggregate, best_possible_auc, done_when, format_rows, plot_rows, run_comparison
    from gsu.ctr.train import TrainConfig

    out_dir = Path(out_dir)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    seeds = tuple(seeds) if seeds is not None else ((0,) if quick else (0, 1, 2))
    ks = (16,) if quick else (16, 64)
    tcfg = TrainConfig(epochs=2 if quick else 4, batch_size=64, lr=1e-2, patience=1, progress=False)
    records: list[dict[str, Any]] = []
    best: dict[str, float | None] = {}

    syn = synthetic_task(n_users=30 if quick else 100, seq_len=(500, 2_000) if quick else (1_000, 10_000),
                         n_items=20_000, n_targets_per_user=20 if quick else 60, seed=0)
    best["synthetic"] = best_possible_auc(syn)
    print(f"synthetic: {syn.info['n_samples']} samples, {syn.info['n_behaviors']} behaviors, "
          f"best possible test AUC {best['synthetic']:.4f}", flush=True)
    records += run_comparison(syn, ks=ks, seeds=seeds, train_config=tcfg)

    folder = Path(movielens) if movielens else MOVIELENS
    if quick:
        print("movielens: skipped in quick mode")
    elif not (folder / "ratings.csv").is_file():
        print(f"movielens: skipped, {folder} not found (expected MovieLens latest-small)")
    else:
        titles = _titles(folder, out_dir)
        ml = movielens_task(folder, title_vectors=titles, max_targets_per_user=8, n_negatives=1, seed=0)
        best["movielens"] = None
        print(f"movielens: {ml.info['n_samples']} samples, {ml.info['n_behaviors']} behaviors", flush=True)
        methods = ("full", "last", "hard", "soft", "muse", "eta", "sdim", "twin")
        if titles is None:
            methods = tuple(m for m in methods if m != "muse")
        records += run_comparison(ml, methods=methods, ks=ks, seeds=seeds, train_config=tcfg)

    rows = aggregate(records)
    print(format_rows(rows, best_auc=best))
    checks = [c for c in (done_when(rows, dataset="synthetic", k=max(ks)),) if c is not None]
    for c in checks:
        print(f"Done-when ({c['dataset']}, k={c['k']}): best GSU method {c['best_method']} AUC {c['best_auc']:.4f} vs "
              f"full attention {c['full_auc']:.4f} (gap {c['auc_gap']:+.4f}, need <= 0.002) with "
              f"{c['flops_ratio']:.1f}x fewer attention FLOPs (need >= 10x): {'PASS' if c['passed'] else 'FAIL'}"
              + (" [quick mode: smoke sizes, not a measurement]" if quick else ""))
    common = {"suite": "ctr", "threads": threads, "pinned": pinned, "machine": machine, "quick": quick,
              "train_config": tcfg.to_dict()}
    out = [{**common, "kind": "run", **r} for r in records]
    out += [{**common, "kind": "row", **r} for r in rows]
    out += [{**common, "kind": "check", **c} for c in checks]
    out += [{**common, "kind": "best_possible_auc", "dataset": k, "auc": v} for k, v in best.items() if v is not None]
    harness.write_jsonl(out_dir / "ctr.jsonl", out)
    plot_rows(rows, out_dir / "ctr.png", best_auc=best, title="ESU over each GSU vs full attention")
    print(f"wrote {out_dir / 'ctr.jsonl'} and {out_dir / 'ctr.png'}")
    return out
