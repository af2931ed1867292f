"""Where and how a run computes: the device, bf16 autocast and memory format (:class:`Runtime`),
and the peak memory of the process."""

from __future__ import annotations

import resource
from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class Runtime:
    """Where and how tensors are computed: device, bf16 autocast, memory format."""

    device: torch.device
    amp: bool
    channels_last: bool

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def peak_memory_mb() -> float:
    """Peak resident memory of this process plus its largest finished child, in MiB (Linux)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return usage / 1024
