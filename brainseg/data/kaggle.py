"""Finding and reading the Kaggle LGG dataset (``kaggle_3m``).

Layout (docs/protocol.md, section 1)::

    kaggle_3m/
      TCGA_CS_4941_19960909/
        TCGA_CS_4941_19960909_1.tif        (256, 256, 3) uint8: pre-contrast, FLAIR, post-contrast
        TCGA_CS_4941_19960909_1_mask.tif   (256, 256) uint8, 0 or 255
        ...

Slices are ordered by their integer number (``_10`` after ``_9``). Files are read with
``tifffile``; ``imagecodecs`` lets it read the losslessly recompressed copy as well as the
original uncompressed Kaggle TIFFs.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .. import paths

DATA_ENV_VAR = "BRAINSEG_DATA"

DOWNLOAD_HELP = f"""\
The Kaggle LGG MRI segmentation dataset (mateuszbuda/lgg-mri-segmentation) is needed.
Download it, for example with kagglehub (needs a Kaggle account and API token):

    pip install kagglehub
    python -c "import kagglehub; print(kagglehub.dataset_download('mateuszbuda/lgg-mri-segmentation'))"

then point brainseg at the kaggle_3m folder inside the printed path, in one of these ways:
  - pass it explicitly (--data DIR on the command line, data_dir=... in Python),
  - set the environment variable {DATA_ENV_VAR}=/path/to/kaggle_3m,
  - or move it to data/kaggle_3m in the repository (found from any working directory).
To try brainseg without it: the repository's samples/kaggle_3m holds two cases (make demo)."""

_SLICE_NAME = re.compile(r"^(?P<case>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


class DatasetError(ValueError):
    """The dataset is missing or a file in it is not what the protocol expects."""


@dataclass(frozen=True)
class CaseFiles:
    """The slice files of one case, ordered by slice number.

    Attributes:
        case_id: folder name, e.g. ``TCGA_CS_4941_19960909``.
        folder: the case folder.
        images: image TIFF paths, slice 1 first.
        masks: mask TIFF paths in the same order, or ``None`` for a case without masks.
        numbers: the integer slice numbers.
    """

    case_id: str
    folder: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...] | None
    numbers: tuple[int, ...]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the ``kaggle_3m`` folder: ``data_dir``, else ``$BRAINSEG_DATA``, else the repository's
    ``data/kaggle_3m`` (:func:`brainseg.paths.data_dir`).

    Raises:
        DatasetError: nothing usable at any of those places; the message lists where it looked
            and how to download the dataset.
    """
    if data_dir is not None:
        candidates = [("argument", Path(data_dir))]
    elif os.environ.get(DATA_ENV_VAR):
        candidates = [(f"${DATA_ENV_VAR}", Path(os.environ[DATA_ENV_VAR]))]
    else:
        candidates = [("default", paths.data_dir())]
    for _, path in candidates:
        if path.is_dir():
            return path.resolve()
    looked = "\n".join(f"  - {path.resolve()} ({source})" for source, path in candidates)
    raise DatasetError(f"No dataset folder found. Looked at:\n{looked}\n\n{DOWNLOAD_HELP}")


def run_data_dir(given: str | os.PathLike | None, recorded: str) -> str | None:
    """The dataset folder for a saved run's cases: ``given`` (``--data``), else the folder the run
    ``recorded`` where it exists on this machine, else ``None`` (:func:`resolve_data_dir` then reads
    ``$BRAINSEG_DATA``, then ``data/kaggle_3m``): a checkpoint trained on another machine, with
    ``--data`` there, still finds the dataset here."""
    if given:
        return str(given)
    return recorded if recorded and Path(recorded).is_dir() else None


def _slice_number(path: Path) -> int:
    return int(_SLICE_NAME.match(path.name)["number"])


def list_case_files(folder: str | os.PathLike, require_masks: bool = True) -> CaseFiles:
    """List one case folder's slices, ordered by slice number, and check image/mask pairing.

    Raises:
        DatasetError: not a folder, empty folder, a file name that does not follow
            ``<case>_<n>[_mask].tif``, a gap in the slice numbers, or an image without its mask (or a
            mask without its image; with ``require_masks=False`` a case may have no masks at all, but
            not some). Hidden files (``.*``, e.g. macOS ``._`` copies) are ignored.
    """
    folder = Path(folder)
    case_id = folder.name
    if not folder.is_dir():
        what = f"a file; its case folder is {folder.parent}" if folder.is_file() else "no such folder"
        raise DatasetError(f"{folder}: {what}. A case is the folder that holds its slices ('<case>_<n>.tif')")
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in (".tif", ".tiff"):
            continue
        match = _SLICE_NAME.match(path.name)
        if match is None or match["case"] != case_id:
            raise DatasetError(
                f"{path}: unexpected file name; expected '{case_id}_<n>.tif' or '{case_id}_<n>_mask.tif'"
            )
        (masks if match["mask"] else images)[int(match["number"])] = path
    if not images:
        raise DatasetError(f"{folder}: case folder has no slice images ('{case_id}_<n>.tif')")
    for number, path in sorted(images.items()):
        if (require_masks or masks) and number not in masks:
            raise DatasetError(f"{path}: image has no mask; expected {folder / f'{case_id}_{number}_mask.tif'}")
    for number, path in sorted(masks.items()):
        if number not in images:
            raise DatasetError(f"{path}: mask has no image; expected {folder / f'{case_id}_{number}.tif'}")
    numbers = sorted(images)
    gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if gaps:
        raise DatasetError(f"{folder}: slices {gaps[:10]} are missing between {numbers[0]} and {numbers[-1]}")
    return CaseFiles(
        case_id=case_id,
        folder=folder,
        images=tuple(images[n] for n in numbers),
        masks=tuple(masks[n] for n in numbers) if masks else None,
        numbers=tuple(numbers),
    )


def discover_cases(data_dir: str | os.PathLike | None = None) -> dict[str, CaseFiles]:
    """All cases of a ``kaggle_3m`` folder, sorted by case id.

    Raises:
        DatasetError: the folder is missing (see :func:`resolve_data_dir`), holds no ``TCGA_*``
            case folders (not the dataset), or a case folder is malformed.
    """
    root = resolve_data_dir(data_dir)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("TCGA_"))
    if not folders:
        raise DatasetError(
            f"{root}: no case folders (TCGA_<inst>_<id>_<date>) found; this is not the kaggle_3m "
            f"dataset folder.\n\n{DOWNLOAD_HELP}"
        )
    return {folder.name: list_case_files(folder) for folder in folders}


def read_tiff(path: Path, kind: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read one slice: ``kind='image'`` gives (H, W, 3) uint8, ``kind='mask'`` (H, W) uint8 in {0, 255}.

    Raises:
        DatasetError: unreadable or truncated file, wrong shape, dtype or mask values.
    """
    try:
        array = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read this TIFF ({type(exc).__name__}: {exc}); "
                           "the file is truncated or corrupt, download it again") from exc
    expected = "(H, W, 3) uint8" if kind == "image" else "(H, W) uint8"
    ndim = 3 if kind == "image" else 2
    if array.dtype != np.uint8 or array.ndim != ndim or (kind == "image" and array.shape[2] != 3):
        raise DatasetError(f"{path}: expected {'an image' if kind == 'image' else 'a mask'} of shape {expected}, "
                           f"got shape {array.shape} dtype {array.dtype}")
    if expected_hw is not None and array.shape[:2] != expected_hw:
        raise DatasetError(f"{path}: expected {expected_hw[0]}x{expected_hw[1]} pixels like the case's "
                           f"first slice, got {array.shape[0]}x{array.shape[1]}")
    if kind == "mask" and not np.isin(array, (0, 255)).all():
        raise DatasetError(f"{path}: a mask must hold only 0 and 255, found values {np.unique(array)[:8].tolist()}")
    return array


@contextmanager
def naming_the_case(files: CaseFiles):
    """Turn a ``ValueError`` raised inside the block about a case's content (a flat volume, too few
    slices: preprocessing does not know which case it holds) into a :class:`DatasetError` that names
    the case and where its files are."""
    try:
        yield
    except ValueError as exc:
        raise DatasetError(f"{files.case_id}: {exc}; check the case's TIFFs at {files.folder}") from exc


def read_case(files: CaseFiles) -> tuple[np.ndarray, np.ndarray | None]:
    """Read all slices of a case.

    Returns:
        image: (D, H, W, 3) uint8, slices in order.
        mask: (D, H, W) uint8 in {0, 255}, or ``None`` when the case has no masks.
    """
    first = read_tiff(files.images[0], "image")
    hw = first.shape[:2]
    image = np.stack([first] + [read_tiff(p, "image", hw) for p in files.images[1:]])
    mask = None
    if files.masks is not None:
        mask = np.stack([read_tiff(p, "mask", hw) for p in files.masks])
    return image, mask
