import pytest
import torch

from brainseg.models import MODELS, count_parameters, create_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_forward_backward(name, amp):
    torch.manual_seed(0)
    model = create_model(name, features=4)
    x = torch.randn(2, 3, 32, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    assert logits.shape == (2, 1, 32, 48)
    logits.float().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_size_not_divisible(name):
    model = create_model(name, features=4)
    with pytest.raises(ValueError, match="multiples of 16, got 30x40; pad the input to 32x48"):
        model(torch.zeros(1, 3, 30, 40))


def test_reference_unet_size():
    def block(c_in, c_out):  # two bias-free 3x3 convs, each followed by BatchNorm (weight and bias)
        return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out

    f = 32
    expected = block(3, f) + block(f, 2 * f) + block(2 * f, 4 * f) + block(4 * f, 8 * f) + block(8 * f, 16 * f)
    expected += sum(2 * c * c * 4 + c + block(2 * c, c) for c in (8 * f, 4 * f, 2 * f, f))  # up-conv + decoder
    expected += f + 1  # 1x1 head
    assert count_parameters(create_model("unet")) == expected == 7_763_041


def test_bad_arguments():
    with pytest.raises(ValueError, match="available models: unet"):
        create_model("vnet")
    with pytest.raises(ValueError, match="features must be a positive integer"):
        create_model("unet", features=0)
