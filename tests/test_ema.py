"""The moving average of the weights, plain and corrected for its start (brainseg/ema.py)."""

import pytest
import torch
from torch import nn

from brainseg.config import TrainConfig
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from brainseg.ema import averaged_model


def average_after(weights: list[float], decay: float, bias_correction: bool) -> float:
    """The averaged weight of a 1-parameter model that took ``weights`` after its steps, in order."""
    model = nn.Linear(1, 1, bias=False)
    average = averaged_model(model, decay, bias_correction)
    for w in weights:
        with torch.no_grad():
            model.weight.fill_(w)
        average.update_parameters(model)
    return average.module.weight.item()


def test_a_short_run_keeps_its_first_weights_only_without_the_correction():
    weights = [0.0] + [1.0] * 869  # 870 steps, as 5 epochs of the cpu preset at batch 16
    assert average_after(weights, 0.999, False) == pytest.approx(1 - 0.999 ** 869, abs=1e-5)  # 0.58
    assert average_after(weights, 0.999, True) == pytest.approx((1 - 0.999 ** 869) / (1 - 0.999 ** 870), abs=1e-5)
    assert average_after(weights, 0.999, True) > 0.999


def test_the_corrected_average_weighs_every_step_by_its_age_and_sums_to_one():
    decay, weights = 0.8, [3.0, -1.0, 4.0, 1.0, -5.0, 9.0]
    n = len(weights)
    ages = [decay ** (n - 1 - i) for i in range(n)]
    expected = sum(a * w for a, w in zip(ages, weights)) / sum(ages)
    assert average_after(weights, decay, True) == pytest.approx(expected, rel=1e-6)
    assert average_after(weights, decay, False) != pytest.approx(expected, rel=1e-3)


def test_long_runs_read_the_same_with_or_without_the_correction():
    weights = [float(i % 7) for i in range(300)]
    assert average_after(weights, 0.9, True) == pytest.approx(average_after(weights, 0.9, False), rel=1e-6)


def test_integer_buffers_are_copied_and_float_buffers_averaged():
    model = nn.BatchNorm1d(2)
    average = averaged_model(model, 0.5, bias_correction=True)
    for mean, batches in ((0.0, 1), (2.0, 2)):
        model.running_mean.fill_(mean)
        model.num_batches_tracked.fill_(batches)
        average.update_parameters(model)
    assert average.module.num_batches_tracked.item() == 2
    assert average.module.running_mean.tolist() == pytest.approx([2 / 1.5] * 2)  # (0.5 * 0 + 1 * 2) / 1.5


def test_a_decay_outside_the_open_unit_interval_and_a_correction_without_ema_are_refused():
    with pytest.raises(ValueError, match="ema decay must be in"):
        averaged_model(nn.Linear(1, 1), 1.0)
    with pytest.raises(ValueError, match="ema is 0; pass --ema 0.999"):
        TrainConfig(ema=0.0, ema_bias_correction=True).validate()


def test_the_plain_average_repeats_torchs_own_ema_exactly_and_counts_its_updates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ours = averaged_model(model, 0.9)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(5):
        model.train()(torch.randn(2, 3, 8, 8))  # moves the BatchNorm statistics
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(model)
        torchs.update_parameters(model)
    for (name, a), b in zip(ours.module.state_dict().items(), torchs.module.state_dict().values()):
        if a.is_floating_point():
            assert torch.equal(a, b), name
    assert int(ours.n_averaged) == 5 and ours.module[1].num_batches_tracked.item() == 5  # copied, not averaged
    assert set(ours.state_dict()) == set(torchs.state_dict())  # checkpoints load either way

