import json

import pytest

from brainseg.results import REQUIRED_KEYS, export_run
from brainseg.tools.tables import TABLE_END, TABLE_START, results_table, write_readme_table


def metrics(run="r1", dsc=0.8):
    values = {k: "x" for k in REQUIRED_KEYS}
    values.update(run=run, image_size=128, epochs=3, val_mean_dsc=dsc, val_median_dsc=dsc + 0.05,
                  per_case={"a": dsc}, best_epoch=2, wall_time_s=600.0, selection="reference cases (optimistic)")
    return values


def test_export_and_table(tmp_path):
    run_dir = tmp_path / "logs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics()))
    target = export_run(run_dir, tmp_path / "results")
    assert json.loads(target.read_text())["val_mean_dsc"] == 0.8
    table = results_table(tmp_path / "results")
    assert "| r1 |" in table and "0.8000" in table and "0.8500" in table and "10.0 min" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_START}\nold\n{TABLE_END}\noutro\n")
    write_readme_table(readme, table)
    text = readme.read_text()
    assert "old" not in text and "| r1 |" in text and text.startswith("intro") and text.endswith("outro\n")


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        export_run(tmp_path, tmp_path / "results")
    with pytest.raises(FileNotFoundError, match=r"no-such-run: no such run folder, nor .*logs/no-such-run"):
        export_run("no-such-run", tmp_path / "results")
    (tmp_path / "metrics.json").write_text(json.dumps({"run": "x"}))
    with pytest.raises(ValueError, match="missing keys"):
        export_run(tmp_path, tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        write_readme_table(readme, "table")


def test_export_carries_history_and_compare_builds_table_and_figure(tmp_path):
    from brainseg.cli import main
    from brainseg.compare import comparison_table, load_runs, plot_curves, runs_from_results

    for name, dsc in (("r1", 0.8), ("r2", 0.7)):
        run_dir = tmp_path / "logs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"model": "unet", "loss": "dice", "image_size": 128}))
        (run_dir / "history.csv").write_text("epoch,train_loss,val_loss,val_mean_dsc,val_median_dsc\n"
                                             f"1,0.5,0.6,{dsc - 0.1},{dsc}\n2,0.4,0.5,{dsc},{dsc}\n")
        values = metrics(name, dsc)
        values.update(preset="cpu", split="reference", parameters=1_000_000,
                      config={"model": "unet", "loss": "dice", "image_size": 128})
        if name == "r1":
            (run_dir / "metrics.json").write_text(json.dumps(values))
    target = export_run(tmp_path / "logs" / "r1", tmp_path / "results")
    assert [row["epoch"] for row in json.loads(target.read_text())["history"]] == [1.0, 2.0]
    runs = load_runs(tmp_path / "logs")
    table = comparison_table(runs)
    assert "| r1 | unet | dice | 1.00 M |" in table and "| r2 (unfinished) |" in table and "0.7000" in table
    plot_curves(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
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


def test_export_takes_a_run_name_under_the_repositorys_logs(tmp_path, monkeypatch):
    from brainseg import paths

    monkeypatch.setattr(paths, "logs_dir", lambda: tmp_path / "logs")
    run_dir = tmp_path / "logs" / "r7"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({k: 1 for k in REQUIRED_KEYS} | {"run": "r7"}))
    assert export_run("r7", tmp_path / "results") == tmp_path / "results" / "r7.json"
