"""Training and evaluation: AdamW, early stopping on validation GAUC, seeded and deterministic.

Determinism (CPU): parameters are initialised from the seed (:func:`gsu.ctr.model.build_model`),
batches are shuffled with ``np.random.default_rng([seed, epoch])``, dropout draws from a torch
RNG seeded inside a forked RNG state, and ``torch.use_deterministic_algorithms(True)`` is on
for the duration of :func:`fit` (the previous setting is restored). Two runs with the same
seed, data and thread count give identical weights.

Long prefix batches (full-sequence attention) are split into chunks of at most
``max_behaviors_per_chunk`` padded behaviors; gradients accumulate over the chunks with
weights ``chunk_size / batch_size``, so the update equals the unchunked one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gsu.ctr.data import Batch, BehaviorView, CTRTask, iter_batches
from gsu.ctr.metrics import auc, gauc, logloss
from gsu.ctr.model import SDIMModel

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "FitResult", "fit", "predict", "evaluate"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    epochs: maximum passes over the training split. batch_size: samples per AdamW step.
    lr / weight_decay: AdamW's. patience: epochs without a validation-GAUC gain before
    stopping (the best epoch's weights are restored). seed: shuffling and dropout.
    max_behaviors_per_chunk: padded behaviors per forward chunk (memory bound for full
    attention). eval_batch_size: samples per inference batch. grad_clip: max gradient norm
    (None = off). progress: show a tqdm bar.
    """

    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    patience: int = 1
    seed: int = 0
    max_behaviors_per_chunk: int = 262_144
    eval_batch_size: int = 1024
    grad_clip: float | None = 10.0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_behaviors_per_chunk", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"TrainConfig.{name}: expected an integer >= 1, got {v!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"TrainConfig.patience: expected an integer >= 0, got {self.patience!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr: expected a positive number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay: expected >= 0, got {self.weight_decay!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch ``history`` (train loss, validation metrics, seconds),
    the ``best_epoch`` (1-based) whose weights the model now holds, its ``best_val`` metrics,
    training throughput (samples/s, forward + backward + step + batch assembly), ``stopped``
    ("epochs" or "early_stop")."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_samples_per_s: float = 0.0
    stopped: str = "epochs"


def _check_pair(model: nn.Module, view: BehaviorView) -> None:
    is_sdim = isinstance(model, SDIMModel)
    if is_sdim != (view.kind == "sdim"):
        raise ValueError(f"model {type(model).__name__} cannot read a {view.kind!r} view "
                         "(SDIMModel reads sdim views; TargetAttentionModel reads prefix/positions views)")


def _chunks(batch: Batch, max_behaviors: int) -> list[Batch]:
    if batch.mask is None:
        return [batch]
    b, k = batch.mask.shape
    per = max(1, max_behaviors // max(k, 1))
    if per >= b:
        return [batch]
    return [batch.slice(a, min(b, a + per)) for a in range(0, b, per)]


def _batches(model: nn.Module, task: CTRTask, view: BehaviorView, **kw: Any):
    cfg = model.config
    return iter_batches(task, view, temporal=cfg.temporal, n_time_buckets=cfg.n_time_buckets, **kw)


@torch.no_grad()
def predict(model: nn.Module, task: CTRTask, view: BehaviorView, *, batch_size: int = 1024,
            max_behaviors_per_chunk: int = 262_144) -> np.ndarray:
    """Click probabilities ``(S,)`` float32 for every row of ``view`` (view order)."""
    _check_pair(model, view)
    was_training = model.training
    model.eval()
    out = np.zeros(len(view), np.float32)
    try:
        for batch in _batches(model, task, view, batch_size=batch_size, by_length=True):
            for ch in _chunks(batch, max_behaviors_per_chunk):
                out[ch.index.numpy()] = torch.sigmoid(model(*ch.model_inputs())).numpy()
    finally:
        model.train(was_training)
    return out


def evaluate(model: nn.Module, task: CTRTask, view: BehaviorView, *, batch_size: int = 1024,
             max_behaviors_per_chunk: int = 262_144) -> dict[str, float]:
    """``{"auc", "gauc", "logloss", "n", "infer_seconds", "infer_samples_per_s"}`` on a view.

    GAUC weights each user's AUC by the user's number of samples and skips single-class users
    (see :mod:`gsu.ctr.metrics`); it is NaN when no user has both classes. Inference time
    covers batch assembly and the forward pass, not retrieval (precomputed in the view).
    """
    t0 = time.perf_counter()
    p = predict(model, task, view, batch_size=batch_size, max_behaviors_per_chunk=max_behaviors_per_chunk)
    dt = time.perf_counter() - t0
    s = task.samples
    y = s["label"][view.samples]
    users = s["user"][view.samples]
    return {
        "auc": auc(y, p),
        "gauc": gauc(y, p, users),
        "logloss": logloss(y, p),
        "n": int(len(view)),
        "infer_seconds": dt,
        "infer_samples_per_s": len(view) / dt if dt > 0 else float("inf"),
    }


def fit(model: nn.Module, task: CTRTask, train: BehaviorView, val: BehaviorView, *,
        config: TrainConfig = TrainConfig()) -> FitResult:
    """Train ``model`` on the ``train`` view with AdamW and binary cross-entropy; after each
    epoch evaluate on ``val`` and keep the weights with the best validation GAUC (AUC when
    GAUC is undefined); stop after ``patience`` epochs without a gain. The model ends holding
    the best epoch's weights, in eval mode."""
    from tqdm.auto import tqdm

    _check_pair(model, train)
    _check_pair(model, val)
    if len(train) == 0 or len(val) == 0:
        raise ValueError("fit: the train and validation views must be non-empty")
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    result = FitResult()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                    weight_decay=config.weight_decay)
            loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
            best_key, best_state, bad = -math.inf, None, 0
            n_seen, t_train = 0, 0.0
            for epoch in range(1, config.epochs + 1):
                model.train()
                rng = np.random.default_rng([config.seed, epoch])
                bar = tqdm(total=len(train), unit="sample", desc=f"{train.label or 'train'} ep{epoch}",
                           disable=not config.progress, leave=False, mininterval=0.5)
                tot_loss, t0 = 0.0, time.perf_counter()
                for batch in _batches(model, task, train, batch_size=config.batch_size, shuffle=True, rng=rng):
                    opt.zero_grad(set_to_none=True)
                    b = len(batch)
                    for ch in _chunks(batch, config.max_behaviors_per_chunk):
                        loss = loss_fn(model(*ch.model_inputs()), ch.label) / b
                        loss.backward()
                        tot_loss += float(loss.detach()) * b
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    opt.step()
                    bar.update(b)
                bar.close()
                dt = time.perf_counter() - t0
                t_train += dt
                n_seen += len(train)
                v = evaluate(model, task, val, batch_size=config.eval_batch_size,
                             max_behaviors_per_chunk=config.max_behaviors_per_chunk)
                key = v["gauc"] if not math.isnan(v["gauc"]) else v["auc"]
                result.history.append({"epoch": epoch, "train_loss": tot_loss / len(train), "val_auc": v["auc"],
                                       "val_gauc": v["gauc"], "val_logloss": v["logloss"], "seconds": dt})
                logger.info("%s epoch %d: loss %.4f val auc %.4f gauc %.4f", train.label, epoch,
                            tot_loss / len(train), v["auc"], v["gauc"])
                if key > best_key:
                    best_key, bad = key, 0
                    best_state = copy.deepcopy(model.state_dict())
                    result.best_epoch, result.best_val = epoch, {k: v[k] for k in ("auc", "gauc", "logloss")}
                else:
                    bad += 1
                    if bad > config.patience:
                        result.stopped = "early_stop"
                        break
            if best_state is not None:
                model.load_state_dict(best_state)
    finally:
        torch.use_deterministic_algorithms(prev_det)
    model.eval()
    result.train_seconds = t_train
    result.train_samples_per_s = n_seen / t_train if t_train > 0 else float("inf")
    return result
