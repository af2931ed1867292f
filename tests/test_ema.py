"""The moving average of the weights (``ema``): what is validated and saved, and its resume."""

import pytest
import torch

from brainseg.checkpoint import load_checkpoint
from brainseg.config import TrainConfig
from brainseg.train import fit


def ema_config(data, root, **overrides) -> TrainConfig:
    values = dict(data_dir=str(data), cache_dir=str(root / "cache"), logs_dir=str(root / "logs"),
                  weights_dir=str(root / "weights"), run_name="ema", split="kfold", folds=3, image_size=32,
                  batch_size=4, epochs=2, features=4, max_train_cases=0, lr=1e-2, selection="last", device="cpu")
    values.update(overrides)
    return TrainConfig.preset("smoke", **values)


def saved(root, name) -> dict:
    return load_checkpoint(root / "weights" / "ema" / name)


def test_the_average_is_what_is_saved_and_it_lags_the_weights(synthetic_data, tmp_path):
    fit(ema_config(synthetic_data, tmp_path, ema=0.9), progress=False)
    best, last = saved(tmp_path, "best.pt"), saved(tmp_path, "last.pt")
    weights, average = last["state_dict"], last["averaged"]
    for key, value in best["state_dict"].items():  # best.pt (selection last) holds the average
        assert torch.equal(value, average[f"module.{key}"]), key
    conv = "encoders.0.0.weight"
    assert not torch.allclose(best["state_dict"][conv], weights[conv])
    assert int(average["n_averaged"]) == last["scheduler"]["last_epoch"] > 0  # one update per step


def test_a_tiny_decay_follows_the_weights(synthetic_data, tmp_path):
    fit(ema_config(synthetic_data, tmp_path, ema=1e-12), progress=False)
    best, last = saved(tmp_path, "best.pt"), saved(tmp_path, "last.pt")
    for key, value in last["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(best["state_dict"][key], value, msg=key)


def test_resume_restores_the_average(synthetic_data, tmp_path):
    fit(ema_config(synthetic_data, tmp_path / "whole", ema=0.9), progress=False)
    fit(ema_config(synthetic_data, tmp_path / "parts", ema=0.9, epochs=1), progress=False)
    fit(ema_config(synthetic_data, tmp_path / "parts", ema=0.9), progress=False, resume=True)
    whole, parts = saved(tmp_path / "whole", "best.pt"), saved(tmp_path / "parts", "best.pt")
    for key, value in whole["state_dict"].items():
        assert torch.equal(parts["state_dict"][key], value), key


def test_ema_range_is_checked():
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\), got 1"):
        TrainConfig.preset("smoke", ema=1)
