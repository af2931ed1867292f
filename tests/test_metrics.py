import numpy as np
import pytest
import torch
from medpy.metric.binary import dc

from brainseg.metrics import binarize_volume, dice_coefficient, summarize, to_metric_grid, volume_dsc


def test_dice_matches_medpy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, truth = rng.uniform(size=(2, 5, 16, 16)) > 0.6
        assert dice_coefficient(pred, truth) == pytest.approx(dc(pred, truth))


def test_dice_empty_cases():
    empty = np.zeros((3, 4, 4), bool)
    assert dice_coefficient(empty, empty) == 1.0
    full = np.ones((3, 4, 4), bool)
    assert dice_coefficient(empty, full) == 0.0


def test_largest_component_rule():
    truth = np.zeros((4, 16, 16), bool)
    truth[1:3, 2:8, 2:8] = True  # 72 voxels
    probs = np.zeros((4, 16, 16))
    probs[1:3, 2:8, 2:8] = 0.9  # the true lesion
    probs[0, 12:14, 12:14] = 0.9  # a small false positive: 4 voxels, not connected
    probs[3, 0, 0] = 0.5  # exactly 0.5 is not above the threshold
    assert binarize_volume(probs).sum() == 72
    assert volume_dsc(probs, truth) == pytest.approx(1.0)
    assert volume_dsc(probs, truth, largest_component=False) == pytest.approx(2 * 72 / (76 + 72))


def test_to_metric_grid_resizes_probabilities():
    probs = torch.rand(5, 1, 64, 64)
    out = to_metric_grid(probs)
    assert out.shape == (5, 256, 256) and out.dtype == torch.float32
    assert torch.equal(to_metric_grid(torch.ones(2, 1, 256, 256)), torch.ones(2, 256, 256))


def test_summarize():
    assert summarize({"a": 0.2, "b": 0.4, "c": 0.9}) == pytest.approx({"mean": 0.5, "median": 0.4})


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        dice_coefficient(np.zeros((2, 2)), np.zeros((2, 3)))
