"""The case report ``docs/report.md``: every attempt kept in ``results/``, with its DSC, how its model
was chosen, wall time, device and command; per-case DSC charts, example segmentations, training
curves and a hand-written analysis.

``python -m brainseg report`` rewrites the whole file and its figures in ``docs/report/``, except
the text between :data:`ANALYSIS_START` and :data:`ANALYSIS_END`, which is kept as written.

Which files of ``results/`` count:

- a *run export* is a ``*.json`` that :func:`brainseg.results.load_results` accepts (it holds every
  key of :data:`brainseg.results.REQUIRED_KEYS`); ``bench-*.json``, ``*-folds.json``,
  ``paired-*.json`` and CSV files are not;
- a run export with split ``reference`` is an attempt on the reference split; one with split
  ``cv<k>`` is a pooled cross-validation; one with split ``kfold<k>-fold<j>`` is a single fold
  exported by ``cv`` (``<cv>-fold<j>.json``): part of its cross-validation, so it is listed under
  it, not tabulated as an attempt of its own;
- ``paired-*.json`` are the case-by-case comparisons written by ``results paired``
  (:func:`brainseg.paired.load_comparisons`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .. import paths
from ..atomic import atomic_write_text
from ..ensemble import cv_name

ANALYSIS_START, ANALYSIS_END = "<!-- analysis:start -->", "<!-- analysis:end -->"
NO_ANALYSIS = "_No analysis written yet: write it here, between the markers; regeneration keeps it._"
REFERENCE_GROUPS = {  # key: (title, what the group's runs have in common)
    "models": ("Models and losses",
               "Each run's checkpoint was chosen on the 10 validation cases themselves (the reference's way, "
               "optimistic); the model and loss comparison of [models.md](models.md#comparison-under-the-cpu-budget)."),
    "levers": ("Recipe levers and presets",
               "The final model, or everything chosen on inner cases carved from the training cases; the ablations "
               "of [results.md](results.md#the-cpu-recipe-ablations), the presets and later levers."),
    "reproductions": ("Course-study reproductions",
                      "Short runs on a subset of the training cases that reproduce the course study's failures "
                      "([models.md](models.md#reproducing-the-course-studys-two-failures))."),
}
SELECTIONS = {
    "reference": "best epoch by mean DSC on the validation cases themselves (optimistic)",
    "last": "the final model, nothing chosen on the cases scored",
    "inner": "checkpoint, flip TTA and the largest-component rule chosen on 10 inner cases carved from the "
             "training cases; the validation cases evaluated once",
}


def classify_run(run: dict) -> str:
    """``reference``, ``cv`` (pooled cross-validation) or ``fold`` (one exported fold) from the
    run's split; ``other`` for any other split."""
    split = str(run["split"])
    if split == "reference":
        return "reference"
    if re.fullmatch(r"cv\d+", split):
        return "cv"
    return "fold" if re.fullmatch(r"kfold\d+-fold\d+", split) else "other"


def reference_group(run: dict) -> str:
    """Key of :data:`REFERENCE_GROUPS`: ``reproductions`` for runs on a subset of the training
    cases, ``models`` for runs whose checkpoint was chosen on the validation cases (the model and
    loss comparison), ``levers`` for the rest (final model or inner choice)."""
    config = run.get("config", {})
    if config.get("max_train_cases", 0):
        return "reproductions"
    return "models" if selection_key(run) == "reference" else "levers"


def selection_key(run: dict) -> str:
    """``reference``, ``last`` or ``inner``: the word before the colon of the recorded selection
    (older runs recorded only the reference's rule, "best epoch by mean DSC ...")."""
    text = run["selection"]
    return text.split(":")[0] if ":" in text else "reference"


def collect(results_dir: str | Path) -> dict:
    """The run exports and comparisons of ``results_dir``, sorted into the report's sections.

    Returns:
        ``{"reference": {group key: [runs, best mean first]}, "cv": [runs], "fold": [runs],
        "other": [runs], "paired": [comparisons], "skipped": [names of the other *.json files]}``.
    """
    from ..paired import load_comparisons
    from ..results import load_results

    runs = load_results(results_dir)
    sections = {"reference": {key: [] for key in REFERENCE_GROUPS}, "cv": [], "fold": [], "other": []}
    for run in runs:
        kind = classify_run(run)
        target = sections["reference"][reference_group(run)] if kind == "reference" else sections[kind]
        target.append(run)
    for group in (*sections["reference"].values(), sections["cv"]):
        group.sort(key=lambda run: (-run["val_mean_dsc"], run["run"]))
    sections["paired"] = load_comparisons(results_dir)
    known = {f"{run['run']}.json" for run in runs} | {c["file"] for c in sections["paired"]}
    sections["skipped"] = sorted(p.name for p in Path(results_dir).glob("*.json") if p.name not in known)
    return sections


def _cell(value) -> str:
    """``value`` as text for a Markdown table cell (a ``|`` escaped)."""
    return str(value).replace("|", "\\|")


def _minutes(seconds: float) -> str:
    """Wall time in minutes, one decimal."""
    return f"{seconds / 60:.1f} min"


def reference_table(runs: list[dict]) -> str:
    """Markdown table of reference-split runs: settings, mean / median DSC on the 10 validation
    cases, selection, wall time, device, command."""
    lines = ["| run | model | loss | preset | size | epochs | selection | mean / median DSC | wall time | device "
             "| command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {r['model']} | {r['loss']} | {r['preset']} | {r['image_size']} | {r['epochs']} "
                     f"| {selection_key(r)} | {r['val_mean_dsc']:.4f} / {r['val_median_dsc']:.4f} "
                     f"| {_minutes(r['wall_time_s'])} | {_cell(r['device'])} | `{_cell(r['command'])}` |")
    return "\n".join(lines)


def _with_interval(run: dict, key: str) -> str:
    """``run[key]`` with its recorded bootstrap interval ``run[key + "_ci95"]`` when there is one."""
    interval = run.get(f"{key}_ci95")
    text = f"{run[key]:.4f}"
    return f"{text} ({interval[0]:.4f}-{interval[1]:.4f})" if interval else text


def cv_table(runs: list[dict]) -> str:
    """Markdown table of pooled cross-validations: cases, mean and median DSC with their bootstrap
    95% intervals when recorded, each fold's mean, selection, wall time, device, command."""
    lines = ["| run | cases | mean DSC (95% CI) | median DSC (95% CI) | mean per fold | selection | wall time "
             "| device | command |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        folds = ", ".join(f"{f['val_mean_dsc']:.3f}" for f in r.get("folds", [])) or "-"
        lines.append(f"| {r['run']} | {len(r['per_case'])} | {_with_interval(r, 'val_mean_dsc')} "
                     f"| {_with_interval(r, 'val_median_dsc')} | {folds} | {selection_key(r)} "
                     f"| {_minutes(r['wall_time_s'])} | {_cell(r['device'])} | `{_cell(r['command'])}` |")
    return "\n".join(lines)


def fold_lines(folds: list[dict], cvs: list[dict]) -> list[str]:
    """One line per cross-validation that has fold exports: which folds, and for a CV never pooled,
    the mean / median over its exported folds' cases, device and summed wall time."""
    by_cv: dict[str, list[dict]] = {}
    for run in folds:
        by_cv.setdefault(cv_name(run["run"]), []).append(run)
    pooled, lines = {run["run"] for run in cvs}, []
    for name, runs in sorted(by_cv.items()):
        numbers = ", ".join(sorted(run["split"].rsplit("fold", 1)[1] for run in runs))
        if name in pooled:
            lines.append(f"- `{name}`: folds {numbers}, pooled in the table above.")
            continue
        values = [v for run in runs for v in run["per_case"].values()]
        devices = ", ".join(sorted({run["device"] for run in runs}))
        lines.append(f"- `{name}`: fold {numbers} only, no pooled result; its {len(values)} cases score "
                     f"{np.mean(values):.4f} / {np.median(values):.4f} (mean / median), {devices}, "
                     f"{_minutes(sum(run['wall_time_s'] for run in runs))}: `{_cell(runs[0]['command'])}`")
    return lines


def paired_table(comparisons: list[dict]) -> str:
    """Markdown table of the ``results paired`` comparisons: B against A on the same cases."""
    from ..paired import verdict

    lines = ["| A (baseline) | B (candidate) | cases (folds) | mean A / B | median A / B | B - A mean (paired 95% CI) "
             "| wins / ties / losses of B | verdict | command |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        folds = "all" if c["folds"] == "all" else ", ".join(str(k) for k in c["folds"])
        low, high = c["ci95"]
        lines.append(f"| {c['a']} | {c['b']} | {c['cases']} ({folds}) | {c['mean_a']:.4f} / {c['mean_b']:.4f} "
                     f"| {c['median_a']:.4f} / {c['median_b']:.4f} | {c['mean_difference']:+.4f} "
                     f"({low:+.4f} to {high:+.4f}) | {c['wins']} / {c['ties']} / {c['losses']} | {verdict(c)} "
                     f"| `{_cell(c.get('command', '-'))}` |")
    return "\n".join(lines)


def read_analysis(doc: str | Path) -> str | None:
    """The hand-written text between the analysis markers of an existing report, else ``None``.

    Raises:
        ValueError: the file exists but lacks the markers (regenerating would lose its text).
    """
    doc = Path(doc)
    if not doc.is_file():
        return None
    text = doc.read_text()
    if text.count(ANALYSIS_START) != 1 or text.count(ANALYSIS_END) != 1:
        raise ValueError(f"{doc}: no {ANALYSIS_START} ... {ANALYSIS_END} section; add the markers around the "
                         "hand-written analysis (or move the file away) before regenerating")
    return text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0].strip()


def curve_groups(sections: dict) -> list[tuple[str, str, list[tuple[str, dict | None]]]]:
    """``(key, title, [(run name, its export or None)])`` per figure of curves: one per group of
    reference-split runs, one for the folds of the cross-validations (exported or only named)."""
    groups = [(key, REFERENCE_GROUPS[key][0], [(run["run"], run) for run in runs])
              for key, runs in sections["reference"].items() if runs]
    exports = {run["run"]: run for run in sections["fold"]}
    names = set(exports) | {fold["run"] for cv in sections["cv"] for fold in cv.get("folds", [])}
    if names:
        groups.append(("cv-folds", "Cross-validation folds", [(name, exports.get(name)) for name in sorted(names)]))
    return groups


def draw_curves(sections: dict, logs_dir: str | Path, figures_dir: str | Path) -> list[dict]:
    """``curves-<key>.png`` per :func:`curve_groups` entry from the runs' histories
    (:func:`brainseg.tools.report_figures.run_history`); runs without one are named, not drawn.

    Returns:
        ``{"title", "figure" (None when no run of the group has a history), "runs", "missing",
        "from_logs"}`` per group.
    """
    from .report_figures import curves_figure, run_history

    drawn = []
    for key, title, members in curve_groups(sections):
        found, missing, from_logs = [], [], 0
        for name, export in members:
            history, source = run_history(name, export, logs_dir)
            if history:
                found.append((name, history))
                from_logs += source.endswith("history.csv")
            else:
                missing.append(name)
        figure = (curves_figure(found, Path(figures_dir) / f"curves-{key}.png", by_cross_validation=key == "cv-folds")
                  if found else None)
        drawn.append({"title": title, "figure": figure, "runs": len(found), "missing": missing,
                      "from_logs": from_logs})
    return drawn


def reference_runs(sections: dict) -> tuple[list[dict], list[str]]:
    """Every reference-split run in table order, and each one's group title."""
    runs = [(run, REFERENCE_GROUPS[key][0]) for key, group in sections["reference"].items() for run in group]
    return [run for run, _ in runs], [title for _, title in runs]


def build_figures(sections: dict, figures_dir: Path, logs_dir: Path, weights_dir: Path, data_dir: str | None,
                  cache_dir: str | None, device: str, cases: int, variants: list[str] | None) -> dict:
    """Draw the report's figures into ``figures_dir``.

    Returns:
        ``{"distributions": {"reference"|"cv": path or None}, "side_by_side": {"reference"|"cv":
        :func:`brainseg.tools.report_figures.build_side_by_side` result}, "curves": :func:`draw_curves`,
        "messages": [what was drawn, kept or skipped]}``.
    """
    from .report_figures import build_side_by_side, dsc_distributions

    ref_runs, ref_groups = reference_runs(sections)
    runs = {"reference": ref_runs, "cv": sections["cv"]}
    titles = {"reference": "Reference split: per-case DSC on the 10 validation cases",
              "cv": "Cross-validations: per-case DSC, each case predicted by a model that never saw it"}
    groups = {"reference": ref_groups, "cv": ["cross-validation"] * len(sections["cv"])}
    out = {"distributions": {}, "side_by_side": {}, "messages": []}
    for kind in ("reference", "cv"):
        path = None
        if runs[kind]:
            path = dsc_distributions(runs[kind], groups[kind], figures_dir / f"dsc-{kind}.png", titles[kind])
            out["messages"].append(f"wrote {path}")
        out["distributions"][kind] = path
        chosen = [run for run in runs[kind] if not variants or run["run"] in variants]
        result = build_side_by_side(chosen, kind, figures_dir, weights_dir, data_dir, cache_dir, device, cases)
        out["side_by_side"][kind] = result
        out["messages"].append(result["message"])
    out["curves"] = draw_curves(sections, logs_dir, figures_dir)
    out["messages"] += [f"wrote {c['figure']}" if c["figure"] else f"no curves for {c['title']}: no history"
                        for c in out["curves"]]
    return out


def _link(path: Path, doc_dir: Path) -> str:
    """``path`` relative to the report's folder, as a Markdown link target."""
    return Path(os.path.relpath(path, doc_dir)).as_posix()


def _header() -> list[str]:
    """Title, what the report is and how it is made, contents."""
    return ["# Case report: every attempt", "",
            "Every improvement attempt kept in `results/`, with its per-volume DSC "
            "([protocol, section 4](protocol.md#4-the-metric-per-volume-dsc)), how its model was chosen, wall "
            "time, device and the command that repeats it; per-case DSC charts, example segmentations, "
            "training curves and an analysis. Generated by `python -m brainseg report` "
            "(`brainseg/tools/report.py`): the command rewrites everything here except the analysis between "
            "its markers, which is written by hand. Narrative and the runs' context: [results.md](results.md), "
            "[models.md](models.md), [failures.md](failures.md).", "",
            "- [Analysis](#analysis)", "- [Reference-split runs](#reference-split-runs)",
            "- [Cross-validations](#cross-validations)", "- [Paired comparisons](#paired-comparisons)",
            "- [Example segmentations](#example-segmentations)", "- [Training curves](#training-curves)",
            "- [What is read from `results/`](#what-is-read-from-results)", ""]


def _reference_section(sections: dict, figures: dict, doc_dir: Path) -> list[str]:
    """The reference-split runs: selection legend, one table per group, the DSC chart."""
    lines = ["## Reference-split runs", "",
             "Scored on the 10 reference validation cases ([protocol, section 3](protocol.md#3-reference-split)); "
             "a difference of 0.01 there is within noise, and the ten cases are an easy draw (see the "
             "cross-validations). Best mean first in each group. Selection:", ""]
    lines += [f"- `{key}`: {text}" for key, text in SELECTIONS.items()] + [""]
    for key, (title, what) in REFERENCE_GROUPS.items():
        if sections["reference"][key]:
            lines += [f"### {title}", "", what, "", reference_table(sections["reference"][key]), ""]
    if figures["distributions"]["reference"]:
        figure = _link(figures["distributions"]["reference"], doc_dir)
        lines += [f"![per-case DSC of the reference-split runs]({figure})", ""]
    return lines


def _cv_section(sections: dict, figures: dict, doc_dir: Path) -> list[str]:
    """The pooled cross-validations: table, DSC chart, fold exports."""
    lines = ["## Cross-validations", "",
             "Patient-level cross-validation ([protocol, section 5](protocol.md#5-honest-numbers)): every case "
             "predicted once by the final model of the fold that did not train on it, pooled over all cases; "
             "95% percentile-bootstrap intervals over cases where the export records them.", ""]
    lines += [cv_table(sections["cv"]) if sections["cv"] else "No pooled cross-validation yet.", ""]
    if figures["distributions"]["cv"]:
        lines += [f"![per-case DSC of the cross-validations]({_link(figures['distributions']['cv'], doc_dir)})", ""]
    if sections["fold"]:
        lines += ["Fold exports (`<cv>-fold<k>.json`, split `kfold<k>-fold<j>`), listed here rather than as "
                  "attempts of their own:", "", *fold_lines(sections["fold"], sections["cv"]), ""]
    return lines


def _paired_section(sections: dict) -> list[str]:
    """The paired comparisons: table, then the cases that moved most in each (and a caution where A
    and B ran on different machines)."""
    from ..paired import machines_caution

    lines = ["## Paired comparisons", "",
             "Two results on the same cases, case by case (`python -m brainseg results paired A B`): B counts as "
             "an improvement only when the whole paired-bootstrap interval of B - A lies above 0; a tie is a "
             "per-case difference of 0.01 or less.", ""]
    if not sections["paired"]:
        return lines + ["No paired comparison yet.", ""]
    lines += [paired_table(sections["paired"]), ""]
    for c in sections["paired"]:
        moved = {title: ", ".join(f"{case} {a:.3f} -> {b:.3f}" for case, a, b in c.get(key, [])) or "none"
                 for key, title in (("most_improved", "most improved"), ("most_worsened", "most worsened"))}
        caution = machines_caution(c)
        lines.append(f"- {c['b']} against {c['a']}: " + "; ".join(f"{k}: {v}" for k, v in moved.items()) + "."
                     + (f" {caution[0].upper()}{caution[1:]}." if caution else ""))
    return lines + [""]


def _side_by_side_caption(kind: str, record: dict | None) -> str:
    """Caption of a side-by-side figure from the record written beside it (generic without one)."""
    held_out = ("each case is one of the 10 reference validation cases" if kind == "reference" else
                "each case is predicted by the fold model that did not train on it")
    text = ("First column: FLAIR with the truth outlined in green; then each variant's prediction outlined in "
            "red (protocol mask: threshold 0.5, largest 3D component; truth still in green) with the DSC and "
            f"the predicted voxels of the whole case; {held_out}.")
    if record is None:
        return text
    cases = ", ".join(f"`{row['case']}` (slice {row['slice']})" for row in record["rows"])
    text = (f"Rows: {cases}: ranked by the recorded DSC averaged over the variants drawn, the hardest cases, "
            "then cases at evenly spaced ranks up to the median, each on its slice with the most lesion. " + text)
    missing = record.get("without_checkpoints", [])
    if missing:
        names = ", ".join(missing) if len(missing) <= 5 else f"the {len(missing)} other runs of the tables"
        text += f" Not drawn, no checkpoint at hand: {names}."
    return text


def _examples_section(figures: dict, doc_dir: Path) -> list[str]:
    """The side-by-side figures with their captions, or a note where none was ever drawn."""
    lines = ["## Example segmentations", "",
             "Drawn from the checkpoints in `weights/` (`weights/<run>/best.pt` or a shipped `weights/<run>.pt`; "
             "for a cross-validation `weights/<run>-fold<k>/best.pt`) and the dataset, up to four variants each; "
             "without them the committed figure is kept as it was.", ""]
    for kind, title in (("reference", "Reference split"), ("cv", "Cross-validation")):
        result = figures["side_by_side"][kind]
        lines += [f"### {title}", ""]
        if result["figure"] is None:
            lines += ["No figure yet: no checkpoint of these runs (or no dataset) was at hand when this report "
                      "was generated.", ""]
            continue
        lines += [f"![{title}: predictions side by side]({_link(result['figure'], doc_dir)})", "",
                  _side_by_side_caption(kind, result["caption"]), ""]
    return lines


def _curves_section(figures: dict, doc_dir: Path) -> list[str]:
    """The curve figures per group, naming the runs without a history."""
    lines = ["## Training curves", "",
             "Per epoch, from `logs/<run>/history.csv` when present, else the copy that `results export` keeps "
             "in `results/<run>.json`. The validation DSC is on the run's per-epoch validation cases: the 10 "
             "reference cases, the inner cases for `inner` runs, the held-out fold for a fold (validated every "
             "5 epochs, hence the dots). In the folds' figure the folds of one cross-validation share a colour and "
             "one legend entry.", ""]
    for curves in figures["curves"]:
        lines += [f"### {curves['title']}", ""]
        if curves["figure"]:
            lines += [f"![{curves['title']}: training curves]({_link(curves['figure'], doc_dir)})", ""]
        if curves["missing"]:
            lines += ["No history (skipped): " + ", ".join(curves["missing"]) + ".", ""]
    return lines


def _sources_section(sections: dict) -> list[str]:
    """The rule that decides what is read, and the files of ``results/`` that were not."""
    lines = ["## What is read from `results/`", "",
             "A run export is a `results/*.json` holding every key of `brainseg.results.REQUIRED_KEYS` (read by "
             "`brainseg.results.load_results`). Split `reference`: a reference-split run; `cv<k>`: a pooled "
             "cross-validation; `kfold<k>-fold<j>`: one fold of a cross-validation, listed under it. Comparisons: "
             "`results/paired-*.json` (`brainseg.paired.load_comparisons`). Reference-split groups: runs on a "
             "subset of the training cases are reproductions; runs with `selection` `reference` are the model "
             "and loss comparison; the rest are recipe levers.", ""]
    if sections["other"]:
        lines += ["Run exports with another split, not tabulated: " +
                  ", ".join(f"`{run['run']}` ({run['split']})" for run in sections["other"]) + ".", ""]
    if sections["skipped"]:
        lines += ["Not run exports, not read: " + ", ".join(f"`{name}`" for name in sections["skipped"]) +
                  " (benchmarks, saved folds, analyses; CSV files are never read).", ""]
    return lines


def render(sections: dict, figures: dict, analysis: str | None, doc_dir: Path) -> str:
    """The whole report as Markdown; figure links relative to ``doc_dir``."""
    lines = [*_header(), "## Analysis", "", ANALYSIS_START, analysis or NO_ANALYSIS, ANALYSIS_END, "",
             *_reference_section(sections, figures, doc_dir), *_cv_section(sections, figures, doc_dir),
             *_paired_section(sections), *_examples_section(figures, doc_dir), *_curves_section(figures, doc_dir),
             *_sources_section(sections)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(doc: str | Path | None = None, figures_dir: str | Path | None = None,
                 results_dir: str | Path | None = None, logs_dir: str | Path | None = None,
                 weights_dir: str | Path | None = None, data_dir: str | None = None, cache_dir: str | None = None,
                 device: str = "auto", cases: int = 4, variants: list[str] | None = None) -> list[str]:
    """Rebuild the report and its figures, keeping the hand-written analysis of an existing report.

    Args:
        doc: the report (default: the repository's ``docs/report.md``).
        figures_dir: its figures (default: ``report/`` beside ``doc``).
        results_dir, logs_dir, weights_dir: default the repository's ``results/``, ``logs/``, ``weights/``.
        data_dir, cache_dir: the dataset and cache, for the side-by-side figures.
        cases: rows of each side-by-side figure; variants: only these runs are drawn there.

    Returns:
        What was written, drawn, kept or skipped, one message each.

    Raises:
        ValueError: ``doc`` exists without its analysis markers, or a ``paired-*.json`` is incomplete.
    """
    doc = paths.or_default(doc, paths.docs_dir() / "report.md")
    figures_dir = paths.or_default(figures_dir, doc.parent / "report")
    analysis = read_analysis(doc)  # before anything is written
    sections = collect(paths.or_default(results_dir, paths.results_dir()))
    figures = build_figures(sections, figures_dir, paths.or_default(logs_dir, paths.logs_dir()),
                            paths.or_default(weights_dir, paths.weights_dir()), data_dir, cache_dir, device, cases,
                            variants)
    atomic_write_text(doc, render(sections, figures, analysis, doc.parent))
    return [*figures["messages"], f"wrote {doc}"]
