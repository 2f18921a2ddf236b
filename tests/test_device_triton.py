"""The Triton kernels of the device path (gsu.device._triton): pass 1 (scores + chunk
maxima in one kernel) and pass 2 (float32 rescoring of the chosen chunks, keys read in
place) against the torch implementations they replace, on every visibility form, and
``fused_topk(kernel="triton")`` against the float32 answer under heavy ties.

They run on a CUDA GPU with Triton, or on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1 pytest tests/test_device_triton.py`` with Triton installed);
otherwise they skip, saying so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsu.device import TopkStats, fused_topk
from gsu.device import _triton as tri
from gsu.device._topk import _candidate_scores, _chunk_maxima

DEV = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
pytestmark = pytest.mark.skipif(
    not tri.available(DEV),
    reason="Triton kernels need Triton and a CUDA GPU, or TRITON_INTERPRET=1 with Triton installed (CPU interpreter)",
)
# the interpreter computes bf16 wrongly (numpy has no bf16): bf16 is checked on a GPU only
LOW = [torch.float16] + ([torch.bfloat16] if DEV.type == "cuda" else [])


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x)).to(DEV)


def _forms(rng, G, B, N):
    hi = _t(rng.integers(0, N + 1, (G, B)))
    ck = _t(np.stack([rng.permutation(N) for _ in range(G)]))
    mask = _t(rng.random((G, B, N)) < 0.6)
    return [(None, None, None), (hi, None, None), (hi, ck, None), (None, None, mask),
            (hi, ck, mask[:1, :1]), (None, None, mask[:, :1]), (hi, None, mask[:1])]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("shape", [(2, 5, 300, 24, 16), (1, 70, 1000, 64, 16), (3, 3, 129, 16, 32), (2, 9, 2000, 32, 8)])
def test_chunk_maxima_equal_the_torch_pass(shape, dtype):
    G, B, N, D, chunk = shape
    rng = np.random.default_rng(N)
    Q = _t(rng.standard_normal((G, B, D)).astype(np.float32)).to(dtype)
    K = _t(rng.standard_normal((G, N, D)).astype(np.float32))
    K[0, 5, 0] = float("nan")
    K = K.to(dtype)
    nc = -(-N // chunk)
    for h, c, m in _forms(rng, G, B, N):
        for tiles, bn, bb in ((None, None, None), (3, 64, 16)):
            a = tri.chunk_maxima(Q, K, h, c, m, chunk, nc, tiles=tiles, block_n=bn, block_b=bb)
            b = _chunk_maxima(Q, K, h, c, m, 1, chunk, 10 * chunk, nc).float()
            fin = torch.isfinite(b)
            assert torch.equal(fin, torch.isfinite(a))
            if fin.any():
                # the kernel keeps the float32 accumulator; torch rounds the score to the format
                rel = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
                assert float((a[fin] - b[fin]).abs().max()) <= rel * float(b[fin].abs().max()) + 1e-3


def test_rescore_equals_the_gathered_scores():
    rng = np.random.default_rng(3)
    for G, B, N, D in ((2, 5, 300, 24), (1, 7, 1000, 64), (3, 4, 100, 20)):
        Q = _t(rng.standard_normal((G, B, D)).astype(np.float32))
        K = _t(rng.standard_normal((G, N, D)).astype(np.float32))
        K[0, 3, 1] = float("nan")
        nc = -(-N // 16)
        tc = _t(rng.integers(0, nc, (G, B, 11)))
        for h, c, m in _forms(rng, G, B, N):
            c1, s1 = tri.rescore(Q, K, tc, h, c, m, 16)
            c2, s2 = _candidate_scores(Q, K, tc, h, c, m, 1, 16)
            assert torch.equal(c1, c2)
            fin = torch.isfinite(s2)
            assert torch.equal(fin, torch.isfinite(s1))
            np.testing.assert_allclose(s1[fin].cpu().numpy(), s2[fin].cpu().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tie", ["low", "high"])
@pytest.mark.parametrize("candidates", [None, 3])
def test_fused_triton_equals_float32_under_ties(tie, candidates):
    """Small integers (most scores tie) and few candidates (the second round runs):
    the Triton pipeline returns exactly the float32 top-k under the tie rule."""
    rng = np.random.default_rng(7)
    G, B, N, D = 2, 6, 3000, 32
    Q = _t(rng.integers(-2, 3, (G, B, D)).astype(np.float32))
    K = _t(rng.integers(-2, 3, (G, N, D)).astype(np.float32))
    for h, c, m in _forms(rng, G, B, N):
        st = TopkStats()
        c1, s1 = fused_topk(Q, K, 25, tie=tie, hi=h, col_key=c, mask=m, precision="fp16", stats=st,
                            kernel="triton", candidates=candidates)
        c2, s2 = fused_topk(Q, K, 25, tie=tie, hi=h, col_key=c, mask=m, precision="fp32")
        assert st.kernel == "triton"
        assert torch.equal(c1, c2)
        assert torch.equal(s1, s2)


def test_kernel_argument_is_checked():
    Q = torch.ones((2, 8), device=DEV)
    with pytest.raises(ValueError, match="kernel"):
        fused_topk(Q, torch.ones((5, 8), device=DEV), 2, tie="low", kernel="cuda")
    with pytest.raises(ValueError, match="kernel='triton' needs"):
        fused_topk(Q, torch.ones((5, 8), device=DEV), 2, tie="low", kernel="triton", n_heads=2, precision="fp16")
