"""The reference U-Net (mateuszbuda/brain-segmentation-pytorch), returning logits."""

from __future__ import annotations

import torch
from torch import nn

from .base import SegmentationModel, conv_block


class UNet(SegmentationModel):
    """U-Net with 4 down-sampling levels, BatchNorm, ReLU and transposed-conv up-sampling.

    Args:
        in_channels: input channels (3: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (1: FLAIR abnormality).
        features: channels of the first level; doubled at every level (reference: 32).

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 16; output logits (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32):
        super().__init__(in_channels, out_channels, features)
        f = features
        self.encoders = nn.ModuleList([conv_block(in_channels, f), conv_block(f, 2 * f),
                                       conv_block(2 * f, 4 * f), conv_block(4 * f, 8 * f)])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = conv_block(8 * f, 16 * f)
        self.upconvs = nn.ModuleList([nn.ConvTranspose2d(c * 2, c, kernel_size=2, stride=2)
                                      for c in (8 * f, 4 * f, 2 * f, f)])
        self.decoders = nn.ModuleList([conv_block(c * 2, c) for c in (8 * f, 4 * f, 2 * f, f)])
        self.head = self.output_head(f)

    def skip(self, level: int, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """What decoder ``level`` (0: deepest) concatenates from its encoder: the plain skip here.

        Shape:
            skip (N, C, H, W), coarse (N, 2C, H/2, W/2) (the level below) -> (N, C, H, W).
        """
        return skip

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = self.block(encoder, x)  # (N, f * 2^i, H / 2^i, W / 2^i)
            skips.append(x)
            x = self.pool(x)
        x = self.block(self.bottleneck, x)  # (N, 16f, H / 16, W / 16)
        for level, (upconv, decoder, skip) in enumerate(zip(self.upconvs, self.decoders, reversed(skips))):
            x = self.block(decoder, torch.cat([upconv(x), self.skip(level, skip, x)], dim=1))
        return self.head(x)  # (N, out_channels, H, W) logits
