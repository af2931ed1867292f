"""What every model shares through its base class: the input-size check, the argument checks and
activation checkpointing."""

import pytest
import torch

from brainseg.models import MODELS, create_model
from brainseg.models.base import SegmentationModel, running_stats_kept


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_size_not_divisible(name):
    model = create_model(name, features=4)
    stride = model.stride
    padded = (-(-30 // stride) * stride, -(-40 // stride) * stride)
    with pytest.raises(ValueError, match=f"multiples of {stride}, got 30x40; pad the input to {padded[0]}x{padded[1]}"):
        model(torch.zeros(1, 3, 30, 40))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("argument, value", [("features", 0), ("features", True), ("in_channels", 2.5),
                                             ("out_channels", -1)])
def test_every_model_checks_its_arguments_in_the_shared_base(name, argument, value):
    assert issubclass(MODELS[name], SegmentationModel)
    with pytest.raises(ValueError, match=f"{argument} must be a positive integer, got {value!r}"):
        create_model(name, **{argument: value})


def one_step(name: str, checkpointing: bool) -> tuple[torch.Tensor, dict, dict]:
    """(logits, gradients, state after an SGD step) of one seeded training step."""
    torch.manual_seed(0)
    model = create_model(name, features=4)
    model.checkpointing = checkpointing
    model.train()
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits = model(image)
    logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return logits.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpointing_gives_the_same_step(name):
    logits, grads, state = one_step(name, checkpointing=False)
    logits_c, grads_c, state_c = one_step(name, checkpointing=True)
    torch.testing.assert_close(logits_c, logits)
    assert grads_c.keys() == grads.keys()
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], msg=key)
    for key in state:  # weights after the step, BatchNorm running statistics updated once
        torch.testing.assert_close(state_c[key], state[key], msg=key)


def test_checkpointing_keeps_fewer_activations():
    """Bytes saved for the backward pass, counted by the autograd saved-tensor hooks."""
    def saved_bytes(checkpointing: bool) -> int:
        model = create_model("unet", features=8)
        model.checkpointing = checkpointing
        total = 0

        def pack(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(torch.randn(2, 3, 64, 64)).sum().backward()
        return total

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_running_stats_kept_undoes_the_updates_inside():
    norm = torch.nn.BatchNorm2d(3)
    norm.train()
    norm(torch.randn(4, 3, 5, 5) + 1)
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    with running_stats_kept(norm):
        out = norm(torch.randn(4, 3, 5, 5) * 3 + 2)
        assert not torch.equal(norm.running_mean, before["running_mean"])  # updated inside
    for key, value in norm.state_dict().items():
        assert torch.equal(value, before[key]), key
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)  # batch statistics


def test_eval_and_no_grad_do_not_checkpoint():
    model = create_model("unet", features=4)
    model.checkpointing = True
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
