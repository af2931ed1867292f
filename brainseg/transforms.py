"""Joint image + mask augmentation with torchvision's ``transforms.v2``.

The reference's augmentation: scale +-5%, rotation +-15 degrees, horizontal flip with p=0.5,
applied identically to image and mask. ``tv_tensors.Mask`` makes torchvision resample the mask
with nearest neighbour while the image is resampled bilinearly; outside pixels become 0, as in
the reference.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class JointAugment:
    """Random affine (scale, rotation) and horizontal flip of an image and its mask.

    Args:
        scale: relative scale range, e.g. 0.05 for [0.95, 1.05]; 0 disables.
        angle: rotation range in degrees, e.g. 15 for [-15, 15]; 0 disables.
        flip_prob: probability of a horizontal flip.

    Shape:
        image (3, H, W) float, mask (1, H, W) float in {0, 1}; both keep their shapes.
    """

    def __init__(self, scale: float = 0.05, angle: float = 15.0, flip_prob: float = 0.5):
        if not 0 <= scale < 1:
            raise ValueError(f"scale must be in [0, 1), got {scale}")
        if not 0 <= angle <= 180:
            raise ValueError(f"angle must be in [0, 180], got {angle}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        steps = []
        if scale or angle:
            steps.append(v2.RandomAffine(degrees=angle, scale=(1 - scale, 1 + scale),
                                         interpolation=v2.InterpolationMode.BILINEAR))
        if flip_prob:
            steps.append(v2.RandomHorizontalFlip(flip_prob))
        self.transform = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
