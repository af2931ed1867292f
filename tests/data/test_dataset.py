import numpy as np
import pytest
import torch

from brainseg.data.volume import CaseVolume
from brainseg.data.dataset import SliceDataset, make_sampler, mask_weighted_slice_weights
from brainseg.data.preprocess import Geometry

GEOMETRY = Geometry((1, 4), (0, 8), (0, 8), (0, 0), (0, 0), 8)


def volume(case_id, areas):
    mask = np.zeros((len(areas), 8, 8), np.uint8)
    for i, area in enumerate(areas):
        mask[i].flat[:area] = 1
    image = np.random.default_rng(0).standard_normal((len(areas), 3, 8, 8)).astype(np.float16)
    return CaseVolume(case_id, image, mask, mask, GEOMETRY)


def test_reference_slice_weights():
    weights = mask_weighted_slice_weights([volume("a", [0, 10, 30]), volume("b", [0, 0])])
    # case a: (area + 0.1 * 40 / 3) / (1.1 * 40), then halved (two cases); case b has no lesion: uniform
    expected_a = (np.array([0, 10, 30]) + 4 / 3) / 44 / 2
    np.testing.assert_allclose(weights.numpy(), np.concatenate([expected_a, [0.25, 0.25]]))
    assert weights.sum().item() == pytest.approx(1.0)


def test_dataset_items_and_samplers():
    dataset = SliceDataset([volume("a", [0, 10, 30]), volume("b", [5, 0])])
    image, mask = dataset[3]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and mask.shape == (1, 8, 8)
    assert mask.sum() == 5 and len(dataset) == 5
    for kind in ("weighted", "shuffle"):
        indices = list(make_sampler(dataset, kind, torch.Generator().manual_seed(0)))
        assert len(indices) == 5 and all(0 <= i < 5 for i in indices)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler(dataset, "balanced", torch.Generator())
    with pytest.raises(ValueError, match="at least one case"):
        SliceDataset([])
