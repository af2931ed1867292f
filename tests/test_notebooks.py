"""The three notebooks: committed without outputs, and executed top to bottom on real data with smoke settings."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("name", ["train", "inference", "compare"])
def test_notebook_committed_without_outputs_and_with_parameters(name):
    book = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in book["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{name}.ipynb has outputs"
    assert "parameters" in code[0]["metadata"].get("tags", []), f"{name}.ipynb: first code cell must be tagged 'parameters'"


def run_notebook(name: str, parameters: dict, workdir: Path) -> nbformat.NotebookNode:
    """Execute a notebook with ``parameters`` injected after its parameters cell (as papermill does)."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    book.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(book, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return book


@pytest.mark.realdata
def test_notebooks_run_end_to_end(real_data, tmp_path):
    overrides = {"logs_dir": str(tmp_path / "logs"), "weights_dir": str(tmp_path / "weights"),
                 "cache_dir": str(tmp_path / "cache"), "run_name": "notebook-smoke"}
    run_notebook("train", {"PRESET": "smoke", "OVERRIDES": overrides, "DATA_DIR": str(real_data)}, tmp_path)
    weights = tmp_path / "weights" / "notebook-smoke" / "best.pt"
    assert weights.is_file()
    book = run_notebook("inference", {"WEIGHTS": str(weights), "DATA_DIR": str(real_data),
                                      "OUT_DIR": str(tmp_path / "predictions")}, tmp_path)
    assert (tmp_path / "predictions" / "metrics.csv").is_file()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the DSC chart was not displayed"
    book = run_notebook("compare", {"LOGS_DIR": str(tmp_path / "logs")}, tmp_path)
    text = json.dumps([o for c in book.cells if c.cell_type == "code" for o in c.outputs])
    assert "notebook-smoke" in text
