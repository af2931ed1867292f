import numpy as np
import pytest
import tifffile
import torch

from brainseg.checkpoint import save_checkpoint
from brainseg.cli import main
from brainseg.config import TrainConfig
from brainseg.models import create_model
from brainseg.predict import predict_case


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig.from_preset("smoke", image_size=32, features=4, amp=False)
    path = tmp_path / "weights" / "run" / "best.pt"
    save_checkpoint(path, create_model("unet", features=4).eval(), config, 1, {})
    return path


def test_predict_writes_masks_in_original_geometry(tmp_path, checkpoint, write_case):
    folder = write_case(tmp_path / "data", "TCGA_XX_0001_20000101", slices=6, size=48)
    for path in folder.glob("*_mask.tif"):
        path.unlink()  # a user's case without masks
    mask = predict_case(str(checkpoint), str(folder), str(tmp_path / "out"))
    assert mask.shape == (6, 48, 48) and set(np.unique(mask)) <= {0, 255}
    written = tifffile.imread(tmp_path / "out" / "TCGA_XX_0001_20000101_3_mask.tif")
    assert written.shape == (48, 48) and written.dtype == np.uint8 and np.array_equal(written, mask[2])
    assert not mask[0].any() and not mask[-1].any()  # the dropped first and last slices
    assert (tmp_path / "out" / "TCGA_XX_0001_20000101.gif").exists()


def test_predict_bad_input(tmp_path, checkpoint, capsys, write_case):
    folder = write_case(tmp_path / "data", "TCGA_XX_0001_20000101", slices=6)
    tifffile.imwrite(folder / "TCGA_XX_0001_20000101_2.tif", np.zeros((64, 64, 4), np.uint8))
    assert main(["predict", "--weights", str(checkpoint), "--case", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "TCGA_XX_0001_20000101_2.tif: expected an image of shape (H, W, 3)" in capsys.readouterr().err
    truth = (folder / "TCGA_XX_0001_20000101_3_mask.tif").read_bytes()
    assert main(["predict", "--weights", str(checkpoint), "--case", str(folder), "--out", str(folder / ".")]) == 2
    assert "the output folder is the case folder" in capsys.readouterr().err
    assert (folder / "TCGA_XX_0001_20000101_3_mask.tif").read_bytes() == truth


def test_predict_names_a_case_that_cannot_be_preprocessed(tmp_path, checkpoint, capsys, write_case):
    folder = write_case(tmp_path / "data", "TCGA_XX_0001_20000101", slices=6)
    for path in folder.glob("*.tif"):
        tifffile.imwrite(path, np.zeros_like(tifffile.imread(path)))
    assert main(["predict", "--weights", str(checkpoint), "--case", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert (f"error: TCGA_XX_0001_20000101: volume has no intensity range (p10=0.0, p99=0.0); check the case's TIFFs "
            f"at {folder}") in capsys.readouterr().err
