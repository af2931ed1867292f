"""Pictures: an evaluation's DSC chart, overlays and GIF; for notebooks, the slice figure and the slice
browser with and without ipywidgets."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from brainseg.data.transforms import JointAugment
from brainseg.data.volume import CaseVolume
from brainseg.plots import (augmentation_preview, best_and_worst, case_overlays, dsc_chart, gif_gallery,
                            paired_scatter, read_overlays, slice_browser, slice_figure, write_overlays)


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


def test_chart_overlays_and_gif(tmp_path, two_boxes):
    import imageio.v3 as iio

    dsc_chart({"a": 0.5, "b": 0.9, "c": 0.7}, tmp_path / "dsc.png", title="test")
    assert iio.imread(tmp_path / "dsc.png").shape[-1] in (3, 4)
    probs, truth = two_boxes
    frames = case_overlays(np.random.default_rng(0).random((4, 32, 32)), truth, probs > 0.5)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    assert (frames[1, 8, 8] == [0, 255, 0]).all()  # truth outline in green
    assert (frames[1, 17, 12] == [255, 0, 0]).all()  # prediction outline in red
    write_overlays(frames, tmp_path / "case", tmp_path / "case.gif")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["01.png", "02.png", "03.png", "04.png"]
    assert len(iio.imread(tmp_path / "case.gif", index=None)) == 4


def test_overlays_read_back_in_slice_order(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (11, 8, 8, 3), dtype=np.uint8)
    write_overlays(frames, tmp_path / "case", tmp_path / "case.gif")
    np.testing.assert_array_equal(read_overlays(tmp_path / "case"), frames)  # 10.png after 09.png
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no slice overlays .*without --no-overlays"):
        read_overlays(tmp_path / "empty")


def test_paired_scatter_colours_wins_losses_and_ties(tmp_path):
    a = {"w": 0.5, "l": 0.8, "t": 0.7, "only_a": 0.1}
    b = {"w": 0.7, "l": 0.6, "t": 0.705, "only_b": 0.2}
    fig = paired_scatter(a, b, names=("base", "new"), path=tmp_path / "paired.png")
    ax = fig.axes[0]
    assert ax.get_title() == "3 cases: 1 better, 1 worse (by > 0.01)"
    points = {tuple(np.round(p, 3)) for c in ax.collections for p in c.get_offsets()}
    assert points == {(0.5, 0.7), (0.8, 0.6), (0.7, 0.705)}  # the common cases only
    assert ax.get_xlabel() == "base: DSC per case" and (tmp_path / "paired.png").stat().st_size > 0
    with pytest.raises(ValueError, match="base and new have no case in common"):
        paired_scatter({"x": 0.5}, {"y": 0.5}, names=("base", "new"))
    exact = paired_scatter({"p": 0.92, "q": 0.51}, {"p": 0.93, "q": 0.50}, names=("base", "new"))  # moves of 0.01
    assert exact.axes[0].get_title() == "2 cases: 0 better, 0 worse (by > 0.01)"  # ties, as paired counts them


def test_best_and_worst_cases_and_their_overlays(tmp_path):
    per_case = {"TCGA_B": 0.9, "TCGA_A": 0.2, "TCGA_C": 0.55, "TCGA_D": 0.9}
    best, worst = best_and_worst(per_case, tmp_path)
    assert (best["case"], best["dsc"]) == ("TCGA_D", 0.9)  # a tie goes to the later name
    assert (worst["case"], worst["dsc"]) == ("TCGA_A", 0.2)
    assert worst["folder"] == tmp_path / "TCGA_A" and worst["gif"] == tmp_path / "TCGA_A.gif"
    assert [p["case"] for p in best_and_worst({"only": 0.4}, tmp_path)] == ["only", "only"]
    with pytest.raises(ValueError, match="no cases"):
        best_and_worst({}, tmp_path)


def test_gif_gallery_captions_each_case_before_its_gif(evaluated_case):
    folder, _ = evaluated_case
    [best, _] = best_and_worst({folder.name: 0.8123}, folder.parent)
    caption, image = gif_gallery([best])
    assert caption.data == "**TCGA_XX_0001_20000101**: DSC 0.812"
    assert image.format == "gif" and image.data == (folder.parent / f"{folder.name}.gif").read_bytes()


def test_paired_scatter_puts_each_training_of_a_side_on_its_own_line():
    fig = paired_scatter({"c": 0.5}, {"c": 0.6}, names=("a1 + a2", "b1 + b2"))
    assert fig.axes[0].get_xlabel() == "a1\n+ a2: DSC per case" and fig.axes[0].get_ylabel() == "b1\n+ b2: DSC per case"


def _volume_with_largest_lesion_on_slice(largest: int) -> CaseVolume:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 3, 16, 16)).astype(np.float16)
    mask = np.zeros((3, 16, 16), dtype=np.uint8)
    mask[:, 4:7, 4:7] = 1
    mask[largest, 3:12, 2:9] = 1
    return CaseVolume("TCGA_XX_0000_20000101", image, mask, mask, None)


def test_augmentation_preview_shows_the_largest_lesion_slice_then_each_draw():
    volume = _volume_with_largest_lesion_on_slice(2)
    fig = augmentation_preview(volume, JointAugment(scale=0, angle=0, flip_prob=1.0), samples=2)
    assert len(fig.axes) == 9 and "slice 3" in fig.texts[0].get_text()
    original = volume.image[2].astype(np.float32)
    for channel in range(3):
        shown = [fig.axes[3 * row + channel].images[0].get_array() for row in range(3)]
        np.testing.assert_array_equal(shown[0], original[channel])
        np.testing.assert_array_equal(shown[1], original[channel][:, ::-1])  # the flip, drawn twice
        np.testing.assert_array_equal(shown[2], original[channel][:, ::-1])
        assert fig.axes[channel].images[0].get_clim() == (original[channel].min(), original[channel].max())
    assert all(ax.collections for ax in fig.axes)  # the mask's outline on every panel
