"""Loss registry: ``create_loss(name, **kwargs)``; every loss takes logits."""

from __future__ import annotations

import torch
from torch import nn


class DiceLoss(nn.Module):
    """Batch-level soft Dice loss of the reference: ``1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s)``.

    Sums run over the whole batch (not per sample); ``p = sigmoid(logits)`` in float32.

    Args:
        smooth: additive smoothing ``s`` (reference: 1.0).

    Shape:
        logits (N, 1, H, W), target (N, 1, H, W) in {0, 1}; returns a scalar.
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
        probs = torch.sigmoid(logits.float())
        target = target.float()
        intersection = (probs * target).sum()
        return 1.0 - (2.0 * intersection + self.smooth) / (probs.sum() + target.sum() + self.smooth)


LOSSES: dict[str, type[nn.Module]] = {"dice": DiceLoss}


def create_loss(name: str, **kwargs) -> nn.Module:
    """Build a registered loss.

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones) or bad arguments.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; available losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)
