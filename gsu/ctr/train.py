"""Training and evaluation: AdamW with warm-up and a plateau schedule, model selection on
validation logloss, seeded and deterministic.

Recipe (defaults of :class:`TrainConfig`): AdamW; the learning rate ramps up linearly over
``warmup_steps`` steps, then stays until an epoch fails to improve the selection metric
(validation **logloss** by default: every validation sample counts, unlike per-user GAUC,
whose few eligible users make it noisy) by ``min_delta``, whereupon it is multiplied by
``lr_decay``; training stops after ``patience`` such epochs or ``epochs`` epochs, and the
model ends holding the best epoch's weights.

Device: ``fit``, ``evaluate`` and ``predict`` take ``device`` (a torch device string, default
"cpu"): the model is moved there and every batch is copied there before its forward pass
(batches are still assembled on the CPU from the NumPy task); scores come back as NumPy.

Determinism (CPU): parameters are initialised from the seed (:func:`gsu.ctr.model.build_model`),
batches are shuffled with ``np.random.default_rng([seed, epoch])``, dropout draws from a torch
RNG seeded inside a forked RNG state, and ``torch.use_deterministic_algorithms(True)`` is on
for the duration of :func:`fit` (the previous setting is restored). Two runs with the same
seed, data and thread count give identical weights.

Full-sequence attention (prefix views with a cap of at least ``shared_min_cap`` and a
multi-head model) runs in the **user-grouped** form: the samples of one user are scored
against that user's history in one matrix product
(:meth:`~gsu.ctr.model.TargetAttentionModel.forward_shared`), in pieces of at most
``max_behaviors_per_chunk`` (targets x behaviors). Other batches are split into chunks of at
most ``max_behaviors_per_chunk`` padded behaviors. Gradients accumulate over pieces and chunks
with weights ``size / batch_size``, so an update equals the unchunked one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from gsu.ctr.data import Batch, BehaviorView, CTRTask, SharedBatch, iter_batches, make_shared_batch, user_pieces
from gsu.ctr.metrics import auc, gauc, logloss
from gsu.ctr.model import SDIMModel, TargetAttentionModel

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "FitResult", "fit", "predict", "evaluate", "uses_shared"]

SELECT = ("logloss", "auc", "gauc")
SCHEDULES = ("plateau", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    epochs: maximum passes over the training split. batch_size: samples per AdamW step.
    lr / weight_decay: AdamW's peak learning rate and decoupled weight decay.
    warmup_steps: steps of linear warm-up from ``lr / 10`` to ``lr``.
    lr_schedule: "plateau" (multiply by ``lr_decay`` after every epoch that does not improve
    the selection metric by ``min_delta``) or "constant". select: the validation metric that
    picks the best epoch and drives the schedule: "logloss" (default), "auc" or "gauc".
    patience: non-improving epochs tolerated before stopping (the best epoch's weights are
    restored). seed: shuffling and dropout. max_behaviors_per_chunk: padded behaviors (or
    targets x history length, user-grouped) per forward chunk: the memory bound.
    shared_min_cap: prefix views with at least this cap use the user-grouped form.
    eval_batch_size: samples per inference batch. grad_clip: max gradient norm (None = off).
    progress: tqdm bars (None = only on a terminal, True = always, False = never).
    """

    epochs: int = 12
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    lr_schedule: str = "plateau"
    lr_decay: float = 0.3
    select: str = "logloss"
    min_delta: float = 1e-4
    patience: int = 2
    seed: int = 0
    max_behaviors_per_chunk: int = 1_048_576
    shared_min_cap: int = 512
    eval_batch_size: int = 1024
    grad_clip: float | None = 10.0
    progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_behaviors_per_chunk", "eval_batch_size", "shared_min_cap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"TrainConfig.{name}: expected an integer >= 1, got {v!r}")
        for name in ("patience", "warmup_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"TrainConfig.{name}: expected an integer >= 0, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr: expected a positive number, got {self.lr!r}")
        if not (0 < self.lr_decay <= 1):
            raise ValueError(f"TrainConfig.lr_decay: expected a number in (0, 1], got {self.lr_decay!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.min_delta < 0:
            raise ValueError(f"TrainConfig.min_delta: expected >= 0, got {self.min_delta!r}")
        if self.select not in SELECT:
            raise ValueError(f"TrainConfig.select: expected one of {SELECT}, got {self.select!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule: expected one of {SCHEDULES}, got {self.lr_schedule!r}")

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


def uses_shared(model: nn.Module, view: BehaviorView, shared_min_cap: int = 512) -> bool:
    """Whether ``model`` runs ``view`` in the user-grouped form (full-sequence attention)."""
    return (view.kind == "prefix" and view.cap >= shared_min_cap and isinstance(model, TargetAttentionModel)
            and model.config.attention == "mha")


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


def _shared(model: nn.Module, task: CTRTask, view: BehaviorView, sel: np.ndarray) -> SharedBatch:
    cfg = model.config
    return make_shared_batch(task, view, sel, temporal=cfg.temporal, n_time_buckets=cfg.n_time_buckets)


def _steps(model: nn.Module, task: CTRTask, view: BehaviorView, config: TrainConfig,
           rng: np.random.Generator) -> Iterator[list[Any]]:
    """Training steps: lists of forward units (Batch chunks or SharedBatch pieces) whose
    sizes add up to about ``batch_size``."""
    if uses_shared(model, view, config.shared_min_cap):
        pieces = user_pieces(view, max_targets=config.batch_size, max_behaviors=config.max_behaviors_per_chunk, rng=rng)
        step: list[np.ndarray] = []
        size = 0
        for p in pieces:
            if size and size + p.size > config.batch_size:
                yield [_shared(model, task, view, q) for q in step]
                step, size = [], 0
            step.append(p)
            size += p.size
        if step:
            yield [_shared(model, task, view, q) for q in step]
        return
    for batch in _batches(model, task, view, batch_size=config.batch_size, shuffle=True, rng=rng):
        yield _chunks(batch, config.max_behaviors_per_chunk)


def _device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, with a clear error for a bad or absent one."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected a torch device string such as 'cpu' or 'cuda:0', got {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (torch {torch.__version__})")
    return dev


def _to(unit: Any, dev: torch.device) -> Any:
    """A copy of a :class:`Batch` or :class:`SharedBatch` with every tensor on ``dev`` (itself on the CPU)."""
    if dev.type == "cpu":
        return unit

    def mv(x: Any) -> Any:
        if x is None:
            return None
        if isinstance(x, tuple):
            return type(x)(*(mv(t) for t in x))
        return x.to(dev, non_blocking=True)

    return type(unit)(*(mv(getattr(unit, f.name)) for f in fields(unit)))


def _logits(model: nn.Module, unit: Any) -> torch.Tensor:
    if isinstance(unit, SharedBatch):
        return model.forward_shared(unit.target, unit.history, unit.mask)
    return model(*unit.model_inputs())


@torch.no_grad()
def predict(model: nn.Module, task: CTRTask, view: BehaviorView, *, batch_size: int = 1024,
            max_behaviors_per_chunk: int = 1_048_576, shared_min_cap: int = 512,
            device: str | torch.device = "cpu") -> np.ndarray:
    """Click probabilities ``(S,)`` float32 for every row of ``view`` (view order), computed
    on ``device`` (the model is moved there)."""
    _check_pair(model, view)
    dev = _device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    out = np.zeros(len(view), np.float32)
    try:
        if uses_shared(model, view, shared_min_cap):
            for p in user_pieces(view, max_targets=batch_size, max_behaviors=max_behaviors_per_chunk):
                sb = _to(_shared(model, task, view, p), dev)
                out[p] = torch.sigmoid(_logits(model, sb)).cpu().numpy()
        else:
            for batch in _batches(model, task, view, batch_size=batch_size, by_length=True):
                for ch in _chunks(batch, max_behaviors_per_chunk):
                    out[ch.index.numpy()] = torch.sigmoid(model(*_to(ch, dev).model_inputs())).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def evaluate(model: nn.Module, task: CTRTask, view: BehaviorView, *, batch_size: int = 1024,
             max_behaviors_per_chunk: int = 1_048_576, shared_min_cap: int = 512,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """``{"auc", "gauc", "logloss", "n", "infer_seconds", "infer_samples_per_s"}`` on a view.

    GAUC weights each user's AUC by the user's number of samples and skips single-class users
    (see :mod:`gsu.ctr.metrics`); it is NaN when no user has both classes. Inference time
    covers batch assembly and the forward pass, not retrieval (precomputed in the view).
    ``device``: where the forward passes run (see :func:`predict`).
    """
    t0 = time.perf_counter()
    p = predict(model, task, view, batch_size=batch_size, max_behaviors_per_chunk=max_behaviors_per_chunk,
                shared_min_cap=shared_min_cap, device=device)
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


def _key(v: dict[str, float], select: str) -> float:
    """Higher is better."""
    if select == "logloss":
        return -v["logloss"]
    x = v[select]
    return v["auc"] if (select == "gauc" and math.isnan(x)) else x


def fit(model: nn.Module, task: CTRTask, train: BehaviorView, val: BehaviorView, *,
        config: TrainConfig = TrainConfig(), on_epoch: Callable[[dict[str, float]], None] | None = None,
        device: str | torch.device = "cpu") -> FitResult:
    """Train ``model`` on the ``train`` view with AdamW and binary cross-entropy (see the
    module docstring for the recipe); after each epoch evaluate on ``val`` (and call
    ``on_epoch`` with that epoch's history entry). The model ends holding the best epoch's
    weights (by ``config.select``), in eval mode, on ``device`` (a torch device string:
    "cpu", the default, or e.g. "cuda:0"; batches are assembled on the CPU and copied there;
    bit-for-bit determinism is promised on the CPU only)."""
    from tqdm.auto import tqdm

    _check_pair(model, train)
    _check_pair(model, val)
    if len(train) == 0 or len(val) == 0:
        raise ValueError("fit: the train and validation views must be non-empty")
    dev = _device(device)
    model.to(dev)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    result = FitResult()
    disable = None if config.progress is None else not config.progress
    try:
        cuda_ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_ids):
            torch.manual_seed(config.seed)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                    weight_decay=config.weight_decay)
            loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
            best_key, best_state, bad = -math.inf, None, 0
            n_seen, t_train, step_no = 0, 0.0, 0
            lr_now = config.lr
            for epoch in range(1, config.epochs + 1):
                model.train()
                rng = np.random.default_rng([config.seed, epoch])
                bar = tqdm(total=len(train), unit="sample", desc=f"{train.label or 'train'} ep{epoch}",
                           disable=disable, leave=False, mininterval=0.5)
                tot_loss, t0 = 0.0, time.perf_counter()
                for units in _steps(model, task, train, config, rng):
                    b = sum(len(u) for u in units)
                    step_no += 1
                    if config.warmup_steps and step_no <= config.warmup_steps:
                        scale = 0.1 + 0.9 * step_no / config.warmup_steps
                    else:
                        scale = 1.0
                    for g in opt.param_groups:
                        g["lr"] = lr_now * scale
                    opt.zero_grad(set_to_none=True)
                    for u in units:
                        u = _to(u, dev)
                        loss = loss_fn(_logits(model, u), u.label) / b
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
                             max_behaviors_per_chunk=config.max_behaviors_per_chunk,
                             shared_min_cap=config.shared_min_cap, device=dev)
                key = _key(v, config.select)
                result.history.append({"epoch": epoch, "train_loss": tot_loss / len(train), "val_auc": v["auc"],
                                       "val_gauc": v["gauc"], "val_logloss": v["logloss"], "lr": lr_now,
                                       "seconds": dt})
                if on_epoch is not None:
                    on_epoch(result.history[-1])
                logger.info("%s epoch %d: loss %.4f val auc %.4f gauc %.4f logloss %.4f (lr %.2g, %.0fs)",
                            train.label, epoch, tot_loss / len(train), v["auc"], v["gauc"], v["logloss"], lr_now, dt)
                if key > best_key + config.min_delta or best_state is None:
                    best_key, bad = max(key, best_key), 0
                    best_state = copy.deepcopy(model.state_dict())
                    result.best_epoch, result.best_val = epoch, {k: v[k] for k in ("auc", "gauc", "logloss")}
                else:
                    if key > best_key:  # a gain below min_delta: keep the better weights, count no progress
                        best_key = key
                        best_state = copy.deepcopy(model.state_dict())
                        result.best_epoch, result.best_val = epoch, {k: v[k] for k in ("auc", "gauc", "logloss")}
                    bad += 1
                    if bad > config.patience:
                        result.stopped = "early_stop"
                        break
                    if config.lr_schedule == "plateau":
                        lr_now *= config.lr_decay
            if best_state is not None:
                model.load_state_dict(best_state)
    finally:
        torch.use_deterministic_algorithms(prev_det)
    model.eval()
    result.train_seconds = t_train
    result.train_samples_per_s = n_seen / t_train if t_train > 0 else float("inf")
    return result
