"""One batch's gradient when it is embedded in chunks: train.accumulate naive or exact.

Leak-free chunks. Batch norm normalises each forward pass with that pass's statistics. If a chunk
embedded both views of its images, a positive pair would share statistics its negatives from
other chunks do not, and the network could lower the loss by matching chunk statistics instead of
learning features (the "local information leakage" of SimCLR section 2.2). So the images are cut
into K groups and forward pass k embeds the first views of group k with the second views of group
k + 1 (mod K), as MoCo's shuffled BN pairs views across GPUs: with K > 1 no forward pass holds both
views of any image. With one chunk (chunk_size >= the batch) the one forward holds the whole batch,
the global BN of the paper.

train.forward_views separate (dkobak/simclr-cifar10, solo-learn) embeds each view in a forward of
its own, so batch norm normalises each view with its own statistics; each pass k above is then two
forwards, group k's first views and group k + 1's second views, and stays leak-free.

A group's two views then come from two forward passes, so both modes use gradient caching (Gao et
al. 2021): embed every chunk without a graph, take the loss and its gradient with respect to the
embeddings, then re-embed each chunk with a graph (same RNG, BN statistics untouched) and
backpropagate that cached gradient. Memory: one chunk's graph at a time.

- naive: the seed's objective. Group k's anchors see only group k's negatives; the loss is the
  size-weighted mean of the group losses - a different objective from one large batch.
- exact: the full-batch NT-Xent over the embeddings of these forwards; the parameter gradient is
  the gradient of that loss through these very forwards.
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


def groups(batch: int, chunk_size: int) -> list[tuple[int, int]]:
    """(start, end) of each group of images; the last may be smaller."""
    return [(a, min(a + chunk_size, batch)) for a in range(0, batch, chunk_size)]


def forwards(bounds: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """What each forward pass embeds: (first-view group, second-view group) = (k, k + 1 mod K)."""
    return [(bounds[k], bounds[(k + 1) % len(bounds)]) for k in range(len(bounds))]


def step_gradients(net: nn.Module, v1: torch.Tensor, v2: torch.Tensor, temperature: float,
                   chunk_size: int, accumulate: str, precision: str = "fp32", gather=gather_ranks,
                   forward_views: str = "joint") -> torch.Tensor:
    """Accumulate into .grad the gradient of one SimCLR step on views v1, v2 (B x C x H x W each).

    Returns the loss as a 0-dim tensor on the device (read it back when needed: no host sync here).
    Under DDP, v1 and v2 are this rank's share and `gather` makes every loss global."""
    b = len(v1)
    device = v1.device
    bounds = groups(b, chunk_size)

    def embed(first, second):
        (a, e), (c, d) = first, second
        with autocast(device, precision):
            if forward_views == "separate":  # one forward per view: BN statistics per view
                return net(v1[a:e]), net(v2[c:d])
            z = net(torch.cat([v1[a:e], v2[c:d]]))  # first views of one group, second views of the next
        return z[: e - a], z[e - a:]

    if len(bounds) == 1:  # one forward over the whole batch: plain backpropagation
        z1, z2 = embed(bounds[0], bounds[0])
        loss = nt_xent(gather(z1), gather(z2), temperature)
        loss.backward()
        return loss.detach()

    # 1) embed every chunk without a graph, remembering the RNG state each forward saw
    passes = forwards(bounds)
    states, leaves = [], []
    with torch.no_grad():
        for first, second in passes:
            states.append(_rng_state(device))
            z1, z2 = embed(first, second)
            wide = torch.promote_types(z1.dtype, torch.float32)  # bf16 embeddings are cached in fp32
            leaves.append((z1.to(wide).requires_grad_(), z2.to(wide).requires_grad_()))
    # pass k holds group k's first views and group k+1's second views: line the groups up again
    first_views = [l1 for l1, _ in leaves]
    second_views = [leaves[k - 1][1] for k in range(len(bounds))]
    # 2) the loss over all ranks and its gradient with respect to this rank's embeddings
    if accumulate == "naive":
        loss = sum(nt_xent(gather(z1), gather(z2), temperature) * ((e - a) / b)
                   for (a, e), z1, z2 in zip(bounds, first_views, second_views))
    else:
        loss = nt_xent(gather(torch.cat(first_views)), gather(torch.cat(second_views)), temperature)
    loss.backward()
    # 3) re-embed each chunk with a graph (same RNG, BN statistics untouched) and push the cached gradient
    with frozen_norm_stats(net):
        for k, ((first, second), state, (l1, l2)) in enumerate(zip(passes, states, leaves)):
            _set_rng_state(state, device)
            with no_sync(net, k == len(passes) - 1):
                z1, z2 = embed(first, second)
                torch.autograd.backward([z1, z2], [l1.grad.to(z1.dtype), l2.grad.to(z2.dtype)])
    return loss.detach()
