"""The training loop: :func:`train_one_epoch` and :func:`fit`, which runs a whole configured
training (validating with :mod:`brainseg.validation`) and writes its outputs.

:func:`fit` reads as its steps: :func:`set_up_run` (names, folders, device, torchrun),
:func:`load_data` (the cases of the split and of the selection mode, :mod:`brainseg.selection`),
:func:`build_components` (model, loss, loader, optimiser, scheduler), the optional restore of a
resumed run (:func:`~brainseg.checkpoint.restore_training_state`), :func:`train_epochs` (one
:func:`run_epoch` per epoch: train, validate when due, log, checkpoint) and :func:`run_summary`.

Outputs of a run named ``R``:

- ``logs/R/``: ``config.json``, ``history.csv`` (one row per epoch), ``metrics.json`` (best epoch,
  validation mean/median/per-case DSC, wall time, device, versions) and TensorBoard events
  (train/val loss, val mean DSC, outline images);
- ``weights/R/best.pt`` (the kept model: best validation mean DSC, or the last with
  ``selection="last"``) and ``last.pt`` (with the training state to resume from), both
  self-describing and written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries
from .checkpoint import (TrainingState, load_checkpoint, restore_training_state, save_checkpoint,
                         save_training_state)
from .config import TrainConfig
from .data.cache import load_volumes
from .data.dataset import DeviceBatches, SliceDataset, make_sampler
from .data.splits import split_cases
from .data.transforms import BatchAugment, ForegroundCrop, JointAugment, chain
from .data.volume import CaseVolume, with_lesion_fraction
from .distributed import (Distributed, ShardedSampler, all_ranks, init_distributed, rank_seed, ranks_agree,
                          shutdown, sync_buffers, wrap_model)
from .ema import averaged_model
from .losses import DeepSupervisionLoss, create_loss
from .metrics import to_metric_grid
from .models import count_parameters, create_model
from .plots import outline_overlay
from .runtime import Runtime, describe_device, describe_precision, peak_memory_mb, resolve_amp, select_device
from .schedule import CoarseStart, TimeBudget, TrainingClock, cosine_factor, make_scheduler
from .selection import Selection
from .validation import evaluate_across_ranks


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def fit(config: TrainConfig, command: str = "", progress: bool = True, resume: bool = False) -> dict | None:
    """Train ``config`` end to end and write every output of the run.

    Args:
        command: the command line, recorded in ``metrics.json`` (``command``, then ``commands``).
        progress: draw progress bars (rank 0 only).
        resume: continue the run from ``weights/<run>/last.pt`` (model, optimizer, scheduler,
            epoch, best score, history, sampler and RNG states): on the same machine with the
            same seed, a run killed and resumed ends with the history of an uninterrupted run.

    Returns:
        The run's metrics (also written to ``logs/<run>/metrics.json``); ``None`` on the ranks
        other than 0 of a torchrun job.

    Raises:
        DatasetError: the dataset is missing or malformed.
        TrainingDiverged: NaN/inf loss; ``best.pt`` keeps the best model so far. The message names
            the run, the epoch and that checkpoint.
    """
    if not config.run_name and not resume:  # named once, so config.json and checkpoints carry the name to resume
        config = replace(config, run_name=default_run_name(config))
    run = set_up_run(config, progress, resume)
    selection = Selection(config.selection)
    data = load_data(config, run, selection)
    parts = build_components(config, run, data)

    state = TrainingState()
    if resume:
        state = restore_training_state(run.weights_dir / "last.pt", parts.model, parts.optimizer, parts.scheduler,
                                       parts.sampler_generator, parts.averaged)
        print(f"resuming {run.name} after epoch {state.epoch} (best {state.best['val_mean_dsc']:.4f} "
              f"at epoch {state.best['epoch']})")
    state.commands.append(command)  # the run's first command, then one per resume
    run.previous_wall = state.wall_s
    if not state.precision:  # a resumed run keeps the precision it started with
        state.precision = choose_precision(config, run, parts.model)
    run.runtime.amp = state.precision["picked"] == "bf16"

    stop_reason = train_epochs(config, run, data, parts, state, selection)
    if not finish_distributed(parts.model, run.dist):
        return None

    entries, best = selection.outcome(state.best, run.weights_dir / "best.pt", data.val_volumes, data.outer_volumes,
                                      parts.loss_fn, run.runtime, run.progress)
    state.wall_s = run.elapsed()
    result = run_summary(config, run, data, state, entries, best, selection, stop_reason, parts.model)
    atomic_write_json(run.log_dir / "metrics.json", result)
    print(f"best epoch {best['epoch']}: val mean DSC {best['val_mean_dsc']:.4f}, median {best['val_median_dsc']:.4f}; "
          f"wall time {state.wall_s / 60:.1f} min; outputs in {run.log_dir} and {run.weights_dir}")
    return result


@dataclass
class Run:
    """Where a run writes and computes: its name and folders, device, place in a torchrun job, clock."""

    name: str
    log_dir: Path
    weights_dir: Path
    device: torch.device
    dist: Distributed
    runtime: Runtime
    progress: bool  # progress bars: asked for, and on rank 0
    resumed: bool
    wall_start: float  # time.perf_counter() when fit started
    previous_wall: float = 0.0  # wall time of the run's earlier sessions (before a resume)

    def elapsed(self) -> float:
        """The run's wall time so far, earlier sessions included."""
        return self.previous_wall + time.perf_counter() - self.wall_start

    def say(self, text: str) -> None:
        """Print below the progress bars, on rank 0 only."""
        if self.dist.is_main:
            tqdm.write(text, file=sys.stdout)


def set_up_run(config: TrainConfig, progress: bool, resume: bool) -> Run:
    """Check ``config`` and the run's folders, choose the device and join the torchrun job, if any.

    Raises:
        ValueError: an impossible config; ``resume`` without a run name, or of a checkpoint trained
            with another recipe; a new run over one that saved a checkpoint or finished (its
            outputs would be overwritten); a batch size that the processes cannot share.
    """
    wall_start = time.perf_counter()
    config.validate()
    if not resume:
        config.check_trainable()
    if not config.run_name:
        raise ValueError("resume needs the run_name of the run to continue" if resume else "the run needs a run_name")
    name = config.run_name
    log_dir, weights_dir = config.run_dirs(name)
    check_run_folders(config, log_dir, weights_dir, resume)
    if resume:  # a checkpoint write cut by the kill being resumed from left its half file (31 MB at 256 px)
        for folder in (log_dir, weights_dir):
            remove_stale_temporaries(folder)
    device = select_device(config.device)
    dist = init_distributed(device.type)  # one process unless started by torchrun
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {dist.world_size} processes")
    if config.budget_minutes and dist.enabled:
        raise ValueError("budget_minutes needs a single process (each rank's clock would set its own learning "
                         "rate); under torchrun, set epochs instead")
    runtime = Runtime(device, False, config.channels_last)  # amp: set by choose_precision once the model exists
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Run(name, log_dir, weights_dir, device, dist, runtime, progress and dist.is_main, resume, wall_start)


def check_run_folders(config: TrainConfig, log_dir: Path, weights_dir: Path, resume: bool) -> None:
    """Refuse a new run where one already saved a checkpoint or finished (it would overwrite that
    run's outputs and mix their logs), and a resume from a ``last.pt`` trained with another recipe.

    Raises:
        ValueError: naming the folders and the fix, or the fields that differ.
    """
    last = weights_dir / "last.pt"
    if not resume and (last.is_file() or (log_dir / "metrics.json").is_file()):
        raise ValueError(f"run {config.run_name} already exists ({log_dir}, {weights_dir}); continue it with "
                         f"`python -m brainseg train --resume {log_dir}`, choose another --run-name, or remove both "
                         "folders to start it again")
    if resume and last.is_file():
        differences = TrainConfig.from_dict(load_checkpoint(last)["config"]).recipe_differences(config)
        if differences:
            raise ValueError(f"{last} was trained with another recipe than this run's ({'; '.join(differences)}); "
                             "resume it with the options it was started with, or start a new run under another "
                             "--run-name")


@dataclass
class RunData:
    """The run's cases and their preprocessed volumes.

    ``val_*`` are validated after epochs (the inner cases with ``selection="inner"``); ``outer_*``
    are the split's validation cases, the ``val_*`` ones themselves in the other modes.
    """

    train_ids: list[str]
    val_ids: list[str]
    outer_ids: list[str]
    train_volumes: list[CaseVolume]
    val_volumes: list[CaseVolume]
    outer_volumes: list[CaseVolume]
    seconds: float  # to load (and, the first time, preprocess and cache) them

    @property
    def trained_on(self) -> list[str]:
        """The cases the model learned from or was chosen on: training and inner validation cases."""
        return sorted(set(self.train_ids) | (set(self.val_ids) - set(self.outer_ids)))


def load_data(config: TrainConfig, run: Run, selection: Selection) -> RunData:
    """The split's cases, divided as ``selection`` wants, loaded from the cache (built if missing).

    In a torchrun job rank 0 builds the cache first while the others wait; they then read it.
    """
    train_ids, outer_ids = split_cases(config)
    train_ids, val_ids = selection.split(config, train_ids, outer_ids)
    start = time.perf_counter()
    kwargs = dict(image_size=config.image_size, data_dir=config.data_dir or None,
                  cache_dir=config.cache_dir or None, progress=run.progress, mmap=config.mmap_data)
    if not run.dist.is_main:
        run.dist.barrier()
    train_volumes = load_volumes(train_ids, **kwargs)
    if config.soft_masks:
        train_volumes = [with_lesion_fraction(volume) for volume in train_volumes]
    val_volumes = load_volumes(val_ids, **kwargs)
    outer_volumes = val_volumes if val_ids == outer_ids else load_volumes(outer_ids, **kwargs)
    if run.dist.is_main:
        run.dist.barrier()
    return RunData(train_ids, val_ids, outer_ids, train_volumes, val_volumes, outer_volumes,
                   time.perf_counter() - start)


def choose_precision(config: TrainConfig, run: Run, model: nn.Module) -> dict:
    """How the run computes (:func:`brainseg.runtime.resolve_amp`): amp ``auto`` times fp32 and bf16
    on a CPU; every rank of a torchrun job takes rank 0's pick."""
    _, record = run.dist.broadcast(resolve_amp(config.amp, model, run.device, config.channels_last,
                                               config.image_size, config.batch_size // run.dist.world_size))
    return record


@dataclass
class Components:
    """What trains: the model (saved and evaluated as it is), loss, augmentation, data, optimiser."""

    model: nn.Module
    loss_fn: nn.Module
    batch_transform: Callable | None  # on whole batches on the device: augmentation and/or shrinking, if chosen
    train_set: SliceDataset
    sampler_generator: torch.Generator  # the sampling order's random state (saved in last.pt)
    loader: DataLoader | DeviceBatches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    clock: TrainingClock  # seconds of training so far, which a time budget reads
    budget: TimeBudget | None  # with ``budget_minutes``: drives the schedule and the stop
    averaged: AveragedModel | None  # with ``ema``: the moving average of ``model``

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and saved: the moving average with ``ema``, else ``model``."""
        return self.averaged.module if self.averaged is not None else self.model


def build_components(config: TrainConfig, run: Run, data: RunData) -> Components:
    """Seed everything, then build the model, loss, augmentation, sampler, loader, optimiser and
    per-step scheduler, in the order that fixes what the seed draws."""
    seed_everything(config.seed)
    model = create_model(config.model, **config.model_kwargs()).to(run.device)
    model.checkpointing = config.checkpointing
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = DeepSupervisionLoss(create_loss(config.loss, **config.loss_args), config.deep_supervision_decay)
    train_set = SliceDataset(data.train_volumes, chain(
        JointAugment(**config.augment_kwargs()) if config.augment == "sample" else None,
        ForegroundCrop(config.crop_size, config.crop_foreground) if config.crop_size else None), config.context)
    sampler_generator = torch.Generator().manual_seed(config.seed)
    sampler = make_sampler(train_set, config.sampler, sampler_generator)
    if run.dist.enabled:  # the same order on every rank (same seed); each rank takes every N-th sample
        sampler = ShardedSampler(sampler, run.dist.rank, run.dist.world_size)
    # Workers are started anew each epoch and seeded from the global torch RNG, whose state is in
    # last.pt (under torchrun reseeded per rank at each epoch, rank_seed): this is what makes a
    # resumed run repeat an uninterrupted one.
    batch_size = config.batch_size // run.dist.world_size
    loader = (DeviceBatches(train_set, sampler, batch_size, run.device) if config.data_on_device else
              DataLoader(train_set, batch_size=batch_size, sampler=sampler, num_workers=config.workers,
                         pin_memory=run.device.type == "cuda"))
    optimizer = make_optimizer(model, config)
    clock = TrainingClock()
    budget = TimeBudget(config.budget_minutes, clock) if config.budget_minutes else None
    scheduler = make_scheduler(optimizer, config, len(loader), budget)
    batch_transform = chain(
        BatchAugment(**config.augment_kwargs()) if config.augment == "batch" else None,
        coarse_start(config, scheduler, len(loader), budget))
    averaged = averaged_model(model, config.ema, config.ema_bias_correction) if config.ema else None
    return Components(model, loss_fn, batch_transform, train_set, sampler_generator, loader, optimizer, scheduler,
                      clock, budget, averaged)


@dataclass
class EpochLoop:
    """What every epoch of :func:`train_epochs` reads."""

    config: TrainConfig
    run: Run
    data: RunData
    parts: Components
    selection: Selection
    train_model: nn.Module  # ``parts.model``, wrapped by DDP and/or torch.compile; shares its weights
    logger: RunLogger
    picks: list[tuple[int, int]]  # validation slices drawn in TensorBoard


def train_epochs(config: TrainConfig, run: Run, data: RunData, parts: Components, state: TrainingState,
                 selection: Selection) -> str:
    """Epochs ``state.epoch + 1`` to ``config.epochs`` (:func:`run_epoch`), updating ``state``.

    Returns:
        Why the run stopped before ``config.epochs`` (``max_minutes`` or ``budget_minutes``), or "".

    Raises:
        TrainingDiverged: as :func:`train_one_epoch`, with the run, the epoch and what was kept named.
    """
    logger = RunLogger(run.log_dir, config, purge_step=state.epoch + 1 if state.history else None,
                       active=run.dist.is_main)
    loop = EpochLoop(config, run, data, parts, selection, training_model(parts.model, config, run), logger,
                  _vis_slices(data.val_volumes, config.vis_slices))
    print(f"run {run.name}: {config.model} ({count_parameters(parts.model) / 1e6:.2f} M parameters), "
          f"{config.loss} loss, {len(data.train_ids)} train / {len(data.val_ids)} val cases "
          f"({len(parts.train_set)} train slices), {describe_size(config)}, device {run.device}, "
          f"{describe_precision(state.precision)}, data ready in {data.seconds:.1f} s")
    epochs = tqdm(range(state.epoch + 1, config.epochs + 1), desc="epochs", unit="epoch", disable=not run.progress,
                  initial=state.epoch, total=config.epochs)
    first_epoch, trained_before = state.epoch + 1, state.train_seconds
    try:
        for epoch in epochs:
            if parts.budget is not None and state.train_seconds >= parts.budget.seconds:
                return "budget_minutes"  # a resumed run whose budget was already spent
            reason = run_epoch(loop, state, epoch)
            if epoch == first_epoch and not reason and not config.compile:  # compiling slows the first epoch
                if warning := overrun_warning(config, epoch, run.elapsed(), state.train_seconds - trained_before,
                                              state.val_seconds):
                    run.say(warning)
            if epoch == config.epochs and (note := unfinished_budget_note(config, parts.budget)):
                run.say(note)
            if reason:
                run.say(f"stopping after epoch {epoch}: " + (
                    f"the training time budget_minutes={config.budget_minutes} is spent"
                    if reason == "budget_minutes" else
                    f"another epoch would end after max_minutes={config.max_minutes}, so the schedule ends "
                    f"unfinished at epoch {epoch} of {config.epochs} (--max-minutes 0 trains every epoch; "
                    f"--budget-minutes M fits the whole schedule into M minutes of training)"))
                return reason
    except TrainingDiverged as exc:  # say which run, and what it kept
        best_path = run.weights_dir / "best.pt"
        kept = f"the best model so far is in {best_path}" if best_path.is_file() else "no checkpoint was saved yet"
        raise TrainingDiverged(f"run {run.name}, epoch {epoch}: {exc}; {kept}") from exc
    finally:
        epochs.close()  # before any error message, so that it starts on a line of its own
        logger.close()
    return ""


def describe_size(config: TrainConfig) -> str:
    """The training side as the run's first line gives it, e.g. ``128 px (96 px for the first 70%,
    then from 35% of the peak learning rate)``: a switch late in a cosine schedule leaves the full
    size little learning rate to adapt with (docs/results.md, "Levers")."""
    if not config.coarse_size:
        return f"{config.image_size} px"
    lr_share = cosine_factor(config.coarse_fraction) if config.scheduler == "cosine" else 1.0
    return (f"{config.image_size} px ({config.coarse_size} px for the first {config.coarse_fraction:.0%}, "
            f"then from {lr_share:.0%} of the peak learning rate)")


def training_model(model: nn.Module, config: TrainConfig, run: Run) -> nn.Module:
    """``model`` as the optimiser steps it: DDP in a torchrun job, compiled with ``config.compile``
    (on the first step). It shares the weights; ``model`` itself is saved and evaluated."""
    train_model = wrap_model(model, run.dist, run.device)
    return torch.compile(train_model) if config.compile else train_model


def run_epoch(loop: EpochLoop, state: TrainingState, epoch: int) -> str:
    """Train epoch ``epoch`` (ended early when a time budget is spent), validate it when due, log it,
    keep its model if the selection says so, and save ``last.pt``. Returns what stops the run after
    it (``"budget_minutes"`` or ``"max_minutes"``), or ""."""
    config, run, parts = loop.config, loop.run, loop.parts
    epoch_start = time.perf_counter()
    parts.clock.start_epoch(state.train_seconds)
    if run.dist.enabled:  # each rank its own augmentation; one process draws as it always did
        seed_everything(rank_seed(config.seed, epoch, run.dist.rank))
    stats = train_one_epoch(loop.train_model, parts.loader, parts.loss_fn, parts.optimizer, parts.scheduler,
                            run.runtime, run.progress, all_finite=lambda finite: all_ranks(finite, run.dist),
                            batch_transform=parts.batch_transform,
                            should_stop=lambda: parts.budget is not None and parts.budget.spent,
                            after_step=lambda: parts.averaged and parts.averaged.update_parameters(parts.model))
    parts.clock.stop_epoch()
    state.train_images += stats["images"]
    state.train_seconds += stats["seconds"]
    next_seconds = next_epoch_seconds(stats["seconds"], parts.budget, state.train_seconds)
    stopping = ("budget_minutes" if stats["stopped"] else
                "max_minutes" if out_of_time(config, run, epoch, next_seconds, state.val_seconds) else "")
    val = validate(loop, state) if loop.selection.validates(config, epoch, bool(stopping)) else None
    state.epoch, state.wall_s = epoch, run.elapsed()
    state.history.append(epoch_row(epoch, stats, val, parts.optimizer, time.perf_counter() - epoch_start, state.wall_s))
    loop.logger.log_epoch(state.history)
    if val:
        loop.logger.log_outlines(loop.data.val_volumes, val["probs"], loop.picks, epoch)
        keep_validation(loop, state, val)
    if run.dist.is_main:  # after best.pt: killed between the two, a resume repeats this epoch and its best.pt
        save_training_state(run.weights_dir / "last.pt", state, parts.model, parts.optimizer, parts.scheduler,
                            parts.sampler_generator, config, parts.averaged, loop.data.trained_on)
    run.say(f"epoch {epoch:3d}/{config.epochs}  train loss {stats['loss']:.4f}  "
            + (f"val loss {val['loss']:.4f}  val DSC mean {val['mean']:.4f} median {val['median']:.4f}  "
               if val else "")
            + f"{state.history[-1]['train_images_per_s']:.1f} img/s  {state.wall_s / 60:.1f} min")
    return stopping


def out_of_time(config: TrainConfig, run: Run, epoch: int, train_seconds: float, val_seconds: float) -> bool:
    """Whether another epoch (``train_seconds`` of training, and a validation of ``val_seconds`` at
    worst) would end after ``config.max_minutes``, counting a validation of this epoch first. Rank 0
    decides for every rank. With a time budget, ``train_seconds`` is what is left of it if less than
    an epoch: the budget's last short epoch must not be cut by a guess made from a whole one."""
    return run.dist.broadcast(epoch < config.epochs and would_overrun(
        config.max_minutes, run.elapsed(), train_seconds, val_seconds))


def next_epoch_seconds(epoch_seconds: float, budget: TimeBudget | None, trained_seconds: float) -> float:
    """The training seconds the next epoch will take: as long as the last one (``epoch_seconds``),
    or what is left of ``budget`` after ``trained_seconds`` if that is less."""
    return epoch_seconds if budget is None else max(0.0, min(epoch_seconds, budget.seconds - trained_seconds))


def would_overrun(max_minutes: float, elapsed_seconds: float, train_seconds: float, val_seconds: float) -> bool:
    """Whether, ``elapsed_seconds`` into a run, a validation, ``train_seconds`` of training and another
    validation would end after ``max_minutes`` (0: never)."""
    return bool(max_minutes) and elapsed_seconds + val_seconds + train_seconds + val_seconds > max_minutes * 60


def overrun_warning(config: TrainConfig, epoch: int, elapsed_seconds: float, epoch_seconds: float,
                    val_seconds: float) -> str:
    """Said after a run's first epoch when, at that epoch's speed (``epoch_seconds`` of training and a
    validation of ``val_seconds`` every ``config.val_every`` epochs), the epochs left would run past
    ``config.max_minutes``: the safety stop would end the schedule unfinished, so the user hears it now
    rather than at the end. With a time budget instead, after a new run's first epoch: when the epochs
    would end before it, which cuts the schedule short. "" when they fit, or without a safety stop or
    budget."""
    if (config.budget_minutes and config.scheduler == "cosine" and epoch == 1 < config.epochs  # a new run
            and config.epochs * epoch_seconds < config.budget_minutes * 60):
        return (f"at this speed the {config.epochs} epochs take about {config.epochs * epoch_seconds / 60:.0f} of "
                f"the budget's {config.budget_minutes:g} training minutes: training will end at epoch "
                f"{config.epochs} " + cut_short(config))
    if not config.max_minutes or config.budget_minutes or epoch >= config.epochs:
        return ""
    per_epoch = epoch_seconds + val_seconds / config.val_every
    finish = elapsed_seconds + (config.epochs - epoch) * per_epoch
    if finish <= config.max_minutes * 60:
        return ""
    last_epoch = epoch + int((config.max_minutes * 60 - elapsed_seconds) // per_epoch)
    return (f"at this speed the {config.epochs} epochs need about {finish / 60:.0f} min, past "
            f"max_minutes={config.max_minutes:g}: the schedule will end unfinished near epoch {last_epoch}. "
            f"--budget-minutes M fits the whole schedule into M minutes of training, --max-minutes 0 trains "
            f"every epoch (docs/cli.md, 'Epochs or minutes: which budget is which')")


def cut_short(config: TrainConfig) -> str:
    """What epochs that end before the time budget mean, and the fix."""
    return (f"with the learning rate not yet decayed to 0 (the cosine follows the budget's minutes); a new run "
            f"with --epochs above {config.epochs} (only an upper bound under a budget) lets the budget end it")


def unfinished_budget_note(config: TrainConfig, budget: TimeBudget | None) -> str:
    """Said when the last epoch ends before the time budget is spent: the cosine, which follows the
    budget's minutes, is cut short. "" without a budget, without a cosine, or with the budget spent."""
    if budget is None or budget.spent or config.scheduler != "cosine":
        return ""
    return f"training ends at epoch {config.epochs} at {budget.peek():.0%} of the budget, " + cut_short(config)


def validate(loop: EpochLoop, state: TrainingState) -> dict:
    """:func:`~brainseg.validation.evaluate_across_ranks` of the model on the per-epoch validation
    cases (probabilities kept for the drawn slices' cases); records its duration in ``state``."""
    start = time.perf_counter()
    sync_buffers(loop.parts.evaluated, loop.run.dist)
    val = evaluate_across_ranks(loop.parts.evaluated, loop.data.val_volumes, loop.parts.loss_fn, loop.run.runtime,
                                loop.run.dist, loop.run.progress,
                                keep_probs={loop.data.val_volumes[c].case_id for c, _ in loop.picks})
    state.val_seconds = time.perf_counter() - start
    return val


def epoch_row(epoch: int, stats: dict, val: dict | None, optimizer: torch.optim.Optimizer, seconds: float,
              elapsed: float) -> dict:
    """The ``history.csv`` row of an epoch (validation figures NaN when it was not validated)."""
    return {"epoch": epoch, "train_loss": stats["loss"],
            **{f"val_{k}": val[key] if val else math.nan
               for k, key in (("loss", "loss"), ("mean_dsc", "mean"), ("median_dsc", "median"))},
            "lr": optimizer.param_groups[0]["lr"],
            "train_images_per_s": stats["images"] / stats["seconds"],
            "epoch_seconds": seconds,
            "elapsed_seconds": elapsed}


def keep_validation(loop: EpochLoop, state: TrainingState, val: dict) -> None:
    """Record an epoch's validation in ``state``; when the selection keeps it, update ``state.best``
    and save the model as ``best.pt``."""
    state.metrics = {"val_mean_dsc": val["mean"], "val_median_dsc": val["median"], "per_case": val["per_case"]}
    if loop.selection.keeps(val["mean"], state.best):
        state.best = {"val_mean_dsc": val["mean"], "val_median_dsc": val["median"], "epoch": state.epoch,
                      "per_case": val["per_case"], "per_case_without_lcc": val["per_case_without_lcc"]}
        if loop.run.dist.is_main:
            save_checkpoint(loop.run.weights_dir / "best.pt", loop.parts.evaluated, loop.config, state.epoch,
                            state.metrics, precision=state.precision,
                            trained_on=loop.data.trained_on)


def finish_distributed(model: nn.Module, dist: Distributed) -> bool:
    """In a torchrun job, check that every rank ends with the same weights and leave the process
    group. Returns whether this process goes on to the summary (rank 0, or the only process).

    Raises:
        RuntimeError: the ranks' weights differ.
    """
    if not dist.enabled:
        return True
    sync_buffers(model, dist)
    if not ranks_agree(model, dist):
        raise RuntimeError("the processes ended with different weights; DistributedDataParallel lost sync")
    print(f"rank {dist.rank}/{dist.world_size}: weights agree across ranks")
    shutdown(dist)
    return dist.is_main


def run_summary(config: TrainConfig, run: Run, data: RunData, state: TrainingState, entries: dict, best: dict,
                selection: Selection, stop_reason: str, model: nn.Module) -> dict:
    """The run's ``metrics.json``: what ran, the ``selection`` ``entries`` and the kept model's
    figures (``best``), the final epoch's, and time, throughput, memory and versions."""
    final = state.history[-1]  # the last epoch's model on the per-epoch validation cases
    return {
        "run": run.name, "model": config.model, "loss": config.loss, "preset": config.preset,
        "image_size": config.image_size, "epochs": len(state.history),
        "split": config.split if config.split == "reference" else f"kfold{config.folds}-fold{config.fold}",
        **entries,
        "val_mean_dsc": best["val_mean_dsc"], "val_median_dsc": best["val_median_dsc"],
        "per_case": best["per_case"], "best_epoch": best["epoch"],
        f"{selection.final_prefix}_mean_dsc": final["val_mean_dsc"],
        f"{selection.final_prefix}_median_dsc": final["val_median_dsc"],
        "stopped_early": bool(stop_reason),
        "stop_reason": stop_reason,  # "", "max_minutes" or "budget_minutes"
        "wall_time_s": round(state.wall_s, 1),
        "data_prep_s": round(data.seconds, 1),
        "train_images_per_s": round(state.train_images * run.dist.world_size / state.train_seconds, 2),  # all processes
        "processes": run.dist.world_size,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "precision": state.precision,
        "parameters": count_parameters(model),
        "train_cases": len(data.train_ids),
        "val_cases": len(data.outer_ids),
        "device": describe_device(run.device),
        "torch_version": torch.__version__,
        "command": state.commands[0],  # the command that started the run
        "resumed": run.resumed,
        "commands": state.commands,
        "config": config.to_dict(),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compute_loss(loss_fn: nn.Module, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The loss of ``logits`` (N, K, H, W) against ``mask`` (N, 1, H, W).

    K = 1 is a plain prediction; K > 1 are the heads of a deeply supervised model in training mode,
    weighted as ``loss_fn`` says if it is a :class:`~brainseg.losses.DeepSupervisionLoss`, else
    averaged.
    """
    if not isinstance(loss_fn, DeepSupervisionLoss):
        loss_fn = DeepSupervisionLoss(loss_fn)
    return loss_fn(logits, mask)


def training_step(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, loss_fn: nn.Module,
                  optimizer: torch.optim.Optimizer, runtime: Runtime) -> torch.Tensor:
    """One optimisation step on a batch already on the device; returns the (detached-able) loss."""
    with runtime.autocast():
        logits = model(image)
    loss = compute_loss(loss_fn, logits, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_one_epoch(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, runtime: Runtime, progress: bool = True, check_every: int = 10,
                    all_finite=lambda finite: finite, batch_transform=None, should_stop=lambda: False,
                    after_step=lambda: None) -> dict:
    """One pass over ``loader``, or fewer steps if ``should_stop()`` turns true after a step.

    ``batch_transform(image, mask)``, if given, changes each batch on the device (augmentation,
    :class:`~brainseg.data.transforms.BatchAugment`; shrinking, :class:`~brainseg.schedule.CoarseStart`).

    ``after_step()`` runs after every optimiser step (the moving average's update).

    ``all_finite(finite)`` combines the finiteness of this process's loss with that of the other
    processes of a torchrun job, so that all stop together.

    Returns:
        ``{"loss": mean train loss, "images": number of images, "seconds": wall time, "stopped":
        whether should_stop ended the pass}``.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (checked every ``check_every`` steps).
    """
    model.train()
    start, images, stopped = time.perf_counter(), 0, False
    total = torch.zeros((), device=runtime.device)
    with tqdm(loader, desc="train", unit="batch", leave=False, disable=not progress) as bar:  # closed on errors too
        for step, (image, mask) in enumerate(bar, 1):
            image, mask = image.to(runtime.device, non_blocking=True), mask.to(runtime.device, non_blocking=True)
            if batch_transform is not None:
                image, mask = batch_transform(image, mask)
            image = runtime.to_input(image)
            loss = training_step(model, image, mask, loss_fn, optimizer, runtime)
            after_step()
            scheduler.step()
            total += loss.detach() * image.shape[0]
            images += image.shape[0]
            stopped = should_stop()
            if step % check_every == 0 or step == len(loader) or stopped:
                value = loss.item()  # one sync every check_every steps keeps CUDA busy
                if not all_finite(math.isfinite(value)):
                    raise TrainingDiverged(f"loss became {value} at step {step}; lower the learning rate")
                bar.set_postfix(loss=f"{value:.4f}")
            if stopped:
                break
    return {"loss": total.item() / max(images, 1), "images": images, "seconds": time.perf_counter() - start,
            "stopped": stopped}


def coarse_start(config: TrainConfig, scheduler: torch.optim.lr_scheduler.LRScheduler, steps_per_epoch: int,
                 budget: TimeBudget | None) -> CoarseStart | None:
    """The progressive resizing of ``config`` (``coarse_size``), None if off. The run's progress is
    the budget's fraction spent, or the scheduler's steps over ``epochs`` of ``steps_per_epoch``;
    both are restored with a resumed run."""
    if not config.coarse_size:
        return None
    total_steps = config.epochs * steps_per_epoch
    progress = budget.peek if budget is not None else lambda: scheduler.last_epoch / total_steps
    return CoarseStart(config.coarse_size, config.coarse_fraction, progress, config.soft_masks)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def default_run_name(config: TrainConfig) -> str:
    """``<preset>-<model>-<loss>-<size>px-<time>``, from this process's clock.

    Raises:
        ValueError: under torchrun, where each process's clock could name the run differently.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("under torchrun, give the run a --run-name: each process would name it by its own clock")
    return f"{config.preset}-{config.model}-{config.loss}-{config.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}"


def _vis_slices(volumes: list[CaseVolume], count: int) -> list[tuple[int, int]]:
    """(case index, slice index) of the ``count`` validation slices with the largest lesions."""
    areas = [(int(v.metric_mask[s].sum()), c, s) for c, v in enumerate(volumes) for s in range(v.num_slices)]
    return [(c, s) for _, c, s in sorted(areas, reverse=True)[:count]]


class RunLogger:
    """Writes ``config.json``, ``history.csv`` and TensorBoard events of one run."""

    COLUMNS = ["epoch", "train_loss", "val_loss", "val_mean_dsc", "val_median_dsc", "lr",
               "train_images_per_s", "epoch_seconds", "elapsed_seconds"]

    def __init__(self, log_dir: Path, config: TrainConfig, purge_step: int | None = None, active: bool = True):
        """``purge_step``: the first epoch of a resumed run; its TensorBoard events and later ones are
        dropped. ``active=False`` (ranks other than 0) writes nothing."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir, self.active = log_dir, active
        if not active:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(log_dir / "config.json", config.to_dict())
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_epoch(self, history: list[dict]) -> None:
        """Write ``history`` (one row per epoch, the latest last) as ``history.csv``, and the latest
        row's figures as TensorBoard scalars."""
        if not self.active:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.COLUMNS)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.log_dir / "history.csv", buffer.getvalue())
        row = history[-1]
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("dsc/val_mean", "val_mean_dsc"),
                         ("dsc/val_median", "val_median_dsc"), ("lr", "lr")):
            if not math.isnan(row[key]):  # epochs without validation (val_every > 1) have no val figures
                self.writer.add_scalar(tag, row[key], row["epoch"])

    def log_outlines(self, volumes: list[CaseVolume], probs: dict, picks: list[tuple[int, int]], step: int) -> None:
        """FLAIR with truth (green) and prediction (red) outlines, on the 256 grid."""
        if not picks or not self.active:
            return
        images = []
        for c, s in picks:
            volume = volumes[c]
            flair = to_metric_grid(torch.from_numpy(volume.image[s:s + 1, 1:2].astype(np.float32)))[0].numpy()
            images.append(outline_overlay(flair, volume.metric_mask[s], probs[volume.case_id][s] > 0.5))
        self.writer.add_images("val/outlines", np.stack(images), step, dataformats="NHWC")

    def close(self) -> None:
        if self.active:
            self.writer.close()


