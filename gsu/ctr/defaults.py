"""The CTR layer's default task and training recipe, shared by ``gsu train``, ``gsu demo``
and ``gsu bench ctr`` (the same settings build the same task). Light: no torch import."""

from __future__ import annotations

from typing import Any

__all__ = ["SYNTHETIC", "SYNTHETIC_QUICK", "train_config"]

#: the synthetic task of ``gsu train --data synthetic`` and the CTR benchmark
SYNTHETIC = {"n_users": 2_400, "seq_len": (1_000, 10_000), "n_items": 20_000, "n_targets_per_user": 125, "seed": 0}
#: its quick (``--quick``) form
SYNTHETIC_QUICK = {"n_users": 40, "seq_len": (300, 1_500), "n_items": 5_000, "n_targets_per_user": 30, "seed": 0}


def train_config(quick: bool) -> Any:
    """The default :class:`~gsu.ctr.train.TrainConfig` (``quick``: the two-epoch smoke form)."""
    from gsu.ctr.train import TrainConfig

    if quick:
        return TrainConfig(epochs=2, batch_size=128, lr=1e-2, warmup_steps=10, patience=1, progress=False)
    return TrainConfig(epochs=10, batch_size=256, lr=1e-2, warmup_steps=100, patience=2, progress=False)
