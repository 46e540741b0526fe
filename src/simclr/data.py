"""The dataset layout: class.txt parsing, listing a split, decoding one image, the content hashes.

    <root>/class.txt              "<class_name> <index>" per line, indices 0..K-1
    <root>/train/<class_name>/*   images (PNG, JPEG, ... anything Pillow decodes)
    <root>/test/<class_name>/*
    <root>/unlabelled/**          optional: images without labels (flat or in any sub-folders), for pretrain

Decoding whole splits into the memory-mapped cache is cache.py's; feeding them to training is feed.py's.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import io
from .errors import UserError

SPLITS = ("train", "test")  # the labelled splits: extract and probe use these only
UNLABELLED = "unlabelled"    # optional; its label is NO_LABEL
NO_LABEL = -1
LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}
# A folder-source dataset is not copied: prepare leaves this pointer in data/folder/.
POINTER = "simclr-folder.json"


class LayoutError(UserError):
    """A dataset that does not follow the layout; str() is one `<path>: <problem>` line per problem."""


def is_litter(name: str) -> bool:
    """Hidden files and OS litter, which the layout ignores."""
    return name.startswith(".") or name in LITTER


@dataclass(frozen=True)
class ClassLine:
    name: str
    index: int
    lineno: int


def parse_class_txt(path: Path) -> tuple[list[ClassLine], list[str]]:
    """Parse class.txt; return (lines, problems). Tolerates a UTF-8 BOM, CRLF, blank lines, trailing spaces."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [f"cannot read: {exc.strerror}"]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], ["not UTF-8 text"]
    lines: list[ClassLine] = []
    problems: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(f"line {lineno}: expected '<class_name> <index>', found {line.strip()!r}")
            continue
        name, index = fields
        try:
            lines.append(ClassLine(name, int(index), lineno))
        except ValueError:
            problems.append(f"line {lineno}: expected an integer index, found {index!r}")
    if not lines and not problems:
        problems.append("empty: expected one '<class_name> <index>' line per class")
        return lines, problems
    seen_names: dict[str, int] = {}
    seen_index: dict[int, int] = {}
    for cl in lines:
        if cl.name in seen_names:
            problems.append(f"line {cl.lineno}: duplicate class name {cl.name!r} (first on line {seen_names[cl.name]})")
        seen_names.setdefault(cl.name, cl.lineno)
        if cl.index in seen_index:
            problems.append(f"line {cl.lineno}: duplicate index {cl.index} (first on line {seen_index[cl.index]})")
        seen_index.setdefault(cl.index, cl.lineno)
    indices = sorted(seen_index)
    if not problems and indices != list(range(len(lines))):
        problems.append(f"indices must be exactly 0..{len(lines) - 1}, found {indices}")
    return lines, problems


def read_classes(root: Path) -> list[str]:
    """Class names ordered by index; raises LayoutError naming class.txt when it is malformed."""
    path = Path(root) / "class.txt"
    if not path.is_file():
        raise LayoutError(f"{path}: class.txt not found")
    lines, problems = parse_class_txt(path)
    if problems:
        raise LayoutError("\n".join(f"{path}: {p}" for p in problems))
    return [cl.name for cl in sorted(lines, key=lambda cl: cl.index)]


def resolve_root(root: str | Path) -> Path:
    """The dataset root; a prepared folder-source pointer leads to the folder it names."""
    root = Path(root)
    pointer = root / POINTER
    if pointer.is_file() and not (root / "class.txt").exists():
        return Path(io.read_json(pointer, "a folder-source pointer", keys=("folder",))["folder"])
    return root


def list_unlabelled(root: Path) -> list[Path]:
    """Image files under root/unlabelled/, at any depth, ordered by their path inside it (litter skipped)."""
    folder = Path(root) / UNLABELLED
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.rglob("*")
                   if p.is_file() and not any(is_litter(part) for part in p.relative_to(folder).parts)),
                  key=lambda p: p.relative_to(folder).as_posix())


def list_split(root: Path, split: str, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image files of a split in a fixed order (class index, then file name) and their labels
    (unlabelled: path order, every label NO_LABEL)."""
    if split == UNLABELLED:
        files = list_unlabelled(root)
        return files, np.full(len(files), NO_LABEL, dtype=np.int64)
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = Path(root) / split / name
        entries = sorted(p for p in folder.iterdir() if not is_litter(p.name) and p.is_file())
        files += entries
        labels += [label] * len(entries)
    return files, np.asarray(labels, dtype=np.int64)


def present_splits(root: Path) -> tuple[str, ...]:
    """The splits a layout has: train and test, and unlabelled when its folder exists."""
    return SPLITS + ((UNLABELLED,) if (Path(root) / UNLABELLED).is_dir() else ())


def hash_line(root: Path, split: str, path: Path, file_sha: str) -> bytes:
    """One image's line in the content hashes: split, class (or path inside unlabelled/), file name, bytes' sha256."""
    where = Path(path).relative_to(Path(root) / split).as_posix()
    return f"{split}/{where}\0{file_sha}\n".encode()


def split_hash(lines) -> str:
    """A split's own content hash (the manifest's splits.<split>.content_hash), of its hash_line()s in order."""
    digest = hashlib.sha256(b"simclr-split-v1\n")
    for line in lines:
        digest.update(line)
    return digest.hexdigest()


def resized(img: Image.Image, size: int) -> Image.Image:
    """img at size x size by PIL bilinear, only when its size differs: the one resize of the project
    (prepare writes with it, decode loads with it, encoder.preprocess feeds new images with it)."""
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def short_side_crop(img: Image.Image, size: int) -> Image.Image:
    """The short side resized to `size` (aspect kept, PIL bilinear), then the centre size x size,
    as torchvision's Resize(size) + CenterCrop(size) place them: model.stored_size's decode."""
    w, h = img.size
    if min(w, h) != size:
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        img = img.resize((nw, nh), Image.BILINEAR)
        w, h = nw, nh
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return img if (w, h) == (size, size) else img.crop((left, top, left + size, top + size))


def decode_image(img: Image.Image, size: int, crop: bool = False) -> np.ndarray:
    """An opened image as uint8 H x W x 3 RGB at size x size: squashed (crop False: model.stored_size
    null, the input size) or short side + centre crop (crop True: model.stored_size)."""
    rgb = img.convert("RGB")
    return np.asarray(short_side_crop(rgb, size) if crop else resized(rgb, size), dtype=np.uint8)


def decode(path: Path, size: int, crop: bool = False) -> np.ndarray:
    """One image file as uint8 H x W x 3 RGB at size x size (see decode_image)."""
    try:
        with Image.open(path) as img:
            return decode_image(img, size, crop)
    except OSError as exc:  # missing, unreadable or not an image (PIL's UnidentifiedImageError is an OSError)
        raise LayoutError(f"{path}: cannot decode image: {exc.strerror or exc}") from None


def layout_hash(root: Path, classes: list[str]) -> str:
    """The layout's content hash as it is now, as validate computes the manifest's content_hash:
    class.txt's bytes, then every image's hash_line in listing order (train, test, then unlabelled
    when present: a layout without it hashes as before it existed)."""
    digest = hashlib.sha256(b"simclr-layout-v1\n")
    digest.update((Path(root) / "class.txt").read_bytes())
    for split in present_splits(root):
        files, _ = list_split(root, split, classes)
        for path in files:
            digest.update(hash_line(root, split, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return digest.hexdigest()


_VERIFIED: set[tuple[str, str]] = set()  # (root, content hash) checked by this process


def check_unchanged(root: Path, classes: list[str], manifest: dict) -> None:
    """Refuse a dataset whose bytes changed since validate (an image replaced by another, same count)."""
    key = (str(root), manifest["content_hash"])
    if key in _VERIFIED:
        return
    if layout_hash(root, classes) != manifest["content_hash"]:
        raise LayoutError(f"{root}: its files changed since validate wrote the manifest (the same "
                          f"{sum(s.get('images', 0) for s in manifest.get('splits', {}).values())} images listed, "
                          "other bytes: the content hash no longer matches); run validate again")
    _VERIFIED.add(key)


def read_manifest(path: str | Path) -> dict:
    """The manifest `simclr validate` wrote; anything else is a UserError naming the file."""
    return io.read_json(path, "a dataset manifest (simclr validate)", keys=("content_hash", "root", "classes", "splits"))
