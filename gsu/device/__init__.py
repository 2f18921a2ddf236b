"""gsu.device — the ``device=`` paths: exact top-k search and GSU retrieval in torch on a
GPU (or on the CPU through torch, which is how they are tested everywhere).

- :func:`fused_topk` — fused scores + top-k without the (T, L) score matrix, low-precision
  scoring with certified float32 rescoring (results equal the CPU path's);
- :mod:`gsu.device.index` — ``FlatIndex(device=...)`` for every filter form, faiss-gpu as a
  candidate generator when faiss has GPUs;
- :mod:`gsu.device.retrieval` — ``Exact`` / ``TWIN`` / ``SoftSearch`` (exact scan) /
  ``SimHashTopK`` with ``device=``, many users per call.
"""

from gsu.device._topk import (
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
)

__all__ = [
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
]
