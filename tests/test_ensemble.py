"""Ensembles: the probability mean, how --weights arguments resolve, the refusal to score training
cases, and the out-of-fold cross-validation of an ensemble."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from brainseg.checkpoint import load_model, save_checkpoint
from brainseg.cv import ensemble_cv
from brainseg.data.cache import load_volumes
from brainseg.ensemble import ProbabilityMean, check_unseen, ensemble_volumes, load_ensemble, resolve_checkpoints
from brainseg.evaluation import evaluate_checkpoint
from brainseg.metrics import to_metric_grid, volume_dsc
from brainseg.predict import predict_case
from brainseg.models import create_model
from brainseg.runtime import Runtime
from brainseg.validation import evaluate, evaluate_groups, predict_volume


class Constant(nn.Module):
    """A stand-in model: the same logit everywhere, (N, C, S, S) -> (N, 1, S, S)."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(x.shape[0], 1, *x.shape[2:])


def test_the_ensemble_returns_the_logit_of_the_mean_probability():
    x = torch.zeros(2, 3, 4, 4)
    logits = ProbabilityMean([Constant(0.0), Constant(2.0), Constant(-4.0)])(x)
    expected = (0.5 + torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(-4.0))) / 3
    assert logits.shape == (2, 1, 4, 4)
    torch.testing.assert_close(torch.sigmoid(logits), expected.expand(2, 1, 4, 4), atol=1e-6, rtol=0)
    # the mean probability decides, not the mean logit: logits 6, -2, -2 average 0.67 > 0, but their
    # probabilities 0.998, 0.119, 0.119 average 0.41 < 0.5
    assert ProbabilityMean([Constant(6.0), Constant(-2.0), Constant(-2.0)])(x).max() < 0


def test_one_member_gives_back_its_probabilities():
    x = torch.randn(1, 3, 8, 8)
    member = Constant(1.5)
    torch.testing.assert_close(torch.sigmoid(ProbabilityMean([member])(x)), torch.sigmoid(member(x)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="at least one model"):
        ProbabilityMean([])
    with pytest.raises(ValueError, match=r"same input channels, got \[3, 9\] \(trained with different context\)"):
        ProbabilityMean([create_model("unet", features=4), create_model("unet", features=4, in_channels=9)])


def test_weights_arguments_resolve_to_files_run_folders_and_the_folds_of_a_cv(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    for folder in ("single", "cv-fold0", "cv-fold1", "cv-fold10", "cv-fold2"):
        (weights / folder).mkdir(parents=True)
        (weights / folder / "best.pt").touch()
    (weights / "shipped.pt").touch()
    monkeypatch.chdir(tmp_path)
    found = resolve_checkpoints(["weights/shipped.pt", "single", "cv"], weights_dir=weights)
    assert found == [Path("weights/shipped.pt"), weights / "single" / "best.pt",
                     *(weights / f"cv-fold{k}" / "best.pt" for k in (0, 1, 2, 10))]  # folds in number order
    with pytest.raises(FileNotFoundError, match=r"nothing: no checkpoint file, no nothing/best.pt and no cross-"):
        resolve_checkpoints(["nothing"], weights_dir=weights)
    with pytest.raises(ValueError, match="best.pt is named twice"):
        resolve_checkpoints(["single", str(weights / "single" / "best.pt")], weights_dir=weights)


def _checkpoint(path: Path, config, seed: int, **extra) -> Path:
    """A random UNet of ``config`` with a 50x head, so that its probabilities are far from 0.5."""
    torch.manual_seed(seed)
    model = create_model("unet", **config.model_kwargs())
    with torch.no_grad():
        model.head.weight.mul_(50)
    save_checkpoint(path, model, config, epoch=config.epochs, metrics={}, **extra)
    return path


def _fake_cv(weights: Path, name: str, make_config, seed: int = 0, finished: bool = True) -> None:
    """Three final fold models ``weights/<name>-fold<k>/best.pt``, and each fold's metrics.json when ``finished``."""
    for k in range(3):
        config = make_config(run_name=f"{name}-fold{k}", fold=k, selection="last")
        _checkpoint(weights / f"{name}-fold{k}" / "best.pt", config, seed=seed + k)
        if finished:
            log_dir = config.run_dirs(config.run_name)[0]
            log_dir.mkdir(parents=True)
            (log_dir / "metrics.json").write_text(json.dumps({"epochs": config.epochs}))


def test_members_of_other_image_sizes_form_groups_and_other_context_is_refused(tmp_path, synthetic_data,
                                                                                synthetic_config):
    config = synthetic_config(synthetic_data, tmp_path)
    small = _checkpoint(tmp_path / "a.pt", config, seed=0)
    large = _checkpoint(tmp_path / "b.pt", replace(config, image_size=64), seed=1)
    other_small = _checkpoint(tmp_path / "c.pt", config, seed=2)
    mixed = load_ensemble([small, large, other_small])
    assert [(g.image_size, g.share) for g in mixed.groups] == [(32, pytest.approx(2 / 3)), (64, pytest.approx(1 / 3))]
    assert isinstance(mixed.groups[0].model, ProbabilityMean) and not isinstance(mixed.groups[1].model, ProbabilityMean)
    with pytest.raises(ValueError, match=r"trained at several image sizes \(32 px, 64 px\); predict with each of its"):
        mixed.image_size
    wide = _checkpoint(tmp_path / "w.pt", replace(config, context=1), seed=1)
    with pytest.raises(ValueError, match=r"share one context \(input channels\): .*a.pt 3 input .*w.pt 9 input"):
        load_ensemble([small, wide])
    ensemble = load_ensemble([small, other_small])
    assert isinstance(ensemble.model, ProbabilityMean) and ensemble.image_size == 32
    assert re.fullmatch(r"ensemble2-mixed-[0-9a-f]{6}", ensemble.name)
    assert load_ensemble([small, tmp_path / "c.pt"]).name == ensemble.name
    assert load_ensemble([tmp_path / "c.pt", small]).name != ensemble.name  # other paths, other folder


def _constant_checkpoint(path: Path, config, logit: float, image_size: int) -> Path:
    """A UNet of ``config`` that outputs ``logit`` everywhere (its head's weights zeroed)."""
    model = create_model("unet", **config.model_kwargs())
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(logit)
    save_checkpoint(path, model, replace(config, image_size=image_size), epoch=config.epochs, metrics={})
    return path


def test_groups_of_image_sizes_weigh_by_their_members(tmp_path, synthetic_data, synthetic_config):
    """Probabilities 0.119 (logit -2, 32 px) and 0.9999 (logit 10, 64 px): one member each averages
    0.56 (all foreground); two 32 px members and one 64 px average 0.41 (nothing), where a mean of
    the two groups would still give 0.56."""
    config = synthetic_config(synthetic_data, tmp_path)
    low = [_constant_checkpoint(tmp_path / f"low{i}.pt", config, -2.0, 32) for i in range(2)]
    high = _constant_checkpoint(tmp_path / "high.pt", config, 10.0, 64)
    cases = sorted(p.name for p in synthetic_data.iterdir())[:2]
    runtime = Runtime(torch.device("cpu"), False, False)
    for members, expected in (([low[0], high], 0.5 * (torch.sigmoid(torch.tensor(-2.0)).item() + 1)),
                              ([low[0], high, low[1]], (2 * torch.sigmoid(torch.tensor(-2.0)).item() + 1) / 3)):
        ensemble = load_ensemble(members)
        volumes = ensemble_volumes(ensemble, cases, str(synthetic_data), str(tmp_path / "cache"), progress=False)
        assert {size: [v.image.shape[-1] for v in found] for size, found in volumes.items()} == {32: [32, 32],
                                                                                               64: [64, 64]}
        result = evaluate_groups(ensemble.groups, volumes, torch.nn.BCEWithLogitsLoss(), runtime, progress=False)
        for case in cases:
            assert result["probs"][case].shape[1:] == (256, 256)
            assert result["probs"][case] == pytest.approx(expected, abs=1e-4)
        alone = [evaluate(group.model, volumes[group.image_size], torch.nn.BCEWithLogitsLoss(), runtime,
                          progress=False) for group in ensemble.groups]
        assert result["loss"] == pytest.approx(sum(g.share * r["loss"] for g, r in zip(ensemble.groups, alone)))
    single = load_ensemble([high])
    volumes = ensemble_volumes(single, cases, str(synthetic_data), str(tmp_path / "cache"), progress=False)
    grouped = evaluate_groups(single.groups, volumes, torch.nn.BCEWithLogitsLoss(), runtime, progress=False)
    plain = evaluate(single.model, volumes[64], torch.nn.BCEWithLogitsLoss(), runtime, progress=False)
    assert grouped["per_case"] == plain["per_case"] and grouped["loss"] == plain["loss"]


@pytest.mark.parametrize("amp, record, expected", [
    ("auto", None, False),  # an older checkpoint: fp32 on a CPU, whatever the string says
    ("auto", {"setting": "auto", "picked": "bf16", "why": "CUDA"}, False),  # picked for a GPU, not this CPU
    ("auto", {"setting": "auto", "picked": "bf16", "fp32_images_per_s": 5.0, "bf16_images_per_s": 9.0}, True),
    (True, None, True), (False, None, False)])
def test_a_checkpoint_predicts_on_the_cpu_in_the_precision_training_picked(tmp_path, synthetic_data,
                                                                           synthetic_config, amp, record, expected):
    config = replace(synthetic_config(synthetic_data, tmp_path), amp=amp)
    path = _checkpoint(tmp_path / "a.pt", config, seed=0, **({"precision": record} if record else {}))
    assert load_ensemble([path], "cpu").runtime.amp is expected


def test_a_shipped_copy_predicts_on_the_cpu_in_fp32_whatever_training_picked(tmp_path, synthetic_data,
                                                                                synthetic_config):
    from brainseg.checkpoint import compact_checkpoint, load_checkpoint

    config = replace(synthetic_config(synthetic_data, tmp_path), amp="auto")
    timed = {"setting": "auto", "picked": "bf16", "fp32_images_per_s": 5.0, "bf16_images_per_s": 9.0}
    path = _checkpoint(tmp_path / "a.pt", config, seed=0, precision=timed)
    shipped = compact_checkpoint(path, tmp_path / "shipped.pt")
    assert load_ensemble([path], "cpu").runtime.amp  # on the machine that timed bf16
    assert not load_ensemble([shipped], "cpu").runtime.amp  # on whichever CPU loads the copy
    assert load_checkpoint(shipped)["precision"] == {**timed, "shipped": True}  # what training picked stays


def test_scoring_cases_a_checkpoint_trained_on_is_refused(tmp_path, synthetic_data, synthetic_config):
    config = synthetic_config(synthetic_data, tmp_path, run_name="fold-model", fold=0)
    weights = _checkpoint(tmp_path / "fold0.pt", config, seed=0)
    # 12 synthetic cases: the reference split validates 10, and fold 0 of 3 trained on 8 cases
    with pytest.raises(ValueError, match=r"fold0.pt trained on \d of the 10 cases to score .* would not be honest"):
        evaluate_checkpoint(str(weights), split="reference", data_dir=str(synthetic_data),
                            cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)


def test_the_recorded_training_cases_decide_and_every_member_is_checked(tmp_path, synthetic_data, synthetic_config):
    config = synthetic_config(synthetic_data, tmp_path, fold=0)
    cases = sorted(p.name for p in synthetic_data.iterdir())
    clean = _checkpoint(tmp_path / "clean.pt", config, seed=0, trained_on=[])
    # Recomputed from a folder without one of its cases, the fold's split would differ from the one trained on:
    # the recorded ids, not the folder, say which cases it saw.
    leaky = _checkpoint(tmp_path / "leaky.pt", config, seed=1, trained_on=cases[:3])
    ensemble = load_ensemble([clean, leaky])
    check_unseen(ensemble, cases[3:])
    with pytest.raises(ValueError, match=rf"leaky.pt trained on 1 of the 2 cases to score \({cases[2]}\)"):
        check_unseen(ensemble, cases[2:4])


@pytest.fixture
def two_cvs(tmp_path, synthetic_data, synthetic_config) -> Path:
    """weights/a-fold<k> and weights/b-fold<k>: two finished 3-fold CVs of random UNets (other seeds)."""
    weights = tmp_path / "weights"
    for name, seed in (("a", 0), ("b", 10)):
        _fake_cv(weights, name, lambda **o: synthetic_config(synthetic_data, tmp_path, **o), seed=seed)
    return weights


def test_each_case_is_scored_by_the_mean_of_its_folds_models(tmp_path, synthetic_data, two_cvs):
    common = dict(weights_dir=two_cvs, results_dir=tmp_path / "results", data_dir=str(synthetic_data),
                  cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    both = ensemble_cv(["a", "b"], **common)
    assert len(both["per_case"]) == 12 and set(both["fold_of_case"].values()) == {0, 1, 2}
    assert both["split"] == "cv3" and both["members"] == ["a", "b"] and both["member_epochs"] == [2] * 6
    for k in range(3):  # the same figures from the fold's two models averaged by hand
        members = [load_model(two_cvs / f"{cv}-fold{k}" / "best.pt")[0] for cv in ("a", "b")]
        cases = [c for c, fold in both["fold_of_case"].items() if fold == k]
        volumes = load_volumes(cases, 32, str(synthetic_data), str(tmp_path / "cache"), progress=False)
        by_hand = evaluate(ProbabilityMean(members), volumes, torch.nn.BCEWithLogitsLoss(),
                           Runtime(torch.device("cpu"), False, False), progress=False)
        assert by_hand["per_case"] == pytest.approx({c: both["per_case"][c] for c in cases}, abs=1e-6)
    saved = json.loads((tmp_path / "results" / "ensemble-a+b.json").read_text())
    assert saved["per_case"] == both["per_case"]
    screened = ensemble_cv(["a", "b"], name="screen", folds=[1], **common)
    assert screened["split"] == "cv3-folds1" and set(screened["fold_of_case"].values()) == {1}
    repeated = ensemble_cv(["a", "b"], folds=[1, 1, 2], **common)  # a repeated fold counts once
    assert repeated["run"] == "ensemble-a+b-folds1,2" and repeated["split"] == "cv3-folds1,2"
    assert repeated["member_epochs"] == [2] * 4
    assert json.loads((tmp_path / "results" / "ensemble-a+b.json").read_text()) == saved  # the screen beside it


def test_one_cv_scored_with_flip_tta(tmp_path, synthetic_data, two_cvs, monkeypatch):
    import brainseg.cv

    common = dict(weights_dir=two_cvs, results_dir=tmp_path / "results", data_dir=str(synthetic_data),
                  cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    calls = []
    real_evaluate = brainseg.cv.evaluate_groups
    monkeypatch.setattr(brainseg.cv, "evaluate_groups",
                        lambda *a, **kw: calls.append(kw["flip_tta"]) or real_evaluate(*a, **kw))
    plain, flipped = ensemble_cv(["a"], folds=[0], **common), ensemble_cv(["a"], folds=[0], flip_tta=True, **common)
    assert calls == [False, True]
    assert flipped["run"] == "ensemble-a-tta-folds0" and flipped["flip_tta"] and not plain["flip_tta"]
    assert "flip TTA" in flipped["selection"] and (tmp_path / "results" / "ensemble-a-tta-folds0.json").exists()


def test_cvs_of_two_image_sizes_meet_on_the_metric_grid(tmp_path, synthetic_data, synthetic_config, two_cvs):
    _fake_cv(two_cvs, "big", lambda **o: synthetic_config(synthetic_data, tmp_path, image_size=64, **o), seed=20)
    common = dict(weights_dir=two_cvs, results_dir=tmp_path / "results", data_dir=str(synthetic_data),
                  cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    mixed = ensemble_cv(["a", "big"], folds=[0], **common)
    assert mixed["image_size"] == "32+64" and ensemble_cv(["a", "b"], folds=[0], **common)["image_size"] == 32
    cases = sorted(mixed["per_case"])
    probs = []  # each fold-0 model on the cases preprocessed at its own size, on the metric grid
    for cv, size in (("a", 32), ("big", 64)):
        volumes = load_volumes(cases, size, str(synthetic_data), str(tmp_path / "cache"), progress=False)
        alone = evaluate(load_model(two_cvs / f"{cv}-fold0" / "best.pt")[0], volumes, torch.nn.BCEWithLogitsLoss(),
                         Runtime(torch.device("cpu"), False, False), progress=False)
        probs.append(alone["probs"])
    by_hand = {v.case_id: volume_dsc((probs[0][v.case_id] + probs[1][v.case_id]) / 2, v.metric_mask,
                                     largest_component=False) for v in volumes}
    assert mixed["per_case_without_lcc"] == pytest.approx(by_hand, abs=1e-6) and max(by_hand.values()) > 0


def test_a_mixed_ensemble_with_flip_tta_scores_the_mean_of_its_members(tmp_path, synthetic_data, synthetic_config):
    config = synthetic_config(synthetic_data, tmp_path)
    small = _checkpoint(tmp_path / "a.pt", config, seed=0, trained_on=[])
    large = _checkpoint(tmp_path / "b.pt", replace(config, image_size=64), seed=20, trained_on=[])
    cases = sorted(p.name for p in synthetic_data.iterdir())
    probs, runtime = [], Runtime(torch.device("cpu"), False, False)
    for path, size in ((small, 32), (large, 64)):  # each member with flip TTA on the cases at its own size
        model = load_model(path)[0]
        volumes = load_volumes(cases, size, str(synthetic_data), str(tmp_path / "cache"), progress=False)
        probs.append({v.case_id: to_metric_grid(sum(torch.sigmoid(predict_volume(model, v.image, runtime, flip=flip))
                                                    for flip in (False, True)) / 2).numpy() for v in volumes})
    by_hand = {v.case_id: volume_dsc((probs[0][v.case_id] + probs[1][v.case_id]) / 2, v.metric_mask,
                                     largest_component=False) for v in volumes}
    scored = evaluate_checkpoint([str(small), str(large)], split="all", data_dir=str(synthetic_data),
                                 cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "out"), device="cpu",
                                 flip_tta=True, progress=False)
    assert {c: row["dsc_no_lcc"] for c, row in scored["rows"].items()} == pytest.approx(by_hand, abs=1e-6)
    assert max(by_hand.values()) > 0 and (tmp_path / "out" / f"{cases[0]}.gif").exists()


def test_predict_averages_groups_of_image_sizes_in_the_original_geometry(tmp_path, synthetic_data, synthetic_config,
                                                                        write_case, monkeypatch):
    import brainseg.predict

    config = synthetic_config(synthetic_data, tmp_path)
    low = [_constant_checkpoint(tmp_path / f"low{i}.pt", config, -2.0, 32) for i in range(2)]
    high = _constant_checkpoint(tmp_path / "high.pt", config, 10.0, 64)
    folder = write_case(tmp_path / "new", "TCGA_XX_0001_20000101", slices=6, size=48)
    predict = lambda weights, out: predict_case([str(w) for w in weights], str(folder),  # noqa: E731
                                                str(tmp_path / out), device="cpu", overlays=False)
    alone = predict([high], "high")
    assert alone.any() and np.array_equal(predict([low[0], high], "pair"), alone)  # mean 0.56 where high has 1.0
    assert not predict([low[0], high, low[1]], "three").any()  # mean 0.41: two of three members say no

    sizes = []  # each group reads the case preprocessed at its own size
    real_preprocess = brainseg.predict.preprocess_case
    monkeypatch.setattr(brainseg.predict, "preprocess_case", lambda *a: sizes.append(a[2]) or real_preprocess(*a))
    predict([low[0], high, low[1]], "sizes")
    assert sizes == [32, 64]


def test_only_finished_final_fold_models_on_the_same_folds_are_ensembled(tmp_path, synthetic_data, synthetic_config,
                                                                         two_cvs):
    make = lambda **o: synthetic_config(synthetic_data, tmp_path, **o)  # noqa: E731
    common = dict(weights_dir=two_cvs, results_dir=tmp_path / "results", data_dir=str(synthetic_data),
                  cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    _fake_cv(two_cvs, "c", lambda **o: make(split_seed=7, **o))
    with pytest.raises(ValueError, match="validate different cases"):
        ensemble_cv(["a", "c"], **common)
    _fake_cv(two_cvs, "running", make, finished=False)
    with pytest.raises(ValueError, match=r"running-fold0/best.pt: run running-fold0 has not finished"):
        ensemble_cv(["a", "running"], **common)
    config = make(run_name="chosen-fold0", fold=0, selection="reference")
    _checkpoint(two_cvs / "chosen-fold0" / "best.pt", config, seed=0)
    with pytest.raises(ValueError, match=r"chosen-fold0/best.pt: selection 'reference', so it was chosen on the cases"):
        ensemble_cv(["a", "chosen"], **common)
    with pytest.raises(ValueError, match=r"has no checkpoint for folds \[5\]"):
        ensemble_cv(["a", "b"], folds=[5], **common)
    _checkpoint(two_cvs / "other-fold3" / "best.pt", make(run_name="other-fold3", selection="last"), seed=0)
    with pytest.raises(ValueError, match=r"a, other have no fold in common: a folds \[0, 1, 2\]; other folds \[3\]"):
        ensemble_cv(["a", "other"], **common)
