"""The compact CTR model (ESU): exact target attention over the behaviors a GSU retrieved.

:class:`TargetAttentionModel` takes ``(target features, behavior features, mask)`` — the
behaviors being whatever subset :mod:`gsu.retrieval` picked (or the whole visible sequence,
which makes it the full-sequence exact-attention reference) — and never calls an index.
:class:`SDIMModel` takes SDIM's aggregated behavior vector instead of positions.

Architecture (both models)::

    target t, behaviors b_1..b_K  -> embeddings (DARE: attention / representation tables)
                                   + TIN temporal encoding (both sides)
    pooled = attention(t_att, b_att, mask, values=b_rep)        # DIN unit or multi-head SDPA
    logit  = MLP([t_rep, pooled, t_rep * P pooled])
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gsu.ctr.layers import (
    MLP,
    DecoupledEmbedding,
    DinAttention,
    EmbeddedFeatures,
    FeatureEmbedding,
    MultiHeadTargetAttention,
    TemporalEncoding,
    masked_softmax,
)

logger = logging.getLogger(__name__)

__all__ = ["ModelConfig", "TargetFeatures", "BehaviorFeatures", "TargetAttentionModel", "SDIMModel", "build_model"]


class TargetFeatures(NamedTuple):
    """Candidate (target) item features: ``item (B,)`` int64 ids, ``category (B,)`` int64."""

    item: Tensor
    category: Tensor


class BehaviorFeatures(NamedTuple):
    """Features of the ``K`` behaviors per sample, each ``(B, K)`` int64.

    ``item``/``category``: ids; ``behavior_type``: action id (0 when the data has none);
    ``time_bucket``: TIN bucket of the behavior's offset from the target (see
    :meth:`gsu.ctr.layers.TemporalEncoding.bucketize`). Padded slots may hold 0s; the mask
    passed next to these features decides what is real.
    """

    item: Tensor
    category: Tensor
    behavior_type: Tensor
    time_bucket: Tensor


@dataclass(frozen=True)
class ModelConfig:
    """Every setting of the CTR model; stored in checkpoints (JSON-serialisable).

    Sizes: ``n_items``, ``n_categories``, ``n_behavior_types`` (table rows); ``content_dim``
    is the width of frozen item content vectors (0 = none; the vectors themselves travel in
    the state dict). Embeddings: ``item_dim``, ``category_dim``, ``type_dim``.
    DARE: ``decoupled`` adds separate attention tables of widths ``attention_item_dim`` /
    ``attention_category_dim`` (DARE finds a smaller attention width loses nothing).
    TIN: ``temporal`` is ``"time"`` (log buckets of ``(t - ts) / time_unit``),
    ``"position"`` (log buckets of recency rank) or ``"none"``; ``n_time_buckets`` rows.
    Attention: ``attention`` is ``"mha"`` (multi-head scaled dot-product, ``num_heads`` x
    ``head_dim``, initialised as ``attention_init``: "similarity" or "random", see
    :class:`~gsu.ctr.layers.MultiHeadTargetAttention`) or ``"din"`` (activation unit with ``din_hidden``; ``din_normalize`` "none"
    = DIN's unnormalised sum, "softmax" = normalised). Head: ``mlp_hidden``, ``dropout``;
    ``expected_score`` (multi-head only) also feeds the head each head's attention-weighted
    mean logit ``sum_i a_i s_i`` — how strongly the history matches the target, which the
    normalised pooled vector alone cannot express.
    ``kind`` is ``"attention"`` or ``"sdim"`` (then ``sdim_dim`` is the aggregated vector width).
    Extra item features: ``extra_categorical`` (cardinalities, code 0 = missing) and
    ``extra_numeric`` (count), each embedded to ``extra_dim``; their per-item values travel in
    the state dict (see :meth:`gsu.ctr.layers.FeatureEmbedding.set_item_features`).
    """

    n_items: int
    n_categories: int
    n_behavior_types: int = 1
    content_dim: int = 0
    item_dim: int = 16
    category_dim: int = 8
    type_dim: int = 4
    decoupled: bool = False
    attention_item_dim: int = 8
    attention_category_dim: int = 4
    temporal: str = "time"
    n_time_buckets: int = 24
    time_unit: float = 1.0
    attention: str = "mha"
    attention_init: str = "similarity"
    num_heads: int = 2
    head_dim: int = 32
    din_hidden: tuple[int, ...] = (64, 32)
    din_normalize: str = "softmax"
    mlp_hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    expected_score: bool = True
    kind: str = "attention"
    sdim_dim: int = 0
    extra_categorical: tuple[int, ...] = ()
    extra_numeric: int = 0
    extra_dim: int = 4

    def __post_init__(self) -> None:
        for name in ("n_items", "n_categories", "n_behavior_types"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"ModelConfig.{name}: expected an integer >= 1, got {v!r}")
        for name in ("content_dim", "item_dim", "category_dim", "type_dim", "attention_item_dim",
                     "attention_category_dim", "sdim_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"ModelConfig.{name}: expected an integer >= 0, got {v!r}")
        if self.temporal not in ("time", "position", "none"):
            raise ValueError(f"ModelConfig.temporal: expected 'time', 'position' or 'none', got {self.temporal!r}")
        if self.attention_init not in ("similarity", "random"):
            raise ValueError(f"ModelConfig.attention_init: expected 'similarity' or 'random', got {self.attention_init!r}")
        if self.attention not in ("mha", "din"):
            raise ValueError(f"ModelConfig.attention: expected 'mha' or 'din', got {self.attention!r}")
        if self.din_normalize not in ("none", "softmax"):
            raise ValueError(f"ModelConfig.din_normalize: expected 'none' or 'softmax', got {self.din_normalize!r}")
        if self.kind not in ("attention", "sdim"):
            raise ValueError(f"ModelConfig.kind: expected 'attention' or 'sdim', got {self.kind!r}")
        if self.kind == "sdim" and self.sdim_dim < 1:
            raise ValueError("ModelConfig.sdim_dim: SDIM models need the aggregated vector width (>= 1)")
        if not self.time_unit > 0:
            raise ValueError(f"ModelConfig.time_unit: expected a positive number, got {self.time_unit!r}")
        object.__setattr__(self, "extra_categorical", tuple(int(c) for c in self.extra_categorical))
        object.__setattr__(self, "din_hidden", tuple(int(h) for h in self.din_hidden))
        object.__setattr__(self, "mlp_hidden", tuple(int(h) for h in self.mlp_hidden))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["din_hidden"] = list(self.din_hidden)
        d["mlp_hidden"] = list(self.mlp_hidden)
        d["extra_categorical"] = list(self.extra_categorical)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"ModelConfig: unknown settings {sorted(unknown)}")
        return cls(**d)


def _embedding(config: ModelConfig, item_vectors: Tensor | None) -> DecoupledEmbedding:
    rep = FeatureEmbedding(
        n_items=config.n_items, n_categories=config.n_categories, n_behavior_types=config.n_behavior_types,
        item_dim=config.item_dim, category_dim=config.category_dim, type_dim=config.type_dim,
        item_vectors=item_vectors, extra_categorical=config.extra_categorical, extra_numeric=config.extra_numeric,
        extra_dim=config.extra_dim,
    )
    att = None
    if config.decoupled:
        att = FeatureEmbedding(
            n_items=config.n_items, n_categories=config.n_categories, n_behavior_types=config.n_behavior_types,
            item_dim=config.attention_item_dim, category_dim=config.attention_category_dim,
            type_dim=config.type_dim, item_vectors=item_vectors, extra_categorical=config.extra_categorical,
            extra_numeric=config.extra_numeric, extra_dim=config.extra_dim,
        )
    return DecoupledEmbedding(representation=rep, attention=att)


def _check_item_vectors(config: ModelConfig, item_vectors: Any) -> Tensor | None:
    if config.content_dim == 0:
        if item_vectors is not None:
            raise ValueError("item_vectors given but ModelConfig.content_dim is 0")
        return None
    if item_vectors is None:
        # placeholder; load_state_dict fills the buffer (checkpoint loading)
        return torch.zeros(config.n_items, config.content_dim)
    v = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32))
    if tuple(v.shape) != (config.n_items, config.content_dim):
        raise ValueError(f"item_vectors: expected shape ({config.n_items}, {config.content_dim}), got {tuple(v.shape)}")
    return v


def _scores_vs(q: Tensor, x: Tensor) -> Tensor:
    """``q (B, H, d)`` against behavior vectors ``x (B, K, d)`` or shared ``(1, K, d)`` -> ``(B, H, K)``.
    The shared form is one ``(B*H, d) x (d, K)`` product (no per-target copy of ``x``)."""
    if x.shape[0] == 1 and q.shape[0] != 1:
        B, H, d = q.shape
        return (q.reshape(B * H, d) @ x[0].T).view(B, H, x.shape[1])
    return torch.bmm(q, x.transpose(1, 2))


def _pool_vs(w: Tensor, x: Tensor) -> Tensor:
    """Weights ``w (B, H, K)`` times ``x (B, K, d)`` or shared ``(1, K, d)`` -> ``(B, H, d)``."""
    if x.shape[0] == 1 and w.shape[0] != 1:
        B, H, K = w.shape
        return (w.reshape(B * H, K) @ x[0]).view(B, H, x.shape[2])
    return torch.bmm(w, x)


class _Base(nn.Module):
    def __init__(self, config: ModelConfig, item_vectors: Any) -> None:
        super().__init__()
        self.config = config
        self.embedding = _embedding(config, _check_item_vectors(config, item_vectors))
        self.att_dim = self.embedding.attention_dim
        self.rep_dim = self.embedding.representation_dim
        self.temporal = (
            TemporalEncoding(n_buckets=config.n_time_buckets, attention_dim=self.att_dim,
                             representation_dim=self.rep_dim)
            if config.temporal != "none" else None
        )

    def embed_target(self, target: TargetFeatures) -> EmbeddedFeatures:
        t = self.embedding(target.item, target.category, None)
        if self.temporal is not None:
            tb = self.temporal(torch.zeros_like(target.item))
            t = EmbeddedFeatures(t.attention + tb.attention, t.representation + tb.representation)
        return t

    def head_input(self, t_rep: Tensor, pooled: Tensor) -> Tensor:
        return torch.cat([t_rep, pooled, t_rep * self.interaction(pooled)], dim=-1)


class TargetAttentionModel(_Base):
    """Exact target attention over a given behavior subset, then an MLP head.

    Forward: ``target`` (:class:`TargetFeatures`, each ``(B,)``), ``behaviors``
    (:class:`BehaviorFeatures`, each ``(B, K)``), ``mask (B, K)`` bool (True = real) ->
    logits ``(B,)`` float32. Samples with no behavior (all-masked row) pool to zero and are
    scored from the target alone. ``item_vectors``: optional ``(n_items, content_dim)``
    frozen content vectors.
    """

    def __init__(self, config: ModelConfig, *, item_vectors: Any = None) -> None:
        if config.kind != "attention":
            raise ValueError(f"TargetAttentionModel needs ModelConfig.kind='attention', got {config.kind!r}")
        super().__init__(config, item_vectors)
        if config.attention == "mha":
            self.attention = MultiHeadTargetAttention(self.att_dim, self.att_dim, self.rep_dim,
                                                      num_heads=config.num_heads, head_dim=config.head_dim,
                                                      init=config.attention_init)
            pooled_dim = self.attention.out_dim
            self.n_extra = config.num_heads if config.expected_score else 0
        else:
            self.attention = DinAttention(self.att_dim, hidden=config.din_hidden, normalize=config.din_normalize)
            pooled_dim = self.rep_dim
            self.n_extra = 0
        self.interaction = nn.Linear(pooled_dim, self.rep_dim, bias=False)
        self.head = MLP(2 * self.rep_dim + pooled_dim + self.n_extra, hidden=config.mlp_hidden, dropout=config.dropout)
        self.factorized = True  # multi-head attention: use the factorised path (same function, faster)

    def forward(self, target: TargetFeatures, behaviors: BehaviorFeatures, mask: Tensor) -> Tensor:
        if mask.ndim != 2 or mask.shape[0] != target.item.shape[0]:
            raise ValueError(f"mask: expected (B, K) with B = {target.item.shape[0]}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool or tuple(behaviors.item.shape) != tuple(mask.shape):
            raise ValueError(f"mask: expected a bool tensor shaped like the behavior features "
                             f"{tuple(behaviors.item.shape)}, got {mask.dtype} {tuple(mask.shape)}")
        t = self.embed_target(target)
        if self.factorized and isinstance(self.attention, MultiHeadTargetAttention):
            pooled, expected = self._factorized_attention(t, behaviors, mask)
        else:
            b = self.embedding(behaviors.item, behaviors.category, behaviors.behavior_type)
            if self.temporal is not None:
                tb = self.temporal(behaviors.time_bucket)
                b = EmbeddedFeatures(b.attention + tb.attention, b.representation + tb.representation)
            if isinstance(self.attention, MultiHeadTargetAttention):
                pooled, _, expected = self.attention(t.attention, b.attention, mask, b.representation,
                                                     with_expected_score=True)
            else:
                pooled, _ = self.attention(t.attention, b.attention, mask, b.representation)
                expected = None
        x = self.head_input(t.representation, pooled)
        if self.n_extra:
            x = torch.cat([x, expected], dim=-1)
        return self.head(x).squeeze(-1)

    # -- factorised multi-head attention -----------------------------------------------
    # The behavior vector is a concatenation of table blocks plus the TIN row, so the score
    # q~ . x_i splits into per-block terms. Small tables (category, behavior type, time
    # bucket) are scored once per sample and row ((B, H, rows) products) and gathered; their
    # share of the pooled vector is a scatter-add of the attention weights into per-row bins
    # times the table. Only the item blocks (content vectors, id embeddings) are gathered per
    # behavior. Same function as the generic path (tested), far less memory traffic.

    def _item_blocks(self, fe: FeatureEmbedding, item: Tensor, cache: dict) -> list[Tensor]:
        return fe.item_blocks(item, cache)

    @staticmethod
    def _small_tables(fe: FeatureEmbedding, behaviors: BehaviorFeatures) -> list[tuple[Tensor, Tensor]]:
        out = []
        if fe.category is not None:
            out.append((fe.category.weight, behaviors.category))
        if fe.behavior_type is not None:
            out.append((fe.behavior_type.weight, behaviors.behavior_type))
        return out

    def _factorized_attention(self, t: EmbeddedFeatures, behaviors: BehaviorFeatures,
                              mask: Tensor) -> tuple[Tensor, Tensor]:
        att = self.attention
        fe_att = self.embedding.attention or self.embedding.representation
        fe_rep = self.embedding.representation
        qk = att.query_keyspace(t.attention)                      # (B, H, D_att)
        B, H, _ = qk.shape
        K = mask.shape[1]
        cache: dict = {}
        scores = qk.new_zeros((B, H, K))
        o = 0
        for blk in self._item_blocks(fe_att, behaviors.item, cache):
            d = blk.shape[-1]
            scores = scores + _scores_vs(qk[..., o:o + d], blk)
            o += d
        small = self._small_tables(fe_att, behaviors)
        for table, idx in small:
            d = table.shape[1]
            per_row = qk[..., o:o + d] @ table.T                   # (B, H, rows)
            scores = scores + per_row.gather(-1, idx.unsqueeze(1).expand(B, H, K))
            o += d
        if self.temporal is not None:
            per_row = qk @ self.temporal.attention.weight.T
            scores = scores + per_row.gather(-1, behaviors.time_bucket.unsqueeze(1).expand(B, H, K))
        w = masked_softmax(scores, mask.unsqueeze(1))             # (B, H, K)
        parts = [_pool_vs(w, blk) for blk in self._item_blocks(fe_rep, behaviors.item, cache)]
        for table, idx in self._small_tables(fe_rep, behaviors):
            bins = w.new_zeros((B, H, table.shape[0])).scatter_add(-1, idx.unsqueeze(1).expand(B, H, K), w)
            parts.append(bins @ table)
        pooled = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)   # (B, H, D_rep)
        if self.temporal is not None:
            table = self.temporal.representation.weight
            bins = w.new_zeros((B, H, table.shape[0])).scatter_add(-1, behaviors.time_bucket.unsqueeze(1).expand(B, H, K), w)
            pooled = pooled + bins @ table
        out = torch.einsum("bhv,hdv->bhd", pooled, att.w_v)
        expected = (w * scores.masked_fill(~mask.unsqueeze(1), 0.0)).sum(-1)
        return out.reshape(B, att.out_dim), expected

    def forward_shared(self, target: TargetFeatures, history: BehaviorFeatures, mask: Tensor) -> Tensor:
        """Full-sequence attention for many targets of **one** user (the user-grouped form).

        ``history``: :class:`BehaviorFeatures` whose ``item``, ``category`` and
        ``behavior_type`` are ``(1, L)`` (the user's history, stored once) and whose
        ``time_bucket`` is ``(B, L)`` (TIN buckets depend on each target's time) or
        ``(1, L)``; ``mask (B, L)`` bool says which behaviors each target sees (its visible
        prefix). Returns logits ``(B,)`` equal to :meth:`forward` on the history expanded to
        ``(B, L)`` (tested), but each behavior vector is gathered once and scored for all
        targets in one matrix product, which makes full attention over 10,000 behaviors
        affordable in training. Needs multi-head attention (``attention='mha'``).
        """
        if not isinstance(self.attention, MultiHeadTargetAttention):
            raise ValueError("forward_shared: needs multi-head attention (ModelConfig.attention='mha')")
        B = target.item.shape[0]
        if history.item.ndim != 2 or history.item.shape[0] != 1:
            raise ValueError(f"forward_shared: history features must be (1, L), got {tuple(history.item.shape)}")
        L = history.item.shape[1]
        if mask.dtype != torch.bool or tuple(mask.shape) != (B, L):
            raise ValueError(f"forward_shared: mask must be a ({B}, {L}) bool tensor, got {mask.dtype} {tuple(mask.shape)}")
        t = self.embed_target(target)
        pooled, expected = self._factorized_attention(t, history, mask)
        x = self.head_input(t.representation, pooled)
        if self.n_extra:
            x = torch.cat([x, expected], dim=-1)
        return self.head(x).squeeze(-1)

    def attention_flops(self, n_behaviors: float) -> float:
        """Attention FLOPs for one sample over ``n_behaviors`` (mean) behaviors: per-behavior
        scoring, softmax and pooling, TIN additions, and the per-sample projections."""
        per_b = self.attention.flops_per_behavior()
        if self.temporal is not None:
            per_b += self.att_dim + (self.rep_dim if self.embedding.attention is not None else 0)
        fixed = self.attention.flops_per_sample_fixed() if isinstance(self.attention, MultiHeadTargetAttention) else 0
        return float(fixed + per_b * float(n_behaviors))


class SDIMModel(_Base):
    """SDIM's ESU side: the GSU already aggregated the behaviors that collide with the target
    in SimHash buckets into one vector (SDIM, Cao et al. 2022, §3.3); the model maps it into
    representation space and scores it like a pooled attention output.

    Forward: ``target`` (:class:`TargetFeatures`, each ``(B,)``), ``vectors (B, sdim_dim)``
    float32 (the aggregated vector, zero when nothing collided), ``mask (B,)`` bool
    (False = nothing collided; the vector is then ignored) -> logits ``(B,)``.
    """

    def __init__(self, config: ModelConfig, *, item_vectors: Any = None) -> None:
        if config.kind != "sdim":
            raise ValueError(f"SDIMModel needs ModelConfig.kind='sdim', got {config.kind!r}")
        super().__init__(config, item_vectors)
        self.project = nn.Linear(config.sdim_dim, self.rep_dim)
        self.interaction = nn.Linear(self.rep_dim, self.rep_dim, bias=False)
        self.head = MLP(3 * self.rep_dim, hidden=config.mlp_hidden, dropout=config.dropout)

    def forward(self, target: TargetFeatures, vectors: Tensor, mask: Tensor) -> Tensor:
        if vectors.ndim != 2 or vectors.shape != (target.item.shape[0], self.config.sdim_dim):
            raise ValueError(f"vectors: expected ({target.item.shape[0]}, {self.config.sdim_dim}), got {tuple(vectors.shape)}")
        if mask.dtype != torch.bool or tuple(mask.shape) != (target.item.shape[0],):
            raise ValueError(f"mask: expected a ({target.item.shape[0]},) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
        t = self.embed_target(target)
        pooled = self.project(vectors) * mask.unsqueeze(-1).to(vectors.dtype)
        return self.head(self.head_input(t.representation, pooled)).squeeze(-1)

    def attention_flops(self, n_hashes: int, tau: int) -> float:
        """Per sample: hash the target (``n_hashes * tau`` projections of width ``sdim_dim``),
        average the ``n_hashes`` bucket vectors, project the result. The per-user bucket sums
        are built offline (BSE) and not counted."""
        d = self.config.sdim_dim
        return float(2 * n_hashes * tau * d + n_hashes * d + 2 * d * self.rep_dim)


def build_model(config: ModelConfig, *, item_vectors: Any = None, item_features: dict[str, Any] | None = None,
                seed: int = 0) -> nn.Module:
    """Build a :class:`TargetAttentionModel` or :class:`SDIMModel` (by ``config.kind``) with
    parameters initialised from ``seed`` (the global torch RNG is left untouched).

    ``item_vectors``: ``(n_items, content_dim)`` float32 frozen content vectors;
    ``item_features``: ``{"categorical": (n_items, F) int64, "numeric": (n_items, G) float32}``
    per-item values of the extra features the config declares."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if config.kind == "sdim":
            m: nn.Module = SDIMModel(config, item_vectors=item_vectors)
        else:
            m = TargetAttentionModel(config, item_vectors=item_vectors)
    if item_features:
        for fe in (m.embedding.representation, m.embedding.attention):
            if fe is not None:
                fe.set_item_features(item_features.get("categorical"), item_features.get("numeric"))
    return m
