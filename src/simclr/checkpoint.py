"""Resumable training: where a run stands, its identity, atomic checkpoints, every RNG, signals.

Every runtime.checkpoint_every epochs, and at the next step boundary after SIGTERM or SIGINT, the
whole training state (model, optimiser, RunState, every RNG) is written atomically to the checkpoint
folder, which no orchestrator deletes. Started again with the same params, data and code, pretrain
resumes there and ends with the model an uninterrupted run gives.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import deps, io
from .errors import UserError


@dataclass
class RunState:
    """Where a run stands; everything in it goes into a checkpoint and comes back on resume."""
    epoch: int = 0                          # epoch in progress (0-based)
    batch: int = 0                          # next batch within it
    step: int = 0                           # optimiser steps taken so far
    order: torch.Tensor | None = None       # this epoch's data order (None: not drawn yet)
    losses: list = field(default_factory=list)  # this epoch's per-step losses read back so far
    rows: list = field(default_factory=list)    # one logged row per finished epoch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["order"] = None if self.order is None else self.order.cpu()
        return d

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "RunState":
        d = dict(d)
        d["order"] = None if d["order"] is None else d["order"].to(device)
        return cls(**d)

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.order, self.losses = self.epoch + 1, 0, None, []


def fingerprint(params: dict, manifest: dict, world: int = 1, code_dir: Path | None = None) -> str:
    """Identity of a training run: the params pretrain is given (its tracked keys: runtime is never
    among them), the dataset's content hash, the code pretrain imports and the number of processes,
    so that a resumed run is the run that was interrupted."""
    here = Path(code_dir or Path(__file__).parent)
    code = {name: hashlib.sha256((here / name).read_bytes()).hexdigest() for name in deps.closure("pretrain")}
    blob = json.dumps({"params": params, "data": manifest["content_hash"], "code": code, "world": world},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def rng_states(gen: torch.Generator, aug_gen: torch.Generator) -> dict:
    """Every RNG's state as tensors, lists and numbers only, so a checkpoint loads with weights_only=True
    (Python's state is a tuple of ints; NumPy's holds an array, stored here as an int64 tensor)."""
    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(keys), gauss],
            "numpy": [name, torch.from_numpy(mt.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "data": gen.get_state(), "augment": aug_gen.get_state()}


def restore_rng(states: dict, gen: torch.Generator, aug_gen: torch.Generator) -> None:
    version, keys, gauss = states["python"]
    random.setstate((version, tuple(keys), gauss))
    name, mt, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, mt.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    gen.set_state(states["data"])
    aug_gen.set_state(states["augment"])


class Interrupted(Exception):
    """Training stopped by a signal after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


@contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag that the loop checks at each step boundary."""
    caught: list[int] = []
    handler = lambda signum, frame: caught.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Checkpoints:
    """last.pt and previous.pt in one folder; every write is temp file + fsync + rename."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.last = self.folder / "last.pt"
        self.previous = self.folder / "previous.pt"
        self._lock = None

    def lock(self) -> None:
        """Hold the folder for this process (an exclusive flock on <folder>/lock, dropped by the OS when
        the process ends, however it ends): a second pretrain of the same run - two queued DVC
        experiments, a second shell - is refused instead of writing the same checkpoints at once."""
        import fcntl
        import socket

        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / "lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(f"{self.folder}: another simclr pretrain of the same run ({holder}) is writing these "
                            "checkpoints; wait for it to finish (it writes the same model), or give this one "
                            "another --checkpoint-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def save(self, fingerprint: str, run: RunState, model: dict, optimizer: dict, rng: list) -> None:
        state = {"fingerprint": fingerprint, "run": run.to_dict(), "model": model, "optimizer": optimizer, "rng": rng}
        with io.atomic_path(self.last) as tmp:
            torch.save(state, tmp)
            if self.last.exists():
                os.replace(self.last, self.previous)  # a kill here leaves previous.pt, still good

    def load(self, want: str, log) -> dict | None:
        """The newest readable checkpoint of this run, or None (a fresh start, with the reason logged).
        The returned dict says which file it came from under "path"."""
        for path in (self.last, self.previous):
            if not path.exists():
                continue
            try:
                # tensors and plain Python only: a crafted file cannot run code here
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or "fingerprint" not in state:
                    raise ValueError("not a pretrain checkpoint")
                if "run" not in state:
                    raise ValueError("written by an older version of pretrain")
            except Exception as exc:  # torn or foreign file: say so and fall back
                log(f"warning: {path}: unreadable checkpoint ({type(exc).__name__}: {exc}); ignoring it")
                continue
            if state["fingerprint"] != want:
                log(f"pretrain: {path} belongs to other params, data or code (fingerprint "
                    f"{state['fingerprint'][:12]}, this run {want[:12]}); starting fresh")
                return None
            return {**state, "path": path}
        return None
