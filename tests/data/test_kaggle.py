import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg.data.kaggle import (DATA_ENV_VAR, DatasetError, discover_cases, list_case_files, read_case,
                                  resolve_data_dir, run_data_dir)

CASE = "TCGA_CS_4944_20010208"  # a reference validation case of the real dataset


def test_slices_are_ordered_by_integer_number(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101", slices=12)
    files = list_case_files(folder)
    assert files.numbers == tuple(range(1, 13))
    assert [p.name for p in files.images[8:11]] == [
        "TCGA_XX_0001_20000101_9.tif", "TCGA_XX_0001_20000101_10.tif", "TCGA_XX_0001_20000101_11.tif"]
    assert files.masks[9].name == "TCGA_XX_0001_20000101_10_mask.tif"


def test_read_case_shapes(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101", slices=5, size=32)
    image, mask = read_case(list_case_files(folder))
    assert image.shape == (5, 32, 32, 3) and image.dtype == np.uint8
    assert mask.shape == (5, 32, 32) and set(np.unique(mask)) <= {0, 255}


def test_discover_cases_sorted(synthetic_data):
    cases = discover_cases(synthetic_data)
    assert list(cases) == sorted(cases) and len(cases) == 12


def test_missing_dataset_explains_download(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="Kaggle LGG MRI segmentation dataset") as err:
        resolve_data_dir(tmp_path / "nowhere")
    text = str(err.value)
    assert str(tmp_path / "nowhere") in text
    assert "kagglehub" in text and "mateuszbuda/lgg-mri-segmentation" in text and DATA_ENV_VAR in text
    assert "samples/kaggle_3m holds two cases" in text


def test_environment_variable_is_used(synthetic_data, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(synthetic_data))
    assert resolve_data_dir() == synthetic_data.resolve()
    monkeypatch.setenv(DATA_ENV_VAR, str(synthetic_data / "missing"))
    with pytest.raises(DatasetError, match=f"\\${DATA_ENV_VAR}"):
        resolve_data_dir()


def test_a_saved_runs_data_folder_falls_back_to_the_environment_when_it_is_not_on_this_machine(
        synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(synthetic_data))
    elsewhere = "/home/gpu-box/data/kaggle_3m"  # recorded by a run trained with --data on another machine
    assert run_data_dir(None, elsewhere) is None and resolve_data_dir(run_data_dir(None, elsewhere)) == synthetic_data.resolve()
    assert run_data_dir(None, str(tmp_path)) == str(tmp_path)  # the recorded folder, where it exists
    assert run_data_dir("given", str(tmp_path)) == "given" and run_data_dir(None, "") is None


def test_folder_that_is_not_the_dataset(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="not the kaggle_3m dataset"):
        discover_cases(tmp_path)


def test_empty_case_folder(tmp_path):
    (tmp_path / "TCGA_XX_0001_20000101").mkdir()
    with pytest.raises(DatasetError, match="TCGA_XX_0001_20000101: case folder has no slice images"):
        discover_cases(tmp_path)


def test_image_without_mask(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    (folder / "TCGA_XX_0001_20000101_3_mask.tif").unlink()
    with pytest.raises(DatasetError, match="TCGA_XX_0001_20000101_3.tif: image has no mask"):
        list_case_files(folder)


def test_mask_without_image(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    (folder / "TCGA_XX_0001_20000101_4.tif").unlink()
    with pytest.raises(DatasetError, match="TCGA_XX_0001_20000101_4_mask.tif: mask has no image"):
        list_case_files(folder)


def test_unexpected_file_name(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    tifffile.imwrite(folder / "slice_one.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="slice_one.tif: unexpected file name"):
        list_case_files(folder)


def test_upper_case_suffix_and_hidden_copies(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101", slices=3)
    (folder / "TCGA_XX_0001_20000101_3.tif").rename(folder / "TCGA_XX_0001_20000101_3.TIF")
    (folder / "._TCGA_XX_0001_20000101_1.tif").write_bytes(b"macOS resource fork")
    files = list_case_files(folder)
    assert files.numbers == (1, 2, 3) and files.images[2].name.endswith("_3.TIF")


def test_a_slice_file_or_missing_folder_is_not_a_case(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    with pytest.raises(DatasetError, match=f"_1.tif: a file; its case folder is {folder}"):
        list_case_files(folder / "TCGA_XX_0001_20000101_1.tif")
    with pytest.raises(DatasetError, match="nowhere: no such folder"):
        list_case_files(tmp_path / "nowhere")


def test_truncated_tiff(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    path = folder / "TCGA_XX_0001_20000101_2.tif"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="TCGA_XX_0001_20000101_2.tif: cannot read this TIFF"):
        read_case(list_case_files(folder))


@pytest.mark.parametrize("name, array, message", [
    ("_2.tif", np.zeros((64, 64), np.uint8), r"expected an image of shape \(H, W, 3\) uint8, got shape \(64, 64\)"),
    ("_2.tif", np.zeros((64, 64, 3), np.uint16), "dtype uint16"),
    ("_2_mask.tif", np.zeros((64, 64, 3), np.uint8), r"expected a mask of shape \(H, W\) uint8"),
    ("_2_mask.tif", np.full((64, 64), 7, np.uint8), "only 0 and 255"),
    ("_2.tif", np.zeros((32, 64, 3), np.uint8), "expected 64x64 pixels"),
])
def test_wrong_shape_dtype_or_values(tmp_path, name, array, message, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    tifffile.imwrite(folder / f"TCGA_XX_0001_20000101{name}", array)
    with pytest.raises(DatasetError, match=message):
        read_case(list_case_files(folder))


def test_gap_in_slice_numbers(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101", slices=8)
    for name in ("TCGA_XX_0001_20000101_5.tif", "TCGA_XX_0001_20000101_5_mask.tif"):
        (folder / name).unlink()
    with pytest.raises(DatasetError, match=r"slices \[5\] are missing between 1 and 8"):
        list_case_files(folder)


def test_case_without_masks_is_allowed_for_prediction(tmp_path, write_case):
    folder = write_case(tmp_path, "TCGA_XX_0001_20000101")
    for path in folder.glob("*_mask.tif"):
        path.unlink()
    assert list_case_files(folder, require_masks=False).masks is None
    with pytest.raises(DatasetError, match="image has no mask"):
        list_case_files(folder)


@pytest.mark.realdata
def test_dataset_is_complete(real_data):
    cases = discover_cases(real_data)
    assert len(cases) == 110
    assert sum(len(files.images) for files in cases.values()) == 3929


@pytest.mark.realdata
def test_one_case_loads_with_documented_shapes_and_pixels(real_data):
    files = discover_cases(real_data)[CASE]
    image, mask = read_case(files)
    assert image.shape == (len(files.images), 256, 256, 3) and image.dtype == np.uint8
    assert mask.shape == (len(files.images), 256, 256) and set(np.unique(mask)) <= {0, 255}
    manifest_path = Path(real_data).parent / "manifest.csv"
    if manifest_path.exists():  # the shared copy ships SHA-256 of the decoded pixels
        with open(manifest_path) as handle:
            manifest = {row["file"]: row for row in csv.DictReader(handle)}
        for i in (0, len(files.images) // 2):
            for array, path in ((image[i], files.images[i]), (mask[i], files.masks[i])):
                row = manifest[f"{CASE}/{path.name}"]
                assert hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == row["pixels_sha256"]
