"""Pictures of results: outline overlays (FLAIR in grey, truth in green, prediction in red)."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

GREEN = np.array([0, 255, 0], dtype=np.uint8)
RED = np.array([255, 0, 0], dtype=np.uint8)


def to_grey_uint8(channel: np.ndarray) -> np.ndarray:
    """Min-max scale an (H, W) array to uint8 (a constant array becomes 0)."""
    channel = channel.astype(np.float32)
    low, high = float(channel.min()), float(channel.max())
    scaled = np.zeros_like(channel) if high <= low else (channel - low) / (high - low)
    return (scaled * 255).round().astype(np.uint8)


def outline_overlay(flair: np.ndarray, truth: np.ndarray, pred: np.ndarray | None = None) -> np.ndarray:
    """FLAIR slice in grey with the truth outline in green and the prediction outline in red.

    Args:
        flair: (H, W) intensities.
        truth: (H, W) binary mask.
        pred: (H, W) binary mask, optional.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    grey = to_grey_uint8(flair)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(np.asarray(truth, dtype=bool), mode="inner")] = GREEN
    if pred is not None:
        rgb[find_boundaries(np.asarray(pred, dtype=bool), mode="inner")] = RED
    return rgb


def data_preview(volumes, per_case: int = 1):
    """A figure of each case's slices with the largest lesions, truth outlined in green.

    Args:
        volumes: preprocessed cases (:class:`brainseg.cache.CaseVolume`).
        per_case: slices shown per case.
    """
    from matplotlib.figure import Figure

    picks = []
    for volume in volumes:
        areas = volume.mask.reshape(volume.num_slices, -1).sum(axis=1)
        for s in np.argsort(areas)[::-1][:per_case]:
            picks.append((volume, int(s)))
    fig = Figure(figsize=(3 * len(picks), 3.3))
    axes = np.atleast_1d(fig.subplots(1, len(picks)))
    for ax, (volume, s) in zip(axes, picks):
        ax.imshow(outline_overlay(volume.image[s, 1].astype(np.float32), volume.mask[s]))
        ax.set_title(f"{volume.case_id}\nslice {s + 1}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig
