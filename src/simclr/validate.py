"""Stage `validate`: check a dataset against the layout and write its manifest.

The optional unlabelled/ split is checked like the others (every image decoded once, the same
errors) and hashed into the manifest; it needs no class.txt entry, and a class-named folder inside it
is refused (those images belong in train/<class>/).

Every problem is collected (not only the first) as `error: <path>: <problem>`; with any error no
manifest is written and an earlier one is left as it was. Warnings (`warning: <path>: <problem>`)
do not fail the stage and are recorded in the manifest.

The manifest is deterministic JSON: the same dataset gives the same bytes. Its content_hash covers
class.txt and every image's bytes and relative path, not file times, so downstream stages (which
depend on the manifest) rerun exactly when the data changes.
"""
from __future__ import annotations

import hashlib
import io as _io
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import io
from .data import SPLITS, UNLABELLED, LayoutError, hash_line, is_litter, parse_class_txt, resolve_root, split_hash

EXAMPLES = 5  # paths quoted per warning
POOL_MIN_FILES = 2000  # below this, decoding in one process is faster than starting a pool


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manifest: dict | None = None

    def error(self, path, problem: str) -> None:
        self.errors.append(f"{path}: {problem}")

    def warn(self, path, problem: str) -> None:
        self.warnings.append(f"{path}: {problem}")


def inspect_image(path: str) -> tuple[str, str | None, dict | None]:
    """Decode one file fully with Pillow: (path, problem or None, facts or None)."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return path, f"cannot read: {exc.strerror}", None
    if not data:
        return path, "zero-byte file", None
    try:
        with Image.open(_io.BytesIO(data)) as img:
            img.load()  # decodes every pixel: truncation and corruption surface here
            facts = {
                "size": f"{img.size[0]}x{img.size[1]}",
                "mode": img.mode,
                "file_sha": hashlib.sha256(data).hexdigest(),
                "pixel_sha": hashlib.sha256(
                    img.mode.encode() + repr(img.size).encode() + img.tobytes()
                ).hexdigest(),
            }
    except UnidentifiedImageError:
        return path, "not an image (Pillow cannot identify the content)", None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        return path, f"corrupt or truncated image ({type(exc).__name__}: {exc})", None
    return path, None, facts


def _inspect_many(paths: list[str]) -> list[tuple[str, str | None, dict | None]]:
    return [inspect_image(p) for p in paths]


def _decode_all(paths: list[str], workers: int) -> dict[str, tuple[str | None, dict | None]]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < POOL_MIN_FILES:
        results = _inspect_many(paths)
    else:
        size = max(64, len(paths) // (workers * 8))
        chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = [r for part in pool.map(_inspect_many, chunks) for r in part]
    return {p: (problem, facts) for p, problem, facts in results}


def _check_link(report: Report, path: Path, real_root: Path) -> bool:
    """True if path is usable: not a dangling symlink nor one leading outside the root."""
    if not path.is_symlink():
        return True
    target = os.readlink(path)
    if not path.exists():
        report.error(path, f"symlink points nowhere (-> {target})")
        return False
    resolved = path.resolve()
    if resolved != real_root and real_root not in resolved.parents:
        report.error(path, f"symlink points outside the dataset root (-> {resolved})")
        return False
    return True


def _examples(paths) -> str:
    paths = sorted(paths)
    more = f", ... ({len(paths) - EXAMPLES} more)" if len(paths) > EXAMPLES else ""
    return ", ".join(str(p) for p in paths[:EXAMPLES]) + more


def _scan_class(report: Report, folder: Path, real_root: Path, litter: list) -> list[Path]:
    """Candidate image files of one class folder; nested files and bad links are reported."""
    files = []
    for entry in sorted(folder.iterdir()):
        if is_litter(entry.name):
            litter.append(entry)
            continue
        if not _check_link(report, entry, real_root):
            continue
        if entry.is_dir():
            nested = [p for p in sorted(entry.rglob("*")) if not p.is_dir() and not is_litter(p.name)]
            for p in nested:
                report.error(p, f"file nested deeper than the layout allows (expected {folder}/<image>)")
            if not nested:
                report.warn(entry, "empty sub-folder inside a class folder (ignored)")
            continue
        if entry.is_file():
            files.append(entry)
        else:
            report.error(entry, "not a regular file")
    return files


def _scan_unlabelled(report: Report, root: Path, real_root: Path, classes: list[str], lineno: dict,
                     litter: list) -> list[Path] | None:
    """Image files of the optional unlabelled/ split (flat or in sub-folders); None when it is absent."""
    folder = root / UNLABELLED
    if not folder.exists() and not folder.is_symlink():
        return None
    if not _check_link(report, folder, real_root):
        return None
    if not folder.is_dir():
        report.error(folder, "not a directory (expected unlabelled/<images>, flat or in sub-folders)")
        return None
    files = []
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder)
        if any(is_litter(part) for part in rel.parts):
            if path.is_file() and not any(is_litter(part) for part in rel.parts[:-1]):
                litter.append(path)
            continue
        if not _check_link(report, path, real_root):
            continue
        if path.is_dir():
            if len(rel.parts) == 1 and rel.name in lineno:
                report.error(path, f"folder named like class {rel.name!r} (class.txt line {lineno[rel.name]}) "
                             f"inside unlabelled/: unlabelled images carry no class; labelled ones belong in "
                             f"train/{rel.name}/ (move them there, or rename the folder)")
            continue
        if path.is_file():
            files.append(path)
        else:
            report.error(path, "not a regular file")
    if not files:
        report.error(folder, "unlabelled split has no images (add images or remove the folder)")
    return files


def check(root: str | Path, imbalance_ratio: float = 10.0, workers: int = 0) -> Report:
    """Validate the dataset at root; Report.manifest is set only when there is no error."""
    report = Report()
    given = Path(root)
    root = resolve_root(given)
    if not root.exists():
        report.error(root, "dataset root not found")
        return report
    if not root.is_dir():
        report.error(root, "dataset root is not a directory")
        return report
    try:
        os.listdir(root)
    except OSError as exc:
        report.error(root, f"dataset root is not readable ({exc.strerror})")
        return report
    real_root = root.resolve()

    class_txt = root / "class.txt"
    classes: list[str] = []
    if not class_txt.is_file():
        hint = ""
        if all((root / split).is_dir() for split in SPLITS):  # an ImageFolder-style tree: say how to go on
            hint = f"; `simclr classes {root}` writes it from the sorted class folder names of train/ and test/"
        report.error(class_txt, f"class.txt not found (expected '<class_name> <index>' per line){hint}")
    else:
        lines, problems = parse_class_txt(class_txt)
        for p in problems:
            report.error(class_txt, p)
        classes = [cl.name for cl in sorted(lines, key=lambda cl: (cl.index, cl.lineno))]
        lineno = {cl.name: cl.lineno for cl in lines}

    if not classes:
        lineno = {}
    litter: list[Path] = []
    candidates: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            what = "not a directory" if split_dir.exists() else "missing"
            report.error(split_dir, f"split folder {what} (expected {split}/<class_name>/<images>)")
            continue
        if not _check_link(report, split_dir, real_root):
            continue
        candidates[split] = {}
        folders = {}
        for entry in sorted(split_dir.iterdir()):
            if is_litter(entry.name):
                litter.append(entry)
            elif not _check_link(report, entry, real_root):
                pass
            elif entry.is_dir():
                folders[entry.name] = entry
            else:
                report.error(entry, f"file outside any class folder (expected {split}/<class_name>/{entry.name})")
        for name in sorted(set(folders) - set(classes)):
            if classes or class_txt.is_file():
                report.error(folders[name], "folder is not a class listed in class.txt")
        for name in classes:
            if name not in folders:
                report.error(split_dir / name, f"class {name!r} (class.txt line {lineno[name]}) has no folder")
                continue
            files = _scan_class(report, folders[name], real_root, litter)
            if not files:
                report.error(folders[name], "class folder has no images")
            candidates[split][name] = files

    unlabelled = _scan_unlabelled(report, root, real_root, classes, lineno, litter)
    if unlabelled is not None:
        candidates[UNLABELLED] = {"": unlabelled}
    if litter:
        report.warn(root, f"{len(litter)} hidden or OS litter file(s) ignored: {_examples(litter)}")

    paths = [str(p) for split in candidates.values() for files in split.values() for p in files]
    decoded = _decode_all(paths, workers)
    for p in paths:
        problem, _ = decoded[p]
        if problem:
            report.error(p, problem)
    if report.errors:
        return report

    report.manifest = _manifest(report, given, root, class_txt, classes, candidates, decoded, imbalance_ratio)
    return report


def write_classes(root: Path) -> list[str]:
    """Write root/class.txt for a tree that has train/<class>/ and test/<class>/ but no class.txt:
    the class folder names, sorted, indexed from 0 (ImageFolder's order). Atomic; refuses to replace
    an existing class.txt or to guess when train/ and test/ disagree."""
    root = Path(root)
    target = root / "class.txt"
    if target.exists():
        raise LayoutError(f"{target}: already exists; remove it first to write a new one from the folder names")
    names = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise LayoutError(f"{folder}: expected a folder of class folders, found {'a file' if folder.exists() else 'nothing'}")
        names[split] = sorted(e.name for e in folder.iterdir() if e.is_dir() and not is_litter(e.name))
        if not names[split]:
            raise LayoutError(f"{folder}: expected class folders, found none")
    if names["train"] != names["test"]:
        only = {split: sorted(set(names[split]) - set(names[other])) for split, other in (("train", "test"), ("test", "train"))}
        raise LayoutError(f"{root}: expected the same class folders in train/ and test/, found "
                          + "; ".join(f"only in {split}/: {', '.join(n)}" for split, n in only.items() if n))
    spaced = [n for n in names["train"] if any(c.isspace() for c in n)]
    if spaced:
        raise LayoutError(f"{root / 'train'}: class folder names go into class.txt as '<name> <index>', "
                          f"expected no spaces, found {spaced[:EXAMPLES]}")
    io.write_text(target, "".join(f"{name} {i}\n" for i, name in enumerate(names["train"])))
    return names["train"]


def _split_facts(files: list[Path], decoded) -> tuple[Counter, Counter, dict[str, list[Path]]]:
    sizes: Counter = Counter()
    modes: Counter = Counter()
    by_pixels: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        facts = decoded[str(p)][1]
        sizes[facts["size"]] += 1
        modes[facts["mode"]] += 1
        by_pixels[facts["pixel_sha"]].append(p)
    return sizes, modes, by_pixels


def _manifest(report, given, root, class_txt, classes, candidates, decoded, imbalance_ratio) -> dict:
    digest = hashlib.sha256(b"simclr-layout-v1\n")
    digest.update(class_txt.read_bytes())
    splits = {}
    pixel_seen: dict[str, dict[str, list[Path]]] = {}
    all_sizes: Counter = Counter()
    present = [split for split in (*SPLITS, UNLABELLED) if split in candidates]
    for split in present:
        files = [p for name in (classes if split != UNLABELLED else [""]) for p in candidates[split][name]]
        lines = [hash_line(root, split, p, decoded[str(p)][1]["file_sha"]) for p in files]
        for line in lines:
            digest.update(line)
        sizes, modes, by_pixels = _split_facts(files, decoded)
        all_sizes.update(sizes)
        splits[split] = {
            "content_hash": split_hash(lines),
            "images": len(files),
            "sizes": dict(sorted(sizes.items())),
            "modes": dict(sorted(modes.items())),
        }
        pixel_seen[split] = by_pixels
        dups = [group for group in by_pixels.values() if len(group) > 1]
        if dups:
            extra = sum(len(g) - 1 for g in dups)
            report.warn(root / split, f"{extra} exact duplicate image(s) within the split: "
                        + "; ".join(_examples(g) for g in dups[:EXAMPLES]))
        if split != UNLABELLED:
            per_class = {name: len(candidates[split][name]) for name in classes}
            splits[split]["per_class"] = per_class
            counts = list(per_class.values())
            if min(counts) and max(counts) / min(counts) > imbalance_ratio:
                big = max(per_class, key=per_class.get)
                small = min(per_class, key=per_class.get)
                report.warn(root / split, f"unbalanced classes: {big!r} has {per_class[big]} images, "
                            f"{small!r} {per_class[small]} (ratio above {imbalance_ratio:g})")
        odd_modes = {m: n for m, n in modes.items() if m != "RGB"}
        if odd_modes:
            examples = [p for p in files if decoded[str(p)][1]["mode"] != "RGB"]
            report.warn(root / split, f"non-RGB images (converted to RGB when loaded): "
                        f"{', '.join(f'{n} {m}' for m, n in sorted(odd_modes.items()))}: {_examples(examples)}")
    common, _ = all_sizes.most_common(1)[0]
    for split in present:
        odd = [p for group in candidates[split].values() for p in group if decoded[str(p)][1]["size"] != common]
        if odd:
            report.warn(root / split, f"{len(odd)} image(s) not {common} like the majority "
                        f"(resized when loaded): {_examples(odd)}")
    for other in ("train", UNLABELLED):
        if other not in pixel_seen:
            continue
        leaked = sorted(set(pixel_seen[other]) & set(pixel_seen["test"]))
        if leaked:
            pairs = [f"{pixel_seen[other][h][0]} = {pixel_seen['test'][h][0]}" for h in leaked]
            report.warn(root, f"{len(leaked)} image(s) appear in both {other} and test (leakage): {_examples(pairs)}")
    return {
        "format": 2,
        "root": str(root),
        "classes": classes,
        "content_hash": digest.hexdigest(),
        "splits": splits,
        "warnings": list(report.warnings),
    }


def validate(root: str | Path, manifest_path: str | Path, imbalance_ratio: float = 10.0, workers: int = 0) -> Report:
    report = check(root, imbalance_ratio, workers)
    if report.manifest is not None:
        io.write_json(manifest_path, report.manifest)
    return report
