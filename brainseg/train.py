"""The training loop: :func:`train_one_epoch` and :func:`fit`, which runs a whole configured
training (validating with :mod:`brainseg.validation`) and writes its outputs.

Outputs of a run named ``R``:

- ``logs/R/``: ``config.json``, ``history.csv`` (one row per epoch), ``metrics.json`` (best epoch,
  validation mean/median/per-case DSC, wall time, device, versions) and TensorBoard events
  (train/val loss, val mean DSC, outline images);
- ``weights/R/best.pt`` (best validation mean DSC) and ``last.pt``, both self-describing and
  written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .cache import CaseVolume, load_volumes
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import discover_cases
from .dataset import SliceDataset, make_sampler
from .distributed import (ShardedSampler, all_ranks, init_distributed, ranks_agree, shutdown, sync_buffers,
                          wrap_model)
from .io import atomic_write_json, atomic_write_text
from .losses import create_loss
from .metrics import summarize, to_metric_grid
from .models import count_parameters, create_model
from .plots import outline_overlay
from .runtime import Runtime, describe_precision, peak_memory_mb, resolve_amp, select_device
from .splits import folds_from_file, inner_split, kfold_split, reference_split
from .transforms import BatchAugment, JointAugment
from .validation import evaluate_across_ranks, select_and_evaluate_outer

class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(sampler_generator: torch.Generator) -> dict:
    """Every random state a resumed run needs to continue exactly: torch, NumPy, Python, sampler."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "sampler": sampler_generator.get_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                      "gauss": gauss},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng_state(state: dict, sampler_generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    sampler_generator.set_state(state["sampler"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))


def split_cases(config: TrainConfig) -> tuple[list[str], list[str]]:
    """(train, validation) case ids of ``config``'s split, shortened by ``max_*_cases``."""
    case_ids = sorted(discover_cases(config.data_dir or None))
    if config.split == "reference":
        train, val = reference_split(case_ids)
    else:
        train, val = (folds_from_file(config.folds_file, case_ids, config.fold) if config.folds_file
                      else kfold_split(case_ids, config.folds, config.fold, config.split_seed))
    return train[: config.max_train_cases or None], val[: config.max_val_cases or None]


def compute_loss(loss_fn: nn.Module, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The loss of ``logits`` (N, K, H, W) against ``mask`` (N, 1, H, W).

    K = 1 is a plain prediction; K > 1 are the heads of a deeply supervised model (UNet++ in
    training mode) and the loss is averaged over them.
    """
    if logits.shape[1] == mask.shape[1]:
        return loss_fn(logits, mask)
    return torch.stack([loss_fn(head, mask) for head in logits.split(mask.shape[1], dim=1)]).mean()


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
                    all_finite=lambda finite: finite, batch_augment=None) -> dict:
    """One pass over ``loader``.

    ``batch_augment(image, mask)``, if given, augments each batch on the device (see
    :class:`~brainseg.transforms.BatchAugment`).

    ``all_finite(finite)`` combines the finiteness of this process's loss with that of the other
    processes of a torchrun job, so that all stop together.

    Returns:
        ``{"loss": mean train loss, "images": number of images, "seconds": wall time}``.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (checked every ``check_every`` steps).
    """
    model.train()
    start, images = time.perf_counter(), 0
    total = torch.zeros((), device=runtime.device)
    with tqdm(loader, desc="train", unit="batch", leave=False, disable=not progress) as bar:  # closed on errors too
        for step, (image, mask) in enumerate(bar, 1):
            image, mask = image.to(runtime.device, non_blocking=True), mask.to(runtime.device, non_blocking=True)
            if batch_augment is not None:
                image, mask = batch_augment(image, mask)
            image = runtime.to_input(image)
            loss = training_step(model, image, mask, loss_fn, optimizer, runtime)
            scheduler.step()
            total += loss.detach() * image.shape[0]
            images += image.shape[0]
            if step % check_every == 0 or step == len(loader):
                value = loss.item()  # one sync every check_every steps keeps CUDA busy
                if not all_finite(math.isfinite(value)):
                    raise TrainingDiverged(f"loss became {value} at step {step}; lower the learning rate")
                bar.set_postfix(loss=f"{value:.4f}")
    return {"loss": total.item() / max(images, 1), "images": images, "seconds": time.perf_counter() - start}


def _silent(*args, **kwargs) -> None:
    """Stands in for printing on ranks other than 0."""


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Per-step learning-rate schedule: constant, or linear warm-up then cosine decay to 0."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if config.scheduler == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def default_run_name(config: TrainConfig) -> str:
    return f"{config.preset}-{config.model}-{config.loss}-{config.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}"


def _vis_slices(volumes: list[CaseVolume], count: int) -> list[tuple[int, int]]:
    """(case index, slice index) of the ``count`` validation slices with the largest lesions."""
    areas = [(int(v.metric_mask[s].sum()), c, s) for c, v in enumerate(volumes) for s in range(v.num_slices)]
    return [(c, s) for _, c, s in sorted(areas, reverse=True)[:count]]


class RunLogger:
    """Writes ``config.json``, ``history.csv`` and TensorBoard events of one run."""

    COLUMNS = ["epoch", "train_loss", "val_loss", "val_mean_dsc", "val_median_dsc", "lr",
               "train_images_per_s", "epoch_seconds", "elapsed_seconds"]

    def __init__(self, log_dir: Path, config: TrainConfig, rows: list[dict] | None = None, purge_step: int = 1,
                 active: bool = True):
        """``rows``: history of a resumed run; TensorBoard events from ``purge_step`` on are dropped.
        ``active=False`` (ranks other than 0) keeps the rows in memory and writes nothing."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir, self.active = log_dir, active
        self.rows: list[dict] = list(rows or [])
        if not active:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(log_dir / "config.json", config.to_dict())
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step if rows else None)

    def log_epoch(self, row: dict) -> None:
        self.rows.append(row)
        if not self.active:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.log_dir / "history.csv", buffer.getvalue())
        step = row["epoch"]
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("dsc/val_mean", "val_mean_dsc"),
                         ("dsc/val_median", "val_median_dsc"), ("lr", "lr")):
            if not math.isnan(row[key]):  # epochs without validation (val_every > 1) have no val figures
                self.writer.add_scalar(tag, row[key], step)

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


def fit(config: TrainConfig, command: str = "", progress: bool = True, resume: bool = False) -> dict | None:
    """Train ``config`` end to end and write every output of the run.

    Args:
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
    wall_start = time.perf_counter()
    config.validate()
    if resume and not config.run_name:
        raise ValueError("resume needs the run_name of the run to continue")
    run_name = config.run_name or default_run_name(config)
    log_dir, weights_dir = config.run_dirs(run_name)
    device = select_device(config.device)
    dist = init_distributed(device.type)  # one process unless started by torchrun
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {dist.world_size} processes")
    progress = progress and dist.is_main
    runtime = Runtime(device, config.amp, config.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_ids, outer_ids = split_cases(config)
    if config.selection == "inner":  # choose on training cases; the outer cases are evaluated once at the end
        train_ids, val_ids = inner_split(train_ids, config.inner_val_cases, config.split_seed)
    else:
        val_ids = outer_ids
    data_start = time.perf_counter()
    data_kwargs = dict(image_size=config.image_size, data_dir=config.data_dir or None,
                       cache_dir=config.cache_dir or None, progress=progress)
    if not dist.is_main:
        dist.barrier()  # rank 0 builds the cache first; the others then read it
    train_volumes = load_volumes(train_ids, **data_kwargs)
    val_volumes = load_volumes(val_ids, **data_kwargs)
    outer_volumes = load_volumes(outer_ids, **data_kwargs) if config.selection == "inner" else val_volumes
    if dist.is_main:
        dist.barrier()
    data_seconds = time.perf_counter() - data_start

    seed_everything(config.seed)
    model = create_model(config.model, features=config.features, **config.model_args).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # amp "auto" times both precisions on a CPU; every rank trains in rank 0's pick
    runtime.amp, amp_choice = dist.broadcast(resolve_amp(config.amp, model, device, config.channels_last,
                                                         config.image_size, config.batch_size // dist.world_size))
    loss_fn = create_loss(config.loss, **config.loss_args)
    augment_args = (config.aug_scale, config.aug_angle, config.flip_prob, config.flair_fill, config.intensity)
    batch_augment = BatchAugment(*augment_args) if config.augment == "batch" else None
    train_set = SliceDataset(train_volumes, JointAugment(*augment_args) if config.augment == "sample" else None)
    sampler_generator = torch.Generator().manual_seed(config.seed)
    sampler = make_sampler(train_set, config.sampler, sampler_generator)
    if dist.enabled:  # the same order on every rank (same seed); each rank takes every N-th sample
        sampler = ShardedSampler(sampler, dist.rank, dist.world_size)
    # Workers are started anew each epoch and seeded from the global torch RNG, whose state is in
    # last.pt: this is what makes a resumed run repeat an uninterrupted one.
    loader = DataLoader(train_set, batch_size=config.batch_size // dist.world_size, sampler=sampler,
                        num_workers=config.workers, pin_memory=device.type == "cuda")
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loader))
    best = {"val_mean_dsc": -1.0, "epoch": 0}
    history: list[dict] = []
    start_epoch, previous_wall, train_images, train_seconds, val_seconds = 1, 0.0, 0, 0.0, 0.0
    commands = [command]  # the run's first command, then one per resume
    metrics: dict = {}
    if resume:
        checkpoint = load_checkpoint(weights_dir / "last.pt")
        if "rng" not in checkpoint:
            raise ValueError(f"{weights_dir / 'last.pt'}: no training state in this checkpoint; cannot resume")
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"], sampler_generator)
        best, history = checkpoint["best"], checkpoint["history"]
        start_epoch = checkpoint["epoch"] + 1
        previous_wall, train_images, train_seconds = (checkpoint["progress"][k] for k in
                                                      ("wall_s", "train_images", "train_seconds"))
        val_seconds, metrics = checkpoint["progress"].get("val_seconds", 0.0), checkpoint["metrics"]
        commands = [*checkpoint["progress"].get("commands", []), command]
        runtime.amp, amp_choice = checkpoint["progress"].get("amp", (runtime.amp, amp_choice))  # as it started
        print(f"resuming {run_name} after epoch {checkpoint['epoch']} (best {best['val_mean_dsc']:.4f} "
              f"at epoch {best['epoch']})")
    logger = RunLogger(log_dir, config, history, purge_step=start_epoch, active=dist.is_main)
    train_model = wrap_model(model, dist, device)  # DDP in a torchrun job; saved and evaluated unwrapped
    if config.compile:  # compiled on the first step; shares the weights with the eager model
        train_model = torch.compile(train_model)
    picks = _vis_slices(val_volumes, config.vis_slices)
    params = count_parameters(model)
    print(f"run {run_name}: {config.model} ({params / 1e6:.2f} M parameters), {config.loss} loss, "
          f"{len(train_ids)} train / {len(val_ids)} val cases ({len(train_set)} train slices), "
          f"{config.image_size} px, device {device}, {describe_precision(amp_choice)}, data ready in {data_seconds:.1f} s")

    stopped_early = False
    say = (lambda text: tqdm.write(text, file=sys.stdout)) if dist.is_main else _silent
    epochs = tqdm(range(start_epoch, config.epochs + 1), desc="epochs", unit="epoch", disable=not progress,
                  initial=start_epoch - 1, total=config.epochs)
    try:
        for epoch in epochs:
            epoch_start = time.perf_counter()
            stats = train_one_epoch(train_model, loader, loss_fn, optimizer, scheduler, runtime, progress,
                                    all_finite=lambda finite: all_ranks(finite, dist), batch_augment=batch_augment)
            train_images += stats["images"]
            train_seconds += stats["seconds"]
            # stop when the next epoch (training, and validation at worst) would cross max_minutes
            after_train = previous_wall + time.perf_counter() - wall_start
            stopped_early = dist.broadcast(bool(config.max_minutes) and epoch < config.epochs and (
                after_train + val_seconds + stats["seconds"] + val_seconds > config.max_minutes * 60))
            val = None
            if stopped_early or epoch == config.epochs or epoch % config.val_every == 0:
                val_start = time.perf_counter()
                sync_buffers(model, dist)
                val = evaluate_across_ranks(model, val_volumes, loss_fn, runtime, dist, progress,
                                            keep_probs={val_volumes[c].case_id for c, _ in picks})
                val_seconds = time.perf_counter() - val_start
            elapsed = previous_wall + time.perf_counter() - wall_start
            row = {"epoch": epoch, "train_loss": stats["loss"],
                   **{f"val_{k}": val[key] if val else math.nan
                      for k, key in (("loss", "loss"), ("mean_dsc", "mean"), ("median_dsc", "median"))},
                   "lr": optimizer.param_groups[0]["lr"],
                   "train_images_per_s": stats["images"] / stats["seconds"],
                   "epoch_seconds": time.perf_counter() - epoch_start,
                   "elapsed_seconds": elapsed}
            logger.log_epoch(row)
            if val:
                logger.log_outlines(val_volumes, val["probs"], picks, epoch)
                metrics = {"val_mean_dsc": val["mean"], "val_median_dsc": val["median"], "per_case": val["per_case"]}
                if config.selection == "last" or val["mean"] > best["val_mean_dsc"]:
                    best = {"val_mean_dsc": val["mean"], "val_median_dsc": val["median"], "epoch": epoch,
                            "per_case": val["per_case"], "per_case_without_lcc": val["per_case_without_lcc"]}
                    if dist.is_main:
                        save_checkpoint(weights_dir / "best.pt", model, config, epoch, metrics, config.image_size)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": rng_state(sampler_generator), "best": best, "history": logger.rows,
                     "progress": {"wall_s": elapsed, "train_images": train_images, "train_seconds": train_seconds,
                                  "val_seconds": val_seconds, "commands": commands,
                                  "amp": (runtime.amp, amp_choice)}}
            if dist.is_main:
                save_checkpoint(weights_dir / "last.pt", model, config, epoch, metrics, config.image_size, **state)
            say(f"epoch {epoch:3d}/{config.epochs}  train loss {stats['loss']:.4f}  "
                + (f"val loss {val['loss']:.4f}  val DSC mean {val['mean']:.4f} median {val['median']:.4f}  "
                   if val else "")
                + f"{row['train_images_per_s']:.1f} img/s  {elapsed / 60:.1f} min")
            if stopped_early:
                say(f"stopping: another epoch would end after max_minutes={config.max_minutes}")
                break
    except TrainingDiverged as exc:  # say which run, and what it kept
        best_path = weights_dir / "best.pt"
        kept = f"the best model so far is in {best_path}" if best_path.is_file() else "no checkpoint was saved yet"
        raise TrainingDiverged(f"run {run_name}, epoch {epoch}: {exc}; {kept}") from exc
    finally:
        epochs.close()  # before any error message, so that it starts on a line of its own
        logger.close()
    if dist.enabled:
        sync_buffers(model, dist)
        if not ranks_agree(model, dist):
            raise RuntimeError("the processes ended with different weights; DistributedDataParallel lost sync")
        print(f"rank {dist.rank}/{dist.world_size}: weights agree across ranks")
        shutdown(dist)
        if not dist.is_main:
            return None

    selection = {"selection": "best epoch by mean DSC on the validation cases themselves (reference protocol, optimistic)"}
    if config.selection == "last":
        selection = {"selection": "last: the final epoch's model, nothing chosen on evaluated cases"}
    if config.selection != "inner" and "per_case_without_lcc" in best:
        selection["per_case_without_lcc"] = best["per_case_without_lcc"]
        selection["val_mean_dsc_without_lcc"] = summarize(best["per_case_without_lcc"])["mean"]
    elif config.selection == "inner":
        selection = select_and_evaluate_outer(weights_dir / "best.pt", val_volumes, outer_volumes, loss_fn, runtime,
                                              progress)
        best = {**best, "val_mean_dsc": selection.pop("outer_mean"), "val_median_dsc": selection.pop("outer_median"),
                "per_case": selection.pop("outer_per_case")}
    wall = previous_wall + time.perf_counter() - wall_start
    result = {
        "run": run_name,
        "model": config.model,
        "loss": config.loss,
        "preset": config.preset,
        "image_size": config.image_size,
        "epochs": len(logger.rows),
        "split": config.split if config.split == "reference" else f"kfold{config.folds}-fold{config.fold}",
        **selection,
        "val_mean_dsc": best["val_mean_dsc"],
        "val_median_dsc": best["val_median_dsc"],
        "per_case": best["per_case"],
        "best_epoch": best["epoch"],
        # the last epoch's model on the per-epoch validation cases (inner ones with inner selection)
        f"final_{'inner' if config.selection == 'inner' else 'val'}_mean_dsc": logger.rows[-1]["val_mean_dsc"],
        f"final_{'inner' if config.selection == 'inner' else 'val'}_median_dsc": logger.rows[-1]["val_median_dsc"],
        "stopped_early": stopped_early,
        "wall_time_s": round(wall, 1),
        "data_prep_s": round(data_seconds, 1),
        "train_images_per_s": round(train_images * dist.world_size / train_seconds, 2),  # all processes
        "processes": dist.world_size,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "precision": amp_choice,
        "parameters": params,
        "train_cases": len(train_ids),
        "val_cases": len(outer_ids),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch_version": torch.__version__,
        "command": commands[0],  # the command that started the run
        "resumed": resume,
        "commands": commands,
        "config": config.to_dict(),
    }
    atomic_write_json(log_dir / "metrics.json", result)
    print(f"best epoch {best['epoch']}: val mean DSC {best['val_mean_dsc']:.4f}, median {best['val_median_dsc']:.4f}; "
          f"wall time {wall / 60:.1f} min; outputs in {log_dir} and {weights_dir}")
    return result
