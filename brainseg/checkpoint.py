"""Self-describing checkpoints, written atomically, :func:`load_model`, and the training state a
run saves after every epoch and resumes from (:func:`save_training_state`, :func:`restore_training_state`)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .config import TrainConfig
from .models import create_model

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: TrainConfig, epoch: int,
                    metrics: dict, **state) -> None:
    """Save everything needed to rebuild ``model`` without other arguments.

    Args:
        path: ``.pt`` file, replaced atomically.
        model: the trained model (its float32 ``state_dict`` is stored).
        config: the run's configuration (its ``image_size`` is the size the model was trained at).
        epoch: epochs completed.
        metrics: e.g. ``{"val_mean_dsc": ...}``.
        state: extra entries, e.g. optimizer and scheduler state dicts.
    """
    checkpoint = {
        "version": CHECKPOINT_VERSION,
        "model": config.model,
        "model_kwargs": config.model_kwargs(),
        "image_size": config.image_size,
        "preprocessing": {"protocol": "reference (docs/protocol.md, section 2)", "image_size": config.image_size,
                          "metric_size": 256},
        "config": config.to_dict(),
        "epoch": epoch,
        "metrics": metrics,
        "state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                       for k, v in model.state_dict().items()},
        **state,
    }
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint dict (tensors on CPU).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a brainseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there; train one with 'python -m brainseg train'")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read this checkpoint ({type(exc).__name__}: {exc})") from exc
    expected = ("model", "model_kwargs", "state_dict", "config")
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in expected):
        raise ValueError(f"{path}: not a brainseg checkpoint (expected the keys {', '.join(expected)})")
    return checkpoint


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model of a checkpoint in eval mode on ``device``, and its training config."""
    return build_model(load_checkpoint(path), device)


def build_model(checkpoint: dict, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """:func:`load_model` of a checkpoint already read by :func:`load_checkpoint`, with
    :func:`model_weights`."""
    model = create_model(checkpoint["model"], **checkpoint["model_kwargs"])
    model.load_state_dict(model_weights(checkpoint))
    return model.to(device).eval(), TrainConfig.from_dict(checkpoint["config"])


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights a run validates and predicts with: in a training checkpoint of a run with
    ``ema`` (``last.pt``), the moving average it kept beside the raw weights it resumes from
    (``averaged``, whose keys carry AveragedModel's ``module.`` prefix and an ``n_averaged``
    counter); in any other checkpoint, ``state_dict``."""
    averaged = checkpoint.get("averaged")
    if averaged is None:
        return checkpoint["state_dict"]
    return {key.removeprefix("module."): value for key, value in averaged.items() if key.startswith("module.")}


def compact_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write a smaller copy of a checkpoint for shipping, without optimizer or scheduler state.

    Learned weights are stored in float16; BatchNorm running statistics stay float32 (a running
    variance can exceed float16's range of 65504). :func:`load_model` reads the copy like any
    other checkpoint; weights return to float32. The copy is for other machines, so its precision
    record is marked ``shipped``: a CPU predicts with it in fp32 even where training timed its own
    CPU and picked bf16 (:func:`brainseg.runtime.inference_amp`).
    """
    checkpoint = load_checkpoint(source)
    compact = {k: v for k, v in checkpoint.items() if k not in ("optimizer", "scheduler", "averaged", "rng")}
    compact["state_dict"] = {
        k: v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v
        for k, v in model_weights(checkpoint).items()
    }
    compact["compacted_from"] = str(source)
    record = checkpoint.get("precision") or checkpoint.get("progress", {}).get("precision")
    if record:
        compact["precision"] = {**record, "shipped": True}
    atomic_write(target, lambda f: torch.save(compact, f))
    return Path(target)


@dataclass
class TrainingState:
    """Where a training run stands after an epoch, besides the modules' own state.

    Attributes:
        epoch: epochs completed.
        best: the kept model's epoch and validation figures (``val_mean_dsc``, ``val_median_dsc``,
            ``per_case``, ``per_case_without_lcc``); ``{"val_mean_dsc": -1.0, "epoch": 0}`` before any.
        history: one ``history.csv`` row (a dict) per epoch completed.
        metrics: the latest validation's ``val_mean_dsc``, ``val_median_dsc`` and ``per_case``.
        wall_s, train_images, train_seconds: wall time, images and seconds of training so far.
        val_seconds: the latest validation's duration (for the time budget).
        commands: the command that started the run, then one per resume.
        precision: how the run's precision was chosen (:func:`brainseg.runtime.resolve_amp`); a
            resumed run keeps it.
    """

    epoch: int = 0
    best: dict = field(default_factory=lambda: {"val_mean_dsc": -1.0, "epoch": 0})
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    train_images: int = 0
    train_seconds: float = 0.0
    val_seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    precision: dict = field(default_factory=dict)


def save_training_state(path: str | os.PathLike, state: TrainingState, model: nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler, sampler_generator: torch.Generator,
                        config: TrainConfig, averaged: nn.Module | None = None,
                        trained_on: list[str] | None = None) -> None:
    """Save a checkpoint (:func:`save_checkpoint`) that :func:`restore_training_state` resumes from:
    ``model`` with ``state``, the optimizer's and scheduler's state dicts, every random state
    (:func:`rng_state`), if given the ``averaged`` weights (``config.ema``) and the case ids the
    run ``trained_on`` (its training and inner validation cases, read by :mod:`brainseg.ensemble`)."""
    extra = {"averaged": averaged.state_dict()} if averaged is not None else {}
    if trained_on is not None:
        extra["trained_on"] = sorted(trained_on)
    save_checkpoint(path, model, config, state.epoch, state.metrics,
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    rng=rng_state(sampler_generator), best=state.best, history=state.history,
                    progress={"wall_s": state.wall_s, "train_images": state.train_images,
                              "train_seconds": state.train_seconds, "val_seconds": state.val_seconds,
                              "commands": state.commands, "precision": state.precision}, **extra)


def restore_training_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler, sampler_generator: torch.Generator,
                           averaged: nn.Module | None = None) -> TrainingState:
    """Load what :func:`save_training_state` saved into ``model``, ``optimizer``, ``scheduler``,
    ``sampler_generator``, ``averaged`` (if given) and the global random states, and return the
    run's :class:`TrainingState`.

    Raises:
        FileNotFoundError, ValueError: no checkpoint at ``path``, or one without a training state
            (e.g. ``best.pt`` or a compacted one), or without averaged weights when they are asked for,
            or with an optimizer state of other parameters.
    """
    checkpoint = load_checkpoint(path)
    if "rng" not in checkpoint:
        raise ValueError(f"{path}: no training state in this checkpoint; cannot resume")
    if averaged is not None:
        if "averaged" not in checkpoint:
            raise ValueError(f"{path}: the run was saved without averaged weights (ema); resume it with ema 0")
        averaged.load_state_dict(checkpoint["averaged"])
    model.load_state_dict(checkpoint["state_dict"])
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError as exc:  # e.g. a UNet++ run saved before it dropped the heads it does not use
        raise ValueError(f"{path}: its optimizer state does not fit this model's parameters ({exc}); the run "
                         "cannot resume, but its checkpoints still evaluate and predict") from exc
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"], sampler_generator)
    progress = checkpoint["progress"]
    return TrainingState(epoch=checkpoint["epoch"], best=checkpoint["best"], history=checkpoint["history"],
                         metrics=checkpoint["metrics"], wall_s=progress["wall_s"],
                         train_images=progress["train_images"], train_seconds=progress["train_seconds"],
                         val_seconds=progress.get("val_seconds", 0.0), commands=progress.get("commands", []),
                         precision=progress.get("precision", {}))


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
