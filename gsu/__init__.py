"""gsu — the retrieval engine behind the general search unit of long-sequence CTR models.

Subpackages (import them explicitly; nothing heavy happens at ``import gsu``):

- :mod:`gsu.datasets`  — embedding files, sparse collections, behavior logs, generators
- :mod:`gsu.index`     — item-level indexes (exact, filtered ANN, blocked sparse, LSH)
- :mod:`gsu.retrieval` — per (user, target) behavior retrieval (SIM, ETA, SDIM, MUSE, TWIN)
- :mod:`gsu.ctr`       — PyTorch target-attention models over the retrieved subset
- :mod:`gsu.bench`     — recall/latency harness and benchmark suites
"""

__version__ = "0.1.0"

__all__ = ["__version__", "get_limits", "set_limits"]


def __getattr__(name: str):
    # per-call caps on k and result sizes (gsu._validate), without importing numpy at `import gsu`
    if name in ("get_limits", "set_limits"):
        from gsu import _validate

        return getattr(_validate, name)
    raise AttributeError(f"module 'gsu' has no attribute {name!r}")
