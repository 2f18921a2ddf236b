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


@pytest.fixture(scope="session")
def small_catalog() -> tuple[np.ndarray, np.ndarray]:
    """(x, q): 2,000 × 24 clustered unit vectors and 40 queries, seed 0."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((16, 24))
    lab = rng.integers(0, 16, 2000)
    x = (centers[lab] + 0.4 * rng.standard_normal((2000, 24))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = (centers[rng.integers(0, 16, 40)] + 0.4 * rng.standard_normal((40, 24))).astype(np.float32)
    return x, q


@pytest.fixture(autouse=True)
def _restore_thread_pins():
    """Every test leaves numba, torch, faiss and BLAS with the thread counts it found.

    A test that pins threads (the benchmark harness does) would otherwise run every later
    test single-threaded, and a serial-vs-parallel comparison would compare a kernel with
    itself.
    """
    import sys

    before: dict[str, int] = {}
    if "numba" in sys.modules:
        before["numba"] = sys.modules["numba"].get_num_threads()
    if "torch" in sys.modules:
        before["torch"] = sys.modules["torch"].get_num_threads()
    if "faiss" in sys.modules:
        before["faiss"] = sys.modules["faiss"].omp_get_max_threads()
    yield
    harness = sys.modules.get("gsu.bench.harness")
    if harness is not None:
        while harness._LIMITERS:
            harness._LIMITERS.pop().restore_original_limits()
        harness._PINNED.clear()
    if "numba" in before:
        sys.modules["numba"].set_num_threads(before["numba"])
    if "torch" in before:
        sys.modules["torch"].set_num_threads(before["torch"])
    if "faiss" in before:
        sys.modules["faiss"].omp_set_num_threads(before["faiss"])
