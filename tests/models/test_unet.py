from brainseg.models import count_parameters, create_model


def test_reference_unet_size():
    def block(c_in, c_out):  # two bias-free 3x3 convs, each followed by BatchNorm (weight and bias)
        return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out

    f = 32
    expected = block(3, f) + block(f, 2 * f) + block(2 * f, 4 * f) + block(4 * f, 8 * f) + block(8 * f, 16 * f)
    expected += sum(2 * c * c * 4 + c + block(2 * c, c) for c in (8 * f, 4 * f, 2 * f, f))  # up-conv + decoder
    expected += f + 1  # 1x1 head
    assert count_parameters(create_model("unet")) == expected == 7_763_041
