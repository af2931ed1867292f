"""The reference U-Net (mateuszbuda/brain-segmentation-pytorch), returning logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationModel, conv_block


class UNet(SegmentationModel):
    """U-Net with 4 down-sampling levels, BatchNorm (or instance norm), ReLU and transposed-conv up-sampling.

    Args:
        in_channels: input channels (3: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (1: FLAIR abnormality).
        features: channels of the first level; doubled at every level (reference: 32).
        deep_supervision: how many of the coarser decoder levels (0 to 3: H/2, H/4, H/8) get a 1x1
            head of their own. In training mode their logits, bilinearly up-sampled to H x W, are
            stacked before the final head's on the channel axis, (N, (1 + k) * out_channels, H, W),
            so the training loop averages the loss over the heads (see
            :func:`brainseg.train.compute_loss`). Eval mode returns the final head only. 0: the
            reference U-Net.
        norm: ``"batch"`` (the reference) or ``"instance"`` after every conv of the encoder and
            decoder blocks (:func:`~brainseg.models.base.norm_layer`).

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 16; output logits (N, out_channels, H, W)
        (in training mode with ``deep_supervision`` k: (N, (1 + k) * out_channels, H, W)).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32, deep_supervision: int = 0,
                 norm: str = "batch"):
        super().__init__(in_channels, out_channels, features)
        if isinstance(deep_supervision, bool) or deep_supervision not in (0, 1, 2, 3):
            raise ValueError(f"deep_supervision must be 0, 1, 2 or 3 (coarser decoder levels with a head), "
                             f"got {deep_supervision!r}")
        f = features
        widths = [(in_channels, f), (f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f)]
        self.encoders = nn.ModuleList([conv_block(c_in, c_out, norm) for c_in, c_out in widths])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = conv_block(8 * f, 16 * f, norm)
        self.upconvs = nn.ModuleList([nn.ConvTranspose2d(c * 2, c, kernel_size=2, stride=2)
                                      for c in (8 * f, 4 * f, 2 * f, f)])
        self.decoders = nn.ModuleList([conv_block(c * 2, c, norm) for c in (8 * f, 4 * f, 2 * f, f)])
        self.head = self.output_head(f)
        self.norm = norm
        self.deep_supervision = deep_supervision
        self.aux_heads = nn.ModuleList([self.output_head(c) for c in (2 * f, 4 * f, 8 * f)[:deep_supervision]])

    def check_input(self, x: torch.Tensor) -> None:
        """As the base check, and with instance norm more than one pixel at the H/16 x W/16
        bottleneck: one pixel has no spatial statistics (training fails, eval gives a constant)."""
        super().check_input(x)
        height, width = x.shape[-2:]
        if self.norm == "instance" and (height // self.stride) * (width // self.stride) < 2:
            raise ValueError(f"instance norm needs more than one pixel at the bottleneck (H/{self.stride} x "
                             f"W/{self.stride}), got {height}x{width} -> {height // self.stride}x"
                             f"{width // self.stride}; give inputs of at least {2 * self.stride} px on one side, "
                             "or norm='batch'")

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
        decoded = []
        for level, (upconv, decoder, skip) in enumerate(zip(self.upconvs, self.decoders, reversed(skips))):
            x = self.block(decoder, torch.cat([upconv(x), self.skip(level, skip, x)], dim=1))
            decoded.append(x)  # (N, 8f / 2^level, H / 2^(3 - level), W / 2^(3 - level))
        logits = self.head(x)  # (N, out_channels, H, W)
        if self.training and self.deep_supervision:
            return torch.cat(self.coarse_logits(decoded[-2::-1], logits.shape[-2:]) + [logits], dim=1)
        return logits

    def coarse_logits(self, coarse: list[torch.Tensor], size: torch.Size) -> list[torch.Tensor]:
        """The auxiliary heads' logits, each up-sampled to ``size`` (H, W).

        Shape:
            coarse: the decoder outputs from fine to coarse, (N, 2f, H/2, W/2), (N, 4f, H/4, W/4),
            ... -> one (N, out_channels, H, W) per auxiliary head, coarsest first.
        """
        logits = [F.interpolate(head(x), size=size, mode="bilinear", align_corners=False)
                  for head, x in zip(self.aux_heads, coarse)]
        return logits[::-1]
