"""The case report (``python -m brainseg report``, brainseg/tools/report.py) rebuilt from a tiny
synthetic results folder: rows and numbers, the kept analysis, the figures, the side-by-side figure
skipped, kept or drawn."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pytest

from brainseg import cli, paths
from brainseg.tools.report import ANALYSIS_END, ANALYSIS_START, classify_run, reference_group, write_report

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "kaggle_3m"
SAMPLE_CASES = ("TCGA_CS_4944_20010208", "TCGA_HT_7616_19940813")
CV_CASES = [f"TCGA_XX_{i:04d}_20000101" for i in range(6)]


def run_export(name: str, split: str, per_case: dict, mean: float, median: float, selection: str = "last",
               **extra) -> dict:
    """A run export with every key of REQUIRED_KEYS and a config."""
    text = {"last": "last: the final epoch's model, nothing chosen on evaluated cases",
            "reference": "best epoch by mean DSC on the validation cases themselves"}[selection]
    return {"run": name, "model": "unet", "loss": "bce_dice", "preset": "cpu", "image_size": 128, "epochs": 20,
            "split": split, "selection": text, "val_mean_dsc": mean, "val_median_dsc": median,
            "per_case": per_case, "best_epoch": 20, "wall_time_s": 2148.0, "device": "cpu (x86_64, 2 threads)",
            "command": f"python -m brainseg train --run-name {name}",
            "config": {"selection": selection, "max_train_cases": 0}, **extra}


def write_results(folder: Path) -> Path:
    """Two reference-split runs, a 5-fold CV with one fold export, a paired comparison, and files
    that are not run exports."""
    folder.mkdir(parents=True)
    dice = dict(zip(SAMPLE_CASES, (0.9115, 0.7796)))
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_mean_dsc": 0.5 + e / 100,
                "val_median_dsc": 0.5 + e / 100} for e in (1.0, 2.0, 3.0)]
    cv_per_case = dict(zip(CV_CASES, (0.0, 0.35, 0.8, 0.85, 0.9, 0.95)))
    runs = [run_export("cpu-unet-dice-reference", "reference", dice, 0.8112, 0.9104, selection="reference"),
            run_export("cpu-fast-lever", "reference", {"c1": 0.9, "c2": 0.8}, 0.85, 0.85, history=history),
            run_export("toy-cv5", "cv5", cv_per_case, 0.6417, 0.8250, val_mean_dsc_ci95=[0.3512, 0.8901],
                       val_median_dsc_ci95=[0.35, 0.95], fold_of_case={c: i % 5 for i, c in enumerate(CV_CASES)},
                       folds=[{"run": f"toy-cv5-fold{k}", "val_mean_dsc": 0.5 + k / 10} for k in range(5)]),
            run_export("toy-cv5-fold0", "kfold5-fold0", {CV_CASES[0]: 0.0, CV_CASES[5]: 0.95}, 0.475, 0.475,
                       history=history)]
    for run in runs:
        (folder / f"{run['run']}.json").write_text(json.dumps(run))
    paired = {"a": "old-cv5", "b": "toy-cv5", "cases": 110, "folds": "all", "ci95": [0.0029, 0.041],
              "mean_difference": 0.0198, "mean_a": 0.7997, "mean_b": 0.8195, "median_a": 0.8712, "median_b": 0.8771,
              "wins": 35, "ties": 48, "losses": 27, "improvement": True, "worse": False,
              "most_improved": [["TCGA_HT_A61B_19991127", 0.0191, 0.8595]], "most_worsened": [],
              "command": "python -m brainseg results paired old-cv5 toy-cv5"}
    (folder / "paired-old-cv5-vs-toy-cv5.json").write_text(json.dumps(paired))
    (folder / "bench-cpu.json").write_text(json.dumps({"rows": []}))
    (folder / "toy-cv5-folds.json").write_text(json.dumps({"folds": [[c] for c in CV_CASES[:5]]}))
    (folder / "toy-cv5-per-case.csv").write_text("case,dsc\n")
    return folder


@pytest.fixture
def setup(tmp_path) -> dict:
    """Folders of one report: results, empty logs and weights, the doc and its figures."""
    (tmp_path / "weights").mkdir()
    return {"results": write_results(tmp_path / "results"), "logs": tmp_path / "logs", "weights": tmp_path / "weights",
            "doc": tmp_path / "docs" / "report.md", "figures": tmp_path / "docs" / "report"}


def build(setup: dict, **kwargs) -> list[str]:
    return write_report(setup["doc"], setup["figures"], setup["results"], setup["logs"], setup["weights"], **kwargs)


def test_every_attempt_is_a_row_with_its_numbers(setup, capsys):
    assert cli.main(["report", "--doc", str(setup["doc"]), "--results-dir", str(setup["results"]),
                     "--logs-dir", str(setup["logs"]), "--weights-dir", str(setup["weights"])]) == 0
    text = setup["doc"].read_text()
    assert ("| cpu-unet-dice-reference | unet | bce_dice | cpu | 128 | 20 | reference | 0.8112 / 0.9104 | 35.8 min "
            "| cpu (x86_64, 2 threads) | `python -m brainseg train --run-name cpu-unet-dice-reference` |") in text
    assert "| cpu-fast-lever | unet | bce_dice | cpu | 128 | 20 | last | 0.8500 / 0.8500 |" in text
    assert text.index("### Models and losses") < text.index("cpu-unet-dice-reference |") < text.index(
        "### Recipe levers and presets") < text.index("| cpu-fast-lever |")
    assert ("| toy-cv5 | 6 | 0.6417 (0.3512-0.8901) | 0.8250 (0.3500-0.9500) | 0.500, 0.600, 0.700, 0.800, 0.900 "
            "|") in text
    assert ("| old-cv5 | toy-cv5 | 110 (all) | 0.7997 / 0.8195 | 0.8712 / 0.8771 | +0.0198 (+0.0029 to +0.0410) "
            "| 35 / 48 / 27 | B better (interval above 0) |") in text
    assert "- `toy-cv5`: folds 0, pooled in the table above." in text
    assert "| toy-cv5-fold0 |" not in text  # a fold export is not an attempt of its own
    assert "Not run exports, not read: `bench-cpu.json`, `toy-cv5-folds.json`" in text
    printed = capsys.readouterr().out
    assert f"wrote {setup['doc']}" in printed


def test_figures_exist_and_are_small(setup):
    build(setup)
    for name in ("dsc-reference", "dsc-cv", "curves-levers", "curves-cv-folds"):
        path = setup["figures"] / f"{name}.png"
        assert iio.imread(path).ndim == 3 and path.stat().st_size < 300_000, name
        assert f"](report/{name}.png)" in setup["doc"].read_text()
    assert not (setup["figures"] / "curves-models.png").exists()  # its only run has no history
    text = setup["doc"].read_text()
    assert "No history (skipped): cpu-unet-dice-reference." in text
    assert "No history (skipped): toy-cv5-fold1, toy-cv5-fold2, toy-cv5-fold3, toy-cv5-fold4." in text


def test_history_from_logs_wins_over_the_exported_copy(setup):
    (setup["logs"] / "cpu-unet-dice-reference").mkdir(parents=True)
    (setup["logs"] / "cpu-unet-dice-reference" / "history.csv").write_text(
        "epoch,train_loss,val_loss,val_mean_dsc,val_median_dsc\n1,0.5,0.4,0.7,0.7\n2,0.3,0.3,0.8,0.8\n")
    build(setup)
    assert (setup["figures"] / "curves-models.png").is_file()
    assert "No history (skipped): cpu-unet-dice-reference." not in setup["doc"].read_text()


def test_analysis_survives_regeneration(setup):
    build(setup)
    text = setup["doc"].read_text()
    assert f"{ANALYSIS_START}\n_No analysis written yet" in text
    analysis = "Flair-fill helped: +0.020, interval above 0.\n\nBCE+Dice fixed the false positive."
    before, rest = text.split(ANALYSIS_START)
    setup["doc"].write_text(f"{before}{ANALYSIS_START}\n{analysis}\n{ANALYSIS_END}{rest.split(ANALYSIS_END)[1]}")
    extra = run_export("cpu-new-lever", "reference", {"c1": 0.95, "c2": 0.9}, 0.925, 0.925)
    (setup["results"] / "cpu-new-lever.json").write_text(json.dumps(extra))
    build(setup)
    text = setup["doc"].read_text()
    assert f"{ANALYSIS_START}\n{analysis}\n{ANALYSIS_END}" in text and text.count(analysis) == 1
    assert "| cpu-new-lever | unet | bce_dice | cpu | 128 | 20 | last | 0.9250 / 0.9250 |" in text
    assert "_No analysis written yet" not in text


def test_a_report_without_markers_is_not_overwritten(setup):
    setup["doc"].parent.mkdir(parents=True)
    setup["doc"].write_text("# My report\n\nHand-written, no markers.\n")
    with pytest.raises(ValueError, match="report.md: no <!-- analysis:start --> .* add the markers"):
        build(setup)
    assert setup["doc"].read_text() == "# My report\n\nHand-written, no markers.\n"


def test_without_checkpoints_the_side_by_side_figure_is_skipped(setup):
    messages = build(setup)
    assert any(m.startswith("skipped") and m.endswith(f"side-by-side-reference.png: no checkpoint of these runs "
                                                      f"under {setup['weights']}") for m in messages)
    assert not (setup["figures"] / "side-by-side-reference.png").exists()
    assert setup["doc"].read_text().count("No figure yet: no checkpoint of these runs") == 2


def test_without_checkpoints_a_committed_figure_is_kept_with_its_caption(setup):
    setup["figures"].mkdir(parents=True)
    png = setup["figures"] / "side-by-side-cv.png"
    png.write_bytes(b"committed figure")
    record = {"variants": ["toy-cv5"], "without_checkpoints": [], "rows": [{"case": CV_CASES[0], "slice": 7,
                                                                             "dsc": {"toy-cv5": 0.0}}]}
    png.with_suffix(".json").write_text(json.dumps(record))
    messages = build(setup)
    assert f"kept {png} as it was: no checkpoint of these runs under {setup['weights']}" in messages
    assert png.read_bytes() == b"committed figure"
    text = setup["doc"].read_text()
    assert "](report/side-by-side-cv.png)" in text and f"Rows: `{CV_CASES[0]}` (slice 7)" in text


@pytest.mark.slow
def test_side_by_side_drawn_from_the_shipped_checkpoint_on_the_samples(setup, tmp_path):
    # the synthetic run "cpu-unet-dice-reference" gets the shipped checkpoint, whose recorded DSC it must match
    name, shipped = "cpu-unet-dice-reference", paths.shipped_checkpoint()
    recorded = json.loads((ROOT / "results" / f"{shipped.stem}.json").read_text())["per_case"]
    (setup["weights"] / f"{name}.pt").symlink_to(shipped)
    messages = build(setup, data_dir=str(SAMPLES), cache_dir=str(tmp_path / "cache"), device="cpu")
    png = setup["figures"] / "side-by-side-reference.png"
    assert f"drew {png}: 1 variants x 2 cases" in messages
    assert iio.imread(png).ndim == 3 and png.stat().st_size < 300_000
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["variants"] == [name] and record["without_checkpoints"] == ["cpu-fast-lever"]
    assert [row["case"] for row in record["rows"]] == ["TCGA_HT_7616_19940813", "TCGA_CS_4944_20010208"]  # hardest 1st
    assert all(row["voxels"][name] > 0 for row in record["rows"])
    for row in record["rows"]:
        assert row["dsc"][name] == pytest.approx(recorded[row["case"]], abs=1e-3)
    text = setup["doc"].read_text()
    assert "Not drawn, no checkpoint at hand: cpu-fast-lever." in text
    assert any(m.startswith("skipped") and "side-by-side-cv.png" in m for m in messages)


@pytest.mark.parametrize("split, config, kind, group", [
    ("reference", {"selection": "reference", "max_train_cases": 0}, "reference", "models"),
    ("reference", {"selection": "inner", "max_train_cases": 0}, "reference", "levers"),
    ("reference", {"selection": "reference", "max_train_cases": 30}, "reference", "reproductions"),
    ("cv5", {"selection": "last"}, "cv", "levers"),
    ("kfold5-fold3", {"selection": "last"}, "fold", "levers"),
    ("kfold", {"selection": "last"}, "other", "levers"),
])
def test_the_rule_that_sorts_run_exports(split, config, kind, group):
    run = run_export("r", split, {}, 0.5, 0.5, selection="reference" if config["selection"] == "reference" else "last")
    run["config"] = config
    if config["selection"] == "inner":
        run["selection"] = "inner: checkpoint chosen on inner cases"
    assert classify_run(run) == kind and reference_group(run) == group


def test_the_committed_report_has_one_analysis_section():
    text = (ROOT / "docs" / "report.md").read_text()
    assert text.count(ANALYSIS_START) == 1 and text.count(ANALYSIS_END) == 1
    assert text.index(ANALYSIS_START) < text.index(ANALYSIS_END)
    assert "python -m brainseg report" in text  # the page names the command that rewrites it
