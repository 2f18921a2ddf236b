"""GSU methods: for each target, pick the k behaviors of a user's history that matter.

Every method has the same call::

    out = method.retrieve(history, targets, *, k=None, target_time=None)  # -> RetrievalResult

- ``history``: a :class:`~gsu.retrieval.History` (``store.history(user)``) or a (L,)
  array of item ids (a history without timestamps).
- ``targets``: (T,) int64 item ids of the request's candidates (rows of the ItemTable).
- ``k``: overrides the constructor's ``k`` for this call.
- ``target_time``: ``None``, one int64 time, or (T,) int64 — the *time cut*: a target
  at time ``t`` sees only behaviors with ``timestamp < t`` (strict), so that training
  samples never see the future.

Ties (equal scores) always go to the more recent behavior. An empty history, an
unknown item id, ``k <= 0`` or arrays of the wrong shape raise ``ValueError``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Sequence

import numpy as np

from gsu._validate import as_ids, as_matrix, check_choice, check_k, check_positive_int
from gsu.retrieval import _kernels as K_
from gsu.retrieval.items import ItemTable
from gsu.retrieval.result import RetrievalResult
from gsu.retrieval.store import History

log = logging.getLogger(__name__)

__all__ = ["Retriever", "Exact", "TWIN", "HardSearch", "SoftSearch", "Hybrid", "group_positions", "history_topk", "index_topk", "target_cuts"]

_BLOCK_ROWS = 128
_BLOCK_COLS = 2048
#: rows of at most this many positions take the one-tile selection path (partition + collect)
_SELECT_MAX_COLS = 16_384
_SELECT_TILE = 1 << 19  # floats per score tile on the selection path


# ----------------------------------------------------------------------------- helpers
def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return np.ascontiguousarray(x / n, dtype=np.float32)


def target_cuts(history: History, target_time: Any, n_targets: int) -> np.ndarray:
    """(T,) int64 visible prefix length of each target (``L`` when no time cut)."""
    L = len(history)
    if target_time is None:
        return np.full(n_targets, L, dtype=np.int64)
    if history.timestamps is None:
        raise ValueError("target_time: the history has no timestamps, so no time cut is possible")
    t = np.asarray(target_time)
    if t.ndim == 0:
        t = np.full(n_targets, int(t), dtype=np.int64)
    else:
        t = as_ids(t, name="target_time", n=n_targets)
    return np.searchsorted(history.timestamps, t, side="left").astype(np.int64)


def group_positions(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group positions ``0..L-1`` by ``keys`` (L,) int64.

    Returns ``(uniq (G,) sorted keys, grp_ptr (G+1,), grp_pos (L,), first_pos (G,))``:
    the positions of group ``g`` are ``grp_pos[grp_ptr[g]:grp_ptr[g+1]]`` in ascending
    (time) order, and ``first_pos[g]`` is the oldest of them.
    """
    L = keys.shape[0]
    order = np.argsort(keys, kind="stable").astype(np.int64)
    sk = keys[order]
    new = np.ones(L, dtype=bool)
    if L > 1:
        new[1:] = sk[1:] != sk[:-1]
    starts = np.flatnonzero(new)
    grp_ptr = np.empty(starts.shape[0] + 1, dtype=np.int64)
    grp_ptr[:-1] = starts
    grp_ptr[-1] = L
    return sk[starts], grp_ptr, order, order[starts]


def history_topk(
    Q: np.ndarray,
    Kmat: np.ndarray,
    k: int,
    cuts: np.ndarray,
    *,
    first_pos: np.ndarray | None = None,
    n_heads: int = 1,
    head_reduce: str = "sum",
    block_rows: int = _BLOCK_ROWS,
    block_cols: int = _BLOCK_COLS,
    col_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``Q @ Kmat.T`` per row, blocked so each score tile stays in cache.

    Args:
        Q: (T, D) float32 queries; Kmat: (M, D) float32 keys.
        cuts: (T,) int64. Without ``first_pos`` the columns are positions and row ``t``
            sees columns ``< cuts[t]``; with ``first_pos`` (M,) the columns are groups and
            group ``g`` is visible when ``first_pos[g] < cuts[t]``.
        n_heads / head_reduce: with ``"max"`` the D columns are split into ``n_heads``
            heads and a column's score is the max over heads (``"sum"`` = one product).
        col_rows: (M,) int64: column ``j``'s key is ``Kmat[col_rows[j]]`` (``Kmat`` the
            distinct keys, :func:`distinct_rows`). Each (query, distinct key) score is then
            computed once and read by every column of that key, so copies of an item tie
            exactly and the tie rule (the most recent) holds: a BLAS product over the
            positions may round two copies differently (OpenBLAS's Haswell kernel does,
            in the last bit, depending on a column's place in its tile).

    Returns ``(idx (T, k) int64 -1 padded, scores (T, k) float32 -inf padded)``, best
    first, ties to the larger column. Scores are never materialised as a (T, M) matrix.
    """
    T = Q.shape[0]
    M = Kmat.shape[0] if col_rows is None else col_rows.shape[0]
    out_i = np.full((T, k), -1, np.int64)
    out_s = np.full((T, k), -np.inf, np.float32)
    if T == 0 or M == 0:
        return out_i, out_s
    order = np.argsort(cuts, kind="stable")
    sc = cuts[order]
    Qs = Q[order]
    if (head_reduce == "sum" or n_heads == 1) and (int(sc[-1]) if first_pos is None else M) <= _SELECT_MAX_COLS:
        _select_path(Qs, Kmat, k, sc, order, out_i, out_s, first_pos, col_rows)
        return out_i, out_s
    if col_rows is not None:  # scored per distinct key in tiles, each key's positions offered (heap_scan_distinct)
        grp_ptr, grp_pos = K_.group_layout(col_rows, Kmat.shape[0])
    hs = np.empty((block_rows, k), np.float32)
    hr = np.empty((block_rows, k), np.int64)
    sizes = np.zeros(block_rows, np.int64)
    buf = np.empty((block_rows, block_cols), np.float32)
    tmp = np.empty((block_rows, block_cols), np.float32) if head_reduce == "max" and n_heads > 1 else None
    dh = Q.shape[1] // n_heads
    oi = np.empty((block_rows, k), np.int64)
    os_ = np.empty((block_rows, k), np.float32)
    for s in range(0, T, block_rows):
        e = min(T, s + block_rows)
        B = e - s
        qb = Qs[s:e]
        cb = sc[s:e]
        sizes[:B] = 0
        hsb, hrb, szb = hs[:B], hr[:B], sizes[:B]
        # with col_rows the tiles are of distinct keys, each offered at its positions
        limit = Kmat.shape[0] if col_rows is not None else M if first_pos is not None else int(min(M, cb.max()))
        for a in range(0, limit, block_cols):
            w = min(block_cols, limit - a)
            S = buf[:B, :w]
            if tmp is None:
                np.matmul(qb, Kmat[a : a + w].T, out=S)
            else:
                Kc = Kmat[a : a + w]
                t2 = tmp[:B, :w]
                for h in range(n_heads):
                    sl = slice(h * dh, (h + 1) * dh)
                    if h == 0:
                        np.matmul(qb[:, sl], Kc[:, sl].T, out=S)
                    else:
                        np.matmul(qb[:, sl], Kc[:, sl].T, out=t2)
                        np.maximum(S, t2, out=S)
            if col_rows is not None:
                K_.heap_scan_distinct(S, a, grp_ptr, grp_pos, cb, k, hsb, hrb, szb)
            elif first_pos is None:
                K_.heap_scan_prefix(S, a, cb, k, hsb, hrb, szb)
            else:
                K_.heap_scan_groups(S, a, first_pos, cb, k, hsb, hrb, szb)
        oi[:B] = -1
        os_[:B] = -np.inf
        K_.heaps_finish(hsb, hrb, szb, oi[:B], os_[:B])
        out_i[order[s:e]] = oi[:B]
        out_s[order[s:e]] = os_[:B]
    return out_i, out_s


def _select_path(
    Qs: np.ndarray,
    Kmat: np.ndarray,
    k: int,
    sc: np.ndarray,
    order: np.ndarray,
    out_i: np.ndarray,
    out_s: np.ndarray,
    first_pos: np.ndarray | None = None,
    col_rows: np.ndarray | None = None,
) -> None:
    """Rows that fit one tile: a (B, w) score tile per block of targets (sorted by cut),
    invisible columns set to -inf, the k-th largest score per row by ``np.partition``
    (introselect over values), then one numba pass collecting the winners (ties to the
    larger column) and a row-wise sort of k keys."""
    T = Qs.shape[0]
    limit = int(sc[-1]) if first_pos is None else Kmat.shape[0]
    B = int(min(T, max(8, _SELECT_TILE // max(limit, 1))))
    buf = np.empty(B * max(limit, 1), np.float32)
    for s in range(0, T, B):
        e = min(T, s + B)
        cb = sc[s:e]
        w = int(cb[-1]) if first_pos is None else limit
        if w == 0 or int(cb[-1]) == 0:
            continue
        S = buf[: (e - s) * w].reshape(e - s, w)
        if col_rows is None:
            np.matmul(Qs[s:e], Kmat[:w].T, out=S)
        else:  # one score per distinct key, read by each of its columns (see history_topk)
            np.take(Qs[s:e] @ Kmat.T, col_rows[:w], axis=1, out=S)
        if first_pos is not None:
            K_.mask_invisible_groups(S, first_pos, cb)
            cb = np.full(e - s, w, np.int64)
        elif cb[0] < w:
            K_.mask_after_cut(S, cb)
        kk = min(k, w)
        # each row's k-th largest visible score (introselect on the values alone, cheaper
        # than an argpartition), then one branch-free numba pass collecting every score
        # above it and, among scores equal to it, the most recent (the tie rule)
        thr = np.ascontiguousarray(np.partition(S, w - kk, axis=1)[:, w - kk])
        keys = np.empty((e - s, k), np.uint64)
        K_.collect_topk(S, cb, thr, k, keys)
        keys.sort(axis=1)  # (score desc, position desc)
        oi = np.empty((e - s, k), np.int64)
        os_ = np.empty((e - s, k), np.float32)
        K_.decode_keys(keys, oi, os_)
        out_i[order[s:e]] = oi
        out_s[order[s:e]] = os_


def _head_scores(qb: np.ndarray, Kmat: np.ndarray, n_heads: int, dh: int) -> np.ndarray:
    """(B, M) scores of the rows ``qb`` against the keys ``Kmat``: one product, or with
    ``n_heads > 1`` the max over heads of ``dh`` columns each."""
    if n_heads <= 1:
        return qb @ Kmat.T
    out = qb[:, :dh] @ Kmat[:, :dh].T
    for h in range(1, n_heads):
        np.maximum(out, qb[:, h * dh : (h + 1) * dh] @ Kmat[:, h * dh : (h + 1) * dh].T, out=out)
    return out


def distinct_rows(rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(distinct rows (G,), column map (L,) int64)`` of item-table ``rows`` (L,) (each in
    ``0..n_rows-1``) when some row repeats, else ``None``: the keys and the ``col_rows`` of
    :func:`history_topk` (``rows == distinct[map]``, the distinct rows ascending). One pass over the rows with an int32 slot per table row where the table is
    not much larger than the rows or small (a few MB to clear), else a sort."""
    L = rows.shape[0]
    if L < 2:
        return None
    if n_rows <= max(8 * L, 1 << 20):
        u, inv = K_.distinct_first(np.ascontiguousarray(rows, dtype=np.int64), np.full(n_rows, -1, np.int32))
        if u.shape[0] < L:  # ascending (the keys are then read in table order: 18 -> 11 ms at 10^6 behaviors, 52k items)
            order = np.argsort(u)
            rank = np.empty(u.shape[0], np.int64)
            rank[order] = np.arange(u.shape[0], dtype=np.int64)
            u, inv = u[order], rank[inv]
    else:
        u, inv = np.unique(rows, return_inverse=True)
    if u.shape[0] == L:
        return None
    return u, inv.astype(np.int64, copy=False)


def expand_groups_result(top_g: np.ndarray, top_s: np.ndarray, grp_ptr: np.ndarray, grp_pos: np.ndarray, cuts: np.ndarray, k: int) -> RetrievalResult:
    T = top_g.shape[0]
    pos = np.full((T, k), -1, np.int64)
    sc = np.full((T, k), -np.inf, np.float32)
    counts = np.zeros(T, np.int64)
    K_.expand_groups(np.ascontiguousarray(top_g), np.ascontiguousarray(top_s, dtype=np.float32), grp_ptr, grp_pos, cuts, k, pos, sc, counts)
    return RetrievalResult.from_positions(pos, sc)


def index_topk(
    index: Any,
    Q: Any,
    group_ids: np.ndarray,
    first_pos: np.ndarray,
    cuts: np.ndarray,
    k: int,
    search_params: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k groups (distinct items) of each query through a catalog index, filtered to
    the user's visible item set.

    ``Q`` (T, ·) dense or sparse queries; ``group_ids`` (G,) the item id of each group;
    a group is visible to query ``t`` when ``first_pos[g] < cuts[t]``. Queries sharing a
    cut share one filter (one ``index.search`` call). Returns ``(groups (T, k) int64 -1
    padded, scores (T, k) float32)``.
    """
    from gsu.index.filters import Filter

    T = Q.shape[0]
    id_order = np.argsort(group_ids, kind="stable")
    sorted_ids = group_ids[id_order]
    top_g = np.full((T, k), -1, np.int64)
    top_s = np.full((T, k), -np.inf, np.float32)
    for c in np.unique(cuts):
        sel = np.flatnonzero(cuts == c)
        allowed = group_ids[first_pos < c]
        if allowed.size == 0:
            continue
        res = index.search(Q[sel], k, filter=Filter.from_ids(allowed), **search_params)
        rid = res.ids
        valid = rid >= 0
        p = np.searchsorted(sorted_ids, np.where(valid, rid, sorted_ids[0]))
        p = np.minimum(p, sorted_ids.shape[0] - 1)
        ok = valid & (sorted_ids[p] == rid)
        if np.any(valid & ~ok):
            raise ValueError("index returned item ids outside the user's behavior set: does it honour filters?")
        top_g[sel, : rid.shape[1]] = np.where(ok, id_order[p], -1)
        top_s[sel, : rid.shape[1]] = np.where(ok, res.scores, -np.inf)
    return top_g, top_s


# ----------------------------------------------------------------------------- base
class Retriever:
    """Base class of every GSU method (see the module docstring for the call).

    Args:
        items: the :class:`ItemTable` the history's and targets' item ids refer to.
        k: behaviors retrieved per target (SIM's / ETA's k).
    """

    name: ClassVar[str] = ""
    #: what ``retrieve`` returns: ``"positions"`` (a :class:`RetrievalResult`, top-k
    #: behavior positions) or ``"vectors"`` (an :class:`SDIMResult`, one aggregated
    #: vector per target: SDIM). Layers that need behaviors check this, not the name.
    output: ClassVar[str] = "positions"
    #: whether :meth:`fit` helps requests that carry a time cut (SDIM's offline tables
    #: hold whole sequences, so a request with a cut is aggregated on the fly instead).
    fit_serves_time_cuts: ClassVar[bool] = True

    def __init__(self, items: ItemTable, *, k: int = 100):
        if not isinstance(items, ItemTable):
            raise TypeError(f"items: expected a gsu.retrieval.ItemTable, got {type(items).__name__}")
        self.items = items
        self.k = check_k(k)

    def retrieve(self, history: Any, targets: Any, *, k: int | None = None, target_time: Any = None) -> RetrievalResult:
        """Top-k behavior positions for each target. See the module docstring.

        Returns a :class:`RetrievalResult` with (T, k) positions / scores / mask.
        """
        h, trows, k, cuts = self._prepare(history, targets, k, target_time)
        return self._retrieve(h, trows, k, cuts)

    def fit(self, store: Any) -> "Retriever":
        """The optional offline step over a :class:`BehaviorStore` before serving its
        users (HardSearch: the store's category index; SDIM: its bucket tables).
        The default does nothing. Returns ``self``."""
        return self

    def _prepare(self, history: Any, targets: Any, k: int | None, target_time: Any) -> tuple[History, np.ndarray, int, np.ndarray]:
        h = History.coerce(history)
        k = check_k(self.k if k is None else k)
        t = np.asarray(targets)
        if t.ndim != 1:
            raise ValueError(f"targets: expected a 1-D array of item ids (T,), got shape {t.shape}")
        t = as_ids(t, name="targets")
        if t.shape[0] == 0:
            raise ValueError("targets: empty (expected at least one target item id)")
        if len(h) == 0:
            raise ValueError(f"history{'' if h.user < 0 else f' of user {h.user}'} is empty: nothing to retrieve from")
        trows = self.items.rows(t, name="targets")
        cuts = target_cuts(h, target_time, t.shape[0])
        return h, trows, k, cuts

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} does not implement retrieval")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


# ----------------------------------------------------------------------------- Exact
class Exact(Retriever):
    """Full target attention over every behavior, top-k — the ground truth.

    score(target, behavior) = Σ_h ⟨q_h, k_h⟩ · s  (``head_reduce="sum"``) or
    max_h ⟨q_h, k_h⟩ · s (``"max"``), where q = e_target·W_q, k = e_behavior·W_k
    (identity when no projection is given), heads split the projected width into
    ``n_heads`` equal parts of width d_h, and s = 1/√d_h when ``scale`` (scaled
    dot-product attention, Vaswani et al.) else 1.

    Args:
        items: ItemTable with ``embeddings`` (n, d) float32.
        k: behaviors per target.
        scale: divide by √d_h.
        n_heads: number of attention heads H (d_h = width / H).
        query_proj: W_q (d, H·d_h) float32 or None; key_proj: W_k (d, H·d_h) float32 or
            None. Give both or neither. Key projections are computed per request for
            the history (TWIN precomputes them per item instead).
        head_reduce: ``"sum"`` (one bilinear score) or ``"max"`` (a behavior counts if
            any head attends to it).
        device: ``None`` (numpy + numba) or a torch device (``"cuda"``, ``"cpu"``): the
            scan runs there (:mod:`gsu.retrieval.device`, same results); a runtime setting.

    Cost per request: one (T, D)×(D, L) product, tiled so scores never leave cache,
    with a fused bounded-heap top-k and the time cut applied during the scan.
    """

    name = "exact"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        scale: bool = False,
        n_heads: int = 1,
        query_proj: Any = None,
        key_proj: Any = None,
        head_reduce: str = "sum",
        device: Any = None,
    ):
        super().__init__(items, k=k)
        self.device = device
        E = items.need("embeddings")
        d = E.shape[1]
        self.n_heads = check_positive_int(n_heads, name="n_heads")
        self.head_reduce = check_choice(head_reduce, name="head_reduce", choices=("sum", "max"))
        self.scale = bool(scale)
        if (query_proj is None) != (key_proj is None):
            raise ValueError("query_proj and key_proj: give both (W_q and W_k) or neither")
        if query_proj is not None:
            self.Wq = as_matrix(query_proj, name="query_proj")
            self.Wk = as_matrix(key_proj, name="key_proj")
            if self.Wq.shape[0] != d or self.Wk.shape[0] != d:
                raise ValueError(f"query_proj/key_proj: expected {d} rows (the embedding dimension), got {self.Wq.shape} and {self.Wk.shape}")
            if self.Wq.shape != self.Wk.shape:
                raise ValueError(f"query_proj {self.Wq.shape} and key_proj {self.Wk.shape} must have the same shape")
            width = self.Wq.shape[1]
        else:
            self.Wq = self.Wk = None
            width = d
        if width % self.n_heads:
            raise ValueError(f"n_heads: {self.n_heads} does not divide the attention width {width}")
        self.width = width
        self.d_head = width // self.n_heads
        self._mult = np.float32(1.0 / math.sqrt(self.d_head)) if self.scale else np.float32(1.0)

    def _query_vectors(self, trows: np.ndarray) -> np.ndarray:
        q = self.items.embeddings[trows]
        if self.Wq is not None:
            q = q @ self.Wq
        if self._mult != 1.0:
            q = q * self._mult
        return np.ascontiguousarray(q, dtype=np.float32)

    def _key_vectors(self, h: History) -> np.ndarray:
        return self._keys(self.items.rows(h.items, name="history items"))

    def _keys(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), d) float32 keys of item-table ``rows`` (projected by ``Wk`` when set)."""
        kx = self.items.embeddings[rows]
        if self.Wk is not None:
            kx = kx @ self.Wk
        return np.ascontiguousarray(kx, dtype=np.float32)

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:
        if self.device is not None:
            from gsu.retrieval.device import retrieve_one

            return retrieve_one(self, h, trows, k, cuts)
        Q = self._query_vectors(trows)
        # the visible prefix; an item seen more than once is scored once (its copies tie
        # exactly, so the most recent wins: history_topk's col_rows)
        lv = int(cuts.max()) if cuts.shape[0] else 0
        rows = self.items.rows(h.items[:lv], name="history items")
        dist = distinct_rows(rows, self.items.embeddings.shape[0])
        if dist is None:
            Kx = self._keys(rows)
            idx, sc = history_topk(Q, Kx, k, cuts, n_heads=self.n_heads, head_reduce=self.head_reduce)
        else:
            idx, sc = history_topk(Q, self._keys(dist[0]), k, cuts, n_heads=self.n_heads, head_reduce=self.head_reduce,
                                   col_rows=dist[1])
        return RetrievalResult.from_positions(idx, sc)

    # -- used by the quality metrics ------------------------------------------------
    def score_blocks(self, history: Any, targets: Any, *, target_time: Any = None, block_rows: int = 64):
        """Yield ``(rows, scores)``: blocks of the full (T, L) score matrix.

        ``rows`` (B,) target indices; ``scores`` (B, L) float32 with -inf at positions at
        or after each target's cut. Used by :func:`gsu.retrieval.quality.attention_mass`.
        """
        h, trows, _, cuts = self._prepare(history, targets, None, target_time)
        Q = self._query_vectors(trows)
        Kx = self._key_vectors(h)
        L = Kx.shape[0]
        ar = np.arange(L)
        for s in range(0, Q.shape[0], block_rows):
            qb = Q[s : s + block_rows]
            S = self._scores(qb, Kx)
            S[ar[None, :] >= cuts[s : s + block_rows, None]] = -np.inf
            yield np.arange(s, s + qb.shape[0]), S

    def _scores(self, qb: np.ndarray, Kx: np.ndarray) -> np.ndarray:
        return _head_scores(qb, Kx, 1 if self.head_reduce == "sum" else self.n_heads, self.d_head)

    def score_positions(self, history: Any, targets: Any, positions: np.ndarray) -> np.ndarray:
        """(T, k) exact scores of the given positions (-inf where ``positions == -1``)."""
        h = History.coerce(history)
        trows = self.items.rows(as_ids(np.atleast_1d(targets), name="targets"), name="targets")
        Q = self._query_vectors(trows)
        pos = np.asarray(positions, dtype=np.int64)
        if pos.ndim != 2 or pos.shape[0] != Q.shape[0]:
            raise ValueError(f"positions: expected shape ({Q.shape[0]}, k), got {pos.shape}")
        rows = self.items.rows(h.items[np.maximum(pos, 0)].ravel(), name="history items").reshape(pos.shape)
        Kp = self.items.embeddings[rows]
        if self.Wk is not None:
            Kp = Kp @ self.Wk
        if self.head_reduce == "sum" or self.n_heads == 1:
            s = np.einsum("td,tkd->tk", Q, Kp)
        else:
            dh = self.d_head
            s = np.max(np.stack([np.einsum("td,tkd->tk", Q[:, i * dh : (i + 1) * dh], Kp[:, :, i * dh : (i + 1) * dh]) for i in range(self.n_heads)]), axis=0)
        return np.where(pos >= 0, s, -np.inf).astype(np.float32)

    def __repr__(self) -> str:
        return f"Exact(k={self.k}, scale={self.scale}, n_heads={self.n_heads}, proj={self.Wq is not None}, head_reduce={self.head_reduce!r})"


class TWIN(Exact):
    """TWIN-style consistency-preserving GSU: the retrieval score *is* the CTR layer's
    attention score, from per-item projections computed once.

    K = E·W_k is precomputed for every item (n, H·d_h) and Q = E·W_q likewise, so a
    request only gathers rows; score = Σ_h ⟨q_h, k_h⟩ / √d_h (``scale=True``, TWIN's
    scaled dot-product) — the same number the attention layer with these W_q, W_k
    computes, so the retrieved top-k is the attention layer's own top-k.

    Args:
        items: ItemTable with ``embeddings``.
        query_proj: W_q (d, H·d_h) float32; key_proj: W_k (d, H·d_h) float32 — take them
            from the trained CTR model (e.g. its attention layer's projections).
        n_heads: H; head_reduce: ``"sum"`` or ``"max"``; scale: divide by √d_h.
        device: as for :class:`Exact`.
    """

    name = "twin"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        query_proj: Any,
        key_proj: Any,
        n_heads: int = 1,
        head_reduce: str = "sum",
        scale: bool = True,
        device: Any = None,
    ):
        super().__init__(items, k=k, scale=scale, n_heads=n_heads, query_proj=query_proj, key_proj=key_proj, head_reduce=head_reduce, device=device)
        E = items.embeddings
        self._Kt = np.ascontiguousarray(E @ self.Wk, dtype=np.float32)
        self._Qt = np.ascontiguousarray((E @ self.Wq) * self._mult, dtype=np.float32)

    def _query_vectors(self, trows: np.ndarray) -> np.ndarray:
        return self._Qt[trows]

    def _keys(self, rows: np.ndarray) -> np.ndarray:
        return self._Kt[rows]

    def __repr__(self) -> str:
        return f"TWIN(k={self.k}, n_heads={self.n_heads}, width={self.width})"


# ----------------------------------------------------------------------------- SIM-hard
class HardSearch(Retriever):
    """SIM-hard: the behaviors sharing the target's category, most recent first.

    The per-user category index (positions grouped by category, time-ordered) comes
    from the store (``BehaviorStore.build_category_index()``, built once for all users)
    or is built from the history when absent. A target then costs a binary search and
    k copies: O(log L + k), independent of L.

    Args:
        items: ItemTable with ``category`` (targets' categories; also the behaviors'
            when the history has no per-behavior category column).
        k: behaviors per target (SIM's top-k of the hard search).
        score: ``"match"`` → every retrieved behavior scores 1.0 (order = recency);
            ``"ip"`` → ⟨e_target, e_behavior⟩ of the retrieved ones (needs
            ``embeddings``; O(k·d)), order still by recency.

    Note: with a precomputed category index the history's item ids are not checked
    against the ItemTable (that would cost O(L)).
    """

    name = "hard"

    def __init__(self, items: ItemTable, *, k: int = 100, score: str = "match"):
        super().__init__(items, k=k)
        items.need("category")
        self.score = check_choice(score, name="score", choices=("match", "ip"))
        if self.score == "ip":
            items.need("embeddings")

    def category_index(self, h: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cats (C,) sorted, offsets (C+1,), positions (L,))`` of a history."""
        if h.category_index is not None:
            return h.category_index
        if h.category is not None:
            cat = h.category
        else:
            cat = self.items.category[self.items.rows(h.items, name="history items")]
        cats, ptr, pos, _ = group_positions(np.asarray(cat, dtype=np.int64))
        return cats, ptr, pos

    def fit(self, store: Any) -> "HardSearch":
        """Build the store's per-user category index once (a store without a category
        column keeps looking categories up in the item table). Returns ``self``."""
        if store.has_category:
            store.build_category_index()
        return self

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:
        cats, ptr, pos = self.category_index(h)
        tc = self.items.category[trows]
        g = np.searchsorted(cats, tc)
        gc = np.minimum(g, max(cats.shape[0] - 1, 0))
        hit = (g < cats.shape[0]) & (cats[gc] == tc) if cats.shape[0] else np.zeros(tc.shape, bool)
        g = np.where(hit, gc, -1).astype(np.int64)
        T = trows.shape[0]
        out = np.full((T, k), -1, np.int64)
        counts = np.zeros(T, np.int64)
        K_.hard_lookup(g, ptr, pos, cuts, k, out, counts)
        if self.score == "match":
            sc = np.ones((T, k), np.float32)
        else:
            valid = out >= 0
            brows = self.items.rows(h.items[out[valid]], name="history items")
            sc = np.zeros((T, k), np.float32)
            E = self.items.embeddings
            tr = np.broadcast_to(trows[:, None], out.shape)[valid]
            sc[valid] = np.einsum("nd,nd->n", E[tr], E[brows])
        return RetrievalResult.from_positions(out, sc)

    def __repr__(self) -> str:
        return f"HardSearch(k={self.k}, score={self.score!r})"


# ----------------------------------------------------------------------------- SIM-soft / MUSE
class ItemSearch(Retriever):
    """The base of the methods whose score depends only on the *item* (SIM-soft / MUSE by
    dense vectors, :class:`~gsu.retrieval.SparseSearch` by sparse ones): the search runs
    over the user's *distinct* items and each retrieved item expands to all its visible
    positions, most recent first, until k positions are filled.

    - History shorter than ``exact_below``, or no ``index``: the subclass's exact scan of
      the user's distinct items (:meth:`_exact_topk`; time cut: an item is visible when
      its oldest occurrence is before the cut).
    - Otherwise: ``index.search(queries, k, filter=<the user's visible item set>,
      **search_params)`` over the whole catalog (ids = item ids). Targets sharing a cut
      share one filter.

    Subclasses set :attr:`_keys` (the item vectors, row-aligned with ``items``) and
    implement :meth:`_exact_topk`.
    """

    _keys: Any = None

    def _init_search(self, dim: int, index: Any, exact_below: int, search_params: dict[str, Any] | None, what: str) -> None:
        if index is not None:
            if not hasattr(index, "search"):
                raise TypeError(f"index: expected a gsu index with search(queries, k, filter=...), got {type(index).__name__}")
            idim = getattr(index, "dim", None)
            if idim is not None and idim != dim:
                raise ValueError(f"index: its dimension {idim} differs from the {what}' {dim}")
        self.index = index
        self.exact_below = check_positive_int(exact_below, name="exact_below", minimum=0)
        self.search_params = dict(search_params or {})

    def uses_index(self, length: int) -> bool:
        """Whether a history of ``length`` behaviors goes through the index."""
        return self.index is not None and length >= self.exact_below

    def _exact_topk(self, Q: Any, uniq: np.ndarray, first_pos: np.ndarray, cuts: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - the subclass's hook
        """Top-k distinct items (group numbers, scores) of the queries ``Q`` among the
        item rows ``uniq``, an item visible to target ``t`` when ``first_pos < cuts[t]``.
        Every ItemSearch subclass (SoftSearch, SparseSearch) provides it."""
        raise TypeError(f"{type(self).__name__} subclasses ItemSearch but does not define _exact_topk (its exact scan)")

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray, *, force: str | None = None) -> RetrievalResult:
        use_index = self.uses_index(len(h)) if force is None else force == "index"
        rows = self.items.rows(h.items, name="history items")
        uniq, grp_ptr, grp_pos, first_pos = group_positions(rows)
        Q = self._keys[trows]
        if use_index:
            top_g, top_s = index_topk(self.index, Q, self.items.ids[uniq], first_pos, cuts, k, self.search_params)
        else:
            top_g, top_s = self._exact_topk(Q, uniq, first_pos, cuts, k)
        return expand_groups_result(top_g, top_s, grp_ptr, grp_pos, cuts, k)

    def retrieve_exact(self, history: Any, targets: Any, *, k: int | None = None, target_time: Any = None) -> RetrievalResult:
        """Same as :meth:`retrieve` but always by the exact scan (the method's exact twin)."""
        h, trows, k, cuts = self._prepare(history, targets, k, target_time)
        return self._retrieve(h, trows, k, cuts, force="exact")

    def __repr__(self) -> str:
        extra = f", metric={self.metric!r}" if hasattr(self, "metric") else ""
        return (f"{type(self).__name__}(k={self.k}{extra}, index={type(self.index).__name__ if self.index is not None else None}, "
                f"exact_below={self.exact_below})")


class SoftSearch(ItemSearch):
    """SIM-soft / MUSE: top-k behaviors by inner product or cosine of *retrieval*
    embeddings (DARE: they need not be the attention embeddings; MUSE: e.g. text or
    multimodal embeddings with cosine). An :class:`ItemSearch`: the exact route is a
    blocked scan of the user's distinct items; the index route typically a
    :class:`gsu.index.FilteredIndex` built on ``items.retrieval_embeddings`` with the item
    ids as ids and the same metric.

    Args:
        items: ItemTable with ``retrieval_embeddings`` (or ``embeddings``).
        k: behaviors per target.
        metric: ``"ip"`` or ``"cosine"`` (MUSE's cosine).
        index: a gsu index over the catalog (ids = item ids), or None.
        exact_below: history length below which the exact scan is used even with an index.
        search_params: keyword arguments for ``index.search`` (e.g. ``{"ef": 128}``).
        device: ``None`` or a torch device: the exact scan runs there
            (:mod:`gsu.retrieval.device`, same results); the index path is unchanged.
    """

    name = "soft"

    def __init__(
        self,
        items: ItemTable,
        *,
        k: int = 100,
        metric: str = "ip",
        index: Any = None,
        exact_below: int = 20_000,
        search_params: dict[str, Any] | None = None,
        device: Any = None,
    ):
        super().__init__(items, k=k)
        self.device = device
        self.metric = check_choice(metric, name="metric", choices=("ip", "cosine"))
        R = items.need("retrieval_embeddings")
        self._R = self._keys = _normalize(R) if self.metric == "cosine" else R
        if index is not None:
            im = getattr(index, "metric", None)
            if im is not None and im != self.metric:
                raise ValueError(f"index: its metric is {im!r} but SoftSearch uses {self.metric!r}")
        self._init_search(R.shape[1], index, exact_below, search_params, "retrieval embeddings")

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray, *, force: str | None = None) -> RetrievalResult:
        if self.device is not None and not (self.uses_index(len(h)) if force is None else force == "index"):
            from gsu.retrieval.device import retrieve_one

            return retrieve_one(self, h, trows, k, cuts)
        return super()._retrieve(h, trows, k, cuts, force=force)

    def _exact_topk(self, Q: np.ndarray, uniq: np.ndarray, first_pos: np.ndarray, cuts: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        return history_topk(Q, self._R[uniq], k, cuts, first_pos=first_pos)


# ----------------------------------------------------------------------------- Hybrid
class Hybrid(Retriever):
    """A fixed-k combination of several methods (e.g. SIM-hard ∪ SIM-soft).

    Modes:
        ``"union"``: each method contributes its best ``quotas[m]`` distinct positions
            (default: k split evenly, the remainder to the first methods); slots left
            free (a method returned too few, or duplicates) are filled by rank,
            round-robin over methods. Order: quota phase first, by rank then method.
            A position's score is that of the first method that contributed it.
        ``"weighted"``: every position any method returned gets
            Σ_m weights[m] · score_m(position) (absent from method m's list → 0);
            the k best are kept. Put scores on comparable scales (e.g. cosine with
            HardSearch's 1.0 match score).

    Args:
        methods: the component retrievers (not SDIM); each is called with the same k.
        k: behaviors per target.
        mode, quotas (len(methods) ints summing to ≤ k), weights (len(methods) floats).
    """

    name = "hybrid"

    def __init__(
        self,
        methods: Sequence[Retriever],
        *,
        k: int = 100,
        mode: str = "union",
        quotas: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
    ):
        ms = list(methods)
        if not ms:
            raise ValueError("methods: expected at least one retriever")
        for m in ms:
            if not isinstance(m, Retriever) or m.output != "positions":
                raise TypeError(f"methods: expected position-returning gsu.retrieval retrievers (not SDIM), got {type(m).__name__}")
        super().__init__(ms[0].items, k=k)
        self.methods = ms
        self.mode = check_choice(mode, name="mode", choices=("union", "weighted"))
        nm = len(ms)
        if quotas is not None:
            q = [check_positive_int(x, name="quotas", minimum=0) for x in quotas]
            if len(q) != nm:
                raise ValueError(f"quotas: expected {nm} entries (one per method), got {len(q)}")
            self.quotas: list[int] | None = q
        else:
            self.quotas = None
        if weights is not None:
            w = [float(x) for x in weights]
            if len(w) != nm or not all(math.isfinite(x) for x in w):
                raise ValueError(f"weights: expected {nm} finite numbers (one per method), got {list(weights)}")
            self.weights = w
        else:
            self.weights = [1.0] * nm

    def _quotas(self, k: int) -> list[int]:
        nm = len(self.methods)
        if self.quotas is not None:
            if sum(self.quotas) > k:
                raise ValueError(f"quotas: sum {sum(self.quotas)} exceeds k={k}")
            return self.quotas
        base, rem = divmod(k, nm)
        return [base + (1 if i < rem else 0) for i in range(nm)]

    def fit(self, store: Any) -> "Hybrid":
        """Each component's offline step. Returns ``self``."""
        for m in self.methods:
            m.fit(store)
        return self

    def _retrieve(self, h: History, trows: np.ndarray, k: int, cuts: np.ndarray) -> RetrievalResult:
        parts = [m._retrieve(h, trows, k, cuts) for m in self.methods]
        T = trows.shape[0]
        nm = len(parts)
        P = np.stack([p.positions for p in parts], axis=1)  # (T, nm, k)
        S = np.stack([p.scores for p in parts], axis=1)
        out_p = np.full((T, k), -1, np.int64)
        out_s = np.full((T, k), -np.inf, np.float32)
        if self.mode == "union":
            K_.union_merge(P, S, np.asarray(self._quotas(k), np.int64), k, len(h), out_p, out_s)
            return RetrievalResult.from_positions(out_p, out_s)
        # weighted: sum the weighted scores of each (row, position), keep the k best
        valid = P >= 0
        r = np.broadcast_to(np.arange(T)[:, None, None], P.shape)[valid]
        mi = np.broadcast_to(np.arange(nm)[None, :, None], P.shape)[valid]
        p, s = P[valid], S[valid]
        if r.size == 0:
            return RetrievalResult.from_positions(out_p, out_s)
        w = np.asarray(self.weights, dtype=np.float64)
        o = np.lexsort((p, r))
        r, p, ws = r[o], p[o], (s.astype(np.float64) * w[mi])[o]
        first = np.ones(r.size, bool)
        first[1:] = (r[1:] != r[:-1]) | (p[1:] != p[:-1])
        starts = np.flatnonzero(first)
        tot = np.add.reduceat(ws, starts)
        r, p = r[starts], p[starts]
        s = tot.astype(np.float32)
        o = np.lexsort((-p, -tot, r))  # by row, score desc, recency
        r, p, s = r[o], p[o], s[o]
        # rank within row, keep the first k
        row_start = np.searchsorted(r, np.arange(T))
        within = np.arange(r.size) - row_start[r]
        keep = within < k
        out_p[r[keep], within[keep]] = p[keep]
        out_s[r[keep], within[keep]] = s[keep]
        return RetrievalResult.from_positions(out_p, out_s)

    def __repr__(self) -> str:
        return f"Hybrid({self.methods!r}, k={self.k}, mode={self.mode!r})"
