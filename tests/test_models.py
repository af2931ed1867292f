import pytest
import torch

from brainseg.losses import create_loss
from brainseg.models import MODELS, count_parameters, create_model
from brainseg.models.base import SegmentationModel
from brainseg.train import compute_loss


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_forward_backward(name, amp):
    torch.manual_seed(0)
    model = create_model(name, features=4)
    x = torch.randn(2, 3, 64, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    heads = 4 if name == "unet_plus_plus" else 1  # deep supervision in training mode
    assert logits.shape == (2, heads, 64, 96)
    compute_loss(create_loss("dice"), logits, torch.zeros(2, 1, 64, 96)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"{name}: parameters without a finite gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        assert model(x).shape == (2, 1, 64, 96)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_size_not_divisible(name):
    model = create_model(name, features=4)
    stride = model.stride
    padded = (-(-30 // stride) * stride, -(-40 // stride) * stride)
    with pytest.raises(ValueError, match=f"multiples of {stride}, got 30x40; pad the input to {padded[0]}x{padded[1]}"):
        model(torch.zeros(1, 3, 30, 40))


def test_attention_gate_weights_the_skip():
    from brainseg.models.attention_unet import AttentionGate

    gate = AttentionGate(skip_channels=8, gate_channels=16, inter_channels=4)
    x, g = torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 16, 16) and (alpha >= 0).all() and (alpha <= 1).all()
    torch.testing.assert_close(gate(x, g), x * alpha)


def test_unet_plus_plus_inference_modes():
    torch.manual_seed(0)
    final = create_model("unet_plus_plus", features=4).eval()
    mean = create_model("unet_plus_plus", features=4, inference="mean").eval()
    mean.load_state_dict(final.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        final.train()  # training mode returns the 4 stacked heads; BatchNorm kept in eval mode
        for module in final.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        heads = final(x)
        final.eval()
        assert heads.shape == (1, 4, 32, 32)
        torch.testing.assert_close(final(x), heads[:, 3:])
        torch.testing.assert_close(mean(x), heads.mean(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="inference must be"):
        create_model("unet_plus_plus", inference="max")


def test_resunet34_pretrained_weights_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; downloads are impossible or refused here
    import torchvision.models as tvm

    def refuse(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tvm.ResNet34_Weights.IMAGENET1K_V1.__class__, "get_state_dict", refuse)
    with pytest.raises(RuntimeError, match="could not load torchvision's ImageNet ResNet-34 weights"):
        create_model("resunet34", pretrained=True)


def test_reference_unet_size():
    def block(c_in, c_out):  # two bias-free 3x3 convs, each followed by BatchNorm (weight and bias)
        return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out

    f = 32
    expected = block(3, f) + block(f, 2 * f) + block(2 * f, 4 * f) + block(4 * f, 8 * f) + block(8 * f, 16 * f)
    expected += sum(2 * c * c * 4 + c + block(2 * c, c) for c in (8 * f, 4 * f, 2 * f, f))  # up-conv + decoder
    expected += f + 1  # 1x1 head
    assert count_parameters(create_model("unet")) == expected == 7_763_041


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="available models: attention_unet, resunet34, unet, unet_plus_plus"):
        create_model("vnet")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("argument, value", [("features", 0), ("features", True), ("in_channels", 2.5),
                                             ("out_channels", -1)])
def test_every_model_checks_its_arguments_in_the_shared_base(name, argument, value):
    assert issubclass(MODELS[name], SegmentationModel)
    with pytest.raises(ValueError, match=f"{argument} must be a positive integer, got {value!r}"):
        create_model(name, **{argument: value})
