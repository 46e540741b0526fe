"""The decode cache: each split decoded once into one memory-mapped uint8 array on disk.

    <cache>/<hash>-<split>-<size>[c]-v2.npy          images, N x 3 x S x S uint8 (NumPy's .npy format)
    <cache>/<hash>-<split>-<size>[c]-v2.labels.npy   labels, N int64 (unlabelled: -1)

<hash> is the split's content hash from the manifest, <size> the stored side (model.stored_size, else
model.input_size) and `c` marks the short-side + centre-crop decode. A changed dataset has a new hash and
so a new entry; delete the folder freely. Building an entry:

- one read per file: a process pool reads each file's bytes, hashes them (checked against the
  manifest's split hash, so a dataset changed since validate is refused) and decodes them from the
  same bytes, writing the pixels straight into the file at their row (os.pwrite, no mapping);
- peak resident memory: the parent holds the file list and one hash per image (measured: 0.8 KiB
  per image with the paths and the pool's bookkeeping, whatever the image size, above the 283 MiB
  that importing torch takes); each worker one image at a time and its chunk's list. The pixels go
  to the page cache, which the kernel evicts under pressure, never to the processes' own memory
  (benchmarks/decode_scale.py measures it);
- one builder: an flock on <entry>.lock; every other process (a DDP rank, a second stage) waits for
  it and then maps the finished file;
- atomic: the pixels are written to a temp file renamed into place once checked, then the labels.

A hit maps the file copy-on-write (np.load mmap_mode="c"): nothing is read until a row is touched.
An entry that does not match what the manifest says (older format, other shape, truncated, not a .npy)
is rebuilt, never trusted. Entries of the earlier format (<hash>-<split>-<size>.pt, torch.save of one
tensor) are never read.
"""
from __future__ import annotations

import fcntl
import hashlib
import io as _io
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from . import io
from .data import (LayoutError, check_unchanged, decode_image, hash_line, list_split, read_classes,
                   resolve_root, split_hash)

FORMAT = 2
POOL_MIN_FILES = 2000  # below this, decoding in this process is faster than starting a pool


def cache_dir() -> Path:
    """Where decoded splits (and, by default, pretrain's checkpoints) are kept: $SIMCLR_CACHE, else
    $XDG_CACHE_HOME/simclr, else ~/.cache/simclr. Outside any workspace, so every checkout, Snakemake
    run and DVC experiment (queued ones run in temporary workspaces) shares it; entries are keyed by
    content, so sharing is safe."""
    if os.environ.get("SIMCLR_CACHE"):
        return Path(os.environ["SIMCLR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simclr"


def stored(model: dict) -> tuple[int, bool]:
    """(side, crop) of the stored images: model.stored_size with the aspect-keeping crop, else
    model.input_size squashed (the behaviour before stored_size existed)."""
    if model.get("stored_size"):
        return model["stored_size"], True
    return model["input_size"], False


def workers() -> int:
    """The cores this process may use (sched_getaffinity: a Snakemake job or a SLURM step may get fewer)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def entry(manifest: dict, split: str, size: int, crop: bool) -> Path:
    key = manifest["splits"].get(split, {}).get("content_hash") or manifest["content_hash"]
    return cache_dir() / f"{key[:32]}-{split}-{size}{'c' if crop else ''}-v{FORMAT}.npy"


def _labels_path(path: Path) -> Path:
    return path.with_name(path.name[:-4] + ".labels.npy")


@contextmanager
def _locked(path: Path):
    """An exclusive flock on <path>.lock, held while one process builds the entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process builds
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _open(path: Path, n: int | None, size: int):
    """(images, labels) of a finished entry, mapped; None when it is missing or not what it must be."""
    labels_path = _labels_path(path)
    if not path.is_file() or not labels_path.is_file():
        return None
    try:
        images = np.load(path, mmap_mode="c")  # copy-on-write map; allow_pickle stays False
        labels = np.load(labels_path)
    except (OSError, ValueError, EOFError):
        return None
    if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size)
            or labels.dtype != np.int64 or labels.shape != images.shape[:1]
            or (n is not None and len(labels) != n)):
        return None
    return images, labels


def _decode_rows(task) -> list[tuple[int, str | None, str | None]]:
    """Decode (row, path) items into the open .npy at `out`: [(row, file sha256, problem or None)]."""
    out, offset, size, crop, items = task
    from PIL import Image

    row_bytes = 3 * size * size
    done = []
    fd = os.open(out, os.O_WRONLY)
    try:
        for row, path in items:
            try:
                data = Path(path).read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                with Image.open(_io.BytesIO(data)) as img:
                    pixels = decode_image(img, size, crop).transpose(2, 0, 1)  # H x W x 3 -> 3 x H x W
            except OSError as exc:
                if getattr(exc, "errno", None) in io.FULL:
                    raise
                done.append((row, None, f"{path}: cannot decode image: {exc.strerror or exc}"))
                continue
            except (SyntaxError, ValueError) as exc:  # Pillow's other errors for broken files
                done.append((row, None, f"{path}: cannot decode image: {exc}"))
                continue
            os.pwrite(fd, np.ascontiguousarray(pixels).tobytes(), offset + row * row_bytes)
            done.append((row, sha, None))
    finally:
        os.close(fd)
    return done


def _decode_all(out: Path, offset: int, size: int, crop: bool, files: list[Path]) -> list[str]:
    """Every file decoded into `out` (one pool over the allowed cores); their sha256s in order."""
    items = [(row, str(p)) for row, p in enumerate(files)]
    n_workers = workers()
    if n_workers == 1 or len(items) < POOL_MIN_FILES:
        results = _decode_rows((out, offset, size, crop, items))
    else:
        chunk = max(64, len(items) // (n_workers * 8))
        tasks = [(out, offset, size, crop, items[i:i + chunk]) for i in range(0, len(items), chunk)]
        # spawn: the parent may hold CUDA or OpenMP threads, which a fork would copy mid-state
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn")) as pool:
            results = [r for part in pool.map(_decode_rows, tasks) for r in part]
    problems = [problem for _, _, problem in results if problem]
    if problems:
        raise LayoutError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    shas = [""] * len(files)
    for row, sha, _ in results:
        shas[row] = sha
    return shas


def _build(manifest: dict, split: str, size: int, crop: bool, path: Path) -> None:
    root = resolve_root(manifest["root"])
    classes = read_classes(root)
    files, labels = list_split(root, split, classes)
    listed = manifest.get("splits", {}).get(split, {}).get("images")
    if listed is not None and listed != len(files):
        raise LayoutError(f"{root / split}: expected the {listed} images the manifest lists, found {len(files)}; "
                          "the dataset changed since validate: run validate again")
    if not files:
        raise LayoutError(f"{root / split}: no images")
    with io.atomic_path(path, suffix=".npy") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
        offset = images.offset  # the header's length: row r starts at offset + r x 3 x S x S
        images.flush()
        del images  # the parent maps nothing: workers write with pwrite
        shas = _decode_all(tmp, offset, size, crop, files)
        expected = manifest["splits"].get(split, {}).get("content_hash")
        if expected is None:  # a manifest from before per-split hashes: the whole layout's hash
            check_unchanged(root, classes, manifest)
        elif split_hash(hash_line(root, split, p, sha) for p, sha in zip(files, shas)) != expected:
            raise LayoutError(f"{root / split}: its files changed since validate wrote the manifest (the same "
                              f"{len(files)} images listed, other bytes: the content hash no longer matches); "
                              "run validate again")
    with io.atomic_path(_labels_path(path), suffix=".npy") as tmp:  # last: an entry is whole once both exist
        np.save(tmp, labels)


def load_split(manifest: dict, split: str, size: int, crop: bool = False):
    """A whole split as (uint8 tensor N x 3 x size x size mapped from the cache, int64 labels N, class names).

    Decoded once per (split hash, size, crop); a later call, in any process, maps the entry. The
    tensor is backed by the file (copy-on-write): indexing it reads only the rows it touches."""
    import torch  # here, not at the top: the decode workers import this module and need no torch

    path = entry(manifest, split, size, crop)
    n = manifest.get("splits", {}).get(split, {}).get("images")
    found = _open(path, n, size)
    if found is None:
        with _locked(path):
            found = _open(path, n, size)  # another process may have built it while this one waited
            if found is None:
                _build(manifest, split, size, crop, path)
                found = _open(path, n, size)
    images, labels = found
    return torch.from_numpy(images), torch.from_numpy(labels), list(manifest["classes"])
