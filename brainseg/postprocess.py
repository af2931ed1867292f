"""Post-processing chosen on out-of-fold predictions, the nnU-Net way (docs/protocol.md, section 5).

A cross-validation predicts every case once, with the fold model that never trained on it. Those
out-of-fold predictions decide a recipe's post-processing among a few rules: keep every connected
component (``none``), drop components smaller than N voxels (``min<N>``), or keep only the largest
(``largest``, the protocol's rule, docs/protocol.md section 4). The largest component always stays,
so the rules run from ``none`` (N = 0) to ``largest`` (N infinite). Optionally each rule is also
tried on the probabilities thresholded elsewhere than the protocol's 0.5 (``largest@0.3``).

The choice is itself scored honestly: for each fold, the rule is chosen on the other folds' cases
and applied to that fold's cases (``nested``), and that per-case table is compared with the
protocol's rule case by case. The protocol's number is always reported beside it.

``python -m brainseg results postprocess <cv>`` needs the folds' checkpoints,
``weights/<cv>-fold<k>/best.pt``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import paths
from .metrics import THRESHOLD, dice_coefficient, keep_components, summarize

# Smallest component kept, in voxels of the 256 px metric grid; the largest component always stays.
MIN_SIZES = (0, 100, 300, 1000, 3000, math.inf)


def rule_name(min_voxels: float, threshold: float = THRESHOLD) -> str:
    """``none`` (0), ``largest`` (infinite) or ``min<N>``, with ``@<threshold>`` unless it is the protocol's."""
    name = "none" if min_voxels == 0 else "largest" if math.isinf(min_voxels) else f"min{int(min_voxels)}"
    return name if threshold == THRESHOLD else f"{name}@{threshold:g}"


def rule_scores(probs: dict[str, np.ndarray], truths: dict[str, np.ndarray],
                min_sizes: tuple[float, ...] = MIN_SIZES,
                thresholds: tuple[float, ...] = (THRESHOLD,)) -> dict[str, dict[str, float]]:
    """Per-case DSC of every rule, each size at each threshold: ``{rule: {case: dsc}}``.

    Shape:
        probs: ``{case: (D, 256, 256) float}`` probabilities, not post-processed;
        truths: ``{case: (D, 256, 256) bool}``.
    """
    scores = {}
    for threshold in thresholds:
        preds = {case: prob > threshold for case, prob in probs.items()}
        scores.update({rule_name(n, threshold): {case: dice_coefficient(keep_components(pred, n), truths[case])
                                                 for case, pred in preds.items()} for n in min_sizes})
    return scores


def best_rule(scores: dict[str, dict[str, float]], cases: list[str]) -> str:
    """The rule with the highest mean DSC over ``cases``; on a tie, the protocol's rule, then the
    first in ``scores``."""
    means = {rule: float(np.mean([per_case[c] for c in cases])) for rule, per_case in scores.items()}
    top = max(means.values())
    tied = [rule for rule, mean in means.items() if mean == top]
    return "largest" if "largest" in tied else tied[0]


def nested_choice(scores: dict[str, dict[str, float]], fold_of_case: dict[str, int]
                  ) -> tuple[dict[str, float], dict[int, str]]:
    """For each fold, the rule chosen on the other folds' cases, applied to that fold's cases.

    Returns:
        ``{case: dsc}`` under the rule chosen without the case's fold, and ``{fold: rule}``.
    """
    chosen, per_case = {}, {}
    for fold in sorted(set(fold_of_case.values())):
        others = [c for c, k in fold_of_case.items() if k != fold]
        if not others:
            raise ValueError("nested choice needs at least two folds")
        chosen[fold] = best_rule(scores, others)
        per_case.update({c: scores[chosen[fold]][c] for c, k in fold_of_case.items() if k == fold})
    return per_case, chosen


def out_of_fold_scores(result: dict, weights_dir: str | Path, data_dir: str | None = None,
                       cache_dir: str | None = None, device: str = "cpu",
                       thresholds: tuple[float, ...] = (THRESHOLD,)) -> dict[str, dict[str, float]]:
    """:func:`rule_scores` of every case of a cross-validation, each predicted by the fold model
    that did not train on it; one fold's probabilities are held at a time.

    Args:
        result: :func:`brainseg.paired.load_per_case` of the cross-validation.

    Raises:
        FileNotFoundError: a fold's checkpoint is missing, naming it.
    """
    from .failures import fold_probabilities

    scores: dict[str, dict[str, float]] = {}
    for fold in sorted(set(result["fold_of_case"].values())):
        weights = Path(weights_dir) / f"{result['name']}-fold{fold}" / "best.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: fold {fold}'s checkpoint is missing; post-processing is "
                                    "chosen on the folds' own predictions (run the cross-validation here, "
                                    "or copy its weights/ folders)")
        cases = [c for c, k in result["fold_of_case"].items() if k == fold]
        probs, volumes = fold_probabilities(weights, cases, data_dir, cache_dir, device)
        truths = {volume.case_id: volume.metric_mask.astype(bool) for volume in volumes}
        for rule, per_case in rule_scores(probs, truths, thresholds=thresholds).items():
            scores.setdefault(rule, {}).update(per_case)
    return scores


def check_thresholds(thresholds: tuple[float, ...]) -> tuple[float, ...]:
    """``thresholds`` with the protocol's 0.5 added (the nested choice is compared with it), sorted.

    Raises:
        ValueError: a threshold outside (0, 1), or two that give one rule name (e.g. 0.3 and 0.3000001).
    """
    if not all(0 < t < 1 for t in thresholds):
        raise ValueError(f"thresholds must lie between 0 and 1, got {list(thresholds)}")
    chosen = tuple(sorted(set(thresholds) | {THRESHOLD}))
    names = [rule_name(0, t) for t in chosen]
    if len(set(names)) < len(names):
        raise ValueError(f"thresholds {list(chosen)} name the same rule twice ({names}); give distinct values")
    return chosen


def summarize_choice(scores: dict[str, dict[str, float]], fold_of_case: dict[str, int],
                     recorded: dict[str, float] | None = None) -> dict:
    """Every rule's mean and median, the nested choice compared with the protocol's rule, and the
    rule chosen on all cases (the recipe's post-processing from now on).

    Args:
        scores: :func:`rule_scores`.
        recorded: the cross-validation's own per-case DSC (protocol rule), to check the
            recomputed predictions against (``max_difference_from_recorded``).
    """
    from .paired import paired_difference

    nested, chosen = nested_choice(scores, fold_of_case)
    summary = {
        "rules": {rule: summarize(per_case) for rule, per_case in scores.items()},
        "chosen_per_fold": {str(k): rule for k, rule in chosen.items()},
        "chosen_on_all_cases": best_rule(scores, sorted(fold_of_case)),
        "nested": summarize(nested), "nested_per_case": nested,
        "nested_vs_largest": paired_difference(scores["largest"], nested),
    }
    if recorded is not None:
        summary["max_difference_from_recorded"] = max(abs(scores["largest"][c] - recorded[c])
                                                      for c in scores["largest"])
    return summary


def analyse_postprocessing(cv: str, results_dir: str | Path | None = None, logs_dir: str | Path | None = None,
                           weights_dir: str | Path | None = None, data_dir: str | None = None,
                           cache_dir: str | None = None, device: str = "cpu",
                           thresholds: tuple[float, ...] = (THRESHOLD,)) -> dict:
    """Recompute a cross-validation's out-of-fold predictions from its fold checkpoints and score
    every post-processing rule, at every threshold of ``thresholds`` and the protocol's 0.5, on them
    (:func:`summarize_choice`). ``results_dir`` / ``logs_dir`` / ``weights_dir``: ``None``: the
    repository's results/ / logs/ / weights/ folder.

    Raises:
        ValueError: bad thresholds (:func:`check_thresholds`), or no fold recorded for the cases.
    """
    from .paired import load_per_case

    thresholds = check_thresholds(thresholds)
    result = load_per_case(cv, results_dir, logs_dir, fold_models=True)
    if not result["fold_of_case"]:
        raise ValueError(f"{cv}: no fold of each case recorded; post-processing is chosen on a cross-validation")
    weights_dir = paths.or_default(weights_dir, paths.weights_dir())
    scores = out_of_fold_scores(result, weights_dir, data_dir, cache_dir, device, thresholds)
    return {"cv": result["name"], "source": result["source"], "cases": len(scores["largest"]),
            "thresholds": list(thresholds),
            **summarize_choice(scores, result["fold_of_case"], result["per_case"])}


def postprocess_report(summary: dict) -> str:
    """Markdown: one row per rule, then the nested choice against the protocol's rule."""
    lines = [f"{summary['cv']}: {summary['cases']} cases, out-of-fold predictions", "",
             "| post-processing (threshold 0.5 unless @) | mean DSC | median DSC |", "|---|---|---|"]
    lines += [f"| {rule} | {s['mean']:.4f} | {s['median']:.4f} |" for rule, s in summary["rules"].items()]
    paired = summary["nested_vs_largest"]
    low, high = paired["ci95"]
    lines += ["", f"chosen on the other folds, per fold: {summary['chosen_per_fold']}",
              f"nested choice: mean {summary['nested']['mean']:.4f}, median {summary['nested']['median']:.4f}; "
              f"minus the protocol's rule (largest) per case: {paired['mean_difference']:+.4f} "
              f"(paired 95% CI {low:+.4f} to {high:+.4f}), wins / ties / losses "
              f"{paired['wins']} / {paired['ties']} / {paired['losses']}",
              f"chosen on all cases (the recipe's rule from now on): {summary['chosen_on_all_cases']}"]
    if "max_difference_from_recorded" in summary:
        lines.append(f"largest rule recomputed here vs the recorded per-case DSC: max |difference| "
                     f"{summary['max_difference_from_recorded']:.4f}")
    return "\n".join(lines)
