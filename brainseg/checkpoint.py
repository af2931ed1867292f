"""Self-describing checkpoints, written atomically, and :func:`load_model`."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .io import atomic_write
from .models import create_model

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: TrainConfig, epoch: int,
                    metrics: dict, geometry_size: int, **state) -> None:
    """Save everything needed to rebuild ``model`` without other arguments.

    Args:
        path: ``.pt`` file, replaced atomically.
        model: the trained model (its float32 ``state_dict`` is stored).
        config: the run's configuration.
        epoch: epochs completed.
        metrics: e.g. ``{"val_mean_dsc": ...}``.
        geometry_size: the image size the model was trained at.
        state: extra entries, e.g. optimizer and scheduler state dicts.
    """
    checkpoint = {
        "version": CHECKPOINT_VERSION,
        "model": config.model,
        "model_kwargs": {"features": config.features, **config.model_args},
        "image_size": geometry_size,
        "preprocessing": {"protocol": "reference (docs/protocol.md, section 2)", "image_size": geometry_size,
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
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a brainseg checkpoint (expected keys 'model', 'state_dict', 'config')")
    return checkpoint


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model of a checkpoint in eval mode on ``device``, and its training config."""
    checkpoint = load_checkpoint(path)
    model = create_model(checkpoint["model"], **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), TrainConfig.from_dict(checkpoint["config"])


def compact_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write a smaller copy of a checkpoint for shipping, without optimizer or scheduler state.

    Learned weights are stored in float16; BatchNorm running statistics stay float32 (a running
    variance can exceed float16's range of 65504). :func:`load_model` reads the copy like any
    other checkpoint; weights return to float32.
    """
    checkpoint = load_checkpoint(source)
    compact = {k: v for k, v in checkpoint.items() if k not in ("optimizer", "scheduler")}
    compact["state_dict"] = {
        k: v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v
        for k, v in checkpoint["state_dict"].items()
    }
    compact["compacted_from"] = str(source)
    atomic_write(target, lambda f: torch.save(compact, f))
    return Path(target)
