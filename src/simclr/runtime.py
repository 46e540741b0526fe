"""How a process runs: device, CPU threads, precision, deterministic kernels.

The `runtime:` params section (device, threads, checkpoint interval, resume policy, GPUs) changes
how a run executes, never what it computes, so no stage tracks it; `train.precision` and
`train.deterministic` do change numbers, so they stay in `train` and are tracked.
"""
from __future__ import annotations

import os

import torch

from .errors import UserError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """runtime.device: 'auto' takes CUDA when there is one; under torchrun, GPU `local_rank`."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("runtime.device: expected a CUDA device for 'cuda', found none")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun: local rank {local_rank} needs GPU {local_rank}, "
                               f"found {torch.cuda.device_count()} GPU(s)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def set_threads(n: int) -> None:
    """torch's CPU threads: n, or every core this process may run on when n is 0."""
    torch.set_num_threads(n or len(os.sched_getaffinity(0)))


def autocast(device: torch.device, precision: str):
    """bf16 autocast for train.precision / extract.precision 'bf16'; a no-op for 'fp32'."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def set_determinism(on: bool, device: torch.device) -> None:
    """Deterministic kernels (bitwise-repeatable runs) or, when off, the fastest cuDNN choices."""
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=device.type == "cuda")
    # Deterministic mode also fills every new tensor with NaN so that a read of uninitialised memory
    # is repeatable: on the CPU preset that was 13% of CPU self time (aten::fill_, 870 calls a step;
    # benchmarks/cpu_step.py). Nothing here reads memory it has not written, so it is switched off.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = not on


def set_up(runtime: dict, deterministic: bool | None = None, local_rank: int = 0) -> torch.device:
    """The device a stage computes on, with its threads set (and the kernel choice, unless None)."""
    device = pick_device(runtime["device"], local_rank)
    if deterministic is not None:
        set_determinism(deterministic, device)
    set_threads(runtime["threads"])
    return device
