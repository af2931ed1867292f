"""The generated tables of the docs: the table of every exported run (``python -m brainseg results
table --doc docs/results.md``), and :func:`write_readme_table`, which puts any generated table
between its markers in a Markdown file (also the comparison, failure, speed and goals tables).
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write_text
from ..results import epochs_label, load_results

TABLE_START, TABLE_END = "<!-- results-table:start -->", "<!-- results-table:end -->"
COMPARE_START, COMPARE_END = "<!-- comparison-table:start -->", "<!-- comparison-table:end -->"


def _final(run: dict) -> str:
    if "final_val_mean_dsc" not in run:
        return "-"
    return f"{run['final_val_mean_dsc']:.4f} / {run['final_val_median_dsc']:.4f}"


def results_table(results_dir: str | Path | None = None) -> str:
    """A Markdown table of every exported run in ``results_dir`` (``None``: the repository's results/ folder)."""
    header = ("| run | model | loss | preset | size | epochs | split | selection | val mean DSC | "
              "val median DSC | best epoch | final epoch mean / median | wall time | device | command |")
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns]
    for r in load_results(results_dir):
        lines.append(f"| {r['run']} | {r['model']} | {r['loss']} | {r['preset']} | {r['image_size']} | "
                     f"{epochs_label(r)} | "
                     f"{r['split']} | {r['selection'].split(' (')[0]} | {r['val_mean_dsc']:.4f} | "
                     f"{r['val_median_dsc']:.4f} | {r['best_epoch']} | {_final(r)} | {r['wall_time_s'] / 60:.1f} min | "
                     f"{r['device']} | `{r['command']}` |")
    if len(lines) == 2:
        lines.append("| (no runs exported yet) |" + " |" * (columns - 1))
    return "\n".join(lines)


def write_readme_table(readme: str | Path, table: str, start: str = TABLE_START, end: str = TABLE_END) -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``readme`` with ``table``.

    Raises:
        ValueError: the markers are missing.
    """
    readme = Path(readme)
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme}: markers {start} and {end} not found")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    atomic_write_text(readme, f"{before}{start}\n{table}\n{end}{after}")
