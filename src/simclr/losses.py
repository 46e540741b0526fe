"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1),
at the official code's scale."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """loss_a + loss_b of the official code: the mean NT-Xent over the N anchors of the first view
    plus the mean over the N anchors of the second view (twice the mean over all 2N anchors).

    z1, z2: N x D projections of the two views; row i of z1 and row i of z2 are a positive pair,
    and each anchor has the other 2N - 2 embeddings as negatives. Computed in float32 at least
    (bf16/fp16 inputs go up to float32; float64 stays float64).
    """
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    z = F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1)  # z: 2N x D, unit rows
    logits = z @ z.T / temperature  # 2N x 2N cosine similarities / t
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # an anchor is not its own negative
    positives = torch.arange(2 * n, device=z.device).roll(n)  # anchor i's positive: i + N (mod 2N)
    return F.cross_entropy(logits, positives, reduction="sum") / n
