"""Pass 1 of :func:`gsu.device.fused_topk` as one Triton kernel: scores and chunk maxima
fused, so the score tile stays in registers and only ``N / chunk`` maxima per query row
reach global memory.

The torch version of pass 1 (``_topk._chunk_maxima``) bounds the *size* of the score
tiles but still writes every tile to global memory and reads it back several times (NaN
test, visibility, chunk maximum). Here each program holds a block of query rows in
registers, walks its columns in tiles, computes the scores with tensor-core dot products
(half-precision inputs, float32 accumulation), applies the visibility in place — the time
cut (``col_key[j] < hi[b]``, or ``j < hi[b]``), the column mask in any of its broadcast
forms, NaN scores and columns past the end — and stores the maximum of every ``chunk``
consecutive columns as float32.

The scores differ from the float32 rescored ones by less than the error bound of the torch
path (the inputs are rounded the same way; the accumulation is float32 and the result is
not rounded to the half format), so pass 2's certificate holds unchanged.

Used on CUDA when Triton imports and the call has one head and a half-precision scoring
format; everything else takes the torch path. ``TRITON_INTERPRET=1`` (set before this
module is imported) runs the kernel on CPU tensors through Triton's interpreter, which is
how it is tested without a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["available", "chunk_maxima", "rescore"]

try:  # Triton is optional: it comes with CUDA builds of torch
    import triton
    import triton.language as tl

    _HAVE = True
except Exception:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    _HAVE = False

_INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"


def available(device: torch.device) -> bool:
    """True when the Triton kernel can run on ``device`` (CUDA with Triton, or the CPU
    under ``TRITON_INTERPRET=1``)."""
    if not _HAVE:
        return False
    if device.type == "cuda":
        return not _INTERPRET
    return _INTERPRET


if _HAVE:

    @triton.jit
    def _chunk_max_kernel(
        Q, K, CM, HI, CK, M,
        B, N, NC,
        sqg, sqb, skg, skn, scg, scb, shg, shb, sckg, smg, smb,
        D: tl.constexpr, DP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
        CHUNK: tl.constexpr, TILES: tl.constexpr, HAS_HI: tl.constexpr, HAS_CK: tl.constexpr, HAS_M: tl.constexpr,
    ):
        pn = tl.program_id(0)
        pb = tl.program_id(1)
        g = tl.program_id(2).to(tl.int64)
        rb = pb * BLOCK_B + tl.arange(0, BLOCK_B)
        bok = rb < B
        rb64 = rb.to(tl.int64)
        rd = tl.arange(0, DP)
        dok = rd < D
        q = tl.load(Q + g * sqg + rb64[:, None] * sqb + rd[None, :], mask=bok[:, None] & dok[None, :], other=0.0)
        if HAS_HI:
            h = tl.load(HI + g * shg + rb64 * shb, mask=bok, other=0)
        CPB: tl.constexpr = BLOCK_N // CHUNK
        for t in range(0, TILES):
            n0 = (pn * TILES + t) * BLOCK_N
            rn = n0 + tl.arange(0, BLOCK_N)
            nok = rn < N
            rn64 = rn.to(tl.int64)
            kt = tl.load(K + g * skg + rn64[None, :] * skn + rd[:, None], mask=nok[None, :] & dok[:, None], other=0.0)
            s = tl.dot(q, kt)  # (BLOCK_B, BLOCK_N) float32
            vis = nok[None, :] & (s == s)
            if HAS_HI:
                if HAS_CK:
                    ck = tl.load(CK + g * sckg + rn64, mask=nok, other=0)
                else:
                    ck = rn64
                vis = vis & (ck[None, :] < h[:, None])
            if HAS_M:
                m = tl.load(M + g * smg + rb64[:, None] * smb + rn64[None, :], mask=bok[:, None] & nok[None, :], other=0)
                vis = vis & (m != 0)
            s = tl.where(vis, s, float("-inf"))
            cmx = tl.max(tl.reshape(s, (BLOCK_B, CPB, CHUNK)), axis=2)
            rc = (n0 // CHUNK) + tl.arange(0, CPB)
            tl.store(CM + g * scg + rb64[:, None] * scb + rc[None, :].to(tl.int64), cmx,
                     mask=bok[:, None] & (rc[None, :] < NC))


    @triton.jit
    def _rescore_kernel(
        Q, K, TC, OUT, HI, CK, M,
        N, KC,
        sqg, sqb, skg, skn, stg, stb, sog, sob, shg, shb, sckg, smg, smb,
        D: tl.constexpr, DP: tl.constexpr, CHUNK: tl.constexpr, CB: tl.constexpr,
        HAS_HI: tl.constexpr, HAS_CK: tl.constexpr, HAS_M: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        pc = tl.program_id(1)
        g = tl.program_id(2).to(tl.int64)
        rd = tl.arange(0, DP)
        dok = rd < D
        q = tl.load(Q + g * sqg + b * sqb + rd, mask=dok, other=0.0)
        cc = pc * CB + tl.arange(0, CB)
        cok = cc < KC
        ch = tl.load(TC + g * stg + b * stb + cc, mask=cok, other=0)
        cols = tl.reshape(ch[:, None] * CHUNK + tl.arange(0, CHUNK)[None, :], (CB * CHUNK,))
        ok = tl.reshape(cok[:, None] & (tl.arange(0, CHUNK)[None, :] >= 0), (CB * CHUNK,)) & (cols < N)
        kt = tl.load(K + g * skg + cols[:, None] * skn + rd[None, :], mask=ok[:, None] & dok[None, :], other=0.0)
        s = tl.sum(kt * q[None, :], axis=1)  # float32 products and sums
        vis = ok & (s == s)
        if HAS_HI:
            h = tl.load(HI + g * shg + b * shb)
            if HAS_CK:
                ck = tl.load(CK + g * sckg + cols, mask=ok, other=0)
            else:
                ck = cols
            vis = vis & (ck < h)
        if HAS_M:
            m = tl.load(M + g * smg + b * smb + cols, mask=ok, other=0)
            vis = vis & (m != 0)
        s = tl.where(vis, s, float("-inf"))
        oc = pc * (CB * CHUNK) + tl.arange(0, CB * CHUNK)
        tl.store(OUT + g * sog + b * sob + oc, s, mask=oc < KC * CHUNK)


def _mask_arg(mask: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, int, int]:
    if mask is None:
        return torch.zeros(1, dtype=torch.uint8, device=device), 0, 0
    m = mask.contiguous()
    m = m.view(torch.uint8) if m.dtype == torch.bool else m.to(torch.uint8)
    return m, (0 if m.shape[0] == 1 else m.stride(0)), (0 if m.shape[1] == 1 else m.stride(1))


def rescore(
    Q: torch.Tensor,
    K: torch.Tensor,
    top_chunks: torch.Tensor,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2's float32 scores of every column of the chosen chunks, without gathering
    the keys into a (g, b, m·chunk, D) copy.

    ``Q`` (g, b, D) and ``K`` (g, N, D) float32, ``top_chunks`` (g, b, m) int64 chunk
    numbers. Returns ``(cols (g, b, m·chunk) int64, scores (g, b, m·chunk) float32)``,
    -inf where a column is past the end, invisible or NaN — what ``_candidate_scores``
    returns, with the products summed in float32 on the CUDA cores.
    """
    if not _HAVE:
        raise RuntimeError("Triton is not installed")
    g, b, D = Q.shape
    N = K.shape[1]
    m = top_chunks.shape[2]
    dev = Q.device
    Q = Q.contiguous()
    K = K.contiguous()
    tc = top_chunks.contiguous()
    out = torch.empty((g, b, m * chunk), dtype=torch.float32, device=dev)
    cols = (tc[..., None] * chunk + torch.arange(chunk, device=dev)).reshape(g, b, m * chunk)
    if g == 0 or b == 0 or m == 0:
        return cols, out
    dummy = torch.zeros(1, dtype=torch.int64, device=dev)
    hi_t = hi.contiguous() if hi is not None else dummy
    ck_t = col_key.contiguous() if col_key is not None else dummy
    m_t, smg, smb = _mask_arg(mask, dev)
    cb = max(1, 128 // chunk)
    grid = (b, -(-m // cb), g)
    _rescore_kernel[grid](
        Q, K, tc, out, hi_t, ck_t, m_t,
        N, m,
        Q.stride(0), Q.stride(1), K.stride(0), K.stride(1), tc.stride(0), tc.stride(1), out.stride(0), out.stride(1),
        hi_t.stride(0) if hi is not None else 0, hi_t.stride(1) if hi is not None else 0,
        ck_t.stride(0) if col_key is not None else 0, smg, smb,
        D=D, DP=max(16, _pow2(D)), CHUNK=chunk, CB=cb,
        HAS_HI=hi is not None, HAS_CK=col_key is not None, HAS_M=mask is not None,
        num_warps=4,
    )
    return cols, out


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def chunk_maxima(
    Ql: torch.Tensor,
    Kl: torch.Tensor,
    hi: torch.Tensor | None,
    col_key: torch.Tensor | None,
    mask: torch.Tensor | None,
    chunk: int,
    n_chunks: int,
    *,
    block_b: int | None = None,
    block_n: int | None = None,
    tiles: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """(g, b, n_chunks) float32: max visible score of every ``chunk`` columns (-inf: none).

    ``Ql`` (g, b, D) and ``Kl`` (g, N, D) in fp16/bf16 (the same dtype); ``hi`` (g, b)
    int64, ``col_key`` (g, N) int64, ``mask`` bool (g|1, b|1, N) — as in ``fused_topk``.
    ``chunk`` must be a power of two of at most 128. Block sizes default to a setting
    that suits d ≤ 128 on current GPUs; the keywords exist for tuning runs.
    """
    if not _HAVE:
        raise RuntimeError("Triton is not installed")
    g, b, D = Ql.shape
    N = Kl.shape[1]
    if chunk & (chunk - 1) or chunk > 128:
        raise ValueError(f"chunk: the Triton kernel needs a power of two <= 128, got {chunk}")
    Ql = Ql.contiguous()
    Kl = Kl.contiguous()
    DP = max(16, _pow2(D))
    bb = block_b or (64 if b <= 64 else 128)
    bn = block_n or 128
    bn = max(bn, chunk)
    n_tiles = -(-N // bn)
    # column tiles per program: enough programs to fill the device several times over,
    # then longer column walks (the query block is loaded once per program)
    work = n_tiles * (-(-b // bb)) * g
    tpp = tiles or _pow2(max(1, min(16, work // 8192)))
    cm = torch.empty((g, b, n_chunks), dtype=torch.float32, device=Ql.device)
    dummy = torch.zeros(1, dtype=torch.int64, device=Ql.device)
    hi_t = hi.contiguous() if hi is not None else dummy
    ck_t = col_key.contiguous() if col_key is not None else dummy
    m_t, smg, smb = _mask_arg(mask, Ql.device)
    grid = (-(-n_tiles // tpp), -(-b // bb), g)
    kw: dict[str, Any] = dict(num_warps=num_warps or 4)
    if num_stages:
        kw["num_stages"] = num_stages
    _chunk_max_kernel[grid](
        Ql, Kl, cm, hi_t, ck_t, m_t,
        b, N, n_chunks,
        Ql.stride(0), Ql.stride(1), Kl.stride(0), Kl.stride(1), cm.stride(0), cm.stride(1),
        hi_t.stride(0) if hi is not None else 0, hi_t.stride(1) if hi is not None else 0,
        ck_t.stride(0) if col_key is not None else 0, smg, smb,
        D=D, DP=DP, BLOCK_B=bb, BLOCK_N=bn, CHUNK=chunk, TILES=tpp,
        HAS_HI=hi is not None, HAS_CK=col_key is not None, HAS_M=mask is not None,
        **kw,
    )
    return cm
