"""The learning-rate schedule over a training-time budget, with a fake clock, and a tiny budgeted run."""

import csv

import pytest
import torch

from brainseg.config import TrainConfig
from brainseg.schedule import TimeBudget, TrainingClock, cosine_factor, make_scheduler
from brainseg.train import fit, next_epoch_seconds, overrun_warning, would_overrun


class FakeTimer:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budgeted_scheduler(minutes=1.0, warmup_epochs=0.0, scheduler="cosine"):
    timer = FakeTimer()
    clock = TrainingClock(timer)
    budget = TimeBudget(minutes, clock)
    config = TrainConfig.from_preset("smoke", epochs=3, scheduler=scheduler, warmup_epochs=warmup_epochs, lr=1.0)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    return timer, clock, budget, optimizer, make_scheduler(optimizer, config, steps_per_epoch=10, budget=budget)


def step_at(timer, optimizer, scheduler, seconds) -> float:
    """Take a step whose schedule is read at ``seconds`` after the clock started; the new learning rate."""
    timer.now = 100.0 + seconds
    optimizer.step()
    scheduler.step()
    return optimizer.param_groups[0]["lr"]


def test_cosine_factor_known_values():
    assert cosine_factor(0.0) == 1.0 and cosine_factor(0.5) == pytest.approx(0.5)
    assert cosine_factor(1.0) == 0.0 and cosine_factor(7.0) == 0.0 and cosine_factor(-1.0) == 1.0


def test_learning_rate_follows_the_time_spent_not_the_steps():
    timer, clock, budget, optimizer, scheduler = budgeted_scheduler(minutes=1.0)
    clock.start_epoch(0.0)
    assert step_at(timer, optimizer, scheduler, 15) == pytest.approx(cosine_factor(0.25))
    assert not budget.spent
    # one step or a hundred: only the time counts
    assert step_at(timer, optimizer, scheduler, 30) == pytest.approx(0.5)
    assert step_at(timer, optimizer, scheduler, 30) == pytest.approx(0.5)
    assert step_at(timer, optimizer, scheduler, 59.9) > 0 and not budget.spent
    assert step_at(timer, optimizer, scheduler, 60) == 0.0 and budget.spent


def test_constant_schedule_still_reads_the_budget():
    timer, clock, budget, optimizer, scheduler = budgeted_scheduler(minutes=0.5, scheduler="constant")
    clock.start_epoch(0.0)
    assert step_at(timer, optimizer, scheduler, 29) == 1.0 and not budget.spent
    assert step_at(timer, optimizer, scheduler, 31) == 1.0 and budget.spent


def test_warm_up_counts_steps_then_the_cosine_reads_the_clock():
    timer, clock, budget, optimizer, scheduler = budgeted_scheduler(minutes=1.0, warmup_epochs=0.5)
    clock.start_epoch(0.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)  # step 0 of a 5-step warm-up
    lrs = [step_at(timer, optimizer, scheduler, 0.1) for _ in range(5)]
    assert lrs[:4] == pytest.approx([0.4, 0.6, 0.8, 1.0]) and lrs[4] == pytest.approx(cosine_factor(0.1 / 60))


def test_clock_counts_training_epochs_only_and_continues_a_resumed_run():
    timer = FakeTimer()
    clock = TrainingClock(timer)
    clock.start_epoch(0.0)
    timer.now += 10
    clock.stop_epoch()
    timer.now += 500  # validation: not counted
    assert clock.seconds() == 10.0
    clock.start_epoch(10.0)
    timer.now += 5
    assert clock.seconds() == 15.0
    resumed = TrainingClock(timer)
    resumed.start_epoch(15.0)  # the seconds saved in last.pt
    timer.now += 1
    assert resumed.seconds() == 16.0


@pytest.mark.parametrize("minutes", [0.0, -1.0])
def test_budget_needs_positive_minutes(minutes):
    with pytest.raises(ValueError, match=r"a time budget needs minutes > 0, got -?[01]\.0"):
        TimeBudget(minutes, TrainingClock())


def test_config_rejects_a_negative_budget():
    with pytest.raises(ValueError, match="budget_minutes must be >= 0, got -2"):
        TrainConfig.from_preset("smoke", budget_minutes=-2)


def test_tiny_budget_stops_inside_the_first_epoch_with_the_learning_rate_at_zero(synthetic_data, tmp_path):
    config = TrainConfig.from_preset(
        "smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"), logs_dir=str(tmp_path / "logs"),
        weights_dir=str(tmp_path / "weights"), run_name="budget", split="kfold", folds=3, image_size=32,
        batch_size=2, features=4, max_train_cases=0, epochs=50, scheduler="cosine", lr=1e-3,
        budget_minutes=1e-5)  # spent after the first step
    result = fit(config, progress=False)
    with open(tmp_path / "logs" / "budget" / "history.csv") as handle:
        [row] = list(csv.DictReader(handle))  # stopped in epoch 1
    assert result["stop_reason"] == "budget_minutes" and result["stopped_early"] and result["epochs"] == 1
    assert float(row["lr"]) == 0.0
    assert float(row["val_mean_dsc"]) == pytest.approx(result["val_mean_dsc"])  # the stopping epoch validated
    # resuming a run whose budget is spent trains no more
    again = fit(config, progress=False, resume=True)
    assert again["epochs"] == 1 and again["stop_reason"] == "budget_minutes"


def test_epochs_that_run_out_before_the_budget_say_the_schedule_is_cut_short(synthetic_data, tmp_path, capsys):
    config = TrainConfig.from_preset(
        "smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"), logs_dir=str(tmp_path / "logs"),
        weights_dir=str(tmp_path / "weights"), run_name="long-budget", split="kfold", folds=3, image_size=32,
        batch_size=4, features=4, max_train_cases=0, epochs=1, scheduler="cosine", budget_minutes=60)
    result = fit(config, progress=False)
    assert result["stop_reason"] == "" and "training ends at epoch 1 at 0% of the budget" in capsys.readouterr().out


def test_the_safety_stop_counts_only_what_is_left_of_a_time_budget():
    # 36 of 38 budget minutes trained in 4.5-minute epochs, 37 minutes into the run, validations of 1 minute
    budget = TimeBudget(38.0, TrainingClock())
    left = next_epoch_seconds(270.0, budget, trained_seconds=36 * 60)
    assert left == 120.0  # the budget ends the next epoch after 2 minutes
    assert not would_overrun(42.0, 37 * 60, left, 60.0)  # 37 + 1 + 2 + 1 = 41 minutes: the budget finishes
    assert would_overrun(42.0, 37 * 60, next_epoch_seconds(270.0, None, 36 * 60), 60.0)  # 37 + 1 + 4.5 + 1
    assert next_epoch_seconds(270.0, budget, trained_seconds=39 * 60) == 0.0  # overspent: nothing left
    assert not would_overrun(0.0, 1e9, 1e9, 1e9)  # 0: no safety stop


def test_a_schedule_that_will_not_fit_the_safety_stop_is_announced_after_the_first_epoch():
    # the cpu preset (20 epochs, 42-minute stop) on a slow CPU: data 1.3 min, epoch 1 trained in 4.5 min and
    # validated in 0.3, so 6.1 minutes in; 19 epochs of 4.8 min are left: about 97 min, the stop near epoch 8
    config = TrainConfig.from_preset("cpu")
    warning = overrun_warning(config, 1, elapsed_seconds=6.1 * 60, epoch_seconds=4.5 * 60, val_seconds=0.3 * 60)
    assert "the 20 epochs need about 97 min" in warning and "max_minutes=42" in warning
    assert "near epoch 8" in warning and "--budget-minutes" in warning
    # a CPU four times as fast fits: nothing to say
    assert overrun_warning(config, 1, elapsed_seconds=2.5 * 60, epoch_seconds=1.1 * 60, val_seconds=0.1 * 60) == ""
    # validating every 4th epoch counts a quarter of a validation per epoch: 6.1 + 19 * (4.5 + 0.075)
    sparse = TrainConfig.from_preset("cpu", val_every=4)
    assert "about 93 min" in overrun_warning(sparse, 1, 6.1 * 60, 4.5 * 60, 0.3 * 60)
    # no safety stop, a time budget (it fits the schedule itself) or the last epoch: silent
    for quiet in (TrainConfig.from_preset("cpu", max_minutes=0.0), TrainConfig.from_preset("cpu", budget_minutes=38.0)):
        assert overrun_warning(quiet, 1, 6.1 * 60, 4.5 * 60, 0.3 * 60) == ""
    assert overrun_warning(config, 20, 41 * 60, 4.5 * 60, 0.3 * 60) == ""


def test_epochs_that_end_before_the_time_budget_are_announced_after_the_first_epoch():
    # --budget-minutes 38 without --epochs 100 on a fast CPU: 20 epochs of 1.1 min end at 22 of the 38 minutes,
    # with the cosine, which follows the minutes, at 38% of the peak
    config = TrainConfig.from_preset("cpu", budget_minutes=38.0)
    warning = overrun_warning(config, 1, elapsed_seconds=2.5 * 60, epoch_seconds=1.1 * 60, val_seconds=0.1 * 60)
    assert "the 20 epochs take about 22 of the budget's 38 training minutes" in warning
    assert "epoch 20 with the learning rate not yet decayed to 0" in warning and "--epochs above 20" in warning
    assert overrun_warning(config, 3, 2.5 * 60, 1.1 * 60, 0.1 * 60) == ""  # a resumed run cannot change --epochs
    enough = TrainConfig.from_preset("cpu", budget_minutes=38.0, epochs=100)
    assert overrun_warning(enough, 1, 2.5 * 60, 1.1 * 60, 0.1 * 60) == ""  # the budget ends the run


def test_coarse_start_area_averages_images_and_thresholds_masks_until_its_share_is_done():
    from brainseg.schedule import CoarseStart

    progress = [0.0]
    coarse = CoarseStart(2, 0.5, lambda: progress[0])
    image = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(1, 3, 1, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.float32)[None, None]
    small_image, small_mask = coarse(image, mask)
    assert small_image.shape == (1, 3, 2, 2) and small_mask.shape == (1, 1, 2, 2)
    assert small_image[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # each 2x2 block's mean
    assert small_mask[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]  # 3/4 and 2/4 covered: kept; 0 and 1/4: not
    progress[0] = 0.5  # the coarse share is done: batches pass unchanged
    assert coarse(image, mask)[0] is image and coarse(image, mask)[1] is mask


def test_coarse_start_keeps_soft_masks_as_fractions():
    from brainseg.schedule import CoarseStart

    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)[None, None]
    _, small = CoarseStart(2, 1.0, lambda: 0.0, soft_mask=True)(torch.zeros(1, 3, 4, 4), mask)
    assert small[0, 0].tolist() == [[0.75, 0.0], [0.0, 0.25]]


def test_time_budget_peek_reads_without_moving_what_spent_answers():
    timer, clock, budget, _, _ = budgeted_scheduler(minutes=1.0)
    clock.start_epoch(0.0)
    timer.now = 100.0 + 90.0
    assert budget.peek() == pytest.approx(1.5)
    assert not budget.spent  # only the schedule's reading decides the stop
    assert budget.fraction() == pytest.approx(1.5) and budget.spent
