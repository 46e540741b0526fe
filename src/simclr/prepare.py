"""Stage `prepare`: materialise a dataset in the layout under data/<source>/.

digits  - scikit-learn's bundled 8x8 handwritten digits, stratified train/test split, 32x32 RGB PNGs.
cifar10 - the CIFAR-10 python pickles (a local cifar-10-python.tar.gz, or downloaded via torchvision).
stl10   - STL-10's binary archive (stl10.py): train, test and the 100,000-image unlabelled/ split, at 96 px.
folder  - an existing layout elsewhere: nothing is copied, a pointer to it is left in data/folder/.
"""
from __future__ import annotations

import json
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from . import io, stl10
from .data import POINTER, LayoutError, resized

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_layout(out: Path, classes: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]], size: int) -> None:
    """Write uint8 N x H x W x 3 arrays as PNGs in the layout, plus class.txt."""
    (out / "class.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(classes)))
    for split, (images, labels) in splits.items():
        for name in classes:
            (out / split / name).mkdir(parents=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            resized(Image.fromarray(img, "RGB"), size).save(out / split / classes[label] / f"{i:05d}.png", optimize=False)


def limit_per_class(images: np.ndarray, labels: np.ndarray, limit: int):
    """The first `limit` images of each class, in their original order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)])
    keep.sort()
    return images[keep], labels[keep]


def digits_splits(test_fraction: float, seed: int, size: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    gray = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # N x 8 x 8
    big = np.stack([np.asarray(resized(Image.fromarray(g, "L"), size)) for g in gray])
    rgb = np.repeat(big[..., None], 3, axis=-1)
    idx = np.arange(len(rgb))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    train_idx.sort()
    test_idx.sort()
    y = digits.target.astype(np.int64)
    return {"train": (rgb[train_idx], y[train_idx]), "test": (rgb[test_idx], y[test_idx])}


# What the real archive's pickles hold: dicts, lists, bytes, str, ints and NumPy arrays. Nothing else
# is built while reading one, so a tampered archive cannot run code (pickle.load would run any).
# _codecs.encode is how Python 3 writes bytes under protocol 2 (encode(str, "latin1")), so an archive
# rewritten by Python 3 (a mirror, a subset tool) needs it; it only turns a string into bytes, and
# torch's weights_only unpickler allows it for the same reason.
NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler that builds only NumPy arrays besides Python's plain types."""

    def find_class(self, module: str, name: str):
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to build {module}.{name} (a CIFAR-10 batch holds only arrays, "
                                     "lists, dicts, bytes and numbers)")


def check_batch(archive: Path, member: str, batch) -> None:
    """A data or test batch: {b"data": uint8 N x 3072, b"labels": N ints in 0..9}, else one LayoutError."""
    where = f"{archive}: {member}"
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise LayoutError(f"{where}: expected a dict with b'data' and b'labels', found {found}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise LayoutError(f"{where}: expected b'data' as uint8 N x 3072 (32 x 32 x 3), found {shape}")
    if not isinstance(labels, list) or len(labels) != len(data) or \
            not all(isinstance(v, int) and 0 <= v < 10 for v in labels):
        raise LayoutError(f"{where}: expected b'labels' as {len(data)} integers in 0..9, found "
                          f"{type(labels).__name__} of {len(labels) if hasattr(labels, '__len__') else '?'}")


def read_cifar10_archive(archive: Path):
    """The CIFAR-10 python tarball -> {split: (uint8 N x 32 x 32 x 3, labels)}, class names."""
    if not archive.is_file():
        raise LayoutError(f"{archive}: CIFAR-10 archive not found (data.cifar10_archive)")
    batches: dict[str, dict] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                base = Path(member.name).name
                if member.isfile() and (base.startswith("data_batch_") or base in ("test_batch", "batches.meta")):
                    try:
                        batches[base] = CifarUnpickler(tar.extractfile(member), encoding="bytes").load()
                    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
                        raise LayoutError(f"{archive}: {member.name}: not a CIFAR-10 batch ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LayoutError(f"{archive}: not a readable cifar-10-python.tar.gz ({exc})") from None
    train_names = sorted(n for n in batches if n.startswith("data_batch_"))
    if not train_names or "test_batch" not in batches:
        raise LayoutError(f"{archive}: expected data_batch_* and test_batch inside, found {sorted(batches)}")
    for name in (*train_names, "test_batch"):
        check_batch(archive, name, batches[name])
    meta = batches.get("batches.meta", {})
    labels = meta.get(b"label_names", []) if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not all(isinstance(n, bytes) for n in labels) or len(labels) not in (0, 10):
        raise LayoutError(f"{archive}: batches.meta: expected b'label_names' as 10 byte strings, found {labels!r:.80}")
    names = [n.decode() for n in labels] or CIFAR10_NAMES

    def arrays(parts):
        x = np.concatenate([p[b"data"] for p in parts])
        y = np.concatenate([np.asarray(p[b"labels"], dtype=np.int64) for p in parts])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y

    return {"train": arrays([batches[n] for n in train_names]), "test": arrays([batches["test_batch"]])}, names


def download_cifar10(into: Path) -> Path:
    """Fetch cifar-10-python.tar.gz through torchvision (needs a network)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_url

    download_url(CIFAR10.url, str(into), CIFAR10.filename, CIFAR10.tgz_md5)
    return into / CIFAR10.filename


def missing_folder(folder: str | Path) -> str | None:
    """The one line to show when data.folder is not there yet (None when it is)."""
    if Path(folder).is_dir():
        return None
    return (f"data.folder: {folder}: expected a dataset in the class.txt/train/test layout, found "
            f"{'a file' if Path(folder).exists() else 'nothing'} (docs/data.md); for the CIFAR-10 JPEG copy: "
            "mkdir -p data/cifar10-jpg && tar -xzf cifar10-jpg.tar.gz -C data/cifar10-jpg")


def prepare(params: dict, out: Path) -> Path:
    cfg = params["data"]
    if cfg["source"] == "folder":
        folder = Path(cfg["folder"])
        if missing_folder(folder):
            raise LayoutError(missing_folder(folder))
        with io.atomic_dir(out) as tmp:
            (tmp / POINTER).write_text(json.dumps({"folder": str(folder)}, indent=2) + "\n")
        return out
    if cfg["source"] == "stl10":
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(cfg["stl10_archive"]) if cfg["stl10_archive"] else stl10.download(Path(tmp))
            with io.atomic_dir(out) as target:
                stl10.write_layout(archive, target, cfg["limit_per_class"])
        return out
    if cfg["source"] == "digits":
        splits, classes = digits_splits(cfg["test_fraction"], cfg["seed"], cfg["image_size"]), DIGIT_NAMES
    else:
        if cfg["cifar10_archive"]:
            splits, classes = read_cifar10_archive(Path(cfg["cifar10_archive"]))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                splits, classes = read_cifar10_archive(download_cifar10(Path(tmp)))
    if cfg["limit_per_class"]:
        splits = {split: limit_per_class(*arrays, cfg["limit_per_class"]) for split, arrays in splits.items()}
    with io.atomic_dir(out) as tmp:
        write_layout(tmp, classes, splits, cfg["image_size"])
    return out
