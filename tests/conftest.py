"""Shared fixtures: a synthetic dataset in the Kaggle layout, and the real dataset from $BRAINSEG_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile


def write_case(root: Path, case_id: str, slices: int = 6, size: int = 64, seed: int = 0,
               lesion: bool = True) -> Path:
    """Write one synthetic case: a bright disc ("brain") with a brighter square lesion on the middle slices."""
    rng = np.random.default_rng(seed)
    folder = root / case_id
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    brain = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    for n in range(1, slices + 1):
        image = np.zeros((size, size, 3), np.uint8)
        image[brain] = rng.integers(80, 160, size=(brain.sum(), 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if lesion and 1 < n < slices:
            mask[size // 2 - 4:size // 2 + 4, size // 2 - 6:size // 2 + 2] = 255
            image[mask > 0] = 230
        tifffile.imwrite(folder / f"{case_id}_{n}.tif", image)
        tifffile.imwrite(folder / f"{case_id}_{n}_mask.tif", mask)
    return folder


@pytest.fixture
def synthetic_data(tmp_path) -> Path:
    """A ``kaggle_3m``-like folder with 12 small synthetic cases (64x64, 6 slices)."""
    root = tmp_path / "kaggle_3m"
    for i in range(12):
        write_case(root, f"TCGA_XX_{1000 + i}_20000101", seed=i)
    return root


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real dataset from ``$BRAINSEG_DATA``; skipped when absent, except in CI where it must exist."""
    path = os.environ.get("BRAINSEG_DATA")
    if path and Path(path).is_dir():
        return Path(path)
    message = "real-data test needs $BRAINSEG_DATA pointing at kaggle_3m"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: real-data tests must run)")
    pytest.skip(message)
