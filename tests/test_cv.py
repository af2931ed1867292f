import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from brainseg.checkpoint import save_checkpoint
from brainseg.cv import bootstrap_interval, pool_folds, run_cv, write_folds
from brainseg.data.kaggle import discover_cases
from brainseg.data.splits import folds_from_file
from brainseg.models import create_model


def test_bootstrap_interval_brackets_the_statistic_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    small, large = rng.uniform(0.6, 1.0, 20), rng.uniform(0.6, 1.0, 2000)
    low, high = bootstrap_interval(small)
    assert low < small.mean() < high
    low_l, high_l = bootstrap_interval(large)
    assert high_l - low_l < (high - low) / 5  # the width shrinks like 1 / sqrt(n)
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_interval(small, seed=3) == bootstrap_interval(small, seed=3)
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])


def test_folds_file_is_written_once_and_checked(tmp_path, capsys):
    cases = [f"case{i:02d}" for i in range(11)]
    folds = write_folds(tmp_path / "folds.json", cases, 5, seed=0)
    assert sorted(c for f in folds for c in f) == cases and {len(f) for f in folds} == {2, 3}
    assert capsys.readouterr().out == ""
    assert write_folds(tmp_path / "folds.json", cases, 5, seed=99) == folds  # an existing file wins
    assert "drawn with seed 0; --split-seed 99 does not redraw them" in capsys.readouterr().out
    with pytest.raises(ValueError, match="holds 5 folds, not 3"):
        write_folds(tmp_path / "folds.json", cases, 3, seed=0)
    train, val = folds_from_file(tmp_path / "folds.json", cases, 2)
    assert val == sorted(folds[2]) and sorted(train + val) == cases
    with pytest.raises(ValueError, match="every case of the dataset once"):
        folds_from_file(tmp_path / "folds.json", cases + ["case99"], 0)
    pooled = tmp_path / "cv.json"  # a pooled result also has a "folds" key, of fold summaries
    pooled.write_text(json.dumps({"folds": [{"run": f"cv-fold{k}", "cases": 2} for k in range(5)]}))
    for read in (lambda: write_folds(pooled, cases, 5, seed=0), lambda: folds_from_file(pooled, cases, 0)):
        with pytest.raises(ValueError, match=r"cv.json: not a folds file .*results/<cv>-folds.json"):
            read()
    (tmp_path / "cut.json").write_text('{"folds": [["case00"')
    with pytest.raises(ValueError, match=r"cut.json: not a JSON file"):
        folds_from_file(tmp_path / "cut.json", cases, 0)


def test_pool_folds_rejects_a_case_in_two_folds():
    fold = {"per_case": {"a": 1.0}, "per_case_without_lcc": {"a": 1.0}, "run": "x", "val_mean_dsc": 1.0,
            "val_median_dsc": 1.0, "wall_time_s": 1.0, "epochs": 2, "stopped_early": False}
    with pytest.raises(ValueError, match="case a is in two folds"):
        pool_folds([fold, fold], "x", "")


def _fold_result(case: str, epochs: int, stopped: bool) -> dict:
    return {"per_case": {case: 0.8}, "per_case_without_lcc": {case: 0.7}, "run": f"x-{case}", "val_mean_dsc": 0.8,
            "val_median_dsc": 0.8, "wall_time_s": 60.0, "epochs": epochs, "stopped_early": stopped, "model": "unet",
            "loss": "dice", "preset": "cpu", "image_size": 128, "best_epoch": epochs, "train_images_per_s": 40.0,
            "parameters": 1, "device": "cpu", "torch_version": "2", "config": {}}


def test_the_pooling_warning_names_the_folds_stopped_at_the_time_limit(capsys):
    pool_folds([_fold_result("a", 20, False), _fold_result("b", 12, True)], "x", "")
    assert "warning: folds [1] stopped at the time limit before their schedule ended" in capsys.readouterr().out
    pool_folds([_fold_result("a", 20, False), _fold_result("b", 18, False)], "x", "")
    assert "warning: the folds trained for different numbers of epochs ([18, 20])" in capsys.readouterr().out
    pool_folds([_fold_result("a", 20, False), _fold_result("b", 20, False)], "x", "")
    assert "warning" not in capsys.readouterr().out


def test_a_pooled_cross_validation_records_the_machine_of_each_fold():
    gpu, cpu = {**_fold_result("a", 20, False), "device": "NVIDIA H100"}, _fold_result("b", 20, False)
    pooled = pool_folds([gpu, cpu, {**_fold_result("c", 20, False), "device": "NVIDIA H100"}], "x", "")
    assert (pooled["device"] == "NVIDIA H100 + cpu"
            and [f["device"] for f in pooled["folds"]] == ["NVIDIA H100", "cpu", "NVIDIA H100"])
    assert pool_folds([cpu], "x", "")["device"] == "cpu"


def test_cv_refuses_reduced_runs(synthetic_data, tmp_path, synthetic_config):
    with pytest.raises(ValueError, match="max_train_cases and max_val_cases must be 0"):
        run_cv(synthetic_config(synthetic_data, tmp_path, max_val_cases=2), folds=3, progress=False)


def test_folds_of_another_recipe_are_neither_pooled_nor_resumed(synthetic_data, tmp_path, synthetic_config):
    base = synthetic_config(synthetic_data, tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    other = replace(base, flair_fill=0.5, split="kfold", fold=0, run_name="cv-fold0", selection="last")
    (results / "cv-fold0.json").write_text(json.dumps({"config": other.to_dict()}))
    with pytest.raises(ValueError, match=r"fold 0's finished run .* another recipe .*\(flair_fill: 0.5 -> 0.0\)"):
        run_cv(base, folds=3, name="cv", results_dir=results, progress=False)
    wider = replace(other, flair_fill=0.0, context=1)
    save_checkpoint(tmp_path / "weights" / "cv-fold0" / "last.pt", create_model("unet", **wider.model_kwargs()),
                    wider, epoch=1, metrics={})  # no trained_on: the recipe is named first
    with pytest.raises(ValueError, match=r"cv-fold0/last.pt was trained with another recipe .*\(context: 1 -> 0\)"):
        run_cv(base, folds=3, name="cv", results_dir=tmp_path / "elsewhere", progress=False)


def test_folds_made_on_other_folds_are_neither_pooled_nor_resumed(synthetic_data, tmp_path, synthetic_config):
    base = synthetic_config(synthetic_data, tmp_path)
    with pytest.raises(ValueError, match=r"--fold 3 is not one of the 3 folds \(0 to 2\)"):
        run_cv(base, folds=3, name="cv", only_fold=3, progress=False)
    results = tmp_path / "results"
    results.mkdir()
    fold0 = replace(base, split="kfold", fold=0, folds=3, run_name="cv-fold0", selection="last")
    (results / "cv-fold0.json").write_text(json.dumps({"config": fold0.to_dict(), "per_case": {"TCGA_X": 0.5}}))
    with pytest.raises(ValueError, match=r"fold 0's finished run .* was made on other folds than .*folds.json "
                                         r"\(its cases differ from fold 0's there\); pass the folds file"):
        run_cv(base, folds=3, name="cv", results_dir=results, progress=False)
    every_case = sorted(discover_cases(synthetic_data))  # it trained on all, fold 0's cases among them
    save_checkpoint(tmp_path / "weights" / "cv-fold0" / "last.pt", create_model("unet", **fold0.model_kwargs()),
                    fold0, epoch=1, metrics={}, trained_on=every_case)
    with pytest.raises(ValueError, match=r"cv-fold0/last.pt was made on other folds than"):
        run_cv(base, folds=3, name="cv", results_dir=tmp_path / "elsewhere", progress=False)
    save_checkpoint(tmp_path / "weights" / "cv-fold0" / "last.pt", create_model("unet", **fold0.model_kwargs()),
                    fold0, epoch=1, metrics={})  # as saved before trained_on was recorded
    with pytest.raises(ValueError, match=r"cv-fold0/last.pt records no trained_on cases .* "
                                         r"remove it to train the fold"):
        run_cv(base, folds=3, name="cv", results_dir=tmp_path / "elsewhere", progress=False)
    assert not (tmp_path / "logs" / "cv-fold0" / "metrics.json").exists()  # refused before any training


def test_the_pooled_result_of_another_recipe_is_not_overwritten(synthetic_data, tmp_path, synthetic_config):
    base = synthetic_config(synthetic_data, tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    earlier = replace(base, intensity=0.5, split="kfold", run_name="cv", selection="last").to_dict()
    (results / "cv.json").write_text(json.dumps({"config": {**earlier, "fold": None}}))
    with pytest.raises(ValueError, match=r"results/cv.json was trained with another recipe .*\(intensity: 0.5 -> 0.0\)"
                                         r".*another --run-name"):
        run_cv(base, folds=3, name="cv", results_dir=results, progress=False)
    assert not (tmp_path / "logs" / "cv-fold0").exists()  # refused before any training


@pytest.mark.slow
def test_cv_predicts_every_case_once_and_resumes_fold_wise(synthetic_data, tmp_path, capsys, synthetic_config):
    base = synthetic_config(synthetic_data, tmp_path, epochs=2)
    results = tmp_path / "results"
    assert run_cv(base, folds=3, name="cv", only_fold=1, results_dir=results, progress=False) is None
    assert "folds [0, 2] not trained yet" in capsys.readouterr().out
    fold1 = json.loads((tmp_path / "logs" / "cv-fold1" / "metrics.json").read_text())
    assert json.loads((results / "cv-fold1.json").read_text())["per_case"] == fold1["per_case"]  # exported
    (results / "cv-fold1.json").unlink()  # as if killed between training and export: read back, then exported
    assert run_cv(base, folds=3, name="cv", only_fold=1, results_dir=results, progress=False) is None
    assert json.loads((results / "cv-fold1.json").read_text())["per_case"] == fold1["per_case"]
    shutil.rmtree(tmp_path / "logs" / "cv-fold1")  # a fresh clone: only the committed export is left
    result = run_cv(base, folds=3, name="cv", results_dir=results, command="cmd", progress=False)
    assert "fold 2/3" not in capsys.readouterr().out  # fold 1 was read back, not trained again
    assert result["split"] == "cv3" and len(result["per_case"]) == 12 == len(result["per_case_without_lcc"])
    assert result["folds"][1]["val_mean_dsc"] == fold1["val_mean_dsc"]
    assert result["val_mean_dsc"] == pytest.approx(np.mean(list(result["per_case"].values())))
    low, high = result["val_mean_dsc_ci95"]
    assert low <= result["val_mean_dsc"] <= high
    saved = json.loads((results / "cv.json").read_text())
    assert saved["per_case"] == result["per_case"] and saved["command"] == "cmd"
    with open(results / "cv-per-case.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["fold"] for r in rows} == {"0", "1", "2"}
    folds = json.loads((results / "cv-folds.json").read_text())["folds"]
    assert all(result["fold_of_case"][case] == k for k, fold in enumerate(folds) for case in fold)
    # each fold's model is the final one and predicted only the cases it did not train on
    for k in range(3):
        metrics = json.loads((results / f"cv-fold{k}.json").read_text())
        assert metrics["selection"].startswith("last") and metrics["best_epoch"] == 2
        assert sorted(metrics["per_case"]) == sorted(folds[k])


@pytest.mark.parametrize("command, whole", [
    ("python -m brainseg cv --folds 5 --fold 4 --preset cpu", "python -m brainseg cv --folds 5 --preset cpu"),
    ("python -m brainseg cv --folds 5 --preset cpu --fold=0", "python -m brainseg cv --folds 5 --preset cpu"),
    ("python -m brainseg cv --folds 5 --folds-file f.json", "python -m brainseg cv --folds 5 --folds-file f.json"),
])
def test_the_pooled_result_records_the_command_of_every_fold(command, whole):
    from brainseg.cv import whole_cv_command

    assert whole_cv_command(command) == whole
