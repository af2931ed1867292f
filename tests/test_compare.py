import json

from brainseg.compare import comparison_table, load_runs, plot_curves, runs_from_results
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
