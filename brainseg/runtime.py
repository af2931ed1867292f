"""Where and how a run computes: the device, bf16 autocast and memory format (:class:`Runtime`),
the precision ``amp="auto"`` picks on this machine, and the peak memory of the process."""

from __future__ import annotations

import copy
import platform
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# bf16 autocast must train this much faster than fp32 for "auto" to pick it on a CPU: its numerics
# differ, so a tie keeps fp32.
BF16_MARGIN = 1.1


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
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False: no usable GPU or a "
                         "CPU-only torch; use --device cpu (or auto, which picks CUDA where it works)")
    return torch.device(name)


# /proc/cpuinfo flags that make bf16 autocast fast on a CPU, and how a result names them.
FAST_BF16_FLAGS = {"avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}


def fast_bf16_features(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Names of the CPU's fast-bf16 instruction sets (``["AVX-512 BF16", "AMX"]``), [] if none or unknown."""
    try:
        with open(cpuinfo) as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return []
    return [name for flag, name in FAST_BF16_FLAGS.items() if flag in flags]


def describe_device(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The GPU's name, or the CPU's with the threads torch uses and any fast-bf16 instruction sets:
    the same recipe trains 2-4x faster on a CPU with them, so a result's wall time needs them."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    parts = [platform.processor() or platform.machine(), f"{threads} thread{'' if threads == 1 else 's'}",
             *fast_bf16_features(cpuinfo)]
    return f"cpu ({', '.join(parts)})"


def peak_memory_mb() -> float:
    """Peak resident memory of this process plus its largest finished child, in MiB (Linux)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return usage / 1024


def training_images_per_s(model: nn.Module, runtime: Runtime, image_size: int, batch_size: int, steps: int = 3,
                          timer=time.perf_counter) -> float:
    """Training rate of a copy of ``model`` on random data: one warm-up step, then ``steps`` timed.

    The copy, its optimiser and the data's own generator leave the model, the global RNG and so
    the run's results untouched.

    Shape:
        the timed batches are (batch_size, model.in_channels, image_size, image_size).
    """
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    generator = torch.Generator().manual_seed(0)
    image = runtime.to_input(torch.randn(batch_size, model.in_channels, image_size, image_size, generator=generator))
    mask = (torch.rand(batch_size, 1, image_size, image_size, generator=generator) > 0.5).float().to(runtime.device)

    def step():
        with runtime.autocast():
            logits = model(image).float()  # (N, K, H, W): K > 1 heads for a deeply supervised model
        loss = F.binary_cross_entropy_with_logits(logits, mask.expand_as(logits))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch_size / seconds_per_call(step, runtime.device, warmup=1, steps=steps, timer=timer)


def seconds_per_call(step, device: torch.device, warmup: int, steps: int, timer=time.perf_counter) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (CUDA synchronised around the timed ones)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = timer()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (timer() - start) / steps


def pick_bf16(fp32_images_per_s: float, bf16_images_per_s: float, margin: float = BF16_MARGIN) -> bool:
    """Whether bf16 autocast trains at least ``margin`` times faster than fp32."""
    return bf16_images_per_s > margin * fp32_images_per_s


def resolve_amp(setting: bool | str, model: nn.Module, device: torch.device, channels_last: bool, image_size: int,
                batch_size: int, timer=time.perf_counter) -> tuple[bool, dict]:
    """The precision a run trains in, and how it was chosen.

    ``True`` / ``False`` force it. ``"auto"`` picks bf16 AMP on CUDA, and on a CPU times a few
    training steps of this model, size and batch in fp32 and in bf16 autocast and keeps the faster
    (:func:`pick_bf16`): some CPUs (AVX-512 BF16, AMX) train twice as fast in bf16, others half as fast.

    Returns:
        ``(amp, record)``; ``record`` holds the setting, the pick and, when timed, both rates.
    """
    if setting not in (True, False, "auto"):
        raise ValueError(f"amp must be true, false or auto, got {setting!r}")
    if setting != "auto":
        return bool(setting), {"setting": setting, "picked": "bf16" if setting else "fp32"}
    if device.type == "cuda":
        return True, {"setting": "auto", "picked": "bf16", "why": "CUDA"}
    rates = {name: training_images_per_s(model, Runtime(device, amp, channels_last), image_size, batch_size,
                                          timer=timer) for name, amp in (("fp32", False), ("bf16", True))}
    amp = pick_bf16(rates["fp32"], rates["bf16"])
    return amp, {"setting": "auto", "picked": "bf16" if amp else "fp32",
                 **{f"{name}_images_per_s": round(rate, 2) for name, rate in rates.items()}}


def inference_amp(setting: bool | str, device: torch.device, record: dict | None = None) -> bool:
    """Whether to predict with a checkpoint in bf16 autocast on ``device``.

    ``setting`` is the run's ``amp`` and ``record`` what training picked (:func:`resolve_amp`, saved
    in the checkpoint as ``precision``; absent in older ones). ``True`` / ``False`` hold as they are.
    ``"auto"`` means bf16 AMP on CUDA; on a CPU, bf16 only where training timed the CPU and picked it,
    otherwise fp32 (bf16 is ten times slower than fp32 on some CPUs, and its numbers differ a little).
    A shipped copy (:func:`brainseg.checkpoint.compact_checkpoint`) runs on CPUs nobody timed: fp32.
    """
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    return (bool(record) and record.get("picked") == "bf16" and "bf16_images_per_s" in record
            and not record.get("shipped"))


def describe_precision(record: dict) -> str:
    """``"fp32 (auto: fp32 31.2 img/s, bf16 15.0 img/s)"`` and the like, for a run's first line."""
    if "fp32_images_per_s" in record:
        return (f"{record['picked']} (auto: fp32 {record['fp32_images_per_s']} img/s, "
                f"bf16 {record['bf16_images_per_s']} img/s)")
    if record["setting"] == "auto":
        return f"{record['picked']} (auto: {record['why']})"
    return f"{record['picked']} (amp {str(record['setting']).lower()})"
