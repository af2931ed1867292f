"""Determinism on CPU and resuming after a crash (SIGKILL mid-epoch)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from brainseg.checkpoint import load_checkpoint
from brainseg.config import TrainConfig
from brainseg.train import fit

COMPARED = ("epoch", "train_loss", "val_loss", "val_mean_dsc", "val_median_dsc", "lr")  # not the timings


@pytest.fixture
def longer_data(tmp_path, write_case) -> Path:
    root = tmp_path / "kaggle_3m"
    for i in range(9):
        write_case(root, f"TCGA_XX_{2000 + i}_20000101", slices=16, size=32, seed=i)
    return root


def config_for(data: Path, root: Path, **overrides) -> TrainConfig:
    values = dict(data_dir=str(data), cache_dir=str(root / "cache"), logs_dir=str(root / "logs"),
                  weights_dir=str(root / "weights"), run_name="r", split="kfold", folds=3, image_size=32,
                  batch_size=4, epochs=3, features=4, workers=1, lr=1e-3, max_train_cases=0, max_val_cases=0,
                  scheduler="cosine", warmup_epochs=0.5, device="cpu")  # the claim is CPU determinism
    values.update(overrides)
    return TrainConfig.from_preset("smoke", **values)


def history(root: Path) -> list[tuple]:
    with open(root / "logs" / "r" / "history.csv") as handle:
        return [tuple(row[c] for c in COMPARED) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_same_seed_gives_identical_runs(longer_data, tmp_path):
    first = fit(config_for(longer_data, tmp_path / "a"), progress=False)
    second = fit(config_for(longer_data, tmp_path / "b"), progress=False)
    assert history(tmp_path / "a") == history(tmp_path / "b")
    assert first["per_case"] == second["per_case"]
    a = load_checkpoint(tmp_path / "a" / "weights" / "r" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "weights" / "r" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_repeats_the_uninterrupted_run(longer_data, tmp_path):
    epochs = 5
    fit(config_for(longer_data, tmp_path / "whole", epochs=epochs), progress=False)

    root = tmp_path / "killed"
    args = ["--preset", "smoke", "--run-name", "r", "--data", str(longer_data), "--cache-dir", str(root / "cache"),
            "--logs-dir", str(root / "logs"), "--weights-dir", str(root / "weights"), "--split", "kfold",
            "--folds", "3", "--image-size", "32", "--batch-size", "4", "--epochs", str(epochs), "--features", "4",
            "--workers", "1", "--lr", "0.001", "--max-train-cases", "0", "--max-val-cases", "0",
            "--scheduler", "cosine", "--warmup-epochs", "0.5", "--device", "cpu"]
    process = subprocess.Popen([sys.executable, "-m", "brainseg", "train", *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    history_file = root / "logs" / "r" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if history_file.exists() and len(history_file.read_text().splitlines()) >= 3:  # header + 2 epochs
            time.sleep(0.2)  # into epoch 3
            break
        time.sleep(0.02)
    if process.poll() is None:  # a fast machine may have finished already: the assert below says so
        os.killpg(process.pid, signal.SIGKILL)  # the run and its DataLoader worker
    process.wait()
    done_before_kill = len(history(root))
    assert 1 <= done_before_kill < epochs, "the run was not interrupted mid-way"

    from brainseg.cli import main

    assert main(["train", "--resume", str(root / "logs" / "r")]) == 0
    assert history(root) == history(tmp_path / "whole")
    whole = load_checkpoint(tmp_path / "whole" / "weights" / "r" / "last.pt")["state_dict"]
    resumed = load_checkpoint(root / "weights" / "r" / "last.pt")["state_dict"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    metrics = json.loads((root / "logs" / "r" / "metrics.json").read_text())
    assert metrics["command"].startswith("python -m brainseg train --preset smoke")  # the run's own command
    assert metrics["commands"][1:] == [f"python -m brainseg train --resume {root / 'logs' / 'r'}"]


def test_resume_errors(tmp_path, capsys):
    from brainseg.cli import main

    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="resume needs the run_name"):
        fit(TrainConfig.from_preset("smoke"), resume=True)


def test_a_default_named_run_saves_its_name_and_resumes(synthetic_data, tmp_path):
    config = TrainConfig.from_preset("smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"),
                                logs_dir=str(tmp_path / "logs"), weights_dir=str(tmp_path / "weights"), split="kfold",
                                folds=3, image_size=32, features=4, max_train_cases=0, max_minutes=1e-9)
    first = fit(config, progress=False)  # the time limit stops it after epoch 1 of 2
    name = first["run"]
    assert name.startswith("smoke-unet-") and first["config"]["run_name"] == name and first["epochs"] == 1
    saved = json.loads((tmp_path / "logs" / name / "config.json").read_text())
    assert (saved["run_name"] == name
            and load_checkpoint(tmp_path / "weights" / name / "last.pt")["config"]["run_name"] == name)

    from brainseg.cli import main

    stale = tmp_path / "weights" / name / ".last.pt.x7q2.tmp"  # a checkpoint write cut by a kill
    stale.write_bytes(b"half")
    assert main(["train", "--resume", str(tmp_path / "logs" / name), "--max-minutes", "0"]) == 0
    assert not stale.exists()
    finished = json.loads((tmp_path / "logs" / name / "metrics.json").read_text())
    assert (finished["epochs"] == 2 and finished["config"]["max_minutes"] == 0
            and finished["stop_reason"] != "max_minutes")


def test_a_new_run_over_an_existing_one_and_a_resume_with_another_recipe_are_refused(synthetic_data, tmp_path, capsys):
    config = TrainConfig.from_preset("smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"),
                                logs_dir=str(tmp_path / "logs"), weights_dir=str(tmp_path / "weights"), split="kfold",
                                folds=3, image_size=32, features=4, max_train_cases=0, run_name="mine", epochs=1)
    fit(config, progress=False)
    before = (tmp_path / "weights" / "mine" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"run mine already exists .*train --resume .*logs/mine`, "
                                         r"choose another --run-name, or remove both"):
        fit(config, progress=False)
    assert (tmp_path / "weights" / "mine" / "last.pt").read_bytes() == before  # nothing overwritten
    with pytest.raises(ValueError, match=r"last.pt was trained with another recipe .*lr: 0.0001 -> 0.05"):
        fit(replace(config, lr=0.05), progress=False, resume=True)

    from brainseg.cli import main

    assert main(["train", "--resume", str(tmp_path / "logs" / "mine"), "--lr", "0.05", "--epochs", "3"]) == 2
    assert "--epochs, --lr cannot be given with it" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "logs" / "mine"), "--device", "cpu"]) == 2  # kept as started
    assert "--device cannot be given with it" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "logs" / "mine"), "--preset", "gpu"]) == 2  # not silently ignored
    assert "--preset cannot be given with it" in capsys.readouterr().err

