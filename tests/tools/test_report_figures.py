from pathlib import Path

from brainseg.tools.report_figures import colour_by_cross_validation, curves_figure, pick_cases


def test_rows_are_the_hardest_cases_then_spread_to_the_median():
    run = {"run": "r", "per_case": {f"c{i}": i / 10 for i in range(10)}}  # c0 hardest
    variants = [(run, {case: Path("w.pt") for case in run["per_case"] if case != "c3"})]  # c3: no checkpoint
    assert pick_cases(variants, 4) == ["c0", "c1", "c2", "c5"]  # ranks 0, 1, then the quartile and median of 9
    assert pick_cases(variants, 1) == ["c5"] and pick_cases(variants, 2) == ["c0", "c5"]


def test_the_folds_of_one_cross_validation_share_a_colour_and_one_legend_entry(tmp_path):
    history = [{"epoch": 1, "val_mean_dsc": 0.5, "train_loss": 0.4, "val_loss": 0.3},
               {"epoch": 2, "val_mean_dsc": 0.7, "train_loss": 0.2, "val_loss": 0.25}]
    runs = [("a-cv5-fold0", history), ("a-cv5-fold1", history), ("b-cv5-fold0", history), ("ref-run", history)]
    entries = colour_by_cross_validation(runs)
    assert [e["label"] for e in entries] == ["a-cv5 (2 folds)", None, "b-cv5 (1 fold)", "ref-run (1 fold)"]
    assert entries[0]["color"] == entries[1]["color"] != entries[2]["color"] != entries[3]["color"]
    path = curves_figure(runs, tmp_path / "curves.png", by_cross_validation=True)
    assert path.stat().st_size > 1000
