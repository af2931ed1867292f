"""The committed sample cases and shipped checkpoint: the demo works without the full dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainseg import paths
from brainseg.data.kaggle import discover_cases, read_case
from brainseg.evaluation import evaluate_checkpoint
from brainseg.data.preprocess import preprocess_case, restore_geometry

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "kaggle_3m"
WEIGHTS = paths.shipped_checkpoint()


@pytest.mark.parametrize("size, max_error", [(256, 0.005), (128, 0.08)])
def test_restoring_a_preprocessed_mask_reproduces_the_original(size, max_error):
    """Measured on the two samples: 0% of the lesion differs at 256 px, 4.0% and 5.9% at 128 px."""
    for files in discover_cases(SAMPLES).values():
        image, mask = read_case(files)
        _, labels, geometry = preprocess_case(image, mask, size)
        restored = restore_geometry(labels, geometry, mask.shape, order=0) > 0.5
        truth = mask > 0
        truth[[0, -1]] = False  # preprocessing drops the first and last slice
        assert restored.shape == mask.shape
        assert np.logical_xor(restored, truth).sum() / truth.sum() <= max_error


def test_shipped_weights_reproduce_the_recorded_dsc_on_the_samples(tmp_path):
    recorded = json.loads((ROOT / "results" / f"{WEIGHTS.stem}.json").read_text())["per_case"]
    report = evaluate_checkpoint(str(WEIGHTS), split="all", data_dir=str(SAMPLES), cache_dir=str(tmp_path / "cache"),
                                 out_dir=str(tmp_path / "demo"), device="cpu", progress=False)
    assert set(report["per_case"]) == {"TCGA_CS_4944_20010208", "TCGA_HT_7616_19940813"}
    for case, dsc in report["per_case"].items():
        assert dsc == pytest.approx(recorded[case], abs=1e-3)  # half-precision weights change DSC by < 2e-4
    assert (tmp_path / "demo" / "dsc.png").is_file() and (tmp_path / "demo" / "TCGA_HT_7616_19940813.gif").is_file()
