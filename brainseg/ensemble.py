"""Ensembles: the averaged probabilities of several checkpoints, usable wherever one model is.

:class:`ProbabilityMean` returns the logits of its members' mean probability, so evaluation,
prediction and flip TTA take an ensemble exactly as they take one model; members trained at
several image sizes form one :class:`SizeGroup` per size, each predicting slices of its own size.
:func:`resolve_checkpoints` turns ``--weights`` arguments (checkpoint files, run folders, a
cross-validation's name) into checkpoint paths; :func:`load_ensemble` loads them;
:func:`check_unseen` refuses to score a case that any member trained on (docs/protocol.md,
section 5: nothing is scored on its own training data).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import paths
from .checkpoint import build_model, load_checkpoint
from .config import TrainConfig
from .data.cache import load_volumes
from .data.kaggle import run_data_dir
from .data.splits import split_cases
from .data.volume import CaseVolume
from .runtime import Runtime, inference_amp

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
class SizeGroup:
    """The members of an ensemble trained at one image size: ``model`` (one model, or a
    :class:`ProbabilityMean` of several, in eval mode) predicts (N, C, S, S) slices preprocessed at
    S = ``image_size``; ``share`` is its fraction of the ensemble's members, the weight of its
    probabilities in the ensemble's mean."""

    model: nn.Module
    image_size: int
    share: float


@dataclass
class Ensemble:
    """Loaded checkpoints, ready to predict: ``groups`` (one :class:`SizeGroup` per image size
    among the members, in the order of their first member; channels_last when the first member
    trained so), the ``runtime`` to predict with (device, precision, memory format), the first
    member's ``config`` (loss), every member's ``configs``, ``checkpoints`` and recorded
    ``trained_on`` case ids (``None`` in checkpoints older than that record).

    Members of several image sizes each predict the slices of their own size; their probabilities
    meet on a common grid (the metric grid, or the case's original slices), weighted by ``share``,
    so the ensemble's probability is the mean of its members' (:func:`brainseg.validation.evaluate_groups`).
    """

    groups: list[SizeGroup]
    runtime: Runtime
    config: TrainConfig
    configs: list[TrainConfig]
    checkpoints: list[Path]
    trained_on: list[list[str] | None]

    @property
    def model(self) -> nn.Module:
        """The one model of an ensemble of one image size (see :attr:`image_size`)."""
        return self._single().model

    @property
    def image_size(self) -> int:
        """The members' image size.

        Raises:
            ValueError: the members were trained at several sizes (use ``groups``).
        """
        return self._single().image_size

    def _single(self) -> SizeGroup:
        if len(self.groups) > 1:
            raise ValueError("the ensemble's members were trained at several image sizes (" +
                             ", ".join(f"{g.image_size} px" for g in self.groups) +
                             "); predict with each of its groups (brainseg.validation.evaluate_groups)")
        return self.groups[0]

    @property
    def name(self) -> str:
        """The run name of a single checkpoint; otherwise ``ensemble<n>-<common prefix of the run
        names>-<hash of the checkpoint paths>``, so that two ensembles never share an output folder."""
        runs = [_run_name(path) for path in self.checkpoints]
        if len(runs) == 1:
            return runs[0]
        prefix = re.sub(r"[-_]*(fold\d*)?$", "", _common_prefix(runs))
        digest = hashlib.sha1("\n".join(str(p.resolve()) for p in self.checkpoints).encode()).hexdigest()[:6]
        return f"ensemble{len(runs)}-{prefix or 'mixed'}-{digest}"


def _run_name(checkpoint: Path) -> str:
    return checkpoint.resolve().parent.name if checkpoint.name in ("best.pt", "last.pt") else checkpoint.stem


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    length = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:length]


def fold_number(checkpoint: Path) -> int | None:
    """``k`` of a fold checkpoint ``<cv>-fold<k>/best.pt``; ``None`` for any other checkpoint."""
    found = re.search(r"-fold(\d+)$", checkpoint.parent.name)
    return int(found.group(1)) if found else None


def cv_name(run_name: str) -> str:
    """The cross-validation a fold run belongs to: ``<cv>`` of ``<cv>-fold<k>``; other names unchanged."""
    return re.sub(r"-fold\d+$", "", run_name)


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
    folds = [p for p in base.parent.glob(f"{base.name}-fold*/best.pt")
             if re.fullmatch(re.escape(base.name) + r"-fold\d+", p.parent.name)]
    return sorted(folds, key=fold_number)


def load_ensemble(checkpoints: Sequence[str | Path], device: str | torch.device = "cpu") -> Ensemble:
    """Load checkpoints as one ensemble (in eval mode on ``device``), members grouped by image size,
    with the runtime to predict with: the precision of :func:`brainseg.runtime.inference_amp`
    (``amp="auto"`` never means bf16 on a CPU that training did not time) and the first member's
    memory format.

    Raises:
        ValueError: the members were trained with different ``context`` (they read different
            inputs); the checkpoints are named.
    """
    device = torch.device(device)
    checkpoints = [Path(c) for c in checkpoints]
    loaded = [load_checkpoint(path) for path in checkpoints]
    channels = [f"{c['model_kwargs'].get('in_channels', 3)} input channels" for c in loaded]
    if len(set(channels)) > 1:
        raise ValueError("ensemble members must share one context (input channels): " +
                         ", ".join(f"{path} {value}" for path, value in zip(checkpoints, channels)))
    models, configs = zip(*(build_model(checkpoint, device) for checkpoint in loaded))
    first = configs[0]
    groups = []
    for size in dict.fromkeys(c["image_size"] for c in loaded):  # sizes in the order of their first member
        members = [model for model, c in zip(models, loaded) if c["image_size"] == size]
        model = members[0] if len(members) == 1 else ProbabilityMean(members).eval()
        if first.channels_last:
            model = model.to(memory_format=torch.channels_last)
        groups.append(SizeGroup(model, size, len(members) / len(models)))
    record = loaded[0].get("precision") or loaded[0].get("progress", {}).get("precision")
    runtime = Runtime(device, inference_amp(first.amp, device, record), first.channels_last)
    return Ensemble(groups, runtime, first, list(configs), checkpoints, [c.get("trained_on") for c in loaded])


def ensemble_volumes(ensemble: Ensemble, case_ids: Sequence[str], data_dir: str | None, cache_dir: str | None = None,
                     progress: bool = True) -> dict[int, list[CaseVolume]]:
    """``{S: the cases preprocessed at S}`` for every image size S of the ensemble's groups
    (:func:`brainseg.data.cache.load_volumes`, same order of cases; every size held at once): each
    volume's ``image`` (D, 3, S, S) and ``mask`` (D, S, S), its ``metric_mask`` (D, 256, 256) the same
    at every size."""
    return {group.image_size: load_volumes(case_ids, group.image_size, data_dir, cache_dir, progress=progress)
            for group in ensemble.groups}


def run_split(config: TrainConfig, data_dir: str | None = None) -> tuple[list[str], list[str]]:
    """(train, validation) cases of a run's split, recomputed from its config; the training side
    includes any inner validation cases (they chose its checkpoint).

    ``data_dir`` replaces the run's own dataset folder (which may be another machine's). A folds
    file is looked up as recorded, then in the repository, then as the cross-validation's committed
    copy ``results/<cv>-folds.json``.

    Raises:
        FileNotFoundError: the run's folds file is in none of these places.
    """
    where = TrainConfig.from_dict({**config.to_dict(), "data_dir": run_data_dir(data_dir, config.data_dir) or "",
                                   "folds_file": _folds_file(config)})
    return split_cases(where)


def _folds_file(config: TrainConfig) -> str:
    if not config.folds_file:
        return ""
    candidates = [Path(config.folds_file), paths.project_root() / config.folds_file,
                  paths.results_dir() / f"{cv_name(config.run_name)}-folds.json"]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{config.folds_file}: the folds file of run {config.run_name} is missing (also looked "
                                f"for {candidates[1]} and {candidates[2]}), so its cases are unknown")
    return str(found)


def seen_cases(ensemble: Ensemble, case_ids: Sequence[str], data_dir: str | None = None) -> list[list[str]]:
    """For each member, the cases among ``case_ids`` it trained on: from the ids its checkpoint
    records, else (older checkpoints) from its split recomputed by :func:`run_split`."""
    cases = set(case_ids)
    return [sorted(cases & set(recorded if recorded is not None else run_split(config, data_dir)[0]))
            for recorded, config in zip(ensemble.trained_on, ensemble.configs)]


def check_unseen(ensemble: Ensemble, case_ids: Sequence[str], data_dir: str | None = None) -> None:
    """Refuse to score cases that a member trained on.

    Raises:
        ValueError: naming the member, how many of the cases it trained on and a few of them.
    """
    for path, seen in zip(ensemble.checkpoints, seen_cases(ensemble, case_ids, data_dir)):
        if seen:
            raise ValueError(f"{path} trained on {len(seen)} of the {len(case_ids)} cases to score "
                             f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); a score on them would "
                             "not be honest. Score a model on its own validation cases (--split of its run); an "
                             "ensemble only on cases none of its members trained on")
