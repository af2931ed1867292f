import torch

from brainseg.models.attention_unet import AttentionGate


def test_attention_gate_weights_the_skip():
    gate = AttentionGate(skip_channels=8, gate_channels=16, inter_channels=4)
    x, g = torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 16, 16) and (alpha >= 0).all() and (alpha <= 1).all()
    torch.testing.assert_close(gate(x, g), x * alpha)


def test_the_gating_signal_opens_and_closes_the_skip_where_it_says():
    gate = AttentionGate(skip_channels=2, gate_channels=1, inter_channels=1)
    with torch.no_grad():  # alpha = sigmoid(10 * relu(g) - 5): near 1 where g = 1, near 0 where g = -1
        gate.theta_x.weight.zero_()
        gate.phi_g.weight.fill_(1.0), gate.phi_g.bias.zero_()
        gate.psi.weight.fill_(10.0), gate.psi.bias.fill_(-5.0)
        x, g = torch.full((1, 2, 16, 16), 2.0), torch.ones(1, 1, 8, 8)
        g[..., 4:] = -1.0  # open on the left half of the coarse grid, closed on the right
        out = gate(x, g)
    torch.testing.assert_close(out[..., :6], torch.full((1, 2, 16, 6), 2 * torch.sigmoid(torch.tensor(5.0)).item()))
    torch.testing.assert_close(out[..., 10:], torch.full((1, 2, 16, 6), 2 * torch.sigmoid(torch.tensor(-5.0)).item()))
