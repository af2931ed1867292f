from pathlib import Path

import numpy as np
import pytest
from skimage.exposure import rescale_intensity
from skimage.transform import resize

from brainseg.data.kaggle import discover_cases, read_case
from brainseg.data.preprocess import (crop_and_pad, crop_box, normalize_volume, preprocess_case, resize_slices,
                                     restore_geometry, square_padding)

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "kaggle_3m"  # the two committed sample cases
CASE = "TCGA_CS_4944_20010208"  # a reference validation case of the real dataset


def make_volume(depth=6, height=40, width=50):
    """A uint8 volume whose bright block spans slices 2-4, rows 5-24, cols 10-39 (after dropping slice 0)."""
    image = np.full((depth, height, width, 3), 5, np.uint8)  # dim background (< 10% of max)
    image[2:5, 5:25, 10:40] = 200
    image[3, 10:15, 20:25, 1] = 250
    mask = np.zeros((depth, height, width), np.uint8)
    mask[3, 10:15, 20:25] = 255
    return image, mask


def test_crop_box_finds_bright_voxels():
    image, _ = make_volume()
    box = crop_box(image.astype(np.float32))
    assert box == (slice(2, 5), slice(5, 25), slice(10, 40))


def test_square_padding_floor_before_ceil_after():
    assert square_padding(20, 30) == ((5, 5), (0, 0))
    assert square_padding(20, 27) == ((3, 4), (0, 0))
    assert square_padding(27, 20) == ((0, 0), (3, 4))
    assert square_padding(16, 16) == ((0, 0), (0, 0))


def test_crop_and_pad_geometry_and_content():
    image, mask = make_volume()
    volume, labels, geometry = crop_and_pad(image, mask)
    # crop: 3 slices x 20 rows x 30 cols, padded to 30 x 30 with 5 rows above and below
    assert volume.shape == (3, 30, 30, 3) and labels.shape == (3, 30, 30)
    assert geometry.slices == (2, 5) and geometry.rows == (5, 25) and geometry.cols == (10, 40)
    assert geometry.pad_before == (5, 0) and geometry.pad_after == (5, 0)
    assert (volume[:, :5] == 0).all() and (volume[:, 25:] == 0).all()
    assert labels.sum() == 25 and labels[1, 10:15, 10:15].all()  # slice 3 -> 1, rows +5 pad -5 crop, cols -10 crop


def test_dim_voxels_are_zeroed_and_first_last_slices_dropped():
    image, mask = make_volume()
    image[0] = 255  # the first slice is dropped before anything else, so it cannot set the maximum
    volume, _, geometry = crop_and_pad(image, mask)
    assert volume.max() == 250 and geometry.slices == (2, 5)
    assert set(np.unique(volume)) <= {0, 200, 250}


def test_preprocess_case_output_shapes_and_statistics():
    image, mask = make_volume()
    volume, labels, geometry = preprocess_case(image, mask, size=32)
    assert volume.shape == (3, 32, 32, 3) and volume.dtype == np.float32
    assert labels.shape == (3, 32, 32) and labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert geometry.size == 32
    np.testing.assert_allclose(volume.astype(np.float64).mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(volume.astype(np.float64).std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_normalize_volume_percentiles():
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 100, size=(4, 8, 8, 3)).astype(np.float32)
    out = normalize_volume(volume)
    low, high = np.percentile(volume, (10, 99))
    rescaled = np.clip((volume - low) / (high - low), 0, 1)
    expected = (rescaled - rescaled.mean(axis=(0, 1, 2))) / rescaled.std(axis=(0, 1, 2))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_normalize_constant_volume_fails():
    with pytest.raises(ValueError, match="no intensity range"):
        normalize_volume(np.ones((2, 4, 4, 3), np.float32))


@pytest.mark.parametrize("size", [16, 48, 64])
def test_resize_matches_skimage(size):
    rng = np.random.default_rng(1)
    volume = rng.uniform(0, 255, size=(3, 30, 30, 3)).astype(np.float32)
    expected = resize(volume.astype(np.float64), (3, size, size, 3), order=2, mode="constant", cval=0,
                      anti_aliasing=False, preserve_range=True)
    np.testing.assert_allclose(resize_slices(volume, size, order=2), expected, atol=1e-3)
    mask = (rng.uniform(size=(3, 30, 30)) > 0.7).astype(np.uint8)
    expected_mask = resize(mask, (3, size, size), order=0, mode="constant", cval=0, anti_aliasing=False,
                           preserve_range=True)
    np.testing.assert_array_equal(resize_slices(mask, size, order=0), expected_mask)


def test_too_few_slices_and_bad_shape():
    image, mask = make_volume()
    image, mask = image[:2], mask[:2]
    with pytest.raises(ValueError, match="at least 3 slices"):
        preprocess_case(image, mask)
    with pytest.raises(ValueError, match=r"\(D, H, W, 3\)"):
        preprocess_case(image[..., 0], mask)


def test_restore_geometry_rejects_a_wrong_shape():
    image, mask = make_volume()
    _, labels, geometry = preprocess_case(image, mask, 32)
    with pytest.raises(ValueError, match=r"expected a volume of shape \(3, 32, 32\)"):
        restore_geometry(labels[:, :16], geometry, mask.shape)


@pytest.mark.slow
@pytest.mark.parametrize("size, max_error", [(256, 0.005), (128, 0.08)])
def test_restoring_a_preprocessed_mask_reproduces_the_original(size, max_error):
    """Measured on the two samples: 0% of the lesion differs at 256 px, 4.0% and 5.9% at 128 px."""
    for files in discover_cases(SAMPLES).values():
        image, mask = read_case(files)
        _, labels, geometry = preprocess_case(image, mask, size)
        restored = restore_geometry(labels, geometry, mask.shape, order=0) > 0.5
        truth = mask > 0
        truth[[0, -1]] = False  # preprocessing drops the first and last slice
        assert restored.shape == mask.shape
        assert np.logical_xor(restored, truth).sum() / truth.sum() <= max_error


def reference_preprocessing(image: np.ndarray, mask: np.ndarray, size: int):
    """docs/protocol.md, section 2, written independently in float64 with the reference's skimage calls."""
    volume, labels = image[1:-1].astype(np.float64), mask[1:-1]
    volume[volume < np.max(volume) * 0.1] = 0
    nonzero = [np.nonzero(volume.max(axis=tuple(a for a in range(4) if a != axis)))[0] for axis in range(3)]
    box = tuple(slice(n.min(), n.max() + 1) for n in nonzero)
    volume, labels = volume[box], labels[box]
    a, b = volume.shape[1:3]
    diff = (max(a, b) - min(a, b)) / 2.0
    pad = (int(np.floor(diff)), int(np.ceil(diff)))
    padding = ((0, 0), (0, 0), pad) if a > b else ((0, 0), pad, (0, 0))
    labels = np.pad(labels, padding)
    volume = np.pad(volume, padding + ((0, 0),))
    labels = resize(labels, (labels.shape[0], size, size), order=0, mode="constant", cval=0, anti_aliasing=False)
    volume = resize(volume, (volume.shape[0], size, size, 3), order=2, mode="constant", cval=0, anti_aliasing=False)
    p10, p99 = np.percentile(volume, 10), np.percentile(volume, 99)
    volume = rescale_intensity(volume, in_range=(p10, p99))
    volume = (volume - volume.mean(axis=(0, 1, 2))) / volume.std(axis=(0, 1, 2))
    return volume, labels > 0


@pytest.mark.slow
@pytest.mark.realdata
def test_preprocessing_matches_an_independent_implementation(real_data):
    image, mask = read_case(discover_cases(real_data)[CASE])
    ours, labels, geometry = preprocess_case(image, mask, 256)
    expected, expected_labels = reference_preprocessing(image, mask, 256)
    assert ours.shape == expected.shape and geometry.size == 256
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    np.testing.assert_array_equal(labels.astype(bool), expected_labels)
