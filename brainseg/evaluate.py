"""Evaluate a checkpoint on its validation cases: per-case DSC table, mean and median, CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from .cache import load_volumes
from .checkpoint import load_checkpoint, load_model
from .config import TrainConfig
from .io import atomic_write_text
from .losses import create_loss
from .train import Runtime, evaluate, select_device, split_cases


def format_table(per_case: dict[str, float], mean: float, median: float) -> str:
    """Per-case DSC lines, sorted by DSC, then mean and median."""
    lines = [f"{'case':<24} {'DSC':>7}"]
    lines += [f"{case:<24} {dsc:7.4f}" for case, dsc in sorted(per_case.items(), key=lambda item: item[1])]
    lines += [f"{'mean':<24} {mean:7.4f}", f"{'median':<24} {median:7.4f}"]
    return "\n".join(lines)


def evaluate_checkpoint(weights: str, split: str | None = None, data_dir: str | None = None,
                        cache_dir: str | None = None, out: str | None = None, device: str = "auto") -> dict:
    """Per-volume DSC (PROTOCOL section 4) of a checkpoint on a split's validation cases.

    Args:
        weights: checkpoint path (``weights/<run>/best.pt``).
        split: ``reference`` or ``kfold`` (the checkpoint's fold settings); default: the checkpoint's split.
        data_dir, cache_dir: dataset and cache folders (default: as for training).
        out: CSV path; default ``predictions/<run>/dsc.csv``.

    Returns:
        ``{"mean", "median", "per_case", "csv"}``.
    """
    torch_device = select_device(device)
    model, config = load_model(weights, torch_device)
    image_size = load_checkpoint(weights)["image_size"]
    eval_config = TrainConfig.from_dict({**config.to_dict(), "split": split or config.split,
                                         "data_dir": data_dir or config.data_dir, "max_val_cases": 0})
    _, val_ids = split_cases(eval_config)
    volumes = load_volumes(val_ids, image_size, data_dir or config.data_dir or None, cache_dir)
    runtime = Runtime(torch_device, amp=config.amp, channels_last=config.channels_last)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, volumes, create_loss(config.loss), runtime)
    print(format_table(result["per_case"], result["mean"], result["median"]))
    run = Path(weights).resolve().parent.name
    out_path = Path(out) if out else Path("predictions") / run / "dsc.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", "dsc"])
    writer.writerows([case, f"{dsc:.6f}"] for case, dsc in sorted(result["per_case"].items()))
    writer.writerows([["mean", f"{result['mean']:.6f}"], ["median", f"{result['median']:.6f}"]])
    atomic_write_text(out_path, buffer.getvalue())
    print(f"wrote {out_path}")
    return {"mean": result["mean"], "median": result["median"], "per_case": result["per_case"], "csv": str(out_path)}
