"""Speed figures: training images/s per precision/memory-format mode, the device's matmul peak,
and the data preparation time (first start versus cached start).

``python -m brainseg bench`` prints a table and writes JSON. Figures, not pass/fail: ratios are
measured in one run on one machine.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass

import torch

from .losses import create_loss
from .models import create_model
from .train import Runtime, peak_memory_mb, select_device, training_step

MODES = {
    "fp32 NCHW (reference)": dict(amp=False, channels_last=False),
    "fp32 channels_last": dict(amp=False, channels_last=True),
    "bf16 autocast + channels_last": dict(amp=True, channels_last=True),
}


@dataclass
class TrainSpeed:
    model: str
    features: int
    image_size: int
    mode: str
    images_per_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_images_per_s(model_name: str, features: int, image_size: int, runtime: Runtime,
                       batch_size: int = 16, warmup: int = 3, steps: int = 8) -> float:
    """Training images/s of one model on random data: forward, Dice loss, backward, Adam step."""
    torch.manual_seed(0)
    model = create_model(model_name, features=features).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = create_loss("dice")
    image = runtime.to_input(torch.randn(batch_size, 3, image_size, image_size))
    mask = (torch.rand(batch_size, 1, image_size, image_size) > 0.9).float().to(runtime.device)

    for _ in range(warmup):
        training_step(model, image, mask, loss_fn, optimizer, runtime)
    _sync(runtime.device)
    start = time.perf_counter()
    for _ in range(steps):
        training_step(model, image, mask, loss_fn, optimizer, runtime)
    _sync(runtime.device)
    return batch_size * steps / (time.perf_counter() - start)


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    """Achieved GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def data_start_seconds(image_size: int, data_dir: str | None, workers: int | None = None) -> dict:
    """Seconds to prepare all 110 cases with an empty cache (first start) and again (cached start)."""
    from .cache import load_volumes
    from .data import discover_cases

    case_ids = sorted(discover_cases(data_dir))
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        load_volumes(case_ids, image_size, data_dir, cache_dir, workers=workers, progress=True)
        first = time.perf_counter() - start
        start = time.perf_counter()
        volumes = load_volumes(case_ids, image_size, data_dir, cache_dir, progress=False)
        cached = time.perf_counter() - start
    return {"image_size": image_size, "cases": len(case_ids), "first_start_s": round(first, 1),
            "cached_start_s": round(cached, 2), "cached_gb": round(sum(v.image.nbytes for v in volumes) / 1e9, 2)}


def run_benchmark(sizes: tuple[int, ...] = (128, 256), features: tuple[int, ...] = (32,), model: str = "unet",
                  device: str = "auto", data: bool = False, data_dir: str | None = None,
                  data_size: int = 256, steps: int = 8) -> dict:
    """Run the benchmark and print a table; returns everything as a dict (see ``bench`` CLI)."""
    torch_device = select_device(device)
    results = {"device": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda"
               else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
               "torch_version": torch.__version__, "train": [], "matmul_gflops": {}}
    for dtype in (torch.float32, torch.bfloat16):
        results["matmul_gflops"][str(dtype).removeprefix("torch.")] = round(matmul_gflops(torch_device, dtype), 1)
    print(f"device: {results['device']}; 4096^2 matmul GFLOP/s: {results['matmul_gflops']}")
    print(f"{'model':<8} {'feat':>4} {'size':>5}  {'mode':<32} {'train img/s':>11}")
    for size in sizes:
        for width in features:
            for mode, flags in MODES.items():
                runtime = Runtime(torch_device, **flags)
                speed = train_images_per_s(model, width, size, runtime, steps=steps)
                results["train"].append(TrainSpeed(model, width, size, mode, round(speed, 2)).__dict__)
                print(f"{model:<8} {width:>4} {size:>5}  {mode:<32} {speed:>11.2f}", flush=True)
    if data:
        results["data"] = data_start_seconds(data_size, data_dir)
        print(f"data at {data_size} px: first start {results['data']['first_start_s']} s, "
              f"cached start {results['data']['cached_start_s']} s")
    results["peak_memory_mb"] = round(peak_memory_mb(), 1)
    return results
