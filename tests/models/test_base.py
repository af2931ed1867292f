"""What every model shares through its base class: the input-size check and the argument checks."""

import pytest
import torch

from brainseg.models import MODELS, create_model
from brainseg.models.base import SegmentationModel


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
