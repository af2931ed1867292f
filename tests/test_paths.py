"""Default folders resolve to the repository's top level from any working directory; explicit paths
are used as given."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainseg import paths
from brainseg.config import TrainConfig
from brainseg.data.kaggle import DATA_ENV_VAR, DatasetError, resolve_data_dir

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cwd", [ROOT, ROOT / "notebooks", Path("/")])
def test_defaults_are_the_top_level_folders_from_any_working_directory(cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    assert paths.project_root() == ROOT
    assert (paths.logs_dir(), paths.weights_dir(), paths.predictions_dir(), paths.results_dir(), paths.docs_dir()) == (
        ROOT / "logs", ROOT / "weights", ROOT / "predictions", ROOT / "results", ROOT / "docs")
    assert paths.shipped_checkpoint().is_file()
    assert TrainConfig.from_preset("smoke").run_dirs("r") == (ROOT / "logs" / "r", ROOT / "weights" / "r")


def test_default_data_folder_is_the_repositorys(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=f"Looked at:\n  - {ROOT / 'data' / 'kaggle_3m'} \\(default\\)"):
        resolve_data_dir()


def test_explicit_relative_paths_stay_relative_to_the_working_directory():
    assert paths.or_default("logs", paths.logs_dir()) == Path("logs")
    assert paths.or_default(None, paths.logs_dir()) == ROOT / "logs"
    assert TrainConfig.from_preset("smoke", logs_dir="my-logs", weights_dir="w").run_dirs("r") == (
        Path("my-logs/r"), Path("w/r"))


def test_installed_elsewhere_the_root_is_found_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "__file__", str(tmp_path / "site-packages" / "brainseg" / "paths.py"))
    repo = tmp_path / "checkout"
    (repo / "brainseg").mkdir(parents=True)
    (repo / "brainseg" / "__init__.py").write_text("")
    (repo / "pyproject.toml").write_text("")
    (repo / "notebooks").mkdir()
    monkeypatch.chdir(repo / "notebooks")
    assert paths.project_root() == repo
    monkeypatch.chdir(tmp_path)  # outside any checkout: the working directory
    assert paths.project_root() == tmp_path


def test_records_hold_paths_relative_to_the_repository(tmp_path):
    assert paths.relative_to_root(ROOT / "results" / "x-folds.json") == "results/x-folds.json"
    assert paths.relative_to_root(tmp_path / "x.json") == str(tmp_path / "x.json")


def test_a_long_name_keeps_its_head_and_tail_around_a_hash():
    assert paths.file_stem("ensemble-a+b") == "ensemble-a+b"
    long_a, long_b = "paired-" + "x" * 300 + "-seed42-cv5", "paired-" + "x" * 300 + "-seed43-cv5"
    stem_a, stem_b = paths.file_stem(long_a), paths.file_stem(long_b)
    assert len(stem_a) == len(stem_b) == 200 and stem_a != stem_b
    assert stem_a.startswith("paired-xxx") and stem_a.endswith("-seed42-cv5")  # both ends say which runs
    assert stem_a == paths.file_stem(long_a)  # the same name, the same file
    assert paths.file_stem("y" * 200) == "y" * 200 and len(paths.file_stem("y" * 201)) == 200
    assert len(paths.file_stem("é" * 150).encode()) <= 200  # bytes count, not characters
