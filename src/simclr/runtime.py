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


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below AVX-512 BF16: oneDNN then runs bf16 without bf16 units
_NO_BF16_ISA = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_bf16_units() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX) and oneDNN may use it.
    Without them bf16 autocast is emulated and slower than fp32 (docs/results.md, CPU speed)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISA:
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, torch >= 2.3
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where `device` has bf16 units, else 'fp32'; 'fp32' and 'bf16' unchanged."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_bf16_units() else "fp32"


def with_precision(params: dict, section: str, device: torch.device, log=print) -> dict:
    """A copy of params with `section`.precision resolved (logged when it was auto)."""
    asked = params[section]["precision"]
    got = resolve_precision(asked, device)
    if asked == "auto":
        log(f"{section}.precision auto: {got} on {device} "
            f"({'has' if got == 'bf16' else 'no'} bf16 units)")
    return {**params, section: {**params[section], "precision": got}}


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
