import json

import pytest

from brainseg.results import REQUIRED_KEYS, TABLE_END, TABLE_START, export_run, results_table, write_readme_table


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
    (tmp_path / "metrics.json").write_text(json.dumps({"run": "x"}))
    with pytest.raises(ValueError, match="missing keys"):
        export_run(tmp_path, tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        write_readme_table(readme, "table")
