"""Command line: ``python -m brainseg <command> ...`` with the commands train, cv, evaluate, predict,
compact, results, bench and report; ``--help`` on each.

Each command's parser names the function that runs it (``set_defaults(func=...)``) and :func:`main`
calls ``args.func(args)``; ``args.command_line`` is the command as typed, recorded with what it writes.
bench, report and the docs tables live in :mod:`brainseg.tools`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import MISSING, fields, replace
from pathlib import Path

from . import paths
from .config import NOT_RECIPE, PRESETS, TrainConfig

PRESET_HELP = "starting preset (default: cpu)"
NOT_CONFIG = ("command", "func", "command_line", "preset", "resume")  # parsed arguments that are no config field
# Config fields a resumed run may change: how fast it computes and when it stops, not what it learns. The rest of
# NOT_RECIPE names the run, its folds and its data (another folder could redraw its split), or where it computes
# (its device and precision are kept: a precision picked on a GPU could be ten times slower on a CPU).
RESUME_OPTIONS = tuple(f for f in NOT_RECIPE if f not in ("preset", "run_name", "logs_dir", "weights_dir", "fold",
                                                         "folds_file", "amp", "device", "data_dir"))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default shown: ``(default: X)`` is added to an option's help unless the help already
    says it (``default`` in the text), the option is required, or it is a flag (off unless given).
    An option whose default is None says in its own help what happens without it (test_cli checks)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _bool_or_auto(text: str) -> bool | str:
    return "auto" if text.lower() == "auto" else _bool(text)


def _key_value(text: str) -> tuple[str, object]:
    """``"alpha=0.3"`` -> ``("alpha", 0.3)``; the value is JSON when it parses (numbers, true, null)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_config_arguments(parser: argparse.ArgumentParser, command_defaults: dict | None = None,
                          command_help: dict | None = None) -> None:
    """``--preset`` and one flag per :class:`TrainConfig` field; ``command_defaults`` are the
    command's own defaults of some fields, which win over the preset's; ``command_help`` the
    whole help text of fields whose flag means something else in this command."""
    command_defaults, command_help = command_defaults or {}, command_help or {}
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help=PRESET_HELP)
    kinds = {"bool": _bool, "bool | str": _bool_or_auto, "int": int, "float": float, "str": str}
    for f in fields(TrainConfig):
        if f.name in ("preset", "model_args", "loss_args"):
            continue
        kind = kinds[f.type] if isinstance(f.type, str) else f.type
        default = f.default if f.default is not MISSING else None
        text = f"{f.metadata['help']} (default: preset value, else {default!r})"
        if f.name in command_defaults:
            text = f"{f.metadata['help']} (default: {command_defaults[f.name]!r})"
        text = command_help.get(f.name, text)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                            default=command_defaults.get(f.name), help=text)
    parser.add_argument("--model-arg", dest="model_args", action="append", type=_key_value, metavar="KEY=VALUE",
                        help="extra model keyword argument, repeatable (e.g. inference=mean); VALUE is read as JSON "
                             "when it parses, else as text (default: none)")
    parser.add_argument("--loss-arg", dest="loss_args", action="append", type=_key_value, metavar="KEY=VALUE",
                        help="loss keyword argument, repeatable (e.g. alpha=0.3 --loss-arg beta=0.7) "
                             "(default: none)")
    parser.add_argument("--data", dest="data_dir", help="alias of --data-dir (same default)")


def _add_train_parser(sub) -> None:
    parser = sub.add_parser("train", help="train a model and report per-volume validation DSC",
                            description="Train a model. Start from --preset, then override any field. "
                                        "Presets: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()),
                            formatter_class=HelpFormatter)
    _add_config_arguments(parser)
    parser.add_argument("--resume", metavar="LOG_DIR", default=None,
                        help="continue logs/<run> from weights/<run>/last.pt with its saved config; only options "
                             f"that do not change the recipe may be given with it ({', '.join(RESUME_OPTIONS)}), "
                             "e.g. --max-minutes 0 to finish a run stopped at its time limit (default: a new run)")
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> None:
    """``train``: a new run from the options, or ``--resume`` of a run folder with its saved config."""
    from .train import fit

    if args.resume:
        fit(_resumed_config(args), command=args.command_line, resume=True)
    else:
        fit(_config_from_args(args), command=args.command_line)


def _resumed_config(args: argparse.Namespace) -> TrainConfig:
    """The saved config of the run folder ``args.resume``, with the :data:`RESUME_OPTIONS` given on
    the command line applied (how fast it computes, its time limit). A run named by
    default before the name was saved takes its folder's name.

    Raises:
        FileNotFoundError: no ``config.json`` in the folder.
        ValueError: an option that would change the recipe midway.
    """
    from .results import read_json

    saved = Path(args.resume) / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved}: no config.json; --resume takes a run folder under logs/")
    given = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG and v is not None}
    refused = sorted(set(given) - set(RESUME_OPTIONS)) + (["preset"] if args.preset else [])
    if refused:
        flags = ", ".join("--" + k.replace("_", "-").removesuffix("s") if k in ("model_args", "loss_args")
                          else "--" + k.replace("_", "-") for k in refused)
        raise ValueError(f"--resume continues the run saved in {saved}; {flags} cannot be given with it (only "
                         f"{', '.join(RESUME_OPTIONS)} may be); start a new run with another --run-name instead")
    config = TrainConfig.from_dict(read_json(saved))
    return replace(config, run_name=config.run_name or Path(args.resume).resolve().name, **given)


def _add_cv_parser(sub) -> None:
    parser = sub.add_parser(
        "cv", help="patient-level k-fold cross-validation over all cases, with bootstrap intervals",
        description="Patient-level k-fold cross-validation (docs/protocol.md, section 5): --folds runs named "
                    "<run-name>-fold<k>, each fold's final model predicts the cases it did not train on, and "
                    "results/<run-name>.json and -per-case.csv pool all cases with bootstrap 95% intervals. "
                    "Finished folds are read back and interrupted ones resumed, so the same command can be "
                    "repeated until every fold is done. Validation runs every 5 epochs unless --val-every. "
                    "--fold K trains only fold K; --split-seed draws the folds, --folds-file reuses saved ones "
                    "(default: logs/<run-name>/folds.json); other flags as in `train`.",
        formatter_class=HelpFormatter)
    _add_config_arguments(parser, command_defaults={"val_every": 5},
                          command_help={"fold": "train (or resume) only this fold, then pool if every fold is "
                                                "done (default: every fold in turn)"})
    parser.add_argument("--results-dir", default=None,
                        help="where the pooled results go (default: the repository's results/)")
    parser.set_defaults(func=_cv)


def _cv(args: argparse.Namespace) -> None:
    """``cv``: train, resume or read back every fold, and pool them once all are done."""
    from .cv import run_cv

    config = _config_from_args(args, drop=("fold", "results_dir"))
    run_cv(config, folds=config.folds, seed=config.split_seed, name=config.run_name, only_fold=args.fold,
           folds_file=config.folds_file or None, results_dir=args.results_dir, command=args.command_line)


def _config_from_args(args: argparse.Namespace, drop: tuple[str, ...] = ()) -> TrainConfig:
    overrides = {k: dict(v) if k in ("model_args", "loss_args") else v for k, v in vars(args).items()
                 if k not in (*NOT_CONFIG, *drop) and v is not None}
    return TrainConfig.from_preset(args.preset or "cpu", **overrides)


def _add_device(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"],
                        help="where to compute; auto: cuda when available")


def _add_evaluate_parser(sub) -> None:
    parser = sub.add_parser("evaluate", help="per-case metrics, DSC chart and outline overlays of a checkpoint",
                            formatter_class=HelpFormatter)
    parser.add_argument("--weights", nargs="+", default=None,
                        help="checkpoint, e.g. weights/<run>/best.pt (default: the shipped "
                             f"weights/{paths.SHIPPED_CHECKPOINT_NAME}); several, a run folder or a "
                             "cross-validation's name (its fold models) make an ensemble that averages "
                             "probabilities. Cases a checkpoint trained on are refused on the reference and "
                             "kfold splits")
    parser.add_argument("--split", default=None, choices=["reference", "kfold", "all"],
                        help="validation cases of this split, or every case of the data folder "
                             "(default: the checkpoint's own split)")
    parser.add_argument("--data", "--data-dir", dest="data_dir", default=None,
                        help="kaggle_3m folder (default: the checkpoint's, else as for training)")
    parser.add_argument("--cache-dir", default=None,
                        help="preprocessed-volume cache (default: $BRAINSEG_CACHE, else ~/.cache/brainseg)")
    parser.add_argument("--out-dir", default=None, help="output folder (default: the repository's predictions/<run>; "
                                                        "<run>-<split> for another split than the checkpoint's)")
    parser.add_argument("--tta", action="store_true", help="average with horizontally flipped predictions")
    parser.add_argument("--no-overlays", action="store_true", help="skip per-slice PNG overlays and GIFs")
    _add_device(parser)
    parser.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_checkpoint

    evaluate_checkpoint(args.weights, split=args.split, data_dir=args.data_dir, cache_dir=args.cache_dir,
                        out_dir=args.out_dir, device=args.device, flip_tta=args.tta, overlays=not args.no_overlays)


def _add_predict_parser(sub) -> None:
    parser = sub.add_parser("predict", help="masks for a new case folder (no masks needed), in its original geometry",
                            formatter_class=HelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True,
                        help="checkpoint, e.g. weights/<run>/best.pt; several, a run folder or a cross-validation's "
                             "name (e.g. weights/<cv>, its fold models) make an ensemble that averages probabilities")
    parser.add_argument("--case", required=True, help="case folder with <case>_<n>.tif slices")
    parser.add_argument("--out", required=True, help="output folder for <case>_<n>_mask.tif, overlays and GIF")
    parser.add_argument("--tta", action="store_true", help="average with horizontally flipped predictions")
    parser.add_argument("--no-overlays", action="store_true", help="skip overlay PNGs and the GIF")
    _add_device(parser)
    parser.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> None:
    from .predict import predict_case

    predict_case(args.weights, args.case, args.out, args.device, args.tta, overlays=not args.no_overlays)


def _add_compact_parser(sub) -> None:
    parser = sub.add_parser("compact", help="half-precision copy of a checkpoint without optimizer state, for shipping",
                            formatter_class=HelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint, e.g. weights/<run>/best.pt")
    parser.add_argument("--out", required=True, help="output .pt file")
    parser.set_defaults(func=_compact)


def _compact(args: argparse.Namespace) -> None:
    from .checkpoint import compact_checkpoint

    path = compact_checkpoint(args.weights, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _add_results_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", default=str(paths.results_dir()), help="the exported results")


def _add_run_folders(parser: argparse.ArgumentParser) -> None:
    """``--results-dir`` and ``--logs-dir``, where a result or the folds of a CV in progress are found."""
    _add_results_dir(parser)
    parser.add_argument("--logs-dir", default=str(paths.logs_dir()), help="the run folders")


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", "--data", dest="data_dir", default=None,
                        help="kaggle_3m folder (default: as for training)")


def _add_weights_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-dir", default=str(paths.weights_dir()), help="the runs' checkpoints")


def _add_results_parser(sub) -> None:
    parser = sub.add_parser("results", help="keep run metrics in results/ and rebuild the docs tables",
                            formatter_class=HelpFormatter)
    action = parser.add_subparsers(dest="action", required=True)
    export = action.add_parser("export", help="copy logs/<run>/metrics.json to results/<run>.json",
                               formatter_class=HelpFormatter)
    export.add_argument("run_dirs", nargs="+", help="run folders under logs/")
    _add_results_dir(export)
    export.set_defaults(func=_results_export)
    table = action.add_parser("table", help="print the results table, or write it into docs/results.md",
                              formatter_class=HelpFormatter)
    _add_results_dir(table)
    table.add_argument("--doc", metavar="PATH", default=None,
                       help="replace the table between its markers in this file (docs/results.md) (default: print it)")
    table.set_defaults(func=_results_table)
    _add_compare_parser(action)
    _add_paired_parser(action)
    _add_spread_parser(action)
    _add_ensemble_parser(action)
    _add_failures_parser(action)
    _add_postprocess_parser(action)


def _results_export(args: argparse.Namespace) -> None:
    from .results import export_run

    for run_dir in args.run_dirs:
        print(f"wrote {export_run(run_dir, args.results_dir)}")


def _results_table(args: argparse.Namespace) -> None:
    from .tools.tables import results_table, write_readme_table

    table = results_table(args.results_dir)
    if args.doc:
        write_readme_table(args.doc, table)
        print(f"updated the results table in {args.doc}")
    else:
        print(table)


def _add_compare_parser(action) -> None:
    compare = action.add_parser("compare", help="comparison table and curves of the exported runs of one preset",
                                formatter_class=HelpFormatter)
    _add_results_dir(compare)
    compare.add_argument("--preset", default="cpu", help="compare only runs of this preset (same budget)")
    compare.add_argument("--selection", default="reference", choices=["reference", "last", "inner"],
                         help="compare only runs whose checkpoint was chosen this way (same protocol)")
    compare.add_argument("--figure", default=str(paths.docs_dir() / "comparison-cpu.png"),
                         help="curves figure (PNG; default: docs/comparison-cpu.png)")
    compare.add_argument("--doc", metavar="PATH", default=None,
                         help="replace the comparison table between its markers in this file (docs/models.md) "
                              "(default: print it only)")
    compare.set_defaults(func=_results_compare)


def _results_compare(args: argparse.Namespace) -> None:
    from .compare import comparison_table, plot_curves, runs_from_results
    from .tools.tables import COMPARE_END, COMPARE_START, write_readme_table

    runs = runs_from_results(args.results_dir, args.preset, selection=args.selection)
    table = comparison_table(runs)
    plot_curves(runs, args.figure)
    if args.doc:
        write_readme_table(args.doc, table, COMPARE_START, COMPARE_END)
        print(f"updated the comparison table in {args.doc}")
    print(table)
    print(f"wrote {args.figure}")


def _add_paired_parser(action) -> None:
    paired = action.add_parser("paired", help="compare two cross-validations case by case (paired bootstrap interval)",
                               description="B - A per case on the same cases: mean difference with a paired "
                                           "bootstrap 95% interval, wins/ties/losses, the cases that moved most. "
                                           "A and B: a results JSON file, a run name in results/, or a CV in "
                                           "progress (its finished folds in logs/<name>-fold<k>/).",
                               formatter_class=HelpFormatter)
    paired.add_argument("a", help="the baseline (A)")
    paired.add_argument("b", help="the candidate (B)")
    paired.add_argument("--folds", type=int, nargs="+", default=None,
                        help="keep only the cases of these folds (default: every case)")
    paired.add_argument("--folds-file", default=None, help="folds JSON for --folds (default: the results' own)")
    paired.add_argument("--also-a", nargs="+", default=[], metavar="RUN",
                        help="further trainings of A (other seeds, same folds): each case counts with its mean DSC "
                             "over A's trainings")
    paired.add_argument("--also-b", nargs="+", default=[], metavar="RUN", help="the same for B")
    paired.add_argument("--by-cause", action="store_true",
                        help="also the difference within each group of cases by their data-only cause (missing "
                             "modality, label oddity, small lesion, atypical intensity, other: docs/failures.md, "
                             "on the 128 px cache); needs the dataset")
    _add_run_folders(paired)
    paired.add_argument("--data-dir", "--data", dest="data_dir", default=None,
                        help="kaggle_3m folder for --by-cause (default: as for training)")
    paired.add_argument("--out", default=None, help="JSON output (default: <results-dir>/paired-<A>-vs-<B>.json; "
                                                    "A+A2-vs-B+B2 with --also-a/-b, -folds0,1 at the end "
                                                    "with --folds; a side past 100 characters keeps its head "
                                                    "and tail around a hash)")
    paired.set_defaults(func=_results_paired)


def _results_paired(args: argparse.Namespace) -> None:
    from .paired import compare_results, paired_report

    result = compare_results(args.a, args.b, args.folds, args.folds_file, args.results_dir, args.logs_dir,
                             also_a=args.also_a, also_b=args.also_b)
    report = paired_report(result)
    if args.by_cause:
        from .failures import data_causes
        from .paired import differences_by_group, groups_report

        causes = data_causes(sorted(result["per_case_a"]), args.data_dir)
        result["by_cause"] = differences_by_group(result["per_case_a"], result["per_case_b"], causes)
        report += "\n\n" + groups_report(result["by_cause"], "By data-only cause (docs/failures.md):")
    side_a, side_b = (paths.file_stem("+".join(result[runs]), 100) for runs in ("runs_a", "runs_b"))
    # a screen never overwrites the comparison of every fold, nor another screen's
    kept = f"-folds{','.join(map(str, sorted(set(args.folds))))}" if args.folds else ""
    name = f"paired-{side_a}-vs-{side_b}{kept}"
    _save_analysis(args.out or f"{args.results_dir}/{name}.json", result, report, args)


def _save_analysis(out: str, result: dict, report: str, args: argparse.Namespace) -> None:
    """Write ``result`` with the command line to ``out`` (atomically), print ``report`` and where it went."""
    from .atomic import atomic_write_json

    atomic_write_json(out, {**result, "command": args.command_line})
    print(report)
    print(f"wrote {out}")


def _add_spread_parser(action) -> None:
    spread = action.add_parser("spread", help="how far trainings of one recipe move each case (run-to-run noise)",
                               description="Per-case range of the DSC across two or more cross-validations of "
                                           "the same recipe on the same folds (another seed, precision or "
                                           "machine), for the hard cases and the others, and the range of the "
                                           "pooled means: what a lever that changes training has to beat.",
                               formatter_class=HelpFormatter)
    spread.add_argument("runs", nargs="+", help="the cross-validations: results JSON files or run names")
    spread.add_argument("--below", type=float, default=0.6, help="a case is hard when below this in some run")
    _add_run_folders(spread)
    spread.add_argument("--out", default=None, help="JSON output (default: <results-dir>/spread-<A>+<B>....json)")
    spread.set_defaults(func=_results_spread)


def _results_spread(args: argparse.Namespace) -> None:
    from .spread import spread_report, training_spread

    spread = training_spread(args.runs, args.below, results_dir=args.results_dir, logs_dir=args.logs_dir)
    _save_analysis(args.out or f"{args.results_dir}/spread-{paths.file_stem('+'.join(spread['runs']))}.json", spread,
                   spread_report(spread), args)


def _add_ensemble_parser(action) -> None:
    ensemble = action.add_parser("ensemble", help="out-of-fold cross-validation of an ensemble of cross-validations",
                                 description="Each case is predicted by the averaged probabilities of the fold "
                                             "models (one per cross-validation, weights/<cv>-fold<k>/best.pt) that "
                                             "did not train on it. The pooled result goes to results/<name>.json, "
                                             "ready for 'results paired'.",
                                 formatter_class=HelpFormatter)
    ensemble.add_argument("cvs", nargs="+", help="cross-validations trained on the same saved folds")
    ensemble.add_argument("--name", default="", help="result name (default: ensemble-<cv>+<cv>..., past 200 "
                                                     "characters its head and tail around a hash)")
    ensemble.add_argument("--folds", type=int, nargs="+", default=None,
                          help="score only these folds, for screening (default: every fold all of them have)")
    ensemble.add_argument("--tta", action="store_true",
                          help="average with horizontally flipped predictions (one CV: that CV scored with flip TTA)")
    _add_results_dir(ensemble)
    _add_weights_dir(ensemble)
    _add_data_dir(ensemble)
    ensemble.add_argument("--cache-dir", default=None, help="preprocessed-volume cache (default: as for training)")
    _add_device(ensemble)
    ensemble.set_defaults(func=_results_ensemble)


def _results_ensemble(args: argparse.Namespace) -> None:
    from .cv import ensemble_cv

    ensemble_cv(args.cvs, args.name, args.folds, args.weights_dir, args.results_dir, args.data_dir, args.cache_dir,
                args.device, command=args.command_line, flip_tta=args.tta)


def _add_failures_parser(action) -> None:
    failures = action.add_parser("failures", help="profile, classify and draw the cases a cross-validation fails on",
                                 description="Every case below --below: lesion size, FLAIR copies (missing scans), "
                                             "lesion FLAIR contrast, components, the largest-component rule, a "
                                             "cause and a figure; predictions from weights/<cv>-fold<k>/best.pt "
                                             "where present.",
                                 formatter_class=HelpFormatter)
    failures.add_argument("cv", help="cross-validation result: JSON file, name in results/, or a CV in progress")
    failures.add_argument("--below", type=float, default=0.6, help="DSC under which a case is analysed")
    _add_run_folders(failures)
    _add_weights_dir(failures)
    failures.add_argument("--figures", default=str(paths.docs_dir() / "failures"),
                          help="folder of the per-case figures (default: docs/failures)")
    failures.add_argument("--doc", metavar="PATH", default=None,
                          help="replace the text between <!-- failures:<cv>:start/end --> in this file "
                               "(default: print it only)")
    _add_data_dir(failures)
    failures.set_defaults(func=_results_failures)


def _results_failures(args: argparse.Namespace) -> None:
    from .failures import analyse_failures, failures_markdown
    from .tools.tables import write_readme_table

    rows = analyse_failures(args.cv, args.below, args.results_dir, args.logs_dir, args.weights_dir,
                            args.figures, args.data_dir)
    doc_dir = Path(args.doc).parent if args.doc else Path(args.figures).parent
    table = failures_markdown(rows, doc_dir)
    if args.doc:
        write_readme_table(args.doc, table, f"<!-- failures:{args.cv}:start -->", f"<!-- failures:{args.cv}:end -->")
        print(f"updated the failure table of {args.cv} in {args.doc}")
    print(table)


def _add_postprocess_parser(action) -> None:
    post = action.add_parser("postprocess",
                             help="choose post-processing on a cross-validation's out-of-fold predictions",
                             description="Score none / min<N> / largest-component post-processing on the out-of-fold "
                                         "predictions of weights/<cv>-fold<k>/best.pt, choose per fold on the other "
                                         "folds (nested) and compare that with the protocol's rule case by case.",
                             formatter_class=HelpFormatter)
    post.add_argument("cv", help="cross-validation result: JSON file, name in results/, or a CV in progress")
    _add_run_folders(post)
    _add_weights_dir(post)
    _add_data_dir(post)
    post.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    post.add_argument("--thresholds", type=float, nargs="+", default=[0.5],
                      help="probability thresholds to try each rule at, e.g. 0.3 0.4 (the protocol's 0.5 is always "
                           "tried too)")
    post.add_argument("--out", default=None, help="JSON output (default: <results-dir>/<cv>-postprocess.json)")
    post.set_defaults(func=_results_postprocess)


def _results_postprocess(args: argparse.Namespace) -> None:
    from .postprocess import analyse_postprocessing, postprocess_report

    summary = analyse_postprocessing(args.cv, args.results_dir, args.logs_dir, args.weights_dir, args.data_dir,
                                     device=args.device, thresholds=tuple(args.thresholds))
    _save_analysis(args.out or f"{args.results_dir}/{summary['cv']}-postprocess.json", summary,
                   postprocess_report(summary), args)


def _add_bench_parser(sub) -> None:
    parser = sub.add_parser("bench", help="train/inference images/s per mode, FLOPs against the matmul peak, input "
                                          "pipeline rate, data preparation time, training memory, goals",
                            formatter_class=HelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="image sides to time")
    parser.add_argument("--features", type=int, nargs="+", default=[32], help="U-Net widths to time")
    parser.add_argument("--models", nargs="+", default=["unet"], help="registered model names to time")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting (after 3 warm-up)")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile mode (needs a C++ compiler on CPU)")
    parser.add_argument("--memory", action="store_true",
                        help="peak memory of training at 256 px on the full training split (needs the dataset)")
    parser.add_argument("--memory-steps", type=int, default=20, help="training steps of the --memory run")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the pipeline and memory runs")
    parser.add_argument("--doc", metavar="PATH", default=None,
                        help="replace the speed and goals tables between their markers in this file (docs/speed.md) "
                             "(default: print them only)")
    _add_device(parser)
    parser.add_argument("--data", action="store_true", help="also time first and cached data preparation")
    parser.add_argument("--data-dir", default=None, help="kaggle_3m folder for --data (default: as for training)")
    parser.add_argument("--data-size", type=int, default=256, help="image size for --data")
    parser.add_argument("--out", default=None, help="JSON output (default: the repository's logs/bench.json)")
    parser.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> None:
    """``bench``: time every mode, print the tables, write the JSON and, with ``--doc``, the docs tables."""
    from .atomic import atomic_write_json
    from .tools.bench import goals_table, run_benchmark, speed_table
    from .tools.tables import write_readme_table

    out = args.out or paths.logs_dir() / "bench.json"
    results = run_benchmark(tuple(args.sizes), tuple(args.features), tuple(args.models), args.device, args.data,
                            args.data_dir, args.data_size, args.steps, args.compile, args.memory,
                            args.memory_steps, args.workers)
    atomic_write_json(out, {**results, "command": args.command_line})
    print(f"wrote {out}")
    if args.doc:
        write_readme_table(args.doc, goals_table(results["goals"]), "<!-- bench-goals:start -->",
                           "<!-- bench-goals:end -->")
        write_readme_table(args.doc, speed_table(results), "<!-- bench-speed:start -->", "<!-- bench-speed:end -->")
        print(f"updated the speed and goals tables in {args.doc}")


def _add_report_parser(sub) -> None:
    """``report``: where the report, its figures and the runs' files are, and what the side-by-side figures show."""
    parser = sub.add_parser(
        "report", help="rebuild the case report docs/report.md and its figures from results/",
        description="Every attempt in results/ (reference-split runs, cross-validations, paired comparisons) "
                    "with DSC, selection, wall time, device and command; per-case DSC charts, example "
                    "segmentations from the checkpoints in weights/ (the committed figure is kept without them), "
                    "training curves. The hand-written analysis between <!-- analysis:start --> and "
                    "<!-- analysis:end --> is kept.",
        formatter_class=HelpFormatter)
    parser.add_argument("--doc", default=str(paths.docs_dir() / "report.md"), help="the report")
    parser.add_argument("--figures", default=None, help="its figures (default: report/ beside --doc)")
    _add_run_folders(parser)
    _add_weights_dir(parser)
    _add_data_dir(parser)
    parser.add_argument("--cache-dir", default=None,
                        help="preprocessed-volume cache (default: $BRAINSEG_CACHE, else ~/.cache/brainseg)")
    parser.add_argument("--cases", type=int, default=4, help="cases (rows) of each side-by-side figure")
    parser.add_argument("--variants", nargs="+", default=None, metavar="RUN",
                        help="draw only these runs in the side-by-side figures (default: the first four with a "
                             "checkpoint, in table order)")
    _add_device(parser)
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> None:
    """``report``: rebuild docs/report.md and print what was drawn, kept or skipped."""
    from .tools.report import write_report

    for message in write_report(args.doc, args.figures, args.results_dir, args.logs_dir, args.weights_dir,
                                args.data_dir, args.cache_dir, args.device, args.cases, args.variants):
        print(message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m brainseg", formatter_class=HelpFormatter,
                                     description="Segmentation of FLAIR abnormalities in brain MRI (Kaggle LGG).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_cv_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_compact_parser(sub)
    _add_results_parser(sub)
    _add_bench_parser(sub)
    _add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 2 for bad input or data, 1 for a failed run."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = "python -m brainseg " + shlex.join(argv)
    from .data.kaggle import DatasetError

    try:
        args.func(args)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. TrainingDiverged; best.pt keeps the best model so far
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
