import json

import pytest

from brainseg.tools.tables import TABLE_END, TABLE_START, results_table, write_readme_table


def test_results_table_has_a_row_per_exported_run(tmp_path, run_metrics):
    (tmp_path / "r1.json").write_text(json.dumps(run_metrics()))
    (tmp_path / "r2.json").write_text(json.dumps({**run_metrics("r2", 0.7), "final_val_mean_dsc": 0.75,
                                                  "final_val_median_dsc": 0.76}))
    lines = results_table(tmp_path).splitlines()
    assert lines[0].startswith("| run | model | loss | preset |") and lines[1] == "|" + "---|" * 15
    assert lines[2:] == ["| r1 | x | x | x | 128 | 3 | x | reference cases | 0.8000 | 0.8500 | 2 | - | 10.0 min | x | `x` |",
                         "| r2 | x | x | x | 128 | 3 | x | reference cases | 0.7000 | 0.7500 | 2 | 0.7500 / 0.7600 | "
                         "10.0 min | x | `x` |"]
    assert results_table(tmp_path / "empty").splitlines()[2] == "| (no runs exported yet) |" + " |" * 14


def test_results_table_gives_the_range_of_epochs_when_folds_stopped_apart(tmp_path, run_metrics):
    folds = [{"epochs": 9}, {"epochs": 11}, {"epochs": 10}]  # a time budget ends each fold at its own epoch
    (tmp_path / "cv.json").write_text(json.dumps({**run_metrics("cv"), "epochs": 11, "folds": folds}))
    (tmp_path / "even.json").write_text(json.dumps({**run_metrics("even"), "epochs": 20, "folds": [{"epochs": 20}] * 2}))
    rows = results_table(tmp_path).splitlines()[2:]
    assert rows[0].startswith("| cv | x | x | x | 128 | 9-11 | ") and rows[1].startswith("| even | x | x | x | 128 | 20 | ")


def test_write_readme_table_replaces_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_START}\nold\n{TABLE_END}\noutro\n")
    write_readme_table(readme, "| new |")
    assert readme.read_text() == f"intro\n{TABLE_START}\n| new |\n{TABLE_END}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="README.md: markers <!-- results-table:start --> and "
                                         "<!-- results-table:end --> not found"):
        write_readme_table(readme, "table")


def test_results_table_reads_the_repositorys_results_from_any_working_directory(repo_elsewhere, run_metrics):
    (repo_elsewhere / "results" / "r1.json").write_text(json.dumps(run_metrics()))
    assert results_table().splitlines()[2].startswith("| r1 |")
