from pathlib import Path

from brainseg.tools.report_figures import pick_cases


def test_rows_are_the_hardest_cases_then_spread_to_the_median():
    run = {"run": "r", "per_case": {f"c{i}": i / 10 for i in range(10)}}  # c0 hardest
    variants = [(run, {case: Path("w.pt") for case in run["per_case"] if case != "c3"})]  # c3: no checkpoint
    assert pick_cases(variants, 4) == ["c0", "c1", "c2", "c5"]  # ranks 0, 1, then the quartile and median of 9
    assert pick_cases(variants, 1) == ["c5"] and pick_cases(variants, 2) == ["c0", "c5"]
