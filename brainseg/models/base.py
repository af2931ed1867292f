"""What every model shares: the conv block, argument checks, the input-size check, the 1x1 head
and activation checkpointing of its blocks."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


NORMS = ("batch", "instance")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation after each conv: ``"batch"`` (BatchNorm, the reference: statistics over
    the batch, running averages for eval) or ``"instance"`` (each image and channel normalised by
    its own H x W statistics, learnt scale and shift, the same in training and eval: an image whose
    channels are all rescaled by one factor gives the same output; one channel rescaled alone
    still moves it, since the first conv mixes the channels)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def conv_block(in_channels: int, out_channels: int, norm: str = "batch") -> nn.Sequential:
    """Two 3x3 conv (no bias) + norm (:func:`norm_layer`) + ReLU layers; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        norm_layer(norm, out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        norm_layer(norm, out_channels),
        nn.ReLU(inplace=True),
    )


def check_input_size(x: torch.Tensor, stride: int) -> None:
    """Raise a ``ValueError`` suggesting the padded size when H or W is not a multiple of ``stride``."""
    height, width = x.shape[-2:]
    if height % stride or width % stride:
        padded = tuple(-(-side // stride) * stride for side in (height, width))
        raise ValueError(f"input height and width must be multiples of {stride}, got {height}x{width}; "
                         f"pad the input to {padded[0]}x{padded[1]}")


@contextmanager
def running_stats_kept(module: nn.Module):
    """Whatever ``module`` does to its BatchNorm layers' running statistics inside the block is
    undone at its end: for the second forward pass of a checkpointed block, whose first pass already
    updated them (the outputs use the batch's statistics either way)."""
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


class SegmentationModel(nn.Module):
    """Base of the models: checks the channel and width arguments, checks that the input's H and W
    are multiples of ``stride`` (the total down-sampling), then calls :meth:`logits`.

    Subclasses build their layers in ``__init__`` (the 1x1 output layer with :meth:`output_head`)
    and implement :meth:`logits`, calling their blocks through :meth:`block` so that
    ``checkpointing`` applies to them.

    Args:
        in_channels: input channels (3: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (1: FLAIR abnormality).
        features: width of the first level.

    Shape:
        input (N, in_channels, H, W) with H, W multiples of ``stride``; output logits
        (N, out_channels, H, W) (a deeply supervised model may stack several heads in training).
    """

    stride = 16

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 32):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("features", features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_channels, self.out_channels, self.features = in_channels, out_channels, features
        self.checkpointing = False  # see block(); a training option, not part of the saved model

    def block(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)``. With ``checkpointing`` on, in training, the block's inner activations are not
        kept for the backward pass but recomputed there: less memory for about a third more compute,
        the same results (BatchNorm's running statistics are updated once, as without it)."""
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return module(x)
        return checkpoint(module, x, use_reentrant=False,
                          context_fn=lambda: (nullcontext(), running_stats_kept(module)))

    def output_head(self, channels: int) -> nn.Conv2d:
        """The 1x1 convolution from ``channels`` feature maps to ``out_channels`` logits."""
        return nn.Conv2d(channels, self.out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.logits(x)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` for an input of a size the model cannot take (:func:`check_input_size`)."""
        check_input_size(x, self.stride)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
