"""Clustered lifelong sequences: score clusters before behaviors.

A lifelong sequence holds up to a million behaviors. Offline, :class:`SequenceClusters`
groups each user's behaviors into clusters of similar items (TWIN-V2's hierarchical
clustering of the life-cycle sequence; HCN's interest centers): a radius-bounded
bisecting k-means over the user's *distinct* items, optionally inside time segments (consecutive runs of
``segment`` behaviors, so that old and new behaviors never share a cluster). Each
cluster keeps its centroid (the mean of its distinct items' embeddings), its behavior
count, its earliest and latest position, and its members: the distinct items, each with
its positions in time order. The layout is stored inside the
:class:`~gsu.retrieval.BehaviorStore` file (``store.save`` / ``load(mmap=True)``) and
is appendable: new behaviors join the group of their item or the nearest centroid of
their segment (new items too far from every centroid form new clusters of their own),
an over-full cluster is halved, a new segment is clustered on its own — nothing
already clustered is re-clustered.

At request time :class:`Clustered` scores the T targets against the centroids, opens
each target's best clusters until they hold about ``candidates · k`` visible behaviors,
and scores the opened members exactly (the target attention score of ``Exact``): the
positions it returns carry their exact scores, ties go to the more recent behavior, and
a target at time t only ever sees behaviors with timestamp < t. Its cost is
O(T·C·d) for the centroids plus O(T·candidates·k·d) for the members, against
``Exact``'s O(T·L·d).
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsu._validate import check_positive_int
from gsu.retrieval import _lifelong_kernels as LK
from gsu.retrieval._clustering import assign_nearest, bisecting_kmeans, split_to_size
from gsu.retrieval.items import ItemTable
from gsu.retrieval.methods import Retriever, group_positions
from gsu.retrieval.result import RetrievalResult
from gsu.retrieval.store import BehaviorStore, History

log = logging.getLogger(__name__)

__all__ = ["UserClusters", "SequenceClusters", "Clustered", "LAYOUT_NAME", "auto_cluster_size"]

LAYOUT_NAME = "clusters"
_LAYOUT_VERSION = 1
_ROUTE_BLOCK = 64  # targets routed per block: bounds the (block, C) centroid-score tile and the route's output buffer


def auto_cluster_size(n_groups: int) -> int:
    """Default distinct items per cluster for a user with ``n_groups`` distinct items:
    ⌈√n / 4⌉, at least 16 (≈ 250 at a million distinct items, so that scoring the
    ~4,000 centroids and opening the best few clusters cost about the same)."""
    return max(16, int(math.ceil(math.sqrt(max(n_groups, 1)) / 4)))


def _check_float(value: Any, *, name: str, lo: float, lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or (lo_open and v == lo):
        raise ValueError(f"{name}: expected a finite number {'>' if lo_open else '>='} {lo}, got {value!r}")
    return v


# ----------------------------------------------------------------------------- one user's layout
@dataclass(frozen=True, eq=False)
class UserClusters:
    """One user's clustered sequence (positions ``0..length-1`` of the history).

    Attributes:
        length: behaviors covered (later positions are an unclustered tail).
        cluster_size: target distinct items per cluster used for this user.
        radius2: the largest squared distance of a distinct item to its centroid when
            the user was clustered: on append, a new item farther than this from every
            centroid of its segment starts a cluster of its own instead of joining one.
        centroids: (C, d) float32 mean embedding of each cluster's distinct items.
        counts: (C,) int64 behaviors per cluster.
        first / last: (C,) int64 earliest / latest position in each cluster.
        segment: (C,) int64 time segment of each cluster (0 without segments).
        cl_ptr: (C+1,) int64: the groups (distinct items) of cluster c are
            ``cl_ptr[c]:cl_ptr[c+1]``.
        grp_item: (G,) int64 item id of each group.
        grp_ptr: (G+1,) int64: the positions of group g are ``pos[grp_ptr[g]:grp_ptr[g+1]]``.
        pos: (length,) int64 positions, ascending within each group.
    """

    length: int
    cluster_size: int
    radius2: float
    centroids: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    last: np.ndarray
    segment: np.ndarray
    cl_ptr: np.ndarray
    grp_item: np.ndarray
    grp_ptr: np.ndarray
    pos: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.grp_item.shape[0])

    def check(self, dim: int) -> None:
        """Structural checks (O(C + G + L)); ``ValueError`` naming the first violation."""
        C, G, L = self.n_clusters, self.n_groups, int(self.length)
        bad = None
        if self.centroids.ndim != 2 or self.centroids.shape[1] != dim:
            bad = f"centroids have shape {self.centroids.shape}, expected (C, {dim})"
        elif any(a.shape != (C,) for a in (self.counts, self.first, self.last, self.segment)):
            bad = "per-cluster arrays disagree in length"
        elif self.cl_ptr.shape != (C + 1,) or self.grp_ptr.shape != (G + 1,) or self.pos.shape != (L,):
            bad = "pointer arrays have the wrong length"
        elif C and (self.cl_ptr[0] != 0 or self.cl_ptr[-1] != G or np.any(np.diff(self.cl_ptr) <= 0)):
            bad = "cluster offsets are not increasing from 0 to the number of groups"
        elif G and (self.grp_ptr[0] != 0 or self.grp_ptr[-1] != L or np.any(np.diff(self.grp_ptr) <= 0)):
            bad = "group offsets are not increasing from 0 to the number of positions"
        elif L and (self.pos.min() < 0 or self.pos.max() >= L):
            bad = f"positions outside [0, {L})"
        elif C and not np.isfinite(self.centroids).all():
            bad = "centroids hold NaN or inf"
        elif C == 0 and (G or L):
            bad = "groups without clusters"
        if bad:
            raise ValueError(f"clustered layout: {bad}")


def _csr_of(keys: np.ndarray, n: int) -> np.ndarray:
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
    return ptr


def _layout(
    *,
    length: int,
    cluster_size: int,
    radius2: float,
    g_item: np.ndarray,
    g_cluster: np.ndarray,
    g_counts: np.ndarray,
    entries_g: np.ndarray,
    entries_p: np.ndarray,
    centroids: np.ndarray,
    c_segment: np.ndarray,
) -> UserClusters:
    """Lay out groups (item, cluster, positions) cluster by cluster.

    ``g_*`` (G,) per group; ``entries_g`` / ``entries_p`` (length,) one (group, position)
    per behavior, any order. Groups keep their relative order inside a cluster; each
    group's positions come out ascending. Empty clusters are dropped.
    """
    C = centroids.shape[0]
    G = g_item.shape[0]
    order = np.argsort(g_cluster, kind="stable")
    rank = np.empty(G, np.int64)
    rank[order] = np.arange(G)
    gp = np.zeros(G + 1, np.int64)
    np.cumsum(g_counts[order], out=gp[1:])
    # positions: sort entries by (group rank, position)
    er = rank[entries_g]
    o = np.lexsort((entries_p, er))
    pos = np.ascontiguousarray(entries_p[o], dtype=np.int64)
    gc = g_cluster[order]
    used = np.bincount(gc, minlength=C) > 0
    remap = np.cumsum(used) - 1
    gc = remap[gc]
    Cu = int(used.sum())
    cl_ptr = _csr_of(gc, Cu)
    # per-cluster stats from the groups' first / last positions
    g_first = pos[gp[:-1]] if G else np.zeros(0, np.int64)
    g_last = pos[gp[1:] - 1] if G else np.zeros(0, np.int64)
    counts = np.bincount(gc, weights=g_counts[order], minlength=Cu).astype(np.int64) if G else np.zeros(Cu, np.int64)
    if Cu:
        starts = cl_ptr[:-1]
        first = np.minimum.reduceat(g_first, starts).astype(np.int64)
        last = np.maximum.reduceat(g_last, starts).astype(np.int64)
    else:
        first = last = np.zeros(0, np.int64)
    return UserClusters(
        length=int(length),
        cluster_size=int(cluster_size),
        radius2=float(radius2),
        centroids=np.ascontiguousarray(centroids[used], dtype=np.float32),
        counts=counts,
        first=first,
        last=last,
        segment=np.ascontiguousarray(c_segment[used], dtype=np.int64),
        cl_ptr=cl_ptr,
        grp_item=np.ascontiguousarray(g_item[order], dtype=np.int64),
        grp_ptr=gp,
        pos=pos,
    )


def _segments_of(positions: np.ndarray, segment: int | None) -> np.ndarray:
    return np.zeros(positions.shape[0], np.int64) if segment is None else positions // segment


def _cluster_groups(
    X: np.ndarray, size: int, split_factor: float, n_iter: int, seed: int, max_radius2: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    C = 1 if max_radius2 is not None else max(1, math.ceil(X.shape[0] / size))
    return bisecting_kmeans(X, C, max_size=max(1, int(split_factor * size)), max_radius2=max_radius2, n_iter=n_iter, seed=seed)


def cluster_sequence(
    history: Any,
    items: ItemTable,
    *,
    length: int | None = None,
    cluster_size: int | None = None,
    segment: int | None = None,
    split_factor: float = 2.0,
    n_iter: int = 8,
    seed: int = 0,
) -> UserClusters:
    """Cluster the first ``length`` behaviors (default: all) of one history from scratch.

    Args:
        history: a :class:`History` or a (L,) array of item ids.
        items: the :class:`ItemTable` (``embeddings`` are clustered).
        cluster_size: distinct items per cluster (``None``: :func:`auto_cluster_size`).
        segment: behaviors per time segment (clusters never cross segments), or ``None``.
        split_factor: no cluster holds more than ``split_factor · cluster_size`` items.
        n_iter: k-means iterations; seed: k-means seed.

    Clustering: :func:`gsu.retrieval._clustering.bisecting_kmeans` of the distinct items
    of each segment into ⌈G / cluster_size⌉ radius-bounded clusters, then halved until
    none exceeds ``split_factor · cluster_size``.
    """
    h = History.coerce(history)
    E = items.need("embeddings")
    L = len(h) if length is None else int(length)
    if not 0 <= L <= len(h):
        raise ValueError(f"length: expected 0..{len(h)}, got {length}")
    if L == 0:
        raise ValueError("cluster_sequence: the history is empty")
    p = np.arange(L, dtype=np.int64)
    rows = items.rows(h.items[:L], name="history items")
    seg = _segments_of(p, segment)
    n = np.int64(E.shape[0])
    uniq, gptr, gpos, gfirst = group_positions(seg * n + rows)
    g_rows = uniq % n
    g_seg = uniq // n
    g_counts = np.diff(gptr)
    size = auto_cluster_size(uniq.shape[0]) if cluster_size is None else int(cluster_size)
    g_cluster = np.empty(uniq.shape[0], np.int64)
    cents, csegs = [], []
    nxt = 0
    r2 = 0.0
    for s in np.unique(g_seg):
        gi = np.flatnonzero(g_seg == s)
        c, a, rs = _cluster_groups(E[g_rows[gi]], size, split_factor, n_iter, seed + 7919 * int(s))
        r2 = max(r2, rs)
        g_cluster[gi] = nxt + a
        cents.append(c)
        csegs.append(np.full(c.shape[0], s, np.int64))
        nxt += c.shape[0]
    entries_g = np.repeat(np.arange(uniq.shape[0], dtype=np.int64), g_counts)
    return _layout(
        length=L,
        cluster_size=size,
        radius2=r2,
        g_item=h.items[gfirst].astype(np.int64),
        g_cluster=g_cluster,
        g_counts=g_counts,
        entries_g=entries_g,
        entries_p=gpos,
        centroids=np.concatenate(cents, axis=0),
        c_segment=np.concatenate(csegs),
    )


def append_sequence(
    uc: UserClusters,
    history: Any,
    items: ItemTable,
    *,
    segment: int | None = None,
    split_factor: float = 2.0,
    n_iter: int = 8,
    seed: int = 0,
) -> UserClusters:
    """Fold positions ``uc.length .. len(history)-1`` into ``uc`` without re-clustering it.

    A new behavior whose item already has a group in its segment joins that group; a new
    item joins the nearest centroid (squared L2) of its segment's clusters, whose centroid
    moves to the new mean of its distinct items — unless it lies farther from that
    centroid than ``uc.radius2`` allows: such items are clustered among themselves (to the
    same radius bound) into new clusters; a segment with no clusters yet is clustered on
    its own; a cluster that grows past ``split_factor · cluster_size`` distinct items is
    halved (2-means of its members) until no part does. Returns a new
    :class:`UserClusters`; ``uc`` is not modified.
    """
    h = History.coerce(history)
    L0, L1 = int(uc.length), len(h)
    if L1 < L0:
        raise ValueError(f"append: the history has {L1} behaviors but the clusters already cover {L0}")
    if L1 == L0:
        return uc
    E = items.need("embeddings")
    n = np.int64(E.shape[0])
    size = int(uc.cluster_size)
    C0, G0 = uc.n_clusters, uc.n_groups
    newp = np.arange(L0, L1, dtype=np.int64)
    new_rows = items.rows(h.items[L0:L1], name="history items")
    new_seg = _segments_of(newp, segment)
    # existing groups of the segments the new behaviors fall into
    g_cl_old = np.repeat(np.arange(C0, dtype=np.int64), np.diff(uc.cl_ptr))
    g_seg_old = uc.segment[g_cl_old] if G0 else np.zeros(0, np.int64)
    touched = g_seg_old >= new_seg.min()
    tg = np.flatnonzero(touched)
    old_keys = g_seg_old[tg] * n + items.rows(uc.grp_item[tg], name="clustered items")
    ko = np.argsort(old_keys, kind="stable")
    sorted_keys = old_keys[ko]
    # new behaviors grouped by (segment, item)
    nk = new_seg * n + new_rows
    uniq, nptr, npos_rel, nfirst = group_positions(nk)
    j = np.searchsorted(sorted_keys, uniq)
    jc = np.minimum(j, max(sorted_keys.shape[0] - 1, 0))
    hit = (j < sorted_keys.shape[0]) & (sorted_keys[jc] == uniq) if sorted_keys.shape[0] else np.zeros(uniq.shape, bool)
    match_g = np.where(hit, tg[ko[jc]] if tg.size else -1, -1)
    n_cnt = np.diff(nptr)
    # behaviors of existing groups
    ent_new_g = np.repeat(np.where(hit, match_g, -1), n_cnt)  # -1: a new group (filled below)
    ent_new_p = L0 + npos_rel
    # new groups: their segment, item row and item id
    fresh = np.flatnonzero(~hit)
    f_rows = uniq[fresh] % n
    f_seg = uniq[fresh] // n
    f_item = h.items[L0 + nfirst[fresh]].astype(np.int64)
    f_cluster = np.empty(fresh.shape[0], np.int64)
    c_seg = [uc.segment]
    n_groups_c = [np.diff(uc.cl_ptr).astype(np.float64)]
    sums = uc.centroids.astype(np.float64) * n_groups_c[0][:, None]
    nxt = C0
    new_cents: list[np.ndarray] = []
    r2 = float(uc.radius2)
    for s in np.unique(f_seg):
        fi = np.flatnonzero(f_seg == s)
        X = E[f_rows[fi]]
        cs = np.flatnonzero(uc.segment == s)
        if cs.size:
            cc = uc.centroids[cs]
            a = assign_nearest(X, cc)
            d2 = np.einsum("nd,nd->n", X - cc[a], X - cc[a])
            fit = d2 <= r2
            f_cluster[fi[fit]] = cs[a[fit]]
            np.add.at(sums, cs[a[fit]], X[fit].astype(np.float64))
            np.add.at(n_groups_c[0], cs[a[fit]], 1.0)
            out = fi[~fit]  # too far from every centroid: clustered among themselves
            if out.size:
                c, b, _ = _cluster_groups(E[f_rows[out]], size, split_factor, n_iter, seed + 7919 * int(s) + nxt, max_radius2=r2)
                f_cluster[out] = nxt + b
                new_cents.append(c)
                c_seg.append(np.full(c.shape[0], s, np.int64))
                nxt += c.shape[0]
        else:
            c, a, rs = _cluster_groups(X, size, split_factor, n_iter, seed + 7919 * int(s))
            r2 = max(r2, rs)
            f_cluster[fi] = nxt + a
            new_cents.append(c)
            c_seg.append(np.full(c.shape[0], s, np.int64))
            nxt += c.shape[0]
    cent0 = np.where(n_groups_c[0][:, None] > 0, sums / np.maximum(n_groups_c[0], 1.0)[:, None], uc.centroids)
    centroids = np.concatenate([cent0.astype(np.float32)] + new_cents, axis=0) if new_cents else cent0.astype(np.float32)
    centroids = np.ascontiguousarray(centroids)
    segs = np.concatenate(c_seg)
    # all groups: old then fresh
    g_item = np.concatenate([uc.grp_item, f_item])
    g_cluster = np.concatenate([g_cl_old, f_cluster])
    add = np.bincount(match_g[hit], weights=n_cnt[hit], minlength=G0).astype(np.int64) if G0 else np.zeros(0, np.int64)
    g_counts = np.concatenate([np.diff(uc.grp_ptr) + add, n_cnt[fresh]])
    fresh_id = np.full(uniq.shape[0], -1, np.int64)
    fresh_id[fresh] = G0 + np.arange(fresh.shape[0])
    ent_new_g = np.where(ent_new_g >= 0, ent_new_g, np.repeat(fresh_id, n_cnt))
    entries_g = np.concatenate([np.repeat(np.arange(G0, dtype=np.int64), np.diff(uc.grp_ptr)), ent_new_g])
    entries_p = np.concatenate([np.asarray(uc.pos, dtype=np.int64), ent_new_p])
    # split over-full clusters (2-means of their distinct items)
    limit = max(2, int(split_factor * size))
    gpc = np.bincount(g_cluster, minlength=centroids.shape[0])
    extra_c, extra_s = [], []
    for c in np.flatnonzero(gpc > limit):
        gi = np.flatnonzero(g_cluster == c)
        X = E[items.rows(g_item[gi], name="clustered items")]
        a = split_to_size(X, limit, n_iter=n_iter, seed=seed + 104729 + int(c))
        for lab in range(int(a.max()) + 1):
            mean = X[a == lab].mean(axis=0, dtype=np.float64).astype(np.float32)
            if lab == 0:
                centroids[c] = mean
            else:
                g_cluster[gi[a == lab]] = centroids.shape[0] + len(extra_c)
                extra_c.append(mean)
                extra_s.append(segs[c])
    if extra_c:
        centroids = np.concatenate([centroids, np.stack(extra_c)], axis=0)
        segs = np.concatenate([segs, np.asarray(extra_s, np.int64)])
    return _layout(
        length=L1,
        cluster_size=size,
        radius2=r2,
        g_item=g_item,
        g_cluster=g_cluster,
        g_counts=g_counts,
        entries_g=entries_g,
        entries_p=entries_p,
        centroids=centroids,
        c_segment=segs,
    )


# ----------------------------------------------------------------------------- many users
_USER_ARRAYS = ("user_ids", "user_len", "user_size", "user_radius", "user_cl", "user_grp", "user_pos")
_DATA_ARRAYS = ("centroids", "counts", "first", "last", "segment", "cl_ptr", "grp_item", "grp_ptr", "pos")


class SequenceClusters:
    """The clustered layout of many users' sequences (see the module docstring).

    Build with :meth:`build` (offline, every user of a store), keep current with
    :meth:`update` after ``store.append`` (only new behaviors are placed; nothing is
    re-clustered), store it in the behavior-store file with :meth:`attach` +
    ``store.save``, read it back with :meth:`from_store` (memory-mapped when the store
    was loaded with ``mmap=True``).

    Args (of :meth:`build`):
        cluster_size: distinct items per cluster (``None``: :func:`auto_cluster_size` of
            each user's number of distinct items).
        segment: behaviors per time segment, or ``None`` (cluster by item embedding only).
        n_iter: k-means iterations per level; seed: k-means seed.
        split_factor: no cluster holds more than ``split_factor · cluster_size``
            distinct items (at build and on append: larger ones are halved).
    """

    def __init__(
        self,
        *,
        dim: int,
        cluster_size: int | None = None,
        segment: int | None = None,
        n_iter: int = 8,
        seed: int = 0,
        split_factor: float = 2.0,
    ):
        self.dim = check_positive_int(dim, name="dim")
        self.cluster_size = None if cluster_size is None else check_positive_int(cluster_size, name="cluster_size")
        self.segment = None if segment is None else check_positive_int(segment, name="segment")
        self.n_iter = check_positive_int(n_iter, name="n_iter", minimum=0)
        self.seed = check_positive_int(seed, name="seed", minimum=0)
        self.split_factor = _check_float(split_factor, name="split_factor", lo=1.0)
        self._base: dict[str, np.ndarray] = _empty_arrays(self.dim)
        self._over: dict[int, UserClusters] = {}
        self._checked: set[int] = set()

    # -- construction ---------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"version": _LAYOUT_VERSION, "dim": self.dim, "cluster_size": self.cluster_size, "segment": self.segment,
                "n_iter": self.n_iter, "seed": self.seed, "split_factor": self.split_factor}

    @classmethod
    def build(
        cls,
        store: BehaviorStore,
        items: ItemTable,
        *,
        cluster_size: int | None = None,
        segment: int | None = None,
        n_iter: int = 8,
        seed: int = 0,
        split_factor: float = 2.0,
        users: Any = None,
    ) -> "SequenceClusters":
        """Cluster every user of ``store`` (or only ``users``) from scratch."""
        if not isinstance(store, BehaviorStore):
            raise TypeError(f"store: expected a BehaviorStore, got {type(store).__name__}")
        sc = cls(dim=items.dim, cluster_size=cluster_size, segment=segment, n_iter=n_iter, seed=seed, split_factor=split_factor)
        us = store.user_ids if users is None else np.asarray(users, dtype=np.int64).reshape(-1)
        for u in us.tolist():
            h = store.history(u)
            if len(h):
                sc._over[int(u)] = sc._cluster(h, items)
        return sc

    def _cluster(self, h: History, items: ItemTable) -> UserClusters:
        return cluster_sequence(h, items, cluster_size=self.cluster_size, segment=self.segment, split_factor=self.split_factor,
                                n_iter=self.n_iter, seed=self.seed)

    def cluster_history(self, history: Any, items: ItemTable) -> UserClusters:
        """Cluster one history with this layout's settings (not stored)."""
        return self._cluster(History.coerce(history), items)

    def update(self, store: BehaviorStore, items: ItemTable, *, users: Any = None) -> int:
        """Bring the layout up to date with ``store`` after appends: for every user (or
        ``users``) the behaviors past the clustered length are placed into clusters
        (:func:`append_sequence`); users not clustered yet are clustered. Returns the
        number of behaviors placed."""
        if not isinstance(store, BehaviorStore):
            raise TypeError(f"store: expected a BehaviorStore, got {type(store).__name__}")
        us = store.user_ids if users is None else np.asarray(users, dtype=np.int64).reshape(-1)
        placed = 0
        for u in us.tolist():
            h = store.history(u)
            if not len(h):
                continue
            uc = self.user(u)
            if uc is None:
                self._over[int(u)] = self._cluster(h, items)
                placed += len(h)
            elif len(h) > uc.length:
                placed += len(h) - uc.length
                self._over[int(u)] = append_sequence(uc, h, items, segment=self.segment, split_factor=self.split_factor,
                                                     n_iter=self.n_iter, seed=self.seed)
                self._checked.discard(int(u))
            elif len(h) < uc.length:
                raise ValueError(f"user {u}: the store holds {len(h)} behaviors but the clusters cover {uc.length}; rebuild")
        return placed

    # -- access ------------------------------------------------------------------------
    @property
    def user_ids(self) -> np.ndarray:
        """(U,) int64 users with a layout, ascending."""
        base = np.asarray(self._base["user_ids"])
        if not self._over:
            return base
        return np.union1d(base, np.fromiter(self._over, np.int64, len(self._over)))

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    def _row(self, user: int) -> int:
        ids = self._base["user_ids"]
        r = int(np.searchsorted(ids, user))
        return r if r < ids.shape[0] and ids[r] == user else -1

    def user(self, user: Any) -> UserClusters | None:
        """The layout of external user id ``user`` (views into the stored arrays), or
        ``None`` when the user has none. Checked structurally on first use."""
        u = int(user)
        uc = self._over.get(u)
        if uc is None:
            r = self._row(u)
            if r < 0:
                return None
            b = self._base
            c0, c1 = int(b["user_cl"][r]), int(b["user_cl"][r + 1])
            g0, g1 = int(b["user_grp"][r]), int(b["user_grp"][r + 1])
            p0, p1 = int(b["user_pos"][r]), int(b["user_pos"][r + 1])
            if not (0 <= c0 <= c1 and 0 <= g0 <= g1 and 0 <= p0 <= p1) or c1 + r + 1 > b["cl_ptr"].shape[0] or g1 + r + 1 > b["grp_ptr"].shape[0]:
                raise ValueError(f"clustered layout: user {u}'s offsets are out of range")
            uc = UserClusters(
                length=int(b["user_len"][r]),
                cluster_size=int(b["user_size"][r]),
                radius2=float(b["user_radius"][r]),
                centroids=b["centroids"][c0:c1],
                counts=b["counts"][c0:c1],
                first=b["first"][c0:c1],
                last=b["last"][c0:c1],
                segment=b["segment"][c0:c1],
                cl_ptr=b["cl_ptr"][c0 + r : c1 + r + 1],
                grp_item=b["grp_item"][g0:g1],
                grp_ptr=b["grp_ptr"][g0 + r : g1 + r + 1],
                pos=b["pos"][p0:p1],
            )
        if u not in self._checked:
            uc.check(self.dim)
            self._checked.add(u)
        return uc

    # -- persistence -----------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """All users' layouts as flat arrays (the stored form)."""
        ids = self.user_ids
        parts: dict[str, list[np.ndarray]] = {a: [] for a in _DATA_ARRAYS}
        ulen, usize, urad, ucl, ugrp, upos = [], [], [], [0], [0], [0]
        for u in ids.tolist():
            uc = self.user(u)
            ulen.append(uc.length)
            usize.append(uc.cluster_size)
            urad.append(uc.radius2)
            for a in _DATA_ARRAYS:
                parts[a].append(np.asarray(getattr(uc, a)))
            ucl.append(ucl[-1] + uc.n_clusters)
            ugrp.append(ugrp[-1] + uc.n_groups)
            upos.append(upos[-1] + uc.length)
        out = {
            "user_ids": ids.astype(np.int64),
            "user_len": np.asarray(ulen, np.int64),
            "user_size": np.asarray(usize, np.int64),
            "user_radius": np.asarray(urad, np.float64),
            "user_cl": np.asarray(ucl, np.int64),
            "user_grp": np.asarray(ugrp, np.int64),
            "user_pos": np.asarray(upos, np.int64),
        }
        empty = _empty_arrays(self.dim)
        for a in _DATA_ARRAYS:
            out[a] = np.ascontiguousarray(np.concatenate(parts[a], axis=0)) if parts[a] else empty[a]
        return out

    def attach(self, store: BehaviorStore) -> None:
        """Store this layout in ``store`` (as layout ``"clusters"``; saved by ``store.save``)."""
        if not isinstance(store, BehaviorStore):
            raise TypeError(f"store: expected a BehaviorStore, got {type(store).__name__}")
        store.set_layout(LAYOUT_NAME, self._config(), self.arrays())

    @classmethod
    def from_store(cls, store: BehaviorStore) -> "SequenceClusters":
        """The layout stored in ``store`` (views into its arrays; memory-mapped when the
        store was). ``ValueError`` when the store carries none or it is malformed."""
        if not isinstance(store, BehaviorStore):
            raise TypeError(f"store: expected a BehaviorStore, got {type(store).__name__}")
        lay = store.layout(LAYOUT_NAME)
        if lay is None:
            raise ValueError("the store carries no clustered layout; build one with SequenceClusters.build(store, items).attach(store)")
        cfg, arr = lay
        try:
            if int(cfg.get("version", -1)) != _LAYOUT_VERSION:
                raise ValueError(f"layout version {cfg.get('version')!r} is not supported (this gsu reads {_LAYOUT_VERSION})")
            sc = cls(dim=int(cfg["dim"]), cluster_size=cfg.get("cluster_size"), segment=cfg.get("segment"),
                     n_iter=int(cfg.get("n_iter", 8)), seed=int(cfg.get("seed", 0)), split_factor=float(cfg.get("split_factor", 2.0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"clustered layout: malformed config ({e})") from None
        missing = [a for a in _USER_ARRAYS + _DATA_ARRAYS if a not in arr]
        if missing:
            raise ValueError(f"clustered layout: missing arrays {missing}")
        U = arr["user_ids"].shape[0]
        for a in ("user_len", "user_size", "user_radius"):
            if arr[a].shape != (U,):
                raise ValueError(f"clustered layout: {a} has shape {arr[a].shape}, expected ({U},)")
        for a in ("user_cl", "user_grp", "user_pos"):
            if arr[a].shape != (U + 1,) or (U and np.any(np.diff(arr[a]) < 0)):
                raise ValueError(f"clustered layout: {a} is not a non-decreasing ({U + 1},) offset array")
        if U > 1 and np.any(np.diff(arr["user_ids"]) <= 0):
            raise ValueError("clustered layout: user ids are not sorted and unique")
        if arr["centroids"].ndim != 2 or arr["centroids"].shape[1] != sc.dim:
            raise ValueError(f"clustered layout: centroids of shape {arr['centroids'].shape}, expected (C, {sc.dim})")
        sc._base = {a: arr[a] for a in _USER_ARRAYS + _DATA_ARRAYS}
        return sc

    def __repr__(self) -> str:
        return f"SequenceClusters(users={self.n_users}, dim={self.dim}, cluster_size={self.cluster_size}, segment={self.segment})"


def _empty_arrays(dim: int) -> dict[str, np.ndarray]:
    z = np.zeros(0, np.int64)
    return {"user_ids": z, "user_len": z, "user_size": z, "user_radius": np.zeros(0, np.float64), "user_cl": np.zeros(1, np.int64), "user_grp": np.zeros(1, np.int64),
            "user_pos": np.zeros(1, np.int64), "centroids": np.zeros((0, dim), np.float32), "counts": z, "first": z,
            "last": z, "segment": z, "cl_ptr": z, "grp_item": z, "grp_ptr": z, "pos": z}


# ----------------------------------------------------------------------------- retrieval
def _tail_layout(h: History, items: ItemTable, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pseudo-cluster over positions ``start..L-1``: ``(cl_ptr, grp_rows, grp_ptr, pos)``."""
    rows = items.rows(h.items[start:], name="history items")
    uniq, gptr, gpos, _ = group_positions(rows)
    return np.array([0, uniq.shape[0]], np.int64), uniq, gptr, gpos + start


def search_clusters(
    uc: UserClusters | None,
    h: History,
    items: ItemTable,
    Q: np.ndarray,
    cuts: np.ndarray,
    k: int,
    budget: float,
    *,
    min_probe: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k positions of ``h`` for each query row, through its clusters.

    Q (R, d) float32 query vectors (target attention queries or interest probes); cuts
    (R,) int64 visible prefix lengths. Each row opens its best clusters (centroid score)
    until about ``budget`` visible behaviors, plus the unclustered tail (positions
    ``uc.length..L-1``, scanned in full); every opened member is scored exactly
    (``Q[r] · e``). Returns ``(positions (R, k) int64 -1 padded, scores (R, k) float32
    -inf padded)``, best first, ties to the more recent behavior.
    """
    E = np.ascontiguousarray(items.need("embeddings"))  # (a view when it already is: the kernels read it flat)
    R = Q.shape[0]
    L = len(h)
    cuts = np.minimum(np.asarray(cuts, dtype=np.int64), L)
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    cover = min(int(uc.length), L) if uc is not None and uc.n_clusters else 0
    pos, sc = _empty_result(R, k)
    if cover:
        C = uc.n_clusters
        grp_rows = items.rows(uc.grp_item, name="clustered items")
        ccuts = np.minimum(cuts, cover)
        p0 = int(min(C, max(8, 2 * math.ceil(budget / max(float(uc.counts.sum()) / C, 1.0)))))
        gsz = np.diff(uc.cl_ptr)
        scratch = np.empty((int(gsz.max()), E.shape[1]), np.float32)
        cent = np.ascontiguousarray(uc.centroids, dtype=np.float32)
        # the clusters each row opens, routed a block of rows at a time (a small
        # centroid-score tile and output buffer), then every row's clusters scored at once
        parts_ptr, parts_cl = [], []
        ocl = np.empty(min(R, _ROUTE_BLOCK) * C, np.int32)
        for s in range(0, R, _ROUTE_BLOCK):
            e = min(R, s + _ROUTE_BLOCK)
            optr = np.empty(e - s + 1, np.int64)
            LK.route(Q[s:e] @ cent.T, uc.counts, uc.first, uc.last, ccuts[s:e], float(budget), int(min_probe), p0, optr, ocl)
            parts_ptr.append(np.diff(optr))
            parts_cl.append(ocl[: optr[-1]].copy())
        nop = np.concatenate(parts_ptr)
        ocl = np.concatenate(parts_cl)
        optr = np.concatenate(([0], np.cumsum(nop)))
        # every row's best cluster first, then the rest: the lists start from good groups,
        # so that most later groups fall below their worst kept one at once
        has = (nop > 0).astype(np.int64)
        best = optr[:-1][nop > 0]
        rest = np.ones(int(optr[-1]), bool)
        rest[best] = False
        lists = _group_lists(R, k)
        for lptr, lcl in ((np.concatenate(([0], np.cumsum(has))), ocl[best]),
                          (np.concatenate(([0], np.cumsum(nop - has))), ocl[rest])):
            cl_tptr = np.empty(C + 1, np.int64)
            cl_t = np.empty(max(int(lptr[-1]), 1), np.int32)
            LK.invert(lptr, lcl, C, cl_tptr, cl_t)
            LK.score_clusters(E, grp_rows, uc.cl_ptr, uc.grp_ptr, uc.last, uc.pos, cl_tptr, cl_t, Q, ccuts, k, *lists, scratch)
        LK.groups_finish(*lists, uc.pos, pos, sc)
    if cover < L:  # the unclustered tail, scanned whole
        tcl, trows, tgp, tpos = _tail_layout(h, items, cover)
        allr = np.arange(R, dtype=np.int32)
        scratch = np.empty((max(int(trows.shape[0]), 1), E.shape[1]), np.float32)
        lists = _group_lists(R, k)
        LK.score_clusters(E, trows, tcl, tgp, np.array([L - 1], np.int64), tpos, np.array([0, R], np.int64), allr, Q, cuts, k,
                          *lists, scratch)
        if cover:  # into lists of its own, then merged with the clusters' result
            tp, ts = _empty_result(R, k)
            LK.groups_finish(*lists, tpos, tp, ts)
            cp, cs = pos, sc
            pos, sc = _empty_result(R, k)
            LK.merge_ranked(cp, cs, tp, ts, pos, sc)
        else:
            LK.groups_finish(*lists, tpos, pos, sc)
    return pos, sc


def _empty_result(R: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, scores)`` (R, k) of nothing found: -1 / -inf."""
    return np.full((R, k), -1, np.int64), np.full((R, k), -np.inf, np.float32)


def _group_lists(R: int, k: int) -> tuple[np.ndarray, ...]:
    """Per row, an empty list of whole groups (a distinct item with its visible positions)
    that keeps the best ``k`` positions: ``(gs, ge, gn, starts, sizes, tots)`` (:func:`LK.score_clusters`)."""
    return (np.empty((R, k + 2), np.float32), np.empty((R, k + 2), np.int64), np.empty((R, k + 2), np.int64),
            np.zeros(R, np.int64), np.zeros(R, np.int64), np.zeros(R, np.int64))


class Clustered(Retriever):
    """Score clusters before behaviors (see the module docstring).

    score(target, behavior) = ⟨e_target, e_behavior⟩ (· 1/√d with ``scale``): the
    default ``Exact`` score, computed exactly for every behavior it returns.

    Args:
        items: ItemTable with ``embeddings`` (n, d) float32.
        k: behaviors per target.
        candidates: c — each target opens its best clusters until they hold about c·k
            visible behaviors (c = 1: "until k behaviors are found"); recall vs cost.
            :func:`gsu.retrieval.cascade.calibrate` picks the smallest c reaching a
            target recall against ``Exact``.
        min_probe: clusters opened at least, whatever their size.
        clusters: a :class:`SequenceClusters`; ``None`` = the ``"clusters"`` layout of
            the store a history comes from (``store.history(u)``), else the history is
            clustered on the fly for that request (costly for long histories).
        scale: divide scores by √d (``Exact(scale=True)``).
        cluster_size, segment, n_iter, seed: settings of on-the-fly clustering and of
            :meth:`fit`.

    Behaviors past a user's clustered length (appended since the last
    ``SequenceClusters.update``) are scanned exactly on every request.
    """

    name = "clustered"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        candidates: float = 8.0,
        min_probe: int = 1,
        clusters: SequenceClusters | None = None,
        scale: bool = False,
        cluster_size: int | None = None,
        segment: int | None = None,
        n_iter: int = 8,
        seed: int = 0,
    ):
        super().__init__(items, k=k)
        E = items.need("embeddings")
        self.candidates = _check_float(candidates, name="candidates", lo=0.0)
        self.min_probe = check_positive_int(min_probe, name="min_probe")
        if clusters is not None and not isinstance(clusters, SequenceClusters):
            raise TypeError(f"clusters: expected a SequenceClusters, got {type(clusters).__name__}")
        if clusters is not None and clusters.dim != E.shape[1]:
            raise ValueError(f"clusters: built for dimension {clusters.dim}, the item embeddings have {E.shape[1]}")
        self.clusters = clusters
        self.scale = bool(scale)
        self._mult = np.float32(1.0 / math.sqrt(E.shape[1])) if self.scale else np.float32(1.0)
        self._settings = SequenceClusters(dim=E.shape[1], cluster_size=cluster_size, segment=segment, n_iter=n_iter, seed=seed)
        self._from_store: "weakref.WeakKeyDictionary[BehaviorStore, tuple[int, SequenceClusters]]" = weakref.WeakKeyDictionary()

    def fit(self, store: BehaviorStore, *, attach: bool = False) -> "Clustered":
        """Cluster every user of ``store`` with this method's settings (``attach``: also
        store the layout in ``store``). Returns ``self``."""
        s = self._settings
        self.clusters = SequenceClusters.build(store, self.items, cluster_size=s.cluster_size, segment=s.segment, n_iter=s.n_iter, seed=s.seed)
        if attach:
            self.clusters.attach(store)
        return self

    def user_clusters(self, h: History) -> UserClusters:
        """The layout serving history ``h`` (see ``clusters``)."""
        uc = None
        if h.user >= 0 and self.clusters is not None:
            uc = self.clusters.user(h.user)
        if uc is None and h.user >= 0 and isinstance(h.source, BehaviorStore) and h.source.layout(LAYOUT_NAME) is not None:
            lay = h.source.layout(LAYOUT_NAME)
            hit = self._from_store.get(h.source)
            if hit is None or hit[0] != id(lay):
                hit = (id(lay), SequenceClusters.from_store(h.source))
                self._from_store[h.source] = hit
            if hit[1].dim != self.items.dim:
                raise ValueError(f"the store's clusters were built for dimension {hit[1].dim}, the item embeddings have {self.items.dim}")
            uc = hit[1].user(h.user)
        if uc is None:
            log.debug("clustered: no stored layout for user %d; clustering %d behaviors on the fly", h.user, len(h))
            return self._settings.cluster_history(h, self.items)
        _check_matches(uc, h)
        return uc

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:
        uc = self.user_clusters(h)
        Q = self.items.embeddings[trows] * self._mult
        pos, sc = search_clusters(uc, h, self.items, Q, cuts, k, self.candidates * k, min_probe=self.min_probe)
        return RetrievalResult.from_positions(pos, sc)

    def __repr__(self) -> str:
        return f"Clustered(k={self.k}, candidates={self.candidates:g}, min_probe={self.min_probe}, scale={self.scale})"


def _check_matches(uc: UserClusters, h: History, n_check: int = 64) -> None:
    """Cheap consistency check of a stored layout against the history it serves."""
    if uc.length > len(h):
        raise ValueError(f"user {h.user}: the clusters cover {uc.length} behaviors but the history holds {len(h)}; "
                         "the layout belongs to another store or the store was rebuilt")
    G = uc.n_groups
    if G == 0:
        return
    g = np.unique(np.linspace(0, G - 1, min(G, n_check)).astype(np.int64))
    p = np.asarray(uc.pos)[np.asarray(uc.grp_ptr)[g]]
    if np.any(h.items[p] != np.asarray(uc.grp_item)[g]):
        raise ValueError(f"user {h.user}: the clustered layout does not match the history (items differ); rebuild it")
