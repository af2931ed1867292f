"""The reference U-Net (mateuszbuda/brain-segmentation-pytorch), returning logits."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv (no bias) + BatchNorm + ReLU layers; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def check_input_size(x: torch.Tensor, stride: int) -> None:
    """Raise a ``ValueError`` suggesting the padded size when H or W is not a multiple of ``stride``."""
    height, width = x.shape[-2:]
    if height % stride or width % stride:
        padded = tuple(-(-side // stride) * stride for side in (height, width))
        raise ValueError(f"input height and width must be multiples of {stride}, got {height}x{width}; "
                         f"pad the input to {padded[0]}x{padded[1]}")


class UNet(nn.Module):
    """U-Net with 4 down-sampling levels, BatchNorm, ReLU and transposed-conv up-sampling.

    Args:
        in_channels: input channels (3: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (1: FLAIR abnormality).
        features: channels of the first level; doubled at every level (reference: 32).

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 16; output logits (N, out_channels, H, W).
    """

    stride = 16

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("features", features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        f = features
        self.encoders = nn.ModuleList([conv_block(in_channels, f), conv_block(f, 2 * f),
                                       conv_block(2 * f, 4 * f), conv_block(4 * f, 8 * f)])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = conv_block(8 * f, 16 * f)
        self.upconvs = nn.ModuleList([nn.ConvTranspose2d(c * 2, c, kernel_size=2, stride=2)
                                      for c in (8 * f, 4 * f, 2 * f, f)])
        self.decoders = nn.ModuleList([conv_block(c * 2, c) for c in (8 * f, 4 * f, 2 * f, f)])
        self.head = nn.Conv2d(f, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.stride)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)  # (N, f * 2^i, H / 2^i, W / 2^i)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)  # (N, 16f, H / 16, W / 16)
        for upconv, decoder, skip in zip(self.upconvs, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upconv(x), skip], dim=1))
        return self.head(x)  # (N, out_channels, H, W) logits
