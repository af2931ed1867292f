import torch

from brainseg.models.attention_unet import AttentionGate


def test_attention_gate_weights_the_skip():
    gate = AttentionGate(skip_channels=8, gate_channels=16, inter_channels=4)
    x, g = torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 16, 16) and (alpha >= 0).all() and (alpha <= 1).all()
    torch.testing.assert_close(gate(x, g), x * alpha)
