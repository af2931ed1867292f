"""The exponential moving average of the weights (``--ema``), optionally corrected for its start.

torch's ``AveragedModel`` copies the weights after the first step and then keeps ``decay**n`` of
that copy: at decay 0.999 still 42% after 870 steps (5 epochs of the `cpu` preset at batch 16) and
15% after 1900 (the 10 epochs a 38-minute budget holds on a CPU without AVX-512). A short run then
validates and saves a model that is partly its own initialisation. With ``bias_correction`` the
average is corrected the way Adam corrects its moments: after ``n`` steps it is
``sum_i (1 - d) d**(n - i) w_i / (1 - d**n)``, every step's weights weighted by their age and the
weights summing to 1; once ``d**n`` is negligible (5,000 steps at 0.999) it is the plain EMA.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


class MovingAverage(AveragedModel):
    """torch's ``AveragedModel`` over parameters and buffers (BatchNorm statistics included), its
    update written with the step count on the host.

    ``AveragedModel.update_parameters`` reads its ``n_averaged`` counter, a CPU tensor, on the
    GPU once per group of tensors and tests it there: the CPU waits for the GPU after every
    optimiser step. Here the count is read on the CPU (``n_averaged`` stays the saved counter, so
    checkpoints load either way) and the update's weight is a Python number. Float tensors move
    towards the current weights by ``1 - decay`` (the plain EMA, as torch's
    ``get_ema_multi_avg_fn``) or, with ``bias_correction``, by ``(1 - decay) / (1 - decay**n)`` at the
    ``n``-th update (1/2 at the second, ``1 - decay`` late); integer buffers (BatchNorm's batch
    count) are copied. The first update copies the weights.
    """

    def __init__(self, model: nn.Module, decay: float, bias_correction: bool = False):
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        super().__init__(model, use_buffers=True)
        self.decay, self.bias_correction = decay, bias_correction

    def step_weight(self, updates_before: int) -> float:
        """How far the update after ``updates_before`` earlier ones moves the average (0 < w <= 1)."""
        n = updates_before + 1
        return (1 - self.decay) / (1 - self.decay ** n) if self.bias_correction else 1 - self.decay

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        pairs = list(zip(chain(self.module.parameters(), self.module.buffers()),
                         chain(model.parameters(), model.buffers())))
        averaged = [a.detach() for a, _ in pairs]
        current = [c.detach().to(a.device) for a, c in pairs]
        updates_before = int(self.n_averaged)  # on the CPU: no wait for the GPU
        if updates_before == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [i for i, a in enumerate(averaged) if a.is_floating_point()]
            integers = [i for i, a in enumerate(averaged) if not a.is_floating_point()]
            self._move_towards([averaged[i] for i in floats], [current[i] for i in floats],
                               self.step_weight(updates_before))
            if integers:
                torch._foreach_copy_([averaged[i] for i in integers], [current[i] for i in integers])
        self.n_averaged += 1

    def _move_towards(self, averaged: list[Tensor], current: list[Tensor], weight: float) -> None:
        """``average += weight * (current - average)``: as torch's plain EMA (``lerp``), and for the
        correction the subtraction, product and sum that earlier runs computed, so both repeat them."""
        if not self.bias_correction:
            torch._foreach_lerp_(averaged, current, weight)
            return
        delta = torch._foreach_sub(current, averaged)
        torch._foreach_mul_(delta, weight)
        torch._foreach_add_(averaged, delta)


def averaged_model(model: nn.Module, decay: float, bias_correction: bool = False) -> MovingAverage:
    """The moving average of ``model``'s parameters and buffers (BatchNorm statistics included),
    updated by ``update_parameters(model)`` after every optimiser step."""
    return MovingAverage(model, decay, bias_correction)
