"""Atomic writes: every output appears whole or not at all (temp file in the same folder, fsync, rename)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError


FULL = (errno.ENOSPC, errno.EDQUOT)
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: os.umask can only be read by setting it


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full(path: Path) -> UserError:
    """The one line for a write that ran out of space: the file, the disk, what is left untouched."""
    parent = path.parent if path.parent.exists() else Path(".")
    free = shutil.disk_usage(parent).free / 2**20
    return UserError(f"{path}: no space left on the disk that holds it ({mount_point(parent)}, {free:.0f} MiB free); "
                     "nothing was replaced (an earlier file there is intact, no temporary file is left): "
                     "free some space and run the same command again")


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`. A full disk
    while writing is a UserError naming the file and the disk; `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        raise disk_full(path) if exc.errno in FULL else exc from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~UMASK)  # as open() would have made it (mkstemp makes it private)
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full(path) from None
        raise
    except RuntimeError as exc:  # torch.save reports a failed write as a RuntimeError around the OSError
        if "No space left" in str(exc) or isinstance(exc.__cause__, OSError) and exc.__cause__.errno in FULL:
            raise disk_full(path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    """Deterministic JSON: sorted keys, fixed indent, trailing newline."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | Path, obj) -> None:
    import torch

    # through a file object: torch.save given a path names the archive inside after the file (here
    # the temporary name), so the same object would give other bytes, and DVC another hash, each time
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save_npz(path: str | Path, **arrays) -> None:
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full(path) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _unreadable(path: Path, what: str, why: str) -> UserError:
    return UserError(f"{path}: expected {what}, {why}")


def _check_keys(path: Path, what: str, obj, keys) -> None:
    missing = [k for k in keys if k not in obj] if hasattr(obj, "__contains__") else list(keys)
    if missing:
        raise _unreadable(path, what, f"found no {', '.join(map(repr, missing))} in it")


def read_json(path: str | Path, what: str, keys=()) -> dict:
    """A JSON object from `path`; a missing, unreadable or foreign file is a UserError naming it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise _unreadable(path, what, "found no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, what, f"cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise _unreadable(path, what, f"found text that is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(obj, dict):
        raise _unreadable(path, what, f"found a JSON {type(obj).__name__}")
    _check_keys(path, what, obj, keys)
    return obj


def load_torch(path: str | Path, what: str, keys=(), weights_only: bool = True):
    """A torch.save'd dict from `path`, on the CPU; a missing, truncated or foreign file is a UserError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise _unreadable(path, what, "found no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        raise _unreadable(path, what, f"cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise _unreadable(path, what, f"found a {type(obj).__name__}")
    _check_keys(path, what, obj, keys)
    return obj


def load_npz(path: str | Path, what: str, keys=()) -> dict:
    """The arrays of an .npz file, all read into memory; a missing or foreign file is a UserError."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise _unreadable(path, what, "found no such file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {type(z).__name__}, not an archive of arrays")
        with z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, what, f"cannot read it as .npz ({str(exc).splitlines()[0][:200]})") from None
    _check_keys(path, what, arrays, keys)
    return arrays
