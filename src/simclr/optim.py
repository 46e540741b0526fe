"""LARS (You et al. 2017) as SimCLR uses it, with LARC's clipping as solo-learn uses it, and the
warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

# The trust ratio's denominator, optim.trust_denominator:
#   combined = ||g + wd w||        the official TF LARS (google-research/simclr lars_optimizer.py)
#   separate = ||g|| + wd ||w||    Lightning Bolts' LARS, which solo-learn copies (solo/utils/lars.py)
DENOMINATORS = ("combined", "separate")
EPS = 1e-8  # solo-learn's eps in the separate denominator


def param_groups(model: nn.Module, weight_decay: float, decay_norm_bias: bool = False) -> list[dict]:
    """Weights (>= 2-D) get weight decay and LARS adaptation. Biases and norm-layer parameters (1-D)
    get no LARS adaptation, and weight decay only with decay_norm_bias (dkobak's SGD decays every
    parameter; the official code and solo-learn's LARS decay neither)."""
    decay, exclude = [], []
    for p in model.parameters():
        if p.requires_grad:
            (exclude if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": exclude, "weight_decay": weight_decay if decay_norm_bias else 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-layer update d = g + wd w is scaled by a trust ratio
    trust = eta ||w|| / denominator (see DENOMINATORS).

    Unclipped (the paper, the official code): a layer steps lr x trust x d.
    clip_lr (LARC, NVIDIA apex; solo-learn's CIFAR recipes): the multiplier is min(trust / lr, 1),
    so a layer steps min(trust, lr) x d: the trust ratio caps the lr, never raises it.
    Groups with lars_exclude=True (biases, BN) take the plain momentum step on g + wd w (wd 0 unless
    optim.decay_norm_bias). A layer whose weight or gradient norm is 0 takes the plain step on g
    (solo-learn's separate form) or on d (the official form). One step is a handful of multi-tensor
    (torch._foreach_*) kernels per group and reads nothing back to the host.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, clip_lr: bool = False, denominator: str = "combined"):
        if denominator not in DENOMINATORS:
            raise ValueError(f"LARS denominator: expected one of {DENOMINATORS}, found {denominator!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        clip_lr=clip_lr, denominator=denominator, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            wd, grads = group["weight_decay"], [p.grad for p in params]
            d = torch._foreach_add(grads, params, alpha=wd) if wd else list(grads)
            if not group["lars_exclude"]:
                w_norm = torch.stack(torch._foreach_norm(params))  # one norm per layer
                if group["denominator"] == "separate":
                    g_norm = torch.stack(torch._foreach_norm(grads))
                    ok = (w_norm > 0) & (g_norm > 0)
                    trust = group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + EPS)
                else:
                    g_norm = torch.stack(torch._foreach_norm(d))
                    ok = (w_norm > 0) & (g_norm > 0)
                    trust = group["trust_coefficient"] * w_norm / g_norm
                if group["clip_lr"]:
                    trust = torch.clamp(trust / group["lr"], max=1.0)
                trust = torch.where(ok, trust, torch.ones_like(trust))
                d = torch._foreach_mul(d, list(trust.unbind()))
                if group["denominator"] == "separate" and wd:  # a zero norm: the plain gradient, no decay
                    keep = list(ok.to(grads[0].dtype).unbind())
                    d = torch._foreach_add(grads, torch._foreach_mul(torch._foreach_sub(d, grads), keep))
            states = [self.state[p] for p in params]
            running = [(st["momentum_buffer"], dp) for st, dp in zip(states, d) if "momentum_buffer" in st]
            if running:  # buf = momentum x buf + d
                bufs, steps = map(list, zip(*running))
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, steps)
            for st, dp in zip(states, d):  # a first step starts the buffer at the step itself
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = dp.clone().detach()
            bufs = [st["momentum_buffer"] for st in states]
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def build(model: nn.Module, optim: dict, batch_size: int) -> torch.optim.Optimizer:
    groups = param_groups(model, optim["weight_decay"], optim.get("decay_norm_bias", False))
    lr = peak_lr(optim, batch_size)
    if optim["name"] == "lars":
        return LARS(groups, lr=lr, momentum=optim["momentum"], trust_coefficient=optim["trust_coefficient"],
                    clip_lr=optim.get("clip_lr", False), denominator=optim.get("trust_denominator", "combined"))
    return torch.optim.SGD(groups, lr=lr, momentum=optim["momentum"])


def peak_lr(optim: dict, batch_size: int) -> float:
    """Linear scaling rule of the paper: base_lr x batch / 256."""
    return optim["base_lr"] * batch_size / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup to `peak` over warmup_steps (step 0 gets peak/warmup_steps), then cosine to 0 at total_steps."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))
