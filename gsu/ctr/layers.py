"""Building blocks of the compact CTR model (the ESU): embeddings, target attention, heads.

Every layer is a small ``torch.nn.Module``. Conventions shared by all of them:

- ``B`` is the batch size, ``K`` the number of behaviors per sample (the retrieved
  subset, or the whole visible sequence for full attention), ``D`` a feature width.
- ``mask`` is a ``(B, K)`` bool tensor, ``True`` = a real behavior, ``False`` = padding.
  Masked positions get exactly zero attention weight and contribute nothing to the
  pooled vector or to any gradient; a row whose mask is all ``False`` pools to the zero
  vector (never NaN).
- Integer feature tensors are ``int64``; padded positions may hold any valid id (0 is
  used by :mod:`gsu.ctr.data`) because the mask, not the id, removes them.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureEmbedding",
    "TemporalEncoding",
    "DecoupledEmbedding",
    "DinAttention",
    "MultiHeadTargetAttention",
    "MLP",
    "masked_softmax",
    "EmbeddedFeatures",
]


def _check_pos(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def _check_mask(mask: Tensor, shape: tuple[int, ...], name: str = "mask") -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of dtype bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: expected dtype torch.bool (True = real behavior), got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(mask.shape)}")
    return mask


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``.

    ``scores`` and ``mask`` broadcast to the same shape; masked entries get exactly 0,
    and a slice whose mask is all ``False`` gets all zeros (not NaN, not uniform).
    """
    s = scores.masked_fill(~mask, float("-inf"))
    m = s.detach().amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(dim=dim, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


class PReLU(nn.Module):
    """PReLU with one learned slope per feature of the *last* dimension (``torch.nn.PReLU``
    uses dimension 1, which is wrong for ``(B, K, h)`` inputs)."""

    def __init__(self, num_features: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, x * self.weight)


class EmbeddedFeatures(NamedTuple):
    """Attention-side and representation-side vectors of the same items.

    ``attention``: ``(..., D_att)`` used to compute attention scores;
    ``representation``: ``(..., D_rep)`` pooled and fed to the head. Without DARE both are
    the same tensor.
    """

    attention: Tensor
    representation: Tensor


class FeatureEmbedding(nn.Module):
    """Embedding tables for one side of the model: item id, category, behavior type, plus
    optional frozen item content vectors; the pieces are concatenated.

    Parameters
    ----------
    n_items: number of item rows (ids ``0..n_items-1``).
    n_categories: number of category rows.
    n_behavior_types: number of behavior-type rows (e.g. 4 for pv/cart/fav/buy); 0 disables
        the table (behavior type is a behavior-only feature; the target side gets a zero block).
    item_dim / category_dim / type_dim: widths of the learned tables (0 disables a table).
    item_vectors: optional ``(n_items, d_c)`` float32 frozen content vectors (pretrained or
        multimodal item embeddings, as in MUSE); stored as a buffer, never trained.
    extra_categorical: cardinalities of extra categorical item features (code 0 = missing);
        each gets a learned table of width ``extra_dim``. extra_numeric: number of extra
        numeric item features, mapped by one learned ``Linear(extra_numeric, extra_dim)``.
        Their per-item values are buffers ``item_extra_cat (n_items, F)`` int64 and
        ``item_extra_num (n_items, G)`` float32 (filled by :meth:`set_item_features`).

    Forward: ``item`` and ``category`` int64 of any shape ``S``; ``behavior_type`` int64 of
    shape ``S`` or ``None`` (target side); returns ``(*S, out_dim)`` float32 with
    ``out_dim = d_c + item_dim + extra_dim * (F + [G > 0]) + category_dim + type_dim``.
    """

    def __init__(
        self,
        *,
        n_items: int,
        n_categories: int,
        n_behavior_types: int = 0,
        item_dim: int = 16,
        category_dim: int = 8,
        type_dim: int = 4,
        item_vectors: Tensor | None = None,
        extra_categorical: tuple[int, ...] = (),
        extra_numeric: int = 0,
        extra_dim: int = 4,
    ) -> None:
        super().__init__()
        _check_pos(n_items, "n_items")
        _check_pos(n_categories, "n_categories")
        _check_pos(n_behavior_types, "n_behavior_types", 0)
        for v, name in ((item_dim, "item_dim"), (category_dim, "category_dim"), (type_dim, "type_dim")):
            _check_pos(v, name, 0)
        self.item = nn.Embedding(n_items, item_dim) if item_dim else None
        self.category = nn.Embedding(n_categories, category_dim) if category_dim else None
        self.behavior_type = nn.Embedding(n_behavior_types, type_dim) if (type_dim and n_behavior_types) else None
        if item_vectors is not None:
            if not isinstance(item_vectors, Tensor):
                item_vectors = torch.as_tensor(item_vectors)
            if item_vectors.ndim != 2 or item_vectors.shape[0] != n_items:
                raise ValueError(f"item_vectors: expected shape ({n_items}, d), got {tuple(item_vectors.shape)}")
            self.register_buffer("item_vectors", item_vectors.detach().to(torch.float32).clone())
        else:
            self.item_vectors = None
        extra_categorical = tuple(int(c) for c in extra_categorical)
        for c in extra_categorical:
            _check_pos(c, "extra_categorical cardinality")
        _check_pos(extra_numeric, "extra_numeric", 0)
        if extra_categorical or extra_numeric:
            _check_pos(extra_dim, "extra_dim")
        self.extra_cat = nn.ModuleList([nn.Embedding(c, extra_dim) for c in extra_categorical])
        self.extra_num = nn.Linear(extra_numeric, extra_dim) if extra_numeric else None
        self.register_buffer("item_extra_cat", torch.zeros(n_items, len(extra_categorical), dtype=torch.int64))
        self.register_buffer("item_extra_num", torch.zeros(n_items, extra_numeric, dtype=torch.float32))
        for emb in (self.item, self.category, self.behavior_type, *self.extra_cat):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.05)
        self.out_dim = (
            (0 if item_vectors is None else int(item_vectors.shape[1]))
            + item_dim
            + extra_dim * (len(extra_categorical) + (1 if extra_numeric else 0))
            + category_dim
            + (type_dim if self.behavior_type is not None else 0)
        )
        if self.out_dim == 0:
            raise ValueError("FeatureEmbedding: every table is disabled (all dims 0 and no item_vectors)")

    def set_item_features(self, categorical: Tensor | None, numeric: Tensor | None) -> None:
        """Fill the per-item extra feature buffers: ``categorical (n_items, F)`` int64 codes
        (0 = missing, below each cardinality) and ``numeric (n_items, G)`` float32."""
        for buf, v, name in ((self.item_extra_cat, categorical, "categorical"), (self.item_extra_num, numeric, "numeric")):
            if v is None:
                continue
            v = torch.as_tensor(v).to(buf.dtype)
            if tuple(v.shape) != tuple(buf.shape):
                raise ValueError(f"item features ({name}): expected shape {tuple(buf.shape)}, got {tuple(v.shape)}")
            if name == "categorical":
                for j, emb in enumerate(self.extra_cat):
                    if v.numel() and (int(v[:, j].min()) < 0 or int(v[:, j].max()) >= emb.num_embeddings):
                        raise ValueError(f"item features: categorical column {j} has codes outside [0, {emb.num_embeddings})")
            buf.copy_(v)

    def item_blocks(self, item: Tensor, cache: dict | None = None) -> list[Tensor]:
        """The item-inherent blocks of the output, in order: content vectors, id embedding,
        extra categorical features, extra numeric features; each ``(*S, width)``."""
        blocks = []
        if self.item_vectors is not None:
            if cache is None:
                blocks.append(self.item_vectors[item])
            else:
                key = ("vec", id(self.item_vectors))
                if key not in cache:
                    cache[key] = self.item_vectors[item]
                blocks.append(cache[key])
        if self.item is not None:
            blocks.append(self.item(item))
        for j, emb in enumerate(self.extra_cat):
            blocks.append(emb(self.item_extra_cat[:, j][item]))
        if self.extra_num is not None:
            blocks.append(self.extra_num(self.item_extra_num[item]))
        return blocks

    def forward(self, item: Tensor, category: Tensor, behavior_type: Tensor | None = None) -> Tensor:
        parts = self.item_blocks(item)
        if self.category is not None:
            parts.append(self.category(category))
        if self.behavior_type is not None:
            if behavior_type is None:  # target side: no action yet, a zero block keeps widths equal
                parts.append(item.new_zeros((*item.shape, self.behavior_type.embedding_dim), dtype=torch.float32))
            else:
                parts.append(self.behavior_type(behavior_type))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class DecoupledEmbedding(nn.Module):
    """DARE's decoupled embeddings: one set of tables for attention, another for representation.

    DARE (Feng et al., 2024) shows that sharing one embedding for "which behaviors matter"
    (attention) and "what they contribute" (representation) lets the two gradients fight;
    separate tables fix it, and the attention side may be narrower. Without ``decouple``
    the representation tables serve both roles.

    Parameters: ``representation`` and (when decoupled) ``attention`` are
    :class:`FeatureEmbedding` instances built by the caller (the attention one usually with a
    smaller ``item_dim``/``category_dim``).

    Forward: same arguments as :class:`FeatureEmbedding`; returns :class:`EmbeddedFeatures`
    with ``attention (*S, D_att)`` and ``representation (*S, D_rep)``.
    """

    def __init__(self, *, representation: FeatureEmbedding, attention: FeatureEmbedding | None = None) -> None:
        super().__init__()
        self.representation = representation
        self.attention = attention
        self.attention_dim = representation.out_dim if attention is None else attention.out_dim
        self.representation_dim = representation.out_dim

    def forward(self, item: Tensor, category: Tensor, behavior_type: Tensor | None = None) -> EmbeddedFeatures:
        rep = self.representation(item, category, behavior_type)
        att = rep if self.attention is None else self.attention(item, category, behavior_type)
        return EmbeddedFeatures(att, rep)


class TemporalEncoding(nn.Module):
    """TIN's target-aware temporal encoding: an embedding of each behavior's time (or position)
    relative to the target, added to the behavior's vectors *and* a dedicated "target" row added
    to the target's vectors (both sides, as in TIN, Zhou et al. 2024, §3.2).

    Buckets are logarithmic: bucket 0 is the target itself; a behavior with offset ``o >= 0``
    (``o = (t - ts) / time_unit`` in "time" mode, ``o`` = number of more recent behaviors in
    "position" mode) gets ``1 + min(n_buckets - 2, floor(log2(1 + o)))``.
    :meth:`bucketize` computes them (the data pipeline calls it in numpy-free torch).

    Parameters
    ----------
    n_buckets: table rows (>= 2), the paper's number of temporal slots.
    attention_dim / representation_dim: widths of the two vectors it is added to (DARE may
        make them differ; one table per side then).

    Forward: ``buckets`` int64 ``(*S,)`` -> :class:`EmbeddedFeatures` of ``(*S, D_att)`` and
    ``(*S, D_rep)``.
    """

    def __init__(self, *, n_buckets: int = 24, attention_dim: int, representation_dim: int) -> None:
        super().__init__()
        _check_pos(n_buckets, "n_buckets", 2)
        self.n_buckets = n_buckets
        self.attention = nn.Embedding(n_buckets, attention_dim)
        self.representation = (
            self.attention if representation_dim == attention_dim else nn.Embedding(n_buckets, representation_dim)
        )
        nn.init.normal_(self.attention.weight, std=0.02)
        if self.representation is not self.attention:
            nn.init.normal_(self.representation.weight, std=0.02)

    @staticmethod
    def bucketize(offsets: Tensor, n_buckets: int) -> Tensor:
        """Map non-negative offsets ``(*S,)`` (float or int) to bucket ids in ``1..n_buckets-1``."""
        o = offsets.to(torch.float32).clamp_min(0.0)
        b = torch.log2(o + 1.0).to(torch.int64) + 1  # truncation == floor for values >= 0
        return b.clamp(1, n_buckets - 1)

    def forward(self, buckets: Tensor) -> EmbeddedFeatures:
        return EmbeddedFeatures(self.attention(buckets), self.representation(buckets))


class DinAttention(nn.Module):
    """DIN's activation unit (Zhou et al., 2018, §4.3): an MLP scores each behavior from
    ``[target, behavior, target - behavior, target * behavior]``.

    Parameters
    ----------
    dim: width ``D`` of target and behavior attention vectors.
    hidden: widths of the activation unit's hidden layers (paper: 80, 40).
    normalize: ``"none"`` keeps DIN's unnormalised weighted sum (weights are the raw MLP
        outputs, "to reserve the intensity of user interests"); ``"softmax"`` normalises
        over the unmasked behaviors.

    Forward: ``query (B, D)``, ``keys (B, K, D)``, ``mask (B, K)`` bool, ``values (B, K, Dv)``
    (defaults to ``keys``) -> ``pooled (B, Dv)`` and ``weights (B, K)`` (zero where masked).
    Cost: ``K * (2 * 4D * h1 + 2 * h1 * h2 + 2 * h2)`` multiply-adds counted as FLOPs.
    """

    def __init__(self, dim: int, *, hidden: tuple[int, ...] = (64, 32), normalize: str = "none") -> None:
        super().__init__()
        _check_pos(dim, "dim")
        if normalize not in ("none", "softmax"):
            raise ValueError(f"normalize: expected 'none' or 'softmax', got {normalize!r}")
        self.dim = dim
        self.normalize = normalize
        self.hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        prev = 4 * dim
        for h in self.hidden:
            layers += [nn.Linear(prev, h), PReLU(h)]
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.unit = nn.Sequential(*layers)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """Raw activation-unit outputs ``(B, K)``."""
        q = query.unsqueeze(1).expand_as(keys)
        return self.unit(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if keys.ndim != 3 or query.ndim != 2 or keys.shape[0] != query.shape[0] or keys.shape[2] != self.dim:
            raise ValueError(f"DinAttention: expected query (B, {self.dim}) and keys (B, K, {self.dim}), "
                             f"got {tuple(query.shape)} and {tuple(keys.shape)}")
        _check_mask(mask, tuple(keys.shape[:2]))
        values = keys if values is None else values
        s = self.scores(query, keys)
        if self.normalize == "softmax":
            w = masked_softmax(s, mask)
        else:
            w = s * mask.to(s.dtype)
        pooled = torch.bmm(w.unsqueeze(1), values).squeeze(1)
        return pooled, w

    def flops_per_behavior(self) -> int:
        f, prev = 4 * self.dim, 4 * self.dim  # building [t, b, t-b, t*b]: 2 elementwise ops over D, concat free
        for h in self.hidden:
            f += 2 * prev * h + 2 * h
            prev = h
        return f + 2 * prev + 1


class MultiHeadTargetAttention(nn.Module):
    """Multi-head scaled dot-product target attention (the ESU of SIM/ETA/TWIN).

    For head ``h``: ``q_h = W_q^h t + b_q^h``, ``k_i^h = W_k^h x_i``, ``v_i^h = W_v^h y_i``,
    ``a_i^h = softmax_i(exp(rho_h) q_h . k_i^h / sqrt(d_h))`` over unmasked ``i`` (``rho_h``
    a learned log inverse temperature, 0 at init), output
    ``concat_h sum_i a_i^h v_i^h``.

    Computed in the equivalent *query-side* form (TWIN's trick, Chang et al. 2023 §3.2):
    ``q~_h = W_k^h^T q_h / sqrt(d_h)`` so ``scores = X q~_h`` and
    ``sum_i a_i v_i = W_v^h (sum_i a_i y_i)``; this costs ``O(K * D)`` per head instead of
    ``O(K * D * d_h)`` and is exactly the same function (keys and values have no bias).

    Parameters
    ----------
    query_dim: width of the target attention vector ``t``.
    key_dim: width ``D`` of behavior attention vectors ``x_i``.
    value_dim: width of behavior representation vectors ``y_i`` (defaults to ``key_dim``).
    num_heads: ``H``; head_dim: ``d_h``.
    init: ``"similarity"`` (when ``query_dim == key_dim``) starts the attention as plain
        dot-product similarity ``<t, x_i>`` (orthogonal ``W_q``, ``W_k^h = W_q^h``,
        ``rho_h = log sqrt(d_h)``), the prior SIM-soft and DIN-style models use; over
        thousands of behaviors a random start attends almost uniformly and learns slowly.
        ``"random"``: independent Gaussian ``W_q``, ``W_k`` and ``rho_h = 0``.

    Forward: ``query (B, Dq)``, ``keys (B, K, D)``, ``mask (B, K)`` bool, ``values (B, K, Dv)``
    (defaults to ``keys``) -> ``out (B, H * d_h)`` and ``weights (B, H, K)`` (zero where masked,
    each unmasked row sums to 1, all-masked rows are all zero and give ``out`` = 0).
    """

    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None, *, num_heads: int = 2,
                 head_dim: int = 32, init: str = "similarity") -> None:
        super().__init__()
        for v, name in ((query_dim, "query_dim"), (key_dim, "key_dim"), (num_heads, "num_heads"), (head_dim, "head_dim")):
            _check_pos(v, name)
        value_dim = key_dim if value_dim is None else _check_pos(value_dim, "value_dim")
        self.query_dim, self.key_dim, self.value_dim = query_dim, key_dim, value_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.w_q = nn.Linear(query_dim, num_heads * head_dim)
        self.w_k = nn.Parameter(torch.empty(num_heads, head_dim, key_dim))
        self.w_v = nn.Parameter(torch.empty(num_heads, head_dim, value_dim))
        self.init = init
        # per-head learned log inverse temperature: sharp attention over thousands of behaviors
        # needs logits far larger than a product of two freshly initialised projections gives
        self.log_scale = nn.Parameter(torch.zeros(num_heads))
        if init not in ("similarity", "random"):
            raise ValueError(f"init: expected 'similarity' or 'random', got {init!r}")
        nn.init.normal_(self.w_v, std=1.0 / math.sqrt(value_dim))
        if init == "similarity" and query_dim == key_dim:
            # start as plain dot-product similarity: orthogonal W_q, W_k^h = W_q^h, so the
            # bilinear form sum_h W_k^hT W_q^h is a projection and scores begin as <t, x>
            nn.init.orthogonal_(self.w_q.weight)
            nn.init.zeros_(self.w_q.bias)
            with torch.no_grad():
                self.w_k.copy_(self.w_q.weight.view(num_heads, head_dim, query_dim))
                self.log_scale.fill_(0.5 * math.log(head_dim))
        else:
            nn.init.normal_(self.w_k, std=1.0 / math.sqrt(key_dim))
        self.out_dim = num_heads * head_dim

    def query_keyspace(self, query: Tensor) -> Tensor:
        """``q~ (B, H, D)``: the query mapped into behavior-vector space, scale included."""
        q = self.w_q(query).view(query.shape[0], self.num_heads, self.head_dim)
        scale = torch.exp(self.log_scale)[None, :, None] / math.sqrt(self.head_dim)
        return torch.einsum("bhd,hdk->bhk", q, self.w_k) * scale

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor, values: Tensor | None = None, *,
                with_expected_score: bool = False) -> tuple[Tensor, ...]:
        """Returns ``(out, weights)``, plus ``expected_score (B, H)`` = ``sum_i a_i^h s_i^h``
        (the attention-weighted mean of each head's scaled logits; 0 for all-masked rows)
        when ``with_expected_score``."""
        if query.ndim != 2 or query.shape[1] != self.query_dim:
            raise ValueError(f"MultiHeadTargetAttention: query must be (B, {self.query_dim}), got {tuple(query.shape)}")
        if keys.ndim != 3 or keys.shape[0] != query.shape[0] or keys.shape[2] != self.key_dim:
            raise ValueError(f"MultiHeadTargetAttention: keys must be (B, K, {self.key_dim}), got {tuple(keys.shape)}")
        _check_mask(mask, tuple(keys.shape[:2]))
        values = keys if values is None else values
        if values.shape[:2] != keys.shape[:2] or values.shape[2] != self.value_dim:
            raise ValueError(f"MultiHeadTargetAttention: values must be (B, K, {self.value_dim}), got {tuple(values.shape)}")
        qk = self.query_keyspace(query)                          # (B, H, D)
        scores = torch.bmm(qk, keys.transpose(1, 2))             # (B, H, K)
        w = masked_softmax(scores, mask.unsqueeze(1))            # (B, H, K)
        pooled = torch.bmm(w, values)                            # (B, H, Dv)
        out = torch.einsum("bhv,hdv->bhd", pooled, self.w_v)     # (B, H, d_h)
        out = out.reshape(query.shape[0], self.out_dim)
        if with_expected_score:
            return out, w, (w * scores.masked_fill(~mask.unsqueeze(1), 0.0)).sum(-1)
        return out, w

    def flops_per_behavior(self) -> int:
        """Per behavior: scores ``2 H D`` + softmax ``~3 H`` + pooling ``2 H Dv``."""
        return 2 * self.num_heads * self.key_dim + 3 * self.num_heads + 2 * self.num_heads * self.value_dim

    def flops_per_sample_fixed(self) -> int:
        """Per sample, independent of K: query projection, query-side key map, value projection."""
        h, d = self.num_heads, self.head_dim
        return 2 * self.query_dim * h * d + 2 * h * d * self.key_dim + 2 * h * d * self.value_dim


class MLP(nn.Module):
    """The prediction head: ``Linear -> PReLU -> (Dropout)`` per hidden layer, then ``Linear(., out_dim)``.

    Forward: ``x (B, in_dim)`` -> ``(B, out_dim)`` (logits when ``out_dim`` = 1).
    """

    def __init__(self, in_dim: int, *, hidden: tuple[int, ...] = (64, 32), out_dim: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        _check_pos(in_dim, "in_dim")
        _check_pos(out_dim, "out_dim")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            _check_pos(int(h), "hidden")
            layers += [nn.Linear(prev, int(h)), PReLU(int(h))]
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
            prev = int(h)
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
