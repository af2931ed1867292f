"""UNet++ (Zhou et al. 2018): nested, dense skip pathways with deep supervision."""

from __future__ import annotations

import torch
from torch import nn

from .base import SegmentationModel, conv_block


class UNetPlusPlus(SegmentationModel):
    """UNet++ with 4 down-sampling levels and a 1x1 head on each of the top nodes X(0,1..4).

    Node X(i, j) = conv_block(concat(X(i, 0), ..., X(i, j-1), up(X(i+1, j-1)))); ``up`` is
    bilinear up-sampling. Every head returns logits.

    Args:
        in_channels, out_channels: input and output channels.
        features: channels of the first level, doubled at every level.
        deep_supervision: in training mode return all four heads stacked on the channel axis,
            (N, 4 * out_channels, H, W), so the training loop averages the loss over them
            (see :func:`brainseg.train.compute_loss`).
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
        self.heads = nn.ModuleList([self.output_head(widths[0]) for _ in range(4)])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(5):  # the backbone column X(i, 0)
            x = self.block(self.nodes[f"{i}_0"], x if i == 0 else self.pool(x))
            grid[i, 0] = x  # (N, f * 2^i, H / 2^i, W / 2^i)
        for j in range(1, 5):  # nested columns
            for i in range(5 - j):
                inputs = [grid[i, k] for k in range(j)] + [self.up(grid[i + 1, j - 1])]
                grid[i, j] = self.block(self.nodes[f"{i}_{j}"], torch.cat(inputs, dim=1))
        heads = [head(grid[0, j]) for j, head in zip(range(1, 5), self.heads)]  # 4 x (N, out, H, W)
        if self.training and self.deep_supervision:
            return torch.cat(heads, dim=1)
        if self.inference == "mean":
            return torch.stack(heads).mean(dim=0)
        return heads[-1]
