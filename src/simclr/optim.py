"""LARS (You et al. 2017) as SimCLR uses it, and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights get weight decay and LARS adaptation; biases and norm-layer parameters (1-D) get neither."""
    decay, exclude = [], []
    for p in model.parameters():
        if p.requires_grad:
            (exclude if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": exclude, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-layer step is scaled by the trust ratio eta * ||w|| / ||g + wd w||.

    Groups with lars_exclude=True (biases, BN) take the plain momentum step with no weight decay.
    clip_lr caps the ratio at 1 (per-layer lr = min(ratio x lr, lr)), as solo-learn's CIFAR recipes
    do. One step is a handful of multi-tensor (torch._foreach_*) kernels per group and reads
    nothing back to the host.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, clip_lr: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, clip_lr=clip_lr, lars_exclude=False)
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
            d = [p.grad for p in params]
            if group["weight_decay"]:
                d = torch._foreach_add(d, params, alpha=group["weight_decay"])
            if not group["lars_exclude"]:
                w_norm = torch.stack(torch._foreach_norm(params))  # one norm per layer
                d_norm = torch.stack(torch._foreach_norm(d))
                trust = torch.where((w_norm > 0) & (d_norm > 0), group["trust_coefficient"] * w_norm / d_norm,
                                    torch.ones_like(w_norm))
                if group["clip_lr"]:
                    trust = trust.clamp(max=1.0)
                d = torch._foreach_mul(d, list(trust.unbind()))
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
    groups = param_groups(model, optim["weight_decay"])
    lr = peak_lr(optim, batch_size)
    if optim["name"] == "lars":
        return LARS(groups, lr=lr, momentum=optim["momentum"], trust_coefficient=optim["trust_coefficient"],
                    clip_lr=optim.get("clip_lr", False))
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
