import pytest
import torch

from brainseg.losses import create_loss

BIG = 30.0  # sigmoid(30) = 1 - 1e-13


def logits_of(binary: torch.Tensor) -> torch.Tensor:
    return (binary * 2 - 1) * BIG


def test_dice_perfect_disjoint_and_half_overlap():
    loss = create_loss("dice", smooth=1.0)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2] = 1  # 8 pixels
    assert loss(logits_of(target), target).item() == pytest.approx(0.0, abs=1e-6)
    disjoint = 1 - target
    # 1 - (0 + 1) / (24 + 8 + 1)
    assert loss(logits_of(disjoint), target).item() == pytest.approx(1 - 1 / 33, abs=1e-6)
    half = torch.zeros_like(target)
    half[0, 0, 1:3] = 1  # 8 predicted pixels, 4 of them on the target
    assert loss(logits_of(half), target).item() == pytest.approx(1 - (2 * 4 + 1) / (8 + 8 + 1), abs=1e-6)


def test_dice_is_batch_level_not_per_sample():
    loss = create_loss("dice", smooth=0.0)
    target = torch.zeros(2, 1, 2, 2)
    target[0] = 1
    pred = torch.zeros_like(target)
    pred[0, 0, 0] = 1  # 2 of the 4 target pixels
    assert loss(logits_of(pred), target).item() == pytest.approx(1 - 2 * 2 / 6, abs=1e-6)


def test_dice_gradients_finite_on_empty_masks():
    loss = create_loss("dice")
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    value = loss(logits, torch.zeros(2, 1, 8, 8))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="available losses: dice"):
        create_loss("iou2")
    with pytest.raises(ValueError, match="smooth"):
        create_loss("dice", smooth=-1)
    with pytest.raises(ValueError, match="same shape"):
        create_loss("dice")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
