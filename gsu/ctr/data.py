"""CTR data: samples, time split, the behaviors each sample sees, and batches.

A :class:`CTRTask` holds every user's sequence **once** (a
:class:`gsu.retrieval.BehaviorStore`), item features looked up by item id, and samples
``(user, target, time, label)``. Item ids are dense rows ``0..n_items-1`` (the MovieLens
builder remaps movie ids). A sample at time ``t`` may only see behaviors with timestamp
``< t`` (strict) — the same cut :mod:`gsu.retrieval` applies.

What a sample sees is a :class:`BehaviorView` built per split:

- ``prefix`` — the last ``min(visible, cap)`` visible behaviors (full-sequence exact
  attention with a cap; "last-k" with ``cap = k``);
- ``positions`` — the ``(S, k)`` positions a retrieval method returned (with its mask);
- ``sdim`` — SDIM's aggregated vector per sample.

:func:`iter_batches` assembles padded torch batches from a view by gathering from the store
(no per-sample copies of sequences are ever stored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from gsu.ctr.layers import TemporalEncoding
from gsu.ctr.model import BehaviorFeatures, TargetFeatures

logger = logging.getLogger(__name__)

__all__ = [
    "CTRTask",
    "BehaviorView",
    "Batch",
    "split_by_time",
    "synthetic_task",
    "visible_counts",
    "prefix_view",
    "positions_view",
    "sdim_view",
    "retrieve_view",
    "iter_batches",
    "SharedBatch",
    "make_shared_batch",
    "user_pieces",
]

SPLITS = ("train", "val", "test")


@dataclass
class CTRTask:
    """One CTR data set over a behavior store.

    Attributes:
        name: short label ("synthetic", "movielens").
        store: :class:`gsu.retrieval.BehaviorStore`; items are dense ids ``0..n_items-1``.
        item_category: (n_items,) int64 category of each item (the target's category).
        item_vectors: (n_items, d_c) float32 frozen content vectors the model reads, or None.
        item_tables: named :class:`gsu.retrieval.ItemTable` s for the retrieval methods
            (e.g. "ctr" = the model's embedding space, "content" = MUSE's multimodal space).
        samples: dict of aligned (S,) arrays ``user`` int64 (external id), ``target`` int64,
            ``time`` int64, ``label`` int8 and optionally ``prob`` float32 (the true click
            probability, synthetic only).
        splits: ``{"train", "val", "test"}`` -> sorted int64 indices into ``samples``.
        n_behavior_types: rows of the behavior-type table (>= 1).
        time_unit: seconds (or ticks) per unit of TIN's log time buckets.
        info: a free-form description (sizes, negative sampling) for reports; ``item_dim`` is
            the width of learned item-id embeddings the model should use (0 when the content
            vectors carry the item and ids would only memorise noise); ``model`` optional
            ESU setting overrides; ``item_features`` the extra features' sizes.
        item_features: ``{"categorical": (n_items, F) int64, "numeric": (n_items, G) float32}``
            extra per-item features, or None.
    """

    name: str
    store: Any
    item_category: np.ndarray
    item_vectors: np.ndarray | None
    item_tables: dict[str, Any]
    samples: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]
    n_behavior_types: int
    time_unit: float
    info: dict[str, Any] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] | None = None

    @property
    def n_items(self) -> int:
        return int(self.item_category.shape[0])

    @property
    def n_categories(self) -> int:
        return int(self.item_category.max()) + 1

    def split(self, name: str) -> np.ndarray:
        if name not in self.splits:
            raise ValueError(f"split: expected one of {tuple(self.splits)}, got {name!r}")
        return self.splits[name]


def split_by_time(times: np.ndarray, *, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, np.ndarray]:
    """Split sample indices by time: the earliest ``fractions[0]`` of samples train, the next
    ``fractions[1]`` validate, the rest test (global time quantiles, ties kept together on the
    earlier side). Returns sorted int64 index arrays."""
    t = np.asarray(times, dtype=np.int64)
    if t.ndim != 1 or t.size < 3:
        raise ValueError(f"times: expected a 1-D array with at least 3 samples, got shape {t.shape}")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions: expected three positive numbers summing to 1, got {fractions}")
    c1, c2 = np.quantile(t, [fr[0], fr[0] + fr[1]], method="lower")
    tr = np.flatnonzero(t <= c1)
    va = np.flatnonzero((t > c1) & (t <= c2))
    te = np.flatnonzero(t > c2)
    if not (tr.size and va.size and te.size):
        raise ValueError("split_by_time: a split is empty (too few distinct sample times)")
    return {"train": tr.astype(np.int64), "val": va.astype(np.int64), "test": te.astype(np.int64)}


def _median_gap(store: Any) -> float:
    ts = store.column("timestamps")
    ip = store.indptr
    d = np.diff(ts)
    inner = np.ones(d.shape[0], bool)
    b = ip[1:-1] - 1
    inner[b[(b >= 0) & (b < d.shape[0])]] = False
    d = d[inner & (d > 0)]
    return float(max(1.0, np.median(d))) if d.size else 1.0


# ---------------------------------------------------------------------------------------
# task builders
# ---------------------------------------------------------------------------------------


SYNTHETIC_MODEL = {"item_dim": 0, "category_dim": 0, "type_dim": 0, "temporal": "none"}
"""ESU settings for the synthetic task: the frozen generator embeddings only. The planted click
model reads nothing else (no ids, categories, behavior types or times), so extra tables would
only add noise to learn away; with them off, full-sequence attention can represent the
generator's model exactly and its AUC gap to the oracle measures training, not capacity."""


def fingerprint(d: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def synthetic_task(
    *,
    n_users: int = 200,
    seq_len: int | tuple[int, int] = (1_000, 10_000),
    n_items: int = 20_000,
    dim: int = 32,
    n_categories: int = 200,
    n_targets_per_user: int = 60,
    content_noise: float = 0.5,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> CTRTask:
    """The synthetic task of :func:`gsu.datasets.behavior_dataset`: clicks drawn from a
    known target-attention model over the whole visible sequence, so ``AUC(prob)`` (the
    *oracle*) is the best achievable AUC.

    The model reads the generator's item embeddings as frozen content vectors (the CTR
    embedding space; table "ctr", used by Exact / SIM-soft / ETA / SDIM / TWIN) and, by
    default, nothing else (:data:`SYNTHETIC_MODEL`). MUSE's "multimodal" space (table
    "content") is a stand-in that only partly agrees with it: the embeddings plus Gaussian
    noise of ``content_noise`` times their per-dimension std. Negatives are the generator's
    own (targets half from the user's interests, half random popular items; the label is
    drawn from the planted model). Split by time 70/15/15. With ``cache_dir`` the generated
    arrays are kept in ``cache_dir/synthetic-<hash>.npz`` and reused.
    """
    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.store import BehaviorStore

    spec = {"n_users": n_users, "seq_len": list(seq_len) if isinstance(seq_len, tuple) else seq_len,
            "n_items": n_items, "dim": dim, "n_categories": n_categories, "n_targets_per_user": n_targets_per_user,
            "seed": seed, "generator": "behavior_dataset/1"}
    cache = Path(cache_dir) / f"synthetic-{fingerprint(spec)}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        arr = {k: z[k] for k in z.files}
        temperature = float(arr.pop("temperature"))
        logger.info("synthetic task from cache %s", cache)
    else:
        from gsu.datasets import behavior_dataset

        data = behavior_dataset(n_users, n_items=n_items, dim=dim, n_categories=n_categories, seq_len=seq_len,
                                n_targets_per_user=n_targets_per_user, seed=seed)
        arr = {"item_emb": np.ascontiguousarray(data.item_emb, dtype=np.float32),
               "item_category": np.asarray(data.item_category, dtype=np.int64),
               "indptr": np.asarray(data.indptr, np.int64), "items": np.asarray(data.items, np.int64),
               "timestamps": np.asarray(data.timestamps, np.int64),
               "behavior_type": np.asarray(data.behavior_type, np.int8)}
        for k in ("user", "target", "time", "label", "prob"):
            arr["s_" + k] = np.asarray(data.samples[k])
        temperature = float(data.attention_temperature)
        if cache is not None:
            _atomic_savez(cache, temperature=np.float64(temperature), **arr)
    emb, cat = arr["item_emb"], arr["item_category"]
    store = BehaviorStore(arr["indptr"], arr["items"], arr["timestamps"], behavior_type=arr["behavior_type"],
                          category=cat[arr["items"]])
    rng = np.random.default_rng([seed, 7])
    noisy = emb + rng.standard_normal(emb.shape).astype(np.float32) * (content_noise * emb.std(axis=0, keepdims=True))
    tables = {
        "ctr": ItemTable(embeddings=emb, category=cat),
        "content": ItemTable(embeddings=emb, retrieval_embeddings=noisy.astype(np.float32), category=cat),
    }
    samples = {
        "user": arr["s_user"].astype(np.int64), "target": arr["s_target"].astype(np.int64),
        "time": arr["s_time"].astype(np.int64), "label": arr["s_label"].astype(np.int8),
        "prob": arr["s_prob"].astype(np.float32),
    }
    bt = store.column("behavior_type")
    n_types = int(bt.max()) + 1 if bt is not None and bt.size else 1
    return CTRTask(
        name="synthetic", store=store, item_category=cat, item_vectors=emb, item_tables=tables, samples=samples,
        splits=split_by_time(samples["time"]), n_behavior_types=n_types, time_unit=_median_gap(store),
        info={**spec, "content_noise": content_noise, "item_dim": 0, "model": dict(SYNTHETIC_MODEL),
              "attention_temperature": temperature, "fingerprint": fingerprint(spec),
              "n_behaviors": int(store.n_behaviors), "n_samples": int(samples["label"].shape[0]),
              "negatives": "generator's own (half in-interest, half random targets; Bernoulli labels)"},
    )


# ---------------------------------------------------------------------------------------
# views: what each sample sees
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BehaviorView:
    """The behaviors every sample of one split sees.

    Attributes:
        samples: (S,) int64 indices into ``task.samples``.
        rows: (S,) int64 CSR rows of the samples' users in the store.
        visible: (S,) int64 number of behaviors before each sample's time.
        kind: "prefix" | "positions" | "sdim".
        cap: prefix views: the last ``min(visible, cap)`` behaviors.
        positions / mask: positions views: (S, k) int64 positions into the user's history
            (-1 = pad) and (S, k) bool (True = real).
        vectors / vector_mask: sdim views: (S, d) float32 and (S,) bool.
        label: free text for reports (method name).
    """

    samples: np.ndarray
    rows: np.ndarray
    visible: np.ndarray
    kind: str
    cap: int = 0
    positions: np.ndarray | None = None
    mask: np.ndarray | None = None
    vectors: np.ndarray | None = None
    vector_mask: np.ndarray | None = None
    label: str = ""

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def lengths(self) -> np.ndarray:
        """(S,) number of behaviors each sample attends to."""
        if self.kind == "prefix":
            return np.minimum(self.visible, self.cap)
        if self.kind == "positions":
            return self.mask.sum(axis=1).astype(np.int64)
        return self.vector_mask.astype(np.int64)

    def mean_behaviors(self) -> float:
        return float(self.lengths().mean()) if len(self) else 0.0


def visible_counts(task: CTRTask, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows (S,) and the number of each sample's behaviors strictly before its time (S,)."""
    idx = np.asarray(samples, dtype=np.int64)
    rows = task.store.rows(task.samples["user"][idx])
    times = task.samples["time"][idx]
    ip = task.store.indptr
    ts = task.store.column("timestamps")
    vis = np.zeros(idx.shape[0], np.int64)
    order = np.argsort(rows, kind="stable")
    rs = rows[order]
    cuts = np.flatnonzero(np.diff(rs)) + 1
    for grp in np.split(order, cuts):
        if grp.size == 0:
            continue
        r = rows[grp[0]]
        vis[grp] = np.searchsorted(ts[ip[r]:ip[r + 1]], times[grp], side="left")
    return rows, vis


def _split_idx(task: CTRTask, split: str | np.ndarray) -> np.ndarray:
    return task.split(split) if isinstance(split, str) else np.asarray(split, dtype=np.int64)


def prefix_view(task: CTRTask, split: str | np.ndarray, *, cap: int, label: str = "") -> BehaviorView:
    """Each sample sees its last ``min(visible, cap)`` behaviors before its time."""
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ValueError(f"cap: expected an integer >= 1, got {cap!r}")
    idx = _split_idx(task, split)
    rows, vis = visible_counts(task, idx)
    return BehaviorView(idx, rows, vis, "prefix", cap=int(cap), label=label or f"last-{cap}")


def positions_view(task: CTRTask, split: str | np.ndarray, positions: np.ndarray, mask: np.ndarray, *,
                   label: str = "") -> BehaviorView:
    """Each sample sees the behaviors at ``positions (S, k)`` of its user's history where ``mask``.

    Raises ``ValueError`` if a position is at or after the sample's time cut (the future).
    """
    idx = _split_idx(task, split)
    pos = np.asarray(positions, dtype=np.int64)
    m = np.asarray(mask, dtype=bool)
    if pos.ndim != 2 or pos.shape[0] != idx.shape[0] or m.shape != pos.shape:
        raise ValueError(f"positions/mask: expected ({idx.shape[0]}, k) arrays, got {pos.shape} and {m.shape}")
    rows, vis = visible_counts(task, idx)
    if (m & ((pos < 0) | (pos >= vis[:, None]))).any():
        raise ValueError("positions: a retrieved behavior lies at or after its sample's time (or is -1 but unmasked)")
    return BehaviorView(idx, rows, vis, "positions", positions=pos, mask=m, label=label)


def sdim_view(task: CTRTask, split: str | np.ndarray, vectors: np.ndarray, mask: np.ndarray, *,
              label: str = "SDIM") -> BehaviorView:
    """Each sample sees SDIM's aggregated vector ``vectors (S, d)`` (``mask (S,)`` False = empty)."""
    idx = _split_idx(task, split)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    if v.ndim != 2 or v.shape[0] != idx.shape[0] or m.shape != (idx.shape[0],):
        raise ValueError(f"vectors/mask: expected ({idx.shape[0]}, d) and ({idx.shape[0]},), got {v.shape} and {m.shape}")
    rows, vis = visible_counts(task, idx)
    return BehaviorView(idx, rows, vis, "sdim", vectors=v, vector_mask=m, label=label)


def retrieve_view(task: CTRTask, split: str | np.ndarray, method: Any, *, k: int | None = None, label: str = "",
                  n_threads: int = 1) -> BehaviorView:
    """Run a :mod:`gsu.retrieval` method in batch over a split (with the time cut) and wrap it
    as a view. SDIM results become an ``sdim`` view, all others a ``positions`` view."""
    from gsu.retrieval.batch import retrieve_batch

    idx = _split_idx(task, split)
    s = task.samples
    res = retrieve_batch(method, task.store, s["user"][idx], s["target"][idx], target_time=s["time"][idx], k=k,
                         n_threads=n_threads)
    if hasattr(res, "vectors"):
        return sdim_view(task, idx, res.vectors, res.mask, label=label or "SDIM")
    return positions_view(task, idx, res.positions, res.mask, label=label)


# ---------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One padded batch.

    ``target``: :class:`TargetFeatures` of (B,); ``behaviors``: :class:`BehaviorFeatures`
    of (B, K) and ``mask`` (B, K) bool for attention models (None for sdim); ``vectors``
    (B, d) float32 and ``vector_mask`` (B,) bool for SDIM; ``label`` (B,) float32;
    ``user`` (B,) int64; ``index`` (B,) int64 rows of the view (``view.samples[index]`` are
    the sample indices).
    """

    target: TargetFeatures
    behaviors: BehaviorFeatures | None
    mask: Tensor | None
    vectors: Tensor | None
    vector_mask: Tensor | None
    label: Tensor
    user: Tensor
    index: Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def model_inputs(self) -> tuple[Any, ...]:
        if self.behaviors is not None:
            return (self.target, self.behaviors, self.mask)
        return (self.target, self.vectors, self.vector_mask)

    def slice(self, a: int, b: int) -> "Batch":
        def cut(x: Any) -> Any:
            if x is None:
                return None
            if isinstance(x, tuple):
                return type(x)(*(t[a:b] for t in x))
            return x[a:b]

        return Batch(cut(self.target), cut(self.behaviors), cut(self.mask), cut(self.vectors), cut(self.vector_mask),
                     self.label[a:b], self.user[a:b], self.index[a:b])


def make_batch(task: CTRTask, view: BehaviorView, sel: np.ndarray, *, temporal: str = "time",
               n_time_buckets: int = 24) -> Batch:
    """Assemble the batch of view rows ``sel`` (int64 indices into the view)."""
    sidx = view.samples[sel]
    s = task.samples
    tgt = s["target"][sidx]
    target = TargetFeatures(torch.from_numpy(tgt), torch.from_numpy(task.item_category[tgt]))
    label = torch.from_numpy(s["label"][sidx].astype(np.float32))
    user = torch.from_numpy(s["user"][sidx])
    index = torch.from_numpy(np.asarray(sel, dtype=np.int64))
    if view.kind == "sdim":
        return Batch(target, None, None, torch.from_numpy(view.vectors[sel]), torch.from_numpy(view.vector_mask[sel]),
                     label, user, index)
    vis = view.visible[sel]
    if view.kind == "prefix":
        n = np.minimum(vis, view.cap)
        kmax = max(int(n.max()) if n.size else 0, 1)
        ar = np.arange(kmax, dtype=np.int64)
        mask = ar[None, :] < n[:, None]
        pos = (vis - n)[:, None] + ar[None, :]
    else:
        pos = view.positions[sel]
        mask = view.mask[sel]
    ip = task.store.indptr
    # padded slots point at behavior 0 of the store: valid ids that the mask removes
    glob = ip[view.rows[sel]][:, None] + pos
    glob[~mask] = 0
    items = task.store.column("items")[glob]
    cat_col = task.store.column("category")
    cats = cat_col[glob] if cat_col is not None else task.item_category[items]
    bt_col = task.store.column("behavior_type")
    btype = bt_col[glob].astype(np.int64) if bt_col is not None else np.zeros_like(items)
    if temporal == "position":
        offs = (vis[:, None] - 1 - pos).astype(np.float32)
    else:
        ts = task.store.column("timestamps")[glob]
        offs = ((s["time"][sidx][:, None] - ts) / task.time_unit).astype(np.float32)
    buckets = TemporalEncoding.bucketize(torch.from_numpy(offs), n_time_buckets)
    behaviors = BehaviorFeatures(torch.from_numpy(items), torch.from_numpy(cats), torch.from_numpy(btype), buckets)
    return Batch(target, behaviors, torch.from_numpy(mask), None, None, label, user, index)


def iter_batches(task: CTRTask, view: BehaviorView, *, batch_size: int, shuffle: bool = False,
                 rng: np.random.Generator | None = None, temporal: str = "time", n_time_buckets: int = 24,
                 sort_window: int = 32, by_length: bool = False) -> Iterator[Batch]:
    """Yield :class:`Batch` es over the view.

    With ``shuffle`` (needs ``rng``), samples are permuted, then — for prefix views, whose
    lengths vary — sorted by length inside windows of ``sort_window`` batches so padding
    stays small, and the batch order is shuffled again. Without ``shuffle``: view order, or
    ascending length with ``by_length`` (for evaluation; batches say which view rows they hold).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    n = len(view)
    if shuffle:
        if rng is None:
            raise ValueError("iter_batches: shuffle=True needs an explicit rng (np.random.default_rng(seed))")
        order = rng.permutation(n)
        if view.kind == "prefix":
            lens = view.lengths()
            w = batch_size * sort_window
            for a in range(0, n, w):
                chunk = order[a:a + w]
                order[a:a + w] = chunk[np.argsort(lens[chunk], kind="stable")]
        starts = np.arange(0, n, batch_size)
        starts = starts[rng.permutation(starts.size)]
    else:
        order = np.argsort(view.lengths(), kind="stable") if by_length else np.arange(n)
        starts = np.arange(0, n, batch_size)
    for a in starts:
        yield make_batch(task, view, order[a:a + batch_size], temporal=temporal, n_time_buckets=n_time_buckets)


# ---------------------------------------------------------------------------------------
# user-grouped batches: full-sequence attention with each history gathered once
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedBatch:
    """Targets of **one** user that attend over (prefixes of) the same history.

    ``target``: :class:`TargetFeatures` (B,); ``history``: :class:`BehaviorFeatures` with
    ``item``/``category``/``behavior_type`` (1, L) — a window of the user's history — and
    ``time_bucket`` (B, L); ``mask`` (B, L) bool: target ``b`` sees window position ``i``
    iff that behavior lies in its last ``cap`` visible ones; ``label`` (B,) float32;
    ``user`` (B,) int64; ``index`` (B,) int64 rows of the view.
    """

    target: TargetFeatures
    history: BehaviorFeatures
    mask: Tensor
    label: Tensor
    user: Tensor
    index: Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])


def make_shared_batch(task: CTRTask, view: BehaviorView, sel: np.ndarray, *, temporal: str = "time",
                      n_time_buckets: int = 24) -> SharedBatch:
    """The :class:`SharedBatch` of view rows ``sel`` (all of the same user) of a prefix view."""
    sel = np.asarray(sel, dtype=np.int64)
    if view.kind != "prefix":
        raise ValueError(f"make_shared_batch: needs a prefix view, got {view.kind!r}")
    r = view.rows[sel]
    if sel.size == 0 or (r != r[0]).any():
        raise ValueError("make_shared_batch: every row must belong to the same user")
    sidx = view.samples[sel]
    s = task.samples
    vis = view.visible[sel]
    lo_each = np.maximum(vis - view.cap, 0)
    lo, hi = int(lo_each.min()), max(int(vis.max()), int(lo_each.min()) + 1)
    pos = np.arange(lo, hi, dtype=np.int64)
    mask = (pos[None, :] >= lo_each[:, None]) & (pos[None, :] < vis[:, None])
    g = task.store.indptr[r[0]] + pos
    items = task.store.column("items")[g]
    cat_col = task.store.column("category")
    cats = cat_col[g] if cat_col is not None else task.item_category[items]
    bt_col = task.store.column("behavior_type")
    btype = bt_col[g].astype(np.int64) if bt_col is not None else np.zeros_like(items)
    if temporal == "position":
        offs = (vis[:, None] - 1 - pos[None, :]).astype(np.float32)
    elif temporal == "time":
        ts = task.store.column("timestamps")[g]
        offs = ((s["time"][sidx][:, None] - ts[None, :]) / task.time_unit).astype(np.float32)
    else:
        offs = np.zeros((1, pos.size), np.float32)
    buckets = TemporalEncoding.bucketize(torch.from_numpy(offs), n_time_buckets)
    tgt = s["target"][sidx]
    return SharedBatch(
        TargetFeatures(torch.from_numpy(tgt), torch.from_numpy(task.item_category[tgt])),
        BehaviorFeatures(torch.from_numpy(items)[None], torch.from_numpy(cats)[None], torch.from_numpy(btype)[None],
                         buckets),
        torch.from_numpy(mask), torch.from_numpy(s["label"][sidx].astype(np.float32)),
        torch.from_numpy(s["user"][sidx]), torch.from_numpy(sel))


def user_pieces(view: BehaviorView, *, max_targets: int, max_behaviors: int,
                rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Split a prefix view's rows into per-user pieces (int64 view-row arrays) of at most
    ``max_targets`` rows whose ``rows x window`` stays under ``max_behaviors`` (at least one
    row per piece). With ``rng`` the users and each user's rows are shuffled first; without,
    rows keep view order within users sorted by CSR row."""
    if view.kind != "prefix":
        raise ValueError(f"user_pieces: needs a prefix view, got {view.kind!r}")
    n = len(view)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    order = order[np.argsort(view.rows[order], kind="stable")]
    rs = view.rows[order]
    cuts = np.flatnonzero(np.diff(rs)) + 1
    groups = np.split(order, cuts) if n else []
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    out: list[np.ndarray] = []
    for grp in groups:
        grp = grp[np.argsort(view.visible[grp], kind="stable")]   # similar windows together
        a = 0
        while a < grp.size:
            b = a + 1
            while b < grp.size and b - a < max_targets:
                window = view.visible[grp[b]] - max(0, view.visible[grp[a]] - view.cap)
                if (b - a + 1) * max(int(window), 1) > max_behaviors:
                    break
                b += 1
            piece = grp[a:b]
            if rng is not None:
                piece = piece[rng.permutation(piece.size)]
            out.append(piece)
            a = b
    return out
