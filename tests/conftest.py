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
