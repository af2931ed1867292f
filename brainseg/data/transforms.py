"""Joint image + mask augmentation with torchvision's ``transforms.v2``.

The reference's augmentation: scale +-5%, rotation +-15 degrees, horizontal flip with p=0.5,
applied identically to image and mask. ``tv_tensors.Mask`` makes torchvision resample the mask
with nearest neighbour while the image is resampled bilinearly; outside pixels become 0, as in
the reference. :class:`JointAugment` works on one sample (in the DataLoader workers);
:class:`BatchAugment` draws the same distribution per image and warps a whole batch at once with
``affine_grid`` / ``grid_sample``, on the training device.

:class:`ForegroundCrop` cuts a training window out of a whole slice (after the augmentation), centred
on a lesion pixel at random, so that a model trains at full resolution at the cost of a smaller image.

Both augmentations can also imitate a missing scan (:func:`fill_with_flair`): the dataset stores a case without a
pre- or post-contrast scan with its FLAIR in that channel, so training does the same at random; and
vary each channel's intensities (:func:`jitter_intensity`: gamma, contrast, brightness, noise), as
scanners and protocols do; and bend the anatomy a little (:func:`elastic_displacement`, the U-Net
paper's smooth random deformation).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from .volume import MODALITIES


PRE, FLAIR, POST = 0, 1, 2  # channel order of the dataset's slices (docs/protocol.md, section 1)
CHANNEL_NAMES = {PRE: "pre-contrast", FLAIR: "FLAIR", POST: "post-contrast"}
# The channels that fill_with_flair may overwrite, drawn with equal probability: pre-contrast
# alone, post-contrast alone, or both (the dataset has cases missing post-contrast and cases missing both).
FLAIR_FILL_CHOICES = ((PRE,), (POST,), (PRE, POST))


def fill_with_flair(image: torch.Tensor, prob: float) -> torch.Tensor:
    """Replace, with probability ``prob`` per image, the pre-contrast, post-contrast or both channels
    by the FLAIR channel, as the dataset stores cases whose scan is missing.

    Preprocessing maps equal raw channels to equal normalised channels, so copying the normalised
    FLAIR gives exactly what a missing scan would. An image of several slices (2.5D) loses the
    same scan on all of them, as a case does. Draws come from the global torch RNG, and none are
    made when ``prob`` is 0.

    Shape:
        image (3 k, H, W) or (N, 3 k, H, W): k slices of 3 channels each; returns a new tensor of
        the same shape.
    """
    if prob == 0:
        return image
    batch = image if image.dim() == 4 else image[None]
    batch = batch.clone(memory_format=torch.contiguous_format)
    slices = batch.view(len(batch), -1, MODALITIES, *batch.shape[-2:])  # (N, k, 3, H, W), a view of batch
    hit = torch.rand(len(batch)) < prob
    choice = torch.randint(len(FLAIR_FILL_CHOICES), (len(batch),))
    for n in torch.nonzero(hit).flatten().tolist():
        for channel in FLAIR_FILL_CHOICES[int(choice[n])]:
            slices[n, :, channel] = slices[n, :, FLAIR]
    return batch if image.dim() == 4 else batch[0]


# Ranges of jitter_intensity's draws, per image and channel, on the standardised intensities
# (zero mean, unit std per channel over the volume). Close to nnU-Net's defaults.
GAMMA_RANGE = (0.7, 1.5)
CONTRAST_RANGE = (0.75, 1.25)
SHIFT_RANGE = (-0.2, 0.2)  # in units of the volume's standard deviation
NOISE_STD_MAX = 0.1


def adjust_intensity(image: torch.Tensor, gamma: torch.Tensor, contrast: torch.Tensor, shift: torch.Tensor,
                     noise: torch.Tensor) -> torch.Tensor:
    """Per-channel intensity change: gamma on the channel's own [min, max], contrast about its mean,
    an additive shift, then additive noise.

    Shape:
        image (N, C, H, W); gamma, contrast, shift (N, C); noise (N, C, H, W) (already scaled);
        returns (N, C, H, W).
    """
    low = image.amin(dim=(2, 3), keepdim=True)
    span = (image.amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-6)
    image = low + ((image - low) / span).pow(gamma[..., None, None]) * span
    mean = image.mean(dim=(2, 3), keepdim=True)
    return mean + (image - mean) * contrast[..., None, None] + shift[..., None, None] + noise


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> torch.Tensor:
    low, high = bounds
    return low + torch.rand(shape) * (high - low)


def on_device(draws: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Random draws made on the CPU (where the training checkpoint saves the RNG), on ``device``.
    To a GPU they go from pinned memory, asynchronously: a copy from ordinary host memory would
    make the CPU wait, at every augmented batch, for the GPU to finish the work queued before it."""
    if device.type != "cuda" or draws.device.type != "cpu":
        return draws.to(device, dtype)
    return draws.to(dtype=dtype).pin_memory().to(device, non_blocking=True)


def gaussian_noise(shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal noise of ``shape``, made on ``device``. On the CPU it comes from the global
    torch RNG; on a GPU from a generator there, seeded by one draw of that RNG, so a whole batch of
    noise is neither made by the CPU nor copied, and a resumed run still draws the same."""
    if device.type != "cuda":
        return torch.randn(shape)
    generator = torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, ())))
    return torch.randn(shape, generator=generator, device=device)


def jitter_intensity(image: torch.Tensor, prob: float) -> torch.Tensor:
    """With probability ``prob`` per image, change each channel's intensities independently by
    :func:`adjust_intensity` with parameters drawn from ``GAMMA_RANGE`` (log-uniform),
    ``CONTRAST_RANGE``, ``SHIFT_RANGE`` and Gaussian noise of std up to ``NOISE_STD_MAX``. An
    image of several slices (2.5D) gets one draw per modality, the same on all its slices.

    Draws come from the global torch RNG (on the CPU, whatever the image's device; a GPU batch's
    noise from a generator on the GPU seeded by it: :func:`gaussian_noise`), and none are made
    when ``prob`` is 0.

    Shape:
        image (3 k, H, W) or (N, 3 k, H, W): k slices of 3 channels each; returns a tensor of the
        same shape (the input itself when no image is drawn).
    """
    if prob == 0:
        return image
    batch = image if image.dim() == 4 else image[None]
    n, slices = batch.shape[0], batch.shape[1] // MODALITIES
    hit = torch.rand(n) < prob

    def per_channel(bounds: tuple[float, float]) -> torch.Tensor:  # (N, 3 k): a draw per modality, per slice
        return _uniform((n, MODALITIES), bounds).repeat(1, slices)

    draws = [per_channel((math.log(GAMMA_RANGE[0]), math.log(GAMMA_RANGE[1]))).exp(),
             per_channel(CONTRAST_RANGE), per_channel(SHIFT_RANGE)]
    noise = gaussian_noise(batch.shape, batch.device)
    noise_std = per_channel((0.0, NOISE_STD_MAX))
    if not hit.any():  # the draws are made all the same, so the random stream does not depend on it
        return image
    gamma, contrast, shift = (on_device(d, batch.device, batch.dtype) for d in draws)
    noise = (noise * on_device(noise_std, batch.device)[..., None, None]).to(batch.dtype)
    jittered = adjust_intensity(batch, gamma, contrast, shift, noise)
    batch = torch.where(on_device(hit, batch.device)[:, None, None, None], jittered, batch)
    return batch if image.dim() == 4 else batch[0]


# The elastic deformation of Ronneberger et al. 2015 (U-Net): random displacements on a 3 x 3 grid
# of control points with a std of 10 px on a 572 px tile, interpolated bicubically. Here in
# grid_sample's normalised coordinates (1 = half the width: 10 / 286), so the same at every size.
ELASTIC_GRID = 3
ELASTIC_STD = 0.035


def elastic_displacement(n: int, height: int, width: int, prob: float, device: torch.device | str = "cpu"
                         ) -> torch.Tensor:
    """Smooth random displacement fields, one per image, zero for the images not drawn (probability
    ``prob`` each): control points on an ``ELASTIC_GRID`` square grid spanning the image, each moved
    by Gaussian noise of std ``ELASTIC_STD``, interpolated bicubically to every pixel.

    The fields are in the normalised coordinates of ``grid_sample`` (-1 to 1 across the image), the
    convention of torchvision's ``elastic``: output pixel p reads the input at p + field(p). Draws
    come from the global torch RNG (on the CPU; only the control points go to ``device``, where the
    field is interpolated), and none are made when ``prob`` is 0.

    Shape:
        returns (N, H, W, 2) float32: the (x, y) displacement of each output pixel.
    """
    if prob == 0:
        return torch.zeros(n, height, width, 2, device=device)
    hit = torch.rand(n) < prob
    controls = torch.randn(n, 2, ELASTIC_GRID, ELASTIC_GRID) * ELASTIC_STD * hit[:, None, None, None]
    field = F.interpolate(on_device(controls, torch.device(device)), size=(height, width), mode="bicubic",
                          align_corners=True)
    return field.permute(0, 2, 3, 1).contiguous()


def check_augment_ranges(scale: float, angle: float, flip_prob: float, flair_fill: float = 0.0,
                         intensity: float = 0.0, elastic: float = 0.0) -> None:
    """Raise ``ValueError`` naming the first augmentation parameter out of its range."""
    if not 0 <= flair_fill <= 1:
        raise ValueError(f"flair_fill must be in [0, 1], got {flair_fill}")
    if not 0 <= intensity <= 1:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    if not 0 <= elastic <= 1:
        raise ValueError(f"elastic must be in [0, 1], got {elastic}")
    if not 0 <= scale < 1:
        raise ValueError(f"scale must be in [0, 1), got {scale}")
    if not 0 <= angle <= 180:
        raise ValueError(f"angle must be in [0, 180], got {angle}")
    if not 0 <= flip_prob <= 1:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")


class JointAugment:
    """Random affine (scale, rotation) and horizontal flip of an image and its mask.

    Args:
        scale: relative scale range, e.g. 0.05 for [0.95, 1.05]; 0 disables.
        angle: rotation range in degrees, e.g. 15 for [-15, 15]; 0 disables.
        flip_prob: probability of a horizontal flip.
        flair_fill: probability of replacing contrast channels by FLAIR (:func:`fill_with_flair`).
        intensity: probability of a per-channel intensity change (:func:`jitter_intensity`).
        elastic: probability of a smooth random deformation after the affine
            (:func:`elastic_displacement`, applied by torchvision's ``elastic``).
        soft_mask: the mask holds lesion fractions: resample it bilinearly like the image (a 0/1
            mask is resampled with nearest neighbour, which would put it back on the pixel grid).

    Shape:
        image (3, H, W) float, mask (1, H, W) float in {0, 1} (in [0, 1] with ``soft_mask``); both
        keep their shapes.
    """

    def __init__(self, scale: float = 0.05, angle: float = 15.0, flip_prob: float = 0.5, flair_fill: float = 0.0,
                 intensity: float = 0.0, elastic: float = 0.0, soft_mask: bool = False):
        check_augment_ranges(scale, angle, flip_prob, flair_fill, intensity, elastic)
        self.flair_fill, self.intensity, self.elastic = flair_fill, intensity, elastic
        self.mask_type = tv_tensors.Image if soft_mask else tv_tensors.Mask  # Image: bilinear; Mask: nearest
        steps = []
        if scale or angle:
            steps.append(v2.RandomAffine(degrees=angle, scale=(1 - scale, 1 + scale),
                                         interpolation=v2.InterpolationMode.BILINEAR))
        if flip_prob:
            steps.append(v2.RandomHorizontalFlip(flip_prob))
        self.transform = v2.Compose(steps) if steps else None  # torchvision refuses an empty Compose

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), self.mask_type(mask))
            image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        if self.elastic:
            image, mask = self.deform(image, mask)
        return fill_with_flair(jitter_intensity(image, self.intensity), self.flair_fill), mask

    def deform(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply one :func:`elastic_displacement` draw to both (a field of zeros leaves them as they are)."""
        field = elastic_displacement(1, *image.shape[-2:], self.elastic)
        if not field.any():
            return image, mask
        image = v2.functional.elastic(tv_tensors.Image(image), field, v2.InterpolationMode.BILINEAR)
        mask = v2.functional.elastic(self.mask_type(mask), field, v2.InterpolationMode.BILINEAR)  # Mask: nearest
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class ForegroundCrop:
    """A random ``size`` x ``size`` window of a slice and its mask, for training at full resolution
    on less than whole slices (nnU-Net's patches, in 2D).

    With probability ``foreground``, and when the slice has lesion pixels, the window is centred on
    one of them drawn at random (shifted inside the slice at its borders); otherwise its position is
    uniform. Draws come from the global torch RNG (seeded per DataLoader worker).

    Shape:
        image (C, S, S), mask (1, S, S) -> image (C, size, size), mask (1, size, size).
    """

    def __init__(self, size: int, foreground: float = 0.5):
        if size < 1:
            raise ValueError(f"crop size must be >= 1, got {size}")
        if not 0 <= foreground <= 1:
            raise ValueError(f"crop_foreground must be in [0, 1], got {foreground}")
        self.size, self.foreground = size, foreground

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = mask.shape[-2:]
        if self.size > min(height, width):
            raise ValueError(f"crop size {self.size} exceeds the slice ({height}x{width})")
        top, left = self.corner(mask[0])
        window = (..., slice(top, top + self.size), slice(left, left + self.size))
        return image[window], mask[window]

    def corner(self, mask: torch.Tensor) -> tuple[int, int]:
        """(top, left) of the window in ``mask`` (H, W)."""
        (height, width), size = mask.shape, self.size
        lesion = (mask >= 0.5).nonzero()  # lesion fractions: the pixels a 0/1 mask would hold
        if len(lesion) and torch.rand(()) < self.foreground:
            y, x = lesion[torch.randint(len(lesion), ())].tolist()
            return min(max(y - size // 2, 0), height - size), min(max(x - size // 2, 0), width - size)
        return int(torch.randint(height - size + 1, ())), int(torch.randint(width - size + 1, ()))


def chain(*steps) -> Callable | None:
    """The ``(image, mask)`` transforms among ``steps`` that are not None, applied in order; None if none."""
    steps = [step for step in steps if step is not None]
    return v2.Compose(steps) if steps else None


def affine_matrices(angles: torch.Tensor, scales: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Sampling matrices for :func:`torch.nn.functional.affine_grid`, one per image.

    Each output pixel at normalised position p reads the input at ``A p``, so that the image is
    rotated by ``angle`` degrees and zoomed by ``scale`` about its centre exactly as torchvision's
    ``affine`` does (counter-clockwise as displayed), then flipped horizontally where ``flips`` is true.

    Shape:
        angles, scales, flips: (N,); returns (N, 2, 3) float32 (no translation).
    """
    radians = torch.deg2rad(angles.float())
    cos, sin = torch.cos(radians) / scales, torch.sin(radians) / scales
    mirror = 1.0 - 2.0 * flips.float()  # -1 flips x of the output
    theta = torch.zeros(len(angles), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * mirror, sin  # inverse rotation: output -> input
    theta[:, 1, 0], theta[:, 1, 1] = -sin * mirror, cos
    return theta


def warp(image: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor, mask_mode: str = "nearest",
         displacement: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample a batch with per-image matrices, plus a per-pixel ``displacement`` of the sampling
    positions where given (:func:`elastic_displacement`): image bilinear, mask ``mask_mode`` (nearest
    for 0/1 masks, bilinear for lesion fractions), 0 outside.

    Shape:
        image (N, C, H, W) float, mask (N, 1, H, W) float, theta (N, 2, 3), displacement
        (N, H, W, 2) or None; outputs keep the input shapes.
    """
    grid = F.affine_grid(on_device(theta, image.device, image.dtype), list(image.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement.to(grid.device, grid.dtype)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped_mask = F.grid_sample(mask, grid.to(mask.dtype), mode=mask_mode, padding_mode="zeros", align_corners=False)
    return warped, warped_mask


class BatchAugment:
    """The augmentation of :class:`JointAugment`, drawn per image but applied to a whole batch at once.

    It runs where the batch is (the GPU in a CUDA run), so the DataLoader workers only copy
    slices. Parameters come from the global torch RNG, which the training checkpoint saves.

    Shape:
        image (N, C, H, W) float, mask (N, 1, H, W) float in {0, 1} (in [0, 1] with ``soft_mask``,
        then resampled bilinearly); both keep their shapes.
    """

    def __init__(self, scale: float = 0.05, angle: float = 15.0, flip_prob: float = 0.5, flair_fill: float = 0.0,
                 intensity: float = 0.0, elastic: float = 0.0, soft_mask: bool = False):
        check_augment_ranges(scale, angle, flip_prob, flair_fill, intensity, elastic)
        self.scale, self.angle, self.flip_prob = scale, angle, flip_prob
        self.flair_fill, self.intensity, self.elastic = flair_fill, intensity, elastic
        self.mask_mode = "bilinear" if soft_mask else "nearest"

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = image.shape[0]
        angles = (torch.rand(n) * 2 - 1) * self.angle
        scales = 1 + (torch.rand(n) * 2 - 1) * self.scale
        flips = torch.rand(n) < self.flip_prob
        displacement = (elastic_displacement(n, *image.shape[-2:], self.elastic, image.device)
                        if self.elastic else None)
        image, mask = warp(image, mask, affine_matrices(angles, scales, flips), self.mask_mode, displacement)
        return fill_with_flair(jitter_intensity(image, self.intensity), self.flair_fill), mask
