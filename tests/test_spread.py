import json

import pytest

from brainseg.cli import main
from brainseg.spread import spread_report, training_spread


def _write(results, name: str, per_case: dict[str, float], fold_of_case: dict[str, int] | None = None) -> None:
    (results / f"{name}.json").write_text(json.dumps({"run": name, "per_case": per_case,
                                                      "fold_of_case": fold_of_case or {}}))


def test_known_ranges_split_into_hard_and_other_cases(tmp_path):
    # three trainings: "hard" swings 0.3 -> 0.6, the four easy cases move by at most 0.02
    easy = {f"e{i}": 0.9 for i in range(4)}
    _write(tmp_path, "a", {**easy, "hard": 0.3})
    _write(tmp_path, "b", {**easy, "e0": 0.92, "hard": 0.6})
    _write(tmp_path, "c", {**easy, "e1": 0.88, "hard": 0.45})
    spread = training_spread(["a", "b", "c"], below=0.6, results_dir=tmp_path)
    assert spread["runs"] == ["a", "b", "c"] and spread["cases"] == 5
    assert spread["hard"]["cases"] == 1 and spread["hard"]["median_range"] == pytest.approx(0.3)
    assert spread["others"]["cases"] == 4 and spread["others"]["median_range"] == pytest.approx(0.01)
    assert spread["means"] == pytest.approx([(3.6 + 0.3) / 5, (3.62 + 0.6) / 5, (3.58 + 0.45) / 5])
    assert spread["mean_range"] == pytest.approx(0.064)
    # absolute moves about each case's mean: hard 0.15 + 0.15 + 0, e0 and e1 0.04/3 + 0.02/3 + 0.02/3 each
    assert spread["hard"]["share_of_moves"] == pytest.approx(0.3 / (0.3 + 2 * 0.08 / 3))
    assert spread["widest"][0] == ["hard", 0.3, [0.3, 0.6, 0.45]]
    assert "1 hard cases (below 0.6 in some training): median range 0.3000" in spread_report(spread)


def test_unchanged_runs_have_no_spread(tmp_path):
    _write(tmp_path, "a", {"x": 0.5, "y": 0.8})
    _write(tmp_path, "b", {"x": 0.5, "y": 0.8})
    spread = training_spread(["a", "b"], results_dir=tmp_path)
    assert spread["mean_range"] == 0 and spread["median_range"] == 0 and spread["hard"]["share_of_moves"] == 0
    assert spread["hard"] == {"cases": 1, "median_range": 0.0, "share_of_moves": 0.0}  # x = 0.5 is hard
    easy = training_spread(["a", "b"], below=0.1, results_dir=tmp_path)
    assert easy["hard"]["median_range"] is None and "median range -," in spread_report(easy)


def test_bad_input_is_named(tmp_path):
    _write(tmp_path, "a", {"x": 0.5, "y": 0.8}, {"x": 0, "y": 1})
    _write(tmp_path, "b", {"x": 0.5, "z": 0.8})
    with pytest.raises(ValueError, match=r"a and b score different cases: only in the first \['y'\], "
                                         r"only in the second \['z'\]"):
        training_spread(["a", "b"], results_dir=tmp_path)
    _write(tmp_path, "c", {"x": 0.5, "y": 0.7}, {"x": 1, "y": 1})
    with pytest.raises(ValueError, match=r"a and c put cases in different folds \(e.g. \['x'\]\)"):
        training_spread(["a", "c"], results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"two or more distinct trainings of one recipe, got \['a'\]"):
        training_spread(["a"], results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"distinct trainings of one recipe, got \['a', 'a'\]"):
        training_spread(["a", "a"], results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"name the runs \['a', 'a'\]"):  # a name and its file: one training
        training_spread(["a", str(tmp_path / "a.json")], results_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        training_spread(["a", "nowhere"], results_dir=tmp_path, logs_dir=tmp_path / "logs")


def test_five_long_run_names_still_give_a_spread_file(tmp_path):
    names = [f"{'r' * 80}-seed{seed}-cv5" for seed in range(5)]  # joined: past the 255-byte limit
    for seed, name in enumerate(names):
        _write(tmp_path, name, {"x": 0.5 + 0.01 * seed, "y": 0.8})
    assert main(["results", "spread", *names, "--results-dir", str(tmp_path), "--logs-dir", str(tmp_path)]) == 0
    [saved] = tmp_path.glob("spread-*.json")
    assert len(saved.stem) == len("spread-") + 200 and saved.stem.endswith("-seed4-cv5")
    assert json.loads(saved.read_text())["runs"] == names


def test_runs_are_looked_up_in_the_repositorys_results_from_any_working_directory(repo_elsewhere):
    _write(repo_elsewhere / "results", "a", {"x": 0.5, "y": 0.8})
    _write(repo_elsewhere / "results", "b", {"x": 0.6, "y": 0.8})
    assert training_spread(["a", "b"])["mean_range"] == pytest.approx(0.05)
