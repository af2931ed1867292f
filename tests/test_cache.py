import numpy as np
import pytest

from brainseg import cache
from brainseg.cache import load_volumes
from brainseg.data import DatasetError, discover_cases, read_case
from brainseg.preprocess import preprocess_case


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
