import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from brainseg.config import TrainConfig
from brainseg.data.transforms import (ELASTIC_GRID, ELASTIC_STD, FLAIR, GAMMA_RANGE, NOISE_STD_MAX, POST, PRE,
                                      BatchAugment, ForegroundCrop, JointAugment, adjust_intensity, affine_matrices,
                                      chain, elastic_displacement, fill_with_flair, jitter_intensity, warp)
from brainseg.train import fit


def test_marker_moves_with_mask():
    torch.manual_seed(0)
    augment = JointAugment(scale=0.05, angle=15, flip_prob=0.5)
    image = torch.zeros(3, 64, 64)
    mask = torch.zeros(1, 64, 64)
    image[:, 10:16, 40:46] = 1.0  # a marker away from the centre, so rotation and flips move it
    mask[:, 10:16, 40:46] = 1.0
    for _ in range(20):
        out_image, out_mask = augment(image, mask)
        assert out_image.shape == (3, 64, 64) and out_mask.shape == (1, 64, 64)
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour keeps the mask binary
        bright = out_image[1] > 0.5
        rows, cols = torch.nonzero(out_mask[0], as_tuple=True)
        brows, bcols = torch.nonzero(bright, as_tuple=True)
        assert abs(rows.float().mean() - brows.float().mean()) < 1.0
        assert abs(cols.float().mean() - bcols.float().mean()) < 1.0


def test_flip_only_is_an_exact_mirror():
    augment = JointAugment(scale=0, angle=0, flip_prob=1.0)
    image, mask = torch.rand(3, 8, 8), (torch.rand(1, 8, 8) > 0.5).float()
    out_image, out_mask = augment(image, mask)
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_mask, mask.flip(-1))


@pytest.mark.parametrize("kwargs, message", [(dict(scale=1.5), r"scale must be in \[0, 1\), got 1.5"),
                                             (dict(angle=-1), r"angle must be in \[0, 180\], got -1"),
                                             (dict(flip_prob=2), r"flip_prob must be in \[0, 1\], got 2")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JointAugment(**kwargs)


@pytest.mark.parametrize("angle, scale, flip", [(30.0, 1.0, False), (-12.0, 1.04, False), (20.0, 0.96, True),
                                                (0.0, 1.0, True)])
def test_batched_warp_matches_torchvision_per_image(angle, scale, flip):
    """BatchAugment's matrices give torchvision's affine (then flip) of each image, to float precision."""
    torch.manual_seed(1)
    image = torch.rand(2, 3, 48, 48)
    mask = (torch.rand(2, 1, 48, 48) > 0.7).float()
    theta = affine_matrices(torch.tensor([angle, 0.0]), torch.tensor([scale, 1.0]), torch.tensor([flip, False]))
    out_image, out_mask = warp(image, mask, theta)
    expected = TF.affine(image[0], angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                         interpolation=InterpolationMode.BILINEAR)
    expected_mask = TF.affine(mask[0], angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                              interpolation=InterpolationMode.NEAREST)
    if flip:
        expected, expected_mask = expected.flip(-1), expected_mask.flip(-1)
    assert torch.allclose(out_image[0], expected, atol=1e-4)
    assert (out_mask[0] != expected_mask).float().mean() < 0.005  # nearest ties may round apart
    assert torch.allclose(out_image[1], image[1], atol=1e-5) and torch.equal(out_mask[1], mask[1])  # identity


def test_batch_augment_draws_per_image_and_keeps_masks_binary():
    torch.manual_seed(0)
    image = torch.zeros(8, 3, 64, 64)
    image[:, :, 10:16, 40:46] = 1.0
    mask = image[:, :1].clone()
    out_image, out_mask = BatchAugment(scale=0.05, angle=15, flip_prob=0.5)(image, mask)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    centres = [torch.nonzero(m[0]).float().mean(0) for m in out_mask]
    assert len({tuple(c.round().tolist()) for c in centres}) > 1  # not one transform for the whole batch
    for img, m in zip(out_image, out_mask):  # image and mask moved together
        assert torch.allclose(torch.nonzero(img[1] > 0.5).float().mean(0), torch.nonzero(m[0]).float().mean(0), atol=1.0)


def _smooth_slice() -> tuple[torch.Tensor, torch.Tensor]:
    """A (3, 64, 64) image whose channel 0 is a soft blob in [0, 1], and that blob as a (1, 64, 64) mask."""
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.clamp(1.5 - ((y - 30) ** 2 + (x - 36) ** 2).sqrt() / 8, 0, 1)
    return torch.stack([blob, blob, blob]), blob[None].clone()


@pytest.mark.parametrize("batched", [False, True])
def test_soft_masks_are_resampled_like_the_image_and_0_1_masks_by_nearest(batched):
    image, mask = _smooth_slice()
    for soft in (True, False):
        torch.manual_seed(0)
        if batched:
            out_image, out_mask = BatchAugment(0.1, 30, 0.5, soft_mask=soft)(image[None], mask[None])
            out_image, out_mask = out_image[0], out_mask[0]
        else:
            out_image, out_mask = JointAugment(0.1, 30, 0.5, soft_mask=soft)(image, mask)
        gap = (out_mask[0] - out_image[0]).abs().max().item()
        if soft:  # the same bilinear warp as the image's channel
            assert gap < 1e-5
        else:  # nearest neighbour: the values of the input, not interpolated ones
            assert gap > 0.01 and set(out_mask.unique().tolist()) <= set(mask.unique().tolist())


def test_foreground_windows_centre_on_pixels_mostly_lesion_when_the_mask_holds_fractions():
    torch.manual_seed(0)
    image, mask = numbered_slice()
    mask[0, 3, 60], mask[0, 40, 10] = 1.0, 0.3  # a lesion pixel, and a pixel the lesion barely touches
    for _ in range(20):
        _, crop_mask = ForegroundCrop(16, foreground=1.0)(image, mask)
        assert crop_mask.max() == 1.0


def test_batch_augment_rejects_bad_ranges():
    with pytest.raises(ValueError, match="angle must be in"):
        BatchAugment(angle=200)


def _channels_copied(image: torch.Tensor) -> list[tuple[bool, bool]]:
    """Per image of (N, 3, H, W): whether pre- and post-contrast equal FLAIR."""
    return [(torch.equal(x[PRE], x[FLAIR]), torch.equal(x[POST], x[FLAIR])) for x in image]


def test_fill_with_flair_copies_pre_post_or_both_at_the_given_rate():
    torch.manual_seed(0)
    image = torch.randn(3000, 3, 4, 4)
    original = image.clone()
    filled = fill_with_flair(image, 0.5)
    counts = {pattern: _channels_copied(filled).count(pattern) for pattern in
              [(False, False), (True, False), (False, True), (True, True)]}
    assert abs(counts[(False, False)] / 3000 - 0.5) < 0.04  # half untouched
    for pattern in [(True, False), (False, True), (True, True)]:  # each kind about a sixth
        assert abs(counts[pattern] / 3000 - 1 / 6) < 0.03
    assert torch.equal(filled[:, FLAIR], image[:, FLAIR])  # FLAIR itself never changes
    assert torch.equal(image, original)  # the input is not modified


def test_fill_with_flair_at_zero_draws_nothing_and_one_always_fills():
    image = torch.randn(2, 3, 4, 4)
    state = torch.get_rng_state()
    assert fill_with_flair(image, 0.0) is image
    assert torch.equal(torch.get_rng_state(), state)  # no draw: runs without it reproduce
    assert all(any(pattern) for pattern in _channels_copied(fill_with_flair(image, 1.0)))
    single = fill_with_flair(image[0], 1.0)  # one (3, H, W) slice
    assert single.shape == (3, 4, 4) and any(_channels_copied(single[None])[0])


def test_both_augmentations_fill_with_flair_and_keep_the_mask():
    torch.manual_seed(0)
    image, mask = torch.randn(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.5).float()
    out, out_mask = BatchAugment(0, 0, 0, flair_fill=1.0)(image, mask)
    assert torch.equal(out_mask, mask) and all(any(p) for p in _channels_copied(out))
    out, out_mask = JointAugment(0, 0, 0, flair_fill=1.0)(image[0], mask[0])
    assert torch.equal(out_mask, mask[0]) and any(_channels_copied(out[None])[0])
    with pytest.raises(ValueError, match=r"flair_fill must be in \[0, 1\], got 1.5"):
        JointAugment(flair_fill=1.5)


def test_adjust_intensity_known_values():
    image = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 2, 2)  # min 0, max 3
    ones, zeros = torch.ones(1, 1), torch.zeros(1, 1)
    same = adjust_intensity(image, ones, ones, zeros, torch.zeros_like(image))
    assert torch.allclose(same, image)
    squared = adjust_intensity(image, 2 * ones, ones, zeros, torch.zeros_like(image))  # 3 * (x / 3) ** 2
    assert torch.allclose(squared.flatten(), torch.tensor([0.0, 1 / 3, 4 / 3, 3.0]))
    doubled = adjust_intensity(image, ones, 2 * ones, zeros + 0.5, torch.zeros_like(image))  # mean 1.5
    assert torch.allclose(doubled.flatten(), torch.tensor([-1.0, 1.0, 3.0, 5.0]))
    noisy = adjust_intensity(image, ones, ones, zeros, torch.full_like(image, 0.25))
    assert torch.allclose(noisy, image + 0.25)


def test_jitter_intensity_draws_per_image_and_channel_within_its_ranges():
    torch.manual_seed(0)
    image = torch.linspace(-1, 3, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    state = torch.get_rng_state()
    assert jitter_intensity(image, 0.0) is image
    assert torch.equal(torch.get_rng_state(), state)  # no draw: runs without it reproduce
    out = jitter_intensity(image, 1.0)
    assert out.shape == image.shape and not torch.equal(out, image)
    change = (out - image).abs().mean(dim=(2, 3))  # (2, 3): every channel of every image changed
    assert (change > 0).all() and len(set(change.flatten().tolist())) == 6  # independently
    # Gamma keeps the channel's range; contrast at most 1.25x, shift 0.2 and noise add to it.
    span, out_span = image.amax((2, 3)) - image.amin((2, 3)), out.amax((2, 3)) - out.amin((2, 3))
    assert (out_span <= 1.25 * span + 2 * 4 * NOISE_STD_MAX * 1.25).all()
    assert GAMMA_RANGE[0] < 1 < GAMMA_RANGE[1]
    single = jitter_intensity(image[0], 1.0)  # one (3, H, W) slice
    assert single.shape == (3, 8, 8)


def test_intensity_jitter_leaves_mask_and_skips_images_not_drawn():
    torch.manual_seed(1)
    image, mask = torch.randn(64, 3, 8, 8), (torch.rand(64, 1, 8, 8) > 0.5).float()
    out, out_mask = BatchAugment(0, 0, 0, intensity=0.5)(image, mask)
    untouched = (out == image).flatten(1).all(dim=1)
    assert torch.equal(out_mask, mask) and 15 < int(untouched.sum()) < 49  # about half of 64 images
    out, out_mask = JointAugment(0, 0, 0, intensity=1.0)(image[0], mask[0])
    assert torch.equal(out_mask, mask[0]) and not torch.equal(out, image[0])
    with pytest.raises(ValueError, match=r"intensity must be in \[0, 1\], got -0.1"):
        BatchAugment(intensity=-0.1)


def test_a_stack_of_slices_loses_the_same_scan_on_every_slice():
    torch.manual_seed(0)
    image = torch.randn(200, 9, 4, 4)  # 3 slices of 3 channels (2.5D, context 1)
    filled = fill_with_flair(image, 1.0).view(200, 3, 3, 4, 4)
    for slices in filled:
        patterns = {(torch.equal(x[PRE], x[FLAIR]), torch.equal(x[POST], x[FLAIR])) for x in slices}
        assert len(patterns) == 1 and patterns.pop() != (False, False)  # one scan choice for all three slices
    assert torch.equal(filled[:, :, FLAIR], image.view(200, 3, 3, 4, 4)[:, :, FLAIR])


def test_a_stack_of_slices_gets_one_intensity_draw_per_modality():
    torch.manual_seed(0)
    one_slice = torch.randn(16, 3, 32, 32)
    stack = one_slice.repeat(1, 3, 1, 1)  # (16, 9, 32, 32): three copies of each slice
    out = jitter_intensity(stack, 1.0).view(16, 3, 3, 32, 32)
    means = out.mean(dim=(3, 4))  # (16, slices, modalities): equal over slices up to the per-pixel noise
    assert (means - means[:, :1]).abs().max() < 0.02  # independent draws per channel move them by up to 0.4


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
        TrainConfig.from_preset("smoke", crop_size=64)
    with pytest.raises(ValueError, match="crop_size needs augment sample"):
        TrainConfig.from_preset("smoke", crop_size=32, augment="batch")


def test_chain_applies_the_augmentation_then_the_crop():
    torch.manual_seed(0)
    image, mask = numbered_slice(32)
    out_image, out_mask = chain(JointAugment(scale=0, angle=0, flip_prob=1.0), ForegroundCrop(16, 0.0))(image, mask)
    flipped = image.flip(-1)
    top = next(t for t in range(17) for left in range(17)
               if torch.equal(out_image, flipped[:, t:t + 16, left:left + 16]))
    assert out_mask.shape == (1, 16, 16) and top >= 0
    assert chain(None, None) is None


@pytest.mark.slow
def test_fit_trains_on_windows_and_validates_whole_slices(synthetic_data, tmp_path):
    config = TrainConfig.from_preset(
        "smoke", data_dir=str(synthetic_data), cache_dir=str(tmp_path / "cache"), logs_dir=str(tmp_path / "logs"),
        weights_dir=str(tmp_path / "weights"), run_name="crops", split="kfold", folds=3, image_size=64,
        crop_size=32, batch_size=4, features=4, max_train_cases=0)
    result = fit(config, progress=False)
    assert result["epochs"] == 2 and result["image_size"] == 64 and result["config"]["crop_size"] == 32
    assert len(result["per_case"]) == 2  # whole 64 px slices validated (the smoke preset's 2 cases)


def test_elastic_displacement_interpolates_its_control_points():
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert torch.equal(elastic_displacement(2, 9, 9, 0.0), torch.zeros(2, 9, 9, 2))
    assert torch.equal(torch.get_rng_state(), state)  # no draw: runs without it reproduce
    field = elastic_displacement(2, 9, 9, 1.0)
    torch.set_rng_state(state)
    torch.rand(2)  # the draw of which images are hit
    controls = torch.randn(2, 2, ELASTIC_GRID, ELASTIC_GRID) * ELASTIC_STD  # (N, xy, row, col)
    assert field.shape == (2, 9, 9, 2)
    # The 3 x 3 control points sit on the corners, edge midpoints and centre of the 9 x 9 field.
    for row, grid_row in ((0, 0), (4, 1), (8, 2)):
        for col, grid_col in ((0, 0), (4, 1), (8, 2)):
            assert torch.allclose(field[:, row, col], controls[:, :, grid_row, grid_col], atol=1e-6)


def test_elastic_displacement_leaves_images_not_drawn_alone():
    torch.manual_seed(0)
    field = elastic_displacement(64, 8, 8, 0.5)
    moved = field.flatten(1).abs().amax(dim=1) > 0
    assert 15 < int(moved.sum()) < 49  # about half of 64 images
    assert 0.5 * ELASTIC_STD < field[moved].std() < 1.5 * ELASTIC_STD


def test_warp_displacement_is_torchvision_elastic():
    """The batch path (displacement added to the affine grid) and the per-slice path (torchvision's
    elastic) resample alike, so both augmentations bend a slice the same way."""
    torch.manual_seed(2)
    image, mask = torch.rand(2, 3, 24, 24), (torch.rand(2, 1, 24, 24) > 0.6).float()
    field = elastic_displacement(2, 24, 24, 1.0) * 4  # larger than the recipe's, so pixels move
    identity = affine_matrices(torch.zeros(2), torch.ones(2), torch.zeros(2, dtype=torch.bool))
    out_image, out_mask = warp(image, mask, identity, displacement=field)
    for n in range(2):
        expected = TF.elastic(image[n], field[n:n + 1], InterpolationMode.BILINEAR)
        expected_mask = TF.elastic(mask[n], field[n:n + 1], InterpolationMode.NEAREST)
        assert torch.allclose(out_image[n], expected, atol=1e-5)
        assert (out_mask[n] != expected_mask).float().mean() < 0.01  # nearest: ties may round apart
    assert not torch.allclose(out_image, image, atol=1e-3)


def test_warp_constant_displacement_shifts_by_a_pixel():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    shift = torch.zeros(1, 4, 4, 2)
    shift[..., 0] = 2 / 4  # + one pixel in x, in normalised coordinates (2 = the width)
    identity = affine_matrices(torch.zeros(1), torch.ones(1), torch.zeros(1, dtype=torch.bool))
    out, _ = warp(image, image.clone(), identity, displacement=shift)
    assert torch.equal(out[0, 0, :, :3], image[0, 0, :, 1:])  # each pixel reads its right neighbour
    assert torch.equal(out[0, 0, :, 3], torch.zeros(4))  # zeros from outside


def test_both_augmentations_bend_image_and_mask_together():
    torch.manual_seed(0)
    image, mask = torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    image[..., 20:40, 24:44] = 1.0
    mask[..., 20:40, 24:44] = 1.0
    for augment in (BatchAugment(0, 0, 0, elastic=1.0), lambda i, m: tuple(x[None] for x in
                                                                         JointAugment(0, 0, 0, elastic=1.0)(i[0], m[0]))):
        out, out_mask = augment(image, mask)
        assert out.shape == image.shape and set(out_mask.unique().tolist()) == {0.0, 1.0}
        assert not torch.equal(out_mask, mask)  # bent
        assert ((out[0, 1] > 0.5).float() != out_mask[0, 0]).float().mean() < 0.01  # the same way
    with pytest.raises(ValueError, match=r"elastic must be in \[0, 1\], got 1.5"):
        TrainConfig(elastic=1.5)
