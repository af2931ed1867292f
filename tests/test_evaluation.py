"""Evaluating a checkpoint: its per-case table and CSV, and the shipped checkpoint on the committed
sample cases (no dataset needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainseg import paths
from brainseg.config import TrainConfig
from brainseg.evaluation import evaluate_checkpoint, evaluation_cases, format_table, metrics_csv
from brainseg.metrics import METRIC_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "kaggle_3m"
WEIGHTS = paths.shipped_checkpoint()


def test_table_and_csv_sort_the_cases_and_end_with_mean_and_median():
    rows = {"b": dict.fromkeys(METRIC_COLUMNS, 0.5), "a": dict.fromkeys(METRIC_COLUMNS, 1.0)}
    assert format_table(rows).splitlines() == [
        "case".ljust(24) + "".join(f" {c:>10}" for c in ("dsc", "dsc_no_lcc", "precision", "recall", "hd95_px")),
        "b".ljust(24) + "     0.5000" * 5,  # worst first
        "a".ljust(24) + "     1.0000" * 5,
        "mean".ljust(24) + "     0.7500" * 5,
        "median".ljust(24) + "     0.7500" * 5]
    assert metrics_csv(rows).splitlines() == ["case," + ",".join(METRIC_COLUMNS), "a" + ",1" * 8, "b" + ",0.5" * 8,
                                              "mean" + ",0.75" * 8, "median" + ",0.75" * 8]


def test_an_unknown_split_is_named():
    with pytest.raises(ValueError, match=r"split must be one of \('reference', 'kfold', 'all'\), got 'random'"):
        evaluation_cases(TrainConfig.from_preset("smoke"), "random", None)


@pytest.mark.slow
def test_shipped_weights_reproduce_the_recorded_dsc_on_the_samples(tmp_path, monkeypatch):
    recorded = json.loads((ROOT / "results" / f"{WEIGHTS.stem}.json").read_text())["per_case"]
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path)  # the default output folder, under tmp_path
    report = evaluate_checkpoint(str(WEIGHTS), split="all", data_dir=str(SAMPLES), cache_dir=str(tmp_path / "cache"),
                                 device="cpu", progress=False)
    assert set(report["per_case"]) == {"TCGA_CS_4944_20010208", "TCGA_HT_7616_19940813"}
    for case, dsc in report["per_case"].items():
        assert dsc == pytest.approx(recorded[case], abs=1e-3)  # half-precision weights change DSC by < 2e-4
    demo = tmp_path / "predictions" / f"{WEIGHTS.stem}-all"  # not the run's own split: a folder of its own
    assert report["out_dir"] == str(demo)
    assert (demo / "dsc.png").is_file() and (demo / "TCGA_HT_7616_19940813.gif").is_file()
