from dataclasses import fields

import pytest

from brainseg.cli import build_parser, main
from brainseg.config import TrainConfig


def test_train_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    flags = {"model_args": "--model-arg", "loss_args": "--loss-arg"}
    for f in fields(TrainConfig):
        assert flags.get(f.name, f"--{f.name.replace('_', '-')}") in text


def test_model_and_loss_arguments_reach_the_config():
    args = build_parser().parse_args(["train", "--loss", "tversky", "--loss-arg", "alpha=0.2", "--loss-arg", "beta=0.8",
                                      "--model-arg", "inference=mean", "--model-arg", "deep_supervision=false"])
    assert dict(args.loss_args) == {"alpha": 0.2, "beta": 0.8}
    assert dict(args.model_args) == {"inference": "mean", "deep_supervision": False}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--loss-arg", "alpha"])


def test_unknown_loss_argument_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_DATA", str(tmp_path / "missing"))
    from brainseg.losses import create_loss

    with pytest.raises(ValueError, match=r"loss 'dice' has no argument\(s\) \['alpha'\]; it accepts: smooth, per_sample"):
        create_loss("dice", alpha=0.3)


def test_bad_values_exit_with_a_message(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_DATA", str(tmp_path / "missing"))
    assert main(["train", "--preset", "smoke", "--image-size", "100"]) == 2
    assert "image_size must be a positive multiple of 16" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--logs-dir", str(tmp_path)]) == 2
    assert "kagglehub" in capsys.readouterr().err
    assert main(["evaluate", "--weights", str(tmp_path / "none.pt")]) == 2
    assert "no checkpoint there" in capsys.readouterr().err


def test_boolean_flags():
    args = build_parser().parse_args(["train", "--amp", "false", "--channels-last", "yes"])
    assert args.amp is False and args.channels_last is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--amp", "maybe"])
