"""Several processes (torchrun, DDP): the gather whose backward is right, rank agreement, the launch.

Each rank embeds train.batch_size / N images of every batch; the embeddings are all-gathered so
NT-Xent sees every global negative, and the gather's backward sums the gradients all ranks computed
for each rank's rows, so after DistributedDataParallel's mean every rank holds the gradient of the
global-batch loss. In a single process every function here is the identity or a no-op.
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError


def env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    e = os.environ
    return int(e.get("RANK", 0)), int(e.get("WORLD_SIZE", 1)), int(e.get("LOCAL_RANK", 0))


def torchrun_command(gpus: int, argv: list[str]) -> list[str] | None:
    """The `simclr` command line `argv`, run by torchrun on one node with `gpus` processes; None when
    one process is asked for or this process already runs under torchrun. The one launcher: the
    Snakemake rule and the CLI both go through it."""
    if gpus == 1 or "LOCAL_RANK" in os.environ:
        return None
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "simclr", *argv]


@contextlib.contextmanager
def process_group(world: int, cuda: bool):
    """Join torchrun's process group for the duration (nothing in a single process)."""
    joined = world > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def distributed() -> bool:
    """True inside a process group of more than one rank (torchrun with N > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def share_of(batch: int, world: int) -> int:
    """Images of each batch that one of `world` processes embeds."""
    if batch % world:
        raise UserError(f"train.batch_size: expected a multiple of the {world} processes (runtime.gpus), "
                         f"found {batch}")
    return batch // world


class _Gather(torch.autograd.Function):
    """All-gather whose backward sums, over ranks, the gradient each rank computed for these rows.

    Every rank evaluates the loss on the gathered batch, so the rows of rank r receive gradient on
    every rank; dropping the other ranks' share (returning only the local slice of the local
    gradient) is the bug behind lightly#1528 and Spijkervet/SimCLR#30."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)  # (world x n) x D, rank order

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks; DDP's mean over ranks then gives the global gradient
        r = dist.get_rank()
        return grad[r * ctx.rows:(r + 1) * ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank (identity in a single process)."""
    return _Gather.apply(x) if distributed() else x


def no_sync(net: nn.Module, sync: bool):
    """DDP's no_sync() for every backward of a step but the last (one gradient all-reduce per step)."""
    ddp = net if isinstance(net, DistributedDataParallel) else getattr(net, "_orig_mod", None)
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (a signal reached only some ranks)."""
    if not distributed():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_ranks(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(net: nn.Module, sync_bn: bool, device: torch.device, log) -> nn.Module:
    """Under torchrun, BatchNorm becomes SyncBatchNorm when train.sync_bn (CUDA only in this torch)."""
    if not distributed():
        return net
    if sync_bn and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if sync_bn:
        log("warning: train.sync_bn: SyncBatchNorm runs on CUDA only in this torch; on CPU every rank "
            "normalises its own share of the batch (as with train.sync_bn: false)")
    return net
