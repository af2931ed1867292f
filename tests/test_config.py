import json

import pytest

from brainseg.config import PRESETS, TrainConfig, field_help


def test_presets_and_overrides():
    config = TrainConfig.from_preset("gpu")
    assert (config.image_size, config.batch_size, config.epochs, config.optimizer, config.lr) == (
        256, 16, 100, "adam", 1e-4)
    assert (config.augment, config.data_on_device) == ("batch", True)  # fed from the GPU
    with pytest.raises(ValueError, match="add --data-on-device false"):
        TrainConfig.from_preset("gpu", augment="sample")
    assert TrainConfig.from_preset("gpu", augment="sample", data_on_device=False).augment == "sample"
    assert TrainConfig.from_preset("cpu", epochs=3).epochs == 3
    assert TrainConfig.from_preset("smoke").preset == "smoke"
    assert set(TrainConfig.preset_names()) == set(PRESETS) == {"gpu", "cpu", "cpu-fast", "smoke"}


def test_cpu_recipe_and_its_fast_variant():
    cpu, fast = TrainConfig.from_preset("cpu"), TrainConfig.from_preset("cpu-fast")
    assert (cpu.loss, cpu.selection, cpu.image_size, cpu.features, cpu.epochs) == ("bce_dice", "last", 128, 16, 20)
    assert (cpu.flair_fill, cpu.intensity, cpu.ema, cpu.deep_supervision) == (0.5, 0.5, 0.999, 2)  # confirmed levers
    differing = {k for k, v in cpu.to_dict().items() if fast.to_dict()[k] != v}
    assert differing == {"preset", "epochs", "max_minutes"} and (fast.epochs, fast.max_minutes) == (10, 19.0)


def test_a_config_built_directly_names_no_preset():
    # the classmethod that builds presets once shadowed this field's default, so a directly built
    # config held a bound method: not JSON, and its checkpoints could not be loaded
    config = TrainConfig(features=4)
    assert config.preset == "custom" and TrainConfig.from_dict({"features": 4}).preset == "custom"
    assert json.loads(json.dumps(config.to_dict()))["preset"] == "custom"
    assert "preset this config started from" in field_help("preset")


def test_round_trip_through_dict():
    config = TrainConfig.from_preset("cpu", run_name="x")
    assert TrainConfig.from_dict({**config.to_dict(), "field_from_the_future": 1}) == config


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=100), "image_size must be a positive multiple of 16"),
    (dict(optimizer="sgd"), "optimizer must be one of"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(lr=0), "lr must be > 0"),
    (dict(max_minutes=-1), "max_minutes must be >= 0"),
    (dict(split="random"), "split must be one of"),
    (dict(loss_args=[("alpha", 1)]), "loss_args must be a dict with string keys"),
    (dict(model_args={1: 2}), "model_args must be a dict with string keys"),
    (dict(context=4), "context must be between 0 and 3 slices, got 4"),
    (dict(context=-1), "context must be between 0 and 3 slices, got -1"),
    (dict(coarse_size=64, coarse_fraction=0.5), r"coarse_size must be a multiple of 16 below the training side 64 px"),
    (dict(coarse_size=40, coarse_fraction=0.5), "coarse_size must be a multiple of 16 .* got 40"),
    (dict(image_size=128, crop_size=64, coarse_size=96, coarse_fraction=0.5), "below the training side 64 px"),
    (dict(coarse_size=32), r"coarse_fraction must be between 0 and 1 .* got 0.0"),
    (dict(coarse_size=32, coarse_fraction=1.0), "coarse_fraction must be between 0 and 1"),
    (dict(coarse_fraction=0.5), "coarse_size must be a multiple of 16 .* got 0"),
    (dict(run_name="/tmp/x"), r"run_name must be a plain folder name .* got '/tmp/x'"),
    (dict(run_name="../x"), r"run_name must be a plain folder name .* got '../x'"),
    (dict(run_name=".."), r"run_name must be a plain folder name .* --logs-dir / --weights-dir"),
])
def test_invalid_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_preset("smoke", **overrides)


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=16), "image_size 16 leaves unet a 1 x 1 pixel bottleneck.*use 32 px"),
    (dict(coarse_size=16, coarse_fraction=0.5), "coarse_size 16 leaves unet a 1 x 1 pixel bottleneck"),
    (dict(image_size=64, crop_size=16), "crop_size 16 leaves unet a 1 x 1 pixel bottleneck"),
    (dict(model="resunet34", image_size=32), "image_size 32 leaves resunet34 a 1 x 1 pixel bottleneck.*use 64 px"),
    (dict(scheduler="cosine", epochs=2, warmup_epochs=2), "warmup_epochs 2 must be below epochs 2"),
])
def test_what_a_new_training_cannot_learn_from_is_refused(overrides, message):
    config = TrainConfig.from_preset("smoke", **overrides)  # a finished run's config of this kind still reads
    with pytest.raises(ValueError, match=message):
        config.check_trainable()


def test_the_presets_can_train():
    for name in TrainConfig.preset_names():
        TrainConfig.from_preset(name).check_trainable()


def test_model_arguments_read_three_channels_per_slice():
    assert TrainConfig.from_preset("smoke").model_kwargs() == {"features": 8, "in_channels": 3}
    config = TrainConfig.from_preset("smoke", model="unet_plus_plus", context=2, model_args={"deep_supervision": False})
    assert config.model_kwargs() == {"features": 8, "in_channels": 15, "deep_supervision": False}


def test_deep_supervision_reaches_the_u_nets_and_a_presets_value_skips_other_models(monkeypatch):
    from brainseg.config import PRESETS

    assert TrainConfig.from_preset("smoke", deep_supervision=2).model_kwargs() == {
        "features": 8, "in_channels": 3, "deep_supervision": 2}
    assert "deep_supervision" not in TrainConfig.from_preset("smoke", deep_supervision=0).model_kwargs()
    monkeypatch.setitem(PRESETS, "supervised", {**PRESETS["smoke"], "deep_supervision": 2})
    assert TrainConfig.from_preset("supervised", model="attention_unet").deep_supervision == 2
    assert TrainConfig.from_preset("supervised", model="resunet34").deep_supervision == 0  # dropped, not refused
    with pytest.raises(ValueError, match=r"deep_supervision needs a model with decoder heads \(unet, "
                                         r"attention_unet\), got model 'resunet34'; pass deep_supervision 0"):
        TrainConfig.from_preset("supervised", model="resunet34", deep_supervision=1)
    with pytest.raises(ValueError, match=r"deep_supervision must be one of \(0, 1, 2, 3\), got 4"):
        TrainConfig.from_preset("smoke", deep_supervision=4)


def test_deep_supervision_decay_needs_heads_and_a_decay_in_range():
    assert TrainConfig.from_preset("cpu", deep_supervision_decay=0.5).deep_supervision_decay == 0.5
    with pytest.raises(ValueError, match=r"deep_supervision_decay weighs the decoder heads, but deep_supervision is "
                                         r"0; pass --deep-supervision 2 too"):
        TrainConfig.from_preset("smoke", deep_supervision=0, deep_supervision_decay=0.5)
    with pytest.raises(ValueError, match=r"deep_supervision_decay must be in \(0, 1\], got 0.0"):
        TrainConfig.from_preset("cpu", deep_supervision_decay=0.0)


def test_the_older_spelling_of_deep_supervision_is_the_same_recipe():
    older = TrainConfig.from_preset("smoke", model_args={"deep_supervision": 2, "other": 1})
    assert (older.deep_supervision, older.model_args) == (2, {"other": 1})
    assert older.recipe_differences(TrainConfig.from_preset("smoke", deep_supervision=2, model_args={"other": 1})) == []
    assert TrainConfig.from_dict({**older.to_dict(), "deep_supervision": 0, "model_args": {"deep_supervision": 2}}
                                 ).deep_supervision == 2  # a config saved before the field existed
    with pytest.raises(ValueError, match="deep_supervision 1 and model_args deep_supervision 2 disagree"):
        TrainConfig.from_preset("smoke", deep_supervision=1, model_args={"deep_supervision": 2})


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="available presets: cpu, cpu-fast, gpu, smoke"):
        TrainConfig.from_preset("tpu")
    with pytest.raises(ValueError, match=r"unknown config fields \['epoch'\]"):
        TrainConfig.from_preset("cpu", epoch=3)


def test_a_model_argument_at_its_default_is_the_same_recipe():
    spelt_out = TrainConfig.from_preset("smoke", model_args={"norm": "batch"})
    assert spelt_out.model_args == {}
    assert spelt_out.recipe_differences(TrainConfig.from_preset("smoke")) == []
    assert TrainConfig.from_preset("smoke", model_args={"norm": "instance"}).model_args == {"norm": "instance"}
    assert TrainConfig.from_dict({**spelt_out.to_dict(), "model_args": {"norm": "batch"}}).model_args == {}
