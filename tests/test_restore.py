import numpy as np
import pytest

from brainseg.preprocess import preprocess_case, restore_geometry


def make_case_volume(depth=8, height=96, width=80):
    """A bright elliptic head with a round lesion on the middle slices, in a dark frame."""
    yy, xx = np.mgrid[:height, :width]
    head = ((yy - 50) / 40) ** 2 + ((xx - 38) / 30) ** 2 < 1
    lesion = (yy - 45) ** 2 + (xx - 45) ** 2 < 12 ** 2
    image = np.zeros((depth, height, width, 3), np.uint8)
    image[:, head] = 120
    image[2:6, lesion] = 220
    mask = np.zeros((depth, height, width), np.uint8)
    mask[2:6, lesion] = 255
    return image, mask


def test_restore_round_trip_on_synthetic_mask():
    image, mask = make_case_volume()
    _, labels, geometry = preprocess_case(image, mask, 64)
    restored = restore_geometry(labels, geometry, mask.shape, order=0) > 0.5
    truth = mask > 0
    truth[[0, -1]] = False  # the first and last slices are dropped by preprocessing
    disagreement = np.logical_xor(restored, truth).sum() / truth.sum()
    assert disagreement < 0.1


def test_restore_rejects_wrong_shape():
    image, mask = make_case_volume()
    _, labels, geometry = preprocess_case(image, mask, 64)
    with pytest.raises(ValueError, match="expected a volume of shape"):
        restore_geometry(labels[:, :32], geometry, mask.shape)
