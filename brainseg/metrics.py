"""The protocol metric: per-volume Dice similarity coefficient (docs/protocol.md, section 4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from medpy.filter.binary import largest_connected_component

THRESHOLD = 0.5


def dice_coefficient(pred: np.ndarray, truth: np.ndarray) -> float:
    """``2 |P & G| / (|P| + |G|)`` of two binary arrays of equal shape; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must have the same shape")
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def binarize_volume(probs: np.ndarray, threshold: float = THRESHOLD, largest_component: bool = True) -> np.ndarray:
    """Threshold a (D, H, W) probability volume (strictly above ``threshold``) and keep its
    largest 3D connected component (medpy's rule, face connectivity)."""
    pred = probs > threshold
    if largest_component and pred.any():
        pred = largest_connected_component(pred)
    return pred


def volume_dsc(probs: np.ndarray, truth: np.ndarray, threshold: float = THRESHOLD,
               largest_component: bool = True) -> float:
    """Per-volume DSC of one case.

    Args:
        probs: (D, 256, 256) probabilities on the metric grid.
        truth: (D, 256, 256) binary mask.
    """
    return dice_coefficient(binarize_volume(probs, threshold, largest_component), truth)


def to_metric_grid(probs: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Bilinearly resize (D, 1, S, S) probabilities to (D, size, size) float32 (no-op when S == size)."""
    if probs.shape[-1] != size or probs.shape[-2] != size:
        probs = F.interpolate(probs.float(), size=(size, size), mode="bilinear", align_corners=False)
    return probs[:, 0].float()


def summarize(per_case: dict[str, float]) -> dict[str, float]:
    """Mean and median of the per-case DSC values."""
    values = np.array(list(per_case.values()), dtype=np.float64)
    return {"mean": float(values.mean()), "median": float(np.median(values))}
