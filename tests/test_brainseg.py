"""The package's entry points (``from brainseg import ...``) are the functions and classes they name,
and no module of the package shares a name with one of them."""

import importlib
import pkgutil

import brainseg
from brainseg import checkpoint, config, losses, models, train, validation


def test_package_exports_the_entry_points():
    assert brainseg.__all__ == ["TrainConfig", "create_loss", "create_model", "evaluate", "fit", "load_model",
                                "train_one_epoch"]
    assert brainseg.TrainConfig is config.TrainConfig and brainseg.TrainConfig.from_preset("smoke").preset == "smoke"
    assert brainseg.fit is train.fit and brainseg.train_one_epoch is train.train_one_epoch
    assert brainseg.evaluate is validation.evaluate and brainseg.load_model is checkpoint.load_model
    assert brainseg.create_model is models.create_model and brainseg.create_loss is losses.create_loss


def test_no_module_shares_a_name_with_an_entry_point():
    importlib.import_module("brainseg.evaluation")  # the `evaluate` command's module
    assert brainseg.evaluate is validation.evaluate
    modules = {module.name for module in pkgutil.iter_modules(brainseg.__path__)}
    assert {"evaluation", "train", "data", "tools"} <= modules and not modules & set(brainseg.__all__)
