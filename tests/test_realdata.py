"""Tests on the real Kaggle LGG dataset ($BRAINSEG_DATA). They skip without it, except in CI (CI=true)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.exposure import rescale_intensity
from skimage.transform import resize

from brainseg.data.cache import load_volumes
from brainseg.checkpoint import load_model
from brainseg.cli import main
from brainseg.data.kaggle import discover_cases, read_case
from brainseg.data.preprocess import preprocess_case
from brainseg.runtime import Runtime
from brainseg.validation import predict_volume

pytestmark = pytest.mark.realdata
CASE = "TCGA_CS_4944_20010208"  # a reference validation case


def reference_preprocessing(image: np.ndarray, mask: np.ndarray, size: int):
    """docs/protocol.md, section 2, written independently in float64 with the reference's skimage calls."""
    volume, labels = image[1:-1].astype(np.float64), mask[1:-1]
    volume[volume < np.max(volume) * 0.1] = 0
    nonzero = [np.nonzero(volume.max(axis=tuple(a for a in range(4) if a != axis)))[0] for axis in range(3)]
    box = tuple(slice(n.min(), n.max() + 1) for n in nonzero)
    volume, labels = volume[box], labels[box]
    a, b = volume.shape[1:3]
    diff = (max(a, b) - min(a, b)) / 2.0
    pad = (int(np.floor(diff)), int(np.ceil(diff)))
    padding = ((0, 0), (0, 0), pad) if a > b else ((0, 0), pad, (0, 0))
    labels = np.pad(labels, padding)
    volume = np.pad(volume, padding + ((0, 0),))
    labels = resize(labels, (labels.shape[0], size, size), order=0, mode="constant", cval=0, anti_aliasing=False)
    volume = resize(volume, (volume.shape[0], size, size, 3), order=2, mode="constant", cval=0, anti_aliasing=False)
    p10, p99 = np.percentile(volume, 10), np.percentile(volume, 99)
    volume = rescale_intensity(volume, in_range=(p10, p99))
    volume = (volume - volume.mean(axis=(0, 1, 2))) / volume.std(axis=(0, 1, 2))
    return volume, labels > 0


def test_dataset_is_complete(real_data):
    cases = discover_cases(real_data)
    assert len(cases) == 110
    assert sum(len(files.images) for files in cases.values()) == 3929


def test_one_case_loads_with_documented_shapes_and_pixels(real_data):
    files = discover_cases(real_data)[CASE]
    image, mask = read_case(files)
    assert image.shape == (len(files.images), 256, 256, 3) and image.dtype == np.uint8
    assert mask.shape == (len(files.images), 256, 256) and set(np.unique(mask)) <= {0, 255}
    manifest_path = Path(real_data).parent / "manifest.csv"
    if manifest_path.exists():  # the shared copy ships SHA-256 of the decoded pixels
        with open(manifest_path) as handle:
            manifest = {row["file"]: row for row in csv.DictReader(handle)}
        for i in (0, len(files.images) // 2):
            for array, path in ((image[i], files.images[i]), (mask[i], files.masks[i])):
                row = manifest[f"{CASE}/{path.name}"]
                assert hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == row["pixels_sha256"]


def test_preprocessing_matches_an_independent_implementation(real_data):
    image, mask = read_case(discover_cases(real_data)[CASE])
    ours, labels, geometry = preprocess_case(image, mask, 256)
    expected, expected_labels = reference_preprocessing(image, mask, 256)
    assert ours.shape == expected.shape and geometry.size == 256
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    np.testing.assert_array_equal(labels.astype(bool), expected_labels)


def test_smoke_training_end_to_end(real_data, tmp_path, capsys):
    logs, weights = tmp_path / "logs", tmp_path / "weights"
    code = main(["train", "--preset", "smoke", "--run-name", "smoke", "--data", str(real_data),
                 "--logs-dir", str(logs), "--weights-dir", str(weights), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    run = logs / "smoke"
    assert {"config.json", "history.csv", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("best_epoch", "val_mean_dsc", "val_median_dsc", "per_case", "wall_time_s", "device",
                "torch_version", "command"):
        assert key in metrics
    assert len(metrics["per_case"]) == 2 and 0 <= metrics["val_mean_dsc"] <= 1
    assert "val DSC mean" in capsys.readouterr().out

    # A reloaded checkpoint gives identical predictions to the model it was saved from.
    model, config = load_model(weights / "smoke" / "best.pt")
    assert config.preset == "smoke" and config.image_size == 64
    volume = load_volumes([CASE], 64, real_data, tmp_path / "cache", progress=False)[0]
    runtime = Runtime(torch.device("cpu"), amp=False, channels_last=False)
    again, _ = load_model(weights / "smoke" / "best.pt")
    assert torch.equal(predict_volume(model, volume.image, runtime), predict_volume(again, volume.image, runtime))

    # evaluate prints the table and writes the CSV, the chart, overlays and GIFs
    out = tmp_path / "report"
    assert main(["evaluate", "--weights", str(weights / "smoke" / "best.pt"), "--data", str(real_data),
                 "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(out)]) == 0
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0][:3] == ["case", "dsc", "dsc_no_lcc"] and [r[0] for r in rows[-2:]] == ["mean", "median"]
    assert len(rows) == 13  # header, 10 reference validation cases, mean, median
    assert "median" in capsys.readouterr().out
    assert (out / "dsc.png").stat().st_size > 1000
    assert (out / f"{CASE}.gif").exists() and (out / CASE / "01.png").exists()
