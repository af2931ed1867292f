"""The three ways a run chooses the model it keeps (``TrainConfig.selection``), in one place.

``reference``: each validation is on the validation cases themselves; the best mean DSC so far is
kept (the reference's way, optimistic). ``last``: the same validations, but each replaces the kept
model, so the final epoch's is kept and nothing is chosen on evaluated cases. ``inner``: the
validations are on ``inner_val_cases`` cases carved from the training cases; the best is kept, flip
TTA and the largest-component rule are chosen on those cases too, and the validation cases are
evaluated once at the end (docs/protocol.md, section 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .config import TrainConfig
from .data.splits import inner_split
from .data.volume import CaseVolume
from .metrics import summarize
from .runtime import Runtime
from .validation import select_and_evaluate_outer

DESCRIPTIONS = {
    "reference": "best epoch by mean DSC on the validation cases themselves (reference protocol, optimistic)",
    "last": "last: the final epoch's model, nothing chosen on evaluated cases",
}


@dataclass(frozen=True)
class Selection:
    """What a selection mode validates, when, and which model it keeps."""

    mode: str  # "reference", "last" or "inner"

    def split(self, config: TrainConfig, train_ids: list[str], outer_ids: list[str]) -> tuple[list[str], list[str]]:
        """(training, per-epoch validation) case ids, given the split's training and validation cases:
        with ``inner``, ``config.inner_val_cases`` training cases (seeded by ``split_seed``) validate."""
        if self.mode == "inner":
            return inner_split(train_ids, config.inner_val_cases, config.split_seed)
        return train_ids, outer_ids

    @staticmethod
    def validates(config: TrainConfig, epoch: int, stopping: bool) -> bool:
        """Whether ``epoch`` ends with a validation: every ``val_every``-th epoch, the final one, and
        the last one before the time budget stops the run (the same in every mode)."""
        return stopping or epoch == config.epochs or epoch % config.val_every == 0

    def keeps(self, val_mean_dsc: float, best: dict) -> bool:
        """Whether a validation with this mean DSC replaces the kept model (``best.pt``): with ``last``
        every one does, otherwise only a better one than ``best["val_mean_dsc"]``."""
        return self.mode == "last" or val_mean_dsc > best["val_mean_dsc"]

    @property
    def final_prefix(self) -> str:
        """Prefix of the result's figures of the final epoch on the per-epoch validation cases."""
        return "final_inner" if self.mode == "inner" else "final_val"

    def outcome(self, best: dict, best_path: Path, val_volumes: list[CaseVolume], outer_volumes: list[CaseVolume],
                loss_fn: nn.Module, runtime: Runtime, progress: bool = True) -> tuple[dict, dict]:
        """At the end of the run: (the result's ``selection`` entries, the kept model's figures).

        ``reference``/``last``: the description and the kept epoch's DSC without the largest-component
        rule; ``best`` unchanged. ``inner``: :func:`~brainseg.validation.select_and_evaluate_outer`
        on ``best_path``, and ``best`` with the outer cases' mean, median and per-case DSC.
        """
        if self.mode == "inner":
            entries = select_and_evaluate_outer(best_path, val_volumes, outer_volumes, loss_fn, runtime, progress)
            return entries, {**best, "val_mean_dsc": entries.pop("outer_mean"),
                             "val_median_dsc": entries.pop("outer_median"), "per_case": entries.pop("outer_per_case")}
        entries = {"selection": DESCRIPTIONS[self.mode]}
        if "per_case_without_lcc" in best:
            entries["per_case_without_lcc"] = best["per_case_without_lcc"]
            entries["val_mean_dsc_without_lcc"] = summarize(best["per_case_without_lcc"])["mean"]
        return entries, best
