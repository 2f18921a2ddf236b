"""``FlatIndex(device=...)``: exact search on a torch device for every filter form.

- unfiltered: :func:`gsu.device.fused_topk` over the whole index, or faiss-gpu's brute
  force as a candidate generator (``backend="faiss"``; ``"auto"`` picks it on CUDA when
  ``faiss.get_num_gpus() > 0``), its candidates rescored in float32 and certified like the
  fused path's, so both give the CPU path's answer;
- shared filter: allowed rows gathered into a compact key block when few (< 20 % of the
  index), else the whole index with the filter as a column mask inside the tile loop;
- per-query filters: queries grouped by allowed-row count — sparse ones score their own
  gathered rows (one batched product per group of similar counts), dense ones the whole
  index under a per-row mask built on the device for a group of queries at a time.

faiss-gpu has no filtered brute force, so every filtered search runs in torch. Ties go
to the smaller row, as on the CPU. The device copy of the vectors is made once, lazily,
and dropped by ``add``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from gsu.device import (
    DEFAULT_WORKSPACE,
    Keys,
    TopkStats,
    error_coef,
    exact_matmul,
    fused_topk,
    prepare_keys,
    resolve_device,
    select_topk,
    to_device,
)
from gsu.index.result import SearchResult
from gsu.index.filters import Filter

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "DeviceVectors", "FaissCandidates", "faiss_gpu_available", "flat_search"]

BACKENDS = ("auto", "torch", "faiss")
#: from this allowed fraction of the index on, a filter is applied as a mask over all rows
_DENSE_FRACTION = 0.2
#: faiss-gpu's largest k for brute-force search
_FAISS_GPU_MAX_K = 2048


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    try:
        import faiss
    except ImportError:
        return False
    f = getattr(faiss, "get_num_gpus", None)
    return bool(f is not None and f() > 0)


class FaissCandidates:
    """A faiss brute-force inner-product index over the same rows, used as a candidate
    generator: ``IndexFlatIP`` moved to the GPU with ``index_cpu_to_gpu`` on CUDA, the
    CPU ``IndexFlatIP`` on the CPU device (the same calls, so the path is testable
    anywhere).

    ``coef``: the bound of |faiss score − float32 rescored score| / (‖q‖·max‖k‖) — on a
    GPU faiss's products may run in TF32, so its unit roundoff 2⁻¹¹ is assumed.
    """

    def __init__(self, x: np.ndarray, device: torch.device):
        import faiss

        d = x.shape[1]
        cpu = faiss.IndexFlatIP(d)
        cpu.add(np.ascontiguousarray(x, dtype=np.float32))
        self.max_k: int | None = None
        if device.type == "cuda":
            if not faiss_gpu_available():
                raise ValueError("faiss candidates on CUDA need faiss with GPU support (the `gpu` extra, faiss-gpu); "
                                 "this faiss is a CPU build: use device_backend='torch' (the default picks it)")
            self._res = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(self._res, device.index or 0, cpu)
            self.max_k = _FAISS_GPU_MAX_K
            self.coef = error_coef("fp16", d)  # TF32 has fp16's unit roundoff
        else:
            self.index = cpu
            self.coef = error_coef("fp32", d)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``(scores (nq, k) float32, rows (nq, k) int64)``."""
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)


class DeviceVectors:
    """An index's vectors on a device: :class:`Keys` (float32 + scoring formats) and,
    when asked for, the faiss candidate index."""

    def __init__(self, x: np.ndarray, device: torch.device):
        self.device = device
        self.n = x.shape[0]
        self._host = x
        self.keys: Keys = prepare_keys(to_device(x, device))
        self._faiss: FaissCandidates | None = None

    @property
    def x(self) -> torch.Tensor:
        """(n, d) float32 on the device."""
        return self.keys.full[0]

    def faiss(self) -> FaissCandidates:
        if self._faiss is None:
            self._faiss = FaissCandidates(self._host, self.device)
        return self._faiss


def _backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"device_backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faiss" if device.type == "cuda" and faiss_gpu_available() else "torch"
    if backend == "faiss" and device.type == "cuda" and not faiss_gpu_available():
        raise ValueError("device_backend='faiss' on CUDA needs faiss with GPU support (the `gpu` extra, faiss-gpu); "
                         "this faiss is a CPU build or sees no GPU: use device_backend='torch' or 'auto'")
    return backend


def flat_search(
    index: Any,
    q: np.ndarray,
    k: int,
    f: Filter,
    *,
    backend: str = "auto",
    precision: str = "auto",
    stats: TopkStats | None = None,
) -> SearchResult:
    """Exact top-``k`` of prepared queries ``q`` (nq, d) float32 over a ``FlatIndex``'s rows
    under filter ``f``, on ``index.device``. Same result as the CPU path (ties to the
    smaller row, scores within float32 rounding)."""
    device = resolve_device(index.device)
    dv = index._dev
    if dv is None or dv.device != device or dv.n != index.ntotal:
        dv = index._dev = DeviceVectors(index.vectors, device)
    nq = q.shape[0]
    n = index.ntotal
    be = _backend(backend, device)
    rows = np.full((nq, k), -1, np.int64)
    scores = np.full((nq, k), -np.inf, np.float32)
    opts = {"precision": precision, "stats": stats}
    with exact_matmul(device), torch.no_grad():
        qt = to_device(q, device)
        if f.is_all:
            r, s = _unfiltered(dv, q, qt, k, be, opts)
            rows[:], scores[:] = r, s
        else:
            cf = f.compile(index.idmap, nq)
            if cf.shared:
                allowed = cf.rows
                m = allowed.shape[0]
                if m == n:
                    r, s = _unfiltered(dv, q, qt, k, be, opts)
                    rows[:], scores[:] = r, s
                elif m >= _DENSE_FRACTION * n:
                    mask = torch.from_numpy(cf.mask()).to(device)[None, None]
                    c, s = fused_topk(qt[None], dv.keys, k, tie="low", mask=mask, **opts)
                    rows[:], scores[:] = c[0].cpu().numpy(), s[0].cpu().numpy()
                elif m > 0:
                    at = to_device(allowed, device)
                    c, s = fused_topk(qt[None], prepare_keys(dv.x[at]), k, tie="low", **opts)
                    c = c[0]
                    c = torch.where(c >= 0, at[c.clamp(min=0)], c)
                    rows[:], scores[:] = c.cpu().numpy(), s[0].cpu().numpy()
            else:
                starts, ends = cf.bounds(nq)
                _per_query(dv, qt, k, starts, ends, cf.rows, rows, scores, opts)
    counts = (rows >= 0).sum(axis=1).astype(np.int64)
    return SearchResult(index.idmap.to_ids(rows), scores, counts)


def _unfiltered(dv: DeviceVectors, q: np.ndarray, qt: torch.Tensor, k: int, backend: str, opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if backend == "faiss":
        return faiss_topk(dv, q, qt, k, opts)
    c, s = fused_topk(qt[None], dv.keys, k, tie="low", **opts)
    return c[0].cpu().numpy(), s[0].cpu().numpy()


def faiss_topk(dv: DeviceVectors, q: np.ndarray, qt: torch.Tensor, k: int, opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """faiss brute force for ``k' = k + k/4 + 8`` candidates, float32 rescoring and the tie
    rule in torch; rows whose certificate fails (faiss's k'-th score within its error of
    the k-th rescored one) go through :func:`fused_topk`."""
    fc = dv.faiss()
    n = dv.n
    kk = min(k, n)
    kp = min(n, kk + kk // 4 + 8)
    if fc.max_k is not None and kp > fc.max_k:
        c, s = fused_topk(qt[None], dv.keys, k, tie="low", **opts)
        return c[0].cpu().numpy(), s[0].cpu().numpy()
    fs, fr = fc.search(q, kp)
    cand = torch.from_numpy(np.ascontiguousarray(fr, dtype=np.int64)).to(qt.device)
    valid = cand >= 0
    cc = cand.clamp(min=0)
    s = torch.matmul(dv.x[cc], qt[:, :, None]).squeeze(-1)
    s = torch.where(valid, s, torch.full_like(s, float("-inf")))
    c, v = select_topk(s, cc, k, tie="low")
    out_c, out_s = c.cpu().numpy(), v.cpu().numpy()
    if kp < n:
        qn = torch.linalg.vector_norm(qt, dim=1)
        eps = (fc.coef * qn * dv.keys.norm_max[0]).cpu().numpy()
        last = fs[:, -1].astype(np.float64)
        fail = ~(last + eps < out_s[:, kk - 1])
        if fail.any():
            idx = np.flatnonzero(fail)
            if opts.get("stats") is not None:
                opts["stats"].retried += int(idx.shape[0])
            c2, s2 = fused_topk(qt[idx][None], dv.keys, k, tie="low", **opts)
            out_c[idx], out_s[idx] = c2[0].cpu().numpy(), s2[0].cpu().numpy()
    return out_c, out_s


def _per_query(
    dv: DeviceVectors,
    qt: torch.Tensor,
    k: int,
    starts: np.ndarray,
    ends: np.ndarray,
    allowed: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
    opts: dict[str, Any],
) -> None:
    """Per-query filters: sparse queries score their gathered allowed rows, dense ones
    the whole index under a per-row mask; queries in groups of similar allowed counts."""
    device = qt.device
    n, d = dv.n, dv.x.shape[1]
    ws = DEFAULT_WORKSPACE[device.type]
    cnt = ends - starts
    order = np.argsort(cnt, kind="stable")
    dense = cnt[order] >= _DENSE_FRACTION * n
    sparse_q = order[~dense & (cnt[order] > 0)]
    dense_q = order[dense]
    at = to_device(allowed, device)
    # sparse: padded (g, m_max) gathers, float32 products, exact selection
    i = 0
    while i < sparse_q.shape[0]:
        m_max = int(cnt[sparse_q[i]])
        g = 1
        # grow the group while the padded gather stays within the workspace
        while i + g < sparse_q.shape[0] and (g + 1) * int(cnt[sparse_q[i + g]]) * (d + 2) * 4 <= ws:
            g += 1
            m_max = int(cnt[sparse_q[i + g - 1]])
        qs = sparse_q[i : i + g]
        st = torch.from_numpy(starts[qs]).to(device)
        ln = torch.from_numpy(cnt[qs]).to(device)
        off = torch.arange(m_max, device=device)
        inside = off[None, :] < ln[:, None]
        pos = torch.where(inside, st[:, None] + off[None, :], torch.zeros_like(inside, dtype=torch.int64))
        r = at[pos]  # (g, m_max) rows
        qq = qt[torch.from_numpy(qs).to(device)]
        s = torch.matmul(dv.x[r], qq[:, :, None]).squeeze(-1)
        s = torch.where(inside, s, torch.full_like(s, float("-inf")))
        c, v = select_topk(s, r, k, tie="low")
        rows[qs], scores[qs] = c.cpu().numpy(), v.cpu().numpy()
        i += g
    # dense: a (1, g, n) mask per group of queries
    g = max(1, ws // (4 * max(n, 1)))
    for j in range(0, dense_q.shape[0], g):
        qs = dense_q[j : j + g]
        mask = torch.zeros((qs.shape[0], n), dtype=torch.bool, device=device)
        st = torch.from_numpy(starts[qs]).to(device)
        ln = torch.from_numpy(cnt[qs]).to(device)
        which = torch.repeat_interleave(torch.arange(qs.shape[0], device=device), ln)
        first = torch.repeat_interleave(st - torch.cumsum(ln, 0) + ln, ln)
        sel = at[first + torch.arange(which.shape[0], device=device)]
        mask[which, sel] = True
        c, v = fused_topk(qt[torch.from_numpy(qs).to(device)][None], dv.keys, k, tie="low", mask=mask[None], **opts)
        rows[qs], scores[qs] = c[0].cpu().numpy(), v[0].cpu().numpy()
