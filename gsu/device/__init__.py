"""gsu.device — the ``device=`` paths: exact top-k search and GSU retrieval in torch on a
GPU (or on the CPU through torch, which is how they are tested everywhere).

- :func:`fused_topk` — fused scores + top-k without the (T, L) score matrix, low-precision
  scoring with certified float32 rescoring (results equal the CPU path's); on CUDA its two
  passes are Triton kernels when Triton imports (:func:`triton_available`);

Its users live in their own layers: :mod:`gsu.index.device` (``FlatIndex(device=...)`` for
every filter form, faiss-gpu as a candidate generator when faiss has GPUs) and
:mod:`gsu.retrieval.device` (``Exact`` / ``TWIN`` / ``SoftSearch`` (exact scan) /
``SimHashTopK`` with ``device=``, many users per call). This package imports neither.
"""

from gsu.device._triton import available as triton_available
from gsu.device._topk import (
    DEFAULT_WORKSPACE,
    PRECISIONS,
    Keys,
    TopkStats,
    choose_precision,
    error_coef,
    exact_matmul,
    fused_topk,
    prepare_keys,
    resolve_device,
    select_topk,
    sync,
    to_device,
)

__all__ = [
    "DEFAULT_WORKSPACE",
    "PRECISIONS",
    "Keys",
    "TopkStats",
    "choose_precision",
    "error_coef",
    "exact_matmul",
    "fused_topk",
    "prepare_keys",
    "resolve_device",
    "select_topk",
    "sync",
    "to_device",
    "triton_available",
]
