"""One batch's gradient when it is embedded in chunks: train.accumulate naive or exact.

- naive: the seed's loss accumulation. Each chunk's anchors see only that chunk's negatives; the
  gradient is the size-weighted mean of the chunk losses' gradients - a different objective from
  one large batch.
- exact: gradient caching (Gao et al. 2021). Embed every chunk without a graph, take the full-batch
  NT-Xent and its gradient with respect to the embeddings, then re-embed each chunk with a graph and
  backpropagate that cached gradient. The parameter gradient equals the full-batch one; BatchNorm
  statistics are per chunk, as on several GPUs without SyncBN.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .distributed import gather as gather_ranks, no_sync
from .losses import nt_xent
from .runtime import autocast


@contextlib.contextmanager
def frozen_norm_stats(net: nn.Module):
    """Run forwards in train mode without leaving any trace in BatchNorm running statistics."""
    saved = [(b, b.detach().clone()) for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase) for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def step_gradients(net: nn.Module, v1: torch.Tensor, v2: torch.Tensor, temperature: float,
                   chunk_size: int, accumulate: str, precision: str = "fp32", gather=gather_ranks) -> torch.Tensor:
    """Accumulate into .grad the gradient of one SimCLR step on views v1, v2 (B x C x H x W each).

    Returns the loss as a 0-dim tensor on the device (read it back when needed: no host sync here).
    Under DDP, v1 and v2 are this rank's share and `gather` makes every loss global."""
    b = len(v1)
    device = v1.device
    bounds = [(a, min(a + chunk_size, b)) for a in range(0, b, chunk_size)]

    def embed(a, e):
        with autocast(device, precision):
            z = net(torch.cat([v1[a:e], v2[a:e]]))  # z: 2n x D, first the v1 rows, then the v2 rows
        return z[: e - a], z[e - a:]

    if accumulate == "naive" or len(bounds) == 1:
        total = torch.zeros((), device=device)
        for k, (a, e) in enumerate(bounds):
            with no_sync(net, k == len(bounds) - 1):
                z1, z2 = embed(a, e)
                loss = nt_xent(gather(z1), gather(z2), temperature) * ((e - a) / b)
                loss.backward()
            total += loss.detach()
        return total

    # exact: 1) embed every chunk without a graph, remembering the RNG state each forward saw
    states, leaves = [], []
    with torch.no_grad():
        for a, e in bounds:
            states.append(_rng_state(device))
            z1, z2 = embed(a, e)
            wide = torch.promote_types(z1.dtype, torch.float32)  # bf16 embeddings are cached in fp32
            leaves.append((z1.to(wide).requires_grad_(), z2.to(wide).requires_grad_()))
    # 2) the full-batch (all ranks) loss and its gradient with respect to this rank's embeddings
    loss = nt_xent(gather(torch.cat([l1 for l1, _ in leaves])), gather(torch.cat([l2 for _, l2 in leaves])),
                   temperature)
    loss.backward()
    # 3) re-embed each chunk with a graph (same RNG, BN statistics untouched) and push the cached gradient
    with frozen_norm_stats(net):
        for k, ((a, e), state, (l1, l2)) in enumerate(zip(bounds, states, leaves)):
            _set_rng_state(state, device)
            with no_sync(net, k == len(bounds) - 1):
                z1, z2 = embed(a, e)
                torch.autograd.backward([z1, z2], [l1.grad.to(z1.dtype), l2.grad.to(z2.dtype)])
    return loss.detach()
