"""The three notebooks: committed without outputs, and executed top to bottom as Jupyter runs them
(the kernel in ``notebooks/``) on real data with smoke settings, their outputs landing in the
repository's top-level folders."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from brainseg import paths

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["train", "inference", "compare"]
COMPARED = ["cpu-unet-bce_dice-flairfill-intensity-ema-cv5", "cpu-unet-bce_dice-flairfill-intensity-ema-seed43-cv5",
            "cpu-unet-bce_dice-flairfill-intensity-ema-ds2-cv5",
            "cpu-unet-bce_dice-flairfill-intensity-ema-ds2-seed43-cv5"]  # A, also A, B, also B: the compare defaults
COMMITTED_RUN = "cpu-unet-bce_dice-reference"  # a full reference-split run: what compare shows without logs


@pytest.mark.parametrize("name", NAMES)
def test_notebook_committed_without_outputs_and_with_parameters(name):
    book = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in book["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{name}.ipynb has outputs"
    assert "parameters" in code[0]["metadata"].get("tags", []), \
        f"{name}.ipynb: first code cell must be tagged 'parameters'"


def copy_of_repository(target: Path, data: Path) -> Path:
    """What a notebook run reads in a checkout, copied to ``target``: the package, ``pyproject.toml``,
    the notebooks, the samples, the four results the compare notebook compares by default, one
    committed reference-split run and the shipped checkpoint; ``data/kaggle_3m`` links to ``data``."""
    shutil.copytree(ROOT / "brainseg", target / "brainseg", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target)
    (target / "notebooks").mkdir()
    for name in NAMES:
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", target / "notebooks")
    shutil.copytree(ROOT / "samples", target / "samples")
    (target / "results").mkdir()
    for name in (*COMPARED, COMMITTED_RUN):
        shutil.copy(ROOT / "results" / f"{name}.json", target / "results")
    (target / "weights").mkdir()
    shutil.copy(paths.shipped_checkpoint(), target / "weights")
    (target / "data").mkdir()
    (target / "data" / "kaggle_3m").symlink_to(data.resolve(), target_is_directory=True)
    return target


def run_notebook(repo: Path, name: str, parameters: dict) -> nbformat.NotebookNode:
    """Execute ``repo/notebooks/<name>.ipynb`` with its kernel in ``repo/notebooks`` (as Jupyter does),
    ``parameters`` injected after its parameters cell (as papermill does)."""
    book = nbformat.read(repo / "notebooks" / f"{name}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    book.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    resources = {"metadata": {"path": str(repo / "notebooks")}}
    client = NotebookClient(book, timeout=600, kernel_name="python3", resources=resources)
    # nbclient stands in for a frontend's Output widget (the slice browser's) by sending its state
    # back to the kernel on the shell socket while it awaits the cell's reply on that same socket.
    # That send can swallow the reply's wake-up, so the cell then waits out the whole timeout and
    # passes (jupyter/nbclient#312; it cost CI 15 minutes). Jupyter's frontends do not do this, so
    # the test leaves Output widgets to the frontend: the widget itself is still displayed.
    assert "@jupyter-widgets/output" in client.widget_registry, "nbclient changed: revisit this workaround"
    client.widget_registry = {}
    client.execute()
    assert not late_replies(book), f"{name}.ipynb: replies came long after the cells ended: {late_replies(book)}"
    return book


def late_replies(book: nbformat.NotebookNode, seconds: float = 60) -> list[int]:
    """Code cells whose execute reply came more than ``seconds`` after the kernel went idle: the
    stall above, which would otherwise pass once the timeout ran out."""
    def when(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    late = []
    for index, cell in enumerate(book.cells):
        times = cell.metadata.get("execution", {})
        if "iopub.status.idle" in times and "shell.execute_reply" in times:
            if (when(times["shell.execute_reply"]) - when(times["iopub.status.idle"])).total_seconds() > seconds:
                late.append(index)
    return late


def outputs_of(book: nbformat.NotebookNode) -> list[dict]:
    return [o for c in book.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
@pytest.mark.realdata
def test_notebooks_with_default_folders_write_to_the_top_level(real_data, tmp_path, monkeypatch):
    repo = copy_of_repository(tmp_path / "repo", real_data)
    monkeypatch.setenv("PYTHONPATH", str(repo))  # the kernel imports the copy's brainseg, as a checkout's does
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)  # the dataset comes from the default, the copy's data/kaggle_3m
    monkeypatch.setenv("BRAINSEG_CACHE", str(tmp_path / "cache"))

    run_notebook(repo, "train", {"PRESET": "smoke"})
    [run] = [p.name for p in (repo / "logs").iterdir()]
    assert (repo / "logs" / run / "metrics.json").is_file() and (repo / "weights" / run / "best.pt").is_file()

    # the shipped checkpoint by default; only the data shrunk to the two committed samples
    book = run_notebook(repo, "inference", {"DATA_DIR": str(repo / "samples" / "kaggle_3m"), "SPLIT": "all"})
    out = repo / "predictions" / f"{paths.shipped_checkpoint().stem}-all"  # not the checkpoint's own split
    assert (out / "metrics.csv").is_file() and (out / "dsc.png").is_file()
    kinds = {kind for o in outputs_of(book) for kind in o.get("data", {})}
    assert "image/png" in kinds, "the DSC chart was not displayed"
    assert "application/vnd.jupyter.widget-view+json" in kinds, "the slice browser was not displayed"

    book = run_notebook(repo, "compare", {})
    assert run in json.dumps(outputs_of(book)) and COMMITTED_RUN not in json.dumps(outputs_of(book))
    # its defaults compare two committed cross-validations against two: the paired report and the scatter plot
    assert "B - A per case: mean +0.0098" in json.dumps(outputs_of(book))
    assert sum("image/png" in o.get("data", {}) for o in outputs_of(book)) >= 2, "curves and scatter not both drawn"

    assert sorted(p.name for p in (repo / "notebooks").iterdir()) == sorted(f"{n}.ipynb" for n in NAMES), \
        "a notebook wrote under notebooks/"


@pytest.mark.slow
def test_compare_notebook_on_a_fresh_clone_shows_the_committed_results(tmp_path, monkeypatch):
    repo = copy_of_repository(tmp_path / "repo", tmp_path / "no-dataset")  # compare reads no data
    monkeypatch.setenv("PYTHONPATH", str(repo))
    (repo / "logs").mkdir()  # as git keeps it: no run in it
    outputs = outputs_of(run_notebook(repo, "compare", {}))
    shown = json.dumps(outputs)
    assert "no run under logs/: 1 committed result(s) in results/" in shown and COMMITTED_RUN in shown
    assert "B - A per case: mean +0.0098, paired bootstrap 95% CI +0.0039 to +0.0169" in shown
    assert f"A = {COMPARED[0]} + {COMPARED[1]}" in shown and f"B = {COMPARED[2]} + {COMPARED[3]}" in shown
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, "curves and scatter not both drawn"
    assert not [o["text"] for o in outputs if o.get("name") == "stderr"], "a warning (no curves drawn?)"
