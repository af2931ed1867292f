"""Multi-process training under ``torchrun``: the process group, sharded sampling, gathering.

``torchrun --nproc_per_node=N -m brainseg train ...`` starts N copies of the training; each reads
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from its environment. Every rank draws the same sampling
order (same seed) and takes every N-th index of it, so together the ranks see one epoch of the
single-process run with the global batch split between them; each rank draws its own augmentation
(:func:`rank_seed`); gradients are averaged by DistributedDataParallel. Rank 0 alone logs and
saves. Without ``torchrun`` everything here is a no-op for one process.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value: object) -> list[object]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[object] = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` on every rank (e.g. a stop decision all ranks must share)."""
        if not self.enabled:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def init_distributed(device_type: str) -> Distributed:
    """Join the ``torchrun`` job described by the environment, if any.

    The backend is NCCL for CUDA and gloo for CPU; on CUDA each process uses GPU ``LOCAL_RANK``.

    Raises:
        ValueError: on CUDA, more processes on this node than visible GPUs (NCCL needs one GPU each);
            ``WORLD_SIZE`` above 1 without ``RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if "RANK" not in os.environ:
        raise ValueError(f"WORLD_SIZE={world_size} but RANK is not set: start the processes with torchrun, which "
                         "sets both (or unset WORLD_SIZE for one process)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process LOCAL_RANK={local_rank} needs GPU {local_rank}, but this node has "
                             f"{torch.cuda.device_count()} visible GPU(s): start at most that many processes per "
                             "node (torchrun --nproc_per_node), or add --device cpu to train with gloo on the CPU")
        torch.cuda.set_device(local_rank)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank)


def shutdown(dist: Distributed) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


class ShardedSampler(Sampler[int]):
    """Every ``world_size``-th index of ``base``'s order, starting at ``rank``.

    ``base`` must produce the same order on every rank (same seed). The order is padded by
    repeating its start so that every rank gets ``ceil(len(base) / world_size)`` indices and the
    ranks step together.
    """

    def __init__(self, base: Sampler[int], rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.base, self.rank, self.world_size = base, rank, world_size

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        order += order[: len(self) * self.world_size - len(order)]
        return iter(order[self.rank::self.world_size])


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank ``rank``'s random draws (augmentation, loader workers) in epoch ``epoch``.

    Every rank starts from the run's seed, so without a reseed the k-th sample of every rank would
    get the same flip, angle and intensity change. Seeding at each epoch's start from (seed, epoch,
    rank) alone keeps a resumed run exact, though ``last.pt`` holds only rank 0's random state.
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def wrap_model(model: nn.Module, dist: Distributed, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a multi-process job, else ``model``."""
    if not dist.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what is saved and evaluated)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module, dist: Distributed) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each training forward, but every rank then updates them
    with its own batch: before evaluating, all ranks must hold the statistics rank 0 saves.
    """
    if dist.enabled:
        for buffer in unwrap(model).buffers():
            torch_dist.broadcast(buffer.data, src=0)


def all_ranks(flag: bool, dist: Distributed) -> bool:
    """Whether ``flag`` holds on every rank (every rank gets the same answer)."""
    return all(dist.gather(bool(flag)))


def ranks_agree(model: nn.Module, dist: Distributed) -> bool:
    """Whether every rank holds the same parameters and buffers (a sum of each, compared exactly)."""
    tensors = list(unwrap(model).parameters()) + list(unwrap(model).buffers())
    signature = [float(t.detach().double().sum()) for t in tensors]
    return all(other == signature for other in dist.gather(signature))
