"""Evaluate a checkpoint: per-case metrics table and CSV, the DSC chart, outline overlays and GIFs.

Outputs under the repository's ``predictions/<run>/`` (or ``--out-dir``): ``metrics.csv`` (one row
per case, then mean and median rows), ``dsc.png``, and with overlays ``<case>/<slice>.png`` and
``<case>.gif`` (FLAIR in grey, truth outline in green, prediction outline in red, on the 256x256
metric grid).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import paths
from .atomic import atomic_write_text
from .config import TrainConfig
from .data.kaggle import discover_cases, run_data_dir
from .data.volume import CaseVolume
from .ensemble import Ensemble, check_unseen, ensemble_volumes, load_ensemble, resolve_checkpoints, run_split
from .losses import create_loss
from .metrics import METRIC_COLUMNS, THRESHOLD, binarize_volume, case_metrics, to_metric_grid
from .plots import case_overlays, dsc_chart, write_overlays
from .runtime import select_device
from .validation import evaluate_groups

SPLITS = ("reference", "kfold", "all")


def format_table(rows: dict[str, dict], columns: tuple[str, ...] = ("dsc", "dsc_no_lcc", "precision", "recall",
                                                                      "hd95_px")) -> str:
    """Per-case lines sorted by DSC, then mean and median lines."""
    lines = [f"{'case':<24}" + "".join(f" {c:>10}" for c in columns)]
    for case, row in sorted(rows.items(), key=lambda item: item[1]["dsc"]):
        lines.append(f"{case:<24}" + "".join(f" {row[c]:10.4f}" for c in columns))
    for name, reduce in (("mean", np.mean), ("median", np.median)):
        lines.append(f"{name:<24}" + "".join(f" {reduce([r[c] for r in rows.values()]):10.4f}" for c in columns))
    return "\n".join(lines)


def metrics_csv(rows: dict[str, dict]) -> str:
    """CSV text: ``case`` + :data:`METRIC_COLUMNS`, one row per case, then mean and median rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", *METRIC_COLUMNS])
    for case in sorted(rows):
        writer.writerow([case, *(f"{rows[case][c]:.6g}" for c in METRIC_COLUMNS)])
    for name, reduce in (("mean", np.mean), ("median", np.median)):
        writer.writerow([name, *(f"{reduce([r[c] for r in rows.values()]):.6g}" for c in METRIC_COLUMNS)])
    return buffer.getvalue()


def flair_on_metric_grid(volume: CaseVolume) -> np.ndarray:
    """(D, 256, 256) FLAIR channel of a preprocessed case, bilinearly resized when S != 256."""
    return to_metric_grid(torch.from_numpy(volume.image[:, 1:2].astype(np.float32))).numpy()


def evaluation_cases(config: TrainConfig, split: str, data_dir: str | None) -> list[str]:
    """Case ids to evaluate: the validation side of ``split`` or every case of the folder (``all``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return sorted(discover_cases(run_data_dir(data_dir, config.data_dir)))
    return run_split(replace(config, split=split, max_val_cases=0), data_dir)[1]


def evaluate_checkpoint(weights: str | Sequence[str] | None = None, split: str | None = None,
                        data_dir: str | None = None, cache_dir: str | None = None, out_dir: str | None = None,
                        device: str = "auto", flip_tta: bool = False, overlays: bool = True,
                        progress: bool = True) -> dict:
    """Evaluate a checkpoint, or an ensemble of several, on a split's validation cases
    (docs/protocol.md, section 4) and write the report.

    Args:
        weights: checkpoint path (``weights/<run>/best.pt``), or several (their probabilities
            averaged; any form :func:`brainseg.ensemble.resolve_checkpoints` takes); default the
            shipped checkpoint (:func:`brainseg.paths.shipped_checkpoint`).
        split: ``reference``, ``kfold`` (the first checkpoint's fold settings) or ``all`` (every case
            in the data folder, which may include training cases); default: the first checkpoint's split.
        data_dir, cache_dir: dataset and cache folders (default: as for training).
        out_dir: output folder; default the repository's ``predictions/<run>`` (``<run>-<split>``
            for another split than the checkpoint's, then ``-tta`` with ``flip_tta``;
            ``ensemble<n>-<runs>`` for several checkpoints).
        flip_tta: average with horizontally flipped predictions.
        overlays: write per-slice PNG overlays and a GIF per case.

    Returns:
        ``{"mean", "median", "per_case" (DSC), "rows" (all metrics per case), "out_dir"}``.

    Raises:
        ValueError: on the ``reference`` or ``kfold`` split, a checkpoint trained on one of the cases.
    """
    specs = [weights] if isinstance(weights, (str, Path)) else list(weights or [paths.shipped_checkpoint()])
    torch_device = select_device(device)
    ensemble = load_ensemble(resolve_checkpoints(specs), torch_device)
    config = ensemble.config
    split = split or config.split
    case_ids = evaluation_cases(config, split, data_dir)
    if split != "all":
        check_unseen(ensemble, case_ids, data_dir)
    else:
        _warn_of_training_cases(ensemble, case_ids, data_dir)
    volumes = ensemble_volumes(ensemble, case_ids, run_data_dir(data_dir, config.data_dir), cache_dir, progress)
    loss_fn = create_loss(config.loss, **config.loss_args)
    result = evaluate_groups(ensemble.groups, volumes, loss_fn, ensemble.runtime, progress=progress, flip_tta=flip_tta)

    run = ensemble.name
    other_split = f"-{split}" if split != config.split else ""  # keeps the run's own evaluation where it was
    out = paths.or_default(out_dir, paths.predictions_dir() / (run + other_split + ("-tta" if flip_tta else "")))
    rows = _write_case_reports(volumes[max(volumes)], result["probs"], out, overlays, progress)  # the finest FLAIR
    atomic_write_text(out / "metrics.csv", metrics_csv(rows))
    per_case = {case: row["dsc"] for case, row in rows.items()}
    dsc_chart(per_case, out / "dsc.png", title=f"{run}{' + flip TTA' if flip_tta else ''}: per-volume DSC")
    print(format_table(rows))
    print(f"wrote {out / 'metrics.csv'}, {out / 'dsc.png'}" + (" and overlays" if overlays else ""))
    return {"mean": result["mean"], "median": result["median"], "per_case": per_case, "rows": rows, "out_dir": str(out)}


def _warn_of_training_cases(ensemble: Ensemble, case_ids: list[str], data_dir: str | None) -> None:
    """Print how many of ``case_ids`` each member trained on, when it recorded them (``--split all``
    scores every case of a folder, which is honest only for a folder of new cases)."""
    for path, recorded in zip(ensemble.checkpoints, ensemble.trained_on):
        seen = sorted(set(case_ids) & set(recorded or []))
        if seen:
            print(f"warning: {path} trained on {len(seen)} of these {len(case_ids)} cases ({', '.join(seen[:3])}"
                  f"{', ...' if len(seen) > 3 else ''}); their scores are not a validation")


def _write_case_reports(volumes: list[CaseVolume], probs: dict[str, np.ndarray], out: Path, overlays: bool,
                        progress: bool) -> dict[str, dict]:
    """Every metric of every case (from its (D, 256, 256) probabilities) and, with ``overlays``,
    its outline overlays and GIF under ``out``."""
    rows = {}
    with tqdm(volumes, desc="report", unit="case", disable=not progress) as bar:  # closed on errors too
        for volume in bar:
            rows[volume.case_id] = case_metrics(probs[volume.case_id], volume.metric_mask)
            if overlays:
                frames = case_overlays(flair_on_metric_grid(volume), volume.metric_mask,
                                       binarize_volume(probs[volume.case_id], THRESHOLD))
                write_overlays(frames, out / volume.case_id, out / f"{volume.case_id}.gif")
    return rows
