"""The type every later step works on: :class:`CaseVolume`, one preprocessed case (built and
cached by :mod:`brainseg.data.cache`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .preprocess import Geometry


@dataclass
class CaseVolume:
    """One preprocessed case.

    Attributes:
        case_id: e.g. ``TCGA_CS_4941_19960909``.
        image: (D, 3, S, S) float16, normalised.
        mask: (D, S, S) uint8 in {0, 1}, at the training size.
        metric_mask: (D, 256, 256) uint8 in {0, 1}, the reference grid of the metric.
        geometry: crop/pad/resize mapping back to the original slices.
        target: (D, S, S) float16 in [0, 1], what training fits instead of ``mask`` when set
            (:func:`with_lesion_fraction`); ``None``: the mask. Sampling weights, crops, plots and
            validation always read ``mask``.
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    metric_mask: np.ndarray
    geometry: Geometry
    target: np.ndarray | None = None

    @property
    def num_slices(self) -> int:
        return self.image.shape[0]

    @property
    def training_target(self) -> np.ndarray:
        """(D, S, S): ``target`` when set, else ``mask``."""
        return self.mask if self.target is None else self.target

    def __getstate__(self) -> dict:
        """Pickled (for a spawned DataLoader worker, say), a memory-mapped image travels as its file
        and is mapped again on arrival: pickling the array would copy every voxel into the worker."""
        state = dict(self.__dict__)
        if isinstance(self.image, np.memmap) and self.image.filename:
            state["image"] = _MappedImage(self.image.filename, self.image.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["image"], _MappedImage):
            state["image"] = state["image"].open()
        self.__dict__.update(state)


@dataclass(frozen=True)
class _MappedImage:
    """A memory-mapped ``.npy`` image by its file: what :class:`CaseVolume` pickles instead of the voxels."""

    path: str
    shape: tuple[int, ...]

    def open(self) -> np.ndarray:
        image = np.load(self.path, mmap_mode="r")
        if image.shape != self.shape:
            raise ValueError(f"{self.path}: holds an image of shape {image.shape}, the volume had {self.shape}; "
                             "the cache changed while the run used it: start the run again")
        return image


MODALITIES = 3  # pre-contrast, FLAIR, post-contrast: the channels of one slice


def with_lesion_fraction(volume: CaseVolume) -> CaseVolume:
    """The volume with a training ``target`` of each pixel's lesion fraction: the metric mask
    averaged over the S x S block of 256 px pixels that each training pixel covers.

    The nearest-neighbour mask at S < 256 moves every boundary to the pixel grid: brought back to
    256 px and thresholded, the 128 px masks of the 110 cases score 0.966 mean DSC against their own
    metric masks, the lesion fractions 0.992. At S = 256 the fraction is the metric mask itself.

    Shape:
        ``volume.metric_mask`` (D, 256, 256) uint8 -> ``target`` (D, S, S) float16 in [0, 1], S the
        training size (``volume.mask``'s); everything else is the same object.

    Raises:
        ValueError: S does not divide 256 (a training pixel would not cover whole metric pixels).
    """
    depth, side = volume.mask.shape[0], volume.mask.shape[-1]
    if side > 256 or 256 % side:
        raise ValueError(f"lesion fractions need a training size that divides 256, got {side}")
    block = 256 // side
    blocks = volume.metric_mask.reshape(depth, side, block, side, block)
    return replace(volume, target=blocks.mean(axis=(2, 4), dtype=np.float32).astype(np.float16))


def input_channels(context: int) -> int:
    """Model input channels for ``context`` neighbouring slices on each side: 3 x (2 context + 1)."""
    return MODALITIES * (2 * context + 1)


def context_of(channels: int) -> int:
    """The inverse of :func:`input_channels`.

    Raises:
        ValueError: ``channels`` is not 3 times an odd number.
    """
    slices, rest = divmod(channels, MODALITIES)
    if rest or slices % 2 == 0:
        raise ValueError(f"a model reading {channels} channels does not take 3 channels of 2 k + 1 slices")
    return slices // 2


def neighbour_indices(num_slices: int, context: int) -> np.ndarray:
    """For every slice of a case, the indices of itself and ``context`` neighbours on each side,
    in slice order; beyond the case's first and last slices the edge slice is repeated.

    Returns:
        (num_slices, 2 context + 1) int64.
    """
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(num_slices)[:, None] + offsets, 0, num_slices - 1)


def with_context(images: np.ndarray, indices: np.ndarray | slice, context: int) -> np.ndarray:
    """The slices ``indices`` of a case with their neighbours stacked on the channel axis (2.5D input).

    Args:
        images: (D, 3, S, S) the case's slices.
        indices: (B,) slices wanted, or a slice of them.

    Returns:
        (B, 3 (2 context + 1), S, S): slice ``i - context`` first, then its modalities in order,
        up to slice ``i + context``; for ``context`` 0 simply ``images[indices]`` (a view, not a
        copy, for a slice of indices).
    """
    if context == 0:
        return images[indices]
    stacked = images[neighbour_indices(len(images), context)[indices]]  # (B, 2 context + 1, 3, S, S)
    return stacked.reshape(len(stacked), -1, *images.shape[2:])
