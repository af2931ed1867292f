"""Predict masks for a user's own case (Kaggle layout, masks not needed) in its original geometry.

The case is normalised as a whole volume, exactly as in training (a single slice normalised on
its own gives different intensities and bad masks); the model's probabilities are mapped back
through the inverse of resize, padding and crop to every slice's original grid, thresholded at
0.5, and the largest 3D component is kept (docs/protocol.md, section 4). Outputs in ``--out``:
``<case>_<n>_mask.tif`` (uint8, 0 or 255) for every slice, overlay PNGs and a GIF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
import torch

from .atomic import atomic_write
from .data.kaggle import CaseFiles, list_case_files, naming_the_case, read_case
from .data.preprocess import preprocess_case, restore_geometry
from .ensemble import SizeGroup, load_ensemble, resolve_checkpoints
from .metrics import THRESHOLD, binarize_volume
from .plots import case_overlays, write_overlays
from .runtime import Runtime, select_device
from .validation import predict_volume


def predict_case(weights: str | Sequence[str], case_dir: str, out_dir: str, device: str = "auto",
                 flip_tta: bool = False, overlays: bool = True) -> np.ndarray:
    """Predict one case folder and write its masks (and overlays).

    Args:
        weights: checkpoint path, or several (an ensemble: their probabilities are averaged; any
            form :func:`brainseg.ensemble.resolve_checkpoints` takes, e.g. a cross-validation's name
            for its fold models).
        case_dir: folder with ``<case>_<n>.tif`` slices (masks optional; when present, overlays
            show them in green).
        out_dir: output folder.

    Returns:
        (D, H, W) uint8 predicted mask in {0, 255}, in the original slice geometry.

    Raises:
        DatasetError: missing slices, wrong shape or channel count, unreadable files, a volume
            that cannot be preprocessed (the file or case is named).
        ValueError: ``out_dir`` is the case folder (the predictions would replace its masks).
    """
    if Path(out_dir).resolve() == Path(case_dir).resolve():
        raise ValueError(f"{out_dir}: the output folder is the case folder; the predicted <case>_<n>_mask.tif files "
                         "would replace the case's own masks. Choose another --out")
    files = list_case_files(case_dir, require_masks=False)
    image, truth = read_case(files)
    torch_device = select_device(device)
    ensemble = load_ensemble(resolve_checkpoints([weights] if isinstance(weights, (str, Path)) else weights),
                             torch_device)
    original = sum(group.share * _group_probabilities(group, image, files, ensemble.runtime, flip_tta)
                   for group in ensemble.groups)
    mask = binarize_volume(original, THRESHOLD).astype(np.uint8) * 255

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for number, slice_mask in zip(files.numbers, mask):
        atomic_write(out / f"{files.case_id}_{number}_mask.tif", lambda f, m=slice_mask: tifffile.imwrite(f, m))
    if overlays:
        shown_truth = truth > 0 if truth is not None else np.zeros_like(mask, dtype=bool)
        frames = case_overlays(image[..., 1], shown_truth, mask > 0)
        write_overlays(frames, out / "overlays", out / f"{files.case_id}.gif")
    print(f"{files.case_id}: {len(files.numbers)} slices, predicted lesion {int((mask > 0).sum())} pixels; "
          f"masks written to {out}")
    return mask


def _group_probabilities(group: SizeGroup, image: np.ndarray, files: CaseFiles, runtime: Runtime,
                         flip_tta: bool) -> np.ndarray:
    """(D, H, W) float32 probabilities of one group of ensemble members for a (D, H, W, 3) uint8 case,
    preprocessed at the group's image size and mapped back to the original slices."""
    with naming_the_case(files):
        volume, _, geometry = preprocess_case(image, None, group.image_size)
    slices = np.ascontiguousarray(volume.transpose(0, 3, 1, 2))  # (D', 3, S, S)
    probs = torch.sigmoid(predict_volume(group.model, slices, runtime))
    if flip_tta:
        probs = (probs + torch.sigmoid(predict_volume(group.model, slices, runtime, flip=True))) / 2
    return restore_geometry(probs[:, 0].numpy(), geometry, image.shape[:3], order=1)
