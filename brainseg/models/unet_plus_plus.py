"""UNet++ (Zhou et al. 2018): nested, dense skip pathways with deep supervision."""

from __future__ import annotations

import torch
from torch import nn

from .base import SegmentationModel, conv_block


class UNetPlusPlus(SegmentationModel):
    """UNet++ with 4 down-sampling levels and a 1x1 head on each of the top nodes X(0,1..4) that
    is used: all four with deep supervision or ``inference="mean"``, else only X(0, 4)'s (a head
    that never gets a gradient would stop DistributedDataParallel).

    Node X(i, j) = conv_block(concat(X(i, 0), ..., X(i, j-1), up(X(i+1, j-1)))); ``up`` is
    bilinear up-sampling. Every head returns logits.

    Args:
        in_channels, out_channels: input and output channels.
        features: channels of the first level, doubled at every level.
        deep_supervision: in training mode return all four heads stacked on the channel axis,
            (N, 4 * out_channels, H, W), so the training loop weights the loss over them as
            ``--deep-supervision-decay`` says (see :func:`brainseg.train.compute_loss`).
        inference: what eval mode returns: ``"final"`` (the X(0, 4) head) or ``"mean"`` (the
            mean of the four heads' logits).

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 16; output logits
        (N, out_channels, H, W) in eval mode (and in training mode without deep supervision).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32,
                 deep_supervision: bool = True, inference: str = "final"):
        super().__init__(in_channels, out_channels, features)
        if inference not in ("final", "mean"):
            raise ValueError(f"inference must be 'final' or 'mean', got {inference!r}")
        self.deep_supervision, self.inference = deep_supervision, inference
        widths = [features * 2**i for i in range(5)]
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.nodes = nn.ModuleDict()
        for i in range(5):
            self.nodes[f"{i}_0"] = conv_block(in_channels if i == 0 else widths[i - 1], widths[i])
        for j in range(1, 5):
            for i in range(5 - j):
                self.nodes[f"{i}_{j}"] = conv_block(j * widths[i] + widths[i + 1], widths[i])
        used_heads = 4 if deep_supervision or inference == "mean" else 1
        self.heads = nn.ModuleList([self.output_head(widths[0]) for _ in range(used_heads)])
        self.register_load_state_dict_pre_hook(keep_final_of_four_heads)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(5):  # the backbone column X(i, 0)
            x = self.block(self.nodes[f"{i}_0"], x if i == 0 else self.pool(x))
            grid[i, 0] = x  # (N, f * 2^i, H / 2^i, W / 2^i)
        for j in range(1, 5):  # nested columns
            for i in range(5 - j):
                inputs = [grid[i, k] for k in range(j)] + [self.up(grid[i + 1, j - 1])]
                grid[i, j] = self.block(self.nodes[f"{i}_{j}"], torch.cat(inputs, dim=1))
        columns = range(5 - len(self.heads), 5)  # the last len(heads) of X(0, 1..4)
        heads = [head(grid[0, j]) for j, head in zip(columns, self.heads)]  # each (N, out, H, W)
        if self.training and self.deep_supervision:
            return torch.cat(heads, dim=1)
        if self.inference == "mean":
            return torch.stack(heads).mean(dim=0)
        return heads[-1]


def keep_final_of_four_heads(model: UNetPlusPlus, state_dict: dict, prefix: str, *args) -> None:
    """Load a four-head state dict into a one-head model: the final head X(0, 4) is ``heads.3``
    there and ``heads.0`` here (checkpoints saved before the unused heads were dropped)."""
    if len(model.heads) == 1 and f"{prefix}heads.3.weight" in state_dict:
        for j in (0, 1, 2):
            for name in ("weight", "bias"):
                state_dict.pop(f"{prefix}heads.{j}.{name}", None)
        for name in ("weight", "bias"):
            state_dict[f"{prefix}heads.0.{name}"] = state_dict.pop(f"{prefix}heads.3.{name}")
