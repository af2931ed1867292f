"""ForegroundCrop: full-resolution training windows, centred on lesions at random."""

import pytest
import torch

from brainseg.config import TrainConfig
from brainseg.transforms import ForegroundCrop, JointAugment, chain
from brainseg.train import fit


def numbered_slice(size=64):
    """image (3, size, size) whose pixels hold their own flat index, and an empty mask."""
    image = torch.arange(3 * size * size, dtype=torch.float32).reshape(3, size, size)
    return image, torch.zeros(1, size, size)


def test_the_window_is_a_piece_of_the_slice():
    torch.manual_seed(0)
    image, mask = numbered_slice()
    for _ in range(20):
        crop_image, crop_mask = ForegroundCrop(16, foreground=0.0)(image, mask)
        assert crop_image.shape == (3, 16, 16) and crop_mask.shape == (1, 16, 16)
        top, left = divmod(int(crop_image[0, 0, 0]), 64)
        assert torch.equal(crop_image, image[:, top:top + 16, left:left + 16])


def test_uniform_windows_reach_every_corner():
    torch.manual_seed(0)
    image, mask = numbered_slice(32)
    corners = {divmod(int(ForegroundCrop(16, 0.0)(image, mask)[0][0, 0, 0]), 32) for _ in range(6000)}
    assert {(0, 0), (0, 16), (16, 0), (16, 16)} <= corners and len(corners) == 17 * 17


def test_foreground_windows_centre_a_lesion_pixel_and_stay_inside():
    torch.manual_seed(0)
    image, mask = numbered_slice()
    mask[0, 3, 60] = 1  # one lesion pixel near the top-right border
    for _ in range(50):
        crop_image, crop_mask = ForegroundCrop(16, foreground=1.0)(image, mask)
        assert crop_mask.sum() == 1
        assert divmod(int(crop_image[0, 0, 0]), 64) == (0, 48)  # centred on (3, 60), shifted inside


def test_half_the_windows_are_drawn_on_the_lesion():
    torch.manual_seed(0)
    image, mask = numbered_slice(128)
    mask[0, 10, 10] = 1
    hits = sum(int(ForegroundCrop(32, foreground=0.5)(image, mask)[1].sum()) for _ in range(1000))
    # 0.5 by centring plus 0.5 x P(a uniform 32-px window holds pixel (10, 10)) = 0.5 * (11/97)^2
    assert hits / 1000 == pytest.approx(0.5 + 0.5 * (11 / 97) ** 2, abs=0.05)


def test_bad_sizes_are_named():
    image, mask = numbered_slice(32)
    with pytest.raises(ValueError, match=r"crop size 48 exceeds the slice \(32x32\)"):
        ForegroundCrop(48)(image, mask)
    with pytest.raises(ValueError, match=r"crop_foreground must be in \[0, 1\], got 2"):
        ForegroundCrop(16, foreground=2)
    with pytest.raises(ValueError, match="crop_size must be 0 or a multiple of 16 below image_size 64, got 64"):
        TrainConfig.preset("smoke", crop_size=64)
    with pytest.raises(ValueError, match="crop_size needs augment sample"):
        TrainConfig.preset("smoke", crop_size=32, augment="batch")


def test_chain_applies_the_augmentation_then_the_crop():
    torch.manual_seed(0)
    image, mask = numbered_slice(32)
    out_image, out_mask = chain(JointAugment(scale=0, angle=0, flip_prob=1.0), ForegroundCrop(16, 0.0))(image, mask)
    flipped = image.flip(-1)
    top = next(t for t in range(17) for left in range(17)
               if torch.equal(out_image, flipped[:, t:t + 16, left:left + 16]))
    assert out_mask.shape == (1, 16, 16) and top >= 0
    assert chain(None, None) is None


def test_fit_trains_on_windows_and_validates_whole_slices(synthetic_data, tmp_path):
    config = TrainConfig.preset(
        "smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"), logs_dir=str(tmp_path / "logs"),
        weights_dir=str(tmp_path / "weights"), run_name="crops", split="kfold", folds=3, image_size=64,
        crop_size=32, batch_size=4, features=4, max_train_cases=0)
    result = fit(config, progress=False)
    assert result["epochs"] == 2 and result["image_size"] == 64 and result["config"]["crop_size"] == 32
    assert len(result["per_case"]) == 2  # whole 64 px slices validated (the smoke preset's 2 cases)
