"""Loss registry: ``create_loss(name, **kwargs)``; every loss takes logits.

All losses compute ``p = sigmoid(logits)`` in float32 inside (logits-form BCE where a log is
needed, so nothing overflows under bf16 autocast). The region losses (Dice, soft IoU, Tversky,
focal Tversky) are batch-level by default, as in the reference: their sums run over the whole
batch; ``per_sample=True`` computes the ratio per image and averages the per-image losses.

Shape (every loss):
    logits (N, 1, H, W), target (N, 1, H, W) in {0, 1}; returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import build


def _check(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    return logits.float(), target.float()


def _sums(probs: torch.Tensor, target: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, ...]:
    """(TP, sum p, sum g) over the batch (scalars) or per sample (N,)."""
    dims = tuple(range(1, probs.ndim)) if per_sample else tuple(range(probs.ndim))
    return (probs * target).sum(dims), probs.sum(dims), target.sum(dims)


def _non_negative(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _positive_smooth(smooth: float) -> None:
    if smooth <= 0:
        raise ValueError(f"smooth must be > 0, got {smooth}: without it a slice with no lesion and no prediction "
                         "divides 0 by 0 (NaN)")


class DiceLoss(nn.Module):
    """Soft Dice loss of the reference: ``1 - (2 TP + s) / (sum p + sum g + s)``.

    Args:
        smooth: additive smoothing ``s`` (reference: 1.0).
        per_sample: ratio per image, then mean (default: over the whole batch).
    """

    def __init__(self, smooth: float = 1.0, per_sample: bool = False):
        super().__init__()
        _positive_smooth(smooth)
        self.smooth, self.per_sample = smooth, per_sample

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check(logits, target)
        tp, p, g = _sums(torch.sigmoid(logits), target, self.per_sample)
        return (1.0 - (2.0 * tp + self.smooth) / (p + g + self.smooth)).mean()


class SoftIoULoss(DiceLoss):
    """Soft Jaccard loss: ``1 - (TP + s) / (sum p + sum g - TP + s)``.

    Args:
        smooth: additive smoothing ``s``.
        per_sample: ratio per image, then mean (default: over the whole batch).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check(logits, target)
        tp, p, g = _sums(torch.sigmoid(logits), target, self.per_sample)
        return (1.0 - (tp + self.smooth) / (p + g - tp + self.smooth)).mean()


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + (1 - bce_weight) * Dice``; BCE in its logits form, mean over pixels.

    Args:
        bce_weight: weight of the binary cross-entropy term, in [0, 1].
        smooth, per_sample: of the Dice term (see :class:`DiceLoss`).
    """

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0, per_sample: bool = False):
        super().__init__()
        if not 0 <= bce_weight <= 1:
            raise ValueError(f"bce_weight must be in [0, 1], got {bce_weight}")
        self.bce_weight = bce_weight
        self.region = DiceLoss(smooth, per_sample)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.bce_weight * bce + (1 - self.bce_weight) * self.region(logits, target)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log(p_t)``, mean over pixels.

    Args:
        alpha: weight of the positive class (``1 - alpha`` for the negative); ``None`` for none.
        gamma: focusing exponent (0 gives weighted BCE).
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0):
        super().__init__()
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        _non_negative(gamma=gamma)
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # -log(p_t), stable
        p_t = torch.exp(-bce)
        # clamp: where p_t rounds to 1, the gradient of x ** gamma at 0 is infinite when gamma < 1 (NaN)
        loss = (1 - p_t).clamp_min(1e-6) ** self.gamma * bce
        if self.alpha is not None:
            loss = (self.alpha * target + (1 - self.alpha) * (1 - target)) * loss
        return loss.mean()


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al. 2017): ``1 - (TP + s) / (TP + alpha FP + beta FN + s)``.

    ``alpha = beta = 0.5`` is the Dice loss; ``beta > alpha`` penalises missed lesion more.

    Args:
        alpha: weight of false positives; beta: weight of false negatives.
        smooth, per_sample: as in :class:`DiceLoss`.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, per_sample: bool = False):
        super().__init__()
        _non_negative(alpha=alpha, beta=beta)
        if alpha + beta == 0:
            raise ValueError("alpha and beta are both 0: the Tversky index is then 1 whatever the prediction, so "
                             "its loss teaches nothing; alpha = beta = 0.5 is the Dice loss")
        _positive_smooth(smooth)
        self.alpha, self.beta, self.smooth, self.per_sample = alpha, beta, smooth, per_sample

    def index(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check(logits, target)
        tp, p, g = _sums(torch.sigmoid(logits), target, self.per_sample)
        fp, fn = p - tp, g - tp
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.index(logits, target)).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019): ``(1 - Tversky index) ** gamma``.

    Args:
        alpha, beta, smooth, per_sample: as in :class:`TverskyLoss`.
        gamma: exponent; below 1 it emphasises hard examples (the paper's 1/(4/3) = 0.75).
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, smooth: float = 1.0,
                 per_sample: bool = False):
        super().__init__(alpha, beta, smooth, per_sample)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}: at 0 the loss is the constant 1 and nothing is learnt")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # clamp: the gradient of x ** gamma is infinite at x = 0 when gamma < 1
        return ((1.0 - self.index(logits, target)).clamp_min(1e-6) ** self.gamma).mean()


class BCETverskyLoss(BCEDiceLoss):
    """``bce_weight * BCE + (1 - bce_weight) * Tversky``: BCE+Dice with a region term that weights
    missed lesion (``beta``) above false alarms (``alpha``), for recipes that under-segment.

    Args:
        bce_weight: as in :class:`BCEDiceLoss`; alpha, beta, smooth, per_sample: as in :class:`TverskyLoss`.
    """

    def __init__(self, bce_weight: float = 0.5, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0,
                 per_sample: bool = False):
        super().__init__(bce_weight, smooth, per_sample)
        self.region = TverskyLoss(alpha, beta, smooth, per_sample)


class RawOutputDiceLoss(DiceLoss):
    """The course study's UNet++ defect, kept only to reproduce it: the soft Dice of the raw
    network output, as if the output were already a probability (no sigmoid).

    Raw outputs are unbounded: a negative background can cancel the positive lesion in ``sum p``,
    so the loss falls (even below 0) while thresholded masks stay wrong.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check(logits, target)
        tp, p, g = _sums(logits, target, self.per_sample)
        return (1.0 - (2.0 * tp + self.smooth) / (p + g + self.smooth)).mean()


class DoubleSigmoidSoftIoULoss(SoftIoULoss):
    """The course study's soft-IoU defect, kept only to reproduce it: a sigmoid applied to an
    output that had already been through one, so the loss sees ``sigmoid(sigmoid(logits))``,
    which lies in (0.5, 0.731): every background pixel counts at least 0.5 in the union and the
    gradient shrinks by up to another factor of 4.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.sigmoid(logits.float()), target)


LOSSES: dict[str, type[nn.Module]] = {
    "dice": DiceLoss,
    "soft_iou": SoftIoULoss,
    "bce_dice": BCEDiceLoss,
    "bce_tversky": BCETverskyLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
}

# Not losses to use: the two defects of the course study docs/models.md analyses, selectable by
# name (``--loss study_raw_dice``) so that their failures can be reproduced.
STUDY_DEFECTS: dict[str, type[nn.Module]] = {
    "study_raw_dice": RawOutputDiceLoss,
    "study_double_sigmoid_iou": DoubleSigmoidSoftIoULoss,
}


class DeepSupervisionLoss(nn.Module):
    """``loss`` over the heads of a deeply supervised model, the heads weighted by their distance
    from the final one.

    The head k steps from the final head weighs ``decay ** k`` before the weights are scaled to sum
    to 1: decay 1 averages the heads (every run before the field existed), 0.5 halves each coarser
    head's weight as nnU-Net does, so the final head dominates.

    Shape:
        logits (N, K * C, H, W): K heads of C channels, coarsest first and the final head last (the
        order of :class:`~brainseg.models.unet.UNet`); mask (N, C, H, W). K = 1 is the plain loss.
    """

    def __init__(self, loss: nn.Module, decay: float = 1.0):
        super().__init__()
        if not 0 < decay <= 1:
            raise ValueError(f"deep supervision decay must be in (0, 1], got {decay}")
        self.loss, self.decay = loss, decay

    def head_weights(self, heads: int) -> list[float]:
        """``heads`` weights summing to 1, coarsest first (Python floats: no tensor to copy to the device)."""
        weights = [self.decay ** k for k in range(heads - 1, -1, -1)]
        return [w / sum(weights) for w in weights]

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        heads = logits.split(mask.shape[1], dim=1)
        if len(heads) == 1:
            return self.loss(logits, mask)
        return sum(w * self.loss(head, mask) for w, head in zip(self.head_weights(len(heads)), heads))


def create_loss(name: str, **kwargs) -> nn.Module:
    """Build a registered loss (or one of :data:`STUDY_DEFECTS`).

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones) or bad arguments.
    """
    return build(STUDY_DEFECTS if name in STUDY_DEFECTS else LOSSES, name, "loss", kwargs)
