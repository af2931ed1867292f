"""Slices of preprocessed case volumes as a torch ``Dataset``, the training samplers, and
:class:`DeviceBatches`, which serves the slices from the training device without DataLoader workers."""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler, Sampler, WeightedRandomSampler

from .volume import CaseVolume, neighbour_indices, with_context


class SliceDataset(Dataset):
    """Every slice of a list of cases, in case then slice order.

    Args:
        volumes: preprocessed cases (see :func:`brainseg.data.cache.load_volumes`).
        transform: optional joint augmentation ``(image, mask) -> (image, mask)``.
        context: neighbouring slices on each side stacked with each slice (2.5D,
            :func:`~brainseg.data.volume.with_context`); 0 for the slice alone.

    Items:
        image (3 (2 context + 1), S, S) float32, mask (1, S, S) float32 (the middle slice's
        ``training_target``: in {0, 1}, or lesion fractions in [0, 1]).
    """

    def __init__(self, volumes: list[CaseVolume], transform: Callable | None = None, context: int = 0):
        if not volumes:
            raise ValueError("SliceDataset needs at least one case")
        self.volumes = volumes
        self.transform = transform
        self.context = context
        self.index = [(c, s) for c, v in enumerate(volumes) for s in range(v.num_slices)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        case, slice_n = self.index[idx]
        volume = self.volumes[case]
        image = torch.from_numpy(with_context(volume.image, slice(slice_n, slice_n + 1), self.context)[0]
                                 .astype(np.float32))
        mask = torch.from_numpy(volume.training_target[slice_n][None].astype(np.float32))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def mask_weighted_slice_weights(volumes: list[CaseVolume]) -> torch.Tensor:
    """The reference's sampling probability of every slice, in :class:`SliceDataset` order.

    A case is drawn uniformly, then a slice with probability ``(a + 0.1 A / n) / (1.1 A)``, where
    ``a`` is the slice's lesion area, ``A`` the case's total and ``n`` its number of slices (a
    case without lesion is sampled uniformly).

    Returns:
        (num_slices,) float64 summing to 1.
    """
    weights = []
    for volume in volumes:
        area = volume.mask.reshape(volume.num_slices, -1).sum(axis=1).astype(np.float64)
        total = area.sum()
        if total == 0:
            case_weights = np.full(len(area), 1.0 / len(area))
        else:
            case_weights = (area + total * 0.1 / len(area)) / (total * 1.1)
        weights.append(case_weights / len(volumes))
    return torch.from_numpy(np.concatenate(weights))


def make_sampler(dataset: SliceDataset, kind: str, generator: torch.Generator) -> Sampler:
    """``'weighted'``: the reference's mask-area-weighted sampling with replacement;
    ``'shuffle'``: a permutation of all slices. An epoch is ``len(dataset)`` samples either way."""
    if kind == "weighted":
        return WeightedRandomSampler(mask_weighted_slice_weights(dataset.volumes), len(dataset),
                                     replacement=True, generator=generator)
    if kind == "shuffle":
        return RandomSampler(dataset, generator=generator)
    raise ValueError(f"unknown sampler {kind!r}; expected 'weighted' or 'shuffle'")


class DeviceBatches:
    """The slices of ``dataset`` copied once to ``device`` and served in batches in ``sampler``'s
    order: a DataLoader for data that fits on the GPU, with no per-slice work on the CPU (the
    augmentation then runs on the batch, :class:`~brainseg.data.transforms.BatchAugment`).

    Without augmentation it yields exactly the batches of ``DataLoader(dataset, batch_size,
    sampler=sampler)`` for the same sampler state; ``dataset.transform`` is not used.

    Args:
        dataset: its volumes are copied (images as float16, as cached: 1.3 GB for the reference
            training split at 256 px).
        sampler: indices into ``dataset``, drawn anew at every pass.

    Yields:
        image (B, 3 (2 context + 1), S, S) float32 (``dataset.context``) and mask (B, 1, S, S)
        float32 on ``device``; the last batch of a pass may be shorter.
    """

    def __init__(self, dataset: SliceDataset, sampler: Sampler, batch_size: int, device: torch.device):
        # one copy each, also of memory-mapped (read-only) images
        self.images = torch.from_numpy(np.concatenate([v.image for v in dataset.volumes])).to(device)
        self.masks = torch.from_numpy(np.concatenate([v.training_target for v in dataset.volumes])).to(device)
        starts = np.cumsum([0] + [v.num_slices for v in dataset.volumes[:-1]])
        self.neighbours = torch.from_numpy(np.concatenate(  # (slices, 2 context + 1) rows of self.images
            [neighbour_indices(v.num_slices, dataset.context) + start for v, start in zip(dataset.volumes, starts)]
        )).to(device)
        self.dataset, self.sampler, self.batch_size, self.device = dataset, sampler, batch_size, device

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.device)
        for batch in order.split(self.batch_size):
            image = self.images[self.neighbours[batch]]  # (B, 2 context + 1, 3, S, S)
            yield image.flatten(1, 2).float(), self.masks[batch].unsqueeze(1).float()
