"""STL-10's binary archive (stl10_binary.tar.gz, Coates et al. 2011) written into the layout, streaming.

    stl10_binary/class_names.txt   K names, one a line (airplane, bird, car, ...)
    stl10_binary/{train,test}_X.bin   N x 3 x 96 x 96 uint8, each image column-major (x before y)
    stl10_binary/{train,test}_y.bin   N uint8 labels, 1..K
    stl10_binary/unlabeled_X.bin      100,000 images, no labels

The images are read and written one at a time (the unlabelled split alone is 2.6 GB decoded), as PNGs
at their native 96 px: train/<class>/, test/<class>/ and unlabelled/ of the layout.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from .data import UNLABELLED, LayoutError
from .io import FULL

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE  # 27,648
X_MEMBERS = {"train": "train_X.bin", "test": "test_X.bin", UNLABELLED: "unlabeled_X.bin"}
Y_MEMBERS = {"train": "train_y.bin", "test": "test_y.bin"}
NAMES = "class_names.txt"


def to_hwc(raw: bytes) -> np.ndarray:
    """One image's 27,648 bytes (3 x 96 x 96, column-major) as uint8 96 x 96 x 3, row-major."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(3, SIDE, SIDE).transpose(2, 1, 0)


def _open(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LayoutError(f"{archive}: not a readable stl10_binary.tar.gz ({exc})") from None


def _small_members(archive: Path) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    """Pass 1: every member's header, and the bytes of the label files and class names (kilobytes)."""
    infos: dict[str, tarfile.TarInfo] = {}
    small: dict[str, bytes] = {}
    try:
        with _open(archive) as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and base in (*X_MEMBERS.values(), *Y_MEMBERS.values(), NAMES):
                    infos[base] = member
                    if base in (NAMES, *Y_MEMBERS.values()):
                        small[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LayoutError(f"{archive}: not a readable stl10_binary.tar.gz (truncated? {exc})") from None
    return infos, small


def read_plan(archive: Path, limit_per_class: int | None):
    """Check the archive's members against each other; (class names, {split: labels or None}, infos).
    Labels are 0-based; with limit_per_class, the first that many images of each class (and that many
    times K unlabelled images) are kept."""
    if not archive.is_file():
        raise LayoutError(f"{archive}: STL-10 archive not found (data.stl10_archive)")
    infos, small = _small_members(archive)
    expected = [NAMES, *X_MEMBERS.values(), *Y_MEMBERS.values()]
    missing = [m for m in expected if m not in infos]
    if missing:
        raise LayoutError(f"{archive}: expected stl10_binary/{{{', '.join(expected)}}}, missing {', '.join(missing)}")
    names = small[NAMES].decode("utf-8", "replace").split()
    if not names:
        raise LayoutError(f"{archive}: {infos[NAMES].name}: expected one class name a line, found none")
    counts = {}
    for split, member in X_MEMBERS.items():
        size = infos[member].size
        if size == 0 or size % IMAGE_BYTES:
            raise LayoutError(f"{archive}: {infos[member].name}: expected a multiple of {IMAGE_BYTES} bytes "
                              f"(3 x 96 x 96 images), found {size} (truncated, or not STL-10)")
        counts[split] = size // IMAGE_BYTES
    labels = {}
    for split, member in Y_MEMBERS.items():
        y = np.frombuffer(small[member], dtype=np.uint8).astype(np.int64)
        if len(y) != counts[split]:
            raise LayoutError(f"{archive}: {infos[member].name}: expected {counts[split]} labels "
                              f"(one per image of {X_MEMBERS[split]}), found {len(y)}")
        if len(y) and (y.min() < 1 or y.max() > len(names)):
            raise LayoutError(f"{archive}: {infos[member].name}: expected labels 1..{len(names)} "
                              f"({NAMES} has {len(names)}), found {y.min()}..{y.max()}")
        labels[split] = y - 1
    keep = {split: np.ones(counts[split], dtype=bool) for split in counts}
    if limit_per_class:
        for split, y in labels.items():
            keep[split] = np.zeros(len(y), dtype=bool)
            for c in range(len(names)):
                keep[split][np.flatnonzero(y == c)[:limit_per_class]] = True
        keep[UNLABELLED][limit_per_class * len(names):] = False
    return names, labels, keep, infos


def write_layout(archive: Path, out: Path, limit_per_class: int | None = None) -> list[str]:
    """The archive as a layout in `out` (an empty folder); returns the class names."""
    names, labels, keep, infos = read_plan(archive, limit_per_class)
    (out / "class.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(names)))
    for split in labels:
        for name in names:
            (out / split / name).mkdir(parents=True)
    (out / UNLABELLED).mkdir()
    by_member = {member: split for split, member in X_MEMBERS.items()}
    try:
        with _open(archive) as tar:  # pass 2: the images, in archive order, one at a time
            for member in tar:
                split = by_member.get(Path(member.name).name)
                if split is None or not member.isfile():
                    continue
                stream = tar.extractfile(member)
                for i in range(member.size // IMAGE_BYTES):
                    raw = stream.read(IMAGE_BYTES)
                    if len(raw) != IMAGE_BYTES:
                        raise LayoutError(f"{archive}: {member.name}: image {i} is cut short "
                                          f"({len(raw)} of {IMAGE_BYTES} bytes): the archive is truncated")
                    if not keep[split][i]:
                        continue
                    folder = out / split / (names[labels[split][i]] if split in labels else "")
                    Image.fromarray(to_hwc(raw), "RGB").save(folder / f"{i:06d}.png", optimize=False)
    except (tarfile.TarError, OSError, EOFError) as exc:
        if getattr(exc, "errno", None) in FULL:  # the output's disk, not the archive: io.atomic_dir says so
            raise
        raise LayoutError(f"{archive}: not a readable stl10_binary.tar.gz (truncated? {exc})") from None
    return names


def download(into: Path) -> Path:
    """Fetch stl10_binary.tar.gz through torchvision (needs a network; 2.6 GB)."""
    from torchvision.datasets import STL10
    from torchvision.datasets.utils import download_url

    download_url(STL10.url, str(into), STL10.filename, STL10.tgz_md5)
    return into / STL10.filename
