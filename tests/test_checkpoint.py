import pytest
import torch

from brainseg.checkpoint import load_checkpoint, load_model, save_checkpoint
from brainseg.config import TrainConfig
from brainseg.io import atomic_write
from brainseg.models import create_model


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"good")

    def failing_write(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig.preset("smoke")
    model = create_model("unet", features=config.features)
    model.train()
    model(torch.randn(4, 3, 32, 32))  # move BatchNorm running statistics away from their defaults
    model.eval()
    save_checkpoint(tmp_path / "best.pt", model, config, epoch=3, metrics={"val_mean_dsc": 0.5}, geometry_size=64)
    loaded, loaded_config = load_model(tmp_path / "best.pt")
    assert not loaded.training and loaded_config == config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["image_size"] == 64 and checkpoint["model"] == "unet"


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot read this checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a brainseg checkpoint"):
        load_model(tmp_path / "other.pt")


def test_compact_checkpoint_keeps_predictions_and_large_running_statistics(tmp_path):
    from brainseg.checkpoint import compact_checkpoint

    torch.manual_seed(0)
    config = TrainConfig.preset("smoke")
    model = create_model("unet", features=config.features).eval()
    model.bottleneck[1].running_var.fill_(1e5)  # beyond float16's range: must stay float32
    save_checkpoint(tmp_path / "best.pt", model, config, 1, {}, geometry_size=64,
                    optimizer={"state": {}, "param_groups": []})
    compact_checkpoint(tmp_path / "best.pt", tmp_path / "small.pt")
    stored = load_checkpoint(tmp_path / "small.pt")
    assert "optimizer" not in stored
    assert stored["state_dict"]["encoders.0.0.weight"].dtype == torch.float16
    assert stored["state_dict"]["bottleneck.1.running_var"].dtype == torch.float32
    small, _ = load_model(tmp_path / "small.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=2e-2, rtol=1e-2)


def test_model_arguments_are_rebuilt_from_the_checkpoint(tmp_path):
    config = TrainConfig.preset("smoke", model="unet_plus_plus", model_args={"inference": "mean"})
    model = create_model("unet_plus_plus", features=config.features, inference="mean").eval()
    save_checkpoint(tmp_path / "best.pt", model, config, 1, {}, geometry_size=64)
    loaded, _ = load_model(tmp_path / "best.pt")
    assert loaded.inference == "mean"
