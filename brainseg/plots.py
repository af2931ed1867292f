"""Pictures of results: outline overlays (FLAIR in grey, truth in green, prediction in red), the
pictures an evaluation writes (per-case DSC chart, overlays of every slice and their GIF), two
results case by case, a data preview, what the training augmentation makes of a slice, and for
notebooks the best and worst cases' GIFs and a slice browser."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
from matplotlib.figure import Figure
import numpy as np
from skimage.segmentation import find_boundaries
import torch

from .atomic import atomic_write
from .data.transforms import CHANNEL_NAMES

GREEN = np.array([0, 255, 0], dtype=np.uint8)
RED = np.array([255, 0, 0], dtype=np.uint8)


def to_grey_uint8(channel: np.ndarray) -> np.ndarray:
    """Min-max scale an (H, W) array to uint8 (a constant array becomes 0)."""
    channel = channel.astype(np.float32)
    low, high = float(channel.min()), float(channel.max())
    scaled = np.zeros_like(channel) if high <= low else (channel - low) / (high - low)
    return (scaled * 255).round().astype(np.uint8)


def outline_overlay(flair: np.ndarray, truth: np.ndarray, pred: np.ndarray | None = None) -> np.ndarray:
    """FLAIR slice in grey with the truth outline in green and the prediction outline in red.

    Args:
        flair: (H, W) intensities.
        truth: (H, W) binary mask.
        pred: (H, W) binary mask, optional.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    grey = to_grey_uint8(flair)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(np.asarray(truth, dtype=bool), mode="inner")] = GREEN
    if pred is not None:
        rgb[find_boundaries(np.asarray(pred, dtype=bool), mode="inner")] = RED
    return rgb


def data_preview(volumes, per_case: int = 1):
    """A figure of each case's slices with the largest lesions, truth outlined in green.

    Args:
        volumes: preprocessed cases (:class:`brainseg.data.volume.CaseVolume`).
        per_case: slices shown per case.
    """
    from matplotlib.figure import Figure

    picks = []
    for volume in volumes:
        areas = volume.mask.reshape(volume.num_slices, -1).sum(axis=1)
        for s in np.argsort(areas)[::-1][:per_case]:
            picks.append((volume, int(s)))
    fig = Figure(figsize=(3 * len(picks), 3.3))
    axes = np.atleast_1d(fig.subplots(1, len(picks)))
    for ax, (volume, s) in zip(axes, picks):
        ax.imshow(outline_overlay(volume.image[s, 1].astype(np.float32), volume.mask[s]))
        ax.set_title(f"{volume.case_id}\nslice {s + 1}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def augmentation_preview(volume, augment, samples: int = 3) -> Figure:
    """The slice of ``volume`` with the largest lesion as training sees it: the slice itself (top
    row), then ``samples`` draws of ``augment`` (from the global torch RNG), one row each; columns
    are the three channels with the mask outlined in green, each channel on the grey scale of the
    original, so that intensity changes show.

    Args:
        volume: a preprocessed case (:class:`brainseg.data.volume.CaseVolume`), image (S, 3, H, W).
        augment: an ``(image, mask)`` transform of tensors (3, H, W) and (1, H, W), e.g.
            ``JointAugment(**config.augment_kwargs())``.
        samples: augmented draws shown.
    """
    s = int(volume.mask.reshape(volume.num_slices, -1).sum(axis=1).argmax())
    image = torch.from_numpy(volume.image[s].astype(np.float32))
    mask = torch.from_numpy(volume.mask[s][None].astype(np.float32))
    rows = [(image, mask)] + [augment(image.clone(), mask.clone()) for _ in range(samples)]
    limits = [(float(c.min()), float(c.max())) for c in image]
    fig = Figure(figsize=(7.5, 2.6 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (img, msk) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.imshow(img[c].numpy(), cmap="gray", vmin=limits[c][0], vmax=limits[c][1])
            if msk.max() > 0.5:
                ax.contour(msk[0].numpy(), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(f"{CHANNEL_NAMES[c]}, {'original' if r == 0 else f'draw {r}'}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{volume.case_id}, slice {s + 1}", fontsize=9)
    fig.tight_layout()
    return fig


def slice_figure(frames: np.ndarray, index: int, title: str = ""):
    """One slice of a case's outline overlays, with its number in the title.

    Args:
        frames: (D, H, W, 3) uint8 overlays (FLAIR in grey, truth outline in green, prediction
            outline in red), e.g. from :func:`read_overlays`.
        index: 0-based slice index.
        title: shown before the slice number, e.g. the case id.

    Raises:
        IndexError: ``index`` outside ``0 .. D-1``.
    """
    from matplotlib.figure import Figure

    if not 0 <= index < len(frames):
        raise IndexError(f"slice index {index} out of range: the case has {len(frames)} slices "
                         f"(0 .. {len(frames) - 1})")
    fig = Figure(figsize=(5, 5.4))
    ax = fig.subplots()
    ax.imshow(frames[index])
    ax.set_title(f"{title + ': ' if title else ''}slice {index + 1}/{len(frames)}\n"
                 "truth outlined in green, prediction in red", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return fig


def slice_browser(case_dir: str | Path):
    """A slider over the slices of one evaluated case, each drawn by :func:`slice_figure`.

    Without ipywidgets installed, the case's animated GIF instead (the same frames, played).

    Args:
        case_dir: the case's overlay folder written by :func:`brainseg.evaluation.evaluate_checkpoint`,
            ``<out_dir>/<case>`` (its GIF ``<out_dir>/<case>.gif`` lies beside it).

    Returns:
        An ipywidgets ``interactive`` widget, or an ``IPython.display.Image`` of the GIF; a notebook
        displays either.
    """
    case_dir = Path(case_dir)
    try:
        import ipywidgets
    except ImportError:
        from IPython.display import Image

        return Image(filename=str(case_dir.parent / f"{case_dir.name}.gif"))
    frames = read_overlays(case_dir)
    slider = ipywidgets.IntSlider(value=len(frames) // 2 + 1, min=1, max=len(frames), description="slice")
    return ipywidgets.interactive(lambda number: slice_figure(frames, number - 1, case_dir.name),
                                  {"auto_display": True}, number=slider)


def best_and_worst(per_case: dict[str, float], out_dir: str | Path) -> list[dict]:
    """The best and the worst case of an evaluation, with where their overlays are.

    Args:
        per_case: ``{case: DSC}``, e.g. ``report["per_case"]`` of :func:`brainseg.evaluation.evaluate_checkpoint`.
        out_dir: the evaluation's output folder (``report["out_dir"]``).

    Returns:
        ``[best, worst]``, each ``{"case", "dsc", "folder": <out_dir>/<case> (its slice PNGs, for
        :func:`slice_browser`), "gif": <out_dir>/<case>.gif}``; equal DSCs are ranked by case name.
        With one case, both are that case.

    Raises:
        ValueError: ``per_case`` is empty.
    """
    if not per_case:
        raise ValueError("no cases: the evaluation scored none")
    ranked = sorted(per_case, key=lambda case: (per_case[case], case))
    out_dir = Path(out_dir)
    return [{"case": case, "dsc": float(per_case[case]), "folder": out_dir / case, "gif": out_dir / f"{case}.gif"}
            for case in (ranked[-1], ranked[0])]


def gif_gallery(picks: list[dict]) -> list:
    """For ``display(*gif_gallery(picks))`` in a notebook: each pick's caption (case and DSC) and its
    animated GIF, in order.

    Args:
        picks: dicts with ``case``, ``dsc`` and ``gif``, as :func:`best_and_worst` returns.
    """
    from IPython.display import Image, Markdown

    shown = []
    for pick in picks:
        shown += [Markdown(f"**{pick['case']}**: DSC {pick['dsc']:.3f}"), Image(filename=str(pick["gif"]))]
    return shown


def dsc_chart(per_case: dict[str, float], path: str | Path | None = None, title: str = "") -> Figure:
    """Horizontal bar chart of per-case DSC, sorted, with the mean (red) and median (green) lines.

    Saved as PNG to ``path`` when given; the figure is returned (notebooks display it).
    """
    cases = sorted(per_case, key=per_case.get)
    values = np.array([per_case[c] for c in cases])
    fig = Figure(figsize=(7, 0.3 * len(cases) + 1.5))
    ax = fig.subplots()
    ax.barh(np.arange(len(cases)), values, color="tab:blue")
    ax.set_yticks(np.arange(len(cases)), cases, fontsize=8)
    mean, median = values.mean(), np.median(values)
    ax.axvline(mean, color="red", linewidth=2, label=f"mean {mean:.3f}")
    ax.axvline(median, color="green", linewidth=2, linestyle="--", label=f"median {median:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice similarity coefficient (per volume)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig


def paired_scatter(a: dict[str, float], b: dict[str, float], names: tuple[str, str] = ("A", "B"),
                   path: str | Path | None = None, tie: float = 0.01) -> Figure:
    """Per-case DSC of B against A on their common cases, with the diagonal: points above it (green)
    are cases B does better on by more than ``tie``, below it (red) worse, the rest (blue) ties.
    A name joining several trainings with `` + `` (:func:`brainseg.paired.compare_results`) is
    labelled one training a line.

    Saved as PNG to ``path`` when given; the figure is returned (notebooks display it).

    Raises:
        ValueError: the two tables have no case in common.
    """
    cases = sorted(set(a) & set(b))
    if not cases:
        raise ValueError(f"{names[0]} and {names[1]} have no case in common")
    x, y = np.array([a[c] for c in cases]), np.array([b[c] for c in cases])
    moved = np.round(y - x, 9)  # as paired_difference counts: a move of exactly the tie is a tie
    better, worse = moved > tie, moved < -tie
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
    for mask, colour in ((better, "tab:green"), (worse, "tab:red"), (~better & ~worse, "tab:blue")):
        ax.scatter(x[mask], y[mask], s=14, color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    label = lambda name: name.replace(" + ", "\n+ ")  # noqa: E731  several trainings of one recipe: one a line
    ax.set_xlabel(f"{label(names[0])}: DSC per case", fontsize=8)
    ax.set_ylabel(f"{label(names[1])}: DSC per case", fontsize=8)
    ax.set_title(f"{len(cases)} cases: {int(better.sum())} better, {int(worse.sum())} worse (by > {tie})")
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig


def case_overlays(flair: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Outline overlays of every slice: (D, H, W, 3) uint8 from (D, H, W) FLAIR, truth and prediction."""
    return np.stack([outline_overlay(flair[i], truth[i], pred[i]) for i in range(len(flair))])


def write_overlays(frames: np.ndarray, folder: str | Path, gif_path: str | Path, fps: float = 5.0) -> None:
    """One PNG per slice (``<folder>/<slice>.png``, 1-based) and an animated GIF of all of them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, 1):
        atomic_write(folder / f"{i:02d}.png", lambda f, frame=frame: iio.imwrite(f, frame, extension=".png"))
    atomic_write(gif_path, lambda f: iio.imwrite(f, list(frames), extension=".gif", duration=1000 / fps, loop=0))


def read_overlays(folder: str | Path) -> np.ndarray:
    """The per-slice PNGs written by :func:`write_overlays`, in slice order: (D, H, W, 3) uint8.

    Raises:
        FileNotFoundError: ``folder`` holds no ``<slice>.png`` (the evaluation ran without overlays).
    """
    files = sorted((path for path in Path(folder).glob("*.png") if path.stem.isdigit()),
                   key=lambda path: int(path.stem))
    if not files:
        raise FileNotFoundError(f"{folder}: no slice overlays (01.png, 02.png, ...); evaluate the checkpoint "
                                "with overlays (without --no-overlays)")
    return np.stack([iio.imread(path)[..., :3] for path in files])
