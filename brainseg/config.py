"""One typed training configuration and its presets (docs/protocol.md, section 6).

A notebook builds :class:`TrainConfig` directly (``TrainConfig.from_preset("cpu", epochs=5)``); the
CLI fills it from flags. It is saved beside every run (``config.json``) and in every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import paths

# Fields that say where and how fast a run computes, not what it learns: a cross-validation's folds
# may differ in these (one fold on a GPU with 14 workers, another on a CPU) and still pool.
NOT_RECIPE = ("preset", "run_name", "data_dir", "cache_dir", "logs_dir", "weights_dir", "fold", "folds_file",
              "workers", "device", "channels_last", "amp", "compile", "checkpointing", "data_on_device",
              "mmap_data", "max_minutes", "val_every", "vis_slices")
MAX_CONTEXT = 3  # neighbouring slices on each side, 7 slices in all; a wider view is a 3D model's job
DEEP_SUPERVISION_MODELS = ("unet", "attention_unet")  # the models with a deep_supervision argument (0-3)


def setting(default, help: str, choices: tuple | None = None):
    """A :class:`TrainConfig` field with its help text and allowed values, the one place that
    :meth:`TrainConfig.validate`, the command line's ``--help`` and the docs read them from."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


def _is_one_of(value, allowed: tuple) -> bool:
    """``value in allowed`` with booleans told apart from numbers (``1 == True`` in Python)."""
    return any(value is a if isinstance(a, bool) else (not isinstance(value, bool) and value == a) for a in allowed)


def field_help(name: str) -> str:
    """The help text of a :class:`TrainConfig` field."""
    return next(f.metadata["help"] for f in fields(TrainConfig) if f.name == name)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Each field's meaning and allowed values are in its
    metadata (:func:`field_help`); ``python -m brainseg train --help`` prints them all."""

    preset: str = setting("custom", "the preset this config started from (gpu, cpu, cpu-fast, smoke) or custom")
    run_name: str = setting("", "run folder name under logs/ and weights/ (empty: preset-model-loss-size-timestamp)")
    data_dir: str = setting("", "kaggle_3m folder (empty: $BRAINSEG_DATA, else the repository's data/kaggle_3m)")
    cache_dir: str = setting("", "preprocessed-volume cache (empty: $BRAINSEG_CACHE, else ~/.cache/brainseg)")
    logs_dir: str = setting("", "root of run logs (empty: the repository's logs/, whatever the working directory)")
    weights_dir: str = setting("", "root of checkpoints (empty: the repository's weights/)")
    model: str = setting("unet", "registered model name (docs/models.md)")
    features: int = setting(32, "channels of the model's first level")
    deep_supervision: int = setting(0, "coarser decoder levels (0 to 3: H/2, H/4, H/8) that get a 1x1 head in "
                                       "training, their loss averaged with the final head's; U-Net and Attention "
                                       "U-Net only (a preset's value is dropped for other models)",
                                    choices=(0, 1, 2, 3))
    deep_supervision_decay: float = setting(1.0, "weight of each decoder head relative to the next finer one, the "
                                                 "weights then scaled to sum to 1 (1: the heads averaged; 0.5: "
                                                 "nnU-Net's halving, the final head weighing most); needs heads")
    model_args: dict = setting({}, "other keyword arguments of the model, e.g. {'inference': 'mean'} for UNet++")
    context: int = setting(0, "neighbouring slices on each side given to the model with the slice (2.5D): the input "
                              "has 3 x (2 context + 1) channels, the edge slice repeated at a case's ends (0: the "
                              "slice alone, as the reference)")
    loss: str = setting("dice", "registered loss name (docs/models.md)")
    loss_args: dict = setting({}, "keyword arguments of the loss, e.g. {'alpha': 0.3}")
    image_size: int = setting(256, "training image side in pixels, a multiple of 16; the metric is always on "
                                   "the 256 grid")
    split: str = setting("reference", "reference (the 10 published validation cases, docs/protocol.md section 3) "
                                      "or kfold", ("reference", "kfold"))
    folds: int = setting(5, "number of folds for split kfold")
    fold: int = setting(0, "validation fold for split kfold")
    split_seed: int = setting(0, "seed of the k-fold case shuffle and of the inner validation cases")
    selection: str = setting(
        "reference", "how the checkpoint is chosen: reference (best epoch on the validation cases themselves, "
        "the reference's optimistic way), last (the final model, nothing chosen; cross-validation) or inner (best "
        "epoch, flip TTA and the largest-component rule chosen on inner validation cases carved from the training "
        "cases, then the validation cases evaluated once; docs/protocol.md section 5)", ("reference", "last", "inner"))
    inner_val_cases: int = setting(10, "number of inner validation cases for selection inner")
    val_every: int = setting(1, "validate every N epochs (the final epoch always); with selection last the others "
                                "are only curves")
    folds_file: str = setting("", "JSON file of the k folds written by `cv` (empty: drawn from split_seed)")
    max_train_cases: int = setting(0, "use only the first N training cases (0: all), for smoke runs")
    max_val_cases: int = setting(0, "use only the first N validation cases (0: all), for smoke runs")
    epochs: int = setting(100, "training epochs (an epoch = as many samples as training slices)")
    batch_size: int = setting(16, "batch size")
    optimizer: str = setting("adam", "adam or adamw", ("adam", "adamw"))
    lr: float = setting(1e-4, "peak learning rate")
    weight_decay: float = setting(0.0, "weight decay")
    scheduler: str = setting("constant", "constant or cosine (per step, to 0 after the warm-up)",
                             ("constant", "cosine"))
    warmup_epochs: float = setting(0.0, "linear warm-up length in epochs (cosine only)")
    sampler: str = setting("weighted", "weighted (the reference's mask-area weighting) or shuffle",
                           ("weighted", "shuffle"))
    aug_scale: float = setting(0.05, "random scale range (0.05: +-5%%; 0 disables)")
    aug_angle: float = setting(15.0, "random rotation range in degrees (0 disables)")
    flip_prob: float = setting(0.5, "horizontal flip probability")
    crop_size: int = setting(0, "train on crop_size x crop_size windows of the image_size slices (a multiple of "
                                "16, below image_size; needs augment sample); validation and prediction stay on "
                                "whole slices (0: whole slices)")
    crop_foreground: float = setting(0.5, "probability that a training window is centred on a lesion pixel (when "
                                          "the slice has one); otherwise it is placed uniformly")
    coarse_size: int = setting(0, "progressive resizing: train the first coarse_fraction of the run on batches "
                                  "shrunk to coarse_size px (a multiple of 16 below the training side; torch's area "
                                  "mode, exact at whole-number ratios; masks thresholded at half), then the rest at "
                                  "full size; more images early, full detail at the end; validation and prediction "
                                  "stay at image_size (0: off)")
    coarse_fraction: float = setting(0.0, "the share of the run trained at coarse_size: of its steps, or of "
                                          "budget_minutes when that is set (between 0 and 1; needs coarse_size)")
    flair_fill: float = setting(0.0, "probability that a training slice gets its pre-, post-contrast or both "
                                     "channels replaced by FLAIR, as the dataset stores missing scans (0 disables)")
    intensity: float = setting(0.0, "probability that a training slice gets each channel's gamma, contrast, "
                                    "brightness and noise varied at random (0 disables)")
    elastic: float = setting(0.0, "probability that a training slice is bent by a smooth random deformation (the "
                                  "U-Net paper's: a 3 x 3 grid of control points, displaced with a std of 3.5%% of "
                                  "the half-width, about 2 px at 128 px; 0 disables)")
    soft_masks: bool = setting(False, "train on each pixel's lesion fraction (the 256 px metric mask averaged over "
                                      "the pixel) instead of the nearest-neighbour resized 0/1 mask, so that a "
                                      "boundary is not moved to the training grid; validation and the metric are "
                                      "unchanged (true/false; at 256 px the fractions are the mask)")
    augment: str = setting("sample", "where augmentation runs: sample (per slice in the DataLoader workers) or "
                                     "batch (whole batches on the training device)", ("sample", "batch"))
    data_on_device: bool = setting(False, "keep the training slices on the training device and gather each batch "
                                          "there, with no DataLoader workers (true/false; needs augment batch; for "
                                          "a GPU, which holds them easily)")
    mmap_data: bool = setting(False, "read the images from the cache files as slices are used (memory-mapped, "
                                     "true/false) instead of loading them: the data then needs no memory of its own "
                                     "(1.3 GB at 256 px for the reference training split), the same results; keep "
                                     "the cache on a local disk")
    workers: int = setting(2, "DataLoader worker processes")
    seed: int = setting(42, "seeds model initialisation, sampling and augmentation")
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda", ("auto", "cpu", "cuda"))
    channels_last: bool = setting(True, "channels_last memory format (true/false)")
    amp: bool | str = setting("auto", "bf16 autocast on CPU, AMP on CUDA: true, false or auto (CUDA: on; CPU: "
                                      "the faster of the two, timed on the run's model before training)",
                              (True, False, "auto"))
    checkpointing: bool = setting(False, "activation checkpointing (true/false): each block's activations are "
                                         "recomputed in the backward pass instead of kept; less memory, about a "
                                         "third more compute, the same results")
    compile: bool = setting(False, "train through torch.compile (true/false; on CPU needs a C++ compiler; compile "
                                   "time counts); validation and checkpoints use the eager model")
    ema: float = setting(0.0, "decay of an exponential moving average of the weights and BatchNorm statistics, "
                              "updated after every step (e.g. 0.999); validation and the saved models use the "
                              "average (0: off)")
    ema_bias_correction: bool = setting(False, "correct the moving average for its start as Adam corrects its "
                                               "moments (true/false): the n-th step weighs (1-ema)/(1-ema**n), so a "
                                               "short run's average holds no excess of the first weights (plain EMA "
                                               "at 0.999 keeps 15%% of them after 1900 steps); needs ema")
    max_minutes: float = setting(0.0, "stop before an epoch (with its validation) that would end past this "
                                      "wall time (0: no limit)")
    budget_minutes: float = setting(0.0, "minutes of training steps (validation and data loading not counted): the "
                                         "learning-rate schedule follows the fraction of this time spent, not the "
                                         "step count, and training stops when it is spent, so a faster machine "
                                         "takes more steps; epochs is then an upper bound. Not reproducible step "
                                         "for step; single process only (0: the schedule runs over epochs)")
    vis_slices: int = setting(4, "validation slices drawn as outlines in TensorBoard")

    def __post_init__(self) -> None:
        self._take_deep_supervision_from_model_args()
        self._drop_model_args_at_their_default()
        self.validate()

    def _take_deep_supervision_from_model_args(self) -> None:
        """Read ``model_args={"deep_supervision": K}`` (the older runs' spelling) as the field, for the
        models the field is for, so both spellings are one recipe; refuse two values that disagree."""
        if self.model not in DEEP_SUPERVISION_MODELS or "deep_supervision" not in self.model_args:
            return
        levels = self.model_args["deep_supervision"]
        if self.deep_supervision and self.deep_supervision != levels:
            raise ValueError(f"deep_supervision {self.deep_supervision} and model_args deep_supervision {levels!r} "
                             "disagree; give it once (--deep-supervision)")
        self.deep_supervision = levels
        self.model_args = {k: v for k, v in self.model_args.items() if k != "deep_supervision"}

    def _drop_model_args_at_their_default(self) -> None:
        """Leave out model arguments given at the model's own default (``norm="batch"`` for the
        U-Net), so that spelling a default out is the same recipe as leaving it out."""
        from .models import MODELS
        from .registry import defaults

        if isinstance(self.model_args, dict):
            default = defaults(MODELS, self.model)
            self.model_args = {k: v for k, v in self.model_args.items() if k not in default or default[k] != v}

    def _check_deep_supervision_decay(self) -> None:
        if not 0 < self.deep_supervision_decay <= 1:
            raise ValueError(f"deep_supervision_decay must be in (0, 1], got {self.deep_supervision_decay}")
        if self.deep_supervision_decay != 1 and self.model in DEEP_SUPERVISION_MODELS and not self.deep_supervision:
            raise ValueError("deep_supervision_decay weighs the decoder heads, but deep_supervision is 0; pass "
                             "--deep-supervision 2 too, or leave --deep-supervision-decay out")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with an impossible value."""
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed and not _is_one_of(getattr(self, f.name), allowed):
                raise ValueError(f"{f.name} must be one of {allowed}, got {getattr(self, f.name)!r}")
        for name in ("model_args", "loss_args"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                raise ValueError(f"{name} must be a dict with string keys, got {value!r}")
        from .data.transforms import check_augment_ranges  # the augmentation's own range check

        check_augment_ranges(self.aug_scale, self.aug_angle, self.flip_prob, self.flair_fill, self.intensity,
                             self.elastic)
        if not 0 <= self.context <= MAX_CONTEXT:
            raise ValueError(f"context must be between 0 and {MAX_CONTEXT} slices, got {self.context}")
        if self.deep_supervision and self.model not in DEEP_SUPERVISION_MODELS:
            raise ValueError(f"deep_supervision needs a model with decoder heads "
                             f"({', '.join(DEEP_SUPERVISION_MODELS)}), got model {self.model!r}; pass "
                             "deep_supervision 0 (--deep-supervision 0)")
        self._check_deep_supervision_decay()
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.ema_bias_correction and not self.ema:
            raise ValueError("ema_bias_correction corrects a moving average, but ema is 0; pass --ema 0.999 too, "
                             "or leave --ema-bias-correction out")
        self._check_coarse_start()
        if self.crop_size and (self.crop_size % 16 or self.crop_size >= self.image_size):
            raise ValueError(f"crop_size must be 0 or a multiple of 16 below image_size {self.image_size}, "
                             f"got {self.crop_size}")
        if self.crop_size and self.augment != "sample":
            raise ValueError("crop_size needs augment sample: the windows are cut per slice in the DataLoader workers")
        if self.soft_masks and (self.image_size > 256 or 256 % self.image_size):
            raise ValueError(f"soft_masks needs an image_size that divides 256 (each training pixel covering whole "
                             f"metric pixels), got {self.image_size}")
        if not 0 <= self.crop_foreground <= 1:
            raise ValueError(f"crop_foreground must be in [0, 1], got {self.crop_foreground}")
        if self.data_on_device and self.augment != "batch":
            raise ValueError("data_on_device needs augment batch: per-slice augmentation runs in DataLoader workers "
                             "(with --augment sample, add --data-on-device false)")
        self._check_sizes_and_counts()
        self._check_run_name()

    def _check_sizes_and_counts(self) -> None:
        """The image side, the counts that must be positive and the budgets that may be 0."""
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        for name in ("epochs", "batch_size", "features", "inner_val_cases", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "warmup_epochs", "max_minutes", "budget_minutes", "workers", "max_train_cases",
                     "max_val_cases", "vis_slices"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def check_trainable(self) -> None:
        """Refuse what a new training cannot learn from, beyond :meth:`validate` (which also guards
        configs read back from finished runs): a cosine warm-up as long as the run, and a training side
        that leaves the model a 1 x 1 bottleneck, where batch normalisation fails on an epoch's last
        batch when it holds one slice."""
        from .models import MODELS

        if self.scheduler == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be below epochs {self.epochs}: the learning "
                             "rate would still be rising when training ends, and never decay")
        stride = getattr(MODELS.get(self.model), "stride", 16)  # the model's total down-sampling
        for name in ("image_size", "crop_size", "coarse_size"):
            if 0 < getattr(self, name) <= stride:
                raise ValueError(f"{name} {getattr(self, name)} leaves {self.model} a 1 x 1 pixel bottleneck, where "
                                 f"batch normalisation fails on a batch of one slice (an epoch's last batch can "
                                 f"be); use {2 * stride} px or more")

    def _check_run_name(self) -> None:
        """A run name is one folder name: joined to logs/ and weights/, a path would write elsewhere."""
        name = self.run_name
        if name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"run_name must be a plain folder name (it becomes logs/<run_name> and "
                             f"weights/<run_name>), got {name!r}; pass --logs-dir / --weights-dir to write elsewhere")

    def _check_coarse_start(self) -> None:
        """Progressive resizing needs a coarse side below the training side and a share in (0, 1)."""
        if not self.coarse_size and not self.coarse_fraction:
            return
        side = self.crop_size or self.image_size
        if self.coarse_size % 16 or not 16 <= self.coarse_size < side:
            raise ValueError(f"coarse_size must be a multiple of 16 below the training side {side} px "
                             f"(crop_size or image_size), got {self.coarse_size}")
        if not 0 < self.coarse_fraction < 1:
            raise ValueError(f"coarse_fraction must be between 0 and 1 (the share of the run at coarse_size), "
                             f"got {self.coarse_fraction}")

    @classmethod
    def preset_names(cls) -> list[str]:
        return sorted(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
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
        values = {"preset": name, **PRESETS[name], **overrides}
        if "deep_supervision" not in overrides and values.get("model", cls.model) not in DEEP_SUPERVISION_MODELS:
            values["deep_supervision"] = 0  # the preset's deep supervision is for the U-Nets it was measured on
        return cls(**values)

    def run_dirs(self, run_name: str) -> tuple[Path, Path]:
        """(log folder, checkpoint folder) of the run ``run_name``: ``<logs_dir>/<run_name>`` and
        ``<weights_dir>/<run_name>``, under the repository's ``logs/`` and ``weights/`` when those are empty."""
        return (paths.or_default(self.logs_dir, paths.logs_dir()) / run_name,
                paths.or_default(self.weights_dir, paths.weights_dir()) / run_name)

    def to_dict(self) -> dict:
        return asdict(self)

    def recipe_differences(self, other: "TrainConfig") -> list[str]:
        """``"field: mine -> other's"`` for every field outside :data:`NOT_RECIPE` where the two differ."""
        return [f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}" for f in fields(self)
                if f.name not in NOT_RECIPE and getattr(self, f.name) != getattr(other, f.name)]

    def model_kwargs(self) -> dict:
        """Keyword arguments of ``create_model(self.model, ...)``: features, input channels (3 for
        each slice the model reads, :attr:`context`), :attr:`deep_supervision` when set and :attr:`model_args`."""
        from .data.volume import input_channels

        supervision = {"deep_supervision": self.deep_supervision} if self.deep_supervision else {}
        return {"features": self.features, "in_channels": input_channels(self.context), **supervision,
                **self.model_args}

    def augment_kwargs(self) -> dict:
        """Keyword arguments of the training augmentation (``JointAugment`` or ``BatchAugment``)."""
        return dict(scale=self.aug_scale, angle=self.aug_angle, flip_prob=self.flip_prob, flair_fill=self.flair_fill,
                    intensity=self.intensity, elastic=self.elastic, soft_mask=self.soft_masks)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild a config saved by :meth:`to_dict`, ignoring fields this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# What a 2-core CPU with fast bf16 finishes in at most 45 minutes, everything included (19-27 min);
# one without takes 75-100 min for the 20 epochs, so the 42-minute stop ends it early. The precision
# is timed per machine (amp "auto"): on some of the project's 2-core CPUs bf16 autocast trains slower
# than fp32, on CPUs with AVX-512 BF16 or AMX about twice as fast. A 16-feature U-Net at 128 px
# trains about 4x faster than the 32-feature one. BCE+Dice and the final model (nothing chosen on
# the validation cases) since the ablations (docs/results.md, "The cpu recipe"); runs before that
# used Dice and --selection reference. flair_fill 0.5 since the paired 5-fold CV
# (+0.020 mean DSC, 95% CI +0.003 to +0.041), intensity 0.5 on top of it since its own (+0.015,
# +0.005 to +0.028; docs/results.md, "Levers"); ema 0.999 since its paired 5-fold CV on the same
# training trajectories (docs/results.md, "Levers"); deep_supervision 2 since two trainings of it
# against two of the recipe without it on the same folds (per-case DSC averaged over each recipe's
# two seeds): +0.0098 mean DSC, 95% CI +0.0039 to +0.0169 (docs/results.md, "Levers").
_CPU_RECIPE = dict(image_size=128, features=16, batch_size=16, epochs=20, optimizer="adamw", lr=2e-3,
                   weight_decay=1e-4, scheduler="cosine", warmup_epochs=0.3, amp="auto", workers=1,
                   max_minutes=42.0, loss="bce_dice", selection="last", flair_fill=0.5, intensity=0.5, ema=0.999,
                   deep_supervision=2)

PRESETS: dict[str, dict] = {
    # The reference budget: 256 px, batch 16, Adam 1e-4, 100 epochs. The slices and their augmentation
    # on the GPU since an H200 ran it in 6.7 min against 11.4 on an H100 with per-slice augmentation
    # in 14 CPU workers (docs/speed.md); workers serve `--augment sample --data-on-device false`.
    "gpu": dict(image_size=256, batch_size=16, epochs=100, optimizer="adam", lr=1e-4, workers=8,
                augment="batch", data_on_device=True),
    "cpu": _CPU_RECIPE,
    # The cpu recipe in half the epochs (the cosine schedule compressed to them), stopped at 19 minutes.
    "cpu-fast": {**_CPU_RECIPE, "epochs": 10, "max_minutes": 19.0},
    # A few cases at tiny size, for tests and CI; its numbers mean nothing.
    # fp32 forced: amp "auto" times the machine, which under load could flip between two runs of a test.
    "smoke": dict(image_size=64, batch_size=4, epochs=2, features=8, max_train_cases=3, max_val_cases=2,
                  workers=0, vis_slices=2, amp=False),
}
