import json

import pytest

from brainseg.compare import comparison_table, load_runs, plot_curves, runs_from_results, runs_to_compare
from brainseg.paired import compare_results
from brainseg.results import export_run


def test_compare_builds_table_and_figure_from_logs_and_results(tmp_path, run_metrics):
    from brainseg.cli import main

    for name, dsc in (("r1", 0.8), ("r2", 0.7)):
        run_dir = tmp_path / "logs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"model": "unet", "loss": "dice", "image_size": 128}))
        (run_dir / "history.csv").write_text("epoch,train_loss,val_loss,val_mean_dsc,val_median_dsc\n"
                                             f"1,0.5,0.6,{dsc - 0.1},{dsc}\n2,0.4,0.5,{dsc},{dsc}\n")
        values = run_metrics(name, dsc)
        values.update(preset="cpu", split="reference", parameters=1_000_000,
                      config={"model": "unet", "loss": "dice", "image_size": 128})
        if name == "r1":
            (run_dir / "metrics.json").write_text(json.dumps(values))
    target = export_run(tmp_path / "logs" / "r1", tmp_path / "results")
    runs = load_runs(tmp_path / "logs")
    table = comparison_table(runs)
    assert "| r1 | unet | dice | 1.00 M | 128 | 3 | 2 | 0.8000 | 0.8500 | - | nan | 10.0 min |" in table
    assert "| r2 (unfinished) | unet | dice | - | 128 | 2 | 2 | 0.7000 | 0.7000 | - | - | - |" in table
    plot_curves(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    plot_curves(runs, tmp_path / "plain")  # no suffix: a PNG named as matplotlib would name it
    assert (tmp_path / "plain.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "plain").exists()
    assert [r["name"] for r in runs_from_results(tmp_path / "results", "cpu")] == ["r1"]
    assert runs_from_results(tmp_path / "results", "gpu") == []
    reduced = {**json.loads(target.read_text()), "run": "short"}
    reduced["config"] = {**reduced["config"], "max_train_cases": 30}  # a short reproduction: not the same budget
    (tmp_path / "results" / "short.json").write_text(json.dumps(reduced))
    cv = {**json.loads(target.read_text()), "run": "cv", "split": "cv5"}
    (tmp_path / "results" / "cv.json").write_text(json.dumps(cv))
    held_out = {**json.loads(target.read_text()), "run": "held_out"}
    held_out["config"] = {**held_out["config"], "selection": "inner"}  # chosen another way: another protocol
    (tmp_path / "results" / "held_out.json").write_text(json.dumps(held_out))
    assert [r["name"] for r in runs_from_results(tmp_path / "results", "cpu")] == ["r1"]
    assert [r["name"] for r in runs_from_results(tmp_path / "results", "cpu", selection="inner")] == ["held_out"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- comparison-table:start -->\n<!-- comparison-table:end -->\n")
    assert main(["results", "compare", "--results-dir", str(tmp_path / "results"), "--figure",
                 str(tmp_path / "cmp.png"), "--doc", str(readme)]) == 0
    assert "| r1 | unet |" in readme.read_text() and (tmp_path / "cmp.png").is_file()


def _write_run(folder, name, dsc, run_metrics, split="reference"):
    """A finished run's folder ``<folder>/<name>`` and its export ``<folder>/../results/<name>.json``."""
    (folder / name).mkdir(parents=True)
    config = {"model": "unet", "loss": "dice", "image_size": 128}
    (folder / name / "config.json").write_text(json.dumps(config))
    metrics = {**run_metrics(name, dsc), "config": config, "split": split}
    (folder / name / "metrics.json").write_text(json.dumps(metrics))


def test_runs_to_compare_reads_logs_else_the_committed_results(repo_elsewhere, run_metrics):
    committed = {**run_metrics("committed", 0.8), "config": {"model": "unet", "loss": "dice", "image_size": 128},
                 "split": "reference", "history": [{"epoch": 1.0, "val_mean_dsc": 0.8}]}
    (repo_elsewhere / "results" / "committed.json").write_text(json.dumps(committed))
    (repo_elsewhere / "results" / "cv.json").write_text(json.dumps({**committed, "run": "cv", "split": "cv5"}))
    _write_run(repo_elsewhere.parent / "notebooks" / "logs", "in_cwd", 0.7, run_metrics)  # not the default
    runs, source = runs_to_compare()  # a fresh clone: logs/ holds no run
    assert [r["name"] for r in runs] == ["committed"] and runs[0]["history"] == [{"epoch": 1.0, "val_mean_dsc": 0.8}]
    assert source.startswith("no run under logs/: 1 committed result(s) in results/")
    _write_run(repo_elsewhere / "logs", "mine", 0.6, run_metrics)
    runs, source = runs_to_compare()
    assert [r["name"] for r in runs] == ["mine"] and runs[0]["metrics"]["val_mean_dsc"] == 0.6
    assert source == "1 run folder(s) under logs/"
    assert [r["name"] for r in runs_to_compare("logs")[0]] == ["in_cwd"]  # a given folder: from the working directory
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        runs_to_compare("missing")


def test_a_paired_comparison_returns_each_recipes_per_case_means(repo_elsewhere):
    tables = {"a1": {"x": 0.5, "y": 0.8}, "a2": {"x": 0.7, "y": 0.8},
              "b1": {"x": 0.9, "y": 0.6}, "b2": {"x": 0.7, "y": 0.8}}
    for name, per_case in tables.items():
        (repo_elsewhere / "results" / f"{name}.json").write_text(json.dumps({"run": name, "per_case": per_case}))
    # the repository's results/, as the notebook's defaults
    result = compare_results("a1", "b1", also_a=["a2"], also_b=["b2"])
    assert result["per_case_a"] == pytest.approx({"x": 0.6, "y": 0.8})
    assert result["per_case_b"] == pytest.approx({"x": 0.8, "y": 0.7})
    assert result["a"] == "a1 + a2" and result["b"] == "b1 + b2" and result["cases"] == 2
    assert result["mean_difference"] == pytest.approx(0.05) and result["wins"] == 1 and result["losses"] == 1
    alone = compare_results("a1", "b1", results_dir=repo_elsewhere / "results")
    assert alone["per_case_a"] == tables["a1"] and alone["mean_difference"] == pytest.approx(0.1)
