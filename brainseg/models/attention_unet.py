"""Attention U-Net (Oktay et al. 2018): the reference U-Net with additive attention gates on its skips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet import UNet


class AttentionGate(nn.Module):
    """Additive attention gate: weights a skip connection by a map computed with the coarser
    decoder level as gating signal.

    ``q = ReLU(W_x x + W_g g + b)``, ``alpha = sigmoid(psi(q))`` at the gating resolution,
    resampled (bilinear) to the skip's size; the output is ``x * alpha``.

    Args:
        skip_channels: channels of the skip ``x``; gate_channels: of the gating signal ``g``;
        inter_channels: of the intermediate map ``q``.

    Shape:
        x (N, skip_channels, H, W), g (N, gate_channels, H/2, W/2) -> (N, skip_channels, H, W).
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int):
        super().__init__()
        self.theta_x = nn.Conv2d(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(gate_channels, inter_channels, kernel_size=1, bias=True)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1, bias=True)

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The attention map alpha, (N, 1, H, W) in [0, 1]."""
        q = F.relu(self.theta_x(x) + self.phi_g(g))  # (N, inter, H/2, W/2)
        alpha = torch.sigmoid(self.psi(q))  # (N, 1, H/2, W/2)
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(x, g)


class AttentionUNet(UNet):
    """The reference U-Net whose four skips pass through :class:`AttentionGate` s, each gated by
    the decoder level below it (the bottleneck for the deepest skip).

    Args:
        in_channels, out_channels, features, deep_supervision, norm: as in :class:`~brainseg.models.unet.UNet`.

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 16; output logits (N, out_channels, H, W)
        (in training mode with ``deep_supervision`` k: (N, (1 + k) * out_channels, H, W)).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32, deep_supervision: int = 0,
                 norm: str = "batch"):
        super().__init__(in_channels, out_channels, features, deep_supervision, norm)
        f = features
        self.gates = nn.ModuleList([AttentionGate(c, 2 * c, max(c // 2, 1)) for c in (8 * f, 4 * f, 2 * f, f)])

    def skip(self, level: int, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The skip weighted by its attention gate, gated by the coarser decoder level."""
        return self.gates[level](skip, coarse)
