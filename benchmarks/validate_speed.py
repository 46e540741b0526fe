"""Validation speed on a generated CIFAR-sized layout: 60,000 32x32 PNGs (50,000 train, 10,000 test).

    python benchmarks/validate_speed.py [--images 60000] [--keep DIR]

Prints images/s of `simclr validate`'s check with a process pool over all cores, against the same
check in one process (the reference, measured in the same run), and the ratio.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from simclr.validate import check

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def generate(root: Path, total: int, seed: int = 0) -> None:
    """Smooth random 32x32 images (PNG sizes like CIFAR's, not incompressible noise)."""
    rng = np.random.default_rng(seed)
    (root / "class.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(CLASSES)))
    n_test = total // 6
    counts = {"train": total - n_test, "test": n_test}
    for split, n in counts.items():
        for i in range(n):
            cls = CLASSES[i % 10]
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((32, 32), Image.BILINEAR)
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (or reuse) this folder")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="validate-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if not (root / "class.txt").exists():
            start = time.perf_counter()
            generate(root, args.images)
            print(f"generated {args.images} PNGs in {time.perf_counter() - start:.1f}s at {root}")
        results = {}
        for label, workers in (("one process (reference)", 1), (f"pool of {os.cpu_count()}", 0)):
            start = time.perf_counter()
            report = check(root, workers=workers)
            seconds = time.perf_counter() - start
            assert not report.errors, report.errors[:3]
            results[label] = args.images / seconds
            print(f"{label:>24}: {seconds:6.1f}s  {results[label]:8.0f} images/s")
        ref, pool = results.values()
        print(f"pool / one process: {pool / ref:.2f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
