#!/usr/bin/env python3
"""Pack what `.ci/gpu-check` needs into `.gpu/`, in parts the workplace's device tool can carry.

The device tool sends the working tree plus the folders named in `carry`, at most 64 MiB a call,
and its GPU image has PyTorch but lacks imagecodecs (the dataset's TIFFs are JPEG XL) and medpy.
This writes, from the repository root:

    .gpu/part1/   imagecodecs' wheel, medpy (pure Python) and an empty SimpleITK stub (medpy
                  imports it only for file I/O, which brainseg never calls), then the 10
                  reference validation cases, then others
    .gpu/partN/   further case folders (``kaggle_3m/<case>/``), each part under the size limit

Carry `.gpu/part1` in the first call and one part a call after it, back to back (the machine
stays warm 30 s); `.ci/gpu-check` uses the cases that arrived. Run it with the project's
environment (it copies that medpy):

    .venv/bin/python .ci/gpu_pack.py [--data DIR] [--limit-mib 62]
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu"
WHEEL_ARGS = ["--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
              "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64"]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def tree_bytes() -> int:
    """Bytes of the files the device tool sends anyway: tracked and untracked-not-ignored."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def pack_packages(part: Path) -> None:
    """imagecodecs' cp312 wheel, medpy copied from this environment, a SimpleITK stub."""
    import medpy  # the environment that runs this script

    subprocess.run([sys.executable, "-m", "pip", "download", "-q", *WHEEL_ARGS, "-d", str(part / "wheels"),
                    "imagecodecs==2026.3.6"], check=True)
    site = part / "site"
    shutil.copytree(Path(medpy.__file__).parent, site / "medpy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (site / "SimpleITK").mkdir()
    (site / "SimpleITK" / "__init__.py").write_text('"""Stub: medpy.io imports SimpleITK; brainseg never calls it."""\n')


def case_order(data: Path) -> list[Path]:
    """Case folders, the 10 reference validation cases first (so any subset can train and validate)."""
    sys.path.insert(0, str(ROOT))
    from brainseg.data.splits import REFERENCE_VALIDATION

    cases = sorted(p for p in data.iterdir() if p.is_dir())
    return sorted(cases, key=lambda p: p.name not in REFERENCE_VALIDATION)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BRAINSEG_DATA", str(ROOT.parent / "shared/data/kaggle_3m")))
    parser.add_argument("--limit-mib", type=float, default=62.0, help="what one call may carry, the tree included")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"no dataset at {data}: pass --data DIR or set BRAINSEG_DATA")
    shutil.rmtree(OUT, ignore_errors=True)
    budget = args.limit_mib * 2**20 - tree_bytes()
    part = 1
    pack_packages(OUT / "part1")
    used = folder_bytes(OUT / "part1")
    for case in case_order(data):
        size = folder_bytes(case)
        if used + size > budget:
            part, used = part + 1, 0
        shutil.copytree(case, OUT / f"part{part}" / "kaggle_3m" / case.name)
        used += size
    for p in sorted(OUT.iterdir()):
        cases = len(list((p / "kaggle_3m").glob("*"))) if (p / "kaggle_3m").is_dir() else 0
        print(f"{p.relative_to(ROOT)}: {folder_bytes(p) / 2**20:.1f} MiB, {cases} cases")
    print(f"budget per call {budget / 2**20:.1f} MiB beside the tree; carry one part a call, part1 first")


if __name__ == "__main__":
    main()
