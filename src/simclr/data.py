"""The dataset layout: class.txt parsing, listing a split, decoding images into uint8 tensors.

    <root>/class.txt              "<class_name> <index>" per line, indices 0..K-1
    <root>/train/<class_name>/*   images (PNG, JPEG, ... anything Pillow decodes)
    <root>/test/<class_name>/*
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

SPLITS = ("train", "test")
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


def list_split(root: Path, split: str, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image files of a split in a fixed order (class index, then file name) and their labels."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = Path(root) / split / name
        entries = sorted(p for p in folder.iterdir() if not is_litter(p.name) and p.is_file())
        files += entries
        labels += [label] * len(entries)
    return files, np.asarray(labels, dtype=np.int64)


def resized(img: Image.Image, size: int) -> Image.Image:
    """img at size x size by PIL bilinear, only when its size differs: the one resize of the project
    (prepare writes with it, decode loads with it, encoder.preprocess feeds new images with it)."""
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 H x W x 3 RGB at size x size (antialiased resize only when it differs)."""
    try:
        with Image.open(path) as img:
            return np.asarray(resized(img.convert("RGB"), size), dtype=np.uint8)
    except OSError as exc:  # missing, unreadable or not an image (PIL's UnidentifiedImageError is an OSError)
        raise LayoutError(f"{path}: cannot decode image: {exc.strerror or exc}") from None


def layout_hash(root: Path, classes: list[str]) -> str:
    """The layout's content hash as it is now, as validate computes the manifest's content_hash:
    class.txt's bytes, then every image's split, class, file name and bytes, in listing order."""
    digest = hashlib.sha256(b"simclr-layout-v1\n")
    digest.update((Path(root) / "class.txt").read_bytes())
    for split in SPLITS:
        files, labels = list_split(root, split, classes)
        for path, label in zip(files, labels):
            digest.update(f"{split}/{classes[label]}/{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
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


def cache_dir() -> Path:
    """Where decoded splits (and, by default, pretrain's checkpoints) are kept: $SIMCLR_CACHE, else
    $XDG_CACHE_HOME/simclr, else ~/.cache/simclr. Outside any workspace, so every checkout, Snakemake
    run and DVC experiment (queued ones run in temporary workspaces) shares it; entries are keyed by
    content, so sharing is safe."""
    if os.environ.get("SIMCLR_CACHE"):
        return Path(os.environ["SIMCLR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simclr"


def load_split(manifest: dict, split: str, size: int):
    """A whole split as (uint8 tensor N x 3 x size x size, int64 labels N, class names).

    Decoded once and cached by the manifest's content hash, split and size, so epochs and stages
    reuse it; a changed dataset has a new hash and so a new cache entry. Delete the folder freely.
    """
    import torch  # here, not at the top: validate imports this module and needs no torch

    path = cache_dir() / f"{manifest['content_hash'][:32]}-{split}-{size}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
            return cached["images"], cached["labels"], list(manifest["classes"])
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
    root = resolve_root(manifest["root"])
    classes = read_classes(root)
    files, labels = list_split(root, split, classes)
    listed = manifest.get("splits", {}).get(split, {}).get("images")
    if listed is not None and listed != len(files):
        raise LayoutError(f"{root / split}: expected the {listed} images the manifest lists, found {len(files)}; "
                          "the dataset changed since validate: run validate again")
    if not files:
        raise LayoutError(f"{root / split}: no images")
    images = np.stack([decode(p, size) for p in files])  # N x H x W x 3
    check_unchanged(root, classes, manifest)  # after decoding (which names a broken file); a cache hit is
    # trusted: its key is this very hash
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels)
    io.save_torch(path, {"images": images, "labels": labels})
    return images, labels, classes
