import numpy as np
import pytest
import torch
from medpy.filter.binary import largest_connected_component
from medpy.metric.binary import assd, dc, hd95

from brainseg.metrics import binarize_volume, case_metrics, dice_coefficient, summarize, to_metric_grid, volume_dsc


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


def test_the_largest_component_rule_is_medpys():
    rng = np.random.default_rng(3)
    for density in (0.2, 0.45, 0.6):  # many small components, then a few large ones
        probs = rng.uniform(size=(6, 24, 24))
        pred = probs > 1 - density
        assert np.array_equal(binarize_volume(probs, 1 - density), largest_connected_component(pred))
    tie = np.zeros((1, 6, 6), bool)
    tie[0, 0, :2] = tie[0, 4, 3:5] = True  # two components of 2 voxels: the first labelled one stays
    assert np.array_equal(binarize_volume(tie.astype(float)), largest_connected_component(tie))
    assert binarize_volume(tie.astype(float))[0, 0, :2].all()


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


def test_case_metrics_known_values(two_boxes):
    probs, truth = two_boxes
    m = case_metrics(probs, truth)
    assert m["dsc"] == pytest.approx(2 * 96 / (128 + 128))
    assert m["dsc_no_lcc"] == pytest.approx(2 * 96 / (132 + 128))
    assert m["precision"] == pytest.approx(96 / 128) and m["recall"] == pytest.approx(96 / 128)
    pred = probs > 0.5
    pred[0] = False
    assert m["hd95_px"] == pytest.approx(hd95(pred, truth)) and m["assd_px"] == pytest.approx(assd(pred, truth))
    assert m["pred_volume_px"] == 128 and m["true_volume_px"] == 128


def test_empty_masks_have_documented_values():
    empty = np.zeros((4, 32, 32))
    both = case_metrics(empty, empty.astype(bool))
    assert (both["dsc"], both["precision"], both["recall"], both["hd95_px"], both["assd_px"]) == (1, 1, 1, 0, 0)
    truth = np.zeros((4, 32, 32), bool)
    truth[1, 4:8, 4:8] = True
    missed = case_metrics(empty, truth)
    diagonal = np.sqrt(4**2 + 32**2 + 32**2)
    assert missed["dsc"] == 0 and missed["recall"] == 0 and missed["hd95_px"] == pytest.approx(diagonal)
