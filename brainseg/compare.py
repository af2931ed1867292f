"""Compare runs under the repository's ``logs/`` (or, without any, the committed ``results/``): a table
of their settings and results, their training curves, and two recipes case by case."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.figure import Figure

from . import paths
from .atomic import atomic_write
from .results import read_json


def load_run(run_dir: str | Path) -> dict:
    """One run folder: ``{"name", "config", "history" (list of per-epoch dicts), "metrics" (or None)}``.

    Raises:
        FileNotFoundError: the folder has no ``config.json`` (not a run).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; not a brainseg run folder")
    history = []
    if (run_dir / "history.csv").is_file():
        with open(run_dir / "history.csv") as handle:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    metrics_path = run_dir / "metrics.json"
    return {"name": run_dir.name, "config": read_json(run_dir / "config.json"), "history": history,
            "metrics": read_json(metrics_path) if metrics_path.is_file() else None}


def load_runs(logs_dir: str | Path | None = None) -> list[dict]:
    """Every run folder under ``logs_dir`` (default: the repository's ``logs/``) with a ``config.json``,
    sorted by name.

    Raises:
        FileNotFoundError: ``logs_dir`` does not exist.
    """
    logs_dir = paths.or_default(logs_dir, paths.logs_dir())
    if not logs_dir.is_dir():
        raise FileNotFoundError(f"{logs_dir}: no such folder; runs are written to the repository's logs/ "
                                "by train.ipynb or 'python -m brainseg train'")
    return [load_run(p) for p in sorted(logs_dir.iterdir()) if (p / "config.json").is_file()]


def runs_from_results(results_dir: str | Path | None = None, preset: str | None = None,
                      split: str = "reference", selection: str = "reference") -> list[dict]:
    """Exported runs (``<results_dir>/*.json``, default the repository's ``results/``, with their
    per-epoch history) in the :func:`load_run` form: those on ``split`` with every training case
    and the checkpoint chosen by ``selection`` (reduced runs, e.g. short reproductions,
    cross-validations and recipe ablations chosen another way are left out), optionally only those
    of one preset."""
    runs = []
    for path in sorted(paths.or_default(results_dir, paths.results_dir()).glob("*.json")):
        metrics = read_json(path)
        if "config" not in metrics or (preset and metrics.get("preset") != preset):
            continue
        if metrics.get("split") != split or metrics["config"].get("max_train_cases", 0):
            continue
        if metrics["config"].get("selection", "reference") != selection:  # older runs had no choice
            continue
        runs.append({"name": metrics["run"], "config": metrics["config"], "history": metrics.get("history", []),
                     "metrics": metrics})
    return runs


def runs_to_compare(logs_dir: str | Path | None = None,
                    results_dir: str | Path | None = None) -> tuple[list[dict], str]:
    """The runs a comparison shows, and where they come from.

    The run folders under ``logs_dir`` (default the repository's ``logs/``, which git ignores: the
    trainings made in this checkout) when it holds any; else, as on a fresh clone, the committed
    results in ``results_dir`` (default ``results/``) that :func:`runs_from_results` keeps: full
    reference-split runs with the reference checkpoint choice.

    Returns:
        ``(runs, source)``: the runs in the :func:`load_run` form, and which folder they are from, in words.

    Raises:
        FileNotFoundError: ``logs_dir`` was given and does not exist.
    """
    logs = paths.or_default(logs_dir, paths.logs_dir())
    runs = load_runs(logs) if logs_dir or logs.is_dir() else []
    if runs:
        return runs, f"{len(runs)} run folder(s) under {paths.relative_to_root(logs)}/"
    results = paths.or_default(results_dir, paths.results_dir())
    runs = runs_from_results(results)
    return runs, (f"no run under {paths.relative_to_root(logs)}/: {len(runs)} committed result(s) in "
                  f"{paths.relative_to_root(results)}/ (reference split, every training case, "
                  "reference checkpoint choice)")


def comparison_table(runs: list[dict]) -> str:
    """Markdown table: model, loss, parameters, size, epochs run, best epoch, val mean/median DSC,
    final-epoch mean DSC, training images/s, wall time."""
    lines = ["| run | model | loss | parameters | size | epochs | best epoch | val mean DSC | val median DSC | "
             "final-epoch mean DSC | train img/s | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        c, m = run["config"], run["metrics"]
        if m is None:  # unfinished: report the best epoch seen so far
            validated = [r for r in run["history"] if not math.isnan(r["val_mean_dsc"])]  # val_every > 1
            best = max(validated, key=lambda r: r["val_mean_dsc"], default=None)
            result = ("-", "-", "-") if best is None else (int(best["epoch"]), f"{best['val_mean_dsc']:.4f}",
                                                          f"{best['val_median_dsc']:.4f}")
            lines.append(f"| {run['name']} (unfinished) | {c['model']} | {c['loss']} | - | {c['image_size']} | "
                         f"{len(run['history'])} | {result[0]} | {result[1]} | {result[2]} | - | - | - |")
            continue
        params = f"{m['parameters'] / 1e6:.2f} M" if "parameters" in m else "-"
        final = f"{m['final_val_mean_dsc']:.4f}" if "final_val_mean_dsc" in m else "-"
        stopped = " (time limit)" if m.get("stopped_early") else ""
        lines.append(f"| {run['name']} | {c['model']} | {c['loss']} | {params} | {c['image_size']} | "
                     f"{m['epochs']}{stopped} | "
                     f"{m['best_epoch']} | {m['val_mean_dsc']:.4f} | {m['val_median_dsc']:.4f} | {final} | "
                     f"{m.get('train_images_per_s', float('nan')):.1f} | {m['wall_time_s'] / 60:.1f} min |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], path: str | Path | None = None) -> Figure:
    """Validation mean DSC and train/val loss per epoch of every run; saved to ``path`` if given.

    Args:
        runs: ``{"name", "history"}`` each, optionally ``"color"`` (a matplotlib colour; default: the
            next of the cycle) and ``"label"`` (the legend entry; default the name, ``None``: none).

    Returns:
        The matplotlib figure (notebooks display it).
    """
    fig = Figure(figsize=(12, 4.5))
    ax_dsc, ax_loss = fig.subplots(1, 2)
    for run in runs:
        epochs = [r["epoch"] for r in run["history"]]
        label = run.get("label", run["name"])
        line, = ax_dsc.plot(epochs, [r["val_mean_dsc"] for r in run["history"]], marker=".", color=run.get("color"),
                            label="_nolegend_" if label is None else label)
        ax_loss.plot(epochs, [r["train_loss"] for r in run["history"]], color=line.get_color(),
                     label=f"{run['name']} train")
        ax_loss.plot(epochs, [r["val_loss"] for r in run["history"]], color=line.get_color(), linestyle="--",
                     label=f"{run['name']} val")
    ax_dsc.set(xlabel="epoch", ylabel="validation mean DSC (per volume)", ylim=(0, 1), title="Validation DSC")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss (solid: train, dashed: validation)")
    for ax in (ax_dsc, ax_loss):
        ax.grid(alpha=0.3)
    ax_dsc.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        path = Path(path) if Path(path).suffix else Path(path).with_suffix(".png")  # as savefig names it
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:], dpi=100))  # a kill keeps the old one
    return fig
