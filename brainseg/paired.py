"""Case-by-case comparison of two recipes on the same cases (docs/protocol.md, section 5).

Two cross-validations on the same saved folds predict every case once each, so the question
"is B better than A?" is answered by the per-case differences ``B - A``: their mean, a paired
bootstrap 95% interval (cases resampled with replacement, both recipes kept together), wins,
ties and losses, and the cases that moved most. B counts as an improvement only when the whole
interval lies above 0.

``python -m brainseg results paired A B`` runs it on two results (a ``results/*.json`` file, a run
name in ``results/``, or a cross-validation still in progress, read from its finished folds in
``logs/<name>-fold<k>/metrics.json`` or ``results/<name>-fold<k>.json``); ``--folds`` keeps the
cases of some folds only (screening). ``--also-a`` / ``--also-b`` add further trainings (seeds) of
either recipe: each case then counts with its mean over them, which is how a lever is judged
against run-to-run noise (two trainings against two).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from . import paths
from .config import TrainConfig
from .cv import bootstrap_interval, check_same_recipe
from .data.splits import read_folds
from .results import read_json

TIE = 0.01  # per-case differences this small count as ties


def load_per_case(spec: str, results_dir: str | Path | None = None, logs_dir: str | Path | None = None,
                  fold_models: bool = False) -> dict:
    """Per-case DSC and fold of each case of one result.

    Args:
        spec: a JSON file with ``per_case``; or a name: ``<results_dir>/<name>.json``, else the
            finished folds of a cross-validation, ``<logs_dir>/<name>-fold<k>/metrics.json`` or
            their exports ``<results_dir>/<name>-fold<k>.json``.
        results_dir: ``None``: the repository's results/ folder.
        logs_dir: ``None``: the repository's logs/ folder.

    Returns:
        ``{"name", "per_case": {case: dsc}, "fold_of_case": {case: k} (may be empty), "source",
        "devices": the machines that produced it, as recorded (may be empty)}``.

        fold_models: the caller predicts again from ``weights/<spec>-fold<k>/best.pt``, which an
            ensemble result (``results ensemble``) does not have.

    Raises:
        FileNotFoundError: nothing of that name, with the places looked at.
        ValueError: with ``fold_models``, an ensemble result.
    """
    results_dir = paths.or_default(results_dir, paths.results_dir())
    logs_dir = paths.or_default(logs_dir, paths.logs_dir())
    path = Path(spec)
    if not path.is_file():
        path = results_dir / f"{spec}.json"
    if path.is_file():
        result = read_json(path)
        if "per_case" not in result:
            raise ValueError(f"{path}: no per_case table; pass a run or cross-validation result")
        if fold_models and "members" in result:
            raise ValueError(f"{path}: an ensemble of {', '.join(result['members'])}, which has no fold models of its "
                             "own; pass one of those cross-validations")
        return {"name": result.get("run", path.stem), "per_case": result["per_case"],
                "fold_of_case": result.get("fold_of_case", {}), "source": str(path),
                "devices": _devices([f for f in result.get("folds", []) if isinstance(f, dict) and f.get("device")]
                                    or [result])}
    fold_files = finished_fold_files(spec, logs_dir, results_dir)
    if not fold_files:
        raise FileNotFoundError(f"{spec}: not a file, no {results_dir}/{spec}.json and no finished folds "
                                f"{logs_dir}/{spec}-fold<k>/metrics.json or {results_dir}/{spec}-fold<k>.json")
    per_case, fold_of, folds = {}, {}, [read_json(file) for file in fold_files]
    first = TrainConfig.from_dict(folds[0]["config"])
    for file, fold in zip(fold_files, folds):
        check_same_recipe(fold["config"], first, f"{file} (against {fold_files[0]})")
        twice = sorted(set(per_case) & set(fold["per_case"]))
        if twice:
            raise ValueError(f"{file} scores {twice[:3]}, which an earlier fold of {spec} scores too: its folds were "
                             "made on different folds files; train them all on one (--folds-file)")
        per_case.update(fold["per_case"])
        fold_of.update({case: fold["config"]["fold"] for case in fold["per_case"]})
    return {"name": spec, "per_case": per_case, "fold_of_case": fold_of,
            "source": ", ".join(str(f) for f in fold_files), "devices": _devices(folds)}


def finished_fold_files(spec: str, logs_dir: Path, results_dir: Path) -> list[Path]:
    """The result file of each finished fold of cross-validation ``spec``, by fold number:
    ``<logs_dir>/<spec>-fold<k>/metrics.json``, else its export ``<results_dir>/<spec>-fold<k>.json``
    (the order in which ``cv`` reads a fold back; ``<spec>-folds.json`` is not a fold)."""
    fold_name = re.compile(re.escape(spec) + r"-fold(\d+)")
    found = {}
    for path, name in [(p, p.stem) for p in results_dir.glob(f"{spec}-fold*.json")] + [
            (p, p.parent.name) for p in logs_dir.glob(f"{spec}-fold*/metrics.json")]:  # logs/ last: it wins
        match = fold_name.fullmatch(name)
        if match:
            found[int(match.group(1))] = path
    return [found[k] for k in sorted(found)]


def _devices(results: list[dict]) -> list[str]:
    """The distinct machines in the ``device`` entries of ``results``, sorted: ``NVIDIA H200`` or
    ``cpu (x86_64)`` or ``cpu (x86_64, AVX-512 BF16)`` (the number of threads a CPU run used is left
    out: the same machine)."""
    return sorted({re.sub(r", \d+ threads?(?=[,)])", "", r["device"]) for r in results if r.get("device")})


def cases_of_folds(folds: list[int], fold_of: dict[str, int]) -> set[str]:
    """The cases of ``folds`` in ``fold_of`` (``{case: fold}``, :func:`check_one_partition`).

    Raises:
        ValueError: no folds to read, or a fold number that none of them has.
    """
    if not fold_of:
        raise ValueError("--folds needs the folds: pass --folds-file (e.g. results/<cv>-folds.json)")
    unknown = sorted(set(folds) - set(fold_of.values()))
    if unknown:
        raise ValueError(f"no case is in fold {unknown[0]}: the folds are {sorted(set(fold_of.values()))}")
    return {case for case, k in fold_of.items() if k in folds}


def check_one_partition(results: list[dict], folds_file: str | Path | None = None) -> dict[str, int]:
    """``{case: fold}`` of ``folds_file`` and of every result's ``fold_of_case``, after checking that
    they agree: two cross-validations on different folds differ by their training cases too, which
    a paired comparison would count as the recipe's effect.

    Raises:
        ValueError: a case in two different folds, naming both sources.
    """
    fold_of, source = {}, {}
    groups = read_folds(folds_file)["folds"] if folds_file else []
    tables = [(str(folds_file), {case: k for k, group in enumerate(groups) for case in group})]
    for name, table in tables + [(result["name"], result["fold_of_case"]) for result in results]:
        for case, k in table.items():
            if fold_of.setdefault(case, k) != k:
                raise ValueError(f"{name} puts {case} in fold {k}, {source[case]} in fold {fold_of[case]}: they were "
                                 "made on different folds; compare cross-validations of one folds file (--folds-file)")
            source.setdefault(case, name)
    return fold_of


def cases_only_in(a: Iterable[str], b: Iterable[str]) -> tuple[list[str], list[str]]:
    """The cases of ``a`` missing from ``b`` and those of ``b`` missing from ``a``, each sorted."""
    a, b = set(a), set(b)
    return sorted(a - b), sorted(b - a)


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = 10_000, seed: int = 0,
                      tie: float = TIE, top: int = 5) -> dict:
    """Compare per-case values ``b`` against ``a`` on the same cases.

    Args:
        a, b: ``{case: dsc}`` with exactly the same cases.
        tie: ``|b - a|`` at or below this counts as a tie.
        top: how many of the most improved and most worsened cases to list.

    Returns:
        ``mean_difference`` (b - a), ``ci95`` (paired bootstrap), ``improvement`` (the interval
        lies above 0), ``wins`` / ``ties`` / ``losses`` of b, means and medians of both,
        ``most_improved`` / ``most_worsened`` as ``[case, a, b]`` rows.

    Raises:
        ValueError: the case sets differ (naming a few cases on one side only).
    """
    only_a, only_b = cases_only_in(a, b)
    if only_a or only_b:
        raise ValueError(f"the two results hold different cases ({len(a)} and {len(b)}): only in the first "
                         f"{only_a[:3]}{'...' if len(only_a) > 3 else ''}, only in the second {only_b[:3]}"
                         f"{'...' if len(only_b) > 3 else ''}; compare the same folds (--folds)")
    if not a:
        raise ValueError("no cases to compare")
    cases = sorted(a)
    va, vb = np.array([a[c] for c in cases]), np.array([b[c] for c in cases])
    diff = vb - va
    low, high = bootstrap_interval(diff, np.mean, resamples=resamples, seed=seed)
    moved = np.round(diff, 9)  # a move of exactly the tie (0.93 - 0.92 = 0.010000000000000009) is a tie
    order = np.argsort(diff)
    row = lambda i: [cases[i], round(float(va[i]), 4), round(float(vb[i]), 4)]  # noqa: E731
    return {
        "cases": len(cases), "mean_difference": float(diff.mean()), "ci95": [low, high],
        "improvement": bool(low > 0), "worse": bool(high < 0),
        "wins": int((moved > tie).sum()), "ties": int((np.abs(moved) <= tie).sum()),
        "losses": int((moved < -tie).sum()),
        "tie": tie, "mean_a": float(va.mean()), "mean_b": float(vb.mean()),
        "median_a": float(np.median(va)), "median_b": float(np.median(vb)),
        "most_improved": [row(i) for i in order[::-1][:top] if moved[i] > tie],
        "most_worsened": [row(i) for i in order[:top] if moved[i] < -tie],
    }


MIN_GROUP_FOR_INTERVAL = 8  # a bootstrap over fewer cases is little more than their range


def differences_by_group(a: dict[str, float], b: dict[str, float], group_of_case: dict[str, str],
                         resamples: int = 10_000) -> dict[str, dict]:
    """:func:`paired_difference` of ``b`` against ``a`` within each group of cases (e.g. the data-only
    causes of :func:`brainseg.failures.data_causes`), groups in name order, each without its case lists,
    without verdicts, and with ``ci95`` ``None`` under :data:`MIN_GROUP_FOR_INTERVAL` cases.

    Groups chosen after seeing a result are hints for the next experiment, not claims: with a handful
    of cases the interval is wide, and among several groups one looks good by chance.

    Raises:
        ValueError: a compared case has no group (naming a few).
    """
    missing = sorted(set(a) - set(group_of_case))
    if missing:
        raise ValueError(f"{len(missing)} compared cases have no group, e.g. {missing[:3]}")
    groups: dict[str, list[str]] = {}
    for case in sorted(a):
        groups.setdefault(group_of_case[case], []).append(case)
    by_group = {}
    for name, cases in sorted(groups.items()):
        result = paired_difference({c: a[c] for c in cases}, {c: b[c] for c in cases}, resamples, top=0)
        del result["improvement"], result["worse"]  # no verdicts on subgroups
        if len(cases) < MIN_GROUP_FOR_INTERVAL:
            result["ci95"] = None
        by_group[name] = result
    return by_group


def groups_report(by_group: dict[str, dict], title: str) -> str:
    """:func:`differences_by_group` as a Markdown table under ``title``, with the caution it needs."""
    lines = [title, "", "| group | cases | A mean | B mean | B - A (paired 95% CI) | wins / ties / losses |",
             "|---|---|---|---|---|---|"]
    for name, r in by_group.items():
        interval = (f"{r['ci95'][0]:+.4f} to {r['ci95'][1]:+.4f}" if r["ci95"] else
                    f"no interval under {MIN_GROUP_FOR_INTERVAL} cases")
        lines.append(f"| {name} | {r['cases']} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | "
                     f"{r['mean_difference']:+.4f} ({interval}) | {r['wins']} / {r['ties']} / {r['losses']} |")
    lines += ["", "Subgroups are hints for the next experiment, not claims: few cases each, and several looked at."]
    return "\n".join(lines)


def compare_results(spec_a: str, spec_b: str, folds: list[int] | None = None, folds_file: str | None = None,
                    results_dir: str | Path | None = None, logs_dir: str | Path | None = None,
                    also_a: Iterable[str] = (), also_b: Iterable[str] = ()) -> dict:
    """Load two results, keep the cases of ``folds`` (all when ``None``) and compare them case by case.

    ``also_a`` / ``also_b``: further trainings of recipe A / B (other seeds, same folds). Each case's
    DSC is then the mean over that recipe's trainings, so part of the run-to-run noise cancels
    before the cases are compared; ``a`` / ``b`` then read ``A1 + A2`` and ``runs_a`` / ``runs_b`` list them.
    ``per_case_a`` / ``per_case_b`` are the ``{case: DSC}`` tables compared (averaged over the trainings).
    ``results_dir`` / ``logs_dir``: ``None``: the repository's results/ / logs/ folder (:func:`load_per_case`).
    """
    sides = [[load_per_case(s, results_dir, logs_dir) for s in (spec, *also)]
             for spec, also in ((spec_a, also_a), (spec_b, also_b))]
    fold_of = check_one_partition(sides[0] + sides[1], folds_file)
    keep = None if folds is None else cases_of_folds(folds, fold_of)
    per_a, per_b = (mean_over_trainings(runs, keep) for runs in sides)
    result = paired_difference(per_a, per_b)
    names = [[run["name"] for run in runs] for runs in sides]
    source = lambda runs: "; ".join(run["source"] for run in runs)  # noqa: E731
    devices = lambda runs: sorted({d for run in runs for d in run["devices"]})  # noqa: E731
    return {"a": " + ".join(names[0]), "b": " + ".join(names[1]), "source_a": source(sides[0]),
            "source_b": source(sides[1]), "devices_a": devices(sides[0]), "devices_b": devices(sides[1]),
            "runs_a": names[0], "runs_b": names[1], "folds": "all" if folds is None else folds, **result,
            "per_case_a": per_a, "per_case_b": per_b}


def mean_over_trainings(runs: list[dict], keep: set[str] | None = None) -> dict[str, float]:
    """Per-case DSC averaged over several trainings of one recipe (:func:`load_per_case` results),
    restricted to the cases in ``keep`` (all when ``None``).

    Raises:
        ValueError: a training given twice, or two that score different cases (after ``keep``) or put
        a case in different folds.
    """
    names = [run["name"] for run in runs]
    if len(set(names)) < len(names):
        raise ValueError(f"a training is given twice for one recipe: {', '.join(names)}")
    tables = [{c: v for c, v in run["per_case"].items() if keep is None or c in keep} for run in runs]
    for run, table in zip(runs[1:], tables[1:]):
        check_same_folds({**runs[0], "per_case": tables[0]}, {**run, "per_case": table},
                         fix="compare the folds they share (--folds)")
    return {case: float(np.mean([table[case] for table in tables])) for case in tables[0]}


def check_same_folds(a: dict, b: dict, fix: str = "train them on the same folds") -> None:
    """Refuse two results (:func:`load_per_case`) that score different cases (the message ends with
    ``fix``) or, where both record folds, put a case in different folds; it names a few such cases."""
    only_a, only_b = cases_only_in(a["per_case"], b["per_case"])
    if only_a or only_b:
        raise ValueError(f"{a['name']} and {b['name']} score different cases: only in the first {only_a[:3]}, "
                         f"only in the second {only_b[:3]}; {fix}")
    folds_a, folds_b = a["fold_of_case"], b["fold_of_case"]
    moved = sorted(c for c in folds_a if c in folds_b and folds_a[c] != folds_b[c]) if folds_a and folds_b else []
    if moved:
        raise ValueError(f"{a['name']} and {b['name']} put cases in different folds (e.g. {moved[:3]}); "
                         "train them on the same folds (--folds-file)")


PAIRED_KEYS = ("a", "b", "cases", "folds", "ci95", "mean_difference", "mean_a", "mean_b", "median_a", "median_b",
               "wins", "ties", "losses", "improvement", "worse")


def load_comparisons(results_dir: str | Path | None = None) -> list[dict]:
    """The comparisons written by ``results paired``: ``<results_dir>/paired-*.json``, sorted by name;
    ``results_dir`` ``None``: the repository's results/ folder.

    Raises:
        ValueError: a ``paired-*.json`` file lacks a key of :data:`PAIRED_KEYS` (the file is named).
    """
    comparisons = []
    for path in sorted(paths.or_default(results_dir, paths.results_dir()).glob("paired-*.json")):
        result = read_json(path)
        missing = [k for k in PAIRED_KEYS if k not in result]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}; rewrite it with 'python -m brainseg results paired'")
        comparisons.append({**result, "file": path.name})
    return comparisons


def verdict(result: dict) -> str:
    """What the paired interval says about B against A, in words."""
    return ("B better (interval above 0)" if result["improvement"] else
            "B worse (interval below 0)" if result["worse"] else "no difference shown (interval contains 0)")


def paired_report(result: dict) -> str:
    """The comparison as a short Markdown table plus the verdict and the cases that moved most."""
    low, high = result["ci95"]
    lines = [f"A = {result['a']}", f"B = {result['b']}",
             f"folds: {result['folds']}, {result['cases']} cases", "",
             "| | A | B |", "|---|---|---|",
             f"| mean DSC | {result['mean_a']:.4f} | {result['mean_b']:.4f} |",
             f"| median DSC | {result['median_a']:.4f} | {result['median_b']:.4f} |", "",
             f"B - A per case: mean {result['mean_difference']:+.4f}, paired bootstrap 95% CI "
             f"{low:+.4f} to {high:+.4f}: {verdict(result)}",
             f"wins / ties / losses of B (tie: |difference| <= {result['tie']}): "
             f"{result['wins']} / {result['ties']} / {result['losses']}"]
    for title, rows in (("most improved", result["most_improved"]), ("most worsened", result["most_worsened"])):
        lines.append(f"{title}: " + (", ".join(f"{c} {x:.3f} -> {y:.3f}" for c, x, y in rows) or "none"))
    caution = machines_caution(result)
    return "\n".join(lines + ([caution] if caution else []))


def machines_caution(result: dict) -> str:
    """A warning when A and B did not run on the same machines (as recorded), else ""; the same
    recipe trained on two machines differs case by case (other arithmetic, other random streams),
    so such a difference is not the recipes' alone."""
    devices_a, devices_b = result.get("devices_a") or [], result.get("devices_b") or []
    if not devices_a or not devices_b or devices_a == devices_b:
        return ""
    return (f"caution: A ran on {', '.join(devices_a)} and B on {', '.join(devices_b)}; the difference includes "
            "what changes between machines, not only between the recipes")
