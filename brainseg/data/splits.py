"""Patient-level splits: the reference 10-case validation split, seeded k-fold, inner validation
cases, and :func:`split_cases`, the cases of a training config's split.

A split is a pair of case-id lists; slices of one case never go to both sides.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from .kaggle import discover_cases

if TYPE_CHECKING:
    from ..config import TrainConfig

REFERENCE_VALIDATION = (
    "TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105", "TCGA_CS_6668_20011025",
    "TCGA_DU_5851_19950428", "TCGA_DU_6404_19850629", "TCGA_DU_6408_19860521",
    "TCGA_DU_7014_19860618", "TCGA_HT_7616_19940813", "TCGA_HT_7692_19960724",
    "TCGA_HT_7879_19981009",
)  # docs/protocol.md, section 3


def reference_split(case_ids: list[str], seed: int = 42, validation_cases: int = 10
                    ) -> tuple[list[str], list[str]]:
    """The reference code's split: ``random.seed(42); random.sample(sorted(case_ids), k=10)``.

    Returns:
        (train, validation) case ids, each sorted.

    Raises:
        ValueError: on the full 110-case dataset the result differs from the published list.
    """
    cases = sorted(case_ids)
    if len(cases) <= validation_cases:
        raise ValueError(f"need more than {validation_cases} cases for the reference split, got {len(cases)}")
    random.seed(seed)
    validation = sorted(random.sample(cases, k=validation_cases))
    if len(cases) == 110 and (seed, validation_cases) == (42, 10) and tuple(validation) != REFERENCE_VALIDATION:
        raise ValueError(f"reference split {validation} differs from docs/protocol.md, section 3 "
                         f"{list(REFERENCE_VALIDATION)}")
    return [c for c in cases if c not in validation], validation


def kfold_split(case_ids: list[str], folds: int, fold: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Fold ``fold`` of a seeded patient-level k-fold split.

    Cases are shuffled with ``random.Random(seed)`` and dealt into ``folds`` groups whose sizes
    differ by at most one; fold ``fold`` is the validation side.

    Returns:
        (train, validation) case ids, each sorted.
    """
    cases = sorted(case_ids)
    if not 2 <= folds <= len(cases):
        raise ValueError(f"folds must be between 2 and the number of cases ({len(cases)}), got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    order = cases[:]
    random.Random(seed).shuffle(order)
    validation = sorted(order[fold::folds])
    return [c for c in cases if c not in validation], validation


def inner_split(train_ids: list[str], cases: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Carve an inner validation set of ``cases`` training cases (seeded, by case).

    Used to choose the checkpoint and post-processing without looking at the outer validation
    cases (docs/protocol.md, section 5).

    Returns:
        (inner train, inner validation) case ids, each sorted.
    """
    train = sorted(train_ids)
    if not 1 <= cases < len(train):
        raise ValueError(f"inner validation needs between 1 and {len(train) - 1} cases, got {cases}")
    inner = sorted(random.Random(seed).sample(train, k=cases))
    return [c for c in train if c not in inner], inner


def read_folds(path: str | Path) -> dict:
    """The saved folds file ``path``: ``{"folds": [[case, ...], ...], "seed": ..., ...}``.

    Raises:
        ValueError: not JSON, or no list of case lists under ``"folds"`` (a pooled result
            ``results/<cv>.json`` has a ``"folds"`` key of another kind), naming the file.
    """
    try:
        stored = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON file ({error}); a folds file is e.g. results/<cv>-folds.json") from None
    folds = stored.get("folds") if isinstance(stored, dict) else None
    if not (isinstance(folds, list) and folds
            and all(isinstance(group, list) and all(isinstance(c, str) for c in group) for group in folds)):
        raise ValueError(f"{path}: not a folds file (one holds {{\"folds\": [[case, ...], ...]}}, e.g. "
                         "results/<cv>-folds.json beside a pooled results/<cv>.json)")
    return stored


def folds_from_file(path: str | Path, case_ids: list[str], fold: int) -> tuple[list[str], list[str]]:
    """Fold ``fold`` of the folds saved in ``path`` (``{"folds": [[case, ...], ...], ...}``).

    Raises:
        ValueError: the file's folds do not cover exactly ``case_ids`` once each, or no such fold.
    """
    folds = read_folds(path)["folds"]
    listed = [case for group in folds for case in group]
    if sorted(listed) != sorted(case_ids):
        missing, extra = sorted(set(case_ids) - set(listed)), sorted(set(listed) - set(case_ids))
        raise ValueError(f"{path}: the folds must hold every case of the dataset once "
                         f"(missing {missing[:3]}, unknown {extra[:3]}, {len(listed)} listed "
                         f"for {len(case_ids)} cases)")
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold must be in [0, {len(folds)}) for {path}, got {fold}")
    validation = sorted(folds[fold])
    return [c for c in sorted(case_ids) if c not in validation], validation


def split_cases(config: TrainConfig) -> tuple[list[str], list[str]]:
    """(train, validation) case ids of ``config``'s split, shortened by ``max_*_cases``."""
    case_ids = sorted(discover_cases(config.data_dir or None))
    if config.split == "reference":
        train, val = reference_split(case_ids)
    else:
        train, val = (folds_from_file(config.folds_file, case_ids, config.fold) if config.folds_file
                      else kfold_split(case_ids, config.folds, config.fold, config.split_seed))
    return train[: config.max_train_cases or None], val[: config.max_val_cases or None]
