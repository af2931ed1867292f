"""The figures of the case report (``docs/report/``): per-case DSC distributions, training curves,
and predictions of several variants side by side.

Drawing reuses the package: :func:`brainseg.plots.outline_overlay` for the outlines,
:func:`brainseg.compare.plot_curves` for the curves, :func:`brainseg.failures.fold_probabilities` to
predict cases with a checkpoint. Figures are saved at 80 dpi to stay small in git.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..atomic import atomic_write, atomic_write_json
from ..ensemble import cv_name

DPI = 80
GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")
CURVES_INCHES = (11, 4.2)  # the two plots of a curves figure
LEGEND_ROWS, LEGEND_COLUMN_INCHES = 28, 4.3  # the legend beside them: entries a column, width of a column


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG at :data:`DPI`, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return Path(path)


def dsc_distributions(runs: list[dict], groups: list[str], path: str | Path, title: str) -> Path:
    """One row per run, first on top: a box of its per-case DSC, every case as a dot (coloured by
    its group), the mean as a red diamond.

    Args:
        runs: run exports with ``per_case``.
        groups: each run's group name (same length as ``runs``), shown in the legend.
    """
    fig = Figure(figsize=(9, max(0.28 * len(runs) + 1.4, 2.6)))
    ax = fig.subplots()
    positions = np.arange(len(runs))[::-1]
    values = [np.array(list(run["per_case"].values()), dtype=float) for run in runs]
    ax.boxplot(values, positions=positions, orientation="horizontal", widths=0.6, showfliers=False,
               medianprops={"color": "black"})
    rng = np.random.default_rng(0)
    colors = {name: GROUP_COLORS[i % len(GROUP_COLORS)] for i, name in enumerate(dict.fromkeys(groups))}
    for y, v, group in zip(positions, values, groups):
        ax.scatter(v, y + rng.uniform(-0.22, 0.22, len(v)), s=7, alpha=0.6, color=colors[group], label=group)
    ax.scatter([v.mean() for v in values], positions, marker="D", s=16, color="red", zorder=3, label="mean")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_yticks(positions, [run["run"] for run in runs], fontsize=7)
    ax.set_xlim(-0.02, 1.0)
    ax.set_xlabel("per-volume DSC of each case (box: quartiles and median)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def run_history(name: str, export: dict | None, logs_dir: str | Path) -> tuple[list[dict], str]:
    """A run's per-epoch history: ``<logs_dir>/<name>/history.csv`` when present, else the copy that
    ``results export`` put in its results file; ``([], "")`` when neither has one.

    Returns:
        The rows (dicts of floats) and where they came from.
    """
    history_csv = Path(logs_dir) / name / "history.csv"
    if history_csv.is_file():
        with open(history_csv) as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        if rows:
            return rows, str(history_csv)
    if export and export.get("history"):
        return export["history"], f"results/{name}.json"
    return [], ""


def colour_by_cross_validation(runs: list[tuple[str, list[dict]]]) -> list[dict]:
    """:func:`brainseg.compare.plot_curves` entries of fold runs (``<cv>-fold<k>``), one colour and one
    legend entry per cross-validation: ``<cv> (N folds)`` on its first fold, none on the others."""
    cv_of = {name: cv_name(name) for name, _ in runs}
    folds = Counter(cv_of.values())  # insertion-ordered: the colours follow the runs' order
    colours = {cv: matplotlib.colormaps["tab20"](i % 20) for i, cv in enumerate(folds)}
    entries, labelled = [], set()
    for name, history in runs:
        cv = cv_of[name]
        label = None if cv in labelled else f"{cv} ({folds[cv]} fold{'s' * (folds[cv] > 1)})"
        labelled.add(cv)
        entries.append({"name": name, "history": history, "color": colours[cv], "label": label})
    return entries


def curves_figure(runs: list[tuple[str, list[dict]]], path: str | Path, by_cross_validation: bool = False) -> Path:
    """Validation DSC and train/validation loss per epoch of ``(name, history)`` runs, drawn by
    :func:`brainseg.compare.plot_curves`, the legend beside the plots so that it hides no curve
    (``by_cross_validation``: the folds of one cross-validation share a colour and a legend entry)."""
    from ..compare import plot_curves

    entries = (colour_by_cross_validation(runs) if by_cross_validation
               else [{"name": name, "history": history} for name, history in runs])
    fig = plot_curves(entries)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.axes[0].get_legend().remove()
    columns = 1 + (len(labels) - 1) // LEGEND_ROWS
    width, height = CURVES_INCHES
    fig.set_size_inches(width + LEGEND_COLUMN_INCHES * columns, height)
    fig.tight_layout(rect=(0, 0, width / (width + LEGEND_COLUMN_INCHES * columns), 1))
    fig.legend(handles, labels, fontsize=6, loc="center right", ncol=columns, frameon=False)
    return save_figure(fig, path)


def checkpoint_for(run: dict, case: str, weights_dir: str | Path) -> Path | None:
    """The checkpoint that scored ``case`` in ``run``, if it is here.

    A cross-validation (``fold_of_case`` in the export) predicted each case with its fold's model,
    ``<weights_dir>/<run>-fold<k>/best.pt``; a single run with ``<weights_dir>/<run>/best.pt`` or a
    shipped copy ``<weights_dir>/<run>.pt``.
    """
    weights_dir = Path(weights_dir)
    if "fold_of_case" in run:
        if case not in run["fold_of_case"]:
            return None
        candidates = [weights_dir / f"{run['run']}-fold{run['fold_of_case'][case]}" / "best.pt"]
    else:
        candidates = [weights_dir / run["run"] / "best.pt", weights_dir / f"{run['run']}.pt"]
    return next((path for path in candidates if path.is_file()), None)


def drawable_variants(runs: list[dict], weights_dir: str | Path, limit: int = 4) -> list[tuple[dict, dict]]:
    """The first ``limit`` runs with a checkpoint here, each with ``{case: checkpoint}`` of the cases
    it can predict."""
    variants = []
    for run in runs:
        available = {case: path for case in run["per_case"] if (path := checkpoint_for(run, case, weights_dir))}
        if available:
            variants.append((run, available))
    return variants[:limit]


def pick_cases(variants: list[tuple[dict, dict]], count: int = 4) -> list[str]:
    """Cases every variant can predict, ranked by recorded DSC averaged over the variants: the
    ``count // 2`` hardest, then cases at evenly spaced ranks up to the median (for four rows: the
    two hardest, the lower-quartile case and the median case)."""
    common = set.intersection(*(set(available) for _, available in variants))
    score = {case: float(np.mean([run["per_case"][case] for run, _ in variants])) for case in common}
    ranked = sorted(common, key=lambda case: (score[case], case))
    hardest, spread = count // 2, count - count // 2
    ranks = [max(hardest, round(0.5 * (i + 1) / spread * (len(ranked) - 1))) for i in range(spread)]
    picked = ranked[:hardest] + [ranked[r] for r in ranks if r < len(ranked)]
    return list(dict.fromkeys(picked))[:count]


def predict_rows(variants: list[tuple[dict, dict]], cases: list[str], data_dir: str | None,
                 cache_dir: str | None, device: str = "auto") -> list[dict]:
    """Predict ``cases`` with every variant's checkpoint; one row per case for :func:`side_by_side_figure`.

    Returns:
        ``{"case", "slice" (0-based, the most lesion), "flair", "truth", "preds": {run: mask},
        "dsc": {run: DSC of the drawn volume}, "voxels": {run: predicted voxels in the volume}}``,
        images on the 256 metric grid.

    Raises:
        DatasetError, FileNotFoundError: the dataset or a checkpoint cannot be read.
    """
    from ..evaluation import flair_on_metric_grid
    from ..failures import fold_probabilities, slices_that_matter
    from ..metrics import binarize_volume, dice_coefficient

    rows = {case: {"case": case, "preds": {}, "dsc": {}, "voxels": {}} for case in cases}
    for run, available in variants:
        by_checkpoint: dict[Path, list[str]] = {}
        for case in cases:
            by_checkpoint.setdefault(available[case], []).append(case)
        for weights, ids in by_checkpoint.items():
            probs, volumes = fold_probabilities(weights, ids, data_dir, cache_dir, device)
            for volume in volumes:
                row, pred = rows[volume.case_id], binarize_volume(probs[volume.case_id])
                if "truth" not in row:
                    row["truth"] = volume.metric_mask.astype(bool)
                    row["flair"] = flair_on_metric_grid(volume)
                    row["slice"] = slices_that_matter(None, row["truth"])[0]
                row["dsc"][run["run"]] = dice_coefficient(pred, row["truth"])
                row["voxels"][run["run"]] = int(pred.sum())
                row["preds"][run["run"]] = pred[row["slice"]]
    return [rows[case] for case in cases]


def side_by_side_figure(rows: list[dict], names: list[str], path: str | Path) -> Path:
    """Rows of cases; the first column FLAIR with the truth outlined in green, then one column per
    variant with its prediction outlined in red over the same slice (truth still in green)."""
    from ..plots import outline_overlay

    fig = Figure(figsize=(2.1 * (1 + len(names)), 2.25 * len(rows)))
    axes = fig.subplots(len(rows), 1 + len(names), squeeze=False)
    for ax_row, row in zip(axes, rows):
        flair = row["flair"][row["slice"]]
        ax_row[0].imshow(outline_overlay(flair, row["truth"][row["slice"]]))
        ax_row[0].set_title(f"{row['case']}\nslice {row['slice'] + 1}: FLAIR, truth", fontsize=6)
        for ax, name in zip(ax_row[1:], names):
            ax.imshow(outline_overlay(flair, row["truth"][row["slice"]], row["preds"][name]))
            title = textwrap.fill(name, 34)  # run names are longer than a column is wide
            ax.set_title(f"{title}\nDSC {row['dsc'][name]:.3f}, {row['voxels'][name]} voxels predicted", fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def build_side_by_side(runs: list[dict], name: str, figures_dir: str | Path, weights_dir: str | Path,
                       data_dir: str | None = None, cache_dir: str | None = None, device: str = "auto",
                       cases: int = 4, limit: int = 4) -> dict:
    """Draw ``<figures_dir>/side-by-side-<name>.png`` from the checkpoints of ``runs``, or keep the one
    there when no checkpoint or no dataset is at hand.

    Beside the PNG, ``side-by-side-<name>.json`` records what it shows (variants, cases, slices,
    DSC, runs without checkpoints), so a kept figure keeps its caption.

    Returns:
        ``{"figure": path or None, "caption": that record or None, "message": what was done}``.
    """
    from ..data.kaggle import DatasetError

    png = Path(figures_dir) / f"side-by-side-{name}.png"
    record_path = png.with_suffix(".json")
    variants, reason = drawable_variants(runs, weights_dir, limit), None
    if not variants:
        reason = f"no checkpoint of these runs under {weights_dir}"
    else:
        picked = pick_cases(variants, cases)
        try:
            rows = predict_rows(variants, picked, data_dir, cache_dir, device) if picked else []
        except (DatasetError, FileNotFoundError) as exc:
            reason = f"cannot predict the cases ({str(exc).splitlines()[0]})"
        if not picked:
            reason = "the runs with checkpoints here share no case"
    if reason is None:
        names = [run["run"] for run, _ in variants]
        side_by_side_figure(rows, names, png)
        drawn = set(names)
        atomic_write_json(record_path, {
            "variants": names, "without_checkpoints": [run["run"] for run in runs if run["run"] not in drawn],
            "rows": [{"case": r["case"], "slice": r["slice"] + 1, "dsc": r["dsc"], "voxels": r["voxels"]}
                     for r in rows]})
        message = f"drew {png}: {len(names)} variants x {len(rows)} cases"
    else:
        message = f"kept {png} as it was: {reason}" if png.is_file() else f"skipped {png}: {reason}"
    caption = json_or_none(record_path) if png.is_file() else None
    return {"figure": png if png.is_file() else None, "caption": caption, "message": message}


def json_or_none(path: Path) -> dict | None:
    """The JSON in ``path``, or ``None`` when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None
