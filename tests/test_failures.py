"""Failure analysis on synthetic volumes with known lesions, copies and predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainseg.data.volume import CaseVolume
from brainseg.failures import (analyse_failures, blank_channels, classify, components, data_causes, data_profile,
                               failures_markdown, flair_copies, prediction_profile, slices_that_matter)
from brainseg.data.preprocess import Geometry


def _volume(copies: tuple[int, ...] = (), lesion_value: float = 3.0, size: int = 256) -> CaseVolume:
    """8 slices of brain (value 1 +- noise) on a background of -3 (a standardised volume's zeros) with
    a 20x20x4 lesion on the 256 metric grid; ``copies`` channels equal FLAIR; image and training mask
    subsampled to ``size``."""
    rng = np.random.default_rng(0)
    image = np.full((8, 3, 256, 256), -3.0, dtype=np.float32)
    image[:, :, 40:200, 40:200] = 1 + rng.normal(0, 0.5, (8, 3, 160, 160))
    mask = np.zeros((8, 256, 256), dtype=np.uint8)
    mask[2:6, 100:120, 100:120] = 1
    image[:, 1][mask.astype(bool)] = lesion_value
    for channel in copies:
        image[:, channel] = image[:, 1]
    geometry = Geometry((0, 8), (0, 256), (0, 256), (0, 0), (0, 0), size)
    step = 256 // size
    return CaseVolume("TCGA_XX_0000_20000101", image[..., ::step, ::step].astype(np.float16),
                      mask[..., ::step, ::step].copy(), mask, geometry)


def test_flair_copies_name_the_missing_scans():
    assert flair_copies(_volume()) == []
    assert flair_copies(_volume(copies=(2,))) == ["post-contrast"]
    assert flair_copies(_volume(copies=(0, 2))) == ["pre-contrast", "post-contrast"]


def test_blank_channels_name_a_contrast_scan_dark_on_the_brain():
    volume = _volume()
    assert blank_channels(volume) == []
    volume.image[:, 0, 40:200, 40:200] = -3  # pre-contrast as dark as the background on the whole brain
    volume.image[:, 0, :, :4] = 5  # a bright rim, like the skull
    assert blank_channels(volume) == ["pre-contrast"]


def test_data_profile_measures_the_lesion_and_its_contrast():
    profile = data_profile(_volume())
    assert profile["lesion_voxels"] == 4 * 20 * 20 and profile["lesion_slices"] == 4
    assert profile["truth_components"] == 1 and profile["truth_largest_share"] == 1.0
    assert profile["lesion_flair_z"] == pytest.approx(4.0, abs=0.1)  # (3 - 1) / 0.5: the background is not brain
    assert data_profile(_volume(lesion_value=1.0))["lesion_flair_z"] == pytest.approx(0.0, abs=0.1)


def test_components_are_face_connected_and_sorted():
    mask = np.zeros((3, 5, 5), dtype=bool)
    mask[0, 0, 0:3] = True  # 3 voxels
    mask[1, 1, 1] = True  # touches the first only by an edge: separate
    mask[2, 4, 4] = True
    assert components(mask).tolist() == [3, 1, 1]
    assert components(np.zeros((2, 2, 2), dtype=bool)).size == 0


def test_prediction_profile_sees_the_largest_component_rule_drop_the_lesion():
    volume = _volume()
    probs = np.zeros(volume.metric_mask.shape, dtype=np.float32)
    probs[2:6, 100:120, 100:110] = 0.9  # half the lesion: 800 voxels
    probs[0:8, 10:30, 10:30] = 0.9  # a larger false component: 3200 voxels
    profile = prediction_profile(probs, volume.metric_mask)
    assert profile["pred_components"] == 2 and profile["lcc_dropped_truth"]
    assert profile["dsc"] == 0.0 and profile["precision"] == 0.0 and profile["recall"] == 0.0
    assert profile["dsc_without_lcc"] == pytest.approx(2 * 800 / (4000 + 1600))
    assert classify({**data_profile(volume), **profile})[:1] == ["wrong component kept"]


def test_classify_orders_causes_and_falls_back_to_other():
    base = {"flair_copies": [], "blank_channels": [], "truth_components": 1, "truth_largest_share": 1.0,
            "lesion_flair_z": 2.0, "lesion_voxels": 20000}
    assert classify(base) == ["other"]
    assert classify({**base, "flair_copies": ["post-contrast"], "lesion_flair_z": 0.5}) == [
        "missing modality", "atypical intensity"]
    predicted = {"lcc_dropped_truth": False, "dsc": 0.3, "dsc_without_lcc": 0.32, "precision": 0.9, "recall": 0.2}
    assert classify({**base, **predicted}) == ["under-segmented"]
    assert classify({**base, **predicted, "lesion_voxels": 3000}) == ["small lesion missed", "under-segmented"]
    assert classify({**base, **predicted, "precision": 0.3, "recall": 0.9}) == ["over-segmented"]
    assert classify({**base, "truth_components": 4, "truth_largest_share": 0.4}) == ["label oddity"]
    assert classify({**base, "blank_channels": ["post-contrast"]}) == ["missing modality"]
    assert classify({**base, "lesion_voxels": 3000}) == ["small lesion missed"]  # no prediction: size alone


def test_slices_that_matter_are_the_lesion_then_the_errors():
    volume = _volume()
    probs = np.zeros(volume.metric_mask.shape, dtype=np.float32)
    probs[7, 10:20, 10:20] = 0.9  # false positive on slice 7; every lesion slice missed
    assert slices_that_matter(probs, volume.metric_mask) == [2, 7]
    assert slices_that_matter(None, volume.metric_mask) == [2]


def _large_lesion(volume: CaseVolume, lesion_value: float) -> CaseVolume:
    """The volume with a 60x60x6 lesion (21600 voxels, above SMALL_LESION) of ``lesion_value`` on FLAIR."""
    volume.metric_mask[1:7, 80:140, 80:140] = 1
    volume.mask = volume.metric_mask.copy()
    volume.image[:, 1][volume.mask.astype(bool)] = lesion_value
    return volume


def test_data_causes_name_each_cases_main_cause_without_a_prediction(monkeypatch):
    volumes = {"copies": _volume(copies=(0, 2)), "small": _volume(), "faint": _large_lesion(_volume(), 1.2),
               "typical": _large_lesion(_volume(), 3.0), "healthy": _volume()}
    volumes["healthy"].mask[:], volumes["healthy"].metric_mask[:] = 0, 0
    for case_id, volume in volumes.items():
        volume.case_id = case_id
    monkeypatch.setattr("brainseg.data.cache.load_volumes", lambda ids, *a, **k: [volumes[i] for i in ids])
    # the first cause decides (the copies' lesion is small too); without a prediction nothing is "missed"
    assert data_causes(list(volumes)) == {"copies": "missing modality", "small": "small lesion",
                                          "faint": "atypical intensity", "typical": "other", "healthy": "no lesion"}


def test_analyse_failures_without_checkpoints_writes_figures_and_a_table(tmp_path, monkeypatch):
    volume = _volume(copies=(0, 2))
    monkeypatch.setattr("brainseg.data.cache.load_volumes", lambda ids, *a, **k: [volume])
    (tmp_path / "cv.json").write_text(json.dumps({"run": "cv", "per_case": {volume.case_id: 0.2, "TCGA_OK": 0.9},
                                                  "fold_of_case": {volume.case_id: 3, "TCGA_OK": 1}}))
    rows = analyse_failures("cv", 0.6, results_dir=tmp_path, weights_dir=tmp_path / "none",
                            figures_dir=tmp_path / "docs" / "failures")
    assert [r["case"] for r in rows] == [volume.case_id] and rows[0]["fold"] == 3
    assert rows[0]["causes"] == ["missing modality", "small lesion missed"] and "recall" not in rows[0]
    assert (tmp_path / "docs" / "failures" / f"{volume.case_id}.png").stat().st_size > 1000
    text = failures_markdown(rows, tmp_path / "docs")
    assert f"| {volume.case_id} | 3 | 0.200 | 1600 / 4 |" in text
    assert ("pre-contrast (FLAIR copy), post-contrast (FLAIR copy)" in text and "Main cause" in text
            and "missing modality 1" in text)
    assert f"![{volume.case_id}](failures/{volume.case_id}.png)" in text


def test_analyse_failures_predicts_with_the_fold_checkpoint(tmp_path, monkeypatch):
    import torch

    from brainseg.checkpoint import save_checkpoint
    from brainseg.config import TrainConfig
    from brainseg.models import create_model

    volume = _volume(size=64)
    config = TrainConfig.from_preset("smoke", image_size=64, features=4, device="cpu")
    torch.manual_seed(0)
    model = create_model("unet", features=4)
    save_checkpoint(tmp_path / "weights" / "cv-fold1" / "best.pt", model, config, 1, {},
                    trained_on=["TCGA_ZZ_0000_20000101"])
    monkeypatch.setattr("brainseg.data.cache.load_volumes", lambda ids, size, *a, **k: [volume] if size == 64 else [])
    (tmp_path / "cv.json").write_text(json.dumps({"run": "cv", "per_case": {volume.case_id: 0.1},
                                                  "fold_of_case": {volume.case_id: 1}}))
    [row] = analyse_failures("cv", 0.6, results_dir=tmp_path, weights_dir=tmp_path / "weights",
                             figures_dir=tmp_path / "figures")
    assert {"recall", "precision", "pred_components", "dsc_without_lcc"} <= set(row)
    assert 0.0 <= row["dsc"] <= 1.0 and row["lesion_voxels"] == 4 * 20 * 20
    assert (tmp_path / "figures" / f"{volume.case_id}.png").is_file()
    # a fold checkpoint that trained on the case (overwritten by another run of that name) is refused
    save_checkpoint(tmp_path / "weights" / "cv-fold1" / "best.pt", model, config, 1, {},
                    trained_on=[volume.case_id])
    with pytest.raises(ValueError, match=f"trained on 1 of the 1 cases to score \\({volume.case_id}\\)"):
        analyse_failures("cv", 0.6, results_dir=tmp_path, weights_dir=tmp_path / "weights",
                         figures_dir=tmp_path / "figures")


def test_analyse_failures_defaults_to_the_repositorys_folders_from_any_working_directory(repo_elsewhere, monkeypatch):
    volume = _volume()
    monkeypatch.setattr("brainseg.data.cache.load_volumes", lambda ids, *a, **k: [volume])
    (repo_elsewhere / "results" / "cv.json").write_text(json.dumps({"run": "cv", "per_case": {volume.case_id: 0.2},
                                                                    "fold_of_case": {volume.case_id: 0}}))
    [row] = analyse_failures("cv")
    assert row["figure"] == str(repo_elsewhere / "docs" / "failures" / f"{volume.case_id}.png")
    assert f"![{volume.case_id}](failures/{volume.case_id}.png)" in failures_markdown([row])
    outside = {**row, "figure": str(repo_elsewhere / "elsewhere" / "x.png")}  # figures outside the doc's folder
    assert "![" + volume.case_id + "](../elsewhere/x.png)" in failures_markdown([outside])
