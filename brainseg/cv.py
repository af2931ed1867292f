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

import os
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import paths
from .atomic import atomic_write_json, atomic_write_text
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data.kaggle import discover_cases, run_data_dir
from .data.splits import kfold_split, read_folds
from .ensemble import check_unseen, ensemble_volumes, fold_number, load_ensemble, resolve_checkpoints, run_split
from .losses import create_loss
from .metrics import summarize
from .results import export_run, read_json
from .runtime import describe_device, select_device
from .validation import evaluate_groups


def write_folds(path: str | Path, case_ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """The seeded folds of ``case_ids``, saved to ``path`` unless the file already exists.

    An existing file is kept (it defines the folds of a run in progress) after checking that it
    was made for the same number of folds; when it was drawn with another seed, a note says that
    ``seed`` did not draw these folds.

    Returns:
        ``folds`` lists of case ids (each sorted).

    Raises:
        ValueError: an existing file holds another number of folds.
    """
    path = Path(path)
    if path.is_file():
        stored = read_folds(path)
        saved = stored["folds"]
        if len(saved) != folds:
            raise ValueError(f"{path} holds {len(saved)} folds, not {folds}; pass --folds {len(saved)} or remove it")
        if stored.get("seed", seed) != seed:
            print(f"note: the folds are read from {path}, drawn with seed {stored['seed']}; --split-seed "
                  f"{seed} does not redraw them (remove the file, or name another --folds-file, for new folds)")
        return saved
    groups = [kfold_split(case_ids, folds, k, seed)[1] for k in range(folds)]
    atomic_write_json(path, {"folds": groups, "seed": seed, "cases": len(case_ids),
                             "rule": "brainseg.data.splits.kfold_split: random.Random(seed).shuffle, "
                                     "dealt round robin"})
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
        own figures and machines (``device``: the distinct machines joined by `` + ``).
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
    stopped = [k for k, r in enumerate(fold_results) if r["stopped_early"]]
    if stopped:
        print(f"warning: folds {stopped} stopped at the time limit before their schedule ended (epochs and stop "
              "of each fold: 'folds' in the result)")
    elif len(epochs) > 1:
        print(f"warning: the folds trained for different numbers of epochs ({epochs})")
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
                   "wall_time_s": r["wall_time_s"], "device": r["device"]} for r in fold_results],
        "best_epoch": first["best_epoch"],
        "wall_time_s": round(sum(r["wall_time_s"] for r in fold_results), 1),
        "train_images_per_s": round(float(np.mean([r["train_images_per_s"] for r in fold_results])), 2),
        "parameters": first["parameters"], "device": " + ".join(dict.fromkeys(r["device"] for r in fold_results)),
        "torch_version": first["torch_version"],
        "command": command, "config": {**first["config"], "run_name": name, "fold": None},
    }


def per_case_csv(result: dict) -> str:
    lines = ["case,fold,dsc,dsc_without_lcc"]
    for case in sorted(result["per_case"]):
        lines.append(f"{case},{result['fold_of_case'][case]},{result['per_case'][case]:.6f},"
                     f"{result['per_case_without_lcc'][case]:.6f}")
    return "\n".join(lines) + "\n"


def check_same_recipe(saved: dict, config: TrainConfig, source: str) -> None:
    """Refuse to pool or resume a fold trained with another recipe than ``config``.

    Raises:
        ValueError: naming ``source`` and every field that differs (:meth:`TrainConfig.recipe_differences`).
    """
    differences = TrainConfig.from_dict(saved).recipe_differences(config)
    if differences:
        raise ValueError(f"{source} was trained with another recipe than this command's ({'; '.join(differences)}); "
                         "repeat the options it was started with, or give the cross-validation another --run-name")


def finished_fold(log_dir: Path, export: Path) -> dict | None:
    """The metrics of a fold that already finished: ``<log_dir>/metrics.json``, else its export
    ``results/<run>.json`` (committed, so a CV can be finished from a fresh clone); else ``None``."""
    for path in (log_dir / "metrics.json", export):
        if path.is_file():
            return read_json(path)
    return None


def whole_cv_command(command: str) -> str:
    """``command`` without its ``--fold K``: the pooled result records the command that trains every
    fold (the call that happened to finish the last fold may have named only that one)."""
    return re.sub(r"\s--fold(?:\s+|=)\d+(?=\s|$)", "", command)


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
    name = name or f"{base.preset}-{base.model}-{base.loss}-cv{folds}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"cv runs its folds in one process; to spread a fold over several processes, run "
                         f"`torchrun ... -m brainseg train --split kfold --folds {folds} --fold K --folds-file "
                         f"<folds.json> --selection last --run-name {name}-foldK` for each fold, then this "
                         "command without torchrun pools them")
    if base.max_train_cases or base.max_val_cases:
        raise ValueError("cv pools every case of every fold: max_train_cases and max_val_cases must be 0")
    if only_fold is not None and not 0 <= only_fold < folds:
        raise ValueError(f"--fold {only_fold} is not one of the {folds} folds (0 to {folds - 1})")
    case_ids = sorted(discover_cases(base.data_dir or None))
    folds_path = Path(folds_file) if folds_file else base.run_dirs(name)[0] / "folds.json"
    groups = write_folds(folds_path, case_ids, folds, seed)
    results_dir = paths.or_default(results_dir, paths.results_dir())
    start = time.perf_counter()
    if (results_dir / f"{name}.json").is_file():  # a pooled result this run would overwrite
        pooled = read_json(results_dir / f"{name}.json")
        check_same_recipe(pooled["config"], fold_config(base, name, folds, 0, seed, folds_path),
                          str(results_dir / f"{name}.json"))
    fold_results = [run_fold(fold_config(base, name, folds, k, seed, folds_path), results_dir, groups[k],
                             train=only_fold is None or k == only_fold, command=command, progress=progress)
                    for k in range(folds)]
    missing = [k for k, r in enumerate(fold_results) if r is None]
    if missing:
        print(f"cv {name}: folds {missing} not trained yet; run the command again without --fold to finish")
        return None
    result = write_pooled(fold_results, name, folds_path, results_dir, whole_cv_command(command), seed)
    low, high = result["val_mean_dsc_ci95"]
    print(f"cv {name}: {len(result['per_case'])} cases, mean DSC {result['val_mean_dsc']:.4f} "
          f"(95% CI {low:.4f}-{high:.4f}), median {result['val_median_dsc']:.4f}; without the largest-component "
          f"rule mean {result['val_mean_dsc_without_lcc']:.4f}; folds' wall time {result['wall_time_s'] / 60:.1f} min "
          f"(this call {(time.perf_counter() - start) / 60:.1f} min); wrote {results_dir}/{name}.json")
    return result


def fold_config(base: TrainConfig, name: str, folds: int, k: int, seed: int, folds_path: Path) -> TrainConfig:
    """The config of fold ``k``: run ``<name>-fold<k>``, the final model, the folds read from ``folds_path``."""
    return replace(base, split="kfold", folds=folds, fold=k, split_seed=seed, folds_file=str(folds_path),
                   selection="last", run_name=f"{name}-fold{k}")


def run_fold(config: TrainConfig, results_dir: Path, val_cases: list[str], train: bool, command: str = "",
             progress: bool = True) -> dict | None:
    """Fold ``config.fold``'s result: read back when finished, else trained (resumed from its
    ``last.pt`` if one exists) and exported to ``results_dir`` when ``train``, else ``None``.
    ``val_cases``: the fold's cases in ``config.folds_file``.

    Raises:
        ValueError: the finished run or the checkpoint to resume was trained with another recipe or
            on other folds.
    """
    from .train import fit

    log_dir, weights_dir = config.run_dirs(config.run_name)
    finished = finished_fold(log_dir, results_dir / f"{config.run_name}.json")
    if finished is not None:
        source = f"fold {config.fold}'s finished run ({log_dir} or {results_dir})"
        check_same_recipe(finished["config"], config, source)
        if set(finished["per_case"]) != set(val_cases):
            raise other_folds_error(source, config)
        if not (results_dir / f"{config.run_name}.json").is_file():  # finished but not exported (killed between)
            export_run(log_dir, results_dir)
    if finished is not None or not train:
        return finished
    resume = (weights_dir / "last.pt").is_file()  # fit refuses one trained with another recipe
    if resume:
        check_not_trained_on(weights_dir / "last.pt", val_cases, config)
    print(f"cv fold {config.fold + 1}/{config.folds}: {config.run_name}" + (" (resuming)" if resume else ""))
    result = fit(config, command=command, progress=progress, resume=resume)
    export_run(log_dir, results_dir)  # a later clone finds the fold
    return result


def check_not_trained_on(checkpoint: Path, val_cases: list[str], config: TrainConfig) -> None:
    """Refuse to resume a fold from a ``checkpoint`` that learnt from cases the fold will score.
    The folds file is no part of the recipe, so the checkpoint's own ``trained_on`` list is the check.

    Raises:
        ValueError: ``trained_on`` overlaps ``val_cases``, or was not recorded (by a checkpoint of
            this recipe; one of another recipe is left to ``fit``'s refusal).
    """
    saved = load_checkpoint(checkpoint)
    trained_on = saved.get("trained_on")
    # fit compares every resumed checkpoint's recipe; here only an unrecorded one, to leave fit's message first
    if trained_on is None and not TrainConfig.from_dict(saved["config"]).recipe_differences(config):
        raise ValueError(f"{checkpoint} records no trained_on cases (an older brainseg saved it), so nothing shows "
                         f"that it never trained on fold {config.fold}'s cases; remove it to train the fold afresh")
    if set(trained_on or ()) & set(val_cases):
        raise other_folds_error(str(checkpoint), config)  # it learnt from cases it would now score


def other_folds_error(source: str, config: TrainConfig) -> ValueError:
    """The error for a fold run made on other folds than ``config.folds_file``: resumed or pooled, it
    would score cases it trained on, or miss some. It names ``source``, the folds file and the fix."""
    return ValueError(f"{source} was made on other folds than {config.folds_file} (its cases differ from fold "
                      f"{config.fold}'s there); pass the folds file it was started with (--folds-file), or give "
                      "the cross-validation another --run-name")


def write_pooled(fold_results: list[dict], name: str, folds_path: Path, results_dir: Path, command: str,
                 seed: int) -> dict:
    """Pool the folds (:func:`pool_folds`) and write ``<name>.json``, ``-per-case.csv`` and ``-folds.json``
    to ``results_dir``, each atomically; returns the pooled result."""
    result = pool_folds(fold_results, name, command, seed)
    result["folds_file"] = paths.relative_to_root(results_dir / f"{name}-folds.json")
    atomic_write_text(results_dir / f"{name}-folds.json", folds_path.read_text())
    atomic_write_json(results_dir / f"{name}.json", result)
    atomic_write_text(results_dir / f"{name}-per-case.csv", per_case_csv(result))
    return result


def fold_checkpoints(cv_name: str, weights_dir: str | Path | None = None) -> dict[int, Path]:
    """``{k: weights/<cv_name>-fold<k>/best.pt}`` for every fold found.

    Raises:
        FileNotFoundError: no fold checkpoint of that name (the place looked at is named).
    """
    found = {fold_number(p): p for p in resolve_checkpoints([cv_name], weights_dir)}
    found.pop(None, None)  # a file or run folder of that name, not a fold
    if not found:
        raise FileNotFoundError(f"{cv_name}: not a cross-validation; no {cv_name}-fold<k>/best.pt in "
                                f"{weights_dir or paths.weights_dir()}")
    return found


def ensemble_cv(cv_names: list[str], name: str = "", folds: list[int] | None = None,
                weights_dir: str | Path | None = None, results_dir: str | Path | None = None,
                data_dir: str | None = None, cache_dir: str | None = None, device: str = "auto",
                command: str = "", progress: bool = True, flip_tta: bool = False) -> dict:
    """Out-of-fold cross-validation of an ensemble of cross-validations trained on the same folds.

    Each case is predicted by the ensemble of the fold models, one per cross-validation, that did
    not train on it (their mean probability; members of several image sizes each on the case at
    their own size, :func:`brainseg.validation.evaluate_groups`); the per-case DSC are pooled as in
    :func:`pool_folds` and written to ``results/<name>.json`` and ``-per-case.csv``, so that
    ``results paired`` can compare the ensemble with any of its members.

    Args:
        cv_names: the cross-validations (their checkpoints ``weights/<cv>-fold<k>/best.pt``).
        name: the result's name; default ``ensemble-<cv>+<cv>...`` (``-tta`` appended with ``flip_tta``,
            ``-folds0,1`` when not every fold is scored, so that a screen never replaces a whole result),
            past 200 characters its head and tail around a hash (:func:`~brainseg.paths.file_stem`).
        folds: score only these folds (screening: the result's split says which); default every
            fold that all cross-validations have.
        flip_tta: average each model's probabilities with those of the horizontally flipped slices
            (with one cross-validation: that cross-validation scored with flip TTA).

    Raises:
        ValueError: a fold missing from one of them, or members of a fold that validate different cases.
    """
    results_dir = paths.or_default(results_dir, paths.results_dir())
    by_cv = {cv: fold_checkpoints(cv, weights_dir) for cv in cv_names}
    common = _common_folds(by_cv)
    folds = _require_folds(by_cv, sorted(set(folds)) if folds is not None else common)
    torch_device, start = select_device(device), time.perf_counter()
    per_case, without_lcc, fold_of, configs, epochs = {}, {}, {}, [], []
    for k in folds:
        ensemble = load_ensemble([by_cv[cv][k] for cv in cv_names], torch_device)
        epochs += [_finished_final_model(path, c, results_dir)
                   for path, c in zip(ensemble.checkpoints, ensemble.configs)]
        result = _score_out_of_fold(ensemble, k, cv_names, data_dir, cache_dir, progress, flip_tta)
        per_case.update(result["per_case"])
        without_lcc.update(result["per_case_without_lcc"])
        fold_of.update({case: k for case in result["per_case"]})
        configs += ensemble.configs
        print(f"ensemble fold {k}: {len(result['per_case'])} cases, mean DSC {result['mean']:.4f}")
    every_fold = folds == list(range(configs[0].folds))
    name = name or paths.file_stem("ensemble-" + "+".join(cv_names) + ("-tta" if flip_tta else "")
                                   + ("" if every_fold else "-folds" + ",".join(map(str, folds))))
    pooled = _ensemble_result(name, cv_names, configs, epochs, per_case, without_lcc, fold_of,
                              f"cv{len(folds)}" if every_fold
                              else f"cv{configs[0].folds}-folds{','.join(map(str, folds))}",
                              describe_device(torch_device), time.perf_counter() - start, command, flip_tta)
    atomic_write_json(results_dir / f"{name}.json", pooled)
    atomic_write_text(results_dir / f"{name}-per-case.csv", per_case_csv(pooled))
    low, high = pooled["val_mean_dsc_ci95"]
    print(f"{name}: {len(per_case)} cases, mean DSC {pooled['val_mean_dsc']:.4f} (95% CI {low:.4f}-{high:.4f}), "
          f"median {pooled['val_median_dsc']:.4f}; wrote {results_dir}/{name}.json")
    return pooled


def _common_folds(by_cv: dict[str, dict[int, Path]]) -> list[int]:
    """The folds every cross-validation of ``by_cv`` (``{cv: {fold: checkpoint}}``) has a checkpoint for.

    Raises:
        ValueError: they have none in common.
    """
    common = sorted(set.intersection(*(set(found) for found in by_cv.values())))
    if not common:
        raise ValueError(f"{', '.join(by_cv)} have no fold in common: " +
                         "; ".join(f"{cv} folds {sorted(found)}" for cv, found in by_cv.items()))
    return common


def _require_folds(by_cv: dict[str, dict[int, Path]], folds: list[int]) -> list[int]:
    """``folds``, after checking that every cross-validation has a checkpoint for each.

    Raises:
        ValueError: naming the cross-validation and the folds it lacks.
    """
    for cv, found in by_cv.items():
        if set(folds) - set(found):
            raise ValueError(f"{cv} has no checkpoint for folds {sorted(set(folds) - set(found))} "
                             f"(it has {sorted(found)})")
    return folds


def _finished_final_model(checkpoint: Path, config: TrainConfig, results_dir: Path) -> int:
    """The epochs a fold member trained, after checking that it is a finished fold's final model:
    ``selection`` last (nothing chosen on the fold's cases) and its ``metrics.json`` or export written.

    Raises:
        ValueError: naming the checkpoint, when either does not hold.
    """
    if config.selection != "last":
        raise ValueError(f"{checkpoint}: selection {config.selection!r}, so it was chosen on the cases it would score; "
                         "an out-of-fold ensemble takes final models (selection last, as cv trains them)")
    finished = finished_fold(config.run_dirs(config.run_name)[0], results_dir / f"{config.run_name}.json")
    if finished is None:
        raise ValueError(f"{checkpoint}: run {config.run_name} has not finished (no metrics.json in its log folder and "
                         f"no {results_dir / config.run_name}.json); finish its fold first")
    return int(finished["epochs"])


def _score_out_of_fold(ensemble, fold: int, cv_names: list[str], data_dir: str | None, cache_dir: str | None,
                       progress: bool, flip_tta: bool = False) -> dict:
    """:func:`brainseg.validation.evaluate_groups` of one fold's ensemble on the cases all its members
    validated (and none trained on).

    Raises:
        ValueError: the members validate different cases.
    """
    validation = {tuple(run_split(c, data_dir)[1]) for c in ensemble.configs}
    if len(validation) > 1:
        raise ValueError(f"the fold {fold} models of {', '.join(cv_names)} validate different cases; "
                         "an out-of-fold ensemble needs cross-validations on the same saved folds")
    case_ids = list(validation.pop())
    check_unseen(ensemble, case_ids, data_dir)
    config = ensemble.config
    volumes = ensemble_volumes(ensemble, case_ids, run_data_dir(data_dir, config.data_dir), cache_dir, progress)
    return evaluate_groups(ensemble.groups, volumes, create_loss(config.loss, **config.loss_args), ensemble.runtime,
                           progress=progress, flip_tta=flip_tta)


def _ensemble_result(name: str, cv_names: list[str], configs: list[TrainConfig], member_epochs: list[int],
                     per_case: dict, without_lcc: dict, fold_of: dict, split: str, device: str, seconds: float,
                     command: str, flip_tta: bool = False) -> dict:
    """A results entry for :func:`ensemble_cv`, with the keys of a trained cross-validation's; its
    epochs are those the members trained (``member_epochs``), not those configured."""
    values = [per_case[c] for c in sorted(per_case)]
    summary, summary_raw = summarize(per_case), summarize(without_lcc)

    def shared(field: str) -> str:
        return "+".join(sorted({str(getattr(c, field)) for c in configs}))

    sizes = sorted({c.image_size for c in configs})

    return {
        "run": name, "model": shared("model"), "loss": shared("loss"), "preset": shared("preset"),
        "image_size": sizes[0] if len(sizes) == 1 else "+".join(map(str, sizes)),  # "128+256": mixed sizes
        "epochs": max(member_epochs), "split": split,
        "selection": "last: an ensemble of each cross-validation's final fold models, nothing chosen on evaluated "
                     "cases; every case predicted by the fold models that did not train on it"
                     + ("; flip TTA" if flip_tta else ""),
        "members": cv_names, "flip_tta": flip_tta,
        "val_mean_dsc": summary["mean"], "val_median_dsc": summary["median"],
        "val_mean_dsc_ci95": bootstrap_interval(values, np.mean),
        "val_median_dsc_ci95": bootstrap_interval(values, np.median),
        "val_mean_dsc_without_lcc": summary_raw["mean"], "val_median_dsc_without_lcc": summary_raw["median"],
        "per_case": per_case, "per_case_without_lcc": without_lcc, "fold_of_case": fold_of,
        "best_epoch": max(member_epochs), "member_epochs": member_epochs, "wall_time_s": round(seconds, 1),
        "device": device, "command": command,
    }
