"""How far a second training moves each case (docs/protocol.md, section 5).

A paired comparison (:mod:`brainseg.paired`) resamples cases, so its interval holds the spread over
cases but not the spread between two trainings of one recipe. This module measures the second:
given several cross-validations of the same recipe on the same folds that differ only in the
training run (seed, precision, machine, or a change that showed no effect), it gives per case the
range (max - min) of its DSC across them, for the hard cases (below ``below`` in some run) and for
the others, and the range of the pooled means. A lever that changes training has to beat that.

``python -m brainseg results spread A B [C ...]`` prints it and writes ``results/spread-<A>+<B>....json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .paired import check_same_folds, load_per_case


def training_spread(specs: list[str], below: float = 0.6, top: int = 10, results_dir: str | Path | None = None,
                    logs_dir: str | Path | None = None) -> dict:
    """Per-case range of the DSC across trainings of one recipe.

    Args:
        specs: two or more results (as for ``results paired``) scoring the same cases.
        below: a case is hard when its DSC is below this in at least one run.
        top: how many of the widest-ranging cases to list.
        results_dir, logs_dir: where to look the runs up; ``None``: the repository's results/ and logs/ folders.

    Returns:
        ``runs``, ``cases``, ``means`` (pooled mean per run), ``mean_range``, ``median_range`` (over
        all cases), ``hard`` / ``others`` (``{"cases", "median_range"`` (``None`` for no case),
        ``"share_of_moves"}``: the group's share of the summed absolute deviations of every case's
        DSC from its own mean across the runs), and ``widest``: ``[case, range, [dsc per run]]`` rows.

    Raises:
        ValueError: fewer than two distinct runs, or runs that score different cases or put a case
        in different folds.
    """
    if len(specs) < 2 or len(set(specs)) < len(specs):
        raise ValueError(f"spread needs two or more distinct trainings of one recipe, got {specs}")
    runs = [load_per_case(spec, results_dir, logs_dir) for spec in specs]
    names = [run["name"] for run in runs]
    if len(set(names)) < len(names):  # e.g. a name and its results file: one training, a spread of 0
        raise ValueError(f"spread needs two or more distinct trainings; {specs} name the runs {names}")
    for run in runs[1:]:
        check_same_folds(runs[0], run)
    cases = sorted(runs[0]["per_case"])
    table = np.array([[run["per_case"][case] for run in runs] for case in cases])  # (cases, runs)
    ranges = table.max(axis=1) - table.min(axis=1)
    hard = table.min(axis=1) < below
    moves = np.abs(table - table.mean(axis=1, keepdims=True)).sum(axis=1)  # (cases,) how much each case moves
    group = lambda mask: {"cases": int(mask.sum()),  # noqa: E731
                          "median_range": float(np.median(ranges[mask])) if mask.any() else None,
                          "share_of_moves": float(moves[mask].sum() / moves.sum()) if moves.sum() else 0.0}
    means = table.mean(axis=0)
    widest = np.argsort(-ranges, kind="stable")[:top]
    return {"runs": [run["name"] for run in runs], "cases": len(cases), "below": below,
            "means": [float(m) for m in means], "mean_range": float(means.max() - means.min()),
            "median_range": float(np.median(ranges)), "hard": group(hard), "others": group(~hard),
            "widest": [[cases[i], round(float(ranges[i]), 4), [round(float(v), 4) for v in table[i]]]
                       for i in widest]}


def spread_report(spread: dict) -> str:
    """The spread as a few lines of Markdown-friendly text."""
    hard, others = spread["hard"], spread["others"]
    lines = [f"{len(spread['runs'])} trainings of one recipe, {spread['cases']} cases: " + ", ".join(spread["runs"]),
             "pooled means: " + ", ".join(f"{m:.4f}" for m in spread["means"]) +
             f" (range {spread['mean_range']:.4f})",
             f"per-case range (max - min DSC across the trainings): median {spread['median_range']:.4f} over all cases",
             f"  {hard['cases']} hard cases (below {spread['below']} in some training): median range "
             f"{_fmt(hard['median_range'])}, {hard['share_of_moves']:.0%} of all case moves",
             f"  {others['cases']} other cases: median range {_fmt(others['median_range'])}, "
             f"{others['share_of_moves']:.0%} of all case moves",
             "widest: " + ", ".join(f"{case} {r:.2f} ({' / '.join(f'{v:.2f}' for v in values)})"
                                    for case, r, values in spread["widest"])]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
