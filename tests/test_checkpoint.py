import pytest
import torch

from brainseg.checkpoint import load_checkpoint, load_model, save_checkpoint
from brainseg.config import TrainConfig
from brainseg.models import create_model


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig.from_preset("smoke")
    model = create_model("unet", features=config.features)
    model.train()
    model(torch.randn(4, 3, 32, 32))  # move BatchNorm running statistics away from their defaults
    model.eval()
    save_checkpoint(tmp_path / "best.pt", model, config, epoch=3, metrics={"val_mean_dsc": 0.5})
    loaded, loaded_config = load_model(tmp_path / "best.pt")
    assert not loaded.training and loaded_config == config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["image_size"] == 64 and checkpoint["model"] == "unet"


def test_checkpoint_of_a_config_built_directly_loads(tmp_path):
    config = TrainConfig(features=4, image_size=32)
    save_checkpoint(tmp_path / "best.pt", create_model("unet", features=4), config, 1, {})
    assert load_model(tmp_path / "best.pt")[1] == config


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot read this checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a brainseg checkpoint"):
        load_model(tmp_path / "other.pt")
    torch.save({"model": "unet", "state_dict": {}}, tmp_path / "partial.pt")  # no config: refused on reading
    with pytest.raises(ValueError, match="partial.pt: not a brainseg checkpoint .*model_kwargs, state_dict, config"):
        load_model(tmp_path / "partial.pt")


def test_compact_checkpoint_keeps_predictions_and_large_running_statistics(tmp_path):
    from brainseg.checkpoint import compact_checkpoint

    torch.manual_seed(0)
    config = TrainConfig.from_preset("smoke")
    model = create_model("unet", features=config.features).eval()
    model.bottleneck[1].running_var.fill_(1e5)  # beyond float16's range: must stay float32
    save_checkpoint(tmp_path / "best.pt", model, config, 1, {},
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
    config = TrainConfig.from_preset("smoke", model="unet_plus_plus", model_args={"inference": "mean"})
    model = create_model("unet_plus_plus", features=config.features, inference="mean").eval()
    save_checkpoint(tmp_path / "best.pt", model, config, 1, {})
    loaded, _ = load_model(tmp_path / "best.pt")
    assert loaded.inference == "mean"


def _same(a, b) -> bool:
    """Equal nested state: dicts, lists and tuples compared element-wise, tensors exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _training_components(config, seed):
    """A model, AdamW, the run's cosine schedule and a sampler generator, all drawn from ``seed``."""
    from brainseg.schedule import make_scheduler
    from brainseg.train import make_optimizer

    torch.manual_seed(seed)
    model = create_model("unet", features=config.features)
    optimizer = make_optimizer(model, config)
    return model, optimizer, make_scheduler(optimizer, config, steps_per_epoch=5), torch.Generator().manual_seed(seed)


def _next_draws(generator):
    """The next numbers of every random state a run uses: torch, the sampler's, NumPy, Python."""
    import random

    import numpy as np

    return (torch.rand(3), torch.randperm(10, generator=generator), np.random.rand(3).tolist(), random.random())


def test_training_state_round_trip_restores_every_state_into_fresh_objects(tmp_path):
    import random

    import numpy as np

    from brainseg.checkpoint import TrainingState, restore_training_state, save_training_state

    config = TrainConfig.from_preset("smoke", optimizer="adamw", scheduler="cosine", warmup_epochs=0.5, lr=1e-3)
    model, optimizer, scheduler, generator = _training_components(config, seed=0)
    model(torch.randn(2, 3, 32, 32)).mean().backward()  # optimizer moments, BatchNorm statistics, a scheduler step
    optimizer.step()
    scheduler.step()
    random.seed(1), np.random.seed(2), torch.randperm(5, generator=generator)
    state = TrainingState(epoch=2, best={"val_mean_dsc": 0.5, "epoch": 1, "per_case": {"a": 0.5}},
                          history=[{"epoch": 1, "train_loss": 0.9, "val_mean_dsc": 0.5},
                                   {"epoch": 2, "train_loss": 0.8, "val_mean_dsc": float("inf")}],
                          metrics={"val_mean_dsc": 0.4}, wall_s=12.5, train_images=40, train_seconds=3.0,
                          val_seconds=1.5, commands=["python -m brainseg train", "python -m brainseg train --resume r"])
    save_training_state(tmp_path / "last.pt", state, model, optimizer, scheduler, generator, config)
    expected = _next_draws(generator)

    fresh = _training_components(config, seed=7)  # other weights, no optimizer state, other random states
    random.seed(8), np.random.seed(9)
    restored = restore_training_state(tmp_path / "last.pt", *fresh)
    assert restored == state
    assert _same(fresh[0].state_dict(), model.state_dict())
    assert _same(fresh[1].state_dict(), optimizer.state_dict())
    assert _same(fresh[2].state_dict(), scheduler.state_dict())
    assert _same(_next_draws(fresh[3]), expected)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2  # an ordinary checkpoint too
    assert _same(load_model(tmp_path / "last.pt")[0].state_dict(), model.state_dict())


def test_restoring_a_checkpoint_without_training_state_is_refused(tmp_path):
    from brainseg.checkpoint import restore_training_state

    config = TrainConfig.from_preset("smoke")
    model, optimizer, scheduler, generator = _training_components(config, seed=0)
    save_checkpoint(tmp_path / "best.pt", model, config, 1, {})
    with pytest.raises(ValueError, match=r"best\.pt: no training state in this checkpoint; cannot resume"):
        restore_training_state(tmp_path / "best.pt", model, optimizer, scheduler, generator)


def test_an_optimizer_state_of_other_parameters_is_refused_with_the_file(tmp_path):
    from brainseg.checkpoint import TrainingState, restore_training_state, save_training_state
    from brainseg.schedule import make_scheduler
    from brainseg.train import make_optimizer

    config = TrainConfig.from_preset("smoke")
    model, optimizer, scheduler, generator = _training_components(config, seed=0)
    save_training_state(tmp_path / "last.pt", TrainingState(), model, optimizer, scheduler, generator, config)
    fewer = create_model("unet", features=config.features)  # the state dict loads, the optimizer groups do not
    optimizer = make_optimizer(torch.nn.Sequential(*list(fewer.children())[:2]), config)
    with pytest.raises(ValueError, match=r"last\.pt: its optimizer state does not fit this model's parameters"):
        restore_training_state(tmp_path / "last.pt", fewer, optimizer, make_scheduler(optimizer, config, 5), generator)


def test_a_training_checkpoint_predicts_with_its_moving_average_and_resumes_from_its_weights(tmp_path):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from brainseg.checkpoint import TrainingState, compact_checkpoint, restore_training_state, save_training_state

    config = TrainConfig.from_preset("smoke", optimizer="adamw", scheduler="cosine", lr=1e-3, ema=0.5)
    model, optimizer, scheduler, generator = _training_components(config, seed=0)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    with torch.no_grad():
        for parameter in model.parameters():  # the raw weights move on; the average stays behind
            parameter.add_(1.0)
    save_training_state(tmp_path / "last.pt", TrainingState(epoch=1, best={}, history=[], metrics={}),
                        model, optimizer, scheduler, generator, config, averaged=averaged)

    predicting, _ = load_model(tmp_path / "last.pt")
    assert _same(predicting.state_dict(), averaged.module.state_dict())
    assert not _same(predicting.state_dict(), model.state_dict())
    fresh = _training_components(config, seed=7)
    restore_training_state(tmp_path / "last.pt", *fresh, averaged=AveragedModel(fresh[0], use_buffers=True))
    assert _same(fresh[0].state_dict(), model.state_dict())

    compact_checkpoint(tmp_path / "last.pt", tmp_path / "small.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "small.pt")[0](x), predicting(x), atol=2e-2, rtol=1e-2)
    assert "averaged" not in load_checkpoint(tmp_path / "small.pt")
    with pytest.raises(ValueError, match="no training state in this checkpoint"):
        restore_training_state(tmp_path / "small.pt", *_training_components(config, seed=1))
