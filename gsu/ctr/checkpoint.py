"""Checkpoints: the model's ``state_dict`` plus its :class:`ModelConfig` (and optional
training settings and metadata) in one ``torch.save`` file, written atomically.

The file is a dict ``{"format": "gsu.ctr.checkpoint", "version": 1, "model_config": {...},
"state_dict": {...}, "train_config": {...} | None, "meta": {...}}``; it is read back with
``torch.load(weights_only=True)`` (no pickled code), so metadata must be plain JSON-like
values. A checkpoint reloads with no extra arguments: frozen item content vectors travel in
the state dict.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gsu.ctr.model import ModelConfig, build_model

logger = logging.getLogger(__name__)

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT", "VERSION"]

FORMAT = "gsu.ctr.checkpoint"
VERSION = 2


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, train_config: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :mod:`gsu.ctr.model` model carrying ``.config``) to ``path`` atomically
    (temporary file in the same folder, fsync, rename). ``train_config`` / ``meta`` must be
    JSON-serialisable. Returns the path."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"save_checkpoint: expected a gsu.ctr model with a ModelConfig, got {type(model).__name__}")
    for name, v in (("train_config", train_config), ("meta", meta)):
        if v is not None:
            try:
                json.dumps(v)
            except TypeError as e:
                raise TypeError(f"save_checkpoint: {name} must be JSON-serialisable ({e})") from None
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_config": train_config,
        "meta": meta or {},
    }
    path = Path(path)
    from gsu._format import atomic_file

    with atomic_file(path) as f:
        torch.save(payload, f)
    logger.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns ``(model, info)`` with the model in eval mode and ``info`` =
    ``{"model_config", "train_config", "meta"}``. Raises ``ValueError`` naming the file when it
    is not a gsu CTR checkpoint, has an unknown version, or its weights do not fit its config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gsu CTR checkpoint (missing format marker {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')!r} is not supported (expected {VERSION})")
    cfg_d = dict(payload["model_config"])
    for key in ("din_hidden", "mlp_hidden"):
        cfg_d[key] = tuple(cfg_d[key])
    config = ModelConfig.from_dict(cfg_d)
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the stored model config: {e}") from None
    model.eval()
    return model, {"model_config": config, "train_config": payload.get("train_config"), "meta": payload.get("meta", {})}
