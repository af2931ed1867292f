"""Results that last: ``results/<run>.json`` (committed), written by :func:`export_run` and read back
by :func:`load_results`.

``logs/`` and ``weights/`` are not in git, so every run quoted anywhere is exported here; the
table of every run (:mod:`brainseg.tools.tables`) is built from these files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from . import paths
from .atomic import atomic_write_json

REQUIRED_KEYS = ("run", "model", "loss", "preset", "image_size", "epochs", "split", "selection",
                 "val_mean_dsc", "val_median_dsc", "per_case", "best_epoch", "wall_time_s", "device", "command")


def read_json(path: str | Path) -> dict:
    """The JSON file ``path``, or a ``ValueError`` that names it (a truncated or foreign file)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON file ({error}); restore it from git where it is committed, "
                         "else remove it") from None


def export_run(run_dir: str | Path, results_dir: str | Path | None = None) -> Path:
    """Copy ``<run_dir>/metrics.json`` to ``<results_dir>/<run>.json``; ``run_dir`` may also be a
    run name, looked up under the repository's ``logs/``; ``results_dir`` ``None``: the repository's
    results/ folder.

    Raises:
        FileNotFoundError: the run has no ``metrics.json`` (it did not finish, or no such run).
        ValueError: a required key is missing.
    """
    if not Path(run_dir).is_dir() and (paths.logs_dir() / str(run_dir)).is_dir():
        run_dir = paths.logs_dir() / str(run_dir)
    source = Path(run_dir) / "metrics.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder, nor {paths.logs_dir() / str(run_dir)}")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no metrics.json; the run has not finished")
    metrics = read_json(source)
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}")
    history = Path(run_dir) / "history.csv"
    if history.is_file():  # the curves travel with the numbers: logs/ is not in git
        with open(history) as handle:
            metrics["history"] = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    target = paths.or_default(results_dir, paths.results_dir()) / f"{metrics['run']}.json"
    atomic_write_json(target, metrics)
    return target


def load_results(results_dir: str | Path | None = None) -> list[dict]:
    """All exported runs, sorted by preset, model, loss and run name (other JSON files, such as
    benchmark figures, are skipped); ``results_dir`` ``None``: the repository's results/ folder."""
    folder = paths.or_default(results_dir, paths.results_dir())
    runs = [read_json(p) for p in sorted(folder.glob("*.json"))]
    runs = [r for r in runs if all(k in r for k in REQUIRED_KEYS)]
    return sorted(runs, key=lambda r: (r["preset"], r["model"], r["loss"], r["run"]))


def epochs_label(run: dict) -> str:
    """The epochs a run trained, for tables: ``"20"``, or ``"9-11"`` for a cross-validation whose
    folds stopped at different epochs (a time budget); its ``epochs`` field holds the longest fold's."""
    per_fold = sorted({fold["epochs"] for fold in run.get("folds") or ()
                       if isinstance(fold, dict) and "epochs" in fold})
    if len(per_fold) > 1:
        return f"{per_fold[0]}-{per_fold[-1]}"
    return str(run["epochs"])
