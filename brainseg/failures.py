"""Why cases fail: a profile of every cross-validation case below a DSC, with a cause and a picture.

For each case: lesion size and extent, which contrast channels are copies of FLAIR (the dataset's
way of storing a missing scan), how bright the lesion is on FLAIR against the rest of the brain,
connected components of truth and prediction, what the largest-component rule did, and a figure
of the slices that matter (pre-contrast, FLAIR, post-contrast; truth green, prediction red).
Prediction figures need the fold checkpoints (``weights/<cv>-fold<k>/best.pt``); without them the
data-only columns are still filled.

``python -m brainseg results failures <cv> --below 0.6 --doc docs/failures.md`` writes the table
and the cause counts between the markers ``<!-- failures:<cv>:start/end -->`` of that file, and
the figures to ``docs/failures/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from . import paths
from .atomic import atomic_write
from .data.transforms import CHANNEL_NAMES, FLAIR, POST, PRE
from .data.volume import CaseVolume
from .metrics import binarize_volume, dice_coefficient, to_metric_grid

# Thresholds near the 10th percentile of the 110 cases (measured: lesion volume 5541 voxels on the
# 256 grid, lesion FLAIR z 0.517 on the 128 px cache; the median lesion has 20291 voxels and z 1.02).
SMALL_LESION = 5000
DIM_LESION_Z = 0.52
CAUSES = ("missing modality", "label oddity", "wrong component kept", "small lesion missed",
          "atypical intensity", "under-segmented", "over-segmented", "other")


def flair_copies(volume: CaseVolume) -> list[str]:
    """Names of the contrast channels that equal FLAIR on (nearly) every voxel: missing scans.

    Equal raw channels stay equal through the reference preprocessing (docs/protocol.md,
    section 2), so the comparison runs on the cached, normalised volume.
    """
    image = volume.image.astype(np.float32)
    return [CHANNEL_NAMES[c] for c in (PRE, POST)
            if np.mean(np.abs(image[:, c] - image[:, FLAIR]) < 1e-3) > 0.99]


def blank_channels(volume: CaseVolume, share: float = 0.6) -> list[str]:
    """Names of the contrast channels that are dark on most of the brain: a failed or empty scan.

    The brain is the brightest 40% of FLAIR voxels; a channel is blank when over ``share`` of them
    sit within 10% of its range above its 5th percentile (measured over the 110 cases: median
    share 0.08-0.11, highest but one 0.43, TCGA_DU_7306 0.85).
    """
    image = volume.image.astype(np.float32)
    brain = image[:, FLAIR] > np.percentile(image[:, FLAIR], 60)
    names = []
    for channel in (PRE, POST):
        values = image[:, channel]
        low, high = np.percentile(values, [5, 99])
        if np.mean(values[brain] <= low + 0.1 * (high - low)) > share:
            names.append(CHANNEL_NAMES[channel])
    return names


def lesion_flair_z(volume: CaseVolume) -> float:
    """Mean FLAIR of the lesion minus that of the rest of the brain, in brain standard deviations.

    The brain is every voxel where some channel is above its background: each channel's minimum,
    where the scans' zeros land after the per-volume standardisation (so the background is not 0 in
    the cached volume). NaN when the case has no lesion.
    """
    image = volume.image.astype(np.float32)
    flair, lesion = image[:, FLAIR], volume.mask.astype(bool)
    background = image.min(axis=(0, 2, 3))[None, :, None, None]
    brain = (image > background + 1e-3).any(axis=1) & ~lesion
    if not lesion.any() or not brain.any():
        return float("nan")
    return float((flair[lesion].mean() - flair[brain].mean()) / (flair[brain].std() + 1e-6))


def components(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the 3D face-connected components of a binary volume, largest first."""
    labels, count = ndimage.label(mask)
    return np.sort(np.bincount(labels.ravel())[1:])[::-1] if count else np.zeros(0, dtype=np.int64)


def data_profile(volume: CaseVolume) -> dict:
    """What the data alone says about a case (no prediction needed)."""
    truth = volume.metric_mask.astype(bool)
    parts = components(truth)
    return {"slices": volume.num_slices, "lesion_voxels": int(truth.sum()),
            "lesion_slices": int(truth.any(axis=(1, 2)).sum()), "truth_components": len(parts),
            "truth_largest_share": float(parts[0] / parts.sum()) if len(parts) else float("nan"),
            "flair_copies": flair_copies(volume), "blank_channels": blank_channels(volume),
            "lesion_flair_z": lesion_flair_z(volume)}


def prediction_profile(probs: np.ndarray, truth: np.ndarray) -> dict:
    """What the prediction did: components, the largest-component rule, precision and recall.

    Args:
        probs: (D, 256, 256) probabilities; truth: (D, 256, 256) binary.
    """
    truth = truth.astype(bool)
    raw, kept = binarize_volume(probs, largest_component=False), binarize_volume(probs)
    labels, count = ndimage.label(raw)
    overlap = np.bincount(labels[truth].ravel(), minlength=count + 1)[1:] if count else np.zeros(0)
    kept_overlap = int((kept & truth).sum())
    return {"pred_components": int(count), "pred_voxels": int(kept.sum()), "pred_voxels_without_lcc": int(raw.sum()),
            "precision": float(kept_overlap / kept.sum()) if kept.any() else float("nan"),
            "recall": float(kept_overlap / truth.sum()) if truth.any() else float("nan"),
            "dsc": dice_coefficient(kept, truth), "dsc_without_lcc": dice_coefficient(raw, truth),
            "lcc_dropped_truth": bool(count > 1 and overlap.max() > kept_overlap)}


def classify(profile: dict) -> list[str]:
    """Every cause of :data:`CAUSES` that the profile shows, in that order (the first is the main one).

    Rules: a contrast channel is a FLAIR copy or blank; the truth is split (3+ components, the
    largest under 60%); the largest-component rule dropped the component that overlaps the truth
    most, or cost 0.1 DSC; a lesion under :data:`SMALL_LESION` voxels with recall < 0.5 (without a
    prediction: the small lesion alone); lesion FLAIR under :data:`DIM_LESION_Z`; recall < 0.5;
    precision < 0.5.
    """
    flags = []
    if profile["flair_copies"] or profile["blank_channels"]:
        flags.append("missing modality")
    if profile["truth_components"] >= 3 and profile["truth_largest_share"] < 0.6:
        flags.append("label oddity")
    if "recall" in profile:
        if profile["lcc_dropped_truth"] or profile["dsc_without_lcc"] - profile["dsc"] >= 0.1:
            flags.append("wrong component kept")
    if profile["lesion_voxels"] < SMALL_LESION and not profile.get("recall", 0.0) >= 0.5:
        flags.append("small lesion missed")
    if profile["lesion_flair_z"] < DIM_LESION_Z:
        flags.append("atypical intensity")
    if "recall" in profile:
        if not profile["recall"] >= 0.5:
            flags.append("under-segmented")
        if not profile["precision"] >= 0.5:
            flags.append("over-segmented")
    return flags or ["other"]


def data_causes(case_ids: list[str], data_dir: str | None = None, cache_dir: str | None = None,
                image_size: int = 128) -> dict[str, str]:
    """Each case's main cause by the data alone: the first of :func:`classify` on its
    :func:`data_profile` ("missing modality", "label oddity", "small lesion", "atypical intensity",
    or "other" when none applies; "no lesion" for a case without one). Reads the ``image_size``
    cache (built if missing)."""
    from .data.cache import load_volumes

    volumes = load_volumes(case_ids, image_size, data_dir, cache_dir, progress=False)
    causes = {}
    for volume in volumes:
        profile = data_profile(volume)
        cause = classify(profile)[0] if profile["lesion_voxels"] else "no lesion"
        causes[volume.case_id] = "small lesion" if cause == "small lesion missed" else cause  # nothing predicted yet
    return causes


def slices_that_matter(probs: np.ndarray | None, truth: np.ndarray, count: int = 3) -> list[int]:
    """The slice with the most lesion, then those with the most missed and most false voxels.

    Shape:
        probs, truth: (D, 256, 256); returns up to ``count`` distinct slice indices, in order.
    """
    truth = truth.astype(bool)
    chosen = [int(truth.sum(axis=(1, 2)).argmax())]
    if probs is not None:
        pred = binarize_volume(probs, largest_component=False)
        for error in (truth & ~pred, pred & ~truth):
            per_slice = error.sum(axis=(1, 2))
            if per_slice.max() > 0:
                chosen.append(int(per_slice.argmax()))
    return list(dict.fromkeys(chosen))[:count]


def channels_on_metric_grid(volume: CaseVolume, index: int) -> np.ndarray:
    """(3, 256, 256) float32: the three channels of one slice, bilinearly resized to the metric grid."""
    return to_metric_grid(torch.from_numpy(volume.image[index].astype(np.float32))[:, None]).numpy()


def failure_figure(volume: CaseVolume, probs: np.ndarray | None, path: str | Path, title: str) -> Path:
    """One row per slice that matters, one column per channel; truth green, prediction red (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import outline_overlay

    truth = volume.metric_mask
    pred = binarize_volume(probs) if probs is not None else None
    rows = slices_that_matter(probs, truth)
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for row, index in zip(axes, rows):
        for ax, channel, image in zip(row, (PRE, FLAIR, POST), channels_on_metric_grid(volume, index)):
            ax.imshow(outline_overlay(image, truth[index], None if pred is None else pred[index]))
            ax.set_title(f"slice {index}: {CHANNEL_NAMES[channel]}", fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)
    return path


def fold_probabilities(weights: Path, volume_ids: list[str], data_dir: str | None, cache_dir: str | None,
                       device: str = "auto") -> tuple[dict[str, np.ndarray], list[CaseVolume]]:
    """Probabilities on the metric grid of some cases from one fold checkpoint, and their volumes.

    Returns:
        ``{case: (D, 256, 256) float32}`` and the volumes at the checkpoint's training size.

    Raises:
        ValueError: the checkpoint trained on one of the cases (e.g. overwritten by a run of the same
            name on other folds): out-of-fold figures would not be out of fold.
    """
    from .data.cache import load_volumes
    from .data.kaggle import run_data_dir
    from .ensemble import check_unseen, load_ensemble
    from .runtime import select_device
    from .validation import predict_volume

    fold = load_ensemble([weights], select_device(device))
    check_unseen(fold, volume_ids, data_dir)
    config = fold.config
    volumes = load_volumes(volume_ids, config.image_size, run_data_dir(data_dir, config.data_dir), cache_dir,
                           progress=False)
    probs = {v.case_id: to_metric_grid(torch.sigmoid(predict_volume(fold.model, v.image, fold.runtime))).numpy()
             for v in volumes}
    return probs, volumes


def analyse_failures(cv: str, below: float = 0.6, results_dir: str | Path | None = None,
                     logs_dir: str | Path | None = None, weights_dir: str | Path | None = None,
                     figures_dir: str | Path | None = None,
                     data_dir: str | None = None, cache_dir: str | None = None, image_size: int = 128) -> list[dict]:
    """Profile, classify and draw every case of a cross-validation scoring below ``below``.

    Args:
        cv: a cross-validation result (see :func:`brainseg.paired.load_per_case`).
        results_dir, logs_dir, weights_dir: ``None``: the repository's results/, logs/, weights/ folders.
        figures_dir: where the figures go; ``None``: the repository's docs/failures/ folder.
        image_size: grid of the data-only figures when a case's fold checkpoint is missing.

    Returns:
        One dict per case, worst first: the CV's DSC, :func:`data_profile`, with a checkpoint
        :func:`prediction_profile`, ``causes`` (:func:`classify`) and ``figure``.
    """
    from .data.cache import load_volumes
    from .paired import load_per_case

    result = load_per_case(cv, results_dir, logs_dir, fold_models=True)
    weights_dir = paths.or_default(weights_dir, paths.weights_dir())
    figures_dir = paths.or_default(figures_dir, paths.docs_dir() / "failures")
    failing = sorted((dsc, case) for case, dsc in result["per_case"].items() if dsc < below)
    by_fold: dict[int, list[str]] = {}
    for _, case in failing:
        by_fold.setdefault(result["fold_of_case"].get(case, -1), []).append(case)
    rows = {}
    for fold, cases in by_fold.items():
        weights = weights_dir / f"{result['name']}-fold{fold}" / "best.pt"
        if weights.is_file():
            probs, volumes = fold_probabilities(weights, cases, data_dir, cache_dir)
        else:
            probs, volumes = {}, load_volumes(cases, image_size, data_dir, cache_dir, progress=False)
        for volume in volumes:
            rows[volume.case_id] = _case_row(volume, probs.get(volume.case_id), result, fold, figures_dir)
    return [rows[case] for _, case in failing]


def _case_row(volume: CaseVolume, probs: np.ndarray | None, result: dict, fold: int, figures_dir) -> dict:
    row = {"case": volume.case_id, "fold": fold, "cv_dsc": result["per_case"][volume.case_id], **data_profile(volume)}
    if probs is not None:
        row.update(prediction_profile(probs, volume.metric_mask))
    row["causes"] = classify(row)
    title = f"{volume.case_id} (fold {fold}): CV DSC {row['cv_dsc']:.3f}; {', '.join(row['causes'])}"
    row["figure"] = str(failure_figure(volume, probs, Path(figures_dir) / f"{volume.case_id}.png", title))
    return row


def _missing_scans(row: dict) -> str:
    return ", ".join([f"{name} (FLAIR copy)" for name in row["flair_copies"]] +
                     [f"{name} (blank)" for name in row["blank_channels"]])


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def failures_markdown(rows: list[dict], doc_dir: str | Path | None = None) -> str:
    """The failure table, the count of main causes and the figures, as Markdown for ``doc_dir``
    (``None``: the repository's docs/ folder)."""
    lines = ["| case | fold | CV DSC | lesion voxels / slices | truth components (largest share) | missing scans "
             "| lesion FLAIR z | predicted components | precision / recall | DSC without LCC | causes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['fold']} | {r['cv_dsc']:.3f} | {r['lesion_voxels']} / {r['lesion_slices']} | "
                     f"{r['truth_components']} ({_fmt(r['truth_largest_share'])}) | "
                     f"{_missing_scans(r) or '-'} | {_fmt(r['lesion_flair_z'], 3)} | "
                     f"{r.get('pred_components', '-')} | {_fmt(r.get('precision'))} / {_fmt(r.get('recall'))} | "
                     f"{_fmt(r.get('dsc_without_lcc'), 3)} | {'; '.join(r['causes'])} |")
    counts = {cause: sum(r["causes"][0] == cause for r in rows) for cause in CAUSES}
    lines += ["", "Main cause (the first that applies, in the order of the rules): " +
              ", ".join(f"{cause} {n}" for cause, n in counts.items() if n), ""]
    doc_dir = paths.or_default(doc_dir, paths.docs_dir()).resolve()
    for r in rows:
        figure = Path(os.path.relpath(Path(r["figure"]).resolve(), doc_dir))  # ../ when outside the doc's folder
        lines.append(f"![{r['case']}]({figure.as_posix()})")
    return "\n".join(lines)
