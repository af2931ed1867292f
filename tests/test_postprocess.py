import math
import re

import numpy as np
import pytest

from brainseg.metrics import keep_components
from brainseg.postprocess import (analyse_postprocessing, best_rule, check_thresholds, nested_choice, rule_name,
                                  rule_scores, summarize_choice)


def _blobs() -> np.ndarray:
    """A (2, 8, 8) volume with components of 8, 3 and 1 voxels (face connectivity)."""
    pred = np.zeros((2, 8, 8), bool)
    pred[:, 0:2, 0:2] = True  # 8 voxels across both slices
    pred[0, 5, 5:8] = True  # 3 voxels
    pred[1, 7, 0] = True  # 1 voxel
    pred[0, 4, 4] = True  # touches (0, 5, 5) only diagonally: its own component of 1 voxel
    return pred


def test_keep_components_drops_small_ones_and_always_keeps_the_largest():
    pred = _blobs()
    assert np.array_equal(keep_components(pred, 0), pred)
    kept = keep_components(pred, 2)
    assert kept.sum() == 8 + 3 and not kept[1, 7, 0] and not kept[0, 4, 4]
    assert keep_components(pred, 4).sum() == 8
    assert keep_components(pred, math.inf).sum() == 8  # the largest stays even above every size
    assert not keep_components(np.zeros((2, 4, 4), bool), 10).any()


def test_rule_names_span_none_to_largest():
    assert [rule_name(n) for n in (0, 300, math.inf)] == ["none", "min300", "largest"]
    assert rule_name(math.inf, 0.3) == "largest@0.3" and rule_name(0, 0.5) == "none"


def test_rule_scores_at_other_thresholds():
    truth = np.zeros((1, 8, 8), bool)
    truth[0, :4, :4] = True
    prob = np.zeros((1, 8, 8), np.float32)
    prob[0, :4, :2] = 0.9  # half the lesion sure, the other half at 0.4
    prob[0, :4, 2:4] = 0.4
    prob[0, 7, 7] = 0.35  # a lone voxel that only the lowest threshold keeps
    scores = rule_scores({"a": prob}, {"a": truth}, (0, math.inf), thresholds=(0.3, 0.5))
    assert set(scores) == {"none@0.3", "largest@0.3", "none", "largest"}
    assert scores["largest"]["a"] == pytest.approx(2 * 8 / (8 + 16))
    assert scores["largest@0.3"]["a"] == 1.0
    assert scores["none@0.3"]["a"] == pytest.approx(2 * 16 / (17 + 16))


def test_rule_scores_known_dsc():
    truth = np.zeros((2, 8, 8), bool)
    truth[:, 0:2, 0:2] = True
    scores = rule_scores({"a": _blobs().astype(np.float32)}, {"a": truth}, (0, math.inf))
    assert scores["largest"]["a"] == 1.0
    assert scores["none"]["a"] == pytest.approx(2 * 8 / (8 + 5 + 8))


def test_best_rule_prefers_the_protocol_on_a_tie():
    scores = {"none": {"a": 0.5, "b": 0.9}, "largest": {"a": 0.9, "b": 0.5}, "min10": {"a": 0.2, "b": 0.2}}
    assert best_rule(scores, ["a", "b"]) == "largest"
    assert best_rule(scores, ["b"]) == "none"


def test_nested_choice_never_uses_a_folds_own_cases():
    # 'none' is best on fold 0's cases only, 'largest' on the others: the nested choice for fold 0
    # must still be 'largest', so fold 0's cases get the worse score.
    fold_of = {"a": 0, "b": 1, "c": 2}
    scores = {"none": {"a": 1.0, "b": 0.1, "c": 0.1}, "largest": {"a": 0.6, "b": 0.8, "c": 0.8}}
    per_case, chosen = nested_choice(scores, fold_of)
    assert chosen == {0: "largest", 1: "largest", 2: "largest"}
    assert per_case == {"a": 0.6, "b": 0.8, "c": 0.8}
    with pytest.raises(ValueError, match="at least two folds"):
        nested_choice(scores, {"a": 0, "b": 0, "c": 0})


def test_summarize_choice_compares_with_the_protocol_rule():
    fold_of = {f"c{i}": i % 2 for i in range(6)}
    scores = {"largest": {c: 0.8 for c in fold_of}, "min10": {c: 0.9 for c in fold_of}}
    summary = summarize_choice(scores, fold_of, recorded={c: 0.79 for c in fold_of})
    assert summary["chosen_on_all_cases"] == "min10" and summary["nested"]["mean"] == pytest.approx(0.9)
    assert summary["nested_vs_largest"]["mean_difference"] == pytest.approx(0.1)
    assert summary["max_difference_from_recorded"] == pytest.approx(0.01)


def test_thresholds_always_include_the_protocols_and_bad_ones_are_refused(tmp_path):
    assert check_thresholds((0.4, 0.3)) == (0.3, 0.4, 0.5)  # the nested choice is compared with 0.5's rule
    assert check_thresholds((0.5,)) == (0.5,)
    with pytest.raises(ValueError, match=r"thresholds must lie between 0 and 1, got \[0.5, 1.5\]"):
        analyse_postprocessing("cv-a", results_dir=tmp_path, thresholds=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"name the same rule twice \(\['none@0.3', 'none@0.3', 'none'\]\)"):
        check_thresholds((0.3, 0.3000001))


def test_missing_fold_checkpoint_is_named(tmp_path):
    (tmp_path / "cv-a-fold0.json").write_text('{"per_case": {"x": 0.5}, "config": {"fold": 0}}')
    with pytest.raises(FileNotFoundError, match=r"cv-a-fold0/best.pt: fold 0's checkpoint is missing"):
        analyse_postprocessing("cv-a", results_dir=tmp_path, logs_dir=tmp_path / "logs", weights_dir=tmp_path)


def test_default_folders_are_the_repositorys_from_any_working_directory(repo_elsewhere):
    (repo_elsewhere / "results" / "cv-a-fold0.json").write_text('{"per_case": {"x": 0.5}, "config": {"fold": 0}}')
    missing = repo_elsewhere / "weights" / "cv-a-fold0" / "best.pt"
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(missing))}: fold 0's checkpoint is missing"):
        analyse_postprocessing("cv-a")
