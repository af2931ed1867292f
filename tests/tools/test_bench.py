from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from brainseg.runtime import Runtime
from brainseg.tools import bench
from brainseg.tools.bench import goals, goals_table, matmul_gflops, model_speed, pipeline_images_per_s, synthetic_volumes


def test_speed_and_flops_are_measured_in_every_mode(monkeypatch):
    timed = []

    def seconds_per_call(step, device, warmup, steps):  # runs the step once; a training step "takes" 0.5 s
        step()
        timed.append(step)
        return 0.5 if len(timed) % 2 else 0.25  # then inference 0.25 s

    monkeypatch.setattr(bench, "seconds_per_call", seconds_per_call)
    for amp, channels_last in ((False, False), (True, True)):
        runtime = Runtime(torch.device("cpu"), amp=amp, channels_last=channels_last)
        speed = model_speed("unet", 4, 32, runtime, batch_size=2, warmup=1, steps=1)
        assert (speed["train_images_per_s"], speed["infer_images_per_s"]) == (4.0, 8.0)  # 2 images / 0.5 s, / 0.25 s
    # FLOPs are per image: the same for any batch size
    other = model_speed("unet", 4, 32, runtime, batch_size=4, warmup=1, steps=1)
    assert other["train_gflop_per_image"] == pytest.approx(speed["train_gflop_per_image"], rel=1e-6)
    assert len(timed) == 6  # training and inference of each of the three calls


def test_flops_of_one_convolution_forward_and_backward(monkeypatch):
    class OneConv(torch.nn.Module):
        def __init__(self, features=4):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    monkeypatch.setattr(bench, "create_model", lambda name, features: OneConv())
    speed = model_speed("one", 4, 16, Runtime(torch.device("cpu"), False, False), batch_size=2, warmup=1, steps=1)
    forward = 2 * 9 * 3 * 1 * 16 * 16  # multiply-adds of a 3x3, 3 -> 1 convolution per image
    # backward: the weight gradient costs one forward; the input is a leaf without grad
    assert speed["train_gflop_per_image"] * 1e9 == pytest.approx(2 * forward)


LINUX_SMAPS = pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc smaps_rollup")


@LINUX_SMAPS
def test_process_tree_memory_is_measured():
    from brainseg.tools.bench import MemorySampler, tree_memory_mb

    assert tree_memory_mb()["Pss"] > 10  # this Python process with torch loaded
    with MemorySampler(interval=0.01) as sampler:
        block = bytearray(200 * 2**20)  # 200 MiB touched
        import time
        time.sleep(0.1)
    assert sampler.peak_mb > 200 and len(block) == 200 * 2**20
    assert sampler.peak_anon_mb > 200  # a heap allocation: anonymous memory


@LINUX_SMAPS
def test_mapped_file_pages_are_not_anonymous(tmp_path):
    import numpy as np
    from brainseg.tools.bench import tree_memory_mb

    np.save(tmp_path / "big.npy", np.ones(100 * 2**20, dtype=np.uint8))
    before = tree_memory_mb()
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    assert mapped.sum() == 100 * 2**20  # every page read
    after = tree_memory_mb()
    assert after["Pss"] - before["Pss"] > 90 and after["Pss_Anon"] - before["Pss_Anon"] < 20


def test_memory_that_cannot_be_read_is_not_measured_rather_than_zero():
    from brainseg.tools.bench import tree_memory_mb

    assert tree_memory_mb(pid=2**30) == {"Pss": None, "Pss_Anon": None}  # no such process (or no /proc)
    if Path("/proc/self/smaps_rollup").exists():  # a field this kernel does not report
        missing = tree_memory_mb(fields=("Pss", "Pss_Not_A_Field"))
        assert missing["Pss"] > 10 and missing["Pss_Not_A_Field"] is None


def test_the_memory_goal_judges_the_anonymous_peak_when_measured():
    from brainseg.tools.bench import memory_goal

    lean = memory_goal({"features": 32, "peak_memory_mb": 4500.0, "peak_anon_memory_mb": 3000.0}, ", lean")
    assert lean["met"] and lean["measured"] == "4.39 GB, anonymous 2.93 GB" and lean["goal"].endswith("split, lean)")
    assert not memory_goal({"features": 32, "peak_memory_mb": 4500.0}, "")["met"]  # older result: its whole PSS
    unread = memory_goal({"features": 32, "peak_memory_mb": None, "peak_anon_memory_mb": None}, "")
    assert unread["met"] is None and unread["measured"] == "not measured"
    assert goals_table([unread]).endswith("| < 4 GB | not measured | not measured |")


def clock(*readings: float) -> SimpleNamespace:
    """A stand-in for the benchmark's ``time`` module whose ``perf_counter`` returns ``readings`` in turn."""
    return SimpleNamespace(perf_counter=iter(readings).__next__)


@pytest.mark.parametrize("augment", ["sample", "batch", "device"])
def test_input_pipeline_rate_on_random_volumes(augment, monkeypatch):
    monkeypatch.setattr(bench, "time", clock(10.0, 12.0))
    volumes = synthetic_volumes(4, 4, 32)  # 16 slices: 4 batches, the first one not timed
    rate = pipeline_images_per_s(volumes, workers=0, batch_size=4, batches=3, augment=augment)
    assert rate == 6.0  # 3 batches of 4 images in 2 s


def test_goals_compare_measured_ratios():
    speed = [{"model": "unet", "features": 32, "image_size": 256, "mode": mode, "train_images_per_s": rate,
              "peak_fraction": fraction, "train_gflop_per_s": 100.0}
             for mode, rate, fraction in (("fp32 NCHW (reference)", 2.0, 0.1), ("fp32 channels_last", 3.0, 0.2),
                                          ("bf16 autocast + channels_last", 8.0, 0.75))]
    rows = goals({"speed": speed, "matmul_gflops": {"bfloat16": 130.0}, "pipeline": [
        {"image_size": 256, "images_per_s": 20.0}], "data": {"cases": 110, "image_size": 256, "first_start_s": 130.0,
                                                             "cached_start_s": 1.0},
                  "training_memory": {"features": 32, "peak_memory_mb": 3000.0}})
    met = {row["goal"].split(",")[0].split(" (")[0]: row["met"] for row in rows}
    assert [row["met"] for row in rows if "channels_last / fp32" in row["goal"]] == [False, True]  # 1.5x, 4x
    assert met["bf16 GFLOP/s at 256 px / bf16 matmul peak"] is True
    assert met["input pipeline"] is False  # 20 / 8 = 2.5x
    assert any(row["goal"].startswith("input pipeline (augmentation per sample)") for row in rows)
    assert met["first start"] is False and met["cached start"] is True and met["peak memory of training at 256 px"]
    assert goals_table(rows).count("\n") == len(rows) + 1


def test_matmul_gflops_counts_two_flops_per_multiply_add(monkeypatch):
    monkeypatch.setattr(bench, "time", clock(0.0, 0.1, 1.0, 1.5))  # warm-up 0.1 s, then 2 products in 0.5 s
    assert matmul_gflops(torch.device("cpu"), torch.float32, n=64, repeats=2) == pytest.approx(2 * 64**3 * 2 / 0.5 / 1e9)


def test_a_slow_first_matmul_is_the_measurement(monkeypatch):
    monkeypatch.setattr(bench, "time", clock(0.0, 4.0))  # no further reading: no repeats are timed
    assert matmul_gflops(torch.device("cpu"), torch.bfloat16, n=64, repeats=3) == pytest.approx(2 * 64**3 / 4.0 / 1e9)


def test_speed_table_has_one_row_per_setting_and_a_column_per_mode():
    from brainseg.tools.bench import speed_table

    speed = [{"model": model, "features": 32, "image_size": 128, "mode": mode, "train_images_per_s": rate,
              "infer_images_per_s": 4 * rate, "train_gflop_per_image": 18.0}
             for model in ("unet", "unet_plus_plus") for mode, rate in (("fp32 NCHW (reference)", 2.0), ("fp32 channels_last", 3.0))]
    lines = speed_table({"speed": speed}).splitlines()
    assert len(lines) == 4 and lines[0].count("train img/s") == 2
    assert lines[3] == "| unet_plus_plus | 32 | 128 | 2.00 | 3.00 | 12.00 | 18.0 |"


def test_auto_picks_the_faster_precision_per_model_on_cpu_and_bf16_on_cuda():
    from brainseg.tools.bench import auto_picks

    rows = [dict(model="unet", features=16, image_size=128, mode="fp32 channels_last", train_images_per_s=30.0),
            dict(model="unet", features=16, image_size=128, mode="bf16 autocast + channels_last", train_images_per_s=60.0),
            dict(model="unet", features=32, image_size=128, mode="fp32 channels_last", train_images_per_s=9.0),
            dict(model="unet", features=32, image_size=128, mode="bf16 autocast + channels_last", train_images_per_s=5.0),
            dict(model="unet", features=8, image_size=64, mode="fp32 NCHW (reference)", train_images_per_s=1.0)]
    picks = auto_picks(rows, torch.device("cpu"))
    assert [(p["features"], p["picked"]) for p in picks] == [(16, "bf16"), (32, "fp32")]  # 8: not both timed
    assert {p["picked"] for p in auto_picks(rows, torch.device("cuda"))} == {"bf16"}


@pytest.mark.parametrize("probe_seconds, side", [
    (0.001, 4096),  # 4096^2 would take 0.5 s: within 2 s
    (0.01, 2816),  # 4096^2 would take 5.1 s; 512 * 200^(1/3) = 2994, down to a multiple of 256
    (0.9, 512),  # bf16 emulated (0.3 GFLOP/s): never below the probe's own side
    (0.0, 4096),  # a clock too coarse to see the probe
])
def test_matmul_side_keeps_one_product_within_the_budget(probe_seconds, side):
    from brainseg.tools.bench import fitting_side

    assert fitting_side(probe_seconds, probe_side=512, largest=4096, budget_s=2.0) == side


def test_matmul_side_probes_once_after_a_warm_up(monkeypatch):
    from brainseg.tools.bench import matmul_side

    monkeypatch.setattr(bench, "time", clock(0.0, 0.01))  # only the second product is timed
    assert matmul_side(torch.device("cpu"), torch.float32, largest=4096, budget_s=2.0, probe_side=64) == 64 * 4


def test_a_row_above_its_matmul_peak_is_explained(monkeypatch, capsys):
    from brainseg.tools.bench import MODES, model_speed_table

    rates = {False: 15.0, True: 1.25}  # fp32 and bf16 train img/s of a CPU that emulates bf16
    monkeypatch.setattr(bench, "model_speed", lambda model, width, size, runtime, **kw: {
        "train_images_per_s": rates[runtime.amp], "infer_images_per_s": 1.0, "train_gflop_per_image": 4.53})
    results = {"matmul_gflops": {"float32": 103.0, "bfloat16": 0.3}}
    rows = model_speed_table(("unet",), (128,), (16,), MODES, torch.device("cpu"), 1, results)
    assert [round(row["peak_fraction"], 2) for row in rows] == [0.66, 0.66, 18.88]
    assert "above 100% of peak" in capsys.readouterr().out
