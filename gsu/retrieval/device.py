"""The ``device=`` paths of the GSU methods: ``Exact``, ``TWIN``, ``SoftSearch``'s exact
scan and ``SimHashTopK`` on a torch device, one user per call or many users per call.

Every request becomes a group of :func:`gsu.device.fused_topk`: its targets' query
vectors against its behaviors' key vectors, with the time cut applied inside the tile
loop (``col_key < cut``). Many users batch into one call by padding to the longest
history of the batch (users sorted by length, so padding stays small); padded columns
are never visible (their position is past every cut) and padded targets see nothing.

- ``Exact`` / ``TWIN``: keys = the behaviors' (projected) embeddings gathered on the
  device, positions as columns, ties to the more recent behavior (``tie="high"``);
  ``head_reduce="max"`` runs as ``n_heads`` heads with a max.
- ``SoftSearch`` (exact scan): keys = the user's distinct items, a group is visible when
  its oldest position is before the cut (``col_key = first_pos``), ties to the larger
  group; the groups expand to positions on the host, as on the CPU path.
- ``SimHashTopK``: ETA's Hamming top-k as an inner product of ±1 bit vectors
  (⟨a, b⟩ = m − 2·hamming), exact in every format, so no error margin is needed; the
  score returned is −hamming as on the CPU path.

The item tables (embeddings, projections, codes) are copied to the device once per
method and device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gsu.device import TopkStats, fused_topk, prepare_keys, resolve_device, to_device
from gsu.retrieval.result import RetrievalResult
from gsu.retrieval.store import BehaviorStore, History

log = logging.getLogger(__name__)

__all__ = ["supports", "retrieve_one", "retrieve_groups"]

#: bytes of padded query + key tensors per batch of users
_BATCH_BYTES = {"cuda": 1 << 31, "cpu": 1 << 27}


def supports(method: Any) -> bool:
    """Whether ``method`` has a device path (Exact, TWIN, SoftSearch, SimHashTopK)."""
    from gsu.retrieval.lsh import SimHashTopK
    from gsu.retrieval.methods import Exact, SoftSearch

    return isinstance(method, (Exact, SoftSearch, SimHashTopK))


@dataclass
class _Tables:
    device: torch.device
    kind: str  # "exact", "twin", "soft", "simhash"
    q: torch.Tensor | None = None  # TWIN: W_q-projected, scaled items; soft: retrieval embeddings
    k: torch.Tensor | None = None  # TWIN: W_k-projected items
    e: torch.Tensor | None = None  # Exact: embeddings
    wq: torch.Tensor | None = None
    wk: torch.Tensor | None = None
    codes: torch.Tensor | None = None  # SimHash: (n, words) int64 view of the uint64 codes


def _tables(method: Any) -> _Tables:
    from gsu.retrieval.lsh import SimHashTopK
    from gsu.retrieval.methods import TWIN, Exact, SoftSearch

    dev = resolve_device(method.device)
    t = method.__dict__.get("_device_tables")
    if t is not None and t.device == dev:
        return t
    if isinstance(method, TWIN):
        t = _Tables(dev, "twin", q=to_device(method._Qt, dev), k=to_device(method._Kt, dev))
    elif isinstance(method, Exact):
        t = _Tables(dev, "exact", e=to_device(method.items.embeddings, dev))
        if method.Wq is not None:
            t.wq, t.wk = to_device(method.Wq, dev), to_device(method.Wk, dev)
    elif isinstance(method, SoftSearch):
        t = _Tables(dev, "soft", q=to_device(method._R, dev))
    elif isinstance(method, SimHashTopK):
        t = _Tables(dev, "simhash", codes=to_device(method.codes.view(np.int64), dev))
    else:
        raise TypeError(f"{type(method).__name__} has no device path (Exact, TWIN, SoftSearch, SimHashTopK have)")
    method._device_tables = t
    return t


def _bits(codes: torch.Tensor, n_bits: int) -> torch.Tensor:
    """(..., words) int64 packed codes -> (..., n_bits) float32 ±1 (bit j of word j // 64)."""
    sh = torch.arange(64, device=codes.device, dtype=torch.int64)
    b = (codes[..., None] >> sh) & 1
    b = b.reshape(*codes.shape[:-1], codes.shape[-1] * 64)[..., :n_bits]
    return b.to(torch.float32) * 2 - 1


def _queries(method: Any, t: _Tables, trows: torch.Tensor) -> torch.Tensor:
    if t.kind == "twin":
        return t.q[trows]
    if t.kind == "soft":
        return t.q[trows]
    if t.kind == "simhash":
        return _bits(t.codes[trows], method.n_bits)
    q = t.e[trows]
    if t.wq is not None:
        q = torch.matmul(q, t.wq)
    if float(method._mult) != 1.0:
        q = q * float(method._mult)
    return q


def _keys(method: Any, t: _Tables, rows: torch.Tensor) -> torch.Tensor:
    if t.kind == "twin":
        return t.k[rows]
    if t.kind == "soft":
        return t.q[rows]
    if t.kind == "simhash":
        return _bits(t.codes[rows], method.n_bits)
    x = t.e[rows]
    if t.wk is not None:
        x = torch.matmul(x, t.wk)
    return x


def _heads(method: Any, t: _Tables) -> int:
    if t.kind in ("exact", "twin") and method.head_reduce == "max" and method.n_heads > 1:
        return int(method.n_heads)
    return 1


@dataclass
class _Req:
    """One user's request prepared on the host."""

    trows: np.ndarray  # (T,) item rows of the targets
    cuts: np.ndarray  # (T,) visible prefix lengths
    key_rows: np.ndarray  # (M,) item rows of the key columns (behaviors, or distinct items)
    col_key: np.ndarray | None = None  # (M,) SoftSearch: first position of each distinct item
    groups: tuple[np.ndarray, np.ndarray] | None = None  # SoftSearch: (grp_ptr, grp_pos)


def _prepare(method: Any, h: History, trows: np.ndarray, cuts: np.ndarray) -> _Req:
    from gsu.retrieval.lsh import SimHashTopK
    from gsu.retrieval.methods import SoftSearch, group_positions

    if isinstance(method, SimHashTopK):
        return _Req(trows, cuts, method.items.rows(h.items, name="history items"))
    if isinstance(method, SoftSearch):
        rows = method.items.rows(h.items, name="history items")
        uniq, grp_ptr, grp_pos, first_pos = group_positions(rows)
        return _Req(trows, cuts, uniq, first_pos, (grp_ptr, grp_pos))
    return _Req(trows, cuts, method.items.rows(h.items, name="history items"))


def _run(method: Any, reqs: list[_Req], k: int, stats: TopkStats | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """fused_topk over a batch of requests padded to one shape; per request
    ``(columns (T, k), scores (T, k))`` on the host."""
    t = _tables(method)
    dev = t.device
    G = len(reqs)
    Tm = max(r.trows.shape[0] for r in reqs)
    Lm = max(r.key_rows.shape[0] for r in reqs)
    trows = np.zeros((G, Tm), np.int64)
    krows = np.zeros((G, Lm), np.int64)
    hi = np.zeros((G, Tm), np.int64)
    soft = reqs[0].col_key is not None
    ck = np.full((G, Lm), np.iinfo(np.int64).max, np.int64) if soft else None
    for g, r in enumerate(reqs):
        T, L = r.trows.shape[0], r.key_rows.shape[0]
        trows[g, :T] = r.trows
        krows[g, :L] = r.key_rows
        hi[g, :T] = r.cuts
        if soft:
            ck[g, :L] = r.col_key
    with torch.no_grad():
        Q = _queries(method, t, to_device(trows, dev))
        K = _keys(method, t, to_device(krows, dev))
        simhash = t.kind == "simhash"
        c, s = fused_topk(
            Q.contiguous(), prepare_keys(K.contiguous()), k, tie="high", hi=to_device(hi, dev),
            col_key=None if ck is None else to_device(ck, dev), n_heads=_heads(method, t),
            exact_scores=simhash, stats=stats,
        )
        if simhash:  # <a, b> = m - 2·hamming  ->  score = -hamming
            s = (s - float(method.n_bits)) * 0.5
    c, s = c.cpu().numpy(), s.cpu().numpy()
    return [(c[g, : r.trows.shape[0]], s[g, : r.trows.shape[0]]) for g, r in enumerate(reqs)]


def _finish(method: Any, req: _Req, cols: np.ndarray, scores: np.ndarray, k: int) -> RetrievalResult:
    if req.groups is not None:
        from gsu.retrieval.methods import expand_groups_result

        return expand_groups_result(cols, scores, req.groups[0], req.groups[1], req.cuts, k)
    return RetrievalResult.from_positions(cols, scores)


def retrieve_one(method: Any, h: History, trows: np.ndarray, k: int, cuts: np.ndarray, *, stats: TopkStats | None = None) -> RetrievalResult:
    """One request of ``method`` on ``method.device`` (the method's ``_retrieve``)."""
    req = _prepare(method, h, trows, cuts)
    (c, s), = _run(method, [req], k, stats)
    return _finish(method, req, c, s, k)


def retrieve_groups(
    method: Any,
    store: BehaviorStore,
    uniq: np.ndarray,
    order: np.ndarray,
    bounds: np.ndarray,
    targets: np.ndarray,
    target_time: np.ndarray | None,
    k: int | None,
    *,
    stats: TopkStats | None = None,
) -> RetrievalResult:
    """Many users per device call: the batch form of :func:`gsu.retrieval.retrieve_batch`.

    ``uniq`` / ``order`` / ``bounds`` from ``group_rows_by_user``; ``targets`` (S,),
    ``target_time`` (S,) or None. Users whose request takes another path (SoftSearch
    through its index) are served one by one by ``method.retrieve``. Returns (S, k)
    arrays in the input row order.
    """
    from gsu.retrieval.methods import SoftSearch

    S = targets.shape[0]
    dev = resolve_device(method.device)
    parts: list[tuple[np.ndarray, RetrievalResult]] = []
    reqs: list[tuple[np.ndarray, _Req]] = []
    kk = None
    for g in range(uniq.shape[0]):
        rows = order[bounds[g] : bounds[g + 1]]
        h = store.history(int(uniq[g]))
        tt = None if target_time is None else target_time[rows]
        if isinstance(method, SoftSearch) and method.uses_index(len(h)):
            parts.append((rows, method.retrieve(h, targets[rows], k=k, target_time=tt)))
            continue
        h, trows, kk, cuts = method._prepare(h, targets[rows], k, tt)
        reqs.append((rows, _prepare(method, h, trows, cuts)))
    if reqs:
        # users sorted by key length, batches within the padded-bytes budget
        reqs.sort(key=lambda x: x[1].key_rows.shape[0])
        budget = _BATCH_BYTES[dev.type]
        width = _width(method)
        i = 0
        while i < len(reqs):
            j = i + 1
            tm = reqs[i][1].trows.shape[0]
            while j < len(reqs):
                tm2 = max(tm, reqs[j][1].trows.shape[0])
                lm = reqs[j][1].key_rows.shape[0]
                if (j + 1 - i) * (lm + tm2) * width * 4 > budget:
                    break
                tm = tm2
                j += 1
            out = _run(method, [r for _, r in reqs[i:j]], kk, stats)
            for (rows, req), (c, s) in zip(reqs[i:j], out):
                parts.append((rows, _finish(method, req, c, s, kk)))
            i = j
    kout = parts[0][1].k
    pos = np.full((S, kout), -1, np.int64)
    sc = np.full((S, kout), -np.inf, np.float32)
    for rows, r in parts:
        pos[rows] = r.positions
        sc[rows] = r.scores
    return RetrievalResult.from_positions(pos, sc)


def _width(method: Any) -> int:
    from gsu.retrieval.lsh import SimHashTopK
    from gsu.retrieval.methods import SoftSearch

    if isinstance(method, SimHashTopK):
        return int(method.n_bits)
    if isinstance(method, SoftSearch):
        return int(method._R.shape[1])
    return int(method.width)
