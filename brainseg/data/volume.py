"""The type every later step works on: :class:`CaseVolume`, one preprocessed case (built and
cached by :mod:`brainseg.data.cache`)."""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    metric_mask: np.ndarray
    geometry: Geometry

    @property
    def num_slices(self) -> int:
        return self.image.shape[0]
