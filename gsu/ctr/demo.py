"""``gsu demo``: the main job end to end on the built-in synthetic default.

Generate users with long behavior sequences (clicks from a known attention model), store
every sequence once (:class:`gsu.retrieval.BehaviorStore`, saved to ``out_dir``), retrieve
the behaviors of every training / validation / test sample with each GSU method (the
methods build their own indexes: category index, SimHash codes, SDIM buckets, TWIN's
per-item projections), train the same small ESU on each for a short budget, and print the
table — method, k, test AUC, GAUC, logloss, attention FLOPs per sample, training and
inference samples/s — next to full-sequence exact attention; write ``demo.jsonl`` and
``demo.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run_demo"]


def run_demo(*, out_dir: Path, quick: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """Run the demo; returns the aggregated rows. ``quick``: a smaller task, k = 16 only and
    one epoch (well under a minute); default: 50 users with sequences of 1,000-10,000
    behaviors (2,000 samples), k = 64, at most 3 epochs, one seed (a few minutes on two cores)."""
    from gsu.bench import harness  # plotting/JSON helpers only
    from gsu.ctr.baseline import base_rate_baseline
    from gsu.ctr.data import synthetic_task
    from gsu.ctr.experiment import aggregate, best_possible_auc, format_rows, plot_rows, run_comparison
    from gsu.ctr.train import TrainConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    task = synthetic_task(n_users=20 if quick else 50, seq_len=(300, 1_500) if quick else (1_000, 10_000),
                          n_items=20_000, n_targets_per_user=20 if quick else 40, seed=seed)
    task.store.save(out_dir / "store.gsu")
    best = best_possible_auc(task)
    print(f"store: {task.store.n_users} users, {task.store.n_behaviors} behaviors -> {out_dir / 'store.gsu'}; "
          f"{task.info['n_samples']} samples (train {len(task.splits['train'])}, val {len(task.splits['val'])}, "
          f"test {len(task.splits['test'])}); best possible test AUC {best:.4f}", flush=True)
    k = 16 if quick else 64
    tcfg = TrainConfig(epochs=1 if quick else 3, batch_size=64, lr=1e-2, patience=1, seed=seed,
                       progress=False if quick else None)
    records = run_comparison(task, ks=(k,), seeds=(seed,), train_config=tcfg)
    rows = aggregate(records)
    extra = {"synthetic": {"oracle": best, "base_rate": base_rate_baseline(task)}}
    print(format_rows(rows, extra=extra))
    harness.write_jsonl(out_dir / "demo.jsonl", [{**r, "kind": "run"} for r in records] + [{"kind": "row", **r} for r in rows])
    plot_rows(rows, out_dir / "demo.png", extra=extra, title=f"demo, k={k}, one seed")
    print(f"wrote {out_dir / 'demo.jsonl'} and {out_dir / 'demo.png'} in {time.perf_counter() - t0:.0f}s")
    return rows
