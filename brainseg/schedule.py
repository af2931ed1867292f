"""The learning-rate schedule of a run, stepped once per optimisation step.

``constant``, or ``cosine``: a linear warm-up over ``warmup_epochs``, then a cosine decay to 0.
The decay runs either over the run's ``epochs`` (a fixed number of steps on any machine; the same
seed gives the same run on the same machine and precision) or, with ``budget_minutes``, over a
training time (:class:`TimeBudget`): the learning rate follows the fraction of that time spent and
training stops when it is all spent, so a faster machine takes more steps inside the same minutes,
and a slower one fewer (``epochs`` is then an upper bound; reached first, it cuts the decay short).

:class:`CoarseStart` is progressive resizing, read from the same progress: the first share of a run
trains on shrunk batches (more images a second), the rest at full size.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .config import TrainConfig


class TrainingClock:
    """Seconds spent in training epochs (validation and data loading not counted), across resumes.

    ``timer`` is the clock read (``time.perf_counter``; tests pass a fake one).
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter):
        self.timer = timer
        self.before = 0.0  # seconds of the epochs before the running one
        self.started: float | None = None  # timer() when the running epoch began

    def start_epoch(self, seconds_so_far: float) -> None:
        """An epoch begins after ``seconds_so_far`` of training (the run's, earlier sessions included)."""
        self.before, self.started = seconds_so_far, self.timer()

    def stop_epoch(self) -> None:
        self.before, self.started = self.seconds(), None

    def seconds(self) -> float:
        """Training seconds so far, the running epoch's included."""
        return self.before + (self.timer() - self.started if self.started is not None else 0.0)


class TimeBudget:
    """A training-time budget read from a :class:`TrainingClock`.

    :meth:`fraction` is what the learning-rate schedule reads at each step; :attr:`spent` answers
    from that same reading, so the step that ends training is the one whose learning rate reached 0.
    """

    def __init__(self, minutes: float, clock: TrainingClock):
        if not minutes > 0:
            raise ValueError(f"a time budget needs minutes > 0, got {minutes}")
        self.seconds, self.clock = minutes * 60.0, clock
        self.last_fraction = 0.0

    def fraction(self) -> float:
        """The fraction of the budget spent now (may exceed 1), remembered for :attr:`spent`."""
        self.last_fraction = self.peek()
        return self.last_fraction

    def peek(self) -> float:
        """The fraction of the budget spent now, not remembered (for readers other than the schedule)."""
        return self.clock.seconds() / self.seconds

    @property
    def spent(self) -> bool:
        return self.last_fraction >= 1.0


class CoarseStart:
    """Progressive resizing: batches shrunk to ``size`` px while ``progress()`` is below ``fraction``,
    then passed through unchanged (``coarse_size``, ``coarse_fraction``).

    ``progress()`` is the share of the run done: the time budget's fraction, or steps over all steps.
    Images are shrunk by torch's ``area`` mode (adaptive average pooling): at a whole-number ratio
    (256 -> 128) each coarse pixel is the mean of the block it covers; otherwise (128 -> 96) the mean
    of overlapping bins with equal weights, not the exact area share. A 0/1 mask is shrunk the same
    way and thresholded at 0.5 (the bins' ties then count as lesion: at 128 -> 96, random disks of
    2-12 px radius grow by 5.7%, by 2.1% with exact shares), a soft mask kept as the averaged
    fraction. Kept so that the committed progressive-resizing runs repeat.

    Shape:
        image (N, C, H, W), mask (N, 1, H, W); shrunk: (N, C, size, size) and (N, 1, size, size).
    """

    def __init__(self, size: int, fraction: float, progress: Callable[[], float], soft_mask: bool = False):
        self.size, self.fraction, self.progress, self.soft_mask = size, fraction, progress, soft_mask

    @property
    def active(self) -> bool:
        return self.progress() < self.fraction

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active or image.shape[-1] <= self.size:
            return image, mask
        image = F.interpolate(image, size=(self.size, self.size), mode="area")
        mask = F.interpolate(mask, size=(self.size, self.size), mode="area")
        return image, mask if self.soft_mask else (mask >= 0.5).to(mask.dtype)


def cosine_factor(progress: float) -> float:
    """Cosine decay from 1 at ``progress`` 0 to exactly 0 at 1 and after."""
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                   budget: TimeBudget | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of ``config`` (see the module docstring): with ``budget``, the cosine
    decay follows ``budget.fraction()`` instead of the step count over ``config.epochs``."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        progress = budget.fraction() if budget is not None else (step - warmup) / max(1, total - warmup)
        if config.scheduler == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return cosine_factor(progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
