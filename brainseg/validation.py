"""Validation: logits of whole volumes, per-volume DSC (docs/protocol.md, section 4) of a set of cases,
the same shared among torchrun ranks, and the held-out selection of TTA and post-processing."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_model
from .data.volume import MODALITIES, CaseVolume, context_of, with_context
from .distributed import Distributed
from .ensemble import SizeGroup
from .metrics import summarize, to_metric_grid, volume_dsc
from .runtime import Runtime


@torch.no_grad()
def predict_volume(model: nn.Module, images: np.ndarray, runtime: Runtime, batch_size: int = 32,
                   flip: bool = False) -> torch.Tensor:
    """Logits of every slice of a case.

    A model reading more than one slice (``model.in_channels`` = 3 (2 k + 1), trained with
    ``context`` k) gets each slice with its k neighbours on each side
    (:func:`~brainseg.data.volume.with_context`).

    Args:
        images: (D, 3, S, S) normalised slices (any float dtype).
        flip: predict on horizontally flipped slices and flip the logits back (for flip TTA).

    Returns:
        (D, 1, S, S) float32 logits on the CPU.
    """
    model.eval()
    context = context_of(getattr(model, "in_channels", MODALITIES))
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)  # a view of the slices for context 0, as before 2.5D
        image = torch.from_numpy(with_context(images, batch, context).astype(np.float32))
        if flip:
            image = image.flip(-1)
        with runtime.autocast():
            logits = model(runtime.to_input(image)).float().cpu()
        outputs.append(logits.flip(-1) if flip else logits)
    return torch.cat(outputs)


def case_probabilities(model: nn.Module, volume: CaseVolume, runtime: Runtime, batch_size: int = 32,
                       flip_tta: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """One case's probabilities on the metric grid and the logits of its plain prediction.

    Args:
        volume: a case preprocessed at the model's image size S (``image`` (D, 3, S, S)).
        flip_tta: average the probabilities of the slices and of their horizontal mirror images.

    Returns:
        (D, 256, 256) float32 probabilities and (D, 1, S, S) float32 logits (without flip TTA).
    """
    logits = predict_volume(model, volume.image, runtime, batch_size)
    probs = torch.sigmoid(logits)
    if flip_tta:
        probs = (probs + torch.sigmoid(predict_volume(model, volume.image, runtime, batch_size, flip=True))) / 2
    return to_metric_grid(probs).numpy(), logits


@torch.no_grad()
def evaluate(model: nn.Module, volumes: list[CaseVolume], loss_fn: nn.Module, runtime: Runtime,
             batch_size: int = 32, progress: bool = True, flip_tta: bool = False,
             largest_component: bool = True) -> dict:
    """Validation loss and per-volume DSC (docs/protocol.md, section 4) of every case.

    Args:
        volumes: the cases, preprocessed at the model's image size.
        flip_tta: average the probabilities of the slices and of their horizontal mirror images
            (the loss is always that of the plain prediction).
        largest_component: apply the protocol's largest-3D-component rule (default).

    Returns:
        ``{"loss", "mean", "median", "per_case": {case_id: dsc}, "per_case_without_lcc": {case_id: dsc},
        "probs": {case_id: (D, 256, 256)}}``; ``per_case`` follows ``largest_component``.
    """
    size = volumes[0].image.shape[-1] if volumes else 0
    return evaluate_groups([SizeGroup(model, size, 1.0)], {size: volumes}, loss_fn, runtime, batch_size, progress,
                           flip_tta, largest_component)


@torch.no_grad()
def evaluate_groups(groups: Sequence[SizeGroup], volumes_by_size: dict[int, list[CaseVolume]], loss_fn: nn.Module,
                    runtime: Runtime, batch_size: int = 32, progress: bool = True, flip_tta: bool = False,
                    largest_component: bool = True) -> dict:
    """:func:`evaluate` of an ensemble's groups of members (:class:`brainseg.ensemble.SizeGroup`),
    each group predicting the cases preprocessed at its own image size.

    A case's probability is the mean of the groups' (D, 256, 256) probabilities on the metric grid,
    weighted by their ``share`` of the members, so that every member counts once; the DSC and the
    largest-component rule apply to that mean. ``loss`` is the groups' validation losses (each
    against its own S px masks) weighted alike: the ensemble's loss for one group, not for several.

    Args:
        volumes_by_size: ``{S: the cases preprocessed at S}`` for every group's ``image_size``, the
            same cases in the same order.

    Returns:
        as :func:`evaluate`.

    Raises:
        ValueError: the volumes of two sizes hold other cases or another order.
    """
    by_group = [volumes_by_size[group.image_size] for group in groups]
    case_ids = [v.case_id for v in by_group[0]]
    if any([v.case_id for v in volumes] != case_ids for volumes in by_group):
        raise ValueError("the volumes of each image size must hold the same cases in the same order")
    per_case, without_lcc, probs_by_case, loss_sums = {}, {}, {}, [0.0] * len(groups)
    with tqdm(range(len(case_ids)), desc="validate", unit="case", leave=False, disable=not progress) as bar:
        for i in bar:  # the bar is closed on errors too
            case, truth = case_ids[i], by_group[0][i].metric_mask
            probs, losses = _case_mean(groups, [volumes[i] for volumes in by_group], loss_fn, runtime, batch_size,
                                       flip_tta)
            loss_sums = [total + loss for total, loss in zip(loss_sums, losses)]
            without_lcc[case] = volume_dsc(probs, truth, largest_component=False)
            per_case[case] = volume_dsc(probs, truth) if largest_component else without_lcc[case]
            probs_by_case[case] = probs
    slices = [sum(v.num_slices for v in volumes) for volumes in by_group]
    loss = sum(group.share * total / count for group, total, count in zip(groups, loss_sums, slices))
    return {"loss": loss, **summarize(per_case), "per_case": per_case, "per_case_without_lcc": without_lcc,
            "probs": probs_by_case}


def _case_mean(groups: Sequence[SizeGroup], volumes: list[CaseVolume], loss_fn: nn.Module, runtime: Runtime,
               batch_size: int, flip_tta: bool) -> tuple[np.ndarray, list[float]]:
    """One case's (D, 256, 256) float32 probabilities averaged over the groups, weighted by their
    share (``volumes``: the case at each group's image size), and each group's loss summed over the
    case's slices."""
    mean, losses = np.zeros(volumes[0].metric_mask.shape, np.float32), []
    for group, volume in zip(groups, volumes):
        probs, logits = case_probabilities(group.model, volume, runtime, batch_size, flip_tta)
        mask = torch.from_numpy(volume.mask[:, None].astype(np.float32))
        losses.append(loss_fn(logits, mask).item() * volume.num_slices)
        mean += group.share * probs
    return mean, losses


def evaluate_across_ranks(model: nn.Module, volumes: list[CaseVolume], loss_fn: nn.Module, runtime: Runtime,
                          dist: Distributed, progress: bool = True, keep_probs: set[str] | None = None) -> dict:
    """:func:`evaluate` with the cases shared among the ranks of a torchrun job, results gathered.

    Every rank returns the figures of all cases; ``probs`` holds only the cases in ``keep_probs``
    (all of them in a single process).
    """
    if not dist.enabled:
        return evaluate(model, volumes, loss_fn, runtime, progress=progress)
    shard = volumes[dist.rank::dist.world_size]
    mine = (evaluate(model, shard, loss_fn, runtime, progress=progress) if shard
            else {"loss": 0.0, "per_case": {}, "per_case_without_lcc": {}, "probs": {}})
    slices = sum(v.num_slices for v in shard)
    parts = dist.gather({"loss_sum": mine["loss"] * slices if slices else 0.0, "slices": slices,
                         "per_case": mine["per_case"], "per_case_without_lcc": mine["per_case_without_lcc"],
                         "probs": {c: p for c, p in mine["probs"].items() if c in (keep_probs or set())}})
    per_case = {case: dsc for part in parts for case, dsc in part["per_case"].items()}
    return {"loss": sum(p["loss_sum"] for p in parts) / sum(p["slices"] for p in parts), **summarize(per_case),
            "per_case": per_case,
            "per_case_without_lcc": {c: d for part in parts for c, d in part["per_case_without_lcc"].items()},
            "probs": {c: p for part in parts for c, p in part["probs"].items()}}


def select_and_evaluate_outer(best_path: Path, inner_volumes: list[CaseVolume], outer_volumes: list[CaseVolume],
                              loss_fn: nn.Module, runtime: Runtime, progress: bool = True) -> dict:
    """Held-out selection: the checkpoint was chosen on the inner cases; decide the post-processing
    and test-time augmentation there too, then evaluate the outer validation cases with that choice.

    The four combinations of flip TTA (off/on) and the largest-component rule (off/on) are scored
    on the inner cases; the one with the highest inner mean DSC wins, ties going to the protocol's
    largest-component rule, then to no TTA (as :func:`brainseg.postprocess.best_rule` breaks ties).
    The outer cases are scored under all four for the record, but only the chosen one is the result.

    Returns:
        ``selection`` description, ``flip_tta_applied``, ``largest_component_applied``, the inner
        figures, the outer mean/median/per-case under the choice (``outer_*``), the outer mean with
        and without the largest-component rule under the chosen TTA, and ``outer_grid`` (outer mean
        of every combination, keyed ``"tta=<bool>,lcc=<bool>"``).
    """
    model, _ = load_model(best_path, runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)

    def scores(volumes: list[CaseVolume]) -> dict[tuple[bool, bool], dict]:
        by_tta = {tta: _with_and_without_lcc(evaluate(model, volumes, loss_fn, runtime, progress=progress,
                                                      flip_tta=tta)) for tta in (False, True)}
        return {(tta, lcc): by_tta[tta][lcc] for tta in (False, True) for lcc in (False, True)}

    inner, outer = scores(inner_volumes), scores(outer_volumes)
    # On a tie the protocol's post-processing (the largest-component rule) and no TTA, as postprocess.best_rule
    tta, lcc = max(inner, key=lambda choice: (inner[choice]["mean"], choice[1], not choice[0]))
    chosen = outer[(tta, lcc)]
    print(f"inner selection: flip TTA {'on' if tta else 'off'}, largest-component rule {'on' if lcc else 'off'} "
          f"(inner means: " + ", ".join(f"tta={t} lcc={c} {r['mean']:.4f}" for (t, c), r in inner.items()) +
          f"); outer validation mean {chosen['mean']:.4f}, median {chosen['median']:.4f}")
    return {"selection": f"inner: checkpoint, flip TTA and post-processing chosen on {len(inner_volumes)} inner "
                         "validation cases carved from the training cases; validation cases evaluated once",
            "inner_cases": [v.case_id for v in inner_volumes],
            "inner_mean_dsc": inner[(tta, lcc)]["mean"], "flip_tta_applied": tta, "largest_component_applied": lcc,
            "inner_mean_dsc_with_lcc": inner[(tta, True)]["mean"],
            "inner_mean_dsc_without_lcc": inner[(tta, False)]["mean"],
            "val_mean_dsc_with_lcc": outer[(tta, True)]["mean"],
            "val_mean_dsc_without_lcc": outer[(tta, False)]["mean"],
            "outer_grid": {f"tta={t},lcc={c}": r["mean"] for (t, c), r in outer.items()},
            "outer_mean": chosen["mean"], "outer_median": chosen["median"], "outer_per_case": chosen["per_case"],
            "per_case_without_lcc": outer[(tta, False)]["per_case"]}


def _with_and_without_lcc(result: dict) -> dict[bool, dict]:
    """``{True: summary with the largest-component rule, False: without}`` of an :func:`evaluate` result."""
    return {lcc: {**summarize(per_case), "per_case": per_case}
            for lcc, per_case in ((True, result["per_case"]), (False, result["per_case_without_lcc"]))}
