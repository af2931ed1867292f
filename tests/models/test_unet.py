import pytest
import torch

from brainseg.models import count_parameters, create_model


def test_reference_unet_size():
    def block(c_in, c_out):  # two bias-free 3x3 convs, each followed by BatchNorm (weight and bias)
        return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out

    f = 32
    expected = block(3, f) + block(f, 2 * f) + block(2 * f, 4 * f) + block(4 * f, 8 * f) + block(8 * f, 16 * f)
    expected += sum(2 * c * c * 4 + c + block(2 * c, c) for c in (8 * f, 4 * f, 2 * f, f))  # up-conv + decoder
    expected += f + 1  # 1x1 head
    assert count_parameters(create_model("unet")) == expected == 7_763_041


def test_deep_supervision_adds_coarse_heads_in_training_only():
    torch.manual_seed(0)
    plain = create_model("unet", features=4)
    supervised = create_model("unet", features=4, deep_supervision=2)
    assert count_parameters(supervised) - count_parameters(plain) == (2 * 4 + 1) + (4 * 4 + 1)  # two 1x1 heads
    missing, unexpected = supervised.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["aux_heads.0.bias", "aux_heads.0.weight",
                                                  "aux_heads.1.bias", "aux_heads.1.weight"]
    x = torch.randn(2, 3, 32, 48)
    logits = supervised.train()(x)
    assert logits.shape == (2, 3, 32, 48)  # H/4 head, H/2 head, final head
    torch.testing.assert_close(logits[:, 2:], plain.train()(x))  # the final head is the plain U-Net's
    supervised.eval(), plain.eval()
    torch.testing.assert_close(supervised(x), plain(x))


def test_a_constant_coarse_head_is_up_sampled_to_full_size():
    model = create_model("unet", features=4, deep_supervision=1)
    with torch.no_grad():
        model.aux_heads[0].weight.zero_()
        model.aux_heads[0].bias.fill_(-3.0)
    logits = model.train()(torch.randn(1, 3, 32, 32))
    assert torch.equal(logits[:, 0], torch.full((1, 32, 32), -3.0))


@pytest.mark.parametrize("bad", [-1, 4, True, 1.5])
def test_deep_supervision_levels_are_checked(bad):
    with pytest.raises(ValueError, match="deep_supervision must be 0, 1, 2 or 3"):
        create_model("unet", deep_supervision=bad)


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_instance_norm_ignores_a_rescaled_image_where_batch_norm_does_not(name):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    instance = create_model(name, features=4, norm="instance").eval()
    batch = create_model(name, features=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(instance(3.0 * x), instance(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(batch(3.0 * x), batch(x), atol=1e-2)


def test_instance_norm_replaces_every_batch_norm_and_behaves_alike_in_training_and_eval():
    torch.manual_seed(0)
    instance = create_model("unet", features=4, norm="instance")
    norms = [m for m in instance.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d))]
    assert len(norms) == 18 and all(isinstance(m, torch.nn.InstanceNorm2d) and m.affine for m in norms)  # 9 blocks
    assert not any("running" in key for key in instance.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(instance.train()(x), instance.eval()(x))


def test_an_unknown_norm_is_named():
    with pytest.raises(ValueError, match="norm must be one of batch, instance, got 'group'"):
        create_model("unet", norm="group")


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_instance_norm_refuses_a_one_pixel_bottleneck_by_name(name):
    model = create_model(name, features=4, norm="instance")
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ValueError, match=r"instance norm needs more than one pixel .* got 16x16 -> 1x1"):
            model(torch.rand(2, 3, 16, 16))
    assert model(torch.rand(2, 3, 16, 32)).shape == (2, 1, 16, 32)  # 1x2 at the bottleneck
    assert create_model(name, features=4).eval()(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)
