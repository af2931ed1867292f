"""A smoke training end to end on the real Kaggle LGG dataset ($BRAINSEG_DATA): train, reload the
checkpoint, evaluate. It skips without the dataset, except in CI (CI=true)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from brainseg.checkpoint import load_model
from brainseg.cli import main
from brainseg.data.cache import load_volumes
from brainseg.runtime import Runtime
from brainseg.validation import predict_volume

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
CASE = "TCGA_CS_4944_20010208"  # a reference validation case


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
