"""The selection modes' rules, without training (fit's runs in every mode are in test_train, test_cv)."""

import pytest

from brainseg.config import TrainConfig
from brainseg.selection import Selection

CASES = [f"case{i}" for i in range(8)]


def test_only_inner_selection_validates_on_training_cases():
    config = TrainConfig.from_preset("smoke", inner_val_cases=2, split_seed=3)
    train, outer = CASES[:6], CASES[6:]
    for mode in ("reference", "last"):
        assert Selection(mode).split(config, train, outer) == (train, outer)
    inner_train, inner_val = Selection("inner").split(config, train, outer)
    assert len(inner_val) == 2 and sorted(inner_train + inner_val) == train


@pytest.mark.parametrize("mode, kept", [("reference", [True, False, True]), ("inner", [True, False, True]),
                                        ("last", [True, True, True])])
def test_which_validation_replaces_the_kept_model(mode, kept):
    best = {"val_mean_dsc": 0.5}
    assert [Selection(mode).keeps(mean, best) for mean in (0.6, 0.4, 0.5 + 1e-9)] == kept
    assert Selection(mode).keeps(0.0, {"val_mean_dsc": -1.0})  # the first validation always


def test_validations_every_n_epochs_the_final_one_and_before_a_stop():
    config = TrainConfig.from_preset("smoke", epochs=5, val_every=2)
    assert [Selection.validates(config, epoch, stopping=False) for epoch in range(1, 6)] == [False, True, False,
                                                                                             True, True]
    assert Selection.validates(config, 3, stopping=True)


def test_reference_and_last_outcomes_keep_the_best_and_report_the_rule_off():
    best = {"val_mean_dsc": 0.5, "val_median_dsc": 0.5, "epoch": 2, "per_case": {"a": 0.4, "b": 0.6},
            "per_case_without_lcc": {"a": 0.3, "b": 0.5}}
    for mode, start in (("reference", "best epoch"), ("last", "last:")):
        entries, kept = Selection(mode).outcome(best, None, [], [], None, None)
        assert kept is best and entries["selection"].startswith(start)
        assert entries["val_mean_dsc_without_lcc"] == pytest.approx(0.4)
    assert Selection("inner").final_prefix == "final_inner" and Selection("last").final_prefix == "final_val"
