"""Shared fixtures: synthetic cases in the Kaggle layout, a training config on them, a run's results
entry, a stand-in repository seen from another working directory, and the real dataset from
$BRAINSEG_DATA. Test modules take these as fixtures; none imports another test module (or this one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg.config import TrainConfig
from brainseg.results import REQUIRED_KEYS


def _write_case(root: Path, case_id: str, slices: int = 6, size: int = 64, seed: int = 0,
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
def write_case():
    """``write_case(root, case_id, slices=6, size=64, seed=0, lesion=True) -> folder``: one synthetic
    case, for tests that lay out cases of their own."""
    return _write_case


@pytest.fixture
def synthetic_data(tmp_path) -> Path:
    """A ``kaggle_3m``-like folder with 12 small synthetic cases (64x64, 6 slices)."""
    root = tmp_path / "kaggle_3m"
    for i in range(12):
        _write_case(root, f"TCGA_XX_{1000 + i}_20000101", seed=i)
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


@pytest.fixture
def synthetic_config():
    """``synthetic_config(data_dir, tmp_path, **overrides)``: the smoke preset on the synthetic cases,
    tiny and fast (32 px, 4 features, 2 epochs, fold 0 of 3), its folders under ``tmp_path``."""
    def make(data_dir, tmp_path, **overrides) -> TrainConfig:
        values = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), logs_dir=str(tmp_path / "logs"),
                      weights_dir=str(tmp_path / "weights"), run_name="synthetic", split="kfold", folds=3,
                      image_size=32, batch_size=4, epochs=2, features=4, workers=0, lr=1e-3,
                      max_train_cases=0, max_val_cases=0)
        values.update(overrides)
        return TrainConfig.from_preset("smoke", **values)

    return make


@pytest.fixture
def run_metrics():
    """``run_metrics(run="r1", dsc=0.8)``: a run's ``metrics.json`` with every key of REQUIRED_KEYS."""
    def make(run: str = "r1", dsc: float = 0.8) -> dict:
        values = {k: "x" for k in REQUIRED_KEYS}
        values.update(run=run, image_size=128, epochs=3, val_mean_dsc=dsc, val_median_dsc=dsc + 0.05,
                      per_case={"a": dsc}, best_epoch=2, wall_time_s=600.0, selection="reference cases (optimistic)")
        return values

    return make


@pytest.fixture
def repo_elsewhere(tmp_path, monkeypatch) -> Path:
    """A stand-in repository ``tmp_path/repo`` (what :mod:`brainseg.paths` resolves defaults into)
    while the working directory is ``tmp_path/notebooks``, which holds ``results/``, ``logs/``,
    ``weights/`` and ``docs/`` folders of its own that a default must not reach."""
    from brainseg import paths

    repo, cwd = tmp_path / "repo", tmp_path / "notebooks"
    for folder in (repo, cwd):
        for name in ("results", "logs", "weights", "docs"):
            (folder / name).mkdir(parents=True)
    monkeypatch.setattr(paths, "project_root", lambda: repo)
    monkeypatch.chdir(cwd)
    return repo


@pytest.fixture
def two_boxes() -> tuple[np.ndarray, np.ndarray]:
    """(probs, truth) of (4, 32, 32): a box of truth, a prediction shifted by 2 rows (6 of 8 rows
    overlap: 96 of 128 voxels) and a separate 4-voxel false positive."""
    truth = np.zeros((4, 32, 32), bool)
    truth[1:3, 8:16, 8:16] = True
    probs = np.zeros((4, 32, 32))
    probs[1:3, 10:18, 8:16] = 0.9  # shifted by 2 rows: 6 of 8 rows overlap
    probs[0, 28:30, 28:30] = 0.8  # a separate false positive, removed by the largest-component rule
    return probs, truth
