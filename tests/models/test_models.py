"""The registry: every registered model trains (a forward/backward pass with a gradient on every
parameter) and predicts; an unknown name lists the registered ones."""

import pytest
import torch

from brainseg.losses import create_loss
from brainseg.models import MODELS, create_model
from brainseg.train import compute_loss


# ResUNet34 (a full ResNet-34 encoder whatever the width) takes 3-5 s on a 2-core CPU: slow tier.
FORWARD_CASES = [pytest.param(name, {}, amp, id=f"{'bf16' if amp else 'fp32'}-{name}",
                              marks=pytest.mark.slow if name == "resunet34" else ())
                 for amp in (False, True) for name in sorted(MODELS)]
FORWARD_CASES += [pytest.param(name, {"deep_supervision": 3}, False, id=f"fp32-{name}-deep_supervision")
                  for name in ("unet", "attention_unet")]
FORWARD_CASES += [pytest.param("unet_plus_plus", {"deep_supervision": False}, False,
                               id="fp32-unet_plus_plus-no-deep-supervision")]  # no head without a gradient
HEADS = {"unet_plus_plus": 4}  # deep supervision in training mode: UNet++ by default


@pytest.mark.parametrize("name, args, amp", FORWARD_CASES)
def test_forward_backward(name, args, amp):
    torch.manual_seed(0)
    model = create_model(name, features=4, **args)
    x = torch.randn(2, 3, 64, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    heads = 1 + args["deep_supervision"] if "deep_supervision" in args else HEADS.get(name, 1)
    assert logits.shape == (2, heads, 64, 96)
    compute_loss(create_loss("dice"), logits, torch.zeros(2, 1, 64, 96)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"{name}: parameters without a finite gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        assert model(x).shape == (2, 1, 64, 96)


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="available models: attention_unet, resunet34, unet, unet_plus_plus"):
        create_model("vnet")
