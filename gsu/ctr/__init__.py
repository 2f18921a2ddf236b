"""gsu.ctr — the compact CTR model (ESU): exact target attention over retrieved behaviors.

Submodules: :mod:`~gsu.ctr.layers` (embeddings, DIN / multi-head target attention, DARE, TIN,
MLP), :mod:`~gsu.ctr.model`, :mod:`~gsu.ctr.data` (tasks, views, batches),
:mod:`~gsu.ctr.train`, :mod:`~gsu.ctr.metrics`, :mod:`~gsu.ctr.checkpoint`,
:mod:`~gsu.ctr.pipeline`, :mod:`~gsu.ctr.logtask` (tasks from your own logs),
:mod:`~gsu.ctr.baseline`, :mod:`~gsu.ctr.export` (TorchScript), :mod:`~gsu.ctr.defaults`
(the default task and recipe). Names below are imported lazily (torch loads on first use, not
at ``import gsu.ctr``). The end-to-end demo that drives this layer is :mod:`gsu.demo`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ModelConfig": "gsu.ctr.model", "TargetAttentionModel": "gsu.ctr.model", "SDIMModel": "gsu.ctr.model",
    "TargetFeatures": "gsu.ctr.model", "BehaviorFeatures": "gsu.ctr.model", "build_model": "gsu.ctr.model",
    "TrainConfig": "gsu.ctr.train", "fit": "gsu.ctr.train", "evaluate": "gsu.ctr.train", "predict": "gsu.ctr.train",
    "auc": "gsu.ctr.metrics", "gauc": "gsu.ctr.metrics", "logloss": "gsu.ctr.metrics",
    "save_checkpoint": "gsu.ctr.checkpoint", "load_checkpoint": "gsu.ctr.checkpoint",
    "CTRTask": "gsu.ctr.data", "synthetic_task": "gsu.ctr.data", "movielens_task": "gsu.ctr.logtask",
    "log_task": "gsu.ctr.logtask", "task_from_log": "gsu.ctr.logtask", "taobao_task": "gsu.ctr.logtask",
    "build_task": "gsu.ctr.pipeline", "base_rate_baseline": "gsu.ctr.baseline",
    "export_torchscript": "gsu.ctr.export", "load_exported": "gsu.ctr.export",
    "prefix_view": "gsu.ctr.data", "retrieve_view": "gsu.ctr.data",
    "train_from_config": "gsu.ctr.pipeline", "method_views": "gsu.ctr.pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gsu.ctr' has no attribute {name!r}")
