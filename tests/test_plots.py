"""Pictures for notebooks: the slice figure, and the slice browser with and without ipywidgets."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from brainseg.plots import slice_browser, slice_figure
from brainseg.plots import write_overlays


@pytest.fixture
def evaluated_case(tmp_path):
    """A case folder as ``evaluate_checkpoint`` writes it: ``<out>/<case>/NN.png`` and ``<out>/<case>.gif``."""
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    write_overlays(frames, tmp_path / "TCGA_XX_0001_20000101", tmp_path / "TCGA_XX_0001_20000101.gif")
    return tmp_path / "TCGA_XX_0001_20000101", frames


def test_slice_figure_shows_the_chosen_slice_and_its_number(evaluated_case):
    _, frames = evaluated_case
    fig = slice_figure(frames, 2, "TCGA_XX_0001_20000101")
    [ax] = fig.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), frames[2])
    assert ax.get_title().startswith("TCGA_XX_0001_20000101: slice 3/5\n")
    with pytest.raises(IndexError, match="slice index 5 out of range: the case has 5 slices"):
        slice_figure(frames, 5)


def test_browser_without_ipywidgets_shows_the_gif(evaluated_case, monkeypatch):
    case_dir, _ = evaluated_case
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails as if not installed
    shown = slice_browser(case_dir)
    assert type(shown).__name__ == "Image" and shown.data == (case_dir.parent / f"{case_dir.name}.gif").read_bytes()


def test_browser_slider_covers_every_slice(evaluated_case):
    pytest.importorskip("ipywidgets")
    case_dir, _ = evaluated_case
    browser = slice_browser(case_dir)
    slider = browser.children[0]
    assert (slider.min, slider.max, slider.value) == (1, 5, 3)
    slider.value = 5
    assert browser.result.axes[0].get_title().startswith("TCGA_XX_0001_20000101: slice 5/5")
