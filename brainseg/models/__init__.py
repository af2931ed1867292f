"""Model registry: ``create_model(name, **kwargs)`` builds any registered architecture."""

from __future__ import annotations

from torch import nn

from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"unet": UNet}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; every model returns logits of shape (N, 1, H, W).

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones) or bad arguments.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
