"""One typed training configuration and its presets (docs/protocol.md, section 6).

A notebook builds :class:`TrainConfig` directly (``TrainConfig.preset("cpu", epochs=5)``); the
CLI fills it from flags. It is saved beside every run (``config.json``) and in every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from . import paths


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        preset: the preset this config started from (``gpu``, ``cpu``, ``cpu-fast``, ``smoke`` or ``custom``).
        run_name: folder name under ``logs/`` and ``weights/``; empty: generated from the settings.
        data_dir: the ``kaggle_3m`` folder; empty: ``$BRAINSEG_DATA``, else the repository's
            ``data/kaggle_3m``.
        cache_dir: preprocessed-volume cache; empty: ``$BRAINSEG_CACHE``, else ``~/.cache/brainseg``.
        logs_dir, weights_dir: output roots; empty: the repository's ``logs/`` and ``weights/``
            whatever the working directory (see :mod:`brainseg.paths`).
        model: registered model name; ``features``: its first-level width; ``model_args``: other
            keyword arguments of the model (e.g. ``{"inference": "mean"}`` for UNet++).
        loss: registered loss name; ``loss_args``: its keyword arguments (e.g. ``{"alpha": 0.3}``).
        image_size: training side S (multiple of 16); the metric is always on the 256 grid.
        split: ``reference`` (docs/protocol.md, section 3) or ``kfold``; ``folds``, ``fold``, ``split_seed``
            select the k-fold side.
        selection: how the checkpoint is chosen. ``reference``: by validation mean DSC on the
            validation cases themselves (the reference's way, optimistic). ``last``: the final
            epoch's model, no choice made on any evaluated case (used by cross-validation). ``inner``: by an inner
            validation set of ``inner_val_cases`` training cases (seeded by ``split_seed``), which
            also decides whether flip TTA and the largest-component rule are applied; the validation cases are
            then evaluated once (docs/protocol.md, section 5). The per-epoch validation columns of
            ``history.csv`` are then those of the inner cases.
        val_every: validate every N epochs (the final epoch always); with ``selection="last"``
            the other validations are only curves, so they can be thinned out to save time.
        folds_file: JSON file of the k folds (written by ``python -m brainseg cv``); empty: the
            folds are drawn from ``split_seed``.
        max_train_cases, max_val_cases: use only the first N cases of each side (0: all), for smoke runs.
        epochs, batch_size: schedule length and batch size.
        optimizer: ``adam`` or ``adamw``; ``lr``, ``weight_decay``.
        scheduler: ``constant``, ``cosine`` (per step, to 0 after ``warmup_epochs`` of linear warm-up).
        sampler: ``weighted`` (reference mask-area weighting) or ``shuffle``.
        aug_scale, aug_angle, flip_prob: augmentation (0 disables each).
        flair_fill: probability that a training slice has its pre-contrast, post-contrast or both
            channels replaced by its FLAIR channel, as the dataset stores missing scans (0 disables).
        intensity: probability that a training slice has each channel's gamma, contrast, brightness
            and noise varied (``transforms.jitter_intensity``; 0 disables).
        augment: where it runs: ``sample`` (torchvision, per slice in the DataLoader workers) or
            ``batch`` (the same distribution on the whole batch on the training device).
        workers: DataLoader worker processes.
        seed: seeds model initialisation, sampling and augmentation.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        channels_last, amp: memory format and bf16 autocast (AMP on CUDA); both on by default.
        compile: train through ``torch.compile`` (inductor; on CPU it needs a C++ compiler);
            validation and checkpoints use the eager model, which shares its weights.
        max_minutes: stop training after the epoch that crosses this wall time (0: no limit).
        vis_slices: validation slices drawn as outline images in TensorBoard each epoch.
    """

    preset: str = "custom"
    run_name: str = ""
    data_dir: str = ""
    cache_dir: str = ""
    logs_dir: str = ""
    weights_dir: str = ""
    model: str = "unet"
    features: int = 32
    model_args: dict = field(default_factory=dict)
    loss: str = "dice"
    loss_args: dict = field(default_factory=dict)
    image_size: int = 256
    split: str = "reference"
    folds: int = 5
    fold: int = 0
    split_seed: int = 0
    selection: str = "reference"
    inner_val_cases: int = 10
    val_every: int = 1
    folds_file: str = ""
    max_train_cases: int = 0
    max_val_cases: int = 0
    epochs: int = 100
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "constant"
    warmup_epochs: float = 0.0
    sampler: str = "weighted"
    aug_scale: float = 0.05
    aug_angle: float = 15.0
    flip_prob: float = 0.5
    flair_fill: float = 0.0
    intensity: float = 0.0
    augment: str = "sample"
    workers: int = 2
    seed: int = 42
    device: str = "auto"
    channels_last: bool = True
    amp: bool = True
    compile: bool = False
    max_minutes: float = 0.0
    vis_slices: int = 4

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with an impossible value."""
        choices = {"split": ("reference", "kfold"), "optimizer": ("adam", "adamw"),
                   "scheduler": ("constant", "cosine"), "sampler": ("weighted", "shuffle"),
                   "augment": ("sample", "batch"), "device": ("auto", "cpu", "cuda"),
                   "selection": ("reference", "last", "inner")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("model_args", "loss_args"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                raise ValueError(f"{name} must be a dict with string keys, got {value!r}")
        from .transforms import check_augment_ranges  # the augmentation's own range check

        check_augment_ranges(self.aug_scale, self.aug_angle, self.flip_prob, self.flair_fill, self.intensity)
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        for name in ("epochs", "batch_size", "features", "inner_val_cases", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr",):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_epochs", "max_minutes", "workers", "max_train_cases",
                     "max_val_cases", "vis_slices"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def preset_names(cls) -> list[str]:
        return sorted(PRESETS)

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """The named preset with ``overrides`` applied.

        Raises:
            ValueError: unknown preset or field name.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; valid fields: {', '.join(sorted(known))}")
        return replace(cls(preset=name, **PRESETS[name]), **overrides)

    def run_dirs(self, run_name: str) -> tuple[Path, Path]:
        """(log folder, checkpoint folder) of the run ``run_name``: ``<logs_dir>/<run_name>`` and
        ``<weights_dir>/<run_name>``, under the repository's ``logs/`` and ``weights/`` when those are empty."""
        return (paths.or_default(self.logs_dir, paths.logs_dir()) / run_name,
                paths.or_default(self.weights_dir, paths.weights_dir()) / run_name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild a config saved by :meth:`to_dict`, ignoring fields this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# What a 2-core CPU finishes in at most 45 minutes, everything included. Measured on the
# project's 2-core CPU (no AMX): bf16 autocast trains slower than fp32 there (a bf16 matmul
# reaches about half the fp32 rate), so this recipe keeps fp32 with channels_last; a 16-feature
# U-Net at 128 px trains about 4x faster than the 32-feature one. BCE+Dice and the final model
# (nothing chosen on the validation cases) since the ablations (docs/results.md, "The cpu recipe");
# runs before that used Dice and --selection reference. flair_fill 0.5 since the paired 5-fold CV
# (+0.020 mean DSC, 95% CI +0.003 to +0.041; docs/results.md, "Levers").
_CPU_RECIPE = dict(image_size=128, features=16, batch_size=16, epochs=20, optimizer="adamw", lr=2e-3,
                   weight_decay=1e-4, scheduler="cosine", warmup_epochs=0.3, amp=False, workers=1,
                   max_minutes=42.0, loss="bce_dice", selection="last", flair_fill=0.5)

PRESETS: dict[str, dict] = {
    # The reference budget: 256 px, batch 16, Adam 1e-4, 100 epochs.
    "gpu": dict(image_size=256, batch_size=16, epochs=100, optimizer="adam", lr=1e-4, workers=8),
    "cpu": _CPU_RECIPE,
    # The cpu recipe in half the epochs (the cosine schedule compressed to them), for about 20 minutes.
    "cpu-fast": {**_CPU_RECIPE, "epochs": 10, "max_minutes": 19.0},
    # A few cases at tiny size, for tests and CI; its numbers mean nothing.
    "smoke": dict(image_size=64, batch_size=4, epochs=2, features=8, max_train_cases=3, max_val_cases=2,
                  workers=0, vis_slices=2),
}
