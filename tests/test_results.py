import json

import pytest

from brainseg.results import REQUIRED_KEYS, export_run, load_results


def test_export_copies_the_metrics_and_load_reads_them_back(tmp_path, run_metrics):
    run_dir = tmp_path / "logs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(run_metrics()))
    target = export_run(run_dir, tmp_path / "results")
    assert target == tmp_path / "results" / "r1.json"
    assert json.loads(target.read_text()) == run_metrics()
    (tmp_path / "results" / "bench-cpu.json").write_text(json.dumps({"rows": []}))  # not a run export: skipped
    assert load_results(tmp_path / "results") == [run_metrics()]


def test_export_carries_the_training_history(tmp_path, run_metrics):
    run_dir = tmp_path / "logs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(run_metrics()))
    (run_dir / "history.csv").write_text("epoch,train_loss,val_loss,val_mean_dsc,val_median_dsc\n"
                                         "1,0.5,0.6,0.7,0.8\n2,0.4,0.5,0.8,0.8\n")
    history = json.loads(export_run(run_dir, tmp_path / "results").read_text())["history"]
    assert history == [{"epoch": 1.0, "train_loss": 0.5, "val_loss": 0.6, "val_mean_dsc": 0.7, "val_median_dsc": 0.8},
                       {"epoch": 2.0, "train_loss": 0.4, "val_loss": 0.5, "val_mean_dsc": 0.8, "val_median_dsc": 0.8}]


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        export_run(tmp_path, tmp_path / "results")
    with pytest.raises(FileNotFoundError, match=r"no-such-run: no such run folder, nor .*logs/no-such-run"):
        export_run("no-such-run", tmp_path / "results")
    (tmp_path / "metrics.json").write_text(json.dumps({"run": "x"}))
    with pytest.raises(ValueError, match="missing keys"):
        export_run(tmp_path, tmp_path / "results")
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "cut.json").write_text('{"run": "x", "per_')  # killed mid-copy by hand, say
    with pytest.raises(ValueError, match=r"results/cut.json: not a JSON file .*restore it"):
        load_results(tmp_path / "results")


def test_export_takes_a_run_name_under_the_repositorys_logs(tmp_path, monkeypatch):
    from brainseg import paths

    monkeypatch.setattr(paths, "logs_dir", lambda: tmp_path / "logs")
    run_dir = tmp_path / "logs" / "r7"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({k: 1 for k in REQUIRED_KEYS} | {"run": "r7"}))
    assert export_run("r7", tmp_path / "results") == tmp_path / "results" / "r7.json"


def test_default_results_folder_is_the_repositorys_from_any_working_directory(repo_elsewhere, run_metrics):
    run_dir = repo_elsewhere / "logs" / "r1"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(run_metrics()))
    assert export_run("r1") == repo_elsewhere / "results" / "r1.json"
    assert load_results() == [run_metrics()]
