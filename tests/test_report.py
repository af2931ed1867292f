import numpy as np
import pytest
from medpy.metric.binary import assd, hd95

from brainseg.metrics import case_metrics
from brainseg.plots import case_overlays, dsc_chart, read_overlays, write_overlays


def two_boxes():
    truth = np.zeros((4, 32, 32), bool)
    truth[1:3, 8:16, 8:16] = True
    probs = np.zeros((4, 32, 32))
    probs[1:3, 10:18, 8:16] = 0.9  # shifted by 2 rows: 6 of 8 rows overlap
    probs[0, 28:30, 28:30] = 0.8  # a separate false positive, removed by the largest-component rule
    return probs, truth


def test_case_metrics_known_values():
    probs, truth = two_boxes()
    m = case_metrics(probs, truth)
    assert m["dsc"] == pytest.approx(2 * 96 / (128 + 128))
    assert m["dsc_no_lcc"] == pytest.approx(2 * 96 / (132 + 128))
    assert m["precision"] == pytest.approx(96 / 128) and m["recall"] == pytest.approx(96 / 128)
    pred = probs > 0.5
    pred[0] = False
    assert m["hd95_px"] == pytest.approx(hd95(pred, truth)) and m["assd_px"] == pytest.approx(assd(pred, truth))
    assert m["pred_volume_px"] == 128 and m["true_volume_px"] == 128


def test_empty_masks_have_documented_values():
    empty = np.zeros((4, 32, 32))
    both = case_metrics(empty, empty.astype(bool))
    assert (both["dsc"], both["precision"], both["recall"], both["hd95_px"], both["assd_px"]) == (1, 1, 1, 0, 0)
    truth = np.zeros((4, 32, 32), bool)
    truth[1, 4:8, 4:8] = True
    missed = case_metrics(empty, truth)
    diagonal = np.sqrt(4**2 + 32**2 + 32**2)
    assert missed["dsc"] == 0 and missed["recall"] == 0 and missed["hd95_px"] == pytest.approx(diagonal)


def test_chart_overlays_and_gif(tmp_path):
    import imageio.v3 as iio

    dsc_chart({"a": 0.5, "b": 0.9, "c": 0.7}, tmp_path / "dsc.png", title="test")
    assert iio.imread(tmp_path / "dsc.png").shape[-1] in (3, 4)
    probs, truth = two_boxes()
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
