"""Ensembles: the probability mean, how --weights arguments resolve, the refusal to score training
cases, and the out-of-fold cross-validation of an ensemble."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from brainseg.checkpoint import save_checkpoint
from brainseg.cv import ensemble_cv
from brainseg.ensemble import ProbabilityMean, load_ensemble, resolve_checkpoints
from brainseg.evaluation import evaluate_checkpoint
from brainseg.models import create_model


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


def _checkpoint(path: Path, config, seed: int, image_size: int = 32) -> Path:
    """A random UNet of ``config`` with a 50x head, so that its probabilities are far from 0.5."""
    torch.manual_seed(seed)
    model = create_model("unet", features=config.features)
    with torch.no_grad():
        model.head.weight.mul_(50)
    save_checkpoint(path, model, config, epoch=config.epochs, metrics={}, geometry_size=image_size)
    return path


def _fake_cv(weights: Path, name: str, make_config, seed: int = 0) -> None:
    for k in range(3):
        config = make_config(run_name=f"{name}-fold{k}", fold=k)
        _checkpoint(weights / f"{name}-fold{k}" / "best.pt", config, seed=seed + k)


def test_members_of_other_image_sizes_are_refused(tmp_path, synthetic_data, synthetic_config):
    config = synthetic_config(synthetic_data, tmp_path)
    small = _checkpoint(tmp_path / "a.pt", config, seed=0, image_size=32)
    large = _checkpoint(tmp_path / "b.pt", replace(config, image_size=64), seed=1, image_size=64)
    with pytest.raises(ValueError, match=r"share one image size: .*a.pt 32 px, .*b.pt 64 px"):
        load_ensemble([small, large])
    ensemble = load_ensemble([tmp_path / "a.pt", _checkpoint(tmp_path / "c.pt", config, seed=2)])
    assert isinstance(ensemble.model, ProbabilityMean) and ensemble.image_size == 32 and ensemble.name == "ensemble2-mixed"


def test_scoring_cases_a_checkpoint_trained_on_is_refused(tmp_path, synthetic_data, synthetic_config):
    config = synthetic_config(synthetic_data, tmp_path, run_name="fold-model", fold=0)
    weights = _checkpoint(tmp_path / "fold0.pt", config, seed=0)
    # 12 synthetic cases: the reference split validates 10, and fold 0 of 3 trained on 8 cases
    with pytest.raises(ValueError, match=r"fold0.pt trained on \d of the 10 cases to score .* would not be honest"):
        evaluate_checkpoint(str(weights), split="reference", data_dir=str(synthetic_data),
                            cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)


@pytest.fixture
def two_cvs(tmp_path, synthetic_data, synthetic_config) -> Path:
    """weights/a-fold<k> (3 folds of random UNets) and weights/b-fold<k>, a copy of a's checkpoints."""
    weights = tmp_path / "weights"
    _fake_cv(weights, "a", lambda **o: synthetic_config(synthetic_data, tmp_path, **o))
    for k in range(3):
        shutil.copytree(weights / f"a-fold{k}", weights / f"b-fold{k}")
    return weights


def test_an_ensemble_of_a_cv_with_itself_scores_each_case_as_the_cv_does(tmp_path, synthetic_data, two_cvs):
    common = dict(weights_dir=two_cvs, results_dir=tmp_path / "results", data_dir=str(synthetic_data),
                  cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    alone = ensemble_cv(["a"], name="a-alone", **common)
    both = ensemble_cv(["a", "b"], **common)
    assert len(both["per_case"]) == 12 and set(both["fold_of_case"].values()) == {0, 1, 2}
    assert both["per_case"] == pytest.approx(alone["per_case"], abs=1e-6)
    assert both["split"] == "cv3" and both["members"] == ["a", "b"]
    saved = json.loads((tmp_path / "results" / "ensemble-a+b.json").read_text())
    assert saved["per_case"] == both["per_case"]
    screened = ensemble_cv(["a", "b"], name="screen", folds=[1], **common)
    assert screened["split"] == "cv3-folds1" and set(screened["fold_of_case"].values()) == {1}


def test_cvs_on_other_folds_cannot_be_ensembled(tmp_path, synthetic_data, synthetic_config, two_cvs):
    _fake_cv(two_cvs, "c", lambda **o: synthetic_config(synthetic_data, tmp_path, split_seed=7, **o))
    with pytest.raises(ValueError, match="validate different cases"):
        ensemble_cv(["a", "c"], weights_dir=two_cvs, results_dir=tmp_path / "results", data_dir=str(synthetic_data),
                    cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"has no checkpoint for folds \[5\]"):
        ensemble_cv(["a", "b"], folds=[5], weights_dir=two_cvs, data_dir=str(synthetic_data), device="cpu")
