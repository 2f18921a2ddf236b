"""Where the real data samples are: MovieLens latest-small and a Taobao UserBehavior sample.

They are never shipped with gsu (their licences travel with them). The folder is
``$GSU_DATASETS`` when set, else ``shared/datasets`` beside the repository checkout
(``<checkout>/../shared/datasets``); benchmarks and tests that need a sample skip or
fail with a message naming the path they looked at.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["datasets_root", "movielens_dir", "taobao_csv"]


def datasets_root() -> Path:
    """``$GSU_DATASETS``, or ``shared/datasets`` beside the repository checkout."""
    env = os.environ.get("GSU_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def movielens_dir() -> Path:
    """The MovieLens latest-small folder (``ratings.csv``, ``movies.csv``, ``tags.csv``)."""
    return datasets_root() / "movielens-latest-small"


def taobao_csv() -> Path:
    """The Taobao UserBehavior sample (``UserBehavior.csv``)."""
    return datasets_root() / "taobao-userbehavior-sample" / "UserBehavior.csv"
