"""Speed figures: training and inference images/s per precision/memory-format mode, the FLOPs of
a step and the fraction of the device's measured matmul peak they reach, the input pipeline's
images/s, the data preparation time (first versus cached start) and the peak memory of training.

``python -m brainseg bench`` prints tables and writes JSON. Figures, not pass/fail: ratios are
measured in one run on one machine, and :func:`goals` states where each goal stands.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from ..losses import create_loss
from ..models import create_model
from ..runtime import Runtime, describe_device, peak_memory_mb, seconds_per_call, select_device
from ..train import training_step

MODES = {
    "fp32 NCHW (reference)": dict(amp=False, channels_last=False),
    "fp32 channels_last": dict(amp=False, channels_last=True),
    "bf16 autocast + channels_last": dict(amp=True, channels_last=True),
}
REFERENCE_MODE, PROJECT_MODE = "fp32 NCHW (reference)", "bf16 autocast + channels_last"
COMPILE_MODE = "fp32 channels_last + torch.compile"


@dataclass
class Speed:
    """One row of the speed table; GFLOP are per image (forward + backward for training)."""

    model: str
    features: int
    image_size: int
    mode: str
    train_images_per_s: float
    infer_images_per_s: float
    train_gflop_per_image: float
    train_gflop_per_s: float
    peak_fraction: float  # train GFLOP/s over the matmul peak of the mode's dtype


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_speed(model_name: str, features: int, image_size: int, runtime: Runtime, batch_size: int = 16,
                warmup: int = 3, steps: int = 8, compile_model: bool = False) -> dict:
    """Training and inference images/s of one model on random data, and the FLOPs of a training step.

    A training step is forward, Dice loss, backward and an Adam step; inference is a forward pass
    under ``torch.no_grad`` in eval mode. FLOPs are counted by ``torch.utils.flop_counter`` on
    the eager model (convolutions and matmuls, forward and backward).

    Returns:
        ``{"train_images_per_s", "infer_images_per_s", "train_gflop_per_image"}``.
    """
    torch.manual_seed(0)
    model = create_model(model_name, features=features).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = create_loss("dice")
    image = runtime.to_input(torch.randn(batch_size, 3, image_size, image_size))
    mask = (torch.rand(batch_size, 1, image_size, image_size) > 0.9).float().to(runtime.device)
    with FlopCounterMode(display=False) as counter:
        training_step(model, image, mask, loss_fn, optimizer, runtime)
    flops = counter.get_total_flops()
    runner = torch.compile(model) if compile_model else model
    train_s = seconds_per_call(lambda: training_step(runner, image, mask, loss_fn, optimizer, runtime),
                               runtime.device, warmup, steps)
    runner.eval()

    def infer() -> None:
        with torch.no_grad(), runtime.autocast():
            runner(image)

    infer_s = seconds_per_call(infer, runtime.device, warmup, steps)
    return {"train_images_per_s": batch_size / train_s, "infer_images_per_s": batch_size / infer_s,
            "train_gflop_per_image": flops / batch_size / 1e9}


PIPELINES = {"sample": "augmented per slice in the DataLoader workers",
             "batch": "augmented per batch on the device, after the copy",
             "device": "data on the device (no workers), augmented per batch there"}


def _training_loader(volumes: list, workers: int, batch_size: int = 16, augment: str = "sample",
                     device: torch.device = torch.device("cpu")):
    """The training input of ``fit`` with default augmentation: mask-weighted slices, joint
    augmentation per slice (``augment="sample"``) or none (``"batch"``, ``"device"``: it runs on
    the batch), from ``workers`` DataLoader processes or, with ``"device"``, from
    :class:`~brainseg.data.dataset.DeviceBatches` on ``device``."""
    from ..data.dataset import DeviceBatches, SliceDataset, make_sampler
    from ..data.transforms import JointAugment

    dataset = SliceDataset(volumes, JointAugment() if augment == "sample" else None)  # the reference ranges
    sampler = make_sampler(dataset, "weighted", torch.Generator().manual_seed(0))
    if augment == "device":
        return DeviceBatches(dataset, sampler, batch_size, device)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)


def pipeline_images_per_s(volumes: list, workers: int, batch_size: int = 16, batches: int = 40,
                          augment: str = "sample", device: torch.device = torch.device("cpu")) -> float:
    """Images/s of the training input pipeline alone: cached volumes -> random slice -> batch on
    ``device``, one of :data:`PIPELINES`: with ``workers`` DataLoader processes (as in ``fit``),
    augmented per slice in the workers (``augment="sample"``) or per batch on ``device`` after the
    copy (``"batch"``), or gathered and augmented on ``device`` (``"device"``)."""
    from ..data.transforms import BatchAugment

    loader = _training_loader(volumes, workers, batch_size, augment, device)
    batch_augment = BatchAugment() if augment != "sample" else None
    iterator = iter(loader)
    next(iterator)  # start-up of the workers is not throughput
    start, images = time.perf_counter(), 0
    for _, (image, mask) in zip(range(batches), iterator):
        if batch_augment is not None:
            image, mask = batch_augment(image.to(device), mask.to(device))
        images += image.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def synthetic_volumes(cases: int, slices: int, image_size: int) -> list:
    """Random stand-ins for cached volumes, for the pipeline benchmark without the dataset."""
    from ..data.volume import CaseVolume

    rng = np.random.default_rng(0)
    volumes = []
    for c in range(cases):
        image = rng.standard_normal((slices, 3, image_size, image_size)).astype(np.float16)
        mask = (rng.random((slices, image_size, image_size)) > 0.95).astype(np.uint8)
        volumes.append(CaseVolume(f"synthetic_{c}", image, mask, mask, None))
    return volumes


def tree_memory_mb(pid: int | None = None, fields: tuple[str, ...] = ("Pss", "Pss_Anon")) -> dict[str, float | None]:
    """``fields`` of ``/proc/<pid>/smaps_rollup`` summed over a process and its direct children
    (DataLoader workers), in MiB; each process's file is read once.

    PSS splits each shared page among the processes mapping it, so pages a forked worker shares
    with its parent count once; summing resident sizes would count the loaded volumes twice.
    ``Pss_Anon`` counts only anonymous memory (the heap: tensors, loaded arrays), not the pages of
    mapped files (libraries, memory-mapped cache files), which the kernel can drop and read again.

    A field is ``None`` when it was not measured: no ``/proc`` (not Linux), or a kernel whose
    ``smaps_rollup`` lacks it (``Pss_Anon`` came later than the file). A child that exits while
    it is read is left out.
    """
    def read(p: int) -> dict[str, float] | None:
        try:
            lines = open(f"/proc/{p}/smaps_rollup").read().splitlines()
        except OSError:
            return None
        found = {}
        for line in lines:
            name, _, rest = line.partition(":")
            if name in fields:
                found[name] = int(rest.split()[0]) / 1024
        return found

    pid = pid or os.getpid()
    try:
        children = [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        children = []
    own = read(pid)
    if own is None:
        return dict.fromkeys(fields)
    per_process = [own, *(m for m in map(read, children) if m is not None)]
    return {field: sum(m[field] for m in per_process) if all(field in m for m in per_process) else None
            for field in fields}


def _larger(peak: float | None, value: float | None) -> float | None:
    """The running maximum of measurements that may be missing (``None``)."""
    return peak if value is None else value if peak is None else max(peak, value)


class MemorySampler:
    """Samples :func:`tree_memory_mb` every ``interval`` seconds in a thread: ``peak_mb`` is the largest
    PSS, ``peak_anon_mb`` the largest anonymous part (``None`` where not measured)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_mb, self.peak_anon_mb = interval, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            memory = tree_memory_mb()  # one read of each process's smaps_rollup per sample
            self.peak_mb = _larger(self.peak_mb, memory["Pss"])
            self.peak_anon_mb = _larger(self.peak_anon_mb, memory["Pss_Anon"])
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _reference_training_volumes(image_size: int, data_dir: str | None, mmap: bool = False) -> tuple[list[str], list]:
    """The reference training split's cases and their cached volumes (built when missing;
    memory-mapped with ``mmap``)."""
    from ..data.cache import load_volumes
    from ..data.kaggle import discover_cases
    from ..data.splits import reference_split

    train_ids, _ = reference_split(sorted(discover_cases(data_dir)))
    return train_ids, load_volumes(train_ids, image_size, data_dir, progress=False, mmap=mmap)


def _warm_cache_child(image_size: int, data_dir: str | None) -> int:
    """In a fresh process: build any missing cache files of the training split; their number of cases."""
    return len(_reference_training_volumes(image_size, data_dir)[1])


def _training_memory_child(image_size: int, features: int, steps: int, data_dir: str | None, workers: int,
                           checkpointing: bool = False, mmap: bool = False) -> dict:
    """In a fresh process, with the cache already built: load the reference training split at
    ``image_size`` as ``fit`` does (memory-mapped with ``mmap``) and take ``steps`` training steps
    (fp32, channels_last: the ``cpu`` preset's mode; activation ``checkpointing`` if asked). Reports
    the memory after loading the data (``data_memory_mb``), the peak during training
    (``peak_memory_mb``; sampled PSS of the process and its DataLoader workers, shared pages counted
    once), its anonymous part (``peak_anon_memory_mb``), as an upper bound the sum of their peak RSS,
    and the seconds per step after the first."""
    train_ids, volumes = _reference_training_volumes(image_size, data_dir, mmap)
    data_mb = tree_memory_mb(fields=("Pss",))["Pss"]
    loader = _training_loader(volumes, workers)
    runtime = Runtime(torch.device("cpu"), amp=False, channels_last=True)
    model = create_model("unet", features=features).to(memory_format=torch.channels_last)
    model.checkpointing = checkpointing
    optimizer, loss_fn = torch.optim.AdamW(model.parameters()), create_loss("dice")
    with MemorySampler() as sampler:
        batches = iter(loader)
        for step, (image, mask) in zip(range(steps), batches):
            if step == 1:
                start = time.perf_counter()
            training_step(model, runtime.to_input(image), mask, loss_fn, optimizer, runtime)
        seconds_per_step = (time.perf_counter() - start) / max(1, steps - 1)
        del batches  # joins the workers, so that their peak RSS counts among finished children
    return {"image_size": image_size, "features": features, "checkpointing": checkpointing, "mmap_data": mmap,
            "train_cases": len(train_ids), "train_slices": len(loader.dataset), "steps": steps, "workers": workers,
            "seconds_per_step": round(seconds_per_step, 2),
            "data_memory_mb": _rounded(data_mb), "peak_memory_mb": _rounded(sampler.peak_mb),
            "peak_anon_memory_mb": _rounded(sampler.peak_anon_mb),
            "peak_rss_sum_mb": round(peak_memory_mb(), 1)}


def _rounded(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def training_memory(image_size: int, features: int, steps: int, data_dir: str | None, workers: int = 1,
                    checkpointing: bool = False, mmap: bool = False) -> dict:
    """Peak memory of a CPU training run on the full reference training split (see the child).

    A first process builds any missing cache files, so that the measured one starts as a cached
    training run does and the figure is that of training, not of a first start's preprocessing.
    """
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(_warm_cache_child, image_size, data_dir).result()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_training_memory_child, image_size, features, steps, data_dir, workers,
                           checkpointing, mmap).result()


def fitting_side(probe_seconds: float, probe_side: int, largest: int, budget_s: float, step: int = 256) -> int:
    """The largest matmul side, a multiple of ``step`` between ``probe_side`` and ``largest``, whose
    n x n product should take at most ``budget_s``, given that one of side ``probe_side`` took
    ``probe_seconds`` (time grows as n^3)."""
    if probe_seconds <= 0:
        return largest
    side = probe_side * (budget_s / probe_seconds) ** (1 / 3)
    return int(max(probe_side, min(largest, side // step * step)))


def matmul_side(device: torch.device, dtype: torch.dtype, largest: int = 4096, budget_s: float = 2.0,
                probe_side: int = 512) -> int:
    """Side of the square matmul :func:`matmul_gflops` should time: ``largest``, or less where one
    product of that side would take longer than ``budget_s``, judged from one timed product of side
    ``probe_side`` (after a warm-up one). A CPU without bf16 arithmetic needed 7.6 min for a single
    4096^2 bf16 product (0.3 GFLOP/s; 2-core AMD EPYC without AVX-512), most of the benchmark's time."""
    a = torch.randn(probe_side, probe_side, device=device, dtype=dtype)
    a @ a
    _sync(device)
    start = time.perf_counter()
    a @ a
    _sync(device)
    return fitting_side(time.perf_counter() - start, probe_side, largest, budget_s)


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 3,
                  enough_s: float = 2.0) -> float:
    """Achieved GFLOP/s of an n x n matmul (float32 on CUDA with TF32 exactly when cuDNN
    convolutions use it, so that the fp32 modes are compared with the peak they can reach).

    The first product warms up; if it alone took ``enough_s`` or more, its own rate is returned
    instead of timing ``repeats`` more, which would only repeat the figure (:func:`matmul_side`
    keeps ``n`` small enough where products are slow).
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    start = time.perf_counter()
    a @ b
    _sync(device)
    first_s = time.perf_counter() - start
    if first_s >= enough_s:
        return 2 * n**3 / first_s / 1e9
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def data_start_seconds(image_size: int, data_dir: str | None, workers: int | None = None) -> dict:
    """Seconds to prepare all 110 cases with an empty cache (first start) and again (cached start)."""
    from ..data.cache import load_volumes
    from ..data.kaggle import discover_cases

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


def _peak_for(results: dict, amp: bool) -> float:
    return results["matmul_gflops"]["bfloat16" if amp else "float32"]


def auto_picks(speed_rows: list[dict], device: torch.device) -> list[dict]:
    """What ``amp="auto"`` would pick for each model, width and size timed: on a CPU the faster of
    the fp32 and bf16 channels_last rows (:func:`brainseg.runtime.pick_bf16`), on CUDA bf16."""
    from ..runtime import pick_bf16

    rates: dict[tuple, dict[str, float]] = {}
    for row in speed_rows:
        rates.setdefault((row["model"], row["features"], row["image_size"]), {})[row["mode"]] = \
            row["train_images_per_s"]
    picks = []
    for (model, width, size), by_mode in rates.items():
        fp32, bf16 = by_mode.get("fp32 channels_last"), by_mode.get("bf16 autocast + channels_last")
        if fp32 is None or bf16 is None:
            continue
        picked = "bf16" if device.type == "cuda" or pick_bf16(fp32, bf16) else "fp32"
        picks.append({"model": model, "features": width, "image_size": size, "picked": picked})
    return picks


def run_benchmark(sizes: tuple[int, ...] = (128, 256), features: tuple[int, ...] = (32,),
                  models: tuple[str, ...] = ("unet",), device: str = "auto", data: bool = False,
                  data_dir: str | None = None, data_size: int = 256, steps: int = 8, compile_model: bool = False,
                  memory: bool = False, memory_steps: int = 20, workers: int = 1) -> dict:
    """Run the benchmark and print its tables; returns everything as a dict (see ``bench`` CLI).

    Args:
        sizes, features, models: the grid of models timed in every mode of :data:`MODES`.
        data: also time data preparation (first and cached start, all cases at ``data_size``) and
            feed the pipeline benchmark with real cached volumes instead of random ones.
        compile_model: add a ``torch.compile`` mode (compilation time is not counted).
        memory: peak memory of ``memory_steps`` training steps at 256 px on the full training split.
        workers: DataLoader workers of the pipeline and memory measurements (the ``cpu`` preset's 1).
    """
    torch_device = select_device(device)
    results = {"device": describe_device(torch_device), "torch_version": torch.__version__,
               "speed": [], "matmul_gflops": {}, "pipeline": []}
    print(f"device: {results['device']}; timing a matmul (4096^2, smaller where that is slow) in float32 and "
          "bfloat16 ...", flush=True)
    results["matmul_side"] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name, side = str(dtype).removeprefix("torch."), matmul_side(torch_device, dtype)
        results["matmul_side"][name] = side
        results["matmul_gflops"][name] = round(matmul_gflops(torch_device, dtype, n=side), 1)
    print("matmul GFLOP/s: " + ", ".join(f"{name} {rate} ({results['matmul_side'][name]}^2)"
                                         for name, rate in results["matmul_gflops"].items()))
    modes = {**MODES, **({COMPILE_MODE: dict(amp=False, channels_last=True)} if compile_model else {})}
    results["speed"] = model_speed_table(models, sizes, features, modes, torch_device, steps, results)
    results["amp_auto"] = auto_picks(results["speed"], torch_device)
    for pick in results["amp_auto"]:
        print(f"amp auto for {pick['model']} {pick['features']} features at {pick['image_size']} px: {pick['picked']}")
    results["pipeline"] = pipeline_table(sizes, workers, torch_device, data, data_dir)
    if data:
        results["data"] = data_start_seconds(data_size, data_dir)
        print(f"data at {data_size} px: first start {results['data']['first_start_s']} s, "
              f"cached start {results['data']['cached_start_s']} s")
    results["peak_memory_mb"] = round(peak_memory_mb(), 1)  # this process, before the memory child
    if memory:
        results.update(memory_figures(max(features), memory_steps, data_dir, workers))
    results["goals"] = goals(results)
    print(goals_table(results["goals"]))
    return results


def model_speed_table(models: tuple[str, ...], sizes: tuple[int, ...], features: tuple[int, ...], modes: dict,
                      device: torch.device, steps: int, results: dict) -> list[dict]:
    """Time every model x size x width in every mode of ``modes`` and print a row each; returns the
    rows as :class:`Speed` dicts. ``results["matmul_gflops"]`` gives the peak each row is a fraction of."""
    print(f"{'model':<15} {'feat':>4} {'size':>5}  {'mode':<36} {'train img/s':>11} {'infer img/s':>11} "
          f"{'GFLOP/img':>9} {'GFLOP/s':>8} {'of peak':>7}")
    rows = []
    for model, size, width, (mode, flags) in itertools.product(models, sizes, features, modes.items()):
        speed = model_speed(model, width, size, Runtime(device, **flags), steps=steps,
                            compile_model=mode == COMPILE_MODE)
        achieved = speed["train_gflop_per_image"] * speed["train_images_per_s"]
        row = Speed(model, width, size, mode, round(speed["train_images_per_s"], 2),
                    round(speed["infer_images_per_s"], 2), round(speed["train_gflop_per_image"], 2),
                    round(achieved, 1), round(achieved / _peak_for(results, flags["amp"]), 3))
        rows.append(row.__dict__)
        print(f"{model:<15} {width:>4} {size:>5}  {mode:<36} {row.train_images_per_s:>11.2f} "
              f"{row.infer_images_per_s:>11.2f} {row.train_gflop_per_image:>9.2f} "
              f"{row.train_gflop_per_s:>8.1f} {row.peak_fraction:>7.0%}", flush=True)
    if any(row["peak_fraction"] > 1 for row in rows):
        print("(above 100% of peak: the model ran faster than a plain matmul in its dtype, whose arithmetic this "
              "device emulates; that peak says nothing about those rows)")
    return rows


def pipeline_table(sizes: tuple[int, ...], workers: int, device: torch.device, data: bool,
                   data_dir: str | None) -> list[dict]:
    """Images per second of each input pipeline of :data:`PIPELINES` at each size, printed and returned;
    fed by 20 cached cases with ``data``, else by random volumes."""
    rows = []
    for size in sizes:
        if data:
            from ..data.cache import load_volumes
            from ..data.kaggle import discover_cases

            volumes = load_volumes(sorted(discover_cases(data_dir))[:20], size, data_dir, progress=False)
        else:
            volumes = synthetic_volumes(4, 20, size)
        for augment, how in PIPELINES.items():
            rate = pipeline_images_per_s(volumes, workers, augment=augment, device=device)
            rows.append({"image_size": size, "workers": 0 if augment == "device" else workers,
                         "augment": augment, "images_per_s": round(rate, 1),
                         "source": "20 cached cases" if data else "random volumes"})
            print(f"input pipeline at {size} px, {how}: {rate:.1f} images/s")
    return rows


class MemorySetting(NamedTuple):
    """A measured way of training at 256 px (:func:`memory_figures`)."""

    how: str  # appended to the description: "" or ", activation checkpointing, ..."
    checkpointing: bool
    mmap: bool  # memory-mapped training data
    workers: int | None  # DataLoader workers; None: the benchmark's --workers


MEMORY_SETTINGS = {
    "training_memory": MemorySetting("", False, False, None),
    "training_memory_checkpointing": MemorySetting(", activation checkpointing", True, False, None),
    "training_memory_lean": MemorySetting(", activation checkpointing, memory-mapped data, no worker", True, True, 0),
}


def _mb(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0f} MB"


def memory_figures(features: int, steps: int, data_dir: str | None, workers: int) -> dict:
    """Peak memory of training at 256 px in each of :data:`MEMORY_SETTINGS` (printed):
    ``{key: training_memory(...)}``."""
    figures = {}
    for key, setting in MEMORY_SETTINGS.items():
        figures[key] = found = training_memory(256, features, steps, data_dir,
                                               workers if setting.workers is None else setting.workers,
                                               setting.checkpointing, setting.mmap)
        print(f"training at 256 px ({features} features, full training split, {steps} steps{setting.how}): peak "
              f"memory {_mb(found['peak_memory_mb'])}, anonymous {_mb(found['peak_anon_memory_mb'])} (PSS of process "
              f"and workers; {_mb(found['data_memory_mb'])} after loading the data), "
              f"{found['seconds_per_step']:.2f} s per step", flush=True)
    return figures


def goals(results: dict) -> list[dict]:
    """Where each speed goal of the project stands in ``results`` (only those measured).

    Returns:
        Rows ``{"goal", "target", "measured", "met"}``.
    """
    def find(model: str, size: int, mode: str) -> list[dict]:
        return [r for r in results["speed"] if r["model"] == model and r["image_size"] == size and r["mode"] == mode]

    rows = []
    for ref in find("unet", 256, REFERENCE_MODE):
        for mode in [m for m in MODES if m != REFERENCE_MODE] + [COMPILE_MODE]:
            for other in [r for r in find("unet", 256, mode) if r["features"] == ref["features"]]:
                ratio = other["train_images_per_s"] / ref["train_images_per_s"]
                rows.append({"goal": f"train img/s at 256 px, {mode} / fp32 NCHW ({ref['features']} features)",
                             "target": ">= 3.5x", "measured": f"{ratio:.2f}x", "met": ratio >= 3.5})
    for row in find("unet", 256, PROJECT_MODE):
        rows.append({"goal": f"bf16 GFLOP/s at 256 px / bf16 matmul peak ({row['features']} features)",
                     "target": ">= 70%", "measured": f"{row['peak_fraction']:.0%} ({row['train_gflop_per_s']:.0f} of "
                                                     f"{results['matmul_gflops']['bfloat16']:.0f})",
                     "met": row["peak_fraction"] >= 0.7})
    for pipe in results.get("pipeline", []):
        fastest = max((r["train_images_per_s"] for r in results["speed"] if r["image_size"] == pipe["image_size"]),
                      default=None)
        if fastest:
            ratio = pipe["images_per_s"] / fastest
            augment = pipe.get("augment", "sample")
            label = "data and augmentation on the device" if augment == "device" else f"augmentation per {augment}"
            rows.append({"goal": f"input pipeline ({label}) / fastest model training at "
                                 f"{pipe['image_size']} px",
                         "target": ">= 3x",
                         "measured": f"{ratio:.1f}x ({pipe['images_per_s']:.0f} vs {fastest:.1f} img/s)",
                         "met": ratio >= 3})
    if "data" in results:
        data = results["data"]
        rows.append({"goal": f"first start, {data['cases']} cases at {data['image_size']} px", "target": "< 120 s",
                     "measured": f"{data['first_start_s']} s", "met": data["first_start_s"] < 120})
        rows.append({"goal": "cached start", "target": "< 5 s", "measured": f"{data['cached_start_s']} s",
                     "met": data["cached_start_s"] < 5})
    for key, setting in MEMORY_SETTINGS.items():
        if key in results:
            rows.append(memory_goal(results[key], setting.how))
    return rows


def memory_goal(memory: dict, how: str) -> dict:
    """The goals row of one :func:`training_memory` result: met when the anonymous peak (what the
    process must hold; pages of mapped files can be dropped and read again) is under 4 GB. Results
    without the anonymous part (measured before it was, or on a kernel without it) are judged by
    their whole PSS; without either (no ``/proc``) ``met`` is ``None``: not measured."""
    whole, anon = memory["peak_memory_mb"], memory.get("peak_anon_memory_mb")
    needed = whole if anon is None else anon
    measured = ("not measured" if whole is None else f"{whole / 1024:.2f} GB"
                + ("" if anon is None else f", anonymous {anon / 1024:.2f} GB"))
    return {"goal": f"peak memory of training at 256 px ({memory['features']} features, full split{how})",
            "target": "< 4 GB", "measured": measured, "met": None if needed is None else needed < 4096}


def goals_table(rows: list[dict]) -> str:
    """The goals as a Markdown table."""
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]
    verdict = {True: "yes", False: "no", None: "not measured"}
    lines += [f"| {r['goal']} | {r['target']} | {r['measured']} | {verdict[r['met']]} |" for r in rows]
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    """Training images/s of every timed model, width and size in each mode, with inference
    images/s and GFLOP per training image, as a Markdown table."""
    modes = list(dict.fromkeys(row["mode"] for row in results["speed"]))
    settings = list(dict.fromkeys((row["model"], row["features"], row["image_size"]) for row in results["speed"]))
    lines = ["| model | width | size | " + " | ".join(f"train img/s, {m}" for m in modes)
             + " | inference img/s (fastest mode) | GFLOP per training image |",
             "|---|---|---|" + "---|" * (len(modes) + 2)]
    for model, width, size in settings:
        rows = {r["mode"]: r for r in results["speed"]
                if (r["model"], r["features"], r["image_size"]) == (model, width, size)}
        cells = [f"{rows[m]['train_images_per_s']:.2f}" if m in rows else "-" for m in modes]
        infer = max(r["infer_images_per_s"] for r in rows.values())
        flops = next(iter(rows.values()))["train_gflop_per_image"]
        lines.append(f"| {model} | {width} | {size} | " + " | ".join(cells) + f" | {infer:.2f} | {flops:.1f} |")
    return "\n".join(lines)
