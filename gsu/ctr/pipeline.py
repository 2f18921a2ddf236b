"""The CTR pipeline: a task, each retrieval method's per-split behavior views, the model's
settings for that method, and training from one config (what ``gsu train`` and ``gsu bench ctr``
share).

Names (``METHODS``):

===========  ==========================================================================
``full``     full-sequence exact attention: every visible behavior (capped at ``max_len``)
``last``     last-k: the k most recent behaviors (DIN's recency window)
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
(multi-head scaled dot-product target attention, softmax-normalised, so its pooled vector does
not grow with k) except ``sdim`` (:class:`gsu.ctr.model.SDIMModel`). DIN's activation unit is
available as ``model_config(..., attention="din")`` (softmax-normalised by default).
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

__all__ = ["METHODS", "LABELS", "method_views", "model_config", "twin_retriever", "train_from_config", "build_task",
           "SDIM_HASHES", "SDIM_TAU", "ETA_BITS", "check_method", "method_label"]

METHODS = ("full", "last", "hard", "soft", "muse", "eta", "sdim", "twin", "exact")
LABELS = {"full": "full attention", "last": "last-k", "hard": "SIM-hard", "soft": "SIM-soft",
          "muse": "MUSE-cosine", "eta": "ETA", "sdim": "SDIM", "twin": "TWIN-style", "exact": "exact top-k (oracle)"}
ETA_BITS = 64          # ETA: SimHash signature bits
SDIM_HASHES = 48       # SDIM: m signatures ...
SDIM_TAU = 3           # ... of tau bits each (SDIM paper's defaults)


def check_method(method: str) -> str:
    """``method``: a CTR preset (:data:`METHODS`) or any name in the retrieval registry
    (:func:`gsu.retrieval.method_names`, built with its defaults at the run's k)."""
    from gsu.retrieval.registry import method_names

    if method not in METHODS and method not in method_names():
        raise ValueError(f"method: expected one of {METHODS} or a registered retrieval method "
                         f"{method_names()}, got {method!r}")
    return method


def method_label(method: str) -> str:
    """The table label of ``method`` (a registered method without a preset: its name)."""
    return LABELS.get(method, method)


def model_config(task: CTRTask, method: str, **overrides: Any) -> ModelConfig:
    """The ESU configuration used for ``method`` on ``task`` (``overrides`` replace fields).

    Defaults: frozen content vectors of the task, learned item ids only where the task asks
    for them (``task.info["item_dim"]``), category 8, behavior type 4, TIN time buckets,
    2 heads x 32, head MLP (64, 32), the task's extra item features; then the task's own
    settings (``task.info["model"]``, e.g. the synthetic task's content-only ESU); ``sdim``
    gets an :class:`~gsu.ctr.model.SDIMModel` over the CTR-space aggregated vector.
    """
    check_method(method)
    feats = task.info.get("item_features", {})
    cfg = ModelConfig(
        n_items=task.n_items, n_categories=task.n_categories, n_behavior_types=task.n_behavior_types,
        content_dim=0 if task.item_vectors is None else int(task.item_vectors.shape[1]),
        item_dim=int(task.info.get("item_dim", 0)), category_dim=8, type_dim=4,
        temporal="time", n_time_buckets=24, time_unit=float(task.time_unit),
        attention="mha", num_heads=2, head_dim=32, mlp_hidden=(64, 32),
        extra_categorical=tuple(int(c) for c in feats.get("categorical_sizes", ())),
        extra_numeric=int(feats.get("n_numeric", 0)),
    )
    if task.info.get("model"):
        cfg = replace(cfg, **task.info["model"])
    if method == "sdim":
        emb = task.item_tables["ctr"].embeddings
        if emb is not None:
            width = int(emb.shape[1])
        else:  # SDIM aggregates the reference model's learned item vectors (learned_item_table)
            width = (cfg.content_dim + (cfg.attention_item_dim if cfg.decoupled else cfg.item_dim)
                     + cfg.extra_dim * (len(cfg.extra_categorical) + (1 if cfg.extra_numeric else 0))
                     + (cfg.attention_category_dim if cfg.decoupled else cfg.category_dim))
        cfg = replace(cfg, kind="sdim", sdim_dim=width)
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
        blocks = fe.item_blocks(ids)
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


LEARNED_SPACE = ("soft", "eta", "sdim", "exact")
"""Methods that need item embeddings; on a task without any they search the item vectors a
trained full-attention reference model learned (:func:`learned_item_table`)."""


def needs_reference(task: CTRTask, method: str) -> bool:
    """Whether ``method`` on ``task`` retrieves with a trained reference model: TWIN always;
    SIM-soft, ETA, SDIM and exact top-k when the task has no item embeddings."""
    return method == "twin" or (method in LEARNED_SPACE and task.item_tables["ctr"].embeddings is None)


def learned_item_table(task: CTRTask, model: TargetAttentionModel) -> Any:
    """An :class:`~gsu.retrieval.ItemTable` whose embeddings are ``model``'s attention-side
    item-inherent vectors ``[content, id embedding, extra features, category embedding]``
    (learned from the training split only) — the retrieval space for SIM-soft / ETA / SDIM on
    a log without item embeddings, as SIM-soft retrieves with pre-trained CTR embeddings."""
    import torch

    from gsu.retrieval.items import ItemTable

    fe = model.embedding.attention or model.embedding.representation
    with torch.no_grad():
        blocks = fe.item_blocks(torch.arange(task.n_items))
        if fe.category is not None:
            blocks.append(fe.category(torch.from_numpy(task.item_category)))
        emb = torch.cat(blocks, dim=1).numpy().astype(np.float32)
    return ItemTable(embeddings=np.ascontiguousarray(emb), category=task.item_category)


def build_retriever(task: CTRTask, method: str, k: int, *, reference: Any, seed: int) -> Any:
    registered_only = method not in METHODS
    if (method in LEARNED_SPACE or (registered_only and reference is not None)) and task.item_tables["ctr"].embeddings is None:
        if reference is None:
            raise ValueError(f"method {method!r}: task {task.name!r} has no item embeddings (give --item-embeddings) "
                             "and no trained reference model to learn them from")
        task = CTRTask(**{**task.__dict__, "item_tables": {**task.item_tables,
                                                           "ctr": learned_item_table(task, reference)}})
    from gsu.retrieval.registry import make_method

    ctr_items = task.item_tables["ctr"]
    if method in ("hard", "exact"):
        return make_method(method, ctr_items, k=k)
    if method == "soft":
        return make_method("soft", ctr_items, k=k, metric="ip")
    if method == "muse":  # SoftSearch by cosine over the content embeddings
        if "content" not in task.item_tables:
            raise ValueError(f"method 'muse': task {task.name!r} has no content item table (e.g. title embeddings)")
        return make_method("soft", task.item_tables["content"], k=k, metric="cosine")
    if method == "eta":  # SimHash top-k (ETA)
        return make_method("simhash", ctr_items, k=k, n_bits=ETA_BITS, seed=seed)
    if method == "sdim":
        return make_method("sdim", ctr_items, n_hashes=SDIM_HASHES, tau=SDIM_TAU, seed=seed)
    if method == "twin":
        if reference is None:
            raise ValueError("method 'twin': needs a trained reference model (its attention scores the behaviors)")
        return twin_retriever(task, reference, k=k)
    if registered_only:  # any other registered method, with its own defaults
        return make_method(method, ctr_items, k=k)
    raise ValueError(f"method {method!r} is not a retrieval method")


def method_views(task: CTRTask, method: str, *, k: int, splits: tuple[str, ...] = ("train", "val", "test"),
                 reference: Any = None, max_len: int = 10_000, seed: int = 0,
                 n_threads: int = 1) -> tuple[dict[str, BehaviorView], dict[str, Any]]:
    """Views of ``splits`` for ``method`` at ``k`` and a summary ``{"retrieval_seconds",
    "mean_behaviors" (test split), "label"}``. ``full`` ignores ``k`` and caps at ``max_len``;
    ``twin`` needs ``reference`` (a trained :class:`TargetAttentionModel`)."""
    check_method(method)
    label = method_label(method) + ("" if method in ("full", "sdim") else f" k={k}")
    t0 = time.perf_counter()
    if method in ("full", "last"):
        cap = max_len if method == "full" else k
        views = {s: prefix_view(task, s, cap=cap, label=label) for s in splits}
    else:
        r = build_retriever(task, method, k, reference=reference, seed=seed)
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


def build_task(*, data: str | Path = "synthetic", schema: Any = None, item_embeddings: str | Path | None = None,
               negatives: int | None = None, sample_rate: float | None = None, min_history: int = 1,
               users: int | None = None, targets_per_user: int | None = None, data_seed: int = 0,
               titles: bool = False, cache_dir: str | Path | None = None) -> CTRTask:
    """The task ``gsu train`` and ``gsu bench ctr`` train on, by name or file.

    data: "synthetic" (the benchmark's generator settings; ``users`` / ``targets_per_user``
    shrink it), "movielens" (:func:`gsu.datasets.samples.movielens_dir`) or a MovieLens
    folder, or a Parquet / CSV log file read with ``schema`` (a JSON file, dict or
    :class:`~gsu.datasets.logs.LogSchema`). ``data_seed`` seeds the data (generator, sampling),
    independent of the model seed. Defaults equal the benchmark's, so the same settings build
    the same task.
    """
    from gsu.ctr.data import synthetic_task
    from gsu.ctr.logtask import movielens_task, task_from_log

    if str(data) == "synthetic":
        from gsu.ctr.defaults import SYNTHETIC

        spec = dict(SYNTHETIC)
        if users is not None:
            spec["n_users"] = int(users)
        if targets_per_user is not None:
            spec["n_targets_per_user"] = int(targets_per_user)
        spec["seed"] = int(data_seed)
        return synthetic_task(**spec, cache_dir=cache_dir)
    from gsu.datasets.samples import movielens_dir

    path = movielens_dir() if str(data) == "movielens" else Path(data)
    if path.is_dir():
        kw: dict[str, Any] = {"seed": int(data_seed), "titles": titles, "cache_dir": cache_dir}
        if sample_rate is not None:
            kw["sample_rate"] = float(sample_rate)
        if negatives is not None:
            kw["negatives"] = int(negatives)
        return movielens_task(path, **kw)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file (or give 'synthetic' or 'movielens')")
    return task_from_log(path, schema=schema, item_embeddings=item_embeddings, negatives=negatives,
                         sample_rate=1.0 if sample_rate is None else float(sample_rate), min_history=min_history,
                         seed=int(data_seed))


def train_from_config(
    *,
    data: str | Path = "synthetic",
    schema: Any = None,
    item_embeddings: str | Path | None = None,
    method: str = "soft",
    k: int = 64,
    seed: int = 0,
    data_seed: int = 0,
    train_config: Any = None,
    negatives: int | None = None,
    sample_rate: float | None = None,
    min_history: int = 1,
    users: int | None = None,
    targets_per_user: int | None = None,
    max_len: int = 10_000,
    reference: str | Path | None = None,
    out: str | Path | None = None,
    export: str | Path | None = None,
    cache_dir: str | Path | None = None,
    say: Any = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Build a task (:func:`build_task`), retrieve with ``method``, train the ESU
    (``train_config``, a :class:`~gsu.ctr.train.TrainConfig`; default = the benchmark's
    recipe), evaluate on the test split next to the base-rate baseline (and the oracle on
    synthetic data), optionally save a checkpoint (``out``) and a TorchScript export
    (``export``). Returns a summary dict. ``twin`` uses ``reference`` (a checkpoint) or, without
    one, first trains a full-attention reference with the same settings; so do SIM-soft, ETA
    and SDIM on a log without item embeddings (they search the reference's learned item
    vectors). ``device``: where training and evaluation run (a torch device string, default
    "cpu"); retrieval, saving and export run on the CPU."""
    from gsu.ctr.defaults import train_config as bench_config
    from gsu.ctr.baseline import base_rate_baseline
    from gsu.ctr.checkpoint import load_checkpoint, save_checkpoint
    from gsu.ctr.experiment import best_possible_auc, cached_views, new_model, retrieval_quality
    from gsu.ctr.train import TrainConfig, evaluate, fit

    say = say or (lambda m: None)
    check_method(method)
    t0 = time.perf_counter()
    task = build_task(data=data, schema=schema, item_embeddings=item_embeddings, negatives=negatives,
                      sample_rate=sample_rate, min_history=min_history, users=users, targets_per_user=targets_per_user,
                      data_seed=data_seed, titles=method == "muse", cache_dir=cache_dir)
    say(f"task {task.name}: {task.info['n_samples']:,} samples (train {len(task.splits['train']):,}, val "
        f"{len(task.splits['val']):,}, test {len(task.splits['test']):,}), {task.info['n_behaviors']:,} behaviors, "
        f"{task.n_items:,} items [{time.perf_counter() - t0:.1f}s]")
    tcfg = train_config if train_config is not None else bench_config(False)
    tcfg = TrainConfig(**{**tcfg.to_dict(), "seed": int(seed)})
    ref_model = None
    if needs_reference(task, method):
        if reference is not None:
            ref_model, _ = load_checkpoint(reference)
        else:
            say(f"{method}: training the full-attention reference first (its attention / learned item vectors)")
            rv, _ = cached_views(task, "full", k, max_len=max_len, splits=("train", "val"))
            ref_model = new_model(task, "full", seed=seed)
            fit(ref_model, task, rv["train"], rv["val"], config=tcfg, device=device)
            ref_model.to("cpu")
    t1 = time.perf_counter()
    views, rsec = cached_views(task, method, k, reference=ref_model, max_len=max_len, cache_dir=None)
    say(f"retrieval {method_label(method)}: {len(views['train']) + len(views['val']) + len(views['test']):,} samples, "
        f"mean {views['test'].mean_behaviors():.1f} behaviors each [{time.perf_counter() - t1:.1f}s]")
    model = new_model(task, method, seed=seed)
    res = fit(model, task, views["train"], views["val"], config=tcfg,
              on_epoch=lambda h: say(f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}  val AUC {h['val_auc']:.4f}"
                                     f"  logloss {h['val_logloss']:.4f}  lr {h['lr']:.2g} [{h['seconds']:.1f}s]"),
              device=device)
    test = evaluate(model, task, views["test"], batch_size=tcfg.eval_batch_size,
                    max_behaviors_per_chunk=tcfg.max_behaviors_per_chunk, shared_min_cap=tcfg.shared_min_cap,
                    device=device)
    model.to("cpu")
    base = base_rate_baseline(task)
    q = retrieval_quality(task, views["test"], k=k, n_samples=1_000)
    summary = {
        "data": task.name, "task": task.info.get("fingerprint"), "method": method,
        "k": None if method in ("full", "sdim") else k, "seed": seed, "data_seed": data_seed,
        "test_auc": test["auc"], "test_gauc": test["gauc"], "test_logloss": test["logloss"],
        "base_rate_auc": base["auc"], "base_rate_gauc": base["gauc"], "base_rate_logloss": base["logloss"],
        "oracle_auc": best_possible_auc(task), "recall": q["recall"], "attention_mass": q["attention_mass"],
        "attention_flops": attention_flops(model, views["test"]), "mean_behaviors": views["test"].mean_behaviors(),
        "train_samples_per_s": res.train_samples_per_s, "infer_samples_per_s": test["infer_samples_per_s"],
        "best_epoch": res.best_epoch, "epochs_run": len(res.history), "retrieval_seconds": rsec,
        "checkpoint": None, "export": None,
    }
    if out is not None:
        save_checkpoint(out, model, train_config=tcfg.to_dict(),
                        meta={k2: (v.item() if isinstance(v, np.generic) else v) for k2, v in summary.items()
                              if k2 not in ("checkpoint", "export")})
        summary["checkpoint"] = str(out)
    if export is not None:
        from gsu.ctr.data import iter_batches
        from gsu.ctr.export import export_torchscript

        cfg = model.config
        ex = next(iter_batches(task, views["test"], batch_size=64, temporal=cfg.temporal,
                               n_time_buckets=cfg.n_time_buckets))
        export_torchscript(model, export, example=ex)
        summary["export"] = str(export)
    return summary
