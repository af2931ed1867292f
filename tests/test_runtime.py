import re

import pytest
import torch

from brainseg.models import create_model
from brainseg.runtime import BF16_MARGIN, describe_device, fast_bf16_features, pick_bf16, resolve_amp, select_device


def _scripted_timer(durations):
    """A timer whose consecutive (start, end) pairs are ``durations`` seconds apart."""
    ticks = iter([t for d in durations for t in (0.0, d)])
    return lambda: next(ticks)


def _never():
    raise AssertionError("the timer must not be called when nothing is timed")


@pytest.fixture
def tiny_unet():
    torch.manual_seed(0)
    return create_model("unet", features=4)


def test_pick_bf16_needs_the_margin():
    assert pick_bf16(10.0, 20.0) and not pick_bf16(10.0, 9.0)
    assert not pick_bf16(10.0, 10.0 * BF16_MARGIN)  # a tie within the margin keeps fp32
    assert pick_bf16(10.0, 10.5, margin=1.0)


@pytest.mark.parametrize("fp32_s, bf16_s, picked", [(2.0, 1.0, "bf16"), (1.0, 2.0, "fp32"), (1.0, 0.95, "fp32")])
def test_auto_times_both_precisions_and_keeps_the_faster(tiny_unet, fp32_s, bf16_s, picked):
    before = [p.detach().clone() for p in tiny_unet.parameters()]
    rng = torch.get_rng_state()
    amp, record = resolve_amp("auto", tiny_unet, torch.device("cpu"), True, 32, 2,
                              timer=_scripted_timer([fp32_s, bf16_s]))
    assert amp == (picked == "bf16") and record["picked"] == picked and record["setting"] == "auto"
    assert record["fp32_images_per_s"] == pytest.approx(3 * 2 / fp32_s, rel=1e-3)  # 3 timed steps of 2 images
    assert record["bf16_images_per_s"] == pytest.approx(3 * 2 / bf16_s, rel=1e-3)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random stream is untouched
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_unet.parameters()))  # and its model


@pytest.mark.parametrize("name, args", [("unet_plus_plus", {}), ("unet", {"deep_supervision": 2})])
def test_auto_times_a_deeply_supervised_model(name, args):
    model = create_model(name, features=4, **args)  # several heads stacked in training mode
    amp, record = resolve_amp("auto", model, torch.device("cpu"), True, 32, 2, timer=_scripted_timer([2.0, 1.0]))
    assert amp and record["picked"] == "bf16"


def test_forced_precision_and_cuda_time_nothing(tiny_unet):
    assert resolve_amp(False, tiny_unet, torch.device("cpu"), True, 32, 2, timer=_never) == (
        False, {"setting": False, "picked": "fp32"})
    assert resolve_amp(True, tiny_unet, torch.device("cpu"), True, 32, 2, timer=_never)[0] is True
    amp, record = resolve_amp("auto", tiny_unet, torch.device("cuda"), True, 32, 2, timer=_never)
    assert amp and record == {"setting": "auto", "picked": "bf16", "why": "CUDA"}
    with pytest.raises(ValueError, match="amp must be true, false or auto, got 'fast'"):
        resolve_amp("fast", tiny_unet, torch.device("cpu"), True, 32, 2)


@pytest.mark.parametrize("flags, named", [
    ("fpu sse2 avx2 avx512f", []),
    ("fpu avx512f avx512_bf16 avx512_vnni", ["AVX-512 BF16"]),
    ("fpu avx512_bf16 amx_bf16 amx_tile", ["AVX-512 BF16", "AMX"]),
])
def test_the_cpu_description_names_fast_bf16_instruction_sets(tmp_path, flags, named):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert fast_bf16_features(str(cpuinfo)) == named
    described = describe_device(torch.device("cpu"), cpuinfo=str(cpuinfo))
    threads = torch.get_num_threads()
    assert described.startswith("cpu (") and re.search(rf", {threads} threads?[,)]", described)
    assert ("1 threads" not in described) and (threads == 1) == (", 1 thread" in described)
    assert all(name in described for name in named)
    assert ("BF16" in described) == bool(named)


def test_an_unreadable_cpuinfo_names_no_instruction_set(tmp_path):
    assert fast_bf16_features(str(tmp_path / "missing")) == []


def test_cuda_without_a_gpu_names_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device 'cuda' requested .*use --device cpu"):
        select_device("cuda")
