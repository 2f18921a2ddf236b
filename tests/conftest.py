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
