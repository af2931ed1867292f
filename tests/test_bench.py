import torch

import brainseg
from brainseg.bench import matmul_gflops, train_images_per_s
from brainseg.train import Runtime


def test_train_speed_is_measured_in_every_mode():
    for amp, channels_last in ((False, False), (True, True)):
        runtime = Runtime(torch.device("cpu"), amp=amp, channels_last=channels_last)
        assert train_images_per_s("unet", 4, 32, runtime, batch_size=2, warmup=1, steps=1) > 0


def test_matmul_gflops_positive():
    assert matmul_gflops(torch.device("cpu"), torch.float32, n=64, repeats=1) > 0


def test_package_exports():
    assert callable(brainseg.load_model) and callable(brainseg.fit) and brainseg.TrainConfig.preset("smoke")
