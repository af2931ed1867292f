"""The repository's folders, wherever the code runs from.

A notebook's kernel starts in ``notebooks/``, a script anywhere; the defaults (dataset, ``logs/``,
``weights/``, ``predictions/``, ``results/``, the shipped checkpoint) all mean the repository's
top-level folders. A path the user passes explicitly is used as given: a relative one is relative
to the working directory, as everywhere in Python.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# the cpu preset's recipe; docs/results.md says how it was made
SHIPPED_CHECKPOINT_NAME = "cpu-unet-bce_dice-flairfill-intensity-ema-ds2-reference.pt"


def _is_project_root(folder: Path) -> bool:
    return (folder / "pyproject.toml").is_file() and (folder / "brainseg" / "__init__.py").is_file()


def project_root() -> Path:
    """The repository folder: the one holding ``pyproject.toml`` and ``brainseg/``.

    Found from the package's own location (a checkout, or an editable install of one), else from
    the working directory or one of its parents; when neither is inside the repository (the
    package installed elsewhere), the working directory.
    """
    package_parent = Path(__file__).resolve().parent.parent
    if _is_project_root(package_parent):
        return package_parent
    cwd = Path.cwd()
    return next((folder for folder in (cwd, *cwd.parents) if _is_project_root(folder)), cwd)


def data_dir() -> Path:
    """Default dataset folder: ``<repo>/data/kaggle_3m``."""
    return project_root() / "data" / "kaggle_3m"


def logs_dir() -> Path:
    """Default root of run logs: ``<repo>/logs``."""
    return project_root() / "logs"


def weights_dir() -> Path:
    """Default root of checkpoints: ``<repo>/weights``."""
    return project_root() / "weights"


def predictions_dir() -> Path:
    """Default root of evaluation outputs: ``<repo>/predictions``."""
    return project_root() / "predictions"


def results_dir() -> Path:
    """Default folder of kept results: ``<repo>/results``."""
    return project_root() / "results"


def docs_dir() -> Path:
    """Default folder of the documentation and its figures: ``<repo>/docs``."""
    return project_root() / "docs"


def shipped_checkpoint() -> Path:
    """The checkpoint committed with the repository: ``<repo>/weights/`` + ``SHIPPED_CHECKPOINT_NAME``."""
    return weights_dir() / SHIPPED_CHECKPOINT_NAME


def relative_to_root(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it (for records kept in git,
    which must not hold one machine's folders), else absolute."""
    path = Path(path).resolve()
    root = project_root().resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def or_default(path: str | os.PathLike | None, default: Path) -> Path:
    """``path`` as given (relative to the working directory), or ``default`` when it is empty or ``None``."""
    return Path(path) if path else default


def file_stem(name: str, limit: int = 200) -> str:
    """``name`` as a file stem that every file system takes: unchanged up to ``limit`` bytes (UTF-8),
    else its head and tail around 8 hex digits of its SHA-1, ``limit`` bytes at most. File names stop
    at 255 bytes, and a default name built from several run names (an ensemble's, a paired
    comparison's) passes that with four runs; the middle goes because run names differ most at
    their ends (``-seed43-cv5``, ``-30ep-cv5``), and the file itself lists every run."""
    encoded = name.encode()
    if len(encoded) <= limit:
        return name
    keep = (limit - 10) // 2
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    head, tail = (part.decode(errors="ignore") for part in (encoded[:keep], encoded[-keep:]))
    return f"{head}-{digest}-{tail}"
