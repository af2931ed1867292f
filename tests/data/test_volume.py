import numpy as np
import pytest

from brainseg.data.preprocess import Geometry
from brainseg.data.volume import (CaseVolume, context_of, input_channels, neighbour_indices, with_context,
                                   with_lesion_fraction)


def test_a_case_volume_counts_its_slices():
    geometry = Geometry((1, 4), (0, 8), (0, 8), (0, 0), (0, 0), 8)
    image = np.zeros((3, 3, 8, 8), np.float16)
    masks = np.zeros((3, 8, 8), np.uint8), np.zeros((3, 256, 256), np.uint8)
    volume = CaseVolume("TCGA_XX_0001_20000101", image, *masks, geometry)
    assert volume.num_slices == 3 and volume.case_id == "TCGA_XX_0001_20000101" and volume.geometry == geometry


def test_neighbours_repeat_the_edge_slice():
    assert neighbour_indices(4, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert neighbour_indices(2, 2).tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    assert neighbour_indices(3, 0).tolist() == [[0], [1], [2]]


def test_slices_with_context_stack_the_neighbours_in_slice_order():
    images = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)  # (D, 3, S, S)
    stacked = with_context(images, np.array([0, 2]), context=1)
    assert stacked.shape == (2, 9, 2, 2)
    np.testing.assert_array_equal(stacked[0], np.concatenate([images[0], images[0], images[1]]))
    np.testing.assert_array_equal(stacked[1], np.concatenate([images[1], images[2], images[3]]))
    np.testing.assert_array_equal(with_context(images, np.array([3, 1]), context=0), images[[3, 1]])


def test_input_channels_and_their_inverse():
    assert [input_channels(k) for k in range(4)] == [3, 9, 15, 21]
    assert [context_of(input_channels(k)) for k in range(4)] == [0, 1, 2, 3]
    for channels in (4, 6, 12):
        with pytest.raises(ValueError, match=f"a model reading {channels} channels does not take"):
            context_of(channels)


def _volume_with_metric_mask(metric_mask: np.ndarray, size: int) -> CaseVolume:
    depth = metric_mask.shape[0]
    geometry = Geometry((1, 1 + depth), (0, 256), (0, 256), (0, 0), (0, 0), size)
    nearest = metric_mask[:, ::256 // size, ::256 // size]
    return CaseVolume("TCGA_XX_0001_20000101", np.zeros((depth, 3, size, size), np.float16), nearest,
                      metric_mask, geometry)


def test_lesion_fraction_is_the_share_of_each_pixel_the_lesion_covers():
    metric = np.zeros((2, 256, 256), np.uint8)
    metric[0, 10:12, 20:22] = 1  # one whole 128 px pixel: (5, 10)
    metric[0, 31, 41] = 1  # a quarter of pixel (15, 20)
    metric[1, 100:103, 50:52] = 1  # pixel (50, 25) whole, (51, 25) half
    volume = _volume_with_metric_mask(metric, 128)
    soft = with_lesion_fraction(volume)
    assert soft.target.shape == (2, 128, 128) and soft.target.dtype == np.float16
    assert soft.target[0, 5, 10] == 1 and soft.target[0, 15, 20] == 0.25
    assert soft.target[1, 50, 25] == 1 and soft.target[1, 51, 25] == 0.5
    assert soft.target.sum() == metric.sum() / 4  # the lesion's area is kept, in training pixels
    assert soft.training_target is soft.target and volume.training_target is volume.mask
    assert soft.mask is volume.mask and soft.image is volume.image and soft.metric_mask is volume.metric_mask
    assert volume.target is None  # the original is not changed


def test_lesion_fractions_need_a_training_size_that_divides_256():
    volume = _volume_with_metric_mask(np.zeros((1, 256, 256), np.uint8), 128)
    volume.mask = np.zeros((1, 96, 96), np.uint8)
    with pytest.raises(ValueError, match="divides 256, got 96"):
        with_lesion_fraction(volume)


def test_at_the_metric_size_the_lesion_fraction_is_the_metric_mask():
    metric = (np.random.default_rng(0).random((3, 256, 256)) > 0.7).astype(np.uint8)
    np.testing.assert_array_equal(with_lesion_fraction(_volume_with_metric_mask(metric, 256)).target, metric)
