import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from brainseg import train as train_module
from brainseg.checkpoint import load_checkpoint, load_model
from brainseg.cli import main
from brainseg.config import TrainConfig
from brainseg.schedule import make_scheduler
from brainseg.train import TrainingDiverged, fit


@pytest.mark.slow
def test_fit_writes_history_and_checkpoints(synthetic_data, tmp_path, synthetic_config):
    result = fit(synthetic_config(synthetic_data, tmp_path), command="test", progress=False)
    log_dir = tmp_path / "logs" / "synthetic"
    with open(log_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert result["epochs"] == 2 and result["split"] == "kfold3-fold0" and len(result["per_case"]) == 4
    assert json.loads((log_dir / "metrics.json").read_text())["command"] == "test"
    assert load_checkpoint(tmp_path / "weights" / "synthetic" / "last.pt")["epoch"] == 2


@pytest.mark.slow
def test_nan_loss_stops_training_and_keeps_best(synthetic_data, tmp_path, monkeypatch, synthetic_config):
    real_create_loss = train_module.create_loss

    class NanAfterFirstEpoch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.loss, self.calls = real_create_loss("dice"), 0

        def forward(self, logits, target):
            self.calls += 1
            value = self.loss(logits, target)
            return value * float("nan") if self.calls > 20 else value

    monkeypatch.setattr(train_module, "create_loss", lambda name, **kw: NanAfterFirstEpoch())
    with pytest.raises(TrainingDiverged, match=r"^run synthetic, epoch \d: loss became nan at step \d+; lower the "
                                               r"learning rate; the best model so far is in .*synthetic/best.pt$"):
        fit(synthetic_config(synthetic_data, tmp_path, epochs=5), progress=False)
    best = tmp_path / "weights" / "synthetic" / "best.pt"
    model, _ = load_model(best)
    assert load_checkpoint(best)["epoch"] >= 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_divergence_is_reported_on_its_own_line_after_the_progress_bars(synthetic_data, tmp_path, monkeypatch,
                                                                        capsys):
    real_create_loss = train_module.create_loss
    monkeypatch.setattr(train_module, "create_loss",
                        lambda name, **kw: lambda logits, target: (real_create_loss("dice")(logits, target)
                                                                   * float("nan")))
    args = ["train", "--preset", "smoke", "--data", str(synthetic_data), "--cache-dir", str(tmp_path / "cache"),
            "--logs-dir", str(tmp_path / "logs"), "--weights-dir", str(tmp_path / "weights"), "--run-name", "synthetic",
            "--split", "kfold", "--folds", "3", "--image-size", "32", "--features", "4", "--max-train-cases", "0"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "epochs:" in err  # the bars were drawn
    [line] = [line for line in err.split("\n") if "loss became nan" in line]
    assert line.startswith("error: run synthetic, epoch 1: loss became nan at step"), repr(line)
    assert line.endswith("no checkpoint was saved yet")


@pytest.mark.slow
def test_time_budget_stops_early_and_says_the_schedule_is_unfinished(synthetic_data, tmp_path, synthetic_config,
                                                                       capsys):
    result = fit(synthetic_config(synthetic_data, tmp_path, epochs=50, max_minutes=1e-4), progress=False)
    assert result["stopped_early"] and result["epochs"] == 1 and result["stop_reason"] == "max_minutes"
    said = capsys.readouterr()
    assert "schedule ends unfinished at epoch 1 of 50 (--max-minutes 0 trains every epoch" in said.out + said.err


@pytest.mark.slow
def test_validation_every_n_epochs_keeps_the_final_one(synthetic_data, tmp_path, synthetic_config):
    result = fit(synthetic_config(synthetic_data, tmp_path, epochs=3, val_every=2, selection="last"), progress=False)
    with open(tmp_path / "logs" / "synthetic" / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["val_mean_dsc"] == "nan" for r in rows] == [True, False, False]
    assert result["best_epoch"] == 3 and "val_mean_dsc_without_lcc" in result


def test_cosine_schedule_warms_up_and_decays():
    config = TrainConfig.from_preset("smoke", epochs=2, scheduler="cosine", warmup_epochs=0.5, lr=1.0)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] < 0.02


@pytest.mark.slow
def test_tensorboard_events_have_scalars_and_outlines(synthetic_data, tmp_path, synthetic_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(synthetic_config(synthetic_data, tmp_path, epochs=2, vis_slices=2), progress=False)
    events = EventAccumulator(str(tmp_path / "logs" / "synthetic"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/train", "loss/val", "dsc/val_mean", "dsc/val_median", "lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert [e.step for e in events.Images("val/outlines")] == [1, 2]
    assert "val/outlines" in tags["images"]


@pytest.mark.slow
def test_inner_selection_evaluates_the_outer_cases_once(synthetic_data, tmp_path, synthetic_config):
    result = fit(synthetic_config(synthetic_data, tmp_path, selection="inner", inner_val_cases=2), progress=False)
    assert result["selection"].startswith("inner") and len(result["inner_cases"]) == 2
    assert len(result["per_case"]) == 4 and not set(result["inner_cases"]) & set(result["per_case"])
    assert result["train_cases"] == 6 and result["val_cases"] == 4
    chosen = "val_mean_dsc_with_lcc" if result["largest_component_applied"] else "val_mean_dsc_without_lcc"
    assert result["val_mean_dsc"] == pytest.approx(result[chosen])
    grid_key = f"tta={result['flip_tta_applied']},lcc={result['largest_component_applied']}"
    assert set(result["outer_grid"]) == {f"tta={t},lcc={c}" for t in (False, True) for c in (False, True)}
    assert result["val_mean_dsc"] == pytest.approx(result["outer_grid"][grid_key])
    assert "final_inner_mean_dsc" in result and "final_val_mean_dsc" not in result


@pytest.mark.slow
def test_compiled_training_saves_the_eager_models_weights(synthetic_data, tmp_path, synthetic_config):
    """With compile=True the optimiser still trains the saved model: its checkpoint loads into a plain
    model (no ``_orig_mod.`` prefix) and differs from the initial weights."""
    config = synthetic_config(synthetic_data, tmp_path, epochs=1, compile=True)
    fit(config, progress=False)
    checkpoint = load_checkpoint(tmp_path / "weights" / "synthetic" / "last.pt")
    assert not any(key.startswith("_orig_mod.") for key in checkpoint["state_dict"])
    model, _ = load_model(tmp_path / "weights" / "synthetic" / "last.pt")
    torch.manual_seed(config.seed)
    initial = train_module.create_model(config.model, features=config.features)
    assert all(a.shape == b.shape for a, b in zip(model.parameters(), initial.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))


@pytest.mark.slow
def test_batch_augmentation_trains_and_is_recorded(synthetic_data, tmp_path, synthetic_config):
    result = fit(synthetic_config(synthetic_data, tmp_path, epochs=1, augment="batch"), progress=False)
    assert result["config"]["augment"] == "batch" and result["epochs"] == 1
    with pytest.raises(ValueError, match="augment must be one of"):
        synthetic_config(synthetic_data, tmp_path, augment="gpu")


def ema_config(data, root, **overrides) -> TrainConfig:
    values = dict(data_dir=str(data), cache_dir=str(root / "cache"), logs_dir=str(root / "logs"),
                  weights_dir=str(root / "weights"), run_name="ema", split="kfold", folds=3, image_size=32,
                  batch_size=4, epochs=2, features=4, max_train_cases=0, lr=1e-2, selection="last", device="cpu")
    values.update(overrides)
    return TrainConfig.from_preset("smoke", **values)


def saved(root, name) -> dict:
    return load_checkpoint(root / "weights" / "ema" / name)


@pytest.mark.slow
def test_the_average_is_what_is_saved_and_it_lags_the_weights(synthetic_data, tmp_path):
    fit(ema_config(synthetic_data, tmp_path, ema=0.9), progress=False)
    best, last = saved(tmp_path, "best.pt"), saved(tmp_path, "last.pt")
    weights, average = last["state_dict"], last["averaged"]
    for key, value in best["state_dict"].items():  # best.pt (selection last) holds the average
        assert torch.equal(value, average[f"module.{key}"]), key
    conv = "encoders.0.0.weight"
    assert not torch.allclose(best["state_dict"][conv], weights[conv])
    assert int(average["n_averaged"]) == last["scheduler"]["last_epoch"] > 0  # one update per step


@pytest.mark.slow
def test_a_tiny_decay_follows_the_weights(synthetic_data, tmp_path):
    fit(ema_config(synthetic_data, tmp_path, ema=1e-12), progress=False)
    best, last = saved(tmp_path, "best.pt"), saved(tmp_path, "last.pt")
    for key, value in last["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(best["state_dict"][key], value, msg=key)


@pytest.mark.slow
def test_resume_restores_the_average(synthetic_data, tmp_path):
    fit(ema_config(synthetic_data, tmp_path / "whole", ema=0.9), progress=False)
    stopped = fit(ema_config(synthetic_data, tmp_path / "parts", ema=0.9, max_minutes=1e-9), progress=False)
    assert stopped["epochs"] == 1 and stopped["stop_reason"] == "max_minutes"  # the time limit interrupts it
    fit(ema_config(synthetic_data, tmp_path / "parts", ema=0.9), progress=False, resume=True)  # no limit now
    whole, parts = saved(tmp_path / "whole", "best.pt"), saved(tmp_path / "parts", "best.pt")
    for key, value in whole["state_dict"].items():
        assert torch.equal(parts["state_dict"][key], value), key


def test_ema_range_is_checked():
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\), got 1"):
        TrainConfig.from_preset("smoke", ema=1)


@pytest.mark.slow
def test_a_model_with_context_trains_reloads_and_predicts_whole_cases(synthetic_data, tmp_path, synthetic_config):
    from brainseg.evaluation import evaluate_checkpoint

    config = synthetic_config(synthetic_data, tmp_path, run_name="context", context=1, selection="last")
    result = fit(config, progress=False)
    assert result["config"]["context"] == 1 and len(result["per_case"]) == 4
    model, saved = load_model(tmp_path / "weights" / "context" / "best.pt")
    assert model.in_channels == 9 and saved.context == 1
    report = evaluate_checkpoint(str(tmp_path / "weights" / "context" / "best.pt"), data_dir=str(synthetic_data),
                                 cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "eval"), device="cpu",
                                 overlays=False, progress=False)
    assert report["per_case"] == pytest.approx(result["per_case"], abs=1e-6)  # the same 2.5D input as in training


def test_a_deeply_supervised_unet_trains_and_reloads_with_its_heads(synthetic_data, tmp_path, synthetic_config):
    from brainseg.selection import Selection
    from brainseg.train import build_components, load_data, set_up_run

    config = synthetic_config(synthetic_data, tmp_path, run_name="deep", epochs=1, selection="last",
                              deep_supervision=2, deep_supervision_decay=0.5)
    result = fit(config, progress=False)
    assert len(result["per_case"]) == 4
    model, saved = load_model(tmp_path / "weights" / "deep" / "last.pt")
    assert model.deep_supervision == 2 and len(model.aux_heads) == 2 and saved.deep_supervision == 2
    assert saved.deep_supervision_decay == 0.5
    run = set_up_run(config, progress=False, resume=True)
    loss_fn = build_components(config, run, load_data(config, run, Selection(config.selection))).loss_fn
    assert loss_fn.head_weights(3) == pytest.approx([1 / 7, 2 / 7, 4 / 7])  # the final head weighs most
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)  # eval mode: the final head only


def test_soft_masks_give_the_training_cases_lesion_fractions_and_leave_validation_binary(
        synthetic_data, tmp_path, synthetic_config):
    from brainseg.selection import Selection
    from brainseg.train import build_components, load_data, set_up_run

    config = synthetic_config(synthetic_data, tmp_path, soft_masks=True, epochs=1, selection="last")
    run = set_up_run(config, progress=False, resume=False)
    data = load_data(config, run, Selection(config.selection))
    fractions = np.concatenate([v.training_target for v in data.train_volumes])
    assert fractions.dtype == np.float16 and fractions.shape[-1] == 32
    assert ((fractions > 0) & (fractions < 1)).any() and fractions.min() >= 0 and fractions.max() <= 1
    assert all(v.mask.dtype == np.uint8 for v in data.train_volumes + data.val_volumes)
    assert all(v.target is None for v in data.val_volumes)
    # what the model fits, augmented: fractions (the augmentations' own tests check they are resampled bilinearly)
    _, target = build_components(config, run, data).train_set[int(np.argmax(fractions.sum(axis=(1, 2))))]
    assert ((target > 0.01) & (target < 0.99)).float().mean() > 0.005
    assert len(fit(config, progress=False)["per_case"]) == len(data.val_ids)


@pytest.mark.parametrize("augment", ["sample", "batch"])
def test_without_augmentation_the_batches_hold_exactly_the_lesion_fractions(synthetic_data, tmp_path,
                                                                          synthetic_config, augment):
    from brainseg.selection import Selection
    from brainseg.train import build_components, load_data, set_up_run

    config = synthetic_config(synthetic_data, tmp_path, soft_masks=True, aug_scale=0, aug_angle=0, flip_prob=0,
                              augment=augment, data_on_device=augment == "batch")
    run = set_up_run(config, progress=False, resume=False)
    data = load_data(config, run, Selection(config.selection))
    parts = build_components(config, run, data)
    fractions = torch.from_numpy(np.concatenate([v.training_target for v in data.train_volumes]).astype(np.float32))
    _, masks = next(iter(parts.loader))
    if parts.batch_transform is not None:
        _, masks = parts.batch_transform(torch.zeros(len(masks), 3, 32, 32), masks)
    assert ((masks > 0) & (masks < 1)).any()
    for mask in masks:  # each batch mask is one training slice's fractions, untouched
        assert min((mask[0] - f).abs().max().item() for f in fractions) == 0


def test_soft_masks_need_an_image_size_that_divides_256():
    with pytest.raises(ValueError, match="soft_masks needs an image_size that divides 256.*got 160"):
        TrainConfig.from_preset("cpu", soft_masks=True, image_size=160)


@pytest.mark.slow
def test_memory_mapped_data_trains_to_the_same_weights(synthetic_data, tmp_path, synthetic_config):
    losses = {}
    for mmap in (False, True):
        config = synthetic_config(synthetic_data, tmp_path / str(mmap), mmap_data=mmap, workers=1)
        fit(config, progress=False)
        losses[mmap] = [row["train_loss"] for row in
                        load_checkpoint(tmp_path / str(mmap) / "weights" / "synthetic" / "last.pt")["history"]]
    assert losses[True] == losses[False]
    weights = [load_checkpoint(tmp_path / str(m) / "weights" / "synthetic" / "last.pt")["state_dict"]
               for m in (False, True)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_mmap_data_maps_the_images_of_every_case_the_run_loads(synthetic_data, tmp_path, synthetic_config):
    from brainseg.selection import Selection
    from brainseg.train import load_data, set_up_run

    for mmap in (False, True):
        config = synthetic_config(synthetic_data, tmp_path, mmap_data=mmap, selection="inner", inner_val_cases=2)
        data = load_data(config, set_up_run(config, progress=False, resume=False), Selection(config.selection))
        volumes = data.train_volumes + data.val_volumes + data.outer_volumes
        assert len(data.val_ids) == 2 and all(isinstance(v.image, np.memmap) == mmap for v in volumes)


def test_progressive_resizing_shrinks_the_batches_of_the_first_share_then_trains_at_full_size(
        synthetic_data, tmp_path, synthetic_config):
    from brainseg.selection import Selection
    from brainseg.train import build_components, describe_size, load_data, set_up_run

    config = synthetic_config(synthetic_data, tmp_path, image_size=64, coarse_size=32, coarse_fraction=0.5)
    run = set_up_run(config, progress=False, resume=False)
    parts = build_components(config, run, load_data(config, run, Selection(config.selection)))
    image, mask = next(iter(parts.loader))
    assert [t.shape[-1] for t in parts.batch_transform(image, mask)] == [32, 32]  # step 0 of 2 epochs
    parts.scheduler.last_epoch = config.epochs * len(parts.loader) // 2  # half the steps taken
    assert [t.shape[-1] for t in parts.batch_transform(image, mask)] == [64, 64]
    result = fit(config, progress=False)  # trains through the switch and predicts whole 64 px slices
    assert result["config"]["coarse_size"] == 32 and result["image_size"] == 64
    assert describe_size(config) == "64 px (32 px for the first 50%, then from 100% of the peak learning rate)"
    late_in_cosine = replace(config, scheduler="cosine", coarse_fraction=0.85)
    assert describe_size(late_in_cosine) == "64 px (32 px for the first 85%, then from 5% of the peak learning rate)"
    assert result["per_case"] and all(0 <= dsc <= 1 for dsc in result["per_case"].values())
