import numpy as np
import pytest

from brainseg.data.preprocess import Geometry
from brainseg.data.volume import CaseVolume, context_of, input_channels, neighbour_indices, with_context


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
