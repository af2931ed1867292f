"""Per-case evaluation metrics and the pictures of an evaluation: DSC chart, outline overlays, GIFs.

Distances are in pixels of the 256x256 metric grid (slice index counts as one pixel): the
dataset carries no voxel spacing. Empty masks get these documented values instead of an error:

- DSC, precision, recall: 1.0 when prediction and truth are both empty; 0.0 when exactly one is.
- HD95 and ASSD: 0.0 when both are empty; the diagonal of the volume grid (the largest possible
  distance) when exactly one is.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
from matplotlib.figure import Figure
import numpy as np
from medpy.metric.binary import assd, hd95

from .atomic import atomic_write
from .metrics import binarize_volume, dice_coefficient
from .plots import outline_overlay

METRIC_COLUMNS = ["dsc", "dsc_no_lcc", "precision", "recall", "hd95_px", "assd_px", "pred_volume_px", "true_volume_px"]


def _precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = np.logical_and(pred, truth).sum()
    if not pred.any() and not truth.any():
        return 1.0, 1.0
    precision = tp / pred.sum() if pred.any() else 0.0
    recall = tp / truth.sum() if truth.any() else 0.0
    return float(precision), float(recall)


def _surface_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    if not pred.any() and not truth.any():
        return 0.0, 0.0
    if not pred.any() or not truth.any():
        worst = float(np.sqrt(sum(s * s for s in pred.shape)))
        return worst, worst
    return float(hd95(pred, truth)), float(assd(pred, truth))


def case_metrics(probs: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All per-case figures of one volume.

    Args:
        probs: (D, 256, 256) probabilities on the metric grid.
        truth: (D, 256, 256) binary mask.

    Returns:
        A dict with the keys of :data:`METRIC_COLUMNS`; ``dsc`` is the protocol DSC (largest
        component), ``dsc_no_lcc`` the same without that rule; the others use the protocol mask.
    """
    truth = np.asarray(truth, dtype=bool)
    pred = binarize_volume(probs, threshold, largest_component=True)
    precision, recall = _precision_recall(pred, truth)
    hd, asd = _surface_distances(pred, truth)
    return {
        "dsc": dice_coefficient(pred, truth),
        "dsc_no_lcc": dice_coefficient(binarize_volume(probs, threshold, largest_component=False), truth),
        "precision": precision,
        "recall": recall,
        "hd95_px": hd,
        "assd_px": asd,
        "pred_volume_px": int(pred.sum()),
        "true_volume_px": int(truth.sum()),
    }


def dsc_chart(per_case: dict[str, float], path: str | Path | None = None, title: str = "") -> Figure:
    """Horizontal bar chart of per-case DSC, sorted, with the mean (red) and median (green) lines.

    Saved as PNG to ``path`` when given; the figure is returned (notebooks display it).
    """
    cases = sorted(per_case, key=per_case.get)
    values = np.array([per_case[c] for c in cases])
    fig = Figure(figsize=(7, 0.3 * len(cases) + 1.5))
    ax = fig.subplots()
    ax.barh(np.arange(len(cases)), values, color="tab:blue")
    ax.set_yticks(np.arange(len(cases)), cases, fontsize=8)
    mean, median = values.mean(), np.median(values)
    ax.axvline(mean, color="red", linewidth=2, label=f"mean {mean:.3f}")
    ax.axvline(median, color="green", linewidth=2, linestyle="--", label=f"median {median:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice similarity coefficient (per volume)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig


def case_overlays(flair: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Outline overlays of every slice: (D, H, W, 3) uint8 from (D, H, W) FLAIR, truth and prediction."""
    return np.stack([outline_overlay(flair[i], truth[i], pred[i]) for i in range(len(flair))])


def write_overlays(frames: np.ndarray, folder: str | Path, gif_path: str | Path, fps: float = 5.0) -> None:
    """One PNG per slice (``<folder>/<slice>.png``, 1-based) and an animated GIF of all of them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, 1):
        atomic_write(folder / f"{i:02d}.png", lambda f, frame=frame: iio.imwrite(f, frame, extension=".png"))
    atomic_write(gif_path, lambda f: iio.imwrite(f, list(frames), extension=".gif", duration=1000 / fps, loop=0))


def read_overlays(folder: str | Path) -> np.ndarray:
    """The per-slice PNGs written by :func:`write_overlays`, in slice order: (D, H, W, 3) uint8.

    Raises:
        FileNotFoundError: ``folder`` holds no ``<slice>.png`` (the evaluation ran without overlays).
    """
    files = sorted((path for path in Path(folder).glob("*.png") if path.stem.isdigit()), key=lambda path: int(path.stem))
    if not files:
        raise FileNotFoundError(f"{folder}: no slice overlays (01.png, 02.png, ...); evaluate the checkpoint "
                                "with overlays (without --no-overlays)")
    return np.stack([iio.imread(path)[..., :3] for path in files])
