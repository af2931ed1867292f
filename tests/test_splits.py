import pytest

from brainseg.data.splits import REFERENCE_VALIDATION, kfold_split, reference_split

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


@pytest.mark.parametrize("folds, fold", [(1, 0), (5, 5), (5, -1), (24, 0)])
def test_kfold_rejects_bad_arguments(folds, fold):
    with pytest.raises(ValueError):
        kfold_split(CASES, folds, fold)


def test_reference_split_needs_enough_cases():
    with pytest.raises(ValueError, match="more than 10 cases"):
        reference_split(CASES[:10])


def test_reference_split_is_disjoint():
    train, val = reference_split(CASES)
    assert len(val) == 10 and sorted(train + val) == CASES


@pytest.mark.realdata
def test_reference_split_equals_published_list(real_data):
    from brainseg.data.kaggle import discover_cases

    train, val = reference_split(list(discover_cases(real_data)))
    assert tuple(val) == REFERENCE_VALIDATION and len(train) == 100


def test_inner_split_is_seeded_and_inside_the_training_side():
    from brainseg.data.splits import inner_split

    train, _ = reference_split(CASES)
    inner_train, inner_val = inner_split(train, 4, seed=1)
    assert len(inner_val) == 4 and sorted(inner_train + inner_val) == sorted(train)
    assert inner_split(train, 4, seed=1) == (inner_train, inner_val) != inner_split(train, 4, seed=2)
    with pytest.raises(ValueError, match="inner validation needs between 1 and"):
        inner_split(train, len(train))
