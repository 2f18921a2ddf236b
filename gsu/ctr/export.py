"""Export the trained ESU for serving: TorchScript modules that take plain tensors.

The exported module of a :class:`~gsu.ctr.model.TargetAttentionModel` takes, for a batch of
``B`` (target, retrieved behaviors) rows::

    target_item (B,) int64, target_category (B,) int64,
    item (B, K) int64, category (B, K) int64, behavior_type (B, K) int64,
    time_bucket (B, K) int64, mask (B, K) bool          ->  click probability (B,) float32

(an :class:`~gsu.ctr.model.SDIMModel`: ``target_item, target_category, vectors (B, d) float32,
mask (B,) bool``). Frozen content vectors and item features are baked into the file. The module
is traced from the eager model on an example batch and checked against it on that batch; it
gives the eager model's scores to float rounding (tested to 1e-5) at any ``B`` and ``K``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gsu.ctr.model import BehaviorFeatures, SDIMModel, TargetFeatures

logger = logging.getLogger(__name__)

__all__ = ["ServingModule", "SDIMServingModule", "serving_inputs", "export_torchscript", "load_exported"]


class ServingModule(nn.Module):
    """Plain-tensor front of a :class:`~gsu.ctr.model.TargetAttentionModel` (see the module
    docstring for the inputs); returns probabilities ``(B,)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, target_item: Tensor, target_category: Tensor, item: Tensor, category: Tensor,
                behavior_type: Tensor, time_bucket: Tensor, mask: Tensor) -> Tensor:
        t = TargetFeatures(target_item, target_category)
        b = BehaviorFeatures(item, category, behavior_type, time_bucket)
        return torch.sigmoid(self.model(t, b, mask))


class SDIMServingModule(nn.Module):
    """Plain-tensor front of an :class:`~gsu.ctr.model.SDIMModel`; returns probabilities ``(B,)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, target_item: Tensor, target_category: Tensor, vectors: Tensor, mask: Tensor) -> Tensor:
        return torch.sigmoid(self.model(TargetFeatures(target_item, target_category), vectors, mask))


def serving_inputs(batch: Any) -> tuple[Tensor, ...]:
    """The exported module's positional inputs for a :class:`gsu.ctr.data.Batch`."""
    if batch.behaviors is None:
        return (batch.target.item, batch.target.category, batch.vectors, batch.vector_mask)
    b = batch.behaviors
    return (batch.target.item, batch.target.category, b.item, b.category, b.behavior_type, b.time_bucket, batch.mask)


def export_torchscript(model: nn.Module, path: str | os.PathLike, *, example: Any, atol: float = 1e-5) -> Any:
    """Trace ``model`` (eval mode) on ``example`` (a :class:`gsu.ctr.data.Batch`), check the
    traced module's probabilities against the eager model's on it (max abs difference <=
    ``atol``, else ``ValueError``), write it atomically to ``path`` and return it."""
    was = model.training
    model.eval()
    wrapper = SDIMServingModule(model) if isinstance(model, SDIMModel) else ServingModule(model)
    inputs = serving_inputs(example)
    try:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            # shape checks in the eager forward read as constants while tracing; the result is
            # verified against the eager model below (and, in the tests, at other B and K)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
            eager = wrapper(*inputs)
            got = traced(*inputs)
        diff = float((got - eager).abs().max()) if eager.numel() else 0.0
        if diff > atol:
            raise ValueError(f"export_torchscript: the traced module differs from the eager model by {diff:.2e} > {atol}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.jit.save(traced, tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        model.train(was)
    logger.info("exported %s -> %s (max |diff| %.2e on the example)", type(model).__name__, path, diff)
    return traced


def load_exported(path: str | os.PathLike) -> Any:
    """Load a module written by :func:`export_torchscript` (CPU)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such exported model")
    try:
        return torch.jit.load(str(p), map_location="cpu")
    except RuntimeError as e:
        raise ValueError(f"{p}: not a TorchScript module ({str(e).splitlines()[0]})") from None
