"""Ensembles: the averaged probabilities of several checkpoints, usable wherever one model is.

:class:`ProbabilityMean` returns the logits of its members' mean probability, so evaluation,
prediction and flip TTA take an ensemble exactly as they take one model. :func:`resolve_checkpoints`
turns ``--weights`` arguments (checkpoint files, run folders, a cross-validation's name) into
checkpoint paths; :func:`load_ensemble` loads them; :func:`check_unseen` refuses to score a case
that any member trained on (docs/protocol.md, section 5: nothing is scored on its own training data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import paths
from .checkpoint import load_checkpoint, load_model
from .config import TrainConfig
from .data.splits import split_cases

PROBABILITY_EPS = 1e-6  # logits of the mean probability stay within +-13.8


class ProbabilityMean(nn.Module):
    """Several segmentation models as one: the logit of the mean of their sigmoid probabilities.

    A pixel is foreground (probability > 0.5) exactly when the members' mean probability is.

    Args:
        models: members taking the same (N, C, S, S) input and returning (N, 1, S, S) logits.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        channels = {getattr(model, "in_channels", 3) for model in models}
        if len(channels) > 1:
            raise ValueError(f"ensemble members must read the same input channels, got {sorted(channels)} "
                             "(trained with different context)")
        self.members = nn.ModuleList(models)
        self.in_channels = channels.pop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) input -> (N, 1, S, S) float32 logits of the mean probability."""
        probs = torch.stack([torch.sigmoid(member(x).float()) for member in self.members]).mean(0)
        return torch.logit(probs, eps=PROBABILITY_EPS)


@dataclass
class Ensemble:
    """Loaded checkpoints: ``model`` (one model, or a :class:`ProbabilityMean` of several), the
    first member's ``config`` (precision, memory format, loss), every member's ``configs`` and
    ``checkpoints``, and the shared ``image_size``."""

    model: nn.Module
    config: TrainConfig
    configs: list[TrainConfig]
    checkpoints: list[Path]
    image_size: int

    @property
    def name(self) -> str:
        """The run name of a single checkpoint; ``ensemble<n>-<common prefix of the run names>`` otherwise."""
        runs = [_run_name(path) for path in self.checkpoints]
        if len(runs) == 1:
            return runs[0]
        prefix = re.sub(r"[-_]*(fold\d*)?$", "", _common_prefix(runs))
        return f"ensemble{len(runs)}-{prefix or 'mixed'}"


def _run_name(checkpoint: Path) -> str:
    return checkpoint.resolve().parent.name if checkpoint.name in ("best.pt", "last.pt") else checkpoint.stem


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    length = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:length]


def _fold_number(checkpoint: Path) -> int:
    return int(re.search(r"fold(\d+)$", checkpoint.parent.name).group(1))


def resolve_checkpoints(specs: Sequence[str], weights_dir: str | Path | None = None) -> list[Path]:
    """Checkpoint paths of ``--weights`` arguments, in order.

    Each argument is a checkpoint file; a run folder holding ``best.pt``; or a cross-validation,
    ``<spec>-fold<k>/best.pt`` for every fold found. A relative argument is looked up in the
    working directory, then in ``weights_dir`` (default: the repository's ``weights/``).

    Raises:
        FileNotFoundError: an argument names none of these (the places looked at are named).
        ValueError: no arguments, or one checkpoint named twice.
    """
    if not specs:
        raise ValueError("no checkpoints given")
    weights_dir = Path(weights_dir) if weights_dir else paths.weights_dir()
    found: list[Path] = []
    for spec in specs:
        bases = [Path(spec)] + ([weights_dir / spec] if not Path(spec).is_absolute() else [])
        matches = next((hits for hits in map(_checkpoints_at, bases) if hits), None)
        if matches is None:
            raise FileNotFoundError(
                f"{spec}: no checkpoint file, no {spec}/best.pt and no cross-validation folds "
                f"{spec}-fold<k>/best.pt (looked in the working directory and in {weights_dir}); "
                "train one with 'python -m brainseg train' or 'cv'")
        found += matches
    resolved = [p.resolve() for p in found]
    duplicate = next((p for p in found if resolved.count(p.resolve()) > 1), None)
    if duplicate is not None:
        raise ValueError(f"{duplicate} is named twice; an ensemble member counts once")
    return found


def _checkpoints_at(base: Path) -> list[Path]:
    if base.is_file():
        return [base]
    if (base / "best.pt").is_file():
        return [base / "best.pt"]
    folds = [p for p in base.parent.glob(f"{base.name}-fold*/best.pt") if re.search(r"fold\d+$", p.parent.name)]
    return sorted(folds, key=_fold_number)


def load_ensemble(checkpoints: Sequence[str | Path], device: str | torch.device = "cpu") -> Ensemble:
    """Load checkpoints as one model (in eval mode on ``device``).

    Raises:
        ValueError: the members were trained at different image sizes (each predicts on the
            slices of its own size, so one set of preprocessed volumes cannot serve them all).
    """
    checkpoints = [Path(c) for c in checkpoints]
    sizes = [load_checkpoint(path)["image_size"] for path in checkpoints]
    if len(set(sizes)) > 1:
        raise ValueError("ensemble members must share one image size: " +
                         ", ".join(f"{path} {size} px" for path, size in zip(checkpoints, sizes)))
    models, configs = zip(*(load_model(path, device) for path in checkpoints))
    model = models[0] if len(models) == 1 else ProbabilityMean(models).to(device).eval()
    return Ensemble(model, configs[0], list(configs), checkpoints, sizes[0])


def run_split(config: TrainConfig, data_dir: str | None = None) -> tuple[list[str], list[str]]:
    """(train, validation) cases of a run; its training cases include any inner validation cases
    (they chose its checkpoint).

    ``data_dir`` replaces the run's own dataset folder (which may be another machine's); a relative
    folds file is looked up in the working directory, then in the repository.

    Raises:
        FileNotFoundError: the run's folds file is in neither place.
    """
    folds_file = config.folds_file
    if folds_file and not Path(folds_file).is_file():
        in_repo = paths.project_root() / folds_file
        if not in_repo.is_file():
            raise FileNotFoundError(f"{folds_file}: the folds file of run {config.run_name} is missing, so the cases "
                                    "it trained on are unknown")
        folds_file = str(in_repo)
    where = TrainConfig.from_dict({**config.to_dict(), "data_dir": data_dir or config.data_dir,
                                   "folds_file": folds_file})
    return split_cases(where)


def check_unseen(ensemble: Ensemble, case_ids: Sequence[str], data_dir: str | None = None) -> None:
    """Refuse to score cases that a member trained on.

    Raises:
        ValueError: naming the member, how many of the cases it trained on and a few of them.
    """
    for path, config in zip(ensemble.checkpoints, ensemble.configs):
        seen = sorted(set(run_split(config, data_dir)[0]) & set(case_ids))
        if seen:
            raise ValueError(f"{path} trained on {len(seen)} of the {len(case_ids)} cases to score "
                             f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); a score on them would "
                             "not be honest. Score a model on its own validation cases (--split of its run); an "
                             "ensemble only on cases none of its members trained on")
