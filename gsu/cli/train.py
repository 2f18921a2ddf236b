"""``gsu train``: arguments and entry point (wired into :mod:`gsu.cli`).

``gsu train --data LOG --schema SCHEMA.json`` trains the ESU on your own Parquet / CSV behavior
log; ``--data synthetic`` / ``--data movielens`` build the benchmark's tasks with the
benchmark's defaults (the same settings build the same task as ``gsu bench ctr``).
``--method all`` runs the whole comparison (every method, ``--ks``, ``--seeds``) and prints
the benchmark's table. Progress: tqdm bars on a terminal, one line per stage otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``gsu train``'s options to ``p``."""
    from gsu.ctr.pipeline import METHODS

    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default), 'movielens', a MovieLens folder, or a .parquet/.csv behavior log (needs --schema)")
    p.add_argument("--schema", default=None,
                   help="JSON file naming the log's columns: user, item, timestamp (required); label, label_threshold, "
                        "category, behavior, positive_behaviors, categorical [..], numeric [..], history, time_unit, columns")
    p.add_argument("--item-embeddings", default=None,
                   help="item vectors: .parquet (columns item, vector) or .npz (ids, vectors); default: learned item ids")
    p.add_argument("--negatives", type=int, default=None,
                   help="sampled negatives per logged sample (default 1 for a positives-only log, 0 with labels; movielens 1)")
    p.add_argument("--sample-rate", type=float, default=None, help="share of log rows kept as samples (default 1; movielens 0.25)")
    p.add_argument("--min-history", type=int, default=1, help="visible behaviors a log sample needs (default 1)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data: generator and sampling (default 0)")
    p.add_argument("--users", type=int, default=None, help="synthetic: users (default: the benchmark's 2,400)")
    p.add_argument("--targets-per-user", type=int, default=None, help="synthetic: samples per user (default 125)")
    p.add_argument("--method", default="soft",
                   help=f"GSU method feeding the model: {', '.join(METHODS)}, any name registered with "
                        "gsu.retrieval.register_method, or 'all' for the full comparison table (default soft)")
    p.add_argument("-k", type=int, default=64, help="behaviors retrieved per sample (default 64)")
    p.add_argument("--ks", default="16,64", help="--method all: comma-separated k values (default 16,64)")
    p.add_argument("--seeds", default="0", help="--method all: comma-separated model seeds (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per AdamW step (default 256)")
    p.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default 1e-2)")
    p.add_argument("--patience", type=int, default=None, help="non-improving epochs before stopping (default 2)")
    p.add_argument("--select", choices=("logloss", "auc", "gauc"), default=None,
                   help="validation metric for model selection and the LR schedule (default logloss)")
    p.add_argument("--seed", type=int, default=0, help="model seed: initialisation and shuffling (default 0)")
    p.add_argument("--max-len", type=int, default=10_000, help="cap of full-sequence attention (default 10000)")
    p.add_argument("--reference", default=None, help="checkpoint whose attention TWIN retrieves with")
    p.add_argument("--out", default=None, help="checkpoint file to write (atomically)")
    p.add_argument("--export", default=None, help="TorchScript file of the trained ESU (checked against the eager model)")
    p.add_argument("--cache", default=None, help="folder for cached data and retrievals (default none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for training and scoring, e.g. cuda:0 (default cpu)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="never show progress bars")


def _train_config(a: argparse.Namespace):
    from gsu.ctr.defaults import train_config
    from gsu.ctr.train import TrainConfig

    d = train_config(False).to_dict()
    for name, key in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"), ("patience", "patience"),
                      ("select", "select")):
        v = getattr(a, name)
        if v is not None:
            d[key] = v
    d["progress"] = False if a.no_progress else None
    return TrainConfig(**d)


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--{name}: expected comma-separated integers, got {text!r}") from None
    if not out:
        raise ValueError(f"--{name}: expected at least one integer")
    return out


def main(a: argparse.Namespace) -> int:
    import torch

    from gsu.ctr.experiment import aggregate, best_possible_auc, format_rows, run_comparison
    from gsu.ctr.pipeline import build_task, method_label, train_from_config

    torch.set_num_threads(max(1, int(a.threads)))
    tty = sys.stderr.isatty()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tcfg = _train_config(a)
    if a.method != "all":
        from gsu.ctr.pipeline import check_method

        check_method(a.method)  # an unknown name fails before any data is built
    if a.method == "all":
        from gsu.ctr.baseline import base_rate_baseline

        task = build_task(data=a.data, schema=a.schema, item_embeddings=a.item_embeddings, negatives=a.negatives,
                          sample_rate=a.sample_rate, min_history=a.min_history, users=a.users,
                          targets_per_user=a.targets_per_user, data_seed=a.data_seed, cache_dir=a.cache)
        say(f"task {task.name}: {task.info['n_samples']:,} samples, {task.info['n_behaviors']:,} behaviors")
        methods = ["full", "last", "hard", "soft", "eta", "sdim", "twin"]
        if "content" in task.item_tables:
            methods.append("muse")
        recs = run_comparison(task, methods=methods, ks=_ints(a.ks, "ks"), seeds=_ints(a.seeds, "seeds"),
                              train_config=tcfg, max_len=a.max_len, cache_dir=a.cache, say=say, device=a.device)
        rows = aggregate(recs)
        extra = {task.name: {"oracle": best_possible_auc(task), "base_rate": base_rate_baseline(task)}}
        if a.json:
            print(json.dumps({"rows": rows, "reference": extra}, indent=2, default=float))
        else:
            print(format_rows(rows, extra=extra))
        return 0
    summary = train_from_config(
        data=a.data, schema=a.schema, item_embeddings=a.item_embeddings, method=a.method, k=a.k, seed=a.seed,
        data_seed=a.data_seed, train_config=tcfg, negatives=a.negatives, sample_rate=a.sample_rate,
        min_history=a.min_history, users=a.users, targets_per_user=a.targets_per_user, max_len=a.max_len,
        reference=a.reference, out=a.out, export=a.export, cache_dir=a.cache, say=None if tty and not a.no_progress else say,
        device=a.device,
    )
    if a.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    k = "-" if summary["k"] is None else str(summary["k"])
    lines = [f"{'model':<28} {'k':>4} {'AUC':>7} {'GAUC':>7} {'logloss':>7} {'recall':>6} {'mass':>5} {'attn FLOPs':>10}",
             "-" * 82]
    fmt = lambda x, f: "-" if x is None or x != x else format(x, f)  # noqa: E731
    lines.append(f"{method_label(summary['method']):<28} {k:>4} {summary['test_auc']:.4f} {fmt(summary['test_gauc'], '.4f'):>7} "
                 f"{summary['test_logloss']:.4f} {fmt(summary['recall'], '.3f'):>6} {fmt(summary['attention_mass'], '.3f'):>5} "
                 f"{summary['attention_flops']:>10.3g}")
    lines.append(f"{'base rate (past like rate LR)':<28} {'-':>4} {summary['base_rate_auc']:.4f} "
                 f"{fmt(summary['base_rate_gauc'], '.4f'):>7} {summary['base_rate_logloss']:.4f}")
    if summary["oracle_auc"] is not None:
        lines.append(f"{'oracle (true probability)':<28} {'-':>4} {summary['oracle_auc']:.4f}")
    lines.append(f"data {summary['data']} (task {summary['task']}), best epoch {summary['best_epoch']} of "
                 f"{summary['epochs_run']}, {summary['train_samples_per_s']:.0f} train samples/s"
                 + (f"; checkpoint {summary['checkpoint']}" if summary["checkpoint"] else "")
                 + (f"; TorchScript {summary['export']}" if summary["export"] else ""))
    print("\n".join(lines))
    return 0
