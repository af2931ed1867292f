import argparse
import subprocess
import sys
from dataclasses import fields

import pytest

from brainseg import cli
from brainseg.cli import build_parser, main
from brainseg.config import TrainConfig

COMMANDS = {("train",): "_train", ("cv",): "_cv", ("evaluate",): "_evaluate",
            ("predict", "--weights", "w", "--case", "c", "--out", "o"): "_predict",
            ("compact", "--weights", "w", "--out", "o"): "_compact", ("results", "export", "r"): "_results_export",
            ("results", "table"): "_results_table", ("results", "compare"): "_results_compare",
            ("results", "paired", "a", "b"): "_results_paired", ("results", "ensemble", "a", "b"): "_results_ensemble",
            ("results", "failures", "cv"): "_results_failures", ("results", "spread", "a", "b"): "_results_spread",
            ("results", "postprocess", "cv"): "_results_postprocess", ("bench",): "_bench", ("report",): "_report"}


def parsers(parser: argparse.ArgumentParser, name: str = "python -m brainseg"):
    """The parser of every command and sub-command, with its name."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_train_help_documents_every_field(capsys):
    with pytest.raises(SystemExit, match="^0$"):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    flags = {"model_args": "--model-arg", "loss_args": "--loss-arg"}
    for f in fields(TrainConfig):
        assert flags.get(f.name, f"--{f.name.replace('_', '-')}") in text


def test_cv_help_says_that_without_fold_every_fold_trains(capsys):
    with pytest.raises(SystemExit, match="^0$"):
        build_parser().parse_args(["cv", "--help"])
    fold_help = capsys.readouterr().out.split("--fold FOLD")[-1].split("--split-seed")[0]  # the option, not the usage
    assert "every fold in turn" in " ".join(fold_help.split()) and "else 0" not in fold_help
    assert build_parser().parse_args(["cv"]).fold is None  # what run_cv reads as every fold


def test_every_command_has_help_and_shows_every_default():
    names = []
    for name, parser in parsers(build_parser()):
        names.append(name)
        assert parser.format_help().startswith(f"usage: {name} ")
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.required or isinstance(
                    action, (argparse._HelpAction, argparse._StoreTrueAction)):
                continue
            assert "default" in formatter._get_help_string(action), f"{name} {action.option_strings[0]}"
    assert len(names) == 1 + 8 + 8  # the program, its commands, the results actions


def test_every_data_folder_option_takes_both_spellings_and_no_help_shows_a_doubled_percent():
    with_data = []
    for name, parser in parsers(build_parser()):
        assert "%%" not in parser.format_help(), name
        options = {o for a in parser._actions if a.dest == "data_dir" for o in a.option_strings}
        if options and not name.endswith(" bench"):  # bench's --data times data preparation
            with_data.append(name)
            assert {"--data", "--data-dir"} <= options, f"{name}: {options}"
    assert len(with_data) >= 7, with_data


@pytest.mark.parametrize("argv, function", COMMANDS.items(), ids=[" ".join(a[:2]) for a in COMMANDS])
def test_each_command_dispatches_to_its_function(argv, function):
    assert build_parser().parse_args(list(argv)).func is getattr(cli, function)


def test_cv_validates_every_5_epochs_unless_told():
    args = build_parser().parse_args(["cv", "--preset", "smoke"])
    assert args.val_every == 5 and cli._config_from_args(args, drop=("fold", "results_dir")).val_every == 5
    args = build_parser().parse_args(["cv", "--val-every", "2"])
    assert cli._config_from_args(args, drop=("fold", "results_dir")).val_every == 2
    assert cli._config_from_args(build_parser().parse_args(["train", "--preset", "smoke"])).val_every == 1


def test_model_and_loss_arguments_reach_the_config(capsys):
    args = build_parser().parse_args(["train", "--model", "unet_plus_plus", "--loss", "tversky",
                                      "--loss-arg", "alpha=0.2", "--loss-arg", "beta=0.8",
                                      "--model-arg", "inference=mean", "--model-arg", "deep_supervision=false"])
    assert dict(args.loss_args) == {"alpha": 0.2, "beta": 0.8}
    assert dict(args.model_args) == {"inference": "mean", "deep_supervision": False}
    config = cli._config_from_args(args)
    assert (config.loss, config.loss_args, config.model_args) == (
        "tversky", {"alpha": 0.2, "beta": 0.8}, {"inference": "mean", "deep_supervision": False})
    with pytest.raises(SystemExit, match="^2$"):
        build_parser().parse_args(["train", "--loss-arg", "alpha"])
    assert "expected KEY=VALUE with KEY a Python name, got 'alpha'" in capsys.readouterr().err


def test_bad_values_exit_with_a_message(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_DATA", str(tmp_path / "missing"))
    assert main(["train", "--preset", "smoke", "--image-size", "100"]) == 2
    assert "image_size must be a positive multiple of 16" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--logs-dir", str(tmp_path)]) == 2
    assert "kagglehub" in capsys.readouterr().err
    assert main(["evaluate", "--weights", str(tmp_path / "none.pt")]) == 2
    assert f"{tmp_path / 'none.pt'}: no checkpoint file" in capsys.readouterr().err


def test_boolean_flags(capsys):
    args = build_parser().parse_args(["train", "--amp", "false", "--channels-last", "yes"])
    assert args.amp is False and args.channels_last is True
    assert build_parser().parse_args(["train", "--amp", "auto"]).amp == "auto"
    with pytest.raises(SystemExit, match="^2$"):
        build_parser().parse_args(["train", "--amp", "maybe"])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_brainseg_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "brainseg", "--help"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "{train,cv,evaluate,predict,compact,results,bench,report}" in done.stdout
