import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import SequentialSampler

from brainseg.distributed import (Distributed, ShardedSampler, init_distributed, rank_seed, ranks_agree, sync_buffers,
                                  wrap_model)
from brainseg.losses import create_loss
from brainseg.models import create_model
from brainseg.runtime import Runtime
from brainseg.train import training_step


def test_sharded_sampler_deals_one_order_to_the_ranks():
    base = SequentialSampler(range(7))
    shards = [list(ShardedSampler(base, rank, 3)) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]  # padded from the start so the ranks step together
    assert all(len(ShardedSampler(base, rank, 3)) == 3 for rank in range(3))
    assert sorted(set(sum(shards, []))) == list(range(7))
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedSampler(base, 3, 3)


def test_each_rank_and_epoch_draws_from_its_own_seed():
    seeds = {(epoch, rank): rank_seed(42, epoch, rank) for epoch in (1, 2) for rank in (0, 1, 2)}
    assert len(set(seeds.values())) == 6  # no two ranks share an epoch's augmentation
    assert rank_seed(43, 2, 1) != seeds[2, 1] and all(0 <= seed < 2**32 for seed in seeds.values())


def test_single_process_is_a_no_op():
    dist = Distributed()
    model = torch.nn.Linear(2, 1)
    assert not dist.enabled and dist.gather(5) == [5] and dist.broadcast("x") == "x"
    assert wrap_model(model, dist, torch.device("cpu")) is model and ranks_agree(model, dist)


def _one_step(rank: int, world_size: int, port: int, use_ddp: bool, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    dist = Distributed(rank, world_size)
    torch.manual_seed(0)  # same initial weights on both ranks
    model = create_model("unet", features=4)
    before = [p.detach().clone() for p in model.parameters()]
    train_model = wrap_model(model, dist, torch.device("cpu")) if use_ddp else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(100 + rank)  # each rank gets a different batch
    image, mask = torch.randn(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.7).float()
    training_step(train_model, image, mask, create_loss("dice"), optimizer, Runtime(torch.device("cpu"), False, False))
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    sync_buffers(model, dist)  # BatchNorm statistics come from each rank's own batch; fit syncs them too
    results[rank] = (ranks_agree(model, dist), changed)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("use_ddp", [True, False])
def test_two_gloo_processes_agree_on_the_weights_after_a_step(use_ddp):
    port = 29500 + (os.getpid() % 1000) + (0 if use_ddp else 1000)
    results = mp.Manager().dict()
    mp.spawn(_one_step, args=(2, port, use_ddp, results), nprocs=2)
    assert all(changed for _, changed in results.values())
    # with DDP the averaged gradients keep the ranks identical; without it they drift apart
    assert [agree for agree, _ in results.values()] == [use_ddp, use_ddp]


@pytest.mark.slow
def test_torchrun_trains_a_smoke_run_with_two_processes(synthetic_data, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "brainseg", "train", "--preset", "smoke", "--data-dir", str(synthetic_data),
               "--cache-dir", str(tmp_path / "cache"), "--logs-dir", str(tmp_path / "logs"),
               "--weights-dir", str(tmp_path / "weights"), "--run-name", "ddp", "--split", "kfold",
               "--folds", "3", "--max-train-cases", "0", "--max-val-cases", "0", "--image-size", "32",
               "--features", "4", "--epochs", "2", "--device", "cpu"]  # gloo, also where a GPU is visible
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("weights agree across ranks") == 2
    metrics = json.loads((tmp_path / "logs" / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["per_case"]) == 4  # every fold-0 case, gathered from both ranks
    assert (tmp_path / "weights" / "ddp" / "best.pt").is_file()


def test_more_cuda_processes_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1 needs GPU 1, but this node has 1 visible GPU.*--device cpu"):
        init_distributed("cuda")


def test_a_world_size_without_a_rank_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 but RANK is not set: start the processes with torchrun"):
        init_distributed("cpu")


def test_a_run_under_torchrun_without_a_name_is_refused(monkeypatch):
    from brainseg.config import TrainConfig
    from brainseg.train import default_run_name

    assert default_run_name(TrainConfig.from_preset("smoke")).startswith("smoke-unet-")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"under torchrun, give the run a --run-name"):
        default_run_name(TrainConfig.from_preset("smoke"))
