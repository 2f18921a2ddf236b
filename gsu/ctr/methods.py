"""Retrieval methods as the CTR model sees them: a name -> per-split behavior views.

Names (``METHODS``):

===========  ==========================================================================
``full``     full-sequence exact attention: every visible behavior (capped at ``max_len``)
``last``     last-k DIN: the k most recent behaviors, DIN's activation unit
``hard``     SIM-hard: same category as the target, most recent first
``soft``     SIM-soft: inner-product top-k over the CTR embedding space (table "ctr")
``muse``     MUSE-cosine: cosine top-k over content / multimodal vectors (table "content")
``eta``      ETA: SimHash signatures of the CTR embeddings, Hamming top-k
``sdim``     SDIM: SimHash bucket collision, aggregated vector (k unused)
``twin``     TWIN-style: the trained reference model's own attention score (inherent features)
``exact``    oracle GSU: exact inner-product top-k in the CTR space (the retrieval ground truth)
===========  ==========================================================================

All retrieval runs in batch through :func:`gsu.retrieval.batch.retrieve_batch` with the time
cut (a sample at time t only sees behaviors before t). The ESU is the same for every method
(multi-head scaled dot-product target attention with TIN) except ``last`` (DIN's unit) and
``sdim`` (:class:`gsu.ctr.model.SDIMModel`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gsu.ctr.data import CTRTask, BehaviorView, prefix_view, retrieve_view
from gsu.ctr.model import ModelConfig, TargetAttentionModel

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "LABELS", "method_views", "model_config", "twin_retriever", "train_from_config",
           "SDIM_HASHES", "SDIM_TAU", "ETA_BITS"]

METHODS = ("full", "last", "hard", "soft", "muse", "eta", "sdim", "twin", "exact")
LABELS = {"full": "full attention", "last": "last-k DIN", "hard": "SIM-hard", "soft": "SIM-soft",
          "muse": "MUSE-cosine", "eta": "ETA", "sdim": "SDIM", "twin": "TWIN-style", "exact": "exact top-k (oracle)"}
ETA_BITS = 64          # ETA: SimHash signature bits
SDIM_HASHES = 48       # SDIM: m signatures ...
SDIM_TAU = 3           # ... of tau bits each (SDIM paper's defaults)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return method


def model_config(task: CTRTask, method: str, **overrides: Any) -> ModelConfig:
    """The ESU configuration used for ``method`` on ``task`` (``overrides`` replace fields).

    Defaults: frozen content vectors of the task, learned item ids only where the task asks
    for them (``task.info["item_dim"]``), category 8, behavior type 4, TIN time buckets,
    2 heads x 32, head MLP (64, 32); ``last`` uses DIN's activation unit (unnormalised sum);
    ``sdim`` an :class:`~gsu.ctr.model.SDIMModel` over the CTR-space aggregated vector.
    """
    _check_method(method)
    cfg = ModelConfig(
        n_items=task.n_items, n_categories=task.n_categories, n_behavior_types=task.n_behavior_types,
        content_dim=0 if task.item_vectors is None else int(task.item_vectors.shape[1]),
        item_dim=int(task.info.get("item_dim", 0)), category_dim=8, type_dim=4,
        temporal="time", n_time_buckets=24, time_unit=float(task.time_unit),
        attention="mha", num_heads=2, head_dim=32, mlp_hidden=(64, 32),
    )
    if method == "last":
        cfg = replace(cfg, attention="din", din_normalize="none", din_hidden=(64, 32))
    if method == "sdim":
        cfg = replace(cfg, kind="sdim", sdim_dim=int(task.item_tables["ctr"].embeddings.shape[1]))
    return replace(cfg, **overrides) if overrides else cfg


def twin_retriever(task: CTRTask, model: TargetAttentionModel, *, k: int) -> Any:
    """A :class:`gsu.retrieval.methods.TWIN` whose score is ``model``'s attention score over the
    item-inherent features (TWIN, Chang et al. 2023 §3.2): per item the vector
    ``[content, item id emb, category emb, 1]`` from the model's attention-side tables,
    ``query_proj`` = the query projection of those blocks (the constant row carries the
    query bias and the TIN target row) and ``key_proj`` = the key projection of the same
    blocks (0 for the constant). Behavior type and the behavior's temporal encoding are
    request-specific and left out, as TWIN leaves cross features out of its precomputed keys.
    """
    import torch

    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.methods import TWIN

    if not isinstance(model, TargetAttentionModel) or model.config.attention != "mha":
        raise ValueError("twin_retriever: needs a TargetAttentionModel with multi-head attention (attention='mha')")
    fe = model.embedding.attention or model.embedding.representation
    with torch.no_grad():
        ids = torch.arange(task.n_items)
        cats = torch.from_numpy(task.item_category)
        blocks = []
        if fe.item_vectors is not None:
            blocks.append(fe.item_vectors)
        if fe.item is not None:
            blocks.append(fe.item(ids))
        if fe.category is not None:
            blocks.append(fe.category(cats))
        inherent = torch.cat(blocks, dim=1)                        # (n, D0), leading columns of the attention vector
        d0 = inherent.shape[1]
        att = model.attention
        H, dh = att.num_heads, att.head_dim
        head_scale = torch.exp(att.log_scale).repeat_interleave(dh)  # per-head inverse temperature
        wq = att.w_q.weight * head_scale[:, None]                  # (H*dh, D)
        const = att.w_q.bias * head_scale
        if model.temporal is not None:
            const += wq @ model.temporal.attention.weight[0]
        qp = torch.cat([wq[:, :d0].T, const[None, :]], dim=0)      # (D0+1, H*dh)
        wk = att.w_k.reshape(H * dh, -1)                           # (H*dh, D)
        kp = torch.cat([wk[:, :d0].T, torch.zeros(1, H * dh)], dim=0)
        emb = torch.cat([inherent, torch.ones(task.n_items, 1)], dim=1)
    table = ItemTable(embeddings=emb.numpy().astype(np.float32), category=task.item_category)
    return TWIN(table, k=k, query_proj=qp.numpy().astype(np.float32), key_proj=kp.numpy().astype(np.float32),
                n_heads=H, scale=True)


def _retriever(task: CTRTask, method: str, k: int, *, reference: Any, seed: int) -> Any:
    if method == "hard":
        from gsu.retrieval.methods import HardSearch
        return HardSearch(task.item_tables["ctr"], k=k)
    if method == "soft":
        from gsu.retrieval.methods import SoftSearch
        return SoftSearch(task.item_tables["ctr"], k=k, metric="ip")
    if method == "muse":
        from gsu.retrieval.methods import SoftSearch
        if "content" not in task.item_tables:
            raise ValueError(f"method 'muse': task {task.name!r} has no content item table (e.g. title embeddings)")
        return SoftSearch(task.item_tables["content"], k=k, metric="cosine")
    if method == "eta":
        from gsu.retrieval.lsh import SimHashTopK
        return SimHashTopK(task.item_tables["ctr"], k=k, n_bits=ETA_BITS, seed=seed)
    if method == "sdim":
        from gsu.retrieval.lsh import SDIM
        return SDIM(task.item_tables["ctr"], n_hashes=SDIM_HASHES, tau=SDIM_TAU, seed=seed)
    if method == "twin":
        if reference is None:
            raise ValueError("method 'twin': needs a trained reference model (its attention scores the behaviors)")
        return twin_retriever(task, reference, k=k)
    if method == "exact":
        from gsu.retrieval.methods import Exact
        return Exact(task.item_tables["ctr"], k=k)
    raise ValueError(f"method {method!r} is not a retrieval method")


def method_views(task: CTRTask, method: str, *, k: int, splits: tuple[str, ...] = ("train", "val", "test"),
                 reference: Any = None, max_len: int = 10_000, seed: int = 0,
                 n_threads: int = 1) -> tuple[dict[str, BehaviorView], dict[str, Any]]:
    """Views of ``splits`` for ``method`` at ``k`` and a summary ``{"retrieval_seconds",
    "mean_behaviors" (test split), "label"}``. ``full`` ignores ``k`` and caps at ``max_len``;
    ``twin`` needs ``reference`` (a trained :class:`TargetAttentionModel`)."""
    _check_method(method)
    label = LABELS[method] + ("" if method in ("full", "sdim") else f" k={k}")
    t0 = time.perf_counter()
    if method in ("full", "last"):
        cap = max_len if method == "full" else k
        views = {s: prefix_view(task, s, cap=cap, label=label) for s in splits}
    else:
        r = _retriever(task, method, k, reference=reference, seed=seed)
        views = {s: retrieve_view(task, s, r, k=None if method == "sdim" else k, label=label, n_threads=n_threads)
                 for s in splits}
    dt = time.perf_counter() - t0
    last = views[splits[-1]]
    return views, {"retrieval_seconds": dt, "mean_behaviors": last.mean_behaviors(), "label": label}


def attention_flops(model: Any, view: BehaviorView) -> float:
    """Attention FLOPs per sample of ``model`` on ``view`` (mean over the view's samples)."""
    from gsu.ctr.model import SDIMModel

    if isinstance(model, SDIMModel):
        return model.attention_flops(SDIM_HASHES, SDIM_TAU)
    return model.attention_flops(view.mean_behaviors())


def train_from_config(
    *,
    data: str = "synthetic",
    data_path: str | Path | None = None,
    method: str = "soft",
    k: int = 64,
    epochs: int = 4,
    seed: int = 0,
    out: str | Path | None = None,
    batch_size: int = 64,
    lr: float = 1e-2,
    n_users: int = 100,
    max_len: int = 10_000,
    reference: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a task, retrieve with ``method``, train the ESU, evaluate on the test split and
    (when ``out`` is given) save a checkpoint. Returns a summary dict (test AUC/GAUC/logloss,
    attention FLOPs/sample, throughputs, best epoch, checkpoint path).

    data: "synthetic" (the built-in generator with ``n_users`` users, sequences 1,000-10,000)
    or "movielens" (``data_path`` = a MovieLens folder, default ``../shared/datasets/
    movielens-latest-small``; "muse" then embeds titles with MiniLM, offline).
    method: one of :data:`METHODS`. ``twin`` uses ``reference`` (a checkpoint) or, without
    one, first trains a full-attention reference with the same settings.
    """
    from gsu.ctr.checkpoint import load_checkpoint, save_checkpoint
    from gsu.ctr.data import movielens_task, synthetic_task
    from gsu.ctr.model import build_model
    from gsu.ctr.train import TrainConfig, evaluate, fit

    _check_method(method)
    if data == "synthetic":
        task = synthetic_task(n_users=n_users, seed=seed)
    elif data == "movielens":
        folder = Path(data_path) if data_path else Path("../shared/datasets/movielens-latest-small")
        titles = None
        if method == "muse":
            from gsu.datasets import read_movielens_movies
            from gsu.datasets.text import embed_texts
            titles = embed_texts(list(read_movielens_movies(folder / "movies.csv")["title"]))
        task = movielens_task(folder, title_vectors=titles, seed=seed)
    else:
        raise ValueError(f"data: expected 'synthetic' or 'movielens', got {data!r}")
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    ref_model = None
    if method == "twin":
        if reference is not None:
            ref_model, _ = load_checkpoint(reference)
        else:
            rv, _ = method_views(task, "full", k=k, splits=("train", "val"), max_len=max_len, seed=seed)
            ref_model = build_model(model_config(task, "full"), item_vectors=task.item_vectors, seed=seed)
            fit(ref_model, task, rv["train"], rv["val"], config=tcfg)
    views, vinfo = method_views(task, method, k=k, reference=ref_model, max_len=max_len, seed=seed)
    model = build_model(model_config(task, method), item_vectors=task.item_vectors, seed=seed)
    res = fit(model, task, views["train"], views["val"], config=tcfg)
    test = evaluate(model, task, views["test"], batch_size=tcfg.eval_batch_size)
    summary = {
        "data": data, "method": method, "k": None if method in ("full", "sdim") else k, "seed": seed,
        "test_auc": test["auc"], "test_gauc": test["gauc"], "test_logloss": test["logloss"],
        "attention_flops": attention_flops(model, views["test"]), "mean_behaviors": vinfo["mean_behaviors"],
        "train_samples_per_s": res.train_samples_per_s, "infer_samples_per_s": test["infer_samples_per_s"],
        "best_epoch": res.best_epoch, "retrieval_seconds": vinfo["retrieval_seconds"], "checkpoint": None,
    }
    if "prob" in task.samples:
        from gsu.ctr.metrics import auc
        idx = views["test"].samples
        summary["best_possible_auc"] = auc(task.samples["label"][idx], task.samples["prob"][idx])
    if out is not None:
        save_checkpoint(out, model, train_config=tcfg.to_dict(),
                        meta={k2: (v if not isinstance(v, np.generic) else v.item()) for k2, v in summary.items()
                              if k2 != "checkpoint"})
        summary["checkpoint"] = str(out)
    return summary
