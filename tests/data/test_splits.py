import json
from dataclasses import replace

import pytest

from brainseg.config import TrainConfig
from brainseg.data.kaggle import discover_cases
from brainseg.data.splits import REFERENCE_VALIDATION, inner_split, kfold_split, reference_split, split_cases

CASES = [f"TCGA_XX_{i:04d}_20000101" for i in range(23)]


def test_kfold_covers_every_case_once_and_is_seeded():
    seen = []
    for fold in range(5):
        train, val = kfold_split(CASES, 5, fold, seed=3)
        assert not set(train) & set(val) and sorted(train + val) == CASES
        assert len(val) in (4, 5)
        seen += val
    assert sorted(seen) == CASES
    assert kfold_split(CASES, 5, 2, seed=3) == kfold_split(CASES, 5, 2, seed=3)
    assert kfold_split(CASES, 5, 2, seed=3) != kfold_split(CASES, 5, 2, seed=4)


@pytest.mark.parametrize("folds, fold, message", [
    (1, 0, r"folds must be between 2 and the number of cases \(23\), got 1"),
    (5, 5, r"fold must be in \[0, 5\), got 5"),
    (5, -1, r"fold must be in \[0, 5\), got -1"),
    (24, 0, r"folds must be between 2 and the number of cases \(23\), got 24"),
])
def test_kfold_rejects_bad_arguments(folds, fold, message):
    with pytest.raises(ValueError, match=message):
        kfold_split(CASES, folds, fold)


def test_reference_split_needs_enough_cases():
    with pytest.raises(ValueError, match="more than 10 cases"):
        reference_split(CASES[:10])


def test_reference_split_is_disjoint():
    train, val = reference_split(CASES)
    assert len(val) == 10 and sorted(train + val) == CASES


@pytest.mark.realdata
def test_reference_split_equals_published_list(real_data):
    train, val = reference_split(list(discover_cases(real_data)))
    assert tuple(val) == REFERENCE_VALIDATION and len(train) == 100


def test_inner_split_is_seeded_and_inside_the_training_side():
    train, _ = reference_split(CASES)
    inner_train, inner_val = inner_split(train, 4, seed=1)
    assert len(inner_val) == 4 and sorted(inner_train + inner_val) == sorted(train)
    assert inner_split(train, 4, seed=1) == (inner_train, inner_val) != inner_split(train, 4, seed=2)
    with pytest.raises(ValueError, match="inner validation needs between 1 and"):
        inner_split(train, len(train))


def test_split_cases_follows_the_configs_split(synthetic_data, tmp_path):
    cases = sorted(discover_cases(synthetic_data))
    config = TrainConfig.from_preset("smoke", data_dir=str(synthetic_data), split="kfold", folds=3, fold=1,
                                     split_seed=2, max_train_cases=0, max_val_cases=0)
    train, val = kfold_split(cases, 3, 1, seed=2)
    assert split_cases(config) == (train, val) and len(val) == 4
    assert split_cases(replace(config, max_train_cases=3, max_val_cases=2)) == (train[:3], val[:2])
    assert split_cases(replace(config, split="reference")) == reference_split(cases)
    (tmp_path / "folds.json").write_text(json.dumps({"folds": [cases[:4], cases[4:8], cases[8:]]}))
    assert split_cases(replace(config, folds_file=str(tmp_path / "folds.json"))) == (cases[:4] + cases[8:], cases[4:8])
