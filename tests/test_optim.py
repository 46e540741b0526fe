import math

import pytest
import torch
from torch import nn

from simclr.optim import LARS, lr_at, param_groups


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_param_groups_put_bias_and_bn_in_excluded_group():
    m = make_model()
    decay, exclude = param_groups(m, 1e-4)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert {id(p) for p in exclude["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias)}
    assert exclude["weight_decay"] == 0 and exclude["lars_exclude"]


def test_lars_scales_weights_by_trust_ratio_and_skips_bias_and_bn():
    m = make_model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.5)
    wd, eta, lr = 0.1, 0.001, 1.0
    LARS(param_groups(m, wd), lr=lr, momentum=0.9, trust_coefficient=eta).step()
    for name, p in m.named_parameters():
        g = torch.full_like(p, 0.5)
        if name == "0.weight":
            d = g + wd * before[name]
            expected = before[name] - lr * eta * before[name].norm() / d.norm() * d
        else:  # bias and BN: plain step, no weight decay, no trust ratio
            expected = before[name] - lr * g
        assert torch.allclose(p, expected, atol=1e-7), name


def test_lars_momentum_accumulates():
    p = nn.Parameter(torch.ones(2))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars_exclude": True}], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = torch.ones(2)
        opt.step()
    assert torch.allclose(p, torch.ones(2) - 0.1 * 1 - 0.1 * 1.9)


@pytest.mark.parametrize("warmup", [0, 5])
def test_schedule_endpoints(warmup):
    total, peak = 50, 2.0
    lrs = [lr_at(s, total, warmup, peak) for s in range(total)]
    if warmup:
        assert lrs[0] == pytest.approx(peak / warmup)
        assert lrs[warmup - 1] == pytest.approx(peak)
        assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert lrs[warmup] == pytest.approx(peak)
    assert lr_at(total, total, warmup, peak) == pytest.approx(0.0, abs=1e-12)
    after = lrs[warmup:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * (mid - warmup) / (total - warmup))))


def textbook_lars(params, grads_per_step, lr, momentum, wd, eta, clip):
    """LARS written out one parameter at a time (the formula, not the implementation under test)."""
    params = [p.detach().clone() for p in params]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, g) in enumerate(zip(params, grads)):
            if p.ndim > 1:  # adapted and decayed
                d = g + wd * p
                ratio = eta * p.norm() / d.norm()
                d = d * (min(ratio, 1.0) if clip else ratio)
            else:
                d = g
            bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
            p -= lr * bufs[i]
    return params


@pytest.mark.parametrize("clip", [False, True])
def test_lars_equals_the_textbook_formula_over_several_steps(clip):
    m = make_model()
    start = [p.detach().clone() for p in m.parameters()]
    g = torch.Generator().manual_seed(1)
    steps = [[torch.randn(p.shape, generator=g) for p in m.parameters()] for _ in range(3)]
    eta = 5.0  # large enough that the ratio exceeds 1 and clipping binds
    opt = LARS(param_groups(m, 0.01), lr=0.1, momentum=0.9, trust_coefficient=eta, clip_lr=clip)
    for grads in steps:
        for p, gr in zip(m.parameters(), grads):
            p.grad = gr.clone()
        opt.step()
    expected = textbook_lars(start, steps, 0.1, 0.9, 0.01, eta, clip)
    for p, e in zip(m.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)
    w, d = start[0], steps[0][0] + 0.01 * start[0]
    assert eta * w.norm() / d.norm() > 1  # so the clipped case really differs from the unclipped one
