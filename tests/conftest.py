"""Shared fixtures: seeded synthetic data; paths to the real samples in ../shared/datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real data samples folder; tests that need it skip when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATASETS} (expected ../shared/datasets beside the repo)")
    return SHARED_DATASETS


def seeded_catalog(n: int = 2000, dim: int = 24, *, nq: int = 40, clusters: int = 16, seed: int = 0,
                   **kw) -> tuple[np.ndarray, np.ndarray]:
    """(x, q): ``n`` × ``dim`` clustered unit vectors and ``nq`` queries drawn from the same
    mixture, from the project's generator (:func:`gsu.datasets.clustered_catalog`, seeded);
    ``kw`` go to the generator (``size_skew``, ``spread``, ``duplicate_share``, ...)."""
    from gsu.datasets.synthetic import catalog_queries, clustered_catalog

    cat = clustered_catalog(n, dim, n_clusters=clusters, seed=seed, **kw)
    return (np.ascontiguousarray(cat.vectors, np.float32),
            np.ascontiguousarray(catalog_queries(cat, nq, seed=seed + 1), np.float32))


@pytest.fixture(scope="session")
def small_catalog() -> tuple[np.ndarray, np.ndarray]:
    """(x, q): 2,000 × 24 clustered unit vectors and 40 queries, seed 0 (:func:`seeded_catalog`)."""
    return seeded_catalog()


@pytest.fixture(scope="session", autouse=True)
def _thread_baseline() -> dict[str, int]:
    """The thread counts numba, torch and faiss have when the session starts (before any
    fixture of a narrower scope, which may pin threads itself, runs)."""
    import faiss
    import numba
    import torch

    return {"numba": numba.get_num_threads(), "torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()}


@pytest.fixture(autouse=True)
def _restore_thread_pins(_thread_baseline):
    """After every test, numba, torch, faiss and BLAS are back at the session's thread counts.

    A test or fixture that pins threads (the benchmark harness, the demo) would otherwise
    run every later test single-threaded, and a serial-vs-parallel comparison would
    compare a kernel with itself.
    """
    import sys

    import faiss
    import numba
    import torch

    yield
    harness = sys.modules.get("gsu.bench.harness")
    if harness is not None:
        while harness._LIMITERS:
            harness._LIMITERS.pop().restore_original_limits()
        harness._PINNED.clear()
    numba.set_num_threads(_thread_baseline["numba"])
    torch.set_num_threads(_thread_baseline["torch"])
    faiss.omp_set_num_threads(_thread_baseline["faiss"])
