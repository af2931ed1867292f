import pytest
import torch

from brainseg.ema import averaged_model
from brainseg.models import create_model


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


def test_a_four_head_checkpoint_loads_into_the_one_head_model():
    torch.manual_seed(0)
    four = create_model("unet_plus_plus", features=4).eval()  # deep supervision: four heads
    one = create_model("unet_plus_plus", features=4, deep_supervision=False).eval()
    assert len(one.heads) == 1
    one.load_state_dict(four.state_dict())  # strict: the unused heads are dropped, X(0, 4)'s kept
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(one(x), four(x))
    one_average = averaged_model(one, 0.9)  # a training checkpoint's moving average: keys under module.
    one_average.load_state_dict(averaged_model(four, 0.9).state_dict())
    assert len(one_average.module.heads) == 1
