"""Patient-level k-fold cross-validation (docs/protocol.md, section 5), one training run a fold.

``python -m brainseg cv --folds 5 --preset cpu`` writes the folds to ``logs/<name>/folds.json``
(reused by any later call), trains fold 0..k-1 as runs ``<name>-fold<k>`` with the final model
(nothing is chosen on the fold's cases), and pools the per-case DSC of all 110 cases into
``results/<name>.json`` and ``results/<name>-per-case.csv`` with bootstrap 95% intervals.
A finished fold is read back (from ``logs/`` or from its export ``results/<name>-fold<k>.json``),
an interrupted one resumed from its ``last.pt``: the command can be stopped and repeated until
every fold is done, across sessions and fresh clones.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import paths
from .atomic import atomic_write_json, atomic_write_text
from .config import TrainConfig
from .data.kaggle import discover_cases
from .data.splits import kfold_split
from .metrics import summarize
from .results import export_run


def write_folds(path: str | Path, case_ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """The seeded folds of ``case_ids``, saved to ``path`` unless the file already exists.

    An existing file is kept (it defines the folds of a run in progress) after checking that it
    was made for the same number of folds.

    Returns:
        ``folds`` lists of case ids (each sorted).

    Raises:
        ValueError: an existing file holds another number of folds.
    """
    path = Path(path)
    if path.is_file():
        saved = json.loads(path.read_text())["folds"]
        if len(saved) != folds:
            raise ValueError(f"{path} holds {len(saved)} folds, not {folds}; pass --folds {len(saved)} or remove it")
        return saved
    groups = [kfold_split(case_ids, folds, k, seed)[1] for k in range(folds)]
    atomic_write_json(path, {"folds": groups, "seed": seed, "cases": len(case_ids),
                             "rule": "brainseg.data.splits.kfold_split: random.Random(seed).shuffle, dealt round robin"})
    return groups


def bootstrap_interval(values: list[float], statistic=np.mean, resamples: int = 10_000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (cases resampled with replacement).

    Returns:
        (low, high) at ``level``.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    rng = np.random.default_rng(seed)
    draws = statistic(data[rng.integers(0, data.size, size=(resamples, data.size))], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def pool_folds(fold_results: list[dict], name: str, command: str, seed: int = 0) -> dict:
    """Pool the per-case DSC of finished folds into one cross-validation result.

    Args:
        fold_results: each fold's ``metrics.json`` (with ``per_case`` and ``per_case_without_lcc``).

    Returns:
        A results entry (``split`` = ``cv<k>``) with ``per_case`` over every case, mean and median
        with and without the largest-component rule, their bootstrap 95% intervals and the folds'
        own figures.
    """
    per_case, without_lcc, fold_of = {}, {}, {}
    for k, result in enumerate(fold_results):
        overlap = set(per_case) & set(result["per_case"])
        if overlap:
            raise ValueError(f"case {sorted(overlap)[0]} is in two folds")
        per_case.update(result["per_case"])
        without_lcc.update(result["per_case_without_lcc"])
        fold_of.update({case: k for case in result["per_case"]})
    values = [per_case[c] for c in sorted(per_case)]
    first = fold_results[0]
    epochs = sorted({r["epochs"] for r in fold_results})
    if len(epochs) > 1 or any(r["stopped_early"] for r in fold_results):
        print(f"warning: the folds trained for different numbers of epochs ({epochs}); "
              "some stopped at the time limit (see 'folds' in the result)")
    summary, summary_raw = summarize(per_case), summarize(without_lcc)
    return {
        "run": name, "model": first["model"], "loss": first["loss"], "preset": first["preset"],
        "image_size": first["image_size"], "epochs": max(epochs), "split": f"cv{len(fold_results)}",
        "selection": "last: each fold's final model, nothing chosen on evaluated cases; "
                     "every case predicted by the fold model that did not train on it",
        "val_mean_dsc": summary["mean"], "val_median_dsc": summary["median"],
        "val_mean_dsc_ci95": bootstrap_interval(values, np.mean, seed=seed),
        "val_median_dsc_ci95": bootstrap_interval(values, np.median, seed=seed),
        "val_mean_dsc_without_lcc": summary_raw["mean"], "val_median_dsc_without_lcc": summary_raw["median"],
        "per_case": per_case, "per_case_without_lcc": without_lcc, "fold_of_case": fold_of,
        "folds": [{"run": r["run"], "cases": len(r["per_case"]), "val_mean_dsc": r["val_mean_dsc"],
                   "val_median_dsc": r["val_median_dsc"], "epochs": r["epochs"], "stopped_early": r["stopped_early"],
                   "wall_time_s": r["wall_time_s"]} for r in fold_results],
        "best_epoch": first["best_epoch"],
        "wall_time_s": round(sum(r["wall_time_s"] for r in fold_results), 1),
        "train_images_per_s": round(float(np.mean([r["train_images_per_s"] for r in fold_results])), 2),
        "parameters": first["parameters"], "device": first["device"], "torch_version": first["torch_version"],
        "command": command, "config": {**first["config"], "run_name": name, "fold": None},
    }


def per_case_csv(result: dict) -> str:
    lines = ["case,fold,dsc,dsc_without_lcc"]
    for case in sorted(result["per_case"]):
        lines.append(f"{case},{result['fold_of_case'][case]},{result['per_case'][case]:.6f},"
                     f"{result['per_case_without_lcc'][case]:.6f}")
    return "\n".join(lines) + "\n"


def finished_fold(log_dir: Path, export: Path) -> dict | None:
    """The metrics of a fold that already finished: ``<log_dir>/metrics.json``, else its export
    ``results/<run>.json`` (committed, so a CV can be finished from a fresh clone); else ``None``."""
    for path in (log_dir / "metrics.json", export):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def run_cv(base: TrainConfig, folds: int = 5, seed: int = 0, name: str = "", only_fold: int | None = None,
           folds_file: str | Path | None = None, results_dir: str | Path | None = None, command: str = "",
           progress: bool = True) -> dict | None:
    """Train (or resume, or read back) every fold and pool them once all are done.

    Args:
        base: the training config of every fold (split, fold, run name and selection are set here).
        name: the cross-validation's name; default ``<preset>-<model>-<loss>-cv<folds>``.
        only_fold: train just this fold (to spread folds over sessions or machines); the pooled
            result is written by whichever call finds every fold finished.
        folds_file: reuse these folds (e.g. ``results/<name>-folds.json``); default
            ``logs/<name>/folds.json``, drawn from ``seed`` on the first call.
        results_dir: where the pooled result goes; default the repository's ``results/``.

    Returns:
        The pooled result, or ``None`` while folds are missing.
    """
    from .train import fit

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("cv runs its folds in one process; to spread a fold over several processes, run "
                         "`torchrun ... -m brainseg train --split kfold --fold K --folds-file <folds.json> "
                         "--selection last` for each fold")
    if base.max_train_cases or base.max_val_cases:
        raise ValueError("cv pools every case of every fold: max_train_cases and max_val_cases must be 0")
    name = name or f"{base.preset}-{base.model}-{base.loss}-cv{folds}"
    case_ids = sorted(discover_cases(base.data_dir or None))
    folds_path = Path(folds_file) if folds_file else base.run_dirs(name)[0] / "folds.json"
    write_folds(folds_path, case_ids, folds, seed)
    results_dir = paths.or_default(results_dir, paths.results_dir())
    start = time.perf_counter()
    fold_results: list[dict | None] = []
    for k in range(folds):
        config = replace(base, split="kfold", folds=folds, fold=k, split_seed=seed, folds_file=str(folds_path),
                         selection="last", run_name=f"{name}-fold{k}")
        log_dir, weights_dir = config.run_dirs(config.run_name)
        finished = finished_fold(log_dir, results_dir / f"{config.run_name}.json")
        if finished is not None or (only_fold is not None and k != only_fold):
            fold_results.append(finished)
            continue
        resume = (weights_dir / "last.pt").is_file()
        print(f"cv {name}: fold {k + 1}/{folds}" + (" (resuming)" if resume else ""))
        fold_results.append(fit(config, command=command, progress=progress, resume=resume))
        export_run(log_dir, results_dir)  # a later clone finds the fold
    missing = [k for k, r in enumerate(fold_results) if r is None]
    if missing:
        print(f"cv {name}: folds {missing} not trained yet; run the command again without --fold to finish")
        return None
    result = pool_folds(fold_results, name, command, seed)
    result["folds_file"] = paths.relative_to_root(results_dir / f"{name}-folds.json")
    atomic_write_text(results_dir / f"{name}-folds.json", folds_path.read_text())
    atomic_write_json(results_dir / f"{name}.json", result)
    atomic_write_text(results_dir / f"{name}-per-case.csv", per_case_csv(result))
    low, high = result["val_mean_dsc_ci95"]
    print(f"cv {name}: {len(result['per_case'])} cases, mean DSC {result['val_mean_dsc']:.4f} "
          f"(95% CI {low:.4f}-{high:.4f}), median {result['val_median_dsc']:.4f}; without the largest-component "
          f"rule mean {result['val_mean_dsc_without_lcc']:.4f}; folds' wall time {result['wall_time_s'] / 60:.1f} min "
          f"(this call {(time.perf_counter() - start) / 60:.1f} min); wrote {results_dir}/{name}.json")
    return result
