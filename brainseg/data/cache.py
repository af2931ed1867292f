"""Preprocessed case volumes, cached on disk so that a second start loads in seconds.

A cache entry holds one case at one image size: the normalised image as float16 in
``<case>.image.npy`` (relative error below 1e-3 on values of order 1), and in ``<case>.npz`` the mask
at that size and on the 256x256 metric grid as uint8 and the crop/pad geometry. Its folder is keyed by
the source folder, the image size and :data:`CACHE_VERSION`; each file also stores a fingerprint
(names, sizes, modification times) of the case's TIFFs and is rebuilt when they change. Files are
written atomically. The images can be used in place, memory-mapped (``load_volumes(..., mmap=True)``),
instead of loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write
from .kaggle import CaseFiles, DatasetError, discover_cases, naming_the_case, read_case, resolve_data_dir
from .preprocess import Geometry, crop_and_pad, normalize_volume, resize_slices
from .volume import CaseVolume

CACHE_VERSION = 1
CACHE_ENV_VAR = "BRAINSEG_CACHE"
METRIC_SIZE = 256


def default_cache_dir() -> Path:
    """``$BRAINSEG_CACHE`` if set, else ``~/.cache/brainseg``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "brainseg")


def _fingerprint(files: CaseFiles) -> str:
    entries = []
    for path in files.images + (files.masks or ()):
        stat = path.stat()
        entries.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()


def cache_folder(cache_dir: Path, data_dir: Path, image_size: int) -> Path:
    key = hashlib.sha1(f"{data_dir.resolve()}|{image_size}|v{CACHE_VERSION}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{image_size}px-{key}"


def _build(files: CaseFiles, image_size: int) -> CaseVolume:
    image, mask = read_case(files)
    if mask is None:
        raise DatasetError(f"{files.folder}: case has no masks ('{files.case_id}_<n>_mask.tif'); training and "
                           "evaluation need them")
    with naming_the_case(files):
        volume, labels, geometry = crop_and_pad(image, mask)
        train_mask = resize_slices(labels, image_size, order=0)
        metric_mask = train_mask if image_size == METRIC_SIZE else resize_slices(labels, METRIC_SIZE, order=0)
        volume = normalize_volume(resize_slices(volume, image_size, order=2))  # (D, S, S, 3)
    image16 = np.ascontiguousarray(volume.transpose(0, 3, 1, 2), dtype=np.float16)
    return CaseVolume(files.case_id, image16, train_mask, metric_mask, replace(geometry, size=image_size))


def _load_cached(path: Path, files: CaseFiles, mmap: bool = False) -> CaseVolume | None:
    """The cached case at ``path`` (``.npz`` of masks and metadata beside an ``.image.npy``), or
    ``None`` when it is missing, unreadable or stale. With ``mmap`` the image stays in its file,
    mapped read-only."""
    image_path = _image_path(path)
    if not (path.exists() and image_path.exists()):
        return None
    try:
        with np.load(path) as stored:
            if str(stored["fingerprint"]) != _fingerprint(files):
                return None
            geometry = Geometry.from_dict(json.loads(str(stored["geometry"])))
            mask = stored["mask"]
            metric_mask = stored["metric_mask"] if "metric_mask" in stored else mask
        image = np.load(image_path, mmap_mode="r" if mmap else None)  # a plain .npy: fast to read or map
        if image.shape[0] != mask.shape[0] or image.shape[2:] != mask.shape[1:]:
            return None
        return CaseVolume(files.case_id, image, mask, metric_mask, geometry)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # a damaged cache file is rebuilt


def _image_path(entry: Path) -> Path:
    """The ``.image.npy`` beside a cache entry's ``.npz``."""
    return entry.with_suffix(".image.npy")


def _build_and_store(args: tuple[CaseFiles, int, Path]) -> CaseVolume:
    files, image_size, path = args
    case = _build(files, image_size)
    arrays = dict(mask=case.mask, fingerprint=np.array(_fingerprint(files)),
                  geometry=np.array(json.dumps(case.geometry.to_dict())))
    if image_size != METRIC_SIZE:
        arrays["metric_mask"] = case.metric_mask
    atomic_write(_image_path(path), lambda f: np.save(f, case.image))
    atomic_write(path, lambda f: np.savez(f, **arrays))  # written last: it marks the entry complete
    return case


def load_volumes(case_ids: list[str], image_size: int, data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                 progress: bool = True, mmap: bool = False) -> list[CaseVolume]:
    """Preprocessed volumes of ``case_ids`` (in that order), from the cache or built and cached.

    Args:
        case_ids: case folder names.
        image_size: side S of the training grid; must be a positive multiple of 16.
        data_dir: the ``kaggle_3m`` folder (see :func:`brainseg.data.kaggle.resolve_data_dir`).
        cache_dir: cache root, default :func:`default_cache_dir`.
        workers: processes for building missing cases (default: all cores).
        mmap: leave the images in the cache files, memory-mapped read-only: a slice is read from
            disk when it is used and the kernel may drop it again, so the images need no memory of
            their own (the masks are loaded). The same values either way.

    Raises:
        DatasetError: missing dataset, unknown case id, a bad file or a case that cannot be
            preprocessed (the file or case is named in the message, which starts on a line of its
            own: the progress bar is closed first).
    """
    data_root = resolve_data_dir(data_dir)
    all_cases = discover_cases(data_root)
    unknown = [c for c in case_ids if c not in all_cases]
    if unknown:
        raise DatasetError(f"{data_root}: unknown case ids {unknown[:5]}")
    folder = cache_folder(Path(cache_dir) if cache_dir else default_cache_dir(), data_root, image_size)
    cases: dict[str, CaseVolume] = {}
    for case_id in case_ids:
        cached = _load_cached(folder / f"{case_id}.npz", all_cases[case_id], mmap)
        if cached is not None:
            cases[case_id] = cached
    jobs = [(all_cases[c], image_size, folder / f"{c}.npz") for c in case_ids if c not in cases]
    if jobs:
        workers = min(workers or os.cpu_count() or 1, len(jobs))
        with (tqdm(total=len(jobs), desc=f"preprocessing {image_size}px", unit="case", disable=not progress) as bar,
              ProcessPoolExecutor(max_workers=workers) as pool):  # processes start only when used
            for case in (pool.map(_build_and_store, jobs) if workers > 1 else map(_build_and_store, jobs)):
                if mmap:  # the image just written, mapped like a cached one
                    case = replace(case, image=np.load(_image_path(folder / f"{case.case_id}.npz"), mmap_mode="r"))
                cases[case.case_id] = case
                bar.update()
    return [cases[c] for c in case_ids]
