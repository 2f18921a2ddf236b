"""``gsu train``: arguments and entry point (wired into :mod:`gsu.cli` by the lead)."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``gsu train``'s options to ``p``."""
    from gsu.ctr.methods import METHODS

    p.add_argument("--data", choices=("synthetic", "movielens"), default="synthetic",
                   help="synthetic generator (default) or a MovieLens folder (--data-path)")
    p.add_argument("--data-path", default=None, help="MovieLens folder (default ../shared/datasets/movielens-latest-small)")
    p.add_argument("--method", choices=METHODS, default="soft", help="GSU method feeding the model (default soft)")
    p.add_argument("-k", type=int, default=64, help="behaviors retrieved per sample (default 64)")
    p.add_argument("--epochs", type=int, default=4, help="maximum epochs; early stopping on validation GAUC (default 4)")
    p.add_argument("--seed", type=int, default=0, help="data, init and shuffling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per AdamW step (default 64)")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (default 1e-2)")
    p.add_argument("--users", type=int, default=100, help="synthetic users (default 100)")
    p.add_argument("--max-len", type=int, default=10_000, help="cap of full-sequence attention (default 10000)")
    p.add_argument("--reference", default=None, help="checkpoint whose attention TWIN retrieves with")
    p.add_argument("--out", default=None, help="checkpoint file to write (atomically)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(a: argparse.Namespace) -> int:
    from gsu.ctr.methods import train_from_config

    summary = train_from_config(
        data=a.data, data_path=a.data_path, method=a.method, k=a.k, epochs=a.epochs, seed=a.seed, out=a.out,
        batch_size=a.batch_size, lr=a.lr, n_users=a.users, max_len=a.max_len, reference=a.reference,
        progress=not a.no_progress,
    )
    print(json.dumps(summary, indent=2, default=float))
    return 0
