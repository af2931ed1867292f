"""Model registry: ``create_model(name, **kwargs)`` builds any registered architecture."""

from __future__ import annotations

from torch import nn

from ..registry import build
from .attention_unet import AttentionUNet
from .resunet34 import ResUNet34
from .unet import UNet
from .unet_plus_plus import UNetPlusPlus

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "attention_unet": AttentionUNet,
    "resunet34": ResUNet34,
    "unet_plus_plus": UNetPlusPlus,
}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; every model returns logits of shape (N, 1, H, W) in eval mode
    (a deeply supervised model returns its heads stacked on the channel axis in training mode).

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones) or bad arguments.
    """
    return build(MODELS, name, "model", kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
