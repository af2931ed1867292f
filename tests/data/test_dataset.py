import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from brainseg.config import TrainConfig
from brainseg.data.volume import CaseVolume
from brainseg.data.dataset import DeviceBatches, SliceDataset, make_sampler, mask_weighted_slice_weights
from brainseg.data.preprocess import Geometry
from brainseg.tools.bench import synthetic_volumes
from brainseg.train import fit

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


def test_items_with_context_hold_the_neighbouring_slices():
    case = volume("a", [0, 10, 30])
    dataset = SliceDataset([case, volume("b", [5, 0])], context=1)
    first, mask = dataset[0]  # slice 0 of case a: itself twice (the edge repeated), then slice 1
    assert first.shape == (9, 8, 8) and mask.shape == (1, 8, 8) and mask.sum() == 0
    expected = torch.from_numpy(case.image[[0, 0, 1]].astype(np.float32)).reshape(9, 8, 8)
    assert torch.equal(first, expected)
    middle, mask = dataset[1]
    assert torch.equal(middle[3:6], torch.from_numpy(case.image[1].astype(np.float32))) and mask.sum() == 10
    last, _ = dataset[4]  # slice 1 of case b, its last: slices 0, 1, 1 of b, nothing of case a
    assert torch.equal(last[6:], last[3:6]) and not torch.equal(last[:3], last[3:6])


@pytest.mark.parametrize("kind, context", [("weighted", 0), ("shuffle", 0), ("shuffle", 1)])
def test_same_batches_as_the_dataloader(kind, context):
    dataset = SliceDataset(synthetic_volumes(3, 5, 16), context=context)
    loader = DataLoader(dataset, batch_size=4, sampler=make_sampler(dataset, kind, torch.Generator().manual_seed(3)))
    batches = DeviceBatches(dataset, make_sampler(dataset, kind, torch.Generator().manual_seed(3)), 4,
                            torch.device("cpu"))
    assert len(batches) == len(loader) == 4  # 15 slices: 4 + 4 + 4 + 3
    for _ in range(2):  # two passes: the sampler draws anew each time, as in the DataLoader
        pairs = list(zip(loader, batches, strict=True))
        for (image, mask), (image_d, mask_d) in pairs:
            assert image_d.dtype == mask_d.dtype == torch.float32
            assert torch.equal(image_d, image) and torch.equal(mask_d, mask)
        assert [len(image) for (image, _), _ in pairs] == [4, 4, 4, 3]


def test_needs_batch_augmentation():
    with pytest.raises(ValueError, match="data_on_device needs augment batch"):
        TrainConfig.from_preset("smoke", data_on_device=True)


@pytest.mark.slow
def test_fit_trains_from_device_data(synthetic_data, tmp_path):
    config = TrainConfig.from_preset(
        "smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"), logs_dir=str(tmp_path / "logs"),
        weights_dir=str(tmp_path / "weights"), run_name="device", split="kfold", folds=3, image_size=32,
        batch_size=4, features=4, max_train_cases=0, augment="batch", data_on_device=True)
    result = fit(config, progress=False)
    assert result["epochs"] == 2 and result["train_cases"] == 8 and len(result["per_case"]) == 2
    assert result["config"]["data_on_device"] is True


def test_device_batches_copy_memory_mapped_volumes(synthetic_data, tmp_path):
    from brainseg.data.cache import load_volumes
    from brainseg.data.kaggle import discover_cases

    ids = sorted(discover_cases(synthetic_data))[:2]
    loaded = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False)
    mapped = load_volumes(ids, 32, synthetic_data, tmp_path / "cache", workers=1, progress=False, mmap=True)
    batches = [DeviceBatches(dataset, make_sampler(dataset, "shuffle", torch.Generator().manual_seed(3)), 4,
                             torch.device("cpu")) for dataset in (SliceDataset(loaded), SliceDataset(mapped))]
    assert torch.equal(batches[0].images, batches[1].images)
    for (image, mask), (image_m, mask_m) in zip(*batches, strict=True):
        assert torch.equal(image, image_m) and torch.equal(mask, mask_m)
