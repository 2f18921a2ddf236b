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
    "movielens_task",
    "visible_counts",
    "prefix_view",
    "positions_view",
    "sdim_view",
    "retrieve_view",
    "iter_batches",
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
            vectors carry the item and ids would only memorise noise).
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
) -> CTRTask:
    """The synthetic task of :func:`gsu.datasets.behavior_dataset`: clicks drawn from a
    known target-attention model over the whole visible sequence, so ``AUC(prob)`` is the
    best achievable AUC.

    The model reads the generator's item embeddings as frozen content vectors (the CTR
    embedding space; table "ctr", used by Exact / SIM-soft / ETA / SDIM / TWIN). MUSE's
    "multimodal" space (table "content") is a stand-in that only partly agrees with it:
    the embeddings plus Gaussian noise of ``content_noise`` times their per-dimension std.
    Negatives are the generator's own (targets half from the user's interests, half random;
    the label is drawn from the planted model). Split by time 70/15/15.
    """
    from gsu.datasets import behavior_dataset
    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.store import BehaviorStore

    data = behavior_dataset(n_users, n_items=n_items, dim=dim, n_categories=n_categories, seq_len=seq_len,
                            n_targets_per_user=n_targets_per_user, seed=seed)
    store = BehaviorStore.from_behavior_data(data)
    emb = np.ascontiguousarray(data.item_emb, dtype=np.float32)
    cat = np.asarray(data.item_category, dtype=np.int64)
    rng = np.random.default_rng([seed, 7])
    noisy = emb + rng.standard_normal(emb.shape).astype(np.float32) * (content_noise * emb.std(axis=0, keepdims=True))
    tables = {
        "ctr": ItemTable(embeddings=emb, category=cat),
        "content": ItemTable(embeddings=emb, retrieval_embeddings=noisy.astype(np.float32), category=cat),
    }
    s = data.samples
    samples = {
        "user": np.asarray(s["user"], dtype=np.int64),
        "target": np.asarray(s["target"], dtype=np.int64),
        "time": np.asarray(s["time"], dtype=np.int64),
        "label": np.asarray(s["label"], dtype=np.int8),
        "prob": np.asarray(s["prob"], dtype=np.float32),
    }
    bt = store.column("behavior_type")
    n_types = int(bt.max()) + 1 if bt is not None and bt.size else 1
    return CTRTask(
        name="synthetic", store=store, item_category=cat, item_vectors=emb, item_tables=tables, samples=samples,
        splits=split_by_time(samples["time"]), n_behavior_types=n_types, time_unit=_median_gap(store),
        info={"n_users": n_users, "seq_len": seq_len, "n_items": n_items, "dim": dim, "n_categories": n_categories,
              "n_targets_per_user": n_targets_per_user, "content_noise": content_noise, "seed": seed, "item_dim": 0,
              "n_behaviors": int(store.n_behaviors), "n_samples": int(samples["label"].shape[0]),
              "negatives": "generator's own (half in-interest, half random targets; Bernoulli labels)"},
    )


def movielens_task(
    folder: str | Path,
    *,
    max_targets_per_user: int = 20,
    n_negatives: int = 1,
    factor_dim: int = 32,
    title_vectors: np.ndarray | None = None,
    seed: int = 0,
) -> CTRTask:
    """MovieLens (latest-small) as a CTR task.

    Every rating is a behavior (type 1 when rating >= 4 else 0; category = primary genre).
    Samples: per user, up to ``max_targets_per_user`` rating events chosen uniformly at
    random (seeded) — label 1 when the rating is >= 4, else 0 — plus ``n_negatives`` movies
    the user never rated per event, sampled in proportion to their rating counts (seeded),
    at the same time with label 0. Each sample sees ratings strictly before its time.
    Split by time 70/15/15.

    Item features: ``factor_dim`` latent factors from a truncated SVD of the user x movie
    matrix of *training-period* ratings (the model's frozen content vectors and SIM-soft's
    embeddings, table "ctr"); ``title_vectors`` (M, 384) MiniLM title embeddings when given
    (MUSE-cosine, table "content").
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import svds

    from gsu.datasets import read_movielens
    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.store import BehaviorStore

    log, movies = read_movielens(folder)
    n_items = int(movies["movie_id"].shape[0])
    item = np.searchsorted(movies["movie_id"], log.item).astype(np.int64)
    rating = np.asarray(log.value, dtype=np.float32)
    btype = (rating >= 4.0).astype(np.int8)
    store = BehaviorStore.from_arrays(log.user, item, log.timestamp, behavior_type=btype, category=log.category)
    rng = np.random.default_rng([seed, 11])
    users_s, targets_s, times_s, labels_s = [], [], [], []
    pop = np.bincount(item, minlength=n_items).astype(np.float64)
    cdf = np.cumsum(pop / pop.sum())
    ip = store.indptr
    st_items, st_ts, st_bt = store.column("items"), store.column("timestamps"), store.column("behavior_type")
    for r, u in enumerate(store.user_ids):
        a, b = int(ip[r]), int(ip[r + 1])
        n = b - a
        pick = np.sort(rng.choice(n, size=min(n, max_targets_per_user), replace=False)) + a
        seen = np.zeros(n_items, bool)
        seen[st_items[a:b]] = True
        users_s.append(np.full(pick.size, u, np.int64))
        targets_s.append(st_items[pick])
        times_s.append(st_ts[pick])
        labels_s.append(st_bt[pick].astype(np.int8))
        for _ in range(n_negatives):
            neg = np.searchsorted(cdf, rng.random(pick.size), side="right").clip(0, n_items - 1)
            bad = seen[neg]
            while bad.any():
                neg[bad] = np.searchsorted(cdf, rng.random(int(bad.sum())), side="right").clip(0, n_items - 1)
                bad = seen[neg]
            users_s.append(np.full(pick.size, u, np.int64))
            targets_s.append(neg.astype(np.int64))
            times_s.append(st_ts[pick])
            labels_s.append(np.zeros(pick.size, np.int8))
    samples = {
        "user": np.concatenate(users_s), "target": np.concatenate(targets_s),
        "time": np.concatenate(times_s), "label": np.concatenate(labels_s),
    }
    splits = split_by_time(samples["time"])
    # latent factors from training-period ratings only (no test leakage)
    t_cut = samples["time"][splits["train"]].max()
    rows_u = np.repeat(np.arange(store.n_users), np.diff(ip))
    keep = st_ts <= t_cut
    m = csr_matrix((np.ones(int(keep.sum()), np.float32), (rows_u[keep], st_items[keep])),
                   shape=(store.n_users, n_items))
    k = min(factor_dim, min(m.shape) - 1)
    _, sv, vt = svds(m.astype(np.float64), k=k, random_state=np.random.RandomState(seed))
    factors = np.ascontiguousarray((vt.T * np.sqrt(sv)).astype(np.float32))
    cat = np.asarray(movies["category"], dtype=np.int64)
    tables = {"ctr": ItemTable(embeddings=factors, category=cat)}
    if title_vectors is not None:
        tv = np.asarray(title_vectors, dtype=np.float32)
        if tv.ndim != 2 or tv.shape[0] != n_items:
            raise ValueError(f"title_vectors: expected ({n_items}, d) (one row per movie in movies.csv order), got {tv.shape}")
        tables["content"] = ItemTable(embeddings=factors, retrieval_embeddings=tv, category=cat)
    return CTRTask(
        name="movielens", store=store, item_category=cat, item_vectors=factors, item_tables=tables, samples=samples,
        splits=splits, n_behavior_types=2, time_unit=_median_gap(store),
        info={"folder": str(folder), "n_users": int(store.n_users), "n_items": n_items,
              "n_behaviors": int(store.n_behaviors), "n_samples": int(samples["label"].shape[0]),
              "max_targets_per_user": max_targets_per_user, "n_negatives": n_negatives, "factor_dim": k, "seed": seed,
              "item_dim": 16,
              "negatives": f"ratings < 4 plus {n_negatives} unseen movie(s) per event, popularity-sampled"},
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
