import re

import numpy as np
import pytest
import tifffile

from brainseg.data import cache
from brainseg.data.cache import load_volumes
from brainseg.cli import main
from brainseg.data.kaggle import DatasetError, discover_cases, read_case
from brainseg.data.preprocess import preprocess_case


def test_cache_round_trip_and_reuse(synthetic_data, tmp_path, monkeypatch):
    ids = sorted(discover_cases(synthetic_data))[:3]
    first = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    image, mask = read_case(discover_cases(synthetic_data)[ids[0]])
    volume, labels, geometry = preprocess_case(image, mask, 32)
    case = first[0]
    assert case.image.dtype == np.float16 and case.image.shape == (volume.shape[0], 3, 32, 32)
    np.testing.assert_allclose(case.image.astype(np.float32), volume.transpose(0, 3, 1, 2), atol=4e-3)
    np.testing.assert_array_equal(case.mask, labels)
    assert case.metric_mask.shape == (volume.shape[0], 256, 256) and case.geometry == geometry

    def no_rebuild(*args):
        raise AssertionError("a cached case was rebuilt")

    monkeypatch.setattr(cache, "_build", no_rebuild)
    second = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    for a, b in zip(first, second):
        assert a.case_id == b.case_id and np.array_equal(a.image, b.image) and np.array_equal(a.metric_mask, b.metric_mask)
        assert np.array_equal(a.mask, b.mask) and b.geometry == a.geometry and hash(b.geometry) == hash(a.geometry)


def test_changed_files_and_damaged_entries_are_rebuilt(synthetic_data, tmp_path):
    ids = sorted(discover_cases(synthetic_data))[:2]
    load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    folder = next((tmp_path / "cache").iterdir())
    (folder / f"{ids[1]}.npz").write_bytes(b"damaged")
    slice_file = synthetic_data / ids[0] / f"{ids[0]}_3_mask.tif"
    slice_file.write_bytes(slice_file.read_bytes())  # touch: new modification time
    built = []
    original = cache._build

    def counting_build(files, size):
        built.append(files.case_id)
        return original(files, size)

    cache._build = counting_build
    try:
        load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    finally:
        cache._build = original
    assert sorted(built) == ids


def test_unknown_case(synthetic_data, tmp_path):
    with pytest.raises(DatasetError, match="unknown case ids"):
        load_volumes(["TCGA_NOPE"], 32, synthetic_data, tmp_path, progress=False)


def make_flat(case_folder):
    """Blacken every slice of a case, as a broken export would."""
    for path in case_folder.glob("*.tif"):
        if not path.stem.endswith("_mask"):
            tifffile.imwrite(path, np.zeros_like(tifffile.imread(path)))


def test_a_flat_case_is_named_with_its_folder(synthetic_data, tmp_path):
    case = sorted(discover_cases(synthetic_data))[0]
    make_flat(synthetic_data / case)
    message = (rf"^{case}: volume has no intensity range \(p10=0.0, p99=0.0\); "
               rf"check the case's TIFFs at {re.escape(str(synthetic_data.resolve() / case))}$")
    with pytest.raises(DatasetError, match=message):
        load_volumes([case], 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)


@pytest.mark.slow
def test_a_preprocessing_error_prints_on_its_own_line_after_the_progress_bar(synthetic_data, tmp_path, capsys):
    for case in discover_cases(synthetic_data):
        make_flat(synthetic_data / case)
    code = main(["train", "--preset", "smoke", "--data", str(synthetic_data), "--cache-dir", str(tmp_path / "cache"),
                 "--logs-dir", str(tmp_path / "logs"), "--weights-dir", str(tmp_path / "weights"),
                 "--split", "kfold", "--folds", "3", "--image-size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and "preprocessing 32px" in err  # the bar was drawn, and the error came while it was open
    [line] = [line for line in err.split("\n") if "no intensity range" in line]
    assert re.match(r"error: TCGA_XX_\d{4}_20000101: volume has no intensity range", line), repr(line)


def test_memory_mapped_images_hold_the_loaded_values_and_cannot_be_written(synthetic_data, tmp_path):
    ids = sorted(discover_cases(synthetic_data))[:2]
    built = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False, mmap=True)
    loaded = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    mapped = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False, mmap=True)
    for first, plain, again in zip(built, loaded, mapped):
        assert isinstance(first.image, np.memmap) and isinstance(again.image, np.memmap)
        assert not isinstance(plain.image, np.memmap)
        np.testing.assert_array_equal(first.image, plain.image)
        np.testing.assert_array_equal(again.image, plain.image)
        np.testing.assert_array_equal(again.mask, plain.mask)
    with pytest.raises(ValueError, match="read-only"):
        mapped[0].image[0, 0, 0, 0] = 1.0  # the cache file cannot be changed through a training's data


def test_a_mapped_volume_pickles_as_its_file_and_a_loaded_one_as_its_values(synthetic_data, tmp_path):
    import pickle

    ids = sorted(discover_cases(synthetic_data))[:1]
    [loaded] = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    [mapped] = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False, mmap=True)
    sent_mapped, sent_loaded = pickle.dumps(mapped), pickle.dumps(loaded)
    assert len(sent_mapped) < len(sent_loaded) - mapped.image.nbytes // 2  # the voxels stay in the file
    arrived = pickle.loads(sent_mapped)  # as a spawned DataLoader worker receives it
    assert isinstance(arrived.image, np.memmap) and not isinstance(pickle.loads(sent_loaded).image, np.memmap)
    np.testing.assert_array_equal(arrived.image, loaded.image)
    np.testing.assert_array_equal(arrived.mask, loaded.mask)


def test_a_mapped_volume_keeps_its_values_when_its_entry_is_rebuilt(synthetic_data, tmp_path):
    ids = sorted(discover_cases(synthetic_data))[:1]
    [mapped] = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False, mmap=True)
    before = np.array(mapped.image)
    folder = next((tmp_path / "cache").iterdir())
    (folder / f"{ids[0]}.npz").unlink()  # a missing entry is built and written again (atomically)
    load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    np.testing.assert_array_equal(mapped.image, before)  # the run that mapped it reads the old file
