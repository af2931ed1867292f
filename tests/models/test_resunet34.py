import pytest

from brainseg.models import create_model


def test_resunet34_pretrained_weights_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; downloads are impossible or refused here
    import torchvision.models as tvm

    def refuse(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tvm.ResNet34_Weights.IMAGENET1K_V1.__class__, "get_state_dict", refuse)
    with pytest.raises(RuntimeError, match="could not load torchvision's ImageNet ResNet-34 weights"):
        create_model("resunet34", pretrained=True)


def test_pretrained_weights_with_neighbour_slices_name_the_option():
    with pytest.raises(ValueError, match=r"take 3 input channels, got 9: train with --context 0"):
        create_model("resunet34", in_channels=9, pretrained=True)
