"""Fused exact top-k of inner products on a torch device, without the (T, L) score matrix.

The primitive behind every ``device=`` path of gsu (:class:`gsu.index.FlatIndex`,
:class:`gsu.retrieval.Exact` / ``TWIN`` / ``SoftSearch`` / ``SimHashTopK``).

For queries ``Q`` (G, B, D) and keys ``K`` (G, N, D) — G independent groups (users, or
one index), B query rows each — it returns, per query row, the ``k`` best visible key
columns under the project's tie rule. Two passes:

1. **Chunk maxima** (the fused pass). Column tiles of ``K`` are scored against a block of
   query rows in a low precision (``bf16``/``fp16`` on a GPU), the visibility (time cut,
   column mask) is applied to the tile, and only the maximum of every run of ``chunk``
   consecutive columns is kept: a (B, N / chunk) buffer. The score tile itself is
   dropped as soon as its chunk maxima are taken, so no (B, N) matrix is ever stored.
2. **Candidate rescoring.** The ``candidates`` chunks with the largest maxima are
   gathered and their columns rescored in float32 (the exact score); an int64 key
   (ordered score bits, then the tie column) selects the top-k in one ``topk``.

Exactness is certified, not hoped for. Every low-precision score differs from the
float32 rescored value by at most ``eps = coef · ‖q‖ · max‖k‖`` (rounding of the
inputs, of the float32 accumulation and of the output; ``coef`` from the format's unit
roundoff, see :func:`error_coef`). A chunk that was not rescored holds only columns
whose rescored value is ``≤ chunk max + eps``; if that is below the k-th rescored
score ``s_k`` it cannot hold a winner, even under ties. Rows where some unrescored
chunk has ``max ≥ s_k − eps`` are rescored again with exactly those chunks (the chunk
buffer is still there, so no second matrix product): after that step the answer is
the exact float32 top-k for every row. So results equal the CPU path's up to float32
rounding of individual scores, whatever the precision of pass 1.

Tie rule: ``tie="low"`` — among equal scores the smaller column wins (indexes: the
smaller row); ``tie="high"`` — the larger column wins (retrieval: the more recent
behavior). NaN scores are never returned; -inf scores are not results.

On CUDA the calls run with TF32 and reduced-precision reductions switched off
(:func:`exact_matmul`), since the error bound assumes float32 accumulation.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from gsu.device import _triton as _tri

log = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "KERNELS",
    "Keys",
    "TopkStats",
    "resolve_device",
    "exact_matmul",
    "choose_precision",
    "error_coef",
    "prepare_keys",
    "fused_topk",
    "select_topk",
    "sync",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
KERNELS = ("auto", "triton", "torch")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: unit roundoff of each scoring format (half an ulp at 1)
_UNIT = {"fp32": 0.0, "bf16": 2.0**-8, "fp16": 2.0**-11}
#: half the spacing of the subnormals: the absolute rounding error of tiny values
_HALF_SUB = {"fp32": 2.0**-150, "bf16": 2.0**-134, "fp16": 2.0**-25}
#: fp16 is used by ``auto`` only when every score magnitude stays below this
_FP16_SAFE = 3.0e4
_INVALID = torch.iinfo(torch.int64).min
_TIE_MAX = (1 << 32) - 1
#: default bytes of scratch memory per call (score tiles, chunk maxima, gathered keys)
DEFAULT_WORKSPACE = {"cuda": 1 << 30, "cpu": 1 << 26}


def resolve_device(device: Any) -> torch.device:
    """Validate a device spec (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``).

    Raises ``TypeError`` for a wrong kind of object and ``ValueError`` for an unknown
    device type or a CUDA device this process cannot use.
    """
    if isinstance(device, torch.device):
        d = device
    elif isinstance(device, str):
        try:
            d = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"device {device!r}: not a torch device string ({e})") from None
    else:
        raise TypeError(f"device: expected None, a string such as 'cuda' or 'cpu', or a torch.device; got {type(device).__name__}")
    if d.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu' and 'cuda' devices are supported")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available to this torch ({torch.__version__})")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise ValueError(f"device {device!r}: only {n} CUDA device(s) are visible")
        if d.index is None:
            d = torch.device("cuda", torch.cuda.current_device())
    return d


@contextlib.contextmanager
def exact_matmul(device: torch.device) -> Iterator[None]:
    """Run CUDA matrix products with float32 accumulation: no TF32, no reduced-precision
    reductions (restored on exit). A no-op on the CPU. The flags are process-wide."""
    if device.type != "cuda":
        yield
        return
    m = torch.backends.cuda.matmul
    saved = (m.allow_tf32, m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction)
    m.allow_tf32 = False
    m.allow_fp16_reduced_precision_reduction = False
    m.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        m.allow_tf32, m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction = saved


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (for timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_precision(precision: str, device: torch.device, score_bound: float) -> str:
    """The scoring format of pass 1.

    ``"auto"``: on CUDA ``fp16`` when every score magnitude is below 3·10⁴ (``score_bound``
    = max‖q‖ · max‖k‖; fp16 overflows at 65,504), else ``bf16``; on the CPU ``fp32``
    (CPU half-precision products are not faster than float32 BLAS).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        if precision == "fp16" and not score_bound < _FP16_SAFE:
            raise ValueError(f"precision='fp16': scores reach {score_bound:.3g} (max‖q‖·max‖k‖), beyond fp16's safe range; use 'bf16'")
        return precision
    if device.type == "cuda":
        return "fp16" if score_bound < _FP16_SAFE else "bf16"
    return "fp32"


def error_coef(precision: str, depth: int, *, rounded_output: bool = True) -> float:
    """``coef`` with |low-precision score − float32 rescored score| ≤ coef·‖q‖·‖k‖.

    With u the format's unit roundoff and γ_D = D·2⁻²⁴ / (1 − D·2⁻²⁴) (float32 sums of
    D products): inputs rounded to the format (2u + u²), float32 accumulation (γ_D), the
    result rounded to the format (u; left out with ``rounded_output=False``, when the
    float32 accumulator is kept, as the Triton kernel does), and the float32 rescoring
    (γ_D), each times (1 + u)² for the rounded inputs; a factor 1.25 covers second-order
    terms.
    """
    u = _UNIT[precision]
    g = depth * 2.0**-24 / (1.0 - depth * 2.0**-24)
    out = u * (1 + u) ** 3 * (1 + g) if rounded_output else 0.0
    return 1.25 * ((2 * u + u * u) * (1 + u) + out + 2 * g * (1 + u) ** 2)


@dataclass
class Keys:
    """Keys prepared for :func:`fused_topk`: the float32 tensor, its per-group max row
    norm and (lazily) its copies in the scoring formats. Cache it when the keys are
    reused (an index's vectors)."""

    full: torch.Tensor  # (G, N, D) float32
    norm_max: torch.Tensor  # (G,) float32: max over rows of ‖k‖ (0 for an empty group)
    low: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_format(self, precision: str) -> torch.Tensor:
        if precision == "fp32":
            return self.full
        t = self.low.get(precision)
        if t is None:
            t = self.low[precision] = self.full.to(_DTYPES[precision])
        return t


def prepare_keys(K: torch.Tensor) -> Keys:
    """Wrap float32 keys (G, N, D) (or (N, D), taken as one group) for :func:`fused_topk`."""
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if K.dim() != 3 or K.dtype != torch.float32:
        raise ValueError(f"keys: expected a float32 tensor (G, N, D), got {tuple(K.shape)} {K.dtype}")
    K = K.contiguous()
    if K.shape[1] == 0:
        nm = torch.zeros(K.shape[0], dtype=torch.float32, device=K.device)
    else:
        n = torch.linalg.vector_norm(K, dim=-1)
        nm = torch.where(torch.isfinite(n), n, torch.zeros_like(n)).amax(dim=-1)
    return Keys(K, nm)


@dataclass
class TopkStats:
    """What a :func:`fused_topk` call did (for benchmarks and tests)."""

    precision: str = ""
    rows: int = 0  # query rows processed
    retried: int = 0  # rows rescored a second time (an unrescored chunk came within eps)
    candidates: int = 0  # chunks rescored per row in the first round
    chunk: int = 0
    kernel: str = ""  # pass 1's implementation: "triton" or "torch" ("" for the float32 stream)


def _ordered_bits(s: torch.Tensor) -> torch.Tensor:
    """int64 whose order is the float order of ``s`` (float32; -0.0 equals 0.0)."""
    s = s + 0.0  # -0.0 -> +0.0
    b = s.view(torch.int32)
    return (b ^ ((b >> 31) & 0x7FFFFFFF)).to(torch.int64)


def _keys(s: torch.Tensor, cols: torch.Tensor, tie: str) -> torch.Tensor:
    """Sort keys (larger = better): score bits, then the tie column; INT64_MIN for non-results."""
    t = cols if tie == "high" else _TIE_MAX - cols
    key = (_ordered_bits(s) << 32) + t
    return torch.where(s > float("-inf"), key, torch.full_like(key, _INVALID))


def select_topk(scores: torch.Tensor, cols: torch.Tensor, k: int, *, tie: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of float32 ``scores`` (..., M) whose column numbers are ``cols`` (..., M).

    Returns ``(cols (..., k), scores (..., k))``: best first, ties by ``tie``, padded
    with -1 / -inf where fewer than ``k`` scores are finite or > -inf (NaN is never
    selected). ``cols`` must lie in [0, 2³²).
    """
    return _select(scores, cols, k, tie, prepass=True)


def _select_topk_keys(scores: torch.Tensor, cols: torch.Tensor, k: int, *, tie: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`select_topk` by one int64-key top-k over all columns (no float pre-pass): the
    reference the tests compare it with."""
    return _select(scores, cols, k, tie, prepass=False)


def _select(scores: torch.Tensor, cols: torch.Tensor, k: int, tie: str, *, prepass: bool) -> tuple[torch.Tensor, torch.Tensor]:
    M = scores.shape[-1]
    out_shape = (*scores.shape[:-1], k)
    if M == 0:
        return (torch.full(out_shape, -1, dtype=torch.int64, device=scores.device),
                torch.full(out_shape, float("-inf"), dtype=torch.float32, device=scores.device))
    s = torch.where(torch.isnan(scores), torch.full_like(scores, float("-inf")), scores).contiguous()
    kk = min(k, M)
    if prepass:
        # float32 top-k first (half the radix passes of the int64 key), then the exact order
        # of those kk by the key; rows whose kk-th score ties with a column left out take the
        # int64 key top-k over all their columns, so the tie rule holds everywhere
        v, at = torch.topk(s, kk, dim=-1, sorted=False)
        vk = v.amin(dim=-1, keepdim=True)
        tied = ((s >= vk).sum(dim=-1) > kk) & (vk.squeeze(-1) > float("-inf"))
        top, order = torch.sort(_keys(v, torch.gather(cols, -1, at), tie), dim=-1, descending=True)
        at = torch.gather(at, -1, order)
        if bool(tied.any()):
            rows = torch.nonzero(tied.reshape(-1)).flatten()
            s2, c2 = s.reshape(-1, M)[rows], cols.reshape(-1, M)[rows]
            t2, a2 = torch.topk(_keys(s2, c2, tie), kk, dim=-1, sorted=True)
            top.view(-1, kk)[rows] = t2
            at.view(-1, kk)[rows] = a2
    else:
        top, at = torch.topk(_keys(s, cols, tie), kk, dim=-1, sorted=True)
    ok = top != _INVALID
    oc = torch.where(ok, torch.gather(cols, -1, at), torch.full_like(at, -1))
    sv = torch.gather(s, -1, at)
    os_ = torch.where(ok, sv, torch.full_like(sv, float("-inf")))
    if kk < k:
        oc = torch.nn.functional.pad(oc, (0, k - kk), value=-1)
        os_ = torch.nn.functional.pad(os_, (0, k - kk), value=float("-inf"))
    return oc, os_


def _check_tie(tie: str) -> str:
    if tie not in ("low", "high"):
        raise ValueError(f"tie: expected 'low' (smaller column wins) or 'high' (larger column wins), got {tie!r}")
    return tie


def fused_topk(
    Q: torch.Tensor,
    keys: Keys | torch.Tensor,
    k: int,
    *,
    tie: str,
    hi: torch.Tensor | None = None,
    col_key: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    n_heads: int = 1,
    precision: str = "auto",
    exact_scores: bool = False,
    chunk: int | None = None,
    candidates: int | None = None,
    workspace_bytes: int | None = None,
    stats: TopkStats | None = None,
    kernel: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k key columns of every query row, fused (see the module docstring).

    Args:
        Q: (G, B, D) float32 queries (a (B, D) tensor is one group).
        keys: (G, N, D) float32 keys or :class:`Keys` from :func:`prepare_keys`.
        k: results per query row.
        tie: ``"low"`` (smaller column wins ties) or ``"high"`` (larger column wins).
        hi: (G, B) int64 or None — the time cut: column ``j`` is visible to row ``b``
            only when ``col_key[g, j] < hi[g, b]``.
        col_key: (G, N) int64 or None (= the column number, i.e. positions): the value
            compared with ``hi`` (e.g. a distinct item's first position).
        mask: bool, broadcastable to (G, B, N) with shape (G|1, B|1, N), or None: columns
            allowed (a filter).
        n_heads: H; with H > 1 the D columns split into H heads and a column's score is
            the max over heads of the heads' inner products (``head_reduce="max"``).
        precision: scoring format of pass 1 (:func:`choose_precision`).
        exact_scores: the scores are small integers exactly representable in every
            format (±1 codes, as Hamming top-k uses): the error bound is 0.
        chunk: columns per chunk maximum (pass 1 stores N / chunk values per row; pass 2
            rescores ``candidates · chunk`` columns per row). Default: 8 up to 2¹⁸ keys
            per group, 16 above (fewer maxima to rank where N is large).
        candidates: chunks rescored per row in the first round (default k + k/4 + 8;
            more rescoring, fewer second rounds).
        workspace_bytes: scratch memory budget (default 1 GiB on CUDA, 64 MiB on CPU).
        stats: a :class:`TopkStats` to fill in.
        kernel: pass 1's implementation: ``"triton"`` (scores and chunk maxima in one
            Triton kernel, the score tile never leaves the registers; CUDA, one head,
            fp16/bf16, ``chunk`` a power of two ≤ 128), ``"torch"`` (tiled torch
            operations), or ``"auto"`` (Triton where it applies, else torch).

    Returns:
        ``(cols (G, B, k) int64, scores (G, B, k) float32)``, best first, padded with
        -1 / -inf where fewer than k columns are visible (2-D when ``Q`` was 2-D).
    """
    tie = _check_tie(tie)
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    squeeze = Q.dim() == 2
    if squeeze:
        Q = Q.unsqueeze(0)
    kx = keys if isinstance(keys, Keys) else prepare_keys(keys)
    K = kx.full
    if Q.dim() != 3 or Q.dtype != torch.float32:
        raise ValueError(f"Q: expected a float32 tensor (G, B, D), got {tuple(Q.shape)} {Q.dtype}")
    G, B, D = Q.shape
    if K.shape[0] != G or K.shape[2] != D:
        raise ValueError(f"keys {tuple(K.shape)} do not match queries {tuple(Q.shape)} (same groups G and width D)")
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    if n_heads < 1 or D % n_heads:
        raise ValueError(f"n_heads: {n_heads} does not divide the width {D}")
    N = K.shape[1]
    if chunk is None:
        chunk = 8 if N <= 1 << 18 else 16
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    dev = Q.device
    out_c = torch.full((G, B, k), -1, dtype=torch.int64, device=dev)
    out_s = torch.full((G, B, k), float("-inf"), dtype=torch.float32, device=dev)
    if N == 0 or B == 0 or G == 0:
        return (out_c[0], out_s[0]) if squeeze else (out_c, out_s)
    if N >= 1 << 32:
        raise ValueError(f"keys: at most 2^32 - 1 columns per group, got {N}")
    Q = Q.contiguous()
    qn = torch.linalg.vector_norm(Q, dim=-1)  # (G, B)
    qn = torch.where(torch.isfinite(qn), qn, torch.zeros_like(qn))
    bound = float((qn.amax(dim=1) * kx.norm_max).max()) if G else 0.0
    prec = "fp32" if exact_scores and precision == "auto" and dev.type == "cpu" else choose_precision(precision, dev, bound)
    tri_ok = (prec in ("bf16", "fp16") and not exact_scores and n_heads == 1 and chunk <= 128 and not chunk & (chunk - 1)
              and _tri.available(dev))
    if kernel == "triton" and not tri_ok:
        raise ValueError("kernel='triton' needs Triton on a CUDA device (or TRITON_INTERPRET=1 on the CPU), "
                         "fp16/bf16 scoring, one head and a power-of-two chunk <= 128")
    use_triton = kernel != "torch" and tri_ok
    # the Triton kernel keeps the float32 accumulator: no rounding of the score to the format
    coef = 0.0 if exact_scores else error_coef(prec, D, rounded_output=not use_triton)
    u_sub = 0.0 if exact_scores else _HALF_SUB[prec]
    # per-row bound on |low-precision score - rescored score|
    eps = coef * qn * kx.norm_max[:, None] + 2 * u_sub * (math.sqrt(D) * (qn + kx.norm_max[:, None]) + 1)
    if stats is not None:
        stats.precision, stats.rows, stats.chunk = prec, stats.rows + G * B, chunk
        stats.kernel = "triton" if use_triton else "torch"
    ws = workspace_bytes or DEFAULT_WORKSPACE[dev.type]
    kk = min(k, N)
    n_chunks = -(-N // chunk)
    kc = min(n_chunks, candidates if candidates is not None else kk + kk // 4 + 8)
    if stats is not None:
        stats.candidates = kc
    Ql = Q.to(_DTYPES[prec]) if prec != "fp32" else Q
    Kl = kx.as_format(prec)
    esz = 2 if prec != "fp32" else 4
    # row blocks: the chunk-maximum buffer takes at most half of the workspace
    per_row = n_chunks * (esz + 4)  # the buffer and its float32 copy for the certificate
    if B * per_row <= ws // 2:
        bb = B
        gb = max(1, min(G, (ws // 2) // max(B * per_row, 1)))
    else:
        gb = 1
        bb = max(1, min(B, (ws // 2) // per_row))
    # column tiles: the score tile (+ mask) takes the other half, a multiple of `chunk`
    tile = max(chunk, ((ws // 2) // max(gb * bb * (esz + 6), 1)) // chunk * chunk)
    tile = min(tile, n_chunks * chunk)
    if prec == "fp32" or exact_scores:
        # pass 1 already yields the float32 scores: one streaming top-k, no rescoring
        if stats is not None:
            stats.candidates = 0
        with exact_matmul(dev), torch.no_grad():
            return _stream(Ql, Kl, kk, k, tie, hi, col_key, mask, n_heads, ws, esz, squeeze, out_c, out_s)
    with exact_matmul(dev), torch.no_grad():
        for g0 in range(0, G, gb):
            gs = slice(g0, min(G, g0 + gb))
            ck_b = None if col_key is None else col_key[gs]
            for b0 in range(0, B, bb):
                bs = slice(b0, min(B, b0 + bb))
                hi_b = None if hi is None else hi[gs, bs]
                m_b = None if mask is None else mask[gs if mask.shape[0] > 1 else slice(None), bs if mask.shape[1] > 1 else slice(None)]
                if use_triton:
                    cm = _tri.chunk_maxima(Ql[gs, bs], Kl[gs], hi_b, ck_b, m_b, chunk, n_chunks)
                else:
                    cm = _chunk_maxima(Ql[gs, bs], Kl[gs], hi_b, ck_b, m_b, n_heads, chunk, tile, n_chunks)
                c, s = _rescore_select(Q[gs, bs], K[gs], cm, kc, kk, eps[gs, bs], hi_b, ck_b, m_b, n_heads, chunk, tie, ws, stats,
                                       use_triton)
                out_c[gs, bs, :kk] = c
                out_s[gs, bs, :kk] = s
    return (out_c[0], out_s[0]) if squeeze else (out_c, out_s)


def _stream(
    Ql: torch.Tensor,
    Kl: torch.Tensor,
    kk: int,
    k: int,
    tie: str,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_heads: int,
    ws: int,
    esz: int,
    squeeze: bool,
    out_c: torch.Tensor,
    out_s: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k when the scoring format's scores are the answer's (float32, or exact
    small integers): score tiles merged into a running (g, b, kk) top-k by the int64 tie
    key. Tiles of rows × columns within the workspace; no (B, N) matrix is stored."""
    G, B, _ = Ql.shape
    N = Kl.shape[1]
    dev = Ql.device
    per_col = esz + 4 + 8 + 8  # tile scores, float32 copy, keys, columns
    cap = max(1, (ws // 2) // ((kk + 64) * per_col))  # query rows (g·b) per block
    if G * B <= cap:
        gb, bb = G, B
    elif B <= cap:
        gb, bb = cap // B, B
    else:
        gb, bb = 1, cap
    for g0 in range(0, G, gb):
        gs = slice(g0, min(G, g0 + gb))
        ck_b = None if col_key is None else col_key[gs]
        for b0 in range(0, B, bb):
            bs = slice(b0, min(B, b0 + bb))
            g, b = gs.stop - gs.start, bs.stop - bs.start
            tile = max(64, (ws // 2) // max(g * b * per_col, 1) - kk)
            hi_b = None if hi is None else hi[gs, bs]
            m_b = None if mask is None else mask[gs if mask.shape[0] > 1 else slice(None), bs if mask.shape[1] > 1 else slice(None)]
            rk = torch.full((g, b, kk), _INVALID, dtype=torch.int64, device=dev)
            rc = torch.full((g, b, kk), -1, dtype=torch.int64, device=dev)
            rs = torch.full((g, b, kk), float("-inf"), dtype=torch.float32, device=dev)
            for a in range(0, N, tile):
                w = min(tile, N - a)
                S = _scores(Ql[gs, bs], Kl[gs, a : a + w], n_heads).float()
                bad = torch.isnan(S)
                vis = _visible(a, w, hi_b, ck_b, m_b, dev)
                if vis is not None:
                    bad |= ~vis
                S.masked_fill_(bad, float("-inf"))
                cols = torch.arange(a, a + w, device=dev).expand(g, b, w)
                key = torch.cat([rk, _keys(S, cols, tie)], dim=-1)
                rk, at = torch.topk(key, kk, dim=-1, sorted=True)
                rc = torch.gather(torch.cat([rc, cols], dim=-1), -1, at)
                rs = torch.gather(torch.cat([rs, S], dim=-1), -1, at)
            ok = rk != _INVALID
            out_c[gs, bs, :kk] = torch.where(ok, rc, torch.full_like(rc, -1))
            out_s[gs, bs, :kk] = torch.where(ok, rs, torch.full_like(rs, float("-inf")))
    return (out_c[0], out_s[0]) if squeeze else (out_c, out_s)


def _visible(a: int, w: int, hi: torch.Tensor | None, col_key: torch.Tensor | None, mask: torch.Tensor | None, dev: torch.device) -> torch.Tensor | None:
    """(g|1, b|1, w) bool: columns a..a+w-1 visible to the block's rows (None: all).
    ``hi`` (g, b), ``col_key`` (g, N), ``mask`` (g|1, b|1, N) are the block's slices."""
    vis = None
    if hi is not None:
        ck = torch.arange(a, a + w, device=dev)[None, :] if col_key is None else col_key[:, a : a + w]
        vis = ck[:, None, :] < hi[:, :, None]
    if mask is not None:
        m = mask[:, :, a : a + w]
        vis = m if vis is None else vis & m
    return vis


def _scores(Qb: torch.Tensor, Kt: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(g, b, w) scores of query rows Qb (g, b, D) against key rows Kt (g, w, D)."""
    if n_heads == 1:
        return torch.matmul(Qb, Kt.transpose(-1, -2))
    dh = Qb.shape[-1] // n_heads
    S = torch.matmul(Qb[..., :dh], Kt[..., :dh].transpose(-1, -2))
    for h in range(1, n_heads):
        torch.maximum(S, torch.matmul(Qb[..., h * dh : (h + 1) * dh], Kt[..., h * dh : (h + 1) * dh].transpose(-1, -2)), out=S)
    return S


def _chunk_maxima(
    Ql: torch.Tensor,
    Kl: torch.Tensor,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_heads: int,
    chunk: int,
    tile: int,
    n_chunks: int,
) -> torch.Tensor:
    """Pass 1: (g, b, n_chunks) max visible low-precision score of each chunk (-inf: none).
    Each (g, b, tile) score tile lives only until its chunk maxima are taken."""
    g, b, _ = Ql.shape
    N = Kl.shape[1]
    ninf = float("-inf")
    cm = torch.empty((g, b, n_chunks), dtype=Ql.dtype, device=Ql.device)
    for a in range(0, N, tile):
        w = min(tile, N - a)
        S = _scores(Ql, Kl[:, a : a + w], n_heads)
        bad = torch.isnan(S)
        vis = _visible(a, w, hi, col_key, mask, Ql.device)
        if vis is not None:
            bad |= ~vis
        S.masked_fill_(bad, ninf)
        if w % chunk:
            S = torch.nn.functional.pad(S, (0, chunk - w % chunk), value=ninf)
        c0 = a // chunk
        cm[:, :, c0 : c0 + S.shape[-1] // chunk] = S.view(g, b, -1, chunk).amax(dim=-1)
    return cm


def _candidate_scores(
    Qb: torch.Tensor,
    Kg: torch.Tensor,
    chunks: torch.Tensor,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_heads: int,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 scores of every column of the given chunks (g, b, m): ``(cols (g, b, m·chunk),
    scores)``, -inf where invisible or past the last column."""
    g, b, m = chunks.shape
    N, D = Kg.shape[1], Kg.shape[2]
    dev = Qb.device
    cols = (chunks[..., None] * chunk + torch.arange(chunk, device=dev)).reshape(g, b, m * chunk)
    inside = cols < N
    cc = torch.where(inside, cols, torch.zeros_like(cols))
    gi = torch.arange(g, device=dev)[:, None, None]
    Kc = Kg[gi, cc]  # (g, b, M, D)
    if n_heads == 1:
        s = torch.matmul(Kc, Qb[..., None]).squeeze(-1)
    else:
        dh = D // n_heads
        s = (Kc.view(g, b, -1, n_heads, dh) * Qb.view(g, b, 1, n_heads, dh)).sum(-1).amax(-1)
    ok = inside & ~torch.isnan(s)
    if hi is not None:
        ck = cc if col_key is None else torch.gather(col_key, 1, cc.reshape(g, -1)).reshape(cc.shape)
        ok &= ck < hi[:, :, None]
    if mask is not None:
        ok &= torch.gather(mask.expand(g, b, mask.shape[2]), 2, cc)
    return cols, torch.where(ok, s, torch.full_like(s, float("-inf")))


def _rescore_rows(
    Qb: torch.Tensor,
    Kg: torch.Tensor,
    cmf: torch.Tensor,
    kc: int,
    kk: int,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_heads: int,
    chunk: int,
    tie: str,
    ws: int,
    use_triton: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``kc`` chunks by maximum, rescored in float32, exact top-``kk`` among them;
    rows in sub-blocks so the gathered keys (torch) or the candidate scores and their
    sort keys (Triton, which reads the keys in place) stay within the workspace."""
    g, b, n_chunks = cmf.shape
    D = Kg.shape[2]
    kc = min(kc, n_chunks)
    _, top_chunks = torch.topk(cmf, kc, dim=-1, sorted=False)
    per_row = kc * chunk * (48 if use_triton else (D + 4) * 4 * 2)
    rb = max(1, min(b, ws // max(per_row * g, 1)))
    oc = torch.empty((g, b, kk), dtype=torch.int64, device=Qb.device)
    os_ = torch.empty((g, b, kk), dtype=torch.float32, device=Qb.device)
    for r0 in range(0, b, rb):
        r1 = min(b, r0 + rb)
        hi_r = None if hi is None else hi[:, r0:r1]
        m_r = None if mask is None or mask.shape[1] == 1 else mask[:, r0:r1]
        if use_triton:
            cols, s = _tri.rescore(Qb[:, r0:r1], Kg, top_chunks[:, r0:r1], hi_r, col_key, mask if m_r is None else m_r, chunk)
        else:
            cols, s = _candidate_scores(Qb[:, r0:r1], Kg, top_chunks[:, r0:r1], hi_r, col_key, mask if m_r is None else m_r,
                                        n_heads, chunk)
        c, v = select_topk(s, cols, kk, tie=tie)
        oc[:, r0:r1] = c
        os_[:, r0:r1] = v
    return oc, os_


def _rescore_select(
    Qb: torch.Tensor,
    Kg: torch.Tensor,
    cm: torch.Tensor,
    kc: int,
    kk: int,
    eps: torch.Tensor,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_heads: int,
    chunk: int,
    tie: str,
    ws: int,
    stats: TopkStats | None,
    use_triton: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2 for a block: rescore the top-``kc`` chunks, certify every row, and rescore
    the rows that need more chunks once more with all of them. Returns (g, b, kk)
    columns / float32 scores."""
    g, b, n_chunks = cm.shape
    cmf = cm.float()
    out_c, out_s = _rescore_rows(Qb, Kg, cmf, kc, kk, hi, col_key, mask, n_heads, chunk, tie, ws, use_triton)
    if kc >= n_chunks:
        return out_c, out_s
    # an unrescored chunk may hold a winner only when its max >= s_k - eps
    thr = out_s[..., kk - 1] - eps
    need = ((cmf >= thr[..., None]) & (cmf > float("-inf"))).sum(-1)  # (g, b)
    fail = need > kc
    n_fail = int(fail.sum())
    if n_fail == 0:
        return out_c, out_s
    if stats is not None:
        stats.retried += n_fail
    # second round, per group: the failing rows with every chunk that may hold a winner
    # (s_k can only grow with more candidates, so this set is final)
    for gi in torch.nonzero(fail.any(dim=1)).flatten().tolist():
        rows = torch.nonzero(fail[gi]).flatten()
        kc2 = int(need[gi, rows].max())
        hi_r = None if hi is None else hi[gi : gi + 1, rows]
        ck_r = None if col_key is None else col_key[gi : gi + 1]
        m_r = None
        if mask is not None:
            mg = mask[gi : gi + 1] if mask.shape[0] > 1 else mask
            m_r = mg[:, rows] if mask.shape[1] > 1 else mg
        c2, s2 = _rescore_rows(
            Qb[gi : gi + 1, rows], Kg[gi : gi + 1], cmf[gi : gi + 1, rows], kc2, kk, hi_r, ck_r, m_r, n_heads, chunk, tie, ws,
            use_triton,
        )
        out_c[gi, rows] = c2[0]
        out_s[gi, rows] = s2[0]
    return out_c, out_s


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array on ``device`` (no copy on the CPU when already contiguous)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t if device.type == "cpu" else t.to(device, non_blocking=False)
