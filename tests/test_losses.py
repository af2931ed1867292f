import math

import numpy as np
import pytest
import torch

from brainseg.losses import LOSSES, DeepSupervisionLoss, create_loss

BIG = 30.0  # sigmoid(30) = 1 - 1e-13


def logits_of(binary: torch.Tensor) -> torch.Tensor:
    return (binary * 2 - 1) * BIG


@pytest.fixture
def target():
    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, :2] = 1  # 8 lesion pixels in the first image, none in the second
    return t


def test_dice_perfect_disjoint_and_half_overlap(target):
    loss = create_loss("dice", smooth=1.0)
    assert loss(logits_of(target), target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(logits_of(1 - target), target).item() == pytest.approx(1 - 1 / 33, abs=1e-6)  # 24 + 8 + 1
    half = torch.zeros_like(target)
    half[0, 0, 1:3] = 1  # 8 predicted pixels, 4 of them on the target
    assert loss(logits_of(half), target).item() == pytest.approx(1 - (2 * 4 + 1) / (8 + 8 + 1), abs=1e-6)


def test_dice_is_batch_level_unless_per_sample():
    target = torch.zeros(2, 1, 2, 2)
    target[0] = 1
    pred = torch.zeros_like(target)
    pred[0, 0, 0] = 1  # 2 of the 4 target pixels; the second image is empty in both
    assert create_loss("dice", smooth=1e-9)(logits_of(pred), target).item() == pytest.approx(1 - 4 / 6, abs=1e-6)
    per_sample = create_loss("dice", smooth=1.0, per_sample=True)(logits_of(pred), target).item()
    assert per_sample == pytest.approx(((1 - 5 / 7) + (1 - 1 / 1)) / 2, abs=1e-6)


def test_soft_iou_values(target):
    loss = create_loss("soft_iou", smooth=1e-9)
    assert loss(logits_of(target), target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(logits_of(1 - target), target).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.zeros_like(target)
    half[0, 0, 1:3] = 1
    assert loss(logits_of(half), target).item() == pytest.approx(1 - 4 / 12, abs=1e-6)


def test_region_losses_match_numpy_formulas_on_soft_predictions(target):
    torch.manual_seed(0)
    logits = torch.randn_like(target)
    p, g = torch.sigmoid(logits).numpy().ravel(), target.numpy().ravel()
    tp, fp, fn = (p * g).sum(), (p * (1 - g)).sum(), ((1 - p) * g).sum()
    s = 1.0
    expected = {
        "dice": 1 - (2 * tp + s) / (p.sum() + g.sum() + s),
        "soft_iou": 1 - (tp + s) / (p.sum() + g.sum() - tp + s),
        "tversky": 1 - (tp + s) / (tp + 0.3 * fp + 0.7 * fn + s),
        "focal_tversky": (1 - (tp + s) / (tp + 0.3 * fp + 0.7 * fn + s)) ** 0.75,
    }
    for name, value in expected.items():
        assert create_loss(name)(logits, target).item() == pytest.approx(value, rel=1e-5), name


def test_tversky_with_equal_weights_is_dice(target):
    torch.manual_seed(1)
    logits = torch.randn_like(target)
    dice = create_loss("dice", smooth=1e-9)(logits, target)
    tversky = create_loss("tversky", alpha=0.5, beta=0.5, smooth=1e-9)(logits, target)
    assert tversky.item() == pytest.approx(dice.item(), rel=1e-6)


def test_bce_dice_and_focal_against_formulas(target):
    torch.manual_seed(2)
    logits = torch.randn_like(target)
    p, g = torch.sigmoid(logits).double().numpy(), target.double().numpy()
    bce = -(g * np.log(p) + (1 - g) * np.log(1 - p)).mean()
    dice = create_loss("dice")(logits, target).item()
    assert (create_loss("bce_dice", bce_weight=0.3)(logits, target).item()
            == pytest.approx(0.3 * bce + 0.7 * dice, rel=1e-5))
    p_t = np.where(g == 1, p, 1 - p)
    alpha_t = np.where(g == 1, 0.25, 0.75)
    focal = (-alpha_t * (1 - p_t) ** 2 * np.log(p_t)).mean()
    assert create_loss("focal")(logits, target).item() == pytest.approx(focal, rel=1e-5)
    assert create_loss("focal", alpha=None, gamma=0)(logits, target).item() == pytest.approx(bce, rel=1e-5)
    tversky = create_loss("tversky", alpha=0.2, beta=0.8)(logits, target).item()
    assert create_loss("bce_tversky", bce_weight=0.4, alpha=0.2, beta=0.8)(logits, target).item() == pytest.approx(
        0.4 * bce + 0.6 * tversky, rel=1e-5)


def test_bce_tversky_punishes_a_missed_lesion_more_than_an_equal_false_alarm(target):
    """Half the lesion missed against as many background pixels marked (the BCE terms are equal): with
    beta > alpha the miss costs more, with alpha > beta the false alarm does."""
    missed, false_alarm = target.clone(), target.clone()
    lesion, background = target.flatten().nonzero()[:4], (target.flatten() == 0).nonzero()[:4]
    missed.view(-1)[lesion] = 0
    false_alarm.view(-1)[background] = 1
    recall_weighted, precision_weighted = create_loss("bce_tversky"), create_loss("bce_tversky", alpha=0.7, beta=0.3)
    assert recall_weighted(logits_of(missed), target) > recall_weighted(logits_of(false_alarm), target)
    assert precision_weighted(logits_of(missed), target) < precision_weighted(logits_of(false_alarm), target)


def test_focal_perfect_and_wrong(target):
    loss = create_loss("focal")
    assert loss(logits_of(target), target).item() == pytest.approx(0.0, abs=1e-6)
    # confident and wrong, -log(p_t) = 30 everywhere: alpha_t (1 - p_t)^2 30 averaged over 8 lesion (alpha 0.25)
    # and 24 background (alpha 0.75) pixels
    assert loss(logits_of(1 - target), target).item() == pytest.approx((8 * 0.25 + 24 * 0.75) * 30 / 32, rel=1e-4)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_finite_for_empty_masks_and_perfect_predictions(name):
    loss = create_loss(name)
    for logits, target in ((torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)),
                           (torch.full((2, 1, 8, 8), -BIG), torch.zeros(2, 1, 8, 8))):
        logits.requires_grad_(True)
        value = loss(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), name


def test_focal_loss_with_gamma_below_one_keeps_finite_gradients_on_confident_pixels():
    logits = torch.tensor([30.0, -30.0, 5.0, -5.0]).reshape(1, 1, 2, 2).requires_grad_(True)
    create_loss("focal", gamma=0.5)(logits, torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0, 1, 0] < 0 < logits.grad[0, 0, 1, 1]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_logits_are_handled_in_float32(name):
    logits = torch.randn(2, 1, 8, 8).bfloat16()
    assert create_loss(name)(logits, torch.zeros(2, 1, 8, 8)).dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="available losses: bce_dice, bce_tversky, dice, focal, focal_tversky, "
                                         "soft_iou, tversky"):
        create_loss("iou2")
    with pytest.raises(ValueError, match="smooth"):
        create_loss("dice", smooth=-1)
    for name in ("dice", "soft_iou", "tversky", "bce_dice"):  # 0/0 on a slice without lesion
        with pytest.raises(ValueError, match=r"smooth must be > 0, got 0"):
            create_loss(name, smooth=0)
    with pytest.raises(ValueError, match=r"gamma must be > 0, got 0: at 0 the loss is the constant 1"):
        create_loss("focal_tversky", gamma=0)
    with pytest.raises(ValueError, match="alpha and beta are both 0: the Tversky index is then 1 "
                                         "whatever the prediction"):
        create_loss("tversky", alpha=0, beta=0)
    with pytest.raises(ValueError, match="bce_weight"):
        create_loss("bce_dice", bce_weight=2)
    with pytest.raises(ValueError, match="beta"):
        create_loss("bce_tversky", beta=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        create_loss("focal", alpha=1.5)
    with pytest.raises(ValueError, match="same shape"):
        create_loss("dice")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"loss 'dice' has no argument\(s\) \['alpha'\]; "
                                         r"it accepts: smooth, per_sample"):
        create_loss("dice", alpha=0.3)


def test_the_study_defects_reproduce_their_arithmetic():
    logits = torch.tensor([[[[10.0, -10.0], [10.0, -10.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # raw-output Dice: TP = 20, sum p = 0, sum g = 2 -> 1 - 41 / 3, a loss below zero
    assert create_loss("study_raw_dice")(logits, target).item() == pytest.approx(1 - 41 / 3)
    # double sigmoid: a perfect, confident prediction becomes 0.731 on the lesion and 0.5 outside
    q_in, q_out = 1 / (1 + math.exp(-1)), 0.5
    tp, p = 2 * q_in, 2 * q_in + 2 * q_out
    assert create_loss("study_double_sigmoid_iou")(logits, target).item() == pytest.approx(
        1 - (tp + 1) / (p + 2 - tp + 1), abs=1e-4)
    assert create_loss("soft_iou")(logits, target).item() < 1e-3
    assert "study_raw_dice" not in LOSSES  # not offered as a loss to train with


def test_deep_supervision_weights_each_coarser_head_by_the_decay(target):
    perfect, wrong = logits_of(target), logits_of(1 - target)
    dice = create_loss("dice", smooth=1.0)
    missed = 1 - 1 / 33  # the Dice loss of the wrong head (test_dice_perfect_disjoint_and_half_overlap)
    heads = torch.cat([wrong, wrong, perfect], dim=1)  # coarsest first, final head last
    assert DeepSupervisionLoss(dice, 0.5).head_weights(3) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    assert DeepSupervisionLoss(dice, 0.5)(heads, target).item() == pytest.approx(3 / 7 * missed, abs=1e-6)
    assert DeepSupervisionLoss(dice)(heads, target).item() == pytest.approx(2 / 3 * missed, abs=1e-6)  # averaged
    assert DeepSupervisionLoss(dice, 0.5)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)  # one head: plain


def test_deep_supervision_decay_outside_its_range_is_refused():
    for decay in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"deep supervision decay must be in \(0, 1\], got {decay}"):
            DeepSupervisionLoss(create_loss("dice"), decay)
