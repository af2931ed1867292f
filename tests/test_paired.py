"""Paired comparison of two recipes on synthetic per-case tables with known differences."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from brainseg.cli import main
from brainseg.paired import (compare_results, differences_by_group, groups_report, load_comparisons, load_per_case,
                             paired_difference)


def _tables(n: int, shift: float, noise: float, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.95, n)
    cases = [f"case{i:03d}" for i in range(n)]
    return dict(zip(cases, base)), dict(zip(cases, base + shift + rng.normal(0, noise, n)))


def test_a_constant_shift_is_found_exactly_with_wins_and_no_losses():
    a, b = _tables(40, 0.05, 0.0)
    result = paired_difference(a, b)
    assert result["mean_difference"] == pytest.approx(0.05)
    assert result["ci95"] == pytest.approx([0.05, 0.05])
    assert result["improvement"] and not result["worse"]
    assert (result["wins"], result["ties"], result["losses"]) == (40, 0, 0)
    assert result["mean_b"] - result["mean_a"] == pytest.approx(0.05)


def test_the_interval_covers_the_true_difference_and_excludes_zero_only_when_it_should():
    covered = 0
    for seed in range(40):
        a, b = _tables(110, 0.03, 0.05, seed)
        low, high = paired_difference(a, b, resamples=2000, seed=seed)["ci95"]
        covered += low <= 0.03 <= high
    assert covered >= 34  # a 95% interval misses about 2 of 40 times
    a, b = _tables(110, 0.03, 0.05, seed=1)
    assert paired_difference(a, b)["improvement"]
    a, b = _tables(110, 0.0, 0.05, seed=1)
    result = paired_difference(a, b)
    assert result["ci95"][0] < 0 < result["ci95"][1] and not result["improvement"] and not result["worse"]


def test_ties_and_the_cases_that_moved_most():
    a = {"x": 0.5, "y": 0.8, "z": 0.9, "w": 0.7}
    b = {"x": 0.9, "y": 0.805, "z": 0.6, "w": 0.75}
    result = paired_difference(a, b)
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1)
    assert result["most_improved"] == [["x", 0.5, 0.9], ["w", 0.7, 0.75]]
    assert result["most_worsened"] == [["z", 0.9, 0.6]]
    assert result["worse"] is False and result["mean_difference"] == pytest.approx(0.03875)
    exact = paired_difference({"p": 0.92, "q": 0.50, "r": 0.3}, {"p": 0.93, "q": 0.51, "r": 0.29})
    assert (exact["wins"], exact["ties"], exact["losses"]) == (0, 3, 0)  # 0.93 - 0.92 is 0.010000000000000009


def test_mismatched_case_sets_are_a_clear_error():
    with pytest.raises(ValueError, match=r"different cases \(2 and 2\).*\['b'\].*\['c'\].*--folds"):
        paired_difference({"a": 0.5, "b": 0.6}, {"a": 0.5, "c": 0.6})
    with pytest.raises(ValueError, match="no cases to compare"):
        paired_difference({}, {})


def _write_cv(results_dir, name, per_case, fold_of_case):
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps({"run": name, "per_case": per_case,
                                                          "fold_of_case": fold_of_case}))


def _write_fold(logs_dir, name, fold, per_case, **config):
    folder = logs_dir / f"{name}-fold{fold}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"per_case": per_case, "config": {"fold": fold, **config}}))


def test_a_cross_validation_in_progress_is_compared_on_its_finished_folds(tmp_path):
    a, b = _tables(10, 0.02, 0.0)
    cases = sorted(a)
    fold_of = {case: i % 2 for i, case in enumerate(cases)}
    _write_cv(tmp_path / "results", "base", a, fold_of)
    _write_fold(tmp_path / "logs", "new", 1, {c: b[c] for c in cases if fold_of[c] == 1})
    loaded = load_per_case("new", tmp_path / "results", tmp_path / "logs")
    assert len(loaded["per_case"]) == 5 and set(loaded["fold_of_case"].values()) == {1}
    with pytest.raises(ValueError, match="different cases"):
        compare_results("base", "new", results_dir=tmp_path / "results", logs_dir=tmp_path / "logs")
    result = compare_results("base", "new", folds=[1], results_dir=tmp_path / "results", logs_dir=tmp_path / "logs")
    assert result["cases"] == 5 and result["mean_difference"] == pytest.approx(0.02) and result["folds"] == [1]
    exported = tmp_path / "results" / "new-fold1.json"  # what cv writes beside the logs
    exported.write_text((tmp_path / "logs" / "new-fold1" / "metrics.json").read_text())
    assert load_per_case("new", tmp_path / "results", tmp_path / "elsewhere")["per_case"] == loaded["per_case"]
    with pytest.raises(FileNotFoundError, match="no finished folds"):
        load_per_case("missing", tmp_path / "results", tmp_path / "logs")


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    a, b = _tables(30, -0.04, 0.0)
    folds = {case: 0 for case in a}
    _write_cv(tmp_path, "old", a, folds)
    _write_cv(tmp_path, "new", b, folds)
    assert main(["results", "paired", "old", "new", "--results-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "B - A per case: mean -0.0400" in printed and "B worse (interval below 0)" in printed
    saved = json.loads((tmp_path / "paired-old-vs-new.json").read_text())
    assert saved["losses"] == 30 and saved["command"].startswith("python -m brainseg results paired")
    _write_cv(tmp_path, "old", a, {case: i % 2 for i, case in enumerate(a)})
    _write_cv(tmp_path, "new", b, {case: i % 2 for i, case in enumerate(a)})
    assert main(["results", "paired", "old", "new", "--folds", "1", "--results-dir", str(tmp_path)]) == 0
    screen = json.loads((tmp_path / "paired-old-vs-new-folds1.json").read_text())
    assert screen["cases"] == 15 and screen["folds"] == [1]
    assert json.loads((tmp_path / "paired-old-vs-new.json").read_text()) == saved  # the whole comparison is kept
    assert main(["results", "paired", "old", "new", "--folds", "1", "0", "--results-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "paired-old-vs-new-folds0,1.json").read_text())["cases"] == 30
    assert main(["results", "paired", "old", "nothing", "--results-dir", str(tmp_path)]) == 2
    assert "nothing: not a file" in capsys.readouterr().err


def test_each_group_gets_its_own_difference_and_a_case_without_group_is_named():
    a, b = _tables(33, 0.0, 0.0)
    group = {case: ("faint" if i < 10 else "few" if i < 13 else "other") for i, case in enumerate(sorted(a))}
    b = {case: value + (0.2 if group[case] == "faint" else 0.0) for case, value in b.items()}
    by_group = differences_by_group(a, b, group)
    assert list(by_group) == ["faint", "few", "other"]
    assert by_group["faint"]["cases"] == 10 and by_group["faint"]["ci95"] == pytest.approx([0.2, 0.2])
    assert by_group["other"]["mean_difference"] == pytest.approx(0.0) and by_group["other"]["ties"] == 20
    assert by_group["few"]["ci95"] is None and "improvement" not in by_group["faint"]  # no verdicts on subgroups
    text = groups_report(by_group, "By cause:")
    assert "| faint | 10 |" in text and "+0.2000 (+0.2000 to +0.2000) | 10 / 0 / 0 |" in text and "not claims" in text
    assert "(no interval under 8 cases)" in text
    with pytest.raises(ValueError, match=r"1 compared cases have no group, e.g. \['case029'\]"):
        differences_by_group(a, b, {c: g for c, g in group.items() if c != "case029"})


def test_cli_splits_the_comparison_by_the_data_only_cause(tmp_path, capsys, monkeypatch):
    a, b = _tables(12, 0.0, 0.0)
    causes = {case: ("missing modality" if i % 3 == 0 else "other") for i, case in enumerate(sorted(a))}
    b = {case: value - (0.1 if causes[case] == "missing modality" else 0.0) for case, value in b.items()}
    _write_cv(tmp_path, "old", a, {case: 0 for case in a})
    _write_cv(tmp_path, "new", b, {case: 0 for case in a})
    asked = {}
    monkeypatch.setattr("brainseg.failures.data_causes",
                        lambda ids, data_dir=None: asked.update(ids=ids, data_dir=data_dir) or causes)
    assert main(["results", "paired", "old", "new", "--by-cause", "--data-dir", "somewhere",
                 "--results-dir", str(tmp_path)]) == 0
    assert asked == {"ids": sorted(a), "data_dir": "somewhere"}
    printed = capsys.readouterr().out
    assert "By data-only cause" in printed and "| missing modality | 4 |" in printed
    saved = json.loads((tmp_path / "paired-old-vs-new.json").read_text())
    assert saved["by_cause"]["missing modality"]["mean_difference"] == pytest.approx(-0.1)
    assert saved["by_cause"]["other"]["cases"] == 8


def test_an_incomplete_paired_file_is_named(tmp_path):
    (tmp_path / "paired-a-vs-b.json").write_text(json.dumps({"a": "a", "b": "b"}))
    with pytest.raises(ValueError, match=r"paired-a-vs-b.json: missing keys \['cases', 'folds'"):
        load_comparisons(tmp_path)


def test_an_ensemble_result_is_refused_where_fold_models_are_needed(tmp_path):
    (tmp_path / "ens.json").write_text(json.dumps({"run": "ens", "per_case": {"a": 0.5}, "members": ["x", "y"]}))
    assert load_per_case("ens", tmp_path, tmp_path)["per_case"] == {"a": 0.5}  # fine for a paired comparison
    with pytest.raises(ValueError, match=r"ens.json: an ensemble of x, y, which has no fold models"):
        load_per_case("ens", tmp_path, tmp_path, fold_models=True)


def test_results_from_different_machines_are_compared_with_a_caution(tmp_path):
    from brainseg.paired import paired_report

    a, b = _tables(12, 0.01, 0.0)
    for name, table, device in (("gpu", a, "NVIDIA H200"), ("cpu", b, "cpu (x86_64, 2 threads)"),
                                ("cpu1", b, "cpu (x86_64, 1 thread)"), ("cpu2", a, None),
                                ("bf16cpu", b, "cpu (x86_64, 2 threads, AVX-512 BF16)")):
        _write_cv(tmp_path, name, table, {case: 0 for case in table})
        if device:
            saved = json.loads((tmp_path / f"{name}.json").read_text())
            (tmp_path / f"{name}.json").write_text(json.dumps({**saved, "device": device}))
    mixed = compare_results("gpu", "cpu", results_dir=tmp_path)
    assert mixed["devices_a"] == ["NVIDIA H200"] and mixed["devices_b"] == ["cpu (x86_64)"]
    assert paired_report(mixed).endswith("caution: A ran on NVIDIA H200 and B on cpu (x86_64); the "
                                         "difference includes what changes between machines, not only between "
                                         "the recipes")
    assert "caution" not in paired_report(compare_results("cpu", "cpu1", results_dir=tmp_path))  # threads differ
    assert "caution" not in paired_report(compare_results("gpu", "cpu2", results_dir=tmp_path))  # not recorded
    other_cpu = compare_results("cpu1", "bf16cpu", results_dir=tmp_path)
    assert other_cpu["devices_b"] == ["cpu (x86_64, AVX-512 BF16)"] and "caution" in paired_report(other_cpu)


def test_the_machines_of_a_cross_validation_in_progress_are_those_of_its_folds(tmp_path):
    a, _ = _tables(4, 0.0, 0.0)
    for fold, device in ((0, "NVIDIA H100"), (1, "cpu (x86_64, 2 threads)")):
        _write_fold(tmp_path, "mixed", fold, {c: a[c] for c in sorted(a)[fold * 2:fold * 2 + 2]})
        saved = tmp_path / f"mixed-fold{fold}" / "metrics.json"
        saved.write_text(json.dumps({**json.loads(saved.read_text()), "device": device}))
    assert load_per_case("mixed", tmp_path / "results", tmp_path)["devices"] == ["NVIDIA H100", "cpu (x86_64)"]
    pooled = {"run": "pooled", "per_case": a, "device": "NVIDIA H100 + cpu (x86_64, 2 threads)",
              "folds": [{"run": "pooled-fold0", "device": "NVIDIA H100"},
                        {"run": "pooled-fold1", "device": "cpu (x86_64, 2 threads)"}]}
    (tmp_path / "pooled.json").write_text(json.dumps(pooled))  # once pooled, still every fold's machine
    assert load_per_case("pooled", tmp_path, tmp_path)["devices"] == ["NVIDIA H100", "cpu (x86_64)"]


def test_several_trainings_of_each_recipe_count_with_their_per_case_mean(tmp_path, capsys):
    cases = [f"case{i}" for i in range(6)]
    fold_of = {case: i % 2 for i, case in enumerate(cases)}
    a1 = dict(zip(cases, [0.5, 0.6, 0.7, 0.8, 0.4, 0.9]))
    a2 = {c: v + 0.02 for c, v in a1.items()}  # the second seed of A, 0.02 higher on every case
    b1 = {c: v + 0.05 for c, v in a1.items()}
    for name, table in (("a1", a1), ("a2", a2), ("b1", b1)):
        _write_cv(tmp_path / "results", name, table, fold_of)
    _write_fold(tmp_path / "logs", "b2", 1, {c: a1[c] + 0.03 for c in cases if fold_of[c] == 1})  # in progress
    dirs = {"results_dir": tmp_path / "results", "logs_dir": tmp_path / "logs"}
    one_a = compare_results("a1", "b1", also_a=["a2"], **dirs)
    assert (one_a["mean_difference"] == pytest.approx(0.05 - 0.01)
            and one_a["mean_a"] == pytest.approx(np.mean(list(a1.values())) + 0.01))
    assert one_a["a"] == "a1 + a2" and one_a["runs_a"] == ["a1", "a2"] and one_a["runs_b"] == ["b1"]
    with pytest.raises(ValueError, match=r"b1 and b2 score different cases.*compare the folds they share \(--folds\)"):
        compare_results("a1", "b1", also_a=["a2"], also_b=["b2"], **dirs)
    two_two = compare_results("a1", "b1", folds=[1], also_a=["a2"], also_b=["b2"], **dirs)
    assert two_two["cases"] == 3 and two_two["mean_difference"] == pytest.approx(0.04 - 0.01)
    argv = ["results", "paired", "a1", "b1", "--also-a", "a2", "--also-b", "b2", "--folds", "1",
            "--results-dir", str(tmp_path / "results"), "--logs-dir", str(tmp_path / "logs")]
    assert main(argv) == 0 and "A = a1 + a2" in capsys.readouterr().out
    saved = json.loads((tmp_path / "results" / "paired-a1+a2-vs-b1+b2-folds1.json").read_text())
    assert saved["runs_b"] == ["b1", "b2"] and saved["mean_difference"] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="a training is given twice for one recipe: a1, a1"):
        compare_results("a1", "b1", also_a=["a1"], **dirs)


def test_four_long_run_names_still_give_a_paired_file(tmp_path, capsys):
    long_a, long_b = "a" * 100, "b" * 100  # four such names would pass the 255-byte file-name limit
    for name, shift in ((long_a, 0.0), (long_a + "2", 0.01), (long_b, 0.02), (long_b + "2", 0.03)):
        _write_cv(tmp_path, name, {"x": 0.5 + shift, "y": 0.6 + shift}, {"x": 0, "y": 1})
    argv = ["results", "paired", long_a, long_b, "--also-a", long_a + "2", "--also-b", long_b + "2",
            "--results-dir", str(tmp_path), "--logs-dir", str(tmp_path)]
    assert main(argv) == 0
    [saved] = tmp_path.glob("paired-*.json")
    # the tail of side B: its second training
    assert saved.stem.startswith("paired-aaa") and saved.stem.endswith("bbb2")
    assert len(saved.stem) == 7 + 100 + 4 + 100 and json.loads(saved.read_text())["runs_b"] == [long_b, long_b + "2"]
    assert str(saved) in capsys.readouterr().out


def test_trainings_that_put_a_case_in_different_folds_are_refused(tmp_path):
    table = {"x": 0.5, "y": 0.6}
    _write_cv(tmp_path, "s1", table, {"x": 0, "y": 1})
    _write_cv(tmp_path, "s2", table, {"x": 1, "y": 0})
    with pytest.raises(ValueError, match=r"s2 puts x in fold 1, s1 in fold 0: they were made on different folds"):
        compare_results("s1", "s1", also_a=["s2"], results_dir=tmp_path, logs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"s2 puts x in fold 1, s1 in fold 0"):  # A and B: the same check
        compare_results("s1", "s2", results_dir=tmp_path, logs_dir=tmp_path)
    folds_file = tmp_path / "folds.json"
    folds_file.write_text(json.dumps({"folds": [["x", "y"]]}))
    with pytest.raises(ValueError, match=r"s1 puts y in fold 1, .*folds.json in fold 0"):
        compare_results("s1", "s1", folds=[0], folds_file=folds_file, results_dir=tmp_path, logs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"no case is in fold 2: the folds are \[0, 1\]"):
        compare_results("s1", "s1", folds=[2], results_dir=tmp_path, logs_dir=tmp_path)


def test_finished_folds_are_read_from_logs_and_exports_by_fold_number(tmp_path):
    _write_fold(tmp_path / "logs", "new", 0, {"x": 0.5})
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "new-fold1.json").write_text(json.dumps({"per_case": {"y": 0.7}, "config": {"fold": 1}}))
    (tmp_path / "results" / "new-folds.json").write_text(json.dumps({"folds": [["x"], ["y"]]}))  # not a fold
    loaded = load_per_case("new", tmp_path / "results", tmp_path / "logs")
    assert loaded["per_case"] == {"x": 0.5, "y": 0.7} and loaded["fold_of_case"] == {"x": 0, "y": 1}
    _write_fold(tmp_path / "logs", "new", 2, {"y": 0.6})
    with pytest.raises(ValueError, match=r"new-fold2/metrics.json scores \['y'\], which an earlier fold of new"):
        load_per_case("new", tmp_path / "results", tmp_path / "logs")
    shutil.rmtree(tmp_path / "logs" / "new-fold2")
    _write_fold(tmp_path / "logs", "new", 3, {"z": 0.6}, flair_fill=0.5)
    with pytest.raises(ValueError, match=r"new-fold3/metrics.json .* another recipe .*\(flair_fill: 0.5 -> 0.0\)"):
        load_per_case("new", tmp_path / "results", tmp_path / "logs")


def test_default_folders_are_the_repositorys_from_any_working_directory(repo_elsewhere):
    a, b = _tables(6, 0.02, 0.0)
    _write_cv(repo_elsewhere / "results", "base", a, {case: 0 for case in a})
    _write_fold(repo_elsewhere / "logs", "new", 0, b)
    result = compare_results("base", "new")
    assert result["cases"] == 6 and result["source_b"] == str(repo_elsewhere / "logs" / "new-fold0" / "metrics.json")
    (repo_elsewhere / "results" / "paired-base-vs-new.json").write_text(json.dumps(result))
    assert [c["file"] for c in load_comparisons()] == ["paired-base-vs-new.json"]
