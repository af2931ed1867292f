"""U-Net with a torchvision ResNet-34 encoder."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet34_Weights, resnet34

from .base import SegmentationModel, conv_block


class ResUNet34(SegmentationModel):
    """ResNet-34 encoder (stem, then layers 1-4 as the four encoder stages) and a U-Net decoder.

    Encoder resolutions: stem H/2 (64 channels), layer1 H/4 (64), layer2 H/8 (128), layer3 H/16
    (256), layer4 H/32 (512). Each decoder block up-samples by 2 (nearest), concatenates the skip
    of that resolution and applies two conv-BN-ReLU layers; a last block returns to H.

    Args:
        in_channels: input channels (3, like ImageNet, so pretrained weights fit unchanged).
        out_channels: output channels.
        features: decoder width f; blocks have 16f, 8f, 4f, 2f and f channels (default f=16).
        pretrained: load torchvision's ImageNet weights into the encoder. They must be in
            torch's cache (``$TORCH_HOME/hub/checkpoints``) or downloadable; otherwise a
            ``RuntimeError`` says so. Default ``False``.

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 32; output logits (N, out_channels, H, W).
    """

    stride = 32

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 16, pretrained: bool = False):
        super().__init__(in_channels, out_channels, features)
        if pretrained and in_channels != 3:
            raise ValueError(f"pretrained ImageNet weights take 3 input channels, got {in_channels}: "
                             "train with --context 0, or without pretrained weights")
        encoder = resnet34(weights=None)
        if pretrained:
            try:
                encoder.load_state_dict(ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
            except Exception as exc:
                raise RuntimeError(
                    f"could not load torchvision's ImageNet ResNet-34 weights ({type(exc).__name__}: {exc}); "
                    "put resnet34-b627a593.pth in $TORCH_HOME/hub/checkpoints or use pretrained=False") from exc
        if in_channels != 3:
            encoder.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu)  # H/2
        self.stages = nn.ModuleList([nn.Sequential(encoder.maxpool, encoder.layer1), encoder.layer2,
                                     encoder.layer3, encoder.layer4])
        f = features
        skips = (256, 128, 64, 64, 0)  # layer3, layer2, layer1, stem, none
        widths = (16 * f, 8 * f, 4 * f, 2 * f, f)
        inputs = (512,) + widths[:-1]
        self.decoders = nn.ModuleList([conv_block(c_in + c_skip, c_out)
                                       for c_in, c_skip, c_out in zip(inputs, skips, widths)])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = self.output_head(f)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.block(self.stem, x)]  # (N, 64, H/2, W/2)
        for stage in self.stages:
            skips.append(self.block(stage, skips[-1]))  # H/4 (64), H/8 (128), H/16 (256), H/32 (512)
        x = skips.pop()
        for decoder in self.decoders:
            x = self.up(x)
            x = self.block(decoder, torch.cat([x, skips.pop()], dim=1) if skips else x)
        return self.head(x)  # (N, out_channels, H, W)
