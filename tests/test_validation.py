from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from brainseg import validation
from brainseg.data.volume import CaseVolume
from brainseg.losses import create_loss
from brainseg.runtime import Runtime


class FlairThreshold(nn.Module):
    """A stand-in network: logit +10 where the FLAIR channel is positive, -10 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 1:2] > 0, 10.0, -10.0)


def volume(case_id: str, truth: np.ndarray, flair: np.ndarray) -> CaseVolume:
    """A case on the 256 grid: FLAIR ``flair`` (D, 256, 256), masks ``truth`` (D, 256, 256)."""
    image = np.zeros((truth.shape[0], 3, 256, 256), np.float16)
    image[:, 1] = flair
    return CaseVolume(case_id, image, truth.astype(np.uint8), truth.astype(np.uint8), None)


def test_evaluate_scores_known_predictions():
    truth = np.zeros((2, 256, 256), np.uint8)
    truth[0, 100:140, 60:100] = 1  # off-centre, so a flip that is not undone would miss it
    half = truth.copy()
    half[0, 100:140, 80:100] = 0  # the prediction covers half of the lesion
    cases = [volume("perfect", truth, truth), volume("half", truth, half), volume("empty", truth, 0 * truth)]
    runtime = Runtime(torch.device("cpu"), amp=False, channels_last=False)
    for tta in (False, True):
        result = validation.evaluate(FlairThreshold(), cases, create_loss("dice"), runtime, progress=False,
                                     flip_tta=tta)
        assert result["per_case"]["perfect"] == pytest.approx(1.0)
        assert result["per_case"]["half"] == pytest.approx(2 * 800 / (1600 + 800))
        assert result["per_case"]["empty"] == 0.0
        assert result["mean"] == pytest.approx((1 + 2 / 3) / 3)
        assert result["probs"]["half"].shape == (2, 256, 256)


@pytest.mark.parametrize("inner_means, expected", [
    ({(False, False): 0.8, (False, True): 0.8, (True, False): 0.8, (True, True): 0.8}, (False, True)),  # ties: protocol
    ({(False, False): 0.8, (False, True): 0.7, (True, False): 0.8, (True, True): 0.7}, (False, False)),
    ({(False, False): 0.7, (False, True): 0.8, (True, False): 0.75, (True, True): 0.8}, (False, True)),
    ({(False, False): 0.7, (False, True): 0.8, (True, False): 0.75, (True, True): 0.85}, (True, True)),
])
def test_inner_selection_chooses_tta_and_lcc_on_inner_cases_only(monkeypatch, inner_means, expected):
    """The choice follows the inner means alone; the outer figures (made to disagree) never steer it."""
    def fake_evaluate(model, volumes, loss_fn, runtime, progress=True, flip_tta=False):
        outer = volumes[0].case_id == "outer"
        mean = {lcc: (1.0 - inner_means[(flip_tta, lcc)]) if outer else inner_means[(flip_tta, lcc)]
                for lcc in (False, True)}
        return {"per_case": {volumes[0].case_id: mean[True]}, "per_case_without_lcc": {volumes[0].case_id: mean[False]}}

    monkeypatch.setattr(validation, "evaluate", fake_evaluate)
    monkeypatch.setattr(validation, "load_model", lambda path, device: (torch.nn.Identity(), None))
    runtime = SimpleNamespace(device=torch.device("cpu"), channels_last=False)
    result = validation.select_and_evaluate_outer(
        Path("best.pt"), [SimpleNamespace(case_id="inner")], [SimpleNamespace(case_id="outer")], None, runtime, False)
    assert (result["flip_tta_applied"], result["largest_component_applied"]) == expected
    assert result["inner_mean_dsc"] == pytest.approx(inner_means[expected])
    assert result["outer_mean"] == pytest.approx(1.0 - inner_means[expected])
