"""brainseg: segmentation of FLAIR abnormalities in brain MRI (Kaggle LGG dataset).

The main entry points, for notebooks and scripts::

    from brainseg import TrainConfig, fit, load_model
    metrics = fit(TrainConfig.from_preset("cpu"))
    model, config = load_model("weights/<run>/best.pt")
"""

from .checkpoint import load_model
from .config import TrainConfig
from .losses import create_loss
from .models import create_model
from .train import fit, train_one_epoch
from .validation import evaluate

__all__ = ["TrainConfig", "create_loss", "create_model", "evaluate", "fit", "load_model", "train_one_epoch"]
